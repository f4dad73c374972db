//! The CLI's `--server`: process commands carried out against another opm
//! over TCP with its token, given as a URL (token from `OPM_TOKEN`) or as a
//! `[servers.NAME]` entry of `config.toml`. The remote daemon is a second
//! home on this machine serving its API on 127.0.0.1.

use serde_json::Value;

use crate::common::http::ApiHome;
use crate::common::{run, Output, TestHome};

/// `opm ARGS` run from `local`, with `OPM_TOKEN` set to `token` or unset.
#[track_caller]
fn remote_opm(local: &TestHome, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = local.command(args);
    cmd.env_remove("OPM_TOKEN");
    if let Some(t) = token {
        cmd.env("OPM_TOKEN", t);
    }
    run(cmd)
}

/// `opm list --format json --server SERVER`, which must succeed.
#[track_caller]
fn remote_list(local: &TestHome, server: &str, token: Option<&str>) -> Vec<Value> {
    let out = remote_opm(
        local,
        &["list", "--format", "json", "--server", server],
        token,
    )
    .ok();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("list --format json is not a JSON array ({e}): {out}"))
}

fn status_in(list: &[Value], name: &str) -> Option<String> {
    list.iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["status"].as_str().map(String::from))
}

/// Starts, lists, stops, restarts and removes `name` on the remote through `server`.
#[track_caller]
fn drive(remote: &ApiHome, local: &TestHome, server: &str, token: Option<&str>, name: &str) {
    let out = remote_opm(
        local,
        &["start", "sleep 1000", "--name", name, "--server", server],
        token,
    )
    .ok();
    assert!(
        !out.stdout.contains(&remote.token) && !out.stderr.contains(&remote.token),
        "{out}"
    );
    // It runs on the remote daemon (seen through the remote's own socket).
    let there = remote.wait_status(name, "online");
    assert!(there["pid"].is_number(), "{there}");
    assert_eq!(
        status_in(&remote_list(local, server, token), name).as_deref(),
        Some("online")
    );
    let table = remote_opm(local, &["list", "--server", server], token).ok();
    assert!(table.stdout.contains(name), "{table}");

    remote_opm(local, &["stop", name, "--server", server], token).ok();
    remote.wait_status(name, "stopped");
    assert_eq!(
        status_in(&remote_list(local, server, token), name).as_deref(),
        Some("stopped")
    );

    remote_opm(local, &["restart", name, "--server", server], token).ok();
    let now = remote.wait_status(name, "online");

    // reset, pid and signal go the same way.
    let pid = now["pid"].as_i64().expect("pid");
    let out = remote_opm(local, &["pid", name, "--server", server], token).ok();
    assert_eq!(out.stdout, format!("{pid}\n"), "{out}");
    remote_opm(local, &["reset", name, "--server", server], token).ok();
    assert_eq!(remote.wait_status(name, "online")["restarts"], 0);
    // `sleep` ignores SIGWINCH: it is delivered and nothing changes.
    let out = remote_opm(local, &["signal", "WINCH", name, "--server", server], token).ok();
    assert!(out.stdout.contains(&format!("pid {pid}")), "{out}");

    let info = remote_opm(
        local,
        &["info", name, "--format", "json", "--server", server],
        token,
    )
    .ok();
    let info: Value = serde_json::from_str(&info.stdout).expect("info is JSON");
    assert_eq!(info["name"], name, "{info}");

    remote_opm(local, &["remove", name, "--server", server], token).ok();
    assert!(remote.find(name).is_none(), "{name} is still on the remote");
}

#[test]
fn server_given_as_a_url_uses_opm_token() {
    let remote = ApiHome::start();
    let local = TestHome::new();
    let url = format!("http://127.0.0.1:{}", remote.port);
    drive(&remote, &local, &url, Some(&remote.token), "by-url");

    // Without the token, or with a wrong one, the remote refuses.
    let wrong = format!("{}-wrong", remote.token);
    for token in [None, Some(wrong.as_str())] {
        let out = remote_opm(
            &local,
            &["start", "sleep 1000", "--name", "refused", "--server", &url],
            token,
        )
        .failed();
        assert!(out.stderr.to_lowercase().contains("token"), "{out}");
        remote_opm(&local, &["list", "--server", &url], token).failed();
    }
    assert!(remote.find("refused").is_none());
    // Nothing of this happened on the local daemon.
    assert!(
        local
            .list()
            .iter()
            .all(|p| p["name"] != "by-url" && p["name"] != "refused"),
        "{:?}",
        local.list()
    );
}

#[test]
fn server_given_by_a_config_entry_uses_its_url_and_token() {
    let remote = ApiHome::start();
    let local = TestHome::new();
    local.write_config(&format!(
        "[servers.box]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"{token}\"\n\n\
         [servers.stale]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"not-the-token\"\n",
        port = remote.port,
        token = remote.token
    ));
    drive(&remote, &local, "box", None, "by-name");
    // The entry's token wins over the environment.
    drive(&remote, &local, "box", Some("not-the-token"), "by-name-2");

    let out = remote_opm(&local, &["list", "--server", "stale"], None).failed();
    assert!(out.stderr.to_lowercase().contains("token"), "{out}");
    assert!(!out.stderr.contains("not-the-token"), "{out}");
    let out = remote_opm(&local, &["list", "--server", "nowhere"], None).failed();
    assert!(out.stderr.contains("nowhere"), "{out}");
}
