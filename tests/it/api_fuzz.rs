//! Generated bodies thrown at the JSON routes over TCP (`POST /daemon/create`
//! and `POST /daemon/action`): random JSON values, objects mixing the right
//! keys with wrong ones and values of every type, and random bytes. No
//! answer may be a 5xx or a dropped connection, and the daemon still
//! answers `/health` afterwards, as the same process.
//!
//! A command the daemon might run comes only from a harmless set (or a
//! program that does not exist): generated text never reaches a shell.
//! Whatever the fuzzing created is killed by the fixture (the home's marker).

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

use crate::common::http::{connect_tcp, exchange, host, ApiHome, Auth};

/// Cases per route: enough to reach the odd shapes, few enough for seconds.
const CASES: u32 = 200;

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text that may stand where a name, id or path goes.
fn texty() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9._-]{0,70}".prop_map(Value::String),
        ".{0,40}".prop_map(Value::String),
        Just(json!("all")),
        Just(json!("")),
        Just(json!("/")),
        Just(json!("/tmp")),
        Just(json!("../..")),
        Just(json!("a\u{0}b")),
        (0u64..5).prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any_json(),
    ]
}

/// A value for `script`: a harmless command, a program that does not
/// exist (with generated arguments), or a value of the wrong type.
fn script() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("sleep 1000")),
        Just(json!("true")),
        Just(json!("false")),
        Just(json!("")),
        Just(json!("   ")),
        Just(json!("sleep\u{0}1")),
        "[a-z0-9 ]{0,20}".prop_map(|a| json!(format!("/nonexistent/opm-fuzz/prog {a}"))),
        any_json().prop_filter("not a string", |v| !v.is_string()),
    ]
}

/// Keeps generated text out of any command: a string under `script` (at
/// the top or in an array of creations) that is not one of ours becomes a
/// program that does not exist.
fn defang(v: Value) -> Value {
    fn one(mut v: Value) -> Value {
        if let Some(Value::String(s)) = v.get("script") {
            let safe = ["sleep 1000", "true", "false", "", "   ", "sleep\u{0}1"]
                .contains(&s.as_str())
                || s.starts_with("/nonexistent/opm-fuzz/");
            if !safe {
                let hex: String = s.bytes().take(16).map(|b| format!("{b:02x}")).collect();
                v["script"] = json!(format!("/nonexistent/opm-fuzz/{hex}"));
            }
        }
        v
    }
    match v {
        Value::Array(items) => Value::Array(items.into_iter().map(one).collect()),
        other => one(other),
    }
}

/// Mostly `right`, sometimes a value of any type.
fn mostly(right: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![4 => right, 1 => any_json()].boxed()
}

/// The strategy of the value under `key`.
fn value_for(key: &str) -> BoxedStrategy<Value> {
    match key {
        "script" => script().boxed(),
        "name" => mostly(prop_oneof![
            3 => "[a-z][a-z0-9._-]{0,20}".prop_map(Value::String),
            1 => texty(),
        ]),
        "path" => mostly(prop_oneof![
            Just(json!("/tmp")),
            Just(json!("/")),
            Just(json!("relative")),
            Just(json!("/nonexistent/dir")),
            ".{0,20}".prop_map(Value::String),
        ]),
        "env" => mostly(
            prop::collection::btree_map("[A-Z_]{1,8}", ".{0,12}", 0..4).prop_map(|m| json!(m)),
        ),
        "autorestart" | "stopped" => mostly(any::<bool>().prop_map(Value::Bool)),
        "max_restarts" => mostly(any::<u32>().prop_map(|n| json!(n))),
        "restart_delay_ms" | "min_uptime_ms" | "kill_timeout_ms" | "max_memory" => {
            mostly(prop_oneof![
                (0u64..10_000).prop_map(|n| json!(n)),
                any::<u64>().prop_map(|n| json!(n))
            ])
        }
        "id" => mostly(prop_oneof![
            Just(json!("f0")),
            Just(json!("f1")),
            Just(json!("all")),
            (0u64..8).prop_map(|n| json!(n)),
            (0u64..8).prop_map(|n| json!(n.to_string())),
            texty(),
        ]),
        "action" => mostly(prop_oneof![
            4 => prop::sample::select(&["start", "stop", "restart", "reload", "remove", "flush"][..])
                .prop_map(|a| json!(a)),
            1 => ".{0,10}".prop_map(Value::String),
        ]),
        _ => any_json().boxed(),
    }
}

