//! Readings history for a time range, downsampled into buckets (count, min/avg/max per field) so
//! that a 30-day chart never ships millions of points. Columnar output, ready for uPlot.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::{schema::column_for_field, StoreError};

/// The most buckets one query may return.
pub const MAX_BUCKETS: i64 = 10_000;
/// Bucket size chosen when the caller gives none: the smallest "nice" size with at most this many.
const TARGET_BUCKETS: i64 = 500;

#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub device_id: String,
    /// Inclusive, milliseconds since the Unix epoch.
    pub from: i64,
    /// Exclusive.
    pub to: i64,
    pub bucket_ms: Option<i64>,
    pub fields: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HistoryError {
    #[error("`from` ({from}) must be before `to` ({to})")]
    EmptyRange { from: i64, to: i64 },
    #[error("bucket must be at least 1 ms")]
    BucketTooSmall,
    #[error(
        "{buckets} buckets of {bucket_ms} ms exceed the limit of {MAX_BUCKETS}; use a larger bucket or a shorter range"
    )]
    TooManyBuckets { buckets: i64, bucket_ms: i64 },
    #[error("unknown field `{0}`; fields are temperature, humidity, pressure, voltage, rssi, accelX, accelY, accelZ, txPower, movementCounter, measurementSequenceNumber, PM1.0, PM2.5, PM4.0, PM10.0, CO2, VOC, NOx, luminosity")]
    UnknownField(String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub device_id: String,
    pub from: i64,
    pub to: i64,
    pub bucket_ms: i64,
    /// Start of each bucket that holds at least one reading, ascending.
    pub ts: Vec<i64>,
    /// Readings per bucket.
    pub count: Vec<i64>,
    pub series: BTreeMap<String, Series>,
}

impl History {
    fn empty(q: &HistoryQuery, bucket_ms: i64) -> History {
        History {
            device_id: q.device_id.clone(),
            from: q.from,
            to: q.to,
            bucket_ms,
            ts: Vec::new(),
            count: Vec::new(),
            series: q.fields.iter().map(|f| (f.clone(), Series::default())).collect(),
        }
    }
}

/// One field's statistics per bucket; `None` where no reading in the bucket had the field.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Series {
    pub min: Vec<Option<f64>>,
    pub avg: Vec<Option<f64>>,
    pub max: Vec<Option<f64>>,
}

/// The smallest of 1 s, 5 s, 10 s, 30 s, 1 min, 5 min, … 1 day giving at most 500 buckets.
pub fn choose_bucket(from: i64, to: i64) -> i64 {
    const NICE: &[i64] = &[
        1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000,
        43_200_000, 86_400_000,
    ];
    let span = to.saturating_sub(from).max(1);
    // ⌈span / bucket⌉ ≤ TARGET_BUCKETS, without overflowing.
    NICE.iter().copied().find(|bucket| (span - 1) / bucket < TARGET_BUCKETS).unwrap_or(86_400_000)
}

