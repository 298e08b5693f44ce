//! One attribute invocation from start to end: parse, validate, expand.
//!
//! On any error the function is emitted unchanged beside the errors, so the rest of the
//! crate still type-checks against it and an IDE keeps working while the attribute is fixed.

use proc_macro2::TokenStream;
use syn::ItemFn;

use crate::errors::Errors;
use crate::parse::{CachedArgs, InvalidatesArgs};
use crate::{expand, fingerprint, validate};

pub(crate) fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(error) => return token_stream_with_error(item, error),
    };
    let fingerprint = fingerprint::fingerprint(&function, &args);
    let mut errors = Errors::default();
    let spec = CachedArgs::parse(args, &mut errors)
        .map(|args| validate::cached(args, &function, &mut errors));
    match (spec, errors.finish()) {
        (Ok(spec), Ok(())) => expand::cached(&spec, function, &fingerprint),
        (Ok(_), Err(error)) => token_stream_with_error(item, error),
        (Err(syntax), errors) => token_stream_with_error(item, combined(syntax, errors)),
    }
}

pub(crate) fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(error) => return token_stream_with_error(item, error),
    };
    let mut errors = Errors::default();
    let spec = InvalidatesArgs::parse(args, &mut errors)
        .map(|args| validate::invalidates(args, &function, &mut errors));
    match (spec, errors.finish()) {
        (Ok(spec), Ok(())) => expand::invalidates(&spec, function),
        (Ok(_), Err(error)) => token_stream_with_error(item, error),
        (Err(syntax), errors) => token_stream_with_error(item, combined(syntax, errors)),
    }
}

/// The errors recorded before a syntax error stopped parsing, then the syntax error.
fn combined(syntax: syn::Error, recorded: syn::Result<()>) -> syn::Error {
    match recorded {
        Ok(()) => syntax,
        Err(mut recorded) => {
            recorded.combine(syntax);
            recorded
        }
    }
}

fn token_stream_with_error(mut item: TokenStream, error: syn::Error) -> TokenStream {
    item.extend(error.into_compile_error());
    item
}
