//! Home Assistant MQTT discovery, read side: parses the discovery configs that LAN devices
//! (Tasmota, ESPHome, OpenMQTTGateway…) publish, in both the single-component form
//! `homeassistant/<component>/[<node_id>/]<object_id>/config` and the device-based form
//! `homeassistant/device/<object_id>/config`, with HA's abbreviations and `~` base topics; and
//! extracts numbers from state messages with the common `value_template` shapes. Pure functions.

use serde_json::{Map, Value};

pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// One entity (a sensor, binary sensor…) of an imported device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    /// Stable key: the config topic's path (component/node/object, or device/object/component id).
    pub key: String,
    /// Telemetry field name for this entity (letters, digits, `_`).
    pub field: String,
    pub component: String,
    pub name: Option<String>,
    pub state_topic: String,
    pub unit: Option<String>,
    pub device_class: Option<String>,
    pub value_template: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceMeta {
    pub identifier: String,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub sw_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// Entities announced (or updated) for a device.
    Announce { device: DeviceMeta, entities: Vec<Entity> },
    /// An empty config: the entities under this config topic are removed.
    Remove { key_prefix: String },
    /// Our own export (origin "Gatehouse") or a component without state (buttons…): nothing to import.
    Ignore(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DiscoveryError(pub String);

const ABBREVIATIONS: &[(&str, &str)] = &[
    ("stat_t", "state_topic"),
    ("uniq_id", "unique_id"),
    ("dev", "device"),
    ("ids", "identifiers"),
    ("mf", "manufacturer"),
    ("mdl", "model"),
    ("sw", "sw_version"),
    ("unit_of_meas", "unit_of_measurement"),
    ("dev_cla", "device_class"),
    ("val_tpl", "value_template"),
    ("o", "origin"),
    ("cmps", "components"),
    ("p", "platform"),
    ("obj_id", "object_id"),
    ("def_ent_id", "default_entity_id"),
];

/// Components whose state is a value worth recording.
const STATEFUL: &[&str] = &["sensor", "binary_sensor", "number", "switch", "light", "climate", "fan", "cover"];

/// Parses a config message on `topic` (which must end in `/config`).
pub fn parse(topic: &str, payload: &[u8]) -> Result<Discovery, DiscoveryError> {
    let levels: Vec<&str> = topic.split('/').collect();
    let (component, node, object) = match levels.as_slice() {
        [DISCOVERY_PREFIX, component, object, "config"] => (*component, None, *object),
        [DISCOVERY_PREFIX, component, node, object, "config"] => (*component, Some(*node), *object),
        _ => return Err(DiscoveryError(format!("`{topic}` is not a discovery config topic"))),
    };
    let key_prefix = match node {
        Some(node) => format!("{component}/{node}/{object}"),
        None => format!("{component}/{object}"),
    };
    if payload.is_empty() {
        return Ok(Discovery::Remove { key_prefix });
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| DiscoveryError(format!("config is not JSON: {e}")))?;
    let Value::Object(config) = expand(value) else {
        return Err(DiscoveryError("config must be a JSON object".into()));
    };
    if config.get("origin").and_then(|o| o.get("name")).and_then(Value::as_str) == Some("Gatehouse") {
        return Ok(Discovery::Ignore("our own export"));
    }
    let base = config.get("~").and_then(Value::as_str).map(str::to_string);
    let device = device_meta(&config)
        .ok_or_else(|| DiscoveryError("config has no `device` with `identifiers` or `connections`".into()))?;

    let mut entities = Vec::new();
    if component == "device" {
        let Some(Value::Object(components)) = config.get("components") else {
            return Err(DiscoveryError("device-based config has no `components`".into()));
        };
        for (id, component_config) in components {
            let Value::Object(c) = component_config else { continue };
            let platform = c.get("platform").and_then(Value::as_str).unwrap_or_default();
            // Shared options (state_topic…) may sit at the root.
            let mut merged = config.clone();
            merged.remove("components");
            merged.extend(c.clone());
            if let Some(entity) = entity(&format!("{key_prefix}/{id}"), platform, id, &merged, base.as_deref()) {
                entities.push(entity);
            }
        }
    } else if let Some(entity) = entity(&key_prefix, component, object, &config, base.as_deref()) {
        entities.push(entity);
    }
    if entities.is_empty() {
        return Ok(Discovery::Ignore("no entity with a state topic"));
    }
    if let Some(entity) = entities.iter().find(|e| !importable_state_topic(&e.state_topic)) {
        return Err(DiscoveryError(format!(
            "state topic `{}` is in Gatehouse's own namespace, where only devices' telemetry, status and alert \
             topics and the gateway's own may be imported",
            entity.state_topic
        )));
    }
    Ok(Discovery::Announce { device, entities })
}

/// The importer reads state topics with the gateway's own unrestricted link, and whoever may
/// publish discovery configs (service and homeassistant accounts) chooses them. In Gatehouse's
/// own namespaces that would let such an account read what its role may not (commands,
/// credentials, provisioning replies) into the database: there, only what every service may
/// read anyway (docs/security.md) is allowed.
pub fn importable_state_topic(topic: &str) -> bool {
    let mut levels = topic.split('/');
    let root = levels.next().unwrap_or_default();
    if !crate::topics::SITE_SCOPED_ROOTS.contains(&root) {
        return true;
    }
    let site = levels.next().unwrap_or_default();
    crate::auth::service_acl(site).can_subscribe(topic)
}

fn entity(key: &str, component: &str, object: &str, config: &Map<String, Value>, base: Option<&str>) -> Option<Entity> {
    if !STATEFUL.contains(&component) {
        return None;
    }
    let state_topic = with_base(config.get("state_topic")?.as_str()?, base);
    // The importer subscribes to it: a filter (`+`, `#`) would subscribe it to other topics.
    if !crate::auth::acl::valid_topic_name(&state_topic) {
        return None;
    }
    let text = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
    let name = text("name");
    let field_source =
        config.get("object_id").or_else(|| config.get("unique_id")).and_then(Value::as_str).unwrap_or(object);
    Some(Entity {
        key: key.to_string(),
        field: field_name(name.as_deref().unwrap_or(field_source)),
        component: component.to_string(),
        name,
        state_topic,
        unit: text("unit_of_measurement"),
        device_class: text("device_class"),
        value_template: text("value_template"),
    })
}

fn device_meta(config: &Map<String, Value>) -> Option<DeviceMeta> {
    let device = config.get("device")?.as_object()?;
    let identifier = match device.get("identifiers") {
        Some(Value::Array(ids)) => ids.first().and_then(Value::as_str).map(str::to_string),
        Some(Value::String(id)) => Some(id.clone()),
        _ => None,
    }
    .or_else(|| {
        // `connections: [["mac", "aa:bb:…"]]`
        device.get("connections")?.as_array()?.first()?.as_array()?.get(1)?.as_str().map(str::to_string)
    })?;
    let text = |k: &str| device.get(k).and_then(Value::as_str).map(str::to_string);
    Some(DeviceMeta {
        identifier,
        name: text("name"),
        manufacturer: text("manufacturer"),
        model: text("model"),
        sw_version: text("sw_version"),
    })
}

/// Replaces abbreviated keys (recursively) by their full names.
fn expand(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let full = ABBREVIATIONS.iter().find(|(short, _)| *short == k).map(|(_, long)| long.to_string());
                    (full.unwrap_or(k), expand(v))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(expand).collect()),
        other => other,
    }
}

