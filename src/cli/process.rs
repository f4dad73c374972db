//! Process commands: start, stop, restart, reload, remove, list, info, logs,
//! flush, env, save, restore. Each builds a request, sends it to the daemon
//! (or `--server`), and prints the answer.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::daemon::{local, target, RestoreArgs};
use super::format::{self, print_json, table};
use super::{CliError, Format, Remote};
use crate::client::{Client, ClientError};
use crate::definition::ProcessDef;
use crate::fsutil::write_atomic;
use crate::model::{
    ActionKind, ActionRequest, ActionResponse, CreateBody, Dump, EnvResponse, LogsResponse,
    ProcessInfo, ProcessView, Status, Target,
};

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The process: its script and options (`crate::definition`).
    #[command(flatten)]
    pub def: ProcessDef,
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Process ids, names, or `all`
    #[arg(required = true, value_name = "ID|NAME|all")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[arg(value_name = "ID|NAME")]
    pub target: String,
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A process, or `all` (the default): every process, each line prefixed `name |`
    #[arg(value_name = "ID|NAME|all")]
    pub target: Option<String>,
    /// How many of the last lines of each log to print (reading back into rotated files)
    #[arg(long, default_value_t = 15)]
    pub lines: usize,
    /// Keep printing new lines as they are written (across rotations)
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the standard output
    #[arg(long, conflicts_with = "err")]
    pub out: bool,
    /// Only the standard error
    #[arg(long)]
    pub err: bool,
    /// One JSON object per line: {"process", "stream", "line"}
    #[arg(long)]
    pub json: bool,
    /// Only the lines matching this regular expression (Rust `regex` syntax)
    #[arg(long, value_name = "REGEX")]
    pub filter: Option<String>,
    /// Only error lines: every line of the err stream, and lines of the out stream matching (case-insensitive) error, err, exception, fatal, panic, fail, failed, failure, critical, crit, traceback, warn or warning as a word
    #[arg(long)]
    pub errors_only: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// The words `--errors-only` picks out of the out stream.
const ERROR_WORDS: &str = r"(?i)\b(error|err|exception|fatal|panic|fail|failed|failure|critical|crit|traceback|warn|warning)\b";

/// Which lines `opm logs` prints, and how.
struct LineFilter {
    out: bool,
    err: bool,
    json: bool,
    filter: Option<regex::Regex>,
    errors: Option<regex::Regex>,
}

impl LineFilter {
    fn new(a: &LogsArgs) -> Result<LineFilter, CliError> {
        let filter = a
            .filter
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| CliError::Usage(format!("--filter: {e}")))?;
        let errors = a
            .errors_only
            .then(|| regex::Regex::new(ERROR_WORDS).expect("ERROR_WORDS is a valid regex"));
        Ok(LineFilter {
            out: !a.err,
            err: !a.out,
            json: a.json,
            filter,
            errors,
        })
    }

    fn wants_stream(&self, stream: &str) -> bool {
        if stream == "out" {
            self.out
        } else {
            self.err
        }
    }

    fn keeps(&self, stream: &str, line: &str) -> bool {
        self.wants_stream(stream)
            && self.filter.as_ref().is_none_or(|r| r.is_match(line))
            && self
                .errors
                .as_ref()
                .is_none_or(|r| stream == "err" || r.is_match(line))
    }

    /// The line as printed: `prefix | line`, or its JSON object.
    fn render(&self, process: &str, stream: &str, line: &str, prefix: &str) -> String {
        if self.json {
            serde_json::json!({ "process": process, "stream": stream, "line": line }).to_string()
        } else {
            format!("{prefix} | {line}")
        }
    }
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Process ids or names (default: all)
    #[arg(value_name = "ID|NAME")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[arg(value_name = "ID|NAME")]
    pub target: String,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Overwrite a saved list even with an empty one
    #[arg(long)]
    pub force: bool,
}

/// A .toml process file, and `dump.toml`: `[[process]]` entries, each a
/// `ProcessDef` (the same keys as the API body).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessFile {
    #[serde(default)]
    pub process: Vec<ProcessDef>,
}

/// The definition with its working directory made absolute against `base`
/// (the current directory, or the folder of the file it came from).
fn rooted(mut def: ProcessDef, base: &Path) -> ProcessDef {
    let cwd = match &def.cwd {
        Some(c) => absolute(base, Path::new(c)),
        None => base.to_path_buf(),
    };
    def.cwd = Some(cwd.display().to_string());
    def
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn current_dir() -> Result<PathBuf, CliError> {
    std::env::current_dir().map_err(|e| CliError::io("cannot read the current directory", e))
}

fn read_process_file(path: &Path) -> Result<Vec<ProcessDef>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("cannot read {}", path.display()), e))?;
    let file: ProcessFile = toml::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a valid process file: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    if file.process.is_empty() {
        return Err(CliError::Usage(format!(
            "{} has no [[process]] entries",
            path.display()
        )));
    }
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = absolute(&current_dir()?, &base);
    Ok(file.process.into_iter().map(|p| rooted(p, &base)).collect())
}

