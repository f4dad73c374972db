//! The CPU, memory and restarts history of every process: one sample per
//! process each `[daemon.history] interval_ms`, taken from the same /proc
//! pass that answers `list`, kept in memory for charts.

use super::*;
use crate::history::Sample;
use crate::model::{HistoryResponse, SubjectHistory};
use crate::sync::LockExt;

impl Service {
    /// Takes one sample of every process (one scan of /proc for all,
    /// unless a read just had one taken).
    pub fn record_history(&self) {
        if Service::usage_stale(&self.usage.lock_or_recover()) {
            self.sample_usage();
        }
        let views = self.views(None, false);
        let now = now_ms();
        self.history.lock_or_recover().record(
            now,
            views
                .iter()
                .map(|v| (v.id, Sample::new(v.cpu, v.memory, u64::from(v.restarts)))),
        );
        self.ticks.send_replace(now);
    }

    /// The history of one process, or of all.
    pub fn history(&self, target: Option<&Target>) -> Result<HistoryResponse<u64>, ServiceError> {
        let ids = match target {
            Some(t) => vec![self.resolve_one(t)?],
            None => {
                let mut ids: Vec<u64> = self.rec.shared.read().keys().copied().collect();
                ids.sort_unstable();
                ids
            }
        };
        let names: HashMap<u64, String> = {
            let procs = self.rec.shared.read();
            ids.iter()
                .filter_map(|id| Some((*id, procs.get(id)?.spec.name.clone())))
                .collect()
        };
        let history = self.history.lock_or_recover();
        let subjects = ids
            .iter()
            .filter_map(|id| {
                Some(SubjectHistory {
                    id: *id,
                    name: names.get(id)?.clone(),
                    // A process created since the last tick has no samples yet.
                    series: history.series(id).unwrap_or_default(),
                })
            })
            .collect();
        Ok(HistoryResponse {
            interval_ms: self.config.daemon.history.interval_ms,
            samples: self.config.daemon.history.samples,
            subjects,
        })
    }
}
