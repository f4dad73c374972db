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
use crate::definition::{EnvArg, ProcessDef, RestartPolicy};
use crate::fsutil::write_atomic;
use crate::model::{
    ActionKind, ActionRequest, ActionResponse, ApplyRequest, ApplyResponse, CreateBody, Dump,
    EnvResponse, LogsResponse, ProcessInfo, ProcessView, Status, Target,
};

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The process: its script and options (`crate::definition`).
    #[command(flatten)]
    pub def: ProcessDef,
    /// Which exits are restarted: always (default), on-failure (not exit code 0), never (= --no-autorestart)
    #[arg(long, value_enum, value_name = "POLICY")]
    pub restart: Option<RestartPolicy>,
    /// A variable K=V (repeatable), or the name of a set of a process file (`env_production`: --env production)
    #[arg(long = "env", value_name = "K=V|SET")]
    pub env: Vec<EnvArg>,
    /// With a process file: remove the processes that came from it before and are no longer in it
    #[arg(long)]
    pub prune: bool,
    /// With a process file: only these of its processes (comma-separated names)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The process to change
    #[arg(value_name = "ID|NAME")]
    pub target: String,
    /// The new definition's options (and, optionally, a new command)
    #[command(flatten)]
    pub def: ProcessDef,
    /// A variable K=V to set (repeatable)
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<EnvArg>,
    /// Bare: restart it now with the new definition (else it applies at its next restart). With a value: the restart policy (always, on-failure, never)
    #[arg(long, value_enum, value_name = "POLICY")]
    pub restart: Option<Option<RestartPolicy>>,
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Process ids, names, `all`, or a process file (its processes)
    #[arg(required = true, value_name = "ID|NAME|all|FILE")]
    pub targets: Vec<String>,
    /// Only these processes of a process file (comma-separated names)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// restart, reload: give the processes this shell's environment from now on
    #[arg(long)]
    pub update_env: bool,
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
    /// Only what differs from the daemon's own environment
    #[arg(long)]
    pub diff: bool,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Overwrite a saved list even with an empty one
    #[arg(long)]
    pub force: bool,
}

/// A process file (TOML, JSON or YAML) and `dump.toml`: a `process` list,
/// each a `ProcessDef` (the same keys as the API body), plus named
/// environment sets `env_<name>` chosen with `--env <name>`.
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

/// The formats a process file can be written in, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Toml,
    Json,
    Yaml,
}

fn file_format(path: &Path) -> Option<FileFormat> {
    match path.extension()?.to_str()? {
        "toml" => Some(FileFormat::Toml),
        "json" => Some(FileFormat::Json),
        "yaml" | "yml" => Some(FileFormat::Yaml),
        _ => None,
    }
}

/// A PM2 ecosystem file, by its name (`ecosystem.config.js`, `*.config.cjs`).
fn is_pm2_script(word: &str) -> bool {
    let file = Path::new(word)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("");
    [".config.js", ".config.cjs", ".config.mjs"]
        .iter()
        .any(|e| file.ends_with(e))
        || (file.starts_with("ecosystem") && file.ends_with("js"))
}

fn pm2_hint(path: &Path) -> CliError {
    CliError::Usage(format!(
        "{} is a PM2 ecosystem file: run `opm import {}` to convert it into an opm process file, then `opm start` that file",
        path.display(),
        path.display()
    ))
}

