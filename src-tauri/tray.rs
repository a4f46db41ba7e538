//! The tray icon and its menu. The icon says how the gateway is (ok, an open alert, a Bluetooth
//! problem, scanning paused); `look` decides it from a `TrayStatus` and is a pure function. The
//! menu opens the window, shows how many devices are online, pauses scanning, switches
//! notifications and start-at-login, and quits (which stops the gateway cleanly).

use std::time::Duration;

use gateway_core::ble::ScannerState;
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Wry};
use tauri_plugin_autostart::ManagerExt as _;

use crate::host::{Host, Target};
use crate::window;

const TRAY: &str = "main";
const REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayIcon {
    Ok,
    Alert,
    Bluetooth,
    Paused,
}

impl TrayIcon {
    fn image(self) -> tauri::Result<Image<'static>> {
        let bytes: &'static [u8] = match self {
            TrayIcon::Ok => include_bytes!("../icons/tray-ok.png"),
            TrayIcon::Alert => include_bytes!("../icons/tray-alert.png"),
            TrayIcon::Bluetooth => include_bytes!("../icons/tray-bluetooth.png"),
            TrayIcon::Paused => include_bytes!("../icons/tray-paused.png"),
        };
        Image::from_bytes(bytes)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrayStatus {
    pub open_alerts: usize,
    pub devices_online: usize,
    pub bluetooth: ScannerState,
    pub bluetooth_message: String,
    pub paused: bool,
}

/// Icon and tooltip for a status: alerts first (they need a person), then Bluetooth trouble,
/// then a paused scan.
pub fn look(status: &TrayStatus) -> (TrayIcon, String) {
    let online =
        format!("{} device{} online", status.devices_online, if status.devices_online == 1 { "" } else { "s" });
    if status.open_alerts > 0 {
        let alerts = format!("{} open alert{}", status.open_alerts, if status.open_alerts == 1 { "" } else { "s" });
        return (TrayIcon::Alert, format!("Gatehouse: {alerts}, {online}"));
    }
    let trouble = matches!(
        status.bluetooth,
        ScannerState::Unavailable | ScannerState::PoweredOff | ScannerState::Recovering | ScannerState::Failed
    );
    if trouble {
        return (TrayIcon::Bluetooth, format!("Gatehouse: {}", status.bluetooth_message));
    }
    if status.paused {
        return (TrayIcon::Paused, format!("Gatehouse: scanning paused, {online}"));
    }
    (TrayIcon::Ok, format!("Gatehouse: {online}"))
}

pub fn online_label(devices_online: usize) -> String {
    format!("Devices online: {devices_online}")
}

/// Menu items whose text or check mark changes while the app runs.
struct Items {
    online: MenuItem<Wry>,
    pause: CheckMenuItem<Wry>,
}

