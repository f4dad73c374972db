#!/usr/bin/env python3
"""Failed requests during `reload`, opm against PM2's cluster mode.

A request loop (a new TCP connection and one GET every INTERVAL, from this
script) runs against a small HTTP server while it is reloaded RELOADS times;
every request that is refused, reset or gets no answer counts as failed, and
the span from the first to the last failure of each reload is its refused
window. Cases:

  pm2-cluster-1 / pm2-cluster-2: app.js under `pm2 start -i 1|2` (cluster
      mode: the workers share the master's socket), `pm2 reload app`.
  opm-node-restart: the same app.js under opm without readiness (reload is
      a restart: stopped, then started).
  opm-node-ready-port: app.js under opm with --ready-port. Node 20 has no
      `reusePort` listen option, so the new run cannot bind beside the old
      one: the reload fails and the old run keeps serving (0 failures, but
      no new run): reported as such.
  opm-python-wait-ready: web.py (Python's http.server binding with
      SO_REUSEPORT and sending READY=1 to $NOTIFY_SOCKET) under opm with
      --wait-ready: the new run starts beside the old one.
  opm-python-restart: the same web.py without readiness.
  opm-node22-ready-port / opm-node22-instances-2 (only with --node22 PATH, a
      Node >= 22.12 binary, where `reusePort: true` works): app.js under opm
      with --ready-port, 1 instance or `--instances 2` (a rolling reload,
      one copy at a time; both copies bind the same port). PM2's cases keep
      the system node.

app.js binds with `reusePort: true` (Node < 22.12 ignores the option) and
on SIGINT/SIGTERM closes its server (finishing what it has accepted) and
exits.

PM2 is installed from the npm registry into a temporary prefix (or
--pm2-prefix); opm is target/release/opm (or $OPM_BIN). Each side gets its own temporary
home. Usage: benches/reload.py [--reloads 5] [--interval 0.02]
[--pm2-prefix DIR] [--node22 PATH] [--only CASE,CASE]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APP_JS = r"""
const http = require('http');
const port = Number(process.env.PORT);
const server = http.createServer((req, res) => res.end(String(process.pid)));
server.listen({ port, host: '127.0.0.1', reusePort: true }, () => {
  if (process.send) process.send('ready');
});
const stop = () => { server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); };
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
"""

WEB_PY = r"""
import os, socket, sys, signal, threading, http.server
port = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(os.getpid()).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.HTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
srv = S(("127.0.0.1", port), H)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
addr = os.environ.get("NOTIFY_SOCKET")
if addr:
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)
srv.serve_forever(poll_interval=0.05)
srv.socket.setblocking(False)
while True:
    try:
        c, a = srv.socket.accept()
    except OSError:
        break
    c.setblocking(True); srv.finish_request(c, a); c.close()
