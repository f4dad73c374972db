//! `GET /openapi.json`: an OpenAPI 3.0 description of every route, request
//! and response. A test (`tests/it/api_openapi.rs`) checks that every path
//! here is routed and every `warp::path!` in `src/api/` is here.

use serde_json::{json, Value};

fn ok(schema: Value) -> Value {
    json!({ "description": "OK", "content": { "application/json": { "schema": schema } } })
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn errors() -> Value {
    let e = json!({ "content": { "application/json": { "schema": r("ApiError") } } });
    let with = |d: &str| {
        let mut v = e.clone();
        v["description"] = json!(d);
        v
    };
    json!({
        "400": with("Bad request (malformed JSON, invalid value)"),
        "401": with("Missing or wrong token"),
        "404": with("Unknown process, agent or route"),
        "409": with("Conflict (duplicate name)"),
        "413": with("Body over 1 MiB"),
        "422": with("JSON of the wrong shape (unknown field, wrong type)")
    })
}

fn op(summary: &str, responses: Value) -> Value {
    let mut all = errors();
    if let (Some(all), Some(extra)) = (all.as_object_mut(), responses.as_object()) {
        for (k, v) in extra {
            all.insert(k.clone(), v.clone());
        }
    }
    json!({ "summary": summary, "responses": all, "security": [{ "token": [] }, { "bearer": [] }] })
}

fn with_body(mut operation: Value, schema: Value) -> Value {
    operation["requestBody"] =
        json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    operation
}

fn id_param(what: &str) -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "description": what, "schema": { "type": "string" } }])
}

fn with_params(mut operation: Value, params: Value) -> Value {
    operation["parameters"] = params;
    operation
}

