//! The code the attributes generate from a validated spec.
//!
//! A handler keeps its attributes, visibility, name, generics and arguments as written (the
//! tokens are re-emitted with their spans); it gains a `RequestContext` extractor in front and
//! returns the runtime's `Response`. Its body becomes a future that the runtime polls only on
//! a miss. Generated code names the runtime only through `::cache_runtime::__private`, and its
//! locals start with `__cache_` so they never shadow the user's bindings.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{parse_quote, AttrStyle, Attribute, Expr, FnArg, ItemFn, ReturnType, Signature, Type};

use crate::validate::{CachedSpec, InvalidatesSpec, Scope, Ttl, VaryPart};

/// `#[cached]`: a handler served through the cache, or a plain function cached by `key`.
pub(crate) fn cached(spec: &CachedSpec, function: ItemFn, fingerprint: &str) -> TokenStream {
    let name = function_name(&function);
    let resource = spec.resource.as_str();
    // Declared once as a constant of the function, so a constant expression (a preset)
    // is type-checked as seconds and refused at compile time when it is 0.
    let ttl_const = match &spec.ttl {
        Ttl::Seconds(seconds) => {
            let seconds = Literal::u32_unsuffixed(*seconds);
            quote!(const __CACHE_TTL_SECS: u32 = #seconds;)
        }
        Ttl::Constant(expr) => quote_spanned! {expr.span()=>
            const __CACHE_TTL_SECS: u32 = #expr;
            const _: () = ::core::assert!(
                __CACHE_TTL_SECS > 0,
                "`ttl` is 0: entries would be stored already expired; give at least 1 second"
            );
        },
    };
    let ttl_secs = quote!(__CACHE_TTL_SECS);
    // Evaluated in the static's initializer, so at compile time: no work per request.
    // Without `browser_ttl` the browser keeps a copy but must ask before showing it
    // (answered with a 304 when nothing changed): a `max-age` would let it show its own
    // copy after its own write to another URL, which it does not know is related.
    let cache_control = match spec.browser_ttl_secs {
        Some(seconds) => format!("private, max-age={seconds}"),
        None => "private, no-cache".to_owned(),
    };
    let tags = &spec.tags;
    let vary = spec.vary.iter().map(|part| match part {
        VaryPart::User => quote!(::cache_runtime::__private::VaryPart::User),
        VaryPart::Header(header) => quote!(::cache_runtime::__private::VaryPart::Header(#header)),
    });
    let cache_only_success = spec.cache_only_success;
    let skip_cache = spec.skip_cache;
    let verify = spec.verify;
    let verify_ignore = &spec.verify_ignore;
    // The default grace is half the TTL: an entry nothing invalidated is served at most
    // 1.5 TTLs old, never more, and a popular one rarely makes anyone wait.
    let stale_while_revalidate = match spec.stale_while_revalidate_secs {
        Some(seconds) => {
            let seconds = Literal::u32_unsuffixed(seconds);
            quote!(#seconds)
        }
        None if spec.key.is_some() => quote!(0),
        None => quote!(#ttl_secs / 2),
    };
    let stale_after_invalidation = Literal::u32_unsuffixed(spec.stale_after_invalidation_secs);
    let scope = scope(&spec.scope);
    let declarations = quote! {
        #ttl_const
        static __CACHE_SPEC: ::cache_runtime::__private::RouteSpec =
            ::cache_runtime::__private::RouteSpec {
                resource: #resource,
                ttl_secs: #ttl_secs,
                stale_while_revalidate_secs: #stale_while_revalidate,
                stale_after_invalidation_secs: #stale_after_invalidation,
                cache_control: ::cache_runtime::__private::HeaderValue::from_static(#cache_control),
                tags: &[#(#tags),*],
                vary: &[#(#vary),*],
                fingerprint: ::core::concat!(#fingerprint, "-", ::core::env!("CARGO_PKG_VERSION")),
                cache_only_success: #cache_only_success,
                skip_cache: #skip_cache,
                verify: #verify,
                verify_ignore: &[#(#verify_ignore),*],
                function: #name,
            };
        ::cache_runtime::__private::inventory::submit! {
            ::cache_runtime::__private::Registration::Cached {
                resource: #resource,
                tags: &[#(#tags),*],
                ttl_secs: #ttl_secs,
                stale_after_invalidation_secs: #stale_after_invalidation,
                function: #name,
            }
        }
        let __cache_scope = #scope;
    };

    let parts = FunctionParts::new(function);
    match &spec.key {
        Some(key) => plain_function(parts, declarations, key),
        None => {
            // A route that varies by headers takes the lines of those alone, found by a
            // mask of their names computed at compile time, not a copy of every header.
            let headers_extractor = spec.varies_by_header().then(|| {
                let varied = spec.vary_headers();
                quote! {
                    ::cache_runtime::__private::VaryHeaders<
                        { ::cache_runtime::__private::vary_mask(&[#(#varied),*]) }
                    >
                }
            });
            let headers = if headers_extractor.is_some() {
                quote!(::core::option::Option::Some(__cache_headers.into_headers()))
            } else {
                quote!(::core::option::Option::None)
            };
            let run = quote! {
                ::cache_runtime::__private::serve_cached(
                    __cache_request,
                    #headers,
                    &__CACHE_SPEC,
                    __cache_scope,
                    __cache_handler,
                )
                .await
            };
            handler(parts, declarations, run, headers_extractor)
        }
    }
}

/// `#[invalidates]`: a handler whose success invalidates resources before it responds.
pub(crate) fn invalidates(spec: &InvalidatesSpec, function: ItemFn) -> TokenStream {
    let name = function_name(&function);
    let resources = &spec.resources;
    let scope = scope(&spec.scope);
    let declarations = quote! {
        static __CACHE_INVALIDATION: ::cache_runtime::__private::InvalidationSpec =
            ::cache_runtime::__private::InvalidationSpec {
                resources: &[#(#resources),*],
                function: #name,
            };
        ::cache_runtime::__private::inventory::submit! {
            ::cache_runtime::__private::Registration::Invalidates {
                resources: &[#(#resources),*],
                function: #name,
            }
        }
        let __cache_scope = #scope;
    };
    let run = quote! {
        ::cache_runtime::__private::serve_invalidating(
            __cache_request,
            &__CACHE_INVALIDATION,
            __cache_scope,
            __cache_handler,
        )
        .await
    };
    handler(FunctionParts::new(function), declarations, run, None)
}

/// A function taken apart: what is re-emitted as written, and the body to wrap.
struct FunctionParts {
    outer_attrs: Vec<Attribute>,
    inner_attrs: Vec<Attribute>,
    vis: syn::Visibility,
    sig: Signature,
    body: Vec<syn::Stmt>,
}

impl FunctionParts {
    fn new(function: ItemFn) -> Self {
        let (outer_attrs, inner_attrs) = function
            .attrs
            .into_iter()
            .partition(|attr| matches!(attr.style, AttrStyle::Outer));
        FunctionParts {
            outer_attrs,
            inner_attrs,
            vis: function.vis,
            sig: function.sig,
            body: function.block.stmts,
        }
    }

    /// The body as an async block whose output is the written return type, so that
    /// `return` and `?` inside it mean what they meant in the function.
    fn body_future(&self, capture: TokenStream) -> TokenStream {
        let return_edge = fake_return_edge(&self.sig.output);
        let body = &self.body;
        quote!(async #capture { #return_edge #(#body)* })
    }
}

/// The handler form: request extractors in front (`headers_extractor`, the type of
/// `__cache_headers`, second when the route varies by headers), `Response` out, the body
/// run by `run`.
fn handler(
    parts: FunctionParts,
    declarations: TokenStream,
    run: TokenStream,
    headers_extractor: Option<TokenStream>,
) -> TokenStream {
    let body = parts.body_future(quote!(move));
    let to_output = handler_output(&parts.sig.output);
    let FunctionParts {
        outer_attrs,
        inner_attrs,
        vis,
        mut sig,
        ..
    } = parts;

    // In front: extractors of request parts may come in any order, the body extractor must
    // stay last. (`validate` has rejected `self`, which no handler can take.)
    let request: FnArg = parse_quote!(__cache_request: ::cache_runtime::__private::RequestContext);
    sig.inputs.insert(0, request);
    if let Some(extractor) = headers_extractor {
        let headers: FnArg = parse_quote!(__cache_headers: #extractor);
        sig.inputs.insert(1, headers);
    }
    sig.output = parse_quote!(-> ::cache_runtime::__private::Response);

    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #declarations
            // A closure: a cached hit never makes the handler's future.
            let __cache_handler = move || async move {
                let __cache_output = #body.await;
                #to_output
            };
            #run
        }
    }
}

/// The plain-function form: the signature as written, the body cached under `key`.
fn plain_function(parts: FunctionParts, declarations: TokenStream, key: &[Expr]) -> TokenStream {
    // The key is encoded (owned) before the body runs, so the body may consume the
    // arguments the key was made of.
    let body = parts.body_future(quote!(move));
    let cache = if returns_result(&parts.sig.output) {
        quote!(::cache_runtime::__private::cached_result)
    } else {
        quote!(::cache_runtime::__private::cached_value)
    };
    let FunctionParts {
        outer_attrs,
        inner_attrs,
        vis,
        sig,
        ..
    } = parts;
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #declarations
            let __cache_key = ::cache_runtime::__private::encode_key(&(#(&(#key),)*));
            #cache(&__CACHE_SPEC, __cache_scope, __cache_key, #body).await
        }
    }
}

/// `concat!(module_path!(), "::", "name")`: the function's path, for logs and the registry.
fn function_name(function: &ItemFn) -> TokenStream {
    let name = function.sig.ident.to_string();
    let name = name.trim_start_matches("r#");
    quote!(::core::concat!(::core::module_path!(), "::", #name))
}

fn scope(scope: &Scope) -> TokenStream {
    match scope {
        Scope::FromRequest => quote!(::cache_runtime::__private::ScopeArg::FromRequest),
        Scope::Global => quote!(::cache_runtime::__private::ScopeArg::Global),
        Scope::Explicit(expr) => {
            quote_spanned!(expr.span()=> ::cache_runtime::__private::explicit_scope(&(#expr)))
        }
    }
}

/// How the handler's value becomes a `HandlerOutput`: `Err` is told apart from a non-2xx
/// `Ok` only when the written type is a `Result`. Spanned at the return type, so an output
/// that is not a response is reported there.
fn handler_output(output: &ReturnType) -> TokenStream {
    let span = match output {
        ReturnType::Default => proc_macro2::Span::call_site(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    if returns_result(output) {
        quote_spanned!(span=> ::cache_runtime::__private::HandlerOutput::from_result(__cache_output))
    } else {
        quote_spanned!(span=> ::cache_runtime::__private::HandlerOutput::from_response(__cache_output))
    }
}

/// `true` when the written return type is a path ending in `Result` (`Result<T, E>`,
/// `std::result::Result<T, E>`). An alias such as `ApiResult<T>` is served as a response,
/// which is still correct: its status tells success from failure.
fn returns_result(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let mut ty = &**ty;
    while let Type::Paren(syn::TypeParen { elem, .. }) | Type::Group(syn::TypeGroup { elem, .. }) =
        ty
    {
        ty = elem;
    }
    matches!(ty, Type::Path(path)
        if path.qself.is_none()
            && path.path.segments.last().is_some_and(|last| last.ident == "Result"))
}

/// An unreachable `return` of the written return type at the start of the body, so the
/// async block's output type is known before the body is checked: `?` and `return` infer
/// as they did in the function, and a mismatch is reported at the return type.
/// `impl Trait` cannot be named in a `let`, so it becomes `_`.
fn fake_return_edge(output: &ReturnType) -> TokenStream {
    let (span, ty) = match output {
        ReturnType::Default => (proc_macro2::Span::call_site(), quote!(())),
        ReturnType::Type(_, ty) => {
            let mut ty = (**ty).clone();
            ImplTraitToInfer.visit_type_mut(&mut ty);
            if matches!(ty, Type::Infer(_)) {
                return TokenStream::new();
            }
            (ty.span(), ty.into_token_stream())
        }
    };
    quote_spanned! {span=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::let_with_type_underscore,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let __cache_return: #ty = loop {};
            return __cache_return;
        }
    }
}

struct ImplTraitToInfer;

impl VisitMut for ImplTraitToInfer {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(impl_trait) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                underscore_token: syn::Token![_](impl_trait.impl_token.span),
            });
        } else {
            syn::visit_mut::visit_type_mut(self, ty);
        }
    }
}
