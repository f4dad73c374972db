//! Starting and signalling children. `spawn` launches a program as the
//! leader of a fresh session and process group with stdout/stderr appended
//! to log files and returns its pid and start time without keeping a handle
//! to wait on (the caller reaps through `pidfd`). `signal_group` signals a
//! whole process group, and `split_command` turns a command line into a
//! program and arguments, falling back to `/bin/sh -c` when it needs a shell.
//! `resolve` finds the program the way `execvp` would, but in the PATH the
//! child will get, so "command not found" and "not executable" are answers
//! given before anything runs (`check_command`) and the same errors a spawn
//! reports.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};

use super::proc;

/// What to run and where its output goes.
#[derive(Debug, Clone, Copy)]
pub struct SpawnSpec<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub cwd: &'a Path,
    /// Added to the inherited environment; these win over inherited values.
    pub env: &'a [(String, String)],
    /// The environment inherited: the daemon's when `None`, else this one
    /// (the caller's shell, captured by `opm start`).
    pub base: Option<&'a std::collections::BTreeMap<String, String>>,
    pub out_log: &'a Path,
    pub err_log: &'a Path,
    /// The user and groups it runs as (`--user`, `--group`); `None`: the daemon's.
    pub run_as: Option<&'a super::user::RunAs>,
}

/// A started child: its pid (which is also its pgid and session id) and its
/// start time in clock ticks after boot, which together identify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    pub start_time: u64,
}

/// Opens a log file for appending, creating it (mode 0o640) and its parent
/// directory if missing.
fn open_log(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent)?;
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Why a program cannot be started at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRunnable {
    /// No such file (a path), or in no folder of PATH (a name).
    #[error("command not found: {0}")]
    NotFound(String),
    /// The file exists but lacks execute permission for the daemon's user.
    #[error("not executable: {path} (mode {mode:04o}); make it executable with `chmod +x`, or start it with its interpreter (e.g. `bash {path}`)")]
    NotExecutable { path: String, mode: u32 },
    /// The path names a folder.
    #[error("not executable: {0} is a folder")]
    Folder(String),
}

