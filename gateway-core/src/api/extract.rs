//! axum's extractors with the API's JSON errors. axum's own rejections (a path id that is not a
//! number or not UTF-8, a malformed query, a body over the limit) answer in plain text, and
//! docs/api.md promises JSON for every answer; handlers use these in place of
//! `axum::extract::{Path, Query}` and `axum::body::Bytes`, with the same fields.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

/// `axum::extract::Path`, refusing with `invalid_path`.
pub struct Path<T>(pub T);

/// `axum::extract::Query`, refusing with `invalid_query`.
pub struct Query<T>(pub T);

/// The whole body (`axum::body::Bytes`), refusing with `too_large` (413) or `invalid_body`.
pub struct RawBody(pub axum::body::Bytes);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Ok(RawBody(axum::body::Bytes::from_request(request, state).await?))
    }
}

/// axum's message, in the API's shape with axum's status.
fn rejected(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError { status, code, message }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        rejected(rejection.status(), "invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        rejected(rejection.status(), "invalid_query", rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "invalid_body" };
        rejected(rejection.status(), code, rejection.body_text())
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(rejection: WebSocketUpgradeRejection) -> ApiError {
        rejected(rejection.status(), "websocket_required", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt as _;

    /// Every rejection of these extractors is a JSON error with axum's status and a code.
    #[tokio::test]
    async fn rejections_are_json_errors() {
        let app = Router::new()
            .route("/number/{id}", get(|Path(id): Path<i64>| async move { id.to_string() }))
            .route("/text/{id}", get(|Path(id): Path<String>| async move { id }))
            .route(
                "/query",
                get(|Query(q): Query<std::collections::HashMap<String, u8>>| async move { format!("{q:?}") }),
            )
            .route("/body", post(|RawBody(body): RawBody| async move { body.len().to_string() }))
            .layer(axum::extract::DefaultBodyLimit::max(16));
        let cases = [
            ("GET", "/number/42", "", 200, None),
            ("GET", "/number/abc", "", 400, Some("invalid_path")),
            ("GET", "/number/99999999999999999999", "", 400, Some("invalid_path")),
            ("GET", "/text/%FF", "", 400, Some("invalid_path")),
            ("GET", "/text/ok", "", 200, None),
            ("GET", "/query?a=1", "", 200, None),
            ("GET", "/query?a=x", "", 400, Some("invalid_query")),
            ("POST", "/body", "sixteen bytes...", 200, None),
            ("POST", "/body", "seventeen bytes..", 413, Some("too_large")),
        ];
        for (method, uri, body, status, code) in cases {
            let request = Request::builder().method(method).uri(uri).body(Body::from(body)).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{method} {uri}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            if let Some(code) = code {
                let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
                assert_eq!(json["error"]["code"], code, "{method} {uri}: {json}");
                assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
            }
        }
    }
}
