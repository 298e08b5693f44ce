//! Cache keys: where an entry and its generations live in the store.
//!
//! Layout (every key of one tenant shares the hash tag `{...}`, so one lookup touches a
//! single Redis Cluster slot):
//!
//! ```text
//! <prefix>:{t.<tenant>}:e:<resource>:<digest>     an entry
//! <prefix>:{t.<tenant>}:g:<resource>              a resource's generation
//! <prefix>:{t.<tenant>}:g:*                       the tenant's "all" generation
//! <prefix>:{global}:...                           `scope = global` data
//! ```
//!
//! `<tenant>` is kept readable when it is short and made of `[A-Za-z0-9_.-]`; other bytes
//! are `%XX`-escaped, and a tenant that would exceed 64 characters becomes `h.<digest>`
//! instead of `t.<...>`. Either way a tenant id can never produce another tenant's tag,
//! nor braces that would move the hash tag.
//!
//! `<digest>` is the first 16 bytes, in lower-case hex, of SHA-256 over the
//! length-prefixed parts (each part is its byte length as a little-endian u64, then its
//! bytes): the format version, method, path, the normalized query, the `vary` parts and
//! the handler fingerprint. It is identical across processes and releases, bounded in
//! length whatever the input, and collision-resistant against crafted queries. This
//! module never talks to a backend.

use std::borrow::Cow;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::scope::CacheScope;

/// Whose data an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenant<'a> {
    /// One tenant's data.
    Scoped(&'a str),
    /// Data that is the same for every tenant (`scope = global`).
    Global,
}

impl<'a> From<&'a CacheScope> for Tenant<'a> {
    fn from(scope: &'a CacheScope) -> Self {
        Tenant::Scoped(scope.tenant())
    }
}

/// A resource or tag name that is not `[a-z0-9_-]{1,64}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid resource name {0:?}: use 1-64 characters of [a-z0-9_-]")]
pub struct InvalidResource(pub String);

/// Checks a resource or tag name: `[a-z0-9_-]{1,64}`.
pub fn validate_resource(name: &str) -> Result<(), InvalidResource> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidResource(name.to_owned()))
    }
}

/// The hash-tagged tenant segment, e.g. `{t.org_1}`.
pub(crate) fn tenant_tag(tenant: Tenant<'_>) -> String {
    const MAX_READABLE: usize = 64;
    let id = match tenant {
        Tenant::Global => return "{global}".to_owned(),
        Tenant::Scoped(id) => id,
    };
    let mut escaped = String::with_capacity(id.len() + 4);
    escaped.push_str("{t.");
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            escaped.push(byte as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(escaped, "%{byte:02X}");
        }
        if escaped.len() > MAX_READABLE + 3 {
            let mut hasher = PartHasher::new();
            hasher.part(id.as_bytes());
            return format!("{{h.{}}}", hasher.finish_hex());
        }
    }
    escaped.push('}');
    escaped
}

/// The query string's pairs, percent-decoded (`+` as space), sorted by name with
/// repeated names kept in their original order.
///
#[cfg(any(test, feature = "testing"))]
pub fn normalize_query(query: &str) -> Vec<(String, String)> {
    normalized_pairs(query)
        .into_iter()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// [`normalize_query`] borrowing from `query` where nothing needed decoding, as it is on
/// every request's key.
fn normalized_pairs(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let mut pairs: Vec<_> = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, value)| !(name.is_empty() && value.is_empty()))
        .collect();
    // A stable sort keeps repeated names in request order (`tags=a&tags=b` differs from
    // `tags=b&tags=a`, as it may to the handler).
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// SHA-256 over length-prefixed parts, so no two sequences of parts share an input.
pub(crate) struct PartHasher(Sha256);

impl PartHasher {
    pub(crate) fn new() -> Self {
        PartHasher(Sha256::new())
    }

