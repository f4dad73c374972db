//! The test fixture itself: a dropped `TestHome` leaves nothing running.

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
