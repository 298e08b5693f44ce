//! What the arguments mean, and the rules they must follow.
//!
//! Turns the options as written into the specs `expand` generates code from. Every rule of
//! the attribute grammar lives here: resource names, TTLs and presets, `vary` parts, scope
//! and key, and that the function is async. A broken rule is recorded (at the token it is
//! about) and a placeholder value is used, so one pass reports every mistake; a spec is only
//! expanded when no error was recorded.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr};

use crate::attr::Set;
use crate::errors::Errors;
use crate::parse::{CachedArgs, InvalidatesArgs};

/// The reference rollout's TTLs, named in the "missing `ttl`" message: the runtime's
/// `presets` constants. A resource never gets one by its name alone; the user writes
/// `ttl = cache_runtime::presets::CONTACTS` to choose it.
pub(crate) const PRESET_TTLS: &[(&str, &str, u32)] = &[
    ("conversations", "CONVERSATIONS", 30),
    ("contacts", "CONTACTS", 300),
    ("templates", "TEMPLATES", 1800),
    ("analytics", "ANALYTICS", 600),
    ("campaigns", "CAMPAIGNS", 300),
    ("organization", "ORGANIZATION", 900),
];

/// How long entries live.
pub(crate) enum Ttl {
    /// `ttl = 300`: checked here.
    Seconds(u32),
    /// `ttl = cache_runtime::presets::CONTACTS`, or any constant expression of type
    /// `u32`: evaluated by the compiler, which also checks it is not 0.
    Constant(Expr),
}

/// A validated `#[cached(...)]`.
pub(crate) struct CachedSpec {
    pub(crate) resource: String,
    pub(crate) ttl: Ttl,
    pub(crate) tags: Vec<String>,
    pub(crate) vary: Vec<VaryPart>,
    pub(crate) scope: Scope,
    pub(crate) skip_cache: bool,
    pub(crate) cache_only_success: bool,
    /// `browser_ttl = N`: how long a browser may reuse its own copy without asking;
    /// `None` makes it revalidate every time (`no-cache`).
    pub(crate) browser_ttl_secs: Option<u32>,
    /// `key = (...)`: a plain function keyed by these expressions instead of a handler.
    pub(crate) key: Option<Vec<Expr>>,
    /// `verify = false`: shadow runs and verification never compare responses.
    pub(crate) verify: bool,
    /// `verify_ignore = ["field", ...]`: JSON fields left out of comparisons.
    pub(crate) verify_ignore: Vec<String>,
    /// `stale_while_revalidate = N`: the grace past the TTL; `None` is the default (half
    /// the TTL), `Some(0)` turns it off.
    pub(crate) stale_while_revalidate_secs: Option<u32>,
    /// `stale_after_invalidation = N`: how far behind the route may be after a write;
    /// 0 (strict) when absent.
    pub(crate) stale_after_invalidation_secs: u32,
}

/// A validated `#[invalidates(...)]`.
pub(crate) struct InvalidatesSpec {
    pub(crate) resources: Vec<String>,
    pub(crate) scope: Scope,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VaryPart {
    User,
    /// A lower-case header name.
    Header(String),
}

pub(crate) enum Scope {
    FromRequest,
    Global,
    Explicit(Expr),
}

impl CachedSpec {
    /// The request headers the `vary` parts read, in their order.
    pub(crate) fn vary_headers(&self) -> impl Iterator<Item = &str> {
        self.vary.iter().filter_map(|part| match part {
            VaryPart::Header(header) => Some(header.as_str()),
            VaryPart::User => None,
        })
    }

