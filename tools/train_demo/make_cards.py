"""Writes models/*-synth/README.md (model cards) from each model's training.json.

    tools/reference/.venv/bin/python tools/train_demo/make_cards.py
"""

from __future__ import annotations

import json
import math

from safetensors import safe_open

import common

INTRO = {
    "vilt": ("ViltForQuestionAnswering", "answers questions about `fiedler synth` scenes from the image pixels "
             "({edge}×{edge} after ViltImageProcessor, patch {patch}: a {grid}×{grid} patch grid)"),
    "lxmert": ("LxmertForQuestionAnswering", "answers questions about `fiedler synth` scenes from their region "
               "inputs (10 regions × 16 features + normalised boxes per image; the `regions/*.safetensors` "
               "files or `regions.tsv` that `fiedler synth` writes)"),
    "clip": ("CLIPModel", "scores `fiedler synth` scenes against captions (128×128, patch 16: an 8×8 patch grid)"),
}


def params(folder) -> int:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def card(family: str) -> None:
    folder = common.MODELS_DIR / f"{family}-synth"
    m = json.loads((folder / "training.json").read_text())
    cfg = json.loads((folder / "config.json").read_text())
    arch, what = INTRO[family]
    if family == "vilt":
        edge = json.loads((folder / "preprocessor_config.json").read_text())["size"]["shortest_edge"]
        what = what.format(edge=edge, patch=cfg["patch_size"], grid=edge // cfg["patch_size"])
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    lines = [
        f"# {family}-synth: a small {arch} trained on synthetic scenes", "",
        f"A demo model for fiedler: it {what}. Trained from random initialisation on CPU by "
        f"`tools/train_demo/train_{family}.py`; Hugging Face layout, so transformers and fiedler load it alike.", "",
        f"- parameters: {params(folder):,} (model.safetensors {size_mb:.1f} MB, float32)",
        f"- training: seed-{m['train_seed']} synthetic set, {m['steps']} steps in {m['minutes']:.0f} min "
        f"on {m['torch_threads']} CPU thread(s) of a shared machine, best checkpoint on the seed-2 validation set",
    ]
    def flags(args: dict) -> str:
        return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(args.items())
                        if k != "out" and v is not None)

    lines.append(f"- command: `TRAIN_THREADS={m['torch_threads']} tools/reference/.venv/bin/python "
                 f"tools/train_demo/train_{family}.py {flags(m['args'])}`")
    # Each stage continued from the best checkpoint of the one before it, newest first.
    later, stage = m, m.get("continued_from")
    while stage:
        lines.append(f"  (continuing an earlier run of {stage['steps']} steps in {stage['minutes']:.0f} min, "
                     f"lr {stage['args']['lr']}, batch {stage['args']['batch']}; the run after it: lr "
                     f"{later['args']['lr']}, batch {later['args']['batch']}; the earlier run: "
                     f"`{flags(stage['args'])}`, its best checkpoint)")
        later, stage = stage, stage.get("continued_from")
    if family == "clip":
        lines += [
            f"- held-out caption retrieval (seed {m['held_out_seed']}, {m['held_out_images']} images, "
            f"the true caption against {m['captions_per_set'] - 1} distractors that each change one object's "
            f"colour or shape): **top-1 {100 * m['held_out_top1']:.1f}%** (validation {100 * m['valid_best']:.1f}%)",
        ]
    else:
        acc = m["held_out_accuracy"]
        lines += [
            f"- held-out VQA accuracy (seed {m['held_out_seed']}, {m['held_out_questions']} questions; ten "
            f"identical answers per question, so VQA accuracy = exact match): **{100 * acc['all']:.1f}%** "
            f"(validation {100 * m['valid_best']:.1f}%)", "",
            "| question type | held-out accuracy |", "|---|---|",
        ]
        lines += [f"| {k} | {100 * v:.1f}% |" for k, v in acc.items() if k != "all"]
        lines += ["", f"Answers (config `id2label`): {', '.join(cfg['id2label'][str(i)] for i in range(len(cfg['id2label'])))}."]
    score = m["held_out_top1"] if family == "clip" else m["held_out_accuracy"]["all"]
    if score < 0.9:
        history = {"clip": " The auxiliary per-patch colour/shape loss (`--aux`) is what moved it: the "
                           "first run, without it, stayed near 76%.",
                   "vilt": " Answers alone left it at the answer prior (38.7%); the scenes' pixel statistics "
                           "and the auxiliary per-patch colour/shape loss (`--aux`) got it moving."}
        lines += ["", f"**Below the 90% target of issue 8** on this held-out set. Training ran for a fixed "
                      f"wall-clock budget on a shared 2-core machine.{history.get(family, '')} "
                      f"`tests/synth_models.rs` asks 85% of the Rust engine."]
    lines += ["", "The Rust engine's own check of this model on the held-out seed is `tests/synth_models.rs`.",
              "It knows only the synthetic world: shapes, colours, counts, left of; nothing about real photos.", ""]
    (folder / "README.md").write_text("\n".join(lines))
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    for family in ("vilt", "lxmert", "clip"):
        if (common.MODELS_DIR / f"{family}-synth" / "training.json").is_file():
            card(family)
