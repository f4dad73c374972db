//! PM2 ecosystem files into opm process files (`opm import`): a pure
//! conversion from the ecosystem's JSON value (what `node` printed for an
//! `ecosystem.config.js`, or a `.json`/`.yaml` file as read) to a list of
//! `ProcessDef`s with their named environments, plus a note for every key
//! that was not converted. Reading files and running `node` is the CLI's
//! (`cli::import`).
//!
//! Every PM2 key goes through one table, `PM2_KEYS`: an opm key and how its
//! value converts, or the reason it is not converted. When `ProcessDef`
//! gains an option (instances, cron_restart, user…), its row turns from
//! `Unsupported` into `To` and nothing else changes: each converted value is
//! checked by reading it into a `ProcessDef`, so a row can only name a key
//! opm accepts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::definition::ProcessDef;

/// What becomes of one PM2 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// Converted into this opm key, by this rule.
    To(&'static str, Conv),
    /// Nothing to write: opm does this already (e.g. `exec_mode = "fork"`).
    Same(&'static str),
    /// Not converted, for this reason (listed on stderr).
    Unsupported(&'static str),
}

/// How a PM2 value becomes an opm value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    /// A string (a number is written as its digits).
    Text,
    /// The value as it is: opm's own reading decides (durations as numbers
    /// of milliseconds or "2s", sizes as bytes or "100M", signals, counts).
    Value,
    /// `true`/`false`, or the same as a string.
    Bool,
    /// A list of words: an array, or a string split as a shell would.
    Words,
    /// One string: an array joined with spaces, or a string.
    Joined,
    /// `{ NAME: value }`, values written as strings.
    Env,
    /// `true` (the working directory), a path, or a list of paths.
    Watch,
    /// A program; `"none"` (PM2: run the script itself) writes nothing.
    Interpreter,
    /// `"fork"` is what opm does; `"cluster"` is not converted.
    ExecMode,
    /// The working directory (made absolute when the output lives elsewhere).
    Cwd,
}

/// Every PM2 app key opm knows, in PM2's documentation order. `env_<name>`
/// (a named environment) is handled apart: it becomes `env_<name>` of the
/// process file, chosen with `opm start FILE --env <name>`.
pub const PM2_KEYS: &[(&str, Row)] = &[
    // General
    ("name", Row::To("name", Conv::Text)),
    ("script", Row::To("script", Conv::Text)),
    ("cwd", Row::To("cwd", Conv::Cwd)),
    ("args", Row::To("args", Conv::Words)),
    ("interpreter", Row::To("interpreter", Conv::Interpreter)),
    (
        "exec_interpreter",
        Row::To("interpreter", Conv::Interpreter),
    ),
    (
        "interpreter_args",
        Row::To("interpreter_args", Conv::Joined),
    ),
    ("node_args", Row::To("interpreter_args", Conv::Joined)),
    // Advanced
    ("instances", Row::To("instances", Conv::Value)),
    ("exec_mode", Row::To("", Conv::ExecMode)),
    ("watch", Row::To("watch", Conv::Watch)),
    ("ignore_watch", Row::To("ignore_watch", Conv::Words)),
    ("watch_delay", Row::To("watch_delay", Conv::Value)),
    ("max_memory_restart", Row::To("max_memory", Conv::Value)),
    ("env", Row::To("env", Conv::Env)),
    ("increment_var", Row::To("increment_var", Conv::Text)),
    (
        "instance_var",
        Row::Unsupported("opm names the index OPM_INSTANCE and NODE_APP_INSTANCE (no other name)"),
    ),
    (
        "filter_env",
        Row::Unsupported("opm has no filter of the caller's environment"),
    ),
    (
        "source_map_support",
        Row::Unsupported("a Node.js option of PM2's own launcher"),
    ),
    (
        "disable_source_map_support",
        Row::Unsupported("a Node.js option of PM2's own launcher"),
    ),
    (
        "namespace",
        Row::Unsupported("opm has no namespaces (names are global)"),
    ),
    // Logs: the paths as they are (relative ones are taken from the cwd).
    ("out_file", Row::To("out_file", Conv::Text)),
    ("output", Row::To("out_file", Conv::Text)),
    ("error_file", Row::To("err_file", Conv::Text)),
    ("err_file", Row::To("err_file", Conv::Text)),
    ("error", Row::To("err_file", Conv::Text)),
    (
        "log_file",
        Row::Unsupported("opm keeps no combined log file"),
    ),
    // PM2's merge_logs joins the files of a cluster's instances; opm's
    // joins a process's stdout and stderr: not the same wish.
    (
        "merge_logs",
        Row::Unsupported("PM2's merge_logs joins instances' files; opm's merge_logs (set it yourself if wanted) joins stdout and stderr"),
    ),
    (
        "combine_logs",
        Row::Unsupported("PM2's combine_logs joins instances' files; opm's merge_logs (set it yourself if wanted) joins stdout and stderr"),
    ),
    (
        "log_date_format",
        Row::Unsupported("opm stamps log lines itself (`opm logs --json` has the times)"),
    ),
    (
        "time",
        Row::Unsupported("opm stamps log lines itself (`opm logs --json` has the times)"),
    ),
    (
        "log_type",
        Row::Unsupported("opm stamps log lines itself (`opm logs --json` has the times)"),
    ),
    (
        "pid_file",
        Row::Unsupported("opm writes no pid files (`opm info NAME` shows the pid)"),
    ),
    // Control flow
    ("min_uptime", Row::To("min_uptime", Conv::Value)),
    ("listen_timeout", Row::To("listen_timeout", Conv::Value)),
    ("kill_timeout", Row::To("kill_timeout", Conv::Value)),
    ("kill_signal", Row::To("kill_signal", Conv::Value)),
    (
        "shutdown_with_message",
        Row::Unsupported("opm stops a process with a signal (kill_signal)"),
    ),
    // PM2's wait_ready waits for `process.send('ready')` over its IPC
    // channel, which opm does not open: carried over, the app would stay
    // `starting`.
    (
        "wait_ready",
        Row::Unsupported("PM2's wait_ready waits for process.send('ready') (IPC), which opm has no channel for: have the app send READY=1 to $NOTIFY_SOCKET and set wait_ready, or set ready_port"),
    ),
    ("max_restarts", Row::To("max_restarts", Conv::Value)),
    ("restart_delay", Row::To("restart_delay", Conv::Value)),
    (
        "exp_backoff_restart_delay",
        Row::To("restart_delay", Conv::Value),
    ),
    ("autorestart", Row::To("autorestart", Conv::Bool)),
    ("stop_exit_codes", Row::To("stop_exit_codes", Conv::Value)),
    ("cron_restart", Row::To("cron_restart", Conv::Text)),
    ("cron", Row::To("cron_restart", Conv::Text)),
    (
        "vizion",
        Row::Unsupported("opm reads no version-control metadata"),
    ),
    (
        "post_update",
        Row::Unsupported("opm reads no version-control metadata"),
    ),
    (
        "force",
        Row::Unsupported("a start-time flag in opm (`opm start --force`), not a file key"),
    ),
    (
        "treekill",
        Row::Same("opm always signals the whole process group"),
    ),
    (
        "kill_retry_time",
        Row::Unsupported("opm sends SIGKILL once after kill_timeout"),
    ),
    // Users.
    ("uid", Row::To("user", Conv::Text)),
    ("user", Row::To("user", Conv::Text)),
    ("gid", Row::To("group", Conv::Text)),
    // Other
    (
        "append_env_to_name",
        Row::Unsupported("opm names a process once (`name`)"),
    ),
    (
        "node_version",
        Row::Unsupported("give the interpreter's path instead (`interpreter`)"),
    ),
    ("automation", Row::Unsupported("PM2's monitoring service")),
    ("pmx", Row::Unsupported("PM2's monitoring service")),
    (
        "autodump",
        Row::Same("opm stores every change at once (no dump needed)"),
    ),
    (
        "port",
        Row::Unsupported("opm does not pass PORT by itself: set it in env"),
    ),
];

/// The row of a PM2 key, if opm knows the key.
pub fn row(key: &str) -> Option<Row> {
    PM2_KEYS.iter().find(|(k, _)| *k == key).map(|(_, r)| *r)
}

/// A key that was not converted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The app's name (or `apps[N]` when it has none).
    pub app: String,
    pub key: String,
    /// The value left out, as it reads in JSON.
    pub value: String,
    pub reason: String,
}

