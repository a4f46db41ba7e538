//! The official Ruuvi Gateway's wire formats (shared/reference/ruuvi.md §2), both ways:
//! accepting what remote Ruuvi Gateways send us (the "custom server" HTTP POST and their MQTT
//! messages) and producing MQTT payloads that tools written for a Ruuvi Gateway (RuuviBridge,
//! Node-RED flows, home-made scripts) read without changes. Pure functions, no I/O.
//!
//! What we take from remote gateways is only the raw advertisement bytes (`data`) plus RSSI and
//! reception time: our own decoder and de-duplicator then treat them exactly like adverts heard
//! locally, whichever firmware version or decoding mode the sender runs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::pipeline::Advertisement;
use crate::ruuvi::{find_ruuvi_payload, Field, Mac, Measurement};

/// A POST with more tags than this is refused whole. A real gateway relays what it heard during
/// one `http_period` (10 s by default); even a busy site stays in the hundreds, so more than this
/// means a misbehaving or hostile sender rather than a big installation.
pub const MAX_TAGS_PER_POST: usize = 1000;

/// Keys echoed back in [`HttpBatch::rejected`] are cut to this many characters, so a hostile body
/// cannot make our logs and error replies as large as itself.
const MAX_ECHOED_KEY_CHARS: usize = 64;

const STATUS_SEGMENT: &str = "gw_status";

/// Why a whole POST body or MQTT message was refused. Messages are written for the person who
/// configured the sending gateway: they say what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("not JSON ({0}); a Ruuvi Gateway sends {{\"data\":{{\"gw_mac\":\"…\",\"tags\":{{…}}}}}}")]
    NotJson(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{count} tags in one POST; at most {MAX_TAGS_PER_POST} are accepted, lower the gateway's HTTP period")]
    TooManyTags { count: usize },
    /// Not a Ruuvi Gateway topic; an MQTT subscriber may simply skip these.
    #[error("topic '{0}' is not <prefix>/<gateway MAC>/<tag MAC> or <prefix>/<gateway MAC>/gw_status")]
    UnknownTopic(String),
    #[error("the payload's gw_mac {payload} differs from the topic's gateway {topic}")]
    GatewayMismatch { topic: Mac, payload: Mac },
    #[error("decoded-only payload: set the gateway's MQTT format to ruuvi_raw or ruuvi_raw_and_decoded")]
    DecodedOnly,
}

/// One tag's advertisement from a POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTag {
    pub tag: Mac,
    pub rssi: Option<i16>,
    /// Unix seconds at reception; `None` when the gateway runs without timestamps (`counter`).
    pub timestamp_s: Option<i64>,
    /// The AD structures exactly as the gateway heard them.
    pub data: Vec<u8>,
}

/// A parsed "custom server" POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBatch {
    pub gw_mac: Mac,
    /// The gateway's clock when it sent the POST, if it has timestamps on.
    pub gw_timestamp_s: Option<i64>,
    /// Sorted by tag MAC.
    pub tags: Vec<HttpTag>,
    /// Entries that could not be used, as (key, reason), so the caller can count and report them.
    pub rejected: Vec<(String, String)>,
}

/// A parsed message from a Ruuvi Gateway's MQTT topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttMessage {
    Advert { gw: Mac, tag: Mac, rssi: Option<i16>, timestamp_s: Option<i64>, data: Vec<u8> },
    GatewayStatus { gw: Mac, online: bool },
}

/// The gateway's `mqtt_data_format` setting; [`OutputMode::Raw`] is its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OutputMode {
    #[default]
    #[serde(rename = "ruuvi_raw")]
    Raw,
    #[serde(rename = "ruuvi_raw_and_decoded")]
    RawAndDecoded,
    #[serde(rename = "ruuvi_decoded")]
    Decoded,
}

/// Parses the body a Ruuvi Gateway POSTs to a custom HTTP server. A bad tag entry lands in
/// `rejected` and never costs the others; only a body that is not a gateway POST at all is an error.
pub fn parse_http_post(body: &[u8]) -> Result<HttpBatch, IngestError> {
    const SHAPE: &str = "expected {\"data\":{\"gw_mac\":\"…\",\"tags\":{\"<tag MAC>\":{\"data\":\"…\",…}}}}";
    let root: Value = serde_json::from_slice(body).map_err(|e| IngestError::NotJson(e.to_string()))?;
    let data = root
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| IngestError::Invalid(format!("no \"data\" object; {SHAPE}")))?;
    let gw_mac = match data.get("gw_mac") {
        None => return Err(IngestError::Invalid(format!("no \"gw_mac\" in \"data\"; {SHAPE}"))),
        Some(value) => parse_gateway_mac(value)?,
    };
    let gw_timestamp_s = match data.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            integer(value)
                .ok_or_else(|| IngestError::Invalid(format!("\"timestamp\" {} is not Unix seconds", echoed(value))))?,
        ),
    };
    let tags = data
        .get("tags")
        .and_then(Value::as_object)
        .ok_or_else(|| IngestError::Invalid(format!("no \"tags\" object in \"data\"; {SHAPE}")))?;
    if tags.len() > MAX_TAGS_PER_POST {
        return Err(IngestError::TooManyTags { count: tags.len() });
    }

    let mut batch = HttpBatch { gw_mac, gw_timestamp_s, tags: Vec::with_capacity(tags.len()), rejected: Vec::new() };
    for (key, entry) in tags {
        match parse_http_tag(key, entry) {
            Ok(tag) => batch.tags.push(tag),
            // Both parts are echoed to the sender and logged: neither may carry a huge key.
            Err(why) => batch.rejected.push((
                key.chars().take(MAX_ECHOED_KEY_CHARS).collect(),
                why.chars().take(MAX_ECHOED_KEY_CHARS + 64).collect(),
            )),
        }
    }
    // serde_json's map order depends on its features; keep the output deterministic regardless.
    batch.tags.sort_by_key(|t| t.tag);
    batch.rejected.sort();
    Ok(batch)
}

