//! The single writer: collects readings from the bus into batches (by count and by time) and
//! writes each batch in one transaction on a dedicated thread, along with each device's latest
//! state. Also enforces retention. Failed batches are retried, not dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{open_connection, schema::MEASUREMENT_COLUMNS, StoreError};
use crate::bus::{Bus, Event, LanTelemetry, Subscription};
use crate::clock::{since_boot_ms, StepDetector};
use crate::config::StoreConfig;
use crate::reading::{now_ms, ruuvi_kind, Reading};

/// Retention deletes by the wall clock, so a clock far ahead (a bad real-time clock, a mistyped
/// date) would make the whole history look old and delete it at the next run. After a step
/// forward of more than an hour, or a start at which every stored reading looks older than the
/// retention, retention waits a day: time for NTP or a person to put the clock right, while a
/// clock that was right only means old readings go a day late. A clock still wrong a day later
/// is followed.
const RETENTION_PAUSE_AFTER_STEP: Duration = Duration::from_secs(24 * 3600);
const RETENTION_PAUSING_STEP_MS: i64 = 3_600_000;
/// Short enough that saving resumes within seconds once disk space is back.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct StoreStats {
    rows_written: AtomicU64,
    batches_written: AtomicU64,
    write_errors: AtomicU64,
    rows_deleted_by_retention: AtomicU64,
    /// Readings received but not yet committed.
    queue_depth: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// Wall-clock ms until which retention is paused after a step of the clock; 0 when it is not.
    retention_paused_until: AtomicI64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreSnapshot {
    pub rows_written: u64,
    pub batches_written: u64,
    pub write_errors: u64,
    pub rows_deleted_by_retention: u64,
    pub queue_depth: i64,
    /// Why the latest write failed; cleared by the next write that succeeds.
    pub last_error: Option<String>,
    /// Retention is paused until then (ms) because the clock stepped forward.
    pub retention_paused_until: Option<i64>,
}

impl StoreStats {
    pub fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            rows_written: self.rows_written.load(Ordering::Relaxed),
            batches_written: self.batches_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            rows_deleted_by_retention: self.rows_deleted_by_retention.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            retention_paused_until: Some(self.retention_paused_until.load(Ordering::Relaxed)).filter(|&ms| ms > 0),
        }
    }
}

pub struct WriterHandle {
    collector: tokio::task::JoinHandle<()>,
    thread: std::thread::JoinHandle<()>,
}

