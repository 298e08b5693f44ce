//! Stored entries and their wire format.
//!
//! A Redis value is `b"AC"`, a format version byte, then: the key digest (16 bytes, so a
//! value planted under another key or by another handler is recognised), stored-at and
//! TTL in milliseconds (u64 LE), the computation time in milliseconds (u32 LE, for early
//! refresh), since version 2 when its generations were read in milliseconds (u64 LE, for
//! `stale_after_invalidation`; a version 1 entry decodes with 0, "unknown", and is never
//! served after an invalidation), the generations (count u8, each u16 LE length + bytes), the HTTP status
//! (u16 LE), the headers (count u16 LE, each name u16 LE length + bytes, value u32 LE
//! length + bytes), and the body as the rest. Anything that does not decode exactly is
//! [`Corrupt`] and is treated as a miss, then overwritten. The in-memory backend keeps
//! entries decoded. This module never performs I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::generation::Generation;

const MAGIC: &[u8; 2] = b"AC";
const VERSION: u8 = 2;
/// Entries written before the generations' read time was recorded.
const VERSION_1: u8 = 1;

/// A stored value that cannot be ours: wrong magic, version, length or field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored value is corrupt or not written by this version of api-cache")]
pub struct Corrupt;

/// What a cache entry holds: an HTTP response (status, headers, body bytes exactly as
/// first sent) or, for cached plain functions, a serialized value as the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    /// The response status.
    pub status: StatusCode,
    /// The stored headers (content type and other representation headers).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, byte for byte.
    pub body: Bytes,
}

impl CachedResponse {
    /// A `200 OK` with this body and no headers.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        CachedResponse {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Approximate bytes this response occupies in process: its bytes, and the headers
    /// a hit on it keeps once it is served from memory (`Entry::hit_headers`).
    pub fn weight(&self) -> usize {
        self.wire_weight()
            + HIT_HEADERS_FIXED_BYTES
            + (self.headers.len() + HIT_HEADERS_ADDED) * HIT_HEADER_BYTES
    }

    /// Bytes of its status, headers and body as stored.
    fn wire_weight(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 16)
                .sum::<usize>()
    }
}

/// Headers a hit adds to the stored ones (`X-Cache`, `X-Cache-Age`, `Age`,
/// `Cache-Control`, `Content-Length`).
const HIT_HEADERS_ADDED: usize = 5;
/// What [`HitHeaders`] holds besides its headers: the map and the route's
/// `Cache-Control` it was made for.
const HIT_HEADERS_FIXED_BYTES: usize = std::mem::size_of::<(HeaderValue, HeaderMap)>();
/// One header in a kept map: its name and value (the bytes are shared with the stored
/// ones or static), the map's hash, links and index slot (estimated: 40 bytes).
const HIT_HEADER_BYTES: usize =
    std::mem::size_of::<HeaderName>() + std::mem::size_of::<HeaderValue>() + 40;

/// One cached response with what guards it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub(crate) digest: [u8; 16],
    pub(crate) generations: Vec<Generation>,
    pub(crate) stored_at_ms: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) compute_ms: u32,
    /// When the generations it carries were read (epoch ms), before its computation
    /// started: it reflects every write whose invalidation had landed by then. 0 when
    /// unknown (an entry of format version 1).
    pub(crate) based_on_ms: u64,
    pub(crate) response: CachedResponse,
    /// The headers of a hit on this entry, made at its first hit when the entry is held
    /// in process (memory backend, local tier) and copied on every later one.
    pub(crate) hit_headers: HitHeaders,
    /// The memory backend's note that its generations were all current (see
    /// [`GenerationMemo`]).
    pub(crate) generations_checked: GenerationMemo,
}

/// A note that an entry's generations were all current at a write count of the
/// generation table's shard, and stay unexpired until a deadline (whole seconds from
/// the table's start, rounded down). Packed in one atomic word, so that a note is
/// always read whole: the count in the low 40 bits, the deadline in the high 24. 0 is
/// no note (its deadline has passed at once). A copy of an entry starts without one.
#[derive(Debug, Default)]
pub(crate) struct GenerationMemo(AtomicU64);

