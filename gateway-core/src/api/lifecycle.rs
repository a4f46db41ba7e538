//! The device lifecycle over HTTP: registration (for devices that cannot speak MQTT first),
//! claiming with a code, the pairing window and its inbox approvals, claim-code regeneration,
//! capability updates, deactivation and deletion, the provisioning credentials and the audit log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Path, Query, RawBody};
use super::{ApiError, ApiState};
use crate::lifecycle::{db, registration, ClaimError, Reply};
use crate::store::DeviceRecord;

/// Who made the request, for the audit log (`cli@…` for the gatehouse CLI, `api@…` otherwise),
/// and from where.
fn actor(headers: &HeaderMap, peer: &SocketAddr) -> (String, String) {
    (super::actor(headers, peer), peer.ip().to_string())
}

pub async fn register(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawBody(body): RawBody,
) -> (StatusCode, Json<Reply>) {
    let reply = state.lifecycle.register(&body, None, &peer.ip().to_string()).await;
    let status = match &reply {
        Reply::Pending { .. } => StatusCode::ACCEPTED,
        Reply::Credentials { .. } => StatusCode::OK,
        Reply::Error { code, .. } if code == "already_active" || code == "id_taken" => StatusCode::CONFLICT,
        Reply::Error { code, .. } if code == "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        Reply::Error { .. } => StatusCode::BAD_REQUEST,
    };
    (status, Json(reply))
}

#[derive(Deserialize)]
pub struct ClaimBody {
    code: String,
}

pub async fn claim(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<ClaimBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request("invalid_body", format!("{}; send {{\"code\": \"7KQ4M-2XDAB\"}}", e.body_text()))
    })?;
    let (actor, source) = actor(&headers, &peer);
    Ok(Json(state.lifecycle.claim(&body.code, &actor, &source).await.map_err(claim_error)?))
}

pub async fn approve(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let (actor, source) = actor(&headers, &peer);
    Ok(Json(state.lifecycle.approve(&id, &actor, &source).await.map_err(claim_error)?))
}

pub async fn regenerate_code(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (actor, source) = actor(&headers, &peer);
    let (code, expires_at) = state.lifecycle.regenerate_code(&id, &actor, &source).await.map_err(claim_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "deviceId": id, "claimCode": code, "expiresAt": expires_at }))))
}

pub async fn rotate_credentials(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (actor, source) = actor(&headers, &peer);
    state.lifecycle.rotate_credentials(&id, &actor, &source).await.map_err(claim_error)?;
    Ok(StatusCode::ACCEPTED)
}

pub async fn deactivate(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let (actor, source) = actor(&headers, &peer);
    Ok(Json(state.lifecycle.deactivate(&id, &actor, &source).await.map_err(claim_error)?))
}

