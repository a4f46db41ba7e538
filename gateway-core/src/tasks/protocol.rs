//! What a device sees of tasks: the envelope on `devices/{site}/{id}/commands` and the responses
//! it sends on `devices/{site}/{id}/command_response`. Specified in docs/protocol.md.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const ENVELOPE_VERSION: u32 = 1;

/// A task delivery. The task id is stable across attempts: devices de-duplicate on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub v: u32,
    /// `task` (do it) or `cancel` (stop it if possible; no answer needed).
    #[serde(rename = "type")]
    pub kind: String,
    pub task_id: String,
    pub attempt: u32,
    pub command: String,
    pub params: Value,
    pub created_at: i64,
    pub expires_at: i64,
    pub ack_timeout_ms: i64,
    pub execution_timeout_ms: i64,
}

/// A device's answer. `status`: `delivered` (received), `in_progress` (optionally with `progress`
/// 0–100 and `extendMs` to ask for more time), `succeeded` (with `result`), `failed` (with
/// `message`), `rejected` (will not do it: unknown command, bad parameters, busy…).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Response {
    pub task_id: String,
    pub attempt: Option<u32>,
    pub status: ResponseStatus,
    pub progress: Option<u8>,
    pub message: Option<String>,
    pub result: Option<Value>,
    pub extend_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    Delivered,
    InProgress,
    Succeeded,
    Failed,
    Rejected,
}

pub fn parse_response(payload: &[u8]) -> Result<Response, String> {
    let response: Response = serde_json::from_slice(payload).map_err(|e| format!("not a task response: {e}"))?;
    if response.task_id.is_empty() || response.task_id.len() > 64 {
        return Err("taskId must be 1–64 characters".into());
    }
    if response.progress.is_some_and(|p| p > 100) {
        return Err("progress must be 0–100".into());
    }
    if response.message.as_ref().is_some_and(|m| m.chars().count() > 1000) {
        return Err("message must be at most 1000 characters".into());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_table() {
        let ok = parse_response(br#"{"taskId":"t1","attempt":2,"status":"in_progress","progress":40,"extendMs":5000}"#)
            .unwrap();
        assert_eq!((ok.status, ok.progress, ok.extend_ms), (ResponseStatus::InProgress, Some(40), Some(5000)));
        let done = parse_response(br#"{"taskId":"t1","status":"succeeded","result":{"interval":30}}"#).unwrap();
        assert_eq!(done.result.unwrap()["interval"], 30);
        for bad in [
            r#"{"taskId":"t1","status":"done"}"#,
            r#"{"status":"succeeded"}"#,
            r#"{"taskId":"t1","status":"succeeded","extra":1}"#,
            r#"{"taskId":"t1","status":"in_progress","progress":101}"#,
            r#"{"taskId":"","status":"succeeded"}"#,
            "nope",
        ] {
            assert!(parse_response(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
