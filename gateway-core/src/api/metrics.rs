//! `GET /metrics`: the gateway's counters in the Prometheus text format, for Prometheus,
//! Grafana Agent, VictoriaMetrics… Everything comes from the same snapshot as `/api/health`
//! (mapped by the `SERIES` table, whose every path a unit test checks against a real report),
//! plus tasks by state and the database's size, read at scrape time, and HTTP requests by
//! status class, counted by `count_requests`. Encoding is `prometheus-client`'s.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, ApiState};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

/// (metric name without the `gatehouse_` prefix, kind, JSON pointer into the health report, help).
const SERIES: &[(&str, Kind, &str, &str)] = &[
    ("uptime_seconds", Kind::Gauge, "/uptimeSeconds", "Seconds since the gateway started"),
    ("devices_online", Kind::Gauge, "/devicesOnline", "Devices (tags and LAN devices) currently online"),
    ("mqtt_clients_connected", Kind::Gauge, "/mqtt/clientsConnected", "MQTT clients connected now"),
    ("mqtt_connections_accepted", Kind::Counter, "/mqtt/connectionsAccepted", "MQTT connections accepted"),
    ("mqtt_connect_refused", Kind::Counter, "/mqtt/connectRefused", "MQTT CONNECTs refused"),
    ("mqtt_auth_failures", Kind::Counter, "/mqtt/authFailures", "MQTT logins with wrong credentials"),
    ("mqtt_publishes_in", Kind::Counter, "/mqtt/publishesIn", "PUBLISH packets received from clients"),
    ("mqtt_publishes_out", Kind::Counter, "/mqtt/publishesOut", "PUBLISH packets sent to clients"),
    ("mqtt_publishes_denied", Kind::Counter, "/mqtt/publishesDenied", "PUBLISHes refused by the ACL"),
    ("mqtt_throttled", Kind::Counter, "/mqtt/throttled", "Times a client was paused for its publish rate"),
    ("mqtt_malformed_packets", Kind::Counter, "/mqtt/malformedPackets", "Malformed MQTT packets"),
    (
        "mqtt_subscriptions_denied",
        Kind::Counter,
        "/mqtt/subscriptionsDenied",
        "MQTT subscription filters refused (ACL, shared, repeated)",
    ),
    ("mqtt_oversized_packets", Kind::Counter, "/mqtt/oversizedPackets", "MQTT packets over the size limit"),
    (
        "mqtt_websocket_origins_refused",
        Kind::Counter,
        "/mqtt/websocketOriginsRefused",
        "Browser pages of other hosts refused at the MQTT WebSocket handshake",
    ),
    (
        "mqtt_dropped_for_slow_subscribers",
        Kind::Counter,
        "/mqtt/droppedForSlowSubscribers",
        "Messages dropped because a subscriber could not keep up",
    ),
    (
        "mqtt_telemetry_rejected",
        Kind::Counter,
        "/mqtt/telemetryRejected",
        "Device telemetry messages refused as invalid",
    ),
    ("pipeline_advertisements", Kind::Counter, "/pipeline/advertisements", "Advertisements received from all sources"),
    ("pipeline_readings", Kind::Counter, "/pipeline/readings", "Readings decoded and accepted"),
    ("pipeline_duplicates", Kind::Counter, "/pipeline/duplicates", "Advertisements dropped as duplicates"),
    (
        "pipeline_rejected_malformed",
        Kind::Counter,
        "/pipeline/rejectedMalformed",
        "Advertisements refused as malformed",
    ),
    ("store_rows_written", Kind::Counter, "/store/rowsWritten", "Rows written to SQLite"),
    ("store_write_errors", Kind::Counter, "/store/writeErrors", "Failed SQLite write batches"),
    ("store_queue_depth", Kind::Gauge, "/store/queueDepth", "Events waiting for the store writer"),
    ("store_rows_deleted_by_retention", Kind::Counter, "/store/rowsDeletedByRetention", "Rows removed by retention"),
    ("bus_lagged", Kind::Counter, "/bus/lagged", "Events lossy subscribers missed"),
    ("clock_steps", Kind::Counter, "/clock/steps", "Steps of the system clock seen (NTP sync, time set by hand)"),
    ("memory_heap_in_use_bytes", Kind::Gauge, "/memory/heapInUseBytes", "Heap bytes in use (glibc's count)"),
    ("memory_heap_free_bytes", Kind::Gauge, "/memory/heapFreeBytes", "Freed heap bytes the allocator keeps"),
    ("memory_sqlite_bytes", Kind::Gauge, "/memory/sqliteBytes", "Bytes SQLite holds (page caches, statements)"),
    (
        "ble_adverts_per_second",
        Kind::Gauge,
        "/bluetooth/advertsPerSecond",
        "Ruuvi advertisements per second from the local scanner",
    ),
    ("ble_advertisements", Kind::Counter, "/bluetooth/advertisements", "Ruuvi advertisements from the local scanner"),
    (
        "ble_dropped_queue_full",
        Kind::Counter,
        "/bluetooth/droppedQueueFull",
        "Scanner advertisements dropped because the pipeline was full",
    ),
    ("ble_scan_restarts", Kind::Counter, "/bluetooth/recoveries/scanRestarts", "Scans restarted by the watchdog"),
    (
        "ble_new_managers",
        Kind::Counter,
        "/bluetooth/recoveries/newManagers",
        "New BlueZ connections made by the watchdog",
    ),
    (
        "ble_power_cycles",
        Kind::Counter,
        "/bluetooth/recoveries/powerCycles",
        "Scans restarted after the adapter was switched off and on",
    ),
    ("ble_reconnects", Kind::Counter, "/bluetooth/recoveries/reconnects", "Scanner sessions restarted after an error"),
    ("ble_errors", Kind::Counter, "/bluetooth/errors", "Scanner errors"),
    ("receivers_advertisements", Kind::Counter, "/receivers/advertisements", "Advertisements from remote receivers"),
    ("receivers_http_rejected", Kind::Counter, "/receivers/httpRejected", "Receiver HTTP posts refused"),
    ("tasks_created", Kind::Counter, "/tasks/created", "Tasks created"),
    ("tasks_succeeded", Kind::Counter, "/tasks/succeeded", "Tasks that succeeded"),
    ("tasks_failed", Kind::Counter, "/tasks/failed", "Tasks that failed"),
    ("tasks_timed_out", Kind::Counter, "/tasks/timedOut", "Tasks that timed out"),
    ("tasks_retries", Kind::Counter, "/tasks/retries", "Task retries"),
    ("alerts_raised", Kind::Counter, "/alerts/raised", "Alerts raised"),
    ("lifecycle_claims", Kind::Counter, "/lifecycle/claims", "Devices claimed"),
    ("lifecycle_claim_failures", Kind::Counter, "/lifecycle/claimFailures", "Claim attempts refused"),
];