    /// `true` when any `vary` part needs the request headers.
    pub(crate) fn varies_by_header(&self) -> bool {
        self.vary_headers().next().is_some()
    }
}

pub(crate) fn cached(args: CachedArgs, function: &ItemFn, errors: &mut Errors) -> CachedSpec {
    async_function(function, "cached", errors);

    let resource = match args.resource.get() {
        Some(set) => string_literal(&set.value, "resource = \"templates\"", errors)
            .and_then(|name| resource_name(&name, "resource name", errors)),
        None => {
            // At the whole attribute: there is no token to point at.
            errors.at(
                Span::call_site(),
                "missing `resource = \"...\"`: name the group this cache belongs to, \
                 like `resource = \"templates\"`",
            );
            None
        }
    };
    let ttl = match (args.ttl.get(), &resource) {
        (
            Some(Set {
                value: Expr::Lit(literal),
                ..
            }),
            _,
        ) => Ttl::Seconds(seconds(&Expr::Lit(literal), &TTL, errors)),
        (Some(set), _) => Ttl::Constant(set.value),
        (None, Some(name)) => {
            missing_ttl(name, errors);
            Ttl::Seconds(0)
        }
        // The missing or broken resource is already reported; a TTL error would be noise.
        (None, None) => Ttl::Seconds(0),
    };

    let tags = args
        .tags
        .get()
        .map_or_else(Vec::new, |set| tags(&set.value, errors));
    let plain_function = args.key.is_set();
    if !plain_function {
        not_a_method(
            function,
            "`#[cached]` rewrites an axum handler, which cannot take `self`; \
             to cache a method, key it by its arguments: `key = (...)` with `scope = ...`",
            errors,
        );
    }
    let key = args.key.get().map(|set| {
        if !args.scope.is_set() {
            errors.at(
                set.keyword,
                "a cached function with `key` needs `scope`: the tenant its result belongs \
                 to (`scope = org_id`), or `scope = global` when it is the same for all",
            );
        }
        key_expressions(set.value, errors)
    });
    let vary = match args.vary.get() {
        Some(set) if plain_function => {
            errors.at(
                set.keyword,
                "`vary` reads the request, and a function cached with `key` has none: \
                 put what the result depends on into `key`",
            );
            Vec::new()
        }
        Some(set) => vary(&set.value, errors),
        None => Vec::new(),
    };
    let cache_only_success = match args.cache_only_success.get() {
        Some(set) if plain_function => {
            errors.at(
                set.keyword,
                "`cache_only_success` is about HTTP responses; a function cached with `key` \
                 never stores an `Err`",
            );
            true
        }
        Some(set) => set.value.value,
        None => true,
    };

    let browser_ttl_secs = args.browser_ttl.get().and_then(|set| {
        if plain_function {
            errors.at(
                set.keyword,
                "`browser_ttl` is about what a browser keeps; a function cached with `key` \
                 sends nothing to a browser",
            );
            return None;
        }
        Some(seconds(&set.value, &BROWSER_TTL, errors))
    });

    let verify = match args.verify.get() {
        Some(set) if plain_function => {
            errors.at(
                set.keyword,
                "`verify` is about comparing HTTP responses in shadow mode; a function \
                 cached with `key` is never shadowed",
            );
            true
        }
        Some(set) => set.value.value,
        None => true,
    };
    let verify_ignore = match args.verify_ignore.get() {
        Some(set) if plain_function => {
            errors.at(
                set.keyword,
                "`verify_ignore` is about comparing HTTP responses in shadow mode; a \
                 function cached with `key` is never shadowed",
            );
            Vec::new()
        }
        Some(set) if !verify => {
            errors.at(
                set.keyword,
                "`verify_ignore` does nothing with `verify = false`, which compares nothing: \
                 keep one of them",
            );
            Vec::new()
        }
        Some(set) => verify_ignore(&set.value, errors),
        None => Vec::new(),
    };
    let stale_while_revalidate_secs = args.stale_while_revalidate.get().and_then(|set| {
        if plain_function {
            errors.at(set.keyword, STALE_FOR_PLAIN_FUNCTION);
            return None;
        }
        // 0 is allowed: it turns the default grace off.
        if is_literal_zero(&set.value) {
            return Some(0);
        }
        Some(seconds(&set.value, &STALE_WHILE_REVALIDATE, errors))
    });
    let stale_after_invalidation_secs = args.stale_after_invalidation.get().map_or(0, |set| {
        if plain_function {
            errors.at(set.keyword, STALE_FOR_PLAIN_FUNCTION);
            return 0;
        }
        let bound = seconds(&set.value, &STALE_AFTER_INVALIDATION, errors);
        if let Ttl::Seconds(ttl) = ttl {
            if ttl > 0 && bound > ttl {
                errors.spanned(
                    &set.value,
                    format_args!(
                        "`stale_after_invalidation = {bound}` is longer than `ttl = {ttl}`: \
                             a route cannot be further behind its writes than the age its \
                             entries may reach; give at most {ttl}"
                    ),
                );
            }
        }
        bound
    });

    CachedSpec {
        verify,
        verify_ignore,
        resource: resource.map(|r| r.value()).unwrap_or_default(),
        browser_ttl_secs,
        stale_while_revalidate_secs,
        stale_after_invalidation_secs,
        ttl,
        tags,
        vary,
        scope: scope(args.scope.get()),
        skip_cache: args.skip_cache.get().is_some_and(|set| set.value.value),
        cache_only_success,
        key,
    }
}

pub(crate) fn invalidates(
    args: InvalidatesArgs,
    function: &ItemFn,
    errors: &mut Errors,
) -> InvalidatesSpec {
    async_function(function, "invalidates", errors);
    not_a_method(
        function,
        "`#[invalidates]` rewrites an axum handler, which cannot take `self`",
        errors,
    );

    if args.resources.is_empty() && args.rejected == 0 {
        errors.at(
            Span::call_site(),
            "`#[invalidates]` needs the resources it invalidates, \
             like `#[invalidates(\"contacts\")]`",
        );
    }
    let mut resources: Vec<String> = Vec::new();
    for literal in &args.resources {
        let Some(name) = resource_name(literal, "resource name", errors) else {
            continue;
        };
        if resources.contains(&name.value()) {
            errors.spanned(
                literal,
                format_args!("resource \"{}\" is listed twice", name.value()),
            );
        } else {
            resources.push(name.value());
        }
    }

    InvalidatesSpec {
        resources,
        scope: scope(args.scope.get()),
    }
}

fn async_function(function: &ItemFn, attribute: &str, errors: &mut Errors) {
    if function.sig.asyncness.is_none() {
        errors.spanned(
            function.sig.fn_token,
            format_args!("`#[{attribute}]` applies to async functions only: write `async fn`"),
        );
    }
}

/// The string literal an option's value must be; `example` shows the option written right.
fn not_a_method(function: &ItemFn, message: &str, errors: &mut Errors) {
    if let Some(FnArg::Receiver(receiver)) = function.sig.inputs.first() {
        errors.spanned(receiver, message);
    }
}

fn string_literal(value: &Expr, example: &str, errors: &mut Errors) -> Option<LitStr> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(literal),
        ..
    }) = value
    {
        return Some(literal.clone());
    }
    match value {
        Expr::Path(path) if path.path.get_ident().is_some() => errors.spanned(
            value,
            format_args!(
                "names are string literals: write `\"{}\"`",
                path.to_token_stream()
            ),
        ),
        _ => errors.spanned(
            value,
            format_args!("expected a string literal, like `{example}`"),
        ),
    }
    None
}