fn parse_http_tag(key: &str, entry: &Value) -> Result<HttpTag, String> {
    let tag: Mac = key.parse().map_err(|e: crate::ruuvi::ParseMacError| e.to_string())?;
    let entry = entry.as_object().ok_or("expected an object with \"data\", \"rssi\" and \"timestamp\"")?;
    let data = match entry.get("data") {
        Some(Value::String(hex)) => parse_hex(hex)?,
        Some(other) => return Err(format!("\"data\" must be a hex string, got {}", kind(other))),
        None => {
            return Err("no raw \"data\": set the gateway's HTTP data format to ruuvi or ruuvi_raw_and_decoded".into())
        }
    };
    // Without timestamps the gateway sends a receive `counter` instead; it carries no time.
    let timestamp_s = optional(entry, "timestamp", integer)?;
    let rssi = optional(entry, "rssi", rssi)?;
    Ok(HttpTag { tag, rssi, timestamp_s, data })
}

/// Parses a message from `<prefix>/<gateway MAC>/<tag MAC>` or `<prefix>/<gateway MAC>/gw_status`.
/// The gateway segment may be missing (older firmware published to `ruuvi/<tag MAC>`, and custom
/// prefixes need not contain it); the payload's `gw_mac` then names the gateway.
pub fn parse_mqtt(topic: &str, payload: &[u8]) -> Result<MqttMessage, IngestError> {
    let mut segments = topic.rsplit('/');
    let last = segments.next().unwrap_or_default();
    let topic_gw = segments.next().and_then(|s| s.parse::<Mac>().ok());
    let tag = if last == STATUS_SEGMENT {
        None
    } else {
        Some(last.parse::<Mac>().map_err(|_| IngestError::UnknownTopic(topic.to_string()))?)
    };

    let root: Value = serde_json::from_slice(payload).map_err(|e| IngestError::NotJson(e.to_string()))?;
    let fields = root.as_object().ok_or_else(|| IngestError::Invalid(format!("expected a JSON object on {topic}")))?;
    let payload_gw = match fields.get("gw_mac") {
        None | Some(Value::Null) => None,
        Some(value) => Some(parse_gateway_mac(value)?),
    };
    let gw = match (topic_gw, payload_gw) {
        (Some(topic), Some(payload)) if topic != payload => {
            return Err(IngestError::GatewayMismatch { topic, payload })
        }
        (Some(gw), _) | (None, Some(gw)) => gw,
        (None, None) => {
            return Err(IngestError::Invalid(format!(
                "topic '{topic}' names no gateway MAC and the payload has no \"gw_mac\""
            )))
        }
    };

    let Some(tag) = tag else {
        let online = match fields.get("state").and_then(Value::as_str) {
            Some("online") => true,
            Some("offline") => false,
            _ => {
                return Err(IngestError::Invalid(
                    "gw_status must be {\"state\":\"online\"} or {\"state\":\"offline\"}".into(),
                ))
            }
        };
        return Ok(MqttMessage::GatewayStatus { gw, online });
    };

    let data = match fields.get("data") {
        Some(Value::String(hex)) => parse_hex(hex).map_err(IngestError::Invalid)?,
        Some(other) => return Err(IngestError::Invalid(format!("\"data\" must be a hex string, got {}", kind(other)))),
        None => return Err(IngestError::DecodedOnly),
    };
    let field =
        |name: &str, parse: fn(&Value) -> Option<i64>| optional(fields, name, parse).map_err(IngestError::Invalid);
    // `ts` is when the tag was heard, `gwts` when the gateway relayed it; `cnt` (no-timestamp
    // mode) is a counter, not a time, so it is not used.
    let timestamp_s = field("ts", integer)?.or(field("gwts", integer)?);
    let rssi = optional(fields, "rssi", rssi).map_err(IngestError::Invalid)?;
    Ok(MqttMessage::Advert { gw, tag, rssi, timestamp_s, data })
}

/// An advertisement for the ingest pipeline. Remote gateways without timestamps give no time, so
/// `now_ms` (our reception) stands in.
/// Receiver timestamps older than this (a day) or further ahead than a minute are replaced by
/// the arrival time.
pub const MAX_TIMESTAMP_AGE_MS: i64 = 86_400_000;
pub const MAX_TIMESTAMP_AHEAD_MS: i64 = 60_000;

pub fn to_advertisement(
    tag: Mac,
    rssi: Option<i16>,
    timestamp_s: Option<i64>,
    data: Vec<u8>,
    receiver: Arc<str>,
    now_ms: i64,
) -> Advertisement {
    // A receiver whose clock is unset (or far off) must not scatter a tag's history.
    let plausible = now_ms - MAX_TIMESTAMP_AGE_MS..=now_ms + MAX_TIMESTAMP_AHEAD_MS;
    let received_at =
        timestamp_s.and_then(|s| s.checked_mul(1000)).filter(|ms| plausible.contains(ms)).unwrap_or(now_ms);
    Advertisement { address: Some(tag), data, rssi, received_at: now_ms, measured_at: Some(received_at), receiver }
}

/// The retained status payload a Ruuvi Gateway publishes on `<prefix>gw_status` (and as its LWT).
pub fn gw_status_payload(online: bool) -> &'static str {
    if online {
        r#"{"state":"online"}"#
    } else {
        r#"{"state":"offline"}"#
    }
}

