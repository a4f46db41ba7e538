//! The typed in-process event bus that joins the gateway's modules. Producers publish [`Event`]s;
//! every module that cares subscribes. Modules never call each other directly.
//!
//! Two kinds of subscription:
//! - *reliable* ([`Bus::subscribe_reliable`]): a bounded queue per subscriber for the events its
//!   filter accepts; `publish` waits for room, so back-pressure reaches the producer and nothing is
//!   lost. For the store, the MQTT publisher, the lifecycle. A reliable subscriber must never
//!   publish an event its own filter accepts (a full queue would wait on itself).
//! - *lossy* ([`Bus::subscribe`]): a broadcast receiver; a subscriber more than the broadcast
//!   capacity behind loses the oldest events, counted in [`BusSnapshot::lagged`] and logged. For
//!   views that only need the latest state (the registry, WebSocket clients).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::reading::Reading;

#[derive(Debug, Clone)]
pub enum Event {
    /// A decoded, de-duplicated measurement from a device.
    Reading(Arc<Reading>),
    /// A device the gateway had never seen before.
    DeviceDiscovered(Arc<DeviceInfo>),
    /// A device went online (a reading after silence) or offline (silent for too long).
    Availability(Availability),
    /// An MQTT client completed CONNECT.
    ClientConnected(Arc<ClientInfo>),
    /// An MQTT client's session ended.
    ClientDisconnected { client: Arc<ClientInfo>, reason: String, at: i64 },
    /// An identity lost access (disabled, deleted, secret rotated): its sessions must end.
    IdentityRevoked { username: String, reason: &'static str },
    /// A device's SUBSCRIBE that the ACL let through, after it was handed to the router: from
    /// now on the device receives what is published on `filters` (its commands, its config).
    DeviceSubscribed { client: Arc<ClientInfo>, filters: Vec<String> },
    /// A PUBLISH from a device or provisioning client that the ACL let through.
    DeviceMessage(Arc<DeviceMessage>),
    /// Validated telemetry from a LAN device (its declared numeric and boolean fields).
    Telemetry(Arc<LanTelemetry>),
    /// An alert was raised (by a device or a gateway rule), cleared or acknowledged.
    Alert(Arc<AlertRecord>),
    /// A message the gateway wants published on its own broker.
    MqttPublish(Arc<OutgoingMessage>),
    /// A device's lifecycle changed (registered, claimed, deactivated, deleted…).
    DeviceLifecycle(Arc<LifecycleChange>),
    /// A task changed state (created, sent, delivered, finished…).
    TaskUpdate(Arc<crate::tasks::Task>),
    /// A device's desired configuration changed or was sent, or the device reported on it.
    ConfigUpdate(Arc<crate::device_config::ConfigView>),
}

#[derive(Debug, Clone)]
pub struct DeviceMessage {
    pub client: Arc<ClientInfo>,
    pub topic: String,
    pub payload: bytes::Bytes,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LanTelemetry {
    pub device_id: String,
    /// The device's own timestamp when it sent one, else reception time (ms).
    pub ts: i64,
    /// Numeric values (booleans as 0/1) of the declared fields present in the message.
    pub values: Vec<(String, f64)>,
    /// The message as the device sent it.
    pub raw: serde_json::Value,
    /// Fired by the store writer once the message is committed: the broker holds a QoS 1
    /// PUBACK until then, so an acknowledged message survives a crash.
    #[serde(skip)]
    pub stored: StoredSignal,
}

/// A one-time "committed to SQLite" signal carried by an event (empty for events nobody waits on).
#[derive(Clone, Default)]
pub struct StoredSignal(Option<Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>>);

impl StoredSignal {
    /// A signal and the receiver that resolves when it fires (or closes if it never can).
    pub fn new() -> (StoredSignal, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (StoredSignal(Some(Arc::new(std::sync::Mutex::new(Some(tx))))), rx)
    }

