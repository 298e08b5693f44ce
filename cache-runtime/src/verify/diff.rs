//! Comparing a stored response with a fresh one: status, content type and body. A JSON
//! body is compared structurally (key order and whitespace do not matter) and the first
//! differing path is named (`$.items[3].name`), skipping object fields the route names
//! in `verify_ignore`; any other body is compared byte for byte (sizes and the first
//! differing offset). The description never contains a value of either body: it is
//! logged, and bodies hold tenants' data.

use http::header;
use serde_json::Value;

use crate::entry::CachedResponse;

/// How `fresh` differs from `stored`, or `None` when they are the same response for
/// the purpose of verification (`ignore`d JSON fields aside).
pub(crate) fn describe(
    stored: &CachedResponse,
    fresh: &CachedResponse,
    ignore: &[&str],
) -> Option<String> {
    if stored.status != fresh.status {
        return Some(format!(
            "status {} (stored) vs {} (fresh)",
            stored.status.as_u16(),
            fresh.status.as_u16()
        ));
    }
    let (stored_type, fresh_type) = (content_type(stored), content_type(fresh));
    if stored_type != fresh_type {
        return Some(format!(
            "content-type {} (stored) vs {} (fresh)",
            stored_type.unwrap_or("none"),
            fresh_type.unwrap_or("none")
        ));
    }
    if stored.body == fresh.body {
        return None;
    }
    let json = stored_type.is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    if json {
        if let (Ok(a), Ok(b)) = (
            serde_json::from_slice::<Value>(&stored.body),
            serde_json::from_slice::<Value>(&fresh.body),
        ) {
            let mut path = String::from("$");
            return json_difference(&a, &b, ignore, &mut path);
        }
    }
    Some(byte_difference(&stored.body, &fresh.body))
}

fn content_type(response: &CachedResponse) -> Option<&str> {
    response
        .headers
        .iter()
        .find(|(name, _)| name == header::CONTENT_TYPE)
        .and_then(|(_, value)| value.to_str().ok())
}

/// Sizes and the first offset at which two bodies differ.
fn byte_difference(stored: &[u8], fresh: &[u8]) -> String {
    let first = stored
        .iter()
        .zip(fresh)
        .position(|(a, b)| a != b)
        .unwrap_or(stored.len().min(fresh.len()));
    format!(
        "body {} bytes (stored) vs {} bytes (fresh), first difference at byte {first}",
        stored.len(),
        fresh.len()
    )
}

/// The first difference between two JSON values, depth first in document order, as a
/// path and what differs there (never the values).
fn json_difference(
    stored: &Value,
    fresh: &Value,
    ignore: &[&str],
    path: &mut String,
) -> Option<String> {
    match (stored, fresh) {
        (Value::Object(a), Value::Object(b)) => {
            for (name, value) in a {
                if ignore.contains(&name.as_str()) {
                    continue;
                }
                let len = path.len();
                push_field(path, name);
                let found = match b.get(name) {
                    Some(other) => json_difference(value, other, ignore, path),
                    None => Some(format!("{path}: only in the stored response")),
                };
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            b.keys()
                .find(|name| !ignore.contains(&name.as_str()) && !a.contains_key(*name))
                .map(|name| {
                    push_field(path, name);
                    format!("{path}: only in the fresh response")
                })
        }
        (Value::Array(a), Value::Array(b)) => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                let found = json_difference(x, y, ignore, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            (a.len() != b.len()).then(|| {
                format!(
                    "{path}: {} items (stored) vs {} items (fresh)",
                    a.len(),
                    b.len()
                )
            })
        }
        (a, b) if std::mem::discriminant(a) != std::mem::discriminant(b) => Some(format!(
            "{path}: {} (stored) vs {} (fresh)",
            kind(a),
            kind(b)
        )),
        (a, b) => (a != b).then(|| format!("{path}: {} differs", kind(a))),
    }
}

/// `.name` when `name` reads as an identifier, else `["name"]`.
fn push_field(path: &mut String, name: &str) {
    let plain = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        path.push('.');
        path.push_str(name);
    } else {
        path.push('[');
        path.push_str(&Value::String(name.to_owned()).to_string());
        path.push(']');
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

    fn json(body: &str) -> CachedResponse {
        CachedResponse {
            status: StatusCode::OK,
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: body.to_owned().into(),
        }
    }

    #[test]
    fn names_the_first_differing_json_path_without_values() {
        let stored = json(r#"{"total":4,"items":[{"id":1,"name":"a"},{"id":2,"name":"secret"}]}"#);
        let fresh = json(r#"{"items":[{"name":"a","id":1},{"id":2,"name":"other"}],"total":4}"#);
        let found = describe(&stored, &fresh, &[]).unwrap();
        assert_eq!(found, "$.items[1].name: string differs");
        assert!(!found.contains("secret") && !found.contains("other"));
        // Same document, other key order and spacing: no difference.
        let reordered =
            json(r#"{ "items": [{"name":"a","id":1},{"id":2,"name":"secret"}], "total": 4 }"#);
        assert_eq!(describe(&stored, &reordered, &[]), None);
    }

    #[test]
    fn reports_lengths_missing_fields_kinds_and_odd_names() {
        assert_eq!(
            describe(&json(r#"[1,2]"#), &json(r#"[1,2,3]"#), &[]).unwrap(),
            "$: 2 items (stored) vs 3 items (fresh)"
        );
        assert_eq!(
            describe(&json(r#"{"a":1}"#), &json(r#"{"a":1,"b c":2}"#), &[]).unwrap(),
            r#"$["b c"]: only in the fresh response"#
        );
        assert_eq!(
            describe(&json(r#"{"a":1}"#), &json(r#"{"a":"1"}"#), &[]).unwrap(),
            "$.a: number (stored) vs string (fresh)"
        );
    }

    #[test]
    fn ignores_named_fields_at_any_depth() {
        let stored = json(r#"{"generated_at":"t1","data":{"generated_at":"t1","n":1}}"#);
        let fresh = json(r#"{"generated_at":"t2","data":{"generated_at":"t9","n":1}}"#);
        assert_eq!(describe(&stored, &fresh, &["generated_at"]), None);
        assert!(describe(&stored, &fresh, &[]).is_some());
    }

    #[test]
    fn other_bodies_give_sizes_and_first_byte() {
        let text = |body: &'static str| CachedResponse::ok(body);
        assert_eq!(
            describe(&text("hello world"), &text("hello there!"), &[]).unwrap(),
            "body 11 bytes (stored) vs 12 bytes (fresh), first difference at byte 6"
        );
        assert_eq!(
            describe(&text("abc"), &text("abcd"), &[]).unwrap(),
            "body 3 bytes (stored) vs 4 bytes (fresh), first difference at byte 3"
        );
        let mut gone = text("abc");
        gone.status = StatusCode::NOT_FOUND;
        assert_eq!(
            describe(&text("abc"), &gone, &[]).unwrap(),
            "status 200 (stored) vs 404 (fresh)"
        );
    }
}