/// Reads a process file; `sets` are the named environments to lay over
/// each entry's `env` (in order). Entries get absolute working directories.
pub fn read_process_file(path: &Path, sets: &[String]) -> Result<Vec<ProcessDef>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("cannot read {}", path.display()), e))?;
    let invalid = |e: String| {
        CliError::Usage(format!(
            "{} is not a valid process file: {}",
            path.display(),
            e.trim_end()
        ))
    };
    let value: serde_json::Value = match file_format(path) {
        Some(FileFormat::Json) => {
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?
        }
        Some(FileFormat::Yaml) => {
            serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?
        }
        _ => toml::from_str(&text).map_err(|e| invalid(e.to_string()))?,
    };
    if value.get("apps").is_some() {
        return Err(pm2_hint(path));
    }
    let serde_json::Value::Object(mut top) = value else {
        return Err(invalid("it must hold a `process` list".into()));
    };
    let entries = match top.remove("process") {
        Some(serde_json::Value::Array(a)) => a,
        Some(_) => return Err(invalid("`process` must be a list".into())),
        None => Vec::new(),
    };
    if let Some(k) = top.keys().next() {
        return Err(invalid(format!(
            "unknown key `{k}` (a process file holds a `process` list)"
        )));
    }
    if entries.is_empty() {
        return Err(CliError::Usage(format!(
            "{} has no processes (a `process` list: [[process]] in TOML)",
            path.display()
        )));
    }
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => absolute(&current_dir()?, p),
        _ => current_dir()?,
    };
    let mut found_sets = vec![false; sets.len()];
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let serde_json::Value::Object(mut entry) = entry else {
            return Err(invalid(format!("process {} is not a table", i + 1)));
        };
        // `env_<set>` keys: named environments, laid over `env` when chosen.
        let named: Vec<String> = entry
            .keys()
            .filter(|k| k.starts_with("env_"))
            .cloned()
            .collect();
        let mut named_sets = std::collections::BTreeMap::new();
        for k in named {
            let v = entry.remove(&k).unwrap_or_default();
            let set: std::collections::BTreeMap<String, String> = serde_json::from_value(v)
                .map_err(|e| invalid(format!("process {}: {k}: {e}", i + 1)))?;
            named_sets.insert(k["env_".len()..].to_string(), set);
        }
        let mut def: ProcessDef = match serde_json::from_value(serde_json::Value::Object(entry)) {
            Ok(d) => d,
            Err(e) => {
                // TOML's own reading names the line.
                let located = (file_format(path) != Some(FileFormat::Json)
                    && file_format(path) != Some(FileFormat::Yaml))
                .then(|| toml::from_str::<ProcessFile>(&text).err())
                .flatten()
                .map(|t| t.to_string())
                .filter(|t| !t.contains("env_"));
                return Err(invalid(
                    located.unwrap_or_else(|| format!("process {}: {e}", i + 1)),
                ));
            }
        };
        for (j, set) in sets.iter().enumerate() {
            if let Some(vars) = named_sets.get(set) {
                found_sets[j] = true;
                def.env
                    .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out.push(rooted(def, &base));
    }
    if let Some(j) = found_sets.iter().position(|f| !f) {
        return Err(CliError::Usage(format!(
            "no process of {} has an environment named {:?} (an `env_{}` table)",
            path.display(),
            sets[j],
            sets[j]
        )));
    }
    Ok(out)
}

/// The name a file entry runs under: its `name`, else the one opm derives
/// from its command.
fn entry_name(def: &ProcessDef) -> String {
    if let Some(n) = &def.name {
        return n.clone();
    }
    let cwd = PathBuf::from(def.cwd.clone().unwrap_or_default());
    let mut resolved = def.clone();
    if resolved.interpreter.is_none() {
        resolved.script = crate::service::with_interpreter(def.script.trim(), &cwd);
    }
    crate::spec::derive_name(&resolved.command_line())
}

/// The entries of `--only` (all when empty); a name not in the file is an error.
fn narrowed(
    defs: Vec<ProcessDef>,
    only: &[String],
    file: &Path,
) -> Result<Vec<ProcessDef>, CliError> {
    if only.is_empty() {
        return Ok(defs);
    }
    for o in only {
        if !defs.iter().any(|d| &entry_name(d) == o) {
            return Err(CliError::Usage(format!(
                "--only {o}: {} has no process named {o:?}",
                file.display()
            )));
        }
    }
    Ok(defs
        .into_iter()
        .filter(|d| only.contains(&entry_name(d)))
        .collect())
}

