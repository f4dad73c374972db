//! Printing: the process table, human durations and sizes, JSON output.

use std::io::IsTerminal;

use crossterm::style::{Color, Stylize};

use super::CliError;
use crate::model::{ProcessView, Status};

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

/// Prints a daemon's JSON answer as `print_json` would print the value it
/// holds, without decoding it: `pretty_json` of its bytes, then a newline.
pub fn print_json_bytes(json: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    let mut text = pretty_json(json);
    text.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&text)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("cannot write the answer", e))
}

/// JSON laid out the way `serde_json::to_string_pretty` lays out the same
/// value (two-space indent, `": "` after keys, `[]` and `{}` when empty),
/// by one pass over the bytes: strings and numbers are copied as they are,
/// whitespace between tokens is dropped. For valid JSON as serde_json
/// writes it, the result is exactly what decoding and pretty-printing the
/// value would give, at a fraction of the cost (a thousand processes'
/// list is about 200 KB).
pub fn pretty_json(json: &[u8]) -> Vec<u8> {
    fn newline(out: &mut Vec<u8>, depth: usize) {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    }
    let mut out = Vec::with_capacity(json.len() + json.len() / 2);
    let mut depth = 0usize;
    // Just after `[` or `{`: the newline waits to see whether it is empty.
    let mut opened = false;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        i += 1;
        if b.is_ascii_whitespace() {
            continue;
        }
        if std::mem::take(&mut opened) {
            if matches!(b, b']' | b'}') {
                depth = depth.saturating_sub(1);
                out.push(b);
                continue;
            }
            newline(&mut out, depth);
        }
        match b {
            b'[' | b'{' => {
                out.push(b);
                depth += 1;
                opened = true;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b'"' => {
                // A string, copied whole up to its closing quote.
                let start = i - 1;
                while let Some(&c) = json.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' {
                        break;
                    }
                }
                out.extend_from_slice(&json[start..i.min(json.len())]);
            }
            _ => {
                // A number, `true`, `false` or `null`, copied whole.
                let start = i - 1;
                while json.get(i).is_some_and(|c| {
                    !matches!(c, b',' | b']' | b'}' | b':') && !c.is_ascii_whitespace()
                }) {
                    i += 1;
                }
                out.extend_from_slice(&json[start..i]);
            }
        }
    }
    out
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
    use crossterm::style::Color;
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

/// The columns of the process table.
const COLUMNS: [&str; 8] = [
    "id", "name", "pid", "status", "↺", "uptime", "cpu", "memory",
];

/// The cells of one row of the process table.
fn row(v: &ProcessView) -> [String; 8] {
    [
        v.id.to_string(),
        // A list may come from an agent through a server: no escape codes.
        crate::model::escape_control(&shown_name(v)).into_owned(),
        v.pid.map_or("-".to_string(), |p| p.to_string()),
        status_text(v),
        v.restarts.to_string(),
        if v.status == Status::Online {
            duration(v.uptime_ms)
        } else {
            "-".into()
        },
        format!("{:.1}%", v.cpu),
        if v.pid.is_some() {
            bytes(v.memory)
        } else {
            "-".into()
        },
    ]
}

/// The process table of `list`, `start`, `stop`...
pub fn table(views: &[ProcessView]) -> String {
    table_in(views, std::io::stdout().is_terminal())
}

