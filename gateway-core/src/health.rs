//! The gateway's health report: one snapshot of every subsystem's counters, served at
//! `GET /api/health` and used by the CLI. Rejected input is counted here, visibly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::ble::{BleReport, BleStatus};
use crate::broker::{BrokerSnapshot, BrokerStats};
use crate::bus::{Bus, BusSnapshot};
use crate::lifecycle::LifecycleStats;
use crate::pipeline::{PipelineSnapshot, PipelineStats};
use crate::registry::Registry;
use crate::store::{StoreSnapshot, StoreStats};

#[derive(Clone)]
pub struct Health {
    pub started: Instant,
    pub clock: Arc<crate::clock::ClockStats>,
    pub site: String,
    pub mqtt_addr: SocketAddr,
    pub database: String,
    pub pipeline: Arc<PipelineStats>,
    pub store: Arc<StoreStats>,
    pub broker: Arc<BrokerStats>,
    pub bus: Bus,
    pub registry: Registry,
    pub bluetooth: Arc<BleStatus>,
    pub simulator: Option<SimulatorInfo>,
    pub lifecycle: Arc<LifecycleStats>,
    pub homeassistant_import: Arc<crate::ha_import::ImportStats>,
    pub homeassistant: Arc<crate::homeassistant::HomeAssistantStats>,
    pub receivers: Arc<crate::receivers::IngestStats>,
    pub tasks: Arc<crate::tasks::TaskStats>,
    pub alerts: Arc<crate::alerts::AlertStats>,
    pub alert_webhooks: Arc<crate::alerts::webhooks::WebhookStats>,
    pub device_config: Arc<crate::device_config::ConfigStats>,
    pub upstreams: crate::upstream::Upstreams,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleReport {
    pub registrations: u64,
    pub registrations_rejected: u64,
    pub claims: u64,
    pub claim_failures: u64,
    pub claim_lockouts: u64,
    pub alerts_recorded: u64,
    pub alerts_rejected: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SimulatorInfo {
    pub tags: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok`, or `degraded` when the store cannot write.
    pub status: &'static str,
    pub version: &'static str,
    pub site: String,
    pub uptime_seconds: u64,
    /// The gateway's clock now and the steps of the system clock seen since the start.
    pub clock: crate::clock::ClockReport,
    pub mqtt: MqttReport,
    pub devices_online: usize,
    pub pipeline: PipelineSnapshot,
    pub store: StoreReport,
    pub bus: BusSnapshot,
    /// Heap in use, kept by the allocator, and held by SQLite.
    pub memory: crate::memory::MemoryReport,
    /// The local scanner: state, adapter, rate, recoveries, errors.
    pub bluetooth: BleReport,
    pub simulator: Option<SimulatorInfo>,
    pub lifecycle: LifecycleReport,
    /// Home Assistant discovery import: configs seen and rejected, state messages and unreadable ones.
    pub homeassistant_import: serde_json::Value,
    /// Home Assistant discovery: configs published and removed, commands received, accepted and
    /// refused (malformed, unknown device or command, refused by the task service).
    pub homeassistant: serde_json::Value,
    /// Remote receivers: HTTP posts and MQTT messages accepted and refused.
    pub receivers: serde_json::Value,
    /// Tasks created, sent, re-sent, finished by outcome, retried; responses ignored or malformed.
    pub tasks: serde_json::Value,
    /// Alerts raised, cleared and acknowledged by the gateway's rules and people.
    pub alerts: serde_json::Value,
    /// Alert webhook deliveries: delivered, failed attempts, given up, dropped.
    pub alert_webhooks: serde_json::Value,
    /// Desired configurations changed and sent, device reports (malformed ones counted).
    pub device_config: serde_json::Value,
    /// Upstream bridges: connection state, last error by stage, buffer depth, delivered and
    /// dropped messages, task requests.
    pub upstreams: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MqttReport {
    pub listen: String,
    #[serde(flatten)]
    pub broker: BrokerSnapshot,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreReport {
    pub database: String,
    #[serde(flatten)]
    pub writer: StoreSnapshot,
}

impl Health {
    pub fn report(&self) -> HealthReport {
        let store = self.store.snapshot();
        HealthReport {
            status: if store.last_error.is_some() && store.queue_depth > 0 { "degraded" } else { "ok" },
            version: env!("CARGO_PKG_VERSION"),
            site: self.site.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            clock: self.clock.report(),
            mqtt: MqttReport { listen: self.mqtt_addr.to_string(), broker: self.broker.snapshot() },
            devices_online: self.registry.online_count(),
            pipeline: self.pipeline.snapshot(),
            store: StoreReport { database: self.database.clone(), writer: store },
            bus: self.bus.snapshot(),
            memory: crate::memory::report(),
            bluetooth: self.bluetooth.report(),
            simulator: self.simulator.clone(),
            lifecycle: {
                let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                let l = &self.lifecycle;
                LifecycleReport {
                    registrations: get(&l.registrations),
                    registrations_rejected: get(&l.registrations_rejected),
                    claims: get(&l.claims),
                    claim_failures: get(&l.claim_failures),
                    claim_lockouts: get(&l.claim_lockouts),
                    alerts_recorded: get(&l.alerts_recorded),
                    alerts_rejected: get(&l.alerts_rejected),
                }
            },
            homeassistant_import: serde_json::to_value(&*self.homeassistant_import).unwrap_or_default(),
            homeassistant: serde_json::to_value(&*self.homeassistant).unwrap_or_default(),
            receivers: serde_json::to_value(&*self.receivers).unwrap_or_default(),
            tasks: serde_json::to_value(&*self.tasks).unwrap_or_default(),
            alerts: serde_json::to_value(&*self.alerts).unwrap_or_default(),
            alert_webhooks: self.alert_webhooks.snapshot(),
            device_config: serde_json::to_value(&*self.device_config).unwrap_or_default(),
            upstreams: self.upstreams.reports(),
        }
    }
}