/// Whether `target` names a process file to act on (by its extension).
fn as_process_file(target: &str) -> Option<&Path> {
    let p = Path::new(target);
    (file_format(p).is_some() && p.is_file()).then_some(p)
}

/// opm's own variables (its home, log level, crash points, what it gives
/// each child) and its secrets: never passed on as a caller's environment.
pub const OPM_OWN_VARS: &[&str] = &[
    "OPM_HOME",
    "OPM_LOG",
    "OPM_FAILPOINTS",
    "OPM_ID",
    "OPM_NAME",
    "OPM_SPAWN",
];

fn opm_own(key: &str) -> bool {
    OPM_OWN_VARS.contains(&key) || crate::SECRET_ENV_VARS.contains(&key)
}

/// The environment of the shell running this command, minus opm's own variables.
pub fn caller_env() -> crate::definition::CallerEnv {
    std::sync::Arc::new(std::env::vars().filter(|(k, _)| !opm_own(k)).collect())
}

pub async fn start(mut a: StartArgs) -> Result<(), CliError> {
    if let Some(policy) = a.restart.take() {
        a.def.restart = Some(policy);
    }
    // `opm start --watch app.js`: clap gives app.js to --watch (it takes an
    // optional value); with no script left, it is the script and --watch is bare.
    if a.def.script.trim().is_empty() {
        if let Some(last) = a.def.watch.last_mut().filter(|w| w.as_str() != ".") {
            a.def.script = std::mem::replace(last, ".".into());
        }
    }
    let script = a.def.script.trim().to_string();
    let first = script.split_whitespace().next().unwrap_or("").to_string();
    if is_pm2_script(&first) && Path::new(&first).is_file() {
        return Err(pm2_hint(Path::new(&first)));
    }
    let file = (file_format(Path::new(&script)).is_some() && Path::new(&script).exists())
        .then(|| PathBuf::from(&script));
    let mut sets = Vec::new();
    for e in std::mem::take(&mut a.env) {
        match e {
            EnvArg::Var(k, v) => a.def.env.push((k, v)),
            EnvArg::Set(s) => sets.push(s),
        }
    }
    if file.is_none() && (a.prune || !a.only.is_empty()) {
        return Err(CliError::Usage(
            "--prune and --only apply to a process file (.toml, .json, .yaml)".into(),
        ));
    }
    if file.is_none() && !sets.is_empty() {
        return Err(CliError::Usage(format!(
            "--env {} names an environment set, which comes from a process file's `env_{}`; for one variable give --env KEY=value",
            sets[0], sets[0]
        )));
    }
    // `opm start NAME|ID` of a process that exists starts it, as PM2 users expect.
    let single_word = !script.is_empty() && !script.contains(char::is_whitespace);
    if single_word && file.is_none() && !Path::new(&script).exists() {
        let client = target(&a.remote)?;
        let known = client
            .get::<ProcessInfo>(&format!("/daemon/info/{script}"))
            .await;
        if known.is_ok() {
            if a.def.has_options() || !a.def.env.is_empty() {
                return Err(CliError::Usage(format!(
                    "{script} exists already: options change it with `opm update {script} …` (add --restart to apply them now)"
                )));
            }
            return act(
                TargetArgs {
                    targets: vec![script],
                    only: Vec::new(),
                    update_env: false,
                    remote: a.remote,
                    format: a.format,
                },
                ActionKind::Start,
            )
            .await;
        }
    }
    if let Some(path) = file {
        if a.def.has_options() || !a.def.env.is_empty() {
            return Err(CliError::Usage(
                "options apply to one process: set them in the file (--env SET picks a named environment of it)".into(),
            ));
        }
        if a.prune && !a.only.is_empty() {
            return Err(CliError::Usage(
                "--prune applies to the whole file: leave out --only".into(),
            ));
        }
        let origin = absolute(&current_dir()?, &path);
        let defs = narrowed(read_process_file(&path, &sets)?, &a.only, &path)?;
        let client = target(&a.remote)?;
        let answer: ApplyResponse = client
            .post(
                "/daemon/apply",
                &ApplyRequest {
                    processes: defs,
                    origin: Some(origin.display().to_string()),
                    prune: a.prune,
                    restart: true,
                    // Once for the whole file (a thousand copies would pass
                    // the daemon's body limit).
                    caller_env: a.remote.server.is_none().then(caller_env),
                },
            )
            .await?;
        return print_applied(&answer, a.format);
    }
    if script.is_empty() {
        return Err(CliError::Usage(
            "the command is empty: give a command line or a script".into(),
        ));
    }
    let def = if a.remote.server.is_none() {
        let mut def = rooted(a.def, &current_dir()?);
        def.caller_env = Some(caller_env());
        def
    } else {
        // Another machine's paths: sent as given.
        a.def
    };
    let client = target(&a.remote)?;
    // Copies of a group come back as a list.
    let created: Vec<ProcessView> = if def.instances.is_some() {
        client
            .post("/daemon/create", &CreateBody::Many(vec![def]))
            .await?
    } else {
        vec![
            client
                .post("/daemon/create", &CreateBody::One(Box::new(def)))
                .await?,
        ]
    };
    print_started(&created, a.format)
}

