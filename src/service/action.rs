//! Actions on existing processes (start, stop, restart, reload, remove, flush, reset, signal): the desired state changes in the store, the reconciler carries them out, and the answer waits for the outcome.

use super::*;

impl Service {
    /// Carries out one action on its targets and waits for the outcome
    /// (a group's reload: one copy at a time, see `instances`).
    pub async fn action(&self, req: ActionRequest) -> Result<ActionResponse, ServiceError> {
        if req.action == ActionKind::Reload {
            if let Some(done) = self.rolling_reload(&req).await? {
                return Ok(done);
            }
        }
        self.act(req).await
    }

    /// `action` on every target at once.
    pub(super) async fn act(&self, req: ActionRequest) -> Result<ActionResponse, ServiceError> {
        let ids = self.resolve(std::slice::from_ref(&req.id))?;
        let entries = self.entries(Some(&ids));
        if req.action == ActionKind::Flush {
            for e in &entries {
                let (out, err) = self.home.process_logs(&e.spec.name, e.spec.id, &e.spec.def);
                for path in if out == err {
                    vec![out]
                } else {
                    vec![out, err]
                } {
                    supervise::logs::truncate(&path).map_err(|source| ServiceError::File {
                        what: "cannot empty",
                        path: path.clone(),
                        source,
                    })?;
                }
            }
            return Ok(ActionResponse {
                action: req.action,
                processes: self.views(Some(&ids), false),
                removed: Vec::new(),
                reloads: Vec::new(),
            });
        }
        match req.action {
            ActionKind::Reset => return self.reset(ids).await,
            ActionKind::Signal => return self.signal(&req, &entries),
            _ => {}
        }
        let mut specs = Vec::with_capacity(entries.len());
        let mut reloads = Vec::new();
        for id in &ids {
            // The store is the truth for specs; the published copy may lag.
            let Some(mut spec) = self.store.get(*id)? else {
                continue;
            };
            let obs = self
                .entries(Some(&[*id]))
                .pop()
                .map(|e| e.obs)
                .unwrap_or_default();
            on_user_action(&mut spec, &obs, req.action);
            if req.action == ActionKind::Reload {
                // Asked before the new generation is stored: see `Handle::reload`.
                reloads.push((spec.id, self.rec.reload(spec.id, spec.generation)));
            }
            if matches!(req.action, ActionKind::Restart | ActionKind::Reload) {
                if let Some(env) = &req.caller_env {
                    spec.def.caller_env = Some(env.clone());
                }
            }
            specs.push(spec);
        }
        let specs = {
            let store = self.store.clone();
            blocking(move || store.update(&specs).map(|()| specs)).await?
        };
        self.rec.wake(ids.clone());
        let longest_kill = specs
            .iter()
            .map(|s| s.def.kill_timeout_ms())
            .max()
            .unwrap_or(0);
        let timeout = Duration::from_millis(longest_kill) + STOP_WAIT_SLACK;
        let wanted: Vec<(u64, Desired, u64)> = specs
            .iter()
            .map(|s| (s.id, s.desired, s.generation))
            .collect();
        let action = req.action;
        let reloads = self.await_reloads(reloads, &specs).await;
        self.rec
            .wait_for(timeout, |procs| {
                wanted.iter().all(|(id, desired, generation)| {
                    let now = procs.get(id).map(|e| (&*e.spec, &e.obs));
                    action_settled(action, now, *desired, *generation)
                })
            })
            .await;
        let removed = if action == ActionKind::Remove {
            let procs = self.rec.shared.read();
            ids.iter()
                .copied()
                .filter(|id| !procs.contains_key(id))
                .collect()
        } else {
            Vec::new()
        };
        let remaining: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !removed.contains(id))
            .collect();
        Ok(ActionResponse {
            action,
            processes: self.views(Some(&remaining), false),
            removed,
            reloads,
        })
    }
}

/// How long `reset` waits for the reconciler to publish the zeroed counters.
pub const RESET_WAIT: Duration = Duration::from_secs(2);

impl Service {
    /// `opm reset`: the restart counters of `ids` start again from zero.
    async fn reset(&self, ids: Vec<u64>) -> Result<ActionResponse, ServiceError> {
        self.rec.reset(ids.clone());
        self.rec
            .wait_for(RESET_WAIT, |procs| {
                ids.iter().all(|id| {
                    procs
                        .get(id)
                        .is_none_or(|e| e.obs.restarts() == 0 && e.obs.unstable == 0)
                })
            })
            .await;
        Ok(ActionResponse {
            action: ActionKind::Reset,
            processes: self.views(Some(&ids), false),
            removed: Vec::new(),
            reloads: Vec::new(),
        })
    }

    /// `opm signal`: sends the signal to each target's main process (the
    /// one opm started, whose pid `list` shows), or with `group` to every
    /// process of its group. A target that names one process which is not
    /// running is refused; with `all`, only the running ones are signalled.
    fn signal(
        &self,
        req: &ActionRequest,
        entries: &[Entry],
    ) -> Result<ActionResponse, ServiceError> {
        let Some(sig) = req.signal else {
            return Err(ServiceError::BadRequest(
                "signal needs `signal`: a name (SIGUSR2, USR2) or a number (12)".into(),
            ));
        };
        let mut signalled = Vec::new();
        for e in entries {
            let Some(pid) = e.obs.pid() else {
                if req.id.is_all() {
                    continue;
                }
                return Err(ServiceError::Conflict(format!(
                    "{} (id {}) is {}: no process to send {sig} to",
                    e.spec.name,
                    e.spec.id,
                    status(&e.spec, &e.obs).as_str()
                )));
            };
            let sent = if req.process_group {
                spawn::signal_group(pid, sig.0)
            } else {
                spawn::signal_pid(pid, sig.0)
            };
            match sent {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ServiceError::Conflict(format!(
                        "{} (id {}): pid {pid} has just ended; {sig} not sent",
                        e.spec.name, e.spec.id
                    )))
                }
                Err(err) => {
                    return Err(ServiceError::BadRequest(format!(
                        "cannot send {sig} to {} (pid {pid}): {err}",
                        e.spec.name
                    )))
                }
            }
            let to = if req.process_group {
                "process group"
            } else {
                "pid"
            };
            tracing::info!(id = e.spec.id, name = %e.spec.name, "{sig} sent to {to} {pid}");
            let _ = self.store.push_event(&crate::spec::Event {
                at_ms: now_ms(),
                subject: crate::spec::Subject::Process {
                    id: e.spec.id,
                    name: e.spec.name.clone(),
                },
                kind: "signal".into(),
                detail: format!("{sig} to {to} {pid}"),
            });
            signalled.push(e.spec.id);
        }
        Ok(ActionResponse {
            action: ActionKind::Signal,
            processes: self.views(Some(&signalled), false),
            removed: Vec::new(),
            reloads: Vec::new(),
        })
    }
}
