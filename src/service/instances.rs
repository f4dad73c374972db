//! Instance groups: N copies of one definition under one name (`--instances
//! N`, `instances = N`), each its own process record with its own id, pid
//! and logs, and its index (`def.instance`, 0…N-1) given to it as
//! `OPM_INSTANCE` and `NODE_APP_INSTANCE`. Here: the copies of a new group,
//! the writes that grow or shrink a group (`opm scale`, a process file
//! applied again), the group of a name, and the group's rolling reload (one
//! copy at a time, the next only when the replaced one serves again).
//!
//! A group is the set of live records that share a name and carry an
//! index; the `names` index points at one of them (see `store`).

use super::*;
use crate::definition::{Instances, MAX_INSTANCES};
use crate::model::{ScaleRequest, ScaleResponse};

/// The longest a rolling reload waits for one replaced copy to be `online`
/// again (and listening on the ports its previous run listened on) before
/// it stops and reports.
pub const RELOAD_STEP_WAIT: Duration = Duration::from_secs(30);

/// How often a rolling reload looks whether a replaced copy listens again
/// (the kernel tells no one when a socket starts listening).
const LISTEN_POLL: Duration = Duration::from_millis(20);

/// What a request may not say about instances (checked before anything is
/// stored): the index is opm's, and `increment_var` needs a first value.
pub(super) fn check_request(def: &ProcessDef) -> Result<(), ServiceError> {
    if def.instance.is_some() {
        return Err(ServiceError::BadRequest(
            "instance is set by opm for each copy: give instances = N instead".into(),
        ));
    }
    def.increment_base(|k| std::env::var(k).ok())
        .map(|_| ())
        .map_err(ServiceError::BadRequest)
}

/// The copies of a new process: itself when it asks for no instances, else
/// one record per index, all with its name.
pub(super) fn expand(n: NewSpec) -> Vec<NewSpec> {
    let Some(instances) = n.spec.def.instances else {
        return vec![n];
    };
    (0..instances.here())
        .map(|k| {
            let mut copy = n.clone();
            copy.spec.def.instance = Some(k);
            copy
        })
        .collect()
}

/// The live records of `name` that form its group (or the one plain
/// process of that name), lowest index first.
fn members(stored: &[Spec], name: &str) -> Vec<Spec> {
    let mut out: Vec<Spec> = stored
        .iter()
        .filter(|s| s.name == name && s.desired != Desired::Removed)
        .cloned()
        .collect();
    out.sort_by_key(|s| (s.def.instance.unwrap_or(0), s.id));
    out
}

/// The writes that bring a group (or one plain process, which becomes copy
/// 0) to `count` copies: copies to create (lowest free indexes, with the
/// definition of the lowest kept copy), and the records to write (every
/// kept copy with its new `instances`, the highest indexes marked removed).
pub(super) fn resize(
    members: &[Spec],
    count: u32,
    instances: Instances,
) -> (Vec<NewSpec>, Vec<Spec>) {
    let keep = (count as usize).min(members.len());
    let mut changed = Vec::new();
    for s in &members[..keep] {
        let mut s = s.clone();
        s.def.instance = Some(s.def.instance.unwrap_or(0));
        s.def.instances = Some(instances);
        changed.push(s);
    }
    for s in &members[keep..] {
        let mut s = s.clone();
        s.desired = Desired::Removed;
        changed.push(s);
    }
    let mut new = Vec::new();
    if let Some(template) = changed.first().cloned() {
        let running = members[..keep]
            .iter()
            .any(|s| s.desired == Desired::Running);
        let used: Vec<u32> = changed[..keep]
            .iter()
            .filter_map(|s| s.def.instance)
            .collect();
        let free = (0u32..).filter(|k| !used.contains(k));
        for k in free.take(count as usize - keep) {
            let mut def = template.def.clone();
            def.instance = Some(k);
            new.push(NewSpec {
                spec: Spec {
                    id: 0,
                    name: template.name.clone(),
                    desired: if running {
                        Desired::Running
                    } else {
                        Desired::Stopped
                    },
                    generation: u64::from(running),
                    created_ms: now_ms(),
                    def,
                },
                explicit_name: true,
                join: true,
            });
        }
    }
    (new, changed)
}

