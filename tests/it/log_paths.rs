//! Where a process's output goes: `--out-file`, `--err-file` (relative to
//! its working directory, or absolute) and `--merge-logs` (both streams in
//! one file), and every reader following them: `opm info`, `opm logs` (also
//! `--json`, `--err`, `--follow`), rotation, `opm flush`, process files.

use std::time::Duration;

use crate::common::{wait_until, TestHome};

/// Prints `outN` and `errN` alternately (five of each), then sleeps.
const ALTERNATING: &str =
    "sh -c 'for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; exec sleep 1000'";

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn custom_out_and_err_files_get_the_output_and_every_reader_follows_them() {
    let home = TestHome::new();
    let app = home.join("app");
    std::fs::create_dir(&app).expect("mkdir app");
    let err_abs = home.join("elsewhere/errors.txt");
    home.start(
        ALTERNATING,
        "custom",
        &[
            "--cwd",
            app.to_str().expect("utf-8"),
            // Relative to the working directory; its folder does not exist yet.
            "--out-file",
            "log/../var/out.txt",
            "--err-file",
            err_abs.to_str().expect("utf-8"),
        ],
    );
    let out_abs = app.join("var/out.txt");
    wait_until(Duration::from_secs(10), "the custom files to fill", || {
        read(&out_abs).lines().count() == 5 && read(&err_abs).lines().count() == 5
    });
    assert_eq!(read(&out_abs), "out1\nout2\nout3\nout4\nout5\n");
    assert_eq!(read(&err_abs), "err1\nerr2\nerr3\nerr4\nerr5\n");
    assert!(
        !home.join("logs/custom-0.out.log").exists()
            && !home.join("logs/custom-0.err.log").exists(),
        "nothing in the default place"
    );
    let info = home.info("custom");
    assert_eq!(info["out_log"], out_abs.to_str().expect("utf-8"));
    assert_eq!(info["err_log"], err_abs.to_str().expect("utf-8"));
    // Stored absolute: what `opm save` writes reads back the same anywhere.
    assert_eq!(
        info["definition"]["out_file"],
        out_abs.to_str().expect("utf-8")
    );
    let text = home.opm(&["info", "custom"]).ok().stdout;
    assert!(
        text.contains(&out_abs.display().to_string())
            && text.contains(&err_abs.display().to_string()),
        "{text}"
    );

    let logs = home.opm(&["logs", "custom", "--lines", "2"]).ok();
    assert_eq!(
        logs.stdout,
        format!(
            "==> {} (stdout) <==\nout4\nout5\n==> {} (stderr) <==\nerr4\nerr5\n",
            out_abs.display(),
            err_abs.display()
        ),
        "{logs}"
    );
    let json = home.opm(&["logs", "--json", "--err", "--lines", "1"]).ok();
    assert_eq!(
        json.stdout.trim(),
        r#"{"line":"err5","process":"custom","stream":"err"}"#,
        "{json}"
    );

    // --follow watches both folders.
    let mut follow = home.follow(&["logs", "custom", "--follow", "--lines", "1"]);
    follow.until("the tail from --follow", |seen| {
        seen.iter().any(|l| l == "out | out5") && seen.iter().any(|l| l == "err | err5")
    });
    for (path, line) in [(&out_abs, "later-out\n"), (&err_abs, "later-err\n")] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open a custom log");
        std::io::Write::write_all(&mut f, line.as_bytes()).expect("append");
    }
    follow.until("new lines of both custom files", |seen| {
        seen.iter().any(|l| l == "out | later-out") && seen.iter().any(|l| l == "err | later-err")
    });
    drop(follow);

    // flush empties the custom files.
    home.opm(&["flush", "custom"]).ok();
    assert_eq!(read(&out_abs), "");
    assert_eq!(read(&err_abs), "");
}

