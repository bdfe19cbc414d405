#!/usr/bin/env bash
# How much of the detector's speed the web app delivers: the same photos through the detector
# alone (`stage_times`: one Detector, two threads, decoded images) and through `mask-web` at
# saturation (`load`: concurrent POST /api/upload with the real server, decoding, drawing,
# storing), in one run on one machine. The last line is the ratio web / detector.
#
#   benches/web_efficiency.sh            # 12 photos, load at 8 clients for 30 s
#   PHOTOS=12 LEVEL=8 SECONDS_PER_LEVEL=30 REPS=3 AUTH=token PAGES=off benches/web_efficiency.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
photos_n="${PHOTOS:-12}"
level="${LEVEL:-8}"
seconds="${SECONDS_PER_LEVEL:-30}"
reps="${REPS:-3}"

make -C "$root" --no-print-directory build >/dev/null
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The photos `load --photos N` takes: the first N test photos by name (of 17, N <= 17).
mapfile -t photos < <(find "$root/fixtures/photos" -name '*.png' | sort | head -n "$photos_n")

echo "detector alone: stage_times --reps $reps on ${#photos[@]} photos"
"$bin/stage_times" --reps "$reps" "${photos[@]}" >"$out/detector.json"
# API clients that send many photos take a bearer token once (POST /api/token) rather than
# sending their password, and its argon2 check, with every photo. AUTH=password measures that.
# The detector's side has no page traffic; PAGES=on adds load's visitor (form logins, history
# pages) to the web side.
auth="${AUTH:-token}"
pages="${PAGES:-off}"
echo "web app: load --levels $level --seconds $seconds --photos $photos_n --auth $auth --pages $pages"
# Warmed up like stage_times: each photo shape's plan is made before the timed level.
"$bin/load" --levels "$level" --seconds "$seconds" --photos "$photos_n" --auth "$auth" \
    --pages "$pages" --warm-up --json "$out/web.json"

python3 - "$out/detector.json" "$out/web.json" <<'PY'
import json, sys
detector = json.load(open(sys.argv[1]))["throughput_2_threads"]
web = json.load(open(sys.argv[2]))
level = web["levels"][-1]
det_rate = detector["images_per_s"]
web_rate = level["created_per_s"]
print(f"detector alone: {det_rate:.2f} images/s ({detector['images']} in {detector['seconds']:.1f} s, 2 threads)")
print(f"web app: {web_rate:.2f} uploads/s answered 201 at {level['concurrency']} clients; "
      f"statuses {level['statuses']}; server peak RSS {web.get('server_vmhwm_mib')} MiB")
print(f"web/detector = {web_rate / det_rate:.2f}")
PY
