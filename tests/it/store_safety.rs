//! The database is never lost, never overwritten, and never keeps opm from
//! starting: a damaged one is moved aside (`db.damaged-<time>`, byte for byte
//! as it was) and rebuilt from the snapshot with every process, which the
//! daemon then adopts and reports in `daemon restore` and `daemon health`;
//! with `--no-recover` it is refused and left untouched; one of a newer
//! schema is always refused untouched; an older one is migrated, including
//! the databases of schemas 1 and 2 kept in `tests/data/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use opm::spec::Desired;
use opm::store::codec::{encode, id_key};
use opm::store::migrate::m0002_restart_policy::{
    RestartPolicy, SpecV1, SpecV2, DEFAULT_KILL_TIMEOUT_MS,
};
use opm::store::migrate::m0003_watch::SpecV3;
use opm::store::Store;

use crate::common::{alive, copy_dir, pid_of, snapshot_dir, Output, TestHome};

/// A home whose daemon has stored two processes (`a` running, `b` stopped)
/// and then stopped itself; returns it with `a`'s pid.
fn home_with_a_stopped_daemon() -> (TestHome, i32) {
    let home = TestHome::new();
    let a = pid_of(&home.start("sleep 1000", "a", &[]));
    home.start("sleep 1000", "b", &[]);
    home.opm(&["stop", "b"]).ok();
    home.opm(&["daemon", "stop"]).ok();
    assert!(!home.join("opm.sock").exists());
    assert!(alive(a), "a outlives the daemon");
    (home, a)
}

/// `OPM_HOME/db`, `db.snapshot`, `db.journal` and `db.seq`, every byte.
fn db_and_snapshot(home: &TestHome) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = home.snapshot("db");
    for beside in ["db.snapshot", "db.journal", "db.seq"] {
        if let Ok(bytes) = std::fs::read(home.join(beside)) {
            files.insert(PathBuf::from("..").join(beside), bytes);
        }
    }
    files
}

/// Runs `opm daemon restore --no-recover` on a home whose database must be
/// refused, and checks that the database and its snapshot did not change
/// and no daemon was left running.
#[track_caller]
fn assert_refused(home: &TestHome, why: &str) -> Output {
    let before = db_and_snapshot(home);
    let out = home.opm(&["daemon", "restore", "--no-recover"]).failed();
    assert!(out.stderr.contains(why), "stderr should say {why:?}: {out}");
    assert!(out.stderr.contains("left untouched"), "{out}");
    assert_same_files(&before, &db_and_snapshot(home));
    assert_no_daemon_and_no_leftovers(home);
    out
}

#[track_caller]
fn assert_no_daemon_and_no_leftovers(home: &TestHome) {
    assert!(
        home.daemon_pid().is_none_or(|p| !alive(p)),
        "no daemon may run on a refused database"
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(home.path())
        .expect("read the home")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".db-check"))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "the check's copy is removed: {leftovers:?}"
    );
}

/// The damaged copies beside the database.
fn damaged_copies(home: &TestHome) -> Vec<PathBuf> {
    std::fs::read_dir(home.path())
        .expect("read the home")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("db.damaged-"))
        })
        .collect()
}

