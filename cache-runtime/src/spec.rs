//! What the attributes know at compile time: the static description of each cached or
//! invalidating function that the generated code builds ([`RouteSpec`],
//! [`InvalidationSpec`]), where its tenant comes from ([`ScopeArg`]), and its entry in the
//! program's registry ([`Registration`]). Plain data, read by the axum adapter, the
//! plain-function support and the registry check; generated code reaches it through
//! `__private`, users never do.

use http::HeaderValue;

use crate::scope::{CacheScope, ToCacheScope};

/// Everything `#[cached]` knows at compile time about one cached function.
#[derive(Debug)]
pub struct RouteSpec {
    /// The invalidation group the entries belong to (validated `[a-z0-9_-]+`).
    pub resource: &'static str,
    /// Time to live in seconds, from `ttl = N` or the preset table; never 0.
    pub ttl_secs: u32,
    /// `stale_while_revalidate = N` (default: half the TTL): for N seconds past its TTL an
    /// entry whose generations are still current is served `STALE` while one request
    /// recomputes it in the background. Data changed outside the annotated mutations is
    /// then at most `ttl + N` seconds old. 0 turns it off.
    pub stale_while_revalidate_secs: u32,
    /// `stale_after_invalidation = N` (default 0: strict read-your-writes): after an
    /// invalidation, the previous entry may be served `STALE` while one request
    /// recomputes it, as long as it reflects every write older than N seconds.
    pub stale_after_invalidation_secs: u32,
    /// `private, no-cache` (the browser revalidates every time), or `private,
    /// max-age=<browser_ttl>` when the route opts into a browser lifetime; built at
    /// compile time, sent with every hit and every stored miss whose handler set no
    /// `Cache-Control` of its own.
    pub cache_control: HeaderValue,
    /// Further invalidation groups (`tags = [...]`).
    pub tags: &'static [&'static str],
    /// Request-derived key parts (`vary = ...`).
    pub vary: &'static [VaryPart],
    /// A digest of the function's tokens, so a changed handler never reads an old entry.
    pub fingerprint: &'static str,
    /// `cache_only_success` (default true): store only 2xx responses.
    pub cache_only_success: bool,
    /// `skip_cache`: the route is declared but always served uncached (BYPASS).
    pub skip_cache: bool,
    /// `verify = false`: shadow runs and sampled verification never compare this
    /// route's responses (they change on every call); default true.
    pub verify: bool,
    /// `verify_ignore = [...]`: JSON object fields (at any depth) left out of the
    /// comparison, such as a timestamp or a request id.
    pub verify_ignore: &'static [&'static str],
    /// `concat!(module_path!(), "::", fn name)`, for logs and the registry.
    pub function: &'static str,
}

/// One request-derived part of the key, from `vary = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaryPart {
    /// The user of the request's [`CacheScope`]; a request without a user bypasses.
    User,
    /// The value of a request header (lower-case name); absent is a distinct value.
    Header(&'static str),
}

/// Everything `#[invalidates]` knows at compile time.
#[derive(Debug)]
pub struct InvalidationSpec {
    /// The resources invalidated for the request's tenant on success.
    pub resources: &'static [&'static str],
    /// `concat!(module_path!(), "::", fn name)`.
    pub function: &'static str,
}

/// Where the tenant scope of one call comes from.
#[derive(Debug, Clone)]
pub enum ScopeArg {
    /// From the [`CacheScope`] in the request's extensions (the default).
    FromRequest,
    /// `scope = global`: the same data for every tenant, stated explicitly.
    Global,
    /// `scope = <expr>`: evaluated over the handler's arguments; `None` bypasses.
    Explicit(Option<CacheScope>),
}

/// Converts the value of a `scope = <expr>` into a scope argument.
pub fn explicit_scope<T: ToCacheScope + ?Sized>(value: &T) -> ScopeArg {
    ScopeArg::Explicit(value.to_cache_scope())
}

/// One attribute use, recorded by the macros. Not constructed by hand.
#[derive(Debug)]
pub enum Registration {
    /// A `#[cached]` function.
    Cached {
        /// Its resource.
        resource: &'static str,
        /// Its tags.
        tags: &'static [&'static str],
        /// Its TTL, seconds.
        ttl_secs: u32,
        /// Its `stale_after_invalidation`, seconds (0: strict).
        stale_after_invalidation_secs: u32,
        /// `module::function`.
        function: &'static str,
    },
    /// An `#[invalidates]` function.
    Invalidates {
        /// The resources it invalidates.
        resources: &'static [&'static str],
        /// `module::function`.
        function: &'static str,
    },
}
