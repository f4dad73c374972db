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
