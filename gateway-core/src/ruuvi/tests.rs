//! Official Ruuvi test vectors (shared/reference/ruuvi.md §1), with the documented errata applied,
//! and a property test that no input of any length or content panics the decoder.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Asserts each listed JSON field; numbers within 1e-6, `null` for unavailable.
fn assert_fields(payload_hex: &str, expected: Value) {
    let payload = hex::decode(payload_hex).expect("vector is hex");
    let measurement = decode_payload(&payload).unwrap_or_else(|e| panic!("{payload_hex}: {e}"));
    let actual = serde_json::to_value(&measurement).unwrap();
    for (key, want) in expected.as_object().unwrap() {
        let got = actual.get(key).unwrap_or_else(|| panic!("{payload_hex}: field {key} missing in {actual}"));
        let equal = match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) => (g - w).abs() < 1e-6,
            _ => got == want,
        };
        assert!(equal, "{payload_hex}: {key} = {got}, expected {want}");
    }
}

#[test]
fn df5_official_vectors() {
    assert_fields(
        "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
        json!({"dataFormat": 5, "temperature": 24.3, "pressure": 100044, "humidity": 53.49,
               "accelX": 0.004, "accelY": -0.004, "accelZ": 1.036, "txPower": 4, "voltage": 2.977,
               "movementCounter": 66, "measurementSequenceNumber": 205, "id": "CB:B8:33:4C:88:4F"}),
    );
    assert_fields(
        "057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F",
        json!({"temperature": 163.835, "pressure": 115534, "humidity": 163.835, "accelX": 32.767,
               "accelY": 32.767, "accelZ": 32.767, "txPower": 20, "voltage": 3.646,
               "movementCounter": 254, "measurementSequenceNumber": 65534, "id": "CB:B8:33:4C:88:4F"}),
    );
    assert_fields(
        "058001000000008001800180010000000000CBB8334C884F",
        json!({"temperature": -163.835, "pressure": 50000, "humidity": 0.0, "accelX": -32.767,
               "accelY": -32.767, "accelZ": -32.767, "txPower": -40, "voltage": 1.6,
               "movementCounter": 0, "measurementSequenceNumber": 0}),
    );
    assert_fields(
        "058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF",
        json!({"temperature": null, "pressure": null, "humidity": null, "accelX": null,
               "accelY": null, "accelZ": null, "txPower": null, "voltage": null,
               "movementCounter": null, "measurementSequenceNumber": null, "id": null}),
    );
}

#[test]
fn df5_power_info_sentinels_are_independent() {
    // Voltage unavailable (0x7FF), TX power valid (+4 dBm), and the reverse.
    assert_fields("0512FC5394C37C0004FFFC040CFFF64200CDCBB8334C884F", json!({"voltage": null, "txPower": 4}));
    assert_fields("0512FC5394C37C0004FFFC040CAC3F4200CDCBB8334C884F", json!({"voltage": 2.977, "txPower": null}));
}

#[test]
fn df3_official_vectors() {
    assert_fields(
        "03291A1ECE1EFC18F94202CA0B53",
        json!({"dataFormat": 3, "temperature": 26.3, "pressure": 102766, "humidity": 20.5,
               "accelX": -1.0, "accelY": -1.726, "accelZ": 0.714, "voltage": 2.899}),
    );
    assert_fields(
        "03FF7F63FFFF7FFF7FFF7FFFFFFF",
        json!({"temperature": 127.99, "pressure": 115535, "humidity": 127.5, "accelX": 32.767,
               "accelY": 32.767, "accelZ": 32.767, "voltage": 65.535}),
    );
    assert_fields(
        "0300FF6300008001800180010000",
        json!({"temperature": -127.99, "pressure": 50000, "humidity": 0.0, "accelX": -32.767,
               "accelY": -32.767, "accelZ": -32.767, "voltage": 0.0}),
    );
    // The sign bit is not two's complement: 0x81 0x45 is −1.69 °C, not −126.31.
    assert_fields("0300814500008001800180010000", json!({"temperature": -1.69}));
    // Trailing bytes (an appended RSSI, say) are tolerated.
    assert_fields("03291A1ECE1EFC18F94202CA0B53BB", json!({"temperature": 26.3}));
}

