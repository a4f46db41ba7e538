//! The embedded MQTT broker: rumqttd's router does the routing (QoS 1/2, retained messages,
//! sessions); our own listener layer in front of it owns the sockets, one router link per client,
//! so that every CONNECT, PUBLISH and SUBSCRIBE passes through code we control.
//!
//! rumqttd has no shutdown API: the router thread lives as long as the process (one per
//! process), while listeners stop with the gateway's shutdown token.

mod codec;
mod connection;
pub mod drops;
mod gateway_link;
mod limits;
mod sessions;
pub mod tls;

pub use codec::{Codec, Frame, SniffError};
// For the fuzz targets (fuzz/): the checks a connection applies to decoded packets.
#[doc(hidden)]
pub use connection::{client_id_for, qos_and_pkid, valid_client_properties};
pub use gateway_link::{run_gateway_link, wants as gateway_link_wants, RuuviOutput};
pub use limits::{FlapPolicy, TokenBucket};
pub use sessions::{ClientView, Sessions};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Directory;
use crate::bus::{Bus, Event};
use crate::config::MqttConfig;
use crate::origin::OwnNames;
use crate::topics;
use limits::{AddressGuard, FlapTracker};

/// Creates a router link for a client id; `clean_session` as in CONNECT.
pub type LinkFactory = Arc<dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), LinkError> + Send + Sync>;

#[derive(Debug, Default)]
pub struct BrokerStats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connected: AtomicI64,
    pub(crate) connect_refused: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) address_limit_refused: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) websocket_origins_refused: AtomicU64,
    pub(crate) publishes_in: AtomicU64,
    pub(crate) publishes_out: AtomicU64,
    pub(crate) publishes_denied: AtomicU64,
    pub(crate) subscriptions_denied: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) malformed_packets: AtomicU64,
    pub(crate) oversized_packets: AtomicU64,
    pub(crate) keepalive_timeouts: AtomicU64,
    pub(crate) flap_bans: AtomicU64,
    pub(crate) sessions_revoked: AtomicU64,
    pub(crate) telemetry_rejected: AtomicU64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSnapshot {
    pub connections_accepted: u64,
    pub clients_connected: i64,
    pub connect_refused: u64,
    pub auth_failures: u64,
    pub address_limit_refused: u64,
    pub handshake_failures: u64,
    /// Browsers of pages that may not open MQTT WebSockets (`mqtt.websocket_origins`).
    pub websocket_origins_refused: u64,
    pub publishes_in: u64,
    pub publishes_out: u64,
    pub publishes_denied: u64,
    /// Subscription filters refused (ACL, shared subscriptions, a filter twice in one packet).
    pub subscriptions_denied: u64,
    pub throttled: u64,
    pub malformed_packets: u64,
    pub oversized_packets: u64,
    pub keepalive_timeouts: u64,
    pub flap_bans: u64,
    pub sessions_revoked: u64,
    /// Messages skipped for subscribers that fell further behind than the router keeps.
    pub dropped_for_slow_subscribers: u64,
    /// Device telemetry discarded for not matching the declared fields.
    pub telemetry_rejected: u64,
}

impl BrokerStats {
    pub fn snapshot(&self) -> BrokerSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerSnapshot {
            connections_accepted: get(&self.connections_accepted),
            clients_connected: self.connected.load(Ordering::Relaxed),
            connect_refused: get(&self.connect_refused),
            auth_failures: get(&self.auth_failures),
            address_limit_refused: get(&self.address_limit_refused),
            handshake_failures: get(&self.handshake_failures),
            websocket_origins_refused: get(&self.websocket_origins_refused),
            publishes_in: get(&self.publishes_in),
            publishes_out: get(&self.publishes_out),
            publishes_denied: get(&self.publishes_denied),
            subscriptions_denied: get(&self.subscriptions_denied),
            throttled: get(&self.throttled),
            malformed_packets: get(&self.malformed_packets),
            oversized_packets: get(&self.oversized_packets),
            keepalive_timeouts: get(&self.keepalive_timeouts),
            flap_bans: get(&self.flap_bans),
            sessions_revoked: get(&self.sessions_revoked),
            dropped_for_slow_subscribers: drops::total(),
            telemetry_rejected: get(&self.telemetry_rejected),
        }
    }
}

/// The bound addresses of the enabled listeners.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerAddrs {
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
}