/// Runs `opm daemon restore` on a damaged home (`a` running as `a_pid`, `b`
/// stopped) and checks the rebuild: said in the output, in `daemon health`
/// (text and JSON), the damaged files kept aside byte for byte (`damaged`
/// is `None` when the folder was missing), both processes back with `a`
/// adopted, not started again.
#[track_caller]
fn assert_recovered(home: &TestHome, a_pid: i32, damaged: Option<&BTreeMap<PathBuf, Vec<u8>>>) {
    let out = home.opm(&["daemon", "restore"]).ok();
    assert!(out.stdout.contains("daemon started"), "{out}");
    assert!(
        out.stdout
            .contains("the database was damaged and was rebuilt"),
        "restore says so: {out}"
    );
    let list = home.list();
    let names: Vec<&str> = list
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["a", "b"], "every process is back: {list:#?}");
    assert_eq!(list[0]["status"], "online");
    assert_eq!(pid_of(&list[0]), a_pid, "a is adopted, not started twice");
    assert_eq!(list[1]["status"], "stopped", "b stays stopped");
    assert_eq!(
        crate::common::pids_with_env(home.marker())
            .into_iter()
            .filter(|p| crate::common::comm(*p).as_deref() == Some("sleep"))
            .count(),
        1,
        "exactly one sleep runs"
    );

    let text = home.opm(&["daemon", "health"]).ok();
    assert!(text.stdout.contains("recovered:"), "{text}");
    let health = home.health();
    let r = &health["recovered"];
    assert!(r.is_object(), "health reports the recovery: {health:#}");
    assert_eq!(r["processes"], 2);
    assert!(r["at_ms"].as_u64().is_some_and(|t| t > 0), "{r}");
    assert!(!r["reason"].as_str().expect("reason").is_empty());
    assert_eq!(
        r["from"].as_str().expect("from"),
        home.join("db.snapshot").display().to_string()
    );
    let copies = damaged_copies(home);
    match damaged {
        Some(files) => {
            assert_eq!(copies.len(), 1, "{copies:?}");
            assert_eq!(
                r["damaged_copy"].as_str().expect("damaged_copy"),
                copies[0].display().to_string()
            );
            assert_same_files(files, &snapshot_dir(&copies[0]));
        }
        None => {
            assert!(copies.is_empty(), "{copies:?}");
            assert!(r["damaged_copy"].is_null(), "{r}");
        }
    }
    let info = home.opm(&["info", "a", "--format", "json"]).ok();
    assert!(info.success());
    let log = std::fs::read_to_string(home.join("daemon.log")).expect("daemon.log");
    assert!(log.contains("RECOVERED"), "the log says so:\n{log}");
}

#[track_caller]
fn assert_same_files(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "files were added or removed");
    for (path, bytes) in before {
        assert!(after[path] == *bytes, "{} was changed", path.display());
    }
}

/// Overwrites 64 bytes of `file` at `fraction` of its length with 0xff.
fn garble(file: &Path, fraction: f64) {
    let mut bytes = std::fs::read(file).expect("read the file to damage");
    assert!(
        bytes.len() > 128,
        "{} is too small to damage",
        file.display()
    );
    let at = ((bytes.len() - 64) as f64 * fraction) as usize;
    bytes[at..at + 64].fill(0xff);
    std::fs::write(file, bytes).expect("write the damaged file");
}

/// Damages a fresh home with `damage`, shows that `--no-recover` refuses it
/// untouched, then that a plain restore rebuilds it with every process.
#[track_caller]
fn refused_then_recovered(damage: impl Fn(&TestHome)) {
    let (home, a) = home_with_a_stopped_daemon();
    damage(&home);
    let damaged = home.snapshot("db");
    assert_refused(&home, "damaged");
    assert_recovered(&home, a, Some(&damaged));
}

#[test]
fn a_database_with_flipped_bytes_anywhere_is_rebuilt_from_the_snapshot() {
    for fraction in [0.25, 0.5, 0.75] {
        refused_then_recovered(|home| garble(&home.join("db/db"), fraction));
    }
}

/// The bytes of the journal's records (after its 20-byte header): the
/// processes of `home_with_a_stopped_daemon` were started after its daemon
/// wrote its first snapshot, so they live there.
fn journal_records(home: &TestHome) -> usize {
    let journal = std::fs::read(home.join("db.journal")).expect("db.journal");
    assert!(journal.starts_with(b"opmjrnl\n"), "a journal");
    journal.len() - 20
}

#[test]
fn a_damaged_database_is_rebuilt_from_the_snapshot_and_the_whole_records_of_a_torn_journal() {
    let (home, a) = home_with_a_stopped_daemon();
    assert!(journal_records(&home) > 0, "the starts were journaled");
    // A commit killed while it appended: half a record at the end.
    let mut journal = std::fs::read(home.join("db.journal")).expect("db.journal");
    journal.extend_from_slice(&[0, 0, 1, 0, 0xde, 0xad]);
    std::fs::write(home.join("db.journal"), &journal).expect("tear the journal");
    garble(&home.join("db/db"), 0.5);
    let damaged = home.snapshot("db");
    assert_refused(&home, "damaged");
    assert_recovered(&home, a, Some(&damaged));
}

