//! The collector against a real Prometheus scraping a fake vLLM endpoint whose counters advance at
//! known rates. Needs `/usr/bin/prometheus` (`.ci/setup` installs it).

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use allot::prometheus::{
    ClientSettings, CollectorSettings, LoadSource, MetricsProblem, ModelMetrics, PrometheusCollector,
};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use support::prometheus::PrometheusProcess;

const TTFT_BUCKETS: [&str; 22] = [
    "0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5",
    "10.0", "20.0", "40.0", "80.0", "160.0", "640.0", "2560.0",
];
const ITL_BUCKETS: [&str; 19] = [
    "0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.2", "0.3", "0.4", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5",
    "10.0", "20.0", "40.0", "80.0",
];

/// One vLLM pod: what it serves and how its queue moves, all linear in time since start.
struct Pod {
    model: &'static str,
    pod: &'static str,
    completion_rps: f64,
    running: f64,
    /// Requests that arrive and cannot be served queue up: waiting = waiting_growth_rps · t.
    waiting_growth_rps: f64,
    prompt_tokens: f64,
    generation_tokens: f64,
    ttft_s: f64,
    itl_s: f64,
    /// Samples carry this explicit timestamp (a stuck exporter); Prometheus keeps it and writes
    /// no staleness marker, so the series ages instead of vanishing.
    frozen: bool,
}

const PODS: [Pod; 6] = [
    // steady: 4 req/s over two pods, no queue.
    Pod { model: "steady", pod: "a", completion_rps: 2.5, running: 8.0, waiting_growth_rps: 0.0, ..BASE },
    Pod { model: "steady", pod: "b", completion_rps: 1.5, running: 6.0, waiting_growth_rps: 0.0, ..BASE },
    // overloaded: 3 req/s arrive, 1 req/s completes, the queue grows by 2 req/s.
    Pod {
        model: "overloaded",
        pod: "c",
        completion_rps: 1.0,
        running: 16.0,
        waiting_growth_rps: 2.0,
        ttft_s: 4.0,
        ..BASE
    },
    Pod { model: "idle", pod: "d", completion_rps: 0.0, running: 0.0, waiting_growth_rps: 0.0, ..BASE },
    Pod { model: "frozen", pod: "e", frozen: true, ..BASE },
    // stuck: scraped fine, 5 requests in flight, counters that do not move (a hung engine).
    Pod { model: "stuck", pod: "f", completion_rps: 0.0, running: 5.0, waiting_growth_rps: 0.0, ..BASE },
];

const BASE: Pod = Pod {
    model: "",
    pod: "",
    completion_rps: 1.0,
    running: 1.0,
    waiting_growth_rps: 0.0,
    prompt_tokens: 500.0,
    generation_tokens: 150.0,
    ttft_s: 0.2,
    itl_s: 0.04,
    frozen: false,
};

struct Exporter {
    start: Instant,
    start_unix_ms: u128,
    /// Cleared to stop exporting the idle model, as when its last pod goes away.
    idle_exported: AtomicBool,
}