pub async fn start(a: StartArgs) -> Result<(), CliError> {
    let script = a.def.script.trim().to_string();
    let is_file = script.ends_with(".toml") && Path::new(&script).is_file();
    // `opm start NAME|ID` of a process that exists starts it, as PM2 users expect.
    let single_word = !script.is_empty() && !script.contains(char::is_whitespace);
    if single_word && !is_file && !Path::new(&script).exists() {
        let client = target(&a.remote)?;
        let known = client
            .get::<ProcessInfo>(&format!("/daemon/info/{script}"))
            .await;
        if known.is_ok() {
            return act(
                TargetArgs {
                    targets: vec![script],
                    remote: a.remote,
                    format: a.format,
                },
                ActionKind::Start,
            )
            .await;
        }
    }
    let body = if is_file {
        if a.def.has_options() {
            return Err(CliError::Usage(
                "options apply to one process: set them in the file".into(),
            ));
        }
        CreateBody::Many(read_process_file(Path::new(&script))?)
    } else {
        if script.is_empty() {
            return Err(CliError::Usage(
                "the command is empty: give a command line or a script".into(),
            ));
        }
        let def = if a.remote.server.is_none() {
            rooted(a.def, &current_dir()?)
        } else {
            // Another machine's paths: sent as given.
            a.def
        };
        CreateBody::One(Box::new(def))
    };
    let client = target(&a.remote)?;
    let many = matches!(body, CreateBody::Many(_));
    let created: Vec<ProcessView> = if many {
        client.post("/daemon/create", &body).await?
    } else {
        vec![client.post("/daemon/create", &body).await?]
    };
    if a.format == Format::Json {
        print_json(&created)?;
        let failed = created.iter().filter(|v| v.error.is_some()).count();
        return if failed > 0 {
            Err(CliError::Partial(failed))
        } else {
            Ok(())
        };
    }
    let mut failed = 0;
    for v in &created {
        match (v.status, &v.error) {
            (Status::Online, _) => println!(
                "✔ started {} (id {}, pid {})",
                v.name,
                v.id,
                v.pid.unwrap_or(0)
            ),
            (s, Some(error)) => {
                failed += 1;
                let next = match s {
                    Status::Waiting | Status::Starting => "it is kept and tried again with backoff",
                    _ => "it is kept",
                };
                eprintln!(
                    "✘ {} (id {}) {error}; {next} (`opm remove {}` drops it)",
                    v.name, v.id, v.id
                );
            }
            (s, None) => println!("✔ created {} (id {}), now {}", v.name, v.id, s.as_str()),
        }
    }
    println!("{}", table(&created));
    if failed > 0 {
        return Err(CliError::Partial(failed));
    }
    Ok(())
}

/// Asks the daemon (or `--server`) to carry out `action` on `target`: the
/// request of `opm stop/restart/...` and of the keys of `opm monit`.
pub async fn send_action(
    client: &Client,
    target: Target,
    action: ActionKind,
) -> Result<ActionResponse, ClientError> {
    client
        .post("/daemon/action", &ActionRequest { id: target, action })
        .await
}