#[test]
fn a_damaged_database_beside_a_journal_damaged_before_its_end_is_refused() {
    let (home, _) = home_with_a_stopped_daemon();
    let len = journal_records(&home);
    assert!(len > 64, "the starts were journaled");
    // The first record damaged: the acknowledged writes after it are gone
    // from the snapshot's side too, and `db.seq` says they were acknowledged.
    let path = home.join("db.journal");
    let mut journal = std::fs::read(&path).expect("db.journal");
    journal[30..40].fill(0xff);
    std::fs::write(&path, &journal).expect("damage the journal");
    garble(&home.join("db/db"), 0.5);
    let before = db_and_snapshot(&home);
    for args in [
        &["daemon", "restore", "--no-recover"][..],
        &["daemon", "restore"][..],
    ] {
        let out = home.opm(args).failed();
        assert!(
            out.stderr.contains("were acknowledged"),
            "the gap is named: {out}"
        );
        assert!(out.stderr.contains("left untouched"), "{out}");
        assert_same_files(&before, &db_and_snapshot(&home));
        assert_no_daemon_and_no_leftovers(&home);
    }
    assert!(damaged_copies(&home).is_empty());
}

#[test]
fn a_truncated_database_is_rebuilt_from_the_snapshot() {
    refused_then_recovered(|home| {
        let log = home.join("db/db");
        let bytes = std::fs::read(&log).expect("read db/db");
        std::fs::write(&log, &bytes[..bytes.len() / 2]).expect("truncate db/db");
    });
}

#[test]
fn a_database_with_a_deleted_file_is_rebuilt_from_the_snapshot() {
    refused_then_recovered(|home| std::fs::remove_file(home.join("db/db")).expect("rm db/db"));
    refused_then_recovered(|home| std::fs::remove_file(home.join("db/conf")).expect("rm db/conf"));
}

#[test]
fn a_truncated_emptied_or_garbled_conf_file_is_rebuilt_from_the_snapshot() {
    refused_then_recovered(|home| {
        let conf = home.join("db/conf");
        let bytes = std::fs::read(&conf).expect("read db/conf");
        std::fs::write(&conf, &bytes[..bytes.len() / 2]).expect("truncate db/conf");
    });
    refused_then_recovered(|home| {
        std::fs::write(home.join("db/conf"), b"").expect("empty db/conf")
    });
    refused_then_recovered(|home| {
        std::fs::write(home.join("db/conf"), b"segment_size: banana\n\xff\x00\xfe")
            .expect("garble db/conf")
    });
}

#[test]
fn a_missing_database_folder_is_rebuilt_from_the_snapshot() {
    let (home, a) = home_with_a_stopped_daemon();
    std::fs::remove_dir_all(home.join("db")).expect("rm -r db");
    let out = home.opm(&["daemon", "restore", "--no-recover"]).failed();
    assert!(out.stderr.contains("missing"), "{out}");
    assert!(!home.join("db").exists(), "nothing was created");
    assert_recovered(&home, a, None);
}

#[test]
fn a_damaged_database_without_a_usable_snapshot_is_refused_and_left_untouched() {
    let (home, _) = home_with_a_stopped_daemon();
    garble(&home.join("db/db"), 0.5);
    garble(&home.join("db.snapshot"), 0.5);
    let before = db_and_snapshot(&home);
    let out = home.opm(&["list"]).failed();
    assert!(out.stderr.contains("damaged"), "{out}");
    assert!(out.stderr.contains("snapshot is damaged too"), "{out}");
    assert!(out.stderr.contains("left untouched"), "{out}");
    assert_same_files(&before, &db_and_snapshot(&home));
    assert_no_daemon_and_no_leftovers(&home);
    assert!(damaged_copies(&home).is_empty());
}