/// The writes of a process file applied again to the group of `name`
/// (`writes` holds what the apply changed already): the copies brought to
/// the count the file asks for. Nothing when the count is right.
pub(super) fn resize_for_apply(
    stored: &[Spec],
    writes: &mut Vec<Spec>,
    name: &str,
    wanted: &ProcessDef,
) -> Vec<NewSpec> {
    let now: Vec<Spec> = members(stored, name)
        .into_iter()
        .map(|s| writes.iter().find(|w| w.id == s.id).cloned().unwrap_or(s))
        .collect();
    // A group whose file entry no longer asks for instances keeps one copy.
    let instances = match wanted.instances {
        Some(i) => i,
        None if now.iter().any(|s| s.def.instance.is_some()) => Instances(1),
        None => return Vec::new(),
    };
    let count = instances.here();
    if now.len() == count as usize && now.iter().all(|s| s.def.instance.is_some()) {
        return Vec::new();
    }
    let (new, changed) = resize(&now, count, instances);
    for c in changed {
        match writes.iter_mut().find(|w| w.id == c.id) {
            Some(w) => *w = c,
            None => writes.push(c),
        }
    }
    new
}

/// The ids of `name`'s live records when `id` is a copy of a group (one
/// copy per entry), else `id` alone.
pub(super) fn group_ids(stored: &[Spec], id: u64) -> Vec<u64> {
    match stored.iter().find(|s| s.id == id) {
        Some(s) if s.def.instance.is_some() => members(stored, &s.name)
            .iter()
            .filter(|m| m.def.instance.is_some())
            .map(|m| m.id)
            .collect(),
        _ => vec![id],
    }
}

/// The definition `def` for one stored copy (index `instance`): its own
/// index kept, and a group stays a group (of one when `def` asks for no
/// instances; `resize_for_apply` brings the count).
pub(super) fn for_copy(def: &ProcessDef, instance: Option<u32>) -> ProcessDef {
    ProcessDef {
        instance,
        instances: def.instances.or(instance.map(|_| Instances(1))),
        ..def.clone()
    }
}

impl Service {
    /// Every copy of the group `id` belongs to, or `id` alone.
    pub(super) fn group_of(&self, id: u64) -> Result<Vec<u64>, ServiceError> {
        Ok(group_ids(&self.store.specs()?, id))
    }

    /// The id of copy `k` of the group `name` (`api:2`).
    pub(super) fn copy_of(&self, name: &str, k: &str) -> Result<Option<u64>, ServiceError> {
        let Ok(k) = k.parse::<u32>() else {
            return Ok(None);
        };
        Ok(self
            .store
            .specs()?
            .into_iter()
            .find(|s| s.name == name && s.def.instance == Some(k) && s.desired != Desired::Removed)
            .map(|s| s.id))
    }

    /// The live copies per group name, for the `instances` of the views.
    pub(super) fn group_sizes(&self) -> HashMap<String, u32> {
        let mut sizes = HashMap::new();
        for e in self.rec.shared.read().values() {
            if e.spec.def.instance.is_some() && e.spec.desired != Desired::Removed {
                *sizes.entry(e.spec.name.clone()).or_insert(0) += 1;
            }
        }
        sizes
    }

