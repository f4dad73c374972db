#!/usr/bin/env python3
"""A soak of the opm daemon: many processes, some crash-looping, for a long time.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/soak.py                          # 1,000 processes, 30 minutes
    python3 benches/soak.py --minutes 10 --out soak.md

One fresh OPM_HOME in a temporary directory; one `opm start FILE` of a
`.toml` file with --procs entries: most run `sleep 100000`, a tenth
(--crash-fraction) are crash-looping shells that print a line, live
--crash-every seconds and exit 1 (`min_uptime` is set below that, so opm
restarts each at once, every time, for the whole soak: a crash loop that
never ends up `errored`). Every --sample-seconds the script records the
daemon's RSS (`VmRSS`), its anonymous and file-backed parts (`RssAnon`,
`RssFile`), its open file descriptors (the entries of /proc/PID/fd), its
threads, its CPU time (utime+stime) and the restarts counted so far, and
times one `opm list --format json` (so the read path is exercised too).

What it judges, after the first --warmup-minutes (the daemon's heap and
sled's cache reach their working size; the figures before are shown but not
judged): RSS flat (the last quarter's median within --rss-slack MiB of the
first quarter's), and no descriptor leak (the median count of the last
quarter no higher than the first quarter's: every crash closes its pidfd and
log files; a sample taken while restarts are under way counts their
descriptors too, so single samples vary by a few either way, and a leak shows
as a median that climbs with the restarts).

Clean-up, whatever happens: `opm kill`, then SIGKILL to every process that
still carries this run's marker variable in its environment (by process
group when it leads one), then the temporary directory is removed.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402  (the same /proc helpers and clean-up)
    MARK_VAR,
    REPO,
    CLK_TCK,
    Interrupted,
    _on_signal,
    alive,
    git_commit,
    kill_marked,
    log,
    proc_stat,
    read_pid,
)


def status_kib(pid: int) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opm", default=str(REPO / "target" / "release" / "opm"), help="the opm binary")
    ap.add_argument("--procs", type=int, default=1000, help="processes (default 1000)")
    ap.add_argument("--crash-fraction", type=float, default=0.1, help="share of them crash-looping (default 0.1)")
    ap.add_argument("--crash-every", type=float, default=3.0, help="a crashing process lives this long, in s (default 3)")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    ap.add_argument("--warmup-minutes", type=float, default=2.0, help="not judged at the start (default 2)")
    ap.add_argument("--sample-seconds", type=float, default=10.0, help="time between samples (default 10)")
    ap.add_argument("--rss-slack", type=float, default=1.0, help="allowed RSS growth in MiB (default 1)")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    args = ap.parse_args()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    opm_src = Path(args.opm)
    if not opm_src.is_file():
        print(f"no opm binary at {opm_src}: run `cargo build --release` first", file=sys.stderr)
        return 2

    mark = f"soak-{uuid.uuid4().hex[:12]}"
    root = Path(tempfile.mkdtemp(prefix="opm-soak-"))
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OPM_HOME"}
    env[MARK_VAR] = mark
    env["OPM_HOME"] = str(home)
    cli_log = open(root / "cli.log", "ab")
    rc = 0
    samples: list[dict] = []
    try:
        opm = root / "opm"
        shutil.copy2(opm_src, opm)
        crashers = round(args.procs * args.crash_fraction)
        # min_uptime below the crash period: each exit is a "stable" run's
        # end, restarted at once, so the loop never ends up errored.
        min_uptime_ms = max(100, int(args.crash_every * 1000 / 2))
        entries = []
        for i in range(args.procs):
            if i < crashers:
                entries.append(
                    f'[[process]]\nname = "crash{i}"\n'
                    f'script = "echo up; sleep {args.crash_every:g}; exit 1"\n'
                    f'min_uptime = "{min_uptime_ms}ms"\n\n'
                )
            else:
                entries.append(f'[[process]]\nname = "p{i}"\nscript = "sleep 100000"\n\n')
        procs_file = root / "soak.toml"
        procs_file.write_text("".join(entries))

        def opm_call(*argv, timeout=120.0) -> tuple[int, float, bytes]:
            t0 = time.perf_counter_ns()
            r = subprocess.run([str(opm), *argv], stdin=subprocess.DEVNULL, capture_output=True,
                               env=env, cwd=root, timeout=timeout)
            ms = (time.perf_counter_ns() - t0) / 1e6
            cli_log.write(f"$ opm {' '.join(argv)} -> {r.returncode} in {ms:.1f} ms\n".encode() + r.stderr[-2000:])
            cli_log.flush()
            return r.returncode, ms, r.stdout

        meta = {
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} cores, Linux {platform.release()}",
            "opm": subprocess.run([str(opm), "--version"], capture_output=True, text=True).stdout.strip()
            + f", commit {git_commit(REPO)}, binary {opm_src}",
            "command": " ".join(["python3", "benches/soak.py", *sys.argv[1:]]),
        }
        log(f"starting {args.procs} processes ({crashers} crash-looping every {args.crash_every:g} s) in {home}")
        code, ms, _ = opm_call("start", str(procs_file))
        if code != 0:
            raise RuntimeError(f"opm start exited {code}; see {root / 'cli.log'}")
        pid = read_pid(home / "daemon.pid")
        t_start = time.monotonic()
        end = t_start + args.minutes * 60
        next_at = t_start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now < next_at:
                time.sleep(min(next_at - now, 1.0))
                continue
            next_at += args.sample_seconds
            if not alive(pid):
                raise RuntimeError(f"the daemon (pid {pid}) is gone")
            code, list_ms, out = opm_call("list", "--format", "json")
            views = json.loads(out) if code == 0 else []
            st = status_kib(pid)
            stat = proc_stat(pid)
            s = {
                "t_s": time.monotonic() - t_start,
                "load1": os.getloadavg()[0],
                "rss_kib": st.get("VmRSS"),
                "anon_kib": st.get("RssAnon"),
                "file_kib": st.get("RssFile"),
                "threads": st.get("Threads"),
                "fds": fd_count(pid),
                "cpu_ticks": stat[2] if stat else None,
                "list_ms": list_ms,
                "online": sum(1 for v in views if v.get("status") == "online"),
                "restarts": sum(v.get("restarts", 0) for v in views),
            }
            samples.append(s)
            log(f"t={s['t_s']:.0f}s rss={s['rss_kib'] / 1024:.1f} MiB anon={s['anon_kib'] / 1024:.1f} MiB "
                f"fds={s['fds']} threads={s['threads']} online={s['online']} restarts={s['restarts']} "
                f"list={list_ms:.1f} ms load={s['load1']:.2f}")
        report = render(args, meta, samples, crashers)
        print(report)
        if args.out:
            Path(args.out).write_text(report + "\n")
        if "**not met**" in report:
            rc = 1
    except (RuntimeError, Interrupted, KeyboardInterrupt, subprocess.TimeoutExpired) as e:
        print(f"soak.py: stopped: {e}", file=sys.stderr)
        if samples:
            print(render(args, meta, samples, round(args.procs * args.crash_fraction)))
        rc = 1
    finally:
        try:
            subprocess.run([str(root / "opm"), "kill"], stdin=subprocess.DEVNULL, stdout=cli_log,
                           stderr=cli_log, env=env, cwd=root, timeout=120)
        except Exception as e:  # noqa: BLE001 - clean-up goes on regardless
            log(f"opm kill failed: {e}")
        left = kill_marked(mark)
        if left:
            log(f"SIGKILLed {left} leftover process(es)")
        cli_log.close()
        shutil.rmtree(root, ignore_errors=True)
    return rc


def render(args, meta, samples, crashers) -> str:
    mib = lambda kib: kib / 1024  # noqa: E731
    lines = [
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}  ",
        f"opm: {meta['opm']}  ",
        f"Command: `{meta['command']}`  ",
        f"{args.procs} processes, {crashers} of them crash-looping (each lives {args.crash_every:g} s, "
        f"restarted at once); a sample every {args.sample_seconds:g} s for {args.minutes:g} min; "
        f"load average {min(s['load1'] for s in samples):.2f}–{max(s['load1'] for s in samples):.2f}",
        "",
        "| minute | daemon RSS | RssAnon | RssFile | fds | threads | daemon CPU since last row | restarts so far | `list --format json` | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    step = max(1, round(60 / args.sample_seconds))
    prev = None
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        cpu = "–"
        if prev is not None and s["cpu_ticks"] is not None and prev["cpu_ticks"] is not None:
            cpu = f"{(s['cpu_ticks'] - prev['cpu_ticks']) / CLK_TCK / max(s['t_s'] - prev['t_s'], 1e-9) * 100:.1f} %"
        lines.append(
            f"| {s['t_s'] / 60:.1f} | {mib(s['rss_kib']):.1f} MiB | {mib(s['anon_kib']):.1f} MiB | "
            f"{mib(s['file_kib']):.1f} MiB | {s['fds']} | {s['threads']} | {cpu} | {s['restarts']} | "
            f"{s['list_ms']:.1f} ms | {s['load1']:.2f} |"
        )
        prev = s
    judged = [s for s in samples if s["t_s"] >= args.warmup_minutes * 60]
    lines.append("")
    if len(judged) < 8:
        lines.append(f"Too few samples after the {args.warmup_minutes:g}-minute warm-up to judge (need 8).")
        return "\n".join(lines)
    q = max(2, len(judged) // 4)
    first, last = judged[:q], judged[-q:]
    rss_a = statistics.median(s["rss_kib"] for s in first) / 1024
    rss_b = statistics.median(s["rss_kib"] for s in last) / 1024
    fds_a = [s["fds"] for s in first]
    fds_b = [s["fds"] for s in last]
    fd_a, fd_b = statistics.median(fds_a), statistics.median(fds_b)
    span = (judged[-1]["t_s"] - judged[0]["t_s"]) / 60
    restarts = judged[-1]["restarts"] - judged[0]["restarts"]
    lines.append(f"Judged over {span:.1f} min after the {args.warmup_minutes:g}-minute warm-up "
                 f"({restarts} restarts in that time):")
    lines.append("")
    lines.append(f"- RSS flat: median {rss_a:.2f} MiB in the first quarter, {rss_b:.2f} MiB in the last "
                 f"(allowed growth {args.rss_slack:g} MiB): "
                 + ("**met**" if rss_b - rss_a <= args.rss_slack else "**not met**"))
    lines.append(f"- no descriptor leak: median {fd_a:g} open in the first quarter "
                 f"(from {min(fds_a)} to {max(fds_a)}), {fd_b:g} in the last "
                 f"(from {min(fds_b)} to {max(fds_b)}): "
                 + ("**met**" if fd_b <= fd_a else "**not met**"))
    lines.append(f"- peak RSS over the whole soak: {max(s['rss_kib'] for s in samples) / 1024:.1f} MiB; "
                 f"`list` median {statistics.median(s['list_ms'] for s in samples):.1f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
