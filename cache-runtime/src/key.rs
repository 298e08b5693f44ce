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

use sha2::{Digest, Sha256};

use crate::scope::CacheScope;

mod generation_keys;
pub(crate) mod memo;

#[cfg(feature = "testing")]
pub use generation_keys::GenerationKeyIter;
pub use generation_keys::GenerationKeys;
pub(crate) use generation_keys::{KeyList, ALL};

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
    let mut tag = String::new();
    push_tenant_tag(&mut tag, tenant);
    tag
}

/// The part of `key` Redis Cluster hashes to place it: its hash tag (between the first
/// `{` and the next `}`, when not empty), else the whole key. A tenant's keys share the
/// tag [`tenant_tag`] writes, so they share a slot on a cluster and a shard in process.
pub(crate) fn hash_tag(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key)
}

/// A fold of `key`'s [`hash_tag`]: keys that share a tag share it, so the in-process
/// tables that group a tenant's keys shard by it. Not a secret hash: it only spreads
/// keys over locks.
pub(crate) fn tag_spread(key: &[u8]) -> usize {
    hash_tag(key).iter().fold(0usize, |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    })
}

/// Appends [`tenant_tag`] to `out`, escaping in place: a key is built in one buffer.
fn push_tenant_tag(out: &mut String, tenant: Tenant<'_>) {
    const MAX_READABLE: usize = 64;
    let id = match tenant {
        Tenant::Global => return out.push_str("{global}"),
        Tenant::Scoped(id) => id,
    };
    let readable = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-');
    if id.len() <= MAX_READABLE && id.bytes().all(readable) {
        // The usual tenant id, copied whole rather than byte by byte.
        for part in ["{t.", id, "}"] {
            out.push_str(part);
        }
        return;
    }
    let start = out.len();
    out.push_str("{t.");
    for byte in id.bytes() {
        if readable(byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            push_hex_upper(out, byte);
        }
        if out.len() - start > MAX_READABLE + 3 {
            out.truncate(start);
            let mut hasher = PartHasher::new();
            hasher.part(id.as_bytes());
            out.push_str("{h.");
            push_hex(out, &hasher.finish());
            out.push('}');
            return;
        }
    }
    out.push('}');
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
///
/// Parts are staged in a small buffer and handed to SHA-256 in few calls: a key is a
/// dozen short parts (two dozen slices with their lengths), and each `update` call has a
/// cost of its own besides the bytes it hashes.
pub(crate) struct PartHasher {
    sha: Sha256,
    staged: [u8; STAGE_BYTES],
    staged_len: usize,
}

/// Two SHA-256 blocks: a key's fixed parts, method and a short path fit in it.
const STAGE_BYTES: usize = 128;

impl PartHasher {
    pub(crate) fn new() -> Self {
        PartHasher {
            sha: Sha256::new(),
            staged: [0; STAGE_BYTES],
            staged_len: 0,
        }
    }

    pub(crate) fn part(&mut self, bytes: &[u8]) {
        self.stage(&(bytes.len() as u64).to_le_bytes());
        self.stage(bytes);
    }

    fn stage(&mut self, bytes: &[u8]) {
        if self.staged_len + bytes.len() > STAGE_BYTES {
            self.flush();
            if bytes.len() > STAGE_BYTES {
                self.sha.update(bytes);
                return;
            }
        }
        self.staged[self.staged_len..self.staged_len + bytes.len()].copy_from_slice(bytes);
        self.staged_len += bytes.len();
    }

    fn flush(&mut self) {
        self.sha.update(&self.staged[..self.staged_len]);
        self.staged_len = 0;
    }

    pub(crate) fn finish(mut self) -> [u8; 16] {
        self.flush();
        let full = self.sha.finalize();
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
    // Written a chunk at a time: pushed char by char, each push checked the capacity.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for chunk in bytes.chunks(16) {
        let mut text = [0u8; 32];
        for (pair, b) in text.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        // Hex digits are ASCII, so always UTF-8.
        if let Ok(text) = std::str::from_utf8(&text[..chunk.len() * 2]) {
            out.push_str(text);
        }
    }
}

/// `%XX`'s two digits (upper case, as percent-encoding writes them).
fn push_hex_upper(out: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.push(DIGITS[usize::from(byte >> 4)] as char);
    out.push(DIGITS[usize::from(byte & 0x0f)] as char);
}

/// Where one cached response lives, and the generations that guard it.
///
/// Built by a [`KeyBuilder`]. Two allocations: the entry key and the generation keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// `entry_key[..scope_len]` is `<prefix>:<tenant tag>`, the start of every key of
    /// this tenant (generations, lease).
    pub(crate) scope_len: usize,
    /// `<scope>:e:<resource>:<digest>`.
    pub(crate) entry_key: String,
    /// `[all, resource, tags...]`, in that order.
    pub(crate) generation_keys: GenerationKeys,
    pub(crate) digest: [u8; 16],
    /// The entry key's hash for the in-process stores ([`table_hash`]): made once with
    /// the key, so that a hit on a memoized key hashes nothing.
    pub(crate) table_hash: u64,
}

