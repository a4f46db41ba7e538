//! Helpers shared by the fuzz targets in `fuzz_targets/`: splitting an input into parts, the
//! ingest pipeline every advertisement goes through, and the panic handling that matches what
//! the gateway itself catches.

use std::cell::Cell;
use std::sync::{Arc, Once};

use gateway_core::pipeline::{Advertisement, PipelineStats, Processor};
use gateway_core::receivers::HeardBy;
use gateway_core::ruuvi::Mac;
use gateway_core::ruuvi_gateway::{self, OutputMode};
use gateway_core::tags::{Calibration, TagSetting, TagSettings};

/// A fixed clock, so that an input always takes the same path (timestamps in inputs are judged
/// against it): 2026-11-25T12:00:00Z.
pub const NOW_MS: i64 = 1_795_608_000_000;

/// `(before, after)` the first `separator`; `(data, [])` without one.
pub fn split_once(data: &[u8], separator: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == separator) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// The pipeline as the gateway builds it (default 10 s de-duplication window), with one
/// calibrated tag so that calibration runs too.
pub fn processor() -> Processor {
    let tags = TagSettings::default();
    let calibration = Calibration { temperature: -1.5, humidity: 20.0, pressure: 300.0 };
    tags.set("ruuvi-cbb8334c884f", TagSetting { blocked: false, calibration });
    tags.set("ruuvi-e375cf374e23", TagSetting { blocked: true, calibration: Calibration::default() });
    Processor::new(10_000, Arc::new(PipelineStats::default()), tags, Arc::new(HeardBy::default()))
}

/// Runs one advertisement through the pipeline and, for a reading, everything the gateway then
/// does with it that depends on the content: the JSON of the live view and the store, and the
/// Ruuvi-Gateway-compatible MQTT output in each of its modes (the one with raw data and decoded
/// fields must parse back as a Ruuvi Gateway message with the same data).
pub fn ingest(processor: &mut Processor, advertisement: &Advertisement) {
    let Ok(reading) = processor.process(advertisement) else { return };
    let json = serde_json::to_string(&reading).expect("a reading always serialises");
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "reading JSON does not parse: {json}");
    for mode in [OutputMode::Raw, OutputMode::Decoded, OutputMode::RawAndDecoded] {
        let payload = ruuvi_gateway::encode_mqtt_advert(
            mode,
            "AA:BB:CC:DD:EE:FF",
            reading.rssi,
            NOW_MS / 1000,
            reading.ts / 1000,
            &reading.raw,
            Some(&reading.measurement),
            "",
        );
        if mode != OutputMode::RawAndDecoded {
            continue;
        }
        let topic = format!("ruuvi/AA:BB:CC:DD:EE:FF/{}", reading.mac);
        match ruuvi_gateway::parse_mqtt(&topic, payload.as_bytes()) {
            Ok(ruuvi_gateway::MqttMessage::Advert { data, .. }) => assert_eq!(data, &*reading.raw),
            other => panic!("our own Ruuvi output does not parse back: {other:?} from {payload}"),
        }
    }
}

/// An advertisement as a remote receiver's data becomes one.
pub fn advertisement(address: Option<Mac>, data: Vec<u8>, rssi: Option<i16>, at: i64) -> Advertisement {
    Advertisement { address, data, rssi, received_at: at, measured_at: None, receiver: Arc::from("fuzz") }
}

thread_local! {
    static PANICS_CAUGHT_BY_GATEWAY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` in a region where the gateway itself catches panics (`broker::Codec::read` wraps
/// rumqttd's decoder in `catch_unwind`). libfuzzer-sys aborts on every panic, caught or not; inside
/// this region a panic unwinds instead, as it does in the gateway, and is not a finding.
pub fn where_gateway_catches_panics<R>(f: impl FnOnce() -> R) -> R {
    struct Region;
    impl Drop for Region {
        fn drop(&mut self) {
            PANICS_CAUGHT_BY_GATEWAY.with(|c| c.set(false));
        }
    }
    install_panic_hook();
    PANICS_CAUGHT_BY_GATEWAY.with(|c| c.set(true));
    let _region = Region;
    f()
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // libfuzzer-sys's hook (print, then abort) is in place by now: keep it for every other panic.
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PANICS_CAUGHT_BY_GATEWAY.with(Cell::get) {
                abort_hook(info);
            }
        }));
    });
}
