//! Bluetooth tags: adopt (with name, room and calibration offsets), ignore, block and unblock.
//! Blocking takes effect at once in the pipeline; so do new offsets.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::extract::Path;
use super::{ApiError, ApiState};
use crate::lifecycle::db;
use crate::reading::now_ms;
use crate::store::DeviceRecord;
use crate::tags::{self, Calibration, TagSetting};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdoptBody {
    name: Option<String>,
    room: Option<String>,
    calibration: Option<Calibration>,
}

pub async fn adopt(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<AdoptBody>>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    if let Some(calibration) = &body.calibration {
        calibration.validate().map_err(|e| ApiError::bad_request("invalid_calibration", e))?;
    }
    for (field, value) in [("name", &body.name), ("room", &body.room)] {
        if value.as_ref().is_some_and(|v| v.trim().is_empty() || v.chars().count() > 64) {
            return Err(ApiError::bad_request("invalid_body", format!("`{field}` must be 1–64 characters")));
        }
    }
    set(state, peer, headers, id, "active", body.calibration, body.name, body.room, "adopted").await
}

pub async fn ignore(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    set(state, peer, headers, id, "ignored", None, None, None, "ignored").await
}

pub async fn block(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    set(state, peer, headers, id, "blocked", None, None, None, "blocked").await
}

pub async fn unblock(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    set(state, peer, headers, id, "discovered", None, None, None, "unblocked").await
}

#[allow(clippy::too_many_arguments)]
async fn set(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: String,
    new_state: &'static str,
    calibration: Option<Calibration>,
    name: Option<String>,
    room: Option<String>,
    action: &'static str,
) -> Result<Json<DeviceRecord>, ApiError> {
    let client = headers.get("x-gatehouse-client").and_then(|v| v.to_str().ok()).unwrap_or("api").to_string();
    let actor =
        format!("{}@{}", client.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect::<String>(), peer.ip());
    let source = peer.ip().to_string();
    let device_id = id.clone();
    let updated = state
        .store
        .run(move |conn| {
            let Some(device) = db::device(conn, &device_id)? else { return Ok(Err("missing")) };
            if !matches!(device.kind.as_str(), "ruuvi_tag" | "ruuvi_air" | "homeassistant") {
                return Ok(Err("not_a_tag"));
            }
            let calibration = match calibration {
                Some(c) => c,
                None => tags::calibration_of(conn, &device_id)?,
            };
            tags::save(conn, &device_id, new_state, &calibration)?;
            db::update_details(conn, &device_id, name.as_deref(), room.as_deref())?;
            let details = json!({ "calibration": calibration });
            db::audit(conn, now_ms(), &actor, action, Some(&device_id), Some(&source), Some(&details))?;
            Ok(Ok((db::device(conn, &device_id)?, calibration)))
        })
        .await?;
    match updated {
        Ok((Some(device), calibration)) => {
            state.tag_settings.set(&device.id, TagSetting { blocked: new_state == "blocked", calibration });
            // Other modules (Home Assistant discovery, the live view) follow adoption over the bus.
            let change = crate::bus::LifecycleChange {
                device_id: device.id.clone(),
                action: action.into(),
                state: new_state.into(),
                at: now_ms(),
            };
            state.bus.publish(crate::bus::Event::DeviceLifecycle(std::sync::Arc::new(change))).await;
            Ok(Json(device))
        }
        Err("not_a_tag") => Err(ApiError::bad_request(
            "not_a_tag",
            format!(
                "`{id}` is not a Bluetooth tag; LAN devices are claimed (POST /api/claims) and deactivated instead"
            ),
        )),
        _ => Err(ApiError::not_found(
            "device_not_found",
            format!("no device with id `{id}`; GET /api/devices lists them"),
        )),
    }
}
