//! Who may use the HTTP API and the web UI.
//!
//! - **Login** (required when the API listens beyond loopback, or with `http.require_login`):
//!   one admin password (argon2id, in `<data dir>/admin-password`, mode 0600). The first visit
//!   sets it with the one-time setup code the daemon logs and writes to `<data dir>/setup-code`,
//!   so nobody else on the LAN can claim the gateway first.
//!   Sessions are random 256-bit tokens in an `HttpOnly; SameSite=Strict` cookie; the gateway
//!   keeps only their SHA-256, in memory (a restart signs everyone out). Wrong passwords lock the
//!   source address out (5 in 15 min → 15 min).
//! - **Cross-site requests** are refused always: a state-changing request (or WebSocket) whose
//!   `Origin` is not this host gets 403, so no web page can drive the local API.
//!
//! - **Launch tickets** (the desktop app): one-time, short-lived secrets made in-process and
//!   exchanged for a session at `GET /api/auth/launch?ticket=…`, so the app's window is signed in
//!   without a password while other local processes and web pages, which never see a ticket,
//!   are not.
//!
//! `/api/health`, `/api/auth…` and the UI's static files need no session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::extract::Query;
use super::{ApiError, ApiState};
use crate::auth::constant_time_eq;
use crate::lockout::{LockoutPolicy, Lockouts};

const COOKIE: &str = "gatehouse_session";
const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
const MIN_PASSWORD: usize = 10;
const PASSWORD_FILE: &str = "admin-password";
const SETUP_CODE_FILE: &str = "setup-code";
/// A fresh secret per start, readable only by the gateway's user: the CLI (and the desktop app)
/// send it as `Authorization: Bearer …` instead of logging in.
pub const API_TOKEN_FILE: &str = "api-token";
/// How long a launch ticket can be exchanged for a session.
const LAUNCH_TICKET_LIFETIME: Duration = Duration::from_secs(120);
const LOGIN_LOCKOUT: LockoutPolicy =
    LockoutPolicy { threshold: 5, window: Duration::from_secs(15 * 60), lockout: Duration::from_secs(15 * 60) };

pub struct WebAuth {
    /// Whether API requests need a session.
    pub required: bool,
    data_dir: PathBuf,
    password_hash: Mutex<Option<String>>,
    setup_code: String,
    /// SHA-256 of this start's local API token (the token itself is only in its file).
    api_token_digest: [u8; 32],
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// SHA-256 of unused launch tickets, with their expiry.
    launch_tickets: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<Lockouts>,
}

impl WebAuth {
    /// Reads the admin password if one was set; when login is required and none is, makes the
    /// setup code and says where it is.
    pub fn load(data_dir: PathBuf, required: bool) -> Arc<WebAuth> {
        let password_hash = std::fs::read_to_string(data_dir.join(PASSWORD_FILE)).ok().map(|s| s.trim().to_string());
        let setup_code = crate::auth::password::generate()[..12].to_string();
        if required && password_hash.is_none() {
            let path = data_dir.join(SETUP_CODE_FILE);
            if write_private(&path, &setup_code).is_ok() {
                tracing::warn!(
                    code = %setup_code,
                    file = %path.display(),
                    "the web UI needs an admin password: open it and enter this setup code to choose one"
                );
            }
        }
        let api_token = hex::encode(rand::random::<[u8; 32]>());
        if let Err(error) = write_private(&data_dir.join(API_TOKEN_FILE), &api_token) {
            tracing::warn!(%error, "cannot write the local API token; the CLI will need a login");
        }
        Arc::new(WebAuth {
            required,
            data_dir,
            password_hash: Mutex::new(password_hash),
            setup_code,
            api_token_digest: Sha256::digest(api_token.as_bytes()).into(),
            sessions: Mutex::new(HashMap::new()),
            launch_tickets: Mutex::new(HashMap::new()),
            failures: Mutex::new(Lockouts::default()),
        })
    }

    fn configured(&self) -> bool {
        self.password_hash.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
            return constant_time_eq(&digest, &self.api_token_digest);
        }
        let Some(token) = session_cookie(headers) else { return false };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, expires| *expires > now);
        match sessions.get_mut(&key) {
            Some(expires) => {
                *expires = now + SESSION_LIFETIME;
                true
            }
            None => false,
        }
    }

    fn new_session(&self) -> String {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Instant::now() + SESSION_LIFETIME);
        token
    }

    /// A one-time ticket for `GET /api/auth/launch?ticket=…`, valid for two minutes. Only for
    /// code in this process (the desktop app opening its window); never logged.
    pub fn launch_ticket(&self) -> String {
        let ticket = hex::encode(rand::random::<[u8; 32]>());
        let key: [u8; 32] = Sha256::digest(ticket.as_bytes()).into();
        let now = Instant::now();
        let mut tickets = self.launch_tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.retain(|_, expires| *expires > now);
        tickets.insert(key, now + LAUNCH_TICKET_LIFETIME);
        ticket
    }

    /// Whether `ticket` is an unexpired launch ticket; it is used up either way.
    fn redeem_launch_ticket(&self, ticket: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(ticket.as_bytes()).into();
        let mut tickets = self.launch_tickets.lock().unwrap_or_else(|p| p.into_inner());
        matches!(tickets.remove(&key), Some(expires) if expires > Instant::now())
    }

    fn end_session(&self, headers: &HeaderMap) {
        if let Some(token) = session_cookie(headers) {
            let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        }
    }
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    crate::private_file::write(path, content.as_bytes())
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then(|| value.to_string())
    })
}

