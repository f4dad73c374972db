//! Bad input gets a clear message on stderr and a non-zero exit code, and
//! changes nothing.

use crate::common::{Output, TestHome};

/// Runs `opm ARGS`, which must fail saying each of `words` on stderr.
#[track_caller]
fn refused(home: &TestHome, args: &[&str], words: &[&str]) -> Output {
    let out = home.opm(args).failed();
    assert!(out.stderr.starts_with('✘'), "errors start with ✘: {out}");
    for w in words {
        assert!(out.stderr.contains(w), "stderr should mention {w:?}: {out}");
    }
    assert!(!out.stderr.contains("panicked"), "{out}");
    out
}

#[test]
fn unknown_ids_and_names_are_refused_by_every_command() {
    let home = TestHome::new();
    home.start("sleep 1000", "a", &[]);
    for cmd in ["stop", "restart", "reload", "remove", "rm", "delete"] {
        refused(&home, &[cmd, "999"], &["999", "no process"]);
        refused(&home, &[cmd, "nope"], &["nope", "no process"]);
    }
    refused(&home, &["info", "999"], &["999"]);
    refused(&home, &["info", "nope"], &["nope"]);
    refused(&home, &["logs", "nope"], &["nope"]);
    refused(&home, &["flush", "nope"], &["nope"]);
    refused(&home, &["env", "nope"], &["nope"]);
    let list = home.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "online", "a is untouched");
}

#[test]
fn a_duplicate_name_is_refused_and_creates_nothing() {
    let home = TestHome::new();
    let first = home.start("sleep 1000", "web", &[]);
    refused(
        &home,
        &["start", "sleep 2000", "--name", "web"],
        &["web", "already exists"],
    );
    let list = home.list();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["pid"], first["pid"]);
    assert_eq!(list[0]["command"], "sleep 1000");
}

#[test]
fn an_empty_command_is_refused() {
    let home = TestHome::new();
    refused(&home, &["start", ""], &["empty"]);
    refused(&home, &["start", "   "], &["empty"]);
    assert!(home.list().is_empty());
}

#[test]
fn a_missing_working_directory_is_refused() {
    let home = TestHome::new();
    refused(
        &home,
        &["start", "sleep 1000", "--cwd", "/does/not/exist"],
        &["/does/not/exist", "does not exist"],
    );
    assert!(home.list().is_empty());
}

#[test]
fn a_malformed_env_is_refused() {
    let home = TestHome::new();
    refused(
        &home,
        &["start", "sleep 1000", "--env", "NOEQUALS"],
        &["NOEQUALS", "KEY=value"],
    );
    refused(
        &home,
        &["start", "sleep 1000", "--env", "=value"],
        &["=value"],
    );
    assert!(home.list().is_empty());
}

#[test]
fn a_bad_memory_limit_is_refused() {
    let home = TestHome::new();
    refused(
        &home,
        &["start", "sleep 1000", "--max-memory", "lots"],
        &["lots", "size"],
    );
    refused(
        &home,
        &["start", "sleep 1000", "--max-memory", "0"],
        &["\"0\"", "size"],
    );
    assert!(home.list().is_empty());
}

#[test]
fn a_bad_duration_is_refused() {
    let home = TestHome::new();
    refused(
        &home,
        &["start", "sleep 1000", "--kill-timeout", "soon"],
        &["soon"],
    );
    assert!(home.list().is_empty());
}

#[test]
fn invalid_names_are_refused() {
    let home = TestHome::new();
    refused(
        &home,
        &["start", "sleep 1000", "--name", "a b"],
        &["a b", "invalid name"],
    );
    refused(
        &home,
        &["start", "sleep 1000", "--name", "42"],
        &["42", "id"],
    );
    refused(&home, &["start", "sleep 1000", "--name", "all"], &["all"]);
    refused(&home, &["start", "sleep 1000", "--name=-x"], &["-x"]);
    refused(
        &home,
        &["start", "sleep 1000", "--name", ""],
        &["invalid name"],
    );
    assert!(home.list().is_empty());
}

#[test]
fn an_unknown_role_in_config_toml_is_named_and_no_daemon_starts() {
    let home = TestHome::new();
    std::fs::write(home.join("config.toml"), "role = \"master\"\n").expect("write config");
    refused(&home, &["list"], &["config.toml", "master", "line 1"]);
    assert!(home.daemon_pid().is_none(), "no daemon started");
    assert!(!home.join("opm.sock").exists());
    assert_eq!(
        std::fs::read_to_string(home.join("config.toml")).expect("config"),
        "role = \"master\"\n",
        "the user's file is left as it was"
    );
}

#[test]
fn broken_toml_in_config_toml_names_the_line() {
    let home = TestHome::new();
    std::fs::write(
        home.join("config.toml"),
        "role = \"standalone\"\n[daemon.web\nport = 1\n",
    )
    .expect("write config");
    refused(&home, &["start", "sleep 1000"], &["config.toml", "line 2"]);
    assert!(home.daemon_pid().is_none(), "no daemon started");
}

#[test]
fn a_malformed_process_file_names_the_problem() {
    let home = TestHome::new();
    std::fs::write(home.join("bad.toml"), "[[process]]\nscript = 1\n").expect("write");
    refused(
        &home,
        &["start", "bad.toml"],
        &["bad.toml", "script", "line 2"],
    );
    std::fs::write(
        home.join("unknown.toml"),
        "[[process]]\nscript = \"sleep 1\"\ncolour = \"red\"\n",
    )
    .expect("write");
    refused(
        &home,
        &["start", "unknown.toml"],
        &["unknown.toml", "colour"],
    );
    std::fs::write(home.join("empty.toml"), "# nothing\n").expect("write");
    refused(
        &home,
        &["start", "empty.toml"],
        &["empty.toml", "[[process]]"],
    );
    assert!(home.list().is_empty());
}

#[test]
fn a_home_that_is_not_a_directory_is_reported() {
    let home = TestHome::new();
    let file = home.join("plain-file");
    std::fs::write(&file, "not a folder").expect("write");
    for opm_home in [file.clone(), file.join("home")] {
        let out = home.opm_env(&["list"], &[("OPM_HOME", &opm_home)]).failed();
        assert!(out.stderr.contains("Not a directory"), "{out}");
        assert!(
            out.stderr.contains(&*file.to_string_lossy()),
            "the message names the path: {out}"
        );
    }
}

#[test]
fn a_daemon_that_cannot_open_its_database_says_why() {
    let home = TestHome::new();
    home.opm(&["daemon", "restore"]).ok();
    home.opm(&["daemon", "stop"]).ok();
    std::fs::write(home.join("db/conf"), b"garbage\x00\xff").expect("garble db/conf");
    // Asked not to rebuild it (by default it is rebuilt: see store_safety).
    let out = refused(
        &home,
        &["daemon", "restore", "--no-recover"],
        &["did not start", "database", "damaged"],
    );
    assert!(out.stderr.contains("left untouched"), "{out}");
}

#[test]
fn a_database_path_that_is_a_file_is_reported() {
    let home = TestHome::new();
    std::fs::write(home.join("db"), "not a database").expect("write");
    refused(
        &home,
        &["list"],
        &["did not start", "db", "Not a directory"],
    );
    assert_eq!(
        std::fs::read_to_string(home.join("db")).expect("read"),
        "not a database",
        "left as it was"
    );
}
