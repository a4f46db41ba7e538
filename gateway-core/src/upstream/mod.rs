//! Upstream bridges: each `[[upstream]]` forwards chosen local topics to an external MQTT broker
//! (EMQX, HiveMQ, VerneMQ, Mosquitto…) under a per-gateway prefix, and accepts task requests
//! from it, which go through the same task state machine as the UI's. Messages are written to a
//! durable, bounded SQLite buffer ([`outbox`]) before they are sent and leave it only when the
//! upstream acknowledged them, so an unreachable upstream (or a restart) loses nothing within
//! the bounds, and what the bounds drop is counted.
//!
//! Per bridge, four tasks: the local intake (an in-process broker link subscribed to the
//! forwarded filters), the buffer writer, the connection ([`link`]) and the task-request worker.
//! One bus subscription routes task updates to the bridge whose request created the task.
//! Pure rules live in [`route`] and [`commands`]; "test connection" in [`probe`].

pub mod commands;
mod link;
pub mod outbox;
pub mod probe;
pub mod route;
pub(crate) mod tls;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttd::protocol::{Filter, Packet, QoS, RetainForwardRule, Subscribe};
use rumqttd::Notification;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::LinkFactory;
use crate::bus::{Event, Subscription};
use crate::config::UpstreamConfig;
use crate::reading::now_ms;
use crate::tasks::Tasks;
use outbox::{Depth, Outbox, Outgoing, Stored};
use probe::Stage;
use route::Endpoint;

/// Where the buffers live, inside the data directory.
pub const BUFFER_DIR: &str = "upstream";
const INTAKE_CAPACITY: usize = 8192;
const BATCH: usize = 512;
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// The events the bridges need (task changes, for answers to task requests).
pub fn wants(event: &Event) -> bool {
    matches!(event, Event::TaskUpdate(_))
}

/// One bridge's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub config: UpstreamConfig,
    pub endpoint: Endpoint,
    pub prefix: String,
    pub commands_topic: String,
    pub client_id: String,
    pub local_filters: Vec<String>,
}

impl Settings {
    pub fn new(config: &UpstreamConfig, gateway_id: &str, site: &str) -> Result<Settings, String> {
        route::validate(config, site).map_err(|(key, reason)| format!("upstream.{key}: {reason}"))?;
        let prefix = route::resolve_prefix(&config.prefix, gateway_id, site);
        Ok(Settings {
            name: config.name.clone(),
            endpoint: route::parse_url(&config.url)?,
            commands_topic: route::commands_topic(&prefix),
            client_id: match &config.client_id {
                Some(id) => id.replace("{gateway_id}", gateway_id),
                // Not `gatehouse-…`: a Gatehouse upstream reserves that prefix for its own links.
                None => format!("{gateway_id}-{}", config.name),
            },
            local_filters: route::local_filters(&config.forward, site)?,
            prefix,
            config: config.clone(),
        })
    }

    /// `created_by` of the tasks this bridge creates: `upstream:<name>`, then `#<ref>` if any.
    fn creator(&self, reference: Option<&str>) -> String {
        match reference {
            Some(reference) => format!("upstream:{}#{reference}", self.name),
            None => format!("upstream:{}", self.name),
        }
    }