fn with_cookie(mut response: Response, token: &str, max_age: u64) -> Response {
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// True unless a browser page from another origin makes the request. Non-browser clients send
/// no Origin header; a browser always does for WebSocket upgrades.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get("origin") else {
        return true;
    };
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
    origin.to_str().is_ok_and(|origin| crate::origin::same_origin(origin, host))
}

/// Applied to every request: a name that may have been rebound (without a login), cross-origin
/// refusal, then the session check for `/api/…`.
pub async fn guard(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    // Without a login, anything that reaches the listener is trusted, so a page that rebinds
    // its own name to this machine must not get through: only names that cannot be rebound.
    if !state.web_auth.required {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let host = host.and_then(crate::origin::host_of);
        if !host.as_deref().is_some_and(|host| state.own_names.trusts(host)) {
            // A page can repeat this at will: INFO at most once a minute.
            static LOUD: crate::clock::OncePerMinute = crate::clock::OncePerMinute::new();
            let host = host.as_deref().unwrap_or("?");
            let message = "refused a request for a name this gateway does not know (DNS rebinding?); add the name \
                           to http.host_names if it is yours";
            if LOUD.allow() {
                tracing::info!(host, "{message}");
            } else {
                tracing::debug!(host, "{message}");
            }
            return ApiError::forbidden(
                "unknown_host",
                "this gateway is not reached by that name; use its address, or add the name to http.host_names",
            )
            .into_response();
        }
    }
    let path = request.uri().path();
    // `/metrics` is API too: counters are for the gateway's owner, not everyone on the LAN.
    let api = path == "/api" || path.starts_with("/api/") || path == "/metrics";
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let websocket = request.headers().contains_key(header::UPGRADE);
    if api && (changes_state || websocket) && !same_origin(request.headers()) {
        return ApiError::forbidden("foreign_origin", "requests from other origins are refused").into_response();
    }
    // The broker's CA certificate is public (no key) and devices fetch it before they have any
    // credentials, to pin it.
    let open = !api
        || path == "/api/health"
        || path == "/api/broker/ca.pem"
        || path == "/api/auth"
        || path.starts_with("/api/auth/");
    if state.web_auth.required && !open && !state.web_auth.authenticated(request.headers()) {
        let message = if state.web_auth.configured() {
            "log in first (POST /api/auth/login, or open the web UI)"
        } else {
            "set the admin password first: open the web UI and enter the setup code from the gateway's log"
        };
        return ApiError { status: StatusCode::UNAUTHORIZED, code: "login_required", message: message.into() }
            .into_response();
    }
    next.run(request).await
}

/// `GET /api/auth`: what the UI must show (login, first-run setup, or nothing).
pub async fn status(State(state): State<ApiState>, headers: HeaderMap) -> Json<serde_json::Value> {
    let auth = &state.web_auth;
    Json(json!({
        "required": auth.required,
        "configured": auth.configured(),
        "authenticated": !auth.required || auth.authenticated(&headers),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    password: String,
    #[serde(default)]
    setup_code: Option<String>,
}

type Body = Result<Json<Credentials>, axum::extract::rejection::JsonRejection>;

fn credentials(body: Body) -> Result<Credentials, ApiError> {
    body.map(|Json(c)| c)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("expected {{\"password\": …}}: {e}")))
}

/// `POST /api/auth/setup`: sets the admin password, once, with the setup code.
pub async fn setup(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Result<Response, ApiError> {
    let auth = &state.web_auth;
    let request = credentials(body)?;
    if auth.configured() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "already_configured",
            message: "the admin password is set already; log in".into(),
        });
    }
    let code_ok = request.setup_code.as_deref().map(str::trim) == Some(auth.setup_code.as_str());
    if !code_ok {
        return Err(ApiError::forbidden(
            "setup_code",
            "wrong or missing setup code; it is in the gateway's log and in the setup-code file of its data directory",
        ));
    }
    if request.password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::bad_request("weak_password", format!("use at least {MIN_PASSWORD} characters")));
    }
    let password = request.password;
    let hash = tokio::task::spawn_blocking(move || crate::auth::password::hash(&password)).await.map_err(|_| {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: "hashing failed".into() }
    })?;
    write_private(&auth.data_dir.join(PASSWORD_FILE), &hash).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "storage",
        message: format!("cannot store the password in the data directory: {e}"),
    })?;
    *auth.password_hash.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash);
    let _ = std::fs::remove_file(auth.data_dir.join(SETUP_CODE_FILE));
    tracing::info!(from = %peer.ip(), "admin password set");
    let token = auth.new_session();
    Ok(with_cookie(
        (StatusCode::CREATED, Json(json!({"authenticated": true}))).into_response(),
        &token,
        SESSION_LIFETIME.as_secs(),
    ))
}

