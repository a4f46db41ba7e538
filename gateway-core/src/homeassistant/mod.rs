//! Home Assistant MQTT discovery, publishing side: Gatehouse, its adopted Ruuvi tags and its
//! active LAN devices appear in Home Assistant with no configuration (device-based discovery,
//! retained configs under `<prefix>/device/<object id>/config`). Declared commands become
//! buttons and selects whose presses arrive on `gatehouse/{site}/ha/{device}/{command}/set` and
//! become real tasks (acknowledged, retried); each task's progress is published on
//! `…/{command}/task`. Configs are re-published when Home Assistant announces itself
//! (`<prefix>/status` = `online`) and removed (empty retained config) when a device is
//! deactivated, deleted, ignored or blocked.
//!
//! One capability module: it starts with the gateway (when `homeassistant.enabled`), listens on
//! the bus (`DeviceLifecycle`, `TaskUpdate`) and talks to the broker over its own in-process
//! link. The payloads are built by the pure functions in [`discovery`] and [`commands`].

pub mod commands;
pub mod discovery;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttd::local::LinkTx;
use rumqttd::protocol::{Packet, Publish};
use rumqttd::Notification;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::broker::LinkFactory;
use crate::bus::{Event, Subscription};
use crate::store::Store;
use crate::tasks::{Task, TaskRequest, Tasks};
use commands::Rejection;
use discovery::{Context, DeviceConfig, DeviceSummary};

pub const CLIENT_ID: &str = "gatehouse-homeassistant";
/// Who HA's tasks are created by (`createdBy`).
pub const TASK_CREATOR: &str = "homeassistant";

/// What was published and what was refused, for `/api/health` (`homeassistant`).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HomeAssistantStats {
    /// Devices (the gateway included) currently published.
    pub devices_published: AtomicU64,
    pub configs_published: AtomicU64,
    /// Empty configs sent to remove a device.
    pub configs_removed: AtomicU64,
    /// Task states published on `…/task` topics.
    pub task_states_published: AtomicU64,
    /// `<prefix>/status` = `online` messages (each re-publishes every config).
    pub birth_messages: AtomicU64,
    pub commands_received: AtomicU64,
    /// Commands that became tasks.
    pub commands_accepted: AtomicU64,
    /// Payloads a button or select does not send.
    pub commands_malformed: AtomicU64,
    /// Command topics of no published device or command.
    pub commands_unknown: AtomicU64,
    /// Commands the task service refused (device no longer active, parameters…).
    pub commands_refused: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub prefix: String,
    pub site: String,
    /// Tag sensors become unavailable after this long without a reading (`None`: never).
    pub expire_after: Option<Duration>,
}

/// The events [`run`] handles (its reliable subscription's filter). It publishes none of them.
pub fn wants(event: &Event) -> bool {
    matches!(event, Event::DeviceLifecycle(_) | Event::TaskUpdate(_))
}

/// A device as last published.
struct Published {
    site: String,
    config: DeviceConfig,
    /// Retained `…/task` topics published for it, cleared on removal.
    task_topics: HashSet<String>,
}

struct Publisher {
    ctx: Context,
    store: Store,
    tasks: Tasks,
    stats: Arc<HomeAssistantStats>,
    devices: HashMap<String, Published>,
    tx: LinkTx,
}

