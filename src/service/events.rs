//! The events log as a timeline: filtered by process, agent and kind, read
//! newest-first from the store and followed live (`Store::subscribe_events`).

use super::*;
use crate::model::TimelineEvent;
use crate::spec::{Event, Subject};

/// `GET /daemon/events` answers at most this many events.
pub const MAX_EVENTS: usize = 10_000;
/// ... and this many when not told.
pub const DEFAULT_EVENTS: usize = 100;

/// Which events to show; the filters combine (all must hold).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// A process by id or by the name it had then.
    pub process: Option<String>,
    /// An agent by any of these names (its id and its name).
    pub agent: Vec<String>,
    /// Any of these kinds.
    pub kinds: Vec<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(p) = &self.process {
            match &e.subject {
                Subject::Process { id, name } if *p == id.to_string() || p == name => {}
                _ => return false,
            }
        }
        if !self.agent.is_empty() {
            match &e.subject {
                Subject::Agent(name) if self.agent.contains(name) => {}
                _ => return false,
            }
        }
        self.kinds.is_empty() || self.kinds.contains(&e.kind)
    }
}

impl Service {
    /// The newest `limit` events that `filter` keeps, oldest first.
    pub fn events(
        &self,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<TimelineEvent>, ServiceError> {
        if limit == 0 || limit > MAX_EVENTS {
            return Err(ServiceError::BadRequest(format!(
                "limit must be between 1 and {MAX_EVENTS}, not {limit}"
            )));
        }
        Ok(self
            .store
            .events_where(limit, |e| filter.matches(e))?
            .iter()
            .map(TimelineEvent::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(subject: Subject, kind: &str) -> Event {
        Event {
            at_ms: 1,
            subject,
            kind: kind.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn filters_combine_and_match_ids_names_and_kinds() {
        let api = ev(
            Subject::Process {
                id: 3,
                name: "api".into(),
            },
            "exited",
        );
        let a1 = ev(Subject::Agent("a1".into()), "agent_offline");
        let daemon = ev(Subject::Daemon, "recovered");
        let all = EventFilter::default();
        assert!(all.matches(&api) && all.matches(&a1) && all.matches(&daemon));
        for p in ["3", "api"] {
            let f = EventFilter {
                process: Some(p.into()),
                ..EventFilter::default()
            };
            assert!(f.matches(&api) && !f.matches(&a1) && !f.matches(&daemon));
        }
        let agent = EventFilter {
            agent: vec!["ag-1".into(), "a1".into()],
            ..EventFilter::default()
        };
        assert!(agent.matches(&a1) && !agent.matches(&api));
        let kind = EventFilter {
            process: Some("api".into()),
            kinds: vec!["restarted".into()],
            ..EventFilter::default()
        };
        assert!(!kind.matches(&api), "both must hold");
    }
}