    /// The operator's `ref` if this bridge created the task (`Some(None)`: created, no ref).
    fn created_here<'a>(&self, created_by: &'a str) -> Option<Option<&'a str>> {
        let rest = created_by.strip_prefix("upstream:")?.strip_prefix(self.name.as_str())?;
        match rest {
            "" => Some(None),
            _ => rest.strip_prefix('#').map(Some),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Connecting,
    Connected,
    /// Waiting before the next attempt.
    Waiting,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    pub stage: Stage,
    pub message: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    state: LinkState,
    since: i64,
    /// Failed attempts in a row.
    failures: u32,
    next_attempt_at: Option<i64>,
    last_error: Option<LastError>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeStats {
    /// Local messages matched by the forwarded filters.
    pub local_messages: AtomicU64,
    pub connects: AtomicU64,
    pub connection_failures: AtomicU64,
    pub commands_received: AtomicU64,
    pub commands_accepted: AtomicU64,
    /// Malformed, refused by the task service, or dropped because too many were waiting.
    pub commands_rejected: AtomicU64,
    /// Requests with a `ref` that already became a task.
    pub commands_duplicate: AtomicU64,
    /// Buffer writes that failed (disk full…); the messages of that batch are lost and counted.
    pub buffer_errors: AtomicU64,
    pub buffer_write_lost: AtomicU64,
}

pub struct Bridge {
    pub settings: Settings,
    pub stats: BridgeStats,
    outbox: Arc<Mutex<Outbox>>,
    status: Mutex<Status>,
    wake: Notify,
}

impl Bridge {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn depth(&self) -> Depth {
        self.outbox().depth()
    }

    fn set_state(&self, state: LinkState, error: Option<(Stage, String)>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.state != state {
            status.since = now_ms();
        }
        status.state = state;
        status.next_attempt_at = None;
        if state == LinkState::Connected {
            status.failures = 0;
        }
        if let Some((stage, message)) = error {
            status.last_error = Some(LastError { stage, message, at: now_ms() });
        }
    }

    fn failed(&self, stage: Stage, message: String, failures: u32, delay: Duration) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.state = LinkState::Waiting;
        status.since = now_ms();
        status.failures = failures;
        status.next_attempt_at = Some(now_ms() + delay.as_millis() as i64);
        status.last_error = Some(LastError { stage, message, at: now_ms() });
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Outbox) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || work(&mut outbox.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .unwrap_or_else(|_| Err(rusqlite::Error::InvalidQuery))
    }

    async fn pending_after(self: &Arc<Self>, cursor: i64, limit: usize) -> Vec<Stored> {
        match self.blocking(move |outbox| outbox.after(cursor, limit)).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(upstream = %self.settings.name, %error, "cannot read the upstream buffer");
                Vec::new()
            }
        }
    }

    async fn acknowledge(self: &Arc<Self>, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self.blocking(move |outbox| outbox.acknowledge(&ids)).await {
            // The messages stay buffered and are sent again: a duplicate, never a loss.
            tracing::error!(upstream = %self.settings.name, %error, "cannot record upstream acknowledgements");
        }
    }

    /// What the API and the status page show.
    pub fn report(&self) -> Value {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (depth, counters) = {
            let outbox = self.outbox();
            (outbox.depth(), outbox.counters())
        };
        let settings = &self.settings;
        json!({
            "name": settings.name,
            "url": settings.endpoint.to_string(),
            "username": settings.config.username,
            "tls": settings.endpoint.tls,
            "clientCertificate": settings.config.client_cert.is_some(),
            "clientId": settings.client_id,
            "prefix": settings.prefix,
            "forward": settings.local_filters,
            "commandsTopic": settings.config.commands.then_some(&settings.commands_topic),
            "status": status,
            "buffer": {
                "messages": depth.messages,
                "bytes": depth.bytes,
                "oldestAgeSeconds": depth.oldest_ms.map(|t| ((now_ms() - t).max(0)) / 1000),
                "maxBytes": settings.config.buffer_max_bytes,
                "maxAgeSeconds": settings.config.buffer_max_age.as_secs(),
            },
            "counters": counters,
            "stats": self.stats,
        })
    }
}

/// The bridges of a gateway, for the API.
#[derive(Clone, Default)]
pub struct Upstreams(Arc<Vec<Arc<Bridge>>>);

impl Upstreams {
    pub fn reports(&self) -> Vec<Value> {
        self.0.iter().map(|bridge| bridge.report()).collect()
    }

    pub fn find(&self, name: &str) -> Option<Arc<Bridge>> {
        self.0.iter().find(|bridge| bridge.settings.name == name).cloned()
    }

    pub fn bridges(&self) -> &[Arc<Bridge>] {
        &self.0
    }
}

