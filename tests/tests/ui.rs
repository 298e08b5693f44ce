//! Compile-time behaviour of `#[cached]` and `#[invalidates]`: the accepted forms still
//! build axum routers, and each mistake is a compile error at the offending token.
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite`, then read them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
