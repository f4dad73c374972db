//! Creating processes: validating a definition, storing a batch in one transaction, and waiting briefly for the spawns so the answer shows pids (or why a command cannot run).

use super::*;

impl Service {
    /// Validates and stores new processes in one transaction, then waits
    /// (briefly) for them to be spawned so the answer shows their pids.
    pub async fn create(&self, body: CreateBody) -> Result<Vec<ProcessView>, ServiceError> {
        let requests = match body {
            CreateBody::One(r) => vec![*r],
            CreateBody::Many(v) => v,
        };
        if requests.is_empty() {
            return Err(ServiceError::BadRequest(
                "nothing to create: the list is empty".into(),
            ));
        }
        let mut new = Vec::with_capacity(requests.len());
        let mut errors = Vec::new();
        let mut forced = Vec::with_capacity(requests.len());
        for (i, mut r) in requests.into_iter().enumerate() {
            forced.push(r.force.take() == Some(true));
            match self.new_spec(r) {
                Ok(n) => new.push(n),
                Err(e) if i == 0 => errors.push(e.to_string()),
                Err(e) => errors.push(format!("process {}: {e}", i + 1)),
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::BadRequest(errors.join("; ")));
        }
        let mut seen = std::collections::HashSet::new();
        for n in &new {
            if n.explicit_name && !seen.insert(n.spec.name.clone()) {
                return Err(ServiceError::Conflict(format!(
                    "the name {:?} is given twice",
                    n.spec.name
                )));
            }
        }
        // An unnamed start of a command that already runs is a mistake more
        // often than a wish for a second copy (PM2: "Script already launched").
        // The executor's shared copies, not the store's records: decoding a
        // thousand of them was most of a start's cost at 1,000 processes.
        let existing = self.shared_specs();
        for (n, force) in new.iter().zip(&forced) {
            if n.explicit_name || *force {
                continue;
            }
            let same = existing.iter().find(|s| {
                s.desired != Desired::Removed
                    && s.command() == n.spec.command()
                    && s.cwd() == n.spec.cwd()
            });
            if let Some(s) = same {
                return Err(ServiceError::Conflict(format!(
                    "{:?} already runs under opm as {} (id {}): `opm restart {}` restarts it; give --name to run a second one, or --force",
                    s.command(),
                    s.name,
                    s.id,
                    s.name
                )));
            }
        }
        let batch: Vec<&Spec> = new.iter().map(|n| &n.spec).collect();
        log_clash(&self.home, &batch, existing.iter().map(|s| &**s), &[])?;
        // Each group's copies, in one transaction with the rest.
        let new: Vec<NewSpec> = new.into_iter().flat_map(instances::expand).collect();
        // Stored now, made durable before the answer: the spawn's own
        // commit covers the create too, so a start pays one round of syncs.
        let store = self.store.clone();
        let (created, ticket) = blocking(move || store.create_unflushed(new))
            .await
            .map_err(|e| match e {
                StoreError::DuplicateName(n) => {
                    ServiceError::Conflict(format!("a process named {n:?} already exists"))
                }
                other => ServiceError::Store(other),
            })?;
        let ids: Vec<u64> = created.iter().map(|s| s.id).collect();
        self.rec.wake(ids.clone());
        let want = ids.clone();
        self.rec
            .wait_for(SPAWN_WAIT, |procs| {
                want.iter().all(|id| {
                    procs
                        .get(id)
                        .is_some_and(|e| start_settled(&e.spec, &e.obs, e.spec.desired, 1))
                })
            })
            .await;
        self.settle_shells(&ids).await;
        // Nothing is answered before it is durable: at once when the spawn's
        // commit came after the create (it covers it), else a commit now.
        let store = self.store.clone();
        blocking(move || store.flush_ticket(ticket)).await?;
        Ok(self.views(Some(&ids), false))
    }

    /// Gives the shell command lines among `ids` that just started a moment
    /// to fail at once (a command the shell cannot find exits 127 right
    /// away), so the answer tells that instead of "online".
    pub(super) async fn settle_shells(&self, ids: &[u64]) {
        let shells: Vec<u64> = self
            .entries(Some(ids))
            .iter()
            .filter(|e| spawn::runs_in_shell(&e.spec.command()))
            .filter(|e| matches!(e.obs.phase, Phase::Running { .. }))
            .map(|e| e.spec.id)
            .collect();
        if shells.is_empty() {
            return;
        }
        let settle_ms = SHELL_SETTLE.as_millis() as u64;
        self.rec
            .wait_for(SHELL_SETTLE, |procs| {
                let now = now_ms();
                shells.iter().all(|id| match procs.get(id) {
                    Some(e) => match e.obs.phase {
                        Phase::Running { since_ms, .. } => now >= since_ms + settle_ms,
                        _ => true,
                    },
                    None => true,
                })
            })
            .await;
    }

