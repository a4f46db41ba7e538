//! The Ruuvi Gateway "custom server" HTTP POST body (`POST /ruuvi` on the ingest listener).
//!
//! The input is the body. It goes through `ruuvi_gateway::parse_http_post`, and every accepted
//! tag entry through `to_advertisement` and the ingest pipeline, as `receivers::http` does.
#![no_main]

use std::sync::Arc;

use gatehouse_fuzz::{ingest, processor, NOW_MS};
use gateway_core::ruuvi_gateway::{self, IngestError, MAX_TAGS_PER_POST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let batch = match ruuvi_gateway::parse_http_post(body) {
        Ok(batch) => batch,
        Err(IngestError::TooManyTags { count }) => {
            assert!(count > MAX_TAGS_PER_POST);
            return;
        }
        Err(error) => {
            // Refusals are answered to the sender and logged: like the per-tag reasons, they must
            // not grow with what the sender put in the body.
            let message = error.to_string();
            assert!(message.chars().count() <= 512, "a {}-character refusal: {message}", message.chars().count());
            return;
        }
    };
    assert!(batch.tags.len() + batch.rejected.len() <= MAX_TAGS_PER_POST);
    assert!(batch.tags.windows(2).all(|w| w[0].tag <= w[1].tag), "tags are sorted by MAC");
    for (key, reason) in &batch.rejected {
        assert!(key.chars().count() <= 64 && reason.chars().count() <= 128, "echoed text is cut short");
    }
    let receiver: Arc<str> = gateway_core::receivers::receiver_name(&batch.gw_mac);
    let mut pipeline = processor();
    for tag in batch.tags {
        let advertisement =
            ruuvi_gateway::to_advertisement(tag.tag, tag.rssi, tag.timestamp_s, tag.data, receiver.clone(), NOW_MS);
        let measured = advertisement.measured_at.expect("remote advertisements carry a time");
        assert!((NOW_MS - ruuvi_gateway::MAX_TIMESTAMP_AGE_MS..=NOW_MS + ruuvi_gateway::MAX_TIMESTAMP_AHEAD_MS)
            .contains(&measured));
        ingest(&mut pipeline, &advertisement);
    }
});
