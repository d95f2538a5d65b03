//! Plan time on generated fleets (small, medium, large; each with and without GPU scarcity) and
//! capacity sizing per variant. Numbers and how to read them: docs/performance.md.

use std::time::Duration;

use allot::analyze::fleet;
use allot::optimize;
use allot::scenario::{Snapshot, validate};
use allot::synthetic::{FleetSpec, fleet};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn snapshot(spec: FleetSpec) -> Snapshot {
    validate(&fleet(spec)).expect("generated fleets are valid")
}

fn plan_time(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    for (name, spec) in [("small", FleetSpec::SMALL), ("medium", FleetSpec::MEDIUM), ("large", FleetSpec::LARGE)] {
        for (mode, spec) in [("ample", spec), ("scarce", spec.scarce())] {
            let snapshot = snapshot(spec);
            group.bench_with_input(BenchmarkId::new(name, mode), &snapshot, |b, s| b.iter(|| optimize::plan(s)));
        }
    }
    group.finish();
}

fn capacity_sizing(c: &mut Criterion) {
    let mut group = c.benchmark_group("capacity");
    let snapshot = snapshot(FleetSpec::MEDIUM);
    let pairs: usize = snapshot.variants.iter().map(|v| snapshot.models[v.model].demands.len()).sum();
    group.throughput(criterion::Throughput::Elements(pairs as u64));
    group.bench_function("medium_fleet_all_variants", |b| b.iter(|| fleet::capacities(&snapshot)));
    group.finish();
}

criterion_group!(benches, plan_time, capacity_sizing);
criterion_main!(benches);
