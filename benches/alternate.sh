#!/usr/bin/env bash
# Run several `node_profile` commands in turn, ROUNDS times, and print for each the minimum and
# the median of the "whole run median" it reports. Alternating the commands gives each the same
# share of whatever else the machine is doing; the minimum is the least disturbed figure.
#
#   benches/alternate.sh 5 \
#     "old=/tmp/old/debug/node_profile --reps 5 --top 0 models/centerface.onnx 1,3,608,800" \
#     "new=./target/debug/node_profile --reps 5 --top 0 models/centerface.onnx 1,3,608,800"
#
# A command may start with environment settings (`X=1 ./target/debug/node_profile ...`).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 ROUNDS LABEL=COMMAND..." >&2
  exit 2
fi
rounds=$1
shift
declare -A samples
for _ in $(seq "$rounds"); do
  for spec in "$@"; do
    label=${spec%%=*}
    out=$(bash -c "${spec#*=}" 2>&1) || { echo "$label failed:" >&2; echo "$out" >&2; exit 1; }
    value=$(grep -o 'whole run median [0-9.]*' <<<"$out" | awk '{print $4}')
    [[ -n $value ]] || { echo "$label printed no 'whole run median':" >&2; echo "$out" >&2; exit 1; }
    samples[$label]="${samples[$label]:-} $value"
  done
done
for spec in "$@"; do
  label=${spec%%=*}
  tr ' ' '\n' <<<"${samples[$label]}" | grep . | sort -n |
    awk -v l="$label" '{a[NR]=$1} END {printf "%s: min %.1f ms, median %.1f ms, %d runs\n", l, a[1], a[int((NR+1)/2)], NR}'
done
