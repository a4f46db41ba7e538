//! A real MQTT client (rumqttc over TCP, TLS or WebSocket) for tests, with its event loop driven
//! in the background; received publishes and SUBACKs are collected in channels.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};
use rustls::pki_types::pem::PemObject;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub qos: QoS,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("{}: payload is not JSON: {e}", self.topic))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

pub struct Client {
    pub client: AsyncClient,
    pub messages: mpsc::UnboundedReceiver<Message>,
    /// SUBACK return codes, in arrival order.
    pub subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    /// Resolves with the error that ended the connection.
    pub closed: oneshot::Receiver<String>,
    task: tokio::task::JoinHandle<()>,
}

pub fn options(client_id: &str, addr: SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options
}

/// Options for `client_id` authenticated as `credentials`.
pub fn options_as(client_id: &str, addr: SocketAddr, credentials: &crate::Credentials) -> MqttOptions {
    let mut options = options(client_id, addr);
    options.set_credentials(credentials.username.clone(), credentials.password.clone());
    options
}

pub fn with_will(mut options: MqttOptions, topic: &str, payload: &str) -> MqttOptions {
    options.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    options
}

/// TLS client settings trusting the gateway's CA (PEM), for MQTT over TLS or secure WebSocket.
pub fn tls_transport(ca_pem: &str, websocket: bool) -> rumqttc::Transport {
    tls_transport_with_identity(ca_pem, websocket, None)
}

/// Like [`tls_transport`], presenting a client certificate and key (PEM) when given.
pub fn tls_transport_with_identity(
    ca_pem: &str,
    websocket: bool,
    identity: Option<(&str, &str)>,
) -> rumqttc::Transport {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain =
                rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("client key");
            builder.with_client_auth_cert(chain, key).expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    let tls = rumqttc::TlsConfiguration::Rustls(Arc::new(config));
    if websocket {
        rumqttc::Transport::wss_with_config(tls)
    } else {
        rumqttc::Transport::tls_with_config(tls)
    }
}

impl Client {
    /// Connects and waits for the CONNACK; panics with the broker's answer when refused.
    pub async fn connect(options: MqttOptions) -> Client {
        Self::try_connect(options).await.unwrap_or_else(|e| panic!("MQTT connect failed: {e}"))
    }

    pub async fn try_connect(options: MqttOptions) -> Result<Client, rumqttc::ConnectionError> {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => panic!("no CONNACK within 10 s"),
            }
        }
        let (tx, messages) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let (closed_tx, closed) = oneshot::channel();
        let task = tokio::spawn(drive(eventloop, tx, suback_tx, closed_tx));
        Ok(Client { client, messages, subacks, closed, task })
    }

    /// Collects messages until `count` arrived or `timeout` passed.
    pub async fn collect(&mut self, count: usize, timeout: Duration) -> Vec<Message> {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while received.len() < count {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(message)) => received.push(message),
                _ => break,
            }
        }
        received
    }

    /// Waits for the next message on `topic`.
    pub async fn next_on(&mut self, topic: &str, timeout: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(message)) if message.topic == topic => return Some(message),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// Subscribes (QoS 1) and returns the SUBACK's return codes.
    pub async fn subscribe_many(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        let filters = filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
        self.client.subscribe_many(filters).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.subacks.recv())
            .await
            .expect("SUBACK within 5 s")
            .expect("SUBACK")
    }

    /// Waits until the broker ends the connection; returns the client's error text.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, &mut self.closed).await.ok().and_then(Result::ok)
    }

    /// Drops the connection without DISCONNECT, as a device losing power would.
    pub fn kill(self) {
        self.task.abort();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Message>,
    subacks: mpsc::UnboundedSender<Vec<SubscribeReasonCode>>,
    closed: oneshot::Sender<String>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(Message {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                    qos: p.qos,
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let _ = subacks.send(ack.return_codes);
            }
            Ok(_) => {}
            Err(error) => {
                let _ = closed.send(error.to_string());
                return;
            }
        }
    }
}
