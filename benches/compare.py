#!/usr/bin/env python3
"""Whole-program figures of opm side by side with PM2.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/compare.py                     # 3 runs, opm and PM2
    python3 benches/compare.py --runs 1 --no-pm2   # a quick look at opm alone
    python3 benches/compare.py --out results.md    # also write the table

PM2 is installed from the npm registry into a temporary prefix
(`npm install --prefix TMP pm2@latest`) and runs with its own temporary
PM2_HOME; opm runs from a copy of target/release/opm with its own temporary
OPM_HOME. Nothing outside those temporary directories is touched.

Every figure is the median of the runs (3 by default). Each run uses fresh
homes, and the tools take turns (opm run 1, PM2 run 1, opm run 2, ...). What
one run measures, for each tool:

  A. fresh home: the first `list` (it starts the daemon: "cold start"); daemon
     RSS with 0 processes; N starts with one CLI call each (`opm start "sleep
     1000" --name pN` / `pm2 start sleep --name pN -- 1000`), pausing after the
     10th for the `list` latency with 10 processes; `list` latency with N
     processes; daemon RSS with N; the daemon's CPU over --idle-seconds.
  B. fresh home, daemon already up: N processes from one command (an opm .toml
     file / a PM2 ecosystem file).
  C. fresh home: crash-to-restart. A small program stamps CLOCK_REALTIME into a
     file when it starts and just before it exits 1 (after 1.2 s); the gap is
     the next start's stamp minus the previous exit's.

A CLI call is timed from just before spawning it to the return of a blocking
wait on its exit (subprocess.Popen + wait, output to a file), with
time.perf_counter_ns(). A `list` latency of one run is the median of
--list-calls calls. RSS is VmRSS of the daemon's pid (opm: $OPM_HOME/daemon.pid,
PM2: $PM2_HOME/pm2.pid); CPU is the utime+stime delta of that pid from
/proc/PID/stat, as a percentage of one core.

Clean-up, whatever happens (an error, Ctrl-C, SIGTERM, SIGHUP): `opm kill` /
`pm2 kill` with the right home, then SIGKILL to every process that still
carries this run's marker variable in its environment (every daemon, CLI and
child started here inherits it), to its process group when it leads one; then
the temporary directories are removed. No process is found by name.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARK_VAR = "OPM_BENCH_MARK"
CLK_TCK = os.sysconf("SC_CLK_TCK")

CRASHER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void stamp(const char *path, char tag) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%c %lld\n", tag,
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        (void)write(fd, buf, (size_t)n);
        close(fd);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    stamp(argv[1], 'S');
    struct timespec d = {1, 200000000L};
    nanosleep(&d, NULL);
    stamp(argv[1], 'E');
    return 1;
}
"""

CRASHER_PY = """\
import sys, time
def stamp(tag):
    with open(sys.argv[1], "a") as f:
        f.write(f"{tag} {time.time_ns()}\\n")
stamp("S")
time.sleep(1.2)
stamp("E")
sys.exit(1)
"""


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------- /proc ----