/// One advertisement as a Ruuvi Gateway publishes it on `<prefix><TAG MAC>`, byte for byte:
/// `gw_mac, rssi, aoa, gwts, ts, data, <decoded fields>, coords`. `data` is left out in
/// [`OutputMode::Decoded`]; decoded fields are written only for data formats 5, 6 and E1 (as the
/// gateway does), with the gateway's decimals; values the tag marked unavailable are `null`.
#[allow(clippy::too_many_arguments)]
pub fn encode_mqtt_advert(
    mode: OutputMode,
    gw_mac: &str,
    rssi: Option<i16>,
    gwts_s: i64,
    ts_s: i64,
    data: &[u8],
    measurement: Option<&Measurement>,
    coords: &str,
) -> String {
    let mut out = JsonObject::with_capacity(160 + 2 * data.len());
    out.string("gw_mac", gw_mac);
    out.raw("rssi", &rssi.map_or_else(|| "null".to_string(), |r| r.to_string()));
    out.raw("aoa", "[]");
    out.raw("gwts", &gwts_s.to_string());
    out.raw("ts", &ts_s.to_string());
    if mode != OutputMode::Decoded {
        out.string("data", &hex::encode_upper(data));
    }
    if mode != OutputMode::Raw {
        if let Some(m) = measurement {
            write_decoded(&mut out, m, data);
        }
    }
    out.string("coords", coords);
    out.finish()
}

fn write_decoded(out: &mut JsonObject, m: &Measurement, data: &[u8]) {
    // The sound levels are not in `Measurement` (the official docs call those bytes reserved), but
    // the gateway decodes them with Ruuvi's reference code, so they are read from the raw payload.
    let payload = find_ruuvi_payload(data).ok().filter(|p| p.first() == Some(&m.data_format));
    match m.data_format {
        0x05 => {
            out.raw("dataFormat", "5");
            out.fixed("temperature", m.temperature, 3);
            out.fixed("humidity", m.humidity, 4);
            out.fixed("pressure", m.pressure, 0);
            out.fixed("accelX", m.accel_x, 3);
            out.fixed("accelY", m.accel_y, 3);
            out.fixed("accelZ", m.accel_z, 3);
            out.fixed("movementCounter", m.movement_counter.map(f64::from), 0);
            out.fixed("voltage", m.voltage, 3);
            out.fixed("txPower", m.tx_power.map(f64::from), 0);
            out.integer("measurementSequenceNumber", m.measurement_sequence_number);
            out.id(&m.id);
        }
        0x06 => {
            out.raw("dataFormat", "6");
            out.fixed("temperature", m.temperature, 1);
            out.fixed("humidity", m.humidity, 1);
            out.fixed("pressure", m.pressure, 0);
            out.fixed("PM2.5", m.pm2_5, 1);
            out.fixed("CO2", m.co2, 0);
            out.fixed("VOC", m.voc.map(f64::from), 0);
            out.fixed("NOx", m.nox.map(f64::from), 0);
            out.fixed("luminosity", m.luminosity, 0);
            out.fixed("sound_avg_dba", sound(payload, 14, 16, 4), 1);
            out.integer("measurementSequenceNumber", m.measurement_sequence_number);
            write_flags(out, m);
            out.id(&m.id);
        }
        0xE1 => {
            out.raw("dataFormat", "225");
            out.fixed("temperature", m.temperature, 3);
            out.fixed("humidity", m.humidity, 2);
            out.fixed("pressure", m.pressure, 0);
            out.fixed("PM1.0", m.pm1_0, 1);
            out.fixed("PM2.5", m.pm2_5, 1);
            out.fixed("PM4.0", m.pm4_0, 1);
            out.fixed("PM10.0", m.pm10_0, 1);
            out.fixed("CO2", m.co2, 0);
            out.fixed("VOC", m.voc.map(f64::from), 0);
            out.fixed("NOx", m.nox.map(f64::from), 0);
            out.fixed("luminosity", m.luminosity, 0);
            out.fixed("sound_inst_dba", sound(payload, 22, 28, 3), 1);
            out.fixed("sound_avg_dba", sound(payload, 23, 28, 4), 1);
            out.fixed("sound_peak_spl_db", sound(payload, 24, 28, 5), 1);
            out.integer("measurementSequenceNumber", m.measurement_sequence_number);
            write_flags(out, m);
            out.id(&m.id);
        }
        // The gateway decodes nothing else; the consumer gets the raw data only.
        _ => {}
    }
}

fn write_flags(out: &mut JsonObject, m: &Measurement) {
    out.boolean("flag_calibration_in_progress", m.flag_calibration_in_progress);
    out.boolean("flag_button_pressed", m.flag_button_pressed);
    out.boolean("flag_rtc_running_on_boot", m.flag_rtc_running_on_boot);
}

/// A 9-bit sound level (eight high bits in their own byte, the LSB in the flags byte), in dB:
/// code / 5 + 18, computed in `f32` as the reference decoder does so rounding matches.
fn sound(payload: Option<&[u8]>, at: usize, flags_at: usize, lsb_bit: u8) -> Field<f64> {
    let Some(p) = payload.filter(|p| p.len() > at.max(flags_at)) else {
        return Field::Unavailable;
    };
    let code = (u16::from(p[at]) << 1) | u16::from((p[flags_at] >> lsb_bit) & 1);
    Field::unless(code, 0x1FF).map(|c| f64::from(f32::from(c) / 5.0 + 18.0))
}

/// Builds a JSON object in a fixed field order (serde_json's map would reorder or need a feature).
struct JsonObject(String);

