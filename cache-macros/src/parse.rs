//! The syntax of the attribute arguments, as written.
//!
//! Only the shape is checked here (`name = value` pairs separated by commas, string literals
//! for `#[invalidates]`); what the values mean is checked in `validate`. Each value is kept
//! beside the span of its keyword so every later error can point at the option it is about.
//! A syntax error ends parsing; duplicate and unknown options are recorded and parsing goes on.

use proc_macro2::{TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, LitBool, LitStr, Token};

use crate::attr::Attr;
use crate::errors::Errors;

pub(crate) mod kw {
    syn::custom_keyword!(resource);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(tags);
    syn::custom_keyword!(vary);
    syn::custom_keyword!(scope);
    syn::custom_keyword!(skip_cache);
    syn::custom_keyword!(cache_only_success);
    syn::custom_keyword!(key);
    syn::custom_keyword!(browser_ttl);
    syn::custom_keyword!(verify);
    syn::custom_keyword!(verify_ignore);
    syn::custom_keyword!(stale_while_revalidate);
    syn::custom_keyword!(stale_after_invalidation);
}

/// The options `#[cached]` accepts, for the "unknown option" message.
const CACHED_OPTIONS: &str = "`resource`, `ttl`, `tags`, `vary`, `scope`, `skip_cache`, \
                              `cache_only_success`, `key`, `browser_ttl`, `verify`, \
                              `verify_ignore`, `stale_while_revalidate`, \
                              `stale_after_invalidation`";

/// The arguments of `#[cached(...)]`.
pub(crate) struct CachedArgs {
    pub(crate) resource: Attr<Expr>,
    pub(crate) ttl: Attr<Expr>,
    pub(crate) tags: Attr<Expr>,
    pub(crate) vary: Attr<Expr>,
    pub(crate) scope: Attr<Expr>,
    pub(crate) skip_cache: Attr<LitBool>,
    pub(crate) cache_only_success: Attr<LitBool>,
    pub(crate) key: Attr<Expr>,
    pub(crate) browser_ttl: Attr<Expr>,
    pub(crate) verify: Attr<LitBool>,
    pub(crate) verify_ignore: Attr<Expr>,
    pub(crate) stale_while_revalidate: Attr<Expr>,
    pub(crate) stale_after_invalidation: Attr<Expr>,
}

/// The arguments of `#[invalidates(...)]`.
pub(crate) struct InvalidatesArgs {
    pub(crate) resources: Vec<LitStr>,
    pub(crate) scope: Attr<Expr>,
    /// Arguments that were meant as resources but are not string literals (already reported).
    pub(crate) rejected: usize,
}

impl CachedArgs {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> syn::Result<Self> {
        let mut args = CachedArgs {
            resource: Attr::none("resource"),
            ttl: Attr::none("ttl"),
            tags: Attr::none("tags"),
            vary: Attr::none("vary"),
            scope: Attr::none("scope"),
            skip_cache: Attr::none("skip_cache"),
            cache_only_success: Attr::none("cache_only_success"),
            key: Attr::none("key"),
            browser_ttl: Attr::none("browser_ttl"),
            verify: Attr::none("verify"),
            verify_ignore: Attr::none("verify_ignore"),
            stale_while_revalidate: Attr::none("stale_while_revalidate"),
            stale_after_invalidation: Attr::none("stale_after_invalidation"),
        };
        parse_separated(tokens, |input| {
            parse_cached_option(input, &mut args, errors)
        })?;
        Ok(args)
    }
}

