//! Task requests from a fleet operator, as they arrive on `{prefix}/tasks/create`, and the
//! answers published back: pure codec, no I/O (docs/protocol.md, "Upstream bridge").

use serde_json::{json, Map, Value};

use crate::tasks::{Task, TaskRequest};

/// Larger requests are refused before parsing.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
const MAX_REF_CHARS: usize = 128;

/// `{"device": "esp-1", "command": "reboot", "params": {…}, "ref": "op-42", "expiresIn": "10m"}`:
/// the body of `POST /api/devices/{id}/tasks` plus the device and the operator's own reference.
#[derive(Debug, Clone)]
pub struct Request {
    pub device: String,
    /// The operator's id for the request: answers carry it, and a request repeated with the
    /// same `ref` (a QoS 1 redelivery, a retrying script) does not create a second task.
    pub reference: Option<String>,
    pub task: TaskRequest,
}

/// Why a request did not become a task; `device`/`command`/`ref` are echoed when readable.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reference: Option<String>,
    pub device: Option<String>,
    pub command: Option<String>,
    pub error: String,
}

pub fn parse_request(payload: &[u8]) -> Result<Request, Refusal> {
    let refuse = |error: String| Refusal { reference: None, device: None, command: None, error };
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(refuse(format!("request of {} bytes is over the {MAX_REQUEST_BYTES}-byte limit", payload.len())));
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| refuse(format!("not JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(refuse("must be a JSON object".into()));
    };
    let text = |body: &mut Map<String, Value>, key: &str| match body.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    };
    let reference = text(&mut body, "ref").map_err(refuse)?;
    let device = text(&mut body, "device");
    let command = body.get("command").and_then(Value::as_str).map(String::from);
    let refusal = |error: String| Refusal {
        reference: reference.clone(),
        device: device.clone().ok().flatten(),
        command: command.clone(),
        error,
    };
    if let Some(reference) = &reference {
        if reference.is_empty() || reference.chars().count() > MAX_REF_CHARS {
            return Err(refusal(format!("`ref` must have 1 to {MAX_REF_CHARS} characters")));
        }
    }
    let device = match device.clone() {
        Ok(Some(device)) if !device.is_empty() => device,
        Ok(_) => return Err(refusal("`device` is required".into())),
        Err(error) => return Err(refusal(error)),
    };
    let task: TaskRequest = serde_json::from_value(Value::Object(body)).map_err(|e| refusal(e.to_string()))?;
    Ok(Request { device, reference, task })
}

/// Published on `{prefix}/tasks/{taskId}/state` at every change of a task created from upstream.
pub fn state_payload(task: &Task, reference: Option<&str>) -> Value {
    json!({
        "taskId": task.id,
        "ref": reference,
        "device": task.device_id,
        "command": task.command,
        "state": task.state,
        "attempt": task.attempt,
        "progress": task.progress,
        "message": task.message,
        "result": task.result,
        "createdAt": task.created_at,
        "updatedAt": task.updated_at,
    })
}

/// Published on `{prefix}/tasks/rejected`.
pub fn rejection_payload(refusal: &Refusal, ts: i64) -> Value {
    json!({
        "ref": refusal.reference,
        "device": refusal.device,
        "command": refusal.command,
        "error": refusal.error,
        "ts": ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let ok = parse_request(
            br#"{"device":"esp-1","command":"blink","params":{"times":3},"ref":"op-1","expiresIn":"10m"}"#,
        )
        .unwrap();
        assert_eq!((ok.device.as_str(), ok.reference.as_deref()), ("esp-1", Some("op-1")));
        assert_eq!(ok.task.command, "blink");
        assert_eq!(ok.task.params, json!({"times": 3}));
        assert_eq!(ok.task.expires_in, Some(std::time::Duration::from_secs(600)));
        let minimal = parse_request(br#"{"device":"esp-1","command":"reboot"}"#).unwrap();
        assert_eq!((minimal.reference, minimal.task.params), (None, json!({})));

        let cases: &[(&[u8], &str, Option<&str>, Option<&str>)] = &[
            (b"not json", "not JSON", None, None),
            (b"[1]", "JSON object", None, None),
            (br#"{"command":"reboot","ref":"r"}"#, "`device` is required", Some("r"), None),
            (br#"{"device":"","command":"reboot"}"#, "`device` is required", None, Some("")),
            (br#"{"device":7,"command":"reboot"}"#, "`device` must be a string", None, None),
            (br#"{"device":"esp-1","ref":"r2"}"#, "missing field `command`", Some("r2"), Some("esp-1")),
            (br#"{"device":"esp-1","command":"x","colour":"red"}"#, "unknown field `colour`", None, Some("esp-1")),
            (br#"{"device":"esp-1","command":"x","ref":""}"#, "`ref` must have", Some(""), Some("esp-1")),
            (br#"{"device":"esp-1","command":"x","ref":5}"#, "`ref` must be a string", None, None),
            (br#"{"device":"esp-1","command":"x","expiresIn":"soon"}"#, "", None, Some("esp-1")),
        ];
        for (payload, error, reference, device) in cases {
            let refusal = parse_request(payload).unwrap_err();
            assert!(refusal.error.contains(error), "{}: {}", String::from_utf8_lossy(payload), refusal.error);
            assert_eq!(refusal.reference.as_deref(), *reference, "{}", String::from_utf8_lossy(payload));
            assert_eq!(refusal.device.as_deref(), *device, "{}", String::from_utf8_lossy(payload));
        }
        let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(parse_request(&huge).unwrap_err().error.contains("limit"));
    }

    #[test]
    fn rejection_echoes_what_was_readable() {
        let refusal = parse_request(br#"{"device":"esp-1","command":"x","ref":"r","colour":1}"#).unwrap_err();
        let payload = rejection_payload(&refusal, 5);
        assert_eq!(payload["ref"], "r");
        assert_eq!(payload["device"], "esp-1");
        assert_eq!(payload["command"], "x");
        assert_eq!(payload["ts"], 5);
    }
}
