//! Config push: a desired configuration per LAN device, versioned. It is checked against the
//! schema the device declared, stored, sent on `devices/{site}/{id}/config` when it changes and
//! again whenever the device subscribes while it has not applied the latest version; the device
//! reports the version it applied (or refused) on `…/config_reported`. The API shows desired
//! next to reported. docs/protocol.md has the device's side.

pub mod db;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Event, OutgoingMessage, Subscription};
use crate::lifecycle::{db as lifecycle_db, Capabilities};
use crate::reading::now_ms;
use crate::store::{Store, StoreError};
use crate::topics;

/// The payload format version on the config topic.
pub const CONFIG_VERSION: u32 = 1;
/// Larger configurations are refused (devices have little memory).
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    pub device_id: String,
    pub desired: Value,
    pub version: i64,
    pub updated_at: i64,
    pub updated_by: Option<String>,
    /// When the current version was last published to the device.
    pub sent_at: Option<i64>,
    pub reported: Option<Reported>,
    /// The device reported applying exactly the desired version.
    pub in_sync: bool,
}

/// What the device said about a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    pub version: i64,
    /// `applied` or `rejected`.
    pub status: String,
    pub message: Option<String>,
    pub at: i64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStats {
    pub updated: AtomicU64,
    pub sent: AtomicU64,
    pub reports: AtomicU64,
    /// Reports that were not valid JSON of the documented shape: logged and ignored.
    pub malformed_reports: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no device with id `{0}`")]
    UnknownDevice(String),
    #[error("device `{0}` is {1}; only active LAN devices take a configuration")]
    NotActive(String, String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Parses a device's report: `{"version": 3, "status": "applied"|"rejected", "message": "…"}`.
pub fn parse_report(payload: &[u8], now: i64) -> Result<Reported, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        version: u32,
        status: String,
        message: Option<String>,
    }
    let wire: Wire = serde_json::from_slice(payload).map_err(|e| format!("not a config report: {e}"))?;
    if wire.status != "applied" && wire.status != "rejected" {
        return Err(format!("status `{}`: use applied or rejected", wire.status));
    }
    let message = wire.message.map(|m| m.chars().take(500).collect());
    Ok(Reported { version: wire.version.into(), status: wire.status, message, at: now })
}

/// The handle the API uses. Cheap to clone.
#[derive(Clone)]
pub struct Configs {
    store: Store,
    bus: Bus,
    pub stats: Arc<ConfigStats>,
}

impl Configs {
    pub fn new(store: Store, bus: Bus) -> Configs {
        Configs { store, bus, stats: Arc::default() }
    }

    pub async fn get(&self, device_id: &str) -> Result<Option<ConfigView>, ConfigError> {
        let id = device_id.to_string();
        Ok(self.store.run(move |conn| Ok(db::get(conn, &id)?)).await?)
    }

