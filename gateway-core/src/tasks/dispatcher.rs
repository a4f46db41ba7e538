//! The task dispatcher: one loop that owns every unfinished task. It delivers each device's
//! queue in order while the device is online, applies the device's responses, fires the ack,
//! execution and expiry timers, schedules retries, and re-sends in-flight tasks when a device
//! reconnects or the gateway restarts. Every transition is stored before anything is published,
//! so a crash at any point loses nothing and re-sends with the same task id: each turn of the loop
//! handles what is waiting (up to [`MAX_TURN`] inputs), collects its writes and its messages,
//! stores the writes in one transaction, and only then sends the messages.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::machine::{self, Counters, Input, TaskState};
use super::protocol::{self, Envelope, ResponseStatus, ENVELOPE_VERSION};
use super::{db, Command, Task, TaskError, TaskStats};
use crate::bus::{Bus, Event, OutgoingMessage, Subscription};
use crate::clock::StepDetector;
use crate::reading::now_ms;
use crate::store::Store;
use crate::topics;

/// The events [`run`] handles (its reliable subscription's filter): responses, when LAN
/// devices subscribe to their commands or disconnect, and devices deactivated or deleted. It publishes `MqttPublish` and `TaskUpdate`, which it does not take.
pub fn wants(event: &Event) -> bool {
    match event {
        Event::DeviceMessage(m) => m.client.role.as_deref() == Some("device") && m.topic.ends_with("/command_response"),
        Event::DeviceSubscribed { filters, .. } => filters.iter().any(|f| f.ends_with("/commands")),
        Event::DeviceLifecycle(change) => matches!(change.state.as_str(), "deactivated" | "deleted"),
        Event::ClientDisconnected { client, .. } => client.role.as_deref() == Some("device"),
        _ => false,
    }
}

/// Inputs handled per turn before the turn's writes are stored.
const MAX_TURN: usize = 256;

struct Dispatcher {
    store: Store,
    bus: Bus,
    stats: Arc<TaskStats>,
    open: HashMap<String, Task>,
    online: HashSet<String>,
    /// This turn's changes, stored together by [`Dispatcher::flush`].
    writes: Vec<db::Write>,
    /// What may leave only once this turn's writes are stored.
    outbox: Vec<Outgoing>,
}

enum Outgoing {
    Event(Event),
    Reply(oneshot::Sender<Result<Task, TaskError>>, Box<Result<Task, TaskError>>),
}

/// What a response or a person adds to a transition.
#[derive(Default)]
struct Update {
    message: Option<String>,
    result: Option<Value>,
    progress: Option<u8>,
    extend_ms: Option<i64>,
    detail: Option<Value>,
}

pub async fn run(
    store: Store,
    bus: Bus,
    stats: Arc<TaskStats>,
    mut commands: mpsc::Receiver<Command>,
    mut events: Subscription,
    shutdown: CancellationToken,
) {
    let open = match store.run(|conn| Ok(db::open_tasks(conn)?)).await {
        Ok(tasks) => tasks,
        Err(error) => {
            tracing::error!(%error, "cannot load unfinished tasks; task delivery is stopped");
            return;
        }
    };
    if !open.is_empty() {
        tracing::info!(tasks = open.len(), "resuming unfinished tasks");
    }
    // While the gateway was down no device could answer: in-flight tasks get at least one ack
    // timeout from now before a timer fires (kept in memory; a later restart recomputes it).
    let now = now_ms();
    let open: Vec<Task> = open
        .into_iter()
        .map(|mut task| {
            if task.state.in_flight() {
                task.deadline_at = task.deadline_at.map(|d| d.max(now + task.ack_timeout_ms));
            }
            task
        })
        .collect();
    let mut dispatcher = Dispatcher {
        store,
        bus,
        stats,
        open: open.into_iter().map(|t| (t.id.clone(), t)).collect(),
        online: HashSet::new(),
        writes: Vec::new(),
        outbox: Vec::new(),
    };
    let mut clock = StepDetector::default();
    loop {
        let wake = dispatcher.next_wake();
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep(std::time::Duration::from_millis((at - now_ms()).max(0) as u64)).await,
                None => std::future::pending().await,
            }
        };
        let woken_by = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => Wake::Command(command),
                None => return,
            },
            event = events.recv() => match event {
                Some(event) => Wake::Event(event),
                None => return,
            },
            _ = timer => Wake::Timer,
            _ = shutdown.cancelled() => return,
        };
        // Before any timer is compared with the clock: a step must not fire or delay them.
        if let Some(step) = clock.check() {
            dispatcher.clock_stepped(step);
        }
        match woken_by {
            Wake::Command(command) => dispatcher.command(command).await,
            Wake::Event(event) => dispatcher.event(event),
            Wake::Timer => dispatcher.tick(),
        }
        // Take what else is waiting into the same turn: one transaction for all of it.
        for _ in 1..MAX_TURN {
            if let Ok(command) = commands.try_recv() {
                dispatcher.command(command).await;
            } else if let Some(event) = events.try_recv() {
                dispatcher.event(event);
            } else {
                break;
            }
        }
        dispatcher.flush().await;
    }
}

