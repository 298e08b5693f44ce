//! The request headers a route's `vary = header(..)` parts read. `#[cached]` puts the
//! extractor [`VaryHeaders`] in front of such a route's handler, with a mask of the
//! route's header names computed at compile time ([`vary_mask`]): it keeps the lines of
//! the request's headers whose names set a bit of the mask, instead of a copy of every
//! header (a browser sends a dozen, and copying them cost a hit more than the rest of
//! its cache work). A name of another header may share a bit; the key reads only the
//! lines whose name is the route's exactly (`RequestHeaders::get_all`), so a shared bit
//! only keeps a line that is not read.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;

/// The bit (0 to 63) header name `name` (lower-case, as `HeaderName` holds it) sets in
/// a route's mask: from its length and its first and last bytes, so that a request's
/// headers are sorted without reading their names whole.
const fn name_bit(name: &[u8]) -> u32 {
    let Some((&first, _)) = name.split_first() else {
        return 0;
    };
    let last = name[name.len() - 1];
    let mixed = (name.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (first as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ (last as u64).wrapping_mul(0x1656_67b1_9e37_79f9);
    (mixed >> 58) as u32
}

/// The mask of a route's `vary` header names: the bits they set ([`name_bit`]).
pub const fn vary_mask(names: &[&str]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < names.len() {
        mask |= 1 << name_bit(names[i].as_bytes());
        i += 1;
    }
    mask
}

/// The lines of the request's headers whose names set a bit of `MASK`, in the request's
/// order: every line of the route's `vary` headers, and perhaps a few others.
#[derive(Debug)]
pub struct VaryHeaders<const MASK: u64>(RequestHeaders);

impl<const MASK: u64> VaryHeaders<MASK> {
    /// The kept lines, for `serve_cached`.
    pub fn into_headers(self) -> RequestHeaders {
        self.0
    }
}

impl<S: Send + Sync, const MASK: u64> FromRequestParts<S> for VaryHeaders<MASK> {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let lines = parts
            .headers
            .iter()
            .filter(|(name, _)| MASK & (1 << name_bit(name.as_str().as_bytes())) != 0)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Ok(VaryHeaders(RequestHeaders(lines)))
    }
}

/// Header lines taken from a request ([`VaryHeaders`]).
#[derive(Debug)]
pub struct RequestHeaders(Vec<(HeaderName, HeaderValue)>);

impl RequestHeaders {
    /// Every line of header `name` (lower-case), in the request's order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a HeaderValue> {
        self.0
            .iter()
            .filter(move |(line, _)| line.as_str() == name)
            .map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    async fn kept<const MASK: u64>(request: Request<()>) -> RequestHeaders {
        let (mut parts, ()) = request.into_parts();
        VaryHeaders::<MASK>::from_request_parts(&mut parts, &())
            .await
            .unwrap()
            .into_headers()
    }

    /// Every line of a varied header is kept, in order, repeated lines included; no line
    /// of another header is kept unless its name shares a bit of the mask.
    #[tokio::test]
    async fn every_line_of_a_varied_header_is_kept_in_order() {
        const MASK: u64 = vary_mask(&["accept-language", "x-tenant-region"]);
        let request = Request::get("/")
            .header("accept-language", "en")
            .header("cookie", "a=1")
            .header("x-tenant-region", "eu")
            .header("accept-language", "fr")
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap();
        let headers = kept::<MASK>(request).await;
        let values = |name| {
            headers
                .get_all(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(values("accept-language"), ["en", "fr"]);
        assert_eq!(values("x-tenant-region"), ["eu"]);
        // Only lines whose names set a bit of the mask are kept: the three varied ones,
        // and another header's only if its name shares a bit.
        let in_mask = |name: &[u8]| MASK & (1 << name_bit(name)) != 0;
        assert!(headers
            .0
            .iter()
            .all(|(name, _)| in_mask(name.as_str().as_bytes())));
        let sharing = [&b"cookie"[..], b"accept-encoding"]
            .into_iter()
            .filter(|name| in_mask(name))
            .count();
        assert_eq!(headers.0.len(), 3 + sharing);
    }

    /// A header whose name shares a varied header's bit is kept but never read as it.
    #[tokio::test]
    async fn a_name_sharing_a_bit_is_not_read_as_the_varied_header() {
        const MASK: u64 = vary_mask(&["accept-language"]);
        // A name of the same length and first and last bytes sets the same bit.
        let twin = "a-------------e";
        assert_eq!(name_bit(twin.as_bytes()), name_bit(b"accept-language"));
        let request = Request::get("/")
            .header(twin, "not the language")
            .header("accept-language", "de")
            .body(())
            .unwrap();
        let headers = kept::<MASK>(request).await;
        assert_eq!(headers.0.len(), 2, "the twin shares the bit, so it is kept");
        let languages: Vec<_> = headers.get_all("accept-language").collect();
        assert_eq!(languages, [&HeaderValue::from_static("de")]);
    }

    /// With no line of a varied header, nothing is read for it (the key encodes that
    /// apart from an empty line).
    #[tokio::test]
    async fn an_absent_header_reads_no_line() {
        const MASK: u64 = vary_mask(&["accept-language"]);
        let request = Request::get("/").header("cookie", "a=1").body(()).unwrap();
        let headers = kept::<MASK>(request).await;
        assert_eq!(headers.get_all("accept-language").count(), 0);
    }
}
