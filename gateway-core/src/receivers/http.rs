//! The HTTP ingest listener for remote Ruuvi Gateways: `POST /ruuvi` in the gateway's "custom
//! server" format. It is a separate listener from the local API because it must face the LAN
//! (the API binds to localhost), and it offers nothing but this one authenticated route.
//!
//! Authentication: a `receiver` account, as HTTP Basic (the Ruuvi Gateway's "basic" option) or as
//! `Authorization: Bearer <account>:<secret>` (its "bearer" option). Wrong or missing credentials
//! get 401 and are counted; credentials are never logged. `/webhook` forwards site-bound device
//! telemetry, so it also needs the account to be of the gateway's site (403 otherwise, counted).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::json;
use tokio::sync::mpsc;

use super::{receiver_name, HeardBy, IngestStats};
use crate::api::ApiError;
use crate::auth::{Directory, Identity, Role};
use crate::pipeline::Advertisement;
use crate::reading::now_ms;
use crate::ruuvi_gateway::{self, IngestError};

/// A Ruuvi Gateway posts at most a few hundred tags of ~100 bytes each.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct IngestState {
    pub directory: Arc<Directory>,
    /// Where forwarded device telemetry goes (as if published on our broker).
    pub bus: crate::bus::Bus,
    /// Devices' declared telemetry fields, to check forwarded telemetry.
    pub catalog: crate::lifecycle::Catalog,
    /// The site whose devices' telemetry may be forwarded.
    pub site: String,
    pub ingress: mpsc::Sender<Advertisement>,
    pub heard: Arc<HeardBy>,
    pub stats: Arc<IngestStats>,
}

pub fn router(state: IngestState) -> Router {
    Router::new().route("/ruuvi", post(ingest)).route("/webhook", post(webhook)).with_state(state)
}

/// The API's JSON error shape (`{"error":{"code","message"}}`).
fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError { status, code, message: message.into() }.into_response()
}

/// (account, secret) from Basic or Bearer `account:secret`.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let pair = match scheme.to_ascii_lowercase().as_str() {
        "basic" => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?).ok()?,
        "bearer" => rest.trim().to_string(),
        _ => return None,
    };
    let (account, secret) = pair.split_once(':')?;
    Some((account.to_string(), secret.to_string()))
}

/// The receiver account the request authenticates as, or the answer that refuses it.
async fn receiver_account(state: &IngestState, headers: &HeaderMap) -> Result<Identity, Response> {
    let stats = &state.stats;
    let unauthorized = |message: &str| {
        stats.http_unauthorized.fetch_add(1, Ordering::Relaxed);
        let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, "Basic realm=\"gatehouse\"".parse().unwrap());
        response
    };
    let Some((account, secret)) = credentials(headers) else {
        return Err(unauthorized(
            "send the credentials of a receiver account (gatehouse accounts create NAME --role receiver) as HTTP \
             Basic or as 'Bearer NAME:SECRET'",
        ));
    };
    let identity = match state.directory.authenticate(Some(&account), Some(&secret), &account).await {
        Ok(authenticated) => authenticated.identity,
        Err(_) => {
            tracing::info!(account, "HTTP ingest refused: bad credentials");
            return Err(unauthorized("unknown account or wrong secret"));
        }
    };
    if identity.role != Role::Receiver {
        stats.http_unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(error(
            StatusCode::FORBIDDEN,
            "not_a_receiver",
            format!("account {account} has role {}; only receiver accounts may post readings", identity.role.as_str()),
        ));
    }
    Ok(identity)
}

/// Whether a receiver account may post to a route: `/ruuvi` takes any receiver's Bluetooth
/// advertisements, `/webhook` only device telemetry of the receiver's own site.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    AnySite,
    OwnSite,
}

/// The receiver account's name and the body, read (up to the limit) only once the request is
/// authenticated (and, for [`Scope::OwnSite`], the account is of the gateway's site); an
/// oversized body counts in `too_large`.
async fn authenticated_body(
    state: &IngestState,
    request: Request,
    scope: Scope,
    too_large: &std::sync::atomic::AtomicU64,
) -> Result<(String, axum::body::Bytes), Response> {
    let identity = receiver_account(state, request.headers()).await?;
    let account = identity.username;
    if scope == Scope::OwnSite && identity.site != state.site {
        state.stats.http_unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::info!(account, site = %identity.site, "HTTP ingest refused: a receiver of another site");
        return Err(error(
            StatusCode::FORBIDDEN,
            "wrong_site",
            format!(
                "account {account} belongs to site `{}`; only receivers of site `{}` may forward its devices' telemetry",
                identity.site, state.site
            ),
        ));
    }
    match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => Ok((account, body)),
        Err(_) => {
            too_large.fetch_add(1, Ordering::Relaxed);
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body exceeds {MAX_BODY} bytes")))
        }
    }
}

