"""A small BERT-uncased-style WordPiece tokenizer for the tiny ViLT fixture, built offline and
deterministically.

Vocabulary layout (ids):

    0..4        [PAD] [UNK] [CLS] [SEP] [MASK]
    5..         the single characters: ASCII punctuation, digits, letters (in code-point order)
    then        "##" + digit / letter (word-continuation pieces, code-point order)
    then        one token per merge, in merge order (only merges that make a new string)

The merges come from a tiny pure-Python trainer (below) run on a generated corpus of VQA-style
questions: words are split into a first character and "##"-prefixed continuation characters,
the most frequent adjacent pair (weighted by word count) is merged, and ties go to the
lexicographically smallest pair.  This is the BPE-style training HF's WordPieceTrainer does, but
without hash-order or thread-count dependence.  At encode time the WordPiece model does greedy
longest-match-first over the vocabulary (not merge replay), exactly like BERT.

The pipeline is the one `transformers.convert_slow_tokenizer.BertConverter` produces for
`bert-base-uncased`: normalizer BertNormalizer(clean_text, handle_chinese_chars, strip_accents
None -> follows lowercase, lowercase), pre-tokenizer BertPreTokenizer, WordPiece(unk "[UNK]",
continuing_subword_prefix "##", max_input_chars_per_word 100), post-processor
TemplateProcessing("[CLS]:0 $A:0 [SEP]:0", pair "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"),
decoder WordPiece("##").
"""

from __future__ import annotations

import itertools
import string
from collections import Counter

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = [PAD, UNK, CLS, SEP, MASK]

# ----------------------------------------------------------------------------------------------
# corpus (VQA-style questions, enumerated: no randomness at all)

ANIMALS = ["cat", "dog", "bird", "horse", "cow", "sheep", "zebra", "giraffe", "elephant", "bear"]
ANIMALS_PL = ["cats", "dogs", "birds", "horses", "cows", "sheep", "zebras", "giraffes", "elephants", "bears"]
OBJECTS = ["car", "bus", "train", "bicycle", "boat", "table", "chair", "couch", "cup", "bottle",
           "phone", "laptop", "book", "clock", "ball", "kite", "umbrella", "pizza", "hat", "bag"]
OBJECTS_PL = ["cars", "buses", "trains", "bicycles", "boats", "tables", "chairs", "couches", "cups",
              "bottles", "phones", "laptops", "books", "clocks", "balls", "kites", "umbrellas",
              "pizzas", "hats", "bags"]
PEOPLE = ["man", "woman", "person", "child", "boy", "girl", "player"]
PEOPLE_PL = ["men", "women", "people", "children", "boys", "girls", "players"]
COLOURS = ["red", "green", "blue", "yellow", "black", "white", "brown", "orange", "pink", "gray"]
SIDES = ["left", "right", "top", "bottom", "front", "back", "middle"]
PLACES = ["table", "street", "beach", "field", "kitchen", "grass", "floor", "bed", "wall", "road"]
VERBS = ["holding", "wearing", "eating", "riding", "playing", "looking at", "sitting on", "carrying"]
CONTAINERS = ["picture", "image", "photo", "room", "scene"]

