//! MQTT framing for the listener: picks rumqttd's v4 or v5 codec from the protocol level in the
//! CONNECT packet, then reads and writes packets with it.

use bytes::BytesMut;
use rumqttd::protocol::{self, v4::V4, v5::V5, Packet, Protocol};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    V4,
    V5,
}

/// What reading from the buffer produced.
#[derive(Debug)]
pub enum Frame {
    Packet(Packet),
    /// More bytes are needed before a packet can be framed.
    Incomplete,
}

impl Codec {
    /// Reads the protocol level from a (possibly partial) CONNECT packet at the start of `buf`.
    /// `Ok(None)`: not enough bytes yet. `Err`: not a CONNECT packet or an unsupported level.
    pub fn sniff(buf: &[u8]) -> Result<Option<Codec>, SniffError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != 0x10 {
            return Err(SniffError::NotConnect);
        }
        // Skip the variable-length "remaining length" (1–4 bytes).
        let mut offset = 1;
        loop {
            let Some(&byte) = buf.get(offset) else {
                return Ok(None);
            };
            offset += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if offset > 4 {
                return Err(SniffError::NotConnect);
            }
        }
        let Some(name_len) = buf.get(offset..offset + 2) else {
            return Ok(None);
        };
        let name_len = u16::from_be_bytes([name_len[0], name_len[1]]) as usize;
        let Some(&level) = buf.get(offset + 2 + name_len) else {
            return Ok(None);
        };
        match level {
            4 => Ok(Some(Codec::V4)),
            5 => Ok(Some(Codec::V5)),
            other => Err(SniffError::UnsupportedLevel(other)),
        }
    }

    pub fn read(self, buf: &mut BytesMut, max_size: usize) -> Result<Frame, protocol::Error> {
        let buffered = buf.len();
        // rumqttd's codec has `unreachable!()` arms reachable from hostile input (an AUTH packet
        // on v4, say). A panic here must not take the connection's cleanup down with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self {
            Codec::V4 => V4.read_mut(buf, max_size),
            Codec::V5 => V5.read_mut(buf, max_size),
        }))
        .unwrap_or(Err(protocol::Error::MalformedPacket));
        match result {
            Ok(packet) => Ok(Frame::Packet(packet)),
            // rumqttd takes a whole frame off the buffer before parsing it; when the frame's own
            // fields then run past its end, that is a malformed packet, not a short read.
            Err(protocol::Error::InsufficientBytes(_)) if buf.len() < buffered => Err(protocol::Error::MalformedPacket),
            Err(protocol::Error::InsufficientBytes(_)) => Ok(Frame::Incomplete),
            Err(error) => Err(error),
        }
    }

    pub fn write(self, packet: Packet, buf: &mut BytesMut) -> Result<usize, protocol::Error> {
        match self {
            // MQTT 3.1.1 has no properties; a v5 publisher's properties are dropped for v4 readers.
            Codec::V4 => V4.write(without_properties(packet), buf),
            Codec::V5 => V5.write(packet, buf),
        }
    }
}

fn without_properties(packet: Packet) -> Packet {
    match packet {
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubRel(p, _) => Packet::PubRel(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        Packet::SubAck(p, _) => Packet::SubAck(p, None),
        Packet::UnsubAck(p, _) => Packet::UnsubAck(p, None),
        Packet::ConnAck(p, _) => Packet::ConnAck(p, None),
        Packet::Disconnect(p, _) => Packet::Disconnect(p, None),
        other => other,
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    #[error("the first packet is not CONNECT")]
    NotConnect,
    #[error("MQTT protocol level {0} is not supported (use MQTT 3.1.1 or 5)")]
    UnsupportedLevel(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_table() {
        let v4 = hex::decode("101000044D5154540402003C0004746573").unwrap();
        let v5 = hex::decode("101100044D5154540502003C000000047465").unwrap();
        let v31 = hex::decode("101200064D51497364700302003C0002").unwrap();
        let cases: Vec<(&[u8], Result<Option<Codec>, SniffError>)> = vec![
            (&v4, Ok(Some(Codec::V4))),
            (&v5, Ok(Some(Codec::V5))),
            (&v4[..5], Ok(None)),
            (&v4[..8], Ok(None)),
            (&[], Ok(None)),
            (&v31, Err(SniffError::UnsupportedLevel(3))),
            (&[0x30, 0x02, 0, 0], Err(SniffError::NotConnect)),
            (&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Err(SniffError::NotConnect)),
        ];
        for (input, expected) in cases {
            assert_eq!(Codec::sniff(input), expected, "{}", hex::encode(input));
        }
    }

    #[test]
    fn a_frame_too_short_for_its_fields_is_malformed_not_incomplete() {
        // Found by fuzzing (fuzz/regressions/mqtt_packets): a v5 CONNECT whose remaining length
        // (10) ends before its properties was taken off the buffer and reported as "incomplete",
        // so the connection waited for more bytes and parsed what followed as the next packet.
        let input = hex::decode("100a00044d51545405c2000008110000").unwrap();
        for chunk in [input.len(), 1] {
            let mut buf = BytesMut::new();
            let mut result = Ok(Frame::Incomplete);
            for piece in input.chunks(chunk) {
                buf.extend_from_slice(piece);
                result = Codec::V5.read(&mut buf, 1024);
                if !matches!(result, Ok(Frame::Incomplete)) {
                    break;
                }
            }
            assert!(matches!(result, Err(protocol::Error::MalformedPacket)), "{chunk}-byte reads: {result:?}");
        }
        // The same for v4: a PUBLISH whose topic length runs past the frame is an error.
        let mut buf = BytesMut::from(&[0x30, 0x03, 0x00, 0x09, b'a', 0xC0, 0x00][..]);
        let result = Codec::V4.read(&mut buf, 1024);
        assert!(result.is_err(), "{result:?}");
        // A frame that is really incomplete still is.
        let mut buf = BytesMut::from(&[0x30, 0x05, 0x00, 0x01][..]);
        assert!(matches!(Codec::V4.read(&mut buf, 1024), Ok(Frame::Incomplete)));
        assert_eq!(buf.len(), 4, "nothing consumed");
    }
}
