//! `/api/settings`: the running configuration as the UI's settings page shows it (read-only:
//! settings change in the config file, then a restart), and `/api/export/database`: a consistent
//! copy of the whole SQLite database (`VACUUM INTO`), the complete data export and backup.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::config::Config;
use crate::ui_settings::UiSettings;

/// What the settings page shows; built once at start. Secrets are never part of it.
pub fn summary(config: &Config, data_dir: &std::path::Path, login_required: bool) -> Value {
    let listener = |addr: Option<std::net::SocketAddr>| addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    json!({
        "site": config.site,
        "dataDir": data_dir.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "retention": days_or_exact(config.store.retention),
        "http": {"listen": config.http.listen.to_string(), "loginRequired": login_required},
        "mqtt": {
            "tcp": config.mqtt.listen.to_string(),
            "tls": listener(config.mqtt.tls_listen),
            "ws": listener(config.mqtt.ws_listen),
            "wss": listener(config.mqtt.wss_listen),
        },
        "bluetooth": {
            "enabled": config.ble.enabled,
            "adapter": if config.ble.adapter.is_empty() { "first".to_string() } else { config.ble.adapter.clone() },
            "watchdog": humantime::format_duration(config.ble.watchdog).to_string(),
        },
        "receivers": {"httpIngest": listener(config.receivers.http_listen)},
        "ruuviOutput": {
            "enabled": config.ruuvi_output.enabled,
            "mode": config.ruuvi_output.mode,
        },
        "simulator": {"tags": config.simulator.tags},
    })
}

/// `90d` rather than humantime's `2months 29days 2h 52m 48s`.
fn days_or_exact(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs > 0 && secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else {
        humantime::format_duration(duration).to_string()
    }
}

pub async fn get(State(state): State<ApiState>) -> Json<Value> {
    let mut settings = (*state.settings).clone();
    // Saved in the UI but not applied yet (they take effect at the next start).
    settings["saved"] = serde_json::to_value(UiSettings::load(&state.data_dir).ok().flatten()).unwrap_or_default();
    Json(settings)
}

type SettingsBody = Result<Json<UiSettings>, axum::extract::rejection::JsonRejection>;

/// `PUT /api/settings`: checks and saves settings for the next start.
pub async fn put(State(state): State<ApiState>, body: SettingsBody) -> Result<Json<Value>, ApiError> {
    let Json(change) = body.map_err(|e| ApiError::bad_request("invalid_settings", e.body_text()))?;
    let saved = UiSettings::load(&state.data_dir).map_err(internal)?.unwrap_or_default();
    let next = change.merged_over(&saved);
    let mut check = (*state.config).clone();
    next.apply(&mut check).map_err(|e| ApiError::bad_request("invalid_settings", e))?;
    next.save(&state.data_dir).map_err(internal)?;
    tracing::info!(settings = ?next, "settings saved from the web UI; they apply at the next start");
    Ok(Json(json!({"saved": next, "restartRequired": true})))
}

pub async fn export_database(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let dir = tempfile::tempdir_in(&state.data_dir).map_err(internal)?;
    let copy = dir.path().join("gatehouse-export.db");
    let target = copy.clone();
    state
        .store
        .run(move |conn| {
            conn.execute("VACUUM INTO ?1", [target.to_string_lossy().to_string()])?;
            Ok(())
        })
        .await
        .map_err(|e| internal(format!("{e}")))?;
    let file = tokio::fs::File::open(&copy).await.map_err(internal)?;
    let length = file.metadata().await.map_err(internal)?.len();
    // The directory (and the copy) go once the body is sent: the stream owns them.
    let stream = tokio_util::io::ReaderStream::new(file);
    let body = Body::from_stream(futures_util::StreamExt::map(stream, move |chunk| {
        let _keep = &dir;
        chunk
    }));
    let name = format!("gatehouse-{}-{}.db", state.site, crate::reading::now_ms() / 1000);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response())
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "export_failed",
        message: format!("cannot export the database: {error} (is the disk full?)"),
    }
}
