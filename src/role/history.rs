//! A server's history of its agents: each agent's total CPU, memory and
//! online processes, from the process lists its heartbeats carry, sampled
//! every `[daemon.history] agent_interval_ms` for the agent pages' charts.
//! Kept in memory only; an offline agent's samples are zero.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::history::{History, Sample};
use crate::model::{AgentView, HistoryResponse, ProcessView, Status, SubjectHistory};

pub struct AgentHistory {
    interval_ms: u64,
    samples: usize,
    /// What each agent's last heartbeat said, summed.
    latest: Mutex<HashMap<String, Sample>>,
    history: Mutex<History<String>>,
}

impl AgentHistory {
    pub fn new(interval_ms: u64, samples: usize) -> AgentHistory {
        AgentHistory {
            interval_ms,
            samples,
            latest: Mutex::new(HashMap::new()),
            history: Mutex::new(History::new(samples)),
        }
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Notes the totals of an agent's heartbeat.
    pub fn observe(&self, agent_id: &str, processes: &[ProcessView]) {
        let cpu: f32 = processes.iter().map(|p| p.cpu).sum();
        let memory: u64 = processes.iter().map(|p| p.memory).sum();
        let online = processes
            .iter()
            .filter(|p| p.status == Status::Online)
            .count();
        self.latest.lock_or_recover().insert(
            agent_id.to_string(),
            Sample::new(cpu, memory, online as u64),
        );
    }

    /// Takes one sample of every registered agent at `now_ms`.
    pub fn record(&self, now_ms: u64, agents: &[AgentView]) {
        let mut latest = self.latest.lock_or_recover();
        latest.retain(|id, _| agents.iter().any(|a| &a.id == id));
        let samples: Vec<(String, Sample)> = agents
            .iter()
            .map(|a| {
                let s = match a.status.as_str() {
                    "online" => latest.get(&a.id).copied().unwrap_or_default(),
                    _ => Sample::default(),
                };
                (a.id.clone(), s)
            })
            .collect();
        drop(latest);
        self.history.lock_or_recover().record(now_ms, samples);
    }

    /// Every agent's series, in the order of `agents`.
    pub fn report(&self, agents: &[AgentView]) -> HistoryResponse<String> {
        let history = self.history.lock_or_recover();
        HistoryResponse {
            interval_ms: self.interval_ms,
            samples: self.samples,
            subjects: agents
                .iter()
                .map(|a| SubjectHistory {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    series: history.series(&a.id).unwrap_or_default(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProcessCounts;

    fn agent(id: &str, status: &str) -> AgentView {
        AgentView {
            id: id.into(),
            name: format!("n-{id}"),
            hostname: "h".into(),
            endpoint: "http://127.0.0.1:1".into(),
            version: "0".into(),
            status: status.into(),
            last_seen_ms: 0,
            registered_ms: 0,
            processes: ProcessCounts::default(),
        }
    }

    fn process(cpu: f32, memory: u64, status: Status) -> ProcessView {
        ProcessView {
            id: 1,
            name: "p".into(),
            pid: Some(1),
            status,
            restarts: 0,
            uptime_ms: 0,
            cpu,
            memory,
            command: "x".into(),
            cwd: "/".into(),
            autorestart: true,
            desired: "running".into(),
            error: None,
            instance: None,
            instances: 1,
            restart_at_ms: None,
            exit_code: None,
        }
    }

    #[test]
    fn an_agent_sample_sums_its_heartbeat_and_an_offline_agent_is_zero() {
        let h = AgentHistory::new(1000, 10);
        h.observe(
            "ag-1",
            &[
                process(10.0, 1 << 20, Status::Online),
                process(5.0, 1 << 20, Status::Stopped),
            ],
        );
        h.record(100, &[agent("ag-1", "online")]);
        h.record(200, &[agent("ag-1", "offline")]);
        let r = h.report(&[agent("ag-1", "offline")]);
        let s = &r.subjects[0].series;
        assert_eq!(s.at_ms, vec![100, 200]);
        assert_eq!(s.cpu, vec![15.0, 0.0]);
        assert_eq!(s.memory, vec![2 << 20, 0]);
        assert_eq!(s.count, vec![1, 0]);
    }
}