#[test]
fn a_damaged_snapshot_beside_a_sound_database_is_written_again() {
    let (home, a) = home_with_a_stopped_daemon();
    std::fs::write(home.join("db.snapshot"), b"garbage").expect("damage the snapshot");
    let list = home.list();
    assert_eq!(list.len(), 2);
    assert_eq!(pid_of(&list[0]), a);
    let health = home.health();
    assert!(
        health["recovered"].is_null(),
        "nothing was rebuilt: {health:#}"
    );
    let snap = std::fs::read(home.join("db.snapshot")).expect("snapshot");
    assert!(snap.starts_with(b"opmsnap"), "the snapshot is whole again");
}

#[test]
fn the_snapshot_and_the_database_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let (home, _) = home_with_a_stopped_daemon();
    let mode = |p: &str| {
        std::fs::metadata(home.join(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("db.snapshot"), 0o600);
    assert_eq!(mode("db.journal"), 0o600);
    assert_eq!(mode("db"), 0o700);
    assert_eq!(mode("db/db"), 0o600);
    assert_eq!(mode("config.toml"), 0o600);
}

#[test]
fn a_database_of_a_newer_schema_is_refused_and_left_untouched_even_with_recovery() {
    let (home, _) = home_with_a_stopped_daemon();
    {
        let db = sled::open(home.join("db")).expect("open the database");
        db.open_tree("meta")
            .expect("meta tree")
            .insert(b"schema", encode(&99u32).expect("encode"))
            .expect("write meta.schema");
        db.flush().expect("flush");
    }
    let before = db_and_snapshot(&home);
    for args in [&["list"][..], &["daemon", "restore"][..]] {
        let out = home.opm(args).failed();
        assert!(out.stderr.contains("newer"), "{out}");
        assert!(
            out.stderr.contains("99"),
            "the message names the version: {out}"
        );
        assert_same_files(&before, &db_and_snapshot(&home));
        assert_no_daemon_and_no_leftovers(&home);
    }
    assert!(damaged_copies(&home).is_empty(), "never recovered");
}

/// A schema-1 process spec, as opm wrote it before restart policies.
fn v1_spec(name: &str, command: &str, autorestart: bool, desired: Desired) -> SpecV1 {
    SpecV1 {
        id: 0,
        name: name.to_string(),
        command: command.to_string(),
        cwd: "/".to_string(),
        env: vec![("LEGACY".to_string(), "1".to_string())],
        autorestart,
        desired,
        generation: u64::from(desired == Desired::Running),
        created_ms: 1_700_000_000_000,
    }
}

/// Writes a database of an older `schema` holding one process into `dir`,
/// with plain sled (nothing of today's store code but the value encoding).
/// This is how `tests/data/v1-db`, `v2-db` and `v3-db` were made (see
/// `write_v1_db`, `write_v2_db`, `write_v3_db`).
fn write_old_db(dir: &Path, schema: u32, id: u64, name: &str, spec: &impl serde::Serialize) {
    let db = sled::open(dir).expect("create a sled database");
    for tree in [
        "meta",
        "processes",
        "names",
        "runtime",
        "role",
        "agents",
        "events",
    ] {
        db.open_tree(tree).expect("create a tree");
    }
    let meta = db.open_tree("meta").expect("meta");
    meta.insert(b"schema", encode(&schema).expect("encode"))
        .expect("write the schema");
    meta.insert(b"next_id", encode(&(id + 1)).expect("encode"))
        .expect("write next_id");
    db.open_tree("processes")
        .expect("processes")
        .insert(id_key(id), encode(spec).expect("encode"))
        .expect("write the spec");
    db.open_tree("names")
        .expect("names")
        .insert(name.as_bytes(), encode(&id).expect("encode"))
        .expect("write the name");
    db.flush().expect("flush");
}

/// A schema-1 database holding `spec` (`tests/data/v1-db`: `v1_spec("legacy",
/// "sleep 1000", true, Desired::Running)`).
fn write_v1_db(dir: &Path, spec: &SpecV1) {
    write_old_db(dir, 1, spec.id, &spec.name, spec);
}

/// A schema-2 database holding `spec` (`tests/data/v2-db`: `v2_spec()`).
fn write_v2_db(dir: &Path, spec: &SpecV2) {
    write_old_db(dir, 2, spec.id, &spec.name, spec);
}

#[test]
fn a_schema_1_database_is_migrated_when_the_store_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let old = v1_spec("old", "sleep 1000", false, Desired::Stopped);
    write_v1_db(&db, &old);

    let store = Store::open(&db).expect("open and migrate");
    assert_eq!(store.schema_version(), opm::store::migrate::CURRENT);
    assert!(store.schema_version() >= 2);
    let spec = store.get(0).expect("read").expect("the process is kept");
    assert_eq!(
        restart_policy(&spec),
        RestartPolicy {
            autorestart: false,
            ..RestartPolicy::default()
        },
        "the default policy, with autorestart kept"
    );
    assert_eq!(spec.def.kill_timeout_ms(), DEFAULT_KILL_TIMEOUT_MS);
    assert_eq!(spec.def.max_memory(), None);
    assert_eq!(
        (
            spec.id,
            spec.name.as_str(),
            spec.command().as_str(),
            spec.cwd()
        ),
        (0, "old", "sleep 1000", "/")
    );
    assert_eq!(spec.def.env, old.env);
    assert_eq!(spec.desired, Desired::Stopped);
    assert_eq!(spec.generation, old.generation);
    assert_eq!(spec.created_ms, old.created_ms);
    assert_eq!(store.id_by_name("old").expect("names"), Some(0));
    drop(store);

    // Opened again, it is simply the current schema.
    let store = Store::open(&db).expect("reopen");
    assert_eq!(store.get(0).expect("read").expect("kept").name, "old");
}

