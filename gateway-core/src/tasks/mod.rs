//! Tasks: commands sent to LAN devices that are never lost and never run twice. A task is
//! validated against the JSON Schema the device declared for the command before it is queued,
//! stored in SQLite, delivered in order (one at a time per device) while the device is online,
//! acknowledged, executed and finished, with ack and execution timeouts, an absolute expiry and
//! retries by failure type. docs/protocol.md has the device's side.

pub mod db;
mod dispatcher;
pub mod machine;
pub mod protocol;

pub use dispatcher::{run, wants};
pub use machine::{RetryPolicy, TaskState};

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::lifecycle::{db as lifecycle_db, Capabilities};
use crate::reading::now_ms;
use crate::store::{Store, StoreError};

/// Larger parameters are refused (devices have little memory; files go another way).
pub const MAX_PARAMS_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub device_id: String,
    pub site: String,
    pub command: String,
    pub params: Value,
    pub state: TaskState,
    pub attempt: u32,
    pub timeout_retries: u32,
    pub failure_retries: u32,
    pub retry_policy: RetryPolicy,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub ack_timeout_ms: i64,
    pub execution_timeout_ms: i64,
    /// While queued for another attempt: not before this time.
    pub next_attempt_at: Option<i64>,
    /// The running timer (ack or execution), if any.
    pub deadline_at: Option<i64>,
    pub progress: Option<u8>,
    /// The device's message (why it failed or was rejected, or a progress note).
    pub message: Option<String>,
    pub result: Option<Value>,
    pub created_by: Option<String>,
    /// The task this one retries (a new task: terminal states are final).
    pub retry_of: Option<String>,
}

/// What a person asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRequest {
    pub command: String,
    #[serde(default = "empty_object")]
    pub params: Value,
    /// How long the task may wait for the device overall (default 24 h).
    #[serde(default, with = "humantime_serde")]
    pub expires_in: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub ack_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub execution_timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[derive(Debug, Clone)]
pub struct TaskDefaults {
    pub ack_timeout: Duration,
    pub execution_timeout: Duration,
    pub expires_in: Duration,
    pub retries: RetryPolicy,
}

