//! Errors of the Admin and Worker services and their gRPC status codes. Bad
//! input names the offending value; internal faults are logged with a request
//! id and answered with that id only.
use pgsnapman_proto::model::InvalidInput;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Precondition(String),
    /// The caller did not prove who it is (no or unknown certificate).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (another worker's data,
    /// a revoked certificate).
    #[error("{0}")]
    Forbidden(String),
    /// One event of an uploaded batch was refused (foreign or invalid);
    /// the status carries its id in `REFUSED_EVENT_KEY` so that the worker
    /// can set that event aside and send the rest.
    #[error("event {event_id}: {error}")]
    EventRefused {
        event_id: String,
        error: Box<ApiError>,
    },
    /// The catalog could not take the call now (its pool stayed full):
    /// UNAVAILABLE, which clients retry.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Status metadata naming the event a batch was refused for.
pub use pgsnapman_proto::REFUSED_EVENT_KEY;

pub type ApiResult<T> = Result<T, ApiError>;

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // Load, not a fault: every connection stayed busy for the pool's
            // acquire timeout (many workers syncing at once).
            sqlx::Error::PoolTimedOut => ApiError::Busy(
                "the catalog is busy: no catalog connection (catalog.max_connections) came free in time; try again".into(),
            ),
            e => ApiError::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Exists(m) => Status::already_exists(m),
            ApiError::Precondition(m) => Status::failed_precondition(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::Forbidden(m) => Status::permission_denied(m),
            ApiError::Busy(m) => {
                tracing::warn!("{m}");
                Status::unavailable(m)
            }
            ApiError::EventRefused { event_id, error } => {
                let text = format!("event {event_id}: {error}");
                let code = Status::from(*error).code();
                let mut md = tonic::metadata::MetadataMap::new();
                if let Ok(v) = event_id.parse() {
                    md.insert(REFUSED_EVENT_KEY, v);
                }
                Status::with_metadata(code, text, md)
            }
            ApiError::Internal(e) => {
                let id = uuid::Uuid::new_v4();
                tracing::error!(request_id = %id, "internal error: {e:#}");
                Status::internal(format!(
                    "internal error in the coordinator (request id {id}; details in its log)"
                ))
            }
        }
    }
}

/// True if the error is a violation of a unique constraint.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// True if the error is a violation of a foreign key.
pub fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23503"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_catalog_pool_is_unavailable_not_internal() {
        let s = Status::from(ApiError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("catalog.max_connections"), "{s:?}");
        let s = Status::from(ApiError::from(sqlx::Error::RowNotFound));
        assert_eq!(s.code(), tonic::Code::Internal);
    }
}