pub async fn act(a: TargetArgs, action: ActionKind) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let mut shown: Vec<ProcessView> = Vec::new();
    let mut removed = Vec::new();
    let mut failed = 0;
    for t in &a.targets {
        match send_action(&client, Target::parse(t), action).await {
            Ok(r) => {
                for v in r.processes {
                    if !shown.iter().any(|s| s.id == v.id) {
                        shown.push(v);
                    }
                }
                removed.extend(r.removed);
            }
            Err(e) => {
                eprintln!("✘ {t}: {e}");
                failed += 1;
            }
        }
    }
    if a.format == Format::Json {
        print_json(
            &serde_json::json!({ "action": action, "processes": shown, "removed": removed }),
        )?;
    } else {
        for id in &removed {
            println!("✔ removed process {id}");
        }
        for v in &shown {
            let done = match action {
                ActionKind::Stop => v.status == Status::Stopped,
                ActionKind::Remove => false,
                _ => v.status == Status::Online,
            };
            let mark = if done { "✔" } else { "…" };
            println!(
                "{mark} {} {} (id {}): {}",
                action.as_str(),
                v.name,
                v.id,
                v.status.as_str()
            );
        }
        if !shown.is_empty() {
            println!("{}", table(&shown));
        }
    }
    // A start that failed (the program gone, no descriptor left) is a failure.
    if matches!(
        action,
        ActionKind::Start | ActionKind::Restart | ActionKind::Reload
    ) {
        for v in shown.iter().filter(|v| v.status != Status::Online) {
            if let Some(error) = &v.error {
                eprintln!("✘ {} (id {}) {error}", v.name, v.id);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        Err(CliError::Partial(failed))
    } else {
        Ok(())
    }
}

pub async fn list(a: ListArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let views: Vec<ProcessView> = client.get("/daemon/list").await?;
    if a.format == Format::Json {
        return print_json(&views);
    }
    println!("{}", table(&views));
    Ok(())
}

pub async fn info(a: InfoArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let i: ProcessInfo = client.get(&format!("/daemon/info/{}", a.target)).await?;
    if a.format == Format::Json {
        return print_json(&i);
    }
    let v = &i.view;
    let row = |k: &str, val: String| println!("{k:<16}{val}");
    row("name", v.name.clone());
    row("id", v.id.to_string());
    row("status", v.status.as_str().to_string());
    row("desired", v.desired.clone());
    row("pid", v.pid.map_or("-".into(), |p| p.to_string()));
    row("command", v.command.clone());
    row("cwd", v.cwd.clone());
    row(
        "uptime",
        if v.status == Status::Online {
            format::duration(v.uptime_ms)
        } else {
            "-".into()
        },
    );
    row("restarts", v.restarts.to_string());
    row("cpu", format!("{:.1}%", v.cpu));
    row("memory", format::bytes(v.memory));
    row("autorestart", v.autorestart.to_string());
    row(
        "restart policy",
        format!(
            "max {} quick restarts, delay {} ms doubling, stable after {} ms",
            i.max_restarts, i.restart_delay_ms, i.min_uptime_ms
        ),
    );
    row("kill signal", i.definition.kill_signal().to_string());
    row("kill timeout", format!("{} ms", i.kill_timeout_ms));
    row("max memory", i.max_memory.map_or("-".into(), format::bytes));
    row("watch", i.watch.clone().unwrap_or_else(|| "-".into()));
    row(
        "env",
        if i.env_keys.is_empty() {
            "-".into()
        } else {
            i.env_keys.join(", ")
        },
    );
    row("created", format::timestamp(i.created_ms));
    if let Some(e) = &i.last_exit {
        row(
            "last exit",
            format!("{} at {}", e.description, format::timestamp(e.at_ms)),
        );
    }
    if let Some(e) = &v.error {
        row("last error", e.clone());
    }
    if let Some(r) = &i.errored_reason {
        row("errored", r.clone());
    }
    if let Some(at) = i.restart_at_ms {
        row("next restart", format::timestamp(at));
    }
    row(
        "log rotation",
        match (i.definition.max_log_size, i.definition.log_files) {
            (None, None) => "[logs] of config.toml".to_string(),
            (size, files) => format!(
                "past {}, keep {} (unset: [logs] of config.toml)",
                size.map_or("-".into(), |b| format::bytes(b.0)),
                files.map_or("-".into(), |n| n.to_string())
            ),
        },
    );
    row("out log", i.out_log.clone());
    row("err log", i.err_log.clone());
    if !i.events.is_empty() {
        println!("recent events:");
        for e in &i.events {
            println!(
                "  {}  {:<12} {}",
                format::timestamp(e.at_ms),
                e.kind,
                e.detail
            );
        }
    }
    Ok(())
}

pub async fn logs(a: LogsArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let lf = LineFilter::new(&a)?;
    let one = a.target.clone().filter(|t| t != "all");
    // (what to ask for, the name to print)
    let names: Vec<(String, String)> = match &one {
        Some(t) => vec![(t.clone(), t.clone())],
        None => {
            let list: Vec<ProcessView> = client.get("/daemon/list").await?;
            list.into_iter()
                .map(|v| (v.id.to_string(), v.name))
                .collect()
        }
    };
    if a.follow {
        return follow(&client, &names, one.is_none(), a.lines, &lf).await;
    }
    for (t, _) in &names {
        let r: LogsResponse = client
            .get(&format!("/daemon/logs/{t}?lines={}", a.lines))
            .await?;
        for (stream, path, lines) in [("out", &r.out_log, &r.out), ("err", &r.err_log, &r.err)] {
            if !lf.wants_stream(stream) {
                continue;
            }
            let plain = one.is_some() && !lf.json;
            if plain {
                let which = if stream == "out" { "stdout" } else { "stderr" };
                println!("==> {path} ({which}) <==");
            }
            for l in lines.iter().filter(|l| lf.keeps(stream, l)) {
                if plain {
                    println!("{l}");
                } else {
                    println!("{}", lf.render(&r.name, stream, l, &r.name));
                }
            }
        }
    }
    Ok(())
}

/// Prints the streams' events until they end: `out | line` / `err | line`
/// for one process, `name | line` for several (interleaved as they come).
async fn follow(
    client: &Client,
    targets: &[(String, String)],
    several: bool,
    lines: usize,
    lf: &LineFilter,
) -> Result<(), CliError> {
    use std::io::Write;
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<(String, String, String), CliError>>(256);
    for (t, name) in targets {
        let name = name.clone();
        let body = client
            .stream(&format!("/daemon/logs/{t}/stream?lines={lines}"))
            .await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut events = crate::client::SseReader::new(body);
            loop {
                let item = match events.next().await {
                    Ok(Some((event, data))) => Ok((name.clone(), event, data)),
                    Ok(None) => return,
                    Err(e) => Err(e.into()),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
    }
    drop(tx);
    while let Some(item) = rx.recv().await {
        let (name, event, data) = item?;
        if !lf.keeps(&event, &data) {
            continue;
        }
        let prefix = if several {
            name.as_str()
        } else {
            event.as_str()
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", lf.render(&name, &event, &data, prefix));
        let _ = out.flush();
    }
    Ok(())
}

pub async fn flush(a: FlushArgs) -> Result<(), CliError> {
    let targets = if a.targets.is_empty() {
        vec!["all".to_string()]
    } else {
        a.targets
    };
    let client = target(&a.remote)?;
    for t in &targets {
        let r: ActionResponse = client
            .post(
                "/daemon/action",
                &ActionRequest {
                    id: Target::parse(t),
                    action: ActionKind::Flush,
                },
            )
            .await?;
        for v in r.processes {
            println!("✔ emptied the logs of {} (id {})", v.name, v.id);
        }
    }
    Ok(())
}

pub async fn env(a: EnvArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let r: EnvResponse = client.get(&format!("/daemon/env/{}", a.target)).await?;
    for (k, v) in &r.env {
        println!("{k}={v}");
    }
    Ok(())
}

pub async fn save(a: SaveArgs) -> Result<(), CliError> {
    let (client, home, _) = local(&RestoreArgs::default())?;
    let dump: Dump = client.get("/daemon/dump").await?;
    let path = home.dump();
    if dump.processes.is_empty() && !a.force {
        let existing = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| toml::from_str::<ProcessFile>(&t).ok())
            .map_or(0, |f| f.process.len());
        if existing > 0 {
            return Err(CliError::Usage(format!(
                "no processes to save; {} holds {existing} and was kept (use --force to overwrite it with an empty list)",
                path.display()
            )));
        }
    }
    let text = toml::to_string_pretty(&ProcessFile {
        process: dump.processes.clone(),
    })?;
    let text =
        format!("# Written by `opm save`; `opm restore` brings these processes back.\n{text}");
    // The dump holds the processes' environments: 0600.
    write_atomic(&path, text.as_bytes(), 0o600)
        .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e))?;
    println!(
        "✔ saved {} processes to {}",
        dump.processes.len(),
        path.display()
    );
    Ok(())
}

pub async fn restore() -> Result<(), CliError> {
    let (client, home, started) = local(&RestoreArgs::default())?;
    if started {
        println!("✔ daemon started");
    }
    let path = home.dump();
    let saved = match std::fs::read_to_string(&path) {
        Ok(_) => read_process_file(&path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(CliError::io(format!("cannot read {}", path.display()), e)),
    };
    let current: Vec<ProcessView> = client.get("/daemon/list").await?;
    let mut create = Vec::new();
    let mut started_again = 0;
    for req in saved {
        let existing = req
            .name
            .as_ref()
            .and_then(|n| current.iter().find(|v| &v.name == n));
        match existing {
            Some(v) => {
                let wants_running = !req.stopped();
                if wants_running && matches!(v.status, Status::Stopped | Status::Errored) {
                    let _: ActionResponse = client
                        .post(
                            "/daemon/action",
                            &ActionRequest {
                                id: Target::Id(v.id),
                                action: ActionKind::Start,
                            },
                        )
                        .await?;
                    started_again += 1;
                }
            }
            // A saved process is stored even if its program is gone now:
            // it then shows the error instead of vanishing from the list.
            None => create.push(ProcessDef {
                unchecked: Some(true),
                ..req
            }),
        }
    }
    let created = create.len();
    if !create.is_empty() {
        let _: Vec<ProcessView> = client
            .post("/daemon/create", &CreateBody::Many(create))
            .await?;
    }
    let views: Vec<ProcessView> = client.get("/daemon/list").await?;
    println!(
        "✔ restored: {created} created from {}, {started_again} started again, {} processes in all",
        path.display(),
        views.len()
    );
    println!("{}", table(&views));
    Ok(())
}
