//! The registration a device sends (over MQTT or HTTP) and its validation. Pure: parses JSON into
//! typed values, and every error names the offending field so firmware authors can fix it.
//! The payload is specified in docs/protocol.md.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::valid_device_id;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub device_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub device_type: String,
    pub model: Option<String>,
    pub manufacturer: Option<String>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    /// A random secret the device keeps: only a registration carrying it again is sent the
    /// device's credentials a second time.
    #[serde(skip_serializing)]
    pub registration_token: String,
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub telemetry: Vec<TelemetryField>,
    pub commands: Vec<CommandSpec>,
    /// JSON Schema of the settings the device accepts on its config topic (none: any object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryField {
    pub name: String,
    pub unit: Option<String>,
    #[serde(rename = "type")]
    pub field_type: FieldType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Number,
    Integer,
    Boolean,
    String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSpec {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the command's parameters.
    pub parameters: Value,
}

/// What was wrong, and where (`capabilities.commands[1].parameters`, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

const MAX_TELEMETRY_FIELDS: usize = 64;
const MAX_COMMANDS: usize = 32;

/// Parses and checks a registration. `client_id`: the MQTT client id it came from, which must be
/// the device id.
pub fn parse(payload: &[u8], client_id: Option<&str>) -> Result<Registration, FieldError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| error("(payload)", format!("not JSON: {e}")))?;
    let Value::Object(object) = value else { return Err(error("(payload)", "must be a JSON object")) };
    known_keys(
        &object,
        "",
        &[
            "deviceId",
            "name",
            "type",
            "model",
            "manufacturer",
            "firmware",
            "hardware",
            "registrationToken",
            "capabilities",
        ],
    )?;
    let device_id = required_string(&object, "deviceId", 64)?;
    if !valid_device_id(&device_id) {
        return Err(error("deviceId", "use 1–64 lower-case letters, digits, '-' or '_'"));
    }
    if device_id.starts_with("ruuvi-") || device_id.starts_with("gatehouse") {
        return Err(error("deviceId", "the prefixes `ruuvi-` and `gatehouse` are reserved"));
    }
    if let Some(client_id) = client_id {
        if client_id != device_id {
            return Err(error("deviceId", format!("must equal the MQTT client id `{client_id}`")));
        }
    }
    // Checked in document order, so the first error is the first problem a reader meets.
    let name = required_string(&object, "name", 64)?;
    let device_type = required_string(&object, "type", 32)?;
    let model = optional_string(&object, "model", 64)?;
    let manufacturer = optional_string(&object, "manufacturer", 64)?;
    let firmware = optional_string(&object, "firmware", 64)?;
    let hardware = optional_string(&object, "hardware", 64)?;
    let token = required_string(&object, "registrationToken", 128)?;
    if token.len() < 16 {
        return Err(error("registrationToken", "use at least 16 random characters"));
    }
    let Some(Value::Object(capabilities)) = object.get("capabilities") else {
        return Err(error("capabilities", "required: an object with `telemetry` and `commands` arrays"));
    };
    Ok(Registration {
        name,
        device_type,
        model,
        manufacturer,
        firmware,
        hardware,
        capabilities: parse_capabilities(capabilities)?,
        registration_token: token,
        device_id,
    })
}

