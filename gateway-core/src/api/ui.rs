//! Serves the built web UI (static files from `ui/dist`) at every path outside `/api/`, with a
//! Content-Security-Policy that allows nothing but this origin. The UI is a single page with hash
//! routes, so no path needs rewriting. Without a built UI, `/` says how to build it.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;
use tower_http::services::ServeDir;

/// Scripts and styles from this origin only; the live WebSocket back to it; no framing.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
                   connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The UI directory: the configured one, else the first candidate that has an `index.html`.
pub fn locate(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = configured {
        return Some(dir.to_path_buf());
    }
    let exe_dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    [exe_dir.join("../../ui/dist"), exe_dir.join("../share/gatehouse/ui"), PathBuf::from("/usr/share/gatehouse/ui")]
        .into_iter()
        .find(|dir| dir.join("index.html").is_file())
}

pub async fn serve(dir: Option<PathBuf>, request: Request<Body>) -> Response {
    let Some(dir) = dir else {
        return (
            StatusCode::OK,
            "Gatehouse is running, but its web UI is not built.\n\nBuild it with `make run` (or `cd ui && npm ci && \
             npm run build`), or pass --ui-dir.\nAPI: GET /api/health, /api/devices, WebSocket /api/live; see docs/api.md\n",
        )
            .into_response();
    };
    // No file has a name longer than NAME_MAX (255 bytes); ServeDir would answer 500 for one.
    let names_no_file = request.uri().path().split('/').any(|segment| segment.len() > 255);
    let mut response = match names_no_file {
        true => StatusCode::NOT_FOUND.into_response(),
        false => match ServeDir::new(&dir).oneshot(request).await {
            Ok(response) => response.into_response(),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the UI: {error}")).into_response(),
        },
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_path_that_names_no_file_is_not_found() {
        // Found by fuzzing (fuzz/regressions/http_api): a path segment longer than a file name can
        // be got a 500 ("file name too long") instead of a 404.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        let get = |path: String| Request::get(path).body(Body::empty()).unwrap();
        let ui = Some(dir.path().to_path_buf());
        assert_eq!(serve(ui.clone(), get("/index.html".into())).await.status(), StatusCode::OK);
        for path in [format!("/index.htm{}", "Y".repeat(300)), format!("/assets/{}/x.js", "a".repeat(256))] {
            let response = serve(ui.clone(), get(path)).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            assert!(response.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        }
        assert_eq!(serve(ui, get(format!("/{}", "a".repeat(255)))).await.status(), StatusCode::NOT_FOUND);
    }
}
