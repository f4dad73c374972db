//! The one place where errors become HTTP answers: service errors and warp
//! rejections map to a status and a JSON body `{"error": "..."}`. A request
//! never gets a 5xx for something the client sent.

use warp::http::StatusCode;
use warp::reject::Reject;
use warp::{Rejection, Reply};

use crate::model::ApiError;
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

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        let status = match &e {
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::Store(StoreError::DuplicateName(_)) => StatusCode::CONFLICT,
            ServiceError::Store(StoreError::NoSuchId(_)) => StatusCode::NOT_FOUND,
            ServiceError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal {
            status,
            message: e.to_string(),
        }
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
