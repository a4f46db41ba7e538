//! One MQTT client connection: reads CONNECT, authenticates it, creates the client's router
//! link, then pumps packets between the socket and the router until either side ends, checking
//! every PUBLISH and SUBSCRIBE against the session's ACL. This layer owns what rumqttd's router
//! does not: identity, client-id rules, CONNACK refusals, ACLs, rate limits, keep-alive, wills,
//! connection events and revocation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    self, ConnAck, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill, Packet, PubAck, PubAckReason,
    PubComp, PubCompReason, PubRec, PubRecReason, Publish, PublishProperties, SubAck, SubscribeReasonCode,
};
use rumqttd::Notification;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{Codec, Frame, SniffError};
use super::limits::{FlapTracker, TokenBucket};
use super::sessions::{ClientStats, Sessions};
use super::{BrokerStats, LinkFactory};
use crate::auth::{Acl, Directory, Role};
use crate::bus::{Bus, ClientInfo, DeviceMessage, Event, LanTelemetry};
use crate::config::MqttConfig;
use crate::lifecycle::{registration, Catalog};
use crate::reading::now_ms;
use crate::topics::RESERVED_CLIENT_PREFIX;

pub(super) struct Context {
    pub links: LinkFactory,
    pub stats: Arc<BrokerStats>,
    pub config: MqttConfig,
    pub bus: Bus,
    pub directory: Arc<Directory>,
    pub sessions: Sessions,
    pub flaps: FlapTracker,
    /// Declared telemetry fields of active LAN devices.
    pub catalog: Catalog,
    /// The names browsers may reach the WebSocket listeners by as the gateway's own pages.
    pub own_names: crate::origin::OwnNames,
}

/// Why a session ended; decides whether the will is published.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT: no will.
    ClientDisconnected,
    /// The router dropped the link (a new connection took over the client id): no will.
    TakenOver,
    /// The router ended the session itself (a protocol violation it caught, such as an
    /// unsolicited PUBACK): counted, and the will is published.
    RouterClosed,
    Closed,
    Io(std::io::Error),
    KeepAliveExpired,
    Protocol(protocol::Error),
    /// Too many publishes refused by the ACL.
    RepeatedDenials,
    /// The identity was disabled, deleted or its secret rotated.
    Revoked,
    GatewayShutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientDisconnected => write!(f, "client sent DISCONNECT"),
            End::TakenOver => write!(f, "session taken over by a new connection"),
            End::RouterClosed => write!(f, "protocol error caught by the router"),
            End::Closed => write!(f, "connection closed by the client"),
            End::Io(error) => write!(f, "network error: {error}"),
            End::KeepAliveExpired => write!(f, "keep-alive expired"),
            End::Protocol(error) => write!(f, "protocol error: {error}"),
            End::RepeatedDenials => write!(f, "too many publishes refused by the ACL"),
            End::Revoked => write!(f, "access revoked"),
            End::GatewayShutdown => write!(f, "gateway shutting down"),
        }
    }
}

/// Why a CONNECT is refused; mapped to the right return code for the protocol version.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    NotAuthorized,
    BadClientId,
    Banned,
    Unavailable,
}

fn connack_code(codec: Codec, refusal: Refusal) -> ConnectReturnCode {
    match (codec, refusal) {
        (_, Refusal::NotAuthorized) => ConnectReturnCode::NotAuthorized,
        (_, Refusal::BadClientId) => ConnectReturnCode::ClientIdentifierNotValid,
        (Codec::V4, Refusal::Banned) => ConnectReturnCode::NotAuthorized,
        (Codec::V5, Refusal::Banned) => ConnectReturnCode::Banned,
        (Codec::V4, Refusal::Unavailable) => ConnectReturnCode::ServiceUnavailable,
        (Codec::V5, Refusal::Unavailable) => ConnectReturnCode::ServerUnavailable,
    }
}

