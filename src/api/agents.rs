//! Role routes. On a server: agents join with the join token, then register
//! again, heartbeat and leave with their own credential (`agent_facing`),
//! and administrators list and remove agents and control their processes
//! (`admin_routes`), which the server carries out by calling the agent's API
//! with the agent's token. On the unix socket only: this daemon's own link
//! as an agent (`local_routes`).

use crate::sync::LockExt;
use bytes::Bytes;
use hyper::Method;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::auth::{admin, scope, Scope, Tokens};
use super::errors::reject;
use super::{json_body, with_ctx, Ctx, LinesQuery, BODY_LIMIT};
use crate::model::escape_control;
use crate::model::{ConnectRequest, HeartbeatRequest, RegisterRequest};
use crate::role::server::{
    call_agent, AgentCallError, AgentRecord, Caller, Registry, RegistryError,
};

type Resp = warp::reply::Response;

/// The registry, or the error that says why this daemon has none.
fn registry(ctx: &Ctx) -> Result<std::sync::Arc<Registry>, Rejection> {
    ctx.role
        .registry
        .clone()
        .ok_or_else(|| reject(RegistryError::NotAServer(ctx.role.role())))
}

/// Who calls an agent-facing route: an agent showing its credential
/// (header `agent-token`), else whoever the token check of every other
/// route finds (`scope`: the join or the admin token, with its refusals).
/// Where no admin token is configured (the unix socket), that is `Open`.
/// A caller with neither gets a 401 before the body is read.
fn caller(ctx: Ctx, tokens: Tokens) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    let open = tokens.admin.is_none();
    let by_credential = warp::header::optional::<String>("agent-token").and_then(
        move |credential: Option<String>| {
            let ctx = ctx.clone();
            async move {
                credential
                    .and_then(|c| ctx.role.registry.as_ref()?.agent_by_credential(&c))
                    .map(Caller::Agent)
                    // Not this way: the token check decides.
                    .ok_or_else(warp::reject::not_found)
            }
        },
    );
    let by_token = scope(tokens).map(move |s: Scope| match s {
        Scope::Join => Caller::Join,
        Scope::Admin if open => Caller::Open,
        Scope::Admin => Caller::Admin,
    });
    by_credential.or(by_token).unify()
}

/// Join, register again, heartbeat, leave: what agents do.
pub fn agent_facing(ctx: Ctx, tokens: Tokens) -> BoxedFilter<(Resp,)> {
    let register = warp::path!("daemon" / "agents" / "register")
        .and(warp::post())
        .and(caller(ctx.clone(), tokens.clone()))
        .and(json_body::<RegisterRequest>())
        .and(with_ctx(ctx.clone()))
        .and_then(
            |caller: Caller, req: RegisterRequest, ctx: Ctx| async move {
                let reg = registry(&ctx)?;
                // An agent of a TLS server is called over TLS only.
                let tls = ctx
                    .svc
                    .api
                    .lock_or_recover()
                    .tls_fingerprint
                    .is_some();
                if tls && !req.endpoint.starts_with("https://") {
                    return Err(reject(RegistryError::Invalid(format!(
                            "this server speaks TLS and calls its agents over TLS only, but the endpoint {:?} is http: the agent's API must serve https (an agent connected to an https:// server URL does)",
                            escape_control(&req.endpoint)
                        ))));
                }
                let answer = reg.register(&caller, req).map_err(reject)?;
                Ok::<_, Rejection>(warp::reply::json(&answer).into_response())
            },
        );
    let heartbeat = warp::path!("daemon" / "agents" / String / "heartbeat")
        .and(warp::post())
        .and(caller(ctx.clone(), tokens.clone()))
        .and(json_body::<HeartbeatRequest>())
        .and(with_ctx(ctx.clone()))
        .and_then(
            |id: String, caller: Caller, req: HeartbeatRequest, ctx: Ctx| async move {
                let reg = registry(&ctx)?;
                let answer = reg
                    .heartbeat(&caller, &id, &req.processes)
                    .map_err(reject)?;
                if let Some(h) = &ctx.role.agent_history {
                    h.observe(&id, &req.processes);
                }
                Ok::<_, Rejection>(warp::reply::json(&answer).into_response())
            },
        );
    let remove = warp::path!("daemon" / "agents" / String)
        .and(warp::delete())
        .and(caller(ctx.clone(), tokens))
        .and(with_ctx(ctx))
        .and_then(|id: String, caller: Caller, ctx: Ctx| async move {
            let reg = registry(&ctx)?;
            let rec = reg.deregister(&caller, &id).map_err(reject)?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({
                    "removed": rec.id,
                    "name": rec.name,
                    "revoked": true,
                }))
                .into_response(),
            )
        });
    register.or(heartbeat).unify().or(remove).unify().boxed()
}

