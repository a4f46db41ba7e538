//! `gatehouse decode` is a user feature (debugging a tag): its output must stay stable.

use std::process::Command;

fn decode(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse")).arg("decode").args(args).output().unwrap();
    (output.status.code(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

#[test]
fn prints_one_json_object_per_argument() {
    let (code, stdout, stderr) = decode(&[
        "0201061BFF99040512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
        "0x05 12 FC 53 94 C3 7C 00 04 FF FC 04 0C AC 36 42 00 CD CB B8 33 4C 88 4F",
        "2BFF9904E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F030398FC",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], lines[1], "raw AD and bare payload decode alike");
    let expected = serde_json::json!({
        "dataFormat": 5, "temperature": 24.3, "humidity": 53.49, "pressure": 100044,
        "accelX": 0.004, "accelY": -0.004, "accelZ": 1.036, "movementCounter": 66, "voltage": 2.977,
        "txPower": 4, "measurementSequenceNumber": 205, "id": "CB:B8:33:4C:88:4F",
        "accelerationTotal": 1.036, "accelerationAngleFromX": 89.78, "accelerationAngleFromY": 90.22,
        "accelerationAngleFromZ": 0.31, "equilibriumVaporPressure": 3037.496, "absoluteHumidity": 11.839,
        "dewPoint": 14.262, "airDensity": 1.1654
    });
    assert_eq!(lines[0], expected);
    assert_eq!(lines[2]["dataFormat"], 225);
    assert_eq!(lines[2]["CO2"], 201);
    assert_eq!(lines[2]["iaqsRating"], "good");
}

#[test]
fn rejects_what_is_not_a_ruuvi_advertisement() {
    let (code, stdout, stderr) = decode(&["0201061AFF4C000215", "zz", "0512FC"]);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(errors[0].contains("argument 1") && errors[0].contains("not a Ruuvi advertisement"), "{stderr}");
    assert!(errors[1].contains("not hex"), "{stderr}");
    assert!(errors[2].contains("needs 24 bytes"), "{stderr}");
}

#[test]
fn mixed_input_prints_the_good_and_fails_for_the_bad() {
    let (code, stdout, stderr) = decode(&["0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F", "07"]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout.lines().count(), 1);
    assert!(stderr.contains("argument 2") && stderr.contains("0x07 is not supported"), "{stderr}");
}
