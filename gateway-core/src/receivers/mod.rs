//! Remote receivers: official Ruuvi Gateways (and ESP32 BLE proxies speaking their format) that
//! hear tags out of the local adapter's range and feed us their advertisements, either by MQTT
//! (`ruuvi/<gw MAC>/<tag MAC>`, published to our broker by an account with the `receiver`
//! role) or by HTTP POST in the "custom server" format (`http.rs`, its own LAN listener).
//!
//! Both paths turn what they get into ordinary [`Advertisement`]s for the pipeline, which decodes
//! and de-duplicates them together with the local scanner's: the same measurement heard by
//! three receivers is stored once, and [`HeardBy`] keeps each receiver's RSSI.

pub mod heard;
mod http;
pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{Event, Subscription};
use crate::pipeline::Advertisement;
use crate::reading::now_ms;
use crate::ruuvi::Mac;
use crate::ruuvi_gateway::{self, IngestError, MqttMessage};

pub use heard::HeardBy;
pub use http::{router as ingest_router, IngestState};

/// Counters of what remote receivers sent and what was refused, for `/api/health`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestStats {
    pub http_posts: AtomicU64,
    /// Posts refused whole: not the Ruuvi Gateway format, too many tags, too large.
    pub http_rejected: AtomicU64,
    /// Posts without valid receiver credentials.
    pub http_unauthorized: AtomicU64,
    pub mqtt_messages: AtomicU64,
    pub mqtt_rejected: AtomicU64,
    /// Advertisements handed to the pipeline (which then de-duplicates them).
    pub advertisements: AtomicU64,
    /// Single tag entries refused inside an otherwise good post (bad MAC, bad hex, no data).
    pub entries_rejected: AtomicU64,
    /// `POST /webhook`: posts, device messages accepted, messages or posts refused.
    pub webhook_posts: AtomicU64,
    pub webhook_messages: AtomicU64,
    pub webhook_rejected: AtomicU64,
}

/// The receiver name readings carry for a remote Ruuvi Gateway.
pub fn receiver_name(gw: &Mac) -> Arc<str> {
    Arc::from(format!("ruuvi:{gw}"))
}

/// MQTT messages of `receiver` accounts (they reach the gateway like device messages do).
pub fn wants(event: &Event) -> bool {
    matches!(event, Event::DeviceMessage(m) if m.client.role.as_deref() == Some("receiver"))
}

/// Feeds what receivers publish over MQTT into the pipeline until `shutdown`.
pub async fn run(
    mut events: Subscription,
    ingress: mpsc::Sender<Advertisement>,
    heard: Arc<HeardBy>,
    stats: Arc<IngestStats>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.cancelled() => return,
        };
        let Some(Event::DeviceMessage(message)) = event else {
            if event.is_none() {
                return;
            }
            continue;
        };
        stats.mqtt_messages.fetch_add(1, Ordering::Relaxed);
        let account = message.client.username.as_deref().unwrap_or_default();
        match ruuvi_gateway::parse_mqtt(&message.topic, &message.payload) {
            Ok(MqttMessage::Advert { gw, tag, rssi, timestamp_s, data }) => {
                let receiver = receiver_name(&gw);
                let now = now_ms();
                heard.contact(&receiver, account, "mqtt", None, now);
                let advertisement = ruuvi_gateway::to_advertisement(tag, rssi, timestamp_s, data, receiver, now);
                stats.advertisements.fetch_add(1, Ordering::Relaxed);
                // MQTT is flow-controlled already: waiting here slows the receiver, loses nothing.
                if ingress.send(advertisement).await.is_err() {
                    return;
                }
            }
            Ok(MqttMessage::GatewayStatus { gw, online }) => {
                heard.contact(&receiver_name(&gw), account, "mqtt", Some(online), now_ms());
                tracing::info!(receiver = %gw, account, online, "remote Ruuvi Gateway status");
            }
            Err(error) => reject_mqtt(&stats, account, &message.topic, &error),
        }
    }
}

fn reject_mqtt(stats: &IngestStats, account: &str, topic: &str, error: &IngestError) {
    let rejected = stats.mqtt_rejected.fetch_add(1, Ordering::Relaxed);
    // The first refusals of a misconfigured gateway matter; thousands of the same do not.
    if rejected < 20 || rejected.is_power_of_two() {
        tracing::warn!(account, topic, total_rejected = rejected + 1, "remote receiver message refused: {error}");
    }
}
