//! The health report: the daemon's processes, API and store, with the role
//! system's part handed in.

use super::*;
use crate::sync::LockExt;

impl Service {
    /// The health report; `role` is the role system's part of it.
    pub fn health(&self, role: &RoleReport) -> Health {
        let views = {
            let procs = self.rec.shared.read();
            procs
                .values()
                .map(|e| status(&e.spec, &e.obs))
                .collect::<Vec<_>>()
        };
        let count = |s: Status| views.iter().filter(|v| **v == s).count();
        let api = self.api.lock_or_recover().clone();
        let pid = std::process::id();
        let (agents_online, agents_offline) = role.agents.unzip();
        // An agent's listener serves with the agent's own token, not the config's.
        let own_tokens = api.address.is_some() && role.server.is_none();
        let token_file =
            (own_tokens && !api.tokenless).then(|| self.home.config().display().to_string());
        let warnings = (own_tokens && api.tokenless)
            .then(|| self.config.tokenless_warning())
            .flatten()
            .into_iter()
            .collect();
        let api_url = api.address.as_ref().map(|a| {
            let scheme = if api.tls_fingerprint.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{a}")
        });
        Health {
            api_url,
            tls_fingerprint: api.tls_fingerprint,
            token_file,
            warnings,
            agents_online,
            agents_offline,
            server: role.server.clone(),
            connected: role.server.as_ref().map(|_| role.connected),
            role: role.role.clone(),
            pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            processes: views.len(),
            online: count(Status::Online),
            stopped: count(Status::Stopped),
            errored: count(Status::Errored),
            api: api.address,
            api_error: api.error,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            home: self.home.root.display().to_string(),
            schema_version: self.store.schema_version(),
            memory: proc::stat(pid).map_or(0, |s| s.rss_pages * proc::page_size()),
            recovered: self.store.recovery().map(|r| crate::model::Recovered {
                at_ms: r.at_ms,
                reason: r.reason.clone(),
                from: r.snapshot.display().to_string(),
                snapshot_written_ms: r.snapshot_written_ms,
                damaged_copy: r.damaged_copy.as_ref().map(|p| p.display().to_string()),
                processes: r.processes,
            }),
        }
    }
}
