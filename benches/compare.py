#!/usr/bin/env python3
"""Whole-program figures of opm side by side with PM2, and the floor.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/compare.py                     # 3 runs, 100 processes, opm and PM2
    python3 benches/compare.py --runs 1 --no-pm2   # a quick look at opm alone
    python3 benches/compare.py --out results.md    # also write the table
    # issue 16's table: 1,000 processes, both tools and the floor, ~15 min
    python3 benches/compare.py --procs 1000 --runs 2 --max-load 1.5 --out /tmp/cmp1000.md

PM2 is installed from the npm registry into a temporary prefix
(`npm install --prefix TMP pm2@latest`) and runs with its own temporary
PM2_HOME; opm runs from a copy of target/release/opm with its own temporary
OPM_HOME. The floor is `examples/floor.rs`, built here with
`cargo build --release --locked --example floor` (or --floor-bin). Nothing
outside the temporary directories is touched. A missing tool (the opm binary,
node/npm, cargo) stops the script with a message before anything runs.

Every figure is the median of the runs (3 by default). Each run uses fresh
homes, and the tools take turns (floor run 1, opm run 1, PM2 run 1, floor run
2, ...). What one run measures, for each tool:

  A. fresh home: the first `list` (it starts the daemon: "cold start"); daemon
     RSS with 0 processes; --small starts with one CLI call each (`opm start
     "sleep 1000" --name pN` / `pm2 start sleep --name pN -- 1000`), then the
     `list` latency with --small processes. With --per-call-starts (the default
     up to 200 processes; PM2 needs ~15 min for 1,000) the starts go on to N,
     for "one `start` CLI call" (median of the N) and their total.
  B. fresh home, daemon already up: N processes from one command (an opm .toml
     file / a PM2 ecosystem file), timed from just before the CLI call to
     (1) the CLI's return and (2) the moment all N are seen online (below).
     Then, with those N running: the `list` latency; daemon RSS (VmRSS, and
     RssAnon = heap and stacks, RssFile = mapped code and libraries, from
     /proc/PID/status) 2 s after; the daemon's CPU over --idle-seconds; RSS
     again; --more-starts single `start` CLI calls (processes N+1, N+2, ...),
     their median = "one more start with N running"; then `stop all`, timed
     from just before the CLI call to its return and to the moment every child
     pid recorded before it (all N + --more-starts, read from the tool's own
     list) is gone: no /proc/PID, or a zombie (exited, not yet reaped), or a
     different start time (the pid was reused). That is polled every 20 ms.
     PM2's children may be reparented or reaped late: a pid is followed,
     whoever its parent is.
  C. fresh home: crash-to-restart. A small program stamps CLOCK_REALTIME into a
     file when it starts and just before it exits 1 (after 1.2 s); the gap is
     the next start's stamp minus the previous exit's.

"All N online": for opm, the daemon's own count (`GET /health` on its unix
socket, HTTP/1.0 from this script: no CLI start-up; its `online` is counted
from the same state and status as `list`, without writing 1,000 rows) is
polled every --poll-ms (20 ms) until it says N; the time is that of the
answer that first says so, so it is late by at most one period plus one
answer (the log line of phase B gives the number of polls and their mean). PM2's only daemon-side status query reads every
process's usage (`jlist` is ~0.6 s at 1,000) and polling it would slow PM2
itself, so for PM2 a node program connected to the daemon's event bus before
the clock starts (`pm2.launchBus`) takes the "online" event PM2 sends when it
marks each process online, and reports the CLOCK_MONOTONIC time of the N-th
distinct name (no poll, no lag). Both are checked after with the tool's own
list (not timed).

The floor, measured in each run on the same machine (examples/floor.rs):
  - list: `floor serve` (warp on a unix socket, 2 worker threads like the
    daemon; sled holding N records shaped like opm's list rows, ~195 bytes;
    GET /list concatenates them into one JSON array) and `floor get` (one
    thread, a new connection, GET, the whole body to stdout): the client's
    whole call, timed like a CLI call, median of --list-calls.
  - memory: the floor server's RSS (VmRSS, RssAnon, RssFile) after those gets.
  - CLI: `opm --version`, whole call, median of --list-calls.
  - spawn: `floor spawn N DIR`: 2N log files created in one folder, then N
    posix_spawns of /bin/sleep 1000 from 2 threads with stdout/stderr on them,
    until all are spawned (the program then kills them by pid); and the same
    with no log files (`--no-logs`).
The table prints each opm figure's ratio to its floor: list → list floor;
all online and the file start's return → spawn floor with log files; RSS →
memory floor; `start` and the small `list` → CLI floor.

Every tool, CLI call and child gets this script's environment (plus its home
and the marker), or only PATH and HOME with --minimal-env; the table's header
says which and how big. opm keeps the caller's environment with each process,
so its size shows in opm's RSS at 1,000.

A CLI call is timed from just before spawning it to the return of a blocking
wait on its exit (subprocess.Popen + wait, output to a file), with
time.perf_counter_ns(). A `list` latency of one run is the median of
--list-calls calls. RSS is read from /proc/PID/status of the daemon's pid
(opm: $OPM_HOME/daemon.pid, PM2: $PM2_HOME/pm2.pid); CPU is the utime+stime
delta of that pid from /proc/PID/stat, as a percentage of one core.

Clean-up, whatever happens (an error, Ctrl-C, SIGTERM, SIGHUP): `opm kill` /
`pm2 kill` with the right home, then SIGKILL to every process that still
carries this run's marker variable in its environment (every daemon, CLI,
floor program and child started here inherits it), to its process group when
it leads one; then the temporary directories are removed. No process is found
by name.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARK_VAR = "OPM_BENCH_MARK"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The environment every tool, CLI call and child gets (plus its home and the
# marker): this script's own, or only PATH and HOME with --minimal-env. opm
# keeps the caller's environment with each process, so its size shows in RSS.
BASE_ENV: dict = dict(os.environ)

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

# Connected to PM2's daemon before the clock starts; prints "ready", then
# "done NS" (CLOCK_MONOTONIC, as Python's time.monotonic_ns) when the "online"
# event of the N-th distinct process name arrives.
PM2_BUS_JS = """\
const pm2 = require(process.argv[2]);
const want = parseInt(process.argv[3], 10);
const seen = new Set();
pm2.connect((err) => {
  if (err) { console.error("pm2.connect: " + err); process.exit(3); }
  pm2.launchBus((err, bus) => {
    if (err) { console.error("pm2.launchBus: " + err); process.exit(3); }
    bus.on("process:event", (p) => {
      if (p.event !== "online" || !p.process) return;
      seen.add(p.process.name);
      if (seen.size >= want) {
        console.log("done " + process.hrtime.bigint());
        process.exit(0);
      }
    });
    console.log("ready");
  });
});
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