/// Passes the agent's answer on: same status, same JSON body; an agent's
/// 401 is the server's problem, not the administrator's, so it becomes a 502.
pub(super) async fn forward(
    rec: AgentRecord,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
) -> Result<Resp, Rejection> {
    match call_agent(&rec, method, &path, body).await {
        Ok((status, _)) if status == StatusCode::UNAUTHORIZED => {
            Err(reject(AgentCallError::unauthorized(&rec)))
        }
        Ok((status, bytes)) => {
            let mut resp = warp::reply::Response::new(bytes.into());
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                "content-type",
                warp::http::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        Err(e) => Err(reject(e)),
    }
}

pub(super) fn agent(ctx: &Ctx, id: &str) -> Result<AgentRecord, Rejection> {
    registry(ctx)?
        .get(id)
        .ok_or_else(|| reject(RegistryError::NotFound(id.to_string())))
}

/// Listing agents and acting on their processes: administrators only.
pub fn admin_routes(ctx: Ctx, tokens: Tokens) -> BoxedFilter<(Resp,)> {
    let list = warp::path!("daemon" / "agents" / "list")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|ctx: Ctx| async move {
            let reg = registry(&ctx)?;
            Ok::<_, Rejection>(warp::reply::json(&reg.list()).into_response())
        });
    let processes = warp::path!("daemon" / "agents" / String / "processes")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, ctx: Ctx| async move {
            forward(agent(&ctx, &id)?, Method::GET, "/daemon/list".into(), None).await
        });
    // The server's own history of every agent (totals from heartbeats).
    let history = warp::path!("daemon" / "agents" / "history")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|ctx: Ctx| async move {
            let reg = registry(&ctx)?;
            let report = match &ctx.role.agent_history {
                Some(h) => h.report(&reg.list()),
                None => return Err(reject(RegistryError::NoHistory)),
            };
            Ok::<_, Rejection>(warp::reply::json(&report).into_response())
        });
    // An agent's own history of its processes, relayed.
    let agent_history = warp::path!("daemon" / "agents" / String / "history")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, ctx: Ctx| async move {
            forward(
                agent(&ctx, &id)?,
                Method::GET,
                "/daemon/history".into(),
                None,
            )
            .await
        });
    let agent_history_one = warp::path!("daemon" / "agents" / String / "history" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(|id: String, pid: String, ctx: Ctx| async move {
            let path = format!("/daemon/history/{}", crate::model::encode_segment(&pid));
            forward(agent(&ctx, &id)?, Method::GET, path, None).await
        });
    // Create and action pass the body on as it came: the agent validates it.
    let with_body = |route: &'static str| {
        warp::path("daemon")
            .and(warp::path("agents"))
            .and(warp::path::param::<String>())
            .and(warp::path(route))
            .and(warp::path::end())
            .and(admin(tokens.clone()))
            .and(warp::post())
            .and(warp::body::content_length_limit(BODY_LIMIT))
            .and(warp::body::bytes())
            .and(with_ctx(ctx.clone()))
            .and_then(move |id: String, body: Bytes, ctx: Ctx| async move {
                let path = format!("/daemon/{route}");
                forward(agent(&ctx, &id)?, Method::POST, path, Some(body.to_vec())).await
            })
    };
    let create = with_body("create");
    let action = with_body("action");
    let scale = with_body("scale");
    let logs = warp::path!("daemon" / "agents" / String / "logs" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(warp::query::<LinesQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(
            |id: String, pid: String, q: LinesQuery, ctx: Ctx| async move {
                let path = format!(
                    "/daemon/logs/{}?lines={}",
                    crate::model::encode_segment(&pid),
                    q.lines.unwrap_or(15)
                );
                forward(agent(&ctx, &id)?, Method::GET, path, None).await
            },
        );
    let stream = warp::path!("daemon" / "agents" / String / "logs" / String / "stream")
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(warp::query::<LinesQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(
            |id: String, pid: String, q: LinesQuery, ctx: Ctx| async move {
                let rec = agent(&ctx, &id)?;
                let path = format!(
                    "/daemon/logs/{}/stream?lines={}",
                    crate::model::encode_segment(&pid),
                    q.lines.unwrap_or(0)
                );
                relay_stream(rec, path).await
            },
        );
    let info = warp::path!("daemon" / "agents" / String / "info" / String)
        .and(admin(tokens.clone()))
        .and(warp::get())
        .and(with_ctx(ctx))
        .and_then(|id: String, pid: String, ctx: Ctx| async move {
            forward(
                agent(&ctx, &id)?,
                Method::GET,
                format!("/daemon/info/{}", crate::model::encode_segment(&pid)),
                None,
            )
            .await
        });
    list.or(processes)
        .unify()
        .or(stream)
        .unify()
        .or(create)
        .unify()
        .or(action)
        .unify()
        .or(scale)
        .unify()
        .or(logs)
        .unify()
        .or(info)
        .unify()
        .or(history)
        .unify()
        .or(agent_history)
        .unify()
        .or(agent_history_one)
        .unify()
        .boxed()
}

/// Passes an agent's live stream (logs, events) on, event by event.
pub(super) async fn relay_stream(rec: AgentRecord, path: String) -> Result<Resp, Rejection> {
    let body = crate::role::server::stream_agent(&rec, &path)
        .await
        .map_err(reject)?;
    let start = Some(crate::client::SseReader::new(body));
    let events = futures_util::stream::unfold(start, |reader| async move {
        let mut reader = reader?;
        let event = match reader.next().await {
            Ok(Some((event, data))) => warp::sse::Event::default().event(event).data(data),
            Ok(None) => return None,
            Err(e) => {
                let ev = warp::sse::Event::default()
                    .event("error")
                    .data(e.to_string());
                return Some((Ok::<_, std::convert::Infallible>(ev), None));
            }
        };
        Some((Ok(event), Some(reader)))
    });
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
}

/// This daemon's own link to a server: unix socket only.
pub fn local_routes(ctx: Ctx) -> BoxedFilter<(Resp,)> {
    let status = warp::path!("daemon" / "agent" / "status")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Ctx| warp::reply::json(&ctx.role.agent_status()).into_response());
    let connect = warp::path!("daemon" / "agent" / "connect")
        .and(warp::post())
        .and(json_body::<ConnectRequest>())
        .and(with_ctx(ctx.clone()))
        .and_then(|req: ConnectRequest, ctx: Ctx| async move {
            match super::link::connect(&ctx, req).await {
                Ok(status) => Ok::<_, Rejection>(warp::reply::json(&status).into_response()),
                Err(e) => Err(reject(e)),
            }
        });
    let disconnect = warp::path!("daemon" / "agent" / "disconnect")
        .and(warp::post())
        .and(with_ctx(ctx))
        .and_then(|ctx: Ctx| async move {
            match super::link::disconnect(&ctx).await {
                Ok(v) => Ok::<_, Rejection>(warp::reply::json(&v).into_response()),
                Err(e) => Err(reject(e)),
            }
        });
    status.or(connect).unify().or(disconnect).unify().boxed()
}

/// The tokens of the TCP listener for this daemon's configuration.
pub fn tokens_for(ctx: &Ctx) -> Tokens {
    let secure = &ctx.svc.config.daemon.web.secure;
    let join = &ctx.svc.config.server.join_token;
    Tokens {
        admin: secure
            .enabled
            .then(|| std::sync::Arc::new(secure.token.clone())),
        join: (!join.is_empty()).then(|| std::sync::Arc::new(join.clone())),
    }
}
