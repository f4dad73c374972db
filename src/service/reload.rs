//! Reload's answers: waiting for each process's handover (`reconcile::handover`:
//! the new run started beside the old, ready before the old is stopped) or
//! its fallback to a restart, and saying which happened. `reload_one` is
//! the one-process reload a rolling reload of a group calls per member.

use super::*;
use crate::model::ReloadReport;
use crate::reconcile::handover::ReloadOutcome;

/// Added to the longest `listen_timeout` when a reload waits for its answer.
pub const RELOAD_WAIT_SLACK: Duration = Duration::from_secs(5);

impl Service {
    /// Reloads one process and waits until it is over: its new run ready and
    /// live (or restarted, when no handover is possible, or failed with the
    /// old run still serving).
    pub async fn reload_one(
        &self,
        id: u64,
        caller_env: Option<crate::definition::CallerEnv>,
    ) -> Result<ReloadReport, ServiceError> {
        let mut r = self
            .action(ActionRequest {
                id: Target::Id(id),
                action: ActionKind::Reload,
                caller_env,
                signal: None,
                process_group: false,
            })
            .await?;
        r.reloads.pop().ok_or_else(|| {
            ServiceError::NotFound(format!("process {id} was removed during its reload"))
        })
    }

    /// Waits for the answers of the reloads asked, bounded by the longest
    /// `listen_timeout` of `specs`, and reports each.
    pub(super) async fn await_reloads(
        &self,
        asked: Vec<(u64, tokio::sync::oneshot::Receiver<ReloadOutcome>)>,
        specs: &[Spec],
    ) -> Vec<ReloadReport> {
        let longest = specs
            .iter()
            .map(|s| s.def.listen_timeout_ms())
            .max()
            .unwrap_or(0);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(longest) + RELOAD_WAIT_SLACK;
        let mut reports = Vec::with_capacity(asked.len());
        for (id, answer) in asked {
            let name = specs
                .iter()
                .find(|s| s.id == id)
                .map_or_else(String::new, |s| s.name.clone());
            let old_pid = None;
            let report = |outcome: &str, detail: String, old_pid, new_pid| ReloadReport {
                id,
                name: name.clone(),
                outcome: outcome.to_string(),
                detail,
                old_pid,
                new_pid,
            };
            reports.push(match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(ReloadOutcome::Replaced { old_pid, new_pid })) => report(
                    "handover",
                    "the new run was ready before the old one was stopped".into(),
                    old_pid,
                    Some(new_pid),
                ),
                Ok(Ok(ReloadOutcome::Failed { reason })) => report("failed", reason, old_pid, None),
                Ok(Ok(ReloadOutcome::Restarted { reason })) => {
                    report("restart", reason, old_pid, None)
                }
                // The request was dropped: the process was removed, or
                // a later request took its place.
                Ok(Err(_)) => report(
                    "restart",
                    "a later request replaced this reload".into(),
                    old_pid,
                    None,
                ),
                Err(_) => report(
                    "failed",
                    "still under way when the wait ended; see `opm info` and `opm events`".into(),
                    old_pid,
                    None,
                ),
            });
        }
        reports
    }
}