#[test]
fn c5_vectors_with_the_corrected_format_byte() {
    // The docs print these with a leading 05; ruuvi.endpoints.c uses C5 (erratum).
    assert_fields(
        "C512FC5394C37CAC364200CDCBB8334C884F",
        json!({"dataFormat": 197, "temperature": 24.3, "pressure": 100044, "humidity": 53.49,
               "txPower": 4, "voltage": 2.977, "movementCounter": 66,
               "measurementSequenceNumber": 205, "id": "CB:B8:33:4C:88:4F"}),
    );
    assert_fields(
        "C57FFFFFFEFFFEFFDEFEFFFECBB8334C884F",
        json!({"temperature": 163.835, "pressure": 115534, "humidity": 163.835, "txPower": 20,
               "voltage": 3.646, "movementCounter": 254, "measurementSequenceNumber": 65534}),
    );
    assert_fields(
        "C58001000000000000000000CBB8334C884F",
        json!({"temperature": -163.835, "pressure": 50000, "humidity": 0.0, "txPower": -40,
               "voltage": 1.6, "movementCounter": 0, "measurementSequenceNumber": 0}),
    );
    assert_fields(
        "C58000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        json!({"temperature": null, "pressure": null, "humidity": null, "txPower": null,
               "voltage": null, "movementCounter": null, "measurementSequenceNumber": null, "id": null}),
    );
    let c5 = decode_payload(&hex::decode("C512FC5394C37CAC364200CDCBB8334C884F").unwrap()).unwrap();
    assert!(c5.accel_x.is_absent(), "C5 carries no acceleration");
}

#[test]
fn df6_official_vectors() {
    // Reserved byte 14 ("XX" in the docs) filled with FF, as ruuvitag-sensor does.
    assert_fields(
        "06170C5668C79E007000C90501D9FFCD004C884F",
        json!({"dataFormat": 6, "temperature": 29.5, "pressure": 101102, "humidity": 55.3,
               "PM2.5": 11.2, "CO2": 201, "VOC": 10, "NOx": 2, "luminosity": 13026.67,
               "measurementSequenceNumber": 205, "flag_calibration_in_progress": false,
               "id": "4C:88:4F"}),
    );
    // Erratum: the docs' table says MAC 4C 88 4F, the raw bytes say 4C 8F 4F.
    assert_fields(
        "067FFF9C40FFFE27109C40FAFAFEFFFF074C8F4F",
        json!({"temperature": 163.835, "pressure": 115534, "humidity": 100.0, "PM2.5": 1000.0,
               "CO2": 40000, "VOC": 500, "NOx": 500, "luminosity": 65535.0,
               "measurementSequenceNumber": 255, "flag_calibration_in_progress": true,
               "id": "4C:8F:4F"}),
    );
    assert_fields(
        "0680010000000000000000000000FF00004C884F",
        json!({"temperature": -163.835, "pressure": 50000, "humidity": 0.0, "PM2.5": 0.0,
               "CO2": 0, "VOC": 0, "NOx": 0, "luminosity": 0.0, "measurementSequenceNumber": 0,
               "flag_calibration_in_progress": false}),
    );
    // Invalid: every sensor value unavailable, but the 8-bit sequence has no sentinel.
    assert_fields(
        "068000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        json!({"temperature": null, "pressure": null, "humidity": null, "PM2.5": null,
               "CO2": null, "VOC": null, "NOx": null, "luminosity": null,
               "measurementSequenceNumber": 255, "flag_calibration_in_progress": true, "id": null}),
    );
    // ruuvitag-sensor's odd-LSB case: flags carry the ninth bit of VOC and NOx.
    assert_fields("067FFF9C40FFFE27109C40FAFBFEFFFFC14C8F4F", json!({"VOC": 501, "NOx": 503}));
}

#[test]
fn df6_luminosity_follows_the_formula_not_the_docs_example() {
    // Erratum: the docs list 0x80 → 244.06 lux; the documented formula gives 266.43.
    let cases = [(0x00, 0.0), (0x01, 0.04), (0x10, 1.01), (0x80, 266.43), (0xFE, 65535.0)];
    for (code, lux) in cases {
        let hex = format!("06000000000000000000000000{code:02X}00000000004C884F");
        assert_fields(&hex, json!({ "luminosity": lux }));
    }
}

