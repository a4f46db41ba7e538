//! Home Assistant MQTT discovery, write side: the device-based discovery configs Gatehouse
//! publishes for itself, its adopted Ruuvi tags and its active LAN devices. Pure functions: a
//! device summary in, a topic and a JSON payload out. Keys are HA's full names throughout (no
//! abbreviations); docs/protocol.md ("Home Assistant") shows the payloads.

use serde_json::{json, Map, Value};

use crate::lifecycle::registration::{Capabilities, CommandSpec, FieldType};
use crate::store::DeviceRecord;

pub const ORIGIN_NAME: &str = "Gatehouse";
/// What HA's button publishes on its command topic when pressed.
pub const PAYLOAD_PRESS: &str = "PRESS";

/// What every config shares: where it goes and what it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The discovery prefix (`homeassistant`).
    pub prefix: String,
    /// The gateway's site (`devices/{site}/…`, `gatehouse/{site}/…`).
    pub site: String,
    pub sw_version: String,
    /// Seconds without a reading before a tag's sensors become unavailable (`None`: never).
    pub expire_after: Option<u64>,
}

/// What kind of thing a device is, for Home Assistant.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A Ruuvi tag or Ruuvi Air: its reading fields (the keys of its latest reading).
    Tag { air: bool, fields: Vec<String> },
    /// A LAN device with its declared capabilities.
    Lan(Capabilities),
}

/// The parts of a device record discovery needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSummary {
    pub id: String,
    pub site: String,
    pub name: Option<String>,
    pub mac: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    pub room: Option<String>,
    pub kind: Kind,
}

impl DeviceSummary {
    /// The device as Home Assistant should see it, or `None` if it should not be there: only
    /// active LAN devices and adopted (state `active`) Ruuvi tags are published. Devices
    /// imported from Home Assistant discovery are HA's own already and never echoed back.
    pub fn from_record(record: &DeviceRecord, gateway_site: &str) -> Option<DeviceSummary> {
        if record.state != "active" {
            return None;
        }
        let kind = match record.kind.as_str() {
            "ruuvi_tag" | "ruuvi_air" => {
                let air = record.kind == "ruuvi_air";
                let fields = match record.last_reading.as_ref().and_then(Value::as_object) {
                    Some(reading) => reading.keys().cloned().collect(),
                    None => default_tag_fields(air),
                };
                Kind::Tag { air, fields }
            }
            "lan" => {
                Kind::Lan(record.capabilities.clone().and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default())
            }
            _ => return None,
        };
        Some(DeviceSummary {
            id: record.id.clone(),
            site: record.site.clone().unwrap_or_else(|| gateway_site.to_string()),
            name: record.name.clone(),
            mac: record.mac.clone(),
            manufacturer: record.manufacturer.clone(),
            model: record.model.clone(),
            firmware: record.firmware.clone(),
            hardware: record.hardware.clone(),
            room: record.room.clone(),
            kind,
        })
    }
}

fn default_tag_fields(air: bool) -> Vec<String> {
    TAG_SENSORS
        .iter()
        .filter(|s| if air { s.air } else { s.tag })
        .map(|s| s.field.to_string())
        .chain(["rssi".to_string()])
        .collect()
}

/// One config, ready to publish (retained).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub topic: String,
    pub payload: Value,
    /// (component key, platform) of every component in the payload.
    pub components: Vec<(String, &'static str)>,
    /// Commands exposed to HA: component key → how to turn HA's payload into task parameters.
    pub commands: Vec<ExposedCommand>,
}

/// A device command HA can trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedCommand {
    pub command: String,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    /// No parameters needed: pressing sends `{}`.
    Button,
    /// One enum parameter: HA's option (as text) → `{parameter: value}`.
    Select { parameter: String, options: Vec<(String, Value)> },
}

/// HA's object id for a device's config topic and identifiers. Device ids never start with
/// `gatehouse`, and the gateway's own id uses `-`, so they cannot collide.
pub fn object_id(device_id: &str) -> String {
    format!("gatehouse_{device_id}")
}

/// The gateway's own HA device id (also every device's `via_device`).
pub fn gateway_object_id(site: &str) -> String {
    format!("gatehouse-{site}")
}

pub fn config_topic(prefix: &str, object_id: &str) -> String {
    format!("{prefix}/device/{object_id}/config")
}

/// Where HA publishes a command for `device`: `gatehouse/{site}/ha/{device}/{command}/set`.
pub fn command_topic(site: &str, device_id: &str, command: &str) -> String {
    format!("gatehouse/{site}/ha/{device_id}/{command}/set")
}

/// Where Gatehouse publishes the latest task of a command (retained JSON, HA's attributes).
pub fn task_topic(site: &str, device_id: &str, command: &str) -> String {
    format!("gatehouse/{site}/ha/{device_id}/{command}/task")
}

/// The filter that catches every command topic of a site.
pub fn command_filter(site: &str) -> String {
    format!("gatehouse/{site}/ha/+/+/set")
}

/// `[a-z0-9_]` only, as entity ids need.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

fn origin(ctx: &Context) -> Value {
    // No support_url: the project has no public support page yet (HA only requires the name).
    json!({ "name": ORIGIN_NAME, "sw_version": ctx.sw_version })
}

