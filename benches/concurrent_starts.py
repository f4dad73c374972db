#!/usr/bin/env python3
"""What acknowledged-means-on-disk costs through the CLI.

For one opm binary (--opm, default target/release/opm), in a fresh temporary
OPM_HOME each run:
  1. `opm daemon restore`, then 20 `opm start "sleep 1000" --name sN` one after
     another: the median latency of one start (spawn of the CLI to its exit);
  2. 100 `opm start "sleep 1000" --name cN` launched at once from 100 threads:
     the wall time until the last one exits;
  3. with --strace, the same 100 concurrent starts in another fresh home with
     `strace -f -c -e trace=fsync,fdatasync` attached to the daemon: how many
     fsync/fdatasync calls they cost (strace slows the daemon: no timing).
Then `opm kill`, and SIGKILL of anything still carrying the run's marker.
Prints one Markdown table row per figure; --runs N takes medians of N runs.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MARK = "OPM_BENCH_RUN"


def run(opm, home, *args):
    env = dict(os.environ, OPM_HOME=home, **{MARK: home})
    return subprocess.run([opm, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)


def timed_start(opm, home, name):
    t = time.perf_counter_ns()
    r = run(opm, home, "start", "sleep 1000", "--name", name)
    if r.returncode != 0:
        sys.exit(f"start {name} failed: {r.stderr.decode()}")
    return (time.perf_counter_ns() - t) / 1e6


def concurrent(opm, home, n):
    threads = [threading.Thread(target=timed_start, args=(opm, home, f"c{i}"))
               for i in range(n)]
    t = time.perf_counter_ns()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (time.perf_counter_ns() - t) / 1e6


def cleanup(opm, home):
    run(opm, home, "kill")
    needle = f"{MARK}={home}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(home, ignore_errors=True)


def one_run(opm):
    home = tempfile.mkdtemp(prefix="opm-bench-")
    try:
        run(opm, home, "daemon", "restore")
        single = statistics.median(timed_start(opm, home, f"s{i}") for i in range(20))
        wall = concurrent(opm, home, 100)
        return single, wall
    finally:
        cleanup(opm, home)


def fsync_count(opm):
    home = tempfile.mkdtemp(prefix="opm-bench-")
    try:
        run(opm, home, "daemon", "restore")
        with open(os.path.join(home, "daemon.pid")) as f:
            pid = f.read().strip()
        out = os.path.join(home, "strace.txt")
        st = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync",
                               "-o", out, "-p", pid], stderr=subprocess.PIPE)
        # strace says "attached" on stderr once it holds every thread.
        line = st.stderr.readline()
        if b"attached" not in line:
            sys.exit(f"strace did not attach: {line!r}")
        concurrent(opm, home, 100)
        st.send_signal(signal.SIGINT)
        st.wait()
        counts = {}
        with open(out) as f:
            for line in f:
                parts = line.split()
                if parts and parts[-1] in ("fsync", "fdatasync"):
                    counts[parts[-1]] = int(parts[3])
        return counts
    finally:
        cleanup(opm, home)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opm", default="target/release/opm")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--label", default="opm")
    ap.add_argument("--strace", action="store_true")
    a = ap.parse_args()
    results = [one_run(a.opm) for _ in range(a.runs)]
    single = statistics.median(r[0] for r in results)
    wall = statistics.median(r[1] for r in results)
    print(f"| {a.label} | one start: {single:.1f} ms | 100 concurrent starts: {wall:.0f} ms |"
          f" runs: {[(round(s, 1), round(w)) for s, w in results]} | load {os.getloadavg()[0]:.2f} |")
    if a.strace:
        print(f"| {a.label} | fsync/fdatasync calls for 100 concurrent starts: {fsync_count(a.opm)} |")


if __name__ == "__main__":
    main()