def proc_stat(pid: int):
    """(state, pgid, utime+stime ticks) of pid, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return rest[0], int(rest[5 - 3]), int(rest[14 - 3]) + int(rest[15 - 3])


def rss_kib(pid: int):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def marked_pids(mark_prefix: str):
    """Live processes whose environment has MARK_VAR starting with mark_prefix."""
    needle = f"{MARK_VAR}={mark_prefix}".encode()
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if any(v.startswith(needle) for v in env.split(b"\0")):
            st = proc_stat(pid)
            if st is not None and st[0] != "Z":
                out.append((pid, st[1]))
    return out


def kill_marked(mark_prefix: str) -> int:
    """SIGKILLs every live process carrying the mark (and the groups they lead)."""
    own_group = os.getpgrp()
    killed = 0
    for _ in range(10):
        found = marked_pids(mark_prefix)
        if not found:
            break
        for pid, pgid in found:
            if pgid == pid and pgid not in (own_group, 0, 1):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.1)
    return killed


def read_pid(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text().strip()
            if text:
                pid = int(text)
                if alive(pid):
                    return pid
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"no live daemon pid in {path}")
        time.sleep(0.05)


# ----------------------------------------------------------------- tools ---


class Tool:
    """One process manager with one temporary home."""

    label = ""

    def __init__(self, root: Path, mark: str, tag: str):
        self.mark = mark
        self.dir = root / tag
        self.home = self.dir / "home"
        self.home.mkdir(parents=True)
        self.log = self.dir / "cli.log"
        self.log_file = open(self.log, "ab")
        self.env = {k: v for k, v in os.environ.items() if k not in ("OPM_HOME", "PM2_HOME")}
        self.env[MARK_VAR] = mark
        self.cleaned = False

    # Every CLI call goes through here: spawn, blocking wait, output to a file.
    def call(self, argv, check=True) -> int:
        f = self.log_file
        f.write(("$ " + " ".join(map(str, argv)) + "\n").encode())
        f.flush()
        t0 = time.perf_counter_ns()
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=self.env, cwd=self.dir
        )
        rc = p.wait()
        ns = time.perf_counter_ns() - t0
        if check and rc != 0:
            raise BenchError(f"{' '.join(map(str, argv))} exited {rc}; see the tail of {self.log}:\n" + self.tail())
        return ns

    def output(self, argv, timeout=120.0) -> str:
        r = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, env=self.env, cwd=self.dir, timeout=timeout
        )
        if r.returncode != 0:
            raise BenchError(f"{' '.join(map(str, argv))} exited {r.returncode}: {r.stderr.decode(errors='replace')[-2000:]}")
        return r.stdout.decode()

    def tail(self, n=4000) -> str:
        self.log_file.flush()
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def daemon_pid(self) -> int:
        return read_pid(self.pid_file)

    def wait_online(self, n: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            online = self.online_count()
            if online >= n or time.monotonic() > deadline:
                return online
            time.sleep(0.2)

    def daemon_alive(self) -> bool:
        try:
            return alive(int(self.pid_file.read_text().strip()))
        except (OSError, ValueError):
            return False

    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        try:
            if self.daemon_alive():
                self.graceful_kill()
        except Exception as e:  # noqa: BLE001 - clean-up goes on regardless
            log(f"{self.label}: graceful kill failed: {e}")
        n = kill_marked(self.mark)
        if n:
            log(f"{self.label}: SIGKILLed {n} process(es) left behind")
        try:
            self.log_file.close()
        except OSError:
            pass


class Opm(Tool):
    label = "opm"

    def __init__(self, root, mark, tag, binary: Path):
        super().__init__(root, mark, tag)
        self.bin = str(binary)
        self.env["OPM_HOME"] = str(self.home)
        self.pid_file = self.home / "daemon.pid"

    def list_cmd(self):
        return [self.bin, "list", "--format", "json"]

    def warm_daemon(self):
        return self.call(self.list_cmd())

    def start_one(self, name: str):
        return self.call([self.bin, "start", "sleep 1000", "--name", name])

    def write_file(self, n: int) -> Path:
        path = self.dir / "procs.toml"
        path.write_text("".join(f'[[process]]\nscript = "sleep 1000"\nname = "p{i}"\n\n' for i in range(n)))
        return path

    def start_file(self, path: Path):
        return self.call([self.bin, "start", str(path)])

    def start_crasher(self, argv):
        return self.call([self.bin, "start", " ".join(argv), "--name", "crash"])

    def online_count(self) -> int:
        return sum(1 for p in json.loads(self.output(self.list_cmd())) if p.get("status") == "online")

    def graceful_kill(self):
        subprocess.run(
            [self.bin, "kill"], stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file,
            env=self.env, cwd=self.dir, timeout=60,
            )


class Pm2(Tool):
    label = "PM2"

    def __init__(self, root, mark, tag, prefix: Path):
        super().__init__(root, mark, tag)
        self.bin = str(prefix / "node_modules" / ".bin" / "pm2")
        self.env["PM2_HOME"] = str(self.home)
        self.pid_file = self.home / "pm2.pid"

    def list_cmd(self):
        return [self.bin, "jlist"]

    def warm_daemon(self):
        return self.call(self.list_cmd())

    def start_one(self, name: str):
        return self.call([self.bin, "start", "sleep", "--name", name, "--", "1000"])

    def write_file(self, n: int) -> Path:
        path = self.dir / "ecosystem.config.js"
        apps = [{"name": f"p{i}", "script": "sleep", "args": "1000"} for i in range(n)]
        path.write_text("module.exports = " + json.dumps({"apps": apps}, indent=1) + ";\n")
        return path

    def start_file(self, path: Path):
        return self.call([self.bin, "start", str(path)])

    def start_crasher(self, argv):
        return self.call([self.bin, "start", argv[0], "--name", "crash", "--", *argv[1:]])

    def online_count(self) -> int:
        return sum(1 for p in json.loads(self.output(self.list_cmd())) if p.get("pm2_env", {}).get("status") == "online")

    def graceful_kill(self):
        subprocess.run(
            [self.bin, "kill"], stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file,
            env=self.env, cwd=self.dir, timeout=120,
            )


# ----------------------------------------------------------- measuring -----


def list_latency(tool: Tool, calls: int) -> float:
    tool.call(tool.list_cmd())  # not timed: a first call may warm caches
    return statistics.median(tool.call(tool.list_cmd()) for _ in range(calls)) / 1e6


def idle_cpu_percent(pid: int, seconds: float) -> float:
    a = proc_stat(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    b = proc_stat(pid)
    elapsed = time.monotonic() - t0
    if a is None or b is None:
        raise BenchError(f"daemon {pid} vanished during the idle measurement")
    return (b[2] - a[2]) / CLK_TCK / elapsed * 100.0


def phase_a(tool: Tool, args, res: dict) -> None:
    res["cold_ms"] = tool.warm_daemon() / 1e6
    pid = tool.daemon_pid()
    time.sleep(1.0)
    res["rss0_mib"] = rss_kib(pid) / 1024
    starts = []
    for i in range(args.procs):
        starts.append(tool.start_one(f"p{i}"))
        if i + 1 == args.small:
            got = tool.wait_online(args.small)
            if got < args.small:
                raise BenchError(f"{tool.label}: only {got}/{args.small} online")
            res["list_small_ms"] = list_latency(tool, args.list_calls)
    res["starts_total_s"] = sum(starts) / 1e9
    res["start_one_ms"] = statistics.median(starts) / 1e6
    got = tool.wait_online(args.procs)
    if got < args.procs:
        raise BenchError(f"{tool.label}: only {got}/{args.procs} online after {args.procs} starts")
    res["list_big_ms"] = list_latency(tool, args.list_calls)
    if tool.daemon_pid() != pid:
        raise BenchError(f"{tool.label}: the daemon changed pid during the run")
    time.sleep(2.0)
    res["rss_big_mib"] = rss_kib(pid) / 1024
    res["idle_cpu_pct"] = idle_cpu_percent(pid, args.idle_seconds)
    res["rss_big_after_idle_mib"] = rss_kib(pid) / 1024


def phase_b(tool: Tool, args, res: dict) -> None:
    tool.warm_daemon()
    tool.daemon_pid()
    path = tool.write_file(args.procs)
    res["file_start_ms"] = tool.start_file(path) / 1e6
    t0 = time.perf_counter_ns()
    got = tool.wait_online(args.procs)
    if got < args.procs:
        raise BenchError(f"{tool.label}: only {got}/{args.procs} online after the file start")
    res["file_online_after_ms"] = (time.perf_counter_ns() - t0) / 1e6


def phase_c(tool: Tool, args, res: dict, crasher) -> None:
    tool.warm_daemon()
    stamps = tool.dir / "crash.stamps"
    tool.start_crasher([*crasher, str(stamps)])
    deadline = time.monotonic() + 15.0
    lines = []
    while time.monotonic() < deadline:
        try:
            lines = [ln.split() for ln in stamps.read_text().splitlines() if ln.strip()]
        except OSError:
            lines = []
        if sum(1 for ln in lines if ln[0] == "S") >= 3:
            break
        time.sleep(0.1)
    gaps = []
    last_exit = None
    for tag, ns in lines:
        if tag == "E":
            last_exit = int(ns)
        elif tag == "S" and last_exit is not None:
            gaps.append((int(ns) - last_exit) / 1e6)
            last_exit = None
    if not gaps:
        raise BenchError(f"{tool.label}: the crashing program was not restarted; stamps: {lines}")
    res["restart1_ms"] = gaps[0]
    res["restart2_ms"] = gaps[1] if len(gaps) > 1 else None


def one_tool_run(make, args, crasher, res: dict) -> None:
    for phase, fn in (("A", phase_a), ("B", phase_b), ("C", phase_c)):
        tool = make(phase)
        try:
            log(f"{tool.label}: phase {phase}")
            if fn is phase_c:
                fn(tool, args, res, crasher)
            else:
                fn(tool, args, res)
        finally:
            tool.cleanup()


# --------------------------------------------------------------- setup -----


def wait_for_load(limit: float, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        log(f"load average {os.getloadavg()[0]:.2f} >= {limit:g}: waiting")
        time.sleep(20)


def install_pm2(root: Path, version: str, reuse: str | None) -> Path:
    if reuse:
        prefix = Path(reuse).resolve()
        if not (prefix / "node_modules" / ".bin" / "pm2").exists():
            raise BenchError(f"no pm2 under {prefix}")
        return prefix
    prefix = root / "pm2-prefix"
    prefix.mkdir()
    log(f"installing pm2@{version} from the npm registry into {prefix}")
    r = subprocess.run(
        ["npm", "install", "--prefix", str(prefix), f"pm2@{version}", "--no-audit", "--no-fund", "--loglevel=error"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=600,
    )
    if r.returncode != 0:
        raise BenchError("npm install failed:\n" + r.stderr.decode(errors="replace")[-3000:])
    return prefix


def build_crasher(root: Path):
    """The crashing program: C when a compiler is here, else Python."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        src = root / "crasher.c"
        src.write_text(CRASHER_C)
        exe = root / "crasher"
        r = subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True)
        if r.returncode == 0:
            return [str(exe)], "a C program (stamps at the top of main and just before exit)"
        log("cc failed; falling back to Python: " + r.stderr.decode(errors="replace"))
    script = root / "crasher.py"
    script.write_text(CRASHER_PY)
    return [sys.executable, "-S", "-I", str(script)], "a Python program (the gap includes Python's start-up)"


