#!/usr/bin/env bash
# A/B two fiedler binaries on a noisy machine: runs `fiedler bench` with each in turn, for
# several rounds, and prints each one's ms per explanation (the minimum, then every round).
# Interleaving puts both under the same background load; the minimum is the least disturbed.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [-- bench arguments]
#
# The bench arguments default to LXMERT dsmi-grad at batch 16 (issue #5's measurement). Give
# one method and one batch size: the last line of each run is read.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,9p "$0"; exit 2; }
a=$1 b=$2 rounds=${3:-4}
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--size lxmert-base --method dsmi-grad --batch 16 --text-tokens 20 --repeats 3)
for _ in $(seq "$rounds"); do
    for bin in "$a" "$b"; do
        # ms/expl is the 6th column of the result line.
        echo "$bin $("$bin" bench "${args[@]}" | tail -1 | awk '{print $6}')"
    done
done | awk '{ all[$1] = all[$1] " " $2; if (!($1 in min) || $2 < min[$1]) min[$1] = $2 }
    END { for (k in min) printf "%s: min %s ms/expl; rounds:%s\n", k, min[k], all[k] }'
