//! Backup, restore and export: `GET /api/backup` (also `/api/export/database`) streams a
//! consistent copy of the whole database made with SQLite's online backup API;
//! `POST /api/restore` takes such a file, validates it and stages it for the next start
//! (see `store::backup`); `GET /api/devices/{id}/export` streams one device's readings as CSV or
//! JSON lines for a time range.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use super::extract::{Path, Query};
use super::params::parse_time;
use super::{ApiError, ApiState};
use crate::reading::now_ms;
use crate::store::backup;

/// The largest database `POST /api/restore` accepts.
const RESTORE_MAX_BYTES: u64 = 8 << 30;
/// Rows per query while exporting (the export streams; memory stays flat).
const EXPORT_PAGE: i64 = 5_000;

fn failed(code: &'static str, what: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code,
        message: format!("{what}: {error} (is the disk full?)"),
    }
}

/// `GET /api/backup`.
pub async fn download(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let dir = tempfile::tempdir_in(&state.data_dir).map_err(|e| failed("backup_failed", "cannot back up", e))?;
    let copy = dir.path().join("gatehouse-backup.db");
    let target = copy.clone();
    state
        .store
        .run(move |conn| Ok(backup::backup_to(conn, &target)?))
        .await
        .map_err(|e| failed("backup_failed", "cannot back up", e))?;
    let file = tokio::fs::File::open(&copy).await.map_err(|e| failed("backup_failed", "cannot back up", e))?;
    let length = file.metadata().await.map_err(|e| failed("backup_failed", "cannot back up", e))?.len();
    // The directory (and the copy) go once the body is sent: the stream owns them.
    let stream = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
        let _keep = &dir;
        chunk
    });
    let name = format!("gatehouse-{}-{}.db", state.site, now_ms() / 1000);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /api/restore` with the database file as the body.
pub async fn restore(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let dir =
        tempfile::tempdir_in(&state.data_dir).map_err(|e| failed("restore_failed", "cannot receive the file", e))?;
    let upload = dir.path().join("upload.db");
    let mut file =
        tokio::fs::File::create(&upload).await.map_err(|e| failed("restore_failed", "cannot receive the file", e))?;
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("restore_upload", format!("the upload broke off: {e}")))?;
        received += chunk.len() as u64;
        if received > RESTORE_MAX_BYTES {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "restore_too_large",
                message: format!("a database over {} GiB is not accepted", RESTORE_MAX_BYTES >> 30),
            });
        }
        file.write_all(&chunk).await.map_err(|e| failed("restore_failed", "cannot receive the file", e))?;
    }
    file.flush().await.map_err(|e| failed("restore_failed", "cannot receive the file", e))?;
    drop(file);
    let data_dir = state.data_dir.clone();
    let staged = tokio::task::spawn_blocking(move || backup::stage(&data_dir, &upload))
        .await
        .map_err(|e| failed("restore_failed", "cannot stage the restore", e))?;
    match staged {
        Ok(info) => {
            tracing::warn!(
                devices = info.devices,
                readings = info.readings,
                "a restore is staged; it replaces the database at the next start"
            );
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "staged": true,
                    "backup": info,
                    "message": "restart Gatehouse to use the restored database; the current one is kept next to it",
                })),
            )
                .into_response())
        }
        Err(backup::RestoreError::Io(e)) => Err(failed("restore_failed", "cannot stage the restore", e)),
        Err(refused) => Err(ApiError::bad_request("restore_invalid", format!("not restored: {refused}"))),
    }
}

/// `GET /api/devices/{id}/export?from=&to=&format=csv|json`: every stored reading of the
/// device in the range (default: everything), oldest first. Ruuvi tags: one row per reading with
/// every measurement column; LAN devices: one row per value (ts, field, value).
pub async fn export_readings(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let from = query.get("from").map(|v| parse_time("from", v, now)).transpose()?.unwrap_or(0);
    let to = query.get("to").map(|v| parse_time("to", v, now)).transpose()?.unwrap_or(i64::MAX);
    let csv = match query.get("format").map(String::as_str) {
        None | Some("csv") => true,
        Some("json") => false,
        Some(other) => return Err(ApiError::bad_request("format", format!("format `{other}`: use csv or json"))),
    };
    let Some(device) = state.store.device(&id).await? else {
        return Err(ApiError::not_found("unknown_device", format!("no device {id}")));
    };
    let lan = device.kind == "lan" || device.kind == "homeassistant";
    let columns = crate::store::export_columns(lan);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    if csv {
        let _ = sender.send(Ok(format!("{}\n", columns.join(",")))).await;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        // Strictly after (from - 1, any row): `from` itself is included.
        let mut after = (from.saturating_sub(1), i64::MAX);
        loop {
            let id = id.clone();
            let page =
                store.run(move |conn| Ok(crate::store::export_page(conn, &id, lan, after, to, EXPORT_PAGE)?)).await;
            let rows = match page {
                Ok(rows) => rows,
                Err(error) => {
                    let _ = sender.send(Err(std::io::Error::other(error.to_string()))).await;
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            after = last.cursor;
            let mut chunk = String::new();
            for row in &rows {
                if csv {
                    chunk.push_str(&row.csv());
                } else {
                    chunk.push_str(&row.json(&columns));
                }
                chunk.push('\n');
            }
            if sender.send(Ok(chunk)).await.is_err() || (rows.len() as i64) < EXPORT_PAGE {
                return;
            }
        }
    });
    let stream = tokio_stream_from(receiver);
    let (content_type, extension) =
        if csv { ("text/csv; charset=utf-8", "csv") } else { ("application/x-ndjson", "jsonl") };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}.{extension}\"", device.id)),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