fn availability(topics: &[String]) -> Value {
    Value::Array(
        topics
            .iter()
            .map(|t| json!({ "topic": t, "payload_available": "online", "payload_not_available": "offline" }))
            .collect(),
    )
}

/// A Ruuvi reading field as an HA sensor.
struct TagSensor {
    field: &'static str,
    key: &'static str,
    name: &'static str,
    device_class: Option<&'static str>,
    unit: Option<&'static str>,
    state_class: Option<&'static str>,
    diagnostic: bool,
    precision: Option<u8>,
    enabled: bool,
    /// Carried by RuuviTags (formats 3, 5, C5) / by Ruuvi Airs (6, E1), for the defaults.
    tag: bool,
    air: bool,
}

const fn sensor(
    field: &'static str,
    key: &'static str,
    name: &'static str,
    device_class: Option<&'static str>,
    unit: Option<&'static str>,
    state_class: Option<&'static str>,
) -> TagSensor {
    TagSensor {
        field,
        key,
        name,
        device_class,
        unit,
        state_class,
        diagnostic: false,
        precision: None,
        enabled: true,
        tag: true,
        air: true,
    }
}

const M: Option<&str> = Some("measurement");
const TOTAL: Option<&str> = Some("total_increasing");

/// Every Ruuvi field Gatehouse exposes, in display order (docs/protocol.md "Reading").
const TAG_SENSORS: &[TagSensor] = &[
    TagSensor {
        precision: Some(2),
        ..sensor("temperature", "temperature", "Temperature", Some("temperature"), Some("°C"), M)
    },
    TagSensor { precision: Some(1), ..sensor("humidity", "humidity", "Humidity", Some("humidity"), Some("%"), M) },
    TagSensor {
        precision: Some(1),
        ..sensor("pressure", "pressure", "Pressure", Some("atmospheric_pressure"), Some("hPa"), M)
    },
    TagSensor {
        precision: Some(1),
        ..sensor("dewPoint", "dew_point", "Dew point", Some("temperature"), Some("°C"), M)
    },
    TagSensor {
        air: false,
        diagnostic: true,
        precision: Some(3),
        ..sensor("voltage", "voltage", "Battery voltage", Some("voltage"), Some("V"), M)
    },
    TagSensor {
        air: false,
        diagnostic: true,
        ..sensor("movementCounter", "movement_counter", "Movement counter", None, None, TOTAL)
    },
    TagSensor {
        air: false,
        enabled: false,
        precision: Some(3),
        ..sensor("accelX", "acceleration_x", "Acceleration X", None, Some("g"), M)
    },
    TagSensor {
        air: false,
        enabled: false,
        precision: Some(3),
        ..sensor("accelY", "acceleration_y", "Acceleration Y", None, Some("g"), M)
    },
    TagSensor {
        air: false,
        enabled: false,
        precision: Some(3),
        ..sensor("accelZ", "acceleration_z", "Acceleration Z", None, Some("g"), M)
    },
    TagSensor { tag: false, ..sensor("PM1.0", "pm1", "PM1", Some("pm1"), Some("µg/m³"), M) },
    TagSensor { tag: false, ..sensor("PM2.5", "pm25", "PM2.5", Some("pm25"), Some("µg/m³"), M) },
    // HA has no PM4 device class: a plain sensor with the unit.
    TagSensor { tag: false, ..sensor("PM4.0", "pm4", "PM4", None, Some("µg/m³"), M) },
    TagSensor { tag: false, ..sensor("PM10.0", "pm10", "PM10", Some("pm10"), Some("µg/m³"), M) },
    TagSensor { tag: false, ..sensor("CO2", "co2", "CO2", Some("carbon_dioxide"), Some("ppm"), M) },
    // Indices, not concentrations: no device class, no unit.
    TagSensor { tag: false, ..sensor("VOC", "voc_index", "VOC index", None, None, M) },
    TagSensor { tag: false, ..sensor("NOx", "nox_index", "NOx index", None, None, M) },
    TagSensor { tag: false, ..sensor("luminosity", "illuminance", "Illuminance", Some("illuminance"), Some("lx"), M) },
    TagSensor { tag: false, precision: Some(0), ..sensor("iaqs", "iaqs", "Air quality score (IAQS)", None, None, M) },
    TagSensor {
        diagnostic: true,
        ..sensor("txPower", "tx_power", "Transmit power", Some("signal_strength"), Some("dBm"), M)
    },
    TagSensor {
        diagnostic: true,
        ..sensor("rssi", "rssi", "Signal strength", Some("signal_strength"), Some("dBm"), M)
    },
    TagSensor {
        diagnostic: true,
        enabled: false,
        ..sensor("measurementSequenceNumber", "sequence", "Measurement sequence", None, None, TOTAL)
    },
];

/// `{{ value_json['field'] }}`: a JSON `null` renders `None` (HA: unknown), a missing key renders
/// nothing (HA: ignored).
fn field_template(field: &str) -> String {
    format!("{{{{ value_json['{field}'] }}}}")
}

/// Our readings carry pressure in Pa; HA gets hPa.
fn pressure_template() -> String {
    "{{ (value_json['pressure'] / 100) | round(2) if value_json['pressure'] is number else value_json['pressure'] }}"
        .to_string()
}

fn insert_opt(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        map.insert(key.into(), value.into());
    }
}

