//! Home Assistant MQTT discovery configs that LAN devices (Tasmota, ESPHome…) publish, the state
//! messages the importer then reads, and HA's command messages to the devices Gatehouse exports.
//!
//! The input is `topic`, a newline, then the payload. It goes through
//! `ha_import::discovery::parse` (topic and config), and for every entity it announces:
//! `discovery::extract` of the value with the entity's `value_template` from the payload and from
//! typical state messages, and the device id and field names the importer derives. The topic is
//! also tried as a `value_template` of its own, and as an HA command topic with its payload
//! (`homeassistant::commands`).
#![no_main]

use gatehouse_fuzz::split_once;
use gateway_core::auth::acl::valid_topic_name;
use gateway_core::ha_import::discovery::{self, Discovery};
use gateway_core::homeassistant::commands;
use gateway_core::homeassistant::discovery::{CommandKind, ExposedCommand};
use libfuzzer_sys::fuzz_target;

const STATES: &[&[u8]] = &[b"21.5", b"ON", b"{\"temperature\":21.5,\"AM2301\":{\"Temperature\":22.1}}", b"[1,2,3]"];

fuzz_target!(|data: &[u8]| {
    let (topic, payload) = split_once(data, b'\n');
    let Ok(topic) = std::str::from_utf8(topic) else { return };
    match discovery::parse(topic, payload) {
        Ok(Discovery::Announce { device, entities }) => {
            let id = discovery::device_id(&device.identifier);
            assert!(id.len() <= 64 && gateway_core::auth::valid_device_id(&id), "device id {id:?}");
            for entity in &entities {
                // The importer subscribes to each state topic and matches messages to it.
                assert!(valid_topic_name(&entity.state_topic), "state topic {:?}", entity.state_topic);
                // …with the gateway's unrestricted link: never a private topic of Gatehouse's own.
                assert!(discovery::importable_state_topic(&entity.state_topic), "{:?}", entity.state_topic);
                assert!(
                    entity.field.len() <= 32
                        && entity.field.starts_with(|c: char| c.is_ascii_alphabetic())
                        && entity.field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "field {:?}",
                    entity.field
                );
                for state in STATES.iter().copied().chain([payload]) {
                    if let Some(value) = discovery::extract(entity.value_template.as_deref(), state) {
                        assert!(value.is_finite(), "{value} from {:?}", entity.value_template);
                    }
                }
            }
            let json = serde_json::to_string(&entities).expect("entities serialise");
            let back: Vec<discovery::Entity> = serde_json::from_str(&json).expect("stored entities read back");
            assert_eq!(back, entities);
        }
        Ok(Discovery::Remove { key_prefix }) => assert!(!key_prefix.is_empty()),
        Ok(Discovery::Ignore(_)) | Err(_) => {}
    }
    if let Some(value) = discovery::extract(Some(topic), payload) {
        assert!(value.is_finite());
    }
    let _ = discovery::field_name(topic);

    // `gatehouse/{site}/ha/{device}/{command}/set` from Home Assistant.
    if let Some((device, command)) = commands::parse_topic("home", topic) {
        assert!(!device.is_empty() && !command.is_empty() && !device.contains('/') && !command.contains('/'));
        let button = ExposedCommand { command: command.into(), kind: CommandKind::Button };
        let select = ExposedCommand {
            command: command.into(),
            kind: CommandKind::Select {
                parameter: "mode".into(),
                options: vec![("eco".into(), "eco".into()), ("1".into(), 1.into())],
            },
        };
        for exposed in [None, Some(&button), Some(&select)] {
            if let Ok(params) = commands::params(exposed, payload) {
                assert!(params.is_object());
            }
        }
    }
});
