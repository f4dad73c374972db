//! Reading what the daemon knows: the list, one process's details, its
//! environment, the dump that `opm save` writes, and the daemon's metrics.
//! CPU and memory come from the last pass over /proc (one for all
//! processes, taken off the request path), so a read costs the same
//! whatever the machine runs.

use super::*;
use crate::sync::LockExt;

impl Service {
    /// One pass over /proc for every running process group: what reads show
    /// until the next. Taken by the daemon's sampling task when a read finds
    /// the last one older than `USAGE_TTL` (`usage_wanted`), and at every
    /// history tick; never on a request's path.
    pub fn sample_usage(&self) {
        let mut sampler = self.sampler.lock_or_recover();
        let pgids: Vec<u32> = self
            .rec
            .shared
            .read()
            .values()
            .filter_map(|e| e.obs.pid())
            .collect();
        let values = sampler.sample_groups(&pgids);
        *self.usage.lock_or_recover() = Arc::new(UsageSnapshot {
            at: Some(Instant::now()),
            values,
        });
    }

    /// Whether the last pass is older than `USAGE_TTL` (or none was taken).
    pub(super) fn usage_stale(usage: &UsageSnapshot) -> bool {
        usage.at.is_none_or(|t| t.elapsed() >= USAGE_TTL)
    }

    /// The last pass over /proc. `refresh`: a read that shows CPU and
    /// memory (`list`, `info`), which asks for a new pass when this one is
    /// stale, without waiting for it; answers to mutations pass `false`.
    fn usage(&self, refresh: bool) -> Arc<UsageSnapshot> {
        let usage = self.usage.lock_or_recover().clone();
        if refresh && Service::usage_stale(&usage) {
            self.usage_wanted.notify_one();
        }
        usage
    }

    /// Runs started since the last pass are not in it: until the next
    /// (asked for now), they show their leader's own figures, read from its
    /// /proc/PID/stat alone (CPU averaged since it started), not zeros.
    fn fill_new(&self, views: &mut [ProcessView], usage: &UsageSnapshot) {
        let new: Vec<u32> = views
            .iter()
            .filter_map(|v| v.pid)
            .filter(|p| !usage.values.contains_key(p))
            .collect();
        if new.is_empty() {
            return;
        }
        self.usage_wanted.notify_one();
        let first = proc::leader_usage(&new);
        for v in views.iter_mut() {
            if let Some(u) = v.pid.and_then(|p| first.get(&p)) {
                v.cpu = round_cpu(u.cpu_percent);
                v.memory = u.memory_bytes;
            }
        }
    }

    pub(super) fn view(entry: &Entry, usage: &HashMap<u32, proc::Usage>, now: u64) -> ProcessView {
        let spec = &entry.spec;
        let obs = &entry.obs;
        let pid = obs.pid();
        let uptime_ms = match obs.phase {
            Phase::Running { since_ms, .. } => now.saturating_sub(since_ms),
            _ => 0,
        };
        let u = pid.and_then(|p| usage.get(&p)).copied().unwrap_or_default();
        ProcessView {
            id: spec.id,
            name: spec.name.clone(),
            pid,
            status: status(spec, obs),
            restarts: obs.restarts(),
            uptime_ms,
            cpu: round_cpu(u.cpu_percent),
            memory: u.memory_bytes,
            command: spec.command(),
            cwd: spec.cwd().to_string(),
            autorestart: spec.def.autorestart(),
            desired: spec.desired.as_str().to_string(),
            error: obs.last_error.clone(),
            instance: spec.def.instance,
            instances: 1,
            restart_at_ms: restart_due_ms(spec, obs),
            exit_code: match status(spec, obs) {
                Status::Exited => obs.last_exit.as_ref().and_then(|e| e.code),
                _ => None,
            },
        }
    }