/// The whole document.
pub fn document() -> Value {
    let process_id = "Process id or name";
    let lines = json!({ "name": "lines", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0 } });
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/health".into(),
        json!({ "get": {
            "summary": "Daemon health (no token needed)",
            "responses": { "200": ok(r("Health")) }
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({ "get": op("This document", json!({ "200": ok(json!({ "type": "object" })) })) }),
    );
    paths.insert("/daemon/list".into(), json!({ "get": op("All processes", json!({ "200": ok(json!({ "type": "array", "items": r("ProcessView") })) })) }));
    paths.insert("/daemon/info/{id}".into(), json!({ "get": with_params(op("One process in detail", json!({ "200": ok(r("ProcessInfo")) })), id_param(process_id)) }));
    paths.insert("/daemon/create".into(), json!({ "post": with_body(
        op("Create and start one process, or several in one transaction", json!({ "201": {
            "description": "Created; the object (or array) of the created processes",
            "content": { "application/json": { "schema": { "oneOf": [r("ProcessView"), { "type": "array", "items": r("ProcessView") }] } } }
        }})),
        json!({ "oneOf": [r("CreateRequest"), { "type": "array", "items": r("CreateRequest") }] })
    )}));
    paths.insert("/daemon/apply".into(), json!({ "post": with_body(op("Make the processes match a process file in one transaction: create the new, update and restart the changed, leave the unchanged running, prune what came from the file before", json!({ "200": ok(r("ApplyResponse")) })), r("ApplyRequest")) }));
    paths.insert("/daemon/action".into(), json!({ "post": with_body(op("Start, stop, restart, reload, remove or flush processes, zero their restart counters (reset) or send them a signal", json!({ "200": ok(r("ActionResponse")) })), r("ActionRequest")) }));
    paths.insert("/daemon/scale".into(), json!({ "post": with_body(op("Grow or shrink an instance group: new copies take the lowest free indexes, the highest are stopped and removed", json!({ "200": ok(r("ScaleResponse")) })), r("ScaleRequest")) }));
    paths.insert("/daemon/logs/{id}".into(), json!({ "get": with_params(op("The last lines of a process's stdout and stderr", json!({ "200": ok(r("LogsResponse")) })), json!([id_param(process_id)[0].clone(), lines.clone()])) }));
    paths.insert("/daemon/logs/{id}/stream".into(), json!({ "get": with_params(op("Live log lines as server-sent events named `out` and `err`", json!({ "200": {
        "description": "An event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } }
    }})), json!([id_param(process_id)[0].clone(), lines])) }));
    paths.insert("/daemon/reload-logs".into(), json!({ "post": op("Give every running process's log files their configured names back after an outside tool (logrotate) renamed them away; what was found for each", json!({ "200": ok(r("ReloadLogsResponse")) })) }));
    paths.insert("/daemon/env/{id}".into(), json!({ "get": with_params(op("The environment opm gives a process", json!({ "200": ok(r("EnvResponse")) })), id_param(process_id)) }));
    paths.insert("/daemon/dump".into(), json!({ "get": op("Every process definition (for `opm save`)", json!({ "200": ok(r("Dump")) })) }));
    paths.insert("/daemon/stop".into(), json!({ "post": op("Stop the daemon; processes keep running", json!({ "200": ok(json!({ "type": "object", "properties": { "stopping": { "type": "boolean" }, "pid": { "type": "integer" } } })) })) }));
    paths.insert("/daemon/metrics".into(), json!({ "get": op("Daemon and per-process CPU, memory, restarts, uptime", json!({ "200": ok(r("Metrics")) })) }));
    paths.insert("/daemon/prometheus".into(), json!({ "get": op("Metrics in the Prometheus text format", json!({ "200": {
        "description": "Prometheus exposition format 0.0.4", "content": { "text/plain": { "schema": { "type": "string" } } }
    }})) }));

    paths.insert("/daemon/history".into(), json!({ "get": op("CPU, memory and restarts of every process over time (`[daemon.history]`: one sample each interval_ms, the last `samples` kept)", json!({ "200": ok(r("History")) })) }));
    paths.insert("/daemon/history/{id}".into(), json!({ "get": with_params(op("The history of one process", json!({ "200": ok(r("History")) })), id_param(process_id)) }));

    let event_filters = json!([
        { "name": "process", "in": "query", "required": false, "description": "Only this process's events (id, or the name it had)", "schema": { "type": "string" } },
        { "name": "agent", "in": "query", "required": false, "description": "Only this agent's events (id or name; on a server)", "schema": { "type": "string" } },
        { "name": "kind", "in": "query", "required": false, "description": "Only these kinds, comma-separated: started, exited, restarted, stopped, errored, finished, cron_restart, reset, signal, memory_limit, watch, spawn_failed, adopted, lost, removed, agent_joined, agent_registered, agent_online, agent_offline, agent_removed, recovered", "schema": { "type": "string" } }
    ]);
    let mut with_limit = event_filters.as_array().cloned().unwrap_or_default();
    with_limit.push(json!({ "name": "limit", "in": "query", "required": false, "description": "The newest N (1 to 10000; 100 when not given), oldest first", "schema": { "type": "integer" } }));
    paths.insert("/daemon/events".into(), json!({ "get": with_params(op("The events timeline: what happened to processes, agents and the daemon, filtered; the filters combine", json!({ "200": ok(json!({ "type": "array", "items": r("TimelineEvent") })) })), Value::Array(with_limit)) }));
    paths.insert("/daemon/events/stream".into(), json!({ "get": with_params(op("New events as server-sent events named `event` (a TimelineEvent), with the same filters; `tick` (`{\"at_ms\"}`) after each history sample; a keep-alive comment every 15 s. Counted against `[daemon.web] max_streams` (503 when full)", json!({ "200": {
        "description": "An event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } }
    }, "503": { "description": "Too many live streams are open" } })), event_filters) }));

    agent_paths(&mut paths);

    let history_schema = json!({ "type": "object", "required": ["interval_ms", "samples", "subjects"], "properties": {
        "interval_ms": { "type": "integer", "description": "time between two samples" },
        "samples": { "type": "integer", "description": "the most samples kept per subject" },
        "subjects": { "type": "array", "items": { "type": "object", "required": ["id", "name", "at_ms", "cpu", "memory", "count"], "properties": {
            "id": { "description": "process id (integer) or agent id (string)" },
            "name": { "type": "string" },
            "at_ms": { "type": "array", "items": { "type": "integer" }, "description": "sample times, oldest first" },
            "cpu": { "type": "array", "items": { "type": "number" }, "description": "percent of one core" },
            "memory": { "type": "array", "items": { "type": "integer" }, "description": "bytes (KiB precision)" },
            "count": { "type": "array", "items": { "type": "integer" }, "description": "a process's restarts; an agent's online processes" }
        }}}
    }});
    let status = json!({ "type": "string", "enum": ["online", "stopped", "errored", "starting", "stopping", "waiting", "exited"] });
    let process_view = json!({
        "type": "object",
        "required": ["id", "name", "pid", "status", "restarts", "uptime_ms", "cpu", "memory"],
        "properties": {
            "id": { "type": "integer" }, "name": { "type": "string" },
            "pid": { "type": "integer", "nullable": true }, "status": status,
            "restarts": { "type": "integer" }, "uptime_ms": { "type": "integer" },
            "cpu": { "type": "number" }, "memory": { "type": "integer" },
            "command": { "type": "string" }, "cwd": { "type": "string" },
            "autorestart": { "type": "boolean" }, "desired": { "type": "string" },
            "error": { "type": "string", "description": "why the last start failed, until a run succeeds" },
            "instance": { "type": "integer", "nullable": true, "description": "its index in its instance group (0…N-1); null without instances" },
            "instances": { "type": "integer", "description": "the copies in its group (1 without instances)" },
            "restart_at_ms": { "type": "integer", "description": "waiting: when the next automatic start is due (ms since the epoch)" },
            "exit_code": { "type": "integer", "description": "exited: the code of the run that ended and was not restarted" }
        }
    });
    let mut process_info = process_view.clone();
    if let Some(props) = process_info["properties"].as_object_mut() {
        for (k, v) in [
            ("created_ms", json!({ "type": "integer" })),
            (
                "group",
                json!({ "type": "array", "items": { "type": "integer" }, "description": "the ids of every copy of its instance group" }),
            ),
            ("max_restarts", json!({ "type": "integer" })),
            ("restart_delay_ms", json!({ "type": "integer" })),
            ("min_uptime_ms", json!({ "type": "integer" })),
            ("kill_timeout_ms", json!({ "type": "integer" })),
            ("max_memory", json!({ "type": "integer", "nullable": true })),
            (
                "watch",
                json!({ "type": "string", "nullable": true, "description": "the watched paths, comma-separated (the list is `definition.watch`)" }),
            ),
            (
                "definition",
                json!({ "type": "object", "description": "the whole definition with every default written out, as `opm save` writes it (CreateRequest's keys)" }),
            ),
            (
                "env_keys",
                json!({ "type": "array", "items": { "type": "string" } }),
            ),
            ("out_log", json!({ "type": "string" })),
            ("err_log", json!({ "type": "string" })),
            (
                "last_exit",
                json!({ "type": "object", "nullable": true, "properties": {
                "code": { "type": "integer", "nullable": true }, "signal": { "type": "integer", "nullable": true },
                "at_ms": { "type": "integer" }, "description": { "type": "string" } } }),
            ),
            (
                "errored_reason",
                json!({ "type": "string", "nullable": true }),
            ),
            (
                "cron_next_ms",
                json!({ "type": "integer", "description": "with cron_restart: its next match" }),
            ),
            (
                "readiness",
                json!({ "type": "string", "description": "with wait_ready or ready_port: whether the live run is ready, as a sentence" }),
            ),
            (
                "notify_status",
                json!({ "type": "string", "description": "the last STATUS= text the process sent to its notify socket" }),
            ),
            (
                "events",
                json!({ "type": "array", "items": { "type": "object", "properties": {
                "at_ms": { "type": "integer" }, "id": { "type": "integer" }, "name": { "type": "string" },
                "kind": { "type": "string" }, "detail": { "type": "string" } } } }),
            ),
        ] {
            props.insert(k.into(), v);
        }
    }
    let duration = json!({ "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }], "description": "ms, or \"500ms\", \"2s\", \"1m\"; also read with the suffix _ms" });
    let target = json!({ "oneOf": [{ "type": "integer" }, { "type": "string", "description": "a name, digits for an id, or \"all\"" }] });
    let recovered = json!({ "type": "object", "nullable": true, "description": "set when this daemon rebuilt a damaged database from its snapshot", "properties": {
        "at_ms": { "type": "integer" }, "reason": { "type": "string" }, "from": { "type": "string" },
        "snapshot_written_ms": { "type": "integer" }, "damaged_copy": { "type": "string", "nullable": true }, "processes": { "type": "integer" }
    }});
    let create_request = json!({ "type": "object", "required": ["script"], "additionalProperties": false,
        "description": "a process definition: the same keys as a [[process]] of a process file; durations are a number of ms or \"500ms\", \"2s\"; sizes a number of bytes or \"100M\"",
        "properties": {
        "script": { "type": "string", "description": "a command line or a script path" },
        "name": { "type": "string" },
        "cwd": { "type": "string", "description": "working directory (absolute); also read as `path`" },
        "env": { "type": "object", "additionalProperties": { "type": "string" } },
        "autorestart": { "type": "boolean" }, "max_restarts": { "type": "integer", "minimum": 0 },
        "restart_delay": duration.clone(), "min_uptime": duration.clone(), "kill_timeout": duration,
        "kill_signal": { "oneOf": [{ "type": "string" }, { "type": "integer" }], "description": "the stop signal: SIGINT, INT or 2 (default SIGTERM)" },
        "max_memory": { "oneOf": [{ "type": "integer", "minimum": 1 }, { "type": "string" }], "description": "bytes, or \"100M\"" },
        "watch": { "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }, { "type": "boolean" }], "description": "restart on changes under this path or these paths (relative to cwd; \".\" or true: the working directory)" },
        "ignore_watch": { "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }], "description": "globs of changes that do not restart, relative to each watched path (\"logs\", \"*.log\", \"**/tmp/*\"); opm's own log files are always ignored" },
        "watch_delay": { "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }], "description": "restart once the watched files have been quiet this long: ms, or \"1s\" (default 300ms)" },
        "user": { "oneOf": [{ "type": "string" }, { "type": "integer" }], "description": "run as this user (name or uid; also read as `uid`); only a daemon running as root can" },
        "group": { "oneOf": [{ "type": "string" }, { "type": "integer" }], "description": "run with this group (name or gid; also read as `gid`); default: the user's primary group" },
        "max_log_size": { "oneOf": [{ "type": "integer", "minimum": 65536 }, { "type": "string" }], "description": "rotate a log past this size: bytes, or \"10M\" (default [logs] max_size)" },
        "log_files": { "type": "integer", "minimum": 0, "maximum": 1000, "description": "rotated files kept per log (default [logs] files)" },
        "out_file": { "type": "string", "description": "the file stdout goes to: absolute, or relative to cwd (default NAME-ID.out.log in the logs folder)" },
        "err_file": { "type": "string", "description": "the file stderr goes to (default NAME-ID.err.log in the logs folder)" },
        "merge_logs": { "type": "boolean", "description": "both streams to one file: out_file, else NAME-ID.log in the logs folder" },
        "desired": { "type": "string", "enum": ["running", "stopped"], "description": "also read as `stopped: true|false`" },
        "unchecked": { "type": "boolean", "description": "store it even if its program cannot be found or run now" },
        "args": { "type": "array", "items": { "type": "string" }, "description": "arguments given to the script" },
        "interpreter": { "type": "string", "description": "the program that runs the script" },
        "interpreter_args": { "type": "string", "description": "arguments of the interpreter, before the script" },
        "origin": { "type": "string", "description": "the process file it came from (absolute)" },
        "caller_env": { "type": "object", "additionalProperties": { "type": "string" }, "description": "the environment the child's is built on (the caller's shell), under `env`" },
        "force": { "type": "boolean", "description": "create it even if the same command already runs under opm without a name" },
        "instances": { "oneOf": [{ "type": "integer" }, { "type": "string", "enum": ["max"] }], "description": "run N copies under this name (`max`: one per CPU, -1: one less)" },
        "increment_var": { "type": "string", "description": "a variable raised by each copy's index (e.g. PORT)" },
        "restart": { "type": "string", "enum": ["always", "on-failure", "never"], "description": "which exits are restarted (default always; never is autorestart = false)" },
        "stop_exit_codes": { "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 255 }, "description": "exit codes that are not restarted" },
        "cron_restart": { "type": "string", "description": "restart (or start again, once exited) at each match: \"0 3 * * *\", or six fields with seconds first" },
        "wait_ready": { "type": "boolean", "description": "online only once the process sends READY=1 to $NOTIFY_SOCKET; reload starts the new run before stopping the old" },
        "ready_port": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "online only once the process listens on this TCP port; reload starts the new run before stopping the old" },
        "listen_timeout": { "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }], "description": "how long a run may take to be ready before that is reported (and a reload keeps the old run): ms or \"30s\" (default 30s)" }
    }});
    let apply_request = json!({ "type": "object", "required": ["processes"], "additionalProperties": false, "properties": {
        "processes": { "type": "array", "items": r("CreateRequest") },
        "origin": { "type": "string", "description": "the process file's absolute path, recorded in each definition" },
        "prune": { "type": "boolean", "description": "remove the processes of `origin` that are not in `processes`" },
        "restart": { "type": "boolean", "description": "restart changed processes now (default true)" },
        "caller_env": { "type": "object", "additionalProperties": { "type": "string" }, "description": "the caller's environment, sent once: the `caller_env` of each definition that has none" }
    }});
    let apply_response = json!({ "type": "object", "properties": {
        "created": { "type": "array", "items": r("ProcessView") }, "changed": { "type": "array", "items": r("ProcessView") },
        "unchanged": { "type": "array", "items": r("ProcessView") }, "pruned": { "type": "array", "items": { "type": "string" } }
    }});
    // Instance groups (`opm scale`).
    let scale_request = json!({ "type": "object", "required": ["id", "instances"], "additionalProperties": false, "properties": {
        "id": target.clone(), "instances": { "type": "integer", "minimum": 1, "maximum": 1024 }
    }});
    let scale_response = json!({ "type": "object", "properties": {
        "name": { "type": "string" }, "instances": { "type": "integer" },
        "processes": { "type": "array", "items": r("ProcessView") },
        "added": { "type": "array", "items": { "type": "integer" } },
        "removed": { "type": "array", "items": { "type": "integer" } }
    }});
    let reload_logs = json!({ "type": "object", "properties": {
        "logs": { "type": "array", "items": { "type": "object", "properties": {
            "id": { "type": "integer" }, "name": { "type": "string" },
            "stream": { "type": "string", "enum": ["out", "err", "both"] }, "path": { "type": "string" },
            "outcome": { "type": "string", "enum": ["same", "moved", "deleted", "elsewhere", "occupied", "failed"] },
            "detail": { "type": "string" }
        }}}
    }});
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": { "title": "opm", "version": env!("CARGO_PKG_VERSION"), "description": "The opm daemon's API. Over TCP every route needs the token (GET /health without it says only that the daemon is up); changes need Content-Type: application/json, and Host and Origin must be the daemon's own." },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": { "type": "apiKey", "in": "header", "name": "token" },
                "bearer": { "type": "http", "scheme": "bearer" }
            },
            "schemas": {
                "ApiError": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
                "ProcessView": process_view,
                "ProcessInfo": process_info,
                "CreateRequest": create_request,
                "ActionRequest": { "type": "object", "required": ["id", "action"], "additionalProperties": false, "properties": {
                    "id": target, "action": { "type": "string", "enum": ["start", "stop", "restart", "reload", "remove", "flush", "reset", "signal"] },
                    "signal": { "oneOf": [{ "type": "string" }, { "type": "integer" }], "description": "signal: SIGUSR2, USR2 or 12" },
                    "process_group": { "type": "boolean", "description": "signal: to the whole process group, not only the main process" },
                    "caller_env": { "type": "object", "description": "restart, reload: the environment the child's is built on from now on" }
                }},
                "ActionResponse": { "type": "object", "properties": {
                    "action": { "type": "string" }, "processes": { "type": "array", "items": r("ProcessView") },
                    "removed": { "type": "array", "items": { "type": "integer" } },
                    "reloads": { "type": "array", "description": "reload: how each process was reloaded", "items": { "type": "object", "properties": {
                        "id": { "type": "integer" }, "name": { "type": "string" },
                        "outcome": { "type": "string", "enum": ["handover", "restart", "failed"], "description": "handover: the new run was ready before the old one was stopped; restart: no readiness set (or not running, or not ready), stopped then started; failed: the new run did not get ready, the old one still serves" },
                        "detail": { "type": "string" }, "old_pid": { "type": "integer", "nullable": true }, "new_pid": { "type": "integer", "nullable": true }
                    }}}
                }},
                "LogsResponse": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "name": { "type": "string" }, "out_log": { "type": "string" }, "err_log": { "type": "string" },
                    "out": { "type": "array", "items": { "type": "string" } }, "err": { "type": "array", "items": { "type": "string" } }
                }},
                "EnvResponse": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "name": { "type": "string" }, "env": { "type": "object", "additionalProperties": { "type": "string" } }
                }},
                "Dump": { "type": "object", "properties": { "processes": { "type": "array", "items": { "type": "object" } } } },
                "Health": { "type": "object", "required": ["role", "pid", "version", "processes", "api"], "properties": {
                    "role": { "type": "string", "enum": ["standalone", "server", "agent"] }, "pid": { "type": "integer" },
                    "version": { "type": "string" }, "processes": { "type": "integer" }, "online": { "type": "integer" },
                    "stopped": { "type": "integer" }, "errored": { "type": "integer" },
                    "api": { "type": "string", "nullable": true }, "api_error": { "type": "string", "nullable": true },
                    "uptime_ms": { "type": "integer" }, "home": { "type": "string" }, "schema_version": { "type": "integer" },
                    "memory": { "type": "integer" },
                    "recovered": recovered,
                    "api_url": { "type": "string", "nullable": true, "description": "the TCP API's URL, https:// when it serves TLS" },
                    "tls_fingerprint": { "type": "string", "nullable": true, "description": "SHA256: and the base64 SHA-256 of the TLS certificate, which clients pin; null without TLS" }
                }},
                "RegisterRequest": { "type": "object", "required": ["name", "hostname", "endpoint", "version", "token"], "additionalProperties": false, "properties": {
                    "id": { "type": "string", "nullable": true, "description": "the id the server gave this agent, when registering again (with its credential in the agent-token header)" },
                    "name": { "type": "string", "description": "unique; letters, digits, '.', '_', '-'; never the shape of an id (ag- and 16 hex digits)" },
                    "hostname": { "type": "string", "description": "at most 255 bytes, no control characters" },
                    "endpoint": { "type": "string", "description": "https://host:port (or http://host:port to a server without TLS) of the agent's API: no path, query, user info or fragment" },
                    "version": { "type": "string" }, "token": { "type": "string", "description": "the agent's API token (at least 16 characters)" },
                    "processes": { "type": "array", "items": r("ProcessView") },
                    "fingerprint": { "type": "string", "nullable": true, "description": "the fingerprint (SHA256:…) of the agent API's certificate; required with an https endpoint, the only certificate the server trusts there" }
                }},
                "HeartbeatRequest": { "type": "object", "additionalProperties": false, "properties": {
                    "processes": { "type": "array", "items": r("ProcessView") }
                }},
                "HeartbeatAnswer": { "type": "object", "required": ["id", "heartbeat_interval_ms"], "properties": {
                    "id": { "type": "string" }, "heartbeat_interval_ms": { "type": "integer", "description": "when to beat next" },
                    "credential": { "type": "string", "description": "only in the answer to a join: the agent's own credential, to send in the agent-token header from then on" }
                }},
                "AgentView": { "type": "object", "required": ["id", "name", "hostname", "endpoint", "status", "last_seen_ms", "processes"], "properties": {
                    "id": { "type": "string" }, "name": { "type": "string" }, "hostname": { "type": "string" },
                    "endpoint": { "type": "string" }, "version": { "type": "string" },
                    "status": { "type": "string", "enum": ["online", "offline"] },
                    "last_seen_ms": { "type": "integer" }, "registered_ms": { "type": "integer" },
                    "processes": { "type": "object", "properties": {
                        "total": { "type": "integer" }, "online": { "type": "integer" },
                        "stopped": { "type": "integer" }, "errored": { "type": "integer" } } }
                }},
                "AgentStatus": { "type": "object", "properties": {
                    "role": { "type": "string" }, "server": { "type": "string", "nullable": true },
                    "agent_id": { "type": "string", "nullable": true }, "name": { "type": "string", "nullable": true },
                    "endpoint": { "type": "string", "nullable": true }, "connected": { "type": "boolean" },
                    "last_heartbeat_ms": { "type": "integer", "nullable": true }, "last_error": { "type": "string", "nullable": true },
                    "heartbeat_interval_ms": { "type": "integer", "nullable": true }, "connected_since_ms": { "type": "integer", "nullable": true },
                    "refused": { "type": "boolean", "description": "the server refused this agent at the last attempt (removed, revoked or wrong token)" },
                    "server_fingerprint": { "type": "string", "nullable": true, "description": "the pinned fingerprint of the server's certificate (https)" }
                }},
                "ConnectRequest": { "type": "object", "required": ["server", "token"], "additionalProperties": false, "properties": {
                    "server": { "type": "string" }, "token": { "type": "string" },
                    "name": { "type": "string", "nullable": true }, "api_address": { "type": "string", "nullable": true },
                    "fingerprint": { "type": "string", "nullable": true, "description": "the server certificate's fingerprint to pin; without it, the one it shows is pinned (trust on first use)" }
                }},
                "History": history_schema,
                "TimelineEvent": { "type": "object", "required": ["at_ms", "subject", "id", "name", "kind", "detail"], "properties": {
                    "at_ms": { "type": "integer" },
                    "subject": { "type": "string", "enum": ["process", "agent", "daemon"] },
                    "id": { "type": "integer", "nullable": true, "description": "the process id, for an event about a process" },
                    "name": { "type": "string", "description": "the process's or agent's name, or daemon" },
                    "kind": { "type": "string" }, "detail": { "type": "string" }
                }},
                "Metrics": { "type": "object", "properties": {
                    "daemon": { "type": "object", "properties": {
                        "pid": { "type": "integer" }, "uptime_ms": { "type": "integer" }, "cpu_avg": { "type": "number" },
                        "memory": { "type": "integer" }, "processes": { "type": "integer" }, "online": { "type": "integer" },
                        "restarts": { "type": "integer" } } },
                    "processes": { "type": "array", "items": r("ProcessView") }
                }}
            }
        }
    });
    doc["components"]["schemas"]["ApplyRequest"] = apply_request;
    doc["components"]["schemas"]["ApplyResponse"] = apply_response;
    doc["components"]["schemas"]["ScaleRequest"] = scale_request;
    doc["components"]["schemas"]["ScaleResponse"] = scale_response;
    doc["components"]["schemas"]["ReloadLogsResponse"] = reload_logs;
    doc
}

