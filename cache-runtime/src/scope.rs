//! The tenant scope of a request: which tenant (and optionally which user) a cached
//! response belongs to. An app's auth layer inserts a [`CacheScope`] into the request's
//! extensions; a route that finds none is served uncached, never cached unscoped.

use std::fmt;
use std::sync::Arc;

/// The tenant (and optional user) a request acts for.
///
/// ```
/// use cache_runtime::CacheScope;
///
/// let scope = CacheScope::new("org_42").with_user("user_7");
/// assert_eq!(scope.tenant(), "org_42");
/// assert_eq!(scope.user(), Some("user_7"));
/// ```
///
/// Put it into the request extensions from your auth middleware:
///
/// ```
/// use axum::{extract::Request, middleware::Next, response::Response};
/// use cache_runtime::CacheScope;
///
/// async fn auth(mut req: Request, next: Next) -> Response {
///     // ... resolve the bearer token to an organization and a user ...
///     req.extensions_mut().insert(CacheScope::new("org_1").with_user("user_1"));
///     next.run(req).await
/// }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheScope {
    tenant: Arc<str>,
    user: Option<Arc<str>>,
}

impl CacheScope {
    /// A scope for one tenant (organization).
    pub fn new(tenant: impl Into<String>) -> Self {
        CacheScope {
            tenant: Arc::from(tenant.into()),
            user: None,
        }
    }

    /// The same scope, acting as one user (used by `vary = user`).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(Arc::from(user.into()));
        self
    }

    /// The tenant id.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The user id, if the scope carries one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

impl fmt::Debug for CacheScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheScope")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .finish()
    }
}

/// Values a `scope = <expr>` may evaluate to: a [`CacheScope`], a tenant id (any
/// string or integer), or an `Option` of those (`None` means "no scope": bypass).
pub trait ToCacheScope {
    /// The scope, or `None` when there is none (the request is then served uncached).
    fn to_cache_scope(&self) -> Option<CacheScope>;
}

impl ToCacheScope for CacheScope {
    fn to_cache_scope(&self) -> Option<CacheScope> {
        Some(self.clone())
    }
}

impl ToCacheScope for str {
    fn to_cache_scope(&self) -> Option<CacheScope> {
        (!self.is_empty()).then(|| CacheScope::new(self))
    }
}

impl ToCacheScope for String {
    fn to_cache_scope(&self) -> Option<CacheScope> {
        self.as_str().to_cache_scope()
    }
}

impl<T: ToCacheScope + ?Sized> ToCacheScope for &T {
    fn to_cache_scope(&self) -> Option<CacheScope> {
        (**self).to_cache_scope()
    }
}

impl<T: ToCacheScope> ToCacheScope for Option<T> {
    fn to_cache_scope(&self) -> Option<CacheScope> {
        self.as_ref().and_then(ToCacheScope::to_cache_scope)
    }
}

impl<T: ToCacheScope + ?Sized> ToCacheScope for Arc<T> {
    fn to_cache_scope(&self) -> Option<CacheScope> {
        (**self).to_cache_scope()
    }
}

macro_rules! integer_tenants {
    ($($t:ty),*) => {$(
        impl ToCacheScope for $t {
            fn to_cache_scope(&self) -> Option<CacheScope> {
                Some(CacheScope::new(self.to_string()))
            }
        }
    )*};
}
integer_tenants!(i32, i64, u32, u64, isize, usize, i128, u128);