#[test]
fn merge_logs_writes_both_streams_in_order_to_one_file_read_as_out() {
    let home = TestHome::new();
    home.start(ALTERNATING, "merged", &["--merge-logs"]);
    let file = home.join("logs/merged-0.log");
    wait_until(Duration::from_secs(10), "the merged file to fill", || {
        read(&file).lines().count() == 10
    });
    assert_eq!(
        read(&file),
        "out1\nerr1\nout2\nerr2\nout3\nerr3\nout4\nerr4\nout5\nerr5\n",
        "both streams, in the order written"
    );
    assert!(!home.join("logs/merged-0.out.log").exists());
    assert!(!home.join("logs/merged-0.err.log").exists());
    let info = home.info("merged");
    assert_eq!(info["out_log"], info["err_log"]);
    assert_eq!(info["out_log"], file.to_str().expect("utf-8"));
    assert_eq!(info["definition"]["merge_logs"], true);
    assert!(home
        .opm(&["info", "merged"])
        .ok()
        .stdout
        .contains("log (merged)"));

    // One section, each line once.
    let logs = home.opm(&["logs", "merged", "--lines", "3"]).ok();
    assert_eq!(
        logs.stdout,
        format!(
            "==> {} (stdout and stderr) <==\nerr4\nout5\nerr5\n",
            file.display()
        ),
        "{logs}"
    );
    let json = home.opm(&["logs", "merged", "--json", "--lines", "2"]).ok();
    assert_eq!(
        json.stdout,
        "{\"line\":\"out5\",\"process\":\"merged\",\"stream\":\"out\"}\n\
         {\"line\":\"err5\",\"process\":\"merged\",\"stream\":\"out\"}\n",
        "{json}"
    );
    // --err cannot tell the streams apart in one file: it says so.
    let err = home.opm(&["logs", "merged", "--err"]).ok();
    assert!(err.stdout.trim().is_empty(), "{err}");
    assert!(
        err.stderr.contains("writes stdout and stderr to one file"),
        "{err}"
    );
    // --follow sends each line once.
    let mut follow = home.follow(&["logs", "merged", "--follow", "--lines", "2"]);
    let seen = follow
        .until("the merged tail", |seen| seen.len() >= 2)
        .to_vec();
    assert_eq!(seen, ["out | out5", "out | err5"]);
    drop(follow);

    // The same out_file and err_file is merging too.
    let same = home.join("same.log");
    let path = same.to_str().expect("utf-8");
    home.start(
        ALTERNATING,
        "same",
        &["--out-file", path, "--err-file", path],
    );
    wait_until(Duration::from_secs(10), "the shared file to fill", || {
        read(&same).lines().count() == 10
    });
    let info = home.info("same");
    assert_eq!(info["out_log"], path);
    assert_eq!(info["err_log"], path);
    home.opm(&["flush", "same"]).ok();
    assert_eq!(read(&same), "");
}

#[test]
fn a_custom_log_is_rotated_beside_itself_and_read_back_across_the_rotation() {
    let home = TestHome::new();
    home.write_config("[logs]\ncheck_interval_ms = 100\n");
    let file = home.join("var/app.log");
    home.start(
        "sh -c 'i=0; while [ $i -lt 40000 ]; do echo line-$i; i=$((i+1)); done; exec sleep 1000'",
        "rot",
        &[
            "--merge-logs",
            "--out-file",
            file.to_str().expect("utf-8"),
            "--max-log-size",
            "64K",
            "--log-files",
            "2",
        ],
    );
    let rotated = home.join("var/app.log.1");
    wait_until(Duration::from_secs(20), "all lines, and a rotation", || {
        read(&file).ends_with("line-39999\n") && rotated.exists()
    });
    // Give the last check its turn, then the bound holds.
    wait_until(
        Duration::from_secs(10),
        "the live file under the cap",
        || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) <= 64 * 1024,
    );
    assert!(!home.join("var/app.log.3").exists(), "two kept");
    assert!(
        !home.join("logs/rot-0.log.1").exists(),
        "nothing rotated in the default place"
    );
    let live_lines = read(&file).lines().count();
    let logs = home
        .opm(&["logs", "rot", "--lines", &(live_lines + 10).to_string()])
        .ok();
    let lines: Vec<&str> = logs.stdout.lines().skip(1).collect();
    let expect: Vec<String> = (39_990 - live_lines..40_000)
        .map(|i| format!("line-{i}"))
        .collect();
    assert_eq!(lines, expect, "read back into {}", rotated.display());
}

