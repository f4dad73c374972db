//! The events timeline: `GET /daemon/events` (the newest events, filtered)
//! and `GET /daemon/events/stream` (server-sent events: `event` for each new
//! one the filters keep, `tick` after each history sample), and on a server
//! an agent's own, relayed: `GET /daemon/agents/{id}/events[/stream]`.

use std::convert::Infallible;
use std::time::Duration;

use hyper::Method;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use super::auth::{admin, Tokens};
use super::errors::{json_error, reject};
use super::process::StreamSlot;
use super::{with_ctx, Ctx};
use crate::model::TimelineEvent;
use crate::service::{EventFilter, DEFAULT_EVENTS};

type Resp = warp::reply::Response;

/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    process: Option<String>,
    agent: Option<String>,
    /// One kind, or several separated by commas.
    kind: Option<String>,
    limit: Option<usize>,
}

impl EventsQuery {
    /// The filter; an agent given by id or name matches events under its name.
    fn filter(&self, ctx: &Ctx) -> EventFilter {
        let mut agent = Vec::new();
        if let Some(a) = &self.agent {
            agent.push(a.clone());
            if let Some(rec) = ctx.role.registry.as_ref().and_then(|r| r.get(a)) {
                agent.push(rec.name);
            }
        }
        EventFilter {
            process: self.process.clone(),
            agent,
            kinds: self
                .kind
                .iter()
                .flat_map(|k| k.split(','))
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    /// The same filters as a query string, for an agent.
    fn to_query(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("process", &self.process),
            ("agent", &self.agent),
            ("kind", &self.kind),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", crate::model::encode_segment(v)));
            }
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

pub fn routes(ctx: Ctx, tokens: Tokens) -> BoxedFilter<(Resp,)> {
    let list = warp::path!("daemon" / "events")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(warp::query::<EventsQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(|q: EventsQuery, ctx: Ctx| async move {
            let filter = q.filter(&ctx);
            ctx.svc
                .events(&filter, q.limit.unwrap_or(DEFAULT_EVENTS))
                .map(|e| warp::reply::json(&e).into_response())
                .map_err(reject)
        });
    let stream = warp::path!("daemon" / "events" / "stream")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(warp::query::<EventsQuery>())
        .and(with_ctx(ctx.clone()))
        .map(|q: EventsQuery, ctx: Ctx| {
            let max = ctx.svc.config.daemon.web.max_streams;
            match StreamSlot::take(max) {
                Some(slot) => event_stream(&ctx, q.filter(&ctx), slot),
                None => json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("too many live streams: {max} are open ([daemon.web] max_streams); close one or try again later"),
                ),
            }
        });
    let agent_list = warp::path!("daemon" / "agents" / String / "events")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(warp::query::<EventsQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, q: EventsQuery, ctx: Ctx| async move {
            let rec = super::agents::agent(&ctx, &id)?;
            let path = format!("/daemon/events{}", q.to_query());
            super::agents::forward(rec, Method::GET, path, None).await
        });
    let agent_stream = warp::path!("daemon" / "agents" / String / "events" / "stream")
        .and(admin(tokens))
        .and(warp::get())
        .and(warp::query::<EventsQuery>())
        .and(with_ctx(ctx))
        .and_then(|id: String, q: EventsQuery, ctx: Ctx| async move {
            let rec = super::agents::agent(&ctx, &id)?;
            let path = format!("/daemon/events/stream{}", q.to_query());
            super::agents::relay_stream(rec, path).await
        });
    list.or(stream)
        .unify()
        .or(agent_list)
        .unify()
        .or(agent_stream)
        .unify()
        .boxed()
}

/// Every new event `filter` keeps, and a `tick` after each history sample,
/// until the client goes.
fn event_stream(ctx: &Ctx, filter: EventFilter, slot: StreamSlot) -> Resp {
    // Subscribed before the answer goes out: nothing pushed after is missed.
    let mut events = ctx.svc.store.subscribe_events();
    let mut ticks = ctx.svc.ticks.subscribe();
    ticks.mark_unchanged();
    let (tx, rx) = mpsc::channel::<warp::sse::Event>(64);
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            let out = tokio::select! {
                _ = tx.closed() => return,
                got = events.recv() => match got {
                    Ok(e) if filter.matches(&e) => json_event("event", &TimelineEvent::from(&e)),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => warp::sse::Event::default()
                        .event("lagged")
                        .data(format!("{n} events were missed: this stream fell behind")),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = ticks.changed() => match changed {
                    Ok(()) => {
                        let at = *ticks.borrow_and_update();
                        json_event("tick", &serde_json::json!({ "at_ms": at }))
                    }
                    Err(_) => return,
                },
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx))
    });
    warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(stream)).into_response()
}

fn json_event(name: &str, value: &impl serde::Serialize) -> warp::sse::Event {
    warp::sse::Event::default()
        .event(name)
        .data(serde_json::to_string(value).unwrap_or_default())
}