#[test]
fn the_binary_migrates_a_schema_1_database_and_lists_its_process() {
    let home = TestHome::new();
    write_v1_db(
        &home.join("db"),
        &v1_spec("old", "sleep 1000", false, Desired::Stopped),
    );
    let list = home.list();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["name"], "old");
    assert_eq!(list[0]["status"], "stopped");
    assert_eq!(list[0]["autorestart"], false);
    let info = home.info("old");
    assert_eq!(info["max_restarts"], RestartPolicy::default().max_restarts);
    assert_eq!(info["kill_timeout_ms"], DEFAULT_KILL_TIMEOUT_MS);
    let health = home.health();
    assert_eq!(health["schema_version"], opm::store::migrate::CURRENT);
    // A new process gets the next id.
    assert_eq!(home.start("sleep 1000", "new", &[])["id"], 1);
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-db")
}

#[test]
fn the_kept_schema_1_database_still_opens_and_its_process_runs() {
    let fixture = fixture_dir();
    let kept = snapshot_dir(&fixture);
    assert!(
        kept.keys().any(|p| p.ends_with("db")),
        "tests/data/v1-db holds a sled database: {:?}",
        kept.keys().collect::<Vec<_>>()
    );
    let home = TestHome::new();
    copy_dir(&fixture, &home.join("db"));

    // The first command starts the daemon, which opens (and migrates) the store.
    assert_eq!(home.list().len(), 1);
    home.wait_process("legacy", "online");
    let p = home.process("legacy");
    assert_eq!(p["id"], 0);
    assert_eq!(p["command"], "sleep 1000");
    assert_eq!(p["autorestart"], true);
    let pid = pid_of(&p);
    assert!(alive(pid));
    let env = crate::common::environ(pid).expect("environ");
    assert!(env.iter().any(|e| e == "LEGACY=1"), "{env:?}");
    let info = home.info("legacy");
    assert_eq!(info["max_restarts"], RestartPolicy::default().max_restarts);
    assert_eq!(
        info["restart_delay_ms"],
        RestartPolicy::default().restart_delay_ms
    );
    assert_eq!(
        info["min_uptime_ms"],
        RestartPolicy::default().min_uptime_ms
    );
    assert_eq!(info["kill_timeout_ms"], DEFAULT_KILL_TIMEOUT_MS);
    assert!(info["max_memory"].is_null());

    assert_same_files(&kept, &snapshot_dir(&fixture));
}

#[test]
fn an_emptied_sequence_mirror_never_keeps_opm_from_starting() {
    // What an older opm's in-place rewrite left after a SIGKILL.
    let (home, a) = home_with_a_stopped_daemon();
    std::fs::write(home.join("db.seq"), b"").expect("empty db.seq");
    let list = home.list();
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(pid_of(&list[0]), a);
    let seq = std::fs::read_to_string(home.join("db.seq")).expect("db.seq");
    assert!(
        seq.trim().parse::<u64>().is_ok(),
        "written whole again: {seq:?}"
    );
}