    /// Checks `desired` against the device's declared schema, stores it as the next version and
    /// sends it (a device that is offline gets it when it next subscribes).
    pub async fn set(&self, device_id: &str, desired: Value, by: &str) -> Result<ConfigView, ConfigError> {
        let id = device_id.to_string();
        let device = self.store.run(move |conn| Ok(lifecycle_db::device(conn, &id)?)).await?;
        let device = device.ok_or_else(|| ConfigError::UnknownDevice(device_id.into()))?;
        if device.kind != "lan" || device.state != "active" {
            return Err(ConfigError::NotActive(device_id.into(), format!("{} ({})", device.state, device.kind)));
        }
        if !desired.is_object() {
            return Err(ConfigError::Invalid("the configuration must be a JSON object".into()));
        }
        let text = desired.to_string();
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid(format!("the configuration is larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let capabilities: Capabilities =
            device.capabilities.and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default();
        if let Some(schema) = &capabilities.config {
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| ConfigError::Invalid(format!("the device's config schema is invalid: {e}")))?;
            let problem = validator.iter_errors(&desired).next().map(|error| {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() { "(config)".to_string() } else { at };
                format!("does not match the device's config schema: {at}: {error}")
            });
            if let Some(problem) = problem {
                return Err(ConfigError::Invalid(problem));
            }
        }
        let (id, by) = (device_id.to_string(), by.to_string());
        let view = self
            .store
            .run(move |conn| {
                db::set_desired(conn, &id, &text, &by, now_ms())?;
                Ok(db::get(conn, &id)?)
            })
            .await?
            .ok_or_else(|| ConfigError::UnknownDevice(device_id.into()))?;
        self.stats.updated.fetch_add(1, Ordering::Relaxed);
        tracing::info!(device = %device_id, version = view.version, "desired configuration changed");
        let site = device.site.unwrap_or_default();
        let view = self.send(&site, view).await?;
        Ok(view)
    }

    /// Publishes the desired configuration (never retained: the gateway re-sends it itself).
    async fn send(&self, site: &str, view: ConfigView) -> Result<ConfigView, ConfigError> {
        let payload = json!({ "v": CONFIG_VERSION, "version": view.version, "config": view.desired, "updatedAt": view.updated_at });
        let message = OutgoingMessage {
            topic: topics::device_topic(site, &view.device_id, "config"),
            payload: payload.to_string().into(),
            retain: false,
        };
        self.bus.publish(Event::MqttPublish(Arc::new(message))).await;
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let id = view.device_id.clone();
        let now = now_ms();
        self.store.run(move |conn| Ok(db::mark_sent(conn, &id, now)?)).await?;
        let view = ConfigView { sent_at: Some(now), ..view };
        self.bus.publish(Event::ConfigUpdate(Arc::new(view.clone()))).await;
        Ok(view)
    }
}

/// The events [`run`] handles: a device subscribing to its config, and its reports.
pub fn wants(event: &Event) -> bool {
    match event {
        Event::DeviceSubscribed { filters, .. } => filters.iter().any(|f| f.ends_with("/config")),
        Event::DeviceMessage(m) => m.client.role.as_deref() == Some("device") && m.topic.ends_with("/config_reported"),
        _ => false,
    }
}

pub async fn run(configs: Configs, mut events: Subscription, shutdown: CancellationToken) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.cancelled() => return,
        };
        let result = match event {
            Some(Event::DeviceSubscribed { client, .. }) => {
                resend(&configs, &client.client_id, client.site.as_deref()).await
            }
            Some(Event::DeviceMessage(message)) => report(&configs, &message.client.client_id, &message.payload).await,
            Some(_) => Ok(()),
            None => return,
        };
        if let Err(error) = result {
            tracing::error!(%error, "device configuration: store error");
        }
    }
}

/// On (re)subscription: send the desired configuration unless the device applied it already.
async fn resend(configs: &Configs, device_id: &str, site: Option<&str>) -> Result<(), ConfigError> {
    let Some(view) = configs.get(device_id).await? else { return Ok(()) };
    if view.reported.as_ref().is_some_and(|r| r.version == view.version) {
        return Ok(());
    }
    configs.send(site.unwrap_or_default(), view).await?;
    Ok(())
}

async fn report(configs: &Configs, device_id: &str, payload: &[u8]) -> Result<(), ConfigError> {
    let reported = match parse_report(payload, now_ms()) {
        Ok(reported) => reported,
        Err(error) => {
            configs.stats.malformed_reports.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %device_id, %error, "config report ignored");
            return Ok(());
        }
    };
    configs.stats.reports.fetch_add(1, Ordering::Relaxed);
    let id = device_id.to_string();
    let row = reported.clone();
    let view = configs
        .store
        .run(move |conn| {
            db::set_reported(conn, &id, &row)?;
            Ok(db::get(conn, &id)?)
        })
        .await?;
    if reported.status == "rejected" {
        tracing::warn!(device = %device_id, version = reported.version, message = ?reported.message, "the device refused its configuration");
    }
    if let Some(view) = view {
        configs.bus.publish(Event::ConfigUpdate(Arc::new(view))).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_table() {
        type Expected = Result<(i64, &'static str), &'static str>;
        let cases: &[(&str, Expected)] = &[
            (r#"{"version": 3, "status": "applied"}"#, Ok((3, "applied"))),
            (r#"{"version": 4, "status": "rejected", "message": "too fast"}"#, Ok((4, "rejected"))),
            (r#"{"version": 4, "status": "done"}"#, Err("use applied or rejected")),
            (r#"{"version": -1, "status": "applied"}"#, Err("not a config report")),
            (r#"{"status": "applied"}"#, Err("missing field `version`")),
            (r#"{"version": 1, "status": "applied", "extra": 1}"#, Err("unknown field")),
            ("not json", Err("not a config report")),
        ];
        for (payload, expected) in cases {
            let got = parse_report(payload.as_bytes(), 7);
            match (got, expected) {
                (Ok(r), Ok((version, status))) => {
                    assert_eq!((r.version, r.status.as_str(), r.at), (*version, *status, 7))
                }
                (Err(e), Err(mentions)) => assert!(e.contains(mentions), "{payload}: {e}"),
                (got, _) => panic!("{payload}: {got:?}"),
            }
        }
    }
}
