//! The database is never lost or overwritten: a damaged one or one of a
//! newer schema is refused and left byte-for-byte as it was; an older one
//! is migrated, including the schema-1 database kept in `tests/data/v1-db`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opm::spec::{Desired, RestartPolicy, DEFAULT_KILL_TIMEOUT_MS};
use opm::store::codec::{encode, id_key};
use opm::store::migrate::m0002_restart_policy::SpecV1;
use opm::store::Store;

use crate::common::{alive, copy_dir, pid_of, snapshot_dir, wait_until, Output, TestHome};

/// A home whose daemon has stored two processes and then stopped.
fn home_with_a_stopped_daemon() -> TestHome {
    let home = TestHome::new();
    home.start("sleep 1000", "a", &[]);
    home.start("sleep 1000", "b", &[]);
    home.opm(&["stop", "all"]).ok();
    home.opm(&["daemon", "stop"]).ok();
    assert!(!home.join("opm.sock").exists());
    home
}

/// Runs `opm list` on a home whose database must be refused, and checks
/// that nothing under `db/` changed and no daemon was left running.
#[track_caller]
fn assert_refused(home: &TestHome, why: &str) -> Output {
    let before = home.snapshot("db");
    let out = home.opm(&["list", "--format", "json"]).failed();
    assert!(out.stderr.contains(why), "stderr should say {why:?}: {out}");
    let after = home.snapshot("db");
    assert_same_files(&before, &after);
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
    out
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

#[test]
fn a_database_damaged_anywhere_is_refused_and_left_untouched() {
    let home = home_with_a_stopped_daemon();
    let pristine = std::fs::read(home.join("db/db")).expect("read db/db");
    for fraction in [0.25, 0.5, 0.75] {
        std::fs::write(home.join("db/db"), &pristine).expect("restore db/db");
        garble(&home.join("db/db"), fraction);
        assert_refused(&home, "damaged");
    }
}

#[test]
fn a_truncated_conf_file_is_refused_and_left_untouched() {
    let home = home_with_a_stopped_daemon();
    let conf = home.join("db/conf");
    let bytes = std::fs::read(&conf).expect("read db/conf");
    std::fs::write(&conf, &bytes[..bytes.len() / 2]).expect("truncate db/conf");
    let out = assert_refused(&home, "damaged");
    assert!(out.stderr.contains("left untouched"), "{out}");
}

#[test]
fn a_garbled_conf_file_is_refused_and_left_untouched() {
    let home = home_with_a_stopped_daemon();
    std::fs::write(home.join("db/conf"), b"segment_size: banana\n\xff\x00\xfe")
        .expect("garble db/conf");
    assert_refused(&home, "damaged");
}

#[test]
fn an_emptied_or_tiny_conf_file_is_refused_and_left_untouched() {
    for content in [&b""[..], &b"\xff\xff\xff"[..]] {
        let home = home_with_a_stopped_daemon();
        std::fs::write(home.join("db/conf"), content).expect("damage db/conf");
        assert_refused(&home, "damaged");
    }
}

#[test]
fn a_database_of_a_newer_schema_is_refused_and_left_untouched() {
    let home = home_with_a_stopped_daemon();
    {
        let store = Store::open(&home.join("db")).expect("open the store in-process");
        store
            .tree("meta")
            .expect("meta tree")
            .insert(b"schema", encode(&99u32).expect("encode"))
            .expect("write meta.schema");
        store.flush().expect("flush");
    }
    let out = assert_refused(&home, "newer");
    assert!(
        out.stderr.contains("99"),
        "the message names the version: {out}"
    );
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

/// Writes a schema-1 database holding one process into `dir`, with plain
/// sled (nothing of today's store code but the value encoding). This is how
/// `tests/data/v1-db` was made, with `v1_spec("legacy", "sleep 1000", true,
/// Desired::Running)`.
fn write_v1_db(dir: &Path, spec: &SpecV1) {
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
    meta.insert(b"schema", encode(&1u32).expect("encode"))
        .expect("write the schema");
    meta.insert(b"next_id", encode(&(spec.id + 1)).expect("encode"))
        .expect("write next_id");
    db.open_tree("processes")
        .expect("processes")
        .insert(id_key(spec.id), encode(spec).expect("encode"))
        .expect("write the spec");
    db.open_tree("names")
        .expect("names")
        .insert(spec.name.as_bytes(), encode(&spec.id).expect("encode"))
        .expect("write the name");
    db.flush().expect("flush");
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
        spec.restart,
        RestartPolicy {
            autorestart: false,
            ..RestartPolicy::default()
        },
        "the default policy, with autorestart kept"
    );
    assert_eq!(spec.kill_timeout_ms, DEFAULT_KILL_TIMEOUT_MS);
    assert_eq!(spec.max_memory, None);
    assert_eq!(
        (
            spec.id,
            spec.name.as_str(),
            spec.command.as_str(),
            spec.cwd.as_str()
        ),
        (0, "old", "sleep 1000", "/")
    );
    assert_eq!(spec.env, old.env);
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
    let health = home.opm(&["daemon", "health", "--format", "json"]).ok();
    let health: serde_json::Value = serde_json::from_str(&health.stdout).expect("JSON");
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

    wait_until(Duration::from_secs(10), "legacy to be online", || {
        let list = home.list();
        list.len() == 1 && list[0]["status"] == "online"
    });
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
