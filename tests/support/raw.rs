//! Hand-made MQTT 3.1.1 packets, for tests that need a client to misbehave (stay silent, stop
//! reading) in ways a client library will not.

use crate::Credentials;

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn with_header(kind: u8, body: Vec<u8>) -> Vec<u8> {
    let mut packet = vec![kind];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// CONNECT with a clean session and credentials.
pub fn connect(client_id: &str, keep_alive: u16, credentials: &Credentials) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0b1100_0010];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for field in [client_id, credentials.username.as_str(), credentials.password.as_str()] {
        string(&mut body, field);
    }
    with_header(0x10, body)
}

/// SUBSCRIBE to one filter at QoS 0.
pub fn subscribe(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    string(&mut body, filter);
    body.push(0);
    with_header(0x82, body)
}
