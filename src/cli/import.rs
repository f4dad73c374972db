//! `opm import FILE [-o OUT]`: reads a PM2 ecosystem file (an
//! `ecosystem.config.js` run with `node`, or `.json`/`.yaml`), converts it
//! (`crate::import`, pure) and prints or writes the opm process file, with
//! every key that was not converted listed on stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use super::CliError;
use crate::import::{self, OutFormat};

/// How long an `ecosystem.config.js` may take to evaluate.
const NODE_TIMEOUT: Duration = Duration::from_secs(20);

/// What `node` prints before the ecosystem's JSON, so that a config file
/// that prints something itself does not spoil it.
const JSON_MARK: &str = "\u{1}opm-ecosystem-json\u{1}";

#[derive(Debug, Args)]
#[command(
    after_help = "Without -o the TOML is printed on stdout: save it in the ecosystem file's folder \
(relative paths stay right), e.g. `opm import ecosystem.config.js > procs.toml`. With -o, relative \
working directories are rebased when OUT lives in another folder. Keys opm does not support are listed \
on stderr with their app, never dropped silently. Then: `opm start procs.toml [--env production]`."
)]
pub struct ImportArgs {
    /// A PM2 ecosystem file: ecosystem.config.js (.cjs, .mjs: evaluated with node), .json, .yaml
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write the opm process file to OUT (.toml, .json or .yaml, by its extension; `-` for stdout) instead of printing TOML
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
}

pub fn import(a: ImportArgs) -> Result<(), CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::io("cannot read the current directory", e))?;
    let input = cwd.join(&a.file);
    let out = a.output.filter(|o| o.as_os_str() != "-");
    let format = match &out {
        None => OutFormat::Toml,
        Some(o) => OutFormat::of(o).ok_or_else(|| {
            CliError::Usage(format!(
                "-o {}: name the output .toml, .json or .yaml (its extension picks the format)",
                o.display()
            ))
        })?,
    };
    let eco = read_ecosystem(&a.file)?;
    let in_dir = input.parent().unwrap_or(Path::new("/")).to_path_buf();
    let base = match &out {
        Some(o) => {
            let out_abs = cwd.join(o);
            if out_abs == input {
                return Err(CliError::Usage(format!(
                    "-o {}: that is the ecosystem file itself",
                    o.display()
                )));
            }
            let out_dir = out_abs.parent().unwrap_or(Path::new("/"));
            (canonical(out_dir) != canonical(&in_dir)).then_some(in_dir.clone())
        }
        None => None,
    };
    let converted = import::convert(&eco, base.as_deref())
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.file.display())))?;
    for n in &converted.notes {
        let app = if n.app.is_empty() {
            String::new()
        } else {
            format!("app {}: ", n.app)
        };
        eprintln!("⚠ {app}{} = {} not converted: {}", n.key, n.value, n.reason);
    }
    let text = import::write(&converted.entries, format)
        .map_err(|e| CliError::Usage(format!("cannot write the process file: {e}")))?;
    let header = format!(
        "Converted by `opm import` from {}; start with `opm start FILE [--env NAME]`.",
        a.file.display()
    );
    let text = match format {
        OutFormat::Toml | OutFormat::Yaml => format!("# {header}\n{text}"),
        OutFormat::Json => text,
    };
    let count = converted.entries.len();
    let left = if converted.notes.is_empty() {
        String::new()
    } else {
        format!(
            " ({} not converted, listed above)",
            plural(converted.notes.len(), "key")
        )
    };
    match out {
        None => {
            print!("{text}");
            eprintln!(
                "✔ converted {} from {}{left}",
                plural(count, "app"),
                a.file.display()
            );
        }
        Some(o) => {
            // The environments may hold secrets: 0600, as `opm save` writes.
            crate::fsutil::write_atomic(&o, text.as_bytes(), 0o600)
                .map_err(|e| CliError::io(format!("cannot write {}", o.display()), e))?;
            // What `opm start` will read: refuse to leave a file it cannot.
            if let Err(e) = super::process::read_process_file(&o, &[]) {
                let _ = std::fs::remove_file(&o);
                return Err(CliError::Usage(format!(
                    "the converted file does not read back ({e}); nothing was written"
                )));
            }
            eprintln!(
                "✔ converted {} from {} into {}{left}; next: opm start {}",
                plural(count, "app"),
                a.file.display(),
                o.display(),
                o.display()
            );
        }
    }
    Ok(())
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// The ecosystem as JSON: a script run with node, else the file read by
/// its extension.
fn read_ecosystem(path: &Path) -> Result<serde_json::Value, CliError> {
    if !path.is_file() {
        return Err(CliError::Usage(format!(
            "{}: no such file (give a PM2 ecosystem file: ecosystem.config.js, .json or .yaml)",
            path.display()
        )));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let invalid = |e: String| CliError::Usage(format!("{}: {}", path.display(), e.trim_end()));
    match ext {
        "js" | "cjs" | "mjs" => run_node(path),
        "json" | "yaml" | "yml" | "toml" => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::io(format!("cannot read {}", path.display()), e))?;
            match ext {
                "json" => {
                    serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))
                }
                "toml" => Err(invalid(
                    "a TOML file is an opm process file already: `opm start` it".into(),
                )),
                _ => {
                    serde_yaml::from_str(&text).map_err(|e| invalid(format!("not valid YAML: {e}")))
                }
            }
        }
        _ => Err(invalid(
            "not a PM2 ecosystem file by its name: give a .js, .cjs, .mjs, .json or .yaml file"
                .into(),
        )),
    }
}

