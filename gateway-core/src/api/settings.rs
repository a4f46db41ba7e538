//! `/api/settings`: the running configuration as the UI's settings page shows it, and the
//! settings the UI may change (saved for the next start). The database export is `backup.rs`.

use axum::extract::State;
use axum::http::StatusCode;
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
        "homeAssistant": {"enabled": config.homeassistant.enabled, "prefix": config.homeassistant.prefix},
        "upstreams": config.upstream.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
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
    let saved = UiSettings::load(&state.data_dir).map_err(cannot_save)?.unwrap_or_default();
    let next = change.merged_over(&saved);
    let mut check = (*state.config).clone();
    next.apply(&mut check).map_err(|e| ApiError::bad_request("invalid_settings", e))?;
    next.save(&state.data_dir).map_err(cannot_save)?;
    tracing::info!(settings = ?next, "settings saved from the web UI; they apply at the next start");
    Ok(Json(json!({"saved": next, "restartRequired": true})))
}

fn cannot_save(error: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "settings_not_saved",
        message: format!("cannot save the settings in the data directory: {error} (is the disk full?)"),
    }
}
