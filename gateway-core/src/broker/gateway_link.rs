//! The gateway's own in-process MQTT client: turns bus events into MQTT messages (telemetry,
//! retained availability, the gateway's status). Uses a router link, not a TCP loopback socket.

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::Notification;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::LinkFactory;
use crate::bus::{Event, Subscription};
use crate::health::Health;
use crate::reading::Reading;
use crate::ruuvi_gateway;
use crate::topics;

pub const GATEWAY_CLIENT_ID: &str = "gatehouse-gateway";

/// The events [`run_gateway_link`] handles (its reliable subscription's filter).
pub fn wants(event: &Event) -> bool {
    matches!(
        event,
        Event::Reading(_)
            | Event::Availability(_)
            | Event::ClientConnected(_)
            | Event::ClientDisconnected { .. }
            | Event::MqttPublish(_)
            | Event::Alert(_)
    )
}

/// Runs until `shutdown`, then marks the gateway offline. `events` must be subscribed before
/// anything is published (see `Gateway::start`).
pub async fn run_gateway_link(
    links: LinkFactory,
    site: String,
    mut events: Subscription,
    health: Health,
    health_interval: Duration,
    ruuvi_output: Option<RuuviOutput>,
    shutdown: CancellationToken,
) {
    let (mut tx, rx) = match tokio::task::spawn_blocking(move || links(GATEWAY_CLIENT_ID, true)).await {
        Ok(Ok((tx, rx, _))) => (tx, rx),
        other => {
            tracing::error!(error = ?other.err(), "cannot attach the gateway to its own broker; no MQTT output");
            return;
        }
    };
    let drain = tokio::spawn(drain(rx));
    publish_retained(&mut tx, topics::gateway_status(&site), topics::ONLINE).await;
    if let Some(output) = &ruuvi_output {
        publish_retained(&mut tx, output.status_topic(), ruuvi_gateway::gw_status_payload(true)).await;
    }
    let mut health_timer = tokio::time::interval(health_interval);
    health_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_count = 0u64;
    let mut last_at = tokio::time::Instant::now();

    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = health_timer.tick() => {
                let report = health.report();
                let count = report.mqtt.broker.publishes_in + report.mqtt.broker.publishes_out;
                let seconds = last_at.elapsed().as_secs_f64().max(0.001);
                let payload = serde_json::json!({
                    "status": report.status,
                    "uptimeSeconds": report.uptime_seconds,
                    "clientsConnected": report.mqtt.broker.clients_connected,
                    "messagesPerSecond": ((count - last_count.min(count)) as f64 / seconds).round(),
                    "publishesDenied": report.mqtt.broker.publishes_denied,
                    "dropped": report.bus.lagged + report.mqtt.broker.dropped_for_slow_subscribers,
                    "devicesOnline": report.devices_online,
                    "readingsStored": report.store.writer.rows_written,
                    "bluetooth": report.bluetooth,
                    "ts": crate::reading::now_ms(),
                });
                last_count = count;
                last_at = tokio::time::Instant::now();
                publish_retained(&mut tx, topics::gateway_health(&site), &payload.to_string()).await;
                continue;
            }
            _ = shutdown.cancelled() => break,
        };
        match event {
            Some(Event::Reading(reading)) => {
                let mut payload = Vec::with_capacity(768);
                let payload = match serde_json::to_writer(&mut payload, &*reading).map(|()| payload) {
                    Ok(payload) => payload,
                    Err(error) => {
                        tracing::error!(%error, device = %reading.device_id, "cannot serialize a reading");
                        continue;
                    }
                };
                if tx.publish(topics::telemetry(&site, &reading.device_id), payload).is_err() {
                    break;
                }
                if let Some(output) = &ruuvi_output {
                    let (topic, payload) = output.message(&reading);
                    if tx.publish(topic, payload).is_err() {
                        break;
                    }
                }
            }
            Some(Event::Availability(availability)) => {
                let state = if availability.online { topics::ONLINE } else { topics::OFFLINE };
                publish_retained(&mut tx, topics::device_status(&site, &availability.device_id), state).await;
            }
            // LAN devices: the broker knows exactly when they connect and disconnect.
            Some(Event::ClientConnected(client)) if client.role.as_deref() == Some("device") => {
                let device_site = client.site.as_deref().unwrap_or(&site);
                publish_retained(&mut tx, topics::device_status(device_site, &client.client_id), topics::ONLINE).await;
            }
            Some(Event::ClientDisconnected { client, .. }) if client.role.as_deref() == Some("device") => {
                let device_site = client.site.as_deref().unwrap_or(&site);
                publish_retained(&mut tx, topics::device_status(device_site, &client.client_id), topics::OFFLINE).await;
            }
            Some(Event::Alert(alert)) => {
                let payload = serde_json::to_vec(&*alert).unwrap_or_default();
                let _ = tx.publish(topics::gateway_alerts(&alert.site), payload);
            }
            Some(Event::MqttPublish(message)) => {
                let publish = Publish::new(Bytes::from(message.topic.clone()), message.payload.clone(), message.retain);
                let _ = tx.send(Packet::Publish(publish, None)).await;
            }
            Some(_) => {}
            None => break,
        }
    }
    if let Some(output) = &ruuvi_output {
        publish_retained(&mut tx, output.status_topic(), ruuvi_gateway::gw_status_payload(false)).await;
    }
    publish_retained(&mut tx, topics::gateway_status(&site), topics::OFFLINE).await;
    drain.abort();
}

/// Every reading again in the official Ruuvi Gateway's MQTT format, on
/// `ruuvi/<gateway id>/<tag MAC>` (QoS 0, not retained, like the gateway), with a retained
/// `gw_status`. The embedded broker dies with the gateway, so no will is needed: subscribers see
/// their own connection drop.
#[derive(Debug, Clone)]
pub struct RuuviOutput {
    pub mode: ruuvi_gateway::OutputMode,
    /// Upper-case MAC-style id, as in `gw_mac`.
    pub gateway_id: String,
}

impl RuuviOutput {
    fn status_topic(&self) -> String {
        format!("ruuvi/{}/gw_status", self.gateway_id)
    }

    fn message(&self, reading: &Reading) -> (String, String) {
        let now_s = crate::reading::now_ms() / 1000;
        let payload = ruuvi_gateway::encode_mqtt_advert(
            self.mode,
            &self.gateway_id,
            reading.rssi,
            now_s,
            reading.ts / 1000,
            &reading.raw,
            Some(&reading.measurement),
            "",
        );
        (format!("ruuvi/{}/{}", self.gateway_id, reading.mac), payload)
    }
}

async fn publish_retained(tx: &mut LinkTx, topic: String, payload: &str) {
    let publish = Publish::new(Bytes::from(topic), Bytes::copy_from_slice(payload.as_bytes()), true);
    let _ = tx.send(Packet::Publish(publish, None)).await;
}

/// The router sends acknowledgements to this link; they must be consumed, and `Unschedule`
/// answered, or the router stops serving the link.
async fn drain(mut rx: LinkRx) {
    loop {
        match rx.next().await {
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
