//! One MQTT client connection: reads CONNECT, creates the client's router link, then pumps
//! packets between the socket and the router until either side ends. This layer owns what
//! rumqttd's router does not: client-id rules, CONNACK refusals, keep-alive and will messages.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    self, ConnAck, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill, Packet, Publish,
};
use rumqttd::Notification;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{Codec, Frame};
use super::{BrokerStats, LinkFactory};
use crate::bus::Bus;
use crate::topics::RESERVED_CLIENT_PREFIX;

pub(super) struct Context {
    pub links: LinkFactory,
    pub stats: Arc<BrokerStats>,
    pub max_packet_size: usize,
    pub connect_timeout: Duration,
    #[allow(dead_code)] // connection events join the bus with the secure-broker work
    pub bus: Bus,
}

/// Why a session ended; decides whether the will is published.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT: no will.
    ClientDisconnected,
    /// The router dropped the link (a new connection took over the client id): no will.
    TakenOver,
    Closed,
    Io(std::io::Error),
    KeepAliveExpired,
    Protocol(protocol::Error),
    GatewayShutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientDisconnected => write!(f, "client sent DISCONNECT"),
            End::TakenOver => write!(f, "session taken over by a new connection"),
            End::Closed => write!(f, "connection closed by the client"),
            End::Io(error) => write!(f, "network error: {error}"),
            End::KeepAliveExpired => write!(f, "keep-alive expired"),
            End::Protocol(error) => write!(f, "protocol error: {error}"),
            End::GatewayShutdown => write!(f, "gateway shutting down"),
        }
    }
}

pub(super) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + NoDelay,
{
    stream.set_nodelay();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut read_buf = BytesMut::with_capacity(4 * 1024);
    let mut write_buf = BytesMut::with_capacity(4 * 1024);

    let (codec, connect_packet) = match tokio::time::timeout(
        ctx.connect_timeout,
        read_connect(&mut reader, &mut read_buf, &ctx),
    )
    .await
    {
        Ok(Some(connect)) => connect,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, timeout = ?ctx.connect_timeout, "no CONNECT in time; closing");
            return;
        }
    };
    let Packet::Connect(connect, _properties, will, _will_properties, _login) = connect_packet
    else {
        unreachable!("read_connect returns CONNECT packets only")
    };

    let client_id = match client_id_for(&connect.client_id, connect.clean_session) {
        Ok(id) => id,
        Err(code) => {
            ctx.stats.connect_refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, client_id = %connect.client_id, ?code, "MQTT connection refused: invalid client id");
            let _ = write_packet(&mut writer, &mut write_buf, codec, connack(code)).await;
            return;
        }
    };

    let links = ctx.links.clone();
    let link_client_id = client_id.clone();
    let clean_session = connect.clean_session;
    let built = tokio::task::spawn_blocking(move || links(&link_client_id, clean_session)).await;
    let (mut link_tx, mut link_rx, router_connack) = match built {
        Ok(Ok(link)) => link,
        other => {
            ctx.stats.connect_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, %client_id, error = ?other.err(), "router refused the connection (connection limit reached?)");
            let code = match codec {
                Codec::V4 => ConnectReturnCode::ServiceUnavailable,
                Codec::V5 => ConnectReturnCode::ServerUnavailable,
            };
            let _ = write_packet(&mut writer, &mut write_buf, codec, connack(code)).await;
            return;
        }
    };
    if let Some(packet) = Option::<Packet>::from(router_connack) {
        if write_packet(&mut writer, &mut write_buf, codec, packet)
            .await
            .is_err()
        {
            let _ = link_tx.send(disconnect_packet()).await;
            return;
        }
    }
    ctx.stats.connected.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%client_id, %peer, ?codec, keep_alive = connect.keep_alive, "MQTT client connected");

    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_secs(u64::from(connect.keep_alive)).mul_f32(1.5));
    let mut session = Session {
        reader,
        writer,
        read_buf,
        write_buf,
        codec,
        link_tx: &mut link_tx,
        link_rx: &mut link_rx,
        ctx: &ctx,
    };
    let end = session.pump(keep_alive, &shutdown).await;
    ctx.stats.connected.fetch_sub(1, Ordering::Relaxed);

    match end {
        End::ClientDisconnected | End::TakenOver => {}
        _ => {
            if let Some(will) = will {
                publish_will(&mut link_tx, will).await;
            }
            // Lets the router forget the connection (it would otherwise keep a zombie entry).
            let _ = link_tx.send(disconnect_packet()).await;
        }
    }
    tracing::info!(%client_id, %peer, reason = %end, "MQTT client disconnected");
}

/// Socket types that can turn off Nagle's algorithm (small MQTT packets must not wait 40 ms).
pub(super) trait NoDelay {
    fn set_nodelay(&self);
}

impl NoDelay for tokio::net::TcpStream {
    fn set_nodelay(&self) {
        let _ = tokio::net::TcpStream::set_nodelay(self, true);
    }
}

async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    ctx: &Context,
) -> Option<(Codec, Packet)> {
    let codec = loop {
        match Codec::sniff(buf) {
            Ok(Some(codec)) => break codec,
            Ok(None) => {}
            Err(error) => {
                ctx.stats.malformed_packets.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "rejecting connection");
                return None;
            }
        }
        if reader.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    loop {
        match codec.read(buf, ctx.max_packet_size) {
            Ok(Frame::Packet(packet @ Packet::Connect(..))) => return Some((codec, packet)),
            Ok(Frame::Packet(_)) => return None,
            Ok(Frame::Incomplete) => {
                if reader.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            Err(error) => {
                count_bad_packet(&ctx.stats, &error);
                tracing::debug!(%error, "malformed CONNECT");
                return None;
            }
        }
    }
}

struct Session<'a, S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    codec: Codec,
    link_tx: &'a mut LinkTx,
    link_rx: &'a mut LinkRx,
    ctx: &'a Context,
}

