//! Running a child as another user (`--user`, `--group`): who that is (the
//! passwd and group databases, by name or number), whether this daemon may
//! do it (root may; any daemon may run a child as its own user and group),
//! the variables that name the user to the child (`HOME`, `USER`,
//! `LOGNAME`), and the fork-and-exec that takes the child to those ids
//! before its exec: `setgroups` (the user's supplementary groups, as
//! `initgroups` gives them), `setgid`, `setuid`, then `chdir` into its
//! working directory as that user. `posix_spawn` cannot change ids, so
//! only these children pay for a `fork`; the others keep the fast path in
//! `spawn.rs`. Between the fork and the exec the child calls only
//! async-signal-safe functions on memory prepared before the fork, and
//! reports the step that failed and its errno through a close-on-exec pipe.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

/// The ids a child runs with, and the user they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name (its uid in digits when the passwd database has none).
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups (the user's, from the group database, and `gid`).
    pub groups: Vec<u32>,
    /// The user's home folder (`/` when the passwd database has none).
    pub home: PathBuf,
}

impl RunAs {
    /// Whether running as these ids needs a change from the daemon's.
    pub fn changes_ids(&self) -> bool {
        Uid::effective().as_raw() != self.uid || Gid::effective().as_raw() != self.gid
    }

    /// The variables that name the user to the child (as `su -` and
    /// systemd's `User=` set them; PM2 sets only `HOME`).
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("HOME", self.home.display().to_string()),
            ("USER", self.name.clone()),
            ("LOGNAME", self.name.clone()),
        ]
    }
}

/// Looks up `user` (default: the daemon's own) and `group` (default: the
/// user's primary group), by name or number. A number that the passwd
/// database does not know is taken as a uid only with a `group`.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<RunAs, String> {
    let lookup = |e: nix::Error| format!("cannot read the user database: {e}");
    let (name, uid, primary, home) = {
        let found = match user.map(str::trim) {
            None => User::from_uid(Uid::effective()).map_err(lookup)?,
            Some(u) => match u.parse::<u32>() {
                Ok(n) => User::from_uid(Uid::from_raw(n)).map_err(lookup)?,
                Err(_) => User::from_name(u).map_err(lookup)?,
            },
        };
        match (found, user.map(str::trim)) {
            (Some(u), _) => (u.name, u.uid.as_raw(), Some(u.gid.as_raw()), u.dir),
            (None, Some(u)) => match u.parse::<u32>() {
                Ok(n) if group.is_some() => (n.to_string(), n, None, PathBuf::from("/")),
                Ok(n) => {
                    return Err(format!(
                        "no user with uid {n} in the user database: give --group too to run as a bare uid"
                    ))
                }
                Err(_) => return Err(format!("no user named {u:?} on this machine")),
            },
            (None, None) => {
                let me = Uid::effective().as_raw();
                (me.to_string(), me, None, PathBuf::from("/"))
            }
        }
    };
    let gid = match group.map(str::trim) {
        None => match primary {
            Some(g) => g,
            None => Gid::effective().as_raw(),
        },
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => Group::from_name(g)
                .map_err(|e| format!("cannot read the group database: {e}"))?
                .ok_or_else(|| format!("no group named {g:?} on this machine"))?
                .gid
                .as_raw(),
        },
    };
    // The user's supplementary groups, as `initgroups` would set them.
    let mut groups = vec![gid];
    if primary.is_some() {
        if let Ok(cname) = CString::new(name.as_str()) {
            if let Ok(all) = nix::unistd::getgrouplist(&cname, Gid::from_raw(gid)) {
                groups = all.into_iter().map(Gid::as_raw).collect();
            }
        }
    }
    Ok(RunAs {
        name,
        uid,
        gid,
        groups,
        home,
    })
}

/// Whether this daemon may run a child as `who`: root may run it as
/// anyone; another daemon only as itself.
pub fn permitted(who: &RunAs) -> Result<(), String> {
    if Uid::effective().is_root() || !who.changes_ids() {
        return Ok(());
    }
    let me = Uid::effective();
    let me_name = User::from_uid(me)
        .ok()
        .flatten()
        .map_or_else(|| me.to_string(), |u| u.name);
    Err(format!(
        "the daemon runs as {me_name} (uid {me}), not root: it cannot run a process as user {} (uid {}, gid {}); run the daemon as root, or leave out --user and --group",
        who.name, who.uid, who.gid
    ))
}

/// What `fork_exec` runs: everything prepared (and NUL-terminated where C
/// wants it) before the fork.
pub struct Exec<'a> {
    pub program: &'a CStr,
    /// A null-terminated array of pointers into live `CString`s.
    pub argv: &'a [*mut libc::c_char],
    /// A null-terminated array of pointers into live `CString`s.
    pub envp: &'a [*mut libc::c_char],
    pub cwd: &'a CStr,
    /// What becomes the child's stdin, stdout and stderr.
    pub stdio: [RawFd; 3],
}

