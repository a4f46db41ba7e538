//! The live device registry: which devices exist, when each was last heard, and whether it is
//! online. Emits `DeviceDiscovered` for devices never seen before and `Availability` when a
//! device falls silent for `offline_after` or speaks again. Persistent state lives in the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bus::{Availability, Bus, DeviceInfo, Event, Subscription};
use crate::clock::StepDetector;
use crate::reading::{now_ms, ruuvi_kind};

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LiveState {
    pub online: bool,
    pub last_seen: i64,
    /// Availability follows an MQTT connection (LAN devices), not silence.
    #[serde(skip)]
    pub connected: bool,
}

/// Shared, read-mostly view of every known device's live state.
#[derive(Clone, Default)]
pub struct Registry {
    devices: Arc<RwLock<HashMap<String, LiveState>>>,
}

impl Registry {
    /// Seeds the registry with devices known from the store; they start offline.
    pub fn with_known(known: impl IntoIterator<Item = (String, i64)>) -> Registry {
        let devices = known
            .into_iter()
            .map(|(id, last_seen)| (id, LiveState { online: false, last_seen, connected: false }))
            .collect();
        Registry { devices: Arc::new(RwLock::new(devices)) }
    }

    pub fn get(&self, device_id: &str) -> Option<LiveState> {
        self.devices.read().unwrap_or_else(|p| p.into_inner()).get(device_id).cloned()
    }

    pub fn online_count(&self) -> usize {
        self.devices.read().unwrap_or_else(|p| p.into_inner()).values().filter(|d| d.online).count()
    }

    /// Records a sighting; returns whether the device is new and whether it came (back) online.
    fn seen(&self, device_id: &str, at: i64) -> (bool, bool) {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        match devices.get_mut(device_id) {
            Some(state) => {
                state.last_seen = state.last_seen.max(at);
                let came_online = !state.online;
                state.online = true;
                (false, came_online)
            }
            None => {
                devices.insert(device_id.to_string(), LiveState { online: true, last_seen: at, connected: false });
                (true, true)
            }
        }
    }

    fn known_ids(&self) -> Vec<String> {
        self.devices.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Records a LAN device's connection state; LAN devices do not expire by silence.
    fn set_online(&self, device_id: &str, online: bool, at: i64) {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        let state =
            devices.entry(device_id.to_string()).or_insert(LiveState { online, last_seen: at, connected: true });
        state.online = online;
        state.connected = true;
        state.last_seen = state.last_seen.max(at);
    }

    /// Moves every last sighting by a step of the system clock, so "silent for" keeps counting
    /// real time ([`crate::clock`]).
    fn clock_stepped(&self, step_ms: i64) {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        for state in devices.values_mut() {
            state.last_seen += step_ms;
        }
    }

    /// Marks devices silent since before `cutoff` offline and returns their ids.
    fn expire(&self, cutoff: i64) -> Vec<String> {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        devices
            .iter_mut()
            .filter(|(_, s)| s.online && !s.connected && s.last_seen < cutoff)
            .map(|(id, s)| {
                s.online = false;
                id.clone()
            })
            .collect()
    }
}

enum Woke {
    Event(Event),
    Tick,
}

/// `events` must be subscribed before any reading is published (see `Gateway::start`).
pub async fn run(
    registry: Registry,
    bus: Bus,
    mut events: Subscription,
    offline_after: Duration,
    shutdown: CancellationToken,
) {
    // The broker keeps retained messages in memory only: after a restart, state every known
    // device's availability again (offline until it is heard).
    let now = now_ms();
    for device_id in registry.known_ids() {
        if registry.get(&device_id).is_some_and(|state| !state.online) {
            bus.publish(Event::Availability(Availability { device_id, online: false, at: now })).await;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(offline_after));
    let offline_after_ms = offline_after.as_millis() as i64;
    let mut clock = StepDetector::default();
    loop {
        let woke = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Woke::Event(event),
                None => return,
            },
            _ = tick.tick() => Woke::Tick,
            _ = shutdown.cancelled() => return,
        };
        if let Some(step) = clock.check() {
            registry.clock_stepped(step);
        }
        match woke {
            Woke::Event(Event::Reading(reading)) => {
                // Silence is timed from the arrival here, on this gateway's clock: `reading.ts`
                // may be a remote receiver's measurement time, from a clock that differs.
                let (new, came_online) = registry.seen(&reading.device_id, now_ms());
                if new {
                    bus.publish(Event::DeviceDiscovered(Arc::new(DeviceInfo {
                        device_id: reading.device_id.clone(),
                        kind: ruuvi_kind(reading.measurement.data_format).to_string(),
                        mac: Some(reading.mac.clone()),
                        first_seen: reading.ts,
                    })))
                    .await;
                    tracing::info!(device = %reading.device_id, mac = %reading.mac, "new device discovered");
                }
                if came_online {
                    bus.publish(Event::Availability(Availability {
                        device_id: reading.device_id.clone(),
                        online: true,
                        at: reading.ts,
                    }))
                    .await;
                }
            }
            // LAN devices: online exactly while their MQTT session lasts (the broker publishes
            // their status itself).
            Woke::Event(Event::ClientConnected(client)) if client.role.as_deref() == Some("device") => {
                registry.set_online(&client.client_id, true, now_ms());
            }
            Woke::Event(Event::ClientDisconnected { client, at, .. }) if client.role.as_deref() == Some("device") => {
                registry.set_online(&client.client_id, false, at);
            }
            Woke::Event(Event::Telemetry(telemetry)) => registry.set_online(&telemetry.device_id, true, telemetry.ts),
            Woke::Event(_) => {}
            Woke::Tick => {
                let now = now_ms();
                for device_id in registry.expire(now - offline_after_ms) {
                    tracing::info!(device = %device_id, ?offline_after, "device went silent; marking it offline");
                    bus.publish(Event::Availability(Availability { device_id, online: false, at: now })).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sightings_and_expiry() {
        let registry = Registry::with_known([("old".to_string(), 100)]);
        assert_eq!(registry.seen("new", 1_000), (true, true));
        assert_eq!(registry.seen("new", 2_000), (false, false));
        assert_eq!(registry.seen("old", 2_000), (false, true), "known device comes online");
        assert_eq!(registry.online_count(), 2);
        assert_eq!(registry.expire(1_500), Vec::<String>::new());
        let mut expired = registry.expire(2_500);
        expired.sort();
        assert_eq!(expired, vec!["new".to_string(), "old".to_string()]);
        assert_eq!(registry.get("new"), Some(LiveState { online: false, last_seen: 2_000, connected: false }));
        assert_eq!(registry.seen("new", 3_000), (false, true));
    }
}
