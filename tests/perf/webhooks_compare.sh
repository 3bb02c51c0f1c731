#!/usr/bin/env bash
# The create workload with a webhook, against none, in one compare.sh run per case:
#
#   tests/perf/webhooks_compare.sh [fast|hang ...]     (default: fast hang)
#
# For each case, starts tests/perf/webhook_receiver.py in that mode, writes a
# configuration file with one json webhook (signed) pointed at it, and runs
#   BASE=project WORKLOADS=create compare.sh project project-alt
# with PROJECT_ALT_ARGS="--config FILE": `project` has no webhook, `project-alt`
# delivers every event to the receiver.  ROUNDS, DURATION and the other
# compare.sh knobs pass through (defaults here: ROUNDS=3, DURATION=10).  Run
# from the project root; BENCH (default ../shared/bench) is the load harness.
set -euo pipefail
BENCH="${BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/shared/bench}"
PYTHON="${PYTHON:-.venv/bin/python}"
export ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-10}" WORKLOADS="${WORKLOADS:-create}" BASE="${BASE:-project}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(fast hang)
for m in "${modes[@]}"; do
  "$PYTHON" tests/perf/webhook_receiver.py "$m" "$work/$m.port" > "$work/$m.out" &
  receiver=$!
  for _ in $(seq 50); do [ -s "$work/$m.port" ] && break; sleep 0.1; done
  cat > "$work/$m.toml" <<TOML
[[webhooks]]
name = "bench-$m"
url = "http://127.0.0.1:$(cat "$work/$m.port")/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
format = "json"
TOML
  echo "### webhook receiver: $m"
  PROJECT_ALT_ARGS="--config $work/$m.toml" "$BENCH/compare.sh" project project-alt
  kill -TERM "$receiver"; wait "$receiver" || true
  echo "### receiver $m: $(cat "$work/$m.out")"
done
