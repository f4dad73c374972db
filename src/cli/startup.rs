//! `opm startup [--user] [--print]` (alias `opm daemon setup`) and `opm
//! unstartup`: a systemd unit that runs this opm's daemon at boot, for the
//! current home. The unit runs `opm daemon run`, the daemon in the
//! foreground (`Type=exec`: systemd supervises the daemon's own pid, no
//! fork to guess), which restores every stored process on start, so no
//! `opm save` is needed for opm's own processes.
//!
//! `KillMode=process`: stopping or restarting the unit signals the daemon
//! only, as `opm daemon stop` does, and the processes it manages keep
//! running; the next daemon adopts them. (The default, `control-group`,
//! would kill every managed process whenever the daemon restarts.)

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;

use super::CliError;
use crate::config::Home;

/// The unit's name.
pub const UNIT: &str = "opm.service";
/// Where a system unit lives.
const SYSTEM_DIR: &str = "/etc/systemd/system";
/// What exists when systemd runs as PID 1 (`sd_booted(3)`).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

#[derive(Debug, Clone, Args)]
pub struct StartupArgs {
    /// A unit of your user's systemd (~/.config/systemd/user), no root needed; it starts at boot with `loginctl enable-linger`
    #[arg(long)]
    pub user: bool,
    /// Only print the unit; write and enable nothing
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UnstartupArgs {
    /// Remove the unit of your user's systemd (what `opm startup --user` wrote)
    #[arg(long)]
    pub user: bool,
}

/// What the unit is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFacts {
    /// This opm binary, absolute.
    pub exe: PathBuf,
    /// The home it restores, absolute.
    pub home: PathBuf,
    /// A unit of the user's own systemd.
    pub user_mode: bool,
    /// `User=`/`Group=` of a system unit written by someone else than root.
    pub run_as: Option<(String, String)>,
}

/// The unit's text.
pub fn unit_text(f: &UnitFacts) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "# Written by `opm startup` (opm {}); `opm unstartup` removes it.\n",
        env!("CARGO_PKG_VERSION")
    ));
    t.push_str("[Unit]\n");
    t.push_str(&format!(
        "Description=opm process manager (home {})\n",
        f.home.display()
    ));
    // The user manager has no network-online.target to pull in.
    if !f.user_mode {
        t.push_str("Wants=network-online.target\n");
    }
    t.push_str("After=network-online.target\n\n");
    t.push_str("[Service]\n");
    // The daemon stays in the foreground: systemd watches its own pid.
    t.push_str("Type=exec\n");
    if let Some((user, group)) = &f.run_as {
        t.push_str(&format!("User={user}\nGroup={group}\n"));
    }
    t.push_str(&format!(
        "Environment={}\n",
        quote(&format!("OPM_HOME={}", f.home.display()))
    ));
    t.push_str(&format!(
        "ExecStart={} daemon run\n",
        quote(&f.exe.display().to_string())
    ));
    t.push_str("Restart=on-failure\nRestartSec=1\n");
    // 75: another daemon holds this home's database; starting again would
    // only fail again.
    t.push_str(&format!(
        "RestartPreventExitStatus={}\n",
        super::EXIT_LOCKED
    ));
    t.push_str(
        "# Stop and restart signal the daemon only: the processes it manages keep\n\
         # running and the next daemon adopts them (as with `opm daemon stop`).\n",
    );
    t.push_str("KillMode=process\n\n");
    t.push_str("[Install]\n");
    t.push_str(if f.user_mode {
        "WantedBy=default.target\n"
    } else {
        "WantedBy=multi-user.target\n"
    });
    t
}

/// A word of a unit file: in double quotes when it holds anything but
/// plain characters, with `%` (specifiers) and `$` (variables) escaped.
pub fn quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-_.=:+,@%$".contains(c))
    {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The facts of the unit for this binary and home.
fn facts(user_mode: bool) -> Result<UnitFacts, CliError> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| CliError::io("cannot find the opm binary's path", e))?;
    let home = Home::from_env()?.root;
    let home = if home.is_absolute() {
        home
    } else {
        std::env::current_dir()
            .map_err(|e| CliError::io("cannot read the current directory", e))?
            .join(home)
    };
    let run_as = if user_mode || nix::unistd::geteuid().is_root() {
        None
    } else {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or(uid.to_string(), |u| u.name);
        let group = nix::unistd::Group::from_gid(gid)
            .ok()
            .flatten()
            .map_or(gid.to_string(), |g| g.name);
        Some((user, group))
    };
    Ok(UnitFacts {
        exe,
        home,
        user_mode,
        run_as,
    })
}

