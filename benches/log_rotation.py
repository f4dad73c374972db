#!/usr/bin/env python3
"""The cost of opm's log rotation.

1. Daemon CPU: N processes (default 100) each write W bytes a second
   (default 1 MiB/s, 1 KiB lines, in 10 ms slices at a fixed pace, a small C
   program built here with `cc`) to their logs; after a warm-up, the daemon's
   utime+stime (`/proc/PID/stat`) is sampled over S seconds (default 60),
   once with rotation on (`max_log_size` = --cap, default 1M, `log_files` 2,
   `[logs] check_interval_ms` 1000: every log rotates about once a second)
   and once off (`max_log_size` 1T: the daemon still checks every log each
   second, nothing is ever over the cap). CPU is given as a percentage of one
   core, with the rotations counted (rotated files created).
2. Write throughput of one child: the same C program writes L-byte lines
   (default 100) as fast as it can for T seconds (default 5) and reports the
   bytes it wrote; with rotation on (cap 1M, a check every 100 ms) and off.

Each phase runs in a fresh OPM_HOME under /tmp; the 1-minute load average is
printed with each figure. Clean-up, whatever happens: `opm kill`, then
SIGKILL of every process group carrying this run's marker variable, then the
temporary folders.

Usage: python3 benches/log_rotation.py [--opm target/release/opm] [--procs 100]
       [--rate 1048576] [--seconds 60] [--cap 1M] [--throughput-seconds 5]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

WRITER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* writer RATE LINE SECONDS RESULT: writes LINE-byte lines to stdout at RATE
   bytes/s (0: as fast as it can) for SECONDS (0: forever), then writes
   "bytes seconds" to RESULT and sleeps. */
int main(int argc, char **argv) {
    if (argc < 5) return 2;
    long rate = atol(argv[1]), len = atol(argv[2]);
    double secs = atof(argv[3]);
    char *line = malloc(len);
    memset(line, 'x', len - 1);
    line[len - 1] = '\n';
    struct timespec start, now, next;
    clock_gettime(CLOCK_MONOTONIC, &start);
    next = start;
    long long total = 0;
    for (;;) {
        if (rate > 0) {
            long per_slice = rate / 100; /* every 10 ms */
            for (long done = 0; done < per_slice; done += len) {
                if (write(1, line, len) != len) return 1;
                total += len;
            }
            next.tv_nsec += 10000000;
            if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        } else {
            for (int i = 0; i < 1000; i++) {
                if (write(1, line, len) != len) return 1;
            }
            total += 1000 * len;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
        if (secs > 0 && el >= secs) {
            FILE *f = fopen(argv[4], "w");
            if (f) { fprintf(f, "%lld %.3f\n", total, el); fclose(f); }
            for (;;) pause();
        }
    }
}
"""

MARK = "OPM_LOGBENCH_RUN"


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def load():
    return os.getloadavg()[0]


def marked_groups(mark):
    needle = f"{MARK}={mark}".encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            found.append(int(d))
    return found


