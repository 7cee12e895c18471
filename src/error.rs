//! Every error a client can receive, and the one place where errors become
//! OCI error responses (`{"errors":[{"code","message","detail"}]}`).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ociregistry_actors::error::FetchError;
use ociregistry_actors::names::NameError;

use crate::access_log::Outcome;

/// The `Docker-Distribution-Api-Version` header every response carries.
pub fn api_version() -> (&'static str, &'static str) {
    ("Docker-Distribution-Api-Version", "registry/2.0")
}

/// What was asked for, so "not found" can name the right thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// A manifest.
    Manifest,
    /// A blob.
    Blob,
}

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed name, tag, digest or registry.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The request names no registry and there is no default.
    #[error("no registry named for {0:?}: use ?ns=<registry>, a registry host as first path segment, or configure defaultNs")]
    NoRegistry(String),
    /// A pagination parameter (`n`) that is not a count.
    #[error("{0}")]
    PaginationInvalid(String),
    /// A manifest reference that is neither a tag nor a digest: no such
    /// manifest (404, as the distribution spec answers it).
    #[error("{0:?} is neither a tag nor a digest")]
    BadReference(String),
    /// Not cached, and no upstream may be asked (air-gapped).
    #[error("{0:?} is not in the cache and this mirror is air-gapped")]
    NotCached(Content),
    /// An upstream fetch failed.
    #[error("{source}")]
    Upstream {
        /// Why.
        source: FetchError,
        /// What was fetched.
        content: Content,
    },
    /// The upstream did not start answering within `pullTimeout`.
    #[error("upstream did not answer within {0} ms")]
    PullTimeout(u64),
    /// A write, or an endpoint this mirror does not offer; `allow` lists
    /// the methods the endpoint does accept (none: empty), never the one
    /// refused.
    #[error("{why}")]
    Unsupported {
        /// Why, for the client.
        why: &'static str,
        /// The `Allow` header.
        allow: &'static str,
    },
    /// A path that is not part of the API.
    #[error("unknown endpoint")]
    UnknownEndpoint,
    /// A `Range` beyond the blob's end.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The blob's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The upstream guard refuses the registry the request names.
    #[error("registry {0} is not allowed on this mirror (upstreams.allow / upstreams.deny)")]
    RegistryNotAllowed(String),
    /// The manifest's media type is none the request's `Accept` lists.
    #[error("the manifest is {0}, which the request's Accept does not list")]
    NotAcceptable(String),
    /// An internal actor is gone (the server is stopping).
    #[error("server shutting down")]
    Unavailable,
}

impl ApiError {
    /// The OCI error code and HTTP status.
    fn code(&self) -> (&'static str, StatusCode) {
        match self {
            Self::Name(NameError::Repository(_)) => ("NAME_INVALID", StatusCode::BAD_REQUEST),
            Self::Name(NameError::Registry(_)) => ("NAME_INVALID", StatusCode::BAD_REQUEST),
            Self::Name(NameError::Tag(_)) => ("TAG_INVALID", StatusCode::BAD_REQUEST),
            Self::Name(NameError::Digest(_)) => ("DIGEST_INVALID", StatusCode::BAD_REQUEST),
            Self::NoRegistry(_) | Self::UnknownEndpoint => ("NAME_UNKNOWN", StatusCode::NOT_FOUND),
            Self::NotCached(c) => (unknown(*c), StatusCode::NOT_FOUND),
            Self::BadReference(_) => (unknown(Content::Manifest), StatusCode::NOT_FOUND),
            Self::PaginationInvalid(_) => ("PAGINATION_NUMBER_INVALID", StatusCode::BAD_REQUEST),
            Self::NotAcceptable(_) => (unknown(Content::Manifest), StatusCode::NOT_FOUND),
            Self::Upstream { source, content } => match source {
                FetchError::NotFound => (unknown(*content), StatusCode::NOT_FOUND),
                FetchError::Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
                FetchError::Denied | FetchError::Guarded => ("DENIED", StatusCode::FORBIDDEN),
                FetchError::TooManyRequests { .. } => {
                    ("TOOMANYREQUESTS", StatusCode::TOO_MANY_REQUESTS)
                }
                FetchError::Unreachable(_)
                | FetchError::Timeout(_)
                | FetchError::Busy(_)
                | FetchError::Stopping => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
                FetchError::DigestMismatch { .. } | FetchError::BadResponse(_) => {
                    ("UNKNOWN", StatusCode::BAD_GATEWAY)
                }
                FetchError::Storage(_) | FetchError::Internal(_) => {
                    ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR)
                }
            },
            Self::PullTimeout(_) | Self::Unavailable => {
                ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Unsupported { .. } => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
            Self::RegistryNotAllowed(_) => ("DENIED", StatusCode::FORBIDDEN),
            Self::RangeNotSatisfiable { .. } => ("", StatusCode::RANGE_NOT_SATISFIABLE),
        }
    }

