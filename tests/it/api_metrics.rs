//! `GET /daemon/prometheus` over TCP is valid Prometheus text exposition
//! (checked by the `prometheus-parse` crate, by a strict line-by-line check
//! of the format, and by `promtool check metrics` when it is installed), its
//! metric names start with `opm_`, and each process shows up under its name
//! label; `GET /daemon/metrics` gives the same figures as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::common::http::ApiHome;
use crate::common::{needs, require, wait_until};

/// A metric or label name as the exposition format allows it.
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn is_value(s: &str) -> bool {
    matches!(s, "+Inf" | "-Inf" | "NaN") || s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Parses `{a="x",b="y\"z"}` strictly; returns the labels and what follows.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("a bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' at {rest:?}"));
        }
    }
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Checks the text exposition format 0.0.4 line by line: HELP and TYPE at
/// most once per family and before its samples, a family's samples
/// together, valid names, labels and values, no sample twice.
fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("the text must end with a newline".into());
    }
    let mut helped = BTreeSet::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            match (kind, name) {
                (Some("HELP"), Some(name)) => {
                    if !is_metric_name(name) || !helped.insert(name.to_string()) {
                        return Err(at("a bad or repeated HELP".into()));
                    }
                    if rest.is_none_or(|r| r.trim().is_empty()) {
                        return Err(at("an empty HELP".into()));
                    }
                }
                (Some("TYPE"), Some(name)) => {
                    let kind = rest.unwrap_or("").trim();
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if typed.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("a repeated TYPE".into()));
                    }
                    if finished.contains(name) || current.as_deref() == Some(name) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let mut fields = rest.split(' ').filter(|f| !f.is_empty());
        let value = fields.next().ok_or_else(|| at("no value".into()))?;
        if !is_value(value) {
            return Err(at(format!("bad value {value:?}")));
        }
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        if current.as_deref() != Some(name) {
            if finished.contains(name) {
                return Err(at("the family's samples are not together".into()));
            }
            if let Some(prev) = current.replace(name.to_string()) {
                finished.insert(prev);
            }
        }
        if typed.get(name).is_some_and(|t| t == "counter") && value.starts_with('-') {
            return Err(at("a negative counter".into()));
        }
        if !seen.insert((name.to_string(), labels.clone())) {
            return Err(at("the same series twice".into()));
        }
        samples.push((name.to_string(), labels, value.parse().unwrap_or(f64::NAN)));
    }
    Ok(samples)
}

#[test]
fn the_checker_catches_broken_exposition() {
    let good = "# HELP opm_x A thing.\n# TYPE opm_x gauge\nopm_x{name=\"a\\\"b\"} 1\nopm_x{name=\"c\"} 2.5\n";
    assert_eq!(check_exposition(good).map(|s| s.len()), Ok(2));
    for broken in [
        "opm_x 1",
        "opm-x 1\n",
        "opm_x{name=a} 1\n",
        "opm_x{name=\"a} 1\n",
        "opm_x one\n",
        "opm_x{name=\"a\"} 1\nopm_x{name=\"a\"} 2\n",
        "opm_x 1\nopm_y 1\nopm_x 2\n",
        "# TYPE opm_x gauge\n# TYPE opm_x gauge\nopm_x 1\n",
        "# TYPE opm_x meter\nopm_x 1\n",
        "opm_x 1\n# TYPE opm_x gauge\n",
        "opm_x{name=\"a\",name=\"b\"} 1\n",
        "opm_x 1 2 3\n",
    ] {
        assert!(check_exposition(broken).is_err(), "accepted {broken:?}");
    }
}

#[test]
fn prometheus_text_parses_and_labels_every_process_by_name() {
    let api = ApiHome::start();
    for (name, stopped) in [("web-1", false), ("db.main", false), ("idle_one", true)] {
        api.post(
            "/daemon/create",
            &json!({ "script": "sleep 1000", "name": name, "stopped": stopped }),
        )
        .expect(201);
    }
    api.wait_status("web-1", "online");
    api.wait_status("db.main", "online");
    api.wait_status("idle_one", "stopped");

    let r = api.get("/daemon/prometheus").expect(200);
    let ctype = r.header("content-type").unwrap_or_default().to_string();
    assert!(
        ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
        "content-type {ctype:?}"
    );
    let text = r.text();

    let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("prometheus-parse refused it ({e}):\n{text}"));
    assert_eq!(
        scrape.samples.len(),
        samples.len(),
        "the parser and the checker disagree on the samples:\n{text}"
    );
    for line in text.lines() {
        assert_ne!(
            prometheus_parse::LineInfo::parse(line),
            prometheus_parse::LineInfo::Ignored,
            "a line the parser does not understand: {line:?}"
        );
    }
    for s in &scrape.samples {
        assert!(
            s.metric.starts_with("opm_"),
            "{} is not prefixed opm_",
            s.metric
        );
    }
    for (name, _, _) in &samples {
        assert!(name.starts_with("opm_"), "{name} is not prefixed opm_");
    }

    let value = |metric: &str, process: &str| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("name") == Some(process))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    let per_process: BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.labels.get("name").is_some())
        .map(|s| s.metric.as_str())
        .collect();
    assert!(
        per_process.len() >= 3,
        "too few per-process metrics: {per_process:?}\n{text}"
    );
    for metric in &per_process {
        for process in ["web-1", "db.main", "idle_one"] {
            assert!(
                value(metric, process).is_some(),
                "{metric} has no sample for {process}:\n{text}"
            );
        }
    }
    if per_process.contains("opm_process_up") {
        assert_eq!(value("opm_process_up", "web-1"), Some(1.0), "{text}");
        assert_eq!(value("opm_process_up", "idle_one"), Some(0.0), "{text}");
    }
    for required in ["opm_process_memory_bytes", "opm_process_restarts_total"] {
        assert!(per_process.contains(required), "no {required}:\n{text}");
    }

    // Prometheus's own checker (under CI it must be installed).
    if !require(needs().tool("promtool", "prometheus").done()) {
        return;
    }
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("feed promtool");
            let out = child.wait_with_output().expect("promtool");
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Lint remarks (e.g. naming advice) are not format errors.
            assert!(
                out.status.success() || !report.contains("error"),
                "promtool check metrics: {report}\n{text}"
            );
        }
        Err(e) => panic!("promtool is on the PATH but did not start: {e}"),
    }
}

#[test]
fn metrics_json_has_daemon_and_per_process_figures() {
    let api = ApiHome::start();
    api.post(
        "/daemon/create",
        &json!({ "script": "sleep 1000", "name": "m1" }),
    )
    .expect(201);
    api.wait_status("m1", "online");
    let pid = api.daemon_pid();
    let mut m = serde_json::Value::Null;
    wait_until(Duration::from_secs(10), "a memory figure for m1", || {
        m = api.get("/daemon/metrics").expect(200).json();
        m["processes"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "m1"))
            .is_some_and(|p| p["memory"].as_u64().is_some_and(|b| b > 0))
    });
    assert_eq!(m["daemon"]["pid"], pid, "{m}");
    assert!(m["daemon"]["memory"].as_u64().is_some_and(|b| b > 0), "{m}");
    assert!(m["daemon"]["uptime_ms"].is_u64(), "{m}");
    assert!(m["daemon"]["cpu_avg"].is_number(), "{m}");
    let p = m["processes"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "m1"))
        .cloned()
        .expect("m1");
    for field in ["cpu", "memory", "restarts", "uptime_ms"] {
        assert!(p[field].is_number(), "{field} in {p}");
    }
}
