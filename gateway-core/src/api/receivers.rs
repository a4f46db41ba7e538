//! `/api/receivers`: every receiver that hears tags (the local adapter, the simulator, remote
//! Ruuvi Gateways) with what it heard; `/api/devices/{id}/receivers`: which receivers hear one
//! tag, best first.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::extract::Path;
use super::ApiState;
use crate::reading::now_ms;

pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({ "receivers": state.heard.receivers(now_ms()) }))
}

pub async fn for_device(State(state): State<ApiState>, Path(id): Path<String>) -> Json<Value> {
    Json(json!({ "device": id, "receivers": state.heard.for_device(&id) }))
}
