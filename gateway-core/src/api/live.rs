//! `GET /api/live`: a WebSocket streaming bus events as JSON text messages
//! (`{"type":"reading","data":{…}}`, `device_discovered`, `availability`). Server → client only.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use serde_json::json;

use super::{ApiError, ApiState};
use tokio_util::sync::CancellationToken;

use crate::bus::{Event, Subscription};

pub async fn upgrade(
    State(state): State<ApiState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws?;
    // Cross-site WebSocket hijacking is refused before this, by `session::guard`, for every
    // upgrade from another origin.
    let events = state.bus.subscribe("websocket");
    let shutdown = state.shutdown.clone();
    Ok(ws.on_upgrade(move |socket| stream(socket, events, shutdown)))
}

async fn stream(mut socket: WebSocket, mut events: Subscription, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let message = match &event {
                    Event::Reading(reading) => json!({ "type": "reading", "data": &**reading }),
                    Event::DeviceDiscovered(device) => json!({ "type": "device_discovered", "data": &**device }),
                    Event::Availability(availability) => json!({ "type": "availability", "data": availability }),
                    Event::ClientConnected(client) => json!({ "type": "client_connected", "data": &**client }),
                    Event::ClientDisconnected { client, reason, at } => {
                        json!({ "type": "client_disconnected", "data": { "client": &**client, "reason": reason, "at": at } })
                    }
                    Event::DeviceLifecycle(change) => json!({ "type": "device_lifecycle", "data": &**change }),
                    Event::Telemetry(telemetry) => json!({ "type": "telemetry", "data": &**telemetry }),
                    Event::Alert(alert) => json!({ "type": "alert", "data": &**alert }),
                    Event::TaskUpdate(task) => json!({ "type": "task", "data": &**task }),
                    Event::ConfigUpdate(config) => json!({ "type": "config", "data": &**config }),
                    Event::IdentityRevoked { .. }
                    | Event::DeviceMessage(_)
                    | Event::DeviceSubscribed { .. }
                    | Event::MqttPublish(_) => continue,
                };
                if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                    return;
                }
            }
            _ = shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}
