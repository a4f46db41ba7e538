//! SQL for desired device configuration and the device's reports.

use rusqlite::{params, Connection, OptionalExtension};

use super::{ConfigView, Reported};

pub fn get(conn: &Connection, device_id: &str) -> rusqlite::Result<Option<ConfigView>> {
    conn.query_row(
        "SELECT device_id, desired, version, updated_at, updated_by, sent_at, reported_version, reported_status, \
         reported_message, reported_at FROM device_config WHERE device_id = ?1",
        [device_id],
        |r| {
            let desired: String = r.get(1)?;
            let reported_version: Option<i64> = r.get(6)?;
            let version: i64 = r.get(2)?;
            let reported = match reported_version {
                Some(v) => Some(Reported {
                    version: v,
                    status: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                    message: r.get(8)?,
                    at: r.get::<_, Option<i64>>(9)?.unwrap_or_default(),
                }),
                None => None,
            };
            let in_sync = reported.as_ref().is_some_and(|p| p.version == version && p.status == "applied");
            Ok(ConfigView {
                device_id: r.get(0)?,
                desired: serde_json::from_str(&desired).unwrap_or_default(),
                version,
                updated_at: r.get(3)?,
                updated_by: r.get(4)?,
                sent_at: r.get(5)?,
                reported,
                in_sync,
            })
        },
    )
    .optional()
}

/// Stores a new desired configuration with the next version number; returns that version.
pub fn set_desired(conn: &Connection, device_id: &str, desired: &str, by: &str, at: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "INSERT INTO device_config (device_id, desired, version, updated_at, updated_by) VALUES (?1, ?2, 1, ?3, ?4) \
         ON CONFLICT(device_id) DO UPDATE SET desired = excluded.desired, version = version + 1, \
         updated_at = excluded.updated_at, updated_by = excluded.updated_by, sent_at = NULL \
         RETURNING version",
        params![device_id, desired, at, by],
        |r| r.get(0),
    )
}

pub fn mark_sent(conn: &Connection, device_id: &str, at: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE device_config SET sent_at = ?2 WHERE device_id = ?1", params![device_id, at])?;
    Ok(())
}

pub fn set_reported(conn: &Connection, device_id: &str, reported: &Reported) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE device_config SET reported_version = ?2, reported_status = ?3, reported_message = ?4, reported_at = ?5 \
         WHERE device_id = ?1",
        params![device_id, reported.version, reported.status, reported.message, reported.at],
    )?;
    Ok(changed > 0)
}
