//! Home Assistant discovery import: LAN devices that announce themselves with Home Assistant MQTT
//! discovery (Tasmota, ESPHome, OpenMQTTGateway…) on our broker appear as `discovered` devices
//! with their entities; their state topics feed telemetry; an empty config removes the entity
//! (and the device with its last entity). They are adopted, ignored or blocked like tags.

pub mod discovery;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rumqttd::local::LinkTx;
use rumqttd::Notification;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::broker::LinkFactory;
use crate::bus::{Bus, Event, LanTelemetry, LifecycleChange};
use crate::reading::now_ms;
use crate::store::Store;
use crate::tags::TagSettings;
use discovery::{Discovery, Entity};

pub const CLIENT_ID: &str = "gatehouse-ha-import";

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportStats {
    pub configs: AtomicU64,
    pub configs_rejected: AtomicU64,
    pub states: AtomicU64,
    /// State messages whose value could not be read (unsupported template, not a number).
    pub states_unreadable: AtomicU64,
}

struct Importer {
    store: Store,
    bus: Bus,
    tags: TagSettings,
    stats: Arc<ImportStats>,
    devices: HashMap<String, Vec<Entity>>,
    subscribed: HashSet<String>,
}

pub async fn run(
    links: LinkFactory,
    store: Store,
    bus: Bus,
    tags: TagSettings,
    stats: Arc<ImportStats>,
    shutdown: CancellationToken,
) {
    let (mut tx, mut rx) = match tokio::task::spawn_blocking(move || links(CLIENT_ID, true)).await {
        Ok(Ok((tx, rx, _))) => (tx, rx),
        other => {
            tracing::error!(error = ?other.err(), "Home Assistant discovery import cannot attach to the broker");
            return;
        }
    };
    let known = store.run(|conn| Ok(load(conn)?)).await.unwrap_or_default();
    let mut importer = Importer { store, bus, tags, stats, devices: known, subscribed: HashSet::new() };
    let _ = tx.subscribe(format!("{}/#", discovery::DISCOVERY_PREFIX));
    let topics: Vec<String> = importer.devices.values().flatten().map(|e| e.state_topic.clone()).collect();
    for topic in topics {
        importer.subscribe(&mut tx, &topic);
    }
    loop {
        let notification = tokio::select! {
            n = rx.next() => n,
            _ = shutdown.cancelled() => return,
        };
        match notification {
            Ok(Some(Notification::Forward(forward))) => {
                let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                importer.handle(&mut tx, &topic, &forward.publish.payload).await;
            }
            Ok(Some(Notification::Unschedule)) => {
                if rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

impl Importer {
    fn subscribe(&mut self, tx: &mut LinkTx, topic: &str) {
        if self.subscribed.insert(topic.to_string()) {
            let _ = tx.subscribe(topic.to_string());
        }
    }

    async fn handle(&mut self, tx: &mut LinkTx, topic: &str, payload: &[u8]) {
        if topic.starts_with("homeassistant/") && topic.ends_with("/config") {
            self.stats.configs.fetch_add(1, Ordering::Relaxed);
            match discovery::parse(topic, payload) {
                Ok(Discovery::Announce { device, entities }) => self.announce(tx, device, entities).await,
                Ok(Discovery::Remove { key_prefix }) => self.remove(&key_prefix).await,
                Ok(Discovery::Ignore(_)) => {}
                Err(error) => {
                    self.stats.configs_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%topic, %error, "Home Assistant discovery config ignored");
                }
            }
            return;
        }
        self.state(topic, payload).await;
    }

    async fn announce(&mut self, tx: &mut LinkTx, device: discovery::DeviceMeta, entities: Vec<Entity>) {
        let device_id = discovery::device_id(&device.identifier);
        let current = self.devices.entry(device_id.clone()).or_default();
        let new_device = current.is_empty();
        for entity in entities {
            current.retain(|e| e.key != entity.key);
            current.push(entity);
        }
        let entities = current.clone();
        for entity in &entities {
            self.subscribe(tx, &entity.state_topic);
        }
        let (id, meta) = (device_id.clone(), device.clone());
        let saved = self.store.run(move |conn| Ok(save(conn, &id, &meta, &entities)?)).await;
        if let Err(error) = saved {
            tracing::error!(%error, device = %device_id, "storing an imported device failed");
            return;
        }
        if new_device {
            tracing::info!(device = %device_id, name = device.name.as_deref().unwrap_or(""), "device discovered via Home Assistant discovery");
            let change =
                LifecycleChange { device_id, action: "discovered".into(), state: "discovered".into(), at: now_ms() };
            self.bus.publish(Event::DeviceLifecycle(Arc::new(change))).await;
        }
    }

    async fn remove(&mut self, key_prefix: &str) {
        let mut emptied = Vec::new();
        for (device_id, entities) in self.devices.iter_mut() {
            let before = entities.len();
            entities.retain(|e| e.key != key_prefix && !e.key.starts_with(&format!("{key_prefix}/")));
            if entities.len() != before {
                let (id, remaining) = (device_id.clone(), entities.clone());
                let _ = self.store.run(move |conn| Ok(save_entities(conn, &id, &remaining)?)).await;
                if entities.is_empty() {
                    emptied.push(device_id.clone());
                }
            }
        }
        for device_id in emptied {
            self.devices.remove(&device_id);
            let id = device_id.clone();
            let _ = self.store.run(move |conn| Ok(crate::lifecycle::db::delete(conn, &id, true)?)).await;
            tracing::info!(device = %device_id, "imported device removed (its last entity was removed)");
            let change = LifecycleChange { device_id, action: "deleted".into(), state: "deleted".into(), at: now_ms() };
            self.bus.publish(Event::DeviceLifecycle(Arc::new(change))).await;
        }
    }

    async fn state(&mut self, topic: &str, payload: &[u8]) {
        let mut per_device: HashMap<&str, Vec<(String, f64)>> = HashMap::new();
        for (device_id, entities) in &self.devices {
            for entity in entities.iter().filter(|e| e.state_topic == topic) {
                self.stats.states.fetch_add(1, Ordering::Relaxed);
                match discovery::extract(entity.value_template.as_deref(), payload) {
                    Some(value) => per_device.entry(device_id).or_default().push((entity.field.clone(), value)),
                    None => {
                        self.stats.states_unreadable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for (device_id, values) in per_device {
            if self.tags.get(device_id).is_some_and(|s| s.blocked) {
                continue;
            }
            let raw = serde_json::Value::Object(values.iter().map(|(k, v)| (k.clone(), (*v).into())).collect());
            let telemetry = LanTelemetry {
                device_id: device_id.to_string(),
                ts: now_ms(),
                values,
                raw,
                stored: Default::default(),
            };
            self.bus.publish(Event::Telemetry(Arc::new(telemetry))).await;
        }
    }
}

fn load(conn: &Connection) -> rusqlite::Result<HashMap<String, Vec<Entity>>> {
    let mut stmt = conn.prepare("SELECT id, integration FROM devices WHERE kind = 'homeassistant'")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?;
    let mut devices = HashMap::new();
    for row in rows {
        let (id, json) = row?;
        let entities: Vec<Entity> = json.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default();
        devices.insert(id, entities);
    }
    Ok(devices)
}

fn save(conn: &Connection, device_id: &str, meta: &discovery::DeviceMeta, entities: &[Entity]) -> rusqlite::Result<()> {
    let now = now_ms();
    let existing: Option<String> =
        conn.query_row("SELECT kind FROM devices WHERE id = ?1", [device_id], |r| r.get(0)).optional()?;
    if existing.is_none() {
        conn.execute(
            "INSERT INTO devices (id, kind, name, state, first_seen, last_seen, manufacturer, model, firmware, registered_at) \
             VALUES (?1, 'homeassistant', ?2, 'discovered', ?3, ?3, ?4, ?5, ?6, ?3)",
            params![device_id, meta.name, now, meta.manufacturer, meta.model, meta.sw_version],
        )?;
    } else {
        conn.execute(
            "UPDATE devices SET manufacturer = COALESCE(?2, manufacturer), model = COALESCE(?3, model), \
             firmware = COALESCE(?4, firmware), name = COALESCE(name, ?5) WHERE id = ?1",
            params![device_id, meta.manufacturer, meta.model, meta.sw_version, meta.name],
        )?;
    }
    save_entities(conn, device_id, entities)
}

/// Stores the entities, and the matching telemetry fields as the device's capabilities.
fn save_entities(conn: &Connection, device_id: &str, entities: &[Entity]) -> rusqlite::Result<()> {
    let telemetry: Vec<serde_json::Value> =
        entities.iter().map(|e| serde_json::json!({ "name": e.field, "unit": e.unit, "type": "number" })).collect();
    let capabilities = serde_json::json!({ "telemetry": telemetry, "commands": [] });
    conn.execute(
        "UPDATE devices SET integration = ?2, capabilities = ?3 WHERE id = ?1",
        params![device_id, serde_json::to_string(entities).unwrap_or_default(), capabilities.to_string()],
    )?;
    Ok(())
}
