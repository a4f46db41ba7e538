//! `POST /webhook` on the ingest listener: device telemetry that another broker received and
//! forwards with its HTTP webhook (EMQX's rule-engine HTTP action with the default `${*}` body,
//! or anything that sends `{"topic": …, "payload": …}`). Each message goes through the same
//! check as telemetry published on our own broker (the device's declared fields) and then the
//! same path to the store, rules and live view. The parsing is pure (`parse`).

use serde_json::Value;

/// One message of a webhook post, or why it was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    pub device_id: String,
    /// The device's JSON telemetry, as it published it.
    pub payload: Vec<u8>,
}

/// Splits a post into messages: one object or an array of them. Each needs `topic`
/// `devices/{site}/{id}/telemetry` of `site` and a `payload` (a JSON string, as EMQX sends
/// it, or a JSON object). `Err` for a body that is not JSON at all.
pub fn parse(body: &[u8], site: &str) -> Result<Vec<Result<Forwarded, String>>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    Ok(items.iter().map(|item| message(item, site)).collect())
}

fn message(item: &Value, site: &str) -> Result<Forwarded, String> {
    let topic = item.get("topic").and_then(Value::as_str).ok_or("no `topic`")?;
    let parts: Vec<&str> = topic.split('/').collect();
    let device_id = match parts.as_slice() {
        ["devices", topic_site, id, "telemetry"] if *topic_site == site && !id.is_empty() => id.to_string(),
        ["devices", other, _, "telemetry"] => {
            return Err(format!("topic `{topic}` is for site `{other}`, not `{site}`"))
        }
        _ => return Err(format!("topic `{topic}` is not devices/{site}/<device>/telemetry")),
    };
    let payload = match item.get("payload") {
        Some(Value::String(text)) => text.as_bytes().to_vec(),
        Some(object @ Value::Object(_)) => serde_json::to_vec(object).unwrap_or_default(),
        _ => return Err("no `payload` (a JSON object, or a string holding one)".into()),
    };
    Ok(Forwarded { device_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_emqx_events_plain_messages_and_arrays() {
        let emqx = br#"{"id":"1","clientid":"esp-1","username":"esp-1","topic":"devices/home/esp-1/telemetry",
            "payload":"{\"temperature\":21.5}","qos":1,"timestamp":1764000000000,"node":"emqx@127.0.0.1"}"#;
        let parsed = parse(emqx, "home").unwrap();
        assert_eq!(
            parsed,
            vec![Ok(Forwarded { device_id: "esp-1".into(), payload: br#"{"temperature":21.5}"#.to_vec() })]
        );

        let batch = br#"[{"topic":"devices/home/a/telemetry","payload":{"t":1}},
                         {"topic":"devices/lab/b/telemetry","payload":"{}"},
                         {"topic":"devices/home/c/status","payload":"{}"},
                         {"topic":"devices/home/d/telemetry"},
                         {"payload":"{}"}]"#;
        let parsed = parse(batch, "home").unwrap();
        assert_eq!(parsed[0], Ok(Forwarded { device_id: "a".into(), payload: br#"{"t":1}"#.to_vec() }));
        let errors: Vec<String> = parsed[1..].iter().map(|r| r.clone().unwrap_err()).collect();
        assert!(errors[0].contains("site `lab`"), "{errors:?}");
        assert!(errors[1].contains("not devices/home/<device>/telemetry"));
        assert!(errors[2].contains("no `payload`"));
        assert!(errors[3].contains("no `topic`"));
        assert!(parse(b"not json", "home").is_err());
    }
}
