//! A device's configuration over HTTP: desired next to what the device reported applying.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::Value;

use super::extract::Path;
use super::{actor, ApiError, ApiState};
use crate::device_config::{ConfigError, ConfigView};

pub async fn get(State(state): State<ApiState>, Path(device): Path<String>) -> Result<Json<ConfigView>, ApiError> {
    match state.configs.get(&device).await.map_err(config_error)? {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::not_found(
            "no_config",
            format!("no configuration was set for `{device}`; PUT a JSON object to this path to set one"),
        )),
    }
}

/// The body is the whole desired configuration (a JSON object); it replaces the previous one.
pub async fn put(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(device): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ConfigView>, ApiError> {
    let Json(desired) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    Ok(Json(state.configs.set(&device, desired, &actor(&headers, &peer)).await.map_err(config_error)?))
}

fn config_error(error: ConfigError) -> ApiError {
    let message = error.to_string();
    let (status, code) = match error {
        ConfigError::UnknownDevice(_) => (StatusCode::NOT_FOUND, "device_not_found"),
        ConfigError::NotActive(..) => (StatusCode::CONFLICT, "device_not_active"),
        ConfigError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
        ConfigError::Store(e) => return e.into(),
    };
    ApiError { status, code, message }
}
