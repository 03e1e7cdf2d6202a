//! Errors as JSON with the right status. A store error's text never reaches a client (it may name a
//! host); it goes to the log, already redacted by the strategy.

use crate::views::ErrorBody;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetcron_core::{SchedulerError, StoreError};

/// An API error: a status and a one-line message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do, one line.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 for a task id.
    pub fn unknown_task(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("no task {} in the store", fleetcron_core::limits::echo(id)),
        )
    }

    /// 503.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unreachable; try again later (the server's log has the cause)",
        )
    }
}

impl From<SchedulerError> for ApiError {
    fn from(error: SchedulerError) -> Self {
        match error {
            SchedulerError::UnknownTask(id) => Self::unknown_task(&id),
            SchedulerError::TaskDisabled(id) => Self::new(
                StatusCode::CONFLICT,
                format!(
                    "task {} is disabled; enable it before triggering it",
                    fleetcron_core::limits::echo(&id)
                ),
            ),
            SchedulerError::Store(StoreError::Unavailable(_)) | SchedulerError::NotRunning => {
                tracing::warn!(%error, "admin request: store unavailable");
                Self::unavailable()
            }
            other => {
                tracing::error!(error = %other, "admin request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the request failed inside the server; the server's log has the cause",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
                status: self.status.as_u16(),
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fleetcron\""),
            );
        }
        response
    }
}