pub fn build(app: &AppHandle) -> tauri::Result<()> {
    let host = app.state::<Host>();
    let embedded = matches!(host.target, Target::Embedded { .. });
    let open = MenuItem::with_id(app, "open", "Open Gatehouse", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit Gatehouse", true, None::<&str>)?;
    let separator = PredefinedMenuItem::separator(app)?;
    let separator2 = PredefinedMenuItem::separator(app)?;
    let menu = if embedded {
        let online = MenuItem::with_id(app, "online", online_label(0), false, None::<&str>)?;
        let pause = CheckMenuItem::with_id(app, "pause", "Pause scanning", true, false, None::<&str>)?;
        let notifications = host.prefs.lock().map(|p| p.notifications).unwrap_or(true);
        let notify = CheckMenuItem::with_id(app, "notifications", "Notifications", true, notifications, None::<&str>)?;
        let autostart_on = app.autolaunch().is_enabled().unwrap_or(false);
        let autostart = CheckMenuItem::with_id(app, "autostart", "Start at login", true, autostart_on, None::<&str>)?;
        let menu =
            Menu::with_items(app, &[&open, &online, &separator, &pause, &notify, &autostart, &separator2, &quit])?;
        app.manage(Items { online, pause });
        menu
    } else {
        Menu::with_items(app, &[&open, &separator, &quit])?
    };
    TrayIconBuilder::with_id(TRAY)
        .icon(TrayIcon::Ok.image()?)
        .tooltip("Gatehouse")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(on_menu)
        .build(app)?;
    Ok(())
}

fn on_menu(app: &AppHandle, event: MenuEvent) {
    let host = app.state::<Host>();
    match event.id().as_ref() {
        "open" => window::show(app),
        "quit" => {
            tracing::info!("Quit chosen from the tray");
            app.exit(0);
        }
        "pause" => {
            if let (Target::Embedded { scan, .. }, Some(items)) = (&host.target, app.try_state::<Items>()) {
                let paused = items.pause.is_checked().unwrap_or(!scan.is_paused());
                scan.set_paused(paused);
                tracing::info!(paused, "scanning switched from the tray");
            }
        }
        "notifications" => {
            let mut prefs = host.prefs.lock().unwrap_or_else(|p| p.into_inner());
            prefs.notifications = !prefs.notifications;
            if let Err(error) = prefs.save(&host.data_dir) {
                tracing::warn!(%error, "cannot save the desktop preferences");
            }
            tracing::info!(enabled = prefs.notifications, "desktop notifications switched from the tray");
        }
        "autostart" => {
            let manager = app.autolaunch();
            let enabled = manager.is_enabled().unwrap_or(false);
            let result = if enabled { manager.disable() } else { manager.enable() };
            match result {
                Ok(()) => tracing::info!(enabled = !enabled, "start at login switched from the tray"),
                Err(error) => tracing::warn!(%error, "cannot change start at login"),
            }
        }
        _ => {}
    }
}

async fn status(app: &AppHandle) -> Option<TrayStatus> {
    let host = app.try_state::<Host>()?;
    let (alerts, devices_online, bluetooth, paused) = host.gateway(|g| {
        (g.alerts.clone(), g.health.registry.online_count(), g.health.bluetooth.report(), g.scan_switch.is_paused())
    })?;
    let open_alerts = alerts.open_count().await.map(|n| n as usize).unwrap_or(0);
    Some(TrayStatus {
        open_alerts,
        devices_online,
        bluetooth: bluetooth.state,
        bluetooth_message: bluetooth.message,
        paused,
    })
}

/// Refreshes the icon, tooltip and menu until the gateway stops.
pub async fn keep_updated(app: AppHandle) {
    let mut shown: Option<TrayIcon> = None;
    let mut ticks = tokio::time::interval(REFRESH);
    loop {
        ticks.tick().await;
        let Some(status) = status(&app).await else { return };
        let (icon, tooltip) = look(&status);
        if let Some(items) = app.try_state::<Items>() {
            let _ = items.online.set_text(online_label(status.devices_online));
            let _ = items.pause.set_checked(status.paused);
        }
        let Some(tray) = app.tray_by_id(TRAY) else { continue };
        let _ = tray.set_tooltip(Some(&tooltip));
        if shown != Some(icon) {
            tracing::info!(state = ?icon, %tooltip, "tray icon changed");
            match icon.image() {
                Ok(image) => {
                    let _ = tray.set_icon(Some(image));
                    shown = Some(icon);
                }
                Err(error) => tracing::warn!(%error, "cannot load the tray icon"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(open_alerts: usize, bluetooth: ScannerState, paused: bool) -> TrayStatus {
        TrayStatus { open_alerts, devices_online: 3, bluetooth, bluetooth_message: "no adapter".into(), paused }
    }

    #[test]
    fn icon_follows_the_most_urgent_state() {
        use ScannerState::*;
        let table = [
            (status(0, Scanning, false), TrayIcon::Ok),
            (status(0, Disabled, false), TrayIcon::Ok),
            (status(0, Starting, false), TrayIcon::Ok),
            (status(2, Scanning, false), TrayIcon::Alert),
            (status(1, Unavailable, true), TrayIcon::Alert),
            (status(0, Unavailable, false), TrayIcon::Bluetooth),
            (status(0, PoweredOff, false), TrayIcon::Bluetooth),
            (status(0, Recovering, false), TrayIcon::Bluetooth),
            (status(0, Failed, true), TrayIcon::Bluetooth),
            (status(0, Paused, true), TrayIcon::Paused),
        ];
        for (status, icon) in table {
            assert_eq!(look(&status).0, icon, "{status:?}");
        }
    }

    #[test]
    fn tooltips_say_why() {
        assert_eq!(look(&status(1, ScannerState::Scanning, false)).1, "Gatehouse: 1 open alert, 3 devices online");
        assert_eq!(look(&status(0, ScannerState::Unavailable, false)).1, "Gatehouse: no adapter");
        assert_eq!(look(&status(0, ScannerState::Scanning, false)).1, "Gatehouse: 3 devices online");
        assert!(look(&status(0, ScannerState::Paused, true)).1.contains("paused"));
    }
}
