//! Online backup and validated restore of the SQLite database.
//!
//! A backup is taken with SQLite's online backup API while the gateway keeps writing (a
//! consistent snapshot, not a file copy). A restore never replaces the live database under a
//! running gateway: the file is checked (a SQLite database, `integrity_check` ok, a schema this
//! version understands, Gatehouse's tables present), staged as `restore-pending.db`, and swapped
//! in at the next start, the previous database kept next to it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// A staged restore waiting for the next start.
pub const PENDING_RESTORE: &str = "restore-pending.db";
/// Tables a Gatehouse database always has (from the first migrations on).
const REQUIRED_TABLES: &[&str] = &["devices", "readings", "identities"];

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the file is not a SQLite database ({0})")]
    NotSqlite(String),
    #[error("the database is damaged: integrity_check says {0}")]
    Damaged(String),
    #[error("the database has schema version {found}, newer than this Gatehouse understands ({known}); upgrade first")]
    TooNew { found: i64, known: i64 },
    #[error("the database is not a Gatehouse database: table `{0}` is missing")]
    NotGatehouse(String),
    #[error("cannot stage the restore in the data directory: {0} (is the disk full?)")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    pub schema_version: i64,
    pub devices: i64,
    pub readings: i64,
    pub bytes: u64,
}

/// Copies the database behind `conn` into `target` with the online backup API, 256 pages at a
/// time so that writers are never blocked for long.
pub fn backup_to(conn: &Connection, target: &Path) -> rusqlite::Result<()> {
    let mut destination = Connection::open(target)?;
    let backup = rusqlite::backup::Backup::new(conn, &mut destination)?;
    backup.run_to_completion(256, std::time::Duration::from_millis(5), None)?;
    drop(backup);
    // A standalone file: no WAL next to it.
    destination.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// Checks that `path` is an intact Gatehouse database this version can open.
pub fn validate(path: &Path) -> Result<BackupInfo, RestoreError> {
    let bytes = std::fs::metadata(path)?.len();
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| RestoreError::NotSqlite(e.to_string()))?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|e| RestoreError::NotSqlite(e.to_string()))?;
    if check != "ok" {
        return Err(RestoreError::Damaged(check));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| RestoreError::NotSqlite(e.to_string()))?;
    let known = super::schema::schema_version() as i64;
    if version > known {
        return Err(RestoreError::TooNew { found: version, known });
    }
    for table in REQUIRED_TABLES {
        let present: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [table],
                |row| row.get(0),
            )
            .map_err(|e| RestoreError::NotSqlite(e.to_string()))?;
        if !present {
            return Err(RestoreError::NotGatehouse(table.to_string()));
        }
    }
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap_or(0)
    };
    Ok(BackupInfo { schema_version: version, devices: count("devices"), readings: count("readings"), bytes })
}

/// Validates `upload` and moves it into the data directory as the pending restore (replacing an
/// earlier pending one).
pub fn stage(data_dir: &Path, upload: &Path) -> Result<BackupInfo, RestoreError> {
    let info = validate(upload)?;
    let staging = data_dir.join(format!("{PENDING_RESTORE}.partial"));
    std::fs::copy(upload, &staging)?;
    std::fs::File::open(&staging)?.sync_all()?;
    std::fs::rename(&staging, data_dir.join(PENDING_RESTORE))?;
    Ok(info)
}

/// At start, before the database is opened: swaps a pending restore in. Returns where the
/// previous database was kept. A pending file that fails validation is set aside, not used.
pub fn apply_pending(data_dir: &Path, database: &Path, now_s: i64) -> Result<Option<PathBuf>, RestoreError> {
    let pending = data_dir.join(PENDING_RESTORE);
    if !pending.exists() {
        return Ok(None);
    }
    if let Err(error) = validate(&pending) {
        let rejected = data_dir.join(format!("{PENDING_RESTORE}.rejected-{now_s}"));
        std::fs::rename(&pending, &rejected)?;
        return Err(error);
    }
    let kept = data_dir.join(format!("{}.before-restore-{now_s}", file_name(database)));
    let had_database = database.exists();
    if had_database {
        std::fs::rename(database, &kept)?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", database.display()));
            if side.exists() {
                std::fs::rename(&side, PathBuf::from(format!("{}{suffix}", kept.display())))?;
            }
        }
    }
    std::fs::rename(&pending, database)?;
    Ok(had_database.then_some(kept))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "gatehouse.db".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gatehouse_db(path: &Path, devices: usize) {
        let conn = super::super::open_connection(path).unwrap();
        for i in 0..devices {
            conn.execute(
                "INSERT INTO devices (id, kind, first_seen, last_seen) VALUES (?1, 'ruuvi', 0, 0)",
                [format!("d{i}")],
            )
            .unwrap();
        }
    }

    #[test]
    fn backup_validate_stage_and_apply() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("gatehouse.db");
        gatehouse_db(&live, 2);
        let copy = dir.path().join("copy.db");
        backup_to(&Connection::open(&live).unwrap(), &copy).unwrap();
        let info = validate(&copy).unwrap();
        assert_eq!((info.devices, info.schema_version), (2, super::super::schema::schema_version() as i64));

        // The live database moves on; the staged backup replaces it at the next start.
        gatehouse_db(&live, 0);
        Connection::open(&live).unwrap().execute("DELETE FROM devices", []).unwrap();
        stage(dir.path(), &copy).unwrap();
        let kept = apply_pending(dir.path(), &live, 42).unwrap().expect("the previous database is kept");
        assert!(kept.ends_with("gatehouse.db.before-restore-42"));
        assert_eq!(validate(&live).unwrap().devices, 2);
        assert_eq!(validate(&kept).unwrap().devices, 0);
        assert_eq!(apply_pending(dir.path(), &live, 43).unwrap(), None, "nothing pending any more");

        // A restore into an empty data directory keeps nothing, and says so.
        let fresh = tempfile::tempdir().unwrap();
        stage(fresh.path(), &copy).unwrap();
        assert_eq!(apply_pending(fresh.path(), &fresh.path().join("gatehouse.db"), 44).unwrap(), None);
        assert_eq!(validate(&fresh.path().join("gatehouse.db")).unwrap().devices, 2);
    }

    #[test]
    fn refuses_what_is_not_an_intact_gatehouse_database() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.db");
        std::fs::write(&text, "hello, this is not SQLite at all, just some text padding it out").unwrap();
        assert!(matches!(validate(&text), Err(RestoreError::NotSqlite(_))));

        let other = dir.path().join("other.db");
        Connection::open(&other).unwrap().execute("CREATE TABLE t (x)", []).unwrap();
        assert!(matches!(validate(&other), Err(RestoreError::NotGatehouse(t)) if t == "devices"));

        let newer = dir.path().join("newer.db");
        gatehouse_db(&newer, 0);
        Connection::open(&newer).unwrap().pragma_update(None, "user_version", 999).unwrap();
        assert!(matches!(validate(&newer), Err(RestoreError::TooNew { found: 999, .. })));

        // A staged file that is bad by the next start is set aside; the live database stays.
        let live = dir.path().join("gatehouse.db");
        gatehouse_db(&live, 1);
        std::fs::copy(&text, dir.path().join(PENDING_RESTORE)).unwrap();
        assert!(apply_pending(dir.path(), &live, 7).is_err());
        assert!(dir.path().join(format!("{PENDING_RESTORE}.rejected-7")).exists());
        assert_eq!(validate(&live).unwrap().devices, 1);
    }
}