/// One converted app: its definition and its named environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub def: ProcessDef,
    /// `production` → the variables of `env_production`.
    pub sets: BTreeMap<String, BTreeMap<String, String>>,
}

/// What a conversion gives: the entries and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub entries: Vec<Entry>,
    pub notes: Vec<Note>,
}

/// Converts an ecosystem (`{ apps: [...] }` or a bare list of apps).
/// `base`: when the output file does not live in the ecosystem file's
/// folder, that folder, so relative working directories stay right.
pub fn convert(eco: &Value, base: Option<&Path>) -> Result<Converted, String> {
    let mut notes = Vec::new();
    let apps = match eco {
        Value::Array(a) => a,
        Value::Object(top) => {
            let Some(apps) = top.get("apps") else {
                return Err(
                    "not a PM2 ecosystem file: it has no `apps` list (module.exports = { apps: [...] })"
                        .into(),
                );
            };
            let Value::Array(apps) = apps else {
                return Err(format!("`apps` must be a list of apps, not {}", kind(apps)));
            };
            for k in top.keys().filter(|k| *k != "apps") {
                let reason = if k == "deploy" {
                    "opm does not deploy over ssh: run `opm start FILE` on each machine"
                } else {
                    "not a PM2 ecosystem key opm knows"
                };
                notes.push(Note {
                    app: String::new(),
                    key: k.clone(),
                    value: short(&top[k]),
                    reason: reason.into(),
                });
            }
            apps
        }
        other => {
            return Err(format!(
                "not a PM2 ecosystem file: expected {{ apps: [...] }} or a list of apps, found {}",
                kind(other)
            ))
        }
    };
    if apps.is_empty() {
        return Err("the `apps` list is empty: nothing to convert".into());
    }
    let mut entries = Vec::with_capacity(apps.len());
    for (i, app) in apps.iter().enumerate() {
        let Value::Object(app) = app else {
            return Err(format!(
                "apps[{i}] must be an app ({{ name, script, … }}), not {}",
                kind(app)
            ));
        };
        let label = match app.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
            _ => format!("apps[{i}]"),
        };
        entries.push(convert_app(app, &label, base, &mut notes)?);
    }
    Ok(Converted { entries, notes })
}