    /// The access-log outcome of a request that ended in this error.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Upstream { .. } | Self::PullTimeout(_) => Outcome::UpstreamError,
            _ => Outcome::Error,
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    /// An actor's mailbox closed: the server is stopping.
    fn from(_: actix::MailboxError) -> Self {
        Self::Unavailable
    }
}

/// `MANIFEST_UNKNOWN` or `BLOB_UNKNOWN`.
fn unknown(c: Content) -> &'static str {
    match c {
        Content::Manifest => "MANIFEST_UNKNOWN",
        Content::Blob => "BLOB_UNKNOWN",
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().1
    }

    fn error_response(&self) -> HttpResponse {
        let (code, status) = self.code();
        let mut res = HttpResponse::build(status);
        match self {
            Self::RangeNotSatisfiable { size } => {
                return res
                    .insert_header(api_version())
                    .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                    .finish();
            }
            Self::Upstream {
                source:
                    FetchError::TooManyRequests {
                        retry_after: Some(r),
                    },
                ..
            } => {
                if let Ok(v) = HeaderValue::from_str(r) {
                    res.insert_header((header::RETRY_AFTER, v));
                }
            }
            Self::Upstream {
                source: FetchError::Busy(_),
                ..
            } => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::Unsupported { allow, .. } => {
                res.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        let detail = match self {
            Self::Upstream { source, .. } => serde_json::json!({ "upstream": source.to_string() }),
            _ => serde_json::Value::Null,
        };
        res.insert_header(api_version()).json(serde_json::json!({
            "errors": [{ "code": code, "message": self.to_string(), "detail": detail }]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ociregistry_actors::names::Digest;

    #[test]
    fn codes() {
        let cases = [
            (
                ApiError::Name(NameError::Digest("x".into())),
                "DIGEST_INVALID",
                400,
            ),
            (
                ApiError::Name(NameError::Tag("x".into())),
                "TAG_INVALID",
                400,
            ),
            (
                ApiError::Name(NameError::Repository("X".into())),
                "NAME_INVALID",
                400,
            ),
            (ApiError::NoRegistry("x".into()), "NAME_UNKNOWN", 404),
            (ApiError::NotCached(Content::Blob), "BLOB_UNKNOWN", 404),
            (
                ApiError::Upstream {
                    source: FetchError::NotFound,
                    content: Content::Manifest,
                },
                "MANIFEST_UNKNOWN",
                404,
            ),
            (
                ApiError::Upstream {
                    source: FetchError::DigestMismatch {
                        expected: Digest::of(b"a"),
                        actual: Digest::of(b"b"),
                    },
                    content: Content::Blob,
                },
                "UNKNOWN",
                502,
            ),
            (
                ApiError::Unsupported {
                    why: "no",
                    allow: "",
                },
                "UNSUPPORTED",
                405,
            ),
            (ApiError::BadReference("x!".into()), "MANIFEST_UNKNOWN", 404),
            (
                ApiError::PaginationInvalid("n".into()),
                "PAGINATION_NUMBER_INVALID",
                400,
            ),
            (ApiError::RegistryNotAllowed("x".into()), "DENIED", 403),
            (
                ApiError::Upstream {
                    source: FetchError::Guarded,
                    content: Content::Blob,
                },
                "DENIED",
                403,
            ),
        ];
        for (err, code, status) in cases {
            assert_eq!(
                err.code(),
                (code, StatusCode::from_u16(status).unwrap()),
                "{err:?}"
            );
        }
    }
}