def mem_kib(pid: int) -> dict:
    """VmRSS, RssAnon, RssFile and RssShmem of pid in KiB ({} if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])
    except OSError:
        return {}
    return out


def rss_kib(pid: int):
    return mem_kib(pid).get("VmRSS")


def record_mem(res: dict, key: str, pid: int, who: str) -> None:
    """res[key] = VmRSS in MiB, res[key_anon] / res[key_file] = RssAnon / RssFile."""
    m = mem_kib(pid)
    if "VmRSS" not in m:
        raise BenchError(f"{who}: no /proc/{pid}/status (the process is gone)")
    res[key] = m["VmRSS"] / 1024
    if "RssAnon" in m:
        res[key.replace("_mib", "_anon_mib")] = m["RssAnon"] / 1024
    if "RssFile" in m:
        res[key.replace("_mib", "_file_mib")] = m["RssFile"] / 1024


def start_time(pid: int):
    """Field 22 of /proc/PID/stat (start time in ticks since boot), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rfind(")") + 2 :].split()[22 - 3])


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


def unix_get(sock: Path, path: str, timeout: float = 30.0) -> bytes:
    """The body of GET path over a unix socket (HTTP/1.0: the server closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(1 << 18)
            if not b:
                break
            chunks.append(b)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise BenchError(f"GET {path} on {sock}: {status.decode(errors='replace')}")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = [], body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out.append(rest[:size])
            rest = rest[size + 2 :]
        body = b"".join(out)
    return body


class SocketPoller:
    """Polls opm's GET /health on its unix socket until it counts n online."""

    def __init__(self, sock: Path, n: int, period: float):
        self.sock, self.n, self.period = sock, n, period

    def wait(self, timeout: float, check=lambda: None):
        deadline = time.monotonic() + timeout
        polls, spent, online = 0, 0, 0
        while True:
            a = time.monotonic_ns()
            try:
                online = int(json.loads(unix_get(self.sock, "/health"))["online"])
            except (OSError, ValueError, KeyError) as e:
                raise BenchError(f"polling {self.sock}: {e}") from e
            b = time.monotonic_ns()
            polls += 1
            spent += b - a
            if online >= self.n:
                return b, f"{polls} polls every {self.period * 1000:g} ms, {spent / polls / 1e6:.1f} ms each"
            check()
            if time.monotonic() > deadline:
                raise BenchError(f"opm: only {online}/{self.n} online after {timeout:g} s")
            time.sleep(self.period)

    def close(self):
        pass