/// Evaluates an ecosystem script with node, in its own folder, and reads
/// back what it exports (`module.exports = { apps }`, `export default`, or
/// a list of apps).
fn run_node(path: &Path) -> Result<serde_json::Value, CliError> {
    let abs = std::env::current_dir()
        .map_err(|e| CliError::io("cannot read the current directory", e))?
        .join(path);
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let script = format!(
        "import(require('url').pathToFileURL(process.argv[1]).href)\
         .then(m => {{ const e = (m && m.default !== undefined) ? m.default : m; \
           process.stdout.write('\\n{JSON_MARK}' + JSON.stringify(e === undefined ? null : e) + '\\n'); }})\
         .catch(e => {{ console.error(e && e.stack ? e.stack : String(e)); process.exit(3); }})"
    );
    let mut child = match Command::new("node")
        .arg("-e")
        .arg(&script)
        .arg(&abs)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::Usage(format!(
                "{} is JavaScript, which opm evaluates with node, and node is not on the PATH: install Node.js, \
                 or convert it by hand to JSON (`{{ \"apps\": [...] }}`) and `opm import` that",
                path.display()
            )))
        }
        Err(e) => return Err(CliError::io("cannot run node", e)),
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CliError::Usage(format!(
                    "node did not finish evaluating {} within {NODE_TIMEOUT:?} (does the file start something?)",
                    path.display()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(CliError::io("cannot wait for node", e)),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let last: Vec<&str> = stderr.lines().take(8).collect();
        return Err(CliError::Usage(format!(
            "node could not evaluate {} ({status}):\n{}",
            path.display(),
            last.join("\n")
        )));
    }
    let json = stdout
        .rsplit_once(JSON_MARK)
        .map(|(_, j)| j.trim())
        .ok_or_else(|| CliError::Usage(format!("node printed nothing for {}", path.display())))?;
    serde_json::from_str(json).map_err(|e| {
        CliError::Usage(format!(
            "{}: what it exports is not JSON data ({e})",
            path.display()
        ))
    })
}

fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_file_reads_back_as_the_same_processes_in_every_format() {
        let c = import::convert(&crate::import::tests::eco(), None).expect("convert");
        for (format, ext) in [
            (OutFormat::Toml, "toml"),
            (OutFormat::Json, "json"),
            (OutFormat::Yaml, "yaml"),
        ] {
            let text = import::write(&c.entries, format).expect("write");
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(format!("procs.{ext}"));
            std::fs::write(&path, &text).expect("write file");
            let read = super::super::process::read_process_file(&path, &["production".into()])
                .unwrap_or_else(|e| panic!("{ext}: {e}\n{text}"));
            assert_eq!(read.len(), 2, "{ext}");
            assert_eq!(read[0].args, c.entries[0].def.args, "{ext}");
            assert_eq!(read[0].max_memory(), Some(150 * 1024 * 1024), "{ext}");
            assert!(
                read[0]
                    .env
                    .contains(&("NODE_ENV".into(), "production".into())),
                "{ext}: the set is laid over env: {:?}",
                read[0].env
            );
            assert_eq!(
                read[0].cwd.as_deref(),
                Some(dir.path().join("srv").display().to_string().as_str()),
                "{ext}: a relative cwd is the file's folder's"
            );
        }
    }
}
