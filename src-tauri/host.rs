//! Runs the gateway inside the app: starts gateway-core on Tauri's tokio runtime unless another
//! Gatehouse already serves this machine, and stops it, once and in order, when the app quits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gateway_core::api::WebAuth;
use gateway_core::ble::ScanSwitch;
use gateway_core::config::Config;
use gateway_core::gateway::Gateway;
use tauri::{AppHandle, Manager};

use crate::prefs::Prefs;
use crate::{existing, notify, tray, window};

/// What the window shows.
pub enum Target {
    /// Our own gateway; the window loads its web UI over loopback with a launch ticket.
    Embedded { http: SocketAddr, web_auth: Arc<WebAuth>, scan: ScanSwitch },
    /// Another Gatehouse (usually the headless daemon) already serves this machine.
    Existing { url: String },
    /// The gateway could not start; the sentence says why and what to do.
    Failed { message: String },
}

pub struct Host {
    pub target: Target,
    pub prefs: Mutex<Prefs>,
    pub data_dir: PathBuf,
    gateway: Mutex<Option<Gateway>>,
}

impl Host {
    pub fn gateway<R>(&self, f: impl FnOnce(&Gateway) -> R) -> Option<R> {
        self.gateway.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(f)
    }
}

/// Called from Tauri's setup: decides what to run, then builds the tray and (unless started
/// minimized, or something needs saying) the window.
pub fn start(app: &AppHandle, mut config: Config, minimized: bool) {
    let data_dir = config.resolved_data_dir();
    let prefs = Prefs::load(&data_dir);
    // The window signs in with a launch ticket; every other client of this gateway's API (other
    // local processes, browsers) needs the admin password or the api-token file.
    config.http.require_login.get_or_insert(true);
    if config.http.ui_dir.is_none() {
        config.http.ui_dir = window::installed_ui_dir();
    }

    let (target, gateway) = match tauri::async_runtime::block_on(existing::find(&config)) {
        Some(url) => {
            tracing::warn!(%url, "another Gatehouse is already running on this machine; offering to use it");
            (Target::Existing { url }, None)
        }
        None => match tauri::async_runtime::block_on(Gateway::start(config)) {
            Ok(gateway) => {
                let target = Target::Embedded {
                    http: gateway.runtime.http,
                    web_auth: gateway.web_auth.clone(),
                    scan: gateway.scan_switch.clone(),
                };
                (target, Some(gateway))
            }
            Err(error) => {
                tracing::error!("{error:#}");
                (Target::Failed { message: format!("{error:#}") }, None)
            }
        },
    };
    let embedded = matches!(target, Target::Embedded { .. });
    let must_speak = !embedded;
    if let Some(gateway) = &gateway {
        let events = gateway.bus.subscribe_reliable("desktop-notifications", 256, notify::wants);
        tauri::async_runtime::spawn(notify::run(app.clone(), events));
    }
    app.manage(Host { target, prefs: Mutex::new(prefs), data_dir, gateway: Mutex::new(gateway) });
    if let Err(error) = tray::build(app) {
        // A desktop without a tray (no StatusNotifier host) still gets the window.
        tracing::warn!("cannot show the tray icon: {error}; closing the window will keep Gatehouse running");
    }
    if embedded {
        tauri::async_runtime::spawn(tray::keep_updated(app.clone()));
    }
    if !minimized || must_speak {
        window::show(app);
    }
}

/// Stops the embedded gateway (store committed, broker closed) before the process exits.
pub fn stop(app: &AppHandle) {
    let Some(host) = app.try_state::<Host>() else { return };
    let gateway = host.gateway.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(gateway) = gateway {
        tauri::async_runtime::block_on(gateway.shutdown());
    }
}