#[test]
fn e1_official_vectors() {
    // Reserved bytes ("XX") filled with FF.
    assert_fields(
        "E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F",
        json!({"dataFormat": 225, "temperature": 29.5, "pressure": 101102, "humidity": 55.3,
               "PM1.0": 10.1, "PM2.5": 11.2, "PM4.0": 121.3, "PM10.0": 455.4, "CO2": 201,
               "VOC": 20, "NOx": 4, "luminosity": 13027.0, "measurementSequenceNumber": 14601710,
               "flag_calibration_in_progress": true, "id": "CB:B8:33:4C:88:4F"}),
    );
    assert_fields(
        "E17FFF9C40FFFE27102710271027109C40FAFADC28F0FFFFFFFFFFFE3FFFFFFFFFFFCBB8334C884F",
        json!({"temperature": 163.835, "pressure": 115534, "humidity": 100.0, "PM1.0": 1000.0,
               "PM2.5": 1000.0, "PM4.0": 1000.0, "PM10.0": 1000.0, "CO2": 40000, "VOC": 500,
               "NOx": 500, "luminosity": 144284.0, "measurementSequenceNumber": 16777214,
               "flag_calibration_in_progress": true}),
    );
    // Erratum: the docs' minimum vector is one nibble short around the flags byte; corrected.
    assert_fields(
        "E1800100000000000000000000000000000000000000FFFFFF00000000FFFFFFFFFFCBB8334C884F",
        json!({"temperature": -163.835, "pressure": 50000, "humidity": 0.0, "PM1.0": 0.0,
               "PM2.5": 0.0, "CO2": 0, "VOC": 0, "NOx": 0, "luminosity": 0.0,
               "measurementSequenceNumber": 0, "flag_calibration_in_progress": false}),
    );
    assert_fields(
        "E18000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFFFFFFFFFFFFFFFF",
        json!({"temperature": null, "pressure": null, "humidity": null, "PM1.0": null,
               "PM2.5": null, "PM4.0": null, "PM10.0": null, "CO2": null, "VOC": null,
               "NOx": null, "luminosity": null, "measurementSequenceNumber": null,
               "flag_calibration_in_progress": false, "id": null}),
    );
    assert_fields(
        "E1170C5668C79E0065007004BD11CA00C9FAFB13E0AC000000DFFFFFC10000000000CBB8334C884F",
        json!({"VOC": 501, "NOx": 503, "flag_calibration_in_progress": true}),
    );
}

#[test]
fn full_advertisements_decode_with_derived_values() {
    // As relayed by a Ruuvi Gateway (its unit test expects these decoded values).
    let ad = hex::decode("0201061BFF99040517037758C5C703FCFF30FFF89416B7958AE375CF374E23").unwrap();
    let m = decode_advertisement(&ad).unwrap();
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["temperature"], json!(29.455));
    assert_eq!(v["humidity"], json!(76.38));
    assert_eq!(v["pressure"], json!(100631));
    assert_eq!(v["accelX"], json!(1.02));
    assert_eq!(v["movementCounter"], json!(183));
    assert_eq!(v["voltage"], json!(2.784));
    assert_eq!(v["measurementSequenceNumber"], json!(38282));
    assert_eq!(v["id"], json!("E3:75:CF:37:4E:23"));
    assert!(v["dewPoint"].as_f64().unwrap() > 24.0 && v["dewPoint"].as_f64().unwrap() < 29.455);
    assert!(v["accelerationTotal"].as_f64().unwrap() > 1.0);

    // E1 from the Ruuvi Gateway's MQTT test data layout: MSD first, service UUID after.
    let e1 =
        hex::decode("2BFF9904E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F030398FC")
            .unwrap();
    let m = decode_advertisement(&e1).unwrap();
    assert_eq!(m.iaqs.value(), Some(100.0 - (11.2f64 * 100.0 / 60.0).hypot(0.0)).map(f64::round));
    assert_eq!(m.iaqs_rating.get().map(String::as_str), Some("good"));
}

#[test]
fn decode_any_accepts_what_people_paste() {
    let payload = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F";
    for input in [
        format!("0201061BFF9904{payload}"),
        format!("1BFF9904{payload}"),
        format!("9904{payload}"),
        payload.to_string(),
    ] {
        let m = decode_any(&hex::decode(&input).unwrap()).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(m.measurement_sequence_number, Field::Value(205), "{input}");
    }
    let rejected = [
        ("", "empty"),
        ("0201060303AAFE", "no Ruuvi manufacturer data"),
        ("07", "unsupported format"),
        ("0512FC", "too short"),
    ];
    for (input, why) in rejected {
        assert!(decode_any(&hex::decode(input).unwrap()).is_err(), "{why}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_any(&bytes);
        let _ = decode_advertisement(&bytes);
        let _ = decode_payload(&bytes);
    }

    #[test]
    fn every_supported_format_decodes_any_content(
        format in prop::sample::select(vec![0x03u8, 0x05, 0xC5, 0x06, 0xE1]),
        body in proptest::collection::vec(any::<u8>(), 39..60),
    ) {
        let mut payload = vec![format];
        payload.extend(body);
        let mut m = decode_payload(&payload).expect("long enough payloads always decode");
        add_derived_values(&mut m);
        // Every value that is present is a finite number.
        let json = serde_json::to_value(&m).unwrap();
        for (key, value) in json.as_object().unwrap() {
            if let Some(n) = value.as_f64() {
                prop_assert!(n.is_finite(), "{} = {}", key, n);
            }
        }
    }
}
