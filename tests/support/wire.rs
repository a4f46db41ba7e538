//! Bytes on the wire for bad-input and TLS tests: hand-made MQTT packets with any field wrong,
//! a TLS ClientHello of any protocol version, and a raw exchange over TCP that reports what the
//! server answered and whether it closed the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Credentials;

/// The MQTT variable-length "remaining length" encoding.
pub fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return out;
        }
    }
}

/// A packet: the first byte (type and flags), the correct remaining length, the body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(remaining_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// A length-prefixed MQTT string (any bytes, valid UTF-8 or not).
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// CONNECT with any protocol name and level; clean session; username and password when given.
/// Level 5 gets an empty property block.
pub fn connect_with(name: &[u8], level: u8, client_id: &[u8], credentials: Option<&Credentials>) -> Vec<u8> {
    let mut flags = 0b0000_0010;
    if credentials.is_some() {
        flags |= 0b1100_0000;
    }
    let mut body = string(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    body.extend(string(client_id));
    if let Some(c) = credentials {
        body.extend(string(c.username.as_bytes()));
        body.extend(string(c.password.as_bytes()));
    }
    packet(0x10, &body)
}

/// An MQTT 3.1.1 CONNECT.
pub fn connect(client_id: &str, credentials: &Credentials) -> Vec<u8> {
    connect_with(b"MQTT", 4, client_id.as_bytes(), Some(credentials))
}

/// An MQTT 3.1.1 PUBLISH with any topic bytes; QoS 0 has no packet id.
pub fn publish(topic: &[u8], payload: &[u8], qos: u8, packet_id: u16) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// An MQTT 3.1.1 SUBSCRIBE of one filter (any bytes) at QoS 1.
pub fn subscribe(packet_id: u16, filter: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend(string(filter));
    body.push(1);
    packet(0x82, &body)
}

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// What the server did after we sent our bytes.
#[derive(Debug)]
pub struct Exchange {
    /// Everything the server sent back.
    pub received: Vec<u8>,
    /// The server closed (or reset) the connection within the wait.
    pub closed: bool,
}

impl Exchange {
    /// The server answered with a CONNACK carrying this return code (MQTT 3.1.1 or 5).
    pub fn connack_code(&self) -> Option<u8> {
        match self.received.as_slice() {
            [0x20, 0x02, _, code, ..] => Some(*code),
            [0x20, len, _, code, ..] if *len >= 3 => Some(*code),
            _ => None,
        }
    }
}

/// Connects to `addr`, sends each chunk of `parts` in turn (each may be answered before the next
/// goes out), then reads until the server closes the connection or `wait` passes.
pub async fn exchange(addr: SocketAddr, parts: &[Vec<u8>], wait: Duration) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    exchange_on(&mut stream, parts, wait).await
}

pub async fn exchange_on(stream: &mut TcpStream, parts: &[Vec<u8>], wait: Duration) -> Exchange {
    let mut received = Vec::new();
    let mut closed = false;
    for part in parts {
        if stream.write_all(part).await.is_err() {
            closed = true;
            break;
        }
        // Give the server a moment to answer (or hang up) before the next part.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 64 * 1024];
    while !closed {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed = true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Exchange { received, closed }
}

/// A TLS ClientHello record offering only `version` (0x0301 = TLS 1.0, 0x0302 = TLS 1.1,
/// 0x0303 = TLS 1.2) with the legacy version field and no `supported_versions` extension, the
/// way clients older than TLS 1.3 send it: AES-CBC and AES-GCM suites with ECDHE, SNI
/// `localhost`, the P-256 and X25519 groups.
pub fn client_hello(version: u16) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11))); // random
    hello.push(0); // no session id
    let suites: [u16; 8] = [0xc02b, 0xc02f, 0xc009, 0xc013, 0xc00a, 0xc014, 0x002f, 0x0035];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null only
    let mut extensions = Vec::new();
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    extension(&mut extensions, 0x0000, &sni);
    extension(&mut extensions, 0x000a, &[0x00, 0x04, 0x00, 0x17, 0x00, 0x1d]); // supported groups
    extension(&mut extensions, 0x000b, &[0x01, 0x00]); // EC point formats: uncompressed
    extension(&mut extensions, 0x000d, &[0x00, 0x06, 0x04, 0x03, 0x04, 0x01, 0x02, 0x01]); // signature algorithms
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);

    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// The description of a TLS alert record at the start of `bytes` (70 = protocol_version).
pub fn tls_alert(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [0x15, 0x03, _, 0x00, 0x02, _level, description, ..] => Some(*description),
        _ => None,
    }
}

/// Sends a raw HTTP/1.1 request: `head` (request line and headers, without the blank line; a
/// `Content-Length` of `body_len` is added when `body_len` is given), then the body in chunks of
/// `chunk` until all is sent or the server stops reading. Returns the status code of the answer
/// (if any), its body, and how many body bytes went out before the answer or the hang-up.
pub async fn http_request(
    addr: SocketAddr,
    head: &str,
    body_len: Option<usize>,
    chunk: &[u8],
) -> (Option<u16>, String, usize) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = head.trim_end().replace('\n', "\r\n").replace("\r\r", "\r");
    request.push_str(&format!("\r\nHost: {addr}\r\n"));
    if let Some(len) = body_len {
        request.push_str(&format!("Content-Length: {len}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let (mut reader, mut writer) = stream.split();
    let mut response = Vec::new();
    let mut sent = 0usize;
    {
        let write_body = async {
            writer.write_all(request.as_bytes()).await?;
            let total = body_len.unwrap_or(0);
            while sent < total && !chunk.is_empty() {
                let n = chunk.len().min(total - sent);
                writer.write_all(&chunk[..n]).await?;
                sent += n;
            }
            std::io::Result::Ok(())
        };
        let read_answer = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
                }
            }
        };
        // The answer may come (and the connection close) before the whole body went out.
        tokio::pin!(write_body);
        tokio::pin!(read_answer);
        tokio::select! {
            _ = &mut read_answer => {}
            _ = &mut write_body => (&mut read_answer).await,
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).filter(|_| text.starts_with("HTTP/1."));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body, sent)
}
