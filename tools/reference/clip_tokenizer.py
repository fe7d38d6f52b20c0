"""A small CLIP-style byte-level BPE tokenizer, built offline and deterministically.

The layout mirrors OpenAI CLIP's vocabulary exactly, only smaller:

    ids 0..255      the 256 byte symbols (GPT-2/CLIP `bytes_to_unicode` order)
    ids 256..511    the same 256 symbols with the end-of-word suffix "</w>"
    ids 512..       one token per merge, in merge order
    last two ids    <|startoftext|>, <|endoftext|>

so that every byte sequence encodes (no unknown tokens). The merges are learned by a tiny
pure-Python BPE trainer (below) on a generated caption-like corpus; ties between equally
frequent pairs are broken by the lexicographically smallest pair, so the result never depends
on hash order, thread count or the `tokenizers` trainer's internals.

The pipeline (normalizer, pre-tokenizer, model options, post-processor, decoder) is the one
`transformers.convert_slow_tokenizer.CLIPConverter` produces for the real CLIP tokenizers, with
the special-token alternatives added in front of the split pattern as OpenAI's `simple_tokenizer`
has them.
"""

from __future__ import annotations

import random
from collections import Counter

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
EOW = "</w>"

# CLIP's split pattern (OpenAI simple_tokenizer.py, which also matches the special tokens).
SPLIT_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character table, in CLIP's order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


# ----------------------------------------------------------------------------------------------
# corpus


ANIMALS = [
    "cat", "dog", "bird", "horse", "cow", "sheep", "zebra", "giraffe", "elephant", "bear",
    "kitten", "puppy", "parrot", "duck", "rabbit", "mouse", "fish", "tiger", "lion", "monkey",
]
COLOURS = [
    "red", "green", "blue", "yellow", "black", "white", "brown", "orange", "purple", "pink",
    "grey", "gray", "golden", "dark", "light",
]
OBJECTS = [
    "car", "bus", "train", "bicycle", "boat", "plane", "table", "chair", "couch", "bed",
    "cup", "bottle", "phone", "laptop", "book", "clock", "ball", "kite", "umbrella", "pizza",
    "cake", "banana", "apple", "sandwich", "rocket", "glasses", "hat", "bag", "tree", "house",
]
PEOPLE = ["man", "woman", "person", "people", "child", "children", "boy", "girl", "player", "group"]
PLACES = [
    "street", "beach", "field", "kitchen", "park", "room", "road", "grass", "water", "snow",
    "table", "window", "sky", "city", "garden",
]
VERBS = [
    "sitting", "standing", "running", "playing", "eating", "holding", "looking", "lying",
    "walking", "flying", "riding", "sleeping", "jumping", "watching", "waiting",
]
PREPS = ["on", "in", "next to", "near", "under", "behind", "with", "at", "by", "over"]
NUMBERS = ["two", "three", "four", "five", "several", "many", "a few", "some"]
TEMPLATES = [
    "a photo of a {a}",
    "a photo of the {a}",
    "a photo of a {c} {a}",
    "a picture of a {a} and a {a2}",
    "a photo of a {a} and a {a2} sitting together",
    "a {c} {o} {p} the {pl}",
    "a {a} {v} {p} a {o}",
    "{n} {pe} {v} {p} the {pl}",
    "the {a} is {v} {p} the {c} {o}",
    "a close up photo of a {o}",
    "an image of {n} {a}s",
    "a blurry photo of a {pe} with a {o}",
    "a {pe} {v} {p} a {c} {o}",
    "there are {n} {o}s on the {pl}",
    "a drawing of a {a}.",
    "a {a}'s {o} is {c}!",
    "photo #{d}: {n} {a}s, {c} and {c2}",
    "two people",
    "a bird",
    "a photo of a dog and a cat sitting together",
]


def make_corpus(seed: int, n_sentences: int = 3000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n_sentences):
        t = rng.choice(TEMPLATES)
        out.append(
            t.format(
                a=rng.choice(ANIMALS),
                a2=rng.choice(ANIMALS),
                c=rng.choice(COLOURS),
                c2=rng.choice(COLOURS),
                o=rng.choice(OBJECTS),
                p=rng.choice(PREPS),
                pl=rng.choice(PLACES),
                pe=rng.choice(PEOPLE),
                v=rng.choice(VERBS),
                n=rng.choice(NUMBERS),
                d=rng.randrange(0, 100),
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# pipeline and training


def _pipeline_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix=EOW,
            fuse_unk=False,
            unk_token=EOT,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _pretokenize(tok: Tokenizer, text: str) -> list[str]:
    normalized = tok.normalizer.normalize_str(text)
    return [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(normalized)]


def train_bpe(words: Counter, n_merges: int) -> list[tuple[str, str]]:
    """Classic BPE on byte-level words; the last symbol of each word carries "</w>"."""
    # each word -> list of symbols
    seqs = {}
    for w in words:
        syms = list(w)
        syms[-1] = syms[-1] + EOW
        seqs[w] = syms
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, syms in seqs.items():
            f = words[w]
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += f
        if not pairs:
            break
        best_count = max(pairs.values())
        best = min(p for p, c in pairs.items() if c == best_count)
        merges.append(best)
        a, b = best
        for w, syms in seqs.items():
            i = 0
            out = []
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            seqs[w] = out
    return merges


def build_tokenizer(seed: int, n_merges: int) -> Tokenizer:
    b2u = bytes_to_unicode()
    base = list(b2u.values())
    # Pre-tokenize the corpus with the final pipeline (the model is irrelevant to that step).
    probe = _pipeline_tokenizer({EOT: 0}, [])
    words: Counter = Counter()
    for sentence in make_corpus(seed):
        words.update(_pretokenize(probe, sentence))
    merges = train_bpe(words, n_merges)

    vocab: dict[str, int] = {}
    for s in base:
        vocab[s] = len(vocab)
    for s in base:
        vocab[s + EOW] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    vocab[SOT] = len(vocab)
    vocab[EOT] = len(vocab)

    tok = _pipeline_tokenizer(vocab, merges)
    tok.add_special_tokens([SOT, EOT])  # already in the vocab: keeps their ids
    tok.post_processor = processors.RobertaProcessing(
        sep=(EOT, vocab[EOT]),
        cls=(SOT, vocab[SOT]),
        add_prefix_space=False,
        trim_offsets=False,
    )
    assert tok.token_to_id(SOT) == vocab[SOT] and tok.token_to_id(EOT) == vocab[EOT]
    assert tok.get_vocab_size(with_added_tokens=True) == len(vocab)
    return tok