enum Wake {
    Command(Command),
    Event(Event),
    Timer,
}

impl Dispatcher {
    /// Moves every open task's pending times by the clock's step, so each keeps the time it had
    /// left: the ack and execution windows, the retry back-off and the expiry the person chose.
    fn clock_stepped(&mut self, step_ms: i64) {
        let now = now_ms();
        for task in self.open.values_mut() {
            task.expires_at += step_ms;
            task.deadline_at = task.deadline_at.map(|at| at + step_ms);
            task.next_attempt_at = task.next_attempt_at.map(|at| at + step_ms);
            self.writes.push(db::Write::Retime { task: task.clone(), ts: now, step_ms });
        }
        tracing::info!(tasks = self.open.len(), step_ms, "open tasks' timers moved with the clock step");
    }

    fn next_wake(&self) -> Option<i64> {
        self.open
            .values()
            .flat_map(|t| {
                let retry = (t.state == TaskState::Queued && self.online.contains(&t.device_id))
                    .then_some(t.next_attempt_at)
                    .flatten();
                [Some(t.expires_at), t.deadline_at, retry]
            })
            .flatten()
            .min()
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Create(task, reply) => {
                let task = *task;
                self.writes.push(db::Write::Insert(task.clone()));
                self.stats.created.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task = %task.id, device = %task.device_id, command = %task.command, "task queued");
                let (device, id) = (task.device_id.clone(), task.id.clone());
                self.announce(&task);
                self.open.insert(id.clone(), task.clone());
                self.dispatch(&device);
                let now = self.open.get(&id).cloned().unwrap_or(task);
                self.outbox.push(Outgoing::Reply(reply, Box::new(Ok(now))));
            }
            Command::Cancel(id, actor, reply) => {
                let Some(task) = self.open.get(&id).cloned() else {
                    let lookup = id.clone();
                    let answer = match self.store.run(move |conn| Ok(db::get(conn, &lookup)?)).await {
                        Ok(Some(task)) => Err(TaskError::Finished(id, task.state.as_str().into())),
                        Ok(None) => Err(TaskError::UnknownTask(id)),
                        Err(error) => Err(error.into()),
                    };
                    let _ = reply.send(answer);
                    return;
                };
                let was_in_flight = task.state.in_flight();
                let update = Update { detail: Some(json!({ "by": actor })), ..Update::default() };
                let canceled = self.apply(&id, Input::Canceled, update);
                if was_in_flight {
                    // Best effort: the device may stop; anything it answers later is ignored.
                    self.publish_envelope(&task, "cancel");
                    self.note(&task, "cancel_sent", None);
                }
                let answer = canceled.ok_or_else(|| TaskError::Finished(id, "finished".into()));
                self.outbox.push(Outgoing::Reply(reply, Box::new(answer)));
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            // Online for tasks once subscribed to its commands: an envelope published between
            // CONNECT and SUBSCRIBE would be lost (devices use clean sessions).
            Event::DeviceSubscribed { client, .. } => {
                let device = client.client_id.clone();
                self.online.insert(device.clone());
                // The device may have missed what was in flight (it was offline, or we restarted):
                // same task id, same attempt; it answers from its de-duplication record.
                let now = now_ms();
                let mut in_flight = Vec::new();
                for task in self.open.values_mut().filter(|t| t.device_id == device && t.state.in_flight()) {
                    if task.state == TaskState::Sent {
                        // The device never had a chance to acknowledge: a fresh ack window.
                        task.deadline_at = Some(now + task.ack_timeout_ms);
                    }
                    in_flight.push(task.clone());
                }
                for task in in_flight {
                    self.publish_envelope(&task, "task");
                    self.stats.resent.fetch_add(1, Ordering::Relaxed);
                    self.note(&task, "resent", None);
                }
                self.dispatch(&device);
            }
            Event::ClientDisconnected { client, .. } => {
                self.online.remove(&client.client_id);
            }
            Event::DeviceMessage(message) => self.response(&message.client.client_id, &message.payload),
            // A device that is gone will never run its tasks: end them now rather than at expiry.
            Event::DeviceLifecycle(change) => {
                self.online.remove(&change.device_id);
                let mine: Vec<String> =
                    self.open.values().filter(|t| t.device_id == change.device_id).map(|t| t.id.clone()).collect();
                for id in mine {
                    let detail = json!({ "by": "gateway", "reason": format!("device {}", change.state) });
                    self.apply(&id, Input::Canceled, Update { detail: Some(detail), ..Update::default() });
                }
            }
            _ => {}
        }
    }

    fn response(&mut self, device: &str, payload: &[u8]) {
        let response = match protocol::parse_response(payload) {
            Ok(response) => response,
            Err(error) => {
                self.stats.malformed_responses.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%device, %error, "task response ignored");
                return;
            }
        };
        let Some(task) = self.open.get(&response.task_id).filter(|t| t.device_id == device).cloned() else {
            // Finished already (a duplicate or a late answer), or unknown: recorded, ignored.
            self.stats.ignored_responses.fetch_add(1, Ordering::Relaxed);
            let detail =
                json!({ "status": format!("{:?}", response.status).to_lowercase(), "attempt": response.attempt });
            self.writes.push(db::Write::Note {
                task_id: response.task_id,
                ts: now_ms(),
                what: "ignored_response",
                attempt: response.attempt.unwrap_or(0),
                detail: Some(detail),
                owner: Some(device.to_string()),
            });
            return;
        };
        if response.attempt.is_some_and(|a| a < task.attempt) {
            self.stats.ignored_responses.fetch_add(1, Ordering::Relaxed);
            let detail = json!({ "reason": "older attempt", "attempt": response.attempt });
            self.note(&task, "ignored_response", Some(detail));
            return;
        }
        let input = match response.status {
            ResponseStatus::Delivered => Input::Delivered,
            ResponseStatus::InProgress => Input::Progress,
            ResponseStatus::Succeeded => Input::Succeeded,
            ResponseStatus::Failed => Input::Failed,
            ResponseStatus::Rejected => Input::Rejected,
        };
        let update = Update {
            message: response.message,
            result: response.result,
            progress: response.progress,
            extend_ms: response.extend_ms,
            detail: None,
        };
        if self.apply(&task.id, input, update).is_none() {
            // Not possible in this state (a repeated ack, say): recorded, ignored.
            self.stats.ignored_responses.fetch_add(1, Ordering::Relaxed);
            let detail = json!({ "reason": format!("{input:?} while {}", task.state.as_str()) });
            self.note(&task, "ignored_response", Some(detail));
        }
    }

    fn tick(&mut self) {
        let now = now_ms();
        let due: Vec<(String, Input)> = self
            .open
            .values()
            .filter_map(|t| {
                if t.expires_at <= now {
                    Some((t.id.clone(), Input::Expired))
                } else if t.deadline_at.is_some_and(|d| d <= now) {
                    match t.state {
                        TaskState::Sent => Some((t.id.clone(), Input::AckTimeout)),
                        TaskState::Delivered | TaskState::InProgress => Some((t.id.clone(), Input::ExecutionTimeout)),
                        _ => None,
                    }
                } else {
                    None
                }
            })
            .collect();
        for (id, input) in due {
            let was_in_flight = self.open.get(&id).is_some_and(|t| t.state.in_flight());
            if let Some(task) = self.apply(&id, input, Update::default()) {
                if was_in_flight && task.state.is_terminal() {
                    // Given up: tell the device to stop, in case it is still working on it.
                    self.publish_envelope(&task, "cancel");
                    self.note(&task, "cancel_sent", None);
                }
            }
        }
        let devices: Vec<String> = self.online.iter().cloned().collect();
        for device in devices {
            self.dispatch(&device);
        }
    }

    /// Sends the device's next queued task, unless one is in flight (one at a time, in order).
    fn dispatch(&mut self, device: &str) {
        if !self.online.contains(device) {
            return;
        }
        let mut mine: Vec<&Task> = self.open.values().filter(|t| t.device_id == device).collect();
        if mine.iter().any(|t| t.state.in_flight()) {
            return;
        }
        mine.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let Some(head) = mine.first() else { return };
        if head.next_attempt_at.is_some_and(|at| at > now_ms()) {
            return; // backing off; later tasks wait their turn
        }
        let id = head.id.clone();
        if let Some(task) = self.apply(&id, Input::Sent, Update::default()) {
            self.publish_envelope(&task, "task");
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs one transition (stored and announced with the rest of the turn). `None` when the
    /// machine refuses it.
    fn apply(&mut self, id: &str, input: Input, update: Update) -> Option<Task> {
        let task = self.open.get(id)?.clone();
        let counters = Counters {
            attempt: task.attempt,
            timeout_retries: task.timeout_retries,
            failure_retries: task.failure_retries,
        };
        let step = machine::step(task.state, input, counters, &task.retry_policy).ok()?;
        let now = now_ms();
        let mut next = task.clone();
        next.state = step.state;
        next.attempt = step.counters.attempt;
        next.timeout_retries = step.counters.timeout_retries;
        next.failure_retries = step.counters.failure_retries;
        next.updated_at = now;
        next.next_attempt_at = step.retry_after_ms.map(|after| now + after);
        next.deadline_at = match step.state {
            TaskState::Sent => Some(now + task.ack_timeout_ms),
            TaskState::Delivered | TaskState::InProgress => {
                Some(now + task.execution_timeout_ms.max(update.extend_ms.unwrap_or(0)).min(24 * 3_600_000))
            }
            _ => None,
        };
        if update.message.is_some() {
            next.message = update.message;
        }
        if update.result.is_some() {
            next.result = update.result;
        }
        if update.progress.is_some() {
            next.progress = update.progress;
        }
        let detail = update
            .detail
            .or_else(|| step.retry_after_ms.map(|after| json!({ "retryInMs": after, "after": format!("{input:?}") })));
        self.writes.push(db::Write::Transition(next.clone(), detail));
        if step.retry_after_ms.is_some() {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let counter = match next.state {
            TaskState::Succeeded => Some(&self.stats.succeeded),
            TaskState::Failed => Some(&self.stats.failed),
            TaskState::Rejected => Some(&self.stats.rejected),
            TaskState::TimedOut => Some(&self.stats.timed_out),
            TaskState::Expired => Some(&self.stats.expired),
            TaskState::Canceled => Some(&self.stats.canceled),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(task = %id, from = task.state.as_str(), to = next.state.as_str(), attempt = next.attempt, "task transition");
        self.announce(&next);
        if next.state.is_terminal() {
            self.open.remove(id);
            tracing::info!(task = %id, device = %next.device_id, state = next.state.as_str(), attempt = next.attempt, "task finished");
            let device = next.device_id.clone();
            self.dispatch(&device);
        } else {
            self.open.insert(id.to_string(), next.clone());
        }
        Some(next)
    }

    fn note(&mut self, task: &Task, what: &'static str, detail: Option<Value>) {
        self.writes.push(db::Write::Note {
            task_id: task.id.clone(),
            ts: now_ms(),
            what,
            attempt: task.attempt,
            detail,
            owner: None,
        });
    }

    fn announce(&mut self, task: &Task) {
        self.outbox.push(Outgoing::Event(Event::TaskUpdate(Arc::new(task.clone()))));
    }

    /// Stores the turn's writes in one transaction, then sends what the turn produced. If the
    /// store fails, nothing is sent, waiting API calls get the error, and the open tasks are
    /// read back from the database (the in-memory changes of the turn are dropped).
    async fn flush(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        let outbox = std::mem::take(&mut self.outbox);
        if !writes.is_empty() {
            if let Err(error) = self.store.run(move |conn| Ok(db::write_all(conn, &writes)?)).await {
                tracing::error!(%error, "storing task changes failed; nothing of them was sent, reloading open tasks");
                for item in outbox {
                    if let Outgoing::Reply(reply, _) = item {
                        let _ = reply.send(Err(TaskError::NotStored(error.to_string())));
                    }
                }
                match self.store.run(|conn| Ok(db::open_tasks(conn)?)).await {
                    Ok(open) => self.open = open.into_iter().map(|t| (t.id.clone(), t)).collect(),
                    Err(error) => tracing::error!(%error, "reloading open tasks failed"),
                }
                return;
            }
        }
        for item in outbox {
            match item {
                Outgoing::Event(event) => self.bus.publish(event).await,
                Outgoing::Reply(reply, answer) => {
                    let _ = reply.send(*answer);
                }
            }
        }
    }

    fn publish_envelope(&mut self, task: &Task, kind: &str) {
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            kind: kind.into(),
            task_id: task.id.clone(),
            attempt: task.attempt,
            command: task.command.clone(),
            params: task.params.clone(),
            created_at: task.created_at,
            expires_at: task.expires_at,
            ack_timeout_ms: task.ack_timeout_ms,
            execution_timeout_ms: task.execution_timeout_ms,
        };
        let payload = serde_json::to_vec(&envelope).unwrap_or_default();
        // Never retained: a retained command would run again on every reconnect.
        let message = OutgoingMessage {
            topic: topics::device_topic(&task.site, &task.device_id, "commands"),
            payload: payload.into(),
            retain: false,
        };
        self.outbox.push(Outgoing::Event(Event::MqttPublish(Arc::new(message))));
    }
}