    /// `opm scale NAME N`: adds copies (lowest free indexes) or stops and
    /// removes the highest ones, in one transaction, and waits for them.
    pub async fn scale(&self, req: ScaleRequest) -> Result<ScaleResponse, ServiceError> {
        if req.instances == 0 || req.instances > MAX_INSTANCES {
            return Err(ServiceError::BadRequest(format!(
                "instances must be 1 to {MAX_INSTANCES} (`opm remove` removes the whole group)"
            )));
        }
        let id = self.resolve_one(&req.id)?;
        let stored = self.store.specs()?;
        let Some(name) = stored.iter().find(|s| s.id == id).map(|s| s.name.clone()) else {
            return Err(ServiceError::NotFound(format!(
                "no process with id or name {}",
                req.id
            )));
        };
        let members = members(&stored, &name);
        let before: Vec<u64> = members.iter().map(|s| s.id).collect();
        let (new, changed) = resize(&members, req.instances, Instances(i64::from(req.instances)));
        let removed: Vec<u64> = changed
            .iter()
            .filter(|s| s.desired == Desired::Removed)
            .map(|s| s.id)
            .collect();
        let created = {
            let store = self.store.clone();
            let changed = changed.clone();
            blocking(move || store.apply(new, &changed))
                .await
                .map_err(|e| match e {
                    StoreError::NoSuchGroup(n) => ServiceError::Conflict(format!(
                        "the group {n:?} changed while it was scaled: try again"
                    )),
                    other => ServiceError::Store(other),
                })?
        };
        let added: Vec<u64> = created.iter().map(|s| s.id).collect();
        let mut woken = added.clone();
        woken.extend(changed.iter().map(|s| s.id));
        self.rec.wake(woken);
        let starts: Vec<(u64, Desired, u64)> = created
            .iter()
            .map(|s| (s.id, s.desired, s.generation))
            .collect();
        self.wait_settled(&starts, &removed, &changed, |_| true)
            .await;
        self.settle_shells(&added).await;
        let mut ids: Vec<u64> = before
            .into_iter()
            .filter(|id| !removed.contains(id))
            .collect();
        ids.extend(&added);
        Ok(ScaleResponse {
            name,
            instances: req.instances,
            processes: self.views(Some(&ids), false),
            added,
            removed,
        })
    }

    /// `reload` of several processes of which some are copies of a group:
    /// one at a time, each replaced copy `online` again and listening on
    /// the TCP ports its previous run listened on before the next is
    /// touched, so the others keep serving. `None` when the target is one
    /// process (or no copy of a group): then a reload is a restart.
    pub(super) async fn rolling_reload(
        &self,
        req: &ActionRequest,
    ) -> Result<Option<ActionResponse>, ServiceError> {
        let ids = self.resolve(std::slice::from_ref(&req.id))?;
        let grouped = self
            .entries(Some(&ids))
            .iter()
            .any(|e| e.spec.def.instance.is_some());
        if ids.len() < 2 || !grouped {
            return Ok(None);
        }
        let mut reloads = Vec::with_capacity(ids.len());
        for (step, &id) in ids.iter().enumerate() {
            let Some(entry) = self.entries(Some(&[id])).pop() else {
                continue;
            };
            let ports = entry
                .obs
                .pid()
                .map(proc::listening_ports)
                .unwrap_or_default();
            let one = ActionRequest {
                id: Target::Id(id),
                action: ActionKind::Reload,
                caller_env: req.caller_env.clone(),
                signal: None,
                process_group: false,
            };
            let answer = self.act(one).await?;
            let failed = answer
                .reloads
                .iter()
                .find(|r| r.outcome == "failed")
                .map(|r| r.detail.clone());
            reloads.extend(answer.reloads);
            let step_result = match failed {
                Some(why) => Err(why),
                None => self.serving_again(id, &ports).await,
            };
            if let Err(why) = step_result {
                let name = &entry.spec.name;
                let copy = entry
                    .spec
                    .def
                    .instance
                    .map_or(String::new(), |k| format!("instance {k}, "));
                let left = ids.len() - step - 1;
                return Err(ServiceError::Conflict(format!(
                    "reload of {name} stopped at {copy}id {id}: {why}; {left} of {} not reloaded yet (the others kept running)",
                    ids.len()
                )));
            }
        }
        Ok(Some(ActionResponse {
            action: ActionKind::Reload,
            processes: self.views(Some(&ids), false),
            removed: Vec::new(),
            reloads,
        }))
    }