/// Parses a capabilities object (also used when they are updated through the API).
pub fn parse_capabilities(object: &Map<String, Value>) -> Result<Capabilities, FieldError> {
    known_keys(object, "capabilities.", &["telemetry", "commands", "config"])?;
    let array = |key: &str| match object.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(error(format!("capabilities.{key}"), "must be an array")),
    };
    let telemetry_items = array("telemetry")?;
    if telemetry_items.len() > MAX_TELEMETRY_FIELDS {
        return Err(error("capabilities.telemetry", format!("at most {MAX_TELEMETRY_FIELDS} fields")));
    }
    let mut telemetry: Vec<TelemetryField> = Vec::new();
    for (i, item) in telemetry_items.iter().enumerate() {
        let at = format!("capabilities.telemetry[{i}]");
        let Value::Object(field) = item else { return Err(error(at, "must be an object")) };
        known_keys(field, &format!("{at}."), &["name", "unit", "type"])?;
        let name = required_string(field, "name", 32).map_err(|e| error(format!("{at}.name"), e.message))?;
        if !valid_field_name(&name) || name == "ts" {
            return Err(error(format!("{at}.name"), "use a letter then letters, digits or '_' (and not `ts`)"));
        }
        if telemetry.iter().any(|f| f.name == name) {
            return Err(error(format!("{at}.name"), format!("`{name}` is declared twice")));
        }
        let unit = optional_string(field, "unit", 16).map_err(|e| error(format!("{at}.unit"), e.message))?;
        let field_type = match field.get("type").and_then(Value::as_str) {
            Some("number") => FieldType::Number,
            Some("integer") => FieldType::Integer,
            Some("boolean") => FieldType::Boolean,
            Some("string") => FieldType::String,
            _ => return Err(error(format!("{at}.type"), "one of number, integer, boolean, string")),
        };
        telemetry.push(TelemetryField { name, unit, field_type });
    }
    let command_items = array("commands")?;
    if command_items.len() > MAX_COMMANDS {
        return Err(error("capabilities.commands", format!("at most {MAX_COMMANDS} commands")));
    }
    let mut commands: Vec<CommandSpec> = Vec::new();
    for (i, item) in command_items.iter().enumerate() {
        let at = format!("capabilities.commands[{i}]");
        let Value::Object(command) = item else { return Err(error(at, "must be an object")) };
        known_keys(command, &format!("{at}."), &["name", "description", "parameters"])?;
        let name = required_string(command, "name", 32).map_err(|e| error(format!("{at}.name"), e.message))?;
        if !valid_field_name(&name) {
            return Err(error(format!("{at}.name"), "use a letter then letters, digits or '_'"));
        }
        if commands.iter().any(|c| c.name == name) {
            return Err(error(format!("{at}.name"), format!("`{name}` is declared twice")));
        }
        let parameters = command.get("parameters").cloned().unwrap_or_else(|| serde_json::json!({"type": "object"}));
        if let Err(e) = jsonschema::validator_for(&parameters) {
            return Err(error(format!("{at}.parameters"), format!("not a valid JSON Schema: {e}")));
        }
        let description =
            optional_string(command, "description", 200).map_err(|e| error(format!("{at}.description"), e.message))?;
        commands.push(CommandSpec { name, description, parameters });
    }
    let config = object.get("config").cloned();
    if let Some(schema) = &config {
        if let Err(e) = jsonschema::validator_for(schema) {
            return Err(error("capabilities.config", format!("not a valid JSON Schema: {e}")));
        }
    }
    Ok(Capabilities { telemetry, commands, config })
}

/// A device's telemetry message, checked against its declared fields, as the store and rules
/// take it: the device's own timestamp unless its clock is far off (never set, or wrong: it
/// must not scatter the history), else `now`. Used for telemetry published on our broker and
/// forwarded by another broker's webhook alike.
pub fn telemetry_message(
    device_id: &str,
    capabilities: &Capabilities,
    payload: &[u8],
    now: i64,
) -> Result<crate::bus::LanTelemetry, FieldError> {
    let (values, device_ts) = check_telemetry(capabilities, payload)?;
    let raw = serde_json::from_slice(payload).unwrap_or_default();
    let ts = device_ts.filter(|ts| (now - 7 * 86_400_000..=now + 60_000).contains(ts)).unwrap_or(now);
    Ok(crate::bus::LanTelemetry { device_id: device_id.to_string(), ts, values, raw, stored: Default::default() })
}

