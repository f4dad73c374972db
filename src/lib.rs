#![recursion_limit = "256"]
//! opm: a process manager in one binary — CLI, daemon, HTTP API and web UI.
//!
//! The daemon keeps every process definition in a sled store (`store`), and
//! a reconciler (`reconcile`) drives real processes (`supervise`) toward the
//! desired state stored there. The API (`api`, warp) serves the same routes
//! on a unix socket for the CLI (`cli`, `client`) and, when enabled, on TCP.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod definition;
pub mod failpoint;
pub mod fsutil;
pub mod history;
pub mod import;
pub mod logging;
pub mod model;
pub mod reconcile;
pub mod role;
pub mod service;
pub mod spec;
pub mod store;
pub mod supervise;
pub mod sync;
pub mod tls;
pub mod token;

/// Environment variables that carry opm's secrets to the CLI. The daemon
/// drops them at start and never passes them to a managed process.
pub const SECRET_ENV_VARS: &[&str] = &["OPM_TOKEN", "OPM_SERVER_TOKEN", "OPM_JOIN_TOKEN"];
