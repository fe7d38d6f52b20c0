"""Tokenizer folders whose two special-token files disagree, with what transformers makes of
them, for tests/input_text.rs.

    tools/reference/.venv/bin/python tools/reference/make_special_tokens_fixture.py   # after make_torch_fixtures.py

transformers (4.34 on) reads special tokens from tokenizer_config.json alone when that file has
an `added_tokens_decoder` (which it writes), and only otherwise lets special_tokens_map.json
override them (the legacy path). Each folder under tests/fixtures/special-tokens/ starts from
lxmert-torch/'s slow tokenizer (vocab.txt, tokenizer_config.json with `added_tokens_decoder`,
special_tokens_map.json), with special_tokens_map.json naming "[MASK]" as the unknown and the
padding token:
- decoder/: as saved: transformers uses tokenizer_config.json's "[UNK]" and "[PAD]";
- legacy/: without `added_tokens_decoder`: special_tokens_map.json's "[MASK]" wins;
- fast/: decoder/ with the tokenizer.json of lxmert/ (the fast path reads its pad token the
  same way);
- legacy-additional/: legacy/ whose two files both list `additional_special_tokens`:
  special_tokens_map.json [{"content": "[A1]", ...}, "[B1]"], tokenizer_config.json
  ["[C1]", "[A1]"]. On the legacy path transformers takes the union, tokenizer_config.json's
  list first, then the map's tokens not in it (an AddedToken dict never equals a string there,
  so "[A1]" is listed twice, but one token gets one id): "[C1]", "[A1]", "[B1]" get ids 222, 223,
  224 after vocab.txt's 222 tokens.
expected.json holds, per folder, transformers' unk and pad tokens, additional special tokens,
pad id and input ids of TEXTS.
"""

import json
import shutil
from pathlib import Path

from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "special-tokens"
TEXTS = [
    "what zzzqqq color is the square?",
    "is it ☃ left of the circle",
    "[C1] what [A1] is [B1] left",
]


def write_folder(name: str) -> Path:
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = FIXTURES / "lxmert-torch"
    for file in ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(source / file, folder / file)
    special = json.loads((folder / "special_tokens_map.json").read_text())
    special["unk_token"] = "[MASK]"
    special["pad_token"] = "[MASK]"
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    if name.startswith("legacy"):
        config = json.loads((folder / "tokenizer_config.json").read_text())
        del config["added_tokens_decoder"]
        if name == "legacy-additional":
            config["additional_special_tokens"] = ["[C1]", "[A1]"]
            a1 = dict(content="[A1]", lstrip=False, normalized=False, rstrip=False, single_word=False)
            special["additional_special_tokens"] = [a1, "[B1]"]
            (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if name == "fast":
        shutil.copy(FIXTURES / "lxmert" / "tokenizer.json", folder / "tokenizer.json")
    return folder


def main() -> None:
    expected = {}
    for name in ["decoder", "legacy", "fast", "legacy-additional"]:
        tokenizer = AutoTokenizer.from_pretrained(write_folder(name))
        expected[name] = {
            "class": type(tokenizer).__name__,
            "unk_token": tokenizer.unk_token,
            "pad_token": tokenizer.pad_token,
            "additional_special_tokens": tokenizer.additional_special_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "input_ids": [tokenizer(text)["input_ids"] for text in TEXTS],
        }
    additional = expected["legacy-additional"]
    assert additional["additional_special_tokens"] == ["[C1]", "[A1]", "[A1]", "[B1]"], additional
    assert additional["input_ids"][2][1:7:2] == [222, 223, 224], additional
    expected["texts"] = TEXTS
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(expected, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