/// Parses `item, item, ...` (a trailing comma allowed) to the end of `tokens`; a missing
/// comma between two items is an error at the token where it was expected.
fn parse_separated(
    tokens: TokenStream,
    mut item: impl FnMut(ParseStream) -> syn::Result<()>,
) -> syn::Result<()> {
    let parser = |input: ParseStream| {
        while !input.is_empty() {
            item(input)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    };
    parser.parse2(tokens)
}

fn parse_cached_option(
    input: ParseStream,
    args: &mut CachedArgs,
    errors: &mut Errors,
) -> syn::Result<()> {
    let lookahead = input.lookahead1();
    if lookahead.peek(kw::resource) {
        let keyword: kw::resource = input.parse()?;
        args.resource.set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::ttl) {
        let keyword: kw::ttl = input.parse()?;
        args.ttl.set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::tags) {
        let keyword: kw::tags = input.parse()?;
        args.tags.set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::vary) {
        let keyword: kw::vary = input.parse()?;
        args.vary.set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::scope) {
        let keyword: kw::scope = input.parse()?;
        args.scope.set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::key) {
        let keyword: kw::key = input.parse()?;
        args.key.set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::browser_ttl) {
        let keyword: kw::browser_ttl = input.parse()?;
        args.browser_ttl.set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::verify_ignore) {
        let keyword: kw::verify_ignore = input.parse()?;
        args.verify_ignore
            .set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::verify) {
        let keyword: kw::verify = input.parse()?;
        let value = flag(input, keyword.span)?;
        args.verify.set(errors, keyword.span, value);
    } else if lookahead.peek(kw::stale_while_revalidate) {
        let keyword: kw::stale_while_revalidate = input.parse()?;
        args.stale_while_revalidate
            .set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::stale_after_invalidation) {
        let keyword: kw::stale_after_invalidation = input.parse()?;
        args.stale_after_invalidation
            .set(errors, keyword.span, assigned(input)?);
    } else if lookahead.peek(kw::skip_cache) {
        let keyword: kw::skip_cache = input.parse()?;
        let value = flag(input, keyword.span)?;
        args.skip_cache.set(errors, keyword.span, value);
    } else if lookahead.peek(kw::cache_only_success) {
        let keyword: kw::cache_only_success = input.parse()?;
        input.parse::<Token![=]>()?;
        args.cache_only_success
            .set(errors, keyword.span, input.parse()?);
    } else if input.peek(Ident::peek_any) {
        let unknown = Ident::parse_any(input)?;
        errors.spanned(
            &unknown,
            format_args!(
                "unknown option `{unknown}`; the options of `#[cached]` are {CACHED_OPTIONS}"
            ),
        );
        skip_to_comma(input)?;
    } else {
        return Err(lookahead.error());
    }
    Ok(())
}

/// The `= value` after an option's keyword.
fn assigned(input: ParseStream) -> syn::Result<Expr> {
    input.parse::<Token![=]>()?;
    input.parse()
}

/// `flag` alone means `flag = true`.
fn flag(input: ParseStream, keyword: proc_macro2::Span) -> syn::Result<LitBool> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        input.parse()
    } else {
        Ok(LitBool::new(true, keyword))
    }
}

/// Passes over the value of an unknown option, so the options after it are still checked.
fn skip_to_comma(input: ParseStream) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<TokenTree>()?;
    }
    Ok(())
}

impl InvalidatesArgs {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> syn::Result<Self> {
        let mut args = InvalidatesArgs {
            resources: Vec::new(),
            scope: Attr::none("scope"),
            rejected: 0,
        };
        parse_separated(tokens, |input| {
            parse_invalidates_argument(input, &mut args, errors)
        })?;
        Ok(args)
    }
}

fn parse_invalidates_argument(
    input: ParseStream,
    args: &mut InvalidatesArgs,
    errors: &mut Errors,
) -> syn::Result<()> {
    let lookahead = input.lookahead1();
    if lookahead.peek(LitStr) {
        args.resources.push(input.parse()?);
    } else if lookahead.peek(kw::scope) && input.peek2(Token![=]) {
        let keyword: kw::scope = input.parse()?;
        args.scope.set(errors, keyword.span, assigned(input)?);
    } else if let Ok(argument) = input.fork().parse::<Expr>() {
        // Any other expression is a resource name written without quotes, or a
        // `resource = "..."` borrowed from `#[cached]`: say how to write it instead.
        input.parse::<Expr>()?;
        errors.push(non_string_resource(&argument));
        args.rejected += 1;
    } else {
        return Err(lookahead.error());
    }
    Ok(())
}

fn non_string_resource(argument: &Expr) -> syn::Error {
    let message = match argument {
        Expr::Path(path) => match path.path.get_ident() {
            Some(name) => format!("resource names are string literals: write `\"{name}\"`"),
            None => EXPECTED_RESOURCE.to_owned(),
        },
        Expr::Assign(assign) => match &*assign.right {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(name),
                ..
            }) => format!(
                "`#[invalidates]` takes the resource names alone: write `#[invalidates(\"{}\")]`",
                name.value()
            ),
            _ => EXPECTED_RESOURCE.to_owned(),
        },
        _ => EXPECTED_RESOURCE.to_owned(),
    };
    syn::Error::new_spanned(argument, message)
}

const EXPECTED_RESOURCE: &str =
    "expected a resource name as a string literal, like `#[invalidates(\"contacts\")]`";