pub async fn delete(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let (actor, source) = actor(&headers, &peer);
    let purge = query.get("purge").is_some_and(|v| v == "true");
    state.lifecycle.delete(&id, purge, &actor, &source).await.map_err(claim_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn update_capabilities(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<DeviceRecord>, ApiError> {
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_body", format!("not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request("invalid_capabilities", "send {\"telemetry\": [...], \"commands\": [...]}"));
    };
    let capabilities = registration::parse_capabilities(&object)
        .map_err(|e| ApiError::bad_request("invalid_capabilities", e.to_string()))?;
    let (actor, source) = actor(&headers, &peer);
    Ok(Json(state.lifecycle.update_capabilities(&id, capabilities, &actor, &source).await.map_err(claim_error)?))
}

#[derive(Deserialize)]
pub struct DetailsBody {
    name: Option<String>,
    room: Option<String>,
}

pub async fn update_details(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<DetailsBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    for (field, value) in [("name", &body.name), ("room", &body.room)] {
        if value.as_ref().is_some_and(|v| v.trim().is_empty() || v.chars().count() > 64) {
            return Err(ApiError::bad_request("invalid_body", format!("`{field}` must be 1–64 characters")));
        }
    }
    let (id_for_update, name, room) = (id.clone(), body.name, body.room);
    let updated = state
        .store
        .run(move |conn| {
            db::update_details(conn, &id_for_update, name.as_deref(), room.as_deref())?;
            Ok(db::device(conn, &id_for_update)?)
        })
        .await?;
    updated.map(Json).ok_or_else(|| ApiError::not_found("device_not_found", format!("no device with id `{id}`")))
}

#[derive(Deserialize)]
pub struct PairingBody {
    minutes: Option<f64>,
    seconds: Option<u64>,
}

pub async fn pairing_status(State(state): State<ApiState>) -> Json<Value> {
    Json(pairing_json(&state))
}

fn pairing_json(state: &ApiState) -> Value {
    let until = state.lifecycle.pairing_status();
    json!({ "open": until.is_some(), "until": until, "maxSeconds": state.lifecycle.max_pairing().as_secs() })
}

pub async fn open_pairing(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<PairingBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let seconds = match (body.minutes, body.seconds) {
        (Some(m), None) if m > 0.0 => (m * 60.0) as u64,
        (None, Some(s)) if s > 0 => s,
        _ => return Err(ApiError::bad_request("invalid_body", "send {\"minutes\": 3} or {\"seconds\": 180}")),
    };
    let (actor, source) = actor(&headers, &peer);
    state.lifecycle.open_pairing(Duration::from_secs(seconds), &actor, &source).await;
    Ok(Json(pairing_json(&state)))
}

pub async fn close_pairing(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Json<Value> {
    let (actor, source) = actor(&headers, &peer);
    state.lifecycle.close_pairing(&actor, &source).await;
    Json(pairing_json(&state))
}

/// The shared provisioning credentials and topics that factory-fresh devices use to register.
pub async fn provisioning(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let password =
        crate::lifecycle::ensure_provisioning_identity(&state.directory, &state.data_dir, &state.site, false)
            .await
            .map_err(internal)?;
    Ok(Json(provisioning_json(&state, password)))
}

pub async fn rotate_provisioning(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let password = crate::lifecycle::ensure_provisioning_identity(&state.directory, &state.data_dir, &state.site, true)
        .await
        .map_err(internal)?;
    Ok(Json(provisioning_json(&state, password)))
}

fn provisioning_json(state: &ApiState, password: String) -> Value {
    json!({
        "username": crate::lifecycle::service_username(),
        "password": password,
        "site": state.site,
        "registerTopic": format!("provisioning/{}/{{deviceId}}/register", state.site),
        "replyTopic": format!("provisioning/{}/{{deviceId}}/reply", state.site),
        "clientId": "{deviceId}",
    })
}

pub async fn audit(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<db::AuditEntry>>, ApiError> {
    let device = query.get("device").cloned();
    let limit = match query.get("limit") {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| ApiError::bad_request("invalid_limit", "`limit` must be 1–10000"))?,
        None => 200,
    };
    let entries = state.store.run(move |conn| Ok(db::audit_list(conn, device.as_deref(), limit)?)).await?;
    Ok(Json(entries))
}

fn internal(error: anyhow::Error) -> ApiError {
    ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: error.to_string() }
}

fn claim_error(error: ClaimError) -> ApiError {
    let message = error.to_string();
    let (status, code) = match &error {
        ClaimError::Malformed(_) => (StatusCode::BAD_REQUEST, "invalid_code"),
        ClaimError::Unknown { .. } => (StatusCode::NOT_FOUND, "unknown_code"),
        ClaimError::LockedOut { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
        ClaimError::Expired { .. } => (StatusCode::GONE, "code_expired"),
        ClaimError::NotPending(..) => (StatusCode::CONFLICT, "not_pending"),
        ClaimError::NotFromPairing(_) => (StatusCode::CONFLICT, "not_from_pairing"),
        ClaimError::UnknownDevice(_) => (StatusCode::NOT_FOUND, "device_not_found"),
        ClaimError::Store(_) | ClaimError::Directory(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    ApiError { status, code, message }
}
