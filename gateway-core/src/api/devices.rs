//! `GET /api/devices`, `GET /api/devices/{id}` and `GET /api/devices/{id}/readings`.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::extract::{Path, Query};
use super::params::{parse_duration_ms, parse_time};
use super::{ApiError, ApiState};
use crate::reading::now_ms;
use crate::store::{DeviceRecord, History, HistoryQuery};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    #[serde(flatten)]
    pub record: DeviceRecord,
    pub online: bool,
}

fn view(state: &ApiState, record: DeviceRecord) -> DeviceView {
    let online = state.registry.get(&record.id).is_some_and(|live| live.online);
    DeviceView { record, online }
}

/// Optional filters: `state=discovered`, `kind=ruuvi_air`, `online=true`.
pub async fn list(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let online_filter = match query.get("online").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request("invalid_filter", format!("`online={other}`: use true or false")))
        }
    };
    let devices = state.store.devices().await?;
    let views = devices
        .into_iter()
        .filter(|d| query.get("state").is_none_or(|s| &d.state == s))
        .filter(|d| query.get("kind").is_none_or(|k| &d.kind == k))
        .map(|d| view(&state, d))
        .filter(|v| online_filter.is_none_or(|online| v.online == online))
        .collect();
    Ok(Json(views))
}

pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<DeviceView>, ApiError> {
    match state.store.device(&id).await? {
        Some(record) => Ok(Json(view(&state, record))),
        None => Err(unknown_device(&id)),
    }
}

fn unknown_device(id: &str) -> ApiError {
    ApiError::not_found("device_not_found", format!("no device with id `{id}`; GET /api/devices lists the known ones"))
}

const TAG_FIELDS: &[&str] = &["temperature", "humidity", "pressure", "voltage", "rssi"];
const AIR_FIELDS: &[&str] = &[
    "temperature",
    "humidity",
    "pressure",
    "PM1.0",
    "PM2.5",
    "PM4.0",
    "PM10.0",
    "CO2",
    "VOC",
    "NOx",
    "luminosity",
    "rssi",
];

/// `from` (default 24 h ago), `to` (default now), `bucket` (default: chosen for ~500 points),
/// `fields` (comma-separated; default depends on the device kind).
pub async fn readings(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<History>, ApiError> {
    let now = now_ms();
    let to = query.get("to").map(|v| parse_time("to", v, now)).transpose()?.unwrap_or(now + 1);
    let from =
        query.get("from").map(|v| parse_time("from", v, now)).transpose()?.unwrap_or(to.saturating_sub(86_400_000));
    let bucket_ms = query.get("bucket").map(|v| parse_duration_ms("bucket", v)).transpose()?;
    let Some(device) = state.store.device(&id).await? else {
        return Err(unknown_device(&id));
    };
    let fields: Vec<String> = match query.get("fields") {
        Some(list) => list.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from).collect(),
        None if device.kind == "lan" || device.kind == "homeassistant" => {
            // The device's declared numeric (and boolean) telemetry fields.
            let declared =
                device.capabilities.as_ref().and_then(|c| c["telemetry"].as_array().cloned()).unwrap_or_default();
            declared
                .iter()
                .filter(|f| f["type"] != "string")
                .filter_map(|f| f["name"].as_str().map(String::from))
                .collect()
        }
        None => {
            let defaults = if device.kind == "ruuvi_air" { AIR_FIELDS } else { TAG_FIELDS };
            defaults.iter().map(|f| f.to_string()).collect()
        }
    };
    let history = state
        .store
        .history(HistoryQuery { device_id: id.clone(), from, to, bucket_ms, fields })
        .await?
        .ok_or_else(|| unknown_device(&id))?;
    Ok(Json(history))
}