impl Exporter {
    /// vLLM's text exposition at this instant. Each family is written once with all its series.
    fn render(&self) -> String {
        let t = self.start.elapsed().as_secs_f64();
        let pods: Vec<&Pod> =
            PODS.iter().filter(|p| p.model != "idle" || self.idle_exported.load(Ordering::Relaxed)).collect();
        let mut out = String::new();
        let line = |out: &mut String, pod: &Pod, name: &str, extra: &str, value: f64| {
            let labels = format!("model_name=\"{}\",pod=\"{}\"{extra}", pod.model, pod.pod);
            let value = if pod.frozen { 1.0 } else { value };
            let stamp = if pod.frozen { format!(" {}", self.start_unix_ms) } else { String::new() };
            writeln!(out, "{name}{{{labels}}} {value}{stamp}").expect("writing to a String");
        };
        writeln!(out, "# TYPE vllm:request_success_total counter").expect("String");
        for pod in &pods {
            line(&mut out, pod, "vllm:request_success_total", ",finished_reason=\"stop\"", pod.completion_rps * t);
        }
        for (name, gauge) in [("vllm:num_requests_running", 0), ("vllm:num_requests_waiting", 1)] {
            writeln!(out, "# TYPE {name} gauge").expect("String");
            for pod in &pods {
                let value = if gauge == 0 { pod.running } else { pod.waiting_growth_rps * t };
                line(&mut out, pod, name, "", value);
            }
        }
        // Histograms: every observation of a pod has the same value, so a bucket holds all of them
        // or none. ITL is observed once per generated token.
        type Observed = fn(&Pod) -> (f64, f64);
        let histograms: [(&str, &[&str], Observed); 4] = [
            ("vllm:time_to_first_token_seconds", &TTFT_BUCKETS, |p| (1.0, p.ttft_s)),
            ("vllm:time_per_output_token_seconds", &ITL_BUCKETS, |p| (p.generation_tokens, p.itl_s)),
            ("vllm:request_prompt_tokens", &["100.0", "1000.0"], |p| (1.0, p.prompt_tokens)),
            ("vllm:request_generation_tokens", &["100.0", "1000.0"], |p| (1.0, p.generation_tokens)),
        ];
        for (name, buckets, observed) in histograms {
            writeln!(out, "# TYPE {name} histogram").expect("String");
            for pod in &pods {
                let (per_request, value) = observed(pod);
                let count = pod.completion_rps * t * per_request;
                for le in buckets.iter().copied().chain(["+Inf"]) {
                    let inside = le == "+Inf" || le.parse::<f64>().expect("bucket bound") >= value;
                    line(
                        &mut out,
                        pod,
                        &format!("{name}_bucket"),
                        &format!(",le=\"{le}\""),
                        if inside { count } else { 0.0 },
                    );
                }
                line(&mut out, pod, &format!("{name}_sum"), "", count * value);
                line(&mut out, pod, &format!("{name}_count"), "", count);
            }
        }
        // KV-cache usage: vLLM's current gauge on the steady pods, the pre-v0.10 name on the
        // overloaded one (full).
        writeln!(out, "# TYPE vllm:kv_cache_usage_perc gauge").expect("String");
        for pod in pods.iter().filter(|p| p.model == "steady") {
            line(&mut out, pod, "vllm:kv_cache_usage_perc", "", if pod.pod == "a" { 0.4 } else { 0.6 });
        }
        writeln!(out, "# TYPE vllm:gpu_cache_usage_perc gauge").expect("String");
        for pod in pods.iter().filter(|p| p.model == "overloaded") {
            line(&mut out, pod, "vllm:gpu_cache_usage_perc", "", 1.0);
        }
        // The gateway (llm-d's Endpoint Picker): requests queued per target model and priority
        // band, under the current gauge name and the deprecated one. "cold" is in both (the
        // current name wins), "legacy" only under the old name.
        writeln!(out, "# TYPE llm_d_epp_flow_control_queue_size gauge").expect("String");
        for (priority, queued) in [("0", 3), ("1", 2)] {
            writeln!(
                out,
                "llm_d_epp_flow_control_queue_size{{inference_pool=\"pool\",model_name=\"cold\",target_model_name=\"cold\",priority=\"{priority}\"}} {queued}"
            )
            .expect("String");
        }
        writeln!(out, "# TYPE inference_extension_flow_control_queue_size gauge").expect("String");
        for (model, queued) in [("cold", 99), ("legacy", 4)] {
            writeln!(
                out,
                "inference_extension_flow_control_queue_size{{inference_pool=\"pool\",target_model_name=\"{model}\"}} {queued}"
            )
            .expect("String");
        }
        out
    }
}

async fn metrics(State(exporter): State<Arc<Exporter>>) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], exporter.render())
}