/// The process of `tests/data/v2-db`: a schema-2 spec (restart policy, kill
/// timeout and memory limit, but no watch path) with nothing left at default.
fn v2_spec() -> SpecV2 {
    SpecV2 {
        id: 0,
        name: "legacy2".to_string(),
        command: "sleep 1000".to_string(),
        cwd: "/".to_string(),
        env: vec![("LEGACY".to_string(), "2".to_string())],
        restart: RestartPolicy {
            autorestart: true,
            max_restarts: 7,
            restart_delay_ms: 250,
            min_uptime_ms: 2500,
        },
        kill_timeout_ms: 3000,
        max_memory: Some(512 * 1024 * 1024),
        desired: Desired::Running,
        generation: 1,
        created_ms: 1_700_000_000_000,
    }
}

/// A current spec's restart settings in the shape schemas 2 and 3 kept.
fn restart_policy(spec: &opm::spec::Spec) -> RestartPolicy {
    RestartPolicy {
        autorestart: spec.def.autorestart(),
        max_restarts: spec.def.max_restarts(),
        restart_delay_ms: spec.def.restart_delay_ms(),
        min_uptime_ms: spec.def.min_uptime_ms(),
    }
}

/// What a migrated `v2_spec()` must look like: every field kept, no watch.
fn assert_is_migrated_v2(spec: &opm::spec::Spec) {
    let old = v2_spec();
    assert_eq!(restart_policy(spec), old.restart);
    assert_eq!(spec.def.kill_timeout_ms(), old.kill_timeout_ms);
    assert_eq!(spec.def.max_memory(), old.max_memory);
    assert!(spec.def.watch.is_empty());
    assert_eq!(
        (spec.id, spec.name.as_str(), spec.command().as_str()),
        (0, "legacy2", "sleep 1000")
    );
    assert_eq!((spec.cwd(), &spec.def.env), ("/", &old.env));
    assert_eq!(
        (spec.desired, spec.generation, spec.created_ms),
        (old.desired, old.generation, old.created_ms)
    );
}

#[test]
fn a_schema_2_database_is_migrated_when_the_store_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    write_v2_db(&db, &v2_spec());
    let store = Store::open(&db).expect("open and migrate");
    assert_eq!(store.schema_version(), opm::store::migrate::CURRENT);
    assert_is_migrated_v2(&store.get(0).expect("read").expect("kept"));
    assert_eq!(store.id_by_name("legacy2").expect("names"), Some(0));
}

#[test]
fn the_kept_schema_2_database_still_opens_and_its_process_runs() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2-db");
    let kept = snapshot_dir(&fixture);
    assert!(
        kept.keys().any(|p| p.ends_with("db")),
        "tests/data/v2-db holds a sled database: {:?}",
        kept.keys().collect::<Vec<_>>()
    );
    let home = TestHome::new();
    copy_dir(&fixture, &home.join("db"));
    assert_eq!(home.list().len(), 1);
    home.wait_process("legacy2", "online");
    let pid = pid_of(&home.process("legacy2"));
    let env = crate::common::environ(pid).expect("environ");
    assert!(env.iter().any(|e| e == "LEGACY=2"), "{env:?}");
    let info = home.info("legacy2");
    assert_eq!(info["max_restarts"], 7, "{info:#}");
    assert_eq!(info["restart_delay_ms"], 250);
    assert_eq!(info["min_uptime_ms"], 2500);
    assert_eq!(info["kill_timeout_ms"], 3000);
    assert_eq!(info["max_memory"], 512 * 1024 * 1024);
    assert!(info["watch"].is_null(), "{info:#}");
    home.opm(&["daemon", "stop"]).ok();
    let store = Store::open(&home.join("db")).expect("reopen");
    assert_is_migrated_v2(&store.get(0).expect("read").expect("kept"));
    drop(store);
    assert_same_files(&kept, &snapshot_dir(&fixture));
}