const MEMO_EPOCH_BITS: u32 = 40;
const MEMO_EPOCH_MASK: u64 = (1 << MEMO_EPOCH_BITS) - 1;
const MEMO_MAX_DEADLINE: u64 = (1 << (64 - MEMO_EPOCH_BITS)) - 1;

impl GenerationMemo {
    /// Whether the note was taken at write count `epoch` and its deadline is after
    /// `now_secs`. A count 2^40 writes apart would read as the same: more writes than a
    /// shard sees in years, during one entry's life.
    pub(crate) fn holds(&self, epoch: u64, now_secs: u64) -> bool {
        let note = self.0.load(Ordering::Relaxed);
        note & MEMO_EPOCH_MASK == epoch & MEMO_EPOCH_MASK && now_secs < note >> MEMO_EPOCH_BITS
    }

    /// Notes that the generations were current at write count `epoch` until
    /// `deadline_secs` (a later deadline than the field holds is cut: earlier is safe).
    pub(crate) fn note(&self, epoch: u64, deadline_secs: u64) {
        let deadline = deadline_secs.min(MEMO_MAX_DEADLINE);
        self.0.store(
            (deadline << MEMO_EPOCH_BITS) | (epoch & MEMO_EPOCH_MASK),
            Ordering::Relaxed,
        );
    }
}

impl Clone for GenerationMemo {
    fn clone(&self) -> Self {
        GenerationMemo::default()
    }
}

/// A hit's response headers, made once per entry: the stored ones, `Cache-Control`
/// (the handler's, else the route's, which is kept beside them: a hit by a route with
/// another one builds its own) and the headers every hit carries, whose per-hit values
/// (the age) are replaced in place in each copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct HitHeaders(OnceLock<(HeaderValue, HeaderMap)>);

