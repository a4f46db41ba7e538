//! BLE advertising data and Ruuvi payloads: what the local scanner hears.
//!
//! The input is raw advertising data (AD structures). It goes through the Ruuvi decoder's entry
//! points (`find_ruuvi_payload`, `decode_payload`, `decode_advertisement`, `decode_any` as the
//! CLI's `decode` uses it), then through the ingest pipeline (decode, MAC, de-duplication,
//! calibration, derived values, motion) and the JSON and Ruuvi-compatible outputs: as received
//! (twice: the second is a duplicate), and as the scanner rebuilds it from the manufacturer data
//! BlueZ hands over (`ble::manufacturer_advertisement`).
#![no_main]

use gatehouse_fuzz::{advertisement, ingest, processor, NOW_MS};
use gateway_core::ble::manufacturer_advertisement;
use gateway_core::ruuvi::{self, Mac};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = ruuvi::find_ruuvi_payload(data);
    let full = ruuvi::decode_advertisement(data);
    match (&payload, &full) {
        (Ok(payload), Ok(m)) => {
            let mut bare = ruuvi::decode_payload(payload).expect("decode_advertisement accepted the payload");
            ruuvi::add_derived_values(&mut bare);
            // Compared as JSON: NaN != NaN would make equal measurements differ.
            assert_eq!(serde_json::to_string(&bare).unwrap(), serde_json::to_string(m).unwrap());
        }
        (Err(_), Ok(_)) => panic!("decoded without a Ruuvi payload"),
        _ => {}
    }
    // What a person pastes into `gatehouse decode`: AD bytes, manufacturer data or a bare payload.
    let any = ruuvi::decode_any(data);
    if let Ok(m) = &full {
        let any = any.as_ref().expect("decode_any refused what decode_advertisement decoded");
        assert_eq!(serde_json::to_string(any).unwrap(), serde_json::to_string(m).unwrap());
    }
    if let Ok(m) = &any {
        let json = serde_json::to_string(m).expect("a measurement always serialises");
        let _: ruuvi::Measurement = serde_json::from_str(&json).expect("measurement JSON parses back");
    }

    let mut pipeline = processor();
    let sender = Some(Mac([0xC1, 2, 3, 4, 5, 6]));
    // As heard, twice (the second a duplicate, or a reading without the sender's address).
    for (at, address) in [(NOW_MS, sender), (NOW_MS + 1, None)] {
        ingest(&mut pipeline, &advertisement(address, data.to_vec(), Some(-70), at));
    }
    // As the scanner forwards BlueZ's manufacturer data for company 0x0499.
    let rebuilt = manufacturer_advertisement(data);
    assert!(ruuvi::find_ruuvi_payload(&rebuilt).is_ok() || data.len() + 3 > 255);
    ingest(&mut pipeline, &advertisement(sender, rebuilt, None, NOW_MS + 30_000));
});