/// Opens every bridge's buffer and starts its tasks on `tracker`.
#[allow(clippy::too_many_arguments)]
pub fn start(
    configs: &[UpstreamConfig],
    gateway_id: &str,
    site: &str,
    data_dir: &Path,
    links: LinkFactory,
    tasks: Tasks,
    events: Option<Subscription>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<Upstreams> {
    if configs.is_empty() {
        return Ok(Upstreams::default());
    }
    let dir = data_dir.join(BUFFER_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create the upstream buffer directory {}: {e}", dir.display()))?;
    let mut bridges = Vec::new();
    let mut intakes = Vec::new();
    for config in configs {
        let settings = Settings::new(config, gateway_id, site).map_err(anyhow::Error::msg)?;
        let path = dir.join(format!("{}.sqlite", settings.name));
        let outbox = Outbox::open(&path, config.buffer_max_bytes, config.buffer_max_age.as_millis() as i64)
            .map_err(|e| anyhow::anyhow!("cannot open the upstream buffer {}: {e}", path.display()))?;
        if outbox.depth().messages > 0 {
            tracing::info!(upstream = %settings.name, messages = outbox.depth().messages, "messages from before the restart are still buffered for the upstream broker");
        }
        let bridge = Arc::new(Bridge {
            settings,
            stats: BridgeStats::default(),
            outbox: Arc::new(Mutex::new(outbox)),
            status: Mutex::new(Status {
                state: LinkState::Connecting,
                since: now_ms(),
                failures: 0,
                next_attempt_at: None,
                last_error: None,
            }),
            wake: Notify::new(),
        });
        let (intake, intake_rx) = mpsc::channel(INTAKE_CAPACITY);
        let (commands, commands_rx) = mpsc::channel(256);
        tracker.spawn(write_buffer(bridge.clone(), intake_rx));
        tracker.spawn(read_local(links.clone(), bridge.clone(), intake.clone(), shutdown.clone()));
        tracker.spawn(link::run(bridge.clone(), commands, shutdown.clone()));
        tracker.spawn(handle_requests(bridge.clone(), tasks.clone(), commands_rx, intake.clone(), shutdown.clone()));
        tracing::info!(upstream = %bridge.settings.name, url = %bridge.settings.endpoint, prefix = %bridge.settings.prefix, forward = ?bridge.settings.local_filters, "upstream bridge configured");
        intakes.push((bridge.clone(), intake));
        bridges.push(bridge);
    }
    if let Some(events) = events {
        tracker.spawn(route_task_updates(intakes, events, shutdown));
    }
    Ok(Upstreams(Arc::new(bridges)))
}

/// Commits what the other tasks queue, in order, in batches; ends when they all have.
async fn write_buffer(bridge: Arc<Bridge>, mut intake: mpsc::Receiver<Outgoing>) {
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            first = intake.recv() => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match intake.try_recv() {
                        Ok(message) => batch.push(message),
                        Err(_) => break,
                    }
                }
                let count = batch.len() as u64;
                match bridge.blocking(move |outbox| outbox.append(&batch, now_ms())).await {
                    Ok(0) => {}
                    Ok(dropped) => tracing::warn!(upstream = %bridge.settings.name, dropped, max_bytes = bridge.settings.config.buffer_max_bytes, "upstream buffer full: the oldest messages were dropped"),
                    Err(error) => {
                        bridge.stats.buffer_errors.fetch_add(1, Ordering::Relaxed);
                        bridge.stats.buffer_write_lost.fetch_add(count, Ordering::Relaxed);
                        tracing::error!(upstream = %bridge.settings.name, %error, lost = count, "cannot write the upstream buffer (disk full?); these messages are not forwarded");
                    }
                }
                bridge.wake.notify_one();
            }
            _ = expire.tick() => {
                match bridge.blocking(|outbox| outbox.expire(now_ms())).await {
                    Ok(0) => {}
                    Ok(dropped) => tracing::warn!(upstream = %bridge.settings.name, dropped, max_age = ?bridge.settings.config.buffer_max_age, "upstream buffer: messages too old to send were dropped"),
                    Err(error) => tracing::error!(upstream = %bridge.settings.name, %error, "cannot expire the upstream buffer"),
                }
            }
        }
    }
}

