#!/usr/bin/env python3
"""One more `opm start` with N running, two builds side by side.

Usage (from the repository root; build each commit with `cargo build
--release` and copy its `target/release/opm` aside):

    python3 benches/start_ab.py --a /tmp/opm-old --b /tmp/opm-new
    python3 benches/start_ab.py --a A --b B --procs 1000 --starts 30 --rounds 4

Each round gives each build a fresh OPM_HOME in a temporary directory, starts
--procs `/bin/sleep 1000` from one `.toml` file, then times --starts single
`opm start "/bin/sleep 1000" --name xK` CLI calls, one after the other, from
the fork of the CLI to its exit. The order of the two builds alternates from
round to round, so a machine that gets busier or quieter during the run
weighs on both alike. The environment given to opm is PATH and HOME only
(a start's cost grows with the caller's environment, which it stores).

What it prints: each round's median per build, then per build the median and
quartiles of all its calls, and the load average before and after.

Clean-up, whatever happens: `opm kill` in each home, then SIGKILL to every
process that still carries this run's marker variable in its environment.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MARKER = "OPM_START_AB"


def marked_pids(mark):
    """Every live process whose environment carries this run's marker."""
    pids = []
    needle = f"{MARKER}={mark}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def wait_settled(opm, env, want, deadline_s=60):
    """Polls the daemon's list until `want` processes are online."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            [opm, "list", "--format", "json"], env=env, capture_output=True, text=True
        )
        if out.returncode == 0:
            online = sum(1 for p in json.loads(out.stdout) if p.get("status") == "online")
            if online >= want:
                return
        time.sleep(0.05)
    sys.exit(f"{opm}: {want} processes never all online")


def one_build(opm, procs, starts, root, mark):
    """The timings (ms) of `starts` single starts with `procs` running."""
    home = tempfile.mkdtemp(prefix="home-", dir=root)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "OPM_HOME": home,
        MARKER: mark,
    }
    with open(os.path.join(home, "procs.toml"), "w") as f:
        for i in range(procs):
            f.write(f'[[process]]\nname = "s{i}"\nscript = "/bin/sleep 1000"\n\n')
    try:
        subprocess.run([opm, "daemon", "restore"], env=env, capture_output=True, check=True)
        subprocess.run(
            [opm, "start", os.path.join(home, "procs.toml")],
            env=env,
            capture_output=True,
            check=True,
        )
        wait_settled(opm, env, procs)
        times = []
        for k in range(starts):
            t = time.perf_counter()
            out = subprocess.run(
                [opm, "start", "/bin/sleep 1000", "--name", f"x{k}"],
                env=env,
                capture_output=True,
                text=True,
            )
            times.append((time.perf_counter() - t) * 1000)
            if out.returncode != 0:
                sys.exit(f"{opm}: start x{k} failed: {out.stderr}")
        return times
    finally:
        subprocess.run([opm, "kill"], env=env, capture_output=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="the first opm binary")
    p.add_argument("--b", required=True, help="the second opm binary")
    p.add_argument("--procs", type=int, default=1000, help="processes running (default 1000)")
    p.add_argument("--starts", type=int, default=30, help="timed starts per round (default 30)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per build (default 4)")
    args = p.parse_args()
    load = lambda: " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"load average before: {load()}")
    mark = f"{os.getpid()}-{time.time_ns()}"
    results = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(prefix="opm-start-ab-") as root:
        try:
            for rnd in range(args.rounds):
                order = ("a", "b") if rnd % 2 == 0 else ("b", "a")
                for which in order:
                    opm = getattr(args, which)
                    times = one_build(opm, args.procs, args.starts, root, mark)
                    results[which] += times
                    print(f"round {rnd + 1} {which} ({opm}): median {statistics.median(times):.2f} ms")
        finally:
            for pid in marked_pids(mark):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
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
