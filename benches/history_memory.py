#!/usr/bin/env python3
"""The daemon's memory with a full CPU/memory history for N processes.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/history_memory.py              # 1,000 processes
    python3 benches/history_memory.py --processes 100 --binary target/release/opm

Two daemons, each in its own temporary OPM_HOME, each running N `sleep`
processes started from one process file:

  - `samples = 1`: the history holds one sample per process (the baseline);
  - `samples = 360` (the default): a full hour's worth, 360 samples.

Both sample every 100 ms (`interval_ms = 100`) instead of the default 10 s so
that 360 samples are reached in 36 s; the memory a sample takes does not
depend on how often it is taken. The daemon's VmRSS is read once every
process is online, and again after 40 s (every history full). The difference
between the two daemons' final RSS is what the history costs.

Clean-up, whatever happens: `opm kill` in each home, then SIGKILL to the
process group of anything still carrying this run's marker variable.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

MARKER = "OPM_HISTORY_BENCH"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def opm(binary, home, *args, check=True):
    env = dict(os.environ, OPM_HOME=home, **{MARKER: "1"})
    out = subprocess.run([binary, *args], env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"opm {' '.join(args)}: {out.stderr}")
    return out.stdout


def marked_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"{MARKER}=1".encode() in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def run(binary, n, samples):
    home = tempfile.mkdtemp(prefix="opm-history-")
    try:
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write(f"[daemon.history]\ninterval_ms = 100\nsamples = {samples}\n")
        opm(binary, home, "daemon", "restore")
        procs = os.path.join(home, "procs.toml")
        with open(procs, "w") as f:
            for i in range(n):
                f.write(f'[[process]]\nscript = "sleep 100000"\nname = "p{i}"\n\n')
        opm(binary, home, "start", procs)
        deadline = time.time() + 120
        while time.time() < deadline:
            listed = json.loads(opm(binary, home, "list", "--format", "json"))
            if sum(1 for p in listed if p["status"] == "online") == n:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("not every process came online in 120 s")
        with open(os.path.join(home, "daemon.pid")) as f:
            pid = int(f.read().strip())
        before = rss_kib(pid)
        time.sleep(40)
        history = json.loads(
            subprocess.run(
                ["curl", "-s", "--unix-socket", os.path.join(home, "opm.sock"),
                 "http://opm/daemon/history"],
                capture_output=True, text=True, check=True).stdout)
        kept = max(len(s["at_ms"]) for s in history["subjects"])
        after = rss_kib(pid)
        return before, after, kept
    finally:
        opm(binary, home, "kill", check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default="target/release/opm")
    ap.add_argument("--processes", type=int, default=1000)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    try:
        results = {s: run(binary, a.processes, s) for s in (1, 360)}
    finally:
        for pid in marked_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    print(f"| samples kept | processes | daemon RSS, all online | daemon RSS after 40 s | samples held |")
    print("|---|---|---|---|---|")
    for s, (before, after, kept) in results.items():
        print(f"| {s} | {a.processes} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB | {kept} |")
    cost = (results[360][1] - results[1][1]) / 1024
    print(f"\nhistory of 360 samples for {a.processes} processes: {cost:.1f} MiB "
          f"({cost * 1024 * 1024 / a.processes:.0f} bytes per process)")


if __name__ == "__main__":
    sys.exit(main())