/// The step of the child's preparation that failed.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Step {
    Session = 1,
    Stdio,
    Groups,
    Gid,
    Uid,
    Cwd,
    Exec,
}

/// Forks a child that leads a new session, takes `stdio`, drops to `who`,
/// enters `cwd` and execs `program`. Returns its pid once the exec has
/// happened, or the failed step's error (the child reaped).
pub fn fork_exec(who: &RunAs, e: &Exec) -> io::Result<libc::pid_t> {
    let groups: Vec<Gid> = who.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let (uid, gid) = (Uid::from_raw(who.uid), Gid::from_raw(who.gid));
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the child only calls async-signal-safe functions (setsid,
    // dup2, fcntl, sigaction through signal, sigprocmask, setgroups, setgid,
    // setuid, chdir, execve, write, _exit) on memory prepared before the
    // fork, which stays valid in the child's copy, and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; `child` ends in execve or _exit.
        unsafe { child(e, &groups, gid, uid, wr.as_raw_fd()) }
    }
    drop(wr);
    let mut report = [0u8; 5];
    let mut got = 0;
    let mut rd = File::from(rd);
    while got < report.len() {
        match rd.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                // Unknown state: end it rather than leave it unsupervised.
                // SAFETY: kill and waitpid on the child we just forked.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(err);
            }
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // SAFETY: reaping the child we forked, which has exited (or is exiting).
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
    let err = io::Error::from_raw_os_error(errno);
    let cwd = e.cwd.to_string_lossy();
    let program = e.program.to_string_lossy();
    let msg = match report[0] {
        s if s == Step::Cwd as u8 => format!(
            "user {} cannot enter the working directory {cwd}: {err}",
            who.name
        ),
        s if s == Step::Exec as u8 => {
            format!("user {} cannot run {program}: {err}", who.name)
        }
        s if s == Step::Groups as u8 || s == Step::Gid as u8 || s == Step::Uid as u8 => format!(
            "cannot switch to user {} (uid {}, gid {}): {err}",
            who.name, who.uid, who.gid
        ),
        _ => format!("cannot prepare the child for {program}: {err}"),
    };
    Err(io::Error::new(err.kind(), msg))
}

/// The child's side of `fork_exec`.
///
/// # Safety
/// Call only in the child of a fork, with `e`'s pointers valid.
unsafe fn child(e: &Exec, groups: &[Gid], gid: Gid, uid: Uid, report: RawFd) -> ! {
    // SAFETY: the caller's contract (a forked child, valid pointers); every
    // call below is async-signal-safe and allocates nothing.
    unsafe {
        let fail = |step: Step, errno: i32| -> ! {
            let mut msg = [step as u8, 0, 0, 0, 0];
            msg[1..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        if libc::setsid() < 0 {
            fail(Step::Session, errno());
        }
        for (target, fd) in (0..).zip(e.stdio) {
            // dup2 onto itself keeps close-on-exec: clear it instead.
            let rc = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                fail(Step::Stdio, errno());
            }
        }
        // The daemon ignores SIGPIPE; its children must not inherit that.
        for sig in 1..65 {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if let Err(n) = nix::unistd::setgroups(groups) {
            fail(Step::Groups, n as i32);
        }
        if let Err(n) = nix::unistd::setgid(gid) {
            fail(Step::Gid, n as i32);
        }
        if let Err(n) = nix::unistd::setuid(uid) {
            fail(Step::Uid, n as i32);
        }
        if libc::chdir(e.cwd.as_ptr()) < 0 {
            fail(Step::Cwd, errno());
        }
        libc::execve(
            e.program.as_ptr(),
            e.argv.as_ptr().cast(),
            e.envp.as_ptr().cast(),
        );
        fail(Step::Exec, errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_own_user_is_always_permitted_and_unknown_names_are_refused() {
        let me = resolve(None, None).expect("the daemon's user");
        assert_eq!(me.uid, Uid::effective().as_raw());
        assert!(!me.changes_ids());
        assert!(permitted(&me).is_ok());
        assert!(me.groups.contains(&me.gid));
        let by_number = resolve(Some(&me.uid.to_string()), None).expect("by uid");
        assert_eq!(by_number.name, me.name);
        let e = resolve(Some("no-such-user-opm"), None).expect_err("unknown");
        assert!(e.contains("no-such-user-opm"), "{e}");
        let e = resolve(None, Some("no-such-group-opm")).expect_err("unknown");
        assert!(e.contains("no-such-group-opm"), "{e}");
        let e = resolve(Some("4000000000"), None).expect_err("bare uid");
        assert!(e.contains("--group"), "{e}");
        let bare = resolve(Some("4000000000"), Some("4000000000")).expect("bare ids");
        assert_eq!(
            (bare.uid, bare.gid, bare.groups.as_slice()),
            (4_000_000_000, 4_000_000_000, &[4_000_000_000][..])
        );
        assert_eq!(bare.env()[0], ("HOME", "/".to_string()));
    }
}