    pub fn fire(&self) {
        if let Some(slot) = &self.0 {
            if let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(());
            }
        }
    }
}

impl std::fmt::Debug for StoredSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "StoredSignal(waited on)" } else { "StoredSignal(none)" })
    }
}

/// Signals say nothing about the message itself.
impl PartialEq for StoredSignal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    pub id: i64,
    pub device_id: String,
    pub site: String,
    pub ts: i64,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub code: Option<String>,
    pub message: String,
    /// `device` (raised by the device) or `rule:<name>`.
    pub source: String,
    pub details: Option<serde_json::Value>,
    /// `active`, or `cleared` once a rule's condition is over.
    pub state: String,
    /// The gateway rule that raised it, if any.
    pub rule_id: Option<i64>,
    pub cleared_at: Option<i64>,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
}

#[cfg(test)]
impl AlertRecord {
    /// An active device alert with placeholder text, for tests to adjust.
    pub fn example(state: &str, cleared_at: Option<i64>, acknowledged_at: Option<i64>) -> AlertRecord {
        AlertRecord {
            id: 1,
            device_id: "d".into(),
            site: "home".into(),
            ts: 1,
            severity: "warning".into(),
            code: None,
            message: "m".into(),
            source: "device".into(),
            details: None,
            state: state.into(),
            rule_id: None,
            cleared_at,
            acknowledged_at,
            acknowledged_by: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub retain: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleChange {
    pub device_id: String,
    /// `registered`, `claimed`, `approved`, `deactivated`, `deleted`, `capabilities_updated`…
    pub action: String,
    /// The device's state afterwards (`pending_claim`, `active`, `deactivated`, or `deleted`).
    pub state: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    pub client_id: String,
    pub username: Option<String>,
    pub role: Option<String>,
    pub site: Option<String>,
    pub address: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// `3.1.1` or `5`.
    pub protocol: &'static str,
    /// `password` or `certificate`.
    pub authentication: &'static str,
    pub connected_at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub device_id: String,
    pub kind: String,
    pub mac: Option<String>,
    pub first_seen: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub device_id: String,
    pub online: bool,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BusSnapshot {
    pub published: u64,
    /// Events that some lossy subscriber lost because it fell too far behind.
    pub lagged: u64,
}

#[derive(Debug, Default)]
struct Stats {
    published: AtomicU64,
    lagged: AtomicU64,
}

/// Which events a reliable subscriber wants queued.
pub type EventFilter = fn(&Event) -> bool;

struct ReliableSender {
    wants: EventFilter,
    sender: mpsc::Sender<Event>,
}

struct Inner {
    broadcast: broadcast::Sender<Event>,
    reliable: RwLock<Arc<Vec<ReliableSender>>>,
    stats: Stats,
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl Bus {
    /// `capacity`: how far a lossy subscriber may fall behind before it loses events.
    pub fn new(capacity: usize) -> Bus {
        let (broadcast, _) = broadcast::channel(capacity);
        Bus {
            inner: Arc::new(Inner { broadcast, reliable: RwLock::new(Arc::new(Vec::new())), stats: Stats::default() }),
        }
    }

    /// Delivers to every reliable subscriber (waiting for room) and then to the lossy ones.
    pub async fn publish(&self, event: Event) {
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
        let reliable = self.inner.reliable.read().unwrap_or_else(|p| p.into_inner()).clone();
        for subscriber in reliable.iter().filter(|s| (s.wants)(&event)) {
            // A closed subscriber has stopped (shutdown); it needs nothing more.
            let _ = subscriber.sender.send(event.clone()).await;
        }
        let _ = self.inner.broadcast.send(event);
    }

    /// A lossy subscription; `name` identifies it in lag warnings.
    pub fn subscribe(&self, name: &'static str) -> Subscription {
        Subscription { name, receiver: Receiver::Lossy(self.inner.broadcast.subscribe()), bus: self.inner.clone() }
    }

    /// A subscription that never loses the events `wants` accepts: publishers wait while its
    /// `capacity` is full. A subscriber must never publish an event its own filter accepts, or a
    /// full queue would wait on itself.
    pub fn subscribe_reliable(&self, name: &'static str, capacity: usize, wants: EventFilter) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity);
        let mut reliable = self.inner.reliable.write().unwrap_or_else(|p| p.into_inner());
        let mut senders: Vec<ReliableSender> = reliable
            .iter()
            .filter(|s| !s.sender.is_closed())
            .map(|s| ReliableSender { wants: s.wants, sender: s.sender.clone() })
            .collect();
        senders.push(ReliableSender { wants, sender: tx });
        *reliable = Arc::new(senders);
        Subscription { name, receiver: Receiver::Reliable(rx), bus: self.inner.clone() }
    }

    pub fn snapshot(&self) -> BusSnapshot {
        BusSnapshot {
            published: self.inner.stats.published.load(Ordering::Relaxed),
            lagged: self.inner.stats.lagged.load(Ordering::Relaxed),
        }
    }
}

enum Receiver {
    Lossy(broadcast::Receiver<Event>),
    Reliable(mpsc::Receiver<Event>),
}

pub struct Subscription {
    name: &'static str,
    receiver: Receiver,
    bus: Arc<Inner>,
}

impl Subscription {
    /// The next event, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        match &mut self.receiver {
            Receiver::Reliable(rx) => rx.recv().await,
            Receiver::Lossy(rx) => loop {
                match rx.recv().await {
                    Ok(event) => return Some(event),
                    Err(broadcast::error::RecvError::Lagged(lost)) => count_lag(&self.bus, self.name, lost),
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        }
    }

    /// An event that is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        match &mut self.receiver {
            Receiver::Reliable(rx) => rx.try_recv().ok(),
            Receiver::Lossy(rx) => loop {
                match rx.try_recv() {
                    Ok(event) => return Some(event),
                    Err(broadcast::error::TryRecvError::Lagged(lost)) => count_lag(&self.bus, self.name, lost),
                    Err(_) => return None,
                }
            },
        }
    }
}

fn count_lag(bus: &Inner, name: &'static str, lost: u64) {
    bus.stats.lagged.fetch_add(lost, Ordering::Relaxed);
    tracing::warn!(subscriber = name, lost, "event bus subscriber fell behind and lost events");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn availability(i: i64) -> Event {
        Event::Availability(Availability { device_id: "d".into(), online: true, at: i })
    }

    fn at(event: Option<Event>) -> Option<i64> {
        match event {
            Some(Event::Availability(a)) => Some(a.at),
            _ => None,
        }
    }

    #[tokio::test]
    async fn reliable_subscribers_get_everything_lossy_ones_count_their_losses() {
        let bus = Bus::new(4);
        let mut reliable = bus.subscribe_reliable("store", 2, |_| true);
        let mut lossy = bus.subscribe("view");
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    bus.publish(availability(i)).await;
                }
            })
        };
        // The reliable queue holds 2: the publisher waits for us, so nothing is lost.
        let mut received = Vec::new();
        for _ in 0..100 {
            received.push(at(reliable.recv().await).unwrap());
        }
        publisher.await.unwrap();
        assert_eq!(received, (0..100).collect::<Vec<_>>());
        // The lossy subscriber never read: it keeps the newest 4 and counts the rest as lost.
        let mut kept = Vec::new();
        while let Some(event) = lossy.try_recv() {
            kept.push(at(Some(event)).unwrap());
        }
        assert_eq!(kept, vec![96, 97, 98, 99]);
        assert_eq!(bus.snapshot(), BusSnapshot { published: 100, lagged: 96 });
    }

    #[tokio::test]
    async fn a_dropped_reliable_subscriber_does_not_block_publishers() {
        let bus = Bus::new(4);
        let gone = bus.subscribe_reliable("gone", 1, |_| true);
        drop(gone);
        for i in 0..10 {
            bus.publish(availability(i)).await;
        }
        assert_eq!(bus.snapshot().published, 10);
    }
}
