//! The embedded MQTT broker: rumqttd's router does the routing (QoS 1/2, retained messages,
//! sessions); our own listener layer in front of it owns the sockets, one router link per client,
//! so that every CONNECT, PUBLISH and SUBSCRIBE passes through code we control.
//!
//! rumqttd has no shutdown API: the router thread lives as long as the process (one per
//! process), while listeners stop with the gateway's shutdown token.

mod codec;
mod connection;
mod gateway_link;

pub use codec::{Codec, SniffError};
pub use gateway_link::run_gateway_link;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::MqttConfig;

/// Creates a router link for a client id; `clean_session` as in CONNECT.
pub type LinkFactory =
    Arc<dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), LinkError> + Send + Sync>;

#[derive(Debug, Default)]
pub struct BrokerStats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connected: AtomicI64,
    pub(crate) connect_refused: AtomicU64,
    pub(crate) publishes_in: AtomicU64,
    pub(crate) publishes_out: AtomicU64,
    pub(crate) malformed_packets: AtomicU64,
    pub(crate) oversized_packets: AtomicU64,
    pub(crate) keepalive_timeouts: AtomicU64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSnapshot {
    pub connections_accepted: u64,
    pub clients_connected: i64,
    pub connect_refused: u64,
    pub publishes_in: u64,
    pub publishes_out: u64,
    pub malformed_packets: u64,
    pub oversized_packets: u64,
    pub keepalive_timeouts: u64,
}

impl BrokerStats {
    pub fn snapshot(&self) -> BrokerSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerSnapshot {
            connections_accepted: get(&self.connections_accepted),
            clients_connected: self.connected.load(Ordering::Relaxed),
            connect_refused: get(&self.connect_refused),
            publishes_in: get(&self.publishes_in),
            publishes_out: get(&self.publishes_out),
            malformed_packets: get(&self.malformed_packets),
            oversized_packets: get(&self.oversized_packets),
            keepalive_timeouts: get(&self.keepalive_timeouts),
        }
    }
}

pub struct Broker {
    pub addr: SocketAddr,
    pub links: LinkFactory,
    pub stats: Arc<BrokerStats>,
}

/// Starts the router and the TCP listener. Returns once the listener is bound, with the actual
/// address (port 0 picks a free port).
pub async fn start(
    config: &MqttConfig,
    bus: Bus,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<Broker> {
    let router_config = RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        max_segment_size: config.segment_size,
        max_segment_count: config.segment_count,
        ..RouterConfig::default()
    };
    let router_tx = Router::new(0, router_config).spawn();
    let links: LinkFactory = Arc::new(move |client_id: &str, clean_session: bool| {
        rumqttd::local::LinkBuilder::new(client_id, router_tx.clone())
            .clean_session(clean_session)
            .build()
    });

    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(BrokerStats::default());
    let context = Arc::new(connection::Context {
        links: links.clone(),
        stats: stats.clone(),
        max_packet_size: config.max_packet_size,
        connect_timeout: config.connect_timeout,
        bus,
    });
    let accept_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.cancelled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    context
                        .stats
                        .connections_accepted
                        .fetch_add(1, Ordering::Relaxed);
                    accept_tasks.spawn(connection::serve(
                        stream,
                        peer,
                        context.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(error) => {
                    // Usually file-descriptor exhaustion: back off instead of spinning.
                    tracing::warn!(%error, "accepting an MQTT connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        tracing::debug!("MQTT listener stopped");
    });
    Ok(Broker { addr, links, stats })
}
