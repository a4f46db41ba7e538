//! The MQTT listener's packet handling: what a client sends over its connection.
//!
//! The input is the byte stream a client sends after the TCP (or TLS, or WebSocket) handshake.
//! For each role a client can authenticate as, it goes through what `broker::connection` does
//! with it, without sockets or the router:
//! * `Codec::sniff` on the first bytes, then `Codec::read` (rumqttd's v4/v5 decoders, whose
//!   panics the gateway catches) until the CONNECT, with the configured maximum packet size;
//! * the CONNECT checks: `broker::client_id_for`, the role's client-id rule, the will topic
//!   against the session's ACL (`Identity::acl`);
//! * every further packet as `Session::forward_incoming` handles it: PUBLISH (only properties a
//!   client may send, topic UTF-8, ACL, QoS and packet id for the refusal, the receiver
//!   namespace, a device's telemetry checked against its declared fields), SUBSCRIBE (each
//!   filter against the ACL, the partial SUBACK), PUBREL of refused QoS 2 publishes, DISCONNECT,
//!   CONNECT again (a protocol error);
//! * what the gateway's services then parse from the accepted publishes (remote Ruuvi Gateway
//!   messages, registrations, alerts, command responses, configuration reports);
//! * every reply the layer writes itself, and every accepted PUBLISH written back out with both
//!   codecs (as the router's deliveries to v4 and v5 subscribers are), then read again.
//!
//! It also checks that a stream split into small reads frames the same packets as in one read.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use gatehouse_fuzz::{where_gateway_catches_panics, NOW_MS};
use gateway_core::auth::{Acl, Identity, Role};
use gateway_core::broker::{client_id_for, qos_and_pkid, valid_client_properties, Codec, Frame};
use gateway_core::config::MqttConfig;
use gateway_core::lifecycle::registration::{self, Capabilities};
use gateway_core::{device_config, ruuvi_gateway, tasks, topics};
use libfuzzer_sys::fuzz_target;
use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, SubAck, SubscribeReasonCode,
};

const SITE: &str = "home";
const ROLES: [Role; 5] = [Role::Device, Role::Provisioning, Role::Service, Role::Receiver, Role::HomeAssistant];

fn max_packet_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| MqttConfig::default().max_packet_size)
}

fn capabilities() -> &'static Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    CAPS.get_or_init(|| {
        let caps = serde_json::json!({"telemetry": [{"name": "temperature", "type": "number"},
                                                    {"name": "door", "type": "boolean"}], "commands": []});
        registration::parse_capabilities(caps.as_object().unwrap()).unwrap()
    })
}

/// One `Codec::read`; `None` for an error (the connection ends), as in `broker::connection`.
fn read(codec: Codec, buf: &mut BytesMut) -> Option<Frame> {
    where_gateway_catches_panics(|| codec.read(buf, max_packet_size())).ok()
}

fn write(codec: Codec, packet: Packet) -> BytesMut {
    let mut out = BytesMut::new();
    codec.write(packet, &mut out).expect("the gateway writes only packets it can encode");
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some(codec)) = Codec::sniff(data) else { return };
    let whole = frames(codec, data, data.len());
    let chunked = frames(codec, data, 1 + data.len() % 7);
    assert_eq!(whole, chunked, "framing depends on how the stream is split");
    for role in ROLES {
        session(codec, role, data);
    }
});

/// The packets framed from `data` read in pieces of `chunk` bytes, up to the first error.
fn frames(codec: Codec, data: &[u8], chunk: usize) -> Vec<Option<Packet>> {
    let mut packets = Vec::new();
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match read(codec, &mut buf) {
                Some(Frame::Packet(packet)) => packets.push(Some(packet)),
                Some(Frame::Incomplete) => break,
                None => {
                    packets.push(None);
                    return packets;
                }
            }
        }
    }
    packets
}

fn session(codec: Codec, role: Role, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let Some(Frame::Packet(Packet::Connect(connect, _, will, _, login))) = read(codec, &mut buf) else { return };
    let Ok(client_id) = client_id_for(&connect.client_id, connect.clean_session) else { return };
    assert!(!client_id.is_empty() && !client_id.starts_with(topics::RESERVED_CLIENT_PREFIX));
    let username = match role {
        // A device's account is its id; a receiver's is often its client id too.
        Role::Device => client_id.clone(),
        Role::Receiver => login.as_ref().map_or_else(|| client_id.clone(), |l| l.username.clone()),
        _ => "svc".to_string(),
    };
    let identity = Identity {
        username,
        role,
        site: SITE.into(),
        rules: vec![],
        enabled: true,
        description: None,
        created_at: 0,
        password_hash: None,
        next_password_hash: None,
    };
    if !identity.allows_client_id(&client_id) {
        return;
    }
    let acl = identity.acl(&client_id);
    if let Some(will) = &will {
        if !acl.can_publish(&String::from_utf8_lossy(&will.topic)) {
            return;
        }
    }
    let _ = std::time::Duration::from_secs(u64::from(connect.keep_alive)).mul_f32(1.5);
    let mut layer = Layer {
        codec,
        acl,
        role,
        client_id,
        receiver_namespace: (role == Role::Receiver).then(|| format!("gatehouse/{SITE}/receivers/")),
        telemetry_topic: (role == Role::Device).then(|| topics::device_topic(SITE, &identity.username, "telemetry")),
        pending_subacks: Default::default(),
        denied_qos2: Default::default(),
        replies: vec![],
    };
    while let Some(Frame::Packet(packet)) = read(codec, &mut buf) {
        if !layer.incoming(packet) {
            break;
        }
    }
    for reply in std::mem::take(&mut layer.replies) {
        write(codec, reply);
    }
}