impl HitHeaders {
    /// The headers made for `route_cache_control`, made by `make` at the first call.
    pub(crate) fn get_or_make(
        &self,
        route_cache_control: &HeaderValue,
        make: impl FnOnce() -> HeaderMap,
    ) -> Option<&HeaderMap> {
        let (made_for, headers) = self.0.get_or_init(|| (route_cache_control.clone(), make()));
        (made_for == route_cache_control).then_some(headers)
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Entry {
    /// The stored response.
    pub fn response(&self) -> &CachedResponse {
        &self.response
    }

    /// How long ago the entry was stored.
    pub fn age(&self) -> Duration {
        self.age_at(now_ms())
    }

    /// Its age at `now_ms` (epoch ms).
    pub(crate) fn age_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.stored_at_ms))
    }

    /// Its time to live.
    #[cfg(feature = "testing")]
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// How long its computation took.
    #[cfg(feature = "testing")]
    pub fn compute_time(&self) -> Duration {
        Duration::from_millis(u64::from(self.compute_ms))
    }

    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.stored_at_ms.saturating_add(self.ttl_ms)
    }

    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms()
    }

    /// Whether, expired, it is still within `grace` past its TTL.
    pub(crate) fn within_grace(&self, now_ms: u64, grace_ms: u64) -> bool {
        now_ms < self.expires_at_ms().saturating_add(grace_ms)
    }

    /// An equal entry that shares no reference count with this one: its body and header
    /// bytes are copied (a static name stays static), and it starts with no kept hit
    /// headers and no generation note, which it makes for itself. A worker thread keeps
    /// such a copy of a hot entry (`backend/store.rs`), so that serving it writes no
    /// cache line another thread's hits write too.
    pub(crate) fn unshared_copy(&self) -> Entry {
        let headers = self
            .response
            .headers
            .iter()
            .map(|(name, value)| {
                // Standard names are static and come back so; a custom one is copied.
                let name = HeaderName::from_bytes(name.as_str().as_bytes())
                    .unwrap_or_else(|_| name.clone());
                let copied =
                    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()));
                let mut copied = copied.unwrap_or_else(|_| value.clone());
                copied.set_sensitive(value.is_sensitive());
                (name, copied)
            })
            .collect();
        Entry {
            digest: self.digest,
            generations: self.generations.clone(),
            stored_at_ms: self.stored_at_ms,
            ttl_ms: self.ttl_ms,
            compute_ms: self.compute_ms,
            based_on_ms: self.based_on_ms,
            response: CachedResponse {
                status: self.response.status,
                headers,
                body: Bytes::copy_from_slice(&self.response.body),
            },
            hit_headers: HitHeaders::default(),
            generations_checked: GenerationMemo::default(),
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        let response = &self.response;
        let mut out = BytesMut::with_capacity(64 + response.wire_weight());
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_slice(&self.digest);
        out.put_u64_le(self.stored_at_ms);
        out.put_u64_le(self.ttl_ms);
        out.put_u32_le(self.compute_ms);
        out.put_u64_le(self.based_on_ms);
        out.put_u8(self.generations.len() as u8);
        for generation in &self.generations {
            out.put_u16_le(generation.as_bytes().len() as u16);
            out.put_slice(generation.as_bytes());
        }
        out.put_u16_le(response.status.as_u16());
        out.put_u16_le(response.headers.len() as u16);
        for (name, value) in &response.headers {
            out.put_u16_le(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
            out.put_u32_le(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_slice(&response.body);
        out.freeze()
    }

    /// Decodes a stored value; the body and header values are zero-copy slices of `raw`.
    pub(crate) fn decode(raw: Bytes) -> Result<Entry, Corrupt> {
        // The fixed fields are read from a plain slice: a `Bytes` split per field would
        // touch the shared reference count a dozen times per hit.
        let mut buf: &[u8] = &raw;
        if buf.len() < 3 || &buf[..2] != MAGIC || !matches!(buf[2], VERSION | VERSION_1) {
            return Err(Corrupt);
        }
        let version = buf[2];
        buf = &buf[3..];
        let digest = take_array::<16>(&mut buf)?;
        let stored_at_ms = u64::from_le_bytes(take_array(&mut buf)?);
        let ttl_ms = u64::from_le_bytes(take_array(&mut buf)?);
        let compute_ms = u32::from_le_bytes(take_array(&mut buf)?);
        let based_on_ms = if version == VERSION_1 {
            0
        } else {
            u64::from_le_bytes(take_array(&mut buf)?)
        };
        let [count] = take_array::<1>(&mut buf)?;
        let mut generations = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = u16::from_le_bytes(take_array(&mut buf)?) as usize;
            let start = raw.len() - buf.len();
            take_slice(&mut buf, len)?;
            let token = raw.slice(start..start + len);
            generations.push(Generation::from_bytes(token).ok_or(Corrupt)?);
        }
        let status = u16::from_le_bytes(take_array(&mut buf)?);
        let status = StatusCode::from_u16(status).map_err(|_| Corrupt)?;
        let header_count = u16::from_le_bytes(take_array(&mut buf)?);
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let len = u16::from_le_bytes(take_array(&mut buf)?) as usize;
            let name = HeaderName::from_bytes(take_slice(&mut buf, len)?).map_err(|_| Corrupt)?;
            let len = u32::from_le_bytes(take_array(&mut buf)?) as usize;
            let start = raw.len() - buf.len();
            take_slice(&mut buf, len)?;
            let value = HeaderValue::from_maybe_shared(raw.slice(start..start + len))
                .map_err(|_| Corrupt)?;
            headers.push((name, value));
        }
        let body = raw.slice(raw.len() - buf.len()..);
        Ok(Entry {
            digest,
            generations,
            stored_at_ms,
            ttl_ms,
            compute_ms,
            based_on_ms,
            response: CachedResponse {
                status,
                headers,
                body,
            },
            hit_headers: HitHeaders::default(),
            generations_checked: GenerationMemo::default(),
        })
    }
}