pub struct Broker {
    pub addrs: ListenerAddrs,
    pub links: LinkFactory,
    pub stats: Arc<BrokerStats>,
    pub sessions: Sessions,
    /// The gateway CA certificate (PEM) that devices pin for TLS.
    pub ca_pem: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// rumqttd keeps a commit log for every subscription filter until its segments rotate, even
/// after delivery. Shared filters are few and busy (they rotate), but every device subscribes to
/// its own `commands`, `config` and `credentials` and every provisioning client to its reply:
/// filters that grow with the fleet and see a message a minute, so at the shared bound
/// (`mqtt.segment_size × segment_count`, 4 MiB) they would fill over days to about 12 MiB per
/// device. A device is sent one task at a time and the task service re-sends what a device
/// missed, so a small log is enough for them. rumqttd appends before it checks the size, so a
/// message larger than a segment (a 16 KiB task) is still kept whole; 2 × 4 KiB keeps a device's
/// last few dozen commands and is full within half an hour at a task a minute, so the
/// gateway's memory settles early instead of creeping for hours.
const PER_DEVICE_SEGMENT: rumqttd::SegmentConfig =
    rumqttd::SegmentConfig { max_segment_size: 4 * 1024, max_segment_count: 2 };

/// The filters that come with each device and provisioning client, matched against the
/// subscriptions' own filters.
fn per_device_filters() -> Vec<String> {
    let mut filters: Vec<String> =
        topics::DEVICE_SUBSCRIBES.iter().map(|leaf| topics::device_topic("+", "+", leaf)).collect();
    filters.push(topics::provisioning_reply("+", "+"));
    filters
}

fn per_device_segments() -> std::collections::HashMap<String, rumqttd::SegmentConfig> {
    per_device_filters().into_iter().map(|filter| (filter, PER_DEVICE_SEGMENT)).collect()
}

/// Starts the router and the listeners. Returns once every listener is bound, with the actual
/// addresses (port 0 picks a free port).
pub async fn start(
    config: &MqttConfig,
    data_dir: &Path,
    bus: Bus,
    directory: Arc<Directory>,
    catalog: crate::lifecycle::Catalog,
    own_names: crate::origin::OwnNames,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<Broker> {
    use anyhow::Context as _;
    let router_config = RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        max_segment_size: config.segment_size,
        max_segment_count: config.segment_count,
        custom_segment: Some(per_device_segments()),
        ..RouterConfig::default()
    };
    let router_tx = Router::new(0, router_config).spawn();
    let links: LinkFactory = Arc::new(move |client_id: &str, clean_session: bool| {
        rumqttd::local::LinkBuilder::new(client_id, router_tx.clone()).clean_session(clean_session).build()
    });

    let tls_dir = data_dir.join("tls");
    let material = tokio::task::spawn_blocking({
        let names = config.tls_names.clone();
        move || tls::ensure(&tls_dir, &names)
    })
    .await??;
    let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config.clone());

    let stats = Arc::new(BrokerStats::default());
    let sessions = Sessions::default();
    let context = Arc::new(connection::Context {
        links: links.clone(),
        stats: stats.clone(),
        config: config.clone(),
        bus: bus.clone(),
        directory: directory.clone(),
        sessions: sessions.clone(),
        flaps: FlapTracker::new(FlapPolicy {
            max_disconnects: config.flap_max_disconnects,
            window: config.flap_window,
            ban: config.flap_ban,
        }),
        catalog,
        own_names,
    });
    drops::attach(sessions.clone());
    let guard = AddressGuard::default();