/// Where the unit goes.
fn unit_path(user_mode: bool) -> Result<PathBuf, CliError> {
    if !user_mode {
        return Ok(Path::new(SYSTEM_DIR).join(UNIT));
    }
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    CliError::Usage("HOME is not set: cannot find ~/.config/systemd/user".into())
                })?,
        )
        .join(".config"),
    };
    Ok(config.join("systemd/user").join(UNIT))
}

/// Why systemd cannot be asked to enable a unit here, if it cannot.
fn systemd_missing() -> Option<String> {
    if !Path::new(SYSTEMD_RUNNING).is_dir() {
        let init = std::fs::read_to_string("/proc/1/comm")
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        return Some(format!(
            "systemd is not running on this machine (PID 1 is {init}, and {SYSTEMD_RUNNING} does not exist)"
        ));
    }
    if which("systemctl").is_none() {
        return Some("systemd runs but `systemctl` is not on the PATH".into());
    }
    None
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn systemctl_words(user_mode: bool, args: &[&str]) -> Vec<String> {
    let mut w = vec!["systemctl".to_string()];
    if user_mode {
        w.push("--user".into());
    }
    w.extend(args.iter().map(|a| a.to_string()));
    w
}

/// Runs `systemctl [--user] ARGS`; its error output when it fails.
fn systemctl(user_mode: bool, args: &[&str]) -> Result<(), String> {
    let words = systemctl_words(user_mode, args);
    match Command::new(&words[0]).args(&words[1..]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{}` failed ({}): {}",
            words.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{}`: {e}", words.join(" "))),
    }
}

pub fn startup(a: StartupArgs) -> Result<(), CliError> {
    let f = facts(a.user)?;
    let text = unit_text(&f);
    if a.print {
        print!("{text}");
        return Ok(());
    }
    let path = unit_path(a.user)?;
    let sc = |args: &[&str]| systemctl_words(a.user, args).join(" ");
    if !a.user && !nix::unistd::geteuid().is_root() {
        return Err(CliError::Usage(format!(
            "writing {} needs root. Either `opm startup --user` (a unit of your own systemd), or as root: \
             `opm startup --print | sudo tee {}` then `sudo systemctl daemon-reload && sudo systemctl enable {UNIT}` \
             (that unit runs opm as {}, with the home {})",
            path.display(),
            path.display(),
            f.run_as.as_ref().map_or("you", |(u, _)| u.as_str()),
            f.home.display()
        )));
    }
    if let Some(why) = systemd_missing() {
        return Err(CliError::Usage(format!(
            "{why}: nothing was written. `opm startup --print` prints the unit, to install by hand where \
             systemd runs (as {}, then `{}`)",
            path.display(),
            sc(&["enable", UNIT])
        )));
    }
    let before = std::fs::read_to_string(&path).ok();
    if before.as_deref() == Some(text.as_str()) {
        println!("✔ {} is up to date", path.display());
    } else {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::io(format!("cannot create {}", dir.display()), e))?;
        }
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e))?;
        println!(
            "✔ {} {}: ExecStart={} daemon run, OPM_HOME={}",
            if before.is_some() { "updated" } else { "wrote" },
            path.display(),
            f.exe.display(),
            f.home.display()
        );
    }
    let left = |done: &str, e: String| {
        CliError::Daemon(format!(
            "{e}\n  the unit is written ({}){done}; left to do: `{}`",
            path.display(),
            [sc(&["daemon-reload"]), sc(&["enable", UNIT])].join(" && ")
        ))
    };
    systemctl(a.user, &["daemon-reload"]).map_err(|e| left("", e))?;
    println!("✔ {}: systemd read the unit", sc(&["daemon-reload"]));
    systemctl(a.user, &["enable", UNIT]).map_err(|e| left(" and read by systemd", e))?;
    println!(
        "✔ {}: the daemon and its processes come back at {}",
        sc(&["enable", UNIT]),
        if a.user {
            "your user's systemd start"
        } else {
            "boot"
        }
    );
    let home = Home::new(&f.home);
    match std::fs::read_to_string(home.pid_file())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|_| std::os::unix::net::UnixStream::connect(home.socket()).is_ok())
    {
        Some(pid) => println!(
            "  the daemon running now (pid {pid}) was not started by systemd: it hands over at the next boot, \
             or now with `opm daemon stop && {}` (the processes keep running and are adopted)",
            sc(&["start", UNIT])
        ),
        None => println!("  no daemon runs now: `{}` starts it", sc(&["start", UNIT])),
    }
    if a.user {
        let name = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name);
        if !Path::new("/var/lib/systemd/linger").join(&name).exists() {
            println!(
                "  ⚠ your user's systemd starts at your first login, not at boot: `loginctl enable-linger {name}` makes it start at boot"
            );
        }
    }
    println!("  the unit restores the stored processes: no `opm save` is needed");
    Ok(())
}

