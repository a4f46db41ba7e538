//! Home Assistant's button presses and select choices, read from
//! `gatehouse/{site}/ha/{device}/{command}/set` and turned into task parameters. Pure.

use serde_json::{json, Map, Value};

use super::discovery::{CommandKind, ExposedCommand, PAYLOAD_PRESS};

/// Why a command message was not turned into a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The payload is not what the button or select sends.
    Malformed(String),
    /// No published device or command has this topic.
    Unknown(String),
}

/// `gatehouse/{site}/ha/{device}/{command}/set` → (device, command).
pub fn parse_topic<'a>(site: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let mut levels = topic.split('/');
    match (levels.next(), levels.next(), levels.next(), levels.next(), levels.next(), levels.next(), levels.next()) {
        (Some("gatehouse"), Some(s), Some("ha"), Some(device), Some(command), Some("set"), None)
            if s == site && !device.is_empty() && !command.is_empty() =>
        {
            Some((device, command))
        }
        _ => None,
    }
}

/// The task parameters for `payload` sent to an exposed command (`None`: the device does not
/// expose that command to HA).
pub fn params(exposed: Option<&ExposedCommand>, payload: &[u8]) -> Result<Value, Rejection> {
    let Some(exposed) = exposed else {
        return Err(Rejection::Unknown("no such command exposed to Home Assistant".into()));
    };
    let Ok(text) = std::str::from_utf8(payload) else {
        return Err(Rejection::Malformed("the payload is not UTF-8 text".into()));
    };
    let text = text.trim();
    match &exposed.kind {
        CommandKind::Button if text == PAYLOAD_PRESS => Ok(Value::Object(Map::new())),
        CommandKind::Button => {
            Err(Rejection::Malformed(format!("a button sends `{PAYLOAD_PRESS}`, not `{}`", shorten(text))))
        }
        CommandKind::Select { parameter, options } => match options.iter().find(|(option, _)| option == text) {
            Some((_, value)) => Ok(json!({ parameter.clone(): value })),
            None => {
                let known = options.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(", ");
                Err(Rejection::Malformed(format!("`{}` is not one of the options ({known})", shorten(text))))
            }
        },
    }
}

fn shorten(text: &str) -> String {
    let short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        let table = [
            ("gatehouse/home/ha/esp-1/reboot/set", Some(("esp-1", "reboot"))),
            ("gatehouse/lab/ha/esp-1/reboot/set", None),
            ("gatehouse/home/ha/esp-1/reboot/task", None),
            ("gatehouse/home/ha/esp-1/set", None),
            ("gatehouse/home/ha//reboot/set", None),
            ("gatehouse/home/ha/esp-1/reboot/set/x", None),
        ];
        for (topic, expected) in table {
            assert_eq!(parse_topic("home", topic), expected, "{topic}");
        }
    }

    #[test]
    fn payloads() {
        let button = ExposedCommand { command: "reboot".into(), kind: CommandKind::Button };
        let select = ExposedCommand {
            command: "set_mode".into(),
            kind: CommandKind::Select {
                parameter: "mode".into(),
                options: vec![("eco".into(), json!("eco")), ("3".into(), json!(3))],
            },
        };
        let malformed = |r: Result<Value, Rejection>| matches!(r, Err(Rejection::Malformed(_)));
        assert_eq!(params(Some(&button), b"PRESS"), Ok(json!({})));
        assert_eq!(params(Some(&button), b" PRESS\n"), Ok(json!({})));
        assert!(malformed(params(Some(&button), b"{\"bad")));
        assert!(malformed(params(Some(&button), &[0xff, 0xfe])));
        assert_eq!(params(Some(&select), b"eco"), Ok(json!({"mode": "eco"})));
        assert_eq!(params(Some(&select), b"3"), Ok(json!({"mode": 3})));
        assert!(malformed(params(Some(&select), b"turbo")));
        assert!(matches!(params(None, b"PRESS"), Err(Rejection::Unknown(_))));
    }
}