struct Layer {
    codec: Codec,
    acl: Acl,
    role: Role,
    client_id: String,
    receiver_namespace: Option<String>,
    telemetry_topic: Option<String>,
    pending_subacks: std::collections::HashMap<u16, Vec<bool>>,
    denied_qos2: std::collections::HashSet<u16>,
    replies: Vec<Packet>,
}

impl Layer {
    /// `false` when the session ends.
    fn incoming(&mut self, packet: Packet) -> bool {
        match packet {
            Packet::Connect(..) | Packet::Disconnect(..) => false,
            Packet::Publish(_, properties) if !valid_client_properties(properties.as_ref()) => false,
            Packet::Publish(mut publish, properties) => {
                let Ok(topic) = std::str::from_utf8(&publish.topic).map(str::to_string) else { return false };
                if !self.acl.can_publish(&topic) {
                    let (qos, pkid) = qos_and_pkid(&publish);
                    assert!(qos <= 2, "QoS {qos} decoded");
                    match qos {
                        1 => self
                            .replies
                            .push(Packet::PubAck(PubAck { pkid, reason: PubAckReason::NotAuthorized }, None)),
                        2 => {
                            self.denied_qos2.insert(pkid);
                            self.replies
                                .push(Packet::PubRec(PubRec { pkid, reason: PubRecReason::NotAuthorized }, None));
                        }
                        _ => {}
                    }
                    return true;
                }
                self.for_gateway(&topic, &publish.payload);
                if let Some(prefix) = &self.receiver_namespace {
                    let mut namespaced = prefix.clone().into_bytes();
                    namespaced.extend_from_slice(&publish.topic);
                    publish.topic = namespaced.into();
                }
                // Delivered by the router to v4 and v5 subscribers.
                for out in [Codec::V4, Codec::V5] {
                    let mut wire = write(out, Packet::Publish(publish.clone(), properties.clone()));
                    match read(out, &mut wire) {
                        Some(Frame::Packet(Packet::Publish(back, _))) => {
                            assert_eq!((back.topic, back.payload), (publish.topic.clone(), publish.payload.clone()))
                        }
                        other => panic!("a PUBLISH we wrote does not read back: {other:?}"),
                    }
                }
                true
            }
            Packet::Subscribe(mut subscribe, _) => {
                // One filter twice in a packet is refused the second time.
                let mut seen = std::collections::HashSet::new();
                let allowed: Vec<bool> = subscribe
                    .filters
                    .iter()
                    .map(|f| self.acl.can_subscribe(&f.path) && seen.insert(f.path.clone()))
                    .collect();
                let refused = allowed.iter().filter(|a| !**a).count();
                let refusal = match self.codec {
                    Codec::V4 => SubscribeReasonCode::Failure,
                    Codec::V5 => SubscribeReasonCode::NotAuthorized,
                };
                if refused == allowed.len() {
                    let return_codes = vec![refusal; allowed.len()];
                    self.replies.push(Packet::SubAck(SubAck { pkid: subscribe.pkid, return_codes }, None));
                } else if refused > 0 {
                    let mut keep = allowed.iter();
                    subscribe.filters.retain(|_| *keep.next().unwrap_or(&false));
                    assert_eq!(subscribe.filters.len(), allowed.len() - refused);
                    self.pending_subacks.insert(subscribe.pkid, allowed);
                }
                true
            }
            Packet::PubRel(pubrel, _) if self.denied_qos2.remove(&pubrel.pkid) => {
                self.replies.push(Packet::PubComp(PubComp { pkid: pubrel.pkid, reason: PubCompReason::Success }, None));
                true
            }
            _ => true,
        }
    }

    /// What the gateway's services do with an accepted publish of a device, provisioning client
    /// or receiver (`to_gateway` in `broker::connection`).
    fn for_gateway(&mut self, topic: &str, payload: &[u8]) {
        match self.role {
            Role::Device => {
                if self.telemetry_topic.as_deref() == Some(topic) {
                    let _ = registration::telemetry_message(&self.client_id, capabilities(), payload, NOW_MS);
                } else if topic.ends_with("/alert") {
                    let _ = registration::parse_alert(payload);
                } else if topic.ends_with("/command_response") {
                    let _ = tasks::protocol::parse_response(payload);
                } else if topic.ends_with("/config_reported") {
                    let _ = device_config::parse_report(payload, NOW_MS);
                }
            }
            Role::Provisioning => {
                if topic == topics::provisioning_request(SITE, &self.client_id) {
                    let _ = registration::parse(payload, Some(&self.client_id));
                }
            }
            Role::Receiver => {
                let _ = ruuvi_gateway::parse_mqtt(topic, payload);
            }
            Role::Service | Role::HomeAssistant => {}
        }
    }
}