fn with_base(topic: &str, base: Option<&str>) -> String {
    match base {
        Some(base) if topic.starts_with('~') => format!("{base}{}", &topic[1..]),
        Some(base) if topic.ends_with('~') => format!("{}{base}", &topic[..topic.len() - 1]),
        _ => topic.to_string(),
    }
}

/// A telemetry field name from an entity name (`Living Room Temperature` → `living_room_temperature`).
pub fn field_name(source: &str) -> String {
    let mut name: String = source
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "e_");
    }
    name.truncate(32);
    name
}

/// A device id for an imported device (`ha-` + its identifier, made safe).
pub fn device_id(identifier: &str) -> String {
    let mut id: String = identifier
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    id.truncate(61);
    format!("ha-{id}")
}

/// The numeric value of a state message: the payload itself (`21.5`, `ON`/`OFF`, `true`), or the
/// JSON path of templates like `{{ value_json.temperature }}`, `{{ value_json['AM2301'].Temperature | float }}`.
/// Other templates are not evaluated (`None`).
pub fn extract(template: Option<&str>, payload: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let Some(template) = template.map(str::trim) else { return scalar(text) };
    let inner = template.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let expression = inner.split('|').next()?.trim();
    if expression == "value" {
        return scalar(text);
    }
    let path = expression.strip_prefix("value_json")?;
    let mut current: Value = serde_json::from_str(text).ok()?;
    for segment in path_segments(path)? {
        current = match current {
            Value::Object(mut map) => map.remove(&segment)?,
            Value::Array(mut items) => {
                let index: usize = segment.parse().ok()?;
                (index < items.len()).then(|| items.swap_remove(index))?
            }
            _ => return None,
        };
    }
    match current {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(b))),
        Value::String(s) => scalar(&s),
        _ => None,
    }
}