/// Collects components with unique keys.
struct Components {
    object_id: String,
    entity_base: String,
    map: Map<String, Value>,
    list: Vec<(String, &'static str)>,
}

impl Components {
    fn new(object_id: &str, entity_base: &str) -> Components {
        Components { object_id: object_id.into(), entity_base: entity_base.into(), map: Map::new(), list: Vec::new() }
    }

    /// Adds a component under `key` (made unique), with `platform`, `unique_id` and
    /// `default_entity_id`; returns the key used.
    fn add(&mut self, key: &str, platform: &'static str, mut body: Map<String, Value>) -> String {
        let mut unique = key.to_string();
        let mut n = 2;
        while self.map.contains_key(&unique) {
            unique = format!("{key}_{n}");
            n += 1;
        }
        body.insert("platform".into(), platform.into());
        body.insert("unique_id".into(), format!("{}_{unique}", self.object_id).into());
        body.insert("default_entity_id".into(), format!("{platform}.{}_{unique}", self.entity_base).into());
        self.map.insert(unique.clone(), Value::Object(body));
        self.list.push((unique.clone(), platform));
        unique
    }
}

fn assemble(
    ctx: &Context,
    object_id: &str,
    device: Value,
    availability_topics: &[String],
    components: Components,
    commands: Vec<ExposedCommand>,
) -> DeviceConfig {
    let payload = json!({
        "device": device,
        "origin": origin(ctx),
        "availability": availability(availability_topics),
        "availability_mode": "all",
        "components": Value::Object(components.map),
        "qos": 0,
    });
    DeviceConfig { topic: config_topic(&ctx.prefix, object_id), payload, components: components.list, commands }
}

/// Gatehouse itself: diagnostic sensors from its retained health report.
pub fn gateway_config(ctx: &Context) -> DeviceConfig {
    let object_id = gateway_object_id(&ctx.site);
    let health = crate::topics::gateway_health(&ctx.site);
    let mut components = Components::new(&object_id, &format!("gatehouse_{}", slug(&ctx.site)));
    let sensors: &[(&str, &str, &str, Option<&str>, Option<&str>, Option<&str>, bool)] = &[
        // (key, template, name, device class, unit, state class, diagnostic)
        ("devices_online", "{{ value_json.devicesOnline }}", "Devices online", None, None, M, false),
        ("clients_connected", "{{ value_json.clientsConnected }}", "MQTT clients connected", None, None, M, true),
        (
            "messages_per_second",
            "{{ value_json.messagesPerSecond }}",
            "MQTT messages per second",
            None,
            Some("msg/s"),
            M,
            true,
        ),
        ("readings_stored", "{{ value_json.readingsStored }}", "Readings stored", None, None, TOTAL, true),
        ("publishes_denied", "{{ value_json.publishesDenied }}", "Publishes denied", None, None, TOTAL, true),
        ("dropped", "{{ value_json.dropped }}", "Messages dropped", None, None, TOTAL, true),
        ("uptime", "{{ value_json.uptimeSeconds }}", "Uptime", Some("duration"), Some("s"), None, true),
        ("bluetooth", "{{ value_json.bluetooth.state }}", "Bluetooth", None, None, None, true),
    ];
    for (key, template, name, class, unit, state_class, diagnostic) in sensors {
        let mut body = Map::new();
        body.insert("name".into(), (*name).into());
        body.insert("state_topic".into(), health.clone().into());
        body.insert("value_template".into(), (*template).into());
        insert_opt(&mut body, "device_class", *class);
        insert_opt(&mut body, "unit_of_measurement", *unit);
        insert_opt(&mut body, "state_class", *state_class);
        if *diagnostic {
            body.insert("entity_category".into(), "diagnostic".into());
        }
        components.add(key, "sensor", body);
    }
    let mut problem = Map::new();
    problem.insert("name".into(), "Status".into());
    problem.insert("state_topic".into(), health.into());
    problem.insert("value_template".into(), "{{ value_json.status }}".into());
    problem.insert("payload_on".into(), "degraded".into());
    problem.insert("payload_off".into(), "ok".into());
    problem.insert("device_class".into(), "problem".into());
    problem.insert("entity_category".into(), "diagnostic".into());
    components.add("status", "binary_sensor", problem);
    let device = json!({
        "identifiers": [object_id],
        "name": format!("Gatehouse ({})", ctx.site),
        "manufacturer": ORIGIN_NAME,
        "model": "Gatehouse gateway",
        "sw_version": ctx.sw_version,
    });
    let availability = [crate::topics::gateway_status(&ctx.site)];
    assemble(ctx, &object_id, device, &availability, components, Vec::new())
}

/// A device's config, or `None` for devices HA should not see.
pub fn device_config(ctx: &Context, device: &DeviceSummary) -> DeviceConfig {
    match &device.kind {
        Kind::Tag { air, fields } => tag_config(ctx, device, *air, fields),
        Kind::Lan(capabilities) => lan_config(ctx, device, capabilities),
    }
}

fn device_block(ctx: &Context, device: &DeviceSummary, object_id: &str, fallback_name: String) -> Map<String, Value> {
    let mut block = Map::new();
    block.insert("identifiers".into(), json!([object_id]));
    if let Some(mac) = &device.mac {
        block.insert("connections".into(), json!([["mac", mac.to_ascii_lowercase()]]));
    }
    block.insert("name".into(), device.name.clone().unwrap_or(fallback_name).into());
    insert_opt(&mut block, "manufacturer", device.manufacturer.clone());
    insert_opt(&mut block, "model", device.model.clone());
    insert_opt(&mut block, "sw_version", device.firmware.clone());
    insert_opt(&mut block, "hw_version", device.hardware.clone());
    insert_opt(&mut block, "suggested_area", device.room.clone());
    block.insert("via_device".into(), gateway_object_id(&ctx.site).into());
    block
}

fn availability_topics(ctx: &Context, device: &DeviceSummary) -> Vec<String> {
    vec![crate::topics::gateway_status(&ctx.site), crate::topics::device_status(&device.site, &device.id)]
}

fn tag_config(ctx: &Context, device: &DeviceSummary, air: bool, fields: &[String]) -> DeviceConfig {
    let object_id = object_id(&device.id);
    let state_topic = crate::topics::telemetry(&device.site, &device.id);
    let mut components = Components::new(&object_id, &slug(&device.id));
    for sensor in TAG_SENSORS.iter().filter(|s| fields.iter().any(|f| f == s.field)) {
        let mut body = Map::new();
        body.insert("name".into(), sensor.name.into());
        body.insert("state_topic".into(), state_topic.clone().into());
        let template = if sensor.field == "pressure" { pressure_template() } else { field_template(sensor.field) };
        body.insert("value_template".into(), template.into());
        insert_opt(&mut body, "device_class", sensor.device_class);
        insert_opt(&mut body, "unit_of_measurement", sensor.unit);
        insert_opt(&mut body, "state_class", sensor.state_class);
        insert_opt(&mut body, "suggested_display_precision", sensor.precision);
        if sensor.diagnostic {
            body.insert("entity_category".into(), "diagnostic".into());
        }
        if !sensor.enabled {
            body.insert("enabled_by_default".into(), false.into());
        }
        insert_opt(&mut body, "expire_after", ctx.expire_after);
        components.add(sensor.key, "sensor", body);
    }
    let mut summary = device.clone();
    summary.manufacturer = Some("Ruuvi Innovations Ltd".into());
    summary.model = Some(if air { "Ruuvi Air" } else { "RuuviTag" }.into());
    let short = device.mac.as_deref().unwrap_or(&device.id).replace(':', "").to_ascii_uppercase();
    let fallback =
        format!("{} {}", if air { "Ruuvi Air" } else { "RuuviTag" }, &short[short.len().saturating_sub(4)..]);
    let block = device_block(ctx, &summary, &object_id, fallback);
    assemble(ctx, &object_id, Value::Object(block), &availability_topics(ctx, device), components, Vec::new())
}

/// Device class (and state class) for a declared unit, only where the unit says it unambiguously.
fn lan_sensor_class(name: &str, unit: Option<&str>) -> (Option<&'static str>, &'static str) {
    let name = name.to_ascii_lowercase();
    let class = match unit {
        Some("°C" | "°F" | "K") => Some("temperature"),
        Some("%") if name.contains("humid") => Some("humidity"),
        Some("%") if name.contains("batt") => Some("battery"),
        Some("Pa" | "hPa" | "kPa" | "mbar" | "bar") => Some("pressure"),
        Some("V" | "mV") => Some("voltage"),
        Some("A" | "mA") => Some("current"),
        Some("W" | "kW") => Some("power"),
        Some("Wh" | "kWh") => Some("energy"),
        Some("lx") => Some("illuminance"),
        Some("dBm") => Some("signal_strength"),
        Some("ppm") if name.contains("co2") => Some("carbon_dioxide"),
        _ => None,
    };
    let state_class = if class == Some("energy") { "total_increasing" } else { "measurement" };
    (class, state_class)
}

/// How HA can trigger a command, if it can: a button when no parameter is required, a select
/// when the schema has exactly one parameter and it is an enum; anything else needs the API.
pub fn command_kind(spec: &CommandSpec) -> Option<CommandKind> {
    let schema = spec.parameters.as_object();
    let properties = schema.and_then(|s| s.get("properties")).and_then(Value::as_object);
    if let Some(properties) = properties {
        if properties.len() == 1 {
            let (parameter, definition) = properties.iter().next()?;
            if let Some(values) = definition.get("enum").and_then(Value::as_array) {
                let options: Vec<(String, Value)> = values
                    .iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some((s.clone(), v.clone())),
                        Value::Number(_) | Value::Bool(_) => Some((v.to_string(), v.clone())),
                        _ => None,
                    })
                    .collect();
                if !options.is_empty() && options.len() == values.len() {
                    return Some(CommandKind::Select { parameter: parameter.clone(), options });
                }
            }
        }
    }
    let required = schema.and_then(|s| s.get("required")).and_then(Value::as_array).is_some_and(|r| !r.is_empty());
    (!required).then_some(CommandKind::Button)
}

