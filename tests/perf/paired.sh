#!/usr/bin/env bash
# Two builds of deployapi under the same load at the same time: a ratio that the
# machine's noise moves far less than back-to-back runs do.
#
#   tests/perf/paired.sh WORKLOAD SECONDS "ENV_A" "ENV_B"
#   tests/perf/paired.sh approve 8 "PYTHONPATH=/tmp/old" "PYTHONPATH=$PWD"
#   tests/perf/paired.sh approve 8 "" "THREADS=1"
#
# Each side is `deployapi serve` (waitress, $THREADS or 4 threads) on a fresh
# database, started with its ENV words (PYTHONPATH picks the build; THREADS the
# thread count), seeded with 1,000 deployments, then loaded by its own
# `wrk -t1 -c16` for SECONDS after a 2 s warm-up, both at once.  Prints
# req/s and p99 of each and B/A.  Alternate the order between runs: A gets a
# few per cent more (A/A runs: 0.965-0.981).
#
# Needs wrk and the team's bench harness (its Lua scripts and seed.py) in
# $BENCH (default ../shared/bench), with its venv built (bench/run.sh does it;
# BENCH_PYTHON names the venv's python when STATE_DIR put it elsewhere);
# DEPLOYAPI is the interpreter with deployapi's dependencies (default
# .venv/bin/python); without PYTHONPATH it runs the deployapi installed there.
# Not part of the test run; results in docs/performance.md.
set -euo pipefail
WORKLOAD=$1 SECONDS_=$2 ENV_A=$3 ENV_B=$4
BENCH=$(realpath "${BENCH:-../shared/bench}")
BENCH_PYTHON=$(realpath "${BENCH_PYTHON:-$BENCH/.venv/bin/python}")
DEPLOYAPI=$(realpath -s "${DEPLOYAPI:-.venv/bin/python}")
WORK=$(mktemp -d)
case $WORKLOAD in
  get) SCRIPT=get.lua ;; list) SCRIPT=list.lua ;; create) SCRIPT=create.lua ;; approve) SCRIPT=approve_flow.lua ;;
  *) echo "workload: get, list, create or approve" >&2; exit 2 ;;
esac

free_port() { "$DEPLOYAPI" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pids=()
ports=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for side in A B; do
  spec=$ENV_A; [ "$side" = B ] && spec=$ENV_B
  port=$(free_port)
  # shellcheck disable=SC2086  # ENV words are meant to split
  # Started from $WORK: `python -m` puts the current directory first on the
  # path, and the checkout there would shadow PYTHONPATH.
  env $spec bash -c "cd '$WORK' && exec '$DEPLOYAPI' -m deployapi serve --db '$WORK/$side.db' --host 127.0.0.1 \
      --port $port --threads \${THREADS:-4}" > "$WORK/$side.log" 2>&1 &
  pids+=($!)
  ports+=("$port")
done
for port in "${ports[@]}"; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
  "$BENCH_PYTHON" "$BENCH/seed.py" --url "http://127.0.0.1:$port/" --n 1000 --ids-file "$WORK/ids$port.txt" > /dev/null
done

load() {  # port seconds output
  local extra=()
  [ "$WORKLOAD" = get ] && extra=(-- "$WORK/ids$1.txt")
  wrk -t1 -c16 -d"$2"s -s "$BENCH/wrk/$SCRIPT" "http://127.0.0.1:$1/" "${extra[@]}" | grep '^WRK' > "$3"
}
load "${ports[0]}" 2 /dev/null & warm=$!
load "${ports[1]}" 2 /dev/null
wait $warm
load "${ports[0]}" "$SECONDS_" "$WORK/A.txt" & first=$!
load "${ports[1]}" "$SECONDS_" "$WORK/B.txt"
wait $first

"$DEPLOYAPI" - "$WORK/A.txt" "$WORK/B.txt" <<'PY'
import re
import sys

def figures(path):
    text = open(path).read()
    return [float(re.search(name + r"=([0-9.]+)", text).group(1)) for name in ("rps", "p99_ms")]

(a_rps, a_p99), (b_rps, b_p99) = figures(sys.argv[1]), figures(sys.argv[2])
print(f"A rps={a_rps:.0f} p99={a_p99:.1f}  B rps={b_rps:.0f} p99={b_p99:.1f}  B/A={b_rps / a_rps:.3f}")
PY