impl<S: AsyncRead + AsyncWrite> Session<'_, S> {
    async fn pump(&mut self, keep_alive: Option<Duration>, shutdown: &CancellationToken) -> End {
        let mut deadline = keep_alive.map(|k| Instant::now() + k);
        loop {
            let keep_alive_timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = self.reader.read_buf(&mut self.read_buf) => {
                    match read {
                        Ok(0) => return End::Closed,
                        Ok(_) => {}
                        Err(error) => return End::Io(error),
                    }
                    deadline = keep_alive.map(|k| Instant::now() + k);
                    if let Some(end) = self.forward_incoming().await {
                        return end;
                    }
                }
                notification = self.link_rx.next() => {
                    if let Some(end) = self.forward_outgoing(notification).await {
                        return end;
                    }
                }
                _ = keep_alive_timer => {
                    self.ctx.stats.keepalive_timeouts.fetch_add(1, Ordering::Relaxed);
                    return End::KeepAliveExpired;
                }
                _ = shutdown.cancelled() => return End::GatewayShutdown,
            }
        }
    }

    /// Writes `first` and every further notification the router has already queued for this
    /// client in one socket write (one syscall per burst, not per message).
    async fn forward_outgoing(
        &mut self,
        first: Result<Option<Notification>, LinkError>,
    ) -> Option<End> {
        const MAX_BURST_BYTES: usize = 64 * 1024;
        self.write_buf.clear();
        let mut next = Some(first);
        let mut end = None;
        while let Some(notification) = next.take() {
            match notification {
                Ok(Some(Notification::Unschedule)) => {
                    // The router paused us because our outgoing buffer was full.
                    if self.link_rx.wake().await.is_err() {
                        end = Some(End::TakenOver);
                        break;
                    }
                }
                Ok(Some(notification)) => match Option::<Packet>::from(notification) {
                    Some(Packet::Disconnect(..)) => {
                        end = Some(End::TakenOver);
                        break;
                    }
                    Some(packet) => {
                        if let Packet::Publish(..) = packet {
                            self.ctx.stats.publishes_out.fetch_add(1, Ordering::Relaxed);
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
                    end = Some(End::TakenOver);
                    break;
                }
            }
            if self.write_buf.len() < MAX_BURST_BYTES {
                next = self.link_rx.next().now_or_never();
            }
        }
        if !self.write_buf.is_empty() {
            let written = async {
                self.writer.write_all(&self.write_buf).await?;
                self.writer.flush().await
            };
            if let Err(error) = written.await {
                return Some(End::Io(error));
            }
        }
        end
    }

    /// Frames every complete packet in the read buffer and hands them to the router.
    async fn forward_incoming(&mut self) -> Option<End> {
        let mut packets = Vec::new();
        let mut end = None;
        loop {
            match self
                .codec
                .read(&mut self.read_buf, self.ctx.max_packet_size)
            {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Packet(Packet::Connect(..))) => {
                    end = Some(End::Protocol(protocol::Error::InvalidProtocol));
                    break;
                }
                Ok(Frame::Packet(packet)) => {
                    let disconnect = matches!(packet, Packet::Disconnect(..));
                    if let Packet::Publish(..) = packet {
                        self.ctx.stats.publishes_in.fetch_add(1, Ordering::Relaxed);
                    }
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
        end
    }
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
    codec
        .write(packet, buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    writer.write_all(buf).await?;
    writer.flush().await
}

fn connack(code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(
        ConnAck {
            session_present: false,
            code,
        },
        None,
    )
}

fn disconnect_packet() -> Packet {
    Packet::Disconnect(
        Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        },
        None,
    )
}

async fn publish_will(link_tx: &mut LinkTx, will: LastWill) {
    // The router delivers at each subscriber's QoS, so the will's own QoS need not be kept here.
    let publish = Publish::new(will.topic, will.message, will.retain);
    let _ = link_tx.send(Packet::Publish(publish, None)).await;
}

/// The client id this connection uses, or the CONNACK code refusing it. An empty id with a clean
/// session gets a generated one; ids the router cannot represent or that impersonate the gateway
/// are refused.
fn client_id_for(requested: &str, clean_session: bool) -> Result<String, ConnectReturnCode> {
    if requested.is_empty() {
        return if clean_session {
            Ok(format!("auto-{:016x}", rand::random::<u64>()))
        } else {
            Err(ConnectReturnCode::ClientIdentifierNotValid)
        };
    }
    let forbidden = |c: char| matches!(c, '+' | '#' | '/' | '$') || c.is_control();
    if requested.len() > 256
        || requested.chars().any(forbidden)
        || requested.starts_with(RESERVED_CLIENT_PREFIX)
    {
        return Err(ConnectReturnCode::ClientIdentifierNotValid);
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
            assert_eq!(
                client_id_for(id, clean),
                Err(ConnectReturnCode::ClientIdentifierNotValid),
                "{id:?}"
            );
        }
        assert!(client_id_for(&"x".repeat(257), true).is_err());
    }
}