srv.server_close()
"""


class Loop:
    """A request loop in a thread: per-request (time, ok)."""

    def __init__(self, port, interval):
        self.port, self.interval = port, interval
        self.results = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            t = time.time()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as r:
                    r.read()
                ok = True
            except Exception:
                ok = False
            self.results.append((t, ok))
            time.sleep(max(0.0, self.interval - (time.time() - t)))

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self.results


def windows(results, marks):
    """Refused window (ms) of each reload: first to last failure after its mark."""
    out = []
    for i, start in enumerate(marks):
        end = marks[i + 1] if i + 1 < len(marks) else float("inf")
        fails = [t for t, ok in results if not ok and start <= t < end]
        out.append(round((fails[-1] - fails[0]) * 1000) if fails else 0)
    return out


def failures(results, marks):
    """Failed requests of each reload: from its mark to the next."""
    ends = marks[1:] + [float("inf")]
    return [sum(1 for t, ok in results if not ok and a <= t < b) for a, b in zip(marks, ends)]


def wait_answer(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers on port {port}")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def measure(name, start, reload, stop, port, reloads, interval, ran):
    loop = None
    try:
        start()
        wait_answer(port)
        time.sleep(1.0)
        loop = Loop(port, interval)
        time.sleep(0.5)
        marks, notes = [], []
        for _ in range(reloads):
            marks.append(time.time())
            notes.append(reload())
            time.sleep(1.5)
            wait_answer(port)
        results = loop.finish()
    finally:
        if loop is not None:
            loop.stop.set()
        stop()
    failed = sum(1 for _, ok in results if not ok)
    row = {
        "case": name,
        "requests": len(results),
        "failed": failed,
        "before_first_reload": sum(1 for t, ok in results if not ok and t < marks[0]) if marks else 0,
        "per_reload_failed": failures(results, marks),
        "per_reload_window_ms": windows(results, marks),
        "ran": ran,
        "reload_said": notes[-1][:160] if notes else "",
    }
    print(json.dumps(row), flush=True)
    return row


def install_pm2(prefix):
    if not os.path.exists(os.path.join(prefix, "node_modules", ".bin", "pm2")):
        subprocess.run(["npm", "install", "--prefix", prefix, "pm2@latest", "--no-audit", "--no-fund",
                        "--loglevel=error"], check=True)
    return os.path.join(prefix, "node_modules", ".bin", "pm2")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--pm2-prefix")
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--node22", help="a Node >= 22.12 binary: adds the opm-node22-* cases")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="opm-reload-bench-")
    app = os.path.join(work, "app.js")
    web = os.path.join(work, "web.py")
    open(app, "w").write(APP_JS)
    open(web, "w").write(WEB_PY)
    opm_bin = os.environ.get("OPM_BIN") or os.path.join(ROOT, "target", "release", "opm")
    only = set(args.only.split(",")) if args.only else None
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    node22 = os.path.abspath(args.node22) if args.node22 else None
    node22_version = node22 and subprocess.run([node22, "--version"], capture_output=True, text=True).stdout.strip()

    def opm_case(name, command, flags, port):
        home = os.path.join(work, name)
        env = dict(os.environ, OPM_HOME=home, PORT=str(port))
        run = lambda *a: subprocess.run([opm_bin, *a], env=env, capture_output=True, text=True)
        return measure(
            name,
            lambda: run("start", command, "--name", "app", *flags),
            lambda: (lambda r: (r.stdout + r.stderr).strip())(run("reload", "app")),
            lambda: (run("remove", "all"), run("daemon", "stop")),
            port, args.reloads, args.interval,
            f"opm start \"{command}\" {' '.join(flags)}; opm reload app",
        )

    def pm2_case(name, instances, port):
        pm2 = install_pm2(args.pm2_prefix or os.path.join(work, "pm2"))
        env = dict(os.environ, PM2_HOME=os.path.join(work, name), PORT=str(port))
        run = lambda *a: subprocess.run([pm2, *a], env=env, capture_output=True, text=True)
        return measure(
            name,
            lambda: run("start", app, "--name", "app", "-i", str(instances)),
            lambda: (run("reload", "app").stdout.strip().splitlines() or [""])[-1],
            lambda: (run("delete", "all"), run("kill")),
            port, args.reloads, args.interval,
            f"pm2 start app.js -i {instances} (cluster mode); pm2 reload app",
        )

    cases = [
        ("pm2-cluster-1", lambda: pm2_case("pm2-cluster-1", 1, free_port())),
        ("pm2-cluster-2", lambda: pm2_case("pm2-cluster-2", 2, free_port())),
        ("opm-node-restart", lambda: opm_case("opm-node-restart", f"node {app}", [], free_port())),
        ("opm-node-ready-port", lambda: (lambda p: opm_case("opm-node-ready-port", f"node {app}", ["--ready-port", str(p)], p))(free_port())),
        ("opm-python-wait-ready", lambda: (lambda p: opm_case("opm-python-wait-ready", f"python3 {web} {p}", ["--wait-ready"], p))(free_port())),
        ("opm-python-restart", lambda: (lambda p: opm_case("opm-python-restart", f"python3 {web} {p}", [], p))(free_port())),
    ]
    if node22:
        cases += [
            ("opm-node22-ready-port", lambda: (lambda p: opm_case("opm-node22-ready-port", f"{node22} {app}", ["--ready-port", str(p)], p))(free_port())),
            ("opm-node22-instances-2", lambda: (lambda p: opm_case("opm-node22-instances-2", f"{node22} {app}", ["--instances", "2", "--ready-port", str(p)], p))(free_port())),
        ]
    print(f"# node {node} (PM2 and opm-node-*)" + (f", node22 {node22_version} (opm-node22-*)" if node22 else "")
          + f", {args.reloads} reloads per case, a request every {args.interval * 1000:.0f} ms, load average {os.getloadavg()}", flush=True)
    try:
        for name, case in cases:
            if only is None or name in only:
                case()
    finally:
        print(f"# load average at the end {os.getloadavg()}", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
