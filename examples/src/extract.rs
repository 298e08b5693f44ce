//! Extractors whose rejections are this API's JSON errors (axum's own are plain text),
//! and the shared query-parameter checks: pagination and timestamps.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// `Json<T>` with a JSON 400 on a malformed body.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::InvalidBody(rejection.body_text())),
        }
    }
}

/// `Query<T>` with a JSON 400 on an undecodable query string.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(ApiError::InvalidQuery(rejection.body_text())),
        }
    }
}

/// `Path<i64>` with a JSON 400 naming `id`.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(raw)) => raw
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .map(Id)
                .ok_or_else(|| ApiError::field("id", "must be a positive integer")),
            Err(_) => Err(ApiError::field("id", "missing")),
        }
    }
}

/// Raw `page` and `limit` parameters; every list route flattens this into its query.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    /// 1-based page number, default 1.
    pub page: Option<String>,
    /// Items per page, 1 to 100, default 20.
    pub limit: Option<String>,
}

/// Validated pagination.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// 1-based page number.
    pub page: u32,
    /// Items per page.
    pub limit: u32,
}

/// The `pagination` object of every list response, spelled as the reference spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pagination {
    /// 1-based page number.
    pub page: u32,
    /// Items per page.
    pub limit: u32,
    /// Items matching the filters, over all pages.
    pub total: i64,
    /// Whether a further page has items.
    #[serde(rename = "hasMore")]
    pub has_more: bool,
}

/// Largest accepted `limit`.
pub const MAX_LIMIT: u32 = 100;
/// `limit` when none is given.
pub const DEFAULT_LIMIT: u32 = 20;
const MAX_PAGE: u32 = 10_000;

impl PageParams {
    /// Checks the parameters: 400 naming `page` or `limit` when out of range.
    pub fn validate(&self) -> Result<Page, ApiError> {
        let page = parse_bounded("page", self.page.as_deref(), 1, 1, MAX_PAGE)?;
        let limit = parse_bounded("limit", self.limit.as_deref(), DEFAULT_LIMIT, 1, MAX_LIMIT)?;
        Ok(Page { page, limit })
    }
}

impl Page {
    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.limit)
    }

    /// The response's `pagination` object for `total` matching items.
    pub fn describe(&self, total: i64) -> Pagination {
        Pagination {
            page: self.page,
            limit: self.limit,
            total,
            has_more: self.offset() + i64::from(self.limit) < total,
        }
    }
}

fn parse_bounded(
    field: &'static str,
    raw: Option<&str>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<u32>() {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(ApiError::field(
            field,
            format!("must be an integer from {min} to {max}, got {raw:?}"),
        )),
    }
}

/// A required, non-blank string field of at most `max` characters, trimmed.
pub fn required(
    field: &'static str,
    value: Option<String>,
    max: usize,
) -> Result<String, ApiError> {
    match value.map(|v| v.trim().to_owned()) {
        Some(v) if !v.is_empty() => bounded(field, v, max),
        _ => Err(ApiError::field(field, "is required")),
    }
}

/// An optional string field: when present, non-blank and at most `max` characters.
pub fn optional(
    field: &'static str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value.map(|v| v.trim().to_owned()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Err(ApiError::field(field, "must not be blank")),
        Some(v) => bounded(field, v, max).map(Some),
    }
}

fn bounded(field: &'static str, value: String, max: usize) -> Result<String, ApiError> {
    if value.chars().count() > max {
        Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ))
    } else {
        Ok(value)
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Formats unix seconds as RFC 3339 UTC (`2025-11-09T14:03:00Z`).
pub fn timestamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The calendar date of a day number since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_762_696_980), "2025-11-09T14:03:00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn pagination_rejects_out_of_range_values_by_name() {
        let bad = PageParams {
            page: Some("0".into()),
            limit: None,
        };
        assert!(matches!(
            bad.validate(),
            Err(ApiError::InvalidField { field: "page", .. })
        ));
        let bad = PageParams {
            page: None,
            limit: Some("1000".into()),
        };
        assert!(matches!(
            bad.validate(),
            Err(ApiError::InvalidField { field: "limit", .. })
        ));
        let page = PageParams::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!((page.page, page.limit), (1, DEFAULT_LIMIT));
        assert!(page.describe(21).has_more);
        assert!(!page.describe(20).has_more);
    }
}