class BusWatcher:
    """A node program on PM2's event bus, counting "online" events."""

    def __init__(self, tool: "Pm2", n: int):
        script = tool.dir / "bus.js"
        script.write_text(PM2_BUS_JS)
        self.n = n
        self.proc = subprocess.Popen(
            ["node", str(script), str(tool.module), str(n)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=tool.log_file, env=tool.env, cwd=tool.dir,
        )
        line = self._line(time.monotonic() + 60)
        if line != "ready":
            self.close()
            raise BenchError(f"PM2 bus watcher: expected 'ready', got {line!r}; see {tool.log}")

    def _line(self, deadline: float, check=lambda: None) -> str | None:
        while True:
            check()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if ready:
                raw = self.proc.stdout.readline()
                return raw.decode(errors="replace").strip() if raw else None

    def wait(self, timeout: float, check=lambda: None):
        line = self._line(time.monotonic() + timeout, check)
        if not line or not line.startswith("done "):
            raise BenchError(f"PM2: not all {self.n} online (bus watcher said {line!r}) after {timeout:g} s")
        return int(line.split()[1]), "PM2's event bus (no polling)"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


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
        self.env = {k: v for k, v in BASE_ENV.items() if k not in ("OPM_HOME", "PM2_HOME")}
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

    def wait_online(self, n: int, timeout: float = 60.0) -> int:
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

    def start_file_cmd(self, path: Path):
        return [self.bin, "start", str(path)]

    def start_crasher(self, argv):
        return self.call([self.bin, "start", " ".join(argv), "--name", "crash"])

    def online_count(self) -> int:
        return sum(1 for p in json.loads(self.output(self.list_cmd())) if p.get("status") == "online")

    def child_pids(self):
        return [p["pid"] for p in json.loads(self.output(self.list_cmd())) if p.get("pid")]

    def online_watcher(self, n: int, period: float):
        return SocketPoller(self.home / "opm.sock", n, period)

    def stop_all_cmd(self):
        return [self.bin, "stop", "all"]

    def list_body_bytes(self) -> int:
        return len(unix_get(self.home / "opm.sock", "/daemon/list"))

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
        self.module = prefix / "node_modules" / "pm2"
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

    def start_file_cmd(self, path: Path):
        return [self.bin, "start", str(path)]

    def start_crasher(self, argv):
        return self.call([self.bin, "start", argv[0], "--name", "crash", "--", *argv[1:]])

    def online_count(self) -> int:
        return sum(1 for p in json.loads(self.output(self.list_cmd())) if p.get("pm2_env", {}).get("status") == "online")

    def child_pids(self):
        return [p["pid"] for p in json.loads(self.output(self.list_cmd())) if p.get("pid")]

    def online_watcher(self, n: int, period: float):
        return BusWatcher(self, n)

    def stop_all_cmd(self):
        return [self.bin, "stop", "all"]

    def list_body_bytes(self) -> int:
        return len(self.output(self.list_cmd()).encode())

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


def wait_timeout(args, n: int) -> float:
    """How long N processes may take to come up (PM2: ~12 s per 1,000 on 2 cores)."""
    return max(60.0, 0.3 * n)


def timed_with(tool: Tool, argv, until):
    """Runs the CLI call argv on a thread while until(check) waits for its effect.

    Returns (the CLI's return, the effect's time), both in ns from just before
    the call; until() returns a time.monotonic_ns() value and calls check()
    as it waits, which raises the CLI call's error as soon as it failed."""
    done: dict = {}

    def run():
        try:
            tool.call(argv)
            done["t"] = time.monotonic_ns()
        except BaseException as e:  # noqa: BLE001 - re-raised on the main thread
            done["err"] = e

    def check():
        if "err" in done:
            raise done["err"]

    th = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic_ns()
    th.start()
    t_effect = until(check)
    th.join(timeout=600)
    if "err" in done:
        raise done["err"]
    if "t" not in done:
        raise BenchError(f"{' '.join(map(str, argv))} had not returned 600 s after its effect")
    return done["t"] - t0, t_effect - t0


def wait_gone(stamps, timeout: float, check=lambda: None) -> int:
    """Polls every 20 ms until every (pid, start time) is gone; returns the time."""
    deadline = time.monotonic() + timeout
    left = list(stamps)
    while True:
        still = []
        for pid, t in left:
            try:
                raw = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # gone
            rest = raw[raw.rfind(")") + 2 :].split()
            if rest[0] in ("Z", "X") or int(rest[22 - 3]) != t:
                continue  # exited (not yet reaped), or the pid was reused
            still.append((pid, t))
        left = still
        if not left:
            return time.monotonic_ns()
        check()
        if time.monotonic() > deadline:
            raise BenchError(f"{len(left)} children still alive {timeout:g} s after `stop all`, "
                             f"e.g. pids {[p for p, _ in left[:5]]}")
        time.sleep(0.02)


def phase_a(tool: Tool, args, res: dict) -> None:
    res["cold_ms"] = tool.warm_daemon() / 1e6
    pid = tool.daemon_pid()
    time.sleep(1.0)
    record_mem(res, "rss0_mib", pid, tool.label)
    count = args.procs if args.per_call_starts else args.small
    starts = []
    for i in range(count):
        starts.append(tool.start_one(f"p{i}"))
        if i + 1 == args.small:
            got = tool.wait_online(args.small)
            if got < args.small:
                raise BenchError(f"{tool.label}: only {got}/{args.small} online")
            res["list_small_ms"] = list_latency(tool, args.list_calls)
    if args.per_call_starts:
        res["starts_total_s"] = sum(starts) / 1e9
        res["start_one_ms"] = statistics.median(starts) / 1e6
        got = tool.wait_online(args.procs, wait_timeout(args, args.procs))
        if got < args.procs:
            raise BenchError(f"{tool.label}: only {got}/{args.procs} online after {args.procs} starts")
    if tool.daemon_pid() != pid:
        raise BenchError(f"{tool.label}: the daemon changed pid during the run")


def phase_b(tool: Tool, args, res: dict) -> None:
    n = args.procs
    tool.warm_daemon()
    pid = tool.daemon_pid()
    path = tool.write_file(n)
    watcher = tool.online_watcher(n, args.poll_ms / 1000)
    how = {}

    def all_online(check) -> int:
        t, how["detail"] = watcher.wait(wait_timeout(args, n), check)
        return t

    try:
        cli_ns, online_ns = timed_with(tool, tool.start_file_cmd(path), all_online)
    finally:
        watcher.close()
    res["file_start_ms"] = cli_ns / 1e6
    res["file_online_ms"] = online_ns / 1e6
    got = tool.online_count()
    if got < n:
        raise BenchError(f"{tool.label}: its own list shows {got}/{n} online after the watcher saw all")
    log(f"{tool.label}: {n} from one file: CLI returned {cli_ns / 1e6:.0f} ms, all online {online_ns / 1e6:.0f} ms ({how['detail']})")

    res["list_big_ms"] = list_latency(tool, args.list_calls)
    res["list_body_kb"] = tool.list_body_bytes() / 1000
    time.sleep(2.0)
    record_mem(res, "rss_big_mib", pid, tool.label)
    res["idle_cpu_pct"] = idle_cpu_percent(pid, args.idle_seconds)
    res["rss_big_after_idle_mib"] = rss_kib(pid) / 1024

    more = [tool.start_one(f"q{i}") for i in range(args.more_starts)]
    if more:
        res["start_more_ms"] = statistics.median(more) / 1e6
    total = n + args.more_starts
    got = tool.wait_online(total, wait_timeout(args, total))
    if got < total:
        raise BenchError(f"{tool.label}: only {got}/{total} online before `stop all`")
    stamps = [(p, start_time(p)) for p in tool.child_pids()]
    stamps = [(p, t) for p, t in stamps if t is not None]
    if len(stamps) < total:
        raise BenchError(f"{tool.label}: {len(stamps)} live child pids in its list, {total} expected")
    cli_ns, gone_ns = timed_with(tool, tool.stop_all_cmd(), lambda check: wait_gone(stamps, max(120.0, 0.5 * total), check))
    res["stop_cli_ms"] = cli_ns / 1e6
    res["stop_gone_s"] = gone_ns / 1e9
    log(f"{tool.label}: stop all of {total}: CLI returned {cli_ns / 1e6:.0f} ms, all gone {gone_ns / 1e6:.0f} ms")
    if tool.daemon_pid() != pid:
        raise BenchError(f"{tool.label}: the daemon changed pid during the run")


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


def floor_run(root: Path, mark: str, tag: str, floor_bin: Path, opm_bin: Path, args, res: dict) -> None:
    """The floor figures of one run (see the module's docstring)."""
    d = root / tag
    d.mkdir()
    env = dict(BASE_ENV)
    env[MARK_VAR] = mark
    logf = open(d / "floor.log", "ab")
    n = args.procs

    def timed(argv, out) -> int:
        t0 = time.perf_counter_ns()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=logf, env=env, cwd=d)
        rc = p.wait()
        ns = time.perf_counter_ns() - t0
        if rc != 0:
            logf.flush()
            raise BenchError(f"{' '.join(map(str, argv))} exited {rc}: "
                             + (d / "floor.log").read_bytes()[-2000:].decode(errors="replace"))
        return ns

    try:
        sock = d / "floor.sock"
        server = subprocess.Popen([str(floor_bin), "serve", str(sock), str(d / "db"), str(n)],
                                  stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env, cwd=d)
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    raise BenchError(f"floor serve exited {server.returncode}; see {d / 'floor.log'}")
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                        c.connect(str(sock))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise BenchError("floor serve: its socket did not come up in 120 s") from None
                    time.sleep(0.05)
            get = [str(floor_bin), "get", str(sock), "/list"]
            out_path = d / "get.out"
            with open(out_path, "wb") as out:
                timed(get, out)  # not timed: a first call may warm caches
            body = out_path.read_bytes()
            rows = json.loads(body)
            if len(rows) != n:
                raise BenchError(f"floor get: {len(rows)} rows, {n} expected")
            res["floor_list_kb"] = len(body) / 1000
            with open(os.devnull, "wb") as out:
                res["floor_list_ms"] = statistics.median(timed(get, out) for _ in range(args.list_calls)) / 1e6
            record_mem(res, "floor_rss_mib", server.pid, "floor serve")
        finally:
            server.kill()
            server.wait()
        with open(os.devnull, "wb") as out:
            timed([str(opm_bin), "--version"], out)
            res["floor_cli_ms"] = statistics.median(
                timed([str(opm_bin), "--version"], out) for _ in range(args.list_calls)) / 1e6
        for key, extra in (("floor_spawn_logs_ms", []), ("floor_spawn_bare_ms", ["--no-logs"])):
            logs = d / key
            r = subprocess.run([str(floor_bin), "spawn", str(n), str(logs), *extra], stdin=subprocess.DEVNULL,
                               capture_output=True, env=env, cwd=d, timeout=600)
            if r.returncode != 0:
                raise BenchError(f"floor spawn exited {r.returncode}: {r.stderr.decode(errors='replace')[-2000:]}")
            got = json.loads(r.stdout)
            if got["spawned"] != n:
                raise BenchError(f"floor spawn: {got['spawned']} spawned, {n} asked")
            res[key] = got["ms"]
            shutil.rmtree(logs, ignore_errors=True)
    finally:
        logf.close()
        left = kill_marked(mark)
        if left:
            log(f"floor: SIGKILLed {left} process(es) left behind")


