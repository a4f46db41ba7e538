//! Desktop notifications for what needs a person: a raised alert, a device waiting to be claimed.
//! Which events deserve one is decided by the pure `notification_for`; the tray's
//! "Notifications" switch (saved in the preferences) silences them.

use gateway_core::bus::{Event, Subscription};
use tauri::{AppHandle, Manager};
use tauri_plugin_notification::NotificationExt;

use crate::host::Host;

#[derive(Debug, PartialEq)]
pub struct Note {
    pub title: String,
    pub body: String,
}

/// The bus filter: only what can become a notification is queued for us.
pub fn wants(event: &Event) -> bool {
    matches!(event, Event::Alert(_) | Event::DeviceLifecycle(_))
}

pub fn notification_for(event: &Event) -> Option<Note> {
    match event {
        // The same alert comes back when it is cleared or acknowledged: only its raising counts.
        Event::Alert(alert)
            if alert.state == "active" && alert.acknowledged_at.is_none() && alert.cleared_at.is_none() =>
        {
            let severity = match alert.severity.as_str() {
                "critical" => "Critical alert",
                "warning" => "Warning",
                _ => "Alert",
            };
            Some(Note { title: format!("{severity}: {}", alert.device_id), body: alert.message.clone() })
        }
        Event::DeviceLifecycle(change) if change.action == "registered" && change.state == "pending_claim" => {
            Some(Note {
                title: "A new device is waiting".into(),
                body: format!("{} asks to join. Open Gatehouse and claim it with the code it shows.", change.device_id),
            })
        }
        _ => None,
    }
}

pub async fn run(app: AppHandle, mut events: Subscription) {
    while let Some(event) = events.recv().await {
        let Some(note) = notification_for(&event) else { continue };
        let enabled = app.try_state::<Host>().is_some_and(|host| host.prefs.lock().is_ok_and(|p| p.notifications));
        if !enabled {
            continue;
        }
        if let Err(error) = app.notification().builder().title(&note.title).body(&note.body).show() {
            tracing::warn!(%error, "cannot show a desktop notification (is a notification service running?)");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gateway_core::bus::{AlertRecord, LifecycleChange};

    use super::*;

    fn alert(state: &str, acknowledged: bool, severity: &str) -> Event {
        Event::Alert(Arc::new(AlertRecord {
            id: 1,
            device_id: "kitchen".into(),
            site: "home".into(),
            ts: 0,
            severity: severity.into(),
            code: None,
            message: "battery low".into(),
            source: "rule:battery".into(),
            details: None,
            state: state.into(),
            rule_id: None,
            cleared_at: (state == "cleared").then_some(5),
            acknowledged_at: acknowledged.then_some(6),
            acknowledged_by: None,
        }))
    }

    fn lifecycle(action: &str, state: &str) -> Event {
        Event::DeviceLifecycle(Arc::new(LifecycleChange {
            device_id: "esp32-1".into(),
            action: action.into(),
            state: state.into(),
            at: 0,
        }))
    }

    #[test]
    fn which_events_notify() {
        let table: Vec<(Event, Option<&str>)> = vec![
            (alert("active", false, "warning"), Some("Warning: kitchen")),
            (alert("active", false, "critical"), Some("Critical alert: kitchen")),
            (alert("active", false, "info"), Some("Alert: kitchen")),
            (alert("active", true, "warning"), None),
            (alert("cleared", false, "warning"), None),
            (lifecycle("registered", "pending_claim"), Some("A new device is waiting")),
            (lifecycle("claimed", "active"), None),
            (lifecycle("registered", "active"), None),
        ];
        for (event, title) in table {
            assert_eq!(notification_for(&event).map(|n| n.title), title.map(String::from), "{event:?}");
        }
    }
}
