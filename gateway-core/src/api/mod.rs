//! The HTTP API (axum): health, devices, readings history and the live WebSocket.
//! Binds 127.0.0.1 by default; the WebSocket refuses foreign origins.

mod alerts;
mod backup;
mod broker;
mod config;
mod devices;
mod error;
mod extract;
mod lifecycle;
mod live;
mod metrics;
mod params;
mod receivers;
mod session;
mod settings;
mod tags;
mod tasks;
mod ui;
mod upstreams;

pub use session::{WebAuth, API_TOKEN_FILE};
pub use settings::summary as settings_summary;

pub use ui::locate as locate_ui;

pub use error::ApiError;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::bus::Bus;
use crate::health::Health;
use crate::registry::Registry;
use crate::store::Store;

#[derive(Clone)]
pub struct ApiState {
    /// HTTP answers by status class, for `/metrics`.
    pub http: std::sync::Arc<metrics::HttpStats>,
    pub store: Store,
    pub registry: Registry,
    pub bus: Bus,
    pub health: Health,
    /// Ends long-lived responses (the live WebSocket) at shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub directory: std::sync::Arc<crate::auth::Directory>,
    pub sessions: crate::broker::Sessions,
    /// The gateway CA certificate (PEM), for devices to pin.
    pub ca_pem: std::sync::Arc<str>,
    /// The gateway's own site: the default for new identities.
    pub site: String,
    /// Where the CA key lives (for issuing client certificates).
    pub tls_dir: std::path::PathBuf,
    pub lifecycle: std::sync::Arc<crate::lifecycle::Lifecycle>,
    pub data_dir: std::path::PathBuf,
    /// Bluetooth tags' block list and calibration, shared with the pipeline.
    pub tag_settings: crate::tags::TagSettings,
    pub tasks: crate::tasks::Tasks,
    pub alerts: crate::alerts::Alerts,
    pub configs: crate::device_config::Configs,
    /// Which receiver hears which tag (local adapter, simulator, remote Ruuvi Gateways).
    pub heard: std::sync::Arc<crate::receivers::HeardBy>,
    /// The built web UI, when there is one.
    pub ui_dir: Option<std::path::PathBuf>,
    /// Logins and sessions for the API and the UI.
    pub web_auth: std::sync::Arc<WebAuth>,
    /// The names the gateway may be reached by without a login (DNS rebinding defence).
    pub own_names: std::sync::Arc<crate::origin::OwnNames>,
    /// The running configuration, for the settings page (no secrets).
    pub settings: std::sync::Arc<serde_json::Value>,
    /// The configuration the gateway started with (to check settings changes against).
    pub config: std::sync::Arc<crate::config::Config>,
    /// Upstream bridges, for their status and "test connection".
    pub upstreams: crate::upstream::Upstreams,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/devices", get(devices::list))
        .route("/api/devices/register", axum::routing::post(lifecycle::register))
        .route("/api/devices/{id}", get(devices::get).patch(lifecycle::update_details).delete(lifecycle::delete))
        .route("/api/devices/{id}/approve", axum::routing::post(lifecycle::approve))
        .route("/api/devices/{id}/claim-code", axum::routing::post(lifecycle::regenerate_code))
        .route("/api/devices/{id}/deactivate", axum::routing::post(lifecycle::deactivate))
        .route("/api/devices/{id}/rotate-credentials", axum::routing::post(lifecycle::rotate_credentials))
        .route("/api/devices/{id}/capabilities", axum::routing::put(lifecycle::update_capabilities))
        .route("/api/claims", axum::routing::post(lifecycle::claim))
        .route("/api/devices/{id}/tasks", get(tasks::list).post(tasks::create))
        .route("/api/devices/{id}/config", get(config::get).put(config::put))
        .route("/api/tasks/{task}", get(tasks::get))
        .route("/api/tasks/{task}/cancel", axum::routing::post(tasks::cancel))
        .route("/api/tasks/{task}/retry", axum::routing::post(tasks::retry))
        .route("/api/devices/{id}/adopt", axum::routing::post(tags::adopt))
        .route("/api/devices/{id}/ignore", axum::routing::post(tags::ignore))
        .route("/api/devices/{id}/block", axum::routing::post(tags::block))
        .route("/api/devices/{id}/unblock", axum::routing::post(tags::unblock))
        .route(
            "/api/pairing",
            get(lifecycle::pairing_status).post(lifecycle::open_pairing).delete(lifecycle::close_pairing),
        )
        .route("/api/provisioning", get(lifecycle::provisioning))
        .route("/api/provisioning/rotate", axum::routing::post(lifecycle::rotate_provisioning))
        .route("/api/audit", get(lifecycle::audit))
        .route("/api/alerts", get(alerts::list))
        .route("/api/alerts/{id}/ack", axum::routing::post(alerts::acknowledge))
        .route("/api/alert-rules", get(alerts::rules).post(alerts::create_rule))
        .route("/api/alert-rules/{id}", axum::routing::put(alerts::update_rule).delete(alerts::delete_rule))
        .route("/api/devices/{id}/readings", get(devices::readings))
        .route("/api/devices/{id}/receivers", get(receivers::for_device))
        .route("/api/receivers", get(receivers::list))
        .route("/api/live", get(live::upgrade))
        .route("/api/broker/clients", get(broker::clients))
        .route("/api/broker/ca.pem", get(broker::ca_certificate))
        .route("/api/broker/accounts", get(broker::accounts).post(broker::create_account))
        .route("/api/broker/accounts/{name}", axum::routing::delete(broker::delete_account))
        .route("/api/broker/accounts/{name}/rotate", axum::routing::post(broker::rotate_account))
        .route("/api/broker/accounts/{name}/enable", axum::routing::post(broker::enable_account))
        .route("/api/broker/accounts/{name}/certificate", axum::routing::post(broker::issue_certificate))
        .route("/api/broker/accounts/{name}/disable", axum::routing::post(broker::disable_account))
        .route("/api/settings", get(settings::get).put(settings::put))
        .route("/api/export/database", get(backup::download))
        .route("/api/backup", get(backup::download))
        .route("/api/restore", axum::routing::post(backup::restore))
        .route("/api/devices/{id}/export", get(backup::export_readings))
        .route("/api/auth", get(session::status))
        .route("/api/auth/setup", axum::routing::post(session::setup))
        .route("/api/auth/login", axum::routing::post(session::login))
        .route("/api/auth/logout", axum::routing::post(session::logout))
        .route("/api/auth/launch", get(session::launch))
        .route("/api/upstreams", get(upstreams::list))
        .route("/api/upstreams/{name}/test", axum::routing::post(upstreams::test))
        .route("/metrics", get(metrics::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), session::guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count_requests))
        .with_state(state)
}

async fn health(axum::extract::State(state): axum::extract::State<ApiState>) -> impl IntoResponse {
    Json(state.health.report())
}

/// `/api/…` paths no route matched get a JSON 404; everything else is the web UI.
async fn fallback(
    axum::extract::State(state): axum::extract::State<ApiState>,
    request: axum::http::Request<axum::body::Body>,
) -> axum::response::Response {
    let path = request.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        return not_found(request.uri().clone()).await.into_response();
    }
    ui::serve(state.ui_dir.clone(), request).await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {}; see docs/api.md for the API", uri.path()))
}

/// A route with another method: a JSON 405 (axum's own has no body); axum adds `Allow`.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{method} is not a method of {}; see docs/api.md for the API", uri.path()),
    }
}

/// Who made a change, for audit trails: the client's self-declared name and its address.
pub(crate) fn actor(headers: &HeaderMap, peer: &std::net::SocketAddr) -> String {
    let client = headers.get("x-gatehouse-client").and_then(|v| v.to_str().ok()).unwrap_or("api");
    let client: String = client.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
    format!("{client}@{}", peer.ip())
}
