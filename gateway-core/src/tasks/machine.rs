//! The task state machine, as a pure function of the current task and an input. Every
//! transition the dispatcher makes goes through [`step`], so the rules live in one table:
//!
//! queued → sent → delivered → in_progress → succeeded | failed | rejected, plus timed_out,
//! expired and canceled. Terminal states are final. A timeout (ack or execution) or a failure
//! puts the task back in `queued` with the next attempt while its retry budget lasts (with
//! exponential backoff); `rejected` is never retried.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Sent,
    Delivered,
    InProgress,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
    Expired,
    Canceled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::Rejected
                | TaskState::TimedOut
                | TaskState::Expired
                | TaskState::Canceled
        )
    }

    /// Sent to the device and not finished: the device holds it.
    pub fn in_flight(self) -> bool {
        matches!(self, TaskState::Sent | TaskState::Delivered | TaskState::InProgress)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Sent => "sent",
            TaskState::Delivered => "delivered",
            TaskState::InProgress => "in_progress",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::TimedOut => "timed_out",
            TaskState::Expired => "expired",
            TaskState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The dispatcher published the envelope.
    Sent,
    /// The device acknowledged receipt.
    Delivered,
    /// The device reports progress (and may extend its execution timer).
    Progress,
    Succeeded,
    Failed,
    Rejected,
    /// No acknowledgement within the ack timeout.
    AckTimeout,
    /// No result within the execution timeout.
    ExecutionTimeout,
    /// The absolute expiry passed.
    Expired,
    Canceled,
}

