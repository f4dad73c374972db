//! The test fixture itself: a dropped `TestHome` leaves nothing running,
//! and a test whose tools are missing fails under CI and is reported as
//! skipped elsewhere, never silently passed.

use std::time::Duration;

use crate::common::{alive, group_members_named, pid_of, wait_until, TestHome};

#[test]
fn dropping_a_test_home_kills_its_daemon_and_every_process_it_started() {
    let home = TestHome::new();
    let marker = home.marker().to_string();
    let plain = pid_of(&home.start("sleep 1000", "plain", &[]));
    let stubborn = pid_of(&home.start(
        r#"bash -c 'trap "" TERM; sleep 1000 & wait'"#,
        "stubborn",
        &[],
    ));
    wait_until(
        Duration::from_secs(10),
        "the stubborn group to fork its sleep",
        || !group_members_named(stubborn, "sleep").is_empty(),
    );
    let daemon = home.daemon_pid().expect("a daemon runs");
    let mut before = home.marked_pids();
    before.sort_unstable();
    for pid in [daemon, plain, stubborn] {
        assert!(
            before.contains(&pid),
            "{pid} carries the marker: {before:?}"
        );
    }
    assert!(
        before.len() >= 4,
        "daemon, two leaders and a grandchild: {before:?}"
    );

    drop(home);

    let left = crate::common::pids_with_env(&marker);
    assert!(left.is_empty(), "still running with {marker}: {left:?}");
    for pid in before {
        assert!(!alive(pid), "pid {pid} survived the drop");
    }
}

/// Runs one test of this binary in a child test run, with `env`.
fn run_one_test(
    name: &str,
    env: &[(&str, &str)],
    skipped: &std::path::Path,
) -> crate::common::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([name, "--exact", "--test-threads=1"])
        .env_remove("CI")
        .env("OPM_TEST_SKIPPED_LIST", skipped);
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::common::run(cmd)
}

#[test]
fn a_test_without_its_tools_fails_under_ci_and_is_listed_as_skipped_elsewhere() {
    const BROWSER_TEST: &str =
        "web_ui::with_security_the_page_asks_for_the_token_and_shows_nothing_without_it";
    let dir = tempfile::tempdir().expect("tempdir");
    let skipped = dir.path().join("skipped.txt");
    let no_driver = ("OPM_TEST_CHROMEDRIVER", "/nonexistent/chromedriver");

    let ci = run_one_test(BROWSER_TEST, &[no_driver, ("CI", "true")], &skipped);
    assert!(!ci.success(), "under CI a missing chromedriver fails: {ci}");
    assert!(
        ci.stdout.contains("cannot run under CI=true") && ci.stdout.contains("chromedriver"),
        "and says why: {ci}"
    );
    assert!(!skipped.exists(), "a CI failure is not a skip");

    let local = run_one_test(BROWSER_TEST, &[no_driver], &skipped);
    assert!(local.success(), "{local}");
    assert!(
        local
            .stderr
            .contains(&format!("SKIPPED {BROWSER_TEST}: no chromedriver")),
        "the skip shows among the results: {local}"
    );
    let listed = std::fs::read_to_string(&skipped).expect("the skipped list");
    assert!(
        listed.starts_with(&format!("SKIPPED {BROWSER_TEST}")),
        "{listed}"
    );
}
