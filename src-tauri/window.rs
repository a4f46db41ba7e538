//! The one main window: the gateway's web UI (loaded from the embedded server and signed in with
//! a one-time launch ticket), or the app's own launcher page when another Gatehouse already runs
//! or ours could not start.

use std::path::PathBuf;

use serde::Serialize;
use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder};

use crate::host::{Host, Target};

pub const MAIN: &str = "main";
const TITLE: &str = "Gatehouse";

/// Where the packages install the web UI (the gateway serves it to the window and the LAN).
pub fn installed_ui_dir() -> Option<PathBuf> {
    let exe_dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    [exe_dir.join("../share/gatehouse-desktop/ui"), PathBuf::from("/usr/share/gatehouse-desktop/ui")]
        .into_iter()
        .find(|dir| dir.join("index.html").is_file())
}

/// Shows the main window, creating it when it was closed (a closed window frees WebKit's memory;
/// the gateway keeps running).
pub fn show(app: &AppHandle) {
    if let Some(window) = app.get_webview_window(MAIN) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
        return;
    }
    let Some(host) = app.try_state::<Host>() else { return };
    let url = match &host.target {
        Target::Embedded { http, web_auth, .. } => {
            let ticket = web_auth.launch_ticket();
            match format!("http://127.0.0.1:{}/api/auth/launch?ticket={ticket}", http.port()).parse() {
                Ok(url) => WebviewUrl::External(url),
                Err(_) => return,
            }
        }
        Target::Existing { .. } | Target::Failed { .. } => WebviewUrl::App("index.html".into()),
    };
    let built = WebviewWindowBuilder::new(app, MAIN, url)
        .title(TITLE)
        .inner_size(1280.0, 800.0)
        .min_inner_size(390.0, 480.0)
        .build();
    if let Err(error) = built {
        tracing::error!("cannot open the Gatehouse window: {error}");
    }
}

#[derive(Serialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum LauncherState {
    Existing { url: String },
    Error { message: String, data_dir: String },
    Embedded,
}

/// What the launcher page shows (it is only used when the gateway's own UI cannot be).
#[tauri::command]
pub fn launcher_state(host: tauri::State<'_, Host>) -> LauncherState {
    match &host.target {
        Target::Existing { url } => LauncherState::Existing { url: url.clone() },
        Target::Failed { message } => {
            LauncherState::Error { message: message.clone(), data_dir: host.data_dir.display().to_string() }
        }
        Target::Embedded { .. } => LauncherState::Embedded,
    }
}

#[tauri::command]
pub fn quit_app(app: AppHandle) {
    app.exit(0);
}
