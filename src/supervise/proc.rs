//! Reading facts about processes out of `/proc`: parsing `/proc/PID/stat`,
//! process start times (used with the pid to identify a process across pid
//! reuse), the boot id, clock-tick and page-size constants, finding a process
//! by an environment marker (crash recovery), checking whether a process
//! group still exists, and sampling CPU and memory per process group with a
//! single scan of `/proc`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::OnceLock;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::{sysconf, Pid, SysconfVar};

/// The fields of `/proc/PID/stat` that opm uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// One of `R S D Z T t X I ...`.
    pub state: char,
    /// User-mode CPU time in clock ticks.
    pub utime: u64,
    /// Kernel-mode CPU time in clock ticks.
    pub stime: u64,
    /// Start time after boot in clock ticks.
    pub start_time: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Parses one `/proc/PID/stat` line.
///
/// The command name (field 2) is wrapped in parentheses and may itself
/// contain spaces and `)`, so the line is cut at the LAST `)` and the
/// remaining fields are counted from there.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid: u32 = text[..open].trim().parse().ok()?;
    // Field 3 (state) is index 0 of the rest.
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<&str> { rest.get(n.checked_sub(3)?).copied() };
    let num_u32 = |n: usize| -> Option<u32> {
        // ppid/pgrp/session are printed with %d; negative never occurs for
        // these in practice, but be lenient and clamp rather than fail.
        let v: i64 = field(n)?.parse().ok()?;
        u32::try_from(v.max(0)).ok()
    };
    let num_u64 = |n: usize| -> Option<u64> { field(n)?.parse().ok() };

    let mut state_chars = field(3)?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    // rss is printed with %ld.
    let rss: i64 = field(24)?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid: num_u32(4)?,
        pgrp: num_u32(5)?,
        session: num_u32(6)?,
        state,
        utime: num_u64(14)?,
        stime: num_u64(15)?,
        start_time: num_u64(22)?,
        rss_pages: u64::try_from(rss.max(0)).unwrap_or(0),
    })
}

/// Reads and parses `/proc/PID/stat`. `None` if the process is gone (or the
/// file is unreadable). Zombies are returned as they are (state `'Z'`).
pub fn stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The start time (clock ticks after boot) of a live process. A zombie or
/// dead process counts as gone and gives `None`.
pub fn start_time(pid: u32) -> Option<u64> {
    let st = stat(pid)?;
    if matches!(st.state, 'Z' | 'X' | 'x') {
        return None;
    }
    Some(st.start_time)
}

/// The kernel boot id, trimmed; empty if unreadable. Together with a pid and
/// start time it identifies one process instance uniquely across reboots.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), cached; 100 if unknown.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(v)) if v > 0 => u64::try_from(v).unwrap_or(100),
        _ => 100,
    })
}

/// The page size in bytes (`sysconf(_SC_PAGE_SIZE)`), cached; 4096 if
/// unknown.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(v)) if v > 0 => u64::try_from(v).unwrap_or(4096),
        _ => 4096,
    })
}

/// Iterates the numeric entries of `/proc` (one per process, threads are not
/// listed). Unreadable entries are skipped.
pub(crate) fn proc_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// Finds a process whose environment contains exactly `VAR=value`.
///
/// Scans every `/proc/*/environ` (entries we may not read are skipped). When
/// several processes match, the one that leads its own process group
/// (pid == pgrp) wins; otherwise the smallest pid. Used for crash recovery
/// only, so a full scan is acceptable.
pub fn find_by_env(var: &str, value: &str) -> Option<u32> {
    let needle = format!("{var}={value}");
    let needle = needle.as_bytes();
    let mut matches: Vec<u32> = proc_pids()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|entry| entry == needle))
                .unwrap_or(false)
        })
        .collect();
    matches.sort_unstable();
    matches
        .iter()
        .copied()
        .find(|&pid| stat(pid).is_some_and(|st| st.pgrp == pid))
        .or_else(|| matches.first().copied())
}

