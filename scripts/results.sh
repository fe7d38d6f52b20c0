#!/usr/bin/env bash
# Regenerates docs/results.md: every method × the three bundled demo models, scored against
# the ground truth of a held-out `fiedler synth` set (pointing game, mass in mask, relevant-word
# rank) beside the perturbation AUCs (ViLT, LXMERT; CLIP has no answer to perturb).
#
#   scripts/results.sh            # about 2–3 minutes on 2 cores
#
# Deterministic: the same weights give the same table (fixed seed, fixed sample order).
# Settings (environment): MODELS (default models), IMAGES (held-out images, default 100),
# SEED (default 9001, the held-out seed the model cards and tests use), OUT (default
# docs/results.md), WORK (scratch folder, default target/results).
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${MODELS:-models}
IMAGES=${IMAGES:-100}
SEED=${SEED:-9001}
OUT=${OUT:-docs/results.md}
WORK=${WORK:-target/results}

cargo build --release --quiet
FIEDLER=target/release/fiedler

rm -rf "$WORK"
mkdir -p "$WORK"
SET="$WORK/synth-seed$SEED-n$IMAGES"
"$FIEDLER" synth --out "$SET" --images "$IMAGES" --seed "$SEED" >/dev/null

weights() { # model dir -> "sha256 prefix" or nothing
  if [[ -f "$1/model.safetensors" ]]; then sha256sum "$1/model.safetensors" | cut -c1-12; fi
}

run_model() { # model name, results name, then eval arguments
  local name=$1 results=$2; shift 2
  local dir="$MODELS/$name"
  if [[ -z "$(weights "$dir")" ]]; then
    echo "skipping $name: no $dir/model.safetensors" >&2
    return
  fi
  echo "== $results" >&2
  "$FIEDLER" eval --model "$dir" --results "$WORK/$results/results.jsonl" "$@" >/dev/null
}

QA=(--questions "$SET/questions.json" --annotations "$SET/annotations.json")
VILT=("${QA[@]}" --images "$SET/images" --file-pattern 'synth_{id:012}.png')
LXMERT=("${QA[@]}" --features "$SET/regions" --file-pattern 'synth_{id:012}.safetensors')
# The seed explained DSMI+Grad(+Attn) by the sum of the logits (bug B1): those two again so.
SEED_TARGET=(--methods dsmi-grad,dsmi-grad-attn --target seed)
run_model vilt-synth vilt-synth "${VILT[@]}"
run_model vilt-synth vilt-synth-seed-target "${VILT[@]}" "${SEED_TARGET[@]}"
run_model lxmert-synth lxmert-synth "${LXMERT[@]}"
run_model lxmert-synth lxmert-synth-seed-target "${LXMERT[@]}" "${SEED_TARGET[@]}"
run_model clip-synth clip-synth --captions "$SET/captions.json"

QUESTIONS=$(grep -o '"question_id"' "$SET/questions.json" | wc -l)
{
  echo "# Results: methods × bundled demo models"
  echo
  echo "Produced by \`scripts/results.sh\` (one command; rerun it after the weights change)."
  echo "Held-out \`fiedler synth\` set: seed $SEED, $IMAGES images, $QUESTIONS questions"
  echo "(ViLT and LXMERT: every question; CLIP: the true caption of every image)."
  echo
  echo "- **pointing game**: % of samples whose most relevant patch (ViLT, CLIP) or region"
  echo "  (LXMERT) overlaps an object the question is about, by any of its pixels (CLIP: any object"
  echo "  the caption names);"
  echo "  samples without such an object in view (\"is there …?\" answered \"no\") do not count;"
  echo "  where units tie for the top, the share of them on such an object (a flat map: chance)."
  echo "- **mass in mask**: mean % of the positive image relevance on those objects, each unit's"
  echo "  relevance weighted by the fraction of it on them, so a perfect map stays below 100% where"
  echo "  objects fill patches in part (a map with no positive relevance scores chance, the mean"
  echo "  overlap)."
  echo "- **word rank**: mean rank (1 = top) of the best relevant question word, expected over"
  echo "  ties (a flat map ranks at chance). N/A for CLIP, whose true caption names every object"
  echo "  (no word is singled out)."
  echo "- **AUCs**: the perturbation benchmark of \`fiedler eval\` ([methods.md](methods.md) §E): accuracy (%) as the"
  echo "  most (+, lower is better) or least (−, higher is better) relevant image units or words"
  echo "  are removed. N/A for CLIP, which has no answer to perturb."
  echo "- **chance**: the same scores for relevance in random order: the ground-truth scores'"
  echo "  expected values, and AUCs of the tests run with each sample's units removed in a random"
  echo "  order (one seeded draw per sample and modality)."
  echo
  echo "The explanations are of the model's predicted answer, right or wrong (each model's VQA"
  echo "accuracy on these questions is given below; for CLIP, how often it scores each image's"
  echo "true caption above its distractors)."
  echo
  for name in vilt-synth lxmert-synth clip-synth; do
    dir="$MODELS/$name"
    echo "## $name"
    echo
    sha=$(weights "$dir")
    if [[ -z "$sha" ]]; then
      echo "N/A: no trained weights (models/$name/model.safetensors) when this table was made."
      echo
      continue
    fi
    summary=$("$FIEDLER" eval summary "$WORK/$name/results.jsonl")
    echo "Weights: \`model.safetensors\` sha256 $sha…;" \
      "$(head -n 1 <<<"$summary" | grep -o '[0-9]* samples.*' | sed "s#\`$WORK/[^\`]*\`#the set#")."
    echo
    tail -n +3 <<<"$summary"
    echo
    seed_target="$WORK/$name-seed-target/results.jsonl"
    if [[ -f "$seed_target" ]]; then
      echo "### dsmi-grad and dsmi-grad-attn explaining the sum of the logits"
      echo
      echo "As the seed computed its DSMI+Grad rows (bug B1; \`fiedler eval --target seed\`),"
      echo "on the same samples; chance is drawn as above."
      echo
      summary=$("$FIEDLER" eval summary "$seed_target")
      tail -n +3 <<<"$summary"
      echo
    fi
  done
} > "$OUT"
echo "wrote $OUT" >&2