    pub(crate) fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> [u8; 16] {
        let full = self.0.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    pub(crate) fn finish_hex(self) -> String {
        hex(&self.finish())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    // By table, not `write!`: this runs for every request's key, and the formatting
    // machinery cost more than the rest of the key's string building.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

/// Joins `parts` into one string allocated once (`format!` grows its buffer as it goes).
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

/// Where one cached response lives, and the generations that guard it.
///
/// Built by a [`KeyBuilder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub(crate) tenant_tag: String,
    pub(crate) resource: String,
    pub(crate) entry_key: String,
    /// `[all, resource, tags...]`, in that order.
    pub(crate) generation_keys: Vec<String>,
    pub(crate) digest: [u8; 16],
}

impl CacheKey {
    #[cfg(feature = "testing")]
    /// The Redis key of the entry.
    pub fn entry_key(&self) -> &str {
        &self.entry_key
    }

    #[cfg(feature = "testing")]
    /// The generation keys a lookup reads: the tenant's "all", the resource's, each tag's.
    pub fn generation_keys(&self) -> &[String] {
        &self.generation_keys
    }

    #[cfg(feature = "testing")]
    /// The resource this entry belongs to.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The key of the cross-instance miss lease for this entry under `generations`.
    pub(crate) fn lease_key(
        &self,
        prefix: &str,
        generations: &[crate::generation::Generation],
    ) -> String {
        let mut hasher = PartHasher::new();
        hasher.part(&self.digest);
        for generation in generations {
            hasher.part(generation.as_bytes());
        }
        format!(
            "{prefix}:{}:l:{}:{}",
            self.tenant_tag,
            self.resource,
            hasher.finish_hex()
        )
    }
}

/// Builds a [`CacheKey`].
#[derive(Debug)]
pub struct KeyBuilder {
    prefix: String,
    tenant_tag: String,
    resource: String,
    tags: Vec<String>,
    hasher: PartHasher,
}

impl std::fmt::Debug for PartHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartHasher")
    }
}

impl KeyBuilder {
    pub(crate) fn new(
        prefix: &str,
        tenant: Tenant<'_>,
        resource: &str,
    ) -> Result<Self, InvalidResource> {
        validate_resource(resource)?;
        let mut hasher = PartHasher::new();
        hasher.part(b"api-cache/key/v1");
        Ok(KeyBuilder {
            prefix: prefix.to_owned(),
            tenant_tag: tenant_tag(tenant),
            resource: resource.to_owned(),
            tags: Vec::new(),
            hasher,
        })
    }

    /// Adds an invalidation tag: invalidating it also drops this entry.
    pub fn tag(mut self, tag: &str) -> Result<Self, InvalidResource> {
        validate_resource(tag)?;
        if tag != self.resource && !self.tags.iter().any(|t| t == tag) {
            self.tags.push(tag.to_owned());
        }
        Ok(self)
    }

    /// Adds the request: method (`HEAD` keys as `GET`, whose body it serves), path, and
    /// the query string, normalized by [`normalize_query`].
    pub fn request(mut self, method: &str, path: &str, query: Option<&str>) -> Self {
        let method = if method.eq_ignore_ascii_case("HEAD") {
            "GET"
        } else {
            method
        };
        self.hasher.part(b"request");
        self.hasher.part(method.as_bytes());
        self.hasher.part(path.as_bytes());
        let pairs = normalized_pairs(query.unwrap_or(""));
        self.hasher.part(&(pairs.len() as u64).to_le_bytes());
        for (name, value) in &pairs {
            self.hasher.part(name.as_bytes());
            self.hasher.part(value.as_bytes());
        }
        self
    }

    /// Adds a named part (a user id, a header value, a function argument's encoding).
    pub fn part(mut self, name: &str, value: &str) -> Self {
        self.hasher.part(b"part");
        self.hasher.part(name.as_bytes());
        self.hasher.part(value.as_bytes());
        self
    }

