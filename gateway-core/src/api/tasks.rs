//! Tasks over HTTP: send (validated against the device's declared schema), list per device with
//! a state filter, get one with its transitions, cancel, retry (as a new task).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::extract::{Path, Query};
use super::{actor, ApiError, ApiState};
use crate::tasks::{Task, TaskError, TaskRequest};

pub async fn create(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(device): Path<String>,
    body: Result<Json<TaskRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let Json(request) = body.map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("{}; send {{\"command\": \"…\", \"params\": {{…}}}}", e.body_text()),
        )
    })?;
    let task = state.tasks.create(&device, request, &actor(&headers, &peer)).await.map_err(task_error)?;
    Ok((StatusCode::CREATED, Json(task)))
}

pub async fn list(
    State(state): State<ApiState>,
    Path(device): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Task>>, ApiError> {
    let limit = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).clamp(1, 10_000);
    let filter = query.get("state").cloned();
    if let Some(s) = &filter {
        if crate::tasks::TaskState::parse(s).is_none() {
            return Err(ApiError::bad_request("invalid_filter", format!("`state={s}`: use queued, sent, delivered, in_progress, succeeded, failed, rejected, timed_out, expired or canceled")));
        }
    }
    Ok(Json(state.tasks.list(&device, filter, limit).await.map_err(task_error)?))
}

pub async fn get(State(state): State<ApiState>, Path(task): Path<String>) -> Result<Json<Value>, ApiError> {
    match state.tasks.get(&task).await.map_err(task_error)? {
        Some((task, events)) => {
            let mut body = serde_json::to_value(&task).unwrap_or_default();
            body["events"] = json!(events);
            Ok(Json(body))
        }
        None => Err(task_error(TaskError::UnknownTask(task))),
    }
}

pub async fn cancel(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(task): Path<String>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(state.tasks.cancel(&task, &actor(&headers, &peer)).await.map_err(task_error)?))
}

pub async fn retry(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(task): Path<String>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let task = state.tasks.retry(&task, &actor(&headers, &peer)).await.map_err(task_error)?;
    Ok((StatusCode::CREATED, Json(task)))
}

fn task_error(error: TaskError) -> ApiError {
    let message = error.to_string();
    let (status, code) = match &error {
        TaskError::UnknownDevice(_) => (StatusCode::NOT_FOUND, "device_not_found"),
        TaskError::NotActive(..) => (StatusCode::CONFLICT, "device_not_active"),
        TaskError::UnknownCommand { .. } => (StatusCode::BAD_REQUEST, "unknown_command"),
        TaskError::InvalidParams { .. } => (StatusCode::BAD_REQUEST, "invalid_params"),
        TaskError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        TaskError::UnknownTask(_) => (StatusCode::NOT_FOUND, "task_not_found"),
        TaskError::Finished(..) => (StatusCode::CONFLICT, "task_finished"),
        TaskError::NotRetryable(..) => (StatusCode::CONFLICT, "not_retryable"),
        TaskError::Store(_) | TaskError::Stopped | TaskError::NotStored(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    ApiError { status, code, message }
}