fn convert_app(
    app: &Map<String, Value>,
    label: &str,
    base: Option<&Path>,
    notes: &mut Vec<Note>,
) -> Result<Entry, String> {
    let bad = |key: &str, why: String| format!("app {label:?}: {key}: {why}");
    let mut out = Map::new();
    // Which PM2 key wrote each opm key, to report a second one.
    let mut written_by: BTreeMap<&str, &str> = BTreeMap::new();
    let mut sets = BTreeMap::new();
    let mut note = |key: &str, value: &Value, reason: String| {
        notes.push(Note {
            app: label.to_string(),
            key: key.to_string(),
            value: short(value),
            reason,
        })
    };
    for (key, value) in app {
        if let Some(set) = key.strip_prefix("env_") {
            if set.is_empty()
                || !set
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                note(
                    key,
                    value,
                    "not a name `opm start --env NAME` can choose".into(),
                );
                continue;
            }
            sets.insert(set.to_string(), env_map(value).map_err(|e| bad(key, e))?);
            continue;
        }
        let Some(row) = row(key) else {
            note(key, value, "not a PM2 app key opm knows".into());
            continue;
        };
        let (opm_key, conv) = match row {
            Row::Same(_) => continue,
            Row::Unsupported(reason) => {
                // `false` and null ask for what opm does anyway (no
                // readiness wait, no merged logs…): nothing is lost.
                if !value.is_null() && *value != Value::Bool(false) {
                    note(key, value, reason.into());
                }
                continue;
            }
            Row::To(opm_key, conv) => (opm_key, conv),
        };
        let converted = match conv {
            Conv::Text => match value {
                Value::String(s) => Some(Value::String(s.clone())),
                Value::Number(n) => Some(Value::String(n.to_string())),
                Value::Null => None,
                other => {
                    return Err(bad(
                        key,
                        format!("expected a string, found {}", kind(other)),
                    ))
                }
            },
            Conv::Value => (!value.is_null()).then(|| value.clone()),
            Conv::Bool => match value {
                Value::Bool(b) => Some(Value::Bool(*b)),
                Value::String(s) if s == "true" || s == "false" => Some(Value::Bool(s == "true")),
                Value::Null => None,
                other => {
                    return Err(bad(
                        key,
                        format!("expected true or false, found {}", short(other)),
                    ))
                }
            },
            Conv::Words => match value {
                Value::String(s) => Some(Value::from(split_words(s).map_err(|e| bad(key, e))?)),
                Value::Array(a) => Some(Value::from(
                    a.iter()
                        .map(|w| {
                            scalar(w).ok_or_else(|| {
                                bad(key, format!("a word must be a string, found {}", kind(w)))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                )),
                Value::Null => None,
                other => {
                    return Err(bad(
                        key,
                        format!("expected a string or a list, found {}", kind(other)),
                    ))
                }
            },
            Conv::Joined => match value {
                Value::String(s) => Some(Value::String(s.clone())),
                Value::Array(a) => Some(Value::String(
                    a.iter()
                        .map(|w| {
                            scalar(w).ok_or_else(|| {
                                bad(key, format!("a word must be a string, found {}", kind(w)))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .join(" "),
                )),
                Value::Null => None,
                other => {
                    return Err(bad(
                        key,
                        format!("expected a string or a list, found {}", kind(other)),
                    ))
                }
            },
            Conv::Env => Some(Value::from(
                env_map(value)
                    .map_err(|e| bad(key, e))?
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect::<Map<_, _>>(),
            )),
            Conv::Watch => match value {
                Value::Bool(true) => Some(Value::String(".".into())),
                Value::Bool(false) | Value::Null => None,
                Value::String(s) => Some(Value::String(s.clone())),
                Value::Array(paths) => {
                    let paths = paths
                        .iter()
                        .map(|p| match p {
                            Value::String(s) => Ok(s.clone()),
                            other => Err(bad(
                                key,
                                format!("a path must be a string, found {}", kind(other)),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    (!paths.is_empty()).then(|| Value::from(paths))
                }
                other => {
                    return Err(bad(
                        key,
                        format!(
                            "expected true, a path or a list of paths, found {}",
                            kind(other)
                        ),
                    ))
                }
            },
            Conv::Interpreter => match value {
                Value::String(s) if s == "none" || s.trim().is_empty() => None,
                Value::String(s) => Some(Value::String(s.clone())),
                Value::Null => None,
                other => {
                    return Err(bad(
                        key,
                        format!("expected a program, found {}", kind(other)),
                    ))
                }
            },
            Conv::ExecMode => {
                match value {
                    Value::String(s) if s == "fork" || s == "fork_mode" => {}
                    Value::String(s) if s == "cluster" || s == "cluster_mode" => note(
                        key,
                        value,
                        "opm runs each process on its own (no Node.js cluster module); a shared port needs SO_REUSEPORT in the app".into(),
                    ),
                    Value::Null => {}
                    other => return Err(bad(key, format!("expected \"fork\" or \"cluster\", found {}", short(other)))),
                }
                None
            }
            Conv::Cwd => match value {
                Value::String(s) => Some(Value::String(rebased(s, base))),
                Value::Null => None,
                other => {
                    return Err(bad(
                        key,
                        format!("expected a folder, found {}", kind(other)),
                    ))
                }
            },
        };
        let Some(converted) = converted else { continue };
        if let Some(first) = written_by.get(opm_key) {
            note(
                key,
                value,
                format!("{first} is given too, and wins (both set opm's {opm_key})"),
            );
            continue;
        }
        // The value must read as opm reads it: the same check `opm start` makes.
        let probe = serde_json::json!({ "script": "x", opm_key: converted.clone() });
        if let Err(e) = serde_json::from_value::<ProcessDef>(probe) {
            return Err(bad(
                key,
                format!("{} is not a value opm takes: {e}", short(value)),
            ));
        }
        written_by.insert(opm_key, key);
        out.insert(opm_key.to_string(), converted);
    }
    match out.get("script") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return Err(format!(
                "app {label:?} has no `script` (the program or file to run)"
            ))
        }
    }
    if base.is_some() && !out.contains_key("cwd") {
        if let Some(b) = base {
            out.insert("cwd".into(), Value::String(b.display().to_string()));
        }
    }
    let def: ProcessDef =
        serde_json::from_value(Value::Object(out)).map_err(|e| format!("app {label:?}: {e}"))?;
    def.check().map_err(|e| format!("app {label:?}: {e}"))?;
    Ok(Entry { def, sets })
}

/// A relative folder of the ecosystem file, seen from `base` (its folder)
/// when the output lives elsewhere.
fn rebased(dir: &str, base: Option<&Path>) -> String {
    match base {
        Some(b) if !Path::new(dir).is_absolute() => b.join(dir).display().to_string(),
        _ => dir.to_string(),
    }
}

/// `{ NAME: value }` with string, number or boolean values.
fn env_map(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(vars) = value else {
        return Err(format!(
            "expected {{ NAME: value, … }}, found {}",
            kind(value)
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in vars {
        if v.is_null() {
            continue;
        }
        let v = scalar(v).ok_or_else(|| {
            format!(
                "{k} must be a string, a number or true/false, found {}",
                kind(v)
            )
        })?;
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// A string, number or boolean as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string split into words as a POSIX shell would (quotes, backslashes),
/// without expansions.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("{s:?} has an unclosed ' quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("{s:?} has an unclosed \" quote")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("{s:?} has an unclosed \" quote")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value as it reads in a message, cut when long.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// One `[[process]]` as written: the definition's keys, then its named
/// environments (`env_production = { … }`).
#[derive(Serialize)]
struct OutEntry<'a> {
    #[serde(flatten)]
    def: &'a ProcessDef,
    #[serde(flatten)]
    sets: BTreeMap<String, &'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct OutFile<'a> {
    process: Vec<OutEntry<'a>>,
}

/// The formats an opm process file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Toml,
    Json,
    Yaml,
}

impl OutFormat {
    /// The format a file's extension names.
    pub fn of(path: &Path) -> Option<OutFormat> {
        match path.extension()?.to_str()? {
            "toml" => Some(OutFormat::Toml),
            "json" => Some(OutFormat::Json),
            "yaml" | "yml" => Some(OutFormat::Yaml),
            _ => None,
        }
    }
}

/// The process file's text.
pub fn write(entries: &[Entry], format: OutFormat) -> Result<String, String> {
    let file = OutFile {
        process: entries
            .iter()
            .map(|e| OutEntry {
                def: &e.def,
                sets: e
                    .sets
                    .iter()
                    .map(|(k, v)| (format!("env_{k}"), v))
                    .collect(),
            })
            .collect(),
    };
    match format {
        OutFormat::Toml => toml::to_string_pretty(&file).map_err(|e| e.to_string()),
        OutFormat::Json => serde_json::to_string_pretty(&file)
            .map(|t| t + "\n")
            .map_err(|e| e.to_string()),
        OutFormat::Yaml => serde_yaml::to_string(&file).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn eco() -> Value {
        json!({
            "apps": [{
                "name": "api",
                "script": "server.js",
                "args": "--port 3000 'two words'",
                "node_args": ["--max-old-space-size=512"],
                "cwd": "srv",
                "env": { "NODE_ENV": "development", "WORKERS": 2 },
                "env_production": { "NODE_ENV": "production" },
                "instances": 4,
                "exec_mode": "cluster",
                "max_memory_restart": "150M",
                "autorestart": true,
                "kill_timeout": 1600,
                "restart_delay": "2s",
                "watch": ["src", "lib"],
                "out_file": "/var/log/api.out",
                "merge_logs": true,
                "shiny_new_key": 1
            }, {
                "script": "worker.py",
                "interpreter": "python3",
                "max_restarts": 3
            }],
            "deploy": { "production": {} }
        })
    }

    #[test]
    fn every_key_opm_has_is_converted_and_every_other_is_listed_by_app() {
        let c = convert(&eco(), None).expect("convert");
        let api = &c.entries[0].def;
        assert_eq!(api.name.as_deref(), Some("api"));
        assert_eq!(api.args, vec!["--port", "3000", "two words"]);
        assert_eq!(
            api.interpreter_args.as_deref(),
            Some("--max-old-space-size=512")
        );
        assert_eq!(api.cwd.as_deref(), Some("srv"));
        assert_eq!(api.max_memory(), Some(150 * 1024 * 1024));
        assert_eq!(api.kill_timeout_ms(), 1600);
        assert_eq!(api.restart_delay_ms(), 2000);
        assert_eq!(api.watch, vec!["src".to_string(), "lib".to_string()]);
        assert_eq!(api.out_file.as_deref(), Some("/var/log/api.out"));
        assert_eq!(api.merge_logs, None, "PM2's merge_logs means another thing");
        assert!(api.env.contains(&("WORKERS".into(), "2".into())));
        assert_eq!(c.entries[0].sets["production"]["NODE_ENV"], "production");
        let worker = &c.entries[1].def;
        assert_eq!(worker.interpreter.as_deref(), Some("python3"));
        assert_eq!(worker.max_restarts(), 3);
        let listed: Vec<(&str, &str)> = c
            .notes
            .iter()
            .map(|n| (n.app.as_str(), n.key.as_str()))
            .collect();
        for want in [
            ("api", "exec_mode"),
            ("api", "merge_logs"),
            ("api", "shiny_new_key"),
            ("", "deploy"),
        ] {
            assert!(listed.contains(&want), "{want:?} not listed in {listed:?}");
        }
        assert_eq!(api.instances.map(|n| n.to_string()).as_deref(), Some("4"));
    }

    #[test]
    fn every_table_row_names_a_key_opm_reads() {
        for (pm2, row) in PM2_KEYS {
            if let Row::To(opm, _) = row {
                if opm.is_empty() {
                    continue;
                }
                let probe = json!({ "script": "x", *opm: null });
                let e = serde_json::from_value::<ProcessDef>(probe).err();
                assert!(
                    !e.as_ref()
                        .is_some_and(|e| e.to_string().contains("unknown field")),
                    "{pm2} → {opm}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn a_relative_cwd_is_rebased_when_the_output_lives_elsewhere() {
        let c = convert(&eco(), Some(Path::new("/src/app"))).expect("convert");
        assert_eq!(c.entries[0].def.cwd.as_deref(), Some("/src/app/srv"));
        assert_eq!(c.entries[1].def.cwd.as_deref(), Some("/src/app"));
    }

    #[test]
    fn a_bare_list_of_apps_is_an_ecosystem_too() {
        let c =
            convert(&json!([{ "script": "a.sh", "interpreter": "none" }]), None).expect("convert");
        assert_eq!(c.entries[0].def.script, "a.sh");
        assert_eq!(c.entries[0].def.interpreter, None);
    }

    #[test]
    fn bad_ecosystems_are_refused_with_what_is_wrong() {
        let cases = [
            (json!({ "services": [] }), "no `apps`"),
            (json!({ "apps": {} }), "must be a list"),
            (json!({ "apps": [] }), "empty"),
            (json!({ "apps": ["x"] }), "apps[0]"),
            (json!({ "apps": [{ "name": "a" }] }), "no `script`"),
            (
                json!({ "apps": [{ "script": "x", "autorestart": "maybe" }] }),
                "autorestart",
            ),
            (
                json!({ "apps": [{ "script": "x", "max_memory_restart": "lots" }] }),
                "max_memory_restart",
            ),
            (
                json!({ "apps": [{ "script": "x", "env": ["A=1"] }] }),
                "env",
            ),
            (
                json!({ "apps": [{ "name": "w", "script": "x", "args": "'open" }] }),
                "unclosed",
            ),
            (
                json!({ "apps": [{ "script": "x", "kill_timeout": "forever" }] }),
                "kill_timeout",
            ),
            (json!("apps"), "not a PM2 ecosystem"),
        ];
        for (eco, want) in cases {
            let e = convert(&eco, None).expect_err(&eco.to_string());
            assert!(e.contains(want), "{eco}: {e}");
        }
    }

    #[test]
    fn args_split_as_a_shell_splits_them() {
        assert_eq!(
            split_words(r#"a "b c" 'd e' f\ g"#).ok(),
            Some(vec!["a".into(), "b c".into(), "d e".into(), "f g".into()])
        );
        assert_eq!(split_words("  ").ok(), Some(vec![]));
        assert_eq!(split_words("''").ok(), Some(vec![String::new()]));
    }
}