/// Prints what an apply did: created, changed, unchanged, pruned.
fn print_applied(r: &ApplyResponse, format: Format) -> Result<(), CliError> {
    let failed = r
        .created
        .iter()
        .chain(&r.changed)
        .filter(|v| v.error.is_some() && v.status != Status::Online)
        .count();
    if format == Format::Json {
        print_json(r)?;
    } else {
        for v in &r.created {
            println!("✔ created {} (id {}): {}", v.name, v.id, v.status.as_str());
        }
        for v in &r.changed {
            println!("✔ changed {} (id {}): {}", v.name, v.id, v.status.as_str());
        }
        for v in &r.unchanged {
            println!(
                "✔ unchanged {} (id {}): {}",
                v.name,
                v.id,
                v.status.as_str()
            );
        }
        for n in &r.pruned {
            println!("✔ pruned {n}");
        }
        for v in r.created.iter().chain(&r.changed) {
            if let (Some(e), true) = (&v.error, v.status != Status::Online) {
                eprintln!("✘ {} (id {}) {e}", v.name, v.id);
            }
        }
        let all: Vec<ProcessView> = r
            .created
            .iter()
            .chain(&r.changed)
            .chain(&r.unchanged)
            .cloned()
            .collect();
        println!("{}", table(&all));
    }
    if failed > 0 {
        Err(CliError::Partial(failed))
    } else {
        Ok(())
    }
}

