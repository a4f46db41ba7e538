//! `gatehouse-bench`: the benchmarks behind docs/benchmarks.md.
//!
//! `decode`   — ns per advertisement for the Ruuvi decoder (with derived values).
//! `pipeline` — sustained readings/s through decode → dedup → MQTT publish → SQLite in a real
//!              gateway (temporary data directory, a TCP MQTT subscriber), with peak RSS.
//!
//! Run with `cargo run --release -p gateway-core --bin gatehouse-bench -- all` (or `make bench`).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gateway_core::config::Config;
use gateway_core::gateway::Gateway;
use gateway_core::pipeline::Advertisement;
use gateway_core::reading::now_ms;
use gateway_core::ruuvi::{self, Mac};
use gateway_core::simulator::{df5_advertisement, encode_df5, Df5Values};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    Decode {
        #[arg(long, default_value_t = 2_000_000)]
        iterations: u64,
    },
    Pipeline {
        /// Unique readings to push through (each fourth advertisement is also sent twice).
        #[arg(long, default_value_t = 1_000_000)]
        readings: u64,
        #[arg(long, default_value_t = 200)]
        tags: u64,
    },
    All,
}

fn main() {
    match Cli::parse().command {
        Bench::Decode { iterations } => bench_decode(iterations),
        Bench::Pipeline { readings, tags } => bench_pipeline(readings, tags),
        Bench::All => {
            bench_decode(2_000_000);
            bench_pipeline(1_000_000, 200);
        }
    }
}

fn bench_decode(iterations: u64) {
    let vectors = [
        ("DF5", "0201061BFF99040512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"),
        ("E1", "2BFF9904E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F030398FC"),
    ];
    for (name, hex) in vectors {
        let bytes = hex::decode(hex).unwrap();
        for _ in 0..10_000 {
            black_box(ruuvi::decode_advertisement(black_box(&bytes)).unwrap());
        }
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(ruuvi::decode_advertisement(black_box(&bytes)).unwrap());
        }
        let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
        println!("decode {name} (with derived values): {ns:.0} ns per advertisement over {iterations} iterations");
    }
}

fn bench_pipeline(readings: u64, tags: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.data_dir = Some(data.path().to_path_buf());
        config.site = "bench".into();
        config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.ble.enabled = false;
        config.log.level = "warn,rumqttd=error".into();
        let _ = gateway_core::logging::init(&config.log);
        let gateway = Gateway::start(config).await.expect("gateway starts");

        let delivered = Arc::new(AtomicU64::new(0));
        let subscriber = spawn_subscriber(gateway.runtime.mqtt, delivered.clone()).await;

        let ingress = gateway.ingress.clone();
        let rss_start = rss_kib();
        let start = Instant::now();
        let producer = std::thread::spawn(move || {
            let mut sequences = vec![0u16; tags as usize];
            let mut sent = 0u64;
            for i in 0..readings {
                let tag = (i % tags) as usize;
                sequences[tag] = sequences[tag].wrapping_add(1) % 65_535;
                let mut mac = [0xC0, 0, 0, 0, 0, 0];
                mac[2..].copy_from_slice(&(tag as u32).to_be_bytes());
                let values = Df5Values {
                    temperature: Some(20.0 + (i % 100) as f64 * 0.01),
                    humidity: Some(45.0),
                    pressure: Some(100_000.0 + (i % 50) as f64),
                    acceleration: [Some(0.0), Some(0.0), Some(1.0)],
                    voltage: Some(3.0),
                    tx_power: Some(4),
                    movement_counter: Some(1),
                    sequence: Some(sequences[tag]),
                    mac: Some(Mac(mac)),
                };
                let advertisement = Advertisement {
                    address: None,
                    data: df5_advertisement(&encode_df5(&values)),
                    rssi: Some(-60),
                    received_at: now_ms(),
                    measured_at: None,
                    receiver: Arc::from("bench"),
                };
                let copies = if i % 4 == 0 { 2 } else { 1 };
                for _ in 0..copies {
                    ingress.blocking_send(advertisement.clone()).expect("pipeline accepts");
                    sent += 1;
                }
            }
            sent
        });

        let mut peak_rss = rss_start;
        let mut last_report = Instant::now();
        loop {
            let written = gateway.health.report().store.writer.rows_written;
            peak_rss = peak_rss.max(rss_kib());
            if written >= readings {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                eprintln!("  … {written} of {readings} readings stored ({:.0}/s so far)", written as f64 / start.elapsed().as_secs_f64());
            }
            if start.elapsed() > Duration::from_secs(600) {
                panic!("pipeline did not finish within 10 minutes ({written} of {readings} stored)");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = start.elapsed();
        let sent = producer.join().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let report = gateway.health.report();
        let stored = gateway.store.reading_count().await.unwrap();
        println!(
            "pipeline: {readings} readings ({sent} advertisements, {} duplicates dropped) stored in {:.2} s = {:.0} readings/s",
            report.pipeline.duplicates,
            elapsed.as_secs_f64(),
            readings as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  rows in SQLite: {stored}; MQTT telemetry delivered to a TCP subscriber: {}; bus events lost to lag: {}",
            delivered.load(Ordering::Relaxed),
            report.bus.lagged
        );
        println!("  RSS: {} KiB at start, peak {} KiB (VmHWM {} KiB)", rss_start, peak_rss, hwm_kib());
        subscriber.abort();
        gateway.shutdown().await;
    });
}

async fn spawn_subscriber(addr: std::net::SocketAddr, delivered: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("bench-subscriber", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    client.subscribe("devices/bench/+/telemetry", QoS::AtMostOnce).await.unwrap();
    let task = tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    task
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn hwm_kib() -> u64 {
    status_kib("VmHWM:")
}
