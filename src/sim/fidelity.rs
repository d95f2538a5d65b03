//! Fidelity (issue 4 item 6): the simulator against the profiling data it was fitted on, and
//! against the analytical queue model of `analyze::queue`.

use std::collections::BTreeMap;

use super::engine::{self, SimConfig, SimOutcome};
use super::policy;
use super::trace::{Request, SplitMix64};
use crate::analyze::Role;
use crate::analyze::queue::{ReplicaModel, Workload};
use crate::scenario::{self, Scenario, Snapshot};

/// Batch-sweep rows of the Splitwise profiling data (see the file's header for provenance).
const BATCH_SWEEP: &str = include_str!("../../tests/data/batch_sweep.csv");

/// A one-variant fleet on a bundled profile.
pub(crate) fn one_replica(profile: &str, max_batch: u32, role: Role, replicas: u32) -> Snapshot {
    scenario::validate(&one_replica_scenario(profile, max_batch, role, replicas))
        .unwrap_or_else(|e| panic!("{profile}: {e}"))
}

/// The scenario of [`one_replica`].
pub(crate) fn one_replica_scenario(profile: &str, max_batch: u32, role: Role, replicas: u32) -> Scenario {
    let text = format!(
        "accelerators: [{{ name: GPU, gpus: 512, cost_usd_per_gpu_hour: 1 }}]\n\
         service_classes: [{{ name: c, priority: 1, targets: [{{ model: m, ttft: {{ ms: 1e6 }}, itl: {{ ms: 1e6 }} }}] }}]\n\
         load: [{{ model: m, class: c, arrival_rate_rps: 1, input_tokens: 512, output_tokens: 128 }}]\n\
         variants: [{{ name: v, model: m, accelerator: GPU, gpus_per_replica: 8, max_batch: {max_batch}, role: {}, \
         current_replicas: {replicas}, profile: {profile} }}]\n",
        role.as_str()
    );
    scenario::parse(&text).unwrap_or_else(|e| panic!("{profile}: {e}"))
}

fn run_static(snapshot: &Snapshot, requests: &[Request], config: &SimConfig) -> SimOutcome {
    engine::run(snapshot, requests, &mut policy::Static::current(snapshot), config, &mut |_| {})
}

fn quiet_config() -> SimConfig {
    SimConfig { control_period_s: 1e9, drain_s: 1e9, ..SimConfig::default() }
}

/// One batch-sweep point: mean prompt_time, token_time and e2e_time (ms).
#[derive(Clone, Copy, Debug, Default)]
struct Point {
    prompt_ms: f64,
    token_ms: f64,
    e2e_ms: f64,
}

/// Mean times per (model/hardware/tp, batch) of the batch sweep, keeping only points whose own
/// numbers agree (prompt_time + 127·token_time within 2 % of e2e_time): the `h100-80gb-pcap`
/// rows copy e2e_time (and token_time) from the uncapped machine while their prompt_time is
/// their own, and TP 2 at batch ≥ 32 is the KV-memory-limited regime the data's README flags.
fn profiled_batches() -> BTreeMap<(String, u32), Point> {
    let mut sums: BTreeMap<(String, u32), (Point, f64)> = BTreeMap::new();
    for line in BATCH_SWEEP.lines().filter(|l| !l.starts_with('#') && !l.starts_with("model")) {
        let f: Vec<&str> = line.split(',').collect();
        let key = format!("{}/{}/tp{}", f[0], f[1], f[10]);
        let batch: u32 = f[3].parse().expect("batch_size");
        let num = |i: usize| f[i].parse::<f64>().expect("a number");
        let e = sums.entry((key, batch)).or_default();
        e.0.prompt_ms += num(7);
        e.0.token_ms += num(8);
        e.0.e2e_ms += num(9);
        e.1 += 1.0;
    }
    sums.into_iter()
        .map(|(k, (p, n))| (k, Point { prompt_ms: p.prompt_ms / n, token_ms: p.token_ms / n, e2e_ms: p.e2e_ms / n }))
        .filter(|(_, p)| ((p.prompt_ms + 127.0 * p.token_ms) - p.e2e_ms).abs() <= 0.02 * p.e2e_ms)
        .collect()
}

