//! Broker administration: connected clients, MQTT identities (create with a secret shown once,
//! rotate, enable/disable, delete: revoking kicks live sessions), and the CA certificate.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::Path;
use super::{ApiError, ApiState};
use crate::auth::{DirectoryError, NewIdentity, Role, Rule};
use crate::broker::ClientView;

pub async fn clients(State(state): State<ApiState>) -> Json<Vec<ClientView>> {
    Json(state.sessions.list())
}

pub async fn ca_certificate(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"gatehouse-ca.pem\""),
        ],
        state.ca_pem.to_string(),
    )
}

pub async fn accounts(State(state): State<ApiState>) -> Json<Value> {
    Json(json!(state.directory.list()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAccount {
    username: String,
    /// `service` (default), `device` or `provisioning`.
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    description: Option<String>,
}

/// Returns the account and its password; the password is not stored and cannot be shown again.
pub async fn create_account(
    State(state): State<ApiState>,
    body: Result<Json<CreateAccount>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let new = NewIdentity {
        username: body.username,
        role: body.role.unwrap_or(Role::Service),
        site: body.site.unwrap_or_else(|| state.site.clone()),
        rules: body.rules,
        description: body.description,
    };
    let (identity, password) = state.directory.create(new).await.map_err(directory_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "account": identity, "password": password }))))
}

pub async fn rotate_account(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let password = state.directory.rotate(&name).await.map_err(directory_error)?;
    Ok(Json(json!({ "username": name, "password": password })))
}

/// Issues a client certificate (CN = the account name) signed by the gateway's CA, so the device
/// can authenticate over TLS without a password. The private key is returned once, not kept.
pub async fn issue_certificate(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if state.directory.get(&name).is_none() {
        return Err(directory_error(DirectoryError::NotFound(name)));
    }
    let dir = state.tls_dir.clone();
    let username = name.clone();
    let issued = tokio::task::spawn_blocking(move || crate::broker::tls::issue_client_certificate(&dir, &username))
        .await
        .map_err(|_| ApiError::bad_request("internal", "certificate worker stopped"))?;
    let (certificate, private_key) = issued.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "certificate_failed",
        message: format!("issuing the certificate failed: {e}"),
    })?;
    tracing::info!(username = %name, "client certificate issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "username": name, "certificate": certificate, "privateKey": private_key, "ca": &*state.ca_pem })),
    ))
}

pub async fn enable_account(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let identity = state.directory.set_enabled(&name, true).await.map_err(directory_error)?;
    Ok(Json(json!(identity)))
}

pub async fn disable_account(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let identity = state.directory.set_enabled(&name, false).await.map_err(directory_error)?;
    Ok(Json(json!(identity)))
}

pub async fn delete_account(State(state): State<ApiState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.directory.delete(&name).await.map_err(directory_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn directory_error(error: DirectoryError) -> ApiError {
    match error {
        DirectoryError::Invalid(message) => ApiError::bad_request("invalid_account", message),
        DirectoryError::Exists(name) => ApiError {
            status: StatusCode::CONFLICT,
            code: "account_exists",
            message: format!("an account named `{name}` already exists; rotate its password or pick another name"),
        },
        DirectoryError::NotFound(name) => ApiError::not_found(
            "account_not_found",
            format!("no account named `{name}`; GET /api/broker/accounts lists them"),
        ),
        DirectoryError::Store(error) => error.into(),
    }
}
