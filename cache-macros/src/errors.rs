//! Collects every error found in one attribute so they are reported together.
//!
//! Parsing stops at the first syntax error, but everything after it (duplicate and unknown
//! options, bad values, a non-async function) is checked in full and reported at once, each
//! spanned at its own token.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// The errors of one attribute, combined into a single `syn::Error` as they are found.
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// An error covering the tokens of `tokens` (all of them, not only the first).
    pub(crate) fn spanned<T: ToTokens>(&mut self, tokens: T, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.combined {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
