//! The daemon's own log, `daemon.log`: what the `tracing` macros say
//! anywhere in the daemon, one line each,
//! `2026-11-29T11:27:13.123Z  WARN cannot record its state: … id=3 name=web`
//! (UTC time, level, message, then the event's fields; no colours).
//!
//! Every control character of a line is shown escaped (`\u{a}`, `\u{1b}`),
//! whatever the call site passed: text from elsewhere (an agent's hostname,
//! an error from the network) can never forge a line or drive a terminal.
//!
//! An agent's link to its server (joining, heartbeats resumed, refusals)
//! logs under the target [`AGENT_LINK`]: those lines go to `agent.log` as
//! well, so what the link did is in one short file.
//!
//! `OPM_LOG` (else `RUST_LOG`) chooses what is written, as
//! `level` or `target=level,…` (`debug`, `opm=debug,warp=warn`); by default
//! opm's own lines from `info` up and nothing of its libraries.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::model::escape_control;

/// The variable that chooses what the daemon's log holds.
pub const ENV: &str = "OPM_LOG";

/// What is logged when neither `OPM_LOG` nor `RUST_LOG` says.
pub const DEFAULT_FILTER: &str = "opm=info";

/// The target of an agent's link events, which `agent.log` gets too.
pub const AGENT_LINK: &str = "opm::agent_link";

/// Sends the daemon's `tracing` events to the log file at `path` (created
/// 0600, appended to), and to stderr too when stderr is somewhere else (a
/// terminal, or a service manager's journal, for `opm daemon run`); the
/// agent link's events also to `agent_log` (created at its first line).
/// Once per process: later calls change nothing.
pub fn init(path: &Path, agent_log: &Path) -> io::Result<()> {
    let file = open_log(path)?;
    let stderr_too = !same_file(&file, &io::stderr());
    let (filter, refused) = filter_from_env();
    let daemon_log = tracing_subscriber::fmt::layer()
        .event_format(LineFormat)
        .with_writer(LogFile { file, stderr_too })
        .with_filter(filter);
    let agent_log = tracing_subscriber::fmt::layer()
        .event_format(LineFormat)
        .with_writer(AgentLog(agent_log.to_path_buf()))
        .with_filter(Targets::new().with_target(AGENT_LINK, tracing::Level::INFO));
    let subscriber = tracing_subscriber::registry()
        .with(daemon_log)
        .with(agent_log);
    if subscriber.try_init().is_ok() {
        if let Some((value, e)) = refused {
            tracing::warn!("{ENV}={value:?} is not a log filter ({e}); using {DEFAULT_FILTER:?}");
        }
    }
    Ok(())
}

/// The filter `OPM_LOG` or `RUST_LOG` names, or the default (with what was
/// refused, to say so once the log is open).
fn filter_from_env() -> (Targets, Option<(String, String)>) {
    let given = [ENV, "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    let default = || DEFAULT_FILTER.parse().unwrap_or_default();
    match given {
        None => (default(), None),
        Some(value) => match value.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (default(), Some((value, e.to_string()))),
        },
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn same_file(file: &File, stderr: &io::Stderr) -> bool {
    use std::os::fd::AsFd;
    let Ok(fd) = stderr.as_fd().try_clone_to_owned() else {
        return false;
    };
    match (file.metadata(), File::from(fd).metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The log file, and stderr besides when it is not that file.
struct LogFile {
    file: File,
    stderr_too: bool,
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = &'a LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Write for &LogFile {
    /// The formatter hands over one whole line: written at once to the
    /// append-only file, so lines of several threads never mix.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write_all(buf)?;
        if self.stderr_too {
            let _ = io::stderr().lock().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `agent.log`, opened for each line (they are few), so a daemon that is
/// no agent has none.
struct AgentLog(std::path::PathBuf);

impl<'a> MakeWriter<'a> for AgentLog {
    type Writer = AgentLogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        AgentLogLine(&self.0)
    }
}

struct AgentLogLine<'a>(&'a Path);

impl Write for AgentLogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        open_log(self.0)?.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `TIME LEVEL message field=value …` with every control character escaped.
struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(
            writer,
            "{}",
            render(
                crate::spec::now_ms(),
                event.metadata().level(),
                &fields.message,
                &fields.rest
            )
        )
    }
}

/// One line of the log, without its newline.
fn render(at_ms: u64, level: &tracing::Level, message: &str, fields: &str) -> String {
    let (y, mo, d, h, mi, s) = crate::spec::civil_utc(at_ms);
    let text = format!("{message}{fields}");
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z {level:>5} {}",
        at_ms % 1000,
        escape_control(&text)
    )
}

/// An event's message, and its other fields as ` name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        // A value with spaces (or nothing) is quoted, to stay one field.
        if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"') {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.push(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.push(field, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs, formatted as in `daemon.log`.
    fn logged(filter: &str, f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(LineFormat)
            .with_writer(move || out.clone())
            .with_filter(filter.parse::<Targets>().expect("filter"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn a_line_has_the_utc_time_the_level_the_message_and_the_fields() {
        assert_eq!(
            render(1_796_124_433_123, &tracing::Level::INFO, "started", " id=3"),
            "2026-12-01T11:27:13.123Z  INFO started id=3"
        );
        let log = logged("opm=info", || {
            tracing::warn!(
                id = 3,
                name = "web",
                "cannot record its state: {}",
                "disk full"
            );
            tracing::info!(agent = "a b", "agent_online");
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(
            lines[0].ends_with(" WARN cannot record its state: disk full id=3 name=web"),
            "{log}"
        );
        assert!(
            lines[1].ends_with(" INFO agent_online agent=\"a b\""),
            "{log}"
        );
        assert!(lines[0].as_bytes()[..24].ends_with(b"Z"), "{log}");
    }

    #[test]
    fn control_characters_in_messages_and_fields_cannot_forge_a_line() {
        let evil = "web\n2026-01-01T00:00:00.000Z  INFO forged\x1b[31m";
        let log = logged("opm=info", || {
            tracing::info!(agent = evil, "agent {evil} joined");
            tracing::info!(agent = %evil, "joined");
        });
        assert_eq!(log.lines().count(), 2, "{log}");
        assert!(!log.contains('\x1b'), "{log}");
        assert!(log.contains("web\\u{a}2026"), "{log}");
    }

    #[test]
    fn the_filter_keeps_libraries_out_by_default() {
        let log = logged(DEFAULT_FILTER, || {
            tracing::info!(target: "warp::server", "a library line");
            tracing::debug!("a debug line");
            tracing::info!("an opm line");
        });
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("an opm line"), "{log}");
    }
}