/// Serves one accepted connection (plain TCP, TLS or WebSocket already set up) to its end.
pub(super) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    transport: &'static str,
    certificate_user: Option<String>,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut read_buf = BytesMut::with_capacity(4 * 1024);
    let mut write_buf = BytesMut::with_capacity(4 * 1024);

    let connect_timeout = ctx.config.connect_timeout;
    let (codec, connect_packet) = match tokio::time::timeout(
        connect_timeout,
        read_connect(&mut reader, &mut read_buf, &ctx),
    )
    .await
    {
        Ok(Opening::Connect(codec, packet)) => (codec, packet),
        Ok(Opening::UnsupportedLevel(level)) => {
            // MQTT 3.1.1 §3.1.2.2: answer "unacceptable protocol version", then close. The
            // 3.1.1 form of CONNACK is the one every client version can read.
            ctx.stats.connect_refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, level, "MQTT connection refused: protocol level not supported (use MQTT 3.1.1 or 5)");
            let _ = writer.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
            let _ = writer.flush().await;
            return;
        }
        Ok(Opening::Closed) => return,
        Err(_) => {
            tracing::debug!(%peer, timeout = ?connect_timeout, "no CONNECT in time; closing");
            return;
        }
    };
    let Packet::Connect(connect, _properties, will, _will_properties, login) = connect_packet else {
        unreachable!("read_connect returns CONNECT packets only")
    };
    let refuse = |refusal: Refusal| {
        ctx.stats.connect_refused.fetch_add(1, Ordering::Relaxed);
        connack(connack_code(codec, refusal))
    };

    let client_id = match client_id_for(&connect.client_id, connect.clean_session) {
        Ok(id) => id,
        Err(()) => {
            tracing::info!(%peer, client_id = %connect.client_id, "MQTT connection refused: invalid client id");
            let _ = write_packet(&mut writer, &mut write_buf, codec, refuse(Refusal::BadClientId)).await;
            return;
        }
    };
    if let Some(remaining) = ctx.flaps.banned(&client_id, Instant::now().into_std()) {
        tracing::info!(%peer, %client_id, ?remaining, "MQTT connection refused: client id banned for flapping");
        let _ = write_packet(&mut writer, &mut write_buf, codec, refuse(Refusal::Banned)).await;
        return;
    }
    let username = login.as_ref().map(|l| l.username.clone());
    // A client certificate from our CA identifies the client without a password.
    let authenticated = match &certificate_user {
        Some(certified) => ctx.directory.authenticate_certificate(certified, username.as_deref(), &client_id),
        None => {
            ctx.directory
                .authenticate(username.as_deref(), login.as_ref().map(|l| l.password.as_str()), &client_id)
                .await
        }
    };
    let auth = match authenticated {
        Ok(auth) => auth,
        Err(reason) => {
            ctx.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            // Never log the password; the username is useful to spot misconfigured devices.
            tracing::info!(%peer, %client_id, username = username.as_deref().unwrap_or(""), %reason, "MQTT connection refused: not authorized");
            let _ = write_packet(&mut writer, &mut write_buf, codec, refuse(Refusal::NotAuthorized)).await;
            return;
        }
    };
    // A client id is a session: another identity's (a device's, or anyone's live or persistent
    // session) is refused rather than taken over.
    let owner = match ctx.directory.get(&client_id) {
        Some(identity) if identity.username != auth.identity.username => Err(identity.username),
        named => {
            ctx.sessions.claim_client_id(&client_id, &auth.identity.username, named.is_some(), connect.clean_session)
        }
    };
    if let Err(owner) = owner {
        tracing::info!(%peer, %client_id, username = %auth.identity.username, %owner, "MQTT connection refused: the client id belongs to another identity");
        let _ = write_packet(&mut writer, &mut write_buf, codec, refuse(Refusal::BadClientId)).await;
        return;
    }
    if let Some(will) = &will {
        let will_topic = String::from_utf8_lossy(&will.topic);
        if !auth.acl.can_publish(&will_topic) {
            tracing::info!(%peer, %client_id, topic = %will_topic, "MQTT connection refused: will topic not allowed");
            let _ = write_packet(&mut writer, &mut write_buf, codec, refuse(Refusal::NotAuthorized)).await;
            return;
        }
    }

    let links = ctx.links.clone();
    let link_client_id = client_id.clone();
    let clean_session = connect.clean_session;
    let built = tokio::task::spawn_blocking(move || links(&link_client_id, clean_session)).await;
    let (mut link_tx, mut link_rx, router_connack) = match built {
        Ok(Ok(link)) => link,
        other => {
            tracing::warn!(%peer, %client_id, error = ?other.err(), "router refused the connection (connection limit reached?)");
            let _ = write_packet(&mut writer, &mut write_buf, codec, refuse(Refusal::Unavailable)).await;
            return;
        }
    };
    let info = Arc::new(ClientInfo {
        client_id: client_id.clone(),
        username: Some(auth.identity.username.clone()),
        role: Some(auth.identity.role.as_str().to_string()),
        site: Some(auth.identity.site.clone()),
        address: peer.to_string(),
        transport,
        protocol: match codec {
            Codec::V4 => "3.1.1",
            Codec::V5 => "5",
        },
        authentication: if certificate_user.is_some() { "certificate" } else { "password" },
        connected_at: now_ms(),
    });
    // Register before answering, then check the identity is still valid: a revocation that
    // raced with this CONNECT either finds the session to kill or is seen here.
    let session = ctx.sessions.register(info.clone(), link_rx.id());
    if !ctx.directory.is_current(&auth.identity) {
        tracing::info!(%peer, %client_id, "MQTT connection refused: identity revoked while connecting");
        let _ = write_packet(&mut writer, &mut write_buf, codec, refuse(Refusal::NotAuthorized)).await;
        close_link(&mut link_tx, None).await;
        return;
    }
    if let Some(packet) = Option::<Packet>::from(router_connack) {
        if write_packet(&mut writer, &mut write_buf, codec, packet).await.is_err() {
            close_link(&mut link_tx, None).await;
            return;
        }
    }
    ctx.stats.connected.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%client_id, %peer, transport, username = %auth.identity.username, role = auth.identity.role.as_str(), keep_alive = connect.keep_alive, "MQTT client connected");
    ctx.bus.publish(Event::ClientConnected(info.clone())).await;

    let keep_alive = (connect.keep_alive > 0).then(|| Duration::from_secs(u64::from(connect.keep_alive)).mul_f32(1.5));
    let now = Instant::now().into_std();
    let limits = &ctx.config;
    let mut pump = Session {
        reader,
        writer,
        read_buf,
        write_buf,
        codec,
        link_tx: &mut link_tx,
        link_rx: &mut link_rx,
        ctx: &ctx,
        registration: &session,
        acl: auth.acl,
        info: info.clone(),
        // Devices, provisioning clients and remote receivers talk to the gateway itself: their
        // publishes go on the bus.
        to_gateway: matches!(auth.identity.role, Role::Device | Role::Provisioning | Role::Receiver),
        receiver_namespace: (auth.identity.role == Role::Receiver)
            .then(|| format!("gatehouse/{}/receivers/", auth.identity.site)),
        telemetry_topic: (auth.identity.role == Role::Device)
            .then(|| crate::topics::device_topic(&auth.identity.site, &auth.identity.username, "telemetry")),
        client: session.stats.clone(),
        messages: TokenBucket::new(limits.publish_rate, limits.publish_burst, now),
        bytes: TokenBucket::new(limits.byte_rate, limits.byte_burst, now),
        throttled_until: None,
        denied_in_a_row: 0,
        pending_subacks: HashMap::new(),
        denied_qos2: HashSet::new(),
        replies: Vec::new(),
        unstored: HashMap::new(),
        held_acks: VecDeque::new(),
    };
    let end = pump.run(keep_alive, &shutdown, &session.kill).await;
    ctx.stats.connected.fetch_sub(1, Ordering::Relaxed);

    match end {
        End::ClientDisconnected | End::TakenOver => {}
        // The router has already let go of this link: the will goes out through another one.
        End::RouterClosed => {
            if let Some(will) = will {
                publish_will_elsewhere(&ctx.links, will).await;
            }
        }
        _ => {
            // Lets the router forget the connection (it would otherwise keep a zombie entry).
            close_link(&mut link_tx, will).await;
        }
    }
    drop(session);
    if ctx.flaps.record_disconnect(&client_id, Instant::now().into_std()) {
        ctx.stats.flap_bans.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%client_id, "client id banned for reconnecting too often");
    }
    tracing::info!(%client_id, %peer, reason = %end, "MQTT client disconnected");
    ctx.bus.publish(Event::ClientDisconnected { client: info, reason: end.to_string(), at: now_ms() }).await;
}