    let bind = |addr: SocketAddr, what: &'static str| async move {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for {what} on {addr}; is another broker (mosquitto?) or Gatehouse using it? Choose another address or \"off\""))?;
        let local = listener.local_addr()?;
        anyhow::Ok((listener, local))
    };
    let (tcp, tcp_addr) = bind(config.listen, "MQTT").await?;
    let mut addrs = ListenerAddrs { tcp: tcp_addr, tls: None, ws: None, wss: None };
    let mut listeners = vec![(tcp, Transport::Tcp)];
    for (addr, transport) in
        [(config.tls_listen, Transport::Tls), (config.ws_listen, Transport::Ws), (config.wss_listen, Transport::Wss)]
    {
        if let Some(addr) = addr {
            let (listener, local) = bind(addr, transport.name()).await?;
            match transport {
                Transport::Tls => addrs.tls = Some(local),
                Transport::Ws => addrs.ws = Some(local),
                Transport::Wss => addrs.wss = Some(local),
                Transport::Tcp => {}
            }
            listeners.push((listener, transport));
        }
    }
    for (listener, transport) in listeners {
        tasks.spawn(accept_loop(
            listener,
            transport,
            context.clone(),
            acceptor.clone(),
            guard.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
    }

    // Revocation: end every live session of an identity that lost access.
    let mut revocations =
        bus.subscribe_reliable("broker-revocations", 64, |e| matches!(e, Event::IdentityRevoked { .. }));
    let revoke_sessions = sessions.clone();
    let revoke_directory = directory.clone();
    let revoke_stats = stats.clone();
    let revoke_shutdown = shutdown.clone();
    tasks.spawn(async move {
        loop {
            let event = tokio::select! {
                event = revocations.recv() => event,
                _ = revoke_shutdown.cancelled() => break,
            };
            match event {
                Some(Event::IdentityRevoked { username, reason }) => {
                    let killed = revoke_sessions.kill_user(&username);
                    if revoke_directory.get(&username).is_none() {
                        // Deleted: its persistent sessions' client ids are free for others.
                        revoke_sessions.forget_user(&username);
                    }
                    revoke_stats.sessions_revoked.fetch_add(killed as u64, Ordering::Relaxed);
                    if killed > 0 {
                        tracing::info!(%username, reason, sessions = killed, "disconnected revoked sessions");
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    });

    Ok(Broker { addrs, links, stats, sessions, ca_pem: material.ca_pem })
}

async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    context: Arc<connection::Context>,
    acceptor: tokio_rustls::TlsAcceptor,
    guard: AddressGuard,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually file-descriptor exhaustion: back off instead of spinning.
                tracing::warn!(%error, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        context.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let Some(permit) = guard.admit(peer.ip(), context.config.max_connections_per_address) else {
            context.stats.address_limit_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = context.config.max_connections_per_address, "too many connections from one address; refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Handshakes run in the connection's own task, under a timeout, so a silent client never
        // holds up the accept loop.
        let context = context.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            serve_transport(stream, peer, transport, context, acceptor, shutdown).await;
        });
    }
    tracing::debug!(transport = transport.name(), "MQTT listener stopped");
}

async fn serve_transport(
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    context: Arc<connection::Context>,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: CancellationToken,
) {
    let timeout = context.config.connect_timeout;
    let name = transport.name();
    let failed = |what: &str, error: String| {
        context.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, transport = name, %error, "{what} failed");
    };
    match transport {
        Transport::Tcp => connection::serve(stream, peer, name, None, context, shutdown).await,
        Transport::Tls => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let certificate_user = certificate_user(tls.get_ref().1);
                connection::serve(tls, peer, name, certificate_user, context, shutdown).await
            }
            Ok(Err(error)) => failed("TLS handshake", error.to_string()),
            Err(_) => failed("TLS handshake", "timed out".into()),
        },
        Transport::Ws => match tokio::time::timeout(timeout, websocket(stream, peer, &context)).await {
            Ok(Ok(ws)) => connection::serve(ws, peer, name, None, context, shutdown).await,
            Ok(Err(None)) => {}
            Ok(Err(Some(error))) => failed("WebSocket upgrade", error.to_string()),
            Err(_) => failed("WebSocket upgrade", "timed out".into()),
        },
        Transport::Wss => {
            let handshake = async {
                let tls = acceptor.accept(stream).await.map_err(|e| Some(e.to_string()))?;
                let certificate_user = certificate_user(tls.get_ref().1);
                let ws = websocket(tls, peer, &context).await.map_err(|e| e.map(|e| e.to_string()))?;
                Ok::<_, Option<String>>((ws, certificate_user))
            };
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok((ws, certificate_user))) => {
                    connection::serve(ws, peer, name, certificate_user, context, shutdown).await
                }
                Ok(Err(None)) => {}
                Ok(Err(Some(error))) => failed("secure WebSocket handshake", error),
                Err(_) => failed("secure WebSocket handshake", "timed out".into()),
            }
        }
    }
}

/// The identity named by a client certificate that rustls verified against our CA, if any.
fn certificate_user(connection: &rustls::ServerConnection) -> Option<String> {
    connection.peer_certificates()?.first().and_then(|der| tls::common_name(der))
}

/// Whether a browser showing a page of `origin` may open an MQTT WebSocket to this gateway,
/// reached as `host` (the request's `Host`). Pages the gateway's own host served may
/// ([`crate::origin::same_host`]); others only when listed in `allowed` (`"*"`: any page).
/// Devices and tools send no `Origin`.
fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String], own: &OwnNames) -> bool {
    let Some(origin) = origin else { return true };
    allowed.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        || host.is_some_and(|host| crate::origin::same_host(origin, host, own))
}