    /// The one conversion of a definition into a stored `Spec`: the
    /// options' checks (`ProcessDef::check`), then what needs the file
    /// system (the working directory, the script's interpreter, whether the
    /// command can run), the name, and the desired state.
    pub(super) fn new_spec(&self, mut def: ProcessDef) -> Result<NewSpec, ServiceError> {
        def.check().map_err(ServiceError::BadRequest)?;
        instances::check_request(&def)?;
        let script = def.script.trim();
        if script.is_empty() {
            return Err(ServiceError::BadRequest(
                "the command is empty: give a command line or a script".into(),
            ));
        }
        if script.contains('\0') {
            return Err(ServiceError::BadRequest(
                "the command contains a NUL byte".into(),
            ));
        }
        let cwd = match &def.cwd {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        if !cwd.is_absolute() {
            return Err(ServiceError::BadRequest(format!(
                "the working directory {} is not an absolute path",
                cwd.display()
            )));
        }
        if !cwd.is_dir() {
            return Err(ServiceError::BadRequest(format!(
                "the working directory {} does not exist",
                cwd.display()
            )));
        }
        let script = script.to_string();
        if def.interpreter.is_none() {
            let resolved = with_interpreter(&script, &cwd);
            match resolved.split_once(' ') {
                // Arguments for the interpreter need it apart from the script.
                Some((interpreter, _)) if resolved != script && def.interpreter_args.is_some() => {
                    def.interpreter = Some(interpreter.to_string());
                    def.script = script;
                }
                _ if def.interpreter_args.is_some() => {
                    return Err(ServiceError::BadRequest(
                        "interpreter arguments need an interpreter: give --interpreter (or `interpreter`), or a script whose extension names one (.js, .py, .sh, ...)".into(),
                    ))
                }
                _ => def.script = resolved,
            }
        } else {
            def.script = script;
        }
        let command = def.command_line();
        let (name, explicit_name) = match def.name.take() {
            Some(n) => {
                validate_name(&n).map_err(ServiceError::BadRequest)?;
                (n, true)
            }
            None => (derive_name(&command), false),
        };
        // The last `--env` of a name wins.
        let env: BTreeMap<String, String> = std::mem::take(&mut def.env).into_iter().collect();
        def.env = env.into_iter().collect();
        // A command that cannot run at all is an answer, not a stored
        // process that retries forever (unless the caller keeps it anyway).
        if def.unchecked != Some(true) && (def.user.is_some() || def.group.is_some()) {
            let who = crate::supervise::user::resolve(def.user.as_deref(), def.group.as_deref())
                .map_err(ServiceError::BadRequest)?;
            crate::supervise::user::permitted(&who).map_err(ServiceError::BadRequest)?;
        }
        if def.unchecked.take() != Some(true) {
            // The PATH the child gets: its own, else the caller's, else the daemon's.
            let mut env = def.env.clone();
            if !env.iter().any(|(k, _)| k == "PATH") {
                if let Some(p) = def.caller_env.as_ref().and_then(|c| c.get("PATH")) {
                    env.push(("PATH".into(), p.clone()));
                }
            }
            spawn::check_command(&command, &cwd, &env)
                .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        }
        for w in &def.watch {
            let p = cwd.join(w);
            if !p.exists() {
                return Err(ServiceError::BadRequest(format!(
                    "the watched path {} does not exist",
                    p.display()
                )));
            }
        }
        for key in ["out_file", "err_file"] {
            let field = if key == "out_file" {
                &mut def.out_file
            } else {
                &mut def.err_file
            };
            if let Some(f) = field.as_mut() {
                *f = log_file_path(key, f, &cwd)?;
            }
        }
        let stopped = def.stopped();
        def.desired = None;
        def.cwd = Some(cwd.display().to_string());
        Ok(NewSpec {
            spec: Spec {
                id: 0,
                name,
                desired: if stopped {
                    Desired::Stopped
                } else {
                    Desired::Running
                },
                generation: if stopped { 0 } else { 1 },
                created_ms: now_ms(),
                def,
            },
            explicit_name,
            join: false,
        })
    }
}

/// A custom log file (`out_file`, `err_file`) made absolute against the
/// working directory (`.` and `..` resolved in the text) and checked: not a
/// folder, and when it exists a file (or a device such as `/dev/null`) the
/// daemon can append to. A missing file and its folders are created at
/// spawn.
fn log_file_path(key: &str, given: &str, cwd: &Path) -> Result<String, ServiceError> {
    let mut path = PathBuf::new();
    for c in cwd.join(given).components() {
        match c {
            std::path::Component::ParentDir => {
                path.pop();
            }
            std::path::Component::CurDir => {}
            other => path.push(other),
        }
    }
    let bad = |why: String| {
        ServiceError::BadRequest(format!("{key} {given:?} ({}): {why}", path.display()))
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => return Err(bad("it is a folder: name a file".into())),
        Ok(_) => {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| bad(format!("cannot open it for writing: {e}")))?;
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            // The nearest folder that exists must be a folder.
            let mut up = path.parent();
            while let Some(dir) = up {
                match std::fs::metadata(dir) {
                    Ok(m) if m.is_dir() => break,
                    Ok(_) => {
                        return Err(bad(format!("{} is not a folder", dir.display())));
                    }
                    Err(_) => up = dir.parent(),
                }
            }
        }
        Err(e) => return Err(bad(e.to_string())),
    }
    Ok(path.display().to_string())
}

