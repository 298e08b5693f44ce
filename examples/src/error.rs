//! The API's errors and their JSON form. Every failure a handler can meet is one of
//! these variants; a client sees `{"error": ..., "code": ..., "field": ...}` with a 4xx
//! for its own mistakes and a 500 only for a database failure, whose detail is logged,
//! not sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::db::DbError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header, or a token that names no user.
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// A query parameter or body field has a bad value, or a required one is missing.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The parameter or field, as the client spelled it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not the JSON object the route expects.
    #[error("invalid JSON body: {0}")]
    InvalidBody(String),
    /// The query string could not be decoded.
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// No row with that id in the caller's organization.
    #[error("{resource} {id} not found")]
    NotFound {
        /// What was looked for.
        resource: &'static str,
        /// The id in the path.
        id: i64,
    },
    /// No route at that path.
    #[error("no such route")]
    RouteNotFound,
    /// The database failed.
    #[error("database error")]
    Database(#[from] DbError),
}

impl ApiError {
    /// An [`ApiError::InvalidField`].
    pub fn field(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidField { .. }
            | ApiError::InvalidBody(_)
            | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::NotFound { .. } | ApiError::RouteNotFound => "not_found",
            ApiError::Database(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Database(err) = &self {
            tracing::error!(error = %err, "database error");
        }
        let field = match &self {
            ApiError::InvalidField { field, .. } => Some(*field),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            field,
        };
        (self.status(), Json(body)).into_response()
    }
}