/// Converts a pgid to a `Pid` that is safe to pass to `killpg`: 0 (our own
/// group), 1 and values that would turn negative are rejected.
pub(crate) fn group_pid(pgid: u32) -> Option<Pid> {
    match i32::try_from(pgid) {
        Ok(v) if v > 1 => Some(Pid::from_raw(v)),
        _ => None,
    }
}

/// Whether the process group `pgid` still has at least one member
/// (`killpg(pgid, 0)` succeeds or fails with `EPERM`). Note that an
/// unreaped zombie still counts as a member.
pub fn group_alive(pgid: u32) -> bool {
    let Some(pg) = group_pid(pgid) else {
        return false;
    };
    match killpg(pg, None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// CPU and memory of one process group.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Percent of one core (may exceed 100 for multi-threaded groups).
    pub cpu_percent: f32,
    /// Sum of the resident set sizes of the group's live members.
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Prev {
    at: Instant,
    ticks: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    ticks: u64,
    rss_pages: u64,
    first_start: Option<u64>,
}

/// Samples CPU and memory per process group. Keeps the previous tick count
/// of each requested pgid so CPU is reported over the interval between two
/// samples.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: HashMap<u32, Prev>,
}

impl Sampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// One scan of `/proc`: sums rss and utime+stime per requested process
    /// group. Zombies are not counted as members. A pgid without any live
    /// member is absent from the result.
    ///
    /// CPU is the delta of summed ticks over the wall time since this
    /// sampler's previous sample of that pgid. On the first sample of a pgid
    /// it is the average since the group started (total ticks over the time
    /// since the earliest member's start). Ticks of members that exited
    /// between samples vanish from the sum; such a drop is clamped to 0.
    pub fn sample_groups(&mut self, pgids: &[u32]) -> HashMap<u32, Usage> {
        let wanted: HashSet<u32> = pgids.iter().copied().collect();
        let mut acc: HashMap<u32, Acc> = HashMap::new();
        for pid in proc_pids() {
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(st) = parse_stat(&text) else {
                continue;
            };
            if !wanted.contains(&st.pgrp) || matches!(st.state, 'Z' | 'X' | 'x') {
                continue;
            }
            let a = acc.entry(st.pgrp).or_default();
            a.ticks = a.ticks.saturating_add(st.utime.saturating_add(st.stime));
            a.rss_pages = a.rss_pages.saturating_add(st.rss_pages);
            a.first_start = Some(
                a.first_start
                    .map_or(st.start_time, |s| s.min(st.start_time)),
            );
        }
        let now = Instant::now();
        let hz = clock_ticks() as f64;
        let page = page_size();
        let mut uptime: Option<Option<f64>> = None;
        let mut out = HashMap::with_capacity(acc.len());
        for (pgid, a) in &acc {
            let cpu = match self.prev.get(pgid) {
                Some(p) => {
                    let dt = now.duration_since(p.at).as_secs_f64();
                    let dticks = a.ticks.saturating_sub(p.ticks) as f64;
                    if dt > 0.0 {
                        dticks / hz / dt * 100.0
                    } else {
                        0.0
                    }
                }
                None => {
                    let up = *uptime.get_or_insert_with(read_uptime);
                    since_start(a.ticks, a.first_start.unwrap_or(0), up)
                }
            };
            out.insert(
                *pgid,
                Usage {
                    cpu_percent: cpu as f32,
                    memory_bytes: a.rss_pages.saturating_mul(page),
                },
            );
        }
        self.prev = acc
            .into_iter()
            .map(|(pgid, a)| {
                (
                    pgid,
                    Prev {
                        at: now,
                        ticks: a.ticks,
                    },
                )
            })
            .collect();
        out
    }
}