fn print_started(created: &[ProcessView], format: Format) -> Result<(), CliError> {
    if format == Format::Json {
        print_json(&created)?;
        let failed = created.iter().filter(|v| v.error.is_some()).count();
        return if failed > 0 {
            Err(CliError::Partial(failed))
        } else {
            Ok(())
        };
    }
    let mut failed = 0;
    for v in created {
        match (v.status, &v.error) {
            (Status::Online, _) => println!(
                "✔ started {} (id {}, pid {})",
                format::shown_name(v),
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
    println!("{}", table(created));
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
        .post(
            "/daemon/action",
            &ActionRequest {
                id: target,
                action,
                caller_env: None,
                signal: None,
                process_group: false,
            },
        )
        .await
}

/// The targets with each process file replaced by its processes' names
/// (narrowed by `--only`).
fn expand_targets(targets: &[String], only: &[String]) -> Result<Vec<String>, CliError> {
    let mut out = Vec::new();
    let mut files = 0;
    for t in targets {
        match as_process_file(t) {
            Some(path) => {
                files += 1;
                let defs = narrowed(read_process_file(path, &[])?, only, path)?;
                out.extend(defs.iter().map(entry_name));
            }
            None => out.push(t.clone()),
        }
    }
    if files == 0 && !only.is_empty() {
        return Err(CliError::Usage(
            "--only narrows a process file: give the file too".into(),
        ));
    }
    Ok(out)
}

pub async fn act(a: TargetArgs, action: ActionKind) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let targets = expand_targets(&a.targets, &a.only)?;
    let caller_env = match (a.update_env, action) {
        (false, _) => None,
        (true, ActionKind::Restart | ActionKind::Reload) => Some(caller_env()),
        (true, _) => {
            return Err(CliError::Usage(
                "--update-env goes with restart or reload".into(),
            ))
        }
    };
    let mut shown: Vec<ProcessView> = Vec::new();
    let mut removed = Vec::new();
    let mut reloads = Vec::new();
    let mut failed = 0;
    for t in &targets {
        let req = ActionRequest {
            id: Target::parse(t),
            action,
            caller_env: caller_env.clone(),
            signal: None,
            process_group: false,
        };
        match client
            .post::<_, ActionResponse>("/daemon/action", &req)
            .await
        {
            Ok(r) => {
                for v in r.processes {
                    if !shown.iter().any(|s| s.id == v.id) {
                        shown.push(v);
                    }
                }
                removed.extend(r.removed);
                reloads.extend(r.reloads);
            }
            Err(e) => {
                eprintln!("✘ {t}: {e}");
                failed += 1;
            }
        }
    }
    if a.format == Format::Json {
        print_json(
            &serde_json::json!({ "action": action, "processes": shown, "removed": removed, "reloads": reloads }),
        )?;
    } else {
        for r in &reloads {
            println!("{}", reload_line(r));
        }
        for id in &removed {
            println!("✔ removed process {id}");
        }
        for v in &shown {
            let done = match action {
                ActionKind::Stop => v.status == Status::Stopped,
                ActionKind::Remove => false,
                ActionKind::Reset | ActionKind::Signal => true,
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
    for r in reloads.iter().filter(|r| r.outcome == "failed") {
        eprintln!("✘ reload {} (id {}) failed: {}", r.name, r.id, r.detail);
        failed += 1;
    }
    if failed > 0 {
        Err(CliError::Partial(failed))
    } else {
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The signal: a name (SIGUSR2, USR2, any case) or a number (12)
    #[arg(value_name = "SIGNAL")]
    pub signal: crate::definition::Signal,
    /// Process ids, names or `all` (the running ones)
    #[arg(required = true, value_name = "ID|NAME|all")]
    pub targets: Vec<String>,
    /// Send it to every process of the group (the program and what it started), not only the main process
    #[arg(long)]
    pub process_group: bool,
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

/// `opm signal SIG NAME...`: the signal to each process's main pid (or,
/// with `--group`, its whole process group).
pub async fn signal(a: SignalArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let mut shown: Vec<ProcessView> = Vec::new();
    let mut failed = 0;
    for t in &a.targets {
        let req = ActionRequest {
            id: Target::parse(t),
            action: ActionKind::Signal,
            caller_env: None,
            signal: Some(a.signal),
            process_group: a.process_group,
        };
        match client
            .post::<_, ActionResponse>("/daemon/action", &req)
            .await
        {
            Ok(r) => shown.extend(r.processes),
            Err(e) => {
                eprintln!("✘ {t}: {e}");
                failed += 1;
            }
        }
    }
    if a.format == Format::Json {
        print_json(
            &serde_json::json!({ "action": "signal", "signal": a.signal, "processes": shown }),
        )?;
    } else {
        let to = if a.process_group {
            "the process group of"
        } else {
            "pid"
        };
        for v in &shown {
            println!(
                "✔ sent {} to {} (id {}): {to} {}",
                a.signal,
                v.name,
                v.id,
                v.pid.map_or("-".into(), |p| p.to_string())
            );
        }
    }
    if failed > 0 {
        Err(CliError::Partial(failed))
    } else {
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct PidArgs {
    /// Process ids or names (default: every process)
    #[arg(value_name = "ID|NAME|all")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
}

/// `opm pid [NAME...]`: the pid of each running process named, one per
/// line and nothing else, for scripts (`kill -HUP $(opm pid api)`). Exits 1
/// when a named process has no running process (said on stderr).
pub async fn pid(a: PidArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let views: Vec<ProcessView> = client.get("/daemon/list").await?;
    let all = a.targets.is_empty() || a.targets.iter().any(|t| t == "all");
    let mut not_running = 0;
    if all {
        for v in &views {
            if let Some(p) = v.pid {
                println!("{p}");
            }
        }
        return Ok(());
    }
    for t in &a.targets {
        let named: Vec<&ProcessView> = views
            .iter()
            .filter(|v| v.name == *t || t.parse::<u64>() == Ok(v.id))
            .collect();
        if named.is_empty() {
            return Err(CliError::Usage(format!("no process with id or name {t}")));
        }
        for v in named {
            match v.pid {
                Some(p) => println!("{p}"),
                None => {
                    eprintln!(
                        "✘ {} (id {}) has no running process: it is {}",
                        v.name,
                        v.id,
                        format::status_text(v)
                    );
                    not_running += 1;
                }
            }
        }
    }
    if not_running > 0 {
        Err(CliError::Partial(not_running))
    } else {
        Ok(())
    }
}

/// One line saying how a process was reloaded.
fn reload_line(r: &crate::model::ReloadReport) -> String {
    let pid = |p: Option<u32>| p.map_or("-".to_string(), |p| p.to_string());
    match r.outcome.as_str() {
        "handover" => format!(
            "✔ reload {} (id {}): new run pid {} ready, then old pid {} stopped (no downtime)",
            r.name,
            r.id,
            pid(r.new_pid),
            pid(r.old_pid)
        ),
        "restart" => format!(
            "↻ reload {} (id {}) was a restart: {}",
            r.name, r.id, r.detail
        ),
        _ => format!("✘ reload {} (id {}): {}", r.name, r.id, r.detail),
    }
}

pub async fn list(a: ListArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    if a.format == Format::Json {
        // The daemon's bytes, laid out, not decoded and encoded again.
        return format::print_json_bytes(&client.get_json_bytes("/daemon/list").await?);
    }
    let views: Vec<ProcessView> = client.get("/daemon/list").await?;
    println!("{}", table(&views));
    Ok(())
}

/// The watched paths, `.` named as the working directory; `-` for none.
fn watch_row(def: &ProcessDef) -> String {
    if def.watch.is_empty() {
        return "-".into();
    }
    def.watch
        .iter()
        .map(|w| match w.as_str() {
            "." => ". (the working directory)".to_string(),
            w => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    if let Some(k) = v.instance {
        let ids: Vec<String> = i.group.iter().map(|id| id.to_string()).collect();
        row(
            "instance",
            format!("{k} of {} (ids {})", v.instances, ids.join(", ")),
        );
        if let Some(var) = &i.definition.increment_var {
            row("increment var", var.clone());
        }
    }
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
    let def = &i.definition;
    row(
        "restart",
        match def.stop_exit_codes.as_slice() {
            [] => def.restart_policy().to_string(),
            codes => format!(
                "{}, never after exit code {}",
                def.restart_policy(),
                codes
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    );
    row(
        "restart delay",
        match def.restart_delay {
            Some(d) => format!(
                "{d} before each restart (doubling in a crash loop, up to {})",
                crate::definition::Millis(crate::reconcile::plan::BACKOFF_CAP_MS.max(d.0))
            ),
            None => format!(
                "none: the first restart is at once, a crash loop waits {} doubling, up to {}",
                crate::definition::Millis(i.restart_delay_ms),
                crate::definition::Millis(crate::reconcile::plan::BACKOFF_CAP_MS)
            ),
        },
    );
    row(
        "crash loop",
        format!(
            "errored after {} quick restarts (exits within {} of starting)",
            i.max_restarts,
            crate::definition::Millis(i.min_uptime_ms)
        ),
    );
    if let Some(cron) = &def.cron_restart {
        row(
            "cron restart",
            match i.cron_next_ms {
                Some(next) => format!("{cron:?}, next at {}", format::timestamp(next)),
                None => format!("{cron:?}, no next match"),
            },
        );
    }
    row("kill signal", i.definition.kill_signal().to_string());
    row("kill timeout", format!("{} ms", i.kill_timeout_ms));
    row("max memory", i.max_memory.map_or("-".into(), format::bytes));
    row("watch", watch_row(&i.definition));
    if !i.definition.watch.is_empty() {
        row("watch ignore", i.definition.ignore_watch.join(", "));
        row(
            "watch delay",
            i.definition.watch_delay_ms().to_string() + " ms",
        );
    }
    if i.definition.user.is_some() || i.definition.group.is_some() {
        row(
            "user",
            i.definition.user.clone().unwrap_or_else(|| "-".into()),
        );
        row(
            "group",
            i.definition
                .group
                .clone()
                .unwrap_or_else(|| "(the user's primary group)".into()),
        );
    }
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
    if let Some(code) = v.exit_code {
        row("exit code", code.to_string());
    }
    if let Some(at) = v.restart_at_ms {
        row("next restart", format::timestamp(at));
    }
    if let Some(r) = &i.readiness {
        row("readiness", r.clone());
    }
    if let Some(s) = &i.notify_status {
        row("notify status", s.clone());
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
    if i.out_log == i.err_log {
        row("log (merged)", i.out_log.clone());
    } else {
        row("out log", i.out_log.clone());
        row("err log", i.err_log.clone());
    }
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
        // Merged logs (one file): its lines are read as out, whatever
        // stream wrote them.
        let merged = r.out_log == r.err_log;
        if merged && !lf.out && lf.err {
            eprintln!(
                "note: {} writes stdout and stderr to one file ({}): its lines are read as out, so --err shows none of them",
                r.name, r.out_log
            );
        }
        for (stream, path, lines) in [("out", &r.out_log, &r.out), ("err", &r.err_log, &r.err)] {
            if !lf.wants_stream(stream) || (merged && stream == "err") {
                continue;
            }
            let plain = one.is_some() && !lf.json;
            if plain {
                let which = match stream {
                    "out" if merged => "stdout and stderr",
                    "out" => "stdout",
                    _ => "stderr",
                };
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
                    caller_env: None,
                    signal: None,
                    process_group: false,
                },
            )
            .await?;
        for v in r.processes {
            println!("✔ emptied the logs of {} (id {})", v.name, v.id);
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ReloadLogsArgs {
    /// Print the daemon's answer as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// `opm reload-logs`: one line per log that was not already in place, and
/// a count of those that were; exit 1 when a log is left writing a file
/// that is not its configured one.
pub async fn reload_logs(a: ReloadLogsArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let r: crate::model::ReloadLogsResponse = client
        .post("/daemon/reload-logs", &serde_json::json!({}))
        .await?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| CliError::Usage(e.to_string()))?
        );
    }
    let mut left = 0;
    for l in r.logs.iter().filter(|l| l.outcome != "same") {
        let mark = if l.outcome == "moved" { "✔" } else { "✘" };
        if l.outcome != "moved" {
            left += 1;
        }
        if !a.json {
            println!("{mark} {} ({}): {}", l.name, l.stream, l.detail);
        }
    }
    let same = r.logs.iter().filter(|l| l.outcome == "same").count();
    if !a.json {
        println!(
            "{same} of {} logs of running processes already write their configured files",
            r.logs.len()
        );
    }
    if left > 0 {
        return Err(CliError::Usage(format!(
            "{left} log(s) still go to another file than the configured one (see above)"
        )));
    }
    Ok(())
}

pub async fn env(a: EnvArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let r: EnvResponse = client.get(&format!("/daemon/env/{}", a.target)).await?;
    for (k, v) in if a.diff { &r.differs } else { &r.full } {
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
        Ok(_) => read_process_file(&path, &[])?,
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
                                // A group is started whole.
                                id: match v.instance {
                                    Some(_) => Target::Name(v.name.clone()),
                                    None => Target::Id(v.id),
                                },
                                action: ActionKind::Start,
                                caller_env: None,
                                signal: None,
                                process_group: false,
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

/// `opm update NAME [SCRIPT] [options]`: the stored definition with the
/// given options laid over it, applied through `/daemon/apply` (at once
/// with `--restart`).
pub async fn update(a: UpdateArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let info: ProcessInfo = client.get(&format!("/daemon/info/{}", a.target)).await?;
    let mut stored = serde_json::to_value(&info.definition)?;
    let mut given = a.def;
    // `--restart` alone restarts now; `--restart POLICY` sets the policy.
    let restart_now = a.restart == Some(None);
    if let Some(Some(policy)) = a.restart {
        given.restart = Some(policy);
    }
    for e in a.env {
        match e {
            EnvArg::Var(k, v) => given.env.push((k, v)),
            EnvArg::Set(s) => {
                return Err(CliError::Usage(format!(
                    "--env {s}: named sets come from a process file (`opm start FILE --env {s}`); here give --env KEY=value"
                )))
            }
        }
    }
    if given.name.is_some() {
        return Err(CliError::Usage(
            "a process keeps its name: remove it and start it again to rename it".into(),
        ));
    }
    let mut env: std::collections::BTreeMap<String, String> =
        info.definition.env.iter().cloned().collect();
    env.extend(std::mem::take(&mut given.env));
    if given.cwd.is_some() && a.remote.server.is_none() {
        given = rooted(given, &current_dir()?);
    }
    let given = serde_json::to_value(&given)?;
    if let (Some(s), Some(g)) = (stored.as_object_mut(), given.as_object()) {
        // `restart` and `autorestart` say the same thing: the one given wins.
        for (one, other) in [("restart", "autorestart"), ("autorestart", "restart")] {
            if g.contains_key(one) && !g.contains_key(other) {
                s.remove(other);
            }
        }
        for (k, v) in g {
            if k == "script" && v.as_str().is_some_and(|t| t.trim().is_empty()) {
                continue;
            }
            s.insert(k.clone(), v.clone());
        }
        s.insert("env".into(), serde_json::to_value(&env).unwrap_or_default());
    }
    let def: ProcessDef =
        serde_json::from_value(stored).map_err(|e| CliError::Usage(e.to_string()))?;
    let answer: ApplyResponse = client
        .post(
            "/daemon/apply",
            &ApplyRequest {
                processes: vec![def],
                origin: None,
                prune: false,
                restart: restart_now,
                caller_env: None,
            },
        )
        .await?;
    if a.format == Format::Json {
        return print_json(&answer);
    }
    for v in &answer.changed {
        if restart_now {
            println!(
                "✔ updated {} (id {}) and restarted it: {}",
                v.name,
                v.id,
                v.status.as_str()
            );
        } else {
            println!(
                "✔ updated {} (id {}); it applies at its next restart (`opm restart {}`, or `opm update --restart`)",
                v.name, v.id, v.name
            );
        }
    }
    for v in &answer.unchanged {
        println!(
            "✔ {} (id {}) already has this definition: nothing changed",
            v.name, v.id
        );
    }
    Ok(())
}
