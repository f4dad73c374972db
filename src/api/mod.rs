//! The HTTP API: warp filters per area, served on the unix socket for the CLI
//! and, when enabled, on TCP. It knows the service's methods, not sled.

pub mod auth;
pub mod errors;
pub mod metrics;
pub mod openapi;
pub mod process;

use std::sync::Arc;

use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use crate::service::Service;

/// The largest request body accepted.
pub const BODY_LIMIT: u64 = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct Ctx {
    pub svc: Arc<Service>,
    /// Set to true to stop the daemon (`POST /daemon/stop`).
    pub shutdown: watch::Sender<bool>,
}

/// Every route. `token` is `Some` on a TCP listener with security enabled.
pub fn routes(ctx: Ctx, token: Option<Arc<String>>) -> BoxedFilter<(warp::reply::Response,)> {
    let health = {
        let ctx = ctx.clone();
        warp::path!("health")
            .and(warp::get())
            .map(move || warp::reply::json(&ctx.svc.health()).into_response())
    };
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| warp::reply::json(&openapi::document()).into_response());
    let guarded = auth::require(token).and(
        process::routes(ctx.clone())
            .or(metrics::routes(ctx))
            .unify()
            .or(openapi)
            .unify(),
    );
    health
        .or(guarded)
        .unify()
        .recover(errors::recover)
        .unify()
        .boxed()
}
