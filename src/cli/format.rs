//! Printing: the process table, human durations and sizes, JSON output.

use std::io::IsTerminal;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::CliError;
use crate::model::{ProcessView, Status};

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Io(e.to_string()))?;
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
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn status_color(s: Status) -> Color {
    match s {
        Status::Online => Color::Green,
        Status::Stopped => Color::DarkGrey,
        Status::Errored => Color::Red,
        Status::Starting | Status::Stopping | Status::Waiting => Color::Yellow,
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
    for v in views {
        let mut status = Cell::new(v.status.as_str());
        if color {
            status = status.fg(status_color(v.status));
        }
        t.add_row(vec![
            Cell::new(v.id),
            // A list may come from an agent through a server: no escape codes.
            Cell::new(crate::model::escape_control(&v.name)),
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

/// A Unix time in ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn timestamp(ms: u64) -> String {
    crate::spec::utc_timestamp(ms)
}

/// `100ms`, `2s`, `1.5s`, `3m`, `1h`, or plain milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 2s, 1m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a duration (e.g. 500ms, 2s, 1m)"));
    }
    Ok((v * mult).round() as u64)
}

/// `100M`, `1G`, `512K`, `1.5G`, or plain bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['b', 'B']).trim_end_matches('i');
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1024.0),
        Some('M' | 'm') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        Some('G' | 'g') => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 100M, 1G, 512K)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?} is not a size above 0 (e.g. 100M, 1G, 512K)"));
    }
    Ok((v * mult).round() as u64)
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
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("100M"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5G"), Ok(1_610_612_736));
        assert_eq!(parse_bytes("2048"), Ok(2048));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
        assert_eq!(parse_duration_ms("150ms"), Ok(150));
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert!(parse_duration_ms("soon").is_err());
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_764_028_800_000), "2025-11-25 00:00:00 UTC");
    }
}
