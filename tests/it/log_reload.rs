//! `opm reload-logs`, for logs rotated from outside: logrotate's default
//! (rename the file, create an empty one) leaves the child writing the
//! renamed file; reload-logs gives it its configured name back, without
//! restarting the child and without losing a line.

use std::time::Duration;

use crate::common::{wait_until, TestHome};

/// Prints 0, 1, 2, ... a line every 5 ms, forever.
const TICKER: &str = "sh -c 'i=0; while :; do echo $i; i=$((i+1)); sleep 0.005; done'";

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")))
        .collect()
}

#[test]
fn a_log_renamed_away_is_given_its_name_back_and_new_lines_go_there() {
    let home = TestHome::new();
    let live = home.join("var/app.log");
    let pid = crate::common::pid_of(&home.start(
        TICKER,
        "ticker",
        &["--merge-logs", "--out-file", live.to_str().expect("utf-8")],
    ));
    wait_until(Duration::from_secs(10), "a few hundred lines", || {
        read(&live).lines().count() > 300
    });
    // What logrotate does without copytruncate (`create` mode).
    let renamed = home.join("var/app.log.1");
    std::fs::rename(&live, &renamed).expect("rename the log away");
    std::fs::write(&live, "").expect("create an empty log");
    wait_until(
        Duration::from_secs(10),
        "lines still going to the renamed file",
        || read(&renamed).lines().count() > 400,
    );
    assert_eq!(read(&live), "", "the child writes the renamed file");

    let out = home.opm(&["reload-logs"]).ok();
    assert!(
        out.stdout.contains(&format!(
            "✔ ticker (both): wrote {} (renamed from {})",
            renamed.display(),
            live.display()
        )),
        "{out}"
    );
    assert_eq!(
        crate::common::pid_of(&home.process("ticker")),
        pid,
        "not restarted"
    );
    let before = read(&live).lines().count();
    wait_until(
        Duration::from_secs(10),
        "new lines at the configured path",
        || read(&live).lines().count() > before + 50,
    );
    // The head is in the renamed file, the rest in the live one: together,
    // every number once, in order (a line may be split at the cut).
    let all = format!("{}{}", read(&renamed), read(&live));
    let got = numbers(&all);
    assert_eq!(got[0], 0);
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "no line lost or repeated"
    );
    // `opm logs` reads the configured file again.
    let tail = home.opm(&["logs", "ticker", "--lines", "1"]).ok();
    assert!(tail.stdout.contains(&live.display().to_string()), "{tail}");

    // Nothing more to do: every log is in place.
    let again = home.opm(&["reload-logs"]).ok();
    assert!(
        again
            .stdout
            .contains("1 of 1 logs of running processes already write their configured files"),
        "{again}"
    );
}

#[test]
fn a_deleted_log_is_reported_with_what_to_do() {
    let home = TestHome::new();
    home.start(TICKER, "gone", &[]);
    let live = home.join("logs/gone-0.out.log");
    wait_until(Duration::from_secs(10), "some lines", || {
        read(&live).lines().count() > 10
    });
    std::fs::remove_file(&live).expect("delete the log");
    let out = home.opm(&["reload-logs"]).failed();
    assert!(
        out.stdout.contains(&format!(
            "✘ gone (out): writes a deleted file (was {}): `opm restart gone` makes it write {}",
            live.display(),
            live.display()
        )),
        "{out}"
    );
    assert!(
        out.stderr.contains("1 log(s) still go to another file"),
        "{out}"
    );
    // The err log was not touched: in place.
    assert!(out.stdout.contains("1 of 2 logs"), "{out}");
    let json = home.opm(&["reload-logs", "--json"]).failed();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["logs"][0]["outcome"], "deleted", "{json}");
    assert_eq!(v["logs"][1]["outcome"], "same", "{json}");
}