/// The TCP ports that members of process group `pgid` listen on: their
/// sockets (`/proc/PID/fd`) matched with the listening entries of
/// `/proc/net/tcp` and `tcp6` (the daemon's network namespace). A group's
/// rolling reload uses it to tell when a replaced copy serves again.
pub fn listening_ports(pgid: u32) -> std::collections::BTreeSet<u16> {
    let mut inodes = HashSet::new();
    for pid in proc_pids() {
        if stat(pid).is_none_or(|st| st.pgrp != pgid) {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Ok(n) = inode.parse::<u64>() {
                        inodes.insert(n);
                    }
                }
            }
        }
    }
    let mut ports = std::collections::BTreeSet::new();
    if inodes.is_empty() {
        return ports;
    }
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        ports.extend(listening_in(&text, &inodes));
    }
    ports
}

/// The local ports of the listening sockets among `inodes` in one
/// `/proc/net/tcp` table.
fn listening_in(table: &str, inodes: &HashSet<u64>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            // sl local_address rem_address st ... uid timeout inode
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.contains(&inode.parse::<u64>().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// The CPU of `ticks` spent since a start at `start_ticks` after boot, as
/// a percentage of one core, when the boot was `uptime` seconds ago.
fn since_start(ticks: u64, start_ticks: u64, uptime: Option<f64>) -> f64 {
    let hz = clock_ticks() as f64;
    match uptime {
        Some(up) => {
            let alive = up - start_ticks as f64 / hz;
            if alive > 0.0 {
                ticks as f64 / hz / alive * 100.0
            } else {
                0.0
            }
        }
        None => 0.0,
    }
}

/// CPU (averaged since it started) and memory of each of `pids` alone,
/// from its own /proc/PID/stat: what a group's first sample would say of a
/// group that has no other member yet. A pid that is gone or a zombie is
/// absent.
pub fn leader_usage(pids: &[u32]) -> HashMap<u32, Usage> {
    let uptime = read_uptime();
    let page = page_size();
    pids.iter()
        .filter_map(|&pid| {
            let st = stat(pid).filter(|st| !matches!(st.state, 'Z' | 'X' | 'x'))?;
            let ticks = st.utime.saturating_add(st.stime);
            Some((
                pid,
                Usage {
                    cpu_percent: since_start(ticks, st.start_time, uptime) as f32,
                    memory_bytes: st.rss_pages.saturating_mul(page),
                },
            ))
        })
        .collect()
}

/// Seconds since boot from `/proc/uptime`.
fn read_uptime() -> Option<f64> {
    let text = fs::read_to_string("/proc/uptime").ok()?;
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit, so that a
/// flood of connections or many children's pidfds do not run the daemon out
/// of descriptors at the usual soft default of 1,024. Returns the soft limit
/// before and after. Children inherit the raised limit, as under
/// supervisord.
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok((soft, soft.max(hard)))
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::pidfd::reap;
    use crate::supervise::spawn::{signal_group, spawn, SpawnSpec};
    use nix::sys::signal::Signal;
    use std::path::Path;
    use std::time::Duration;

    const LINE: &str = "4131 ((a) b)) R 4128 4129 3683 0 -1 4194304 97 0 0 0 \
        11 22 0 0 20 0 1 0 40011 3133440 385 18446744073709551615 \
        94912836141056 94912836160937 140731976693056 0 0 0 0 0 0 0 0 0 17 1 \
        0 0 0 0 0 94912836176944 94912836178560 94913538228224 \
        140731976694497 140731976694517 140731976694517 140731976695787 0\n";

    #[test]
    fn parse_stat_with_parens_and_spaces_in_comm() {
        let st = parse_stat(LINE).expect("parses");
        assert_eq!(
            st,
            ProcStat {
                pid: 4131,
                ppid: 4128,
                pgrp: 4129,
                session: 3683,
                state: 'R',
                utime: 11,
                stime: 22,
                start_time: 40011,
                rss_pages: 385,
            }
        );
    }

    #[test]
    fn parse_stat_rejects_garbage() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("abc (x) S 1 2 3"), None);
        assert_eq!(parse_stat(") 12 ("), None);
    }

    #[test]
    fn stat_of_self() {
        let me = std::process::id();
        let st = stat(me).expect("own stat");
        assert_eq!(st.pid, me);
        assert!(st.rss_pages > 0);
        assert!(start_time(me).is_some());
        assert_eq!(stat(0), None);
    }

    #[test]
    fn constants_and_boot_id() {
        assert!(clock_ticks() > 0);
        assert!(page_size() >= 4096);
        assert_eq!(boot_id().len(), 36);
    }

    #[test]
    fn listening_sockets_are_found_by_inode_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0 100 0 0 10 0\n   2: 0100007F:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 999 1 0 100 0 0 10 0\n";
        let ours: HashSet<u64> = [4242, 4243].into_iter().collect();
        assert_eq!(listening_in(table, &ours), vec![8080]);
    }

    #[test]
    fn group_alive_rejects_dangerous_pgids() {
        assert!(!group_alive(0));
        assert!(!group_alive(u32::MAX));
    }

    /// Kills the child's whole group and reaps it when dropped.
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = signal_group(self.0, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(self.0 as i32), None);
        }
    }

    fn start(program: &str, args: &[&str], env: &[(String, String)]) -> (Guard, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = dir.path().join("out.log");
        let err = dir.path().join("err.log");
        let spec = SpawnSpec {
            program,
            args: &args,
            cwd: Path::new("/"),
            env,
            base: None,
            out_log: &out,
            err_log: &err,
            run_as: None,
        };
        let child = spawn(&spec).expect("spawn");
        (Guard(child.pid), dir)
    }

    /// Polls `cond` for up to 5 seconds.
    fn wait_for(cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn sampler_sees_busy_child() {
        let (child, _dir) = start("/bin/sh", &["-c", "while :; do :; done"], &[]);
        let pgid = child.0;
        assert!(group_alive(pgid));
        // spawn returns once exec has begun (close-on-exec fds are closed),
        // which can be before the new program has faulted in any pages.
        wait_for(|| stat(pgid).is_some_and(|st| st.rss_pages > 0));
        let alone = leader_usage(&[pgid, 999_999_999]);
        assert!(alone.get(&pgid).is_some_and(|u| u.memory_bytes > 0));
        assert!(!alone.contains_key(&999_999_999));
        let mut sampler = Sampler::new();
        let first = sampler.sample_groups(&[pgid, 999_999_999]);
        let u = first.get(&pgid).expect("group present");
        assert!(u.memory_bytes > 0);
        assert!(!first.contains_key(&999_999_999));
        std::thread::sleep(Duration::from_millis(500));
        let second = sampler.sample_groups(&[pgid]);
        let u = second.get(&pgid).expect("group present");
        assert!(u.memory_bytes > 0);
        assert!(u.cpu_percent > 0.0, "busy loop should use CPU: {u:?}");
        drop(child);
        assert!(!group_alive(pgid));
        let third = sampler.sample_groups(&[pgid]);
        assert!(third.is_empty());
    }

    #[test]
    fn find_by_env_finds_marked_child() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let value = format!("{}-{nanos}", std::process::id());
        let env = vec![("OPM_SUPERVISE_TEST_ID".to_string(), value.clone())];
        let (child, _dir) = start("/bin/sleep", &["30"], &env);
        wait_for(|| find_by_env("OPM_SUPERVISE_TEST_ID", &value).is_some());
        assert_eq!(find_by_env("OPM_SUPERVISE_TEST_ID", &value), Some(child.0));
        // Exact match only: a prefix or a different name does not match.
        assert_eq!(
            find_by_env("OPM_SUPERVISE_TEST_ID", &value[..value.len() - 1]),
            None
        );
        assert_eq!(find_by_env("OPM_SUPERVISE_TEST_I", &value), None);
        let pid = child.0;
        drop(child);
        assert_eq!(find_by_env("OPM_SUPERVISE_TEST_ID", &value), None);
        assert_eq!(reap(pid), None);
    }
}
