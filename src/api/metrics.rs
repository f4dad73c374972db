//! Metrics routes: `GET /daemon/metrics` (JSON) and `GET /daemon/prometheus`
//! (Prometheus text exposition format 0.0.4, metric names prefixed `opm_`,
//! processes labelled by id and name), and the history of CPU and memory
//! (`GET /daemon/history`, one process at `GET /daemon/history/{id}`).

use std::fmt::Write;

use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use super::auth::{admin, Tokens};
use super::Ctx;
use crate::model::{Metrics, Status, Target};

pub fn routes(ctx: Ctx, tokens: Tokens) -> BoxedFilter<(warp::reply::Response,)> {
    let json = {
        let ctx = ctx.clone();
        warp::path!("daemon" / "metrics")
            .and(admin(tokens.clone()))
            .and(warp::get())
            .map(move || warp::reply::json(&ctx.svc.metrics()).into_response())
    };
    let prometheus = {
        let ctx = ctx.clone();
        warp::path!("daemon" / "prometheus")
            .and(admin(tokens.clone()))
            .and(warp::get())
            .map(move || {
                warp::reply::with_header(
                    render(&ctx.svc.metrics()),
                    "content-type",
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .into_response()
            })
    };
    let history_all = {
        let ctx = ctx.clone();
        warp::path!("daemon" / "history")
            .and(admin(tokens.clone()))
            .and(warp::get())
            .and_then(move || {
                let ctx = ctx.clone();
                async move { history_reply(&ctx, None) }
            })
    };
    let history_one = {
        let ctx = ctx.clone();
        warp::path!("daemon" / "history" / String)
            .and(admin(tokens.clone()))
            .and(warp::get())
            .and_then(move |id: String| {
                let ctx = ctx.clone();
                async move { history_reply(&ctx, Some(&Target::parse(&id))) }
            })
    };
    json.or(prometheus)
        .unify()
        .or(history_all)
        .unify()
        .or(history_one)
        .unify()
        .boxed()
}

/// `GET /daemon/history[/{id}]`: CPU, memory and restarts over time.
fn history_reply(ctx: &Ctx, target: Option<&Target>) -> Result<warp::reply::Response, Rejection> {
    ctx.svc
        .history(target)
        .map(|h| warp::reply::json(&h).into_response())
        .map_err(|e| warp::reject::custom(super::errors::Refusal::from(e)))
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text for one snapshot of the metrics.
pub fn render(m: &Metrics) -> String {
    let mut out = String::with_capacity(256 + m.processes.len() * 400);
    let d = &m.daemon;
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "opm_daemon_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        vec![(String::new(), format!("{:.3}", d.uptime_ms as f64 / 1000.0))],
    );
    family(
        "opm_daemon_memory_bytes",
        "gauge",
        "Resident memory of the daemon.",
        vec![(String::new(), d.memory.to_string())],
    );
    family(
        "opm_daemon_cpu_percent",
        "gauge",
        "CPU of the daemon, percent of one core averaged since it started.",
        vec![(String::new(), d.cpu_avg.to_string())],
    );
    let statuses = [
        Status::Online,
        Status::Stopped,
        Status::Errored,
        Status::Starting,
        Status::Stopping,
        Status::Waiting,
        Status::Exited,
    ];
    family(
        "opm_processes",
        "gauge",
        "Managed processes by status.",
        statuses
            .iter()
            .map(|s| {
                let n = m.processes.iter().filter(|p| p.status == *s).count();
                (format!("{{status=\"{}\"}}", s.as_str()), n.to_string())
            })
            .collect(),
    );
    let labels = |id: u64, name: &str| format!("{{id=\"{id}\",name=\"{}\"}}", escape(name));
    let per = |f: &dyn Fn(&crate::model::ProcessView) -> String| {
        m.processes
            .iter()
            .map(|p| (labels(p.id, &p.name), f(p)))
            .collect::<Vec<_>>()
    };
    family(
        "opm_process_up",
        "gauge",
        "1 when the process is online, else 0.",
        per(&|p| u8::from(p.status == Status::Online).to_string()),
    );
    family(
        "opm_process_cpu_percent",
        "gauge",
        "CPU of the process group, percent of one core.",
        per(&|p| p.cpu.to_string()),
    );
    family(
        "opm_process_memory_bytes",
        "gauge",
        "Resident memory of the process group.",
        per(&|p| p.memory.to_string()),
    );
    family(
        "opm_process_restarts_total",
        "counter",
        "Starts after the first.",
        per(&|p| p.restarts.to_string()),
    );
    family(
        "opm_process_uptime_seconds",
        "gauge",
        "Seconds since the current run started (0 when not running).",
        per(&|p| format!("{:.3}", p.uptime_ms as f64 / 1000.0)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DaemonMetrics, ProcessView};

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_type_and_samples() {
        let m = Metrics {
            daemon: DaemonMetrics {
                pid: 1,
                uptime_ms: 1500,
                cpu_avg: 0.1,
                memory: 10,
                processes: 1,
                online: 1,
                restarts: 2,
            },
            processes: vec![ProcessView {
                id: 3,
                name: "api".into(),
                pid: Some(9),
                status: Status::Online,
                restarts: 2,
                uptime_ms: 2000,
                cpu: 1.5,
                memory: 4096,
                command: "x".into(),
                cwd: "/".into(),
                autorestart: true,
                desired: "running".into(),
                error: None,
                instance: None,
                instances: 1,
                restart_at_ms: None,
                exit_code: None,
            }],
        };
        let text = render(&m);
        assert!(
            text.contains("opm_process_memory_bytes{id=\"3\",name=\"api\"} 4096\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE opm_process_restarts_total counter\n"));
        assert!(text.contains("opm_processes{status=\"online\"} 1\n"));
    }
}