/// The process of `tests/data/v3-db`: a schema-3 spec (the last one before
/// definitions were kept as JSON) with nothing left at default.
fn v3_spec() -> SpecV3 {
    SpecV3 {
        id: 0,
        name: "legacy3".to_string(),
        command: "sleep 1000".to_string(),
        cwd: "/".to_string(),
        env: vec![("LEGACY".to_string(), "3".to_string())],
        restart: RestartPolicy {
            autorestart: true,
            max_restarts: 9,
            restart_delay_ms: 300,
            min_uptime_ms: 4000,
        },
        kill_timeout_ms: 1500,
        max_memory: Some(256 * 1024 * 1024),
        watch: Some("/usr/share/common-licenses".to_string()),
        desired: Desired::Running,
        generation: 1,
        created_ms: 1_750_000_000_000,
    }
}

/// A schema-3 database holding `spec`. This is how `tests/data/v3-db` was
/// made, with `v3_spec()`.
fn write_v3_db(dir: &Path, spec: &SpecV3) {
    write_old_db(dir, 3, spec.id, &spec.name, spec);
}

/// What a migrated `v3_spec()` must look like: every setting kept, and the
/// stop signal new in schema 4 at its default.
fn assert_is_migrated_v3(spec: &opm::spec::Spec) {
    let old = v3_spec();
    assert_eq!(restart_policy(spec), old.restart);
    assert_eq!(spec.def.kill_timeout_ms(), old.kill_timeout_ms);
    assert_eq!(spec.def.max_memory(), old.max_memory);
    assert_eq!(
        spec.def.watch,
        old.watch.clone().into_iter().collect::<Vec<_>>()
    );
    assert_eq!(spec.def.kill_signal().to_string(), "SIGTERM");
    assert_eq!(
        (
            spec.id,
            spec.name.as_str(),
            spec.command().as_str(),
            spec.cwd()
        ),
        (0, "legacy3", "sleep 1000", "/")
    );
    assert_eq!(spec.def.env, old.env);
    assert_eq!(
        (spec.desired, spec.generation, spec.created_ms),
        (old.desired, old.generation, old.created_ms)
    );
}

#[test]
fn a_schema_3_database_is_migrated_when_the_store_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    write_v3_db(&db, &v3_spec());
    let store = Store::open(&db).expect("open and migrate");
    assert_eq!(store.schema_version(), opm::store::migrate::CURRENT);
    assert_is_migrated_v3(&store.get(0).expect("read").expect("kept"));
    drop(store);
    let store = Store::open(&db).expect("reopen");
    assert_is_migrated_v3(&store.get(0).expect("read").expect("kept"));
}

#[test]
fn the_kept_schema_3_database_still_opens_and_its_process_runs() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v3-db");
    let kept = snapshot_dir(&fixture);
    assert!(
        kept.keys().any(|p| p.ends_with("db")),
        "tests/data/v3-db holds a sled database: {:?}",
        kept.keys().collect::<Vec<_>>()
    );
    let home = TestHome::new();
    copy_dir(&fixture, &home.join("db"));
    assert_eq!(home.list().len(), 1);
    home.wait_process("legacy3", "online");
    let pid = pid_of(&home.process("legacy3"));
    let env = crate::common::environ(pid).expect("environ");
    assert!(env.iter().any(|e| e == "LEGACY=3"), "{env:?}");
    let info = home.info("legacy3");
    assert_eq!(info["max_restarts"], 9, "{info:#}");
    assert_eq!(info["restart_delay_ms"], 300);
    assert_eq!(info["min_uptime_ms"], 4000);
    assert_eq!(info["kill_timeout_ms"], 1500);
    assert_eq!(info["max_memory"], 256 * 1024 * 1024);
    assert_eq!(info["watch"], "/usr/share/common-licenses");
    assert_eq!(info["definition"]["kill_signal"], "SIGTERM");
    home.opm(&["daemon", "stop"]).ok();
    let store = Store::open(&home.join("db")).expect("reopen");
    assert_is_migrated_v3(&store.get(0).expect("read").expect("kept"));
    drop(store);
    assert_same_files(&kept, &snapshot_dir(&fixture));
}
