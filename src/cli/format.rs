//! Printing: the process table, human durations and sizes, JSON output.

use std::io::IsTerminal;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::CliError;
use crate::model::{ProcessView, Status};

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

/// `1h 2m`, `3m 4s`, `5s`, `0s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d {}h", s / 86_400, (s / 3600) % 24),
    }
}

/// `512 B`, `1.5 KiB`, `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    scaled_bytes(n, ["B", "KiB", "MiB", "GiB", "TiB"], " ")
}

/// `n` bytes in the largest of `units` (powers of 1024) that keeps it at
/// least 1, with one decimal past bytes, `sep` between number and unit.
pub fn scaled_bytes(n: u64, units: [&str; 5], sep: &str) -> String {
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}{sep}{}", units[0])
    } else {
        format!("{v:.1}{sep}{}", units[unit])
    }
}

fn status_color(s: Status) -> Color {
    match s {
        Status::Online => Color::Green,
        Status::Stopped => Color::DarkGrey,
        Status::Errored => Color::Red,
        Status::Starting | Status::Stopping | Status::Waiting => Color::Yellow,
        Status::Exited => Color::Blue,
    }
}

/// The status as the table shows it: `exited (0)` with the exit code,
/// `waiting (3s)` with the time left before the next try.
pub fn status_text(v: &ProcessView) -> String {
    match (v.status, v.exit_code, v.restart_at_ms) {
        (Status::Exited, Some(code), _) => format!("exited ({code})"),
        (Status::Waiting, _, Some(at)) => {
            let left = at.saturating_sub(crate::spec::now_ms());
            format!("waiting ({})", duration(left.div_ceil(1000) * 1000))
        }
        (s, _, _) => s.as_str().to_string(),
    }
}

/// The process table of `list`, `start`, `stop`...
pub fn table(views: &[ProcessView]) -> String {
    let color = std::io::stdout().is_terminal();
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    t.set_header([
        "id", "name", "pid", "status", "↺", "uptime", "cpu", "memory",
    ]);
    for v in grouped(views) {
        let mut status = Cell::new(status_text(v));
        if color {
            status = status.fg(status_color(v.status));
        }
        t.add_row(vec![
            Cell::new(v.id),
            // A list may come from an agent through a server: no escape codes.
            Cell::new(crate::model::escape_control(&shown_name(v))),
            Cell::new(v.pid.map_or("-".to_string(), |p| p.to_string())),
            status,
            Cell::new(v.restarts),
            Cell::new(if v.status == Status::Online {
                duration(v.uptime_ms)
            } else {
                "-".into()
            }),
            Cell::new(format!("{:.1}%", v.cpu)),
            Cell::new(if v.pid.is_some() {
                bytes(v.memory)
            } else {
                "-".into()
            }),
        ]);
    }
    let mut text = t.to_string();
    // A failed start says why under the table, where a user looks first.
    for v in views {
        if let Some(error) = &v.error {
            text.push_str(&format!("\n✘ {} (id {}): {error}", v.name, v.id));
        }
    }
    text
}

/// The rows in order, each instance group's copies together (by index)
/// where its first copy comes.
fn grouped(views: &[ProcessView]) -> Vec<&ProcessView> {
    let mut out: Vec<&ProcessView> = Vec::with_capacity(views.len());
    for v in views {
        if out.iter().any(|o| std::ptr::eq(*o, v)) {
            continue;
        }
        if v.instance.is_none() {
            out.push(v);
            continue;
        }
        let mut copies: Vec<&ProcessView> = views
            .iter()
            .filter(|o| o.name == v.name && o.instance.is_some())
            .collect();
        copies.sort_by_key(|o| (o.instance, o.id));
        out.extend(copies);
    }
    out
}

/// A row's name: a copy of an instance group shows its index (`api:2`,
/// which also names that copy in commands).
pub fn shown_name(v: &ProcessView) -> String {
    match v.instance {
        Some(k) => format!("{}:{k}", v.name),
        None => v.name.clone(),
    }
}

/// A Unix time in ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn timestamp(ms: u64) -> String {
    crate::spec::utc_timestamp(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(61_000), "1m 1s");
        assert_eq!(duration(3_720_000), "1h 2m");
        assert_eq!(duration(90_000_000), "1d 1h");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_764_028_800_000), "2025-11-25 00:00:00 UTC");
    }
}
