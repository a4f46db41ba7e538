//! SQL for tasks: the task rows (current state and timers) and their event log. A row update is
//! always stored with the event that records it, in the same transaction.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::machine::{RetryPolicy, TaskState};
use super::Task;

const COLUMNS: &str = "id, device_id, site, command, params, state, attempt, timeout_retries, failure_retries, \
    retry_policy, created_at, updated_at, expires_at, ack_timeout_ms, execution_timeout_ms, next_attempt_at, \
    deadline_at, progress, message, result, created_by, retry_of";

fn task_from_row(row: &Row) -> rusqlite::Result<Task> {
    let state: String = row.get(5)?;
    let params: String = row.get(4)?;
    let policy: String = row.get(9)?;
    let result: Option<String> = row.get(19)?;
    Ok(Task {
        id: row.get(0)?,
        device_id: row.get(1)?,
        site: row.get(2)?,
        command: row.get(3)?,
        params: serde_json::from_str(&params).unwrap_or_default(),
        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
        attempt: row.get(6)?,
        timeout_retries: row.get(7)?,
        failure_retries: row.get(8)?,
        retry_policy: serde_json::from_str::<RetryPolicy>(&policy).unwrap_or_default(),
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        expires_at: row.get(12)?,
        ack_timeout_ms: row.get(13)?,
        execution_timeout_ms: row.get(14)?,
        next_attempt_at: row.get(15)?,
        deadline_at: row.get(16)?,
        progress: row.get(17)?,
        message: row.get(18)?,
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        created_by: row.get(20)?,
        retry_of: row.get(21)?,
    })
}

/// One change to the task tables. The dispatcher stores all the changes of one turn of its loop
/// in one transaction ([`write_all`]) before anything of that turn is published.
#[derive(Debug, Clone)]
pub enum Write {
    Insert(Task),
    /// The task's new row, and the event recording the transition (with an optional detail).
    Transition(Task, Option<serde_json::Value>),
    /// Something that did not change the state (a resend, an ignored answer). With `owner`, only
    /// recorded when the task exists and belongs to that device.
    Note {
        task_id: String,
        ts: i64,
        what: &'static str,
        attempt: u32,
        detail: Option<serde_json::Value>,
        owner: Option<String>,
    },
    /// The system clock was stepped by `step_ms`: the task's pending times moved with it
    /// (`task` holds the moved values), recorded as a `clock_step` event.
    Retime {
        task: Task,
        ts: i64,
        step_ms: i64,
    },
}

/// Stores `writes` in one transaction: all or nothing.
pub fn write_all(conn: &Connection, writes: &[Write]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    for write in writes {
        match write {
            Write::Insert(task) => insert(&tx, task)?,
            Write::Transition(task, detail) => transition(&tx, task, detail.as_ref())?,
            Write::Note { task_id, ts, what, attempt, detail, owner } => {
                let owned = match owner {
                    Some(owner) => get(&tx, task_id)?.is_some_and(|t| &t.device_id == owner),
                    None => true,
                };
                if owned {
                    event(&tx, task_id, *ts, what, *attempt, detail.as_ref())?;
                }
            }
            Write::Retime { task, ts, step_ms } => {
                tx.prepare_cached(
                    "UPDATE tasks SET expires_at = ?2, next_attempt_at = ?3, deadline_at = ?4 WHERE id = ?1",
                )?
                .execute(params![task.id, task.expires_at, task.next_attempt_at, task.deadline_at])?;
                let detail = serde_json::json!({ "stepMs": step_ms });
                event(&tx, &task.id, *ts, "clock_step", task.attempt, Some(&detail))?;
            }
        }
    }
    tx.commit()
}

fn insert(conn: &Connection, task: &Task) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
         ?17, ?18, ?19, ?20, ?21, ?22)"
    ))?;
    stmt.execute(params![
        task.id,
        task.device_id,
        task.site,
        task.command,
        task.params.to_string(),
        task.state.as_str(),
        task.attempt,
        task.timeout_retries,
        task.failure_retries,
        serde_json::to_string(&task.retry_policy).unwrap_or_default(),
        task.created_at,
        task.updated_at,
        task.expires_at,
        task.ack_timeout_ms,
        task.execution_timeout_ms,
        task.next_attempt_at,
        task.deadline_at,
        task.progress,
        task.message,
        task.result.as_ref().map(|r| r.to_string()),
        task.created_by,
        task.retry_of
    ])?;
    event(conn, &task.id, task.created_at, task.state.as_str(), task.attempt, None)
}

fn transition(conn: &Connection, task: &Task, detail: Option<&serde_json::Value>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE tasks SET state = ?2, attempt = ?3, timeout_retries = ?4, failure_retries = ?5, updated_at = ?6, \
         next_attempt_at = ?7, deadline_at = ?8, progress = ?9, message = ?10, result = ?11 WHERE id = ?1",
    )?;
    stmt.execute(params![
        task.id,
        task.state.as_str(),
        task.attempt,
        task.timeout_retries,
        task.failure_retries,
        task.updated_at,
        task.next_attempt_at,
        task.deadline_at,
        task.progress,
        task.message,
        task.result.as_ref().map(|r| r.to_string())
    ])?;
    event(conn, &task.id, task.updated_at, task.state.as_str(), task.attempt, detail)
}

fn event(
    conn: &Connection,
    task_id: &str,
    ts: i64,
    state: &str,
    attempt: u32,
    detail: Option<&serde_json::Value>,
) -> rusqlite::Result<()> {
    let mut stmt = conn
        .prepare_cached("INSERT INTO task_events (task_id, ts, state, attempt, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    stmt.execute(params![task_id, ts, state, attempt, detail.map(|d| d.to_string())])?;
    Ok(())
}

/// Every task that is not finished, oldest first.
pub fn open_tasks(conn: &Connection) -> rusqlite::Result<Vec<Task>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE state IN ('queued', 'sent', 'delivered', 'in_progress') ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], task_from_row)?;
    rows.collect()
}

pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Task>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))?
        .query_row([id], task_from_row)
        .optional()
}

pub fn list(conn: &Connection, device_id: &str, state: Option<&str>, limit: i64) -> rusqlite::Result<Vec<Task>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE device_id = ?1 AND (?2 IS NULL OR state = ?2) ORDER BY created_at DESC, id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![device_id, state, limit], task_from_row)?;
    rows.collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskEvent {
    pub ts: i64,
    /// A state, or a note: `resent`, `ignored_response`, `cancel_sent`.
    pub state: String,
    pub attempt: u32,
    pub detail: Option<serde_json::Value>,
}

pub fn events(conn: &Connection, task_id: &str) -> rusqlite::Result<Vec<TaskEvent>> {
    let mut stmt =
        conn.prepare_cached("SELECT ts, state, attempt, detail FROM task_events WHERE task_id = ?1 ORDER BY id")?;
    let rows = stmt.query_map([task_id], |r| {
        let detail: Option<String> = r.get(3)?;
        Ok(TaskEvent {
            ts: r.get(0)?,
            state: r.get(1)?,
            attempt: r.get(2)?,
            detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
        })
    })?;
    rows.collect()
}