impl From<NotRunnable> for io::Error {
    fn from(e: NotRunnable) -> io::Error {
        let kind = match e {
            NotRunnable::NotFound(_) => io::ErrorKind::NotFound,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Where `execvp` looks when PATH is unset (glibc's default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The PATH a child with `env` (over the daemon's environment) gets.
fn child_path(env: &[(String, String)]) -> Option<std::ffi::OsString> {
    match env.iter().rev().find(|(k, _)| k == "PATH") {
        Some((_, v)) => Some(v.into()),
        None => std::env::var_os("PATH"),
    }
}

/// Whether the daemon's user may execute `path` (`access(X_OK)`, which is
/// what `execve` checks, root included).
fn executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Finds `program` as `execvp` does: a name with a `/` is a path (relative
/// to `cwd`, where the child starts); any other name is looked up in each
/// folder of `path_var` (relative folders and the empty entry count from
/// `cwd`), skipping files that are not executable. The answer is absolute.
pub fn resolve(
    program: &str,
    cwd: &Path,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, NotRunnable> {
    let check = |candidate: &Path| -> Result<PathBuf, NotRunnable> {
        let shown = || {
            if program.contains('/') {
                program.to_string()
            } else {
                candidate.display().to_string()
            }
        };
        match fs::metadata(candidate) {
            Err(_) => Err(NotRunnable::NotFound(program.to_string())),
            Ok(m) if m.is_dir() => Err(NotRunnable::Folder(shown())),
            Ok(m) if !executable(candidate) => Err(NotRunnable::NotExecutable {
                path: shown(),
                mode: m.permissions().mode() & 0o7777,
            }),
            Ok(_) => Ok(candidate.to_path_buf()),
        }
    };
    if program.is_empty() {
        return Err(NotRunnable::NotFound(String::new()));
    }
    if program.contains('/') {
        return check(&cwd.join(program));
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut refused = None;
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = cwd.join(OsStr::from_bytes(dir));
        match check(&dir.join(program)) {
            Ok(found) => return Ok(found),
            Err(NotRunnable::NotFound(_)) => {}
            // execvp goes on past a file it may not run, and reports EACCES
            // only when nothing later in PATH works.
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    Err(refused.unwrap_or_else(|| NotRunnable::NotFound(program.to_string())))
}

/// Shell words that are not programs looked up in PATH.
const SHELL_BUILTINS: &[&str] = &[
    "!", "{", "}", ".", ":", "[", "[[", "alias", "bg", "break", "case", "cd", "command",
    "continue", "do", "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export",
    "false", "fg", "fi", "for", "function", "getopts", "hash", "if", "jobs", "kill", "local",
    "printf", "pwd", "read", "readonly", "return", "select", "set", "shift", "source", "test",
    "then", "time", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset",
    "until", "wait", "while",
];

/// Checks, before anything is stored or run, that `command` can start in
/// `cwd` with `env` over the daemon's environment: a plain command's
/// program must resolve. For a shell line, the first word of its first
/// command is checked when it is a plain program name or path (after any
/// `VAR=value` prefixes) and not a shell keyword or builtin; anything the
/// shell expands is left to the shell.
pub fn check_command(
    command: &str,
    cwd: &Path,
    env: &[(String, String)],
) -> Result<(), NotRunnable> {
    let Some((program, _)) = split_command(command) else {
        return Err(NotRunnable::NotFound(String::new()));
    };
    let path_var = child_path(env);
    if !runs_in_shell(command) {
        return resolve(&program, cwd, path_var.as_deref()).map(|_| ());
    }
    let plain = |w: &str| {
        !w.is_empty()
            && w.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | ',' | '@')
            })
    };
    for word in command.split_ascii_whitespace() {
        if let Some((name, value)) = word.split_once('=') {
            let assignment = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if assignment && name != "PATH" && (value.is_empty() || plain(value)) {
                continue;
            }
            return Ok(());
        }
        // The word ends where the shell's next operator begins.
        let end = word
            .find([';', '|', '&', '<', '>', ')'])
            .unwrap_or(word.len());
        let (word, rest) = word.split_at(end);
        if word.is_empty() || !plain(word) || SHELL_BUILTINS.contains(&word) {
            return Ok(());
        }
        // `2>x` is a redirection of fd 2, not a program called `2`.
        if rest.starts_with(['<', '>']) && word.chars().all(|c| c.is_ascii_digit()) {
            return Ok(());
        }
        return resolve(word, cwd, path_var.as_deref()).map(|_| ());
    }
    Ok(())
}

/// Spawns `spec.program` as its own session and process-group leader.
///
/// stdin is `/dev/null`, stdout and stderr are appended to the log files.
/// The child is not waited for here: the caller must reap the pid, e.g. with
/// [`super::pidfd::PidFd`] and [`super::pidfd::reap`].
///
/// It uses `posix_spawnp` with `POSIX_SPAWN_SETSID` (glibc's spawn shares
/// the parent's memory until the exec instead of copying its page tables, so
/// a thousand spawns stay cheap), resets every signal to its default (the
/// daemon ignores SIGPIPE; its children must not inherit that) and clears
/// the signal mask. Like `std::process::Command`, it returns once the exec
/// has happened or failed, with the exec's error. The program is found by
/// [`resolve`] in the child's PATH first, so a missing or non-executable
/// program is reported as such, and a failure to start never leaves a child
/// behind.
pub fn spawn(spec: &SpawnSpec) -> io::Result<Spawned> {
    spawn_inner(spec).map_err(|e| match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or_else(|_| "?".to_string(), |(soft, _)| soft.to_string());
            io::Error::new(
                e.kind(),
                format!("{e}: the daemon has no file descriptor left (its limit is {limit})"),
            )
        }
        _ => e,
    })
}

fn spawn_inner(spec: &SpawnSpec) -> io::Result<Spawned> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;

    let path_var = match (
        spec.base.and_then(|b| b.get("PATH")),
        spec.env.iter().any(|(k, _)| k == "PATH"),
    ) {
        (Some(p), false) => Some(p.into()),
        _ => child_path(spec.env),
    };
    let resolved = resolve(spec.program, spec.cwd, path_var.as_deref())?;
    let out = open_log(spec.out_log)?;
    let err = open_log(spec.err_log)?;
    let null = File::open("/dev/null")?;
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a NUL byte in the command, its environment or its folder",
            )
        })
    };
    let program = cstr(resolved.as_os_str().as_bytes())?;
    let mut argv = vec![cstr(spec.program.as_bytes())?];
    for a in spec.args {
        argv.push(cstr(a.as_bytes())?);
    }
    // The inherited environment, with the spec's variables winning; opm's
    // own secrets (dropped by the daemon at start) never pass, whoever spawns.
    let inherited: Vec<(std::ffi::OsString, std::ffi::OsString)> = match spec.base {
        Some(base) => base.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        None => std::env::vars_os().collect(),
    };
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = inherited
        .into_iter()
        .filter(|(k, _)| {
            !crate::SECRET_ENV_VARS
                .iter()
                .any(|s| k.as_bytes() == s.as_bytes())
        })
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .filter(|(k, _)| !spec.env.iter().any(|(sk, _)| sk.as_bytes() == k.as_slice()))
        .collect();
    env.extend(
        spec.env
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())),
    );
    let envp: Vec<CString> = env
        .into_iter()
        .map(|(mut k, v)| {
            k.push(b'=');
            k.extend_from_slice(&v);
            cstr(&k)
        })
        .collect::<io::Result<_>>()?;
    let cwd = cstr(spec.cwd.as_os_str().as_bytes())?;
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|c| c.as_ptr() as *mut libc::c_char)
        .collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> = envp
        .iter()
        .map(|c| c.as_ptr() as *mut libc::c_char)
        .collect();
    envp_ptrs.push(std::ptr::null_mut());

    if let Some(who) = spec.run_as.filter(|w| w.changes_ids()) {
        // Its logs are its own (a rotation keeps the owner: `rotate.rs`).
        for f in [&out, &err] {
            std::os::unix::fs::fchown(f, Some(who.uid), Some(who.gid))?;
        }
        let exec = super::user::Exec {
            program: &program,
            argv: &argv_ptrs,
            envp: &envp_ptrs,
            cwd: &cwd,
            stdio: [null.as_raw_fd(), out.as_raw_fd(), err.as_raw_fd()],
        };
        return spawned(super::user::fork_exec(who, &exec)? as u32);
    }
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    };
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer handed to the posix_spawn family points into
    // values that live until the end of this block (argv, envp, cwd and the
    // three open files); the attribute and file-action objects are
    // initialised before use and destroyed on every path after it. The
    // sigset is initialised by sigfillset/sigemptyset before it is read.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                null.as_raw_fd(),
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                out.as_raw_fd(),
                1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                err.as_raw_fd(),
                2,
            ))?;
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut actions,
                cwd.as_ptr(),
            ))?;
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &all))?;
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            let flags = i32::from(libc::POSIX_SPAWN_SETSID)
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                flags as libc::c_short,
            ))?;
            check(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            ))
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        result?;
    }
    spawned(pid as u32)
}