/// `.a['b'].c[0]` → ["a", "b", "c", "0"].
fn path_segments(path: &str) -> Option<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            segments.push(after[..end].to_string());
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            segments.push(after[..end].trim_matches(|c| c == '\'' || c == '"').to_string());
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(segments)
}

fn scalar(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "open" | "detected" => Some(1.0),
        "off" | "false" | "closed" | "clear" => Some(0.0),
        other => other.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasmota_style_single_component_config_with_abbreviations() {
        let payload = r#"{"name":"Kitchen Temperature","stat_t":"tele/kitchen/SENSOR","uniq_id":"kitchen_T",
            "dev":{"ids":["kitchen01"],"name":"Kitchen","mf":"Tasmota","mdl":"Sonoff TH"},
            "unit_of_meas":"°C","dev_cla":"temperature","val_tpl":"{{value_json['AM2301'].Temperature}}"}"#
            .as_bytes();
        let Discovery::Announce { device, entities } =
            parse("homeassistant/sensor/kitchen01/temperature/config", payload).unwrap()
        else {
            panic!()
        };
        assert_eq!(device.identifier, "kitchen01");
        assert_eq!(device.manufacturer.as_deref(), Some("Tasmota"));
        assert_eq!(entities.len(), 1);
        let e = &entities[0];
        assert_eq!(
            (e.key.as_str(), e.field.as_str(), e.state_topic.as_str()),
            ("sensor/kitchen01/temperature", "kitchen_temperature", "tele/kitchen/SENSOR")
        );
        assert_eq!(e.unit.as_deref(), Some("°C"));
        assert_eq!(
            extract(e.value_template.as_deref(), br#"{"AM2301":{"Temperature":21.4,"Humidity":40}}"#),
            Some(21.4)
        );
    }

    #[test]
    fn device_based_config_base_topic_removal_and_our_own_export() {
        let payload = br#"{"dev":{"ids":"esp-7"},"o":{"name":"ESPHome"},"~":"esp-7/sensor",
            "cmps":{"t":{"p":"sensor","name":"Temperature","stat_t":"~/t/state"},
                    "b":{"p":"button","name":"Restart","cmd_t":"~/restart"}}}"#;
        let Discovery::Announce { entities, .. } = parse("homeassistant/device/esp-7/config", payload).unwrap() else {
            panic!()
        };
        assert_eq!(entities.len(), 1, "the button has no state to record");
        assert_eq!(entities[0].state_topic, "esp-7/sensor/t/state");
        assert_eq!(entities[0].key, "device/esp-7/t");
        assert_eq!(
            parse("homeassistant/device/esp-7/config", b"").unwrap(),
            Discovery::Remove { key_prefix: "device/esp-7".into() }
        );
        let ours = br#"{"dev":{"ids":["gatehouse"]},"o":{"name":"Gatehouse"},"cmps":{}}"#;
        assert!(matches!(parse("homeassistant/device/gw/config", ours).unwrap(), Discovery::Ignore(_)));
        assert!(parse("homeassistant/sensor/x/state", b"{}").is_err());
        assert!(parse("homeassistant/sensor/x/config", b"{\"name\":\"no device\",\"stat_t\":\"a\"}").is_err());
    }

    #[test]
    fn state_topics_in_gatehouses_namespaces_are_limited_to_what_services_may_read() {
        let cases = [
            ("esphome/hall/sensor/t/state", true),
            ("zigbee2mqtt/porch", true),
            ("devices/home/esp-1/telemetry", true),
            ("devices/home/esp-1/status", true),
            ("devices/lab/esp-1/alert", true),
            ("devices/home/esp-1/credentials", false),
            ("devices/home/esp-1/commands", false),
            ("devices/home/esp-1/config", false),
            ("devices/home/esp-1/telemetry/x", false),
            ("provisioning/home/new-1/reply", false),
            ("gatehouse/home/health", true),
            ("devicesx/home/a/credentials", true),
        ];
        for (topic, allowed) in cases {
            assert_eq!(importable_state_topic(topic), allowed, "{topic}");
        }
        let payload = br#"{"name":"Leak","stat_t":"devices/home/esp-1/credentials","dev":{"ids":["x"]}}"#;
        let refused = parse("homeassistant/sensor/x/leak/config", payload).unwrap_err();
        assert!(refused.0.contains("own namespace"), "{refused}");
    }

    #[test]
    fn a_state_topic_must_be_a_topic_name() {
        // Found by fuzzing (fuzz/regressions/ha_discovery): `stat_t` with a wildcard made the
        // importer subscribe to a filter (`#`: every message on the broker).
        for state_topic in ["esp#ome/hall/door/state", "#", "+/temperature", "", "~/a\\u0000b"] {
            let payload = format!(
                r#"{{"name":"Door","stat_t":"{state_topic}","~":"x","dev":{{"ids":["hall"]}},"dev_cla":"door"}}"#
            );
            assert_eq!(
                parse("homeassistant/binary_sensor/hall/door/config", payload.as_bytes()),
                Ok(Discovery::Ignore("no entity with a state topic")),
                "{state_topic:?}"
            );
        }
        let base = br#"{"name":"Door","stat_t":"~/door","~":"esphome/+","dev":{"ids":["hall"]}}"#;
        assert!(matches!(parse("homeassistant/sensor/hall/door/config", base), Ok(Discovery::Ignore(_))));
    }

    #[test]
    fn value_extraction_table() {
        let cases: &[(Option<&str>, &str, Option<f64>)] = &[
            (None, "21.5", Some(21.5)),
            (None, "ON", Some(1.0)),
            (None, "off", Some(0.0)),
            (None, "unavailable", None),
            (Some("{{ value }}"), " 7 ", Some(7.0)),
            (Some("{{ value_json.temperature }}"), r#"{"temperature": 19.0}"#, Some(19.0)),
            (Some("{{ value_json.a.b[1] | float }}"), r#"{"a": {"b": [1, 2.5]}}"#, Some(2.5)),
            (Some("{{ value_json['x y'] }}"), r#"{"x y": "3"}"#, Some(3.0)),
            (Some("{{ value_json.on }}"), r#"{"on": true}"#, Some(1.0)),
            (Some("{{ value_json.missing }}"), r#"{"t": 1}"#, None),
            (Some("{{ (value_json.t * 9 / 5) + 32 }}"), r#"{"t": 1}"#, None),
            (Some("{{ value_json.t }}"), "not json", None),
        ];
        for (template, payload, expected) in cases {
            assert_eq!(extract(*template, payload.as_bytes()), *expected, "{template:?} on {payload}");
        }
    }

    #[test]
    fn names_and_ids_are_made_safe() {
        assert_eq!(field_name("Living Room Temperature"), "living_room_temperature");
        assert_eq!(field_name("2nd floor"), "e_2nd_floor");
        assert_eq!(device_id("AA:BB:CC:DD:EE:FF"), "ha-aa-bb-cc-dd-ee-ff");
        assert!(crate::auth::valid_device_id(&device_id("Sonoff TH (garage)")));
    }
}
