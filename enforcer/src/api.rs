//! The local API: gRPC over the unix socket from the config (mode 0600, root peers only).
//!
//! [`server`] serves it from the agent's state; [`client`] is what the CLI uses. Errors a user
//! can cause are mapped to gRPC status codes in exactly one place, [`ApiError`]'s conversion.

pub mod client;
pub mod server;

/// Generated protobuf and gRPC code for `proto/enforcer.proto`.
#[allow(clippy::pedantic, clippy::unwrap_used, missing_docs, reason = "generated code")]
pub mod proto {
    tonic::include_proto!("enforcer.v1");
}

/// What an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid; the message says how to fix it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid but the agent's state does not allow it (the message says what
    /// would).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The agent failed internally.
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(m) => Self::not_found(m),
            ApiError::InvalidArgument(m) => Self::invalid_argument(m),
            ApiError::FailedPrecondition(m) => Self::failed_precondition(m),
            ApiError::Internal(m) => Self::internal(m),
        }
    }
}
