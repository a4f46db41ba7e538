//! A device's registration (`provisioning/{site}/{id}/register` over MQTT, or
//! `POST /api/devices/register`), and what the gateway derives from the capabilities it declares.
//!
//! The input is the registration JSON. It goes through `lifecycle::registration::parse` (which
//! compiles every declared JSON Schema), with and without the MQTT client id. An accepted
//! registration's capabilities then go where the gateway takes them: stored as JSON and read back
//! (the task service, config push and Home Assistant export all read them that way), telemetry
//! checked against them, task parameters and configurations validated against their schemas, the
//! Home Assistant discovery config built from them, and HA's button and select messages turned
//! into task parameters.
#![no_main]

use gatehouse_fuzz::NOW_MS;
use gateway_core::homeassistant::commands;
use gateway_core::homeassistant::discovery::{self, CommandKind, Context, DeviceSummary, Kind};
use gateway_core::lifecycle::registration::{self, Capabilities, FieldType};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fuzz_target!(|payload: &[u8]| {
    let Ok(registration) = registration::parse(payload, None) else { return };
    let id = registration.device_id.clone();
    assert!(gateway_core::auth::valid_device_id(&id));
    assert_eq!(registration::parse(payload, Some(&id)).as_ref(), Ok(&registration), "client id = device id");
    assert!(registration::parse(payload, Some("some-other-id")).is_err());
    let json = serde_json::to_string(&registration).expect("a registration serialises");
    let echoed: Value = serde_json::from_str(&json).expect("a registration's JSON parses");
    assert!(echoed.get("registrationToken").is_none(), "the token is never echoed");

    // The store keeps the capabilities as JSON; everything else reads them back with from_value.
    let caps = &registration.capabilities;
    let stored = serde_json::to_value(caps).expect("capabilities serialise");
    let read_back: Capabilities = serde_json::from_value(stored.clone()).expect("stored capabilities read back");
    assert_eq!(&read_back, caps);
    let Value::Object(object) = &stored else { panic!("capabilities are an object") };
    assert_eq!(registration::parse_capabilities(object).as_ref(), Ok(caps), "the API's capability update agrees");

    // A telemetry message with a value of the right type for every declared field is accepted.
    let mut message = Map::new();
    for field in &caps.telemetry {
        let value = match field.field_type {
            FieldType::Number => json!(21.5),
            FieldType::Integer => json!(7),
            FieldType::Boolean => json!(true),
            FieldType::String => json!("ok"),
        };
        message.insert(field.name.clone(), value);
    }
    message.insert("ts".into(), json!(NOW_MS));
    let message = Value::Object(message).to_string();
    let telemetry = registration::telemetry_message(&id, caps, message.as_bytes(), NOW_MS)
        .unwrap_or_else(|e| panic!("telemetry of the declared types refused: {e}"));
    assert_eq!(telemetry.ts, NOW_MS);

    // Task parameters and configurations are validated against the declared schemas.
    for spec in &caps.commands {
        let validator = jsonschema::validator_for(&spec.parameters).expect("parse compiled this schema already");
        let _ = validator.iter_errors(&json!({})).count();
        let _ = validator.iter_errors(&json!({"seconds": 10, "mode": "eco"})).count();
    }
    if let Some(schema) = &caps.config {
        let validator = jsonschema::validator_for(schema).expect("parse compiled this schema already");
        let _ = validator.iter_errors(&json!({"interval": 60, "label": "hall"})).count();
    }

    // Home Assistant export of the device, and HA's command messages back.
    let ctx =
        Context { prefix: "homeassistant".into(), site: "home".into(), sw_version: "0".into(), expire_after: None };
    let summary = DeviceSummary {
        id: id.clone(),
        site: "home".into(),
        name: Some(registration.name.clone()),
        mac: None,
        manufacturer: registration.manufacturer.clone(),
        model: registration.model.clone(),
        firmware: registration.firmware.clone(),
        hardware: registration.hardware.clone(),
        room: None,
        kind: Kind::Lan(caps.clone()),
    };
    let config = discovery::device_config(&ctx, &summary);
    let _ = serde_json::to_string(&config.payload).expect("the discovery config serialises");
    for exposed in &config.commands {
        assert!(
            commands::parse_topic("home", &discovery::command_topic("home", &id, &exposed.command))
                == Some((id.as_str(), exposed.command.as_str()))
        );
        let presses: Vec<String> = match &exposed.kind {
            CommandKind::Button => vec![discovery::PAYLOAD_PRESS.into()],
            CommandKind::Select { options, .. } => options.iter().map(|(text, _)| text.clone()).collect(),
        };
        for press in presses {
            let params = commands::params(Some(exposed), press.as_bytes())
                .unwrap_or_else(|e| panic!("HA's own payload `{press}` refused: {e:?}"));
            assert!(params.is_object());
        }
    }
});
