#!/usr/bin/env python3
"""One more `opm start` with N running, two builds side by side.

Usage (from the repository root; build each commit with `cargo build
--release` and copy its `target/release/opm` aside):

    python3 benches/start_ab.py --a /tmp/opm-old --b /tmp/opm-new
    python3 benches/start_ab.py --a A --b B --procs 1000 --starts 30 --rounds 4

Each round gives each build a fresh OPM_HOME in a temporary directory, starts
--procs `sleep 1000` from one `.toml` file, waits until they are all online,
then times --starts single `opm start "sleep 1000" --name xK` CLI calls, one
after the other, from the spawn of the CLI to the return of the wait on its
exit. The homes, the timed calls and the clean-up are `benches/compare.py`'s
(`Opm`). The order of the two builds alternates from
round to round, so a machine that gets busier or quieter during the run
weighs on both alike. The environment given to opm is PATH and HOME only
(a start's cost grows with the caller's environment, which it stores).

What it prints: each round's median per build, then per build the median and
quartiles of all its calls, and the load average before and after.

Clean-up, whatever happens: `opm kill` in each home, then SIGKILL to every
process (and the groups they lead) that still carries this run's marker
variable in its environment.
"""

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

# The side-by-side bench's own pieces: a tool with its home, its marker and
# its clean-up, its timed CLI calls (`Tool.call`) and its process file.
import compare
from compare import BenchError, Opm


def one_build(binary, procs, starts, root, mark, tag):
    """The timings (ms) of `starts` single starts with `procs` running."""
    tool = Opm(root, mark, tag, Path(binary))
    try:
        tool.warm_daemon()
        tool.call(tool.start_file_cmd(tool.write_file(procs)))
        got = tool.wait_online(procs)
        if got < procs:
            raise BenchError(f"{binary}: only {got}/{procs} online")
        return [tool.start_one(f"x{k}") / 1e6 for k in range(starts)]
    finally:
        tool.cleanup()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="the first opm binary")
    p.add_argument("--b", required=True, help="the second opm binary")
    p.add_argument("--procs", type=int, default=1000, help="processes running (default 1000)")
    p.add_argument("--starts", type=int, default=30, help="timed starts per round (default 30)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per build (default 4)")
    args = p.parse_args()
    # A start stores the caller's environment: PATH and HOME only.
    env = {k: v for k, v in compare.BASE_ENV.items() if k in ("PATH", "HOME")}
    compare.BASE_ENV.clear()
    compare.BASE_ENV.update(env)
    load = lambda: " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"load average before: {load()}")
    mark = f"start-ab-{uuid.uuid4().hex[:12]}"
    results = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(prefix="opm-start-ab-") as root:
        try:
            for rnd in range(args.rounds):
                order = ("a", "b") if rnd % 2 == 0 else ("b", "a")
                for which in order:
                    opm = getattr(args, which)
                    times = one_build(opm, args.procs, args.starts, Path(root), mark, f"{which}{rnd}")
                    results[which] += times
                    print(f"round {rnd + 1} {which} ({opm}): median {statistics.median(times):.2f} ms")
        except BenchError as e:
            sys.exit(str(e))
    for which in ("a", "b"):
        ts = sorted(results[which])
        q = statistics.quantiles(ts, n=4)
        print(
            f"{which} {getattr(args, which)}: {len(ts)} starts, median {statistics.median(ts):.2f} ms "
            f"(quartiles {q[0]:.2f}–{q[2]:.2f})"
        )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