/// `POST /api/auth/login`.
pub async fn login(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Result<Response, ApiError> {
    let auth = state.web_auth.clone();
    let request = credentials(body)?;
    let key = peer.ip().to_string();
    // The attempt counts from now, before the (slow) verification, so guesses sent in parallel
    // cannot all be verified before the first failure is recorded; a right password takes it back.
    let started = auth.failures.lock().unwrap_or_else(|p| p.into_inner()).begin(&key, Instant::now(), &LOGIN_LOCKOUT);
    let started = started.map_err(|wait| ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_attempts",
        message: format!("too many wrong passwords from {key}; try again in {} min", wait.as_secs().div_ceil(60)),
    })?;
    let forgive = || auth.failures.lock().unwrap_or_else(|p| p.into_inner()).forgive(&key, started);
    let Some(hash) = auth.password_hash.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
        forgive();
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "not_configured",
            message: "no admin password is set yet; set one first (POST /api/auth/setup)".into(),
        });
    };
    let password = request.password;
    let ok =
        tokio::task::spawn_blocking(move || crate::auth::password::verify(&password, &hash)).await.unwrap_or(false);
    if !ok {
        auth.failures.lock().unwrap_or_else(|p| p.into_inner()).fail(&key, Instant::now(), &LOGIN_LOCKOUT);
        tracing::info!(from = %key, "web login refused: wrong password");
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "wrong_password",
            message: "wrong password".into(),
        });
    }
    forgive();
    let token = auth.new_session();
    Ok(with_cookie(Json(json!({"authenticated": true})).into_response(), &token, SESSION_LIFETIME.as_secs()))
}

#[derive(Deserialize)]
pub struct LaunchQuery {
    #[serde(default)]
    ticket: String,
}

/// `GET /api/auth/launch?ticket=…`: the desktop app's window arrives here; a valid ticket becomes
/// a session cookie and a redirect to the UI.
pub async fn launch(State(state): State<ApiState>, Query(query): Query<LaunchQuery>) -> Response {
    if !state.web_auth.redeem_launch_ticket(&query.ticket) {
        tracing::warn!("a launch ticket was refused (unknown, used or expired)");
        return ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "launch_ticket",
            message: "this launch link was used already or has expired; open Gatehouse again from its tray icon".into(),
        }
        .into_response();
    }
    let token = state.web_auth.new_session();
    let redirect = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    with_cookie(redirect, &token, SESSION_LIFETIME.as_secs())
}

/// `POST /api/auth/logout`.
pub async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    state.web_auth.end_session(&headers);
    with_cookie(Json(json!({"authenticated": false})).into_response(), "", 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark; gatehouse_session=abc123"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc123"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("gatehouse_session="));
        assert_eq!(session_cookie(&empty), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn sessions_are_checked_by_hash_and_can_end() {
        let dir = tempfile::tempdir().unwrap();
        let auth = WebAuth::load(dir.path().to_path_buf(), true);
        assert!(dir.path().join(SETUP_CODE_FILE).exists(), "a setup code waits for the first visit");
        let token = auth.new_session();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("{COOKIE}={token}")).unwrap());
        assert!(auth.authenticated(&headers));
        let mut forged = HeaderMap::new();
        forged.insert(header::COOKIE, HeaderValue::from_str(&format!("{COOKIE}={}", "0".repeat(64))).unwrap());
        assert!(!auth.authenticated(&forged));
        auth.end_session(&headers);
        assert!(!auth.authenticated(&headers));
    }

    #[test]
    fn launch_tickets_work_once() {
        let dir = tempfile::tempdir().unwrap();
        let auth = WebAuth::load(dir.path().to_path_buf(), true);
        let ticket = auth.launch_ticket();
        assert!(!auth.redeem_launch_ticket("0".repeat(64).as_str()));
        assert!(!auth.redeem_launch_ticket(""));
        assert!(auth.redeem_launch_ticket(&ticket));
        assert!(!auth.redeem_launch_ticket(&ticket), "a ticket is single-use");
    }
}