/// Upgrades to a WebSocket speaking the `mqtt` subprotocol and returns it as a byte stream;
/// browsers of pages from other hosts that `mqtt.websocket_origins` does not list get 403.
/// `Err(None)`: a page refused by its origin (counted in `websocketOriginsRefused` and logged,
/// not a handshake failure); `Err(Some(_))`: the handshake failed.
async fn websocket<S>(
    stream: S,
    peer: SocketAddr,
    context: &connection::Context,
) -> Result<
    ws_stream_tungstenite::WsStream<async_tungstenite::tokio::TokioAdapter<S>>,
    Option<async_tungstenite::tungstenite::Error>,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use async_tungstenite::tungstenite::handshake::server::{Request, Response};
    // The page picks its origin and may retry in a loop: a refusal is logged at INFO at most
    // once a minute, at DEBUG otherwise.
    static LOUD: crate::clock::OncePerMinute = crate::clock::OncePerMinute::new();
    let refused_origin = std::sync::atomic::AtomicBool::new(false);
    let negotiate = |request: &Request, mut response: Response| {
        let header = |name: &str| request.headers().get(name).map(|v| v.to_str().unwrap_or("?"));
        let origin = header("origin");
        if !origin_allowed(origin, header("host"), &context.config.websocket_origins, &context.own_names) {
            context.stats.websocket_origins_refused.fetch_add(1, Ordering::Relaxed);
            refused_origin.store(true, Ordering::Relaxed);
            let origin = origin.unwrap_or_default();
            let message = "a browser page from another host tried to open an MQTT WebSocket; refused (list the \
                           page in mqtt.websocket_origins if it should connect)";
            if LOUD.allow() {
                tracing::info!(%peer, %origin, "{message}");
            } else {
                tracing::debug!(%peer, %origin, "{message}");
            }
            let mut refused = async_tungstenite::tungstenite::handshake::server::ErrorResponse::new(Some(
                "pages from other hosts may not open MQTT WebSockets here unless listed in mqtt.websocket_origins"
                    .into(),
            ));
            *refused.status_mut() = async_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
            return Err(refused);
        }
        let offers_mqtt = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
        if offers_mqtt {
            response.headers_mut().insert("sec-websocket-protocol", "mqtt".parse().expect("static header"));
        }
        Ok(response)
    };
    match async_tungstenite::tokio::accept_hdr_async(stream, negotiate).await {
        Ok(ws) => Ok(ws_stream_tungstenite::WsStream::new(ws)),
        Err(_) if refused_origin.load(Ordering::Relaxed) => Err(None),
        Err(error) => Err(Some(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn per_device_filters_are_the_devices_and_provisioning_clients_own() {
        assert_eq!(
            super::per_device_filters(),
            ["devices/+/+/commands", "devices/+/+/config", "devices/+/+/credentials", "provisioning/+/+/reply"]
        );
    }

    #[test]
    fn websocket_origins() {
        let listed = vec!["https://dashboard.lan".to_string(), "http://192.168.1.5:8080/".to_string()];
        let any = vec!["*".to_string()];
        let gateway = Some("192.168.1.20:9001");
        let own = crate::origin::OwnNames::new(&["gatehouse.local".to_string()]);
        let cases: &[(Option<&str>, Option<&str>, &[String], bool)] = &[
            (None, gateway, &[], true),
            (None, None, &listed, true),
            // Not listed: only pages of the gateway's own host (its web UI on another port).
            (Some("http://192.168.1.20:8080"), gateway, &[], true),
            (Some("https://192.168.1.20"), Some("192.168.1.20"), &[], true),
            (Some("http://GATEHOUSE.local:8080"), Some("gatehouse.local:9001"), &[], true),
            (Some("http://[fe80::1]:8080"), Some("[fe80::1]:9001"), &[], true),
            (Some("http://[fe80::2]:8080"), Some("[fe80::1]:9001"), &[], false),
            (Some("http://evil.example"), gateway, &[], false),
            (Some("http://192.168.1.20.evil.example"), gateway, &[], false),
            (Some("http://192.168.1.21:8080"), gateway, &[], false),
            (Some("http://192.168.1.20:8080"), None, &[], false),
            (Some("null"), Some("null"), &[], false),
            (Some("?"), gateway, &[], false),
            // DNS rebinding: the attacker's name now points at the gateway.
            (Some("http://rebind.example:8080"), Some("rebind.example:9001"), &[], false),
            // Listed pages, and "*".
            (Some("https://dashboard.lan"), gateway, &listed, true),
            (Some("HTTPS://Dashboard.LAN"), gateway, &listed, true),
            (Some("http://192.168.1.5:8080"), gateway, &listed, true),
            (Some("http://evil.example"), gateway, &listed, false),
            (Some("https://dashboard.lan.evil.example"), gateway, &listed, false),
            (Some("null"), gateway, &listed, false),
            (Some("http://evil.example"), gateway, &any, true),
            (Some("null"), gateway, &any, true),
        ];
        for (origin, host, allowed, expected) in cases {
            assert_eq!(
                origin_allowed(*origin, *host, allowed, &own),
                *expected,
                "{origin:?} to {host:?} with {allowed:?}"
            );
        }
    }
}
