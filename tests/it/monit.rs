//! `opm monit` in a real pseudo-terminal: tmux runs a shell in an 80×24
//! window, the test types `opm monit` and keys into it (`send-keys`) and
//! reads the screen (`capture-pane`). The list, the selected process's log,
//! a restart by key (its pid changes, as the daemon reports it), and the
//! terminal given back on `q` and on Ctrl-C; the same against an agent
//! through a server with `--server AGENT`. Without a terminal, monit refuses.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::roles::{agent, server};
use crate::common::{needs, pid_of, require, run, unique, Output, TestHome, MARKER_VAR};

/// How long the screen may take to show what a step waits for.
const SCREEN_DEADLINE: Duration = Duration::from_secs(15);

/// A tmux server of the test's own (`-L SOCKET`), with one session running
/// `sh` in an 80×24 window; the server is killed by its socket when
/// dropped, and the socket file removed.
struct Tmux {
    socket: String,
    /// Where tmux made the socket (under `$TMUX_TMPDIR` or /tmp/tmux-UID).
    socket_path: Option<String>,
}

impl Tmux {
    /// Starts the session, with the home's `OPM_HOME` and marker in its
    /// environment (so everything started in it is found by the home's cleanup).
    fn new(home: &TestHome) -> Tmux {
        let mut tmux = Tmux {
            socket: unique("opm-monit"),
            socket_path: None,
        };
        let opm_home = format!("OPM_HOME={}", home.path().display());
        let marker = format!("{MARKER_VAR}={}", home.path().display());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "monit",
            "-x",
            "80",
            "-y",
            "24",
            "-c",
            home.path().to_str().expect("a UTF-8 home path"),
            "-e",
            &opm_home,
            "-e",
            &marker,
            "-e",
            "PS1=$ ",
            "sh",
        ])
        .ok();
        let path = tmux
            .run(&["display-message", "-p", "#{socket_path}"])
            .ok()
            .stdout;
        tmux.socket_path = Some(path.trim().to_string()).filter(|p| p.contains(&tmux.socket));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("tmux");
        // Its own server, without the user's configuration.
        cmd.args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null());
        run(cmd)
    }

    /// Types `keys` (tmux key names: `Enter`, `C-c`, `j`...).
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "monit"];
        args.extend_from_slice(keys);
        self.run(&args).ok();
    }

    /// Types a command line and Enter.
    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "monit", "-l", line]).ok();
        self.send(&["Enter"]);
    }

    /// The text of the window.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "monit"]).ok().stdout
    }

    /// Whether the window shows the alternate screen (a full-screen program).
    fn alternate_on(&self) -> bool {
        let out = self
            .run(&["display-message", "-p", "-t", "monit", "#{alternate_on}"])
            .ok();
        out.stdout.trim() == "1"
    }

    /// Waits until the screen satisfies `ok`; returns it. Fails with the
    /// last screen seen after `SCREEN_DEADLINE`.
    #[track_caller]
    fn wait_screen(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < end,
                "timed out after {SCREEN_DEADLINE:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn tmux_available() -> bool {
    require(needs().tool("tmux", "tmux").done())
}

/// The shell command line that runs monit and then says how it ended.
fn monit_line(extra: &str, tag: &str) -> String {
    format!(
        "'{}' monit{extra}; echo {tag}-ended-$?",
        env!("CARGO_BIN_EXE_opm")
    )
}

/// Quits monit with `keys`, then checks the shell is back on the normal
/// screen, with what it showed before monit, and that monit exited 0.
#[track_caller]
fn quit_and_check_restored(tmux: &Tmux, keys: &[&str], tag: &str, before: &str) {
    end_and_check_restored(tmux, keys, tag, before, 0);
}

/// Ends monit with `keys` and checks it exited with `code` and gave the
/// terminal back; returns the screen.
#[track_caller]
fn end_and_check_restored(
    tmux: &Tmux,
    keys: &[&str],
    tag: &str,
    before: &str,
    code: i32,
) -> String {
    tmux.send(keys);
    let done = format!("{tag}-ended-{code}");
    let screen = tmux.wait_screen(&format!("monit to exit {code} after {keys:?}"), |s| {
        s.contains(&done)
    });
    assert!(
        !tmux.alternate_on(),
        "the alternate screen is still on after {keys:?}:\n{screen}"
    );
    assert!(
        screen.contains(before),
        "the screen from before monit is not back after {keys:?}:\n{screen}"
    );
    assert!(
        !screen.contains("r restart"),
        "monit's drawing is left on the screen after {keys:?}:\n{screen}"
    );
    // The terminal is usable again: a typed line echoes and runs (raw
    // mode would leave the shell's line editing broken).
    let check = unique("typed");
    tmux.type_line(&format!("echo {check}-ok"));
    let output = format!("{check}-ok");
    tmux.wait_screen("the shell to run a command after monit", |s| {
        s.lines().any(|l| l.trim_end() == output)
    });
    screen
}