/// How a connection opened.
enum Opening {
    Connect(Codec, Packet),
    /// A CONNECT of a protocol level we do not speak (MQTT 3.1 is level 3).
    UnsupportedLevel(u8),
    /// Not MQTT, malformed (counted), or closed before a whole CONNECT.
    Closed,
}

async fn read_connect<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut, ctx: &Context) -> Opening {
    let mut more = async |buf: &mut BytesMut| reader.read_buf(buf).await.is_ok_and(|n| n > 0);
    let codec = loop {
        match Codec::sniff(buf) {
            Ok(Some(codec)) => break codec,
            Ok(None) => {}
            Err(SniffError::UnsupportedLevel(level)) => return Opening::UnsupportedLevel(level),
            Err(error) => {
                ctx.stats.malformed_packets.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "rejecting connection");
                return Opening::Closed;
            }
        }
        if !more(buf).await {
            return Opening::Closed;
        }
    };
    loop {
        match codec.read(buf, ctx.config.max_packet_size) {
            Ok(Frame::Packet(packet @ Packet::Connect(..))) => return Opening::Connect(codec, packet),
            Ok(Frame::Packet(_)) => return Opening::Closed,
            Ok(Frame::Incomplete) => {
                if !more(buf).await {
                    return Opening::Closed;
                }
            }
            Err(error) => {
                count_bad_packet(&ctx.stats, &error);
                tracing::debug!(%error, "malformed CONNECT");
                return Opening::Closed;
            }
        }
    }
}

/// After this many publishes refused by the ACL in a row, the client is disconnected.
const MAX_DENIALS_IN_A_ROW: u32 = 10;