/// Reads the forwarded topics from the broker, retained ones included, into the buffer.
async fn read_local(
    links: LinkFactory,
    bridge: Arc<Bridge>,
    intake: mpsc::Sender<Outgoing>,
    shutdown: CancellationToken,
) {
    let client_id = format!("{}-upstream-{}", crate::topics::RESERVED_CLIENT_PREFIX, bridge.settings.name);
    let (mut tx, mut rx) = match tokio::task::spawn_blocking(move || links(&client_id, true)).await {
        Ok(Ok((tx, rx, _))) => (tx, rx),
        other => {
            tracing::error!(upstream = %bridge.settings.name, error = ?other.err(), "the upstream bridge cannot attach to the broker; nothing is forwarded");
            return;
        }
    };
    let filters = bridge
        .settings
        .local_filters
        .iter()
        .map(|path| Filter {
            path: path.clone(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            // Retained status topics are forwarded at start, so upstream has the current state.
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        })
        .collect();
    let _ = tx.send(Packet::Subscribe(Subscribe { pkid: 0, filters }, None)).await;
    let prefix = bridge.settings.prefix.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            notification = rx.next() => match notification {
                Ok(Some(Notification::Forward(forward))) => {
                    let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                    bridge.stats.local_messages.fetch_add(1, Ordering::Relaxed);
                    let message = Outgoing {
                        retain: route::retained_upstream(&topic),
                        topic: route::upstream_topic(&prefix, &topic),
                        payload: forward.publish.payload.to_vec(),
                    };
                    if intake.send(message).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Notification::Unschedule)) => {
                    if rx.wake().await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
        }
    }
}

/// Turns task requests from upstream into tasks, one at a time, in arrival order.
async fn handle_requests(
    bridge: Arc<Bridge>,
    tasks: Tasks,
    mut requests: mpsc::Receiver<Vec<u8>>,
    intake: mpsc::Sender<Outgoing>,
    shutdown: CancellationToken,
) {
    let name = bridge.settings.name.clone();
    loop {
        let payload = tokio::select! {
            _ = shutdown.cancelled() => return,
            payload = requests.recv() => match payload { Some(p) => p, None => return },
        };
        let refusal = match commands::parse_request(&payload) {
            Err(refusal) => refusal,
            Ok(request) => {
                if let Some(reference) = request.reference.clone() {
                    let known = bridge.blocking(move |outbox| outbox.task_for_ref(&reference)).await;
                    if let Ok(Some(task_id)) = known {
                        bridge.stats.commands_duplicate.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(upstream = %name, task = %task_id, "task request repeated with the same ref; answering with the task's state");
                        if let Ok(Some((task, _))) = tasks.get(&task_id).await {
                            let payload = commands::state_payload(&task, request.reference.as_deref());
                            let _ = intake
                                .send(Outgoing {
                                    topic: route::task_state_topic(&bridge.settings.prefix, &task.id),
                                    payload: payload.to_string().into_bytes(),
                                    retain: false,
                                })
                                .await;
                        }
                        continue;
                    }
                }
                let creator = bridge.settings.creator(request.reference.as_deref());
                let command = request.task.command.clone();
                match tasks.create(&request.device, request.task, &creator).await {
                    Ok(task) => {
                        bridge.stats.commands_accepted.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(upstream = %name, device = %task.device_id, command = %task.command, task = %task.id, "task created from upstream");
                        if let Some(reference) = request.reference {
                            let task_id = task.id.clone();
                            let _ = bridge
                                .blocking(move |outbox| outbox.remember_ref(&reference, &task_id, now_ms()))
                                .await;
                        }
                        continue;
                    }
                    Err(error) => commands::Refusal {
                        reference: request.reference,
                        device: Some(request.device),
                        command: Some(command),
                        error: error.to_string(),
                    },
                }
            }
        };
        bridge.stats.commands_rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(upstream = %name, error = %refusal.error, "task request from upstream refused");
        let payload = commands::rejection_payload(&refusal, now_ms());
        let _ = intake
            .send(Outgoing {
                topic: route::rejected_topic(&bridge.settings.prefix),
                payload: payload.to_string().into_bytes(),
                retain: false,
            })
            .await;
    }
}

