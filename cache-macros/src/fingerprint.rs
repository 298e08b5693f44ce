//! A stable digest of a cached function's code, part of every cache key.
//!
//! When a deploy changes what a handler returns, its fingerprint changes and it never reads
//! an entry the old code stored. The digest is FNV-1a (64 bits) of the function's tokens and
//! the attribute's arguments: the same on every machine and compiler run for the same source,
//! unlike `std`'s `DefaultHasher`, whose output is not specified. Doc comments are left out so
//! that editing documentation does not drop a route's cache.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ItemFn;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The digest of `function` under `#[cached(args)]`, as 16 lower-case hex digits.
pub(crate) fn fingerprint(function: &ItemFn, args: &TokenStream) -> String {
    let mut code = function.clone();
    code.attrs.retain(|attr| !attr.path().is_ident("doc"));
    let text = format!("{args}|{}", code.into_token_stream());
    format!("{:016x}", fnv1a(text.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn changes_with_the_code_but_not_with_doc_comments() {
        let original: ItemFn = syn::parse_quote! {
            /// Lists templates.
            async fn list() -> u32 { 1 }
        };
        let redocumented: ItemFn = syn::parse_quote! {
            /// Lists every template.
            async fn list() -> u32 { 1 }
        };
        let changed: ItemFn = syn::parse_quote! {
            async fn list() -> u32 { 2 }
        };
        let args = quote!(resource = "templates");
        let digest = fingerprint(&original, &args);
        assert_eq!(digest.len(), 16);
        assert_eq!(digest, fingerprint(&redocumented, &args));
        assert_ne!(digest, fingerprint(&changed, &args));
        assert_ne!(
            digest,
            fingerprint(&original, &quote!(resource = "contacts"))
        );
    }
}
