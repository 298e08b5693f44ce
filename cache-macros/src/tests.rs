//! Parsing and validation, checked without a compiler in the loop: which options are
//! accepted, what they mean, and which errors are reported together.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

use crate::errors::Errors;
use crate::parse::{CachedArgs, InvalidatesArgs};
use crate::validate::{self, CachedSpec, InvalidatesSpec, Scope, Ttl, VaryPart};

fn handler() -> ItemFn {
    syn::parse_quote! {
        async fn list(State(db): State<Db>) -> Result<Json<Page>, ApiError> { todo!() }
    }
}

fn cached_with(args: TokenStream, function: &ItemFn) -> Result<CachedSpec, Vec<String>> {
    let mut errors = Errors::default();
    let spec = CachedArgs::parse(args, &mut errors)
        .map(|args| validate::cached(args, function, &mut errors));
    match (spec, errors.finish()) {
        (Ok(spec), Ok(())) => Ok(spec),
        (Ok(_), Err(error)) => Err(messages(error)),
        (Err(syntax), recorded) => {
            let mut all = recorded.err().map(messages).unwrap_or_default();
            all.extend(messages(syntax));
            Err(all)
        }
    }
}

fn cached(args: TokenStream) -> Result<CachedSpec, Vec<String>> {
    cached_with(args, &handler())
}

fn cached_errors(args: TokenStream) -> Vec<String> {
    match cached(args) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors,
    }
}

fn invalidates(args: TokenStream) -> Result<InvalidatesSpec, Vec<String>> {
    let mut errors = Errors::default();
    let spec = InvalidatesArgs::parse(args, &mut errors)
        .map(|args| validate::invalidates(args, &handler(), &mut errors));
    match (spec, errors.finish()) {
        (Ok(spec), Ok(())) => Ok(spec),
        (_, Err(error)) => Err(messages(error)),
        (Err(syntax), Ok(())) => Err(messages(syntax)),
    }
}

fn messages(error: syn::Error) -> Vec<String> {
    error.into_iter().map(|error| error.to_string()).collect()
}

fn assert_one_error_containing(errors: &[String], fragment: &str) {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains(fragment),
        "{:?} lacks {fragment:?}",
        errors[0]
    );
}

fn seconds(spec: &CachedSpec) -> u32 {
    match spec.ttl {
        Ttl::Seconds(seconds) => seconds,
        Ttl::Constant(_) => panic!("a constant TTL"),
    }
}

#[test]
fn a_literal_ttl_and_the_defaults() {
    let spec = cached(quote!(resource = "templates", ttl = 1800)).unwrap();
    assert_eq!(spec.resource, "templates");
    assert_eq!(seconds(&spec), 1800);
    assert!(spec.cache_only_success);
    assert!(!spec.skip_cache);
    assert!(spec.key.is_none());
    assert!(spec.browser_ttl_secs.is_none());
    assert!(matches!(spec.scope, Scope::FromRequest));
}