struct Session<'a, S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    codec: Codec,
    link_tx: &'a mut LinkTx,
    link_rx: &'a mut LinkRx,
    ctx: &'a Context,
    registration: &'a super::sessions::SessionHandle,
    acl: Acl,
    info: Arc<ClientInfo>,
    to_gateway: bool,
    /// A device's own telemetry topic: messages there are checked against its declared fields.
    telemetry_topic: Option<String>,
    /// Remote receivers' raw messages are for the gateway: other clients see them only under
    /// this prefix, so that a receiver can neither pose as the gateway's own Ruuvi-compatible
    /// output on `ruuvi/…` nor overwrite its retained `gw_status`.
    receiver_namespace: Option<String>,
    client: Arc<ClientStats>,
    messages: TokenBucket,
    bytes: TokenBucket,
    /// While set, the socket is not read: back-pressure for a client over its rate.
    throttled_until: Option<Instant>,
    denied_in_a_row: u32,
    /// SUBSCRIBEs forwarded with some filters removed: which positions were allowed.
    pending_subacks: HashMap<u16, Vec<bool>>,
    /// QoS 2 publishes we refused: their PUBREL is answered here, not by the router.
    denied_qos2: HashSet<u16>,
    /// Packets this layer answers itself, written after each read burst.
    replies: Vec<Packet>,
    /// QoS 1 telemetry by packet id, waiting for the store to commit it.
    unstored: HashMap<u16, oneshot::Receiver<()>>,
    /// PUBACKs from the router held back, in order, while one ahead waits for the store (MQTT
    /// wants PUBACKs in the order of the PUBLISHes).
    held_acks: VecDeque<(Packet, Option<oneshot::Receiver<()>>)>,
}