def build_floor(given: str | None) -> Path:
    if given:
        path = Path(given).resolve()
        if not path.is_file():
            raise BenchError(f"no floor binary at {path}")
        return path
    if not shutil.which("cargo"):
        raise BenchError("cargo is not on PATH: it builds the floor (examples/floor.rs); "
                         "pass --floor-bin or --no-floor")
    log("building the floor: cargo build --release --locked --example floor")
    r = subprocess.run(["cargo", "build", "--release", "--locked", "--example", "floor"], cwd=REPO,
                       stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode != 0:
        raise BenchError("building the floor failed:\n" + r.stderr.decode(errors="replace")[-3000:])
    target = REPO / os.environ.get("CARGO_TARGET_DIR", "target")  # an absolute one replaces REPO
    path = target / "release" / "examples" / "floor"
    if not path.is_file():
        raise BenchError(f"cargo built the floor but {path} is not there")
    return path


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
    # key, figure, unit, format
    ("cold_ms", "daemon cold start (first `list` on a fresh home)", "ms", "{:.1f}"),
    ("list_small_ms", "`list` latency, {small} processes (`opm list --format json` / `pm2 jlist`)", "ms", "{:.1f}"),
    ("list_big_ms", "`list --format json` / `jlist`, whole CLI call, {procs} processes", "ms", "{:.1f}"),
    ("list_body_kb", "… the daemon's JSON (opm: `GET /daemon/list`; PM2: what `jlist` prints)", "KB", "{:.0f}"),
    ("file_start_ms", "{procs} processes from one file (.toml / ecosystem file): the CLI returned", "ms", "{:.0f}"),
    ("file_online_ms", "{procs} processes from one file: all {procs} online", "ms", "{:.0f}"),
    ("start_more_ms", "one more `start` with {procs} running (median of {more} CLI calls)", "ms", "{:.1f}"),
    ("start_one_ms", "one `start` CLI call (median of {procs}, one call each)", "ms", "{:.1f}"),
    ("starts_total_s", "{procs} starts, one CLI call each (total)", "s", "{:.2f}"),
    ("stop_cli_ms", "`stop all` with {total} running: the CLI returned", "ms", "{:.0f}"),
    ("stop_gone_s", "`stop all` with {total} running: every child gone", "s", "{:.2f}"),
    ("rss0_mib", "daemon RSS, 0 processes", "MiB", "{:.1f}"),
    ("rss_big_mib", "daemon RSS, {procs} processes (VmRSS)", "MiB", "{:.1f}"),
    ("rss_big_anon_mib", "… of which RssAnon (heap, stacks)", "MiB", "{:.1f}"),
    ("rss_big_file_mib", "… of which RssFile (mapped code and libraries)", "MiB", "{:.1f}"),
    ("rss_big_after_idle_mib", "daemon RSS, {procs} processes, after the idle period", "MiB", "{:.1f}"),
    ("idle_cpu_pct", "idle daemon CPU, {procs} processes, {idle:g} s (% of one core)", "%", "{:.3f}"),
    ("restart1_ms", "crash → first restart gap (child lived 1.2 s)", "ms", "{:.2f}"),
    ("restart2_ms", "crash → second restart gap", "ms", "{:.2f}"),
    ("load1", "1-minute load average when the run began", "", "{:.2f}"),
]

