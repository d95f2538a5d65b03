//! One controller cycle's decision on a generated fleet: the plan plus holds and HPA-style
//! stabilization, and the metrics update and exposition that follow. Numbers: docs/performance.md.

use std::time::Duration;

use allot::controller::{Memory, Observed, decide};
use allot::scenario::Scenario;
use allot::synthetic::{FleetSpec, fleet};
use allot::telemetry::Metrics;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn observed(scenario: &Scenario, load_factor: f64, at_s: f64) -> Observed {
    let mut scenario = scenario.clone();
    for l in &mut scenario.load {
        l.arrival_rate_rps *= load_factor;
    }
    Observed::from_scenario(scenario, at_s).expect("generated fleets are valid")
}

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("controller_cycle");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    for (name, spec) in [("small", FleetSpec::SMALL), ("medium", FleetSpec::MEDIUM)] {
        let scenario = fleet(spec);
        // A first cycle: one plan.
        let first = observed(&scenario, 1.0, 0.0);
        group.bench_with_input(BenchmarkId::new("first", name), &first, |b, o| {
            b.iter(|| decide(o, None, &mut Memory::default(), 1))
        });
        // Load halves within the scale-down window: the window holds replicas and the fleet is
        // planned again around them (two plans).
        let mut stabilizer = Memory::default();
        let busy = decide(&first, None, &mut stabilizer, 1);
        let quiet = observed(&scenario, 0.5, 60.0);
        group.bench_with_input(BenchmarkId::new("held_scale_down", name), &quiet, |b, o| {
            b.iter(|| decide(o, Some(&busy), &mut stabilizer.clone(), 2))
        });
        let metrics = Metrics::new();
        group.bench_with_input(BenchmarkId::new("metrics_update_and_encode", name), &first, |b, o| {
            b.iter(|| {
                metrics.record_decision(o, &busy, 0.1);
                metrics.encode().len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