impl JsonObject {
    fn with_capacity(capacity: usize) -> Self {
        let mut s = String::with_capacity(capacity);
        s.push('{');
        JsonObject(s)
    }

    fn raw(&mut self, key: &str, value: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
        self.0.push_str(value);
    }

    fn string(&mut self, key: &str, value: &str) {
        let quoted = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into());
        self.raw(key, &quoted);
    }

    fn fixed(&mut self, key: &str, value: Field<f64>, decimals: u32) {
        let text = value.value().and_then(|v| gateway_fixed_point(v, decimals));
        self.raw(key, text.as_deref().unwrap_or("null"));
    }

    fn integer(&mut self, key: &str, value: Field<u32>) {
        self.raw(key, &value.value().map_or_else(|| "null".into(), |v| v.to_string()));
    }

    fn boolean(&mut self, key: &str, value: Field<bool>) {
        self.raw(key, value.value().map_or("null", |b| if b { "true" } else { "false" }));
    }

    fn id(&mut self, value: &Field<String>) {
        match value.get() {
            Some(id) => self.string("id", id),
            None => self.raw("id", "null"),
        }
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Formats a number the way the gateway's JSON generator does ("limited fixed point"): the value
/// as an `f32`, exactly `decimals` digits after the point (trailing zeros kept, no point at 0), but
/// decimals are dropped, and then trailing digits zeroed, while the scaled value exceeds 2^24, the
/// largest integer an `f32` holds exactly, so no digit is printed that the float does not carry.
/// Ties round to even (`lrintf`). `None` where the gateway writes `null`.
fn gateway_fixed_point(value: f64, decimals: u32) -> Option<String> {
    const EXACT_F32_INTEGERS: f32 = 16_777_216.0;
    const MAX_ZEROED_DIGITS: usize = 3;
    let v = value as f32;
    if !v.is_finite() || decimals > 9 || v.abs() > u32::MAX as f32 {
        return None;
    }
    let abs = v.abs();
    let mut multiplier = 10u32.pow(decimals);
    let mut zeroed = 0usize;
    let mut divider = 1.0f32;
    while abs * multiplier as f32 / divider > EXACT_F32_INTEGERS {
        if multiplier > 1 {
            multiplier /= 10;
        } else {
            zeroed += 1;
            divider *= 10.0;
        }
    }
    if zeroed > MAX_ZEROED_DIGITS {
        return None;
    }
    let scaled = (abs * multiplier as f32 / divider).round_ties_even() as u32;
    let width = multiplier.ilog10() as usize;
    let sign = if v < 0.0 { "-" } else { "" };
    let (integral, fraction) = (scaled / multiplier, scaled % multiplier);
    let zeros = "0".repeat(zeroed);
    Some(if width == 0 {
        format!("{sign}{integral}{zeros}")
    } else {
        format!("{sign}{integral}{zeros}.{fraction:0width$}")
    })
}

fn parse_gateway_mac(value: &Value) -> Result<Mac, IngestError> {
    value.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
        IngestError::Invalid(format!("\"gw_mac\" {} is not a MAC address such as C8:25:2D:8E:9C:2C", echoed(value)))
    })
}

/// A value from the sender, as its refusal quotes it: cut short, like echoed keys, so that a
/// hostile body cannot make our logs and error replies as large as itself.
fn echoed(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(MAX_ECHOED_KEY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.is_empty() {
        return Err("\"data\" is empty".into());
    }
    hex::decode(hex).map_err(|e| format!("\"data\" is not hex ({e})"))
}

/// Timestamps and counters: the gateway's docs declare them strings, its firmware sends numbers.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn rssi(value: &Value) -> Option<i64> {
    integer(value).filter(|r| i16::try_from(*r).is_ok())
}