/// Refuses a log file that another process already writes (two writers of
/// one file would mix their lines and rotate it twice): each custom file of
/// `new` against every file of `stored` (but those in `replacing`, whose
/// definitions `new` replaces) and against the other new ones. The two
/// streams of one process in one file is merging, and allowed.
pub(super) fn log_clash<'a>(
    home: &crate::config::Home,
    new: &[&'a Spec],
    stored: impl IntoIterator<Item = &'a Spec>,
    replacing: &[u64],
) -> Result<(), ServiceError> {
    // Only a log file given by name can be another's: a default one holds
    // the new process's id, which no one has yet.
    if new
        .iter()
        .all(|n| n.def.out_file.is_none() && n.def.err_file.is_none())
    {
        return Ok(());
    }
    let mut taken: Vec<(PathBuf, &str)> = Vec::new();
    for s in stored
        .into_iter()
        .filter(|s| s.desired != Desired::Removed && !replacing.contains(&s.id))
    {
        let (out, err) = home.process_logs(&s.name, s.id, &s.def);
        taken.push((out, &s.name));
        taken.push((err, &s.name));
    }
    for n in new {
        let mine: Vec<PathBuf> = [&n.def.out_file, &n.def.err_file]
            .into_iter()
            .flatten()
            .map(PathBuf::from)
            .collect();
        for p in &mine {
            if let Some((_, other)) = taken.iter().find(|(t, other)| t == p && *other != n.name) {
                return Err(ServiceError::Conflict(format!(
                    "{} already writes {}: give {} a log file of its own",
                    other,
                    p.display(),
                    n.name
                )));
            }
        }
        taken.extend(mine.into_iter().map(|p| (p, n.name.as_str())));
    }
    Ok(())
}

/// `app.js` → `node app.js` when the first word is a script file in `cwd`
/// that is not executable by itself.
pub fn with_interpreter(command: &str, cwd: &Path) -> String {
    let Some(first) = command.split_whitespace().next() else {
        return command.to_string();
    };
    let path = cwd.join(first);
    let interpreter = match path.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => "node",
        Some("py") => "python3",
        Some("sh") => "bash",
        Some("rb") => "ruby",
        Some("pl") => "perl",
        Some("php") => "php",
        _ => return command.to_string(),
    };
    if path.is_file() {
        format!("{interpreter} {command}")
    } else {
        command.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_script() {
        assert_eq!(derive_name("node app.js"), "app");
        assert_eq!(derive_name("python3 /srv/worker.py --fast"), "worker");
        assert_eq!(derive_name("/usr/bin/sleep 100"), "sleep");
        assert_eq!(derive_name("./server"), "server");
        assert_eq!(derive_name("123"), "process");
    }

    #[test]
    fn names_that_read_as_ids_or_all_are_refused() {
        assert!(validate_name("42").is_err());
        assert!(validate_name("all").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("web-1.api_v2").is_ok());
    }

    #[test]
    fn a_script_file_gets_its_interpreter() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.js"), "").expect("write");
        assert_eq!(
            with_interpreter("app.js --port 3", dir.path()),
            "node app.js --port 3"
        );
        assert_eq!(with_interpreter("missing.js", dir.path()), "missing.js");
        assert_eq!(with_interpreter("sleep 1", dir.path()), "sleep 1");
    }
}
