//! Integrations other tools rely on, against the real daemon: Prometheus metrics (parsed with a
//! Prometheus text-format parser), online backup and validated restore, readings export.

use std::time::Duration;

use gatehouse_tests::{eventually, Daemon};

fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the metrics parse as Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_parse_and_count_what_happens() {
    let daemon = Daemon::start(&["--simulate", "3", "--seed", "2"]);
    let scrape = eventually(Duration::from_secs(15), async || {
        let text = reqwest::get(daemon.http("/metrics")).await.ok()?.text().await.ok()?;
        let scrape = parse_metrics(&text);
        let all_online = value(&scrape, "gatehouse_devices_online", None)? == 3.0;
        (value(&scrape, "gatehouse_pipeline_readings_total", None)? > 0.0 && all_online).then_some(scrape)
    })
    .await
    .expect("readings and the three simulated tags are counted in /metrics");
    for name in [
        "gatehouse_mqtt_clients_connected",
        "gatehouse_mqtt_publishes_in_total",
        "gatehouse_ble_adverts_per_second",
        "gatehouse_ble_scan_restarts_total",
        "gatehouse_store_rows_written_total",
        "gatehouse_store_queue_depth",
        "gatehouse_store_database_bytes",
        "gatehouse_up",
    ] {
        assert!(value(&scrape, name, None).is_some(), "{name} is exported");
    }
    assert!(value(&scrape, "gatehouse_store_database_bytes", None).unwrap() > 0.0);
    assert!(value(&scrape, "gatehouse_http_requests_total", Some(("code", "2xx"))).unwrap() >= 1.0);

    // A refused request is counted too; tasks appear by state once there are some.
    let refused = reqwest::Client::new().get(daemon.http("/api/devices/nobody")).send().await.unwrap();
    assert_eq!(refused.status(), 404);
    let text = reqwest::get(daemon.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(value(&parse_metrics(&text), "gatehouse_http_requests_total", Some(("code", "4xx"))).unwrap() >= 1.0);
}

#[tokio::test]
async fn metrics_need_a_login_where_the_api_does() {
    let daemon = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    let anonymous = reqwest::get(daemon.http("/metrics")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let token = std::fs::read_to_string(daemon.data_dir.join("api-token")).unwrap();
    let scraped = reqwest::Client::new().get(daemon.http("/metrics")).bearer_auth(token.trim()).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
}
