//! Process routes: list, info, create, action, logs (tail and live stream),
//! env, dump, and the daemon's own stop.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::auth::{admin, Tokens};
use super::errors::Refusal;
use super::{json_body, with_ctx, Ctx, LinesQuery};
use crate::model::{ActionRequest, CreateBody, Target};
use crate::supervise::logs;

type Resp = warp::reply::Response;

/// The default of `[daemon.web] max_streams`: live log streams open at once.
pub const DEFAULT_MAX_STREAMS: usize = 256;

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
            Ok::<_, Rejection>(log_stream(out, err, q.lines.unwrap_or(0)))
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

/// Server-sent events: the last `lines` lines of each log, then every new
/// line as it is written (inotify on the logs folder, no polling). Events
/// are named `out` or `err`.
fn log_stream(out: PathBuf, err: PathBuf, lines: usize) -> Resp {
    // Where the stream starts is fixed before the answer goes out, so a line
    // written while the client connects is not lost.
    let offsets = [&out, &err].map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let (tx, rx) = mpsc::channel::<warp::sse::Event>(256);
    tokio::spawn(async move {
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
        let (bytes, next) =
            logs::read_from(self.path, self.offset).unwrap_or((Vec::new(), self.offset));
        if next < self.offset {
            self.partial.clear();
        }
        self.offset = next;
        self.partial.extend_from_slice(&bytes);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let event = warp::sse::Event::default().event(self.kind).data(text);
            if tx.send(event).await.is_err() {
                return false;
            }
        }
        true
    }
}

async fn follow(
    out: &Path,
    err: &Path,
    offsets: [u64; 2],
    lines: usize,
    tx: &mpsc::Sender<warp::sse::Event>,
) -> std::io::Result<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let dir = out.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE)?;
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
    let afd = crate::supervise::inotify_fd(inotify)?;
    loop {
        // Drain first: what was written before the watch existed goes out too.
        for f in files.iter_mut() {
            if !f.drain(tx).await {
                return Ok(());
            }
        }
        let mut guard = tokio::select! {
            g = afd.readable() => g?,
            _ = tx.closed() => return Ok(()),
        };
        match guard.get_inner().0.read_events() {
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}