pub(super) fn query(conn: &Connection, q: &HistoryQuery) -> Result<Option<History>, StoreError> {
    if q.from >= q.to {
        return Err(HistoryError::EmptyRange { from: q.from, to: q.to }.into());
    }
    let bucket_ms = q.bucket_ms.unwrap_or_else(|| choose_bucket(q.from, q.to));
    if bucket_ms < 1 {
        return Err(HistoryError::BucketTooSmall.into());
    }
    // Buckets are aligned to multiples of their size since the epoch, so charts stay stable.
    // (Saturating: the range may span all of i64.)
    let buckets = ((q.to - 1) / bucket_ms).saturating_sub(q.from / bucket_ms).saturating_add(1);
    if buckets > MAX_BUCKETS {
        return Err(HistoryError::TooManyBuckets { buckets, bucket_ms }.into());
    }
    let Some((device_pk, kind)): Option<(i64, String)> = conn
        .query_row("SELECT pk, kind FROM devices WHERE id = ?1", [&q.device_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    else {
        return Ok(None);
    };
    // LAN and imported devices keep their telemetry in the narrow table.
    if kind == "lan" || kind == "homeassistant" {
        return lan_history(conn, q, device_pk, bucket_ms).map(Some);
    }
    let columns = q
        .fields
        .iter()
        .map(|f| column_for_field(f).ok_or_else(|| HistoryError::UnknownField(f.clone())))
        .collect::<Result<Vec<_>, _>>()?;

    // Column names come from the fixed column table above, never from the request.
    let aggregates: String = columns.iter().map(|c| format!(", MIN({c}), AVG({c}), MAX({c})")).collect();
    let sql = format!(
        "SELECT ts / ?1 * ?1 AS bucket, COUNT(*){aggregates} FROM readings \
         WHERE device_pk = ?2 AND ts >= ?3 AND ts < ?4 GROUP BY bucket ORDER BY bucket"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params![bucket_ms, device_pk, q.from, q.to])?;
    let mut history = History::empty(q, bucket_ms);
    while let Some(row) = rows.next()? {
        history.ts.push(row.get(0)?);
        history.count.push(row.get(1)?);
        for (i, field) in q.fields.iter().enumerate() {
            let series = history.series.get_mut(field).expect("series exists for every field");
            series.min.push(row.get(2 + 3 * i)?);
            series.avg.push(row.get(3 + 3 * i)?);
            series.max.push(row.get(4 + 3 * i)?);
        }
    }
    Ok(Some(history))
}

/// History of a LAN device from the narrow `telemetry` table (one row per field and message).
fn lan_history(conn: &Connection, q: &HistoryQuery, device_pk: i64, bucket_ms: i64) -> Result<History, StoreError> {
    let mut history = History::empty(q, bucket_ms);
    let mut stmt = conn.prepare_cached(
        "SELECT ts / ?1 * ?1 AS bucket, field, COUNT(*), MIN(value), AVG(value), MAX(value) FROM telemetry \
         WHERE device_pk = ?2 AND ts >= ?3 AND ts < ?4 GROUP BY bucket, field ORDER BY bucket",
    )?;
    let mut rows = stmt.query(rusqlite::params![bucket_ms, device_pk, q.from, q.to])?;
    let mut last_bucket = None;
    while let Some(row) = rows.next()? {
        let bucket: i64 = row.get(0)?;
        let field: String = row.get(1)?;
        let Some(position) = q.fields.iter().position(|f| *f == field) else { continue };
        if last_bucket != Some(bucket) {
            last_bucket = Some(bucket);
            history.ts.push(bucket);
            history.count.push(0);
            for series in history.series.values_mut() {
                series.min.push(None);
                series.avg.push(None);
                series.max.push(None);
            }
        }
        let count: i64 = row.get(2)?;
        let last = history.ts.len() - 1;
        history.count[last] = history.count[last].max(count);
        let series = history.series.get_mut(&q.fields[position]).expect("series exists for every field");
        series.min[last] = row.get(3)?;
        series.avg[last] = row.get(4)?;
        series.max[last] = row.get(5)?;
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_choice_table() {
        let hour = 3_600_000;
        let cases = [
            (0, 60_000, 1_000),      // 1 minute → 1 s (60 buckets)
            (0, hour, 10_000),       // 1 hour → 10 s (360)
            (0, 24 * hour, 300_000), // 1 day → 5 min (288)
            (0, 7 * 24 * hour, 1_800_000),
            (0, 30 * 24 * hour, 10_800_000),
            (0, 3650 * 24 * hour, 86_400_000),
            // Extremes neither overflow nor panic.
            (i64::MIN, i64::MAX, 86_400_000),
            (i64::MAX, i64::MIN, 1_000),
            (i64::MAX - 1, i64::MAX, 1_000),
        ];
        for (from, to, expected) in cases {
            assert_eq!(choose_bucket(from, to), expected, "{from}..{to}");
        }
    }

    fn db_with_readings() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO devices (pk, id, kind, first_seen, last_seen) VALUES (1, 'd', 'ruuvi_tag', 0, 0)",
            [],
        )
        .unwrap();
        // Two buckets of 10 s: temperatures 1,2,3 at 0–2 s and 10 at 12 s; humidity only once.
        for (ts, t, h) in [(0, 1.0, None), (1_000, 2.0, Some(50.0)), (2_000, 3.0, None), (12_000, 10.0, None)] {
            conn.execute(
                "INSERT INTO readings (device_pk, ts, temperature, humidity) VALUES (1, ?1, ?2, ?3)",
                rusqlite::params![ts, t, h],
            )
            .unwrap();
        }
        conn
    }

    fn q(from: i64, to: i64, bucket: Option<i64>, fields: &[&str]) -> HistoryQuery {
        HistoryQuery {
            device_id: "d".into(),
            from,
            to,
            bucket_ms: bucket,
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn buckets_hold_min_avg_max_and_nulls() {
        let conn = db_with_readings();
        let h = query(&conn, &q(0, 20_000, Some(10_000), &["temperature", "humidity"])).unwrap().unwrap();
        assert_eq!(h.ts, vec![0, 10_000]);
        assert_eq!(h.count, vec![3, 1]);
        let t = &h.series["temperature"];
        assert_eq!(
            (t.min.clone(), t.avg.clone(), t.max.clone()),
            (vec![Some(1.0), Some(10.0)], vec![Some(2.0), Some(10.0)], vec![Some(3.0), Some(10.0)])
        );
        assert_eq!(h.series["humidity"].avg, vec![Some(50.0), None]);
        // The range bounds are inclusive–exclusive.
        let h = query(&conn, &q(1_000, 12_000, Some(10_000), &["temperature"])).unwrap().unwrap();
        assert_eq!(h.count, vec![2]);
    }

    #[test]
    fn bad_queries_are_refused_with_reasons() {
        let conn = db_with_readings();
        let err = |query: HistoryQuery| match super::query(&conn, &query) {
            Err(StoreError::History(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(q(5, 5, None, &[])), HistoryError::EmptyRange { from: 5, to: 5 });
        assert_eq!(err(q(0, 10, Some(0), &[])), HistoryError::BucketTooSmall);
        assert!(matches!(err(q(0, 100_000_000, Some(1), &[])), HistoryError::TooManyBuckets { .. }));
        for (from, to, bucket) in [(i64::MIN, i64::MAX, Some(1)), (i64::MIN, i64::MAX, None), (-1, i64::MAX, Some(1))] {
            assert!(
                matches!(err(q(from, to, bucket, &[])), HistoryError::TooManyBuckets { .. }),
                "{from}..{to} by {bucket:?}"
            );
        }
        assert_eq!(
            err(q(0, 10, None, &["temperature); DROP TABLE x;--"])),
            HistoryError::UnknownField("temperature); DROP TABLE x;--".into())
        );
        assert!(query(&conn, &HistoryQuery { device_id: "nope".into(), ..q(0, 10, None, &[]) }).unwrap().is_none());
    }
}