/// Completion time (ms) of `batch` requests of 512 prompt / 128 output tokens arriving together.
fn simulated_batch_ms(snapshot: &Snapshot, batch: u32) -> f64 {
    let requests: Vec<Request> = (0..batch)
        .map(|_| Request { arrival_s: 0.0, input_tokens: 512, output_tokens: 128, model: 0, demand: 0 })
        .collect();
    // The profiling harness prefilled the whole batch in one step.
    let mut snapshot = snapshot.clone();
    snapshot.variants[0].engine.max_num_batched_tokens = u32::MAX;
    snapshot.variants[0].engine.chunked_prefill = false;
    let out = run_static(&snapshot, &requests, &quiet_config());
    1000.0 * out.requests.iter().map(|o| o.done_s.expect("finished")).fold(0.0, f64::max)
}

#[test]
fn steps_compose_like_the_profiled_batches() {
    // With each point's own measured prefill and ITL as the profile, the simulated batch is
    // prompt_time + 127·token_time: the first token comes from the prefill step.
    let points = profiled_batches();
    assert!(points.len() >= 60, "{} consistent points", points.len());
    for ((profile, batch), p) in &points {
        let mut snapshot = one_replica(profile, 64, Role::Both, 1);
        let params = &mut snapshot.variants[0].profile.as_mut().expect("profile").params;
        *params = crate::analyze::LatencyParams {
            alpha_ms: p.token_ms,
            beta_ms: 0.0,
            gamma_ms: p.prompt_ms,
            delta_ms: 0.0,
            ..crate::analyze::LatencyParams::default()
        };
        let sim = simulated_batch_ms(&snapshot, *batch);
        assert!((sim - (p.prompt_ms + 127.0 * p.token_ms)).abs() < 1e-6 * sim, "{profile} batch {batch}");
        assert!((sim - p.e2e_ms).abs() <= 0.05 * p.e2e_ms, "{profile} batch {batch}: {sim:.0} vs {:.0}", p.e2e_ms);
    }
}

#[test]
fn simulated_batches_with_fitted_profiles_reproduce_the_batch_sweep() {
    let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for ((profile, batch), p) in profiled_batches() {
        let sim = simulated_batch_ms(&one_replica(&profile, 64, Role::Both, 1), batch);
        let err = (sim - p.e2e_ms).abs() / p.e2e_ms;
        // Single points carry the fit's residual: the linear ITL(n) misses the data's bend at
        // batch 32 by up to 6 %.
        // With η fitted, up to 7.3 % (llama2-70b A100 tp2 at batch 1).
        assert!(err <= 0.08, "{profile} batch {batch}: simulated {sim:.0} ms vs profiled {:.0} ms", p.e2e_ms);
        let t = totals.entry(profile).or_default();
        t.0 += sim;
        t.1 += p.e2e_ms;
    }
    assert_eq!(totals.len(), 12, "every bundled profile is checked");
    for (profile, (sim, data)) in totals {
        // The end-to-end time of the whole sweep: within 5 % (measured: within 1 %).
        assert!((sim - data).abs() <= 0.05 * data, "{profile}: sweep {sim:.0} ms vs {data:.0} ms");
    }
}

/// Poisson arrivals of fixed-size requests, seeded.
fn poisson(rate_rps: f64, n: usize, input: u32, output: u32, seed: u64) -> Vec<Request> {
    let mut rng = SplitMix64::new(seed);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += -(1.0 - rng.next_f64()).ln() / rate_rps;
            Request { arrival_s: t, input_tokens: input, output_tokens: output, model: 0, demand: 0 }
        })
        .collect()
}

