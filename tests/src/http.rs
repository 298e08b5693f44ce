//! Driving an axum `Router` in-process (tower `oneshot`), and reading what a client sees.

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// What a client received.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body bytes.
    pub body: bytes::Bytes,
}

impl Reply {
    /// The `X-Cache` header, or "" when absent.
    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }

    /// A header as text, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Sends one request through the router.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("infallible router");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET with an optional bearer-less tenant header `x-tenant` (read by test routers).
pub fn get(uri: &str, tenant: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some(tenant) = tenant {
        builder = builder.header("x-tenant", tenant);
    }
    builder.body(Body::empty()).expect("request")
}

/// A POST with a JSON body.
pub fn post(uri: &str, tenant: Option<&str>, json: serde_json::Value) -> Request<Body> {
    let mut builder = Request::post(uri).header("content-type", "application/json");
    if let Some(tenant) = tenant {
        builder = builder.header("x-tenant", tenant);
    }
    builder.body(Body::from(json.to_string())).expect("request")
}
