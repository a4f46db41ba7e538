//! SQL for alerts (raised by devices or rules, cleared, acknowledged) and for alert rules.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::rules::{Condition, Rule};
use crate::bus::AlertRecord;

const ALERT_COLUMNS: &str = "id, device_id, ts, severity, code, message, source, state, acknowledged_at, \
    acknowledged_by, details, rule_id, cleared_at";

fn alert_from_row(row: &Row, site: &str) -> rusqlite::Result<AlertRecord> {
    let details: Option<String> = row.get(10)?;
    Ok(AlertRecord {
        id: row.get(0)?,
        device_id: row.get(1)?,
        site: site.to_string(),
        ts: row.get(2)?,
        severity: row.get(3)?,
        code: row.get(4)?,
        message: row.get(5)?,
        source: row.get(6)?,
        state: row.get(7)?,
        acknowledged_at: row.get(8)?,
        acknowledged_by: row.get(9)?,
        details: details.and_then(|d| serde_json::from_str(&d).ok()),
        rule_id: row.get(11)?,
        cleared_at: row.get(12)?,
    })
}

/// Stores a new alert and returns its id.
pub fn insert(conn: &Connection, alert: &AlertRecord) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO alerts (device_id, ts, severity, code, message, source, details, state, rule_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            alert.device_id,
            alert.ts,
            alert.severity,
            alert.code,
            alert.message,
            alert.source,
            alert.details.as_ref().map(|d| d.to_string()),
            alert.state,
            alert.rule_id
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn get(conn: &Connection, id: i64, site: &str) -> rusqlite::Result<Option<AlertRecord>> {
    conn.query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), [id], |r| alert_from_row(r, site))
        .optional()
}

/// Marks an active alert cleared; returns it afterwards, or `None` when it was not active (so
/// nothing is announced twice).
pub fn clear(conn: &Connection, id: i64, at: i64, site: &str) -> rusqlite::Result<Option<AlertRecord>> {
    let changed = conn.execute(
        "UPDATE alerts SET state = 'cleared', cleared_at = ?2 WHERE id = ?1 AND state = 'active'",
        params![id, at],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    get(conn, id, site)
}

/// Records who acknowledged the alert; returns it afterwards, or `None` when there is no such
/// alert or it was acknowledged before (the first acknowledgement is kept).
pub fn acknowledge(conn: &Connection, id: i64, by: &str, at: i64, site: &str) -> rusqlite::Result<Option<AlertRecord>> {
    let changed = conn.execute(
        "UPDATE alerts SET acknowledged_at = ?2, acknowledged_by = ?3 WHERE id = ?1 AND acknowledged_at IS NULL",
        params![id, at, by],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    get(conn, id, site)
}

/// Newest first. `state`: `active` or `cleared`; `unacknowledged` limits to alerts nobody acknowledged.
pub fn list(
    conn: &Connection,
    site: &str,
    device_id: Option<&str>,
    state: Option<&str>,
    unacknowledged: bool,
    limit: i64,
) -> rusqlite::Result<Vec<AlertRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE (?1 IS NULL OR device_id = ?1) AND (?2 IS NULL OR state = ?2) \
         AND (?3 = 0 OR acknowledged_at IS NULL) ORDER BY id DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![device_id, state, unacknowledged, limit], |r| alert_from_row(r, site))?;
    rows.collect()
}

/// Active alerts nobody acknowledged yet (what a status bar or tray shows).
pub fn open_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COUNT(*) FROM alerts WHERE state = 'active' AND acknowledged_at IS NULL", [], |r| r.get(0))
}

/// (rule id, device id, alert id) of every active rule alert, to carry them over a restart.
pub fn active_rule_alerts(conn: &Connection) -> rusqlite::Result<Vec<(i64, String, i64)>> {
    let mut stmt =
        conn.prepare("SELECT rule_id, device_id, id FROM alerts WHERE state = 'active' AND rule_id IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

const RULE_COLUMNS: &str =
    "id, name, devices, field, condition, threshold, clear_at, for_ms, severity, enabled, created_at";

fn rule_from_row(row: &Row) -> rusqlite::Result<Rule> {
    let condition: String = row.get(4)?;
    Ok(Rule {
        id: row.get(0)?,
        name: row.get(1)?,
        devices: row.get(2)?,
        field: row.get(3)?,
        condition: serde_json::from_value(serde_json::Value::String(condition)).unwrap_or(Condition::Silent),
        threshold: row.get(5)?,
        clear_at: row.get(6)?,
        for_ms: row.get(7)?,
        severity: row.get(8)?,
        enabled: row.get(9)?,
        created_at: row.get(10)?,
    })
}

fn condition_name(condition: Condition) -> String {
    serde_json::to_value(condition).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn rules(conn: &Connection) -> rusqlite::Result<Vec<Rule>> {
    let mut stmt = conn.prepare(&format!("SELECT {RULE_COLUMNS} FROM alert_rules ORDER BY id"))?;
    let rows = stmt.query_map([], rule_from_row)?;
    rows.collect()
}

pub fn rule(conn: &Connection, id: i64) -> rusqlite::Result<Option<Rule>> {
    conn.query_row(&format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = ?1"), [id], rule_from_row).optional()
}

/// Inserts a rule (its `id` is ignored) and returns the new id.
pub fn insert_rule(conn: &Connection, rule: &Rule) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO alert_rules (name, devices, field, condition, threshold, clear_at, for_ms, severity, enabled, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            rule.name,
            rule.devices,
            rule.field,
            condition_name(rule.condition),
            rule.threshold,
            rule.clear_at,
            rule.for_ms,
            rule.severity,
            rule.enabled,
            rule.created_at
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Replaces a rule's definition, keeping its id.
pub fn update_rule(conn: &Connection, rule: &Rule) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE alert_rules SET name = ?2, devices = ?3, field = ?4, condition = ?5, threshold = ?6, clear_at = ?7, \
         for_ms = ?8, severity = ?9, enabled = ?10 WHERE id = ?1",
        params![
            rule.id,
            rule.name,
            rule.devices,
            rule.field,
            condition_name(rule.condition),
            rule.threshold,
            rule.clear_at,
            rule.for_ms,
            rule.severity,
            rule.enabled
        ],
    )?;
    Ok(changed > 0)
}

pub fn delete_rule(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM alert_rules WHERE id = ?1", [id])? > 0)
}

/// When each known device last sent anything (to watch for silence across restarts).
pub fn last_seen(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT id, last_seen FROM devices")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_change_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(&dir.path().join("t.db")).unwrap();
        let alert = AlertRecord::example("active", None, None);
        let id = insert(&conn, &alert).unwrap();
        let first = acknowledge(&conn, id, "ann", 5, "home").unwrap().expect("acknowledged");
        assert_eq!(first.acknowledged_by.as_deref(), Some("ann"));
        assert_eq!(acknowledge(&conn, id, "bob", 6, "home").unwrap(), None, "the first acknowledgement is kept");
        assert_eq!(clear(&conn, id, 7, "home").unwrap().expect("cleared").state, "cleared");
        assert_eq!(clear(&conn, id, 8, "home").unwrap(), None, "cleared once");
        assert_eq!(acknowledge(&conn, 999, "ann", 9, "home").unwrap(), None);
    }
}