/// The process table, the status in colour when `color`: comfy-table's
/// `UTF8_FULL_CONDENSED` layout (columns as wide as their widest cell, one
/// space either side), written directly, since laying out a thousand rows
/// through comfy-table cost the CLI several milliseconds.
fn table_in(views: &[ProcessView], color: bool) -> String {
    use unicode_width::UnicodeWidthStr;
    let shown = grouped(views);
    let rows: Vec<[String; 8]> = shown.iter().map(|v| row(v)).collect();
    let mut widths = COLUMNS.map(UnicodeWidthStr::width);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = cell
                .split('\n')
                .map(UnicodeWidthStr::width)
                .fold(*w, usize::max);
        }
    }
    let per_row: usize = widths.iter().map(|w| w + 3).sum::<usize>() * 2 + 2;
    let mut text = String::with_capacity((rows.len() + 4) * per_row);
    let rule = |text: &mut String, [left, fill, cross, right]: [char; 4]| {
        text.push(left);
        for (i, w) in widths.iter().enumerate() {
            if i > 0 {
                text.push(cross);
            }
            text.extend(std::iter::repeat_n(fill, w + 2));
        }
        text.push(right);
        text.push('\n');
    };
    let line = |text: &mut String, cells: [&str; 8], status: Option<Status>| {
        let lines: Vec<Vec<&str>> = cells.iter().map(|c| c.split('\n').collect()).collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(1);
        for n in 0..height {
            text.push('│');
            for (i, (cell, w)) in lines.iter().zip(widths).enumerate() {
                if i > 0 {
                    text.push('┆');
                }
                let content = cell.get(n).copied().unwrap_or("");
                let pad = w - content.width();
                match status.filter(|_| color && i == 3) {
                    Some(s) => {
                        let padded = format!(" {content}{} ", " ".repeat(pad));
                        let styled = Stylize::with(padded.as_str(), status_color(s));
                        text.push_str(&styled.to_string());
                    }
                    None => {
                        text.push(' ');
                        text.push_str(content);
                        text.extend(std::iter::repeat_n(' ', pad + 1));
                    }
                }
            }
            text.push_str("│\n");
        }
    };
    rule(&mut text, ['┌', '─', '┬', '┐']);
    line(&mut text, COLUMNS, None);
    rule(&mut text, ['╞', '═', '╪', '╡']);
    for (r, v) in rows.iter().zip(&shown) {
        line(&mut text, r.each_ref().map(String::as_str), Some(v.status));
    }
    rule(&mut text, ['└', '─', '┴', '┘']);
    text.pop();
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
    // By index, not by searching `out`: a thousand rows stay linear.
    let mut placed = vec![false; views.len()];
    for (i, v) in views.iter().enumerate() {
        if placed[i] {
            continue;
        }
        if v.instance.is_none() {
            placed[i] = true;
            out.push(v);
            continue;
        }
        let mut copies: Vec<(usize, &ProcessView)> = views
            .iter()
            .enumerate()
            .filter(|(_, o)| o.name == v.name && o.instance.is_some())
            .collect();
        copies.sort_by_key(|(_, o)| (o.instance, o.id));
        for (j, o) in copies {
            placed[j] = true;
            out.push(o);
        }
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

    /// The table as comfy-table lays it out (what `table` wrote before it
    /// wrote the table itself).
    fn comfy_table(views: &[ProcessView], color: bool) -> String {
        use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        if color {
            t.enforce_styling();
        }
        t.set_header(COLUMNS);
        for v in grouped(views) {
            let mut cells: Vec<Cell> = row(v).into_iter().map(Cell::new).collect();
            if color {
                cells[3] = Cell::new(status_text(v)).fg(match v.status {
                    Status::Online => Color::Green,
                    Status::Stopped => Color::DarkGrey,
                    Status::Errored => Color::Red,
                    Status::Exited => Color::Blue,
                    _ => Color::Yellow,
                });
            }
            t.add_row(cells);
        }
        let mut text = t.to_string();
        for v in views {
            if let Some(error) = &v.error {
                text.push_str(&format!("\n✘ {} (id {}): {error}", v.name, v.id));
            }
        }
        text
    }

    fn view(i: u64, name: &str, status: Status) -> ProcessView {
        ProcessView {
            id: i,
            name: name.to_string(),
            pid: (status != Status::Stopped).then_some(1000 + i as u32),
            status,
            restarts: i as u32 * 7,
            uptime_ms: i * 3_700_000,
            cpu: i as f32 * 12.34,
            memory: i << 22,
            command: "sleep 1000".into(),
            cwd: "/".into(),
            autorestart: true,
            desired: "running".into(),
            error: (status == Status::Errored).then(|| "cannot start: nope".to_string()),
            // Every third row a copy of the group "web-server" (index by id).
            instance: (i % 3 == 1).then_some(i as u32 % 4),
            instances: 1,
            restart_at_ms: None,
            exit_code: (status == Status::Exited).then_some(3),
        }
    }

    #[test]
    fn the_table_is_laid_out_as_comfy_table_did() {
        let statuses = [
            Status::Online,
            Status::Stopped,
            Status::Errored,
            Status::Starting,
            Status::Exited,
            Status::Stopping,
        ];
        let names = ["a", "web-server", "日本語の名前", "tab\there", "é", "x\ny"];
        let views: Vec<ProcessView> = (0..30)
            .map(|i| {
                view(
                    i,
                    names[i as usize % names.len()],
                    statuses[i as usize % statuses.len()],
                )
            })
            .collect();
        for n in [0, 1, 2, 30] {
            for color in [false, true] {
                assert_eq!(
                    table_in(&views[..n], color),
                    comfy_table(&views[..n], color),
                    "{n} rows, color {color}"
                );
            }
        }
    }

    #[test]
    fn pretty_json_lays_out_as_serde_json_does() {
        let views: Vec<ProcessView> = (0..3)
            .map(|i| ProcessView {
                id: i,
                name: format!("p{i} \"quoted\" \\ {{[,:]}}"),
                pid: (i > 0).then_some(100 + i as u32),
                status: Status::Online,
                restarts: 2,
                uptime_ms: 12_345,
                cpu: 0.1 * i as f32,
                memory: 1 << 20,
                command: "sleep 1000".into(),
                cwd: "/tmp/a b".into(),
                autorestart: true,
                desired: "running".into(),
                error: (i == 2).then(|| "cannot start: \u{7}\n".to_string()),
                instance: (i == 1).then_some(2),
                instances: 3,
                restart_at_ms: (i == 2).then_some(1_764_028_800_000),
                exit_code: None,
            })
            .collect();
        for value in [
            serde_json::to_value(&views).expect("encodes"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!({"a": [], "b": {}, "c": [[1, {"d": null}], -1.5e-7, "\\\""]}),
        ] {
            let compact = serde_json::to_vec(&value).expect("encodes");
            let expected = serde_json::to_string_pretty(&value).expect("encodes");
            assert_eq!(
                String::from_utf8(pretty_json(&compact)).expect("utf-8"),
                expected
            );
            // Whitespace between tokens (a daemon that pretty-prints) changes nothing.
            let spaced = serde_json::to_vec_pretty(&value).expect("encodes");
            assert_eq!(
                String::from_utf8(pretty_json(&spaced)).expect("utf-8"),
                expected
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn pretty_json_matches_serde_json_for_any_strings(
            keys in proptest::collection::vec(".*", 0..4),
            values in proptest::collection::vec(proptest::option::of(".*"), 0..4),
            n in proptest::num::f64::NORMAL,
        ) {
            let value = serde_json::json!({
                "keys": keys,
                "values": values,
                "n": n,
                "map": keys.iter().zip(&values).map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            });
            let compact = serde_json::to_vec(&value).expect("encodes");
            let expected = serde_json::to_string_pretty(&value).expect("encodes");
            proptest::prop_assert_eq!(String::from_utf8(pretty_json(&compact)).expect("utf-8"), expected);
        }
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_764_028_800_000), "2025-11-25 00:00:00 UTC");
    }
}