FLOOR_ROWS = [
    ("floor_list_ms", "list: `floor get` of {procs} records from `floor serve` (warp on a unix socket, sled), "
                      "whole call", "ms", "{:.2f}"),
    ("floor_list_kb", "… the body it reads", "KB", "{:.0f}"),
    ("floor_cli_ms", "CLI: `opm --version`, whole call", "ms", "{:.2f}"),
    ("floor_spawn_logs_ms", "spawn: {procs} posix_spawns of /bin/sleep on 2 threads, 2 new log files each",
     "ms", "{:.0f}"),
    ("floor_spawn_bare_ms", "spawn: the same without log files", "ms", "{:.0f}"),
    ("floor_rss_mib", "memory: RSS of `floor serve` holding {procs} records, after serving the list",
     "MiB", "{:.1f}"),
    ("floor_rss_anon_mib", "… of which RssAnon", "MiB", "{:.1f}"),
    ("floor_rss_file_mib", "… of which RssFile", "MiB", "{:.1f}"),
    ("load1", "1-minute load average when the floor run began", "", "{:.2f}"),
]

# The floor each opm figure is divided by.
FLOOR_OF = {
    "list_small_ms": "floor_cli_ms",
    "list_big_ms": "floor_list_ms",
    "list_body_kb": "floor_list_kb",
    "file_start_ms": "floor_spawn_logs_ms",
    "file_online_ms": "floor_spawn_logs_ms",
    "start_more_ms": "floor_cli_ms",
    "start_one_ms": "floor_cli_ms",
    "rss_big_mib": "floor_rss_mib",
    "rss_big_anon_mib": "floor_rss_anon_mib",
    "rss_big_file_mib": "floor_rss_file_mib",
}