/// Every change of a task a bridge created goes back up that bridge.
async fn route_task_updates(
    bridges: Vec<(Arc<Bridge>, mpsc::Sender<Outgoing>)>,
    mut events: Subscription,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event { Some(e) => e, None => return },
        };
        let Event::TaskUpdate(task) = event else { continue };
        let Some(created_by) = task.created_by.as_deref() else { continue };
        for (bridge, intake) in &bridges {
            if let Some(reference) = bridge.settings.created_here(created_by) {
                let payload = commands::state_payload(&task, reference);
                let message = Outgoing {
                    topic: route::task_state_topic(&bridge.settings.prefix, &task.id),
                    payload: payload.to_string().into_bytes(),
                    retain: false,
                };
                let _ = intake.send(message).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_what_metrics_and_the_ui_read() {
        let dir = tempfile::tempdir().unwrap();
        let config: UpstreamConfig =
            toml::from_str("name = \"fleet\"\nurl = \"mqtts://b\"\nusername = \"gw\"\npassword = \"pw\"").unwrap();
        let outbox = Outbox::open(&dir.path().join("fleet.sqlite"), 10_000, 60_000).unwrap();
        let bridge = Bridge {
            settings: Settings::new(&config, "pi-1", "home").unwrap(),
            stats: BridgeStats::default(),
            outbox: Arc::new(Mutex::new(outbox)),
            status: Mutex::new(Status {
                state: LinkState::Connecting,
                since: 0,
                failures: 0,
                next_attempt_at: None,
                last_error: None,
            }),
            wake: Notify::new(),
        };
        bridge.failed(Stage::Auth, "the broker refused the username or password".into(), 2, Duration::from_secs(4));
        let report = bridge.report();
        for pointer in [
            "/status/state",
            "/status/failures",
            "/status/lastError/stage",
            "/status/nextAttemptAt",
            "/buffer/messages",
            "/buffer/bytes",
            "/buffer/maxBytes",
            "/counters/delivered",
            "/counters/droppedSize",
            "/counters/droppedAge",
            "/stats/connectionFailures",
            "/stats/commandsAccepted",
            "/stats/commandsRejected",
            "/stats/commandsDuplicate",
        ] {
            assert!(report.pointer(pointer).is_some_and(|v| !v.is_null()), "{pointer} in {report}");
        }
        assert_eq!(report["status"]["state"], "waiting");
        assert_eq!(report["status"]["lastError"]["stage"], "auth");
        assert_eq!(report["url"], "mqtts://b:8883");
        assert!(!report.to_string().contains("\"pw\""), "no password in {report}");
    }

    #[test]
    fn creators_carry_the_reference() {
        let config: UpstreamConfig = toml::from_str("name = \"fleet\"\nurl = \"mqtt://b\"").unwrap();
        let settings = Settings::new(&config, "pi-1", "home").unwrap();
        assert_eq!(settings.prefix, "gatehouse/pi-1");
        assert_eq!(settings.client_id, "pi-1-fleet");
        assert_eq!(settings.creator(Some("op-1")), "upstream:fleet#op-1");
        for (created_by, expected) in [
            ("upstream:fleet#op-1", Some(Some("op-1"))),
            ("upstream:fleet", Some(None)),
            ("upstream:fleet2", None),
            ("upstream:flee", None),
            ("homeassistant", None),
        ] {
            assert_eq!(settings.created_here(created_by), expected, "{created_by}");
        }
    }
}