/// Checks a telemetry message against the declared fields: a JSON object whose keys are declared
/// fields of the right type, plus an optional `ts` (ms since the epoch). Returns the numeric
/// values (booleans as 0/1) for storage and the device's own timestamp, if any.
pub fn check_telemetry(
    capabilities: &Capabilities,
    payload: &[u8],
) -> Result<(Vec<(String, f64)>, Option<i64>), FieldError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| error("(payload)", format!("not JSON: {e}")))?;
    let Value::Object(object) = value else { return Err(error("(payload)", "must be a JSON object")) };
    let mut numbers = Vec::new();
    let mut ts = None;
    for (key, value) in &object {
        if key == "ts" {
            ts = Some(value.as_i64().ok_or_else(|| error("ts", "must be an integer (ms since the epoch)"))?);
            continue;
        }
        let Some(field) = capabilities.telemetry.iter().find(|f| &f.name == key) else {
            return Err(error(key.clone(), "not a declared telemetry field"));
        };
        let ok = match (field.field_type, value) {
            (FieldType::Number, Value::Number(n)) => n.as_f64().map(|v| numbers.push((key.clone(), v))).is_some(),
            (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
                numbers.push((key.clone(), n.as_f64().unwrap_or_default()));
                true
            }
            (FieldType::Boolean, Value::Bool(b)) => {
                numbers.push((key.clone(), f64::from(u8::from(*b))));
                true
            }
            (FieldType::String, Value::String(_)) => true,
            // A field the device cannot measure right now.
            (_, Value::Null) => true,
            _ => false,
        };
        if !ok {
            let expected = serde_json::to_value(field.field_type).unwrap_or_default();
            return Err(error(key.clone(), format!("must be {}", expected.as_str().unwrap_or("?"))));
        }
    }
    Ok((numbers, ts))
}

/// An alert as a device sends it on `devices/{site}/{id}/alert`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAlert {
    pub severity: String,
    pub code: Option<String>,
    pub message: String,
    pub details: Option<Value>,
    pub ts: Option<i64>,
}

pub fn parse_alert(payload: &[u8]) -> Result<DeviceAlert, FieldError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| error("(payload)", format!("not JSON: {e}")))?;
    let Value::Object(object) = value else { return Err(error("(payload)", "must be a JSON object")) };
    known_keys(&object, "", &["severity", "code", "message", "details", "ts"])?;
    let severity = required_string(&object, "severity", 16)?;
    if !matches!(severity.as_str(), "info" | "warning" | "critical") {
        return Err(error("severity", "one of info, warning, critical"));
    }
    let ts = match object.get("ts") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| error("ts", "must be an integer (ms since the epoch)"))?),
    };
    Ok(DeviceAlert {
        severity,
        code: optional_string(&object, "code", 64)?,
        message: required_string(&object, "message", 500)?,
        details: object.get("details").cloned().filter(|d| !d.is_null()),
        ts,
    })
}

fn valid_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn known_keys(object: &Map<String, Value>, prefix: &str, allowed: &[&str]) -> Result<(), FieldError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => {
            Err(error(format!("{prefix}{unknown}"), format!("unknown field; expected one of {}", allowed.join(", "))))
        }
        None => Ok(()),
    }
}

fn required_string(object: &Map<String, Value>, key: &str, max: usize) -> Result<String, FieldError> {
    match object.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => Ok(s.clone()),
        Some(Value::String(_)) => Err(error(key, format!("must be 1–{max} characters"))),
        Some(_) => Err(error(key, "must be a string")),
        None => Err(error(key, "required")),
    }
}

