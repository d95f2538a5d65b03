//! Simulation speed (issue 4 item 7): the one-hour Azure conversation trace at 10× its rate
//! (≈194,000 requests over the hour, 54 req/s) through a 2-variant fleet of 40 replicas. Target: under 10 s on
//! one core. The trace is in the repository (`tests/data/traces`). Results: docs/evaluation.md.

use std::time::Duration;

use allot::scenario::{self, Snapshot};
use allot::sim::trace::{self, Request};
use allot::sim::{PolicyKind, PolicySettings, SimConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/traces/AzureLLMInferenceTrace_conv_2023.csv");

/// Enough replicas for 55 req/s of conversation traffic.
const SCENARIO: &str = "
name: bench fleet
accelerators:
  - { name: H100-80GB, gpus: 256, cost_usd_per_gpu_hour: 4.25 }
  - { name: A100-80GB, gpus: 256, cost_usd_per_gpu_hour: 2.21 }
service_classes:
  - { name: premium, priority: 1, targets: [{ model: chat, ttft: { ms: 2000, statistic: p95 }, itl: { ms: 60 } }] }
  - { name: standard, priority: 2, targets: [{ model: chat, ttft: { ms: 5000, statistic: p90 }, itl: { ms: 80 } }] }
load:
  - { model: chat, class: premium, arrival_rate_rps: 22, input_tokens: 1155, output_tokens: 211 }
  - { model: chat, class: standard, arrival_rate_rps: 33, input_tokens: 1155, output_tokens: 211 }
variants:
  - { name: chat-h100, model: chat, accelerator: H100-80GB, gpus_per_replica: 4, max_batch: 64, current_replicas: 24, profile: llama2-70b/h100-80gb/tp4 }
  - { name: chat-a100, model: chat, accelerator: A100-80GB, gpus_per_replica: 4, max_batch: 64, current_replicas: 16, profile: llama2-70b/a100-80gb/tp4 }
";

fn requests(snapshot: &Snapshot) -> Vec<Request> {
    let text = std::fs::read_to_string(TRACE).unwrap_or_else(|e| panic!("{TRACE}: {e}"));
    let parsed = trace::parse_azure_csv(&text).expect("the bundled trace parses");
    // Ten times the rate over the same hour: ten copies of the trace, copy k rotated by k/10 of
    // its span (so bursts do not line up), merged in time order.
    let span = parsed.last().map_or(0.0, |r| r.arrival_s) + 1e-3;
    let mut hour: Vec<trace::TraceRequest> = (0..10)
        .flat_map(|k| {
            parsed.iter().map(move |r| trace::TraceRequest {
                arrival_s: (r.arrival_s + span * f64::from(k) / 10.0) % span,
                ..r.clone()
            })
        })
        .collect();
    hour.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    trace::assign(&hour, snapshot, &[], 1).expect("maps onto the bench scenario")
}

fn simulate(c: &mut Criterion) {
    let parsed = scenario::parse(SCENARIO).expect("bench scenario parses");
    let snapshot = scenario::validate(&parsed).expect("bench scenario is valid");
    let requests = requests(&snapshot);
    let config = SimConfig::default();
    let settings = PolicySettings::default();
    let mut group = c.benchmark_group("simulate");
    group.sample_size(10).measurement_time(Duration::from_secs(30)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.bench_function("conv_hour_x10_static", |b| {
        b.iter(|| {
            allot::sim::simulate(PolicyKind::Static, &parsed, &snapshot, &requests, &config, &settings, &mut |_| {})
        })
    });
    group.finish();
}

criterion_group!(benches, simulate);
criterion_main!(benches);