# Issue 16's aims at 1,000 processes: key, what, limit.
AIMS_1000 = [
    ("list_big_ms", "`list --format json` whole call ≤ 5 ms", 5.0, "ms"),
    ("file_online_ms", "all 1,000 online from one file ≤ 1 s", 1000.0, "ms"),
    ("rss_big_mib", "daemon RSS ≤ 16 MiB", 16.0, "MiB"),
    ("start_more_ms", "one more `start` with 1,000 running ≤ 5 ms", 5.0, "ms"),
]


def fmt(v, spec, unit):
    return "–" if v is None else f"{spec.format(v)} {unit}".rstrip()


def render(args, meta, results) -> str:
    tools = [t for t in ("opm", "PM2") if results.get(t)]
    floor = results.get("floor") or []
    labels = dict(small=args.small, procs=args.procs, idle=args.idle_seconds, more=args.more_starts,
                  total=args.procs + args.more_starts)
    med = {t: {k: median([r.get(k) for r in results[t]]) for k, *_ in ROWS} for t in tools}
    fmed = {k: median([r.get(k) for r in floor]) for k, *_ in FLOOR_ROWS}
    # Only what some tool measured (e.g. no per-call start figures without --per-call-starts).
    rows = [r for r in ROWS if any(med[t][r[0]] is not None for t in tools)]
    lines = []
    lines.append(f"Date: {meta['date']}  ")
    lines.append(f"Machine: {meta['machine']}  ")
    lines.append(f"opm: {meta['opm']}  ")
    if "PM2" in tools:
        lines.append(f"PM2: {meta['pm2']} (node {meta['node']})  ")
    lines.append(f"Command: `{meta['command']}`  ")
    lines.append(f"Load average before / after: {meta['load_before']} / {meta['load_after']}  ")
    lines.append(f"Environment given to the tools (besides their home and the marker): {meta['env']}  ")
    lines.append(f"Crashing program: {meta['crasher']}")
    lines.append("")
    both = len(tools) == 2
    head = "| figure | " + " | ".join(tools) + (" | PM2 ÷ opm" if both else "")
    if floor:
        head += " | floor | opm ÷ floor"
    lines.append(head + " |")
    lines.append("|---" * (len(tools) + 1 + both + 2 * bool(floor)) + "|")
    for key, figure, unit, spec in rows:
        cells = [fmt(med[t][key], spec, unit) for t in tools]
        row = f"| {figure.format(**labels)} | " + " | ".join(cells)
        if both:
            a, b = med["opm"][key], med["PM2"][key]
            ratio = key != "load1" and a and b is not None and a > 0
            row += " | " + (f"{b / a:.1f}×" if ratio else "–")
        if floor:
            fkey = FLOOR_OF.get(key)
            fv = fmed.get(fkey) if fkey else None
            spec_f = next((r[3] for r in FLOOR_ROWS if r[0] == fkey), "{:.2f}")
            o = med.get("opm", {}).get(key)
            row += " | " + fmt(fv, spec_f, unit) + " | " + (f"{o / fv:.1f}×" if fv and o is not None else "–")
        lines.append(row + " |")
    lines.append("")
    lines.append(f"Medians of {args.runs} run(s); each `list` figure of a run is the median of "
                 f"{args.list_calls} calls. \"All online\": opm's /health count polled on its socket every "
                 f"{args.poll_ms:g} ms; PM2's \"online\" events on its bus. CPU time is counted in clock ticks of "
                 f"{1000 // CLK_TCK} ms, so over {args.idle_seconds:g} s one tick is "
                 f"{100.0 / CLK_TCK / args.idle_seconds:.3f} % of a core.")
    if floor:
        lines.append("")
        lines.append("### The floor (examples/floor.rs, same machine, same runs)")
        lines.append("")
        lines.append("| floor | median | " + " | ".join(f"run {i + 1}" for i in range(len(floor))) + " |")
        lines.append("|---" * (len(floor) + 2) + "|")
        for key, figure, unit, spec in FLOOR_ROWS:
            lines.append(f"| {figure.format(**labels)} | {fmt(fmed[key], spec, unit)} | "
                         + " | ".join(fmt(r.get(key), spec, unit) for r in floor) + " |")
    lines.append("")
    lines.append("### Aims")
    lines.append("")
    o = med.get("opm", {})
    p = med.get("PM2", {})
    if args.procs == 1000 and o:
        for key, what, limit, unit in AIMS_1000:
            if o.get(key) is not None:
                lines.append(f"- issue 16: {what}: {o[key]:.1f} {unit} — " + ("**met**" if o[key] <= limit else "**not met**"))
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
        for key, figure, unit, spec in rows:
            lines.append(f"| {figure.format(**labels)} | " + " | ".join(fmt(r.get(key), spec, unit) for r in results[t]) + " |")
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
    ap.add_argument("--per-call-starts", action=argparse.BooleanOptionalAction, default=None,
                    help="also start all N with one CLI call each (default: on up to 200 processes; "
                         "PM2 takes ~15 min for 1,000)")
    ap.add_argument("--more-starts", type=int, default=10,
                    help="single `start` calls with N running, for \"one more start\" (default 10)")
    ap.add_argument("--poll-ms", type=float, default=20.0,
                    help="period of the poll of opm's /daemon/list for \"all online\" (default 20)")
    ap.add_argument("--minimal-env", action="store_true",
                    help="give the tools only PATH and HOME from this environment (default: all of it)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor (examples/floor.rs)")
    ap.add_argument("--floor-bin", help="a floor binary already built (default: cargo builds examples/floor.rs)")
    args = ap.parse_args()
    if args.small > args.procs:
        ap.error("--small must not exceed --procs")
    if args.runs < 1 or args.list_calls < 1 or args.more_starts < 0 or args.poll_ms <= 0:
        ap.error("--runs and --list-calls must be at least 1, --more-starts at least 0, --poll-ms above 0")
    if args.per_call_starts is None:
        args.per_call_starts = args.procs <= 200

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    opm_src = Path(args.opm)
    if not opm_src.is_file():
        print(f"compare.py: no opm binary at {opm_src}: run `cargo build --release` first", file=sys.stderr)
        return 2
    if not args.no_pm2:
        missing = [t for t in ("node", *(() if args.pm2_prefix else ("npm",))) if not shutil.which(t)]
        if missing:
            print(f"compare.py: {' and '.join(missing)} not on PATH: PM2 needs them (or pass --no-pm2)",
                  file=sys.stderr)
            return 2

    if args.minimal_env:
        BASE_ENV.clear()
        BASE_ENV.update({k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ})
    env_bytes = sum(len(k) + len(v) + 2 for k, v in BASE_ENV.items())
    mark = f"compare-{uuid.uuid4().hex[:12]}"
    root = Path(tempfile.mkdtemp(prefix="opm-compare-"))
    tools_made: list[Tool] = []
    results: dict[str, list[dict]] = {"opm": [], "PM2": [], "floor": []}
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
            "env": f"{len(BASE_ENV)} variables, {env_bytes} bytes"
                   + (" (--minimal-env: PATH and HOME)" if args.minimal_env else " (this shell's own)"),
        }
        pm2_prefix = None
        if not args.no_pm2:
            pm2_prefix = install_pm2(root, args.pm2_version, args.pm2_prefix)
            pkg = json.loads((pm2_prefix / "node_modules" / "pm2" / "package.json").read_text())
            meta["pm2"] = pkg["version"]
            meta["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()

        floor_bin = None
        if not args.no_floor:
            floor_bin = root / "floor"
            shutil.copy2(build_floor(args.floor_bin), floor_bin)

        for run in range(args.runs):
            if floor_bin is not None:
                if args.max_load is not None:
                    wait_for_load(args.max_load)
                res = {"load1": os.getloadavg()[0]}
                log(f"run {run + 1}/{args.runs}: floor (load average {res['load1']:.2f})")
                tag = f"floor-run{run + 1}"
                floor_run(root, f"{mark}-{tag}", tag, floor_bin, opm_bin, args, res)
                results["floor"].append(res)
                log(f"floor run {run + 1}: " + ", ".join(f"{k}={v:.3f}" for k, v in res.items()))
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