    /// The rows of `ids` (all when `None`), built under the readers' lock
    /// from the published entries, without copying them.
    pub(super) fn views(&self, ids: Option<&[u64]>, refresh: bool) -> Vec<ProcessView> {
        let usage = self.usage(refresh);
        let now = now_ms();
        let mut views: Vec<ProcessView> = {
            let procs = self.rec.shared.read();
            let view = |e: &Entry| Service::view(e, &usage.values, now);
            match ids {
                None => procs.values().map(view).collect(),
                Some(ids) => ids
                    .iter()
                    .filter_map(|id| procs.get(id))
                    .map(view)
                    .collect(),
            }
        };
        if refresh {
            self.fill_new(&mut views, &usage);
        }
        if views.iter().any(|v| v.instance.is_some()) {
            let sizes = self.group_sizes();
            for v in views.iter_mut().filter(|v| v.instance.is_some()) {
                v.instances = sizes.get(&v.name).copied().unwrap_or(1);
            }
        }
        views
    }

    pub fn list(&self) -> Vec<ProcessView> {
        self.views(None, true)
    }

    pub fn info(&self, target: &Target) -> Result<ProcessInfo, ServiceError> {
        let id = self.resolve_one(target)?;
        let entry = self.entries(Some(&[id])).pop().ok_or_else(|| {
            ServiceError::NotFound(format!("no process with id or name {target}"))
        })?;
        let usage = self.usage(true);
        let mut view = Service::view(&entry, &usage.values, now_ms());
        self.fill_new(std::slice::from_mut(&mut view), &usage);
        let spec = &entry.spec;
        let group = match spec.def.instance {
            Some(_) => self.group_of(id)?,
            None => Vec::new(),
        };
        if view.instance.is_some() {
            view.instances = group.len() as u32;
        }
        let obs = &entry.obs;
        let events = self
            .store
            .events(Some(id), 20)?
            .into_iter()
            .map(|e| EventView {
                at_ms: e.at_ms,
                id: e.subject.process_id().unwrap_or(id),
                name: e.subject.name().to_string(),
                kind: e.kind,
                detail: e.detail,
            })
            .collect();
        let logs = self.home.process_logs(&spec.name, id, &spec.def);
        Ok(ProcessInfo {
            view,
            created_ms: spec.created_ms,
            max_restarts: spec.def.max_restarts(),
            restart_delay_ms: spec.def.restart_delay_ms(),
            min_uptime_ms: spec.def.min_uptime_ms(),
            kill_timeout_ms: spec.def.kill_timeout_ms(),
            max_memory: spec.def.max_memory(),
            watch: (!spec.def.watch.is_empty()).then(|| spec.def.watch.join(", ")),
            env_keys: spec.def.env.iter().map(|(k, _)| k.clone()).collect(),
            out_log: logs.0.display().to_string(),
            err_log: logs.1.display().to_string(),
            last_exit: obs.last_exit.as_ref().map(|e| ExitView {
                code: e.code,
                signal: e.signal,
                at_ms: e.at_ms,
                description: e.describe(),
            }),
            errored_reason: match &obs.phase {
                Phase::Errored { reason, .. } => Some(reason.clone()),
                _ => None,
            },
            cron_next_ms: spec
                .def
                .cron_restart
                .as_deref()
                .and_then(|c| crate::reconcile::plan::next_cron_ms(c, now_ms())),
            readiness: readiness_text(spec, obs),
            notify_status: obs.notify_status.clone(),
            events,
            definition: spec.definition(),
            group,
        })
    }

