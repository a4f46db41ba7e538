//! Gatehouse desktop app: the same gateway as the headless daemon (gateway-core, started
//! in-process with the same configuration and flags), shown in a window and kept running in the
//! system tray. This crate is only the shell: window, tray, notifications, autostart, single
//! instance. See docs/ARCHITECTURE.md ("Desktop app").
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod existing;
mod host;
mod notify;
mod prefs;
mod tray;
mod window;

use std::process::ExitCode;

use clap::Parser;
use gateway_core::launch::RunArgs;

#[derive(Parser)]
#[command(name = "gatehouse-desktop", version, about = "Gatehouse desktop app: the gateway in a window and the tray")]
struct DesktopArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Start in the tray without opening the window ("Start at login" uses this).
    #[arg(long)]
    minimized: bool,
}

/// WebKitGTK reports the POSIX locale as `navigator.language = "C"`, which every `Intl`
/// constructor rejects, and the web UI's chart library builds one when it loads: the window
/// would stay blank for a user (or a systemd autostart) without a locale. Such a session gets
/// American English formatting instead.
#[cfg(target_os = "linux")]
fn ensure_a_language() {
    let effective = ["LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()).map(|value| (name, value)));
    let posix = |value: &str| matches!(value.split(['.', ':']).next(), Some("C" | "POSIX"));
    match effective {
        None => std::env::set_var("LANG", "en_US.UTF-8"),
        Some((name, value)) if posix(&value) => std::env::set_var(name, "en_US.UTF-8"),
        Some(_) => {}
    }
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    if std::env::var_os("WEBKIT_DISABLE_DMABUF_RENDERER").is_none() {
        // WebKitGTK's DMA-BUF renderer shows blank windows on some GPU drivers (NVIDIA, some
        // Wayland setups); the fallback costs nothing visible for a dashboard.
        std::env::set_var("WEBKIT_DISABLE_DMABUF_RENDERER", "1");
    }
    #[cfg(target_os = "linux")]
    ensure_a_language();
    let args = DesktopArgs::parse();
    let minimized = args.minimized;
    let config = match gateway_core::launch::load_config(args.run) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gatehouse-desktop: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = gateway_core::logging::init(&config.log) {
        eprintln!("gatehouse-desktop: {error}");
        return ExitCode::from(2);
    }

    let app = tauri::Builder::default()
        // First, so that a second launch hands over before anything else starts.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            tracing::info!("Gatehouse was launched again; showing the running app's window");
            window::show(app);
        }))
        .plugin(tauri_plugin_window_state::Builder::default().build())
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--minimized"]),
        ))
        .invoke_handler(tauri::generate_handler![window::launcher_state, window::quit_app])
        .setup(move |app| {
            host::start(app.handle(), config, minimized);
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("cannot start the desktop app: {error}");
            return ExitCode::FAILURE;
        }
    };
    app.run(|app, event| match event {
        // Closing the last window keeps the gateway running in the tray; Quit passes a code.
        tauri::RunEvent::ExitRequested { code: None, api, .. } => api.prevent_exit(),
        tauri::RunEvent::Exit => host::stop(app),
        _ => {}
    });
    ExitCode::SUCCESS
}
