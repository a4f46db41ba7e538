//! The bridge's durable buffer: one SQLite file per upstream (`<data>/upstream/<name>.sqlite`).
//! Every message bound upstream is written here first and deleted when the upstream broker has
//! acknowledged it, so what was not acknowledged survives a lost connection, a restart and a
//! killed process, and goes out in the order it came in. The buffer is bounded by bytes and by
//! age; what a bound drops is counted here, persistently, and reported by the API.
//!
//! The file also remembers which task a fleet operator's request (`ref`) became, so a request
//! delivered twice (QoS 1) creates one task.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

/// A message waiting to go upstream, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A message to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Outgoing {
    fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }
}

/// Totals kept in the file, so they survive restarts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Messages accepted into the buffer.
    pub buffered: u64,
    /// Messages the upstream broker acknowledged.
    pub delivered: u64,
    /// Dropped unsent because the buffer was over `buffer_max_bytes` (oldest first).
    pub dropped_size: u64,
    /// Dropped unsent because they were older than `buffer_max_age`.
    pub dropped_age: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Depth {
    pub messages: u64,
    pub bytes: u64,
    /// When the oldest waiting message was buffered (ms since the epoch).
    pub oldest_ms: Option<i64>,
}

pub struct Outbox {
    conn: Connection,
    max_bytes: u64,
    max_age_ms: i64,
    depth: Depth,
    counters: Counters,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS task_refs (
    ref TEXT PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
";

/// Task references older than this are forgotten (a request repeated later is a new task).
const REF_MEMORY_MS: i64 = 30 * 24 * 3600 * 1000;

impl Outbox {
    pub fn open(path: &Path, max_bytes: u64, max_age_ms: i64) -> rusqlite::Result<Outbox> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let mut outbox = Outbox { conn, max_bytes, max_age_ms, depth: Depth::default(), counters: Counters::default() };
        outbox.depth = outbox.measure()?;
        outbox.counters = outbox.load_counters()?;
        Ok(outbox)
    }

    fn measure(&self) -> rusqlite::Result<Depth> {
        self.conn.query_row(
            "SELECT count(*), coalesce(sum(length(topic) + length(payload)), 0), min(created_ms) FROM outbox",
            [],
            |row| {
                Ok(Depth {
                    messages: row.get::<_, i64>(0)? as u64,
                    bytes: row.get::<_, i64>(1)? as u64,
                    oldest_ms: row.get(2)?,
                })
            },
        )
    }

    fn load_counters(&self) -> rusqlite::Result<Counters> {
        let mut counters = Counters::default();
        let mut statement = self.conn.prepare("SELECT name, value FROM counters")?;
        let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)))?;
        for row in rows {
            let (name, value) = row?;
            match name.as_str() {
                "buffered" => counters.buffered = value,
                "delivered" => counters.delivered = value,
                "dropped_size" => counters.dropped_size = value,
                "dropped_age" => counters.dropped_age = value,
                _ => {}
            }
        }
        Ok(counters)
    }

    fn save_counters(tx: &rusqlite::Transaction<'_>, counters: &Counters) -> rusqlite::Result<()> {
        let mut statement = tx.prepare_cached("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)")?;
        for (name, value) in [
            ("buffered", counters.buffered),
            ("delivered", counters.delivered),
            ("dropped_size", counters.dropped_size),
            ("dropped_age", counters.dropped_age),
        ] {
            statement.execute(params![name, value as i64])?;
        }
        Ok(())
    }

    pub fn depth(&self) -> Depth {
        self.depth
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Adds messages in order, in one transaction, then drops the oldest until the buffer is
    /// within `max_bytes`. A single message larger than the whole bound is dropped at once.
    /// Returns how many were dropped for size.
    pub fn append(&mut self, messages: &[Outgoing], now_ms: i64) -> rusqlite::Result<u64> {
        let mut counters = self.counters;
        let mut depth = self.depth;
        let tx = self.conn.transaction()?;
        let mut dropped = 0;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO outbox (topic, payload, retain, created_ms) VALUES (?1, ?2, ?3, ?4)")?;
            for message in messages {
                if message.size() > self.max_bytes {
                    dropped += 1;
                    continue;
                }
                insert.execute(params![message.topic, message.payload, message.retain, now_ms])?;
                depth.messages += 1;
                depth.bytes += message.size();
                depth.oldest_ms.get_or_insert(now_ms);
                counters.buffered += 1;
            }
        }
        if depth.bytes > self.max_bytes {
            let mut oldest =
                tx.prepare_cached("SELECT id, length(topic) + length(payload) FROM outbox ORDER BY id LIMIT 512")?;
            let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE id <= ?1")?;
            while depth.bytes > self.max_bytes {
                let rows: Vec<(i64, i64)> =
                    oldest.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
                if rows.is_empty() {
                    break;
                }
                let mut last = None;
                for (id, size) in rows {
                    if depth.bytes <= self.max_bytes {
                        break;
                    }
                    depth.bytes -= (size as u64).min(depth.bytes);
                    depth.messages = depth.messages.saturating_sub(1);
                    dropped += 1;
                    last = Some(id);
                }
                if let Some(last) = last {
                    delete.execute([last])?;
                }
            }
            drop((oldest, delete));
            depth.oldest_ms = tx.query_row("SELECT min(created_ms) FROM outbox", [], |row| row.get(0))?;
        }
        counters.dropped_size += dropped;
        Self::save_counters(&tx, &counters)?;
        tx.commit()?;
        self.counters = counters;
        self.depth = depth;
        Ok(dropped)
    }

    /// Drops messages older than `max_age`; returns how many.
    pub fn expire(&mut self, now_ms: i64) -> rusqlite::Result<u64> {
        let cutoff = now_ms - self.max_age_ms;
        if self.depth.oldest_ms.is_none_or(|oldest| oldest >= cutoff) {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        let dropped = tx.execute("DELETE FROM outbox WHERE created_ms < ?1", [cutoff])? as u64;
        tx.execute("DELETE FROM task_refs WHERE created_ms < ?1", [now_ms - REF_MEMORY_MS])?;
        let mut counters = self.counters;
        counters.dropped_age += dropped;
        Self::save_counters(&tx, &counters)?;
        tx.commit()?;
        self.counters = counters;
        self.depth = self.measure()?;
        Ok(dropped)
    }

    /// The next messages after `cursor` (an id; 0 for the oldest), in order.
    pub fn after(&self, cursor: i64, limit: usize) -> rusqlite::Result<Vec<Stored>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT id, topic, payload, retain FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = statement.query_map(params![cursor, limit as i64], |row| {
            Ok(Stored { id: row.get(0)?, topic: row.get(1)?, payload: row.get(2)?, retain: row.get(3)? })
        })?;
        rows.collect()
    }

    /// Forgets messages the upstream acknowledged (ids already dropped by a bound are skipped).
    pub fn acknowledge(&mut self, ids: &[i64]) -> rusqlite::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        let mut removed = 0u64;
        let mut bytes = 0u64;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING length(topic) + length(payload)")?;
            for id in ids {
                if let Some(size) = delete.query_row([id], |row| row.get::<_, i64>(0)).optional()? {
                    removed += 1;
                    bytes += size as u64;
                }
            }
        }
        let mut counters = self.counters;
        counters.delivered += removed;
        Self::save_counters(&tx, &counters)?;
        let oldest: Option<i64> = tx.query_row("SELECT min(created_ms) FROM outbox", [], |row| row.get(0))?;
        tx.commit()?;
        self.counters = counters;
        self.depth.messages = self.depth.messages.saturating_sub(removed);
        self.depth.bytes = self.depth.bytes.saturating_sub(bytes);
        self.depth.oldest_ms = oldest;
        Ok(())
    }

    /// The task an operator's `ref` already became, if any.
    pub fn task_for_ref(&self, reference: &str) -> rusqlite::Result<Option<String>> {
        self.conn.query_row("SELECT task_id FROM task_refs WHERE ref = ?1", [reference], |row| row.get(0)).optional()
    }

    pub fn remember_ref(&self, reference: &str, task_id: &str, now_ms: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO task_refs (ref, task_id, created_ms) VALUES (?1, ?2, ?3)",
            params![reference, task_id, now_ms],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize, size: usize) -> Outgoing {
        let topic = format!("t/{n:04}");
        Outgoing { payload: vec![b'x'; size - topic.len()], topic, retain: n % 2 == 0 }
    }

    fn ids(outbox: &Outbox) -> Vec<String> {
        outbox.after(0, 1000).unwrap().into_iter().map(|m| m.topic).collect()
    }

    #[test]
    fn keeps_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.sqlite");
        let mut outbox = Outbox::open(&path, 10_000, 60_000).unwrap();
        outbox.append(&[message(1, 100), message(2, 100)], 1_000).unwrap();
        outbox.append(&[message(3, 100)], 2_000).unwrap();
        let first = outbox.after(0, 2).unwrap();
        assert_eq!(first.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(), ["t/0001", "t/0002"]);
        assert!(!first[0].retain && first[1].retain);
        assert_eq!(outbox.after(first[1].id, 10).unwrap()[0].topic, "t/0003");
        outbox.acknowledge(&[first[1].id, first[1].id]).unwrap();
        assert_eq!(outbox.depth(), Depth { messages: 2, bytes: 200, oldest_ms: Some(1_000) });
        drop(outbox);
        let outbox = Outbox::open(&path, 10_000, 60_000).unwrap();
        assert_eq!(ids(&outbox), ["t/0001", "t/0003"]);
        assert_eq!(outbox.depth(), Depth { messages: 2, bytes: 200, oldest_ms: Some(1_000) });
        assert_eq!(outbox.counters(), Counters { buffered: 3, delivered: 1, dropped_size: 0, dropped_age: 0 });
    }

    #[test]
    fn the_size_bound_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("b.sqlite"), 1_000, 60_000).unwrap();
        let batch: Vec<Outgoing> = (1..=8).map(|n| message(n, 100)).collect();
        assert_eq!(outbox.append(&batch, 1).unwrap(), 0);
        let batch: Vec<Outgoing> = (9..=13).map(|n| message(n, 100)).collect();
        assert_eq!(outbox.append(&batch, 2).unwrap(), 3);
        assert_eq!(ids(&outbox).first().map(String::as_str), Some("t/0004"));
        assert_eq!(outbox.depth().bytes, 1_000);
        // One message bigger than the whole buffer is refused, not allowed to empty it.
        assert_eq!(outbox.append(&[message(14, 2_000)], 3).unwrap(), 1);
        assert_eq!(outbox.depth().messages, 10);
        assert_eq!(outbox.counters().dropped_size, 4);
        assert_eq!(outbox.counters().buffered, 13);
    }

    #[test]
    fn the_age_bound_drops_old_messages_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("a.sqlite"), 100_000, 10_000).unwrap();
        outbox.append(&[message(1, 50), message(2, 50)], 1_000).unwrap();
        outbox.append(&[message(3, 50)], 9_000).unwrap();
        assert_eq!(outbox.expire(10_999).unwrap(), 0);
        assert_eq!(outbox.expire(11_001).unwrap(), 2);
        assert_eq!(ids(&outbox), ["t/0003"]);
        assert_eq!(outbox.depth(), Depth { messages: 1, bytes: 50, oldest_ms: Some(9_000) });
        assert_eq!(outbox.counters().dropped_age, 2);
    }

    #[test]
    fn task_references_are_remembered_once() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("r.sqlite"), 100_000, 10_000).unwrap();
        assert_eq!(outbox.task_for_ref("op-1").unwrap(), None);
        outbox.remember_ref("op-1", "task-a", 1).unwrap();
        outbox.remember_ref("op-1", "task-b", 2).unwrap();
        assert_eq!(outbox.task_for_ref("op-1").unwrap().as_deref(), Some("task-a"));
    }
}