/// The role routes: on a server, agents and their processes; on the unix
/// socket only, this daemon's own link as an agent.
fn agent_paths(paths: &mut serde_json::Map<String, Value>) {
    let agent = json!([{ "name": "id", "in": "path", "required": true, "description": "Agent id or name", "schema": { "type": "string" } }]);
    let agent_and_process = json!([
        agent[0].clone(),
        { "name": "pid", "in": "path", "required": true, "description": "Process id or name on that agent", "schema": { "type": "string" } }
    ]);
    let agent_token = json!({ "name": "agent-token", "in": "header", "required": true, "description": "the agent's own credential, issued by the server when it joined", "schema": { "type": "string" } });
    let server_only = "Server role only (403 elsewhere).";
    paths.insert("/daemon/agents/register".into(), json!({ "post": with_body(
        op(&format!("An agent joins with the join token (the answer carries its id and credential), or registers again with its credential (agent-token header). 401 without either, 403 for the admin token or past max_agents, 409 for a name taken, 429 past max_registrations_per_minute. {server_only}"), json!({ "200": ok(r("HeartbeatAnswer")) })),
        r("RegisterRequest")) }));
    paths.insert("/daemon/agents/{id}/heartbeat".into(), json!({ "post": with_params(with_body(
        op(&format!("An agent's heartbeat with its process summary and its credential; 404 when the server does not know it, 401 when it was removed. {server_only}"), json!({ "200": ok(r("HeartbeatAnswer")) })),
        r("HeartbeatRequest")), json!([agent[0].clone(), agent_token.clone()])) }));
    paths.insert("/daemon/agents/{id}".into(), json!({ "delete": with_params(
        op(&format!("Forget an agent and revoke its credential (the admin token; or an agent leaving, with its agent-token): it must join again. {server_only}"), json!({ "200": ok(json!({ "type": "object" })) })),
        agent.clone()) }));
    paths.insert("/daemon/agents/list".into(), json!({ "get":
        op(&format!("Every agent with its status and process counts. {server_only}"), json!({ "200": ok(json!({ "type": "array", "items": r("AgentView") })) })) }));
    paths.insert("/daemon/agents/{id}/processes".into(), json!({ "get": with_params(
        op(&format!("The agent's processes, asked of the agent. {server_only}"), json!({ "200": ok(json!({ "type": "array", "items": r("ProcessView") })), "502": { "description": "The agent did not answer" } })),
        agent.clone()) }));
    paths.insert("/daemon/agents/history".into(), json!({ "get":
        op(&format!("Every agent's total CPU, memory and online processes over time, from its heartbeats (`[daemon.history] agent_interval_ms`, `agent_samples`); an offline agent's samples are zero. {server_only}"), json!({ "200": ok(r("History")) })) }));
    paths.insert("/daemon/agents/{id}/history".into(), json!({ "get": with_params(
        op(&format!("The agent's history of its processes, asked of the agent. {server_only}"), json!({ "200": ok(r("History")), "502": { "description": "The agent did not answer" } })),
        agent.clone()) }));
    paths.insert("/daemon/agents/{id}/history/{pid}".into(), json!({ "get": with_params(
        op(&format!("The history of one process on the agent. {server_only}"), json!({ "200": ok(r("History")), "502": { "description": "The agent did not answer" } })),
        agent_and_process.clone()) }));
    paths.insert("/daemon/agents/{id}/events".into(), json!({ "get": with_params(
        op(&format!("The agent's own events timeline, asked of the agent (same filters as /daemon/events). {server_only}"), json!({ "200": ok(json!({ "type": "array", "items": r("TimelineEvent") })), "502": { "description": "The agent did not answer" } })),
        agent.clone()) }));
    paths.insert("/daemon/agents/{id}/events/stream".into(), json!({ "get": with_params(
        op(&format!("The agent's live events stream, passed on event by event (`event`, `tick`). {server_only}"), json!({ "200": {
            "description": "An event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } }
        }, "502": { "description": "The agent did not answer" } })),
        agent.clone()) }));
    paths.insert("/daemon/agents/{id}/create".into(), json!({ "post": with_params(with_body(
        op(&format!("Create processes on the agent. {server_only}"), json!({ "201": ok(json!({ "oneOf": [r("ProcessView"), { "type": "array", "items": r("ProcessView") }] })), "502": { "description": "The agent did not answer" } })),
        json!({ "oneOf": [r("CreateRequest"), { "type": "array", "items": r("CreateRequest") }] })), agent.clone()) }));
    paths.insert("/daemon/agents/{id}/action".into(), json!({ "post": with_params(with_body(
        op(&format!("Act on the agent's processes. {server_only}"), json!({ "200": ok(r("ActionResponse")), "502": { "description": "The agent did not answer" } })),
        r("ActionRequest")), agent.clone()) }));
    paths.insert("/daemon/agents/{id}/scale".into(), json!({ "post": with_params(with_body(
        op(&format!("Scale an instance group on the agent. {server_only}"), json!({ "200": ok(r("ScaleResponse")), "502": { "description": "The agent did not answer" } })),
        r("ScaleRequest")), agent.clone()) }));
    paths.insert("/daemon/agents/{id}/logs/{pid}".into(), json!({ "get": with_params(
        op(&format!("The last lines of a process on the agent. {server_only}"), json!({ "200": ok(r("LogsResponse")), "502": { "description": "The agent did not answer" } })),
        json!([agent_and_process[0].clone(), agent_and_process[1].clone(), { "name": "lines", "in": "query", "required": false, "schema": { "type": "integer" } }])) }));
    paths.insert("/daemon/agents/{id}/logs/{pid}/stream".into(), json!({ "get": with_params(
        op(&format!("The live log stream of a process on the agent, passed on event by event (`out`, `err`). {server_only}"), json!({ "200": {
            "description": "An event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } }
        }, "502": { "description": "The agent did not answer" } })),
        json!([agent_and_process[0].clone(), agent_and_process[1].clone(), { "name": "lines", "in": "query", "required": false, "schema": { "type": "integer" } }])) }));
    paths.insert("/daemon/agents/{id}/info/{pid}".into(), json!({ "get": with_params(
        op(&format!("One process on the agent in detail. {server_only}"), json!({ "200": ok(r("ProcessInfo")), "502": { "description": "The agent did not answer" } })),
        agent_and_process) }));
    let local = |mut v: Value| {
        v["x-opm-unix-socket-only"] = json!(true);
        v
    };
    paths.insert("/daemon/agent/status".into(), json!({ "get": local(op("This daemon's link to its server (unix socket only)", json!({ "200": ok(r("AgentStatus")) }))) }));
    paths.insert("/daemon/agent/connect".into(), json!({ "post": local(with_body(
        op("Connect this daemon to a server as an agent (unix socket only)", json!({ "200": ok(r("AgentStatus")), "502": { "description": "The server could not be reached" } })),
        r("ConnectRequest"))) }));
    paths.insert("/daemon/agent/disconnect".into(), json!({ "post": local(op("Leave the server and become standalone (unix socket only)", json!({ "200": ok(json!({ "type": "object" })) }))) }));
}