impl<S: AsyncRead + AsyncWrite> Session<'_, S> {
    async fn run(
        &mut self,
        keep_alive: Option<Duration>,
        shutdown: &CancellationToken,
        kill: &CancellationToken,
    ) -> End {
        let mut deadline = keep_alive.map(|k| Instant::now() + k);
        // Clients often send SUBSCRIBE or PUBLISH right behind CONNECT, in the same read.
        if !self.read_buf.is_empty() {
            if let Some(end) = self.forward_incoming().await {
                return end;
            }
            if let Some(end) = self.write_replies().await {
                return end;
            }
        }
        loop {
            let keep_alive_timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let throttle = self.throttled_until;
            let throttle_timer = async {
                match throttle {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = self.reader.read_buf(&mut self.read_buf), if throttle.is_none() => {
                    match read {
                        Ok(0) => return End::Closed,
                        Ok(_) => {}
                        Err(error) => return End::Io(error),
                    }
                    deadline = keep_alive.map(|k| Instant::now() + k);
                    if let Some(end) = self.forward_incoming().await {
                        return end;
                    }
                    if let Some(end) = self.write_replies().await {
                        return end;
                    }
                }
                _ = throttle_timer => {
                    self.throttled_until = None;
                    // Time spent paused by us does not count against the client's keep-alive.
                    deadline = keep_alive.map(|k| Instant::now() + k);
                    // Packets already buffered while paused are processed now.
                    if let Some(end) = self.forward_incoming().await {
                        return end;
                    }
                    if let Some(end) = self.write_replies().await {
                        return end;
                    }
                }
                notification = self.link_rx.next() => {
                    if let Some(end) = self.forward_outgoing(notification).await {
                        return end;
                    }
                }
                _ = first_stored(&mut self.held_acks), if !self.held_acks.is_empty() => {
                    self.write_buf.clear();
                    if let Err(error) = self.release_acks() {
                        return End::Protocol(error);
                    }
                    if let Some(end) = self.flush_write_buf().await {
                        return end;
                    }
                }
                _ = keep_alive_timer => {
                    self.ctx.stats.keepalive_timeouts.fetch_add(1, Ordering::Relaxed);
                    return End::KeepAliveExpired;
                }
                _ = kill.cancelled() => return End::Revoked,
                _ = shutdown.cancelled() => return End::GatewayShutdown,
            }
        }
    }

    /// Frames the complete packets in the read buffer, applies the ACL and the rate limits, and
    /// hands what is allowed to the router. Stops early when the client must pause.
    async fn forward_incoming(&mut self) -> Option<End> {
        let mut packets = Vec::new();
        let mut for_gateway: Vec<Event> = Vec::new();
        let mut end = None;
        while self.throttled_until.is_none() {
            match self.codec.read(&mut self.read_buf, self.ctx.config.max_packet_size) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Packet(Packet::Connect(..))) => {
                    self.ctx.stats.malformed_packets.fetch_add(1, Ordering::Relaxed);
                    end = Some(End::Protocol(protocol::Error::InvalidProtocol));
                    break;
                }
                Ok(Frame::Packet(Packet::Publish(_, properties))) if !valid_client_properties(properties.as_ref()) => {
                    self.ctx.stats.malformed_packets.fetch_add(1, Ordering::Relaxed);
                    end = Some(End::Protocol(protocol::Error::MalformedPacket));
                    break;
                }
                Ok(Frame::Packet(Packet::Publish(mut publish, properties))) => match self.check_publish(&publish) {
                    Ok(event) => {
                        for_gateway.extend(event);
                        if let Some(prefix) = &self.receiver_namespace {
                            let mut topic = prefix.clone().into_bytes();
                            topic.extend_from_slice(&publish.topic);
                            publish.topic = Bytes::from(topic);
                        }
                        packets.push(Packet::Publish(publish, properties))
                    }
                    Err(Some(stop)) => {
                        end = Some(stop);
                        break;
                    }
                    Err(None) => {}
                },
                Ok(Frame::Packet(Packet::Subscribe(mut subscribe, properties))) => {
                    // One filter twice in a packet is refused the second time: rumqttd's router
                    // asserts one data request per filter.
                    let mut seen = HashSet::new();
                    let allowed: Vec<bool> = subscribe
                        .filters
                        .iter()
                        .map(|f| self.acl.can_subscribe(&f.path) && seen.insert(f.path.as_str()))
                        .collect();
                    let refused = allowed.iter().filter(|a| !**a).count();
                    if refused > 0 {
                        self.count_denial();
                        self.ctx.stats.subscriptions_denied.fetch_add(refused as u64, Ordering::Relaxed);
                        let filters: Vec<&str> = subscribe
                            .filters
                            .iter()
                            .zip(&allowed)
                            .filter(|(_, a)| !**a)
                            .map(|(f, _)| f.path.as_str())
                            .collect();
                        tracing::info!(client_id = %self.link_id(), ?filters, "subscription refused by ACL");
                    }
                    if refused == allowed.len() {
                        let return_codes = vec![self.refused_subscription(); allowed.len()];
                        self.replies.push(Packet::SubAck(SubAck { pkid: subscribe.pkid, return_codes }, None));
                    } else {
                        if refused > 0 {
                            let mut keep = allowed.iter();
                            subscribe.filters.retain(|_| *keep.next().unwrap_or(&false));
                            self.pending_subacks.insert(subscribe.pkid, allowed);
                        }
                        if self.info.role.as_deref() == Some("device") {
                            let filters = subscribe.filters.iter().map(|f| f.path.clone()).collect();
                            for_gateway.push(Event::DeviceSubscribed { client: self.info.clone(), filters });
                        }
                        packets.push(Packet::Subscribe(subscribe, properties));
                    }
                }
                Ok(Frame::Packet(Packet::PubRel(pubrel, _))) if self.denied_qos2.remove(&pubrel.pkid) => {
                    self.replies
                        .push(Packet::PubComp(PubComp { pkid: pubrel.pkid, reason: PubCompReason::Success }, None));
                }
                Ok(Frame::Packet(packet)) => {
                    let disconnect = matches!(packet, Packet::Disconnect(..));
                    packets.push(packet);
                    if disconnect {
                        end = Some(End::ClientDisconnected);
                        break;
                    }
                }
                Err(error) => {
                    count_bad_packet(&self.ctx.stats, &error);
                    end = Some(End::Protocol(error));
                    break;
                }
            }
        }
        // Queue all but the last without waking the router; the last send wakes it once.
        if let Some(last) = packets.pop() {
            self.link_tx.buffer().extend(packets);
            if self.link_tx.send(last).await.is_err() {
                return Some(End::TakenOver);
            }
        }
        for event in for_gateway {
            self.ctx.bus.publish(event).await;
        }
        end
    }

    /// `Ok` to forward (with the event the gateway itself should see, if any); `Err(None)` refused
    /// and answered; `Err(Some(end))` ends the session.
    fn check_publish(&mut self, publish: &Publish) -> Result<Option<Event>, Option<End>> {
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            self.ctx.stats.malformed_packets.fetch_add(1, Ordering::Relaxed);
            return Err(Some(End::Protocol(protocol::Error::TopicNotUtf8)));
        };
        if !self.acl.can_publish(topic) {
            self.count_denial();
            self.ctx.stats.publishes_denied.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client_id = %self.link_id(), topic, "publish refused by ACL");
            let (qos, pkid) = qos_and_pkid(publish);
            match qos {
                1 => self.replies.push(Packet::PubAck(PubAck { pkid, reason: PubAckReason::NotAuthorized }, None)),
                2 => {
                    self.denied_qos2.insert(pkid);
                    self.replies.push(Packet::PubRec(PubRec { pkid, reason: PubRecReason::NotAuthorized }, None));
                }
                _ => {}
            }
            self.denied_in_a_row += 1;
            if self.denied_in_a_row >= MAX_DENIALS_IN_A_ROW {
                return Err(Some(End::RepeatedDenials));
            }
            return Err(None);
        }
        self.denied_in_a_row = 0;
        let size = publish.topic.len() + publish.payload.len();
        self.ctx.stats.publishes_in.fetch_add(1, Ordering::Relaxed);
        self.client.publishes_in.fetch_add(1, Ordering::Relaxed);
        self.client.bytes_in.fetch_add(size as u64, Ordering::Relaxed);
        let now = Instant::now();
        let pause = self.messages.take(1.0, now.into_std()).max(self.bytes.take(size as f64, now.into_std()));
        if !pause.is_zero() {
            self.throttled_until = Some(now + pause);
            self.client.throttled.fetch_add(1, Ordering::Relaxed);
            self.ctx.stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if !self.to_gateway {
            return Ok(None);
        }
        if self.telemetry_topic.as_deref() == Some(topic) {
            let (qos, pkid) = qos_and_pkid(publish);
            return self.check_telemetry(publish).map(|checked| {
                checked.map(|mut telemetry| {
                    if qos == 1 {
                        let (signal, stored) = crate::bus::StoredSignal::new();
                        telemetry.stored = signal;
                        self.unstored.insert(pkid, stored);
                    }
                    Event::Telemetry(Arc::new(telemetry))
                })
            });
        }
        let message =
            DeviceMessage { client: self.info.clone(), topic: topic.to_string(), payload: publish.payload.clone() };
        Ok(Some(Event::DeviceMessage(Arc::new(message))))
    }

    /// Telemetry must match the fields the device declared when it registered; anything else is
    /// logged, counted and not delivered. Devices with manually created credentials declared
    /// nothing and are not checked.
    fn check_telemetry(&mut self, publish: &Publish) -> Result<Option<LanTelemetry>, Option<End>> {
        let device_id = &self.info.client_id;
        let Some(capabilities) = self.ctx.catalog.get(device_id) else { return Ok(None) };
        match registration::telemetry_message(device_id, &capabilities, &publish.payload, now_ms()) {
            Ok(telemetry) => Ok(Some(telemetry)),
            Err(error) => {
                self.ctx.stats.telemetry_rejected.fetch_add(1, Ordering::Relaxed);
                self.client.invalid_telemetry.fetch_add(1, Ordering::Relaxed);
                tracing::info!(device = %device_id, field = %error.field, reason = %error.message, "telemetry discarded: does not match the declared fields");
                let (qos, pkid) = qos_and_pkid(publish);
                match qos {
                    1 => self
                        .replies
                        .push(Packet::PubAck(PubAck { pkid, reason: PubAckReason::PayloadFormatInvalid }, None)),
                    2 => {
                        self.denied_qos2.insert(pkid);
                        self.replies
                            .push(Packet::PubRec(PubRec { pkid, reason: PubRecReason::PayloadFormatInvalid }, None));
                    }
                    _ => {}
                }
                Err(None)
            }
        }
    }

    fn count_denial(&self) {
        self.client.denied.fetch_add(1, Ordering::Relaxed);
    }

    fn refused_subscription(&self) -> SubscribeReasonCode {
        match self.codec {
            Codec::V4 => SubscribeReasonCode::Failure,
            Codec::V5 => SubscribeReasonCode::NotAuthorized,
        }
    }

    fn link_id(&self) -> String {
        format!("#{}", self.link_rx.id())
    }

    async fn write_replies(&mut self) -> Option<End> {
        if self.replies.is_empty() {
            return None;
        }
        self.write_buf.clear();
        for packet in std::mem::take(&mut self.replies) {
            if let Err(error) = self.codec.write(packet, &mut self.write_buf) {
                return Some(End::Protocol(error));
            }
        }
        self.flush_write_buf().await
    }

    async fn flush_write_buf(&mut self) -> Option<End> {
        let written = async {
            self.writer.write_all(&self.write_buf).await?;
            self.writer.flush().await
        };
        written.await.err().map(End::Io)
    }

    /// Writes `first` and every further notification the router has already queued for this
    /// client in one socket write (one syscall per burst, not per message).
    async fn forward_outgoing(&mut self, first: Result<Option<Notification>, LinkError>) -> Option<End> {
        const MAX_BURST_BYTES: usize = 64 * 1024;
        self.write_buf.clear();
        let mut next = Some(first);
        let mut end = None;
        while let Some(notification) = next.take() {
            match notification {
                Ok(Some(Notification::Unschedule)) => {
                    // The router paused us because our outgoing buffer was full.
                    if self.link_rx.wake().await.is_err() {
                        end = Some(self.router_ended());
                        break;
                    }
                }
                Ok(Some(notification)) => match Option::<Packet>::from(notification) {
                    Some(Packet::Disconnect(..)) => {
                        end = Some(self.router_ended());
                        break;
                    }
                    Some(Packet::PubAck(ack, properties))
                        if !self.held_acks.is_empty() || self.unstored.contains_key(&ack.pkid) =>
                    {
                        let stored = self.unstored.remove(&ack.pkid);
                        self.held_acks.push_back((Packet::PubAck(ack, properties), stored));
                    }
                    Some(packet) => {
                        let packet = self.complete_suback(packet);
                        if let Packet::Publish(..) = packet {
                            self.ctx.stats.publishes_out.fetch_add(1, Ordering::Relaxed);
                            self.client.publishes_out.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Err(error) = self.codec.write(packet, &mut self.write_buf) {
                            end = Some(End::Protocol(error));
                            break;
                        }
                    }
                    None => {}
                },
                Ok(None) => {}
                Err(_) => {
                    end = Some(self.router_ended());
                    break;
                }
            }
            if self.write_buf.len() < MAX_BURST_BYTES {
                next = self.link_rx.next().now_or_never();
            }
        }
        if end.is_none() {
            if let Err(error) = self.release_acks() {
                return Some(End::Protocol(error));
            }
        }
        if !self.write_buf.is_empty() {
            if let Some(io_end) = self.flush_write_buf().await {
                return Some(io_end);
            }
        }
        end
    }

    /// Why the router let go of this link: a newer connection took the client id over (no will),
    /// or the router caught a protocol error itself (an unsolicited PUBACK…): counted, with will.
    fn router_ended(&self) -> End {
        if self.registration.is_current() {
            self.ctx.stats.malformed_packets.fetch_add(1, Ordering::Relaxed);
            End::RouterClosed
        } else {
            End::TakenOver
        }
    }

    /// Writes the held PUBACKs whose messages are stored, in order, up to the first still waiting.
    /// A signal that can no longer fire (the store dropped the message, or is stopping) releases
    /// its PUBACK too: the client must not wait for ever.
    fn release_acks(&mut self) -> Result<(), protocol::Error> {
        while let Some((_, stored)) = self.held_acks.front_mut() {
            let ready = match stored {
                None => true,
                Some(receiver) => !matches!(receiver.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
            };
            if !ready {
                break;
            }
            let (ack, _) = self.held_acks.pop_front().expect("front exists");
            self.codec.write(ack, &mut self.write_buf)?;
        }
        Ok(())
    }

    /// Puts the refused filters' failure codes back into a SUBACK for a partly refused SUBSCRIBE.
    fn complete_suback(&mut self, packet: Packet) -> Packet {
        let Packet::SubAck(suback, properties) = packet else {
            return packet;
        };
        let Some(allowed) = self.pending_subacks.remove(&suback.pkid) else {
            return Packet::SubAck(suback, properties);
        };
        let refused = self.refused_subscription();
        let mut granted = suback.return_codes.into_iter();
        let return_codes =
            allowed.iter().map(|&ok| if ok { granted.next().unwrap_or(refused) } else { refused }).collect();
        Packet::SubAck(SubAck { pkid: suback.pkid, return_codes }, properties)
    }
}

/// Resolves when the first held PUBACK's message is stored (at once if it waits for nothing).
async fn first_stored(held: &mut VecDeque<(Packet, Option<oneshot::Receiver<()>>)>) {
    match held.front_mut() {
        Some((_, Some(receiver))) => {
            let _ = receiver.await;
        }
        Some((_, None)) => {}
        None => std::future::pending().await,
    }
}

/// Whether a client may send a PUBLISH with these properties. A subscription identifier is the
/// server's to set (MQTT 5 §3.3.4: a client's PUBLISH never carries one), and rumqttd misreads a
/// client's: it counts one byte more than it consumes for each, so the property bytes after them
/// end up in the payload, and subscribers get something other than what the client sent.
pub fn valid_client_properties(properties: Option<&PublishProperties>) -> bool {
    properties.is_none_or(|p| p.subscription_identifiers.is_empty())
}

/// QoS and packet id of a publish (the fields are private in rumqttd; its wire form has them).
pub fn qos_and_pkid(publish: &Publish) -> (u8, u16) {
    let wire = publish.serialize();
    let qos = (wire[0] >> 1) & 0b11;
    let pkid = if wire.len() >= 3 { u16::from_be_bytes([wire[1], wire[2]]) } else { 0 };
    (qos, pkid)
}

fn count_bad_packet(stats: &BrokerStats, error: &protocol::Error) {
    let counter = match error {
        protocol::Error::PayloadSizeLimitExceeded(_) => &stats.oversized_packets,
        _ => &stats.malformed_packets,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &mut BytesMut,
    codec: Codec,
    packet: Packet,
) -> std::io::Result<()> {
    buf.clear();
    codec.write(packet, buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    writer.write_all(buf).await?;
    writer.flush().await
}

fn connack(code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck { session_present: false, code }, None)
}

fn disconnect_packet() -> Packet {
    Packet::Disconnect(Disconnect { reason_code: DisconnectReasonCode::NormalDisconnection }, None)
}

/// Ends the router's side of the connection: the will (if any) and a DISCONNECT, handed over
/// with at most one wake-up. The router drains the whole buffer on each wake-up; a second one
/// for a connection it already removed makes it log "no-connection id … is already gone" at
/// ERROR level, once per device disconnect. So when packets are still waiting (a wake-up is
/// queued for them), ours join them without another.
/// Publishes `will` through a short-lived link of the gateway's own.
async fn publish_will_elsewhere(links: &LinkFactory, will: LastWill) {
    let links = links.clone();
    let client_id = format!("{RESERVED_CLIENT_PREFIX}-will-{:016x}", rand::random::<u64>());
    match tokio::task::spawn_blocking(move || links(&client_id, true)).await {
        Ok(Ok((mut tx, _rx, _))) => close_link(&mut tx, Some(will)).await,
        _ => tracing::warn!("the will of a session the router closed could not be published"),
    }
}

async fn close_link(link_tx: &mut LinkTx, will: Option<LastWill>) {
    let mut packets = Vec::new();
    if let Some(will) = will {
        // The router delivers at each subscriber's QoS, so the will's own QoS need not be kept here.
        packets.push(Packet::Publish(Publish::new(will.topic, will.message, will.retain), None));
    }
    packets.push(disconnect_packet());
    {
        let mut buffer = link_tx.buffer();
        if !buffer.is_empty() {
            buffer.extend(packets);
            return;
        }
    }
    let last = packets.pop();
    link_tx.buffer().extend(packets);
    if let Some(last) = last {
        let _ = link_tx.send(last).await;
    }
}

/// The client id this connection uses. An empty id with a clean session gets a generated one;
/// ids the router cannot represent or that impersonate the gateway are refused.
#[allow(clippy::result_unit_err)]
pub fn client_id_for(requested: &str, clean_session: bool) -> Result<String, ()> {
    if requested.is_empty() {
        return if clean_session { Ok(format!("auto-{:016x}", rand::random::<u64>())) } else { Err(()) };
    }
    let forbidden = |c: char| matches!(c, '+' | '#' | '/' | '$') || c.is_control();
    if requested.len() > 256 || requested.chars().any(forbidden) || requested.starts_with(RESERVED_CLIENT_PREFIX) {
        return Err(());
    }
    Ok(requested.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_rules() {
        let ok = |id: &str, clean| client_id_for(id, clean).ok();
        assert_eq!(ok("sensor-1", true).as_deref(), Some("sensor-1"));
        assert_eq!(ok("sensor-1", false).as_deref(), Some("sensor-1"));
        assert!(ok("", true).unwrap().starts_with("auto-"));
        for (id, clean) in [
            ("", false),
            ("a/b", true),
            ("a+", true),
            ("#", true),
            ("$SYS", true),
            ("gatehouse", true),
            ("gatehouse-x", true),
            ("a\0b", true),
        ] {
            assert!(client_id_for(id, clean).is_err(), "{id:?}");
        }
        assert!(client_id_for(&"x".repeat(257), true).is_err());
    }

    #[test]
    fn a_client_publish_with_a_subscription_identifier_is_refused() {
        // Found by fuzzing (fuzz/regressions/mqtt_packets): a v5 PUBLISH with subscription
        // identifiers (properties 01 01 0B 0B 0B 0B …) decoded with five property bytes in its
        // payload, and written to subscribers it read back different again.
        let frame = hex::decode(
            "325c0021646576696365732f686f6d652f65737033322d613162322f74656c656d65747279000315\
             01010b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b\
             0b0300106170706c69636174696f",
        )
        .unwrap();
        let mut buf = BytesMut::from(&frame[..]);
        let Ok(Frame::Packet(Packet::Publish(_, properties))) = Codec::V5.read(&mut buf, 1024) else { panic!() };
        assert!(!properties.as_ref().unwrap().subscription_identifiers.is_empty());
        assert!(!valid_client_properties(properties.as_ref()));
        // Every other property is the client's to send.
        let mut buf = BytesMut::new();
        let properties = PublishProperties { payload_format_indicator: Some(1), ..Default::default() };
        Codec::V5.write(Packet::Publish(Publish::new("a", "x", false), Some(properties)), &mut buf).unwrap();
        let Ok(Frame::Packet(Packet::Publish(_, properties))) = Codec::V5.read(&mut buf, 1024) else { panic!() };
        assert!(valid_client_properties(properties.as_ref()));
        assert!(valid_client_properties(None));
    }

    #[test]
    fn qos_and_pkid_are_read_from_the_wire_form() {
        let mut buf = BytesMut::new();
        // PUBLISH, QoS 1, topic "a", packet id 0x1234, payload "x".
        buf.extend_from_slice(&[0x32, 0x06, 0x00, 0x01, b'a', 0x12, 0x34, b'x']);
        let Ok(Frame::Packet(Packet::Publish(publish, _))) = Codec::V4.read(&mut buf, 1024) else { panic!() };
        assert_eq!(qos_and_pkid(&publish), (1, 0x1234));
        assert_eq!(qos_and_pkid(&Publish::new("a", "x", false)), (0, 0));
    }
}
