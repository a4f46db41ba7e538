//! The connection to one upstream broker: connects (with backoff and jitter between attempts),
//! announces itself on `{prefix}/bridge/status` (its last will says `offline`), receives task
//! requests, and sends the buffer in order, at most `WINDOW` messages unacknowledged at a time.
//! A message leaves the buffer only when the upstream broker has acknowledged it (QoS 1); after
//! a lost connection everything unacknowledged is sent again, oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::probe::{classify, Stage};
use super::{route, Bridge, LinkState, Settings};

/// Messages sent and not yet acknowledged, at most.
const WINDOW: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often acknowledgements are committed to the buffer (and an idle buffer looked at).
const TICK: Duration = Duration::from_millis(100);

/// A client for the upstream; every connection attempt gets a fresh one, so nothing a previous
/// session left queued inside the client is sent twice: the buffer alone decides what goes out.
pub fn client(settings: &Settings, client_id: &str) -> Result<(AsyncClient, EventLoop), String> {
    let config = &settings.config;
    let mut options = MqttOptions::new(client_id, settings.endpoint.host.clone(), settings.endpoint.port);
    options.set_keep_alive(config.keep_alive);
    // The bridge's own id has a persistent session: task requests sent while this gateway is
    // away wait at the broker. Any other id (the connection test) leaves nothing behind.
    options.set_clean_session(client_id != settings.client_id);
    options.set_inflight(WINDOW as u16);
    options.set_request_channel_capacity(WINDOW * 2 + 8);
    options.set_max_packet_size(256 * 1024, 1024 * 1024);
    options.set_last_will(LastWill::new(
        route::bridge_status_topic(&settings.prefix),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(username) = &config.username {
        let password = match (&config.password, &config.password_file) {
            (Some(password), _) => password.0.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            (None, None) => String::new(),
        };
        options.set_credentials(username.clone(), password);
    }
    if settings.endpoint.tls {
        let tls = super::tls::client_config(config)?;
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
    }
    let (client, mut eventloop) = AsyncClient::new(options, WINDOW * 2 + 8);
    eventloop.network_options.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    Ok((client, eventloop))
}

enum Ended {
    Shutdown,
    Failed { stage: Stage, message: String, was_connected: bool },
}

pub async fn run(bridge: Arc<Bridge>, commands: mpsc::Sender<Vec<u8>>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    let mut last_message = String::new();
    loop {
        bridge.set_state(LinkState::Connecting, None);
        match session(&bridge, &commands, &shutdown).await {
            Ended::Shutdown => break,
            Ended::Failed { stage, message, was_connected } => {
                if was_connected {
                    failures = 0;
                }
                failures += 1;
                bridge.stats.connection_failures.fetch_add(1, Ordering::Relaxed);
                let (min, max) = (bridge.settings.config.reconnect_min, bridge.settings.config.reconnect_max);
                let delay = route::backoff(failures, min, max, rand::random::<f64>());
                if message != last_message || failures % 10 == 1 {
                    tracing::warn!(upstream = %bridge.settings.name, url = %bridge.settings.endpoint, ?stage, %message, retry_in = ?delay, buffered = bridge.depth().messages, "upstream broker unreachable; buffering");
                }
                last_message = message.clone();
                bridge.failed(stage, message, failures, delay);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    bridge.set_state(LinkState::Stopped, None);
}

async fn session(bridge: &Arc<Bridge>, commands: &mpsc::Sender<Vec<u8>>, shutdown: &CancellationToken) -> Ended {
    let settings = &bridge.settings;
    let (client, mut eventloop) = match client(settings, &settings.client_id) {
        Ok(pair) => pair,
        Err(message) => return Ended::Failed { stage: Stage::Config, message, was_connected: false },
    };
    let connected = tokio::select! {
        _ = shutdown.cancelled() => return Ended::Shutdown,
        connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                    Ok(_) => continue,
                    Err(error) => return Err(error),
                }
            }
        }) => connected,
    };
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            let (stage, message) = classify(&error);
            return Ended::Failed { stage, message, was_connected: false };
        }
        Err(_) => {
            return Ended::Failed {
                stage: Stage::Mqtt,
                message: format!("no CONNACK within {CONNECT_TIMEOUT:?}"),
                was_connected: false,
            }
        }
    }
    bridge.stats.connects.fetch_add(1, Ordering::Relaxed);
    bridge.set_state(LinkState::Connected, None);
    tracing::info!(upstream = %settings.name, url = %settings.endpoint, prefix = %settings.prefix, buffered = bridge.depth().messages, "connected to the upstream broker");

    let status_topic = route::bridge_status_topic(&settings.prefix);
    // Each publish becomes one `Outgoing::Publish(pkid)` event, in order: `awaiting` pairs them
    // up with buffer ids (`None` for the bridge's own status messages).
    let mut awaiting: VecDeque<Option<i64>> = VecDeque::new();
    let mut inflight: HashMap<u16, Option<i64>> = HashMap::new();
    let mut acknowledged: Vec<i64> = Vec::new();
    let _ = client.publish(status_topic.clone(), QoS::AtLeastOnce, true, "online").await;
    awaiting.push_back(None);
    if settings.config.commands {
        let _ = client.subscribe(settings.commands_topic.clone(), QoS::AtLeastOnce).await;
    }
    let mut cursor = 0i64;
    let mut idle = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let outstanding = awaiting.len() + inflight.len();
        // Refilled in batches of at least half a window, not one query per acknowledgement.
        if !idle && outstanding <= WINDOW / 2 {
            let rows = bridge.pending_after(cursor, WINDOW - outstanding).await;
            idle = rows.is_empty();
            for row in rows {
                cursor = row.id;
                let qos = QoS::AtLeastOnce;
                if client.publish(row.topic, qos, row.retain, row.payload).await.is_err() {
                    break;
                }
                awaiting.push_back(Some(row.id));
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let _ = client.publish(status_topic.clone(), QoS::AtLeastOnce, true, "offline").await;
                let _ = client.disconnect().await;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(event) = eventloop.poll().await {
                        if let Event::Incoming(Incoming::PubAck(ack)) = event {
                            if let Some(Some(id)) = inflight.remove(&ack.pkid) {
                                acknowledged.push(id);
                            }
                        } else if let Event::Outgoing(Outgoing::Publish(pkid)) = event {
                            if let Some(entry) = awaiting.pop_front() {
                                inflight.insert(pkid, entry);
                            }
                        }
                    }
                }).await;
                bridge.acknowledge(std::mem::take(&mut acknowledged)).await;
                return Ended::Shutdown;
            }
            event = eventloop.poll() => match event {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(entry) = awaiting.pop_front() {
                        inflight.insert(pkid, entry);
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                    if let Some(Some(id)) = inflight.remove(&ack.pkid) {
                        acknowledged.push(id);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(message))) => {
                    if message.topic == settings.commands_topic {
                        bridge.stats.commands_received.fetch_add(1, Ordering::Relaxed);
                        if commands.try_send(message.payload.to_vec()).is_err() {
                            bridge.stats.commands_rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(upstream = %settings.name, "task request dropped: too many waiting");
                        }
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|code| matches!(code, SubscribeReasonCode::Failure)) {
                        let message = format!("the broker refused the subscription to `{}`: task requests cannot arrive", settings.commands_topic);
                        tracing::warn!(upstream = %settings.name, "{message}");
                        bridge.set_state(LinkState::Connected, Some((Stage::Acl, message)));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    bridge.acknowledge(std::mem::take(&mut acknowledged)).await;
                    let (stage, message) = classify(&error);
                    return Ended::Failed { stage, message: format!("connection lost: {message}"), was_connected: true };
                }
            },
            _ = bridge.wake.notified() => idle = false,
            _ = tick.tick() => {
                if !acknowledged.is_empty() {
                    bridge.acknowledge(std::mem::take(&mut acknowledged)).await;
                }
                // A safety net: a wake-up can only be missed if a batch lands between the two.
                idle = false;
            }
        }
    }
}