#[test]
fn log_paths_a_process_cannot_use_are_refused_with_the_reason() {
    let home = TestHome::new();
    std::fs::create_dir(home.join("adir")).expect("mkdir");
    std::fs::write(home.join("afile"), "").expect("write");
    let cases: &[(&[&str], &str)] = &[
        (&["--out-file", "adir"], "it is a folder"),
        (&["--err-file", "afile/x.log"], "is not a folder"),
        (&["--out-file", ""], "out_file is empty"),
        (
            &["--merge-logs", "--out-file", "a.log", "--err-file", "b.log"],
            "merge_logs writes both streams",
        ),
    ];
    for (extra, why) in cases {
        let mut args = vec!["start", "sleep 100", "--name", "bad"];
        args.extend_from_slice(extra);
        let out = home.opm(&args).failed();
        assert!(out.stderr.contains(why), "{extra:?}: {out}");
    }
    assert!(
        home.opm(&["list", "--format", "json"]).ok().stdout.trim() == "[]",
        "nothing stored"
    );

    // A file another process writes: refused, naming it.
    let shared = home.join("shared.log");
    let shared = shared.to_str().expect("utf-8");
    home.start("sleep 100", "first", &["--out-file", shared]);
    let out = home
        .opm(&[
            "start",
            "sleep 101",
            "--name",
            "second",
            "--err-file",
            shared,
        ])
        .failed();
    assert!(
        out.stderr
            .contains(&format!("first already writes {shared}")),
        "{out}"
    );
    // Also another process's default log.
    let theirs = home.join("logs/first-0.err.log");
    let out = home
        .opm(&[
            "start",
            "sleep 102",
            "--name",
            "third",
            "--out-file",
            theirs.to_str().expect("utf-8"),
        ])
        .failed();
    assert!(out.stderr.contains("first already writes"), "{out}");
}

#[test]
fn process_file_keys_as_pm2_users_write_them_and_logs_sent_to_dev_null() {
    let home = TestHome::new();
    let app = home.join("app");
    std::fs::create_dir(&app).expect("mkdir");
    // PM2's `error_file` is read as `err_file`.
    std::fs::write(
        app.join("procs.toml"),
        "[[process]]\nname = \"pm2-style\"\nscript = \"sh -c 'echo hello; echo oops >&2; exec sleep 1000'\"\n\
         out_file = \"out.log\"\nerror_file = \"err.log\"\n\
         [[process]]\nname = \"silent\"\nscript = \"sh -c 'echo nothing; exec sleep 1000'\"\n\
         out_file = \"/dev/null\"\nmerge_logs = true\n",
    )
    .expect("write the process file");
    home.opm(&["start", app.join("procs.toml").to_str().expect("utf-8")])
        .ok();
    // Relative to the file's folder (the process's working directory).
    wait_until(Duration::from_secs(10), "the pm2-style logs", || {
        read(&app.join("out.log")) == "hello\n" && read(&app.join("err.log")) == "oops\n"
    });
    let silent = home.info("silent");
    assert_eq!(silent["out_log"], "/dev/null");
    assert_eq!(silent["err_log"], "/dev/null");
    assert_eq!(home.process("silent")["status"], "online");
    // Nothing to read, nothing to empty, no error.
    let logs = home.opm(&["logs", "silent"]).ok();
    assert_eq!(
        logs.stdout, "==> /dev/null (stdout and stderr) <==\n",
        "{logs}"
    );
    home.opm(&["flush"]).ok();
    assert_eq!(read(&app.join("out.log")), "");

    // Saved and restored with the same files.
    home.opm(&["save"]).ok();
    let dump = std::fs::read_to_string(home.join("dump.toml")).expect("dump");
    assert!(
        dump.contains(&format!("out_file = \"{}\"", app.join("out.log").display())),
        "{dump}"
    );
    assert!(dump.contains("merge_logs = true"), "{dump}");
}