async fn serve_exporter() -> (Arc<Exporter>, SocketAddr) {
    let start_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis();
    let exporter = Arc::new(Exporter { start: Instant::now(), start_unix_ms, idle_exported: AtomicBool::new(true) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("bound address");
    let app = Router::new().route("/metrics", get(metrics)).with_state(exporter.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("exporter serves") });
    (exporter, address)
}

fn collector(url: &str) -> PrometheusCollector {
    let settings = CollectorSettings {
        client: ClientSettings { url: url.to_string(), timeout: Duration::from_secs(5), ..ClientSettings::default() },
        rate_window: Duration::from_secs(10),
        staleness_limit: Duration::from_secs(5),
        matchers: vec!["job=\"vllm\"".to_string()],
        ..CollectorSettings::default()
    };
    PrometheusCollector::new(&settings).expect("valid settings")
}

fn models(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ok<'a>(collected: &'a BTreeMap<String, Result<ModelMetrics, MetricsProblem>>, model: &str) -> &'a ModelMetrics {
    match collected.get(model) {
        Some(Ok(metrics)) => metrics,
        other => panic!("{model}: expected metrics, got {other:?}"),
    }
}

/// `actual` within `tolerance` (relative) of `expected`.
fn assert_near(what: &str, actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance * expected.abs(),
        "{what}: {actual} not within {:.0} % of {expected}",
        tolerance * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_reads_arrivals_tokens_latency_and_freshness_from_real_prometheus() {
    let (exporter, address) = serve_exporter().await;
    let address = address.to_string();
    let prometheus = PrometheusProcess::start(&[("vllm", &address, "/metrics")], &[]).await.expect("prometheus starts");
    // Wait until the 10 s rate window is full of 1 s scrapes.
    prometheus
        .wait_for_series(
            "count_over_time(vllm:num_requests_running{model_name=\"steady\",pod=\"a\"}[12s]) >= 11",
            Duration::from_secs(40),
        )
        .await
        .expect("a full window of scrapes");
    let collector = collector(&prometheus.url);
    let collected = collector.collect(&models(&["steady", "overloaded", "idle", "frozen", "stuck", "never"])).await;
    eprintln!("collected: {collected:#?}");

    // steady: rates within 10 % (scrape timing jitter); means are ratios of counters that grow
    // together, so they are exact up to float rounding.
    let steady = ok(&collected, "steady");
    assert_near("steady completions", steady.completion_rps, 4.0, 0.10);
    assert_near("steady arrivals", steady.arrival_rps, 4.0, 0.10);
    assert_near("steady prompt tokens", steady.input_tokens.expect("requests finished"), 500.0, 0.001);
    assert_near("steady generated tokens", steady.output_tokens.expect("requests finished"), 150.0, 0.001);
    // The size histograms: every steady prompt (500 tokens) is in the 1000 bucket, none in 100.
    let prompts = steady.input_histogram.as_ref().expect("prompt histogram");
    assert_eq!(prompts.buckets.iter().map(|b| b.0).collect::<Vec<_>>(), vec![100.0, 1000.0]);
    assert_eq!(prompts.buckets[0].1, 0.0);
    assert_near("steady prompts in the 1000 bucket", prompts.buckets[1].1, prompts.count, 1e-9);
    assert_near("steady prompt histogram count", prompts.count, 4.0, 0.10);
    let generated = steady.output_histogram.as_ref().expect("generation histogram");
    assert_near("steady generations in the 1000 bucket", generated.buckets[1].1, generated.count, 1e-9);
    assert_near("steady TTFT", steady.ttft_mean_s.expect("requests finished"), 0.2, 0.001);
    assert_near("steady ITL", steady.itl_mean_s.expect("tokens generated"), 0.04, 0.001);
    assert_eq!((steady.running, steady.waiting), (14.0, 0.0));
    assert_eq!(steady.kv_usage_max, Some(0.6), "the fullest of its servers' KV caches");
    assert!(steady.age_s < 3.0, "steady age {} s", steady.age_s);

    // overloaded: completions stay at capacity; arrivals count the growing queue too.
    let overloaded = ok(&collected, "overloaded");
    assert_near("overloaded completions", overloaded.completion_rps, 1.0, 0.10);
    assert_near("overloaded arrivals", overloaded.arrival_rps, 3.0, 0.10);
    assert!(overloaded.waiting > 10.0, "queue grows: {}", overloaded.waiting);
    assert_near("overloaded TTFT", overloaded.ttft_mean_s.expect("requests finished"), 4.0, 0.001);
    assert_eq!(overloaded.kv_usage_max, Some(1.0), "read under vLLM's older gauge name");

    // idle: fresh gauges and flat counters are zero load, not missing data.
    let idle = ok(&collected, "idle");
    assert_eq!((idle.arrival_rps, idle.completion_rps, idle.running, idle.waiting), (0.0, 0.0, 0.0, 0.0));
    assert_eq!((idle.input_tokens, idle.ttft_mean_s), (None, None));
    assert_eq!(idle.input_histogram, None, "no request finished: no sizes");
    assert_eq!(idle.kv_usage_max, None, "not exported: no evidence");

    // frozen: samples stuck at the exporter's start are older than the 5 s limit.
    match collected.get("frozen") {
        Some(Err(MetricsProblem::Stale { age_s, limit_s, .. })) => {
            assert!(*age_s > 10.0 && *limit_s == 5.0, "age {age_s} s, limit {limit_s} s")
        }
        other => panic!("frozen: expected Stale, got {other:?}"),
    }
    assert_eq!(collected.get("never"), Some(&Err(MetricsProblem::Missing("never".into()))));

    // stuck: fresh samples, requests in flight, flat counters: detected, not read as zero load.
    match collected.get("stuck") {
        Some(Err(MetricsProblem::Stuck { in_flight, .. })) => assert_eq!(*in_flight, 5.0),
        other => panic!("stuck: expected Stuck, got {other:?}"),
    }

    // The gateway's queue: summed over priority bands, the current gauge preferred per model.
    let waiting = collector.gateway_waiting(&models(&["cold", "legacy", "steady"])).await.expect("gateway read");
    assert_eq!(waiting, BTreeMap::from([("cold".to_string(), 5.0), ("legacy".to_string(), 4.0)]));

    // The idle model's pods go away: Prometheus marks its series stale at the next scrape, and the
    // collector reports it Missing (never a zero load that would scale it down).
    exporter.idle_exported.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    let idle = loop {
        let collected = collector.collect(&models(&["idle"])).await;
        let idle = collected.get("idle").cloned().expect("one entry per model");
        if idle.is_err() || Instant::now() > deadline {
            break idle;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        matches!(idle, Err(MetricsProblem::Missing(_) | MetricsProblem::Stale { .. })),
        "idle after its pods left: {idle:?}"
    );
}

#[tokio::test]
async fn unreachable_prometheus_is_unavailable_for_every_model() {
    // A port that was free a moment ago: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let collected = collector(&format!("http://127.0.0.1:{port}")).collect(&models(&["a", "b"])).await;
    assert_eq!(collected.len(), 2);
    for (model, result) in &collected {
        assert!(matches!(result, Err(MetricsProblem::Unavailable(_))), "{model}: {result:?}");
    }
}

#[tokio::test]
async fn prometheus_error_answers_are_unavailable_not_panics() {
    // An HTTP server that answers every query with an error page, then one with garbage JSON.
    for (status, body) in [(503u16, "upstream down"), (200, "{\"status\":\"success\",\"data\":7}")] {
        let app = Router::new()
            .fallback(move || async move { (axum::http::StatusCode::from_u16(status).expect("valid status"), body) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
        let collected = collector(&url).collect(&models(&["a"])).await;
        assert!(matches!(collected.get("a"), Some(Err(MetricsProblem::Unavailable(_)))), "{status}: {collected:?}");
    }
}