/// Checks a resource (or tag) name against `[a-z0-9_-]+`; returns it when it passes.
fn resource_name(literal: &LitStr, what: &str, errors: &mut Errors) -> Option<LitStr> {
    let name = literal.value();
    if name.is_empty() {
        errors.spanned(
            literal,
            format_args!(
                "{what} is empty: use lowercase letters, digits, `_` and `-`, like \"templates\""
            ),
        );
        return None;
    }
    let mut invalid: Vec<char> = name.chars().filter(|c| !is_name_char(*c)).collect();
    if invalid.is_empty() {
        return Some(literal.clone());
    }
    invalid.dedup();
    let found = invalid
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let suggestion = name.trim().to_lowercase().replace(char::is_whitespace, "_");
    let hint = if suggestion.chars().all(is_name_char) {
        format!("; write \"{suggestion}\"")
    } else {
        String::new()
    };
    errors.spanned(
        literal,
        format_args!(
            "{what} \"{name}\" may contain only lowercase letters, digits, `_` and `-` \
             (found {found}){hint}"
        ),
    );
    None
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// An option whose value is a whole number of seconds, with what to say about it.
struct SecondsOption {
    /// How the option is written, like `ttl = 300`.
    name: &'static str,
    example: u32,
    /// Why 0 is refused, and what to write instead.
    zero: &'static str,
}

const TTL: SecondsOption = SecondsOption {
    name: "ttl",
    example: 300,
    zero: "`ttl = 0` would store entries that are already expired; \
           give at least 1 second, or use `skip_cache` to serve this route uncached",
};

const BROWSER_TTL: SecondsOption = SecondsOption {
    name: "browser_ttl",
    example: 60,
    zero: "`browser_ttl = 0` is what the route does without it: the browser revalidates \
           every time (`Cache-Control: private, no-cache`); leave it out",
};

const STALE_WHILE_REVALIDATE: SecondsOption = SecondsOption {
    name: "stale_while_revalidate",
    example: 60,
    zero: "",
};

const STALE_AFTER_INVALIDATION: SecondsOption = SecondsOption {
    name: "stale_after_invalidation",
    example: 30,
    zero: "`stale_after_invalidation = 0` is what the route does without it: strict \
           read-your-writes after every invalidation; leave it out",
};

const STALE_FOR_PLAIN_FUNCTION: &str =
    "a function cached with `key` is always served fresh: serving stale data while it is \
     recomputed in the background is for HTTP routes";

/// `0` written as a literal, with or without an integer suffix.
fn is_literal_zero(value: &Expr) -> bool {
    matches!(value, Expr::Lit(ExprLit { lit: Lit::Int(literal), .. })
        if literal.base10_digits() == "0" && literal.suffix().is_empty())
}

fn seconds(value: &Expr, option: &SecondsOption, errors: &mut Errors) -> u32 {
    let SecondsOption {
        name,
        example,
        zero,
    } = option;
    let whole = format!("`{name}` is a whole number of seconds, like `{name} = {example}`");
    let literal = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(literal),
            ..
        }) => literal,
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => {
            let hint = match text.value().trim().parse::<u64>() {
                Ok(seconds) => format!(": write `{name} = {seconds}` without quotes"),
                Err(_) => String::new(),
            };
            errors.spanned(value, format_args!("{whole}{hint}"));
            return 0;
        }
        Expr::Lit(_) => {
            errors.spanned(value, whole);
            return 0;
        }
        _ => {
            errors.spanned(
                value,
                format_args!("{whole}; constants and arithmetic are not evaluated here"),
            );
            return 0;
        }
    };
    if !matches!(
        literal.suffix(),
        "" | "u8" | "u16" | "u32" | "u64" | "usize"
    ) {
        errors.spanned(
            literal,
            format_args!(
                "{whole}, without a unit suffix: write `{name} = {}`",
                literal.base10_digits()
            ),
        );
        return 0;
    }
    match literal.base10_parse::<u64>() {
        Ok(0) => {
            errors.spanned(literal, zero);
            0
        }
        Ok(seconds) => u32::try_from(seconds).unwrap_or_else(|_| {
            errors.spanned(
                literal,
                format_args!("`{name}` is too large: at most {} seconds", u32::MAX),
            );
            0
        }),
        Err(error) => {
            errors.push(error);
            0
        }
    }
}