/// Simulated means (ms): TTFT, token-weighted ITL, end-to-end; the first 10 % is warm-up.
fn simulated_means(out: &SimOutcome, requests: &[Request]) -> (f64, f64, f64) {
    let skip = requests.len() / 10;
    let (mut ttft, mut e2e, mut gaps, mut tokens, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (r, o) in requests.iter().zip(&out.requests).skip(skip) {
        let (first, done) = (o.first_token_s.expect("first token"), o.done_s.expect("done"));
        ttft += first - r.arrival_s;
        e2e += done - r.arrival_s;
        gaps += done - first;
        tokens += f64::from(r.output_tokens - 1);
        n += 1.0;
    }
    (1000.0 * ttft / n, 1000.0 * gaps / tokens, 1000.0 * e2e / n)
}

/// The analytical model (`analyze::queue`) against the simulator, one replica, Poisson
/// arrivals of fixed-size requests (the conversation trace's means) at 30, 60 and 90 % of μ(B):
/// mean TTFT, token-weighted ITL and end-to-end latency.
///
/// History: the model used to charge a new request prefill(n+1), the prefill of the whole batch,
/// as its TTFT (2.4–12.5× the simulator's), and left the other requests' prefill stalls out of
/// ITL (11–40 % low). Continuous batching prefills only newly admitted prompts, which stall the
/// running requests' decode steps; the model now says so (`ReplicaModel::decode_step_ms`,
/// `first_token_ms`) while keeping T(n), and this test holds it to the simulator.
#[test]
fn analytical_model_matches_the_simulated_ttft_itl_and_end_to_end() {
    let (input, output) = (1155, 211);
    let o1 = f64::from(output - 1);
    for (profile, b) in [("llama2-70b/h100-80gb/tp4", 64), ("llama2-70b/a100-80gb/tp4", 16)] {
        let snapshot = one_replica(profile, b, Role::Both, 1);
        let params = snapshot.variants[0].profile.as_ref().expect("profile").params;
        let model =
            ReplicaModel::simple(params, b, Role::Both, Workload::constant(f64::from(input), f64::from(output)));
        for load in [0.3, 0.6, 0.9] {
            let lambda = load * model.saturation_rps();
            let requests = poisson(lambda, 20_000, input, output, 7);
            let out = run_static(&snapshot, &requests, &quiet_config());
            let (ttft, itl, e2e) = simulated_means(&out, &requests);
            let m = model.analyze(lambda).expect("stable");
            let a_e2e = m.mean_ttft_ms() + o1 * m.mean_itl_ms();
            eprintln!(
                "{profile} B={b} load {load}: TTFT sim {ttft:.0} model {:.0} | ITL sim {itl:.1} model {:.1} | \
                 e2e sim {e2e:.0} model {a_e2e:.0}",
                m.mean_ttft_ms(),
                m.mean_itl_ms()
            );
            let ctx = format!("{profile} B={b} at {load}");
            assert!((e2e - a_e2e).abs() <= E2E_TOLERANCE * e2e, "{ctx}: e2e sim {e2e:.0} vs model {a_e2e:.0}");
            assert!((m.mean_itl_ms() - itl).abs() <= ITL_TOLERANCE * itl, "{ctx}: ITL sim {itl:.1} vs model");
            if load <= 0.6 {
                let ttft_error = (m.mean_ttft_ms() - ttft).abs();
                assert!(
                    ttft_error <= TTFT_TOLERANCE * ttft,
                    "{ctx}: TTFT sim {ttft:.0} vs model {:.0}",
                    m.mean_ttft_ms()
                );
            } else {
                // Known gap (docs/latency-model.md, "Limits"): at 90 % of μ(B) the simulated batch
                // sits full far more often than the birth–death chain says (sim p90 TTFT ≈ 2 s),
                // and the model's mean TTFT is 40–60 % low. The planner's max_utilization (0.9)
                // stops at this point; what is asserted is only that the model sees the wait grow.
                let light = model.analyze(0.3 * model.saturation_rps()).expect("stable").mean_ttft_ms();
                assert!(m.mean_ttft_ms() > 1.2 * light, "{ctx}: the model sees no wait");
                assert!(m.mean_ttft_ms() < ttft, "{ctx}: the gap is now the other way; tighten this test");
            }
        }
    }
}

/// Stated tolerances of the analytical model against the simulator (docs/evaluation.md).
const E2E_TOLERANCE: f64 = 0.08;
const ITL_TOLERANCE: f64 = 0.10;
/// TTFT up to 60 % of μ(B); at 90 % the queueing wait dominates TTFT and the model's is
/// optimistic (see the test).
const TTFT_TOLERANCE: f64 = 0.20;

/// GuideLLM's own runs (models/data/guidellm-exp2: each mix's rate runs that pass the fit's
/// steady-state screen) replayed through the simulator with the profile fitted from them: the
/// runs' rates and arrival pattern (GuideLLM's `constant` spacing), their prompt and output
/// sizes, one replica of vLLM's defaults. The simulator steps the engine itself (token budget,
/// chunked prefill, batch admission), so this checks the fitted profile through an
/// implementation independent of the analytical queue.
#[test]
fn guidellm_runs_replayed_through_the_simulator_match_the_measurements() {
    use crate::analyze::fit::guidellm;
    use crate::analyze::fit::measurement::Load;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/data/guidellm-exp2");
    let snapshot = one_replica("qwen2.5-14b/unrecorded-gpu/tp1", 1024, Role::Both, 1);
    let (mut ttft_errors, mut itl_errors) = (Vec::new(), Vec::new());
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (the data lives in the repository)"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 16, "every mix");
    for path in &files {
        let mix = path.file_stem().expect("stem").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).expect("readable");
        let runs = guidellm::parse_csv(&text, &path.display().to_string(), &mix).expect("parses");
        for m in runs.iter().filter(|m| m.steady_state().is_ok()) {
            let Load::Rate { arrival_cv2, .. } = m.load else { continue };
            let (rate, input, output) =
                (m.achieved_rps, m.mean_input_tokens.round() as u32, (m.mean_output_tokens.round() as u32).max(2));
            let n = ((rate * 240.0) as usize).clamp(300, 4000);
            let requests: Vec<Request> = if arrival_cv2 < 0.5 {
                (0..n)
                    .map(|i| Request {
                        arrival_s: i as f64 / rate,
                        input_tokens: input,
                        output_tokens: output,
                        model: 0,
                        demand: 0,
                    })
                    .collect()
            } else {
                poisson(rate, n, input, output, 11)
            };
            let out = run_static(&snapshot, &requests, &quiet_config());
            let skip = n / 10;
            let (mut ttft, mut itl, mut count) = (0.0, 0.0, 0.0);
            for (r, o) in requests.iter().zip(&out.requests).skip(skip) {
                let (first, done) = (o.first_token_s.expect("first token"), o.done_s.expect("done"));
                ttft += 1000.0 * (first - r.arrival_s);
                itl += 1000.0 * (done - first) / f64::from(r.output_tokens - 1);
                count += 1.0;
            }
            let (ttft, itl) = (ttft / count, itl / count);
            let (Some(m_ttft), Some(m_itl)) = (m.ttft.mean_ms, m.itl_request.mean_ms) else { continue };
            eprintln!(
                "{}: TTFT measured {m_ttft:.1} simulated {ttft:.1} | ITL measured {m_itl:.2} simulated {itl:.2}",
                m.label
            );
            ttft_errors.push((ttft / m_ttft - 1.0).abs());
            itl_errors.push((itl / m_itl - 1.0).abs());
        }
    }
    let mape = |e: &[f64]| e.iter().sum::<f64>() / e.len() as f64;
    eprintln!(
        "{} runs: TTFT MAPE {:.1} %, ITL MAPE {:.1} %",
        ttft_errors.len(),
        100.0 * mape(&ttft_errors),
        100.0 * mape(&itl_errors)
    );
    assert!(ttft_errors.len() >= 90, "{} runs replayed", ttft_errors.len());
    assert!(mape(&itl_errors) <= 0.15, "ITL MAPE {}", mape(&itl_errors));
    assert!(mape(&ttft_errors) <= 0.15, "TTFT MAPE {}", mape(&ttft_errors));
}
