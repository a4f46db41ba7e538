//! The JSON messages a claimed LAN device publishes, and the webhook posts another broker
//! forwards them in.
//!
//! Every input goes through each parser (the message kinds share no framing, so one corpus serves
//! them all):
//! * telemetry (`devices/{site}/{id}/telemetry`): `registration::telemetry_message` against a
//!   device's declared fields, as the broker checks it;
//! * alerts (`…/alert`): `registration::parse_alert`;
//! * command responses (`…/command_response`): `tasks::protocol::parse_response`, then the task
//!   state machine from every state;
//! * configuration reports (`…/config_reported`): `device_config::parse_report`;
//! * `POST /webhook` bodies: `receivers::webhook::parse`, then each message's telemetry check.
#![no_main]

use std::sync::OnceLock;

use gatehouse_fuzz::NOW_MS;
use gateway_core::device_config;
use gateway_core::lifecycle::registration::{self, Capabilities};
use gateway_core::receivers::webhook;
use gateway_core::tasks::machine::{self, Counters, Input};
use gateway_core::tasks::protocol::{self, ResponseStatus};
use gateway_core::tasks::{RetryPolicy, TaskState};
use libfuzzer_sys::fuzz_target;

/// The capabilities of docs/protocol.md's example device, plus one field of each other type.
fn capabilities() -> &'static Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    CAPS.get_or_init(|| {
        let caps = serde_json::json!({
            "telemetry": [{"name": "temperature", "unit": "°C", "type": "number"},
                          {"name": "door", "type": "boolean"},
                          {"name": "count", "type": "integer"},
                          {"name": "mode", "type": "string"}],
            "commands": [{"name": "reboot"}]
        });
        registration::parse_capabilities(caps.as_object().unwrap()).unwrap()
    })
}

const STATES: [TaskState; 10] = [
    TaskState::Queued,
    TaskState::Sent,
    TaskState::Delivered,
    TaskState::InProgress,
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::TimedOut,
    TaskState::Expired,
    TaskState::Canceled,
];

fuzz_target!(|payload: &[u8]| {
    let caps = capabilities();
    telemetry(caps, "esp32-a1b2", payload);

    if let Ok(alert) = registration::parse_alert(payload) {
        assert!(matches!(alert.severity.as_str(), "info" | "warning" | "critical"));
        assert!(!alert.message.trim().is_empty() && alert.message.chars().count() <= 500);
    }

    if let Ok(response) = protocol::parse_response(payload) {
        assert!((1..=64).contains(&response.task_id.len()));
        assert!(response.progress.is_none_or(|p| p <= 100));
        // As the dispatcher maps it.
        let input = match response.status {
            ResponseStatus::Delivered => Input::Delivered,
            ResponseStatus::InProgress => Input::Progress,
            ResponseStatus::Succeeded => Input::Succeeded,
            ResponseStatus::Failed => Input::Failed,
            ResponseStatus::Rejected => Input::Rejected,
        };
        let attempt = response.attempt.unwrap_or(1).max(1);
        let counters = Counters { attempt, timeout_retries: 10, failure_retries: 10 };
        for state in STATES {
            if let Ok(step) = machine::step(state, input, counters, &RetryPolicy { timed_out: 10, failed: 10 }) {
                assert!(!state.is_terminal(), "{state:?} is final");
                assert!(step.counters.attempt >= attempt);
            }
        }
    }

    if let Ok(report) = device_config::parse_report(payload, NOW_MS) {
        assert!(report.status == "applied" || report.status == "rejected");
        assert!(report.message.is_none_or(|m| m.chars().count() <= 500));
    }

    if let Ok(messages) = webhook::parse(payload, "home") {
        for message in messages.into_iter().flatten() {
            telemetry(caps, &message.device_id, &message.payload);
        }
    }
});

fn telemetry(caps: &Capabilities, device_id: &str, payload: &[u8]) {
    let checked = registration::check_telemetry(caps, payload);
    let message = registration::telemetry_message(device_id, caps, payload, NOW_MS);
    assert_eq!(checked.is_ok(), message.is_ok());
    if let Ok(message) = message {
        // The device's clock counts unless it is more than a week behind or a minute ahead.
        assert!((NOW_MS - 7 * 86_400_000..=NOW_MS + 60_000).contains(&message.ts));
        for (name, value) in &message.values {
            assert!(caps.telemetry.iter().any(|f| &f.name == name), "undeclared field {name} stored");
            let _ = value;
        }
        let _ = serde_json::to_string(&message.raw).expect("telemetry JSON serialises");
    }
}