pub fn unstartup(a: UnstartupArgs) -> Result<(), CliError> {
    let path = unit_path(a.user)?;
    let sc = |args: &[&str]| systemctl_words(a.user, args).join(" ");
    if !path.exists() {
        println!("no opm unit at {}: nothing to remove", path.display());
        return Ok(());
    }
    if !a.user && !nix::unistd::geteuid().is_root() {
        return Err(CliError::Usage(format!(
            "removing {} needs root: `sudo opm unstartup`",
            path.display()
        )));
    }
    let running = systemd_missing().is_none();
    // `systemctl disable` also works without a running systemd (it only
    // removes the links `enable` made).
    if which("systemctl").is_some() {
        systemctl(a.user, &["disable", UNIT]).map_err(CliError::Daemon)?;
        println!(
            "✔ {}: not started at boot any more (a daemon it runs now keeps running)",
            sc(&["disable", UNIT])
        );
    }
    std::fs::remove_file(&path)
        .map_err(|e| CliError::io(format!("cannot remove {}", path.display()), e))?;
    println!("✔ removed {}", path.display());
    if running {
        systemctl(a.user, &["daemon-reload"]).map_err(CliError::Daemon)?;
        println!("✔ {}: systemd forgot the unit", sc(&["daemon-reload"]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(user_mode: bool, run_as: Option<(&str, &str)>) -> UnitFacts {
        UnitFacts {
            exe: "/opt/my tools/opm".into(),
            home: "/home/ann/.opm".into(),
            user_mode,
            run_as: run_as.map(|(u, g)| (u.into(), g.into())),
        }
    }

    #[test]
    fn the_unit_runs_the_daemon_in_the_foreground_for_this_home_and_spares_its_children() {
        let t = unit_text(&facts(false, None));
        assert!(t.contains("\nType=exec\n"), "{t}");
        assert!(
            t.contains("\nExecStart=\"/opt/my tools/opm\" daemon run\n"),
            "{t}"
        );
        assert!(t.contains("\nEnvironment=OPM_HOME=/home/ann/.opm\n"), "{t}");
        assert!(t.contains("\nKillMode=process\n"), "{t}");
        assert!(t.contains("\nRestart=on-failure\n"), "{t}");
        assert!(t.contains("\nWants=network-online.target\n"), "{t}");
        assert!(t.contains("\nWantedBy=multi-user.target\n"), "{t}");
        assert!(!t.contains("User="), "root's unit runs as root: {t}");
    }

    #[test]
    fn a_user_unit_wants_the_default_target_and_a_system_unit_of_a_user_runs_as_that_user() {
        let t = unit_text(&facts(true, None));
        assert!(t.contains("\nWantedBy=default.target\n"), "{t}");
        assert!(!t.contains("Wants=network-online"), "{t}");
        let t = unit_text(&facts(false, Some(("ann", "staff"))));
        assert!(t.contains("\nUser=ann\nGroup=staff\n"), "{t}");
    }

    #[test]
    fn unit_words_are_quoted_and_their_specifiers_escaped() {
        assert_eq!(quote("/usr/bin/opm"), "/usr/bin/opm");
        assert_eq!(quote("/a b/opm"), "\"/a b/opm\"");
        assert_eq!(quote("OPM_HOME=/x%y$z"), "OPM_HOME=/x%%y$$z");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