async fn ingest(State(state): State<IngestState>, request: Request) -> Response {
    let stats = &state.stats;
    stats.http_posts.fetch_add(1, Ordering::Relaxed);
    let (account, body) = match authenticated_body(&state, request, Scope::AnySite, &stats.http_rejected).await {
        Ok(authenticated) => authenticated,
        Err(refused) => return refused,
    };
    let batch = match ruuvi_gateway::parse_http_post(&body) {
        Ok(batch) => batch,
        Err(e) => {
            stats.http_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(account, "HTTP ingest refused: {e}");
            let status = if matches!(e, IngestError::TooManyTags { .. }) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return error(status, "bad_payload", e.to_string());
        }
    };
    let receiver = receiver_name(&batch.gw_mac);
    let now = now_ms();
    state.heard.contact(&receiver, &account, "http", Some(true), now);
    let accepted = batch.tags.len();
    for tag in batch.tags {
        let advertisement =
            ruuvi_gateway::to_advertisement(tag.tag, tag.rssi, tag.timestamp_s, tag.data, receiver.clone(), now);
        if state.ingress.send(advertisement).await.is_err() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down; retry later",
            );
        }
    }
    stats.advertisements.fetch_add(accepted as u64, Ordering::Relaxed);
    stats.entries_rejected.fetch_add(batch.rejected.len() as u64, Ordering::Relaxed);
    if !batch.rejected.is_empty() {
        tracing::warn!(account, rejected = batch.rejected.len(), first = ?batch.rejected.first(), "HTTP ingest: some tag entries refused");
    }
    let rejected: Vec<_> = batch.rejected.iter().map(|(tag, reason)| json!({"tag": tag, "reason": reason})).collect();
    (StatusCode::OK, Json(json!({"accepted": accepted, "rejected": rejected}))).into_response()
}

/// `POST /webhook`: device telemetry forwarded by another broker (see `webhook.rs`).
async fn webhook(State(state): State<IngestState>, request: Request) -> Response {
    let stats = &state.stats;
    stats.webhook_posts.fetch_add(1, Ordering::Relaxed);
    let (account, body) = match authenticated_body(&state, request, Scope::OwnSite, &stats.webhook_rejected).await {
        Ok(authenticated) => authenticated,
        Err(refused) => return refused,
    };
    let messages = match super::webhook::parse(&body, &state.site) {
        Ok(messages) => messages,
        Err(why) => {
            stats.webhook_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(account, "webhook ingest refused: {why}");
            return error(StatusCode::BAD_REQUEST, "bad_payload", why);
        }
    };
    let mut accepted = 0;
    let mut rejected = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        let checked = message.and_then(|m| {
            let capabilities = state
                .catalog
                .get(&m.device_id)
                .ok_or_else(|| format!("{} is not an active device with declared telemetry fields", m.device_id))?;
            crate::lifecycle::registration::telemetry_message(&m.device_id, &capabilities, &m.payload, now_ms())
                .map_err(|e| format!("{}: field {}: {}", m.device_id, e.field, e.message))
        });
        match checked {
            Ok(telemetry) => {
                state.bus.publish(crate::bus::Event::Telemetry(Arc::new(telemetry))).await;
                accepted += 1;
            }
            Err(reason) => rejected.push(json!({"index": index, "reason": reason})),
        }
    }
    stats.webhook_messages.fetch_add(accepted, Ordering::Relaxed);
    stats.webhook_rejected.fetch_add(rejected.len() as u64, Ordering::Relaxed);
    if !rejected.is_empty() {
        tracing::warn!(account, rejected = rejected.len(), first = %rejected[0], "webhook ingest: some messages refused");
    }
    let status = if accepted == 0 && !rejected.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    (status, Json(json!({"accepted": accepted, "rejected": rejected}))).into_response()
}
