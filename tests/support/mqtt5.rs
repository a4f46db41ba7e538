//! A real MQTT 5 client (rumqttc's v5 client over TCP) for tests that need the broker's reason
//! codes: the PUBACK reason of each QoS 1 publish, the SUBACK reason of each filter, and the
//! messages delivered. Its event loop runs in the background, like [`crate::mqtt::Client`]'s.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;

use crate::mqtt::Message;
use crate::Credentials;

pub use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as ConnectCode5, PubAckReason as PubAck5, SubscribeReasonCode as SubAck5,
};

pub struct Client5 {
    pub client: AsyncClient,
    pub messages: mpsc::UnboundedReceiver<Message>,
    acks: mpsc::UnboundedReceiver<(u16, PubAckReason)>,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    closed: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

/// Options for an MQTT 5 client `client_id` on `addr`, authenticated as `credentials` if given.
pub fn options5(client_id: &str, addr: SocketAddr, credentials: Option<&Credentials>) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(Some(1024 * 1024));
    if let Some(c) = credentials {
        options.set_credentials(c.username.clone(), c.password.clone());
    }
    options
}

impl Client5 {
    /// Connects and waits for the CONNACK.
    pub async fn try_connect(options: MqttOptions) -> Result<Client5, ConnectionError> {
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
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx, ack_tx, suback_tx, closed_tx));
        Ok(Client5 { client, messages, acks, subacks, closed, task })
    }

    pub async fn connect(options: MqttOptions) -> Client5 {
        Self::try_connect(options).await.unwrap_or_else(|e| panic!("MQTT 5 connect failed: {e}"))
    }

    /// Publishes at QoS 1 and returns the broker's PUBACK reason, or `None` when the connection
    /// ended (or no PUBACK came within 5 s).
    pub async fn publish_acked(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Option<PubAckReason> {
        while self.acks.try_recv().is_ok() {}
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).await.ok()?;
        tokio::select! {
            ack = tokio::time::timeout(Duration::from_secs(5), self.acks.recv()) => ack.ok().flatten().map(|(_, r)| r),
            _ = self.closed.recv() => None,
        }
    }

    /// Subscribes to one filter (QoS 1) and returns its SUBACK reason.
    pub async fn subscribe_one(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let codes = tokio::time::timeout(Duration::from_secs(5), self.subacks.recv())
            .await
            .unwrap_or_else(|_| panic!("no SUBACK for {filter} within 5 s"))
            .expect("SUBACK");
        assert_eq!(codes.len(), 1, "one reason code per filter: {codes:?}");
        codes[0]
    }

    /// Whether the broker has ended the connection.
    pub fn is_closed(&mut self) -> bool {
        !self.closed.is_empty() || self.task.is_finished()
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

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Message>,
    acks: mpsc::UnboundedSender<(u16, PubAckReason)>,
    subacks: mpsc::UnboundedSender<Vec<SubscribeReasonCode>>,
    closed: mpsc::UnboundedSender<String>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                    qos: match p.qos {
                        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
                    },
                });
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let _ = acks.send((ack.pkid, ack.reason));
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