class Run:
    def __init__(self, opm, mark):
        self.opm = opm
        self.home = tempfile.mkdtemp(prefix="opm-logbench-")
        self.env = dict(os.environ, OPM_HOME=self.home)
        self.env[MARK] = mark
        self.mark = mark

    def cli(self, *args):
        return subprocess.run([self.opm, *args], env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=True)

    def daemon_pid(self):
        with open(os.path.join(self.home, "daemon.pid")) as f:
            return int(f.read().strip())

    def cleanup(self):
        try:
            subprocess.run([self.opm, "kill"], env=self.env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        except Exception:
            pass
        for _ in range(10):
            pids = marked_groups(self.mark)
            if not pids:
                break
            for pid in pids:
                for kill in (lambda p: os.killpg(p, signal.SIGKILL), lambda p: os.kill(p, signal.SIGKILL)):
                    try:
                        kill(pid)
                    except OSError:
                        pass
            time.sleep(0.1)
        shutil.rmtree(self.home, ignore_errors=True)


def write_processes(run, writer, n, rate, cap, keep, result_dir, line=1024, seconds=0):
    entries = []
    for i in range(n):
        entries.append(
            f'[[process]]\nname = "w{i}"\nscript = "{writer}"\n'
            f'args = ["{rate}", "{line}", "{seconds}", "{result_dir}/w{i}.result"]\n'
            f'max_log_size = "{cap}"\nlog_files = {keep}\n'
        )
    path = os.path.join(run.home, "procs.toml")
    with open(path, "w") as f:
        f.write("\n".join(entries))
    run.cli("start", path)


def rotated_count(run):
    logs = os.path.join(run.home, "logs")
    return sum(1 for n in os.listdir(logs) if ".log." in n and ".rotating" not in n)


def daemon_cpu(opm, writer, procs, rate, seconds, cap, check_ms, label):
    run = Run(opm, f"cpu-{label}-{os.getpid()}")
    try:
        with open(os.path.join(run.home, "config.toml"), "w") as f:
            f.write(f"[logs]\ncheck_interval_ms = {check_ms}\n")
        write_processes(run, writer, procs, rate, cap, 2, run.home)
        time.sleep(5)  # warm-up: every writer running, the first rotations done
        pid = run.daemon_pid()
        hz = os.sysconf("SC_CLK_TCK")
        la0 = load()
        t0, c0 = time.monotonic(), cpu_ticks(pid)
        # Rotations counted by the rotated files' modification times.
        logs = os.path.join(run.home, "logs")
        before = {}
        for n in os.listdir(logs):
            try:
                before[n] = os.stat(os.path.join(logs, n)).st_mtime_ns
            except OSError:
                pass  # a staging file renamed meanwhile
        rotations = 0
        end = t0 + seconds
        while time.monotonic() < end:
            time.sleep(0.5)
            for n in os.listdir(logs):
                if n.endswith(".log.1"):
                    try:
                        m = os.stat(os.path.join(logs, n)).st_mtime_ns
                    except OSError:
                        continue
                    if before.get(n) != m:
                        before[n] = m
                        rotations += 1
        t1, c1 = time.monotonic(), cpu_ticks(pid)
        la1 = load()
        pct = (c1 - c0) / hz / (t1 - t0) * 100
        du = 0
        for n in os.listdir(logs):
            try:
                du += os.path.getsize(os.path.join(logs, n))
            except OSError:
                pass
        print(f"{label}: daemon CPU {pct:.2f}% of one core over {t1 - t0:.0f} s; "
              f"~{rotations} rotations seen; logs {du / 1e6:.0f} MB at the end; "
              f"load average {la0:.2f} -> {la1:.2f}", flush=True)
        return pct
    finally:
        run.cleanup()


def throughput(opm, writer, seconds, line, cap, check_ms, label):
    run = Run(opm, f"tp-{label}-{os.getpid()}")
    try:
        with open(os.path.join(run.home, "config.toml"), "w") as f:
            f.write(f"[logs]\ncheck_interval_ms = {check_ms}\n")
        la0 = load()
        write_processes(run, writer, 1, 0, cap, 2, run.home, line=line, seconds=seconds)
        result = os.path.join(run.home, "w0.result")
        deadline = time.monotonic() + seconds + 60
        while not os.path.exists(result) and time.monotonic() < deadline:
            time.sleep(0.2)
        with open(result) as f:
            total, el = f.read().split()
        rate = int(total) / float(el) / 1e6
        print(f"{label}: one child wrote {int(total) / 1e6:.0f} MB of {line}-byte lines in "
              f"{float(el):.1f} s = {rate:.0f} MB/s; rotated files {rotated_count(run)}; "
              f"load average {la0:.2f} -> {load():.2f}", flush=True)
        return rate
    finally:
        run.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--opm", default="target/release/opm")
    ap.add_argument("--procs", type=int, default=100)
    ap.add_argument("--rate", type=int, default=1024 * 1024)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--cap", default="1M")
    ap.add_argument("--throughput-seconds", type=float, default=5)
    ap.add_argument("--line", type=int, default=100)
    ap.add_argument("--only", choices=["cpu", "throughput"])
    a = ap.parse_args()
    opm = os.path.abspath(a.opm)
    build = tempfile.mkdtemp(prefix="opm-logbench-cc-")
    try:
        src = os.path.join(build, "writer.c")
        writer = os.path.join(build, "writer")
        with open(src, "w") as f:
            f.write(WRITER_C)
        subprocess.run(["cc", "-O2", "-o", writer, src], check=True)
        print(f"opm {subprocess.run([opm, '--version'], capture_output=True, text=True).stdout.strip()}, "
              f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
        if a.only != "throughput":
            daemon_cpu(opm, writer, a.procs, a.rate, a.seconds, a.cap, 1000, f"rotation on (cap {a.cap}, 2 kept)")
            daemon_cpu(opm, writer, a.procs, a.rate, a.seconds, "1000G", 1000, "rotation off (cap 1000G)")
        if a.only != "cpu":
            throughput(opm, writer, a.throughput_seconds, a.line, a.cap, 100, f"rotation on (cap {a.cap}, check 100 ms)")
            throughput(opm, writer, a.throughput_seconds, a.line, "1000G", 100, "rotation off")
    finally:
        shutil.rmtree(build, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