/// HTTP requests answered, by status class (1xx…5xx).
#[derive(Debug, Default)]
pub struct HttpStats {
    by_class: [AtomicU64; 5],
}

impl HttpStats {
    fn record(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts every answer of the HTTP server (including refusals by the guard).
pub async fn count_requests(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.http.record(response.status());
    response
}

/// Writes the snapshot `report` (the health report as JSON) and the extra readings as text.
fn render(
    report: &serde_json::Value,
    tasks_by_state: &[(String, i64)],
    database_bytes: u64,
    http: &HttpStats,
) -> String {
    let mut registry = Registry::with_prefix("gatehouse");
    for &(name, kind, pointer, help) in SERIES {
        let value = report.pointer(pointer).cloned().unwrap_or_default();
        match (kind, value.as_i64()) {
            (Kind::Counter, _) => {
                let counter: Counter = Counter::default();
                counter.inc_by(value.as_u64().unwrap_or(0));
                registry.register(name, help, counter);
            }
            (Kind::Gauge, Some(whole)) => {
                let gauge: Gauge = Gauge::default();
                gauge.set(whole);
                registry.register(name, help, gauge);
            }
            (Kind::Gauge, None) => {
                let gauge: Gauge<f64, AtomicU64> = Gauge::default();
                gauge.set(value.as_f64().unwrap_or(0.0));
                registry.register(name, help, gauge);
            }
        }
    }
    let tasks: Family<Vec<(String, String)>, Gauge> = Family::default();
    for (state, count) in tasks_by_state {
        tasks.get_or_create(&vec![("state".to_string(), state.clone())]).set(*count);
    }
    registry.register("tasks", "Tasks in the store by state", tasks);
    let size: Gauge = Gauge::default();
    size.set(database_bytes as i64);
    registry.register("store_database_bytes", "Size of the SQLite database and its WAL", size);
    let requests: Family<Vec<(String, String)>, Counter> = Family::default();
    for (i, count) in http.by_class.iter().enumerate() {
        requests
            .get_or_create(&vec![("code".to_string(), format!("{}xx", i + 1))])
            .inc_by(count.load(Ordering::Relaxed));
    }
    registry.register("http_requests", "HTTP requests answered, by status class", requests);
    render_upstreams(&mut registry, report.pointer("/upstreams").and_then(|u| u.as_array()).map(Vec::as_slice));
    let store_ok: Gauge = Gauge::default();
    store_ok.set(i64::from(report.pointer("/status").and_then(|s| s.as_str()) == Some("ok")));
    registry.register("up", "1 while the store writes normally, 0 when degraded", store_ok);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// Per-bridge series, labelled `upstream="<name>"`.
fn render_upstreams(registry: &mut Registry, upstreams: Option<&[serde_json::Value]>) {
    type Labels = Vec<(String, String)>;
    let upstreams = upstreams.unwrap_or_default();
    if upstreams.is_empty() {
        return;
    }
    let connected: Family<Labels, Gauge> = Family::default();
    let buffered: Family<Labels, Gauge> = Family::default();
    let buffered_bytes: Family<Labels, Gauge> = Family::default();
    let delivered: Family<Labels, Counter> = Family::default();
    let dropped: Family<Labels, Counter> = Family::default();
    let failures: Family<Labels, Counter> = Family::default();
    let requests: Family<Labels, Counter> = Family::default();
    let number =
        |bridge: &serde_json::Value, pointer: &str| bridge.pointer(pointer).and_then(|v| v.as_u64()).unwrap_or(0);
    for bridge in upstreams {
        let name = bridge.pointer("/name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let labels = vec![("upstream".to_string(), name.clone())];
        let is_connected = bridge.pointer("/status/state").and_then(|v| v.as_str()) == Some("connected");
        connected.get_or_create(&labels).set(i64::from(is_connected));
        buffered.get_or_create(&labels).set(number(bridge, "/buffer/messages") as i64);
        buffered_bytes.get_or_create(&labels).set(number(bridge, "/buffer/bytes") as i64);
        delivered.get_or_create(&labels).inc_by(number(bridge, "/counters/delivered"));
        for (reason, pointer) in [("size", "/counters/droppedSize"), ("age", "/counters/droppedAge")] {
            let labels = vec![("upstream".to_string(), name.clone()), ("reason".to_string(), reason.to_string())];
            dropped.get_or_create(&labels).inc_by(number(bridge, pointer));
        }
        failures.get_or_create(&labels).inc_by(number(bridge, "/stats/connectionFailures"));
        for (outcome, pointer) in [
            ("accepted", "/stats/commandsAccepted"),
            ("rejected", "/stats/commandsRejected"),
            ("duplicate", "/stats/commandsDuplicate"),
        ] {
            let labels = vec![("upstream".to_string(), name.clone()), ("outcome".to_string(), outcome.to_string())];
            requests.get_or_create(&labels).inc_by(number(bridge, pointer));
        }
    }
    registry.register("upstream_connected", "1 while the upstream bridge is connected", connected);
    registry.register("upstream_buffered_messages", "Messages waiting in the upstream buffer", buffered);
    registry.register("upstream_buffered_bytes", "Bytes waiting in the upstream buffer", buffered_bytes);
    registry.register("upstream_delivered", "Messages the upstream broker acknowledged", delivered);
    registry.register("upstream_dropped", "Buffered messages dropped unsent, by bound", dropped);
    registry.register("upstream_connection_failures", "Failed or lost upstream connections", failures);
    registry.register("upstream_task_requests", "Task requests from upstream, by outcome", requests);
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let report = serde_json::to_value(state.health.report()).unwrap_or_default();
    let tasks_by_state = state
        .store
        .run(|conn| {
            let mut statement = conn.prepare_cached("SELECT state, COUNT(*) FROM tasks GROUP BY state")?;
            let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .map_err(ApiError::from)?;
    let database = std::path::PathBuf::from(&state.health.database);
    let mut wal = database.clone().into_os_string();
    wal.push("-wal");
    let database_bytes =
        [database.into_os_string(), wal].iter().filter_map(|path| std::fs::metadata(path).ok()).map(|m| m.len()).sum();
    let text = render(&report, &tasks_by_state, database_bytes, &state.http);
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A health report as the gateway serialises it, with every counter set to a distinct value.
    fn sample_report() -> serde_json::Value {
        serde_json::json!({
            "status": "ok", "uptimeSeconds": 5, "devicesOnline": 3,
            "mqtt": {"clientsConnected": 2, "connectionsAccepted": 7, "connectRefused": 1, "authFailures": 1,
                     "publishesIn": 40, "publishesOut": 41, "publishesDenied": 2, "subscriptionsDenied": 3, "throttled": 0,
                     "malformedPackets": 0, "oversizedPackets": 0, "websocketOriginsRefused": 0, "droppedForSlowSubscribers": 0, "telemetryRejected": 0},
            "pipeline": {"advertisements": 100, "readings": 60, "duplicates": 40, "rejectedMalformed": 1},
            "store": {"rowsWritten": 60, "writeErrors": 0, "queueDepth": 0, "rowsDeletedByRetention": 0},
            "bus": {"lagged": 0},
            "clock": {"now": 1700000000000i64, "steps": 1, "lastStepMs": -3600000, "lastStepAt": 1700000000000i64},
            "memory": {"heapInUseBytes": 9000000, "heapFreeBytes": 500000, "sqliteBytes": 3000000, "sqliteHighwaterBytes": 3100000},
            "bluetooth": {"advertsPerSecond": 1.5, "advertisements": 9, "droppedQueueFull": 0, "errors": 0,
                          "recoveries": {"scanRestarts": 1, "newManagers": 0, "powerCycles": 0, "reconnects": 0}},
            "receivers": {"advertisements": 0, "httpRejected": 0},
            "tasks": {"created": 4, "succeeded": 3, "failed": 1, "timedOut": 0, "retries": 0},
            "alerts": {"raised": 2},
            "lifecycle": {"claims": 1, "claimFailures": 0},
            "upstreams": [{"name": "fleet", "status": {"state": "connected"}, "buffer": {"messages": 5, "bytes": 700},
                           "counters": {"delivered": 90, "droppedSize": 3, "droppedAge": 0},
                           "stats": {"connectionFailures": 2, "commandsAccepted": 1, "commandsRejected": 4, "commandsDuplicate": 0}}]
        })
    }

    #[test]
    fn every_series_points_into_the_real_health_report() {
        let report = sample_report();
        for (name, _, pointer, _) in SERIES {
            assert!(report.pointer(pointer).is_some_and(|v| v.is_number()), "{name}: {pointer} is not in the report");
        }
        let names: std::collections::HashSet<_> = SERIES.iter().map(|s| s.0).collect();
        assert_eq!(names.len(), SERIES.len(), "metric names are unique");
    }

    #[test]
    fn renders_counters_gauges_and_labelled_families() {
        let http = HttpStats::default();
        http.record(StatusCode::OK);
        http.record(StatusCode::OK);
        http.record(StatusCode::UNAUTHORIZED);
        let text = render(&sample_report(), &[("succeeded".into(), 3), ("queued".into(), 1)], 4096, &http);
        for line in [
            "# TYPE gatehouse_mqtt_publishes_in counter",
            "gatehouse_mqtt_publishes_in_total 40",
            "gatehouse_devices_online 3",
            "gatehouse_ble_adverts_per_second 1.5",
            "gatehouse_tasks{state=\"queued\"} 1",
            "gatehouse_store_database_bytes 4096",
            "gatehouse_memory_sqlite_bytes 3000000",
            "gatehouse_http_requests_total{code=\"2xx\"} 2",
            "gatehouse_http_requests_total{code=\"4xx\"} 1",
            "gatehouse_up 1",
            "gatehouse_upstream_connected{upstream=\"fleet\"} 1",
            "gatehouse_upstream_buffered_messages{upstream=\"fleet\"} 5",
            "gatehouse_upstream_delivered_total{upstream=\"fleet\"} 90",
            "gatehouse_upstream_dropped_total{upstream=\"fleet\",reason=\"size\"} 3",
            "gatehouse_upstream_task_requests_total{upstream=\"fleet\",outcome=\"rejected\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
