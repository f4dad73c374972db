//! `opm import`: a PM2 ecosystem file (`ecosystem.config.js` run with
//! node, `.json`) converted into an opm process file that `opm start FILE
//! --env production` runs with the environment PM2 would give, every key
//! opm does not support listed with its app, and bad input refused.

use crate::common::{environ, needs, pid_of, require, TestHome};

fn write(home: &TestHome, rel: &str, text: &str) {
    std::fs::write(home.join(rel), text).expect("write the ecosystem file");
}

/// The environment of the process `name`, which must be online.
fn env_of(home: &TestHome, name: &str) -> Vec<String> {
    let p = home.process(name);
    assert_eq!(p["status"], "online", "{p:#}");
    environ(pid_of(&p)).unwrap_or_else(|| panic!("cannot read the environment of {p:#}"))
}

/// Imports `file` into procs.toml, starts it with `--env production`, and
/// checks what the two apps of the ecosystem got.
fn import_then_start_in_production(home: &TestHome, file: &str) {
    let imported = home.opm(&["import", file, "-o", "procs.toml"]).ok();
    assert!(
        !imported.stderr.contains("instances"),
        "instances and increment_var convert: {imported}"
    );
    assert!(imported.stderr.contains("converted 2 apps"), "{imported}");
    let text = std::fs::read_to_string(home.join("procs.toml")).expect("procs.toml");
    assert!(text.contains("[process.env_production]"), "{text}");
    assert!(text.contains("instances = 2"), "{text}");

    home.opm(&["start", "procs.toml", "--env", "production"])
        .ok();
    // Two copies of web, each with its index and its own PORT.
    let webs: Vec<serde_json::Value> = home
        .list()
        .into_iter()
        .filter(|p| p["name"] == "web")
        .collect();
    assert_eq!(webs.len(), 2, "{webs:#?}");
    let mut ports = Vec::new();
    for p in &webs {
        assert_eq!(p["status"], "online", "{p:#}");
        let web = environ(pid_of(p)).unwrap_or_else(|| panic!("environment of {p:#}"));
        for want in ["GREETING=hello", "NODE_ENV=production"] {
            assert!(web.iter().any(|e| e == want), "web lacks {want}: {web:?}");
        }
        ports.extend(web.iter().filter(|e| e.starts_with("PORT=")).cloned());
    }
    ports.sort();
    assert_eq!(
        ports,
        ["PORT=3000", "PORT=3001"],
        "increment_var raises PORT per copy"
    );
    let worker = env_of(home, "worker");
    for want in ["NODE_ENV=production", "QUEUE=jobs"] {
        assert!(
            worker.iter().any(|e| e == want),
            "worker lacks {want}: {worker:?}"
        );
    }
    assert!(
        !worker.iter().any(|e| e.starts_with("GREETING=")),
        "worker has no env of its own: {worker:?}"
    );
    // args (an array and a string) reach the command line.
    assert_eq!(home.process("web")["command"], "sleep 1201");
    assert_eq!(home.process("worker")["command"], "sleep 1202");
    // max_memory_restart is opm's max_memory.
    assert_eq!(home.info("web")["max_memory"], 100 * 1024 * 1024);
}

#[test]
fn a_pm2_ecosystem_config_js_is_run_with_node_and_its_apps_start_with_env_production() {
    if !require(needs().tool("node", "nodejs").done()) {
        return;
    }
    let home = TestHome::new();
    write(
        &home,
        "ecosystem.config.js",
        r#"// Written as PM2's docs show it: shared keys, env sets, an array of args.
const shared = { script: "sleep", interpreter: "none" };
console.log("a config file may print things: it must not spoil the import");
module.exports = {
  apps: [
    { ...shared, name: "web", args: ["1201"], instances: 2, increment_var: "PORT", max_memory_restart: "100M",
      env: { GREETING: "hello", PORT: 3000 }, env_production: { NODE_ENV: "production" } },
    { ...shared, name: "worker", args: "1202",
      env_production: { NODE_ENV: "production", QUEUE: "jobs" } },
  ],
};
"#,
    );
    import_then_start_in_production(&home, "ecosystem.config.js");
}

#[test]
fn a_pm2_ecosystem_json_converts_into_a_file_that_starts_with_env_production() {
    let home = TestHome::new();
    write(
        &home,
        "eco.json",
        r#"{ "apps": [
  { "name": "web", "script": "sleep", "args": "1201", "instances": 2, "increment_var": "PORT",
    "max_memory_restart": "100M", "env": { "GREETING": "hello", "PORT": 3000 },
    "env_production": { "NODE_ENV": "production" } },
  { "name": "worker", "script": "sleep", "args": ["1202"],
    "env_production": { "NODE_ENV": "production", "QUEUE": "jobs" } }
] }"#,
    );
    import_then_start_in_production(&home, "eco.json");

    // Printed without -o: the same processes, as TOML on stdout.
    let printed = home.opm(&["import", "eco.json"]).ok();
    assert!(printed.stdout.contains("[[process]]"), "{printed}");
    assert!(printed.stdout.contains("name = \"worker\""), "{printed}");
}

#[test]
fn bad_ecosystem_files_are_refused_with_the_reason_and_nothing_written() {
    let home = TestHome::new();
    let cases: [(&str, &str, &str); 5] = [
        ("plain.json", r#"{ "services": [] }"#, "no `apps` list"),
        (
            "noscript.json",
            r#"{ "apps": [{ "name": "a" }] }"#,
            "no `script`",
        ),
        (
            "types.json",
            r#"{ "apps": [{ "name": "a", "script": "x", "autorestart": "maybe" }] }"#,
            "autorestart",
        ),
        ("broken.json", r#"{ "apps": [ "#, "not valid JSON"),
        (
            "eco.yaml",
            "apps:\n  - name: a\n    script: x\n    env: [A=1]\n",
            "env",
        ),
    ];
    for (file, text, want) in cases {
        write(&home, file, text);
        let out = home.opm(&["import", file, "-o", "out.toml"]).failed();
        assert!(out.stderr.contains(want), "{file}: {out}");
        assert!(
            !home.join("out.toml").exists(),
            "{file}: nothing is written on an error"
        );
    }
    let out = home.opm(&["import", "missing.json"]).failed();
    assert!(out.stderr.contains("no such file"), "{out}");
    write(&home, "ok.json", r#"{ "apps": [{ "script": "x" }] }"#);
    let out = home.opm(&["import", "ok.json", "-o", "out.txt"]).failed();
    assert!(out.stderr.contains(".toml, .json or .yaml"), "{out}");

    // A .js file needs node: without it on the PATH, the error names node.
    write(
        &home,
        "ecosystem.config.js",
        "module.exports = { apps: [] };\n",
    );
    let out = home
        .opm_env(
            &["import", "ecosystem.config.js"],
            &[("PATH", "/nonexistent")],
        )
        .failed();
    assert!(out.stderr.contains("node is not on the PATH"), "{out}");
}