fn optional_string(object: &Map<String, Value>, key: &str, max: usize) -> Result<Option<String>, FieldError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => required_string(object, key, max).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "deviceId": "esp32-a1b2", "name": "Kitchen sensor", "type": "sensor", "model": "ESP32-C3",
            "manufacturer": "Acme", "firmware": "1.2.0", "hardware": "rev B",
            "registrationToken": "0123456789abcdef0123",
            "capabilities": {
                "telemetry": [{"name": "temperature", "unit": "°C", "type": "number"}, {"name": "door", "type": "boolean"}],
                "commands": [{"name": "reboot"}, {"name": "set_interval", "parameters": {"type": "object", "properties": {"seconds": {"type": "integer", "minimum": 1}}, "required": ["seconds"]}}]
            }
        })
    }

    fn parse_value(v: &Value, client: Option<&str>) -> Result<Registration, FieldError> {
        parse(v.to_string().as_bytes(), client)
    }

    #[test]
    fn a_valid_registration_parses() {
        let r = parse_value(&valid(), Some("esp32-a1b2")).unwrap();
        assert_eq!(r.device_id, "esp32-a1b2");
        assert_eq!(r.capabilities.telemetry[1].field_type, FieldType::Boolean);
        assert_eq!(r.capabilities.commands[0].parameters, json!({"type": "object"}));
        assert!(!serde_json::to_string(&r).unwrap().contains("registrationToken"), "the token is never echoed");
    }

    #[test]
    fn every_error_names_its_field() {
        let cases: Vec<(Box<dyn Fn(&mut Value)>, Option<&str>, &str)> = vec![
            (Box::new(|v| v["deviceId"] = json!("Bad Id")), None, "deviceId"),
            (Box::new(|_| {}), Some("other"), "deviceId"),
            (Box::new(|v| v["deviceId"] = json!("ruuvi-x")), None, "deviceId"),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("name");
                }),
                None,
                "name",
            ),
            (Box::new(|v| v["type"] = json!(7)), None, "type"),
            (Box::new(|v| v["registrationToken"] = json!("short")), None, "registrationToken"),
            (Box::new(|v| v["colour"] = json!("red")), None, "colour"),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("capabilities");
                }),
                None,
                "capabilities",
            ),
            (
                Box::new(|v| v["capabilities"]["telemetry"][0]["type"] = json!("float")),
                None,
                "capabilities.telemetry[0].type",
            ),
            (
                Box::new(|v| v["capabilities"]["telemetry"][1]["name"] = json!("temperature")),
                None,
                "capabilities.telemetry[1].name",
            ),
            (
                Box::new(|v| v["capabilities"]["telemetry"][0]["name"] = json!("ts")),
                None,
                "capabilities.telemetry[0].name",
            ),
            (
                Box::new(|v| v["capabilities"]["commands"][1]["parameters"] = json!({"type": "no-such-type"})),
                None,
                "capabilities.commands[1].parameters",
            ),
            (
                Box::new(|v| v["capabilities"]["commands"][0]["name"] = json!("Re boot")),
                None,
                "capabilities.commands[0].name",
            ),
            (Box::new(|v| v["capabilities"]["extra"] = json!([])), None, "capabilities.extra"),
        ];
        for (i, (mutate, client, field)) in cases.iter().enumerate() {
            let mut v = valid();
            mutate(&mut v);
            let e = parse_value(&v, *client).expect_err(&format!("case {i}"));
            assert_eq!(e.field, *field, "case {i}: {e}");
        }
        assert_eq!(parse(b"{nope", None).unwrap_err().field, "(payload)");
        assert_eq!(parse(b"[1]", None).unwrap_err().field, "(payload)");
    }

    #[test]
    fn alerts_table() {
        let ok = parse_alert(
            br#"{"severity":"warning","code":"door_open","message":"Door open for 5 min","details":{"minutes":5}}"#,
        )
        .unwrap();
        assert_eq!((ok.severity.as_str(), ok.code.as_deref()), ("warning", Some("door_open")));
        for (payload, field) in [
            (r#"{"severity":"panic","message":"x"}"#, "severity"),
            (r#"{"severity":"info"}"#, "message"),
            (r#"{"severity":"info","message":"x","colour":1}"#, "colour"),
            (r#"{"severity":"info","message":"x","ts":"now"}"#, "ts"),
            ("[]", "(payload)"),
        ] {
            assert_eq!(parse_alert(payload.as_bytes()).unwrap_err().field, field, "{payload}");
        }
    }

    #[test]
    fn telemetry_is_checked_against_the_declared_fields() {
        let caps = parse_value(&valid(), None).unwrap().capabilities;
        let ok = |p: Value| check_telemetry(&caps, p.to_string().as_bytes());
        assert_eq!(
            ok(json!({"temperature": 21.5, "door": true, "ts": 1700000000000i64})).unwrap(),
            (vec![("door".to_string(), 1.0), ("temperature".to_string(), 21.5)], Some(1_700_000_000_000))
        );
        assert!(ok(json!({"temperature": null})).is_ok(), "null: not measurable right now");
        assert_eq!(ok(json!({"humidity": 40})).unwrap_err().field, "humidity");
        assert_eq!(ok(json!({"temperature": "hot"})).unwrap_err().field, "temperature");
        assert_eq!(ok(json!({"door": 1})).unwrap_err().field, "door");
        assert_eq!(ok(json!({"ts": "yesterday"})).unwrap_err().field, "ts");
        assert_eq!(check_telemetry(&caps, b"21.5").unwrap_err().field, "(payload)");
    }
}
