//! The one place where errors become HTTP answers. Each layer returns its
//! own typed error (`ServiceError`, the registry's `RegistryError`, the
//! agent link's `ConnectError`, `AgentCallError` when the server calls an
//! agent), and this module alone picks the status of each; the body is
//! always JSON `{"error": "..."}` with the error's own text. The API layer's
//! own refusals (a token, a Host header, a body) are HTTP decisions made
//! where they are checked, through `refuse`; warp's rejections map here
//! too. A request never gets a 5xx for something the client sent.

use warp::http::StatusCode;
use warp::reject::Reject;
use warp::{Rejection, Reply};

use super::link::ConnectError;
use crate::client::ClientError;
use crate::model::ApiError;
use crate::role::agent::LinkError;
use crate::role::server::{AgentCallError, RegistryError};
use crate::service::ServiceError;
use crate::store::StoreError;

/// A rejection that carries its own status and message.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Reject for Refusal {}

pub fn refuse(status: StatusCode, message: impl Into<String>) -> Rejection {
    warp::reject::custom(Refusal {
        status,
        message: message.into(),
    })
}

/// A 429 that says when to try again (`Retry-After`, in seconds).
#[derive(Debug)]
pub struct TooMany {
    pub wait: std::time::Duration,
    pub message: String,
}

impl Reject for TooMany {}

pub fn too_many(wait: std::time::Duration, message: impl Into<String>) -> Rejection {
    warp::reject::custom(TooMany {
        wait,
        message: message.into(),
    })
}

/// Turns any layer's error into the rejection that answers it.
pub fn reject(e: impl Into<Refusal>) -> Rejection {
    warp::reject::custom(e.into())
}

/// Each layer's error and the status it answers with: the one table of
/// error to status. The message is the error's own text.
macro_rules! refusal_from {
    ($($ty:ty => $status:path),* $(,)?) => {$(
        impl From<$ty> for Refusal {
            fn from(e: $ty) -> Refusal {
                Refusal {
                    status: $status(&e),
                    message: e.to_string(),
                }
            }
        }
    )*};
}

refusal_from! {
    ServiceError => service_status,
    RegistryError => registry_status,
    ConnectError => connect_status,
    AgentCallError => agent_call_status,
}

fn service_status(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::File { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::Store(e) => store_status(e),
    }
}

fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::DuplicateName(_) => StatusCode::CONFLICT,
        StoreError::NoSuchId(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn registry_status(e: &RegistryError) -> StatusCode {
    match e {
        RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
        RegistryError::NotFound(_) | RegistryError::NoHistory => StatusCode::NOT_FOUND,
        RegistryError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        RegistryError::Forbidden(_) | RegistryError::NotAServer(_) => StatusCode::FORBIDDEN,
        RegistryError::NameTaken(_) => StatusCode::CONFLICT,
        RegistryError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        RegistryError::Store(e) => store_status(e),
    }
}

fn connect_status(e: &ConnectError) -> StatusCode {
    match e {
        ConnectError::IsServer | ConnectError::NotConnected => StatusCode::CONFLICT,
        ConnectError::Invalid(_) => StatusCode::BAD_REQUEST,
        ConnectError::Probe(_) => StatusCode::BAD_GATEWAY,
        // The address is in use, or not this host's.
        ConnectError::ApiCannotStart(_) => StatusCode::CONFLICT,
        ConnectError::Registration(e) => match e {
            // The join token (or the credential) was refused: the user's to fix.
            LinkError::Refused(_) => StatusCode::UNAUTHORIZED,
            // The server refused what the user asked (a name taken, a bad field).
            LinkError::Other(s, _) if s.is_client_error() => *s,
            LinkError::Untrusted(_)
            | LinkError::Unreachable(..)
            | LinkError::Unknown
            | LinkError::Other(..) => StatusCode::BAD_GATEWAY,
        },
        ConnectError::NoRandomness(_) | ConnectError::Config(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        ConnectError::Store(e) => store_status(e),
    }
}

/// An agent that answered with an error is passed on as it answered; one
/// that refused the server's own credentials (401), or could not be asked,
/// is the server's trouble: 502.
fn agent_call_status(e: &AgentCallError) -> StatusCode {
    match &e.source {
        ClientError::Api { status, .. } if *status != StatusCode::UNAUTHORIZED => *status,
        _ => StatusCode::BAD_GATEWAY,
    }
}

pub fn json_error(status: StatusCode, message: impl Into<String>) -> warp::reply::Response {
    warp::reply::with_status(
        warp::reply::json(&ApiError {
            error: message.into(),
        }),
        status,
    )
    .into_response()
}

/// Turns every rejection into a JSON error with the right status.
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Rejection> {
    use warp::reject::{
        InvalidQuery, LengthRequired, MethodNotAllowed, MissingHeader, PayloadTooLarge,
        UnsupportedMediaType,
    };
    if let Some(t) = rejection.find::<TooMany>() {
        let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, t.message.clone());
        // Whole seconds, rounded up: a client that waits that long gets in.
        let secs = t.wait.as_secs() + u64::from(t.wait.subsec_nanos() > 0);
        resp.headers_mut().insert(
            warp::http::header::RETRY_AFTER,
            warp::http::HeaderValue::from(secs.max(1)),
        );
        return Ok(resp);
    }
    let (status, message) = if let Some(r) = rejection.find::<Refusal>() {
        (r.status, r.message.clone())
    } else if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route".to_string())
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", super::BODY_LIMIT),
        )
    } else if rejection.find::<LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "a content-length header is required".to_string(),
        )
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route".to_string(),
        )
    } else if rejection.find::<InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string".to_string())
    } else if let Some(h) = rejection.find::<MissingHeader>() {
        (
            StatusCode::BAD_REQUEST,
            format!("missing header {}", h.name()),
        )
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type".to_string(),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            format!("bad request: {rejection:?}"),
        )
    };
    Ok(json_error(status, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Role};

    fn io() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::PermissionDenied)
    }

    fn call(source: ClientError) -> AgentCallError {
        AgentCallError {
            name: "web-1".into(),
            endpoint: "http://10.0.0.5:9877".into(),
            source,
        }
    }

    fn api(status: StatusCode) -> ClientError {
        ClientError::Api {
            status,
            message: "no process with id or name x".into(),
        }
    }

    #[test]
    fn every_error_of_every_layer_answers_with_its_status() {
        let m = || "m".to_string();
        let table: Vec<(Refusal, StatusCode)> = vec![
            (
                ServiceError::BadRequest(m()).into(),
                StatusCode::BAD_REQUEST,
            ),
            (ServiceError::NotFound(m()).into(), StatusCode::NOT_FOUND),
            (ServiceError::Conflict(m()).into(), StatusCode::CONFLICT),
            (
                ServiceError::File {
                    what: "cannot read",
                    path: "/x/out.log".into(),
                    source: io(),
                }
                .into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ServiceError::Store(StoreError::DuplicateName(m())).into(),
                StatusCode::CONFLICT,
            ),
            (
                ServiceError::Store(StoreError::NoSuchId(7)).into(),
                StatusCode::NOT_FOUND,
            ),
            (
                ServiceError::Store(StoreError::Encode(m())).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (RegistryError::Invalid(m()).into(), StatusCode::BAD_REQUEST),
            (RegistryError::NotFound(m()).into(), StatusCode::NOT_FOUND),
            (RegistryError::NoHistory.into(), StatusCode::NOT_FOUND),
            (
                RegistryError::Unauthorized(m()).into(),
                StatusCode::UNAUTHORIZED,
            ),
            (RegistryError::Forbidden(m()).into(), StatusCode::FORBIDDEN),
            (
                RegistryError::NotAServer(Role::Agent).into(),
                StatusCode::FORBIDDEN,
            ),
            (
                RegistryError::NotAServer(Role::Standalone).into(),
                StatusCode::FORBIDDEN,
            ),
            (RegistryError::NameTaken(m()).into(), StatusCode::CONFLICT),
            (
                RegistryError::TooMany(m()).into(),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (
                RegistryError::Store(StoreError::Encode(m())).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (ConnectError::IsServer.into(), StatusCode::CONFLICT),
            (ConnectError::NotConnected.into(), StatusCode::CONFLICT),
            (ConnectError::Invalid(m()).into(), StatusCode::BAD_REQUEST),
            (ConnectError::Probe(m()).into(), StatusCode::BAD_GATEWAY),
            (
                ConnectError::ApiCannotStart(m()).into(),
                StatusCode::CONFLICT,
            ),
            (
                ConnectError::Registration(LinkError::Refused(m())).into(),
                StatusCode::UNAUTHORIZED,
            ),
            (
                ConnectError::Registration(LinkError::Other(StatusCode::CONFLICT, m())).into(),
                StatusCode::CONFLICT,
            ),
            (
                ConnectError::Registration(LinkError::Other(StatusCode::SERVICE_UNAVAILABLE, m()))
                    .into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                ConnectError::Registration(LinkError::Untrusted(m())).into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                ConnectError::Registration(LinkError::Unreachable(
                    m(),
                    ClientError::TimedOut(std::time::Duration::from_secs(5)),
                ))
                .into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                ConnectError::Registration(LinkError::Unknown).into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                ConnectError::NoRandomness(io()).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ConnectError::Config(ConfigError::Io("config.toml".into(), io())).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ConnectError::Store(StoreError::Encode(m())).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                call(api(StatusCode::NOT_FOUND)).into(),
                StatusCode::NOT_FOUND,
            ),
            (
                call(api(StatusCode::UNAUTHORIZED)).into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                call(ClientError::TooLarge(1024)).into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                call(ClientError::TimedOut(std::time::Duration::from_secs(5))).into(),
                StatusCode::BAD_GATEWAY,
            ),
        ];
        for (i, (refusal, want)) in table.iter().enumerate() {
            assert_eq!(refusal.status, *want, "row {i}: {}", refusal.message);
            assert!(!refusal.message.is_empty(), "row {i}");
        }
    }

    #[test]
    fn an_unreadable_log_file_is_the_daemons_trouble_and_says_which_file() {
        let r = Refusal::from(ServiceError::File {
            what: "cannot read",
            path: "/home/u/.opm/logs/web-0-out.log".into(),
            source: io(),
        });
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            r.message,
            "cannot read /home/u/.opm/logs/web-0-out.log: permission denied"
        );
    }

    #[test]
    fn an_agents_own_error_is_passed_on_in_its_words_and_a_failed_call_names_the_agent() {
        let passed = Refusal::from(call(api(StatusCode::NOT_FOUND)));
        assert_eq!(passed.message, "no process with id or name x");
        let failed = Refusal::from(call(ClientError::TimedOut(std::time::Duration::from_secs(
            5,
        ))));
        assert_eq!(
            failed.message,
            "agent web-1 (http://10.0.0.5:9877) did not answer: no answer within 5s"
        );
    }
}
