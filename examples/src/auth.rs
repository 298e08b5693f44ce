//! Bearer-token authentication: maps `Authorization: Bearer <token>` to the caller's
//! user and organization, and tells the cache whose data the request reads by inserting
//! a [`CacheScope`] (tenant = organization id, user = user id).
//!
//! Tokens are resolved from a table loaded at start-up, as a signed session token would be
//! verified without a database round trip, so that the report's query counts measure
//! the handlers alone. A request without a known token never reaches a handler.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cache_runtime::CacheScope;

use crate::db::{Db, DbError};
use crate::error::ApiError;

/// Who is calling: put into the request extensions by [`require_auth`], taken by handlers
/// as an extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    /// The caller's organization (the tenant).
    pub org_id: i64,
    /// The caller's user id.
    pub user_id: i64,
}

/// Token table, loaded once after seeding.
#[derive(Clone, Default)]
pub struct Tokens {
    by_token: Arc<HashMap<String, Auth>>,
}

impl Tokens {
    /// Loads every user's token.
    pub async fn load(db: &Db) -> Result<Tokens, DbError> {
        let rows = db
            .read_uncounted(|sql| {
                sql.all("SELECT token, organization_id, id FROM users", &[], |row| {
                    Ok((
                        row.get::<String>(0)?,
                        Auth {
                            org_id: row.get(1)?,
                            user_id: row.get(2)?,
                        },
                    ))
                })
            })
            .await?;
        Ok(Tokens {
            by_token: Arc::new(rows.into_iter().collect()),
        })
    }

    /// The caller a token stands for.
    pub fn resolve(&self, token: &str) -> Option<Auth> {
        self.by_token.get(token).copied()
    }
}

/// Middleware: 401 JSON unless the request carries a known bearer token; otherwise
/// inserts [`Auth`] and the cache scope and runs the route.
pub async fn require_auth(State(tokens): State<Tokens>, mut req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| tokens.resolve(token.trim()));
    let Some(auth) = auth else {
        return ApiError::Unauthorized.into_response();
    };
    req.extensions_mut()
        .insert(CacheScope::new(auth.org_id.to_string()).with_user(auth.user_id.to_string()));
    req.extensions_mut().insert(auth);
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Auth>()
            .copied()
            .ok_or(ApiError::Unauthorized)
    }
}