fn take_slice<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], Corrupt> {
    if buf.len() < len {
        return Err(Corrupt);
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

fn take_array<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], Corrupt> {
    let mut out = [0u8; N];
    out.copy_from_slice(take_slice(buf, N)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unshared_copy_is_equal_and_shares_no_bytes() {
        let mut custom = HeaderValue::from_static("secret");
        custom.set_sensitive(true);
        let original = Entry {
            digest: [7; 16],
            generations: vec![Generation::fresh()],
            stored_at_ms: 1_000,
            ttl_ms: 60_000,
            compute_ms: 12,
            based_on_ms: 900,
            response: CachedResponse {
                status: StatusCode::CREATED,
                headers: vec![
                    (
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_maybe_shared(Bytes::from("application/json")).unwrap(),
                    ),
                    (HeaderName::from_static("x-custom"), custom),
                ],
                body: Bytes::from(vec![b'x'; 100]),
            },
            hit_headers: Default::default(),
            generations_checked: Default::default(),
        };
        let copy = original.unshared_copy();
        assert_eq!(copy.response, original.response);
        assert_eq!(copy.generations, original.generations);
        assert_eq!(
            (
                copy.digest,
                copy.stored_at_ms,
                copy.ttl_ms,
                copy.compute_ms,
                copy.based_on_ms
            ),
            (original.digest, 1_000, 60_000, 12, 900)
        );
        assert_ne!(copy.response.body.as_ptr(), original.response.body.as_ptr());
        for ((_, copied), (_, value)) in
            copy.response.headers.iter().zip(&original.response.headers)
        {
            assert_ne!(copied.as_bytes().as_ptr(), value.as_bytes().as_ptr());
            assert_eq!(copied.is_sensitive(), value.is_sensitive());
        }
    }

    fn sample() -> Entry {
        Entry {
            digest: [7; 16],
            generations: vec![Generation::fresh(), Generation::fresh()],
            stored_at_ms: 1_700_000_000_000,
            ttl_ms: 300_000,
            compute_ms: 42,
            based_on_ms: 1_699_999_999_000,
            response: CachedResponse {
                status: StatusCode::CREATED,
                headers: vec![(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body: Bytes::from_static(b"{\"a\":1}"),
            },
            hit_headers: HitHeaders::default(),
            generations_checked: GenerationMemo::default(),
        }
    }

    #[test]
    fn round_trips() {
        let entry = sample();
        let decoded = Entry::decode(entry.encode()).unwrap();
        assert_eq!(decoded.response, entry.response);
        assert_eq!(decoded.generations, entry.generations);
        assert_eq!(decoded.digest, entry.digest);
        assert_eq!(decoded.compute_ms, 42);
        assert_eq!(decoded.based_on_ms, 1_699_999_999_000);
    }

    #[test]
    fn a_version_1_entry_still_decodes_with_an_unknown_read_time() {
        let entry = sample();
        let v2 = entry.encode();
        // Version 1 is version 2 without the 8 bytes of `based_on_ms` after `compute_ms`.
        let fixed = 3 + 16 + 8 + 8 + 4;
        let mut v1 = BytesMut::new();
        v1.put_slice(&v2[..fixed]);
        v1.put_slice(&v2[fixed + 8..]);
        v1[2] = VERSION_1;
        let decoded = Entry::decode(v1.freeze()).unwrap();
        assert_eq!(decoded.response, entry.response);
        assert_eq!(decoded.generations, entry.generations);
        assert_eq!(decoded.stored_at_ms, entry.stored_at_ms);
        assert_eq!(decoded.based_on_ms, 0);
    }

    #[test]
    fn every_truncation_is_corrupt_not_a_panic() {
        let encoded = sample().encode();
        let header_len = encoded.len() - 7;
        for len in 0..header_len {
            assert_eq!(
                Entry::decode(encoded.slice(..len)).err(),
                Some(Corrupt),
                "len {len}"
            );
        }
        assert!(Entry::decode(Bytes::from_static(b"{\"json\":true}")).is_err());
        assert!(Entry::decode(Bytes::from_static(b"AC\x02rest")).is_err());
        assert!(Entry::decode(Bytes::from_static(b"AC\x03rest")).is_err());
    }
}
