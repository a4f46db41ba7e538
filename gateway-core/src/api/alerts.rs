//! Alerts over HTTP: list (filter by device, state, unacknowledged), acknowledge, and the gateway
//! rules that raise and clear them.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::extract::{Path, Query};
use super::{actor, ApiError, ApiState};
use crate::alerts::{AlertError, Rule, RuleRequest};
use crate::bus::AlertRecord;

pub async fn list(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<AlertRecord>>, ApiError> {
    let device = query.get("device").cloned();
    let limit = query.get("limit").and_then(|v| v.parse::<i64>().ok()).unwrap_or(200).clamp(1, 10_000);
    let filter = query.get("state").cloned();
    if let Some(s) = &filter {
        if s != "active" && s != "cleared" {
            return Err(ApiError::bad_request("invalid_filter", format!("`state={s}`: use active or cleared")));
        }
    }
    let unacknowledged = query.get("unacknowledged").is_some_and(|v| v == "true");
    Ok(Json(state.alerts.list(device, filter, unacknowledged, limit).await.map_err(alert_error)?))
}

pub async fn acknowledge(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<AlertRecord>, ApiError> {
    Ok(Json(state.alerts.acknowledge(id, &actor(&headers, &peer)).await.map_err(alert_error)?))
}

pub async fn rules(State(state): State<ApiState>) -> Result<Json<Vec<Rule>>, ApiError> {
    Ok(Json(state.alerts.rules().await.map_err(alert_error)?))
}

type Body = Result<Json<RuleRequest>, axum::extract::rejection::JsonRejection>;

fn request(body: Body) -> Result<RuleRequest, ApiError> {
    body.map(|Json(r)| r).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "{}; send {{\"name\": \"…\", \"field\": \"temperature\", \"condition\": \"above\", \"threshold\": 30, \"clearAt\": 29, \"for\": \"5m\"}}",
                e.body_text()
            ),
        )
    })
}

pub async fn create_rule(State(state): State<ApiState>, body: Body) -> Result<(StatusCode, Json<Rule>), ApiError> {
    let rule = state.alerts.create_rule(request(body)?).await.map_err(alert_error)?;
    Ok((StatusCode::CREATED, Json(rule)))
}

pub async fn update_rule(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    body: Body,
) -> Result<Json<Rule>, ApiError> {
    Ok(Json(state.alerts.update_rule(id, request(body)?).await.map_err(alert_error)?))
}

pub async fn delete_rule(State(state): State<ApiState>, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    state.alerts.delete_rule(id).await.map_err(alert_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn alert_error(error: AlertError) -> ApiError {
    let message = error.to_string();
    let (status, code) = match error {
        AlertError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_rule"),
        AlertError::Exists(_) => (StatusCode::CONFLICT, "rule_exists"),
        AlertError::UnknownRule(_) => (StatusCode::NOT_FOUND, "rule_not_found"),
        AlertError::UnknownAlert(_) => (StatusCode::NOT_FOUND, "alert_not_found"),
        AlertError::Store(e) => return e.into(),
    };
    ApiError { status, code, message }
}