/// No `ttl`: say how to write one, naming the preset constant when the resource is one
/// of the reference's (it is never taken from the name alone: any app may have a
/// resource called `contacts` with data of another lifetime).
fn missing_ttl(resource: &LitStr, errors: &mut Errors) {
    let name = resource.value();
    let message = match PRESET_TTLS.iter().find(|(preset, _, _)| *preset == name) {
        Some((_, constant, seconds)) => format!(
            "missing `ttl`: write `ttl = <seconds>`, or `ttl = cache_runtime::presets::{constant}` \
             for the reference's {seconds} s"
        ),
        None => format!(
            "missing `ttl`: how long entries of \"{name}\" live, like `ttl = 300` \
             (or a constant such as `cache_runtime::presets::CONTACTS`)"
        ),
    };
    errors.spanned(resource, message);
}

fn tags(value: &Expr, errors: &mut Errors) -> Vec<String> {
    let Expr::Array(array) = value else {
        errors.spanned(
            value,
            "`tags` is a list of resource names, like `tags = [\"contacts\", \"messages\"]`",
        );
        return Vec::new();
    };
    let mut tags: Vec<String> = Vec::new();
    for element in &array.elems {
        let Some(tag) = string_literal(element, "tags = [\"contacts\"]", errors)
            .and_then(|literal| resource_name(&literal, "tag", errors))
        else {
            continue;
        };
        if tags.contains(&tag.value()) {
            errors.spanned(
                &tag,
                format_args!("tag \"{}\" is listed twice", tag.value()),
            );
        } else {
            tags.push(tag.value());
        }
    }
    tags
}