/// A field that may be missing or `null`, but must parse when present.
fn optional<T: TryFrom<i64>>(
    object: &Map<String, Value>,
    name: &str,
    parse: fn(&Value) -> Option<i64>,
) -> Result<Option<T>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => parse(value)
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("\"{name}\" {} is not an integer in the expected range", echoed(value))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruuvi::decode_advertisement;
    use crate::simulator::{df5_advertisement, encode_df5, Df5Values};

    const GW: &str = "AA:CC:EE:00:11:22";
    const COORDS: &str = "170.112233,59.445566";
    const DF5_DATA: &str = "0201061BFF99040517037758C5C703FCFF30FFF89416B7958AE375CF374E23";

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn bytes(hex: &str) -> Vec<u8> {
        hex::decode(hex).unwrap()
    }

    #[test]
    fn reproduces_the_gateway_unit_test_strings() {
        let data = bytes(DF5_DATA);
        let m = decode_advertisement(&data).unwrap();
        let decoded_fields = r#""dataFormat":5,"temperature":29.455,"humidity":76.3800,"pressure":100631,"accelX":1.020,"accelY":-0.208,"accelZ":-0.008,"movementCounter":183,"voltage":2.784,"txPower":4,"measurementSequenceNumber":38282,"id":"E3:75:CF:37:4E:23""#;
        let head = r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"aoa":[],"gwts":1612358920,"ts":1612358929"#;
        type Case<'a> = (&'a str, OutputMode, Vec<u8>, Option<&'a Measurement>, String);
        let cases: Vec<Case> = vec![
            (
                "raw, one byte of data",
                OutputMode::Raw,
                vec![0xAA],
                None,
                format!(r#"{head},"data":"AA","coords":"170.112233,59.445566"}}"#),
            ),
            (
                "raw ignores the measurement",
                OutputMode::Raw,
                data.clone(),
                Some(&m),
                format!(r#"{head},"data":"{DF5_DATA}","coords":"{COORDS}"}}"#),
            ),
            (
                "raw and decoded",
                OutputMode::RawAndDecoded,
                data.clone(),
                Some(&m),
                format!(r#"{head},"data":"{DF5_DATA}",{decoded_fields},"coords":"{COORDS}"}}"#),
            ),
            (
                "decoded only",
                OutputMode::Decoded,
                data.clone(),
                Some(&m),
                format!(r#"{head},{decoded_fields},"coords":"{COORDS}"}}"#),
            ),
        ];
        for (name, mode, data, m, expected) in cases {
            let got = encode_mqtt_advert(mode, GW, Some(-70), 1612358920, 1612358929, &data, m, COORDS);
            assert_eq!(got, expected, "{name}");
        }
        // The gateway's own test string for the third case, verbatim.
        assert_eq!(
            encode_mqtt_advert(
                OutputMode::RawAndDecoded,
                GW,
                Some(-70),
                1612358920,
                1612358929,
                &data,
                Some(&m),
                COORDS
            ),
            r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"aoa":[],"gwts":1612358920,"ts":1612358929,"data":"0201061BFF99040517037758C5C703FCFF30FFF89416B7958AE375CF374E23","dataFormat":5,"temperature":29.455,"humidity":76.3800,"pressure":100631,"accelX":1.020,"accelY":-0.208,"accelZ":-0.008,"movementCounter":183,"voltage":2.784,"txPower":4,"measurementSequenceNumber":38282,"id":"E3:75:CF:37:4E:23","coords":"170.112233,59.445566"}"#
        );
    }

    #[test]
    fn decoded_fields_per_format() {
        let cases = [
            (
                "DF5 invalid vector: every sentinel is null",
                "0201061BFF9904058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF",
                r#""dataFormat":5,"temperature":null,"humidity":null,"pressure":null,"accelX":null,"accelY":null,"accelZ":null,"movementCounter":null,"voltage":null,"txPower":null,"measurementSequenceNumber":null,"id":null"#,
            ),
            (
                "DF5 minimum vector",
                "0201061BFF9904058001000000008001800180010000000000CBB8334C884F",
                r#""dataFormat":5,"temperature":-163.835,"humidity":0.0000,"pressure":50000,"accelX":-32.767,"accelY":-32.767,"accelZ":-32.767,"movementCounter":0,"voltage":1.600,"txPower":-40,"measurementSequenceNumber":0,"id":"CB:B8:33:4C:88:4F""#,
            ),
            (
                "DF6 reference vector with sound",
                "0201060303 98FC17FF990406170C5668C79E007000C90501D94ACD004C884F",
                r#""dataFormat":6,"temperature":29.5,"humidity":55.3,"pressure":101102,"PM2.5":11.2,"CO2":201,"VOC":10,"NOx":2,"luminosity":13027,"sound_avg_dba":47.6,"measurementSequenceNumber":205,"flag_calibration_in_progress":false,"flag_button_pressed":false,"flag_rtc_running_on_boot":false,"id":"4C:88:4F""#,
            ),
            (
                "E1 reference vector",
                "2BFF9904E1170C5668C79E0065007004BD11CA00C9050113E0AC3D4A9CDECDEE00FFFFFFFFFFCBB8334C884F0303 98FC",
                r#""dataFormat":225,"temperature":29.500,"humidity":55.30,"pressure":101102,"PM1.0":10.1,"PM2.5":11.2,"PM4.0":121.3,"PM10.0":455.4,"CO2":201,"VOC":10,"NOx":2,"luminosity":13027,"sound_inst_dba":42.4,"sound_avg_dba":47.6,"sound_peak_spl_db":80.4,"measurementSequenceNumber":14601710,"flag_calibration_in_progress":false,"flag_button_pressed":false,"flag_rtc_running_on_boot":false,"id":"CB:B8:33:4C:88:4F""#,
            ),
            (
                "E1 invalid vector: sound 0x1FF is null, flags decode",
                "2BFF9904E18000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF8FFFFFFFFFFFFFFFFFFFFFF",
                r#""dataFormat":225,"temperature":null,"humidity":null,"pressure":null,"PM1.0":null,"PM2.5":null,"PM4.0":null,"PM10.0":null,"CO2":null,"VOC":null,"NOx":null,"luminosity":null,"sound_inst_dba":null,"sound_avg_dba":null,"sound_peak_spl_db":null,"measurementSequenceNumber":null,"flag_calibration_in_progress":false,"flag_button_pressed":false,"flag_rtc_running_on_boot":false,"id":null"#,
            ),
            ("DF3: the gateway decodes nothing", "02010611FF990403291A1ECE1EFC18F94202CA0B53", ""),
        ];
        for (name, hex, fields) in cases {
            let data = bytes(&hex.replace(' ', ""));
            let m = decode_advertisement(&data).unwrap();
            let got =
                encode_mqtt_advert(OutputMode::Decoded, "C8:25:2D:8E:9C:2C", Some(-60), 2, 1, &data, Some(&m), "");
            let sep = if fields.is_empty() { "" } else { "," };
            let expected = format!(
                r#"{{"gw_mac":"C8:25:2D:8E:9C:2C","rssi":-60,"aoa":[],"gwts":2,"ts":1{sep}{fields},"coords":""}}"#
            );
            assert_eq!(got, expected, "{name}");
            serde_json::from_str::<Value>(&got).unwrap_or_else(|e| panic!("{name}: invalid JSON {e}"));
        }
    }

    #[test]
    fn envelope_edge_cases() {
        let cases = [
            ("no rssi", None, "", r#"{"gw_mac":"G","rssi":null,"aoa":[],"gwts":5,"ts":4,"data":"0102","coords":""}"#),
            (
                "coords are escaped",
                Some(-1),
                "a\"b\\c",
                r#"{"gw_mac":"G","rssi":-1,"aoa":[],"gwts":5,"ts":4,"data":"0102","coords":"a\"b\\c"}"#,
            ),
        ];
        for (name, rssi, coords, expected) in cases {
            let got = encode_mqtt_advert(OutputMode::RawAndDecoded, "G", rssi, 5, 4, &[1, 2], None, coords);
            assert_eq!(got, expected, "{name}");
        }
        assert_eq!(gw_status_payload(true), r#"{"state":"online"}"#);
        assert_eq!(gw_status_payload(false), r#"{"state":"offline"}"#);
    }

    #[test]
    fn output_mode_uses_the_gateway_setting_names() {
        for (mode, name) in [
            (OutputMode::Raw, "ruuvi_raw"),
            (OutputMode::RawAndDecoded, "ruuvi_raw_and_decoded"),
            (OutputMode::Decoded, "ruuvi_decoded"),
        ] {
            assert_eq!(serde_json::to_value(mode).unwrap(), Value::String(name.into()));
            assert_eq!(serde_json::from_value::<OutputMode>(Value::String(name.into())).unwrap(), mode);
        }
        assert_eq!(OutputMode::default(), OutputMode::Raw);
    }

    #[test]
    fn number_formatting_matches_the_gateway_generator() {
        let cases: &[(f64, u32, Option<&str>)] = &[
            (76.38, 4, Some("76.3800")),
            (100631.0, 0, Some("100631")),
            (-0.008, 3, Some("-0.008")),
            (10.3, 2, Some("10.30")),
            (-10.3, 0, Some("-10")),
            (0.555555555, 0, Some("1")),
            (-0.555555555, 1, Some("-0.6")),
            (0.555555555, 6, Some("0.555556")),
            // Decimals the float cannot carry are dropped (the generator's own test vectors).
            (1677721.4, 0, Some("1677721")),
            (1677721.4, 1, Some("1677721.4")),
            (1677721.4, 3, Some("1677721.4")),
            (-1677721.4, 6, Some("-1677721.4")),
            (1677721.59, 0, Some("1677722")),
            (1677721.59, 2, Some("1677721.6")),
            (16777216.0, 0, Some("16777216")),
            // Beyond 2^24 the last digits become zeros.
            (123456789.0, 0, Some("123456790")),
            // A tiny negative keeps its sign, as the generator prints it.
            (-0.0001, 3, Some("-0.000")),
            (f64::NAN, 1, None),
            (f64::INFINITY, 1, None),
            (1e12, 0, None),
        ];
        for &(value, decimals, expected) in cases {
            assert_eq!(gateway_fixed_point(value, decimals).as_deref(), expected, "{value} with {decimals} decimals");
        }
    }

    #[test]
    fn parses_a_custom_server_post() {
        let body = br#"{"data":{"coordinates":"","timestamp":1653633988,"nonce":2636366621,"gw_mac":"C8:25:2D:8E:9C:2C",
            "tags":{
              "C6:A5:B9:E0:AD:06":{"rssi":-71,"timestamp":1653633986,"ble_phy":"1M","ble_chan":37,"data":"0201061BFF9904"},
              "c6:a5:b9:e0:ad:07":{"rssi":"-72","timestamp":"1653633987","data":"0a0b","dataFormat":5,"temperature":1.0},
              "C6:A5:B9:E0:AD:08":{"rssi":-73,"counter":1011,"data":"0C"},
              "not-a-mac":{"rssi":-1,"timestamp":1,"data":"00"},
              "C6:A5:B9:E0:AD:09":{"rssi":-1,"timestamp":1,"data":"0G"},
              "C6:A5:B9:E0:AD:0A":{"rssi":-1,"timestamp":1},
              "C6:A5:B9:E0:AD:0B":{"rssi":-1,"timestamp":1,"data":""},
              "C6:A5:B9:E0:AD:0C":{"rssi":-1,"timestamp":"soon","data":"00"},
              "C6:A5:B9:E0:AD:0D":{"rssi":-99999,"timestamp":1,"data":"00"},
              "C6:A5:B9:E0:AD:0E":"0201"
            }}}"#;
        let batch = parse_http_post(body).unwrap();
        assert_eq!(batch.gw_mac, mac("C8:25:2D:8E:9C:2C"));
        assert_eq!(batch.gw_timestamp_s, Some(1653633988));
        let expected_tags = vec![
            HttpTag {
                tag: mac("C6:A5:B9:E0:AD:06"),
                rssi: Some(-71),
                timestamp_s: Some(1653633986),
                data: bytes("0201061BFF9904"),
            },
            HttpTag {
                tag: mac("C6:A5:B9:E0:AD:07"),
                rssi: Some(-72),
                timestamp_s: Some(1653633987),
                data: vec![10, 11],
            },
            HttpTag { tag: mac("C6:A5:B9:E0:AD:08"), rssi: Some(-73), timestamp_s: None, data: vec![12] },
        ];
        assert_eq!(batch.tags, expected_tags);
        let rejected: Vec<(&str, &str)> = vec![
            ("C6:A5:B9:E0:AD:09", "not hex"),
            ("C6:A5:B9:E0:AD:0A", "no raw \"data\""),
            ("C6:A5:B9:E0:AD:0B", "empty"),
            ("C6:A5:B9:E0:AD:0C", "\"timestamp\""),
            ("C6:A5:B9:E0:AD:0D", "\"rssi\""),
            ("C6:A5:B9:E0:AD:0E", "expected an object"),
            ("not-a-mac", "not a MAC address"),
        ];
        assert_eq!(batch.rejected.len(), rejected.len(), "{:?}", batch.rejected);
        for ((key, why), (expected_key, expected_why)) in batch.rejected.iter().zip(rejected) {
            assert_eq!(key, expected_key);
            assert!(why.contains(expected_why), "{key}: '{why}' should mention '{expected_why}'");
        }
    }

    #[test]
    fn refusals_quote_the_sender_s_values_cut_short() {
        // Found by fuzzing (fuzz/regressions/ruuvi_gateway_http): a 1 kB "timestamp" string came
        // back whole in the 400 answer and the log.
        let long = format!("17956074,{}", "4444452111111114".repeat(60));
        let bodies = [
            format!(r#"{{"data":{{"gw_mac":"C8:25:2D:8E:9C:2C","timestamp":"{long}","tags":{{}}}}}}"#),
            format!(r#"{{"data":{{"gw_mac":"{long}","tags":{{}}}}}}"#),
            format!(
                r#"{{"data":{{"gw_mac":"C8:25:2D:8E:9C:2C","tags":{{"C6:A5:B9:E0:AD:06":{{"rssi":"{long}","data":"00"}}}}}}}}"#
            ),
        ];
        for body in &bodies {
            let message = match parse_http_post(body.as_bytes()) {
                Err(error) => error.to_string(),
                Ok(batch) => batch.rejected[0].1.clone(),
            };
            assert!(message.chars().count() < 200, "{message}");
            assert!(message.contains("17956074,44444521"), "the start of the value is quoted: {message}");
        }
        let error = parse_mqtt(
            "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23",
            format!(r#"{{"data":"AA","ts":"{long}"}}"#).as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.chars().count() < 200, "{error}");
    }

    #[test]
    fn refuses_bodies_that_are_not_gateway_posts() {
        let many_tags: String = (0..=MAX_TAGS_PER_POST)
            .map(|i| format!(r#""00:00:00:00:{:02X}:{:02X}":{{"data":"00"}}"#, i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(",");
        let too_many = format!(r#"{{"data":{{"gw_mac":"C8:25:2D:8E:9C:2C","tags":{{{many_tags}}}}}}}"#);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", b"".to_vec(), "not JSON"),
            ("not json", b"gw_mac=1".to_vec(), "not JSON"),
            ("array", b"[]".to_vec(), "no \"data\" object"),
            ("data not an object", br#"{"data":"x"}"#.to_vec(), "no \"data\" object"),
            ("no gw_mac", br#"{"data":{"tags":{}}}"#.to_vec(), "no \"gw_mac\""),
            ("bad gw_mac", br#"{"data":{"gw_mac":"C8:25","tags":{}}}"#.to_vec(), "is not a MAC address"),
            ("gw_mac a number", br#"{"data":{"gw_mac":5,"tags":{}}}"#.to_vec(), "is not a MAC address"),
            ("no tags", br#"{"data":{"gw_mac":"C8:25:2D:8E:9C:2C"}}"#.to_vec(), "no \"tags\" object"),
            (
                "bad gateway timestamp",
                br#"{"data":{"gw_mac":"C8:25:2D:8E:9C:2C","timestamp":true,"tags":{}}}"#.to_vec(),
                "\"timestamp\"",
            ),
            ("too many tags", too_many.into_bytes(), "1001 tags in one POST"),
        ];
        for (name, body, expected) in cases {
            let error = parse_http_post(&body).expect_err(name).to_string();
            assert!(error.contains(expected), "{name}: '{error}' should contain '{expected}'");
        }
        let exactly_limit = format!(
            r#"{{"data":{{"gw_mac":"C8:25:2D:8E:9C:2C","tags":{{{}}}}}}}"#,
            (0..MAX_TAGS_PER_POST)
                .map(|i| format!(r#""00:00:00:00:{:02X}:{:02X}":{{"data":"00"}}"#, i / 256, i % 256))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse_http_post(exactly_limit.as_bytes()).unwrap().tags.len(), MAX_TAGS_PER_POST);
        let empty = parse_http_post(br#"{"data":{"gw_mac":"C8:25:2D:8E:9C:2C","tags":{}}}"#).unwrap();
        assert!(empty.tags.is_empty() && empty.rejected.is_empty() && empty.gw_timestamp_s.is_none());
    }

    #[test]
    fn parses_mqtt_messages() {
        let gw = mac(GW);
        let tag = mac("E3:75:CF:37:4E:23");
        let advert =
            |rssi, timestamp_s, data: &[u8]| MqttMessage::Advert { gw, tag, rssi, timestamp_s, data: data.to_vec() };
        let cases: Vec<(&str, &str, &str, Result<MqttMessage, IngestError>)> = vec![
            (
                "firmware numbers",
                "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23",
                r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"aoa":[],"gwts":1612358920,"ts":1612358929,"data":"0201","coords":""}"#,
                Ok(advert(Some(-70), Some(1612358929), &[2, 1])),
            ),
            (
                "documented strings, lower-case topic",
                "ruuvi/aa:cc:ee:00:11:22/e3:75:cf:37:4e:23",
                r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"aoa":[],"gwts":"1612358920","ts":"1612358929","data":"0201","coords":""}"#,
                Ok(advert(Some(-70), Some(1612358929), &[2, 1])),
            ),
            (
                "counter mode has no time",
                "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23",
                r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"aoa":[],"cnt":"1011","data":"AA","coords":""}"#,
                Ok(advert(Some(-70), None, &[0xAA])),
            ),
            (
                "only gwts",
                "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23",
                r#"{"rssi":-70,"gwts":1612358920,"data":"AA"}"#,
                Ok(advert(Some(-70), Some(1612358920), &[0xAA])),
            ),
            (
                "raw and decoded: extra fields ignored",
                "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23",
                r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"ts":1,"data":"AA","dataFormat":5,"temperature":29.455}"#,
                Ok(advert(Some(-70), Some(1), &[0xAA])),
            ),
            (
                "old topic without gateway",
                "ruuvi/E3:75:CF:37:4E:23",
                r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"ts":1,"data":"AA"}"#,
                Ok(advert(Some(-70), Some(1), &[0xAA])),
            ),
            (
                "decoded only",
                "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23",
                r#"{"gw_mac":"AA:CC:EE:00:11:22","rssi":-70,"ts":1,"dataFormat":5,"temperature":29.455}"#,
                Err(IngestError::DecodedOnly),
            ),
            (
                "gateway mismatch",
                "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23",
                r#"{"gw_mac":"AA:CC:EE:00:11:23","data":"AA"}"#,
                Err(IngestError::GatewayMismatch { topic: gw, payload: mac("AA:CC:EE:00:11:23") }),
            ),
            (
                "online",
                "ruuvi/AA:CC:EE:00:11:22/gw_status",
                r#"{"state": "online"}"#,
                Ok(MqttMessage::GatewayStatus { gw, online: true }),
            ),
            (
                "offline (LWT)",
                "ruuvi/aa:cc:ee:00:11:22/gw_status",
                r#"{"state":"offline"}"#,
                Ok(MqttMessage::GatewayStatus { gw, online: false }),
            ),
            (
                "unrelated topic",
                "ruuvi/AA:CC:EE:00:11:22/config",
                "{}",
                Err(IngestError::UnknownTopic("ruuvi/AA:CC:EE:00:11:22/config".into())),
            ),
        ];
        for (name, topic, payload, expected) in cases {
            assert_eq!(parse_mqtt(topic, payload.as_bytes()), expected, "{name}");
        }

        let failures = [
            ("status without gateway", "ruuvi/gw_status", r#"{"state":"online"}"#, "names no gateway MAC"),
            ("unknown state", "ruuvi/AA:CC:EE:00:11:22/gw_status", r#"{"state":"sleeping"}"#, "gw_status must be"),
            ("empty payload", "ruuvi/AA:CC:EE:00:11:22/gw_status", "", "not JSON"),
            ("not an object", "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23", "[]", "expected a JSON object"),
            ("bad hex", "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23", r#"{"data":"XYZ"}"#, "not hex"),
            ("data number", "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23", r#"{"data":5}"#, "hex string"),
            ("bad ts", "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23", r#"{"data":"AA","ts":"x"}"#, "\"ts\""),
            ("bad gw_mac", "ruuvi/AA:CC:EE:00:11:22/E3:75:CF:37:4E:23", r#"{"gw_mac":"x","data":"AA"}"#, "gw_mac"),
        ];
        for (name, topic, payload, expected) in failures {
            let error = parse_mqtt(topic, payload.as_bytes()).expect_err(name).to_string();
            assert!(error.contains(expected), "{name}: '{error}' should contain '{expected}'");
        }
    }

    #[test]
    fn raw_output_parses_back() {
        let payload = encode_df5(&Df5Values {
            temperature: Some(21.5),
            humidity: Some(40.0),
            pressure: Some(100_000.0),
            acceleration: [Some(0.0), Some(0.0), Some(1.0)],
            voltage: Some(3.0),
            tx_power: Some(4),
            movement_counter: Some(7),
            sequence: Some(1234),
            mac: Some(mac("E3:75:CF:37:4E:23")),
        });
        let data = df5_advertisement(&payload);
        let m = decode_advertisement(&data).unwrap();
        for (mode, rssi) in
            [(OutputMode::Raw, Some(-80)), (OutputMode::RawAndDecoded, Some(-20)), (OutputMode::Raw, None)]
        {
            let json = encode_mqtt_advert(mode, GW, rssi, 1_700_000_005, 1_700_000_001, &data, Some(&m), "");
            let parsed = parse_mqtt(&format!("ruuvi/{GW}/E3:75:CF:37:4E:23"), json.as_bytes()).unwrap();
            let expected = MqttMessage::Advert {
                gw: mac(GW),
                tag: mac("E3:75:CF:37:4E:23"),
                rssi,
                timestamp_s: Some(1_700_000_001),
                data: data.clone(),
            };
            assert_eq!(parsed, expected, "{mode:?}");
        }
    }

    #[test]
    fn builds_pipeline_advertisements() {
        let receiver: Arc<str> = Arc::from("gw:C8252D8E9C2C");
        let tag = mac("E3:75:CF:37:4E:23");
        let now = 1_653_634_000_000;
        let cases = [
            (Some(1_653_633_986), 1_653_633_986_000),
            (None, now),
            (Some(i64::MAX), now),
            (Some(0), now),                     // clock never set
            (Some(1_653_634_000 + 3_600), now), // an hour ahead
            (Some(1_653_634_000 - 86_000), 1_653_634_000_000 - 86_000_000),
        ];
        for (timestamp_s, expected_ms) in cases {
            let ad = to_advertisement(tag, Some(-5), timestamp_s, vec![1], receiver.clone(), now);
            assert_eq!(
                (ad.address, ad.measured_at, ad.rssi, ad.data),
                (Some(tag), Some(expected_ms), Some(-5), vec![1])
            );
            assert_eq!(ad.received_at, now, "the pipeline's clock is the arrival time");
        }
    }
}
