//! Support for the code that `#[cached]` and `#[invalidates]` generate.
//!
//! Nothing here is public API: the macros name it as `::cache_runtime::__private::...`
//! and it may change in any release together with the pinned macro crate. Users never
//! import it, and neither does this crate's own code: this module only re-exports.

pub use crate::axum::{
    serve_cached, serve_invalidating, vary_mask, HandlerOutput, RequestContext, VaryHeaders,
};
pub use crate::plain::{cached_result, cached_value, encode_key};
pub use crate::spec::{
    explicit_scope, InvalidationSpec, Registration, RouteSpec, ScopeArg, VaryPart,
};
pub use ::axum::response::Response;
pub use http::HeaderValue;
pub use inventory;