/// An object with each of `keys` (likely) present with a value of (likely)
/// the right type, and sometimes keys that do not belong.
fn keyed(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = keys
        .iter()
        .map(|k| {
            let weight = if ["script", "id", "action"].contains(k) {
                0.9
            } else {
                0.3
            };
            prop::option::weighted(weight, value_for(k).prop_map(move |v| (k.to_string(), v)))
                .boxed()
        })
        .collect();
    let wrong = prop::option::weighted(
        0.2,
        prop::collection::btree_map("[a-z_]{1,12}", any_json(), 1..3),
    );
    (fields, wrong).prop_map(|(fields, wrong)| {
        let mut m: Map<String, Value> = fields.into_iter().flatten().collect();
        for (k, v) in wrong.into_iter().flatten() {
            m.insert(k, v);
        }
        Value::Object(m)
    })
}

const CREATE_KEYS: &[&str] = &[
    "script",
    "name",
    "path",
    "env",
    "autorestart",
    "max_restarts",
    "restart_delay_ms",
    "min_uptime_ms",
    "kill_timeout_ms",
    "max_memory",
    "stopped",
];

const ACTION_KEYS: &[&str] = &["id", "action"];

/// A body: JSON of some shape, or bytes that are not JSON at all.
fn body(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => keyed(keys).prop_map(|v| serde_json::to_vec(&defang(v)).expect("json")),
        1 => prop::collection::vec(keyed(keys), 0..4)
            .prop_map(|v| serde_json::to_vec(&defang(Value::Array(v))).expect("json")),
        2 => any_json().prop_map(|v| serde_json::to_vec(&defang(v)).expect("json")),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => ".{0,64}".prop_map(String::into_bytes),
    ]
}

/// Throws `CASES` generated bodies at `path`; fails on a 5xx or a broken
/// answer. Returns how many answers had each status.
fn fuzz(api: &ApiHome, path: &str, keys: &'static [&'static str]) -> BTreeMap<u16, u32> {
    let statuses = RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&body(keys), |bytes| {
        let answer = connect_tcp(api.port).and_then(|s| {
            exchange(
                s,
                &host(api.port),
                "POST",
                path,
                Auth::Bearer(&api.token),
                &[],
                Some(&bytes),
            )
        });
        let r = answer.map_err(|e| {
            TestCaseError::fail(format!(
                "no answer to {}: {e}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        *statuses.borrow_mut().entry(r.status).or_insert(0) += 1;
        prop_assert!(
            r.status < 500,
            "{} to {path} got {r}",
            String::from_utf8_lossy(&bytes)
        );
        if r.status >= 400 {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            prop_assert!(
                v["error"].is_string(),
                "an error that is not JSON: {} to {path} got {r}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{path}: {e}");
    }
    let statuses = statuses.into_inner();
    eprintln!("{path}: answers by status {statuses:?}");
    statuses
}

#[test]
fn generated_bodies_get_no_5xx_and_the_daemon_survives() {
    let api = ApiHome::start();
    let pid = api.daemon_pid();
    // Something for the actions to act on.
    for name in ["f0", "f1"] {
        api.post(
            "/daemon/create",
            &json!({ "script": "sleep 1000", "name": name }),
        )
        .expect(201);
    }
    let created = fuzz(&api, "/daemon/create", CREATE_KEYS);
    let acted = fuzz(&api, "/daemon/action", ACTION_KEYS);
    // The generators reach past the JSON parser into the service.
    for (route, statuses) in [("create", &created), ("action", &acted)] {
        assert!(
            statuses.keys().any(|s| (200..300).contains(s)),
            "no generated {route} body was accepted: {statuses:?}"
        );
        assert!(
            statuses.keys().filter(|s| (400..500).contains(*s)).count() >= 2,
            "too few kinds of refusal for {route}: {statuses:?}"
        );
    }
    assert_eq!(api.daemon_pid(), pid, "the daemon was replaced");
    api.get("/daemon/list").expect(200);
    // The socket too, and the daemon still creates and runs processes.
    api.unix("GET", "/health", None).expect(200);
    api.post(
        "/daemon/create",
        &json!({ "script": "sleep 1000", "name": "after-fuzz" }),
    )
    .expect(201);
    api.wait_status("after-fuzz", "online");
}
