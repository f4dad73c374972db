//! Process routes: list, info, create, action, logs (tail and live stream),
//! env, dump, and the daemon's own stop.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::auth::{admin, Tokens};
use super::errors::Refusal;
use super::{json_body, with_ctx, Ctx, LinesQuery};
use crate::model::{ActionRequest, CreateBody, Target};
use crate::service::MAX_LOG_LINES;
use crate::supervise::logs;

/// Changes of the logs folder a stream may hold before it just re-reads.
const CHANGE_QUEUE: usize = 64;

type Resp = warp::reply::Response;

fn reject_service(e: crate::service::ServiceError) -> Rejection {
    warp::reject::custom(Refusal::from(e))
}

pub fn routes(ctx: Ctx, tokens: Tokens) -> BoxedFilter<(Resp,)> {
    let list = warp::path!("daemon" / "list")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Ctx| warp::reply::json(&ctx.svc.list()).into_response());

    let info = warp::path!("daemon" / "info" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, ctx: Ctx| async move {
            ctx.svc
                .info(&Target::parse(&id))
                .map(|i| warp::reply::json(&i).into_response())
                .map_err(reject_service)
        });

    let create = warp::path!("daemon" / "create")
        .and(admin(tokens.clone()))
        .and(warp::post())
        .and(json_body::<CreateBody>())
        .and(with_ctx(ctx.clone()))
        .and_then(|body: CreateBody, ctx: Ctx| async move {
            let many = matches!(body, CreateBody::Many(_));
            let created = ctx.svc.create(body).await.map_err(reject_service)?;
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
                .map_err(reject_service)
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
                .map_err(reject_service)
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
                .map_err(reject_service)?;
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

    let env = warp::path!("daemon" / "env" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, ctx: Ctx| async move {
            ctx.svc
                .env(&Target::parse(&id))
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject_service)
        });

    let dump = warp::path!("daemon" / "dump")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|ctx: Ctx| async move {
            ctx.svc
                .dump()
                .map(|r| warp::reply::json(&r).into_response())
                .map_err(reject_service)
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
        .or(action)
        .unify()
        .or(stream)
        .unify()
        .or(logs)
        .unify()
        .or(env)
        .unify()
        .or(dump)
        .unify()
        .or(stop)
        .unify()
        .boxed()
}

/// Live log streams open now, over the unix socket and TCP together.
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One live stream's place under the cap; given back when dropped.
struct StreamSlot;

impl StreamSlot {
    /// A place, unless `max` streams are open.
    fn take(max: usize) -> Option<StreamSlot> {
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

/// The most bytes one read of a followed log takes in (a fast writer is
/// read in slices, never all at once).
const READ_SLICE: u64 = 1024 * 1024;

/// A line longer than this is sent in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Server-sent events: the last `lines` lines of each log, then every new
/// line as it is written (the daemon's one inotify instance tells when the
/// logs folder changes, no polling). Events are named `out` or `err`.
fn log_stream(out: PathBuf, err: PathBuf, lines: usize, slot: StreamSlot) -> Resp {
    // Where the stream starts is fixed before the answer goes out, so a line
    // written while the client connects is not lost.
    let offsets = [&out, &err].map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let (tx, rx) = mpsc::channel::<warp::sse::Event>(256);
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = follow(&out, &err, offsets, lines, &tx).await {
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

struct Followed<'a> {
    path: &'a Path,
    kind: &'static str,
    offset: u64,
    partial: Vec<u8>,
}

impl Followed<'_> {
    /// Sends every complete line written since the last read; false when
    /// the client has gone.
    async fn drain(&mut self, tx: &mpsc::Sender<warp::sse::Event>) -> bool {
        loop {
            let (bytes, next) = logs::read_from_at_most(self.path, self.offset, READ_SLICE)
                .unwrap_or((Vec::new(), self.offset));
            if next < self.offset {
                self.partial.clear();
            }
            let more = bytes.len() as u64 == READ_SLICE;
            self.offset = next;
            self.partial.extend_from_slice(&bytes);
            loop {
                let line: Vec<u8> = match self.partial.iter().position(|b| *b == b'\n') {
                    Some(pos) => {
                        let mut line: Vec<u8> = self.partial.drain(..=pos).collect();
                        line.pop();
                        line
                    }
                    // A line without an end for too long goes out in pieces.
                    None if self.partial.len() >= MAX_LINE => {
                        self.partial.drain(..MAX_LINE).collect()
                    }
                    None => break,
                };
                let text = String::from_utf8_lossy(&line).into_owned();
                let event = warp::sse::Event::default().event(self.kind).data(text);
                if tx.send(event).await.is_err() {
                    return false;
                }
            }
            if !more {
                return true;
            }
        }
    }
}

async fn follow(
    out: &Path,
    err: &Path,
    offsets: [u64; 2],
    lines: usize,
    tx: &mpsc::Sender<warp::sse::Event>,
) -> std::io::Result<()> {
    use crate::supervise::inotify::{Change, Hub};
    let dir = out.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let mut changes = Hub::global()?.subscribe(CHANGE_QUEUE);
    changes.add(dir, true)?;
    let mut files =
        [(out, "out", offsets[0]), (err, "err", offsets[1])].map(|(path, kind, offset)| Followed {
            path,
            kind,
            offset,
            partial: Vec::new(),
        });
    if lines > 0 {
        for f in &files {
            for line in logs::tail_lines(f.path, lines)? {
                if tx
                    .send(warp::sse::Event::default().event(f.kind).data(line))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
    let mut wanted = [true, true];
    loop {
        // Drain first: what was written before the watch existed goes out too.
        for (f, wanted) in files.iter_mut().zip(wanted) {
            if wanted && !f.drain(tx).await {
                return Ok(());
            }
        }
        // Wait for a change to one of the two files (the folder holds
        // every process's logs).
        wanted = loop {
            let change = tokio::select! {
                c = changes.next() => c,
                _ = tx.closed() => return Ok(()),
            };
            match change {
                Change::Lost => break [true, true],
                Change::Path { path, .. } if path == out => break [true, false],
                Change::Path { path, .. } if path == err => break [false, true],
                Change::Path { .. } => {}
            }
        };
    }
}
