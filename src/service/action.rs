//! Actions on existing processes (start, stop, restart, reload, remove, flush): the desired state changes in the store, the reconciler carries them out, and the answer waits for the outcome.

use super::*;

impl Service {
    /// Carries out one action on its targets and waits for the outcome.
    pub async fn action(&self, req: ActionRequest) -> Result<ActionResponse, ServiceError> {
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
            });
        }
        let mut specs = Vec::with_capacity(entries.len());
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
        self.rec
            .wait_for(timeout, |procs| {
                wanted.iter().all(|(id, desired, generation)| {
                    let now = procs.get(id).map(|e| (&e.spec, &e.obs));
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
        })
    }
}