    /// Adds bytes as a named part.
    pub fn part_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.hasher.part(b"part");
        self.hasher.part(name.as_bytes());
        self.hasher.part(value);
        self
    }

    /// Finishes the key.
    pub fn build(self) -> CacheKey {
        let digest = self.hasher.finish();
        let KeyBuilder {
            prefix,
            tenant_tag,
            resource,
            tags,
            ..
        } = self;
        let mut entry_key = String::with_capacity(
            prefix.len() + tenant_tag.len() + resource.len() + 5 + 2 * digest.len(),
        );
        for part in [prefix.as_str(), ":", &tenant_tag, ":e:", &resource, ":"] {
            entry_key.push_str(part);
        }
        push_hex(&mut entry_key, &digest);
        let mut generation_keys = Vec::with_capacity(2 + tags.len());
        generation_keys.push(all_generation_key(&prefix, &tenant_tag));
        generation_keys.push(generation_key(&prefix, &tenant_tag, &resource));
        for tag in &tags {
            generation_keys.push(generation_key(&prefix, &tenant_tag, tag));
        }
        CacheKey {
            tenant_tag,
            resource,
            entry_key,
            generation_keys,
            digest,
        }
    }
}

pub(crate) fn generation_key(prefix: &str, tenant_tag: &str, resource: &str) -> String {
    concat(&[prefix, ":", tenant_tag, ":g:", resource])
}

pub(crate) fn all_generation_key(prefix: &str, tenant_tag: &str) -> String {
    concat(&[prefix, ":", tenant_tag, ":g:*"])
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalize_query_sorts_decodes_and_keeps_repeated_names_in_order() {
        let pairs = super::normalize_query("tag=b&page=2&tag=a&q=caf%C3%A9+au+lait");
        let expected = [
            ("page", "2"),
            ("q", "café au lait"),
            ("tag", "b"),
            ("tag", "a"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    use super::*;

    fn key(tenant: &str, query: &str) -> CacheKey {
        KeyBuilder::new("p", Tenant::Scoped(tenant), "contacts")
            .unwrap()
            .request("GET", "/api/contacts", Some(query))
            .build()
    }

    #[test]
    fn parameter_order_does_not_matter_but_values_do() {
        assert_eq!(key("o", "a=1&b=2"), key("o", "b=2&a=1"));
        assert_eq!(key("o", "a=%20x"), key("o", "a=+x"));
        assert_ne!(key("o", "a=1&a=2"), key("o", "a=2&a=1"));
        assert_ne!(key("o", "a=1"), key("o", "a=2"));
        // A handler cannot tell `b` from `b=` (both decode to ""), so neither can the key.
        assert_eq!(key("o", "a=1&b="), key("o", "a=1&b"));
        assert_eq!(key("o", ""), key("o", "&"));
    }

    #[test]
    fn hostile_tenants_cannot_move_the_hash_tag() {
        assert_eq!(tenant_tag(Tenant::Scoped("org_1")), "{t.org_1}");
        assert_eq!(tenant_tag(Tenant::Scoped("a}b{c")), "{t.a%7Db%7Bc}");
        assert_ne!(
            tenant_tag(Tenant::Scoped("global")),
            tenant_tag(Tenant::Global)
        );
        let long = "x".repeat(10_000);
        let tag = tenant_tag(Tenant::Scoped(&long));
        assert!(tag.starts_with("{h.") && tag.len() < 40, "{tag}");
        let k = key(&long, &"q=".repeat(20_000));
        assert!(k.entry_key.len() < 160);
    }

    #[test]
    fn key_strings_keep_their_layout() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let k = key("org_1", "a=1");
        assert_eq!(
            k.entry_key,
            format!("p:{{t.org_1}}:e:contacts:{}", hex(&k.digest))
        );
        assert_eq!(k.entry_key.len(), "p:{t.org_1}:e:contacts:".len() + 32);
        assert_eq!(
            k.generation_keys,
            ["p:{t.org_1}:g:*", "p:{t.org_1}:g:contacts"]
        );
    }

    #[test]
    fn rejects_bad_resource_names() {
        for bad in ["", "Contacts", "a:b", "a*", "a b", "{x}"] {
            assert!(validate_resource(bad).is_err(), "{bad}");
        }
        validate_resource("drip-campaigns_2").unwrap();
    }
}
