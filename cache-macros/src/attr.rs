//! The "set at most once" holder every option of an attribute goes through.

use proc_macro2::Span;

use crate::errors::Errors;

/// One option of an attribute: unset, or set once with the span of its keyword.
///
/// Setting it a second time records a "given twice" error at the second keyword and keeps the
/// first value, so later checks still see a sensible value.
pub(crate) struct Attr<T> {
    name: &'static str,
    value: Option<Set<T>>,
}

/// A value as written, with the keyword that introduced it (where errors about it point).
pub(crate) struct Set<T> {
    pub(crate) keyword: Span,
    pub(crate) value: T,
}

impl<T> Attr<T> {
    pub(crate) fn none(name: &'static str) -> Self {
        Attr { name, value: None }
    }

    pub(crate) fn set(&mut self, errors: &mut Errors, keyword: Span, value: T) {
        if self.value.is_some() {
            errors.at(
                keyword,
                format_args!("option `{}` is given twice; keep only one", self.name),
            );
        } else {
            self.value = Some(Set { keyword, value });
        }
    }

    pub(crate) fn get(self) -> Option<Set<T>> {
        self.value
    }

    pub(crate) fn is_set(&self) -> bool {
        self.value.is_some()
    }
}
