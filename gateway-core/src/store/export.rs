//! One device's stored readings, page by page in (time, row) order, for the export API: the
//! rows as they are in SQLite, no downsampling.

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::schema::MEASUREMENT_COLUMNS;

/// Column names of an export: `ts, rssi` and every measurement field for Ruuvi tags; `ts, field,
/// value` for LAN devices (their telemetry is stored one value per row).
pub fn export_columns(lan: bool) -> Vec<&'static str> {
    if lan {
        vec!["ts", "field", "value"]
    } else {
        ["ts", "rssi"].into_iter().chain(MEASUREMENT_COLUMNS.iter().map(|c| c.field)).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    /// (ts, rowid): where the next page starts.
    pub cursor: (i64, i64),
    pub cells: Vec<Cell>,
}

impl ExportRow {
    /// One CSV line (RFC 4180 quoting), without the line break.
    pub fn csv(&self) -> String {
        let cell = |c: &Cell| match c {
            Cell::Null => String::new(),
            Cell::Integer(i) => i.to_string(),
            Cell::Real(r) => r.to_string(),
            Cell::Text(t) if t.contains([',', '"', '\n', '\r']) => format!("\"{}\"", t.replace('"', "\"\"")),
            Cell::Text(t) => t.clone(),
        };
        self.cells.iter().map(cell).collect::<Vec<_>>().join(",")
    }

    /// One JSON object keyed by `columns`, without the line break.
    pub fn json(&self, columns: &[&str]) -> String {
        let object: serde_json::Map<String, serde_json::Value> = columns
            .iter()
            .zip(&self.cells)
            .map(|(name, cell)| {
                let value = match cell {
                    Cell::Null => serde_json::Value::Null,
                    Cell::Integer(i) => (*i).into(),
                    Cell::Real(r) => {
                        serde_json::Number::from_f64(*r).map(Into::into).unwrap_or(serde_json::Value::Null)
                    }
                    Cell::Text(t) => t.clone().into(),
                };
                (name.to_string(), value)
            })
            .collect();
        serde_json::Value::Object(object).to_string()
    }
}

/// Up to `limit` rows of device `id` after `after` (exclusive) and before `to` (exclusive).
pub fn export_page(
    conn: &Connection,
    id: &str,
    lan: bool,
    after: (i64, i64),
    to: i64,
    limit: i64,
) -> rusqlite::Result<Vec<ExportRow>> {
    let (table, columns) = if lan {
        ("telemetry", "t.ts, t.field, t.value".to_string())
    } else {
        let measured: Vec<String> = MEASUREMENT_COLUMNS.iter().map(|c| format!("t.{}", c.column)).collect();
        ("readings", format!("t.ts, t.rssi, {}", measured.join(", ")))
    };
    let sql = format!(
        "SELECT t.rowid, {columns} FROM {table} t JOIN devices d ON d.pk = t.device_pk \
         WHERE d.id = ?1 AND (t.ts > ?2 OR (t.ts = ?2 AND t.rowid > ?3)) AND t.ts < ?4 \
         ORDER BY t.ts, t.rowid LIMIT ?5"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let width = export_columns(lan).len();
    let rows = statement.query_map(rusqlite::params![id, after.0, after.1, to, limit], |row| {
        let rowid: i64 = row.get(0)?;
        let ts: i64 = row.get(1)?;
        let cells = (1..=width)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Integer(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(v) | ValueRef::Blob(v) => Cell::Text(String::from_utf8_lossy(v).into_owned()),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ExportRow { cursor: (ts, rowid), cells })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_lines() {
        let row = ExportRow {
            cursor: (1, 1),
            cells: vec![Cell::Integer(1000), Cell::Text("a,\"b\"".into()), Cell::Real(21.5), Cell::Null],
        };
        assert_eq!(row.csv(), "1000,\"a,\"\"b\"\"\",21.5,");
        assert_eq!(row.json(&["ts", "field", "value", "x"]), r#"{"field":"a,\"b\"","ts":1000,"value":21.5,"x":null}"#);
    }

    #[test]
    fn pages_follow_time_then_row_order_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_connection(&dir.path().join("g.db")).unwrap();
        conn.execute("INSERT INTO devices (id, kind, first_seen, last_seen) VALUES ('esp', 'lan', 0, 0)", []).unwrap();
        for (ts, value) in [(10, 1.0), (10, 2.0), (20, 3.0), (30, 4.0), (40, 5.0)] {
            conn.execute(
                "INSERT INTO telemetry (device_pk, ts, field, value) VALUES (1, ?1, 'temp', ?2)",
                rusqlite::params![ts, value],
            )
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut after = (i64::MIN, i64::MIN);
        loop {
            let page = export_page(&conn, "esp", true, after, 40, 2).unwrap();
            let Some(last) = page.last() else { break };
            after = last.cursor;
            seen.extend(page.iter().map(|r| r.cells[2].clone()));
        }
        assert_eq!(
            seen,
            [1.0, 2.0, 3.0, 4.0].map(Cell::Real).to_vec(),
            "`to` is exclusive; two rows at ts 10 both come"
        );
        assert!(export_page(&conn, "other", true, (i64::MIN, i64::MIN), i64::MAX, 10).unwrap().is_empty());
    }
}
