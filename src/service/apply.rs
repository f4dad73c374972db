//! Applying a process file (`opm start FILE`) or one changed definition
//! (`opm update`): each entry is resolved as a create would, compared with
//! the stored process of its name (`plan::apply_plan`), and what is new,
//! changed or pruned is written in one transaction; unchanged processes keep
//! running untouched.

use super::*;
use crate::model::{ApplyRequest, ApplyResponse};
use crate::reconcile::plan::apply_plan;

impl Service {
    pub async fn apply(&self, req: ApplyRequest) -> Result<ApplyResponse, ServiceError> {
        if req.processes.is_empty() {
            return Err(ServiceError::BadRequest(
                "nothing to apply: the list is empty".into(),
            ));
        }
        if let Some(o) = &req.origin {
            if !Path::new(o).is_absolute() {
                return Err(ServiceError::BadRequest(format!(
                    "the origin {o:?} is not an absolute path"
                )));
            }
        }
        let mut resolved = Vec::with_capacity(req.processes.len());
        let mut errors = Vec::new();
        for (i, mut def) in req.processes.into_iter().enumerate() {
            if req.origin.is_some() {
                def.origin.clone_from(&req.origin);
            }
            if def.caller_env.is_none() {
                def.caller_env.clone_from(&req.caller_env);
            }
            def.force = None;
            match self.new_spec(def) {
                Ok(n) => resolved.push(n),
                Err(e) => errors.push(format!("process {}: {e}", i + 1)),
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::BadRequest(errors.join("; ")));
        }
        let wanted: Vec<(String, ProcessDef)> = resolved
            .iter()
            .map(|n| (n.spec.name.clone(), n.spec.def.clone()))
            .collect();
        for (i, (name, _)) in wanted.iter().enumerate() {
            if wanted[..i].iter().any(|(n, _)| n == name) {
                return Err(ServiceError::Conflict(format!(
                    "the name {name:?} is given twice (name one of them)"
                )));
            }
        }
        let stored = self.store.specs()?;
        let plan = apply_plan(&stored, &wanted, req.origin.as_deref(), req.prune);
        let find = |id: u64| stored.iter().find(|s| s.id == id).cloned();
        let mut writes: Vec<Spec> = Vec::new();
        // A group's name stands for every copy (`instances`).
        let copies = |id: u64| instances::group_ids(&stored, id);
        for &(i, id) in &plan.change {
            for id in copies(id) {
                let Some(mut spec) = find(id) else { continue };
                let new = &resolved[i].spec;
                spec.def = instances::for_copy(&new.def, spec.def.instance);
                if req.restart {
                    spec.desired = new.desired;
                    if spec.desired == Desired::Running {
                        spec.generation += 1;
                    }
                }
                writes.push(spec);
            }
        }
        // An unchanged process that is stopped or errored is started again,
        // as `opm start NAME` would; a running one is left alone.
        if req.restart {
            for (i, id) in plan
                .unchanged
                .iter()
                .flat_map(|&(i, id)| copies(id).into_iter().map(move |c| (i, c)))
            {
                let Some(mut spec) = find(id) else { continue };
                if resolved[i].spec.desired != Desired::Running {
                    continue;
                }
                let obs = self
                    .entries(Some(&[id]))
                    .pop()
                    .map(|e| e.obs)
                    .unwrap_or_default();
                let before = (spec.desired, spec.generation);
                on_user_action(&mut spec, &obs, ActionKind::Start);
                if (spec.desired, spec.generation) != before {
                    writes.push(spec);
                }
            }
        }
        let mut pruned = Vec::new();
        for &id in &plan.prune {
            let Some(mut spec) = find(id) else { continue };
            spec.desired = Desired::Removed;
            pruned.push((id, spec.name.clone()));
            writes.push(spec);
        }
        let mut new: Vec<NewSpec> = plan
            .create
            .iter()
            .flat_map(|&i| instances::expand(resolved[i].clone()))
            .collect();
        // A group whose count the file changes grows or shrinks.
        for &(i, id) in plan.change.iter().chain(&plan.unchanged) {
            if let Some(s) = find(id) {
                let def = &resolved[i].spec.def;
                new.extend(instances::resize_for_apply(
                    &stored,
                    &mut writes,
                    &s.name,
                    def,
                ));
            }
        }
        let gone_copies: Vec<(u64, String)> = writes
            .iter()
            .filter(|s| s.desired == Desired::Removed && !pruned.iter().any(|(id, _)| *id == s.id))
            .map(|s| (s.id, s.name.clone()))
            .collect();
        {
            let mut batch: Vec<&Spec> = new.iter().map(|n| &n.spec).collect();
            batch.extend(writes.iter().filter(|s| s.desired != Desired::Removed));
            let replacing: Vec<u64> = writes.iter().map(|s| s.id).collect();
            super::create::log_clash(&self.home, &batch, &stored, &replacing)?;
        }
        let created = {
            let store = self.store.clone();
            let writes = writes.clone();
            blocking(move || store.apply(new, &writes))
                .await
                .map_err(|e| match e {
                    StoreError::DuplicateName(n) => ServiceError::Conflict(format!(
                        "a process named {n:?} already exists (it is being removed: try again)"
                    )),
                    other => ServiceError::Store(other),
                })?
        };
        let mut woken: Vec<u64> = created.iter().map(|s| s.id).collect();
        woken.extend(writes.iter().map(|s| s.id));
        self.rec.wake(woken);
        // Wait for every start asked for and every removal.
        let mut starts: Vec<(u64, Desired, u64)> = created
            .iter()
            .map(|s| (s.id, s.desired, s.generation))
            .collect();
        starts.extend(
            writes
                .iter()
                .filter(|s| s.desired != Desired::Removed)
                .map(|s| (s.id, s.desired, s.generation)),
        );
        let gone: Vec<u64> = pruned
            .iter()
            .chain(&gone_copies)
            .map(|(id, _)| *id)
            .collect();
        // A change without a restart is answered once the reconciler shows
        // the new definition.
        self.wait_settled(&starts, &gone, &writes, |procs| {
            writes
                .iter()
                .all(|w| procs.get(&w.id).is_none_or(|e| e.spec.def == w.def))
        })
        .await;
        let restarted: Vec<u64> = starts.iter().map(|(id, _, _)| *id).collect();
        self.settle_shells(&restarted).await;
        let ids_of = |pairs: &[(usize, u64)]| {
            pairs
                .iter()
                .flat_map(|(_, id)| copies(*id))
                .collect::<Vec<_>>()
        };
        let mut pruned_names: Vec<String> = Vec::new();
        for (_, n) in pruned {
            if !pruned_names.contains(&n) {
                pruned_names.push(n);
            }
        }
        let created_ids: Vec<u64> = created.iter().map(|s| s.id).collect();
        Ok(ApplyResponse {
            created: self.views(Some(&created_ids), false),
            changed: self.views(Some(&ids_of(&plan.change)), false),
            unchanged: self.views(Some(&ids_of(&plan.unchanged)), false),
            pruned: pruned_names,
        })
    }
}
