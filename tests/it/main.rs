//! opm's integration tests: one binary, one module per user-visible
//! capability, all driving the real `opm` binary against a temporary home
//! (`common::TestHome`), except where the store is examined in-process.

mod common;

mod agent_trust;
mod api_flood;
mod api_fuzz;
mod api_metrics;
mod api_openapi;
mod api_tcp;
mod bounded_streams;
mod cli_errors;
mod cli_remote;
mod crash_restore;
mod deploy;
mod durability;
mod events;
mod fixture;
mod history;
mod import;
mod instances;
mod kill_signal;
mod layers;
mod log_paths;
mod log_reload;
mod log_rotation;
mod logs;
mod monit;
mod process_lifecycle;
mod process_tools;
mod readiness;
mod reload;
mod restart_policy;
mod roles;
mod roles_netns;
mod security;
mod spawn_failures;
mod startup;
mod stop_kill;
mod store_safety;
mod tls;
mod users;
mod watch;
mod watch_memory;
mod web_ui;