impl Default for TaskDefaults {
    fn default() -> Self {
        TaskDefaults {
            ack_timeout: Duration::from_secs(30),
            execution_timeout: Duration::from_secs(60),
            expires_in: Duration::from_secs(24 * 3600),
            retries: RetryPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no device with id `{0}`")]
    UnknownDevice(String),
    #[error("device `{0}` is {1}; only active LAN devices take tasks")]
    NotActive(String, String),
    #[error("device `{device}` declares no command `{command}`; it declares: {declared}")]
    UnknownCommand { device: String, command: String, declared: String },
    #[error("parameters do not match the schema of `{command}`: {reason}")]
    InvalidParams { command: String, reason: String },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no task with id `{0}`")]
    UnknownTask(String),
    #[error("task `{0}` is already {1}")]
    Finished(String, String),
    #[error("task `{0}` is {1}: only failed, timed out, expired or canceled tasks can be retried")]
    NotRetryable(String, String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the task service has stopped")]
    Stopped,
    #[error("the change could not be stored ({0}); try again")]
    NotStored(String),
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStats {
    pub created: AtomicU64,
    pub sent: AtomicU64,
    pub resent: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub rejected: AtomicU64,
    pub timed_out: AtomicU64,
    pub expired: AtomicU64,
    pub canceled: AtomicU64,
    pub retries: AtomicU64,
    /// Responses for finished tasks, older attempts or unknown tasks: recorded and ignored.
    pub ignored_responses: AtomicU64,
    pub malformed_responses: AtomicU64,
}

/// A request to the dispatcher (from [`Tasks`]).
pub enum Command {
    Create(Box<Task>, oneshot::Sender<Result<Task, TaskError>>),
    Cancel(String, String, oneshot::Sender<Result<Task, TaskError>>),
}

/// The handle the API uses. Cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    store: Store,
    commands: mpsc::Sender<Command>,
    defaults: TaskDefaults,
    pub stats: Arc<TaskStats>,
}

impl Tasks {
    /// Validates and queues a task for `device_id`.
    pub async fn create(&self, device_id: &str, request: TaskRequest, created_by: &str) -> Result<Task, TaskError> {
        self.create_task(device_id, request, created_by, None).await
    }

    async fn create_task(
        &self,
        device_id: &str,
        request: TaskRequest,
        created_by: &str,
        retry_of: Option<String>,
    ) -> Result<Task, TaskError> {
        let id = device_id.to_string();
        let device = self.store.run(move |conn| Ok(lifecycle_db::device(conn, &id)?)).await?;
        let device = device.ok_or_else(|| TaskError::UnknownDevice(device_id.into()))?;
        if device.kind != "lan" || device.state != "active" {
            return Err(TaskError::NotActive(device_id.into(), format!("{} ({})", device.state, device.kind)));
        }
        let capabilities: Capabilities =
            device.capabilities.and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default();
        let Some(spec) = capabilities.commands.iter().find(|c| c.name == request.command) else {
            let declared = capabilities.commands.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(TaskError::UnknownCommand {
                device: device_id.into(),
                command: request.command,
                declared: if declared.is_empty() { "none".into() } else { declared },
            });
        };
        if request.params.to_string().len() > MAX_PARAMS_BYTES {
            return Err(TaskError::InvalidRequest(format!("params are larger than {MAX_PARAMS_BYTES} bytes")));
        }
        // Refused here, never sent: the device declared what it accepts.
        let validator = jsonschema::validator_for(&spec.parameters).map_err(|e| TaskError::InvalidParams {
            command: spec.name.clone(),
            reason: format!("the device's schema is invalid: {e}"),
        })?;
        if let Some(error) = validator.iter_errors(&request.params).next() {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "(parameters)".to_string() } else { at };
            return Err(TaskError::InvalidParams { command: spec.name.clone(), reason: format!("{at}: {error}") });
        }
        let duration = |d: Option<Duration>, default: Duration, name: &str| -> Result<i64, TaskError> {
            let d = d.unwrap_or(default);
            if d < Duration::from_millis(100) || d > Duration::from_secs(30 * 86_400) {
                return Err(TaskError::InvalidRequest(format!("{name} must be between 100ms and 30d")));
            }
            Ok(d.as_millis() as i64)
        };
        let now = now_ms();
        let retries = request.retries.unwrap_or(self.defaults.retries);
        if retries.timed_out > 10 || retries.failed > 10 {
            return Err(TaskError::InvalidRequest("at most 10 retries per failure type".into()));
        }
        let task = Task {
            id: uuid::Uuid::now_v7().to_string(),
            device_id: device_id.into(),
            site: device.site.unwrap_or_default(),
            command: request.command,
            params: request.params,
            state: TaskState::Queued,
            attempt: 1,
            timeout_retries: 0,
            failure_retries: 0,
            retry_policy: retries,
            created_at: now,
            updated_at: now,
            expires_at: now + duration(request.expires_in, self.defaults.expires_in, "expiresIn")?,
            ack_timeout_ms: duration(request.ack_timeout, self.defaults.ack_timeout, "ackTimeout")?,
            execution_timeout_ms: duration(
                request.execution_timeout,
                self.defaults.execution_timeout,
                "executionTimeout",
            )?,
            next_attempt_at: None,
            deadline_at: None,
            progress: None,
            message: None,
            result: None,
            created_by: Some(created_by.into()),
            retry_of,
        };
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Create(Box::new(task), reply)).await.map_err(|_| TaskError::Stopped)?;
        answer.await.map_err(|_| TaskError::Stopped)?
    }

    pub async fn cancel(&self, task_id: &str, actor: &str) -> Result<Task, TaskError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Cancel(task_id.into(), actor.into(), reply))
            .await
            .map_err(|_| TaskError::Stopped)?;
        answer.await.map_err(|_| TaskError::Stopped)?
    }

    /// A new task with the same command and parameters as a finished, unsuccessful one.
    pub async fn retry(&self, task_id: &str, actor: &str) -> Result<Task, TaskError> {
        let id = task_id.to_string();
        let old = self
            .store
            .run(move |conn| Ok(db::get(conn, &id)?))
            .await?
            .ok_or_else(|| TaskError::UnknownTask(task_id.into()))?;
        if !matches!(old.state, TaskState::Failed | TaskState::TimedOut | TaskState::Expired | TaskState::Canceled) {
            return Err(TaskError::NotRetryable(task_id.into(), old.state.as_str().into()));
        }
        let request = TaskRequest {
            command: old.command,
            params: old.params,
            expires_in: None,
            ack_timeout: Some(Duration::from_millis(old.ack_timeout_ms as u64)),
            execution_timeout: Some(Duration::from_millis(old.execution_timeout_ms as u64)),
            retries: Some(old.retry_policy),
        };
        self.create_task(&old.device_id, request, actor, Some(old.id)).await
    }

    pub async fn get(&self, task_id: &str) -> Result<Option<(Task, Vec<db::TaskEvent>)>, TaskError> {
        let id = task_id.to_string();
        Ok(self
            .store
            .run(move |conn| {
                let Some(task) = db::get(conn, &id)? else { return Ok(None) };
                Ok(Some((task, db::events(conn, &id)?)))
            })
            .await?)
    }

    pub async fn list(&self, device_id: &str, state: Option<String>, limit: i64) -> Result<Vec<Task>, TaskError> {
        let id = device_id.to_string();
        Ok(self.store.run(move |conn| Ok(db::list(conn, &id, state.as_deref(), limit)?)).await?)
    }
}

/// Creates the handle and the channel the dispatcher reads.
pub fn channel(store: Store, defaults: TaskDefaults) -> (Tasks, mpsc::Receiver<Command>) {
    let (commands, receiver) = mpsc::channel(256);
    (Tasks { store, commands, defaults, stats: Arc::default() }, receiver)
}