/// Human name: the description if short, else the command name with spaces.
fn command_name(spec: &CommandSpec) -> String {
    match &spec.description {
        Some(d) if !d.is_empty() && d.chars().count() <= 40 => d.clone(),
        _ => {
            let spaced = spec.name.replace(['_', '-'], " ");
            let mut chars = spaced.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
        }
    }
}

fn lan_config(ctx: &Context, device: &DeviceSummary, capabilities: &Capabilities) -> DeviceConfig {
    let object_id = object_id(&device.id);
    let state_topic = crate::topics::telemetry(&device.site, &device.id);
    let mut components = Components::new(&object_id, &slug(&device.id));
    for field in &capabilities.telemetry {
        let mut body = Map::new();
        body.insert(
            "name".into(),
            command_name(&CommandSpec { name: field.name.clone(), description: None, parameters: Value::Null }).into(),
        );
        body.insert("state_topic".into(), state_topic.clone().into());
        body.insert("value_template".into(), field_template(&field.name).into());
        let platform = match field.field_type {
            FieldType::Boolean => {
                // `{{ value_json['door'] }}` renders Python's True / False.
                body.insert("payload_on".into(), "True".into());
                body.insert("payload_off".into(), "False".into());
                "binary_sensor"
            }
            FieldType::Number | FieldType::Integer => {
                let (class, state_class) = lan_sensor_class(&field.name, field.unit.as_deref());
                insert_opt(&mut body, "device_class", class);
                insert_opt(&mut body, "unit_of_measurement", field.unit.clone());
                body.insert("state_class".into(), state_class.into());
                "sensor"
            }
            FieldType::String => "sensor",
        };
        components.add(&slug(&field.name), platform, body);
    }
    let mut commands = Vec::new();
    for spec in &capabilities.commands {
        let Some(kind) = command_kind(spec) else { continue };
        let mut body = Map::new();
        body.insert("name".into(), command_name(spec).into());
        body.insert("command_topic".into(), command_topic(&device.site, &device.id, &spec.name).into());
        body.insert("json_attributes_topic".into(), task_topic(&device.site, &device.id, &spec.name).into());
        let platform = match &kind {
            CommandKind::Button => {
                body.insert("payload_press".into(), PAYLOAD_PRESS.into());
                "button"
            }
            CommandKind::Select { options, .. } => {
                body.insert("options".into(), options.iter().map(|(text, _)| text.clone()).collect::<Vec<_>>().into());
                "select"
            }
        };
        components.add(&format!("command_{}", slug(&spec.name)), platform, body);
        commands.push(ExposedCommand { command: spec.name.clone(), kind });
    }
    let block = device_block(ctx, device, &object_id, device.id.clone());
    assemble(ctx, &object_id, Value::Object(block), &availability_topics(ctx, device), components, commands)
}