impl WriterHandle {
    /// Waits until every collected reading is committed (after `shutdown` fired).
    pub async fn join(self) {
        let _ = self.collector.await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// Starts the writer. The database is opened (and migrated) before this returns, so a bad path
/// fails the start, not later.
pub fn spawn_writer(
    path: PathBuf,
    config: StoreConfig,
    bus: &Bus,
    stats: Arc<StoreStats>,
    shutdown: CancellationToken,
) -> Result<WriterHandle, StoreError> {
    let conn = open_connection(&path)?;
    let (batches_tx, batches_rx) = mpsc::channel::<Vec<Row>>(4);
    // Reliable: the store must see every reading; a slow disk slows intake instead of losing data.
    let subscription = bus.subscribe_reliable("store", config.batch_size.max(1024) * 2, |e| Row::from_event_ref(e));
    let thread_stats = stats.clone();
    let thread_shutdown = shutdown.clone();
    let retention = Retention { keep: config.retention, every: config.retention_interval };
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || write_loop(conn, batches_rx, retention, thread_stats, thread_shutdown))
        .expect("spawn store writer thread");
    let collector = tokio::spawn(collect(subscription, batches_tx, config, stats, shutdown));
    Ok(WriterHandle { collector, thread })
}

/// Sleeps until `at`; forever when there is no deadline.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When the idle batch that refreshes the device rows is due: just after the writer's refresh
/// interval has passed since the last batch.
fn refresh_due() -> Option<Instant> {
    Some(Instant::now() + DEVICE_REFRESH + Duration::from_millis(100))
}

async fn collect(
    mut subscription: Subscription,
    batches: mpsc::Sender<Vec<Row>>,
    config: StoreConfig,
    stats: Arc<StoreStats>,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<Row> = Vec::with_capacity(config.batch_size);
    let mut deadline: Option<Instant> = None;
    // After the last batch of a burst, one empty batch once the device-row refresh is due, so
    // that a device's latest reading reaches its row even when nothing else arrives.
    let mut refresh_at: Option<Instant> = None;
    loop {
        tokio::select! {
            event = subscription.recv() => match event {
                Some(event @ (Event::Reading(_) | Event::Telemetry(_))) => {
                    stats.queue_depth.fetch_add(1, Ordering::Relaxed);
                    batch.extend(Row::from_event(event));
                    deadline.get_or_insert_with(|| Instant::now() + config.flush_interval);
                    if batch.len() >= config.batch_size {
                        deadline = None;
                        refresh_at = refresh_due();
                        if batches.send(std::mem::take(&mut batch)).await.is_err() { return; }
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = until(deadline) => {
                deadline = None;
                refresh_at = refresh_due();
                if batches.send(std::mem::take(&mut batch)).await.is_err() { return; }
            }
            _ = until(refresh_at) => {
                refresh_at = None;
                if batches.send(Vec::new()).await.is_err() { return; }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // Shutting down: take what is already on the bus, then the final batch.
    while let Some(event) = subscription.try_recv() {
        if let Some(row) = Row::from_event(event) {
            stats.queue_depth.fetch_add(1, Ordering::Relaxed);
            batch.push(row);
        }
    }
    if !batch.is_empty() {
        let _ = batches.send(batch).await;
    }
}

#[derive(Debug, Clone, Copy)]
struct Retention {
    keep: Duration,
    every: Duration,
}

/// Whether a step of the clock (ms, as [`StepDetector::across_suspend`] reports it) pauses
/// retention.
fn pauses_retention(step_ms: i64) -> bool {
    step_ms > RETENTION_PAUSING_STEP_MS
}

/// Whether the clock at start (`now`) makes every stored reading look older than the retention
/// (`newest_stored`: the latest time a device was seen before this start): the gateway was off
/// that long, or its clock is far ahead (a bad real-time clock at boot).
fn start_pauses_retention(now: i64, newest_stored: Option<i64>, keep: Duration) -> bool {
    newest_stored.is_some_and(|newest| newest < now - keep.as_millis() as i64)
}

/// When retention runs: every `every`, except for a day after the clock looked wrong. Times
/// are measured since boot, suspend included, so a laptop's sleep neither looks like a step
/// nor stretches the pause. The pause is kept in the database (`retention_pause`): a restart
/// during it, with the clock still ahead, must not delete what it protects.
struct RetentionSchedule {
    retention: Retention,
    last_run: Option<i64>,
    paused_until: Option<i64>,
    clock: StepDetector,
}

impl RetentionSchedule {
    fn new(retention: Retention, conn: &Connection, stats: &StoreStats) -> RetentionSchedule {
        let keep = retention.keep;
        let mut schedule =
            RetentionSchedule { retention, last_run: None, paused_until: None, clock: StepDetector::across_suspend() };
        let now = now_ms();
        let saved: Option<i64> =
            conn.query_row("SELECT until FROM retention_pause", [], |r| r.get(0)).optional().unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read the saved retention pause");
                None
            });
        // A clock put back since then does not stretch the pause beyond a day.
        let remaining = saved.map(|until| (until - now).min(RETENTION_PAUSE_AFTER_STEP.as_millis() as i64));
        if let Some(remaining) = remaining.filter(|&ms| ms > 0) {
            schedule.pause_for(remaining, conn, stats);
            tracing::info!(remaining_ms = remaining, "deleting old readings stays paused (the clock looked wrong)");
            return schedule;
        }
        let newest_stored = conn
            .query_row("SELECT MAX(last_seen) FROM devices", [], |r| r.get(0))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read when devices were last seen; retention runs without the start check");
                None
            });
        if start_pauses_retention(now, newest_stored, keep) {
            schedule.pause_for(RETENTION_PAUSE_AFTER_STEP.as_millis() as i64, conn, stats);
            tracing::warn!(
                newest_reading_ms = newest_stored,
                "every stored reading is older than the retention: the gateway was off that long, or the clock is \
                 far ahead; deleting old readings is paused for a day (check the system time if it was not off)"
            );
        }
        schedule
    }

    fn pause_for(&mut self, ms: i64, conn: &Connection, stats: &StoreStats) {
        self.paused_until = Some(since_boot_ms() + ms);
        let until = now_ms() + ms;
        stats.retention_paused_until.store(until, Ordering::Relaxed);
        if let Err(error) = conn.execute("INSERT OR REPLACE INTO retention_pause (id, until) VALUES (1, ?1)", [until]) {
            tracing::warn!(%error, "cannot save the retention pause; a restart would end it");
        }
    }

    /// Whether retention runs now.
    fn due(&mut self, conn: &Connection, stats: &StoreStats) -> bool {
        if let Some(step_ms) = self.clock.check().filter(|&step| pauses_retention(step)) {
            self.pause_for(RETENTION_PAUSE_AFTER_STEP.as_millis() as i64, conn, stats);
            tracing::warn!(
                step_ms,
                "the clock stepped forward; deleting old readings is paused for a day so a wrong clock \
                 cannot erase the history at once (check the system time if this step was not expected)"
            );
        }
        let now = since_boot_ms();
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
            stats.retention_paused_until.store(0, Ordering::Relaxed);
            if let Err(error) = conn.execute("DELETE FROM retention_pause", []) {
                tracing::warn!(%error, "cannot clear the saved retention pause");
            }
        }
        let due = self.paused_until.is_none()
            && self.last_run.is_none_or(|at| now - at >= self.retention.every.as_millis() as i64);
        if due {
            self.last_run = Some(now);
        }
        due
    }
}

fn write_loop(
    conn: Connection,
    mut batches: mpsc::Receiver<Vec<Row>>,
    retention: Retention,
    stats: Arc<StoreStats>,
    shutdown: CancellationToken,
) {
    let mut schedule = RetentionSchedule::new(retention, &conn, &stats);
    let mut writer = Writer::new(conn);
    while let Some(batch) = batches.blocking_recv() {
        let mut backoff = Duration::from_millis(100);
        loop {
            // The last batch (channel closed and drained) always records the devices' latest state.
            let final_batch = batches.is_closed() && batches.is_empty();
            // An empty batch is the collector's "refresh the device rows now" (see `collect`).
            match writer.write(&batch, final_batch || batch.is_empty()) {
                Ok(()) => {
                    for row in &batch {
                        if let Row::Telemetry(telemetry) = row {
                            telemetry.stored.fire();
                        }
                    }
                    stats.rows_written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    stats.batches_written.fetch_add(1, Ordering::Relaxed);
                    stats.queue_depth.fetch_sub(batch.len() as i64, Ordering::Relaxed);
                    // Writing works again: health stops saying it does not (`writeErrors` keeps
                    // the history). Left set, every later moment with a batch waiting read as
                    // "degraded" and the UI's banner never went away.
                    *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    break;
                }
                Err(error) => {
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    let message = format!("writing {} readings failed: {error}", batch.len());
                    tracing::error!(
                        "{message}; retrying in {backoff:?} (is the disk full or the data directory read-only?)"
                    );
                    *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                    if shutdown.is_cancelled() && backoff >= RETRY_BACKOFF_MAX {
                        tracing::error!(lost = batch.len(), "giving up on a batch at shutdown");
                        stats.queue_depth.fetch_sub(batch.len() as i64, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
        if schedule.due(&writer.conn, &stats) {
            let Retention { keep, every } = schedule.retention;
            match apply_retention(&writer.conn, keep) {
                Ok(deleted) => {
                    stats.rows_deleted_by_retention.fetch_add(deleted, Ordering::Relaxed);
                    if deleted > 0 {
                        tracing::info!(deleted, retention = ?keep, "old readings deleted");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, ?every, "retention cleanup failed; will retry")
                }
            }
        }
    }
    // Whatever is still pending (the channel may close right after a batch).
    if let Err(error) = writer.write(&[], true) {
        tracing::error!(%error, "recording the devices' latest state at shutdown failed");
    }
    tracing::debug!("store writer stopped");
}

/// How often each device's row (last seen, latest reading) is refreshed. Readings are written
/// every batch; the device rows less often, because with many tags they would double the work.
const DEVICE_REFRESH: Duration = Duration::from_secs(2);

struct Writer {
    conn: Connection,
    device_pks: HashMap<String, i64>,
    /// The newest reading per device since the device rows were last refreshed.
    latest: HashMap<i64, Row>,
    devices_refreshed: std::time::Instant,
}

impl Writer {
    fn new(conn: Connection) -> Writer {
        Writer {
            conn,
            device_pks: HashMap::new(),
            latest: HashMap::new(),
            devices_refreshed: std::time::Instant::now(),
        }
    }

    /// Writes `batch` in one transaction; on error nothing of it is kept and it can be retried.
    fn write(&mut self, batch: &[Row], refresh_devices: bool) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        let mut new_pks = Vec::new();
        let mut batch_latest: Vec<(i64, &Row)> = Vec::with_capacity(batch.len());
        {
            let columns: String = MEASUREMENT_COLUMNS.iter().map(|c| format!(", {}", c.column)).collect();
            let placeholders: String = (0..MEASUREMENT_COLUMNS.len()).map(|i| format!(", ?{}", i + 4)).collect();
            let mut insert_reading = tx.prepare_cached(&format!(
                "INSERT INTO readings (device_pk, ts, rssi{columns}) VALUES (?1, ?2, ?3{placeholders})"
            ))?;
            let mut insert_telemetry =
                tx.prepare_cached("INSERT INTO telemetry (device_pk, ts, field, value) VALUES (?1, ?2, ?3, ?4)")?;
            for row in batch {
                let pk = match (self.device_pks.get(row.device_id()), row) {
                    (Some(pk), _) => *pk,
                    (None, Row::Reading(reading)) => {
                        let pk = insert_device(&tx, reading)?;
                        new_pks.push((reading.device_id.clone(), pk));
                        pk
                    }
                    (None, Row::Telemetry(telemetry)) => {
                        // LAN devices exist from their registration; a deleted one's late message is dropped.
                        let Some(pk) = existing_device(&tx, &telemetry.device_id)? else { continue };
                        new_pks.push((telemetry.device_id.clone(), pk));
                        pk
                    }
                };
                match row {
                    Row::Reading(reading) => {
                        insert_reading.raw_bind_parameter(1, pk)?;
                        insert_reading.raw_bind_parameter(2, reading.ts)?;
                        insert_reading.raw_bind_parameter(3, reading.rssi)?;
                        for (i, column) in MEASUREMENT_COLUMNS.iter().enumerate() {
                            insert_reading.raw_bind_parameter(i + 4, (column.value)(&reading.measurement))?;
                        }
                        insert_reading.raw_execute()?;
                    }
                    Row::Telemetry(telemetry) => {
                        for (field, value) in &telemetry.values {
                            insert_telemetry.execute(params![pk, telemetry.ts, field, value])?;
                        }
                    }
                }
                batch_latest.push((pk, row));
            }
        }
        let refresh = refresh_devices || self.devices_refreshed.elapsed() >= DEVICE_REFRESH;
        let mut latest = if refresh { std::mem::take(&mut self.latest) } else { HashMap::new() };
        {
            let target = if refresh { &mut latest } else { &mut self.latest };
            for (pk, row) in batch_latest {
                match target.get(&pk) {
                    Some(current) if current.ts() > row.ts() => {}
                    _ => {
                        target.insert(pk, row.clone());
                    }
                }
            }
        }
        if refresh {
            let mut update_reading = tx.prepare_cached(
                "UPDATE devices SET last_seen = MAX(last_seen, ?2), last_rssi = ?3, last_receiver = ?4, \
                 data_format = ?5, last_reading = ?6 WHERE pk = ?1",
            )?;
            let mut update_telemetry = tx
                .prepare_cached("UPDATE devices SET last_seen = MAX(last_seen, ?2), last_reading = ?3 WHERE pk = ?1")?;
            for (pk, row) in &latest {
                match row {
                    Row::Reading(reading) => {
                        let json = serde_json::to_string(&**reading).unwrap_or_default();
                        update_reading.execute(params![
                            pk,
                            reading.ts,
                            reading.rssi,
                            reading.receiver,
                            reading.measurement.data_format,
                            json
                        ])?;
                    }
                    Row::Telemetry(telemetry) => {
                        let mut json = telemetry.raw.clone();
                        if let Some(object) = json.as_object_mut() {
                            object.insert("ts".into(), telemetry.ts.into());
                        }
                        update_telemetry.execute(params![pk, telemetry.ts, json.to_string()])?;
                    }
                }
            }
        }
        match tx.commit() {
            Ok(()) => {
                self.device_pks.extend(new_pks);
                if refresh {
                    self.devices_refreshed = std::time::Instant::now();
                }
                Ok(())
            }
            Err(error) => {
                if refresh {
                    // Keep the device updates for the retry.
                    for (pk, row) in latest {
                        self.latest.entry(pk).or_insert(row);
                    }
                }
                Err(error)
            }
        }
    }
}

/// One thing to store: a Ruuvi reading or a LAN device's telemetry message.
#[derive(Clone)]
pub enum Row {
    Reading(Arc<Reading>),
    Telemetry(Arc<LanTelemetry>),
}

impl Row {
    /// Whether the store keeps this event (its reliable subscription's filter).
    fn from_event_ref(event: &Event) -> bool {
        matches!(event, Event::Reading(_) | Event::Telemetry(_))
    }

    fn from_event(event: Event) -> Option<Row> {
        match event {
            Event::Reading(reading) => Some(Row::Reading(reading)),
            Event::Telemetry(telemetry) => Some(Row::Telemetry(telemetry)),
            _ => None,
        }
    }

    fn device_id(&self) -> &str {
        match self {
            Row::Reading(r) => &r.device_id,
            Row::Telemetry(t) => &t.device_id,
        }
    }

    fn ts(&self) -> i64 {
        match self {
            Row::Reading(r) => r.ts,
            Row::Telemetry(t) => t.ts,
        }
    }
}

fn existing_device(tx: &Transaction, device_id: &str) -> Result<Option<i64>, rusqlite::Error> {
    use rusqlite::OptionalExtension;
    tx.query_row("SELECT pk FROM devices WHERE id = ?1", [device_id], |r| r.get(0)).optional()
}

fn insert_device(tx: &Transaction, reading: &Reading) -> Result<i64, rusqlite::Error> {
    tx.execute(
        "INSERT INTO devices (id, kind, mac, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?4) \
         ON CONFLICT(id) DO NOTHING",
        params![reading.device_id, ruuvi_kind(reading.measurement.data_format), reading.mac, reading.ts],
    )?;
    tx.query_row("SELECT pk FROM devices WHERE id = ?1", [&reading.device_id], |r| r.get(0))
}

/// Deletes readings older than `retention`, device by device so each delete uses the index.
fn apply_retention(conn: &Connection, retention: Duration) -> Result<u64, rusqlite::Error> {
    let cutoff = now_ms() - retention.as_millis() as i64;
    let pks: Vec<i64> =
        conn.prepare("SELECT pk FROM devices")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut deleted = 0;
    for pk in pks {
        deleted += conn.execute("DELETE FROM readings WHERE device_pk = ?1 AND ts < ?2", params![pk, cutoff])? as u64;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruuvi::{Field, Measurement};

    fn reading(device: &str, ts: i64, temperature: f64) -> Row {
        Row::Reading(Arc::new(Reading {
            ts,
            device_id: device.into(),
            mac: "C1:02:03:04:05:06".into(),
            rssi: Some(-70),
            receiver: "test".into(),
            motion: None,
            raw: Arc::from(&[][..]),
            measurement: Measurement {
                data_format: 5,
                temperature: Field::Value(temperature),
                humidity: Field::Unavailable,
                ..Measurement::default()
            },
        }))
    }

    #[test]
    fn batches_insert_readings_create_devices_and_keep_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::new(open_connection(&dir.path().join("t.db")).unwrap());
        let batch = vec![reading("a", 2_000, 2.0), reading("a", 1_000, 1.0), reading("b", 1_500, 5.0)];
        writer.write(&batch, false).unwrap();
        let pending: Option<String> =
            writer.conn.query_row("SELECT last_reading FROM devices WHERE id = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, None, "device rows are refreshed at most every {DEVICE_REFRESH:?}");
        writer.write(&[reading("a", 3_000, 3.0)], true).unwrap();
        let conn = &writer.conn;
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 4);
        let (last_seen, last_reading): (i64, String) = conn
            .query_row("SELECT last_seen, last_reading FROM devices WHERE id = 'a'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(last_seen, 3_000);
        let json: serde_json::Value = serde_json::from_str(&last_reading).unwrap();
        assert_eq!(json["temperature"], 3);
        assert_eq!(json["humidity"], serde_json::Value::Null);
        let humidity: Option<f64> = conn.query_row("SELECT humidity FROM readings LIMIT 1", [], |r| r.get(0)).unwrap();
        assert_eq!(humidity, None, "unavailable values are stored as NULL");
    }

    #[test]
    fn retention_deletes_only_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::new(open_connection(&dir.path().join("t.db")).unwrap());
        let now = now_ms();
        let batch = vec![reading("a", now - 10 * 86_400_000, 1.0), reading("a", now - 1_000, 2.0)];
        writer.write(&batch, true).unwrap();
        let conn = &writer.conn;
        assert_eq!(apply_retention(&conn, Duration::from_secs(7 * 86_400)).unwrap(), 1);
        let left: f64 = conn.query_row("SELECT temperature FROM readings", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 2.0);
    }

    #[test]
    fn a_start_pauses_retention_when_every_stored_reading_looks_too_old() {
        let keep = Duration::from_secs(86_400);
        let now = 10 * 86_400_000;
        let cases = [
            (None, false, "nothing stored"),
            (Some(now - 1_000), false, "seen a second ago"),
            (Some(now - 86_400_000 + 1), false, "just inside the retention"),
            (Some(now - 86_400_001), true, "just outside: off for a day, or the clock is ahead"),
            (Some(now + 5_000), false, "seen in the future: the clock went back, nothing looks old"),
        ];
        for (newest, pauses, case) in cases {
            assert_eq!(start_pauses_retention(now, newest, keep), pauses, "{case}");
        }
    }

    #[test]
    fn only_a_step_forward_of_more_than_an_hour_pauses_retention() {
        let cases = [
            (-3 * 86_400_000, false, "back three days: readings look newer, nothing is deleted early"),
            (-2_000, false, "small step back"),
            (2_000, false, "small step forward (an NTP correction)"),
            (3_600_000, false, "exactly an hour"),
            (3_600_001, true, "just over an hour"),
            (5 * 365 * 86_400_000, true, "five years ahead (a bad real-time clock)"),
        ];
        for (step_ms, pauses, case) in cases {
            assert_eq!(pauses_retention(step_ms), pauses, "{case}");
        }
    }
}