/// The hash the in-process stores file an entry key under: SipHash, keyed once per
/// process. The key carries a tenant's id and a request's path, so which entries share
/// a bucket must not be predictable from outside.
pub(crate) fn table_hash(entry_key: &str) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(entry_key)
}

/// The digest's length in the entry key, in hex.
const DIGEST_HEX: usize = 32;

impl CacheKey {
    #[cfg(feature = "testing")]
    /// The Redis key of the entry.
    pub fn entry_key(&self) -> &str {
        &self.entry_key
    }

    #[cfg(feature = "testing")]
    /// The generation keys a lookup reads: the tenant's "all", the resource's, each tag's.
    pub fn generation_keys(&self) -> &GenerationKeys {
        &self.generation_keys
    }

    /// The resource this entry belongs to (read from the entry key, between `:e:` and
    /// the digest).
    pub fn resource(&self) -> &str {
        let end = self.entry_key.len().saturating_sub(DIGEST_HEX + 1);
        self.entry_key.get(self.scope_len + 3..end).unwrap_or("")
    }

    /// The hash-tagged tenant segment as stored in the key, e.g. `{t.org_1}` (what an
    /// operator finds in Redis). A tag never contains `:`, so it is what follows the
    /// scope's last one.
    pub(crate) fn tenant_tag(&self) -> &str {
        let scope = &self.entry_key[..self.scope_len];
        scope.rfind(':').map_or(scope, |colon| &scope[colon + 1..])
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
        // The entry key starts with the prefix already.
        debug_assert!(self.entry_key.starts_with(prefix));
        let digest = hasher.finish();
        let scope = &self.entry_key[..self.scope_len];
        let resource = self.resource();
        let mut key = String::with_capacity(scope.len() + 4 + resource.len() + 32);
        for part in [scope, ":l:", resource, ":"] {
            key.push_str(part);
        }
        push_hex(&mut key, &digest);
        key
    }
}