/// A config that removes `removed` components (device-based discovery: `{"platform": …}` only)
/// and keeps the rest: published when a device's capabilities shrink.
pub fn with_removed_components(mut config: DeviceConfig, removed: &[(String, &'static str)]) -> DeviceConfig {
    if let Some(Value::Object(components)) = config.payload.get_mut("components") {
        for (key, platform) in removed {
            components.entry(key.clone()).or_insert_with(|| json!({ "platform": platform }));
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::registration::TelemetryField;
    use std::collections::HashSet;

    fn ctx() -> Context {
        Context {
            prefix: "homeassistant".into(),
            site: "home".into(),
            sw_version: "1.2.3".into(),
            expire_after: Some(60),
        }
    }

    fn tag(air: bool, fields: &[&str]) -> DeviceSummary {
        DeviceSummary {
            id: "ruuvi-cbb8334c884f".into(),
            site: "home".into(),
            name: None,
            mac: Some("CB:B8:33:4C:88:4F".into()),
            manufacturer: None,
            model: None,
            firmware: None,
            hardware: None,
            room: Some("Kitchen".into()),
            kind: Kind::Tag { air, fields: fields.iter().map(|f| f.to_string()).collect() },
        }
    }

    fn lan() -> DeviceSummary {
        let capabilities: Capabilities = serde_json::from_value(json!({
            "telemetry": [{"name": "temperature", "unit": "°C", "type": "number"},
                          {"name": "door", "type": "boolean"},
                          {"name": "count", "unit": null, "type": "integer"},
                          {"name": "mode", "unit": null, "type": "string"}],
            "commands": [{"name": "reboot", "description": "Restart the device", "parameters": {"type": "object"}},
                         {"name": "identify", "description": null, "parameters": {"type": "object",
                            "properties": {"seconds": {"type": "integer"}}}},
                         {"name": "set_interval", "description": null, "parameters": {"type": "object",
                            "properties": {"seconds": {"type": "integer"}}, "required": ["seconds"]}},
                         {"name": "set_mode", "description": null, "parameters": {"type": "object",
                            "properties": {"mode": {"enum": ["eco", "boost", 3]}}, "required": ["mode"]}}]
        }))
        .unwrap();
        DeviceSummary {
            id: "esp-kitchen".into(),
            site: "home".into(),
            name: Some("Kitchen sensor".into()),
            mac: None,
            manufacturer: Some("Acme".into()),
            model: Some("ESP32".into()),
            firmware: Some("1.0".into()),
            hardware: None,
            room: None,
            kind: Kind::Lan(capabilities),
        }
    }

    const DF5: &[&str] = &[
        "ts",
        "deviceId",
        "mac",
        "rssi",
        "dataFormat",
        "temperature",
        "humidity",
        "pressure",
        "accelX",
        "accelY",
        "accelZ",
        "movementCounter",
        "voltage",
        "txPower",
        "measurementSequenceNumber",
        "dewPoint",
    ];
    const E1: &[&str] = &[
        "ts",
        "rssi",
        "dataFormat",
        "temperature",
        "humidity",
        "pressure",
        "PM1.0",
        "PM2.5",
        "PM4.0",
        "PM10.0",
        "CO2",
        "VOC",
        "NOx",
        "luminosity",
        "measurementSequenceNumber",
        "iaqs",
    ];

    /// Device classes HA accepts for sensors (subset we may use) with their allowed units.
    fn valid_sensor_class(class: &str, unit: Option<&str>) -> bool {
        let units: &[&str] = match class {
            "temperature" => &["°C", "°F", "K"],
            "humidity" | "battery" => &["%"],
            "pressure" | "atmospheric_pressure" => &["Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"],
            "voltage" => &["V", "mV", "µV", "kV", "MV"],
            "current" => &["A", "mA"],
            "power" => &["W", "kW", "mW", "MW", "GW", "TW"],
            "energy" => &["Wh", "kWh", "MWh", "GWh", "TWh", "mWh"],
            "signal_strength" => &["dB", "dBm"],
            "pm1" | "pm25" | "pm10" => &["µg/m³"],
            "carbon_dioxide" => &["ppm"],
            "illuminance" => &["lx"],
            "duration" => &["d", "h", "min", "s", "ms"],
            _ => return false,
        };
        unit.is_some_and(|u| units.contains(&u))
    }

    /// Checks one config against HA's device-discovery schema; returns its components.
    fn check_schema(config: &DeviceConfig) -> Map<String, Value> {
        let payload = config.payload.as_object().unwrap();
        for key in ["device", "origin", "components", "availability"] {
            assert!(payload.contains_key(key), "{key} missing in {}", config.topic);
        }
        let origin = &payload["origin"];
        assert_eq!(origin["name"], ORIGIN_NAME);
        assert!(origin["sw_version"].is_string() && origin["name"] == "Gatehouse");
        assert!(payload["device"]["identifiers"].as_array().is_some_and(|ids| !ids.is_empty()));
        for a in payload["availability"].as_array().unwrap() {
            assert!(a["topic"].is_string());
        }
        // Full names only: no abbreviation anywhere.
        let text = config.payload.to_string();
        for abbreviation in
            ["\"o\":", "\"dev\":", "\"cmps\":", "\"p\":", "\"uniq_id\"", "\"stat_t\"", "\"obj_id\"", "\"object_id\""]
        {
            assert!(!text.contains(abbreviation), "{abbreviation} in {}", config.topic);
        }
        let components = payload["components"].as_object().unwrap().clone();
        let mut unique = HashSet::new();
        for (key, c) in &components {
            let platform = c["platform"].as_str().unwrap();
            let uid = c["unique_id"].as_str().unwrap();
            assert!(unique.insert(uid.to_string()), "unique_id {uid} repeated");
            let entity = c["default_entity_id"].as_str().unwrap();
            let (domain, rest) = entity.split_once('.').unwrap();
            assert_eq!(domain, platform, "{key}");
            assert!(rest.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'), "{entity}");
            assert!(key.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'), "{key}");
            match platform {
                "sensor" => {
                    assert!(c["state_topic"].is_string() && c["value_template"].is_string(), "{key}");
                    if let Some(class) = c.get("device_class").and_then(Value::as_str) {
                        assert!(valid_sensor_class(class, c["unit_of_measurement"].as_str()), "{key}: {class}");
                    }
                    if let Some(sc) = c.get("state_class").and_then(Value::as_str) {
                        assert!(["measurement", "total", "total_increasing"].contains(&sc), "{key}");
                    }
                }
                "binary_sensor" => assert!(c["state_topic"].is_string() && c["payload_on"].is_string()),
                "button" => assert!(c["command_topic"].is_string() && c["payload_press"] == PAYLOAD_PRESS),
                "select" => {
                    assert!(c["command_topic"].is_string() && c["options"].as_array().is_some_and(|o| !o.is_empty()))
                }
                other => panic!("unexpected platform {other}"),
            }
            if let Some(cat) = c.get("entity_category") {
                assert!(cat == "diagnostic" || cat == "config");
            }
        }
        assert_eq!(components.len(), config.components.len());
        components
    }

    #[test]
    fn tag_components_follow_the_reading_fields_table() {
        // (format's fields, component, device class, unit, state class, diagnostic)
        let table: &[(&[&str], &str, Option<&str>, Option<&str>, Option<&str>, bool)] = &[
            (DF5, "temperature", Some("temperature"), Some("°C"), Some("measurement"), false),
            (DF5, "humidity", Some("humidity"), Some("%"), Some("measurement"), false),
            (DF5, "pressure", Some("atmospheric_pressure"), Some("hPa"), Some("measurement"), false),
            (DF5, "voltage", Some("voltage"), Some("V"), Some("measurement"), true),
            (DF5, "movement_counter", None, None, Some("total_increasing"), true),
            (DF5, "rssi", Some("signal_strength"), Some("dBm"), Some("measurement"), true),
            (DF5, "tx_power", Some("signal_strength"), Some("dBm"), Some("measurement"), true),
            (DF5, "sequence", None, None, Some("total_increasing"), true),
            (DF5, "acceleration_x", None, Some("g"), Some("measurement"), false),
            (E1, "pm1", Some("pm1"), Some("µg/m³"), Some("measurement"), false),
            (E1, "pm25", Some("pm25"), Some("µg/m³"), Some("measurement"), false),
            (E1, "pm4", None, Some("µg/m³"), Some("measurement"), false),
            (E1, "pm10", Some("pm10"), Some("µg/m³"), Some("measurement"), false),
            (E1, "co2", Some("carbon_dioxide"), Some("ppm"), Some("measurement"), false),
            (E1, "voc_index", None, None, Some("measurement"), false),
            (E1, "nox_index", None, None, Some("measurement"), false),
            (E1, "illuminance", Some("illuminance"), Some("lx"), Some("measurement"), false),
            (E1, "iaqs", None, None, Some("measurement"), false),
        ];
        for (fields, key, class, unit, state_class, diagnostic) in table {
            let config = device_config(&ctx(), &tag(fields == &E1, fields));
            let components = check_schema(&config);
            let c = components.get(*key).unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(c["platform"], "sensor", "{key}");
            assert_eq!(c.get("device_class").and_then(Value::as_str), *class, "{key}");
            assert_eq!(c.get("unit_of_measurement").and_then(Value::as_str), *unit, "{key}");
            assert_eq!(c.get("state_class").and_then(Value::as_str), *state_class, "{key}");
            assert_eq!(c.get("entity_category").is_some(), *diagnostic, "{key}");
            assert_eq!(c["expire_after"], 60, "{key}");
            assert_eq!(c["state_topic"], "devices/home/ruuvi-cbb8334c884f/telemetry");
            assert_eq!(c["unique_id"], format!("gatehouse_ruuvi-cbb8334c884f_{key}"));
            assert_eq!(c["default_entity_id"], format!("sensor.ruuvi_cbb8334c884f_{key}"));
        }
    }

    #[test]
    fn tags_carry_only_the_fields_their_format_has_and_the_ruuvi_device_block() {
        let df5 = device_config(&ctx(), &tag(false, DF5));
        let components = check_schema(&df5);
        assert!(!components.contains_key("co2") && !components.contains_key("iaqs"));
        let air = device_config(&ctx(), &tag(true, E1));
        let components = check_schema(&air);
        assert!(!components.contains_key("voltage") && !components.contains_key("movement_counter"));
        assert_eq!(df5.topic, "homeassistant/device/gatehouse_ruuvi-cbb8334c884f/config");
        let device = &df5.payload["device"];
        assert_eq!(device["identifiers"], json!(["gatehouse_ruuvi-cbb8334c884f"]));
        assert_eq!(device["connections"], json!([["mac", "cb:b8:33:4c:88:4f"]]));
        assert_eq!(device["manufacturer"], "Ruuvi Innovations Ltd");
        assert_eq!(device["model"], "RuuviTag");
        assert_eq!(device["name"], "RuuviTag 884F");
        assert_eq!(device["suggested_area"], "Kitchen");
        assert_eq!(device["via_device"], "gatehouse-home");
        assert_eq!(air.payload["device"]["model"], "Ruuvi Air");
        assert_eq!(
            df5.payload["availability"],
            json!([{"topic": "gatehouse/home/status", "payload_available": "online", "payload_not_available": "offline"},
                   {"topic": "devices/home/ruuvi-cbb8334c884f/status", "payload_available": "online", "payload_not_available": "offline"}])
        );
        assert_eq!(df5.payload["availability_mode"], "all");
        assert_eq!(df5.payload["origin"], json!({"name": "Gatehouse", "sw_version": "1.2.3"}));
        // Pa in our readings, hPa in HA.
        let pressure = components_of(&df5)["pressure"]["value_template"].as_str().unwrap().to_string();
        assert!(pressure.contains("/ 100"), "{pressure}");
        assert_eq!(components_of(&air)["pm25"]["value_template"], "{{ value_json['PM2.5'] }}");
        // No expiry when configured off.
        let never = device_config(&Context { expire_after: None, ..ctx() }, &tag(false, DF5));
        assert!(components_of(&never)["temperature"].get("expire_after").is_none());
    }

    fn components_of(config: &DeviceConfig) -> Map<String, Value> {
        config.payload["components"].as_object().unwrap().clone()
    }

    #[test]
    fn lan_devices_get_sensors_binary_sensors_buttons_and_selects() {
        let config = device_config(&ctx(), &lan());
        let components = check_schema(&config);
        // (component, platform, device class, unit)
        let table: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            ("temperature", "sensor", Some("temperature"), Some("°C")),
            ("door", "binary_sensor", None, None),
            ("count", "sensor", None, None),
            ("mode", "sensor", None, None),
            ("command_reboot", "button", None, None),
            ("command_identify", "button", None, None),
            ("command_set_mode", "select", None, None),
        ];
        for (key, platform, class, unit) in table {
            let c = &components[*key];
            assert_eq!(c["platform"], *platform, "{key}");
            assert_eq!(c.get("device_class").and_then(Value::as_str), *class, "{key}");
            assert_eq!(c.get("unit_of_measurement").and_then(Value::as_str), *unit, "{key}");
        }
        assert!(!components.contains_key("command_set_interval"), "a required non-enum parameter: API only");
        assert_eq!(components.len(), table.len());
        assert!(components["mode"].get("state_class").is_none(), "text sensors have no state class");
        assert_eq!(components["command_reboot"]["command_topic"], "gatehouse/home/ha/esp-kitchen/reboot/set");
        assert_eq!(components["command_reboot"]["json_attributes_topic"], "gatehouse/home/ha/esp-kitchen/reboot/task");
        assert_eq!(components["command_reboot"]["name"], "Restart the device");
        assert_eq!(components["command_identify"]["name"], "Identify");
        assert_eq!(components["command_set_mode"]["options"], json!(["eco", "boost", "3"]));
        assert_eq!(components["door"]["payload_on"], "True");
        assert!(components["temperature"].get("expire_after").is_none(), "LAN devices have their own status");
        let device = &config.payload["device"];
        assert_eq!(device["name"], "Kitchen sensor");
        assert_eq!(device["manufacturer"], "Acme");
        assert_eq!(device["sw_version"], "1.0");
        assert_eq!(device["via_device"], "gatehouse-home");
        assert!(device.get("connections").is_none());
        let commands: Vec<&str> = config.commands.iter().map(|c| c.command.as_str()).collect();
        assert_eq!(commands, ["reboot", "identify", "set_mode"]);
        let CommandKind::Select { parameter, options } = &config.commands[2].kind else { panic!() };
        assert_eq!(parameter, "mode");
        assert_eq!(options[2], ("3".to_string(), json!(3)));
    }

    #[test]
    fn the_gateway_is_a_device_with_diagnostics_from_its_health_report() {
        let config = gateway_config(&ctx());
        let components = check_schema(&config);
        assert_eq!(config.topic, "homeassistant/device/gatehouse-home/config");
        assert_eq!(config.payload["device"]["identifiers"], json!(["gatehouse-home"]));
        assert!(config.payload["device"].get("via_device").is_none());
        assert_eq!(config.payload["device"]["sw_version"], "1.2.3");
        assert_eq!(components["devices_online"]["state_topic"], "gatehouse/home/health");
        assert_eq!(components["status"]["platform"], "binary_sensor");
        assert_eq!(components["status"]["device_class"], "problem");
        assert_eq!(components["uptime"]["device_class"], "duration");
        assert_eq!(config.payload["availability"][0]["topic"], "gatehouse/home/status");
    }

    #[test]
    fn colliding_component_keys_stay_unique() {
        let mut device = lan();
        let Kind::Lan(capabilities) = &mut device.kind else { panic!() };
        capabilities.telemetry.push(TelemetryField {
            name: "command_reboot".into(),
            unit: None,
            field_type: FieldType::Number,
        });
        let config = device_config(&ctx(), &device);
        let components = check_schema(&config);
        assert!(components.contains_key("command_reboot_2"));
    }

    #[test]
    fn removed_components_are_sent_as_platform_only() {
        let config = with_removed_components(
            device_config(&ctx(), &lan()),
            &[("gone".into(), "sensor"), ("temperature".into(), "sensor")],
        );
        let components = components_of(&config);
        assert_eq!(components["gone"], json!({"platform": "sensor"}));
        assert!(components["temperature"].get("unique_id").is_some(), "present components are untouched");
    }

    #[test]
    fn only_active_tags_and_lan_devices_are_published() {
        let record = |kind: &str, state: &str| DeviceRecord {
            id: "x".into(),
            kind: kind.into(),
            mac: None,
            name: None,
            state: state.into(),
            first_seen: 0,
            last_seen: 0,
            last_rssi: None,
            last_receiver: None,
            data_format: None,
            last_reading: None,
            site: None,
            device_type: None,
            model: None,
            manufacturer: None,
            firmware: None,
            hardware: None,
            capabilities: None,
            registered_at: None,
            via_pairing: false,
            claimed_by: None,
            claimed_at: None,
            claimed_from: None,
            credentials_confirmed: false,
            room: None,
            calibration: None,
        };
        let table = [
            ("ruuvi_tag", "active", true),
            ("ruuvi_air", "active", true),
            ("ruuvi_tag", "discovered", false),
            ("ruuvi_tag", "ignored", false),
            ("ruuvi_tag", "blocked", false),
            ("lan", "active", true),
            ("lan", "pending_claim", false),
            ("lan", "deactivated", false),
            ("homeassistant", "active", false),
        ];
        for (kind, state, published) in table {
            assert_eq!(DeviceSummary::from_record(&record(kind, state), "home").is_some(), published, "{kind} {state}");
        }
        let summary = DeviceSummary::from_record(&record("ruuvi_air", "active"), "home").unwrap();
        let Kind::Tag { air: true, fields } = summary.kind else { panic!() };
        assert!(fields.iter().any(|f| f == "CO2"), "no reading yet: the Air's default fields");
        assert_eq!(summary.site, "home");
    }

    #[test]
    fn slugs_are_entity_id_safe() {
        assert_eq!(slug("PM2.5"), "pm2_5");
        assert_eq!(slug("ruuvi-cbb8334c884f"), "ruuvi_cbb8334c884f");
        assert_eq!(slug("__a--b__"), "a_b");
    }
}
