//! The `#[cached]` and `#[invalidates]` attributes of
//! [`cache-runtime`](https://docs.rs/cache-runtime).
//!
//! Use them through `cache_runtime` (`use cache_runtime::{cached, invalidates};`): the code
//! they generate calls into it, and it pins this crate's exact version. The examples here
//! compile against it (a dev-dependency).

mod attr;
mod entry;
mod errors;
mod expand;
mod fingerprint;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Serves an axum handler (or caches an async function) through the response cache.
///
/// ```
/// use axum::{extract::{Query, State}, http::StatusCode, Json};
/// use cache_runtime::cached;
/// # #[derive(Clone)] struct Db;
/// # impl Db { async fn templates(&self, _: &ListQuery) -> Result<TemplatePage, ApiError> { Ok(TemplatePage) } }
/// # #[derive(serde::Deserialize)] struct ListQuery;
/// # #[derive(serde::Serialize)] struct TemplatePage;
/// # type ApiError = StatusCode;
///
/// #[cached(resource = "templates", ttl = 1800)]
/// async fn list_templates(
///     State(db): State<Db>,
///     Query(query): Query<ListQuery>,
/// ) -> Result<Json<TemplatePage>, ApiError> {
///     Ok(Json(db.templates(&query).await?))
/// }
/// ```
///
/// The handler stays a handler: route it as before. On a hit it does not run; on a miss it
/// runs and a successful response is stored for `ttl` seconds, under the tenant of the
/// request (the `CacheScope` your auth layer put into the request extensions). A request
/// without a tenant is served uncached.
///
/// # Options
///
/// - `resource = "name"` (required): the group the entries belong to, which
///   `#[invalidates("name")]` drops. Lowercase letters, digits, `_` and `-`.
/// - `ttl = seconds` (required): how long an entry lives, as a literal or a constant
///   expression of type `u32`, such as the reference rollout's presets
///   `cache_runtime::presets::CONTACTS` (300), `CONVERSATIONS` (30), `TEMPLATES` (1800),
///   `ANALYTICS` (600), `CAMPAIGNS` (300) and `ORGANIZATION` (900). A TTL is never chosen
///   by the resource's name. A constant that is 0 is a compile error.
/// - `browser_ttl = seconds`: let a browser reuse its copy that long without asking
///   (`Cache-Control: private, max-age=N`). By default it revalidates every time
///   (`private, no-cache`, answered with a 304 while nothing changed).
/// - `tags = ["contacts", "messages"]`: further groups whose invalidation drops the entries.
/// - `vary = user`, `vary = header("accept-language")` or a list
///   `vary = [user, header("accept-language")]`: parts of the request the response depends
///   on besides path and query. Cache per-user data only with `vary = user`.
/// - `scope = global`: the data is the same for every tenant. `scope = expr`: the tenant
///   comes from an expression over the arguments, such as `scope = auth.org_id`.
/// - `skip_cache`: declare the route but always serve it uncached.
/// - `cache_only_success = false`: store non-2xx responses too (never an `Err`).
/// - `key = (arg, ...)`: cache a plain async function (not a handler) under these
///   arguments; it then needs `scope`, and its value is stored through serde. The key is
///   encoded (serde JSON) before the body runs, so the body may consume its arguments; a
///   key that does not serialize makes the call bypass the cache.
///
/// ```
/// # use cache_runtime::cached;
/// # struct Db;
/// # impl Db { async fn search_contacts(&self, _: i64, _: &str) -> Result<Vec<Contact>, DbError> { Ok(vec![]) } }
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Contact;
/// # struct DbError;
/// #[cached(resource = "contacts", ttl = 60, key = (org_id, query), scope = org_id)]
/// async fn search_contacts(db: &Db, org_id: i64, query: &str) -> Result<Vec<Contact>, DbError> {
///     db.search_contacts(org_id, query).await
/// }
/// ```
///
/// Every mistake in the options is a compile error at the offending token.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::cached(args.into(), item.into()).into()
}

/// Invalidates resources for the request's tenant when an axum handler succeeds.
///
/// ```
/// use axum::{extract::State, http::StatusCode, Json};
/// use cache_runtime::invalidates;
/// # #[derive(Clone)] struct Db;
/// # impl Db { async fn import(&self, _: Vec<NewContact>) -> Result<ImportReport, ApiError> { Ok(ImportReport) } }
/// # #[derive(serde::Deserialize)] struct NewContact;
/// # #[derive(serde::Serialize)] struct ImportReport;
/// # type ApiError = StatusCode;
///
/// #[invalidates("contacts", "analytics")]
/// async fn import_contacts(
///     State(db): State<Db>,
///     Json(rows): Json<Vec<NewContact>>,
/// ) -> Result<Json<ImportReport>, ApiError> {
///     Ok(Json(db.import(rows).await?))
/// }
/// ```
///
/// After the handler returns `Ok` (or a 2xx response), every entry of the listed resources
/// (and of entries tagged with them) is invalidated for the tenant of the request, before
/// the response is sent: the client's next read sees its own write. On failure nothing is
/// invalidated. A trailing `scope = global` or `scope = expr` chooses the tenant as in
/// `#[cached]`.
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::invalidates(args.into(), item.into()).into()
}

#[cfg(test)]
mod tests;
