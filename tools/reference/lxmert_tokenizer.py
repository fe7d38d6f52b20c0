"""A small BERT-uncased WordPiece tokenizer for the tiny LXMERT fixture, built deterministically.

Pipeline (what `transformers.convert_slow_tokenizer.BertConverter` builds for
`unc-nlp/lxmert-base-uncased` / `bert-base-uncased`):

    normalizer      BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                   strip_accents=None (follows lowercase), lowercase=True)
    pre-tokenizer   BertPreTokenizer (split on whitespace and on every punctuation char)
    model           WordPiece(unk "[UNK]", continuing prefix "##", max_input_chars_per_word 100)
    post-processor  TemplateProcessing("[CLS] $A [SEP]", pair "[CLS] $A [SEP] $B:1 [SEP]:1")
    decoder         WordPiece("##", cleanup=True)

Vocabulary (ids are contiguous, in this order):

    0..4            [PAD] [UNK] [CLS] [SEP] [MASK]
    words           every word (after lower-casing and BERT pre-tokenisation) that occurs at least
                    twice in a generated corpus of VQA-style questions, by (-count, word)
    suffix pieces   a fixed list of "##" pieces ("##s", "##ing", ...), so that rarer words are
                    split into several word pieces
    characters      a-z and 0-9, then "##a".."##z", "##0".."##9", then ASCII punctuation

so every lower-case ASCII word encodes without [UNK]; a character outside the list (e.g. CJK or
an emoji) becomes [UNK] for its whole word. No third-party vocabulary is used.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = SPECIALS

SUFFIXES = ["##s", "##es", "##ing", "##ed", "##er", "##ers", "##ly", "##y", "##board", "##ball",
            "##ure", "##ch", "##ow", "##ion", "##en", "##le"]

SUBJECTS = ["man", "woman", "dog", "cat", "boy", "girl", "person", "people", "horse", "bird",
            "skateboarder", "giraffe", "giraffes", "zebra", "elephant", "child", "player", "surfer"]
OBJECTS = ["table", "plate", "bench", "shirt", "hat", "umbrella", "frisbee", "pizza", "bus", "train",
           "kite", "surfboard", "skateboard", "laptop", "sign", "clock", "bowl", "car", "wall", "field"]
COLORS = ["red", "white", "blue", "green", "black", "yellow", "brown", "orange"]
PLACES = ["on the table", "in the picture", "in the sky", "on the plate", "near the bench",
          "behind the fence", "on the wall", "in the water", "on the street", "in the field"]
VERBS = ["holding", "wearing", "eating", "riding", "sitting", "standing", "playing", "looking",
         "carrying", "throwing"]
TEMPLATES = [
    "what is {place}?",
    "what color is the {obj}?",
    "what color is the {subj}'s {obj}?",
    "how many {subj}s are {place}?",
    "how many people are {verb} near the {obj}?",
    "is the {subj} {verb} a {obj}?",
    "is there a {obj} {place}?",
    "what is the {subj} {verb}?",
    "where is the {subj} {verb}?",
    "are the {subj}s {verb}?",
    "which side of the {obj} is the {subj} on?",
    "does the {subj} have a {color} {obj}?",
    "what sport is the {subj} playing?",
    "is it sunny?",
    "what is the {obj} made of?",
    "why is the {subj} {verb}?",
]
N_QUESTIONS = 400


def corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(N_QUESTIONS):
        t = rng.choice(TEMPLATES)
        out.append(t.format(place=rng.choice(PLACES), obj=rng.choice(OBJECTS), subj=rng.choice(SUBJECTS),
                            verb=rng.choice(VERBS), color=rng.choice(COLORS)))
    return out


def _pieces(text: str) -> list[str]:
    """Lower-case + BERT pre-tokenisation for ASCII text (words and single punctuation chars)."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def build_vocab(seed: int, extra_words: list[str]) -> list[str]:
    counts = Counter()
    for q in corpus(seed) + extra_words:
        counts.update(p for p in _pieces(q) if p.isalnum())
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 2]
    chars = list(string.ascii_lowercase + string.digits)
    vocab = list(SPECIALS)
    for tok in words + SUFFIXES + chars + ["##" + c for c in chars] + list(string.punctuation):
        if tok not in vocab:
            vocab.append(tok)
    return vocab


def build_tokenizer(seed: int, extra_words: list[str]) -> Tokenizer:
    vocab = build_vocab(seed, extra_words)
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=UNK, continuing_subword_prefix="##",
                              max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab.index(CLS), vocab.index(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIALS))
    return tok  # no truncation/padding in tokenizer.json: transformers sets them per call
