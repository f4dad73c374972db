//! `opm events [NAME] [--agent A] [--kind K] [--lines N] [--follow]`: the
//! events timeline (`GET /daemon/events`) as a table, and with `--follow`
//! every new event as it happens (`GET /daemon/events/stream`).

use std::io::Write;

use clap::Args;

use super::daemon::target;
use super::format::{print_json, timestamp};
use super::{CliError, Format, Remote};
use crate::client::SseReader;
use crate::model::TimelineEvent;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this process's events (id or name)
    #[arg(value_name = "ID|NAME")]
    pub target: Option<String>,
    /// Only this agent's events (on a server: online, offline, removed)
    #[arg(long, value_name = "A")]
    pub agent: Option<String>,
    /// Only these kinds (comma-separated): started, exited, restarted, stopped, errored, finished, cron_restart, reset, signal, memory_limit, watch, spawn_failed, agent_joined, agent_registered, agent_online, agent_offline, recovered, ...
    #[arg(long, value_name = "K")]
    pub kind: Option<String>,
    /// How many of the newest events to print (1 to 10000)
    #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
    pub lines: usize,
    /// Keep printing new events as they happen
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub remote: Remote,
}

impl EventsArgs {
    fn filters(&self) -> Vec<String> {
        [
            ("process", &self.target),
            ("agent", &self.agent),
            ("kind", &self.kind),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| format!("{k}={}", crate::model::encode_segment(v)))
        })
        .collect()
    }
}

pub async fn events(a: EventsArgs) -> Result<(), CliError> {
    if a.lines == 0 || a.lines > crate::service::MAX_EVENTS {
        return Err(CliError::Usage(format!(
            "--lines must be between 1 and {}, not {}",
            crate::service::MAX_EVENTS,
            a.lines
        )));
    }
    let client = target(&a.remote)?;
    let filters = a.filters();
    // Following: the stream is open before the backlog is read, so an event
    // between the two is printed (once in each at worst, never lost).
    let stream = if a.follow {
        let q = if filters.is_empty() {
            String::new()
        } else {
            format!("?{}", filters.join("&"))
        };
        Some(client.stream(&format!("/daemon/events/stream{q}")).await?)
    } else {
        None
    };
    let mut q = filters.clone();
    q.push(format!("limit={}", a.lines));
    let backlog: Vec<TimelineEvent> = client
        .get(&format!("/daemon/events?{}", q.join("&")))
        .await?;
    let Some(body) = stream else {
        if a.format == Format::Json {
            return print_json(&backlog);
        }
        if backlog.is_empty() {
            println!(
                "no events{}",
                if filters.is_empty() { "" } else { " match" }
            );
            return Ok(());
        }
        print_table(&backlog);
        return Ok(());
    };
    let widths = Widths::of(&backlog);
    if a.format != Format::Json {
        widths.header();
    }
    for e in &backlog {
        print_one(e, a.format, &widths)?;
    }
    follow(body, a.format, widths).await
}

async fn follow(
    body: hyper::body::Incoming,
    format: Format,
    widths: Widths,
) -> Result<(), CliError> {
    let mut reader = SseReader::new(body);
    while let Some((event, data)) = reader.next().await? {
        match event.as_str() {
            "event" => {
                let e: TimelineEvent = serde_json::from_str(&data)?;
                print_one(&e, format, &widths)?;
            }
            "lagged" => eprintln!("opm events: {data}"),
            _ => {}
        }
    }
    Ok(())
}

/// Column widths for the subject and kind, at least as wide as their titles.
struct Widths {
    subject: usize,
    kind: usize,
}

impl Widths {
    fn of(events: &[TimelineEvent]) -> Widths {
        Widths {
            subject: events
                .iter()
                .map(|e| subject(e).chars().count())
                .max()
                .unwrap_or(0)
                .max(12),
            kind: events
                .iter()
                .map(|e| e.kind.len())
                .max()
                .unwrap_or(0)
                .max(10),
        }
    }

    fn header(&self) {
        println!(
            "{:<23}  {:<sw$}  {:<kw$}  DETAIL",
            "TIME",
            "SUBJECT",
            "KIND",
            sw = self.subject,
            kw = self.kind
        );
    }
}

/// `api (3)`, `agent a1`, `daemon`.
fn subject(e: &TimelineEvent) -> String {
    match (e.subject.as_str(), e.id) {
        ("process", Some(id)) => format!("{} ({id})", e.name),
        ("agent", _) => format!("agent {}", e.name),
        _ => e.name.clone(),
    }
}

fn print_table(events: &[TimelineEvent]) {
    let widths = Widths::of(events);
    widths.header();
    for e in events {
        println!("{}", line(e, &widths));
    }
}

fn line(e: &TimelineEvent, w: &Widths) -> String {
    let detail = crate::model::escape_control(&e.detail);
    format!(
        "{:<23}  {:<sw$}  {:<kw$}  {}",
        timestamp(e.at_ms),
        crate::model::escape_control(&subject(e)),
        e.kind,
        detail,
        sw = w.subject,
        kw = w.kind
    )
    .trim_end()
    .to_string()
}

fn print_one(e: &TimelineEvent, format: Format, w: &Widths) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let text = match format {
        Format::Json => serde_json::to_string(e)?,
        Format::Default => line(e, w),
    };
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_subject_and_escapes_the_detail() {
        let e = TimelineEvent {
            at_ms: 0,
            subject: "process".into(),
            id: Some(3),
            name: "api".into(),
            kind: "exited".into(),
            detail: "exit code 1\x1b[2J".into(),
        };
        let w = Widths::of(std::slice::from_ref(&e));
        let l = line(&e, &w);
        assert!(l.starts_with("1970-01-01 00:00:00 UTC  api (3)"), "{l}");
        assert!(l.contains("exited") && !l.contains('\x1b'), "{l}");
    }
}