/// The `Spawned` of a child just started, with its start time.
fn spawned(pid: u32) -> io::Result<Spawned> {
    // Read /proc directly rather than proc::start_time: a child that already
    // exited is a zombie until reaped, and its start time is still valid.
    match proc::stat(pid) {
        Some(st) => Ok(Spawned {
            pid,
            start_time: st.start_time,
        }),
        None => {
            // Without its start time the run could not be told apart from a
            // recycled pid later (e.g. /proc unreadable for lack of file
            // descriptors): end it rather than leave it unsupervised.
            let _ = signal_group(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            Err(io::Error::other(format!(
                "cannot read /proc/{pid}/stat of the new child, so it was ended"
            )))
        }
    }
}

/// Sends `sig` to every process in group `pgid`. `Ok(false)` if there is no
/// such group (`ESRCH`), `Ok(true)` when sent. pgids 0 and 1 and values
/// beyond `i32::MAX` are refused with `InvalidInput` (they would signal our
/// own group, init's group, or be read as "every process").
pub fn signal_group(pgid: u32, sig: Signal) -> io::Result<bool> {
    let pg = proc::group_pid(pgid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        )
    })?;
    match killpg(pg, sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Sends `sig` to the one process `pid` (`opm signal` without `--process-group`),
/// with the same answers and refusals as `signal_group`.
pub fn signal_pid(pid: u32, sig: Signal) -> io::Result<bool> {
    let p = proc::group_pid(pid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        )
    })?;
    match nix::sys::signal::kill(p, sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Whether `split_command` hands `cmd` to `/bin/sh -c`.
pub fn runs_in_shell(cmd: &str) -> bool {
    matches!(split_command(cmd), Some((p, a)) if p == "/bin/sh" && a.len() == 2 && a[1] == cmd)
}

/// What a shell's own error line says when it exited 127 (command not
/// found) or 126 (found but not executable) right after it started, e.g.
/// dash's `sh: 1: x: not found` or bash's `bash: line 1: x: command not found`.
pub fn shell_failure(code: i32, last_err_line: Option<&str>) -> Option<String> {
    let line = last_err_line.map(str::trim).unwrap_or("");
    match code {
        127 => {
            let name = line
                .strip_suffix(": command not found")
                .or_else(|| line.strip_suffix(": not found"))
                .and_then(|head| head.rsplit(": ").next())
                .filter(|n| !n.is_empty());
            Some(match name {
                Some(n) => format!("command not found: {n}"),
                None if line.is_empty() => "command not found (the shell exited 127)".to_string(),
                None => format!("command not found (the shell exited 127: {line})"),
            })
        }
        126 if line.is_empty() => Some("not executable (the shell exited 126)".to_string()),
        126 => Some(format!("not executable (the shell exited 126: {line})")),
        _ => None,
    }
}

/// Characters that make a command need a shell.
const SHELL_META: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
    '%', '{', '}', '\n',
];