/// `verify_ignore = ["generated_at", ...]`: JSON field names, each once.
fn verify_ignore(value: &Expr, errors: &mut Errors) -> Vec<String> {
    const EXAMPLE: &str = "verify_ignore = [\"generated_at\"]";
    let Expr::Array(array) = value else {
        errors.spanned(
            value,
            "`verify_ignore` is a list of JSON field names, like \
             `verify_ignore = [\"generated_at\", \"request_id\"]`",
        );
        return Vec::new();
    };
    let mut fields: Vec<String> = Vec::new();
    for element in &array.elems {
        let Some(field) = string_literal(element, EXAMPLE, errors) else {
            continue;
        };
        if field.value().is_empty() {
            errors.spanned(&field, "a field name cannot be empty");
        } else if fields.contains(&field.value()) {
            errors.spanned(
                &field,
                format_args!("field \"{}\" is listed twice", field.value()),
            );
        } else {
            fields.push(field.value());
        }
    }
    fields
}

fn vary(value: &Expr, errors: &mut Errors) -> Vec<VaryPart> {
    let parts: Vec<&Expr> = match value {
        Expr::Array(array) => array.elems.iter().collect(),
        single => vec![single],
    };
    let mut vary = Vec::new();
    for part in parts {
        let Some(part_value) = vary_part(part, errors) else {
            continue;
        };
        if vary.contains(&part_value) {
            errors.spanned(part, "this `vary` part is listed twice");
        } else {
            vary.push(part_value);
        }
    }
    vary
}

const VARY_PARTS: &str = "the parts are `user` and `header(\"name\")`";

fn vary_part(part: &Expr, errors: &mut Errors) -> Option<VaryPart> {
    match part {
        Expr::Path(path) if path.path.is_ident("user") => Some(VaryPart::User),
        Expr::Call(call) if is_ident(&call.func, "header") => {
            let mut args = call.args.iter();
            match (args.next(), args.next()) {
                (
                    Some(Expr::Lit(ExprLit {
                        lit: Lit::Str(name),
                        ..
                    })),
                    None,
                ) => header_name(name, errors).map(VaryPart::Header),
                _ => {
                    errors.spanned(
                        part,
                        "`header` takes one header name as a string, \
                         like `header(\"accept-language\")`",
                    );
                    None
                }
            }
        }
        _ => {
            errors.spanned(
                part,
                format_args!("unknown `vary` part: {VARY_PARTS}, or a list of them"),
            );
            None
        }
    }
}

fn is_ident(expr: &Expr, name: &str) -> bool {
    matches!(expr, Expr::Path(path) if path.path.is_ident(name))
}

/// A header name made only of HTTP token characters, lower-cased.
fn header_name(literal: &LitStr, errors: &mut Errors) -> Option<String> {
    let name = literal.value();
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_token_char) {
        errors.spanned(
            literal,
            format_args!("{name:?} is not a valid HTTP header name"),
        );
        return None;
    }
    Some(name.to_ascii_lowercase())
}

fn scope(value: Option<Set<Expr>>) -> Scope {
    match value {
        None => Scope::FromRequest,
        Some(set) if is_ident(&set.value, "global") => Scope::Global,
        Some(set) => Scope::Explicit(set.value),
    }
}

fn key_expressions(value: Expr, errors: &mut Errors) -> Vec<Expr> {
    match value {
        Expr::Tuple(tuple) => tuple.elems.into_iter().collect(),
        Expr::Paren(paren) => vec![*paren.expr],
        other => {
            errors.spanned(
                &other,
                "`key` is a tuple of the arguments the result depends on, \
                 like `key = (org_id, query)`",
            );
            Vec::new()
        }
    }
}
