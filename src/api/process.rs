//! Process routes: list, info, create, action, logs (tail and live stream),
//! env, dump, and the daemon's own stop.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::auth::{admin, Tokens};
use super::errors::reject;
use super::{json_body, with_ctx, Ctx, LinesQuery};
use crate::model::{ActionRequest, ApplyRequest, CreateBody, ScaleRequest, Target};
use crate::service::MAX_LOG_LINES;
use crate::supervise::logs;

type Resp = warp::reply::Response;

pub fn routes(ctx: Ctx, tokens: Tokens) -> BoxedFilter<(Resp,)> {
    let list = warp::path!("daemon" / "list")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Ctx| list_reply(&ctx.svc.list()));

    let info = warp::path!("daemon" / "info" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, ctx: Ctx| async move {
            ctx.svc
                .info(&Target::parse(&id))
                .map(|i| warp::reply::json(&i).into_response())
                .map_err(reject)
        });

    let create = warp::path!("daemon" / "create")
        .and(admin(tokens.clone()))
        .and(warp::post())
        .and(json_body::<CreateBody>())
        .and(with_ctx(ctx.clone()))
        .and_then(|body: CreateBody, ctx: Ctx| async move {
            let many = matches!(body, CreateBody::Many(_));
            let created = ctx.svc.create(body).await.map_err(reject)?;
            let reply = if many {
                warp::reply::json(&created)
            } else {
                match created.first() {
                    Some(one) => warp::reply::json(one),
                    None => warp::reply::json(&created),
                }
            };
            Ok::<_, Rejection>(warp::reply::with_status(reply, StatusCode::CREATED).into_response())
        });

    let apply = warp::path!("daemon" / "apply")
        .and(admin(tokens.clone()))
        .and(warp::post())
        .and(json_body::<ApplyRequest>())
        .and(with_ctx(ctx.clone()))
        .and_then(|req: ApplyRequest, ctx: Ctx| async move {
            ctx.svc
                .apply(req)
                .await
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject)
        });

    let action = warp::path!("daemon" / "action")
        .and(admin(tokens.clone()))
        .and(warp::post())
        .and(json_body::<ActionRequest>())
        .and(with_ctx(ctx.clone()))
        .and_then(|req: ActionRequest, ctx: Ctx| async move {
            ctx.svc
                .action(req)
                .await
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject)
        });

    let scale = warp::path!("daemon" / "scale")
        .and(admin(tokens.clone()))
        .and(warp::post())
        .and(json_body::<ScaleRequest>())
        .and(with_ctx(ctx.clone()))
        .and_then(|req: ScaleRequest, ctx: Ctx| async move {
            ctx.svc
                .scale(req)
                .await
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject)
        });

    let logs = warp::path!("daemon" / "logs" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(warp::query::<LinesQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, q: LinesQuery, ctx: Ctx| async move {
            ctx.svc
                .logs(&Target::parse(&id), q.lines.unwrap_or(15))
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject)
        });

    let stream = warp::path!("daemon" / "logs" / String / "stream")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(warp::query::<LinesQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, q: LinesQuery, ctx: Ctx| async move {
            let (_, out, err) = ctx
                .svc
                .log_paths(&Target::parse(&id))
                .map_err(reject)?;
            let max = ctx.svc.config.daemon.web.max_streams;
            let Some(slot) = StreamSlot::take(max) else {
                return Ok(super::errors::json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "too many live log streams: {max} are open ([daemon.web] max_streams); close one or try again later"
                    ),
                ));
            };
            let lines = q.lines.unwrap_or(0).min(MAX_LOG_LINES);
            Ok::<_, Rejection>(log_stream(out, err, lines, slot))
        });

    let reload_logs = warp::path!("daemon" / "reload-logs")
        .and(admin(tokens.clone()))
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Ctx| warp::reply::json(&ctx.svc.reload_logs()).into_response());

    let env = warp::path!("daemon" / "env" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, ctx: Ctx| async move {
            ctx.svc
                .env(&Target::parse(&id))
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject)
        });

    let dump = warp::path!("daemon" / "dump")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|ctx: Ctx| async move {
            ctx.svc
                .dump()
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject)
        });

    let stop = warp::path!("daemon" / "stop")
        .and(admin(tokens.clone()))
        .and(warp::post())
        .and(with_ctx(ctx))
        .map(|ctx: Ctx| {
            let _ = ctx.shutdown.send(true);
            warp::reply::json(&serde_json::json!({ "stopping": true, "pid": std::process::id() }))
                .into_response()
        });

    list.or(info)
        .unify()
        .or(create)
        .unify()
        .or(apply)
        .unify()
        .or(action)
        .unify()
        .or(scale)
        .unify()
        .or(stream)
        .unify()
        .or(logs)
        .unify()
        .or(reload_logs)
        .unify()
        .or(env)
        .unify()
        .or(dump)
        .unify()
        .or(stop)
        .unify()
        .boxed()
}

/// Live streams open now (logs and events), over the unix socket and TCP together.
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One live stream's place under the cap (log and event streams alike);
/// given back when dropped.
pub(super) struct StreamSlot;

impl StreamSlot {
    /// A place, unless `max` streams are open.
    pub(super) fn take(max: usize) -> Option<StreamSlot> {
        OPEN_STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Server-sent events: the last `lines` lines of each log, then every new
/// line as it is written (see `logs::Follower`). Events are named `out` or
/// `err`; a failure to follow ends the stream with one named `error`.
fn log_stream(out: PathBuf, err: PathBuf, lines: usize, slot: StreamSlot) -> Resp {
    // Where the stream starts is fixed before the answer goes out, so a line
    // written while the client connects is not lost.
    let follower = logs::Follower::new(out, err, lines);
    let (tx, rx) = mpsc::channel::<warp::sse::Event>(256);
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = follower.run(&tx).await {
            let _ = tx
                .send(
                    warp::sse::Event::default()
                        .event("error")
                        .data(e.to_string()),
                )
                .await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx))
    });
    warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response()
}

impl From<logs::LogLine> for warp::sse::Event {
    fn from(line: logs::LogLine) -> warp::sse::Event {
        warp::sse::Event::default()
            .event(line.stream.name())
            .data(line.text)
    }
}

/// The list as JSON, written into a buffer sized for it at once (a
/// thousand processes make about 200 KB, which a growing buffer would copy
/// a dozen times over).
fn list_reply(views: &[crate::model::ProcessView]) -> Resp {
    let mut body = Vec::with_capacity(256 * views.len() + 2);
    match serde_json::to_writer(&mut body, views) {
        Ok(()) => {
            let mut resp = Resp::new(body.into());
            resp.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        // As warp's own `json` reply does: a value that cannot be written is the daemon's fault.
        Err(_) => warp::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
