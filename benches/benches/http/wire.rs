//! The bytes the HTTP benchmarks' clients send and how they read a response's head, as
//! wrk does (`http`'s load generator, `hit_profile --http`'s client): a request written
//! as fixed bytes, the head scanned for its status, `Content-Length` and `X-Cache`,
//! nothing parsed into a header map.

/// A keep-alive `GET` of `path`, with `headers` after `Host`.
pub fn request_bytes(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// What the head of one response says: its length, the body's, and whether it was a hit.
pub struct Head {
    pub head_len: usize,
    pub content_length: usize,
    pub hit: bool,
}

/// Scans a complete response head (`buf[..end]`, `end` past its blank line), as wrk's
/// parser does: the status must be 200; `Content-Length` and `X-Cache` are read.
pub fn scan_head(buf: &[u8], end: usize) -> Head {
    let mut lines = buf[..end].split(|&b| b == b'\n');
    let status = lines.next().unwrap_or_default();
    assert!(
        status.starts_with(b"HTTP/1.1 200 "),
        "status line {status:?}"
    );
    let (mut content_length, mut hit) = (None, false);
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"x-cache") {
            hit = value == b"HIT";
        }
    }
    Head {
        head_len: end,
        content_length: content_length.expect("every route sends Content-Length"),
        hit,
    }
}
