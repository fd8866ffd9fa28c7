//! The API's error kinds and their one mapping to HTTP status codes.
//!
//! Deeper layers return their own error enums; this module turns them into
//! the handful of kinds Docker clients act on (404 → the CLI pulls, 409 →
//! conflict, 400 → bad parameter, 501/503 → not offered here) and renders
//! them as `{"message": "..."}`.

use berth_engine::ImageError;
use berth_registry::RegistryError;
use hyper::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }
}

/// `error: source: source…`, the whole chain in one line (our error types
/// leave their source out of their own Display text).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl From<ImageError> for ApiError {
    fn from(err: ImageError) -> Self {
        let message = chain(&err);
        match &err {
            ImageError::NotFound(_) | ImageError::MissingLayer { .. } => {
                ApiError::NotFound(message)
            }
            ImageError::Reference(_) => ApiError::BadRequest(message),
            ImageError::InUse { .. } => ApiError::Conflict(format!("conflict: {message}")),
            ImageError::Corrupt { detail, .. } if detail.contains("multiple repositories") => {
                ApiError::Conflict(format!("conflict: {message}"))
            }
            ImageError::Registry(r) => registry_kind(r, message),
            _ => ApiError::Internal(message),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let message = chain(&err);
        registry_kind(&err, message)
    }
}

fn registry_kind(err: &RegistryError, message: String) -> ApiError {
    match err {
        RegistryError::ManifestUnknown { .. } | RegistryError::NameUnknown { .. } => {
            ApiError::NotFound(message)
        }
        RegistryError::Unauthorized { .. } => ApiError::Unauthorized(message),
        RegistryError::InvalidPlatform(_) => ApiError::BadRequest(message),
        RegistryError::Unsupported { .. } => ApiError::NotImplemented(message),
        _ => ApiError::Internal(message),
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("background task failed: {err}"))
    }
}