#[test]
fn monit_lists_shows_the_log_restarts_by_key_and_gives_the_terminal_back() {
    if !tmux_available() {
        return;
    }
    let home = TestHome::new();
    home.start(
        "sh -c 'echo first-known-line; exec sleep 1000'",
        "monit-first",
        &[],
    );
    let echo = home.start(
        "sh -c 'echo monit-known-line; exec sleep 1000'",
        "monit-echo",
        &[],
    );
    let old_pid = pid_of(&echo);

    let tmux = Tmux::new(&home);
    let before = unique("before-monit");
    tmux.type_line(&format!("echo {before}"));
    tmux.wait_screen("the shell to echo", |s| s.contains(&before));
    tmux.type_line(&monit_line("", "first"));

    // The list, with both processes, on the alternate screen.
    let screen = tmux.wait_screen("the process list", |s| {
        s.contains("monit-first") && s.contains("monit-echo") && s.contains("online")
    });
    assert!(
        tmux.alternate_on(),
        "monit draws on the alternate screen:\n{screen}"
    );
    assert!(screen.contains(&old_pid.to_string()), "{screen}");
    // The first process is selected at the start: its log shows.
    tmux.wait_screen("the first process's log", |s| {
        s.contains("monit-first (id 0) · log") && s.contains("out | first-known-line")
    });
    // Every line fits the 80 columns, and the keys are on the last line.
    for line in screen.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
    assert!(
        screen
            .trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.contains("q quit")),
        "{screen}"
    );

    // Down to monit-echo: its log replaces the first one's.
    tmux.send(&["j"]);
    let screen = tmux.wait_screen("monit-echo's log", |s| {
        s.contains("monit-echo (id 1) · log") && s.contains("out | monit-known-line")
    });
    assert!(!screen.contains("first-known-line"), "{screen}");

    // `r` restarts it: the daemon reports a new pid, and the list shows it.
    tmux.send(&["r"]);
    let end = Instant::now() + SCREEN_DEADLINE;
    let new_pid = loop {
        let p = home.process("monit-echo");
        if p["status"] == "online"
            && p["pid"]
                .as_i64()
                .is_some_and(|pid| pid != i64::from(old_pid))
        {
            assert_eq!(p["restarts"], 1, "{p:#}");
            break pid_of(&p);
        }
        assert!(
            Instant::now() < end,
            "r did not restart monit-echo: {p:#}\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    tmux.wait_screen("the new pid in the list and the restart's outcome", |s| {
        s.contains(&new_pid.to_string()) && s.contains("✔ restart monit-echo (id 1): online")
    });
    // The other process was not touched.
    assert_eq!(home.process("monit-first")["restarts"], 0);

    quit_and_check_restored(&tmux, &["q"], "first", &before);

    // Ctrl-C quits the same way (in raw mode it is a key, not a signal).
    tmux.type_line(&monit_line("", "second"));
    tmux.wait_screen("the list again", |s| {
        s.contains("monit-echo") && s.contains("q quit")
    });
    quit_and_check_restored(&tmux, &["C-c"], "second", &before);
}

#[test]
fn monit_drives_an_agents_processes_through_the_server() {
    if !tmux_available() {
        return;
    }
    let srv = server(None);
    let a = agent(&srv, "monit-agent", &srv.join);
    let echo = a.home.start(
        "sh -c 'echo agent-known-line; exec sleep 1000'",
        "remote-echo",
        &[],
    );
    let old_pid = pid_of(&echo);

    let tmux = Tmux::new(&srv.home);
    let before = unique("before-monit");
    tmux.type_line(&format!("echo {before}"));
    tmux.wait_screen("the shell to echo", |s| s.contains(&before));
    tmux.type_line(&monit_line(" --server monit-agent", "remote"));
    tmux.wait_screen("the agent's process and its log", |s| {
        s.contains("--server monit-agent")
            && s.contains("remote-echo")
            && s.contains("out | agent-known-line")
    });
    tmux.send(&["r"]);
    let end = Instant::now() + SCREEN_DEADLINE;
    loop {
        let p = a.home.process("remote-echo");
        if p["status"] == "online"
            && p["pid"]
                .as_i64()
                .is_some_and(|pid| pid != i64::from(old_pid))
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "r did not restart the agent's process: {p:#}\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.wait_screen("the restart's outcome", |s| {
        s.contains("✔ restart remote-echo (id 0): online")
    });
    // `s` stops it, on the agent.
    tmux.send(&["s"]);
    let end = Instant::now() + SCREEN_DEADLINE;
    while a.home.process("remote-echo")["status"] != "stopped" {
        assert!(
            Instant::now() < end,
            "s did not stop the agent's process:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    quit_and_check_restored(&tmux, &["q"], "remote", &before);
    drop(a);
}

#[test]
fn a_panic_in_monit_gives_the_terminal_back_before_its_message() {
    // The panic on a key is compiled in with the tests' `failpoints` feature only.
    if !tmux_available() || !crate::durability::failpoints_or_skip() {
        return;
    }
    let home = TestHome::new();
    home.start("sleep 1000", "monit-panic", &[]);
    let tmux = Tmux::new(&home);
    let before = unique("before-monit");
    tmux.type_line(&format!("echo {before}"));
    tmux.wait_screen("the shell to echo", |s| s.contains(&before));
    tmux.type_line(&format!(
        "OPM_TEST_MONIT_PANIC=1 RUST_BACKTRACE=0 {}",
        monit_line("", "panic")
    ));
    tmux.wait_screen("the list", |s| {
        s.contains("monit-panic") && s.contains("q quit")
    });
    // Any key panics in the tests' build; a panic exits 101.
    let screen = end_and_check_restored(&tmux, &["x"], "panic", &before, 101);
    assert!(
        screen.contains("OPM_TEST_MONIT_PANIC is set: a panic on the first key"),
        "the panic's message is readable on the normal screen:\n{screen}"
    );
}

#[test]
fn monit_refuses_to_run_without_a_terminal() {
    let home = TestHome::new();
    // The test harness gives it pipes, not a terminal.
    let out = home.opm(&["monit"]).failed();
    assert!(out.stderr.contains("needs a terminal"), "{out}");
    assert!(out.stdout.is_empty(), "nothing drawn into a pipe: {out}");
    assert!(
        home.daemon_pid().is_none(),
        "no daemon started for nothing: {out}"
    );
}