TEMPLATES = [
    ("what color is the {t}?", [ANIMALS + OBJECTS]),
    ("is the {t} {c}?", [ANIMALS + OBJECTS, COLOURS]),
    ("is there a {t}?", [ANIMALS + OBJECTS + PEOPLE]),
    ("is there a {t} in the {p}?", [ANIMALS + OBJECTS, CONTAINERS]),
    ("how many {t} are in the {p}?", [ANIMALS_PL + OBJECTS_PL + PEOPLE_PL, CONTAINERS]),
    ("how many {t} are there?", [ANIMALS_PL + OBJECTS_PL + PEOPLE_PL]),
    ("are there any {t}?", [ANIMALS_PL + PEOPLE_PL]),
    ("what animal is on the {s}?", [SIDES]),
    ("what is on the {s} of the {p}?", [SIDES, CONTAINERS]),
    ("what is the {t} {v}?", [PEOPLE, VERBS]),
    ("what is on the {q}?", [PLACES]),
    ("where is the {t}?", [ANIMALS + OBJECTS + PEOPLE]),
    ("is the {t} on the {s}?", [ANIMALS + PEOPLE, SIDES]),
    ("which animal is bigger?", []),
    ("what sport is being played?", []),
    ("is it sunny?", []),
    ("is this photo taken indoors?", []),
    ("what room is this?", []),
    ("does the {t} look happy?", [ANIMALS + PEOPLE]),
    ("what is the {t} made of?", [OBJECTS]),
    ("who is {v} the {t}?", [VERBS, OBJECTS]),
]


def make_corpus() -> list[str]:
    out: list[str] = []
    for tpl, slots in TEMPLATES:
        names = [n for n in ("t", "c", "p", "s", "v", "q") if "{" + n + "}" in tpl]
        assert len(names) == len(slots), tpl
        for combo in itertools.product(*slots):
            out.append(tpl.format(**dict(zip(names, combo))))
    return out


# ----------------------------------------------------------------------------------------------
# trainer


def _pipeline(vocab: dict[str, int]) -> Tokenizer:
    tok = Tokenizer(WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##",
                              max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def pretokenize(sentence: str) -> list[str]:
    """Normalise + pre-tokenise exactly like the final pipeline."""
    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                      lowercase=True)
    return [w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(norm.normalize_str(sentence))]


def train_wordpiece(words: Counter, n_new: int, alphabet: set[str]) -> list[str]:
    """BPE-style merge training on WordPiece symbols; returns the new tokens in creation order."""
    splits = {w: [w[0]] + ["##" + ch for ch in w[1:]] for w in words}
    vocab = set(alphabet)
    new: list[str] = []
    while len(new) < n_new:
        pairs: Counter = Counter()
        for w, syms in splits.items():
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        best_count = max(pairs.values())
        a, b = min(p for p, c in pairs.items() if c == best_count)
        merged = a + b[2:]
        for w, syms in splits.items():
            i, out = 0, []
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            splits[w] = out
        if merged not in vocab:
            vocab.add(merged)
            new.append(merged)
    return new


def build_vocab(n_new: int) -> tuple[dict[str, int], Counter]:
    words: Counter = Counter()
    for s in make_corpus():
        words.update(pretokenize(s))
    singles = sorted(set(string.punctuation) | set(string.digits) | set(string.ascii_lowercase))
    conts = ["##" + c for c in sorted(set(string.digits) | set(string.ascii_lowercase))]
    alphabet = set(singles) | set(conts)
    # every corpus character must be in the alphabet (lowercase ASCII only)
    for w in words:
        assert w[0] in alphabet and all("##" + ch in alphabet for ch in w[1:]), w
    new = train_wordpiece(words, n_new, alphabet)
    vocab: dict[str, int] = {}
    for t in SPECIALS + singles + conts + new:
        assert t not in vocab, t
        vocab[t] = len(vocab)
    return vocab, words


def build_tokenizer(n_new: int) -> tuple[Tokenizer, Counter]:
    vocab, words = build_vocab(n_new)
    tok = _pipeline(vocab)
    # already in the vocab, so the ids stay 0..4; marks them special (never split, skipped in decode)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    for t in SPECIALS:
        assert tok.token_to_id(t) == vocab[t]
    assert tok.get_vocab_size(with_added_tokens=True) == len(vocab)
    return tok, words


def vocab_txt(tok: Tokenizer) -> str:
    """BERT vocab.txt: one token per line, line number = id."""
    v = tok.get_vocab(with_added_tokens=True)
    inv = sorted(v.items(), key=lambda kv: kv[1])
    assert [i for _, i in inv] == list(range(len(inv)))
    return "".join(t + "\n" for t, _ in inv)