    /// Waits until process `id` is `online` and its group listens on
    /// `ports`, for at most `RELOAD_STEP_WAIT`; else says what it saw.
    async fn serving_again(
        &self,
        id: u64,
        ports: &std::collections::BTreeSet<u16>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + RELOAD_STEP_WAIT;
        let online = |procs: &BTreeMap<u64, Entry>| {
            procs
                .get(&id)
                .is_some_and(|e| status(&e.spec, &e.obs) == Status::Online)
        };
        if !self.rec.wait_for(RELOAD_STEP_WAIT, online).await {
            let now = self
                .entries(Some(&[id]))
                .pop()
                .map_or("gone".to_string(), |e| {
                    status(&e.spec, &e.obs).as_str().to_string()
                });
            return Err(format!(
                "not online after {}s (status {now})",
                RELOAD_STEP_WAIT.as_secs()
            ));
        }
        if ports.is_empty() {
            return Ok(());
        }
        loop {
            let pid = self.entries(Some(&[id])).pop().and_then(|e| {
                (status(&e.spec, &e.obs) == Status::Online)
                    .then(|| e.obs.pid())
                    .flatten()
            });
            let Some(pid) = pid else {
                return Err("it stopped being online before it listened again".into());
            };
            let listening = proc::listening_ports(pid);
            if ports.is_subset(&listening) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let missing: Vec<String> = ports
                    .difference(&listening)
                    .map(|p| p.to_string())
                    .collect();
                return Err(format!(
                    "online but not listening on port {} after {}s",
                    missing.join(", "),
                    RELOAD_STEP_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(LISTEN_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(id: u64, k: Option<u32>) -> Spec {
        Spec {
            id,
            name: "api".into(),
            desired: Desired::Running,
            generation: 1,
            created_ms: 0,
            def: ProcessDef {
                script: "sleep 100".into(),
                instances: k.map(|_| Instances(3)),
                instance: k,
                ..ProcessDef::default()
            },
        }
    }

    #[test]
    fn a_new_group_is_one_record_per_index() {
        let n = NewSpec {
            spec: Spec {
                def: ProcessDef {
                    instances: Some(Instances(3)),
                    ..copy(0, None).def
                },
                ..copy(0, None)
            },
            explicit_name: true,
            join: false,
        };
        let copies = expand(n);
        let idx: Vec<Option<u32>> = copies.iter().map(|c| c.spec.def.instance).collect();
        assert_eq!(idx, vec![Some(0), Some(1), Some(2)]);
        assert!(copies.iter().all(|c| c.spec.name == "api" && !c.join));
    }

    #[test]
    fn shrinking_removes_the_highest_indexes_and_keeps_the_rest() {
        let members = vec![copy(7, Some(0)), copy(8, Some(1)), copy(9, Some(2))];
        let (new, changed) = resize(&members, 1, Instances(1));
        assert!(new.is_empty());
        let removed: Vec<u64> = changed
            .iter()
            .filter(|s| s.desired == Desired::Removed)
            .map(|s| s.id)
            .collect();
        assert_eq!(removed, vec![8, 9]);
        assert_eq!(changed[0].def.instances, Some(Instances(1)));
        assert_eq!(changed[0].generation, 1, "a kept copy is not restarted");
    }

    #[test]
    fn growing_fills_the_lowest_free_indexes_and_joins_the_group() {
        let members = vec![copy(7, Some(0)), copy(9, Some(2))];
        let (new, _) = resize(&members, 4, Instances(4));
        let idx: Vec<Option<u32>> = new.iter().map(|c| c.spec.def.instance).collect();
        assert_eq!(idx, vec![Some(1), Some(3)]);
        assert!(new
            .iter()
            .all(|c| c.join && c.spec.desired == Desired::Running));
    }

    #[test]
    fn a_plain_process_scaled_becomes_copy_zero() {
        let (new, changed) = resize(&[copy(3, None)], 2, Instances(2));
        assert_eq!(changed[0].def.instance, Some(0));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].spec.def.instance, Some(1));
    }

    #[test]
    fn a_name_of_a_group_means_every_copy_and_a_plain_name_itself() {
        let mut other = copy(5, None);
        other.name = "web".into();
        let stored = vec![copy(7, Some(0)), copy(8, Some(1)), other];
        assert_eq!(group_ids(&stored, 8), vec![7, 8]);
        assert_eq!(group_ids(&stored, 5), vec![5]);
    }
}
