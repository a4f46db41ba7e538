//! The SQLite store: devices and readings history in one WAL-mode database file.
//!
//! One writer thread owns all writes ([`writer`]), batching readings into transactions by count
//! and by time; readers ([`Store`]) use their own connection, which WAL lets run concurrently.

pub mod backup;
mod export;
mod history;
mod schema;
mod writer;

pub use export::{export_columns, export_page, Cell, ExportRow};
pub use history::{choose_bucket, History, HistoryError, HistoryQuery, Series};
pub use schema::{column_for_field, schema_version, MigrationError, MEASUREMENT_COLUMNS};
pub use writer::{spawn_writer, StoreSnapshot, StoreStats, WriterHandle};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

pub const DATABASE_FILE: &str = "gatehouse.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}; {}", open_advice(source))]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("database {path}: {source}")]
    Migrate { path: PathBuf, source: MigrationError },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    History(#[from] HistoryError),
    #[error("store worker stopped unexpectedly")]
    WorkerGone,
}

/// What to do when the database cannot be opened; the file itself is never touched.
pub fn open_advice(error: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "the file is damaged or is not a Gatehouse database and was left untouched: move it aside to start \
             with an empty database, or stage a backup with `gatehouse restore FILE`"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another program holds it locked (another Gatehouse on the same data directory?): stop that program and \
             start again"
        }
        Some(ErrorCode::DiskFull) => "the disk is full: free space in the data directory and start again",
        _ => "check that the data directory exists and is writable",
    }
}

/// Opens (creating when needed) and migrates the database, with the pragmas every connection uses.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open { path: path.into(), source })?;
    // WAL + NORMAL: one fsync per checkpoint instead of per commit; a crash loses at most the
    // last commits, never the database.
    conn.pragma_update(None, "journal_mode", "WAL")
        .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
        .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
        // SQLite's default, stated because it bounds memory: each connection's page cache stops
        // growing at about 2 MiB however large the database becomes (docs/benchmarks.md, soak).
        .and_then(|_| conn.pragma_update(None, "cache_size", -2000))
        .map_err(|source| StoreError::Open { path: path.into(), source })?;
    schema::migrate(&mut conn).map_err(|source| StoreError::Migrate { path: path.into(), source })?;
    Ok(conn)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub id: String,
    pub kind: String,
    pub mac: Option<String>,
    pub name: Option<String>,
    pub state: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_rssi: Option<i64>,
    pub last_receiver: Option<String>,
    pub data_format: Option<i64>,
    /// The latest reading as published on MQTT.
    pub last_reading: Option<serde_json::Value>,
    pub site: Option<String>,
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    pub model: Option<String>,
    pub manufacturer: Option<String>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    /// Declared telemetry fields and commands (LAN devices).
    pub capabilities: Option<serde_json::Value>,
    pub registered_at: Option<i64>,
    /// Registered while a pairing window was open: can be approved without a code.
    pub via_pairing: bool,
    pub claimed_by: Option<String>,
    pub claimed_at: Option<i64>,
    pub claimed_from: Option<String>,
    /// The device has connected with its own credentials since it was claimed.
    pub credentials_confirmed: bool,
    pub room: Option<String>,
    /// Bluetooth tags: offsets applied before derived values (`null` when none are set).
    pub calibration: Option<serde_json::Value>,
}

/// Access for the API and the admin modules. Cheap to clone; queries run on a blocking thread.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = open_connection(path)?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `query` on the admin connection, on tokio's blocking pool: API reads and small,
    /// rare writes (identities). Bulk writes (readings) go through the writer thread.
    pub async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&conn)
        })
        .await
        .map_err(|_| StoreError::WorkerGone)?
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(&format!("{DEVICE_SELECT} ORDER BY id"))?;
            let rows = stmt.query_map([], device_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE id = ?1"))?;
            Ok(stmt.query_row([id], device_from_row).optional()?)
        })
        .await
    }

    pub async fn history(&self, query: HistoryQuery) -> Result<Option<History>, StoreError> {
        self.run(move |conn| history::query(conn, &query)).await
    }

    pub async fn reading_count(&self) -> Result<u64, StoreError> {
        self.run(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get::<_, i64>(0))? as u64)).await
    }
}

pub(crate) const DEVICE_SELECT: &str = "SELECT id, kind, mac, name, state, first_seen, last_seen, last_rssi, \
     last_receiver, data_format, last_reading, site, device_type, model, manufacturer, firmware, hardware, \
     capabilities, registered_at, via_pairing, claimed_by, claimed_at, claimed_from, credentials_confirmed, room, \
     calibration FROM devices";

pub(crate) fn device_from_row(row: &rusqlite::Row) -> rusqlite::Result<DeviceRecord> {
    let last_reading: Option<String> = row.get(10)?;
    let capabilities: Option<String> = row.get(17)?;
    Ok(DeviceRecord {
        id: row.get(0)?,
        kind: row.get(1)?,
        mac: row.get(2)?,
        name: row.get(3)?,
        state: row.get(4)?,
        first_seen: row.get(5)?,
        last_seen: row.get(6)?,
        last_rssi: row.get(7)?,
        last_receiver: row.get(8)?,
        data_format: row.get(9)?,
        last_reading: last_reading.and_then(|json| serde_json::from_str(&json).ok()),
        site: row.get(11)?,
        device_type: row.get(12)?,
        model: row.get(13)?,
        manufacturer: row.get(14)?,
        firmware: row.get(15)?,
        hardware: row.get(16)?,
        capabilities: capabilities.and_then(|json| serde_json::from_str(&json).ok()),
        registered_at: row.get(18)?,
        via_pairing: row.get(19)?,
        claimed_by: row.get(20)?,
        claimed_at: row.get(21)?,
        claimed_from: row.get(22)?,
        credentials_confirmed: row.get(23)?,
        room: row.get(24)?,
        calibration: row.get::<_, Option<String>>(25)?.and_then(|json| serde_json::from_str(&json).ok()),
    })
}