#[test]
fn a_preset_is_named_never_guessed_from_the_resource() {
    for (resource, constant, ttl) in validate::PRESET_TTLS {
        let errors = cached_errors(quote!(resource = #resource));
        assert_one_error_containing(
            &errors,
            &format!("`ttl = cache_runtime::presets::{constant}` for the reference's {ttl} s"),
        );
    }
    let spec = cached(quote!(
        resource = "contacts",
        ttl = cache_runtime::presets::CONTACTS
    ))
    .unwrap();
    assert!(matches!(spec.ttl, Ttl::Constant(syn::Expr::Path(_))));
    // Constant expressions are the compiler's to evaluate.
    let spec = cached(quote!(resource = "contacts", ttl = 5 * MINUTE)).unwrap();
    assert!(matches!(spec.ttl, Ttl::Constant(syn::Expr::Binary(_))));
}

#[test]
fn browser_ttl_is_seconds() {
    let spec = cached(quote!(resource = "countries", ttl = 3600, browser_ttl = 60)).unwrap();
    assert_eq!(spec.browser_ttl_secs, Some(60));
    for (args, fragment) in [
        (
            quote!(resource = "x", ttl = 60, browser_ttl = 0),
            "`browser_ttl = 0` is what the route does without it",
        ),
        (
            quote!(resource = "x", ttl = 60, browser_ttl = "30"),
            "write `browser_ttl = 30` without quotes",
        ),
        (
            quote!(resource = "x", ttl = 60, browser_ttl = SHORT),
            "constants and arithmetic",
        ),
    ] {
        let errors = cached_errors(args);
        assert_one_error_containing(&errors, fragment);
    }
}

#[test]
fn all_options_together() {
    let spec = cached(quote!(
        resource = "dashboard",
        ttl = 600u32,
        tags = ["contacts", "messages"],
        vary = [user, header("Accept-Language")],
        scope = auth.org_id,
        skip_cache,
        cache_only_success = false,
    ))
    .unwrap();
    assert_eq!(seconds(&spec), 600);
    assert_eq!(spec.tags, ["contacts", "messages"]);
    assert_eq!(
        spec.vary,
        [VaryPart::User, VaryPart::Header("accept-language".into())]
    );
    assert!(spec.varies_by_header());
    assert!(matches!(spec.scope, Scope::Explicit(_)));
    assert!(spec.skip_cache);
    assert!(!spec.cache_only_success);
}

#[test]
fn single_vary_parts_and_flag_values() {
    let spec = cached(quote!(
        resource = "contacts",
        ttl = 300,
        vary = user,
        skip_cache = false
    ))
    .unwrap();
    assert_eq!(spec.vary, [VaryPart::User]);
    assert!(!spec.varies_by_header());
    assert!(!spec.skip_cache);

    let spec = cached(quote!(
        resource = "contacts",
        ttl = 300,
        vary = header("x-client")
    ))
    .unwrap();
    assert_eq!(spec.vary, [VaryPart::Header("x-client".into())]);
}

#[test]
fn scope_global_is_a_keyword_and_anything_else_an_expression() {
    let spec = cached(quote!(resource = "contacts", ttl = 300, scope = global)).unwrap();
    assert!(matches!(spec.scope, Scope::Global));
    let spec = cached(quote!(resource = "contacts", ttl = 300, scope = org.global)).unwrap();
    assert!(matches!(spec.scope, Scope::Explicit(_)));
}

#[test]
fn key_selects_a_plain_function() {
    let spec = cached(quote!(
        resource = "contacts",
        ttl = 300,
        key = (org_id, query),
        scope = org_id
    ))
    .unwrap();
    assert_eq!(spec.key.map(|key| key.len()), Some(2));
    let spec = cached(quote!(
        resource = "contacts",
        ttl = 300,
        key = (org_id),
        scope = global
    ))
    .unwrap();
    assert_eq!(spec.key.map(|key| key.len()), Some(1));
    let spec = cached(quote!(
        resource = "contacts",
        ttl = 300,
        key = (),
        scope = global
    ))
    .unwrap();
    assert_eq!(spec.key.map(|key| key.len()), Some(0));
}

#[test]
fn key_needs_scope() {
    let errors = cached_errors(quote!(resource = "contacts", ttl = 300, key = (org_id)));
    assert_one_error_containing(&errors, "needs `scope`");
}

#[test]
fn key_must_be_a_tuple() {
    let errors = cached_errors(quote!(
        resource = "contacts",
        ttl = 300,
        key = org_id,
        scope = global
    ));
    assert_one_error_containing(&errors, "`key` is a tuple");
}

#[test]
fn plain_functions_reject_request_options() {
    let errors = cached_errors(quote!(
        resource = "contacts",
        ttl = 300,
        key = (),
        scope = global,
        vary = user,
        cache_only_success = false
    ));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("`vary` reads the request"));
    assert!(errors[1].contains("`cache_only_success`"));
}

#[test]
fn unknown_options_list_the_valid_ones() {
    let errors = cached_errors(quote!(resource = "contacts", ttl = 300, ttl_secs = 30));
    assert_one_error_containing(&errors, "unknown option `ttl_secs`");
    assert!(errors[0].contains("`resource`, `ttl`, `tags`, `vary`, `scope`"));
}

#[test]
fn every_error_is_reported_at_once() {
    let errors = cached_errors(quote!(
        ttl = 0,
        colour = "blue",
        ttl = 30,
        tags = ["Contacts"],
        vary = tenant
    ));
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert!(errors[0].contains("unknown option `colour`"));
    assert!(errors[1].contains("`ttl` is given twice"));
    assert!(errors[2].contains("missing `resource"));
    assert!(errors[3].contains("`ttl = 0`"));
    assert!(errors[4].contains("write \"contacts\""));
    assert!(errors[5].contains("unknown `vary` part"));
}

#[test]
fn a_missing_comma_is_a_syntax_error() {
    let errors = cached_errors(quote!(resource = "contacts" ttl = 30));
    assert_one_error_containing(&errors, "expected `,`");
}

#[test]
fn a_bare_string_is_not_an_option() {
    let errors = cached_errors(quote!("contacts"));
    assert_one_error_containing(&errors, "expected one of");
}

#[test]
fn resource_names_are_checked() {
    let errors = cached_errors(quote!(resource = ""));
    assert_one_error_containing(&errors, "resource name is empty");
    let errors = cached_errors(quote!(resource = "Contacts"));
    assert_one_error_containing(&errors, "found 'C'); write \"contacts\"");
    let errors = cached_errors(quote!(resource = "my contacts!"));
    assert_one_error_containing(&errors, "(found ' ', '!')");
    let errors = cached_errors(quote!(resource = "Message Templates"));
    assert_one_error_containing(
        &errors,
        "(found 'M', ' ', 'T'); write \"message_templates\"",
    );
    let errors = cached_errors(quote!(resource = contacts));
    assert_one_error_containing(&errors, "write `\"contacts\"`");
}

#[test]
fn ttl_is_a_positive_integer_literal() {
    for (args, fragment) in [
        (quote!(resource = "x", ttl = 0), "`ttl = 0`"),
        (
            quote!(resource = "x", ttl = "30"),
            "write `ttl = 30` without quotes",
        ),
        (quote!(resource = "x", ttl = 1.5), "whole number of seconds"),
        (
            quote!(resource = "x", ttl = 30s),
            "without a unit suffix: write `ttl = 30`",
        ),
        (quote!(resource = "x", ttl = 4294967296), "too large"),
    ] {
        let errors = cached_errors(args);
        assert_one_error_containing(&errors, fragment);
    }
}

#[test]
fn a_resource_without_ttl_is_an_error() {
    let errors = cached_errors(quote!(resource = "widgets"));
    assert_one_error_containing(
        &errors,
        "missing `ttl`: how long entries of \"widgets\" live",
    );
}

#[test]
fn tags_and_vary_reject_duplicates_and_bad_parts() {
    let errors = cached_errors(quote!(resource = "contacts", ttl = 300, tags = ["a", "a"]));
    assert_one_error_containing(&errors, "tag \"a\" is listed twice");
    let errors = cached_errors(quote!(resource = "contacts", ttl = 300, tags = "a"));
    assert_one_error_containing(&errors, "`tags` is a list");
    let errors = cached_errors(quote!(
        resource = "contacts",
        ttl = 300,
        vary = [user, user]
    ));
    assert_one_error_containing(&errors, "listed twice");
    let errors = cached_errors(quote!(
        resource = "contacts",
        ttl = 300,
        vary = header("accept language")
    ));
    assert_one_error_containing(&errors, "not a valid HTTP header name");
    let errors = cached_errors(quote!(resource = "contacts", ttl = 300, vary = header()));
    assert_one_error_containing(&errors, "`header` takes one header name");
    let errors = cached_errors(quote!(
        resource = "contacts",
        ttl = 300,
        vary = cookie("session")
    ));
    assert_one_error_containing(&errors, "unknown `vary` part");
}

#[test]
fn the_function_must_be_async_and_not_a_method() {
    let function: ItemFn = syn::parse_quote!(
        fn list() -> u32 {
            1
        }
    );
    let errors = cached_with(quote!(resource = "contacts", ttl = 300), &function)
        .err()
        .unwrap();
    assert_one_error_containing(&errors, "applies to async functions only");

    let method: ItemFn = syn::parse_quote!(
        async fn list(&self) -> u32 {
            1
        }
    );
    let errors = cached_with(quote!(resource = "contacts", ttl = 300), &method)
        .err()
        .unwrap();
    assert_one_error_containing(&errors, "cannot take `self`");
    assert!(cached_with(
        quote!(resource = "contacts", ttl = 300, key = (), scope = global),
        &method
    )
    .is_ok());
}

#[test]
fn invalidates_takes_resource_names_and_a_scope() {
    let spec = invalidates(quote!("contacts", "analytics")).unwrap();
    assert_eq!(spec.resources, ["contacts", "analytics"]);
    assert!(matches!(spec.scope, Scope::FromRequest));
    let spec = invalidates(quote!("contacts", scope = global)).unwrap();
    assert!(matches!(spec.scope, Scope::Global));
    let spec = invalidates(quote!("contacts", scope = auth.org_id,)).unwrap();
    assert!(matches!(spec.scope, Scope::Explicit(_)));
}

#[test]
fn invalidates_errors() {
    let errors = invalidates(quote!()).err().unwrap();
    assert_one_error_containing(&errors, "needs the resources it invalidates");
    let errors = invalidates(quote!(scope = global)).err().unwrap();
    assert_one_error_containing(&errors, "needs the resources it invalidates");
    let errors = invalidates(quote!(contacts)).err().unwrap();
    assert_one_error_containing(&errors, "write `\"contacts\"`");
    let errors = invalidates(quote!(resource = "contacts")).err().unwrap();
    assert_one_error_containing(&errors, "write `#[invalidates(\"contacts\")]`");
    let errors = invalidates(quote!(42)).err().unwrap();
    assert_one_error_containing(&errors, "expected a resource name as a string literal");
    let errors = invalidates(quote!("contacts", "contacts")).err().unwrap();
    assert_one_error_containing(&errors, "listed twice");
    let errors = invalidates(quote!("Contacts", "")).err().unwrap();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let errors = invalidates(quote!("contacts" "analytics")).err().unwrap();
    assert_one_error_containing(&errors, "expected `,`");
}
