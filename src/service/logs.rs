//! Reading a process's logs: the last lines of each stream, and the files the live stream follows.

use super::*;
use crate::sync::LockExt;

/// One process's logs as the rotation check last worked them out: for
/// the definition it had, its out and err files (one path twice when
/// merged) and their policy.
type ProcessLogs = (Arc<Spec>, [Arc<Path>; 2], supervise::rotate::Policy);

/// What the rotation check keeps between passes: each process's log
/// paths and policy (worked out again when its definition changes), and
/// which logs were written since their last look.
#[derive(Default)]
pub struct LogChecks {
    paths: BTreeMap<u64, ProcessLogs>,
    /// Each live log's policy (a merged log is one file for two streams).
    policies: BTreeMap<Arc<Path>, supervise::rotate::Policy>,
    growth: supervise::growth::Growth,
}

impl Service {
    pub fn logs(&self, target: &Target, lines: usize) -> Result<LogsResponse, ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        let lines = lines.min(MAX_LOG_LINES);
        let (out_log, err_log) = self.home.process_logs(&spec.name, id, &spec.def);
        let read = |p: &Path| {
            supervise::rotate::tail_lines(p, lines).map_err(|source| ServiceError::File {
                what: "cannot read",
                path: p.to_path_buf(),
                source,
            })
        };
        Ok(LogsResponse {
            id,
            name: spec.name.clone(),
            out: read(&out_log)?,
            // Merged: one file, read once (as the out log).
            err: if err_log == out_log {
                Vec::new()
            } else {
                read(&err_log)?
            },
            out_log: out_log.display().to_string(),
            err_log: err_log.display().to_string(),
        })
    }

    /// How a process's logs are bounded: its own options, else `[logs]`.
    pub fn log_policy(&self, def: &crate::definition::ProcessDef) -> supervise::rotate::Policy {
        let logs = &self.config.logs;
        supervise::rotate::Policy {
            max_size: def.max_log_size(logs.max_size.0),
            keep: def.log_files(logs.files),
            compress: logs.compress,
        }
    }

    /// Rotates every log past its cap (one pass; the daemon runs it each
    /// `[logs] check_interval_ms`). Only the logs written since their last
    /// look are statted (`supervise::growth`), and each process's log paths
    /// are worked out again only when its definition changed.
    pub fn rotate_logs(&self) {
        let mut checks = self.log_checks.lock_or_recover();
        let checks = &mut *checks;
        let mut changed = false;
        {
            let procs = self.rec.shared.read();
            let before = checks.paths.len();
            checks.paths.retain(|id, _| procs.contains_key(id));
            changed |= checks.paths.len() != before;
            for (id, e) in procs.iter() {
                if checks
                    .paths
                    .get(id)
                    .is_some_and(|(spec, ..)| Arc::ptr_eq(spec, &e.spec))
                {
                    continue;
                }
                let (out, err) = self.home.process_logs(&e.spec.name, e.spec.id, &e.spec.def);
                let policy = self.log_policy(&e.spec.def);
                // Each path held once, shared with the log check's maps (a
                // merged log is one file for both streams).
                let out: Arc<Path> = out.into();
                let err = if err == *out { out.clone() } else { err.into() };
                checks
                    .paths
                    .insert(*id, (e.spec.clone(), [out, err], policy));
                changed = true;
            }
        }
        if changed {
            checks.policies = checks
                .paths
                .values()
                .flat_map(|(_, logs, policy)| logs.iter().map(|l| (l.clone(), *policy)))
                .collect();
            checks
                .growth
                .set_live(checks.policies.keys().cloned().collect());
        }
        for live in checks.growth.due() {
            checks.growth.arm(&live);
            let Some(policy) = checks.policies.get(&live) else {
                continue;
            };
            match supervise::rotate::rotate_if_over(&live, policy) {
                Ok(Some(supervise::rotate::Cut::Truncate)) => tracing::warn!(
                    "{}: the file system cannot collapse a range; rotated by copy and truncate (lines written during it may be lost)",
                    live.display()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot rotate {}: {e}", live.display()),
            }
        }
    }

    /// `opm reload-logs`: for every running process, gives each log file
    /// it writes that was renamed away (by logrotate) its configured name
    /// back (`supervise::rotate::reattach`), and says what it found.
    pub fn reload_logs(&self) -> crate::model::ReloadLogsResponse {
        use supervise::rotate::Reattach;
        let mut logs = Vec::new();
        let mut entries = self.entries(None);
        entries.sort_by_key(|e| e.spec.id);
        for e in entries {
            let Some(pid) = e.obs.pid() else { continue };
            let (out, err) = self.home.process_logs(&e.spec.name, e.spec.id, &e.spec.def);
            let streams = if out == err {
                vec![("both", 1, out)]
            } else {
                vec![("out", 1, out), ("err", 2, err)]
            };
            for (stream, fd, path) in streams {
                let shown = path.display();
                let (outcome, detail) = match supervise::rotate::reattach(pid, fd, &path) {
                    Ok(Reattach::Same) => ("same", format!("writes {shown}")),
                    Ok(Reattach::Moved { to, bytes }) => (
                        "moved",
                        format!(
                            "wrote {} (renamed from {shown}): that file is {shown} again, and its first {bytes} bytes are in {}",
                            to.display(),
                            to.display()
                        ),
                    ),
                    Ok(Reattach::Deleted { was }) => (
                        "deleted",
                        format!(
                            "writes a deleted file (was {}): `opm restart {}` makes it write {shown}",
                            was.display(),
                            e.spec.name
                        ),
                    ),
                    Ok(Reattach::Elsewhere { at }) => (
                        "elsewhere",
                        format!("writes {at}, not a file named after {shown}: left alone"),
                    ),
                    Ok(Reattach::Occupied { bytes }) => (
                        "occupied",
                        format!(
                            "writes a renamed file, but {shown} is another file with {bytes} bytes in it: move that away and run reload-logs again"
                        ),
                    ),
                    Err(err) => ("failed", format!("cannot reattach {shown}: {err}")),
                };
                if outcome != "same" {
                    tracing::info!(id = e.spec.id, name = %e.spec.name, "reload-logs: {stream}: {detail}");
                }
                logs.push(crate::model::ReloadedLog {
                    id: e.spec.id,
                    name: e.spec.name.clone(),
                    stream: stream.to_string(),
                    path: path.display().to_string(),
                    outcome: outcome.to_string(),
                    detail,
                });
            }
        }
        crate::model::ReloadLogsResponse { logs }
    }

    /// The log files of a process, for the live stream.
    pub fn log_paths(&self, target: &Target) -> Result<(u64, PathBuf, PathBuf), ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        let (out, err) = self.home.process_logs(&spec.name, id, &spec.def);
        Ok((id, out, err))
    }
}
