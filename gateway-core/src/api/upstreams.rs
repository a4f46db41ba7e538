//! `/api/upstreams`: each upstream bridge's connection state, last error (by stage), buffer and
//! counters; `POST /api/upstreams/{name}/test`: "test connection", stage by stage (DNS, TCP,
//! TLS, login, ACL), with what failed and what to do.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::Path;
use super::ApiState;

pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({ "upstreams": state.upstreams.reports() }))
}

pub async fn test(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let bridge = state
        .upstreams
        .find(&name)
        .ok_or_else(|| ApiError::not_found("unknown_upstream", format!("no upstream named `{name}` is configured")))?;
    let report = crate::upstream::probe::test_connection(&bridge.settings).await;
    tracing::info!(upstream = %name, ok = report.ok, failed = ?report.failed, "upstream connection tested");
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}
