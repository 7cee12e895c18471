//! The `n`/`last` pagination of the distribution spec, shared by the
//! catalog and tag lists: parsing the query and cutting a sorted list.

use actix_web::web;

use crate::error::ApiError;

/// Most entries in one answer, whatever `n` asks.
pub const MAX_PAGE: usize = 10_000;

/// `n`, `last` and `ns` as sent.
#[derive(Debug, serde::Deserialize)]
pub struct Query {
    /// Most entries.
    pub n: Option<String>,
    /// Entries after this one.
    pub last: Option<String>,
    /// The registry (containerd's form), kept in a next page's link.
    pub ns: Option<String>,
}

impl Query {
    /// Reads the query string.
    pub fn parse(query: &str) -> Result<Query, ApiError> {
        web::Query::<Query>::from_query(query)
            .map(web::Query::into_inner)
            .map_err(|_| ApiError::PaginationInvalid("unreadable query".into()))
    }

    /// `n`, at most [`MAX_PAGE`]; `None` when not sent.
    pub fn count(&self) -> Result<Option<usize>, ApiError> {
        self.n
            .as_deref()
            .map(|n| {
                n.parse::<usize>()
                    .map(|n| n.min(MAX_PAGE))
                    .map_err(|_| ApiError::PaginationInvalid(format!("n={n:?} is not a count")))
            })
            .transpose()
    }
}

/// The entries of `all` (sorted by `key`) after `last`, at most `n` (and
/// [`MAX_PAGE`]), and whether more follow.
pub fn cut<'a, T>(
    all: &'a [T],
    n: Option<usize>,
    last: Option<&str>,
    key: impl Fn(&T) -> &str,
) -> (&'a [T], bool) {
    let after = all.partition_point(|e| last.is_some_and(|l| key(e) <= l));
    let rest = &all[after..];
    let shown = n.unwrap_or(MAX_PAGE).min(rest.len());
    (&rest[..shown], rest.len() > shown)
}