/// Builds a [`CacheKey`].
#[derive(Debug)]
pub struct KeyBuilder {
    /// `<prefix>:<tenant tag>:e:<resource>:` so far: [`build`](Self::build) appends the
    /// digest in place.
    entry_key: String,
    /// `entry_key[..scope_len]` is `<prefix>:<tenant tag>`.
    scope_len: usize,
    /// The "all" and resource generation keys from the start, each tag's as it is added.
    generation_keys: GenerationKeys,
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
        // Room for a readable tenant id of a few dozen bytes and the digest: one
        // allocation for the usual key.
        let mut entry_key = String::with_capacity(prefix.len() + resource.len() + 96);
        entry_key.push_str(prefix);
        entry_key.push(':');
        push_tenant_tag(&mut entry_key, tenant);
        let scope_len = entry_key.len();
        // The two keys every entry has and room for a tag or two: one allocation.
        let mut generation_keys =
            GenerationKeys::with_capacity(2 * scope_len + resource.len() + 64);
        let scope = entry_key.as_str();
        generation_keys.push_generation(&[scope], generation_keys::ALL);
        generation_keys.push_generation(&[scope], resource);
        for part in [":e:", resource, ":"] {
            entry_key.push_str(part);
        }
        Ok(KeyBuilder {
            entry_key,
            scope_len,
            generation_keys,
            hasher,
        })
    }

    /// Adds an invalidation tag: invalidating it also drops this entry.
    pub fn tag(mut self, tag: &str) -> Result<Self, InvalidResource> {
        self.add_tag(tag)?;
        Ok(self)
    }

    /// Adds the request: method (`HEAD` keys as `GET`, whose body it serves), path, and
    /// the query string, normalized by [`normalize_query`].
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn request(mut self, method: &str, path: &str, query: Option<&str>) -> Self {
        self.add_request(method, path, query);
        self
    }

    /// Adds a named part (a user id, a header value, a function argument's encoding).
    pub fn part(mut self, name: &str, value: &str) -> Self {
        self.add_part(name, value.as_bytes());
        self
    }

    /// Adds bytes as a named part.
    pub fn part_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.add_part(name, value);
        self
    }

    // The builder in place: a request's key is built through these, since each step
    // of the chained form above moves the builder (its hash state and staging buffer,
    // a few hundred bytes) once more.

    /// [`tag`](Self::tag) in place.
    pub(crate) fn add_tag(&mut self, tag: &str) -> Result<(), InvalidResource> {
        validate_resource(tag)?;
        // Every generation key's name follows `<scope>:g:`; the resource's is the second.
        let name_at = self.scope_len + generation_keys::GENERATION_INFIX.len();
        let known = self
            .generation_keys
            .iter()
            .skip(1)
            .any(|key| key.get(name_at..) == Some(tag));
        if !known {
            let scope = &self.entry_key[..self.scope_len];
            self.generation_keys.push_generation(&[scope], tag);
        }
        Ok(())
    }
    /// [`request`](Self::request) in place.
    pub(crate) fn add_request(&mut self, method: &str, path: &str, query: Option<&str>) {
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
    }

    /// [`part`](Self::part) and [`part_bytes`](Self::part_bytes) in place.
    pub(crate) fn add_part(&mut self, name: &str, value: &[u8]) {
        self.hasher.part(b"part");
        self.hasher.part(name.as_bytes());
        self.hasher.part(value);
    }

    /// Finishes the key.
    pub fn build(self) -> CacheKey {
        let digest = self.hasher.finish();
        let KeyBuilder {
            mut entry_key,
            scope_len,
            generation_keys,
            ..
        } = self;
        push_hex(&mut entry_key, &digest);
        CacheKey {
            scope_len,
            table_hash: table_hash(&entry_key),
            entry_key,
            generation_keys,
            digest,
        }
    }
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

    /// `key("org_1", "page=2&limit=50")`'s digest as the per-part-`update` builder of
    /// the first release computed it.
    const PINNED_DIGEST: &str = "1aa87a7a9ab52bbc61ff1c2aeebc88f4";

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
    fn a_readable_tenant_stays_readable_up_to_64_characters() {
        let at_bound = "a".repeat(64);
        assert_eq!(
            tenant_tag(Tenant::Scoped(&at_bound)),
            format!("{{t.{at_bound}}}")
        );
        let over = "a".repeat(65);
        let mut hasher = PartHasher::new();
        hasher.part(over.as_bytes());
        let hashed = format!("{{h.{}}}", hasher.finish_hex());
        assert_eq!(tenant_tag(Tenant::Scoped(&over)), hashed);
        // Escaped bytes count as their three characters.
        let escaped = format!("{}%", "a".repeat(21));
        assert_eq!(
            tenant_tag(Tenant::Scoped(&escaped)),
            format!("{{t.{}%25}}", "a".repeat(21))
        );
        let escaped_over = "%".repeat(22);
        assert!(tenant_tag(Tenant::Scoped(&escaped_over)).starts_with("{h."));
        assert_eq!(hex(&[0xab; 20]), "ab".repeat(20));
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
        assert_eq!(k.tenant_tag(), "{t.org_1}");
    }

    /// The documented digest, computed the plain way: SHA-256 over each part's length
    /// (u64 LE) and bytes, one `update` per slice. Staging must not change a key, or
    /// every entry stored by an earlier release would miss.
    fn reference_digest(parts: &[&[u8]]) -> [u8; 16] {
        let mut sha = Sha256::new();
        for part in parts {
            sha.update((part.len() as u64).to_le_bytes());
            sha.update(part);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&sha.finalize()[..16]);
        out
    }

    #[test]
    fn the_digest_is_the_documented_one_whatever_the_part_sizes() {
        let long_path = format!("/api/{}", "p".repeat(300));
        let long_value = "v".repeat(1000);
        let mut checked = 0;
        for path in ["/api/contacts", long_path.as_str()] {
            for value in ["1", "", long_value.as_str()] {
                let query = format!("b=2&a={value}");
                let k = KeyBuilder::new("p", Tenant::Scoped("org_1"), "contacts")
                    .unwrap()
                    .request("HEAD", path, Some(&query))
                    .part("fingerprint", "3f1c9a0be4d27788")
                    .build();
                let expected = reference_digest(&[
                    b"api-cache/key/v1",
                    b"request",
                    b"GET",
                    path.as_bytes(),
                    &2u64.to_le_bytes(),
                    b"a",
                    value.as_bytes(),
                    b"b",
                    b"2",
                    b"part",
                    b"fingerprint",
                    b"3f1c9a0be4d27788",
                ]);
                assert_eq!(
                    k.digest,
                    expected,
                    "path {} value {}",
                    path.len(),
                    value.len()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 6);
        // A key of the first release, pinned: the format is stable across releases.
        let k = key("org_1", "page=2&limit=50");
        assert_eq!(hex(&k.digest), PINNED_DIGEST);
    }

    #[test]
    fn generation_keys_past_the_inline_ends_and_repeated_tags() {
        let mut builder = KeyBuilder::new("p", Tenant::Scoped("o"), "contacts").unwrap();
        for tag in ["a", "contacts", "bb", "a", "ccc", "dddd"] {
            builder.add_tag(tag).unwrap();
        }
        let k = builder.build();
        let expected = [
            "p:{t.o}:g:*",
            "p:{t.o}:g:contacts",
            "p:{t.o}:g:a",
            "p:{t.o}:g:bb",
            "p:{t.o}:g:ccc",
            "p:{t.o}:g:dddd",
        ];
        assert_eq!(k.generation_keys, expected);
        assert_eq!(k.generation_keys.len(), 6);
        assert_eq!(k.generation_keys.iter().len(), 6);
        for (index, key) in expected.iter().enumerate() {
            assert_eq!(k.generation_keys.get(index), Some(*key));
        }
        assert_eq!(k.generation_keys.get(6), None);
        assert_eq!(k.generation_keys.first(), Some("p:{t.o}:g:*"));
        assert_eq!(k.resource(), "contacts");
        let rebuilt: GenerationKeys = expected.iter().copied().collect();
        assert_eq!(rebuilt, k.generation_keys);
        assert_eq!(format!("{rebuilt:?}"), format!("{expected:?}"));
        assert!(GenerationKeys::default().first().is_none());
    }

    #[test]
    fn rejects_bad_resource_names() {
        for bad in ["", "Contacts", "a:b", "a*", "a b", "{x}"] {
            assert!(validate_resource(bad).is_err(), "{bad}");
        }
        validate_resource("drip-campaigns_2").unwrap();
    }
}