    pub fn env(&self, target: &Target) -> Result<EnvResponse, ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        let mut env: BTreeMap<String, String> = spec.def.env.iter().cloned().collect();
        env.insert("OPM_ID".into(), id.to_string());
        env.insert("OPM_NAME".into(), spec.name.clone());
        env.extend(spec.def.instance_env(|k| std::env::var(k).ok()));
        let daemon: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| !crate::SECRET_ENV_VARS.contains(&k.as_str()))
            .collect();
        let mut full = spec
            .def
            .caller_env
            .as_deref()
            .cloned()
            .unwrap_or_else(|| daemon.clone());
        full.retain(|k, _| !crate::SECRET_ENV_VARS.contains(&k.as_str()));
        full.extend(env.clone());
        let differs = full
            .iter()
            .filter(|(k, v)| daemon.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(EnvResponse {
            id,
            name: spec.name,
            env,
            full,
            differs,
        })
    }

    pub fn dump(&self) -> Result<Dump, ServiceError> {
        let live: Vec<Spec> = self
            .store
            .specs()?
            .into_iter()
            .filter(|s| s.desired != Desired::Removed)
            .collect();
        // A group is written once, with the number of copies it has now
        // (its `max` kept while that is still the count).
        let mut processes: Vec<ProcessDef> = Vec::new();
        for s in &live {
            if s.def.instance.is_some() {
                if processes.iter().any(|p| p.name.as_deref() == Some(&s.name)) {
                    continue;
                }
                let count = live
                    .iter()
                    .filter(|o| o.name == s.name && o.def.instance.is_some())
                    .count() as u32;
                let mut def = s.definition();
                if def.instances.is_none_or(|i| i.here() != count) {
                    def.instances = Some(crate::definition::Instances(i64::from(count)));
                }
                processes.push(def);
            } else {
                processes.push(s.definition());
            }
        }
        Ok(Dump { processes })
    }

    pub fn metrics(&self) -> Metrics {
        let processes = self.list();
        let pid = std::process::id();
        let stat = proc::stat(pid);
        let uptime_ms = self.started.elapsed().as_millis() as u64;
        let cpu_avg = match &stat {
            Some(s) if uptime_ms > 0 => {
                let cpu_ms = (s.utime + s.stime) * 1000 / proc::clock_ticks().max(1);
                ((cpu_ms as f64 / uptime_ms as f64) * 1000.0).round() as f32 / 10.0
            }
            _ => 0.0,
        };
        Metrics {
            daemon: DaemonMetrics {
                pid,
                uptime_ms,
                cpu_avg,
                memory: stat.map_or(0, |s| s.rss_pages * proc::page_size()),
                processes: processes.len(),
                online: processes
                    .iter()
                    .filter(|p| p.status == Status::Online)
                    .count(),
                restarts: processes.iter().map(|p| u64::from(p.restarts)).sum(),
            },
            processes,
        }
    }
}

/// The live run's readiness as `opm info` shows it, when it is asked for.
fn readiness_text(spec: &Spec, obs: &crate::spec::Observed) -> Option<String> {
    use crate::spec::Readiness;
    if !spec.def.awaits_readiness() {
        return None;
    }
    let sign = match spec.def.ready_port {
        Some(port) if !spec.def.wait_ready() => format!("listening on port {port}"),
        Some(port) => format!("READY=1 on NOTIFY_SOCKET or listening on port {port}"),
        None => "READY=1 on NOTIFY_SOCKET".to_string(),
    };
    let timeout = crate::definition::Millis(spec.def.listen_timeout_ms());
    Some(match (&obs.phase, &obs.readiness) {
        (Phase::Running { .. }, Readiness::Waiting { .. }) => {
            format!("waiting for {sign} (listen_timeout {timeout})")
        }
        (Phase::Running { .. }, Readiness::TimedOut { at_ms }) => format!(
            "not ready within {timeout} (listen_timeout, at {}): still running, still waiting for {sign}",
            crate::spec::utc_timestamp(*at_ms)
        ),
        (Phase::Running { since_ms, .. }, Readiness::Ready { at_ms }) => format!(
            "ready ({sign}) {} ms after its start",
            at_ms.saturating_sub(*since_ms)
        ),
        _ => format!("asked: {sign}, within {timeout}"),
    })
}

/// Percent of one core, to one decimal.
fn round_cpu(cpu: f32) -> f32 {
    (cpu * 10.0).round() / 10.0
}
