//! The gateway's own in-process MQTT client: turns bus events into MQTT messages (telemetry,
//! retained availability, the gateway's status). Uses a router link, not a TCP loopback socket.

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::Notification;
use tokio_util::sync::CancellationToken;

use super::LinkFactory;
use crate::bus::{Event, Subscription};
use crate::topics;

pub const GATEWAY_CLIENT_ID: &str = "gatehouse-gateway";

/// Runs until `shutdown`, then marks the gateway offline. `events` must be subscribed before
/// anything is published (see `Gateway::start`).
pub async fn run_gateway_link(
    links: LinkFactory,
    site: String,
    mut events: Subscription,
    shutdown: CancellationToken,
) {
    let (mut tx, rx) = match tokio::task::spawn_blocking(move || links(GATEWAY_CLIENT_ID, true))
        .await
    {
        Ok(Ok((tx, rx, _))) => (tx, rx),
        other => {
            tracing::error!(error = ?other.err(), "cannot attach the gateway to its own broker; no MQTT output");
            return;
        }
    };
    let drain = tokio::spawn(drain(rx));
    publish_retained(&mut tx, topics::gateway_status(&site), topics::ONLINE).await;

    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.cancelled() => break,
        };
        match event {
            Some(Event::Reading(reading)) => {
                let mut payload = Vec::with_capacity(768);
                let payload = match serde_json::to_writer(&mut payload, &*reading).map(|()| payload)
                {
                    Ok(payload) => payload,
                    Err(error) => {
                        tracing::error!(%error, device = %reading.device_id, "cannot serialize a reading");
                        continue;
                    }
                };
                if tx
                    .publish(topics::telemetry(&site, &reading.device_id), payload)
                    .is_err()
                {
                    break;
                }
            }
            Some(Event::Availability(availability)) => {
                let state = if availability.online {
                    topics::ONLINE
                } else {
                    topics::OFFLINE
                };
                publish_retained(
                    &mut tx,
                    topics::device_status(&site, &availability.device_id),
                    state,
                )
                .await;
            }
            Some(Event::DeviceDiscovered(_)) => {}
            None => break,
        }
    }
    publish_retained(&mut tx, topics::gateway_status(&site), topics::OFFLINE).await;
    drain.abort();
}

async fn publish_retained(tx: &mut LinkTx, topic: String, payload: &str) {
    let publish = Publish::new(
        Bytes::from(topic),
        Bytes::copy_from_slice(payload.as_bytes()),
        true,
    );
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