/// The retry budget and counters the machine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after a timeout (ack or execution).
    pub timed_out: u32,
    /// Retries after the device reported `failed`.
    pub failed: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { timed_out: 3, failed: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub attempt: u32,
    pub timeout_retries: u32,
    pub failure_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub state: TaskState,
    pub counters: Counters,
    /// Set when the task goes back to `queued` for another attempt: wait this long first.
    pub retry_after_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {state:?} task cannot take {input:?}")]
pub struct NotAllowed {
    pub state: TaskState,
    pub input: Input,
}

/// Backoff before attempt `n` (n ≥ 2): 1 s, 2 s, 4 s … capped at 60 s.
pub fn backoff_ms(next_attempt: u32) -> i64 {
    let exponent = next_attempt.saturating_sub(2).min(6);
    (1_000i64 << exponent).min(60_000)
}

pub fn step(state: TaskState, input: Input, counters: Counters, policy: &RetryPolicy) -> Result<Step, NotAllowed> {
    use Input as I;
    use TaskState as S;
    let stay = |state| Ok(Step { state, counters, retry_after_ms: None });
    let retry_or = |terminal: TaskState, used: u32, budget: u32, bump: fn(&mut Counters)| {
        if used < budget {
            let mut next = counters;
            bump(&mut next);
            next.attempt += 1;
            Ok(Step { state: S::Queued, counters: next, retry_after_ms: Some(backoff_ms(next.attempt)) })
        } else {
            Ok(Step { state: terminal, counters, retry_after_ms: None })
        }
    };
    match (state, input) {
        (s, _) if s.is_terminal() => Err(NotAllowed { state, input }),
        (S::Queued, I::Sent) => stay(S::Sent),
        (S::Sent, I::Delivered) => stay(S::Delivered),
        // A device may skip the explicit ack and go straight to progress or a result.
        (S::Sent | S::Delivered | S::InProgress, I::Progress) => stay(S::InProgress),
        (S::Sent | S::Delivered | S::InProgress, I::Succeeded) => stay(S::Succeeded),
        (S::Sent | S::Delivered | S::InProgress, I::Rejected) => stay(S::Rejected),
        (S::Sent | S::Delivered | S::InProgress, I::Failed) => {
            retry_or(S::Failed, counters.failure_retries, policy.failed, |c| c.failure_retries += 1)
        }
        (S::Sent, I::AckTimeout) => {
            retry_or(S::TimedOut, counters.timeout_retries, policy.timed_out, |c| c.timeout_retries += 1)
        }
        (S::Delivered | S::InProgress, I::ExecutionTimeout) => {
            retry_or(S::TimedOut, counters.timeout_retries, policy.timed_out, |c| c.timeout_retries += 1)
        }
        (_, I::Expired) => stay(S::Expired),
        (_, I::Canceled) => stay(S::Canceled),
        _ => Err(NotAllowed { state, input }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Input as I;
    use TaskState as S;

    const FIRST: Counters = Counters { attempt: 1, timeout_retries: 0, failure_retries: 0 };

    #[test]
    fn transition_table() {
        let policy = RetryPolicy { timed_out: 1, failed: 0 };
        let cases: &[(S, I, Option<S>)] = &[
            (S::Queued, I::Sent, Some(S::Sent)),
            (S::Sent, I::Delivered, Some(S::Delivered)),
            (S::Delivered, I::Progress, Some(S::InProgress)),
            (S::InProgress, I::Progress, Some(S::InProgress)),
            (S::InProgress, I::Succeeded, Some(S::Succeeded)),
            (S::Sent, I::Succeeded, Some(S::Succeeded)),
            (S::Delivered, I::Rejected, Some(S::Rejected)),
            (S::Delivered, I::Failed, Some(S::Failed)), // no failure retries in this policy
            (S::Sent, I::AckTimeout, Some(S::Queued)),  // first timeout: retry
            (S::InProgress, I::ExecutionTimeout, Some(S::Queued)),
            (S::Queued, I::Expired, Some(S::Expired)),
            (S::InProgress, I::Canceled, Some(S::Canceled)),
            (S::Queued, I::Delivered, None),
            (S::Delivered, I::AckTimeout, None),
            (S::Sent, I::ExecutionTimeout, None),
            (S::Queued, I::Succeeded, None),
            (S::Succeeded, I::Failed, None), // terminal states are final
            (S::Canceled, I::Sent, None),
            (S::TimedOut, I::Expired, None),
        ];
        for (state, input, expected) in cases {
            let got = step(*state, *input, FIRST, &policy).ok().map(|s| s.state);
            assert_eq!(got, *expected, "{state:?} + {input:?}");
        }
    }

    #[test]
    fn retries_follow_the_budget_with_backoff_and_never_after_reject() {
        let policy = RetryPolicy { timed_out: 3, failed: 1 };
        let mut counters = FIRST;
        for expected_attempt in 2..=4 {
            let s = step(S::Sent, I::AckTimeout, counters, &policy).unwrap();
            assert_eq!(s.state, S::Queued);
            assert_eq!(s.counters.attempt, expected_attempt);
            assert_eq!(s.retry_after_ms, Some(backoff_ms(expected_attempt)));
            counters = s.counters;
        }
        assert_eq!(step(S::Sent, I::AckTimeout, counters, &policy).unwrap().state, S::TimedOut, "budget spent");
        let failed_once = step(S::InProgress, I::Failed, FIRST, &policy).unwrap();
        assert_eq!((failed_once.state, failed_once.counters.attempt), (S::Queued, 2));
        assert_eq!(step(S::InProgress, I::Failed, failed_once.counters, &policy).unwrap().state, S::Failed);
        assert_eq!(
            step(S::Delivered, I::Rejected, FIRST, &RetryPolicy { timed_out: 9, failed: 9 }).unwrap().state,
            S::Rejected
        );
        assert_eq!((backoff_ms(2), backoff_ms(3), backoff_ms(4), backoff_ms(20)), (1_000, 2_000, 4_000, 60_000));
    }

    #[test]
    fn states_round_trip_as_text() {
        for s in [S::Queued, S::InProgress, S::TimedOut, S::Canceled] {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("done"), None);
    }
}