pub async fn run(
    links: LinkFactory,
    store: Store,
    tasks: Tasks,
    settings: Settings,
    stats: Arc<HomeAssistantStats>,
    mut events: Subscription,
    shutdown: CancellationToken,
) {
    let (mut tx, mut rx) = match tokio::task::spawn_blocking(move || links(CLIENT_ID, true)).await {
        Ok(Ok((tx, rx, _))) => (tx, rx),
        other => {
            tracing::error!(error = ?other.err(), "Home Assistant discovery cannot attach to the broker");
            return;
        }
    };
    let birth_topic = format!("{}/status", settings.prefix);
    let _ = tx.subscribe(birth_topic.clone());
    let _ = tx.subscribe(discovery::command_filter(&settings.site));
    let ctx = Context {
        prefix: settings.prefix.clone(),
        site: settings.site.clone(),
        sw_version: env!("CARGO_PKG_VERSION").to_string(),
        expire_after: settings.expire_after.map(|d| d.as_secs().max(1)),
    };
    tracing::info!(prefix = %ctx.prefix, commands = %discovery::command_filter(&ctx.site), "publishing Home Assistant discovery");
    let mut publisher = Publisher { ctx, store, tasks, stats, devices: HashMap::new(), tx };
    publisher.publish_all().await;
    let mut republish: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Some(Event::DeviceLifecycle(change)) => publisher.device_changed(&change.device_id, &change.state).await,
                Some(Event::TaskUpdate(task)) => publisher.task_changed(&task).await,
                Some(_) => {}
                None => return,
            },
            _ = async { republish.as_mut().expect("guarded").await }, if republish.is_some() => {
                republish = None;
                publisher.publish_all().await;
            }
            notification = rx.next() => match notification {
                Ok(Some(Notification::Forward(forward))) => {
                    let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                    let payload = forward.publish.payload;
                    if topic == birth_topic {
                        if payload.as_ref().trim_ascii() == b"online" {
                            publisher.stats.birth_messages.fetch_add(1, Ordering::Relaxed);
                            // A small random delay, as HA asks, so many publishers do not answer at once.
                            let delay = Duration::from_millis(500 + rand::random::<u64>() % 2000);
                            tracing::info!(?delay, "Home Assistant is online; re-publishing discovery");
                            republish = Some(Box::pin(tokio::time::sleep(delay)));
                        }
                    } else {
                        publisher.command(&topic, &payload);
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

impl Publisher {
    async fn send(&mut self, topic: String, payload: Vec<u8>) {
        let publish = Publish::new(Bytes::from(topic), Bytes::from(payload), true);
        if self.tx.send(Packet::Publish(publish, None)).await.is_err() {
            tracing::warn!("the broker link of Home Assistant discovery is closed");
        }
    }

    /// The gateway and every device HA should see; devices no longer eligible are removed.
    async fn publish_all(&mut self) {
        let gateway = discovery::gateway_config(&self.ctx);
        self.publish_config(gateway.clone()).await;
        let gateway_id = discovery::gateway_object_id(&self.ctx.site);
        self.devices.insert(
            gateway_id.clone(),
            Published { site: self.ctx.site.clone(), config: gateway, task_topics: HashSet::new() },
        );
        let records = match self.store.devices().await {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "Home Assistant discovery cannot read the devices");
                return;
            }
        };
        let mut eligible = HashSet::from([gateway_id]);
        for record in records {
            if let Some(summary) = DeviceSummary::from_record(&record, &self.ctx.site) {
                eligible.insert(summary.id.clone());
                self.publish_device(summary).await;
            }
        }
        let stale: Vec<String> = self.devices.keys().filter(|id| !eligible.contains(*id)).cloned().collect();
        for id in stale {
            self.remove(&id).await;
        }
        self.stats.devices_published.store(self.devices.len() as u64, Ordering::Relaxed);
    }

    async fn publish_config(&mut self, config: DeviceConfig) {
        let payload = serde_json::to_vec(&config.payload).unwrap_or_default();
        self.send(config.topic, payload).await;
        self.stats.configs_published.fetch_add(1, Ordering::Relaxed);
    }

    async fn publish_device(&mut self, summary: DeviceSummary) {
        let config = discovery::device_config(&self.ctx, &summary);
        let previous = self.devices.remove(&summary.id);
        let removed: Vec<(String, &'static str)> = previous
            .as_ref()
            .map(|p| p.config.components.iter().filter(|c| !config.components.contains(c)).cloned().collect())
            .unwrap_or_default();
        let task_topics = previous.map(|p| p.task_topics).unwrap_or_default();
        // Components that are gone are sent once as `{"platform": …}`, which removes them in HA.
        let outgoing = if removed.is_empty() {
            config.clone()
        } else {
            tracing::info!(device = %summary.id, ?removed, "Home Assistant components removed");
            discovery::with_removed_components(config.clone(), &removed)
        };
        self.devices.insert(summary.id.clone(), Published { site: summary.site.clone(), config, task_topics });
        self.publish_config(outgoing).await;
    }

    /// An empty retained config removes the device from HA; the retained task states go too.
    async fn remove(&mut self, device_id: &str) {
        let topic = discovery::config_topic(&self.ctx.prefix, &discovery::object_id(device_id));
        self.send(topic, Vec::new()).await;
        self.stats.configs_removed.fetch_add(1, Ordering::Relaxed);
        if let Some(published) = self.devices.remove(device_id) {
            for topic in published.task_topics {
                self.send(topic, Vec::new()).await;
            }
        }
        tracing::info!(device = %device_id, "removed from Home Assistant");
        self.stats.devices_published.store(self.devices.len() as u64, Ordering::Relaxed);
    }

    async fn device_changed(&mut self, device_id: &str, state: &str) {
        let record = match self.store.device(device_id).await {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(%error, device = %device_id, "Home Assistant discovery cannot read a device");
                return;
            }
        };
        match record.as_ref().and_then(|r| DeviceSummary::from_record(r, &self.ctx.site)) {
            Some(summary) => {
                let new = !self.devices.contains_key(device_id);
                self.publish_device(summary).await;
                if new {
                    tracing::info!(device = %device_id, "published to Home Assistant");
                }
            }
            None if self.devices.contains_key(device_id)
                || matches!(state, "deactivated" | "deleted" | "ignored" | "blocked") =>
            {
                self.remove(device_id).await
            }
            None => {}
        }
        self.stats.devices_published.store(self.devices.len() as u64, Ordering::Relaxed);
    }

    async fn task_changed(&mut self, task: &Task) {
        let Some(published) = self.devices.get_mut(&task.device_id) else { return };
        if !published.config.commands.iter().any(|c| c.command == task.command) {
            return;
        }
        let topic = discovery::task_topic(&published.site, &task.device_id, &task.command);
        published.task_topics.insert(topic.clone());
        let payload = json!({
            "taskId": task.id,
            "command": task.command,
            "state": task.state,
            "attempt": task.attempt,
            "progress": task.progress,
            "message": task.message,
            "result": task.result,
            "createdBy": task.created_by,
            "updatedAt": task.updated_at,
        });
        self.send(topic, payload.to_string().into_bytes()).await;
        self.stats.task_states_published.fetch_add(1, Ordering::Relaxed);
    }

    /// A press or choice from HA: checked here, then queued as a task without waiting (the
    /// task service answers over the bus this loop reads).
    fn command(&self, topic: &str, payload: &[u8]) {
        self.stats.commands_received.fetch_add(1, Ordering::Relaxed);
        let Some((device_id, command)) = commands::parse_topic(&self.ctx.site, topic) else {
            self.stats.commands_unknown.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%topic, "Home Assistant command ignored: not a command topic");
            return;
        };
        let exposed = self.devices.get(device_id).and_then(|p| p.config.commands.iter().find(|c| c.command == command));
        let params = match commands::params(exposed, payload) {
            Ok(params) => params,
            Err(Rejection::Unknown(reason)) => {
                self.stats.commands_unknown.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %device_id, %command, %reason, "Home Assistant command ignored: unknown device or command");
                return;
            }
            Err(Rejection::Malformed(reason)) => {
                self.stats.commands_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %device_id, %command, %reason, "Home Assistant command ignored: malformed payload");
                return;
            }
        };
        let request = TaskRequest {
            command: command.to_string(),
            params,
            expires_in: None,
            ack_timeout: None,
            execution_timeout: None,
            retries: None,
        };
        let (tasks, stats, device_id) = (self.tasks.clone(), self.stats.clone(), device_id.to_string());
        tokio::spawn(async move {
            match tasks.create(&device_id, request, TASK_CREATOR).await {
                Ok(task) => {
                    stats.commands_accepted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(device = %device_id, command = %task.command, task = %task.id, "task created from Home Assistant");
                }
                Err(error) => {
                    stats.commands_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(device = %device_id, %error, "Home Assistant command refused by the task service");
                }
            }
        });
    }
}