/// Splits a command line into program and arguments.
///
/// Without shell metacharacters the command is split on ASCII whitespace.
/// With any of ``|&;<>()$`\"'*?[]#~%{}``, a newline, or an `=` in the first
/// word (a leading `VAR=value` assignment), it becomes
/// `("/bin/sh", ["-c", cmd])`. A blank command gives `None`.
pub fn split_command(cmd: &str) -> Option<(String, Vec<String>)> {
    let mut words = cmd.split_ascii_whitespace();
    let first = words.next()?;
    if cmd.contains(SHELL_META) || first.contains('=') {
        return Some((
            "/bin/sh".to_string(),
            vec!["-c".to_string(), cmd.to_string()],
        ));
    }
    Some((first.to_string(), words.map(str::to_string).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::pidfd::{reap, ExitStatus};
    use nix::sys::wait::waitpid;
    use nix::unistd::Pid;
    use std::time::Duration;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn sh(cmd: &str) -> Option<(String, Vec<String>)> {
        Some(("/bin/sh".to_string(), strings(&["-c", cmd])))
    }

    #[test]
    fn split_plain_commands() {
        assert_eq!(
            split_command("node app.js --port=3000"),
            Some(("node".to_string(), strings(&["app.js", "--port=3000"])))
        );
        assert_eq!(
            split_command("python3\t-m  http.server \r\n"),
            sh("python3\t-m  http.server \r\n")
        );
        assert_eq!(
            split_command("  python3\t-m  http.server  "),
            Some(("python3".to_string(), strings(&["-m", "http.server"])))
        );
        assert_eq!(split_command("sleep"), Some(("sleep".to_string(), vec![])));
        assert_eq!(
            split_command("./run.sh a-b c_d e.f g/h @x +y ,z"),
            Some((
                "./run.sh".to_string(),
                strings(&["a-b", "c_d", "e.f", "g/h", "@x", "+y", ",z"])
            ))
        );
    }

    fn make(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, "#!/bin/sh\n").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn resolve_finds_names_in_the_given_path_and_paths_in_cwd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("mkdir");
        let tool = make(&bin, "tool", 0o755);
        let path = std::ffi::OsString::from(format!("/nonexistent:{}", bin.display()));
        assert_eq!(
            resolve("tool", Path::new("/"), Some(&path)),
            Ok(tool.clone())
        );
        assert_eq!(resolve("bin/tool", dir.path(), None), Ok(tool.clone()));
        assert_eq!(
            resolve("./bin/tool", dir.path(), None),
            Ok(dir.path().join("./bin/tool"))
        );
        // A relative PATH entry counts from the child's folder.
        assert_eq!(
            resolve("tool", dir.path(), Some(OsStr::new("bin"))),
            Ok(tool)
        );
        assert_eq!(
            resolve("tool", Path::new("/"), Some(OsStr::new("/nonexistent"))),
            Err(NotRunnable::NotFound("tool".into()))
        );
        assert_eq!(
            resolve("./missing", dir.path(), None),
            Err(NotRunnable::NotFound("./missing".into()))
        );
        assert_eq!(
            resolve("bin", dir.path(), Some(dir.path().as_os_str())),
            Err(NotRunnable::Folder(bin.display().to_string()))
        );
        assert!(
            resolve("sh", Path::new("/"), None).is_ok(),
            "the default PATH has sh"
        );
    }

    #[test]
    fn resolve_refuses_a_file_without_execute_permission() {
        // Root may run a file with any x bit, but not one with none, so
        // this holds for every user.
        let dir = tempfile::tempdir().expect("tempdir");
        make(dir.path(), "tool", 0o644);
        let e = resolve("./tool", dir.path(), None).expect_err("not executable");
        assert_eq!(
            e,
            NotRunnable::NotExecutable {
                path: "./tool".into(),
                mode: 0o644
            }
        );
        assert!(e.to_string().starts_with("not executable: ./tool"), "{e}");
        // In PATH, a later executable one wins, as with execvp.
        let later = dir.path().join("later");
        fs::create_dir(&later).expect("mkdir");
        let good = make(&later, "tool", 0o700);
        let path =
            std::ffi::OsString::from(format!("{}:{}", dir.path().display(), later.display()));
        assert_eq!(resolve("tool", Path::new("/"), Some(&path)), Ok(good));
    }

    #[test]
    fn check_command_looks_at_the_first_program_of_a_shell_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cwd = dir.path();
        let nf = |w: &str| Err(NotRunnable::NotFound(w.to_string()));
        assert_eq!(check_command("doesnotexist", cwd, &[]), nf("doesnotexist"));
        assert_eq!(
            check_command("doesnotexist --x | cat", cwd, &[]),
            nf("doesnotexist")
        );
        assert_eq!(
            check_command("FOO=1 BAR= doesnotexist", cwd, &[]),
            nf("doesnotexist")
        );
        assert_eq!(
            check_command("doesnotexist>out", cwd, &[]),
            nf("doesnotexist")
        );
        for fine in [
            "sleep 1",
            "sleep 1 | cat",
            "cd /tmp && doesnotexist",
            "exec sleep 1 && x",
            "\"quoted\" x",
            "$CMD x",
            "(doesnotexist)",
            "FOO=\"a b\" doesnotexist",
            "PATH=/x doesnotexist",
            "2>err sleep 1",
            "# comment",
        ] {
            assert_eq!(check_command(fine, cwd, &[]), Ok(()), "{fine:?}");
        }
        // The child's PATH is the one searched.
        let env = vec![("PATH".to_string(), "/nonexistent".to_string())];
        assert_eq!(check_command("sleep 1", cwd, &env), nf("sleep"));
    }

    #[test]
    fn a_shell_that_fails_at_once_says_which_command() {
        assert_eq!(
            shell_failure(127, Some("/bin/sh: 1: doesnotexist: not found")).as_deref(),
            Some("command not found: doesnotexist")
        );
        assert_eq!(
            shell_failure(127, Some("bash: line 1: nope: command not found")).as_deref(),
            Some("command not found: nope")
        );
        assert_eq!(
            shell_failure(127, None).as_deref(),
            Some("command not found (the shell exited 127)")
        );
        assert!(shell_failure(126, Some("sh: 1: ./x: Permission denied"))
            .is_some_and(|s| s.starts_with("not executable")));
        assert_eq!(shell_failure(1, Some("x")), None);
    }

    #[test]
    fn spawn_reports_a_missing_program_as_command_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = spawn(&SpawnSpec {
            program: "doesnotexist-opm",
            args: &[],
            cwd: dir.path(),
            env: &[],
            base: None,
            out_log: &dir.path().join("o"),
            err_log: &dir.path().join("e"),
            run_as: None,
        })
        .expect_err("not found");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(e.to_string(), "command not found: doesnotexist-opm");
    }

    #[test]
    fn split_blank_is_none() {
        assert_eq!(split_command(""), None);
        assert_eq!(split_command("   \t "), None);
    }

    #[test]
    fn split_shell_commands() {
        for cmd in [
            "a | b",
            "a && b",
            "a; b",
            "a > out",
            "a < in",
            "(a)",
            "echo $HOME",
            "echo `date`",
            "echo a\\ b",
            "echo \"a b\"",
            "echo 'a b'",
            "ls *.rs",
            "ls ?.rs",
            "ls [ab]",
            "a # comment",
            "ls ~",
            "kill %1",
            "echo {a,b}",
            "a\nb",
            "PORT=3000 node app.js",
            "a=b",
        ] {
            assert_eq!(split_command(cmd), sh(cmd), "{cmd:?}");
        }
    }

    /// Kills the child's group and reaps it when dropped.
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = signal_group(self.0, Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(self.0 as i32), None);
        }
    }

    #[tokio::test]
    async fn spawn_writes_logs_and_exits_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("logs/new/out.log");
        let err = dir.path().join("logs/new/err.log");
        let args = strings(&["-c", "echo hi; echo err >&2; echo \"$OPM_T\"; pwd"]);
        let env = vec![("OPM_T".to_string(), "set-by-spec".to_string())];
        let spec = SpawnSpec {
            program: "/bin/sh",
            args: &args,
            cwd: dir.path(),
            env: &env,
            base: None,
            out_log: &out,
            err_log: &err,
            run_as: None,
        };
        let child = spawn(&spec).expect("spawn");
        let guard = Guard(child.pid);
        assert!(child.start_time > 0);
        let fd = super::super::pidfd::open(child.pid).expect("pidfd");
        tokio::time::timeout(Duration::from_secs(10), fd.exited())
            .await
            .expect("exits in time")
            .expect("pidfd wait");
        assert_eq!(
            reap(child.pid),
            Some(ExitStatus {
                code: Some(0),
                signal: None
            })
        );
        std::mem::forget(guard);
        let cwd = fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(
            fs::read_to_string(&out).expect("out log"),
            format!("hi\nset-by-spec\n{}\n", cwd.display())
        );
        assert_eq!(fs::read_to_string(&err).expect("err log"), "err\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");

        // A second run appends to the same files.
        let child = spawn(&spec).expect("spawn again");
        let fd = super::super::pidfd::open(child.pid).expect("pidfd");
        let _guard = Guard(child.pid);
        tokio::time::timeout(Duration::from_secs(10), fd.exited())
            .await
            .expect("exits in time")
            .expect("pidfd wait");
        assert_eq!(fs::read_to_string(&err).expect("err log"), "err\nerr\n");
    }

    #[test]
    fn spawn_failure_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = SpawnSpec {
            program: "/nonexistent/program",
            args: &[],
            cwd: dir.path(),
            env: &[],
            base: None,
            out_log: &dir.path().join("o"),
            err_log: &dir.path().join("e"),
            run_as: None,
        };
        assert!(spawn(&spec).is_err());
    }

    fn sleeper(dir: &Path) -> Spawned {
        let args = strings(&["30"]);
        let out = dir.join("out.log");
        let err = dir.join("err.log");
        spawn(&SpawnSpec {
            program: "/bin/sleep",
            args: &args,
            cwd: dir,
            env: &[],
            base: None,
            out_log: &out,
            err_log: &err,
            run_as: None,
        })
        .expect("spawn sleep")
    }

    #[test]
    fn child_is_its_own_group_and_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = sleeper(dir.path());
        let _guard = Guard(child.pid);
        let st = proc::stat(child.pid).expect("stat");
        assert_eq!(st.pgrp, child.pid);
        assert_eq!(st.session, child.pid);
        assert_eq!(st.ppid, std::process::id());
        assert_eq!(st.start_time, child.start_time);
        assert_eq!(proc::start_time(child.pid), Some(child.start_time));
    }

    #[test]
    fn signal_group_terminates_sleeper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = sleeper(dir.path());
        let guard = Guard(child.pid);
        assert!(proc::group_alive(child.pid));
        assert!(signal_group(child.pid, Signal::SIGTERM).expect("killpg"));
        let status = waitpid(Pid::from_raw(child.pid as i32), None).expect("waitpid");
        std::mem::forget(guard);
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Signaled(
                Pid::from_raw(child.pid as i32),
                Signal::SIGTERM,
                false
            )
        );
        assert!(!proc::group_alive(child.pid));
        assert!(!signal_group(child.pid, Signal::SIGTERM).expect("killpg"));
    }

    #[test]
    fn reap_reports_signal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = sleeper(dir.path());
        let guard = Guard(child.pid);
        assert_eq!(reap(child.pid), None, "still running");
        assert!(signal_group(child.pid, Signal::SIGTERM).expect("killpg"));
        let mut status = None;
        for _ in 0..500 {
            status = reap(child.pid);
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if status.is_some() {
            std::mem::forget(guard);
        }
        assert_eq!(
            status,
            Some(ExitStatus {
                code: None,
                signal: Some(15)
            })
        );
        // Reaped: the zombie is gone and a second reap finds no child.
        assert_eq!(proc::start_time(child.pid), None);
        assert_eq!(reap(child.pid), None);
    }

    #[test]
    fn signal_group_refuses_dangerous_pgids() {
        for pgid in [0, 1, u32::MAX, i32::MAX as u32 + 1] {
            let e = signal_group(pgid, Signal::SIGTERM).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