def git_commit(path: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" (working tree has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# -------------------------------------------------------------- report -----

ROWS = [
    # key, figure, unit, fmt, ratio ("pm2/opm" means bigger is better for opm)
    ("cold_ms", "daemon cold start (first `list` on a fresh home)", "ms", "{:.1f}"),
    ("list_small_ms", "`list` latency, {small} processes (`opm list --format json` / `pm2 jlist`)", "ms", "{:.1f}"),
    ("list_big_ms", "`list` latency, {procs} processes", "ms", "{:.1f}"),
    ("start_one_ms", "one `start` CLI call (median of the {procs})", "ms", "{:.1f}"),
    ("starts_total_s", "{procs} starts, one CLI call each (total)", "s", "{:.2f}"),
    ("file_start_ms", "{procs} processes from one command (.toml / ecosystem file)", "ms", "{:.0f}"),
    ("rss0_mib", "daemon RSS, 0 processes", "MiB", "{:.1f}"),
    ("rss_big_mib", "daemon RSS, {procs} processes", "MiB", "{:.1f}"),
    ("rss_big_after_idle_mib", "daemon RSS, {procs} processes, after the idle period", "MiB", "{:.1f}"),
    ("idle_cpu_pct", "idle daemon CPU, {procs} processes, {idle:g} s (% of one core)", "%", "{:.3f}"),
    ("restart1_ms", "crash → first restart gap (child lived 1.2 s)", "ms", "{:.2f}"),
    ("restart2_ms", "crash → second restart gap", "ms", "{:.2f}"),
    ("load1", "1-minute load average when the run began", "", "{:.2f}"),
]


def fmt(v, spec, unit):
    return "–" if v is None else f"{spec.format(v)} {unit}".rstrip()


def render(args, meta, results) -> str:
    tools = [t for t in ("opm", "PM2") if results.get(t)]
    med = {t: {k: median([r.get(k) for r in results[t]]) for k, *_ in ROWS} for t in tools}
    lines = []
    lines.append(f"Date: {meta['date']}  ")
    lines.append(f"Machine: {meta['machine']}  ")
    lines.append(f"opm: {meta['opm']}  ")
    if "PM2" in tools:
        lines.append(f"PM2: {meta['pm2']} (node {meta['node']})  ")
    lines.append(f"Command: `{meta['command']}`  ")
    lines.append(f"Load average before / after: {meta['load_before']} / {meta['load_after']}  ")
    lines.append(f"Crashing program: {meta['crasher']}")
    lines.append("")
    head = "| figure | " + " | ".join(tools) + (" | PM2 ÷ opm |" if len(tools) == 2 else " |")
    lines.append(head)
    lines.append("|---" * (len(tools) + 1 + (len(tools) == 2)) + "|")
    for key, figure, unit, spec in ROWS:
        name = figure.format(small=args.small, procs=args.procs, idle=args.idle_seconds)
        cells = [fmt(med[t][key], spec, unit) for t in tools]
        row = f"| {name} | " + " | ".join(cells)
        if len(tools) == 2:
            a, b = med["opm"][key], med["PM2"][key]
            ratio = key != "load1" and a and b is not None and a > 0
            row += " | " + (f"{b / a:.1f}×" if ratio else "–")
        lines.append(row + " |")
    lines.append("")
    lines.append(f"Medians of {args.runs} run(s); each `list` figure of a run is the median of "
                 f"{args.list_calls} calls. CPU time is counted in clock ticks of "
                 f"{1000 // CLK_TCK} ms, so over {args.idle_seconds:g} s one tick is "
                 f"{100.0 / CLK_TCK / args.idle_seconds:.3f} % of a core.")
    lines.append("")
    lines.append("### Aims")
    lines.append("")
    o = med.get("opm", {})
    p = med.get("PM2", {})
    if "PM2" in tools:
        for key, what in (("list_small_ms", f"{args.small} processes"), ("list_big_ms", f"{args.procs} processes")):
            if o.get(key) and p.get(key):
                x = p[key] / o[key]
                lines.append(f"- `opm list` ≥ 50× faster than `pm2 jlist` ({what}): {x:.0f}× — "
                             + ("**met**" if x >= 50 else "**not met**"))
        for key, what in (("rss0_mib", "0 processes"), ("rss_big_mib", f"{args.procs} processes")):
            if o.get(key) and p.get(key):
                x = o[key] / p[key]
                lines.append(f"- daemon RSS ≤ 1/4 of PM2's ({what}): {o[key]:.1f} / {p[key]:.1f} MiB = "
                             f"{x:.2f} — " + ("**met**" if x <= 0.25 else "**not met**"))
    else:
        lines.append("- the `list` and RSS aims compare with PM2: not evaluated (--no-pm2)")
    if o.get("restart1_ms") is not None:
        lines.append(f"- crash → first restart under 20 ms: {o['restart1_ms']:.2f} ms — "
                     + ("**met**" if o["restart1_ms"] < 20 else "**not met**"))
    lines.append("")
    lines.append("### Every run")
    lines.append("")
    for t in tools:
        lines.append(f"{t}:")
        lines.append("")
        lines.append("| figure | " + " | ".join(f"run {i + 1}" for i in range(len(results[t]))) + " |")
        lines.append("|---" * (len(results[t]) + 1) + "|")
        for key, figure, unit, spec in ROWS:
            name = figure.format(small=args.small, procs=args.procs, idle=args.idle_seconds)
            lines.append(f"| {name} | " + " | ".join(fmt(r.get(key), spec, unit) for r in results[t]) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main -----


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per tool; figures are medians (default 3)")
    ap.add_argument("--procs", type=int, default=100, help="processes in the big figures (default 100)")
    ap.add_argument("--small", type=int, default=10, help="processes in the small list figure (default 10)")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (default 30)")
    ap.add_argument("--list-calls", type=int, default=5, help="timed list calls per run (default 5)")
    ap.add_argument("--no-pm2", action="store_true", help="measure opm only")
    ap.add_argument("--pm2-version", default="latest", help="the pm2 version to install (default latest)")
    ap.add_argument("--pm2-prefix", help="use the pm2 already installed under this npm prefix")
    ap.add_argument("--opm", default=str(REPO / "target" / "release" / "opm"), help="the opm binary")
    ap.add_argument("--opm-commit", help="label for the opm build (default: the git commit of this repository)")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    ap.add_argument("--max-load", type=float,
                    help="before each tool's run, wait (up to 15 min) for the 1-minute load average to fall below this")
    args = ap.parse_args()
    if args.small > args.procs:
        ap.error("--small must not exceed --procs")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    opm_src = Path(args.opm)
    if not opm_src.is_file():
        print(f"no opm binary at {opm_src}: run `cargo build --release` first", file=sys.stderr)
        return 2

    mark = f"compare-{uuid.uuid4().hex[:12]}"
    root = Path(tempfile.mkdtemp(prefix="opm-compare-"))
    tools_made: list[Tool] = []
    results: dict[str, list[dict]] = {"opm": [], "PM2": []}
    rc = 0
    try:
        # A copy, so a rebuild of target/release/opm during the run changes nothing.
        opm_bin = root / "opm"
        shutil.copy2(opm_src, opm_bin)
        opm_version = subprocess.run([str(opm_bin), "--version"], capture_output=True, text=True).stdout.strip()
        crasher, crasher_desc = build_crasher(root)
        meta = {
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} cores, Linux {platform.release()}",
            "opm": f"{opm_version}, commit {args.opm_commit or git_commit(REPO)}, binary {opm_src}",
            "command": " ".join(["python3", "benches/compare.py", *sys.argv[1:]]),
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "crasher": crasher_desc,
        }
        pm2_prefix = None
        if not args.no_pm2:
            pm2_prefix = install_pm2(root, args.pm2_version, args.pm2_prefix)
            pkg = json.loads((pm2_prefix / "node_modules" / "pm2" / "package.json").read_text())
            meta["pm2"] = pkg["version"]
            meta["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()

        for run in range(args.runs):
            for label in ("opm", "PM2"):
                if label == "PM2" and pm2_prefix is None:
                    continue
                res: dict = {}

                def make(phase, label=label, run=run):
                    tag = f"{label.lower()}-run{run + 1}-{phase}"
                    m = f"{mark}-{tag}"
                    t = Opm(root, m, tag, opm_bin) if label == "opm" else Pm2(root, m, tag, pm2_prefix)
                    tools_made.append(t)
                    return t

                if args.max_load is not None:
                    wait_for_load(args.max_load)
                res["load1"] = os.getloadavg()[0]
                log(f"run {run + 1}/{args.runs}: {label} (load average {res['load1']:.2f})")
                one_tool_run(make, args, crasher, res)
                results[label].append(res)
                log(f"{label} run {run + 1}: " + ", ".join(
                    f"{k}={v:.3f}" for k, v in res.items() if v is not None))

        meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        table = render(args, meta, results)
        print(table)
        if args.out:
            Path(args.out).write_text(table + "\n")
    except (BenchError, Interrupted, KeyboardInterrupt) as e:
        print(f"compare.py: stopped: {e}", file=sys.stderr)
        rc = 1
    finally:
        for t in tools_made:
            try:
                t.cleanup()
            except Exception as e:  # noqa: BLE001
                log(f"clean-up of {t.dir}: {e}")
        left = kill_marked(mark)
        if left:
            log(f"SIGKILLed {left} leftover process(es)")
        shutil.rmtree(root, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
