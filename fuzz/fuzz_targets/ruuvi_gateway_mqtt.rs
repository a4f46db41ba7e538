//! What remote Ruuvi Gateways publish on our broker: `<prefix>/<gateway MAC>/<tag MAC>` and
//! `…/gw_status` messages.
//!
//! The input is `topic`, a newline, then the payload. It goes through
//! `ruuvi_gateway::parse_mqtt` and, for an advertisement, `to_advertisement` and the ingest
//! pipeline, as `receivers::run` does.
#![no_main]

use gatehouse_fuzz::{ingest, processor, split_once, NOW_MS};
use gateway_core::ruuvi_gateway::{self, IngestError, MqttMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (topic, payload) = split_once(data, b'\n');
    // MQTT topics are UTF-8: the broker refuses anything else before it reaches the receivers.
    let Ok(topic) = std::str::from_utf8(topic) else { return };
    match ruuvi_gateway::parse_mqtt(topic, payload) {
        Ok(MqttMessage::Advert { gw, tag, rssi, timestamp_s, data }) => {
            let receiver = gateway_core::receivers::receiver_name(&gw);
            let advertisement = ruuvi_gateway::to_advertisement(tag, rssi, timestamp_s, data, receiver, NOW_MS);
            ingest(&mut processor(), &advertisement);
        }
        Ok(MqttMessage::GatewayStatus { .. }) => {}
        Err(IngestError::GatewayMismatch { topic, payload }) => assert_ne!(topic, payload),
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
