//! A simulated cluster for the real controller loop (`allot serve --simulate`): the discrete-event
//! engine runs on its own thread, paced against the wall clock (`speed` simulated seconds per
//! second); each control tick it publishes what a cluster would show — pods by state, load per
//! model and class, vLLM-format metrics — and takes the replicas the controller last applied.
//! [`LiveCluster`] is the [`Cluster`] the loop observes and acts on; nothing here plans.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::engine::{Finished, Sample};
use super::policy::{Observation, Policy, observed_cluster};
use super::trace::{Request, SplitMix64};
use super::{SimConfig, run};
use crate::analyze::sizes::SizeDistribution;
use crate::controller::history::{History, ObservedAttainment};
use crate::controller::{ActError, ActErrorKind, Applied, Cluster, ClusterError, Decision, Observed};
use crate::scenario::{Scenario, Snapshot, validate};
use crate::telemetry::vllm;

/// What the engine thread last published.
#[derive(Default)]
struct Published {
    observed: Option<Observed>,
    /// Replicas per variant the controller applied (indexed like the snapshot's variants).
    desired: Option<Vec<u32>>,
    exposition: VllmCounters,
    /// Finished requests per (model, class) held to the class's targets, since the last observe.
    observed_slo: BTreeMap<(String, String), ObservedAttainment>,
    finished: bool,
}

/// The cluster handle: observe reads the engine's latest publication, apply hands it replicas.
#[derive(Clone)]
pub struct LiveCluster {
    shared: Arc<Mutex<Published>>,
    variant_index: BTreeMap<String, usize>,
    /// Where observed attainment goes each cycle (the controller's history).
    history: Option<Arc<History>>,
}

/// Settings of a live simulation.
#[derive(Clone, Debug)]
pub struct LiveSettings {
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    pub config: SimConfig,
}

impl LiveCluster {
    /// Start the engine thread on `requests` (sorted by arrival) over the scenario's fleet.
    pub fn start(scenario: Scenario, requests: Vec<Request>, settings: LiveSettings) -> Result<Self, String> {
        let snapshot = validate(&scenario).map_err(|e| e.to_string())?;
        let variant_index = snapshot.variants.iter().enumerate().map(|(i, v)| (v.name.clone(), i)).collect();
        let shared = Arc::new(Mutex::new(Published::default()));
        let bridge = Bridge {
            shared: shared.clone(),
            scenario,
            started: Instant::now(),
            speed: settings.speed.max(1e-3),
            seen_samples: 0,
            seen_until_s: f64::NEG_INFINITY,
        };
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("allot-sim".into())
            .spawn(move || {
                let mut bridge = bridge;
                run(&snapshot, &requests, &mut bridge, &settings.config, &mut |_| {});
                lock(&thread_shared).finished = true;
            })
            .map_err(|e| format!("cannot start the simulator thread: {e}"))?;
        // The engine publishes at its first control tick (t = 0); wait for it so the first cycle
        // has something to observe.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let published = lock(&shared);
            if published.observed.is_some() || published.finished {
                break;
            }
            drop(published);
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Self { shared, variant_index, history: None })
    }

    /// Stage what the simulated servers observed of SLO attainment into `history` at each
    /// observation, so each cycle's record carries the requests finished since the previous one.
    pub fn with_history(mut self, history: Arc<History>) -> Self {
        self.history = Some(history);
        self
    }

    /// vLLM-format metrics of the simulated servers (Prometheus text format).
    pub fn vllm_metrics(&self) -> String {
        lock(&self.shared).exposition.render()
    }

    /// Whether the trace has been replayed to its end.
    pub fn finished(&self) -> bool {
        lock(&self.shared).finished
    }
}

fn lock(m: &Mutex<Published>) -> std::sync::MutexGuard<'_, Published> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster for LiveCluster {
    async fn observe(&mut self) -> Result<Observed, ClusterError> {
        let mut published = lock(&self.shared);
        let observed_slo = std::mem::take(&mut published.observed_slo);
        if let Some(history) = &self.history {
            history.stage_observed(&observed_slo);
        }
        if published.finished {
            return Err(ClusterError::Finished("the simulated trace has ended; holding the last plan".into()));
        }
        let observed = published
            .observed
            .clone()
            .ok_or_else(|| ClusterError::NotSynced("the simulator has not published a sample yet".into()))?;
        if let Some(o) = published.observed.as_mut() {
            // Each start-up is learned once: later publications carry only new ones.
            o.evidence.startups_s.clear();
        }
        Ok(observed)
    }

    async fn apply(&mut self, decision: &Decision) -> Applied {
        let mut published = lock(&self.shared);
        let mut desired = published.desired.clone().unwrap_or_else(|| vec![0; self.variant_index.len()]);
        let mut applied = Applied::default();
        for v in &decision.variants {
            match self.variant_index.get(&v.name) {
                Some(&i) => {
                    if desired[i] != v.desired {
                        applied.scaled.push(v.name.clone());
                    }
                    desired[i] = v.desired;
                }
                None => applied
                    .errors
                    .push((v.name.clone(), ActError::new(ActErrorKind::Scale, "no such simulated variant"))),
            }
        }
        published.desired = Some(desired);
        applied
    }
}

/// The engine's policy: paces, publishes, and returns the controller's replicas.
struct Bridge {
    shared: Arc<Mutex<Published>>,
    scenario: Scenario,
    started: Instant,
    speed: f64,
    seen_samples: usize,
    /// Time of the newest sample already published (start-ups are reported once).
    seen_until_s: f64,
}

impl Policy for Bridge {
    fn name(&self) -> &str {
        "controller"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Vec<u32> {
        // Pace: simulated time may not run ahead of the wall clock × speed.
        let due = Duration::from_secs_f64(obs.now_s / self.speed);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
        let observed = observed_cluster(obs, &self.scenario, self.seen_until_s);
        let mut shared = lock(&self.shared);
        for sample in obs.samples.iter().skip(self.seen_samples) {
            shared.exposition.add(obs.snapshot, sample);
            count_attainment(&mut shared.observed_slo, obs.snapshot, sample);
        }
        self.seen_samples = obs.samples.len();
        if let Some(mut observed) = observed {
            // Start-ups not yet taken by an observation stay in the publication.
            if let Some(previous) = shared.observed.take() {
                for (variant, started) in previous.evidence.startups_s {
                    observed.evidence.startups_s.entry(variant).or_default().extend(started);
                }
            }
            shared.observed = Some(observed);
            self.seen_until_s = obs.latest().map_or(self.seen_until_s, |s| s.t_s);
        }
        shared.desired.clone().unwrap_or_else(|| obs.desired.to_vec())
    }
}

/// Add a sample's finished requests to the observed attainment of each class of their model:
/// a request meets a class when its TTFT and mean ITL are within the class's target values (the
/// servers do not know a request's class, as vLLM's histograms do not; docs/dashboards.md).
fn count_attainment(counts: &mut BTreeMap<(String, String), ObservedAttainment>, snapshot: &Snapshot, sample: &Sample) {
    for (model, finished) in snapshot.models.iter().zip(&sample.finished) {
        if finished.is_empty() {
            continue;
        }
        for demand in &model.demands {
            let met = finished
                .iter()
                .filter(|f| {
                    demand.slo.ttft.is_none_or(|t| 1e3 * f.ttft_s <= t.ms)
                        && demand.slo.itl.is_none_or(|t| f.itl_s.is_none_or(|itl| 1e3 * itl <= t.ms))
                })
                .count() as u64;
            let key = (model.name.clone(), snapshot.classes[demand.class].name.clone());
            let entry = counts.entry(key).or_default();
            *entry = ObservedAttainment::of(entry.met + met, entry.requests + finished.len() as u64);
        }
    }
}

/// Cumulative vLLM metrics per model, as the simulated servers would export them.
#[derive(Default)]
struct VllmCounters {
    models: BTreeMap<String, ModelCounters>,
}

#[derive(Default)]
struct ModelCounters {
    success: u64,
    prompt_tokens: u64,
    generation_tokens: u64,
    running: u64,
    waiting: u64,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    request_prompt: Histogram,
    request_generation: Histogram,
}

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, plus +Inf last.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], value: f64) {
        self.observe_n(buckets, value, 1);
    }

    fn observe_n(&mut self, buckets: &[f64], value: f64, n: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len() + 1];
        }
        let i = buckets.partition_point(|&b| b < value);
        self.counts[i] += n;
        self.sum += value * n as f64;
        self.count += n;
    }

    fn render(&self, out: &mut String, name: &str, model: &str, buckets: &[f64]) {
        let mut cumulative = 0;
        for (i, b) in buckets.iter().enumerate() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let _ =
                writeln!(out, "{name}_bucket{{model_name=\"{model}\",le=\"{}\"}} {cumulative}", vllm::format_le(*b));
        }
        let _ = writeln!(out, "{name}_bucket{{model_name=\"{model}\",le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{model_name=\"{model}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{model_name=\"{model}\"}} {}", self.count);
    }
}

impl VllmCounters {
    fn add(&mut self, snapshot: &Snapshot, sample: &Sample) {
        for (m, model) in snapshot.models.iter().enumerate() {
            let c = self.models.entry(model.name.clone()).or_default();
            c.running = 0;
            c.waiting = u64::from(sample.backlog.get(m).copied().unwrap_or(0));
            for (v, s) in sample.variants.iter().enumerate() {
                if snapshot.variants[v].model == m {
                    c.running += u64::from(s.running);
                    c.waiting += u64::from(s.waiting);
                }
            }
            for f in sample.finished.get(m).map_or(&[][..], Vec::as_slice) {
                c.record(f);
            }
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let families: [(&str, &str, &str); 5] = [
            ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches."),
            ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed."),
            ("vllm:request_success_total", "counter", "Count of successfully processed requests."),
            ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed."),
            ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed."),
        ];
        for (name, kind, help) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (model, c) in &self.models {
                let value = match name {
                    "vllm:num_requests_running" => c.running,
                    "vllm:num_requests_waiting" => c.waiting,
                    "vllm:request_success_total" => c.success,
                    "vllm:prompt_tokens_total" => c.prompt_tokens,
                    _ => c.generation_tokens,
                };
                let _ = writeln!(out, "{name}{{model_name=\"{model}\"}} {value}");
            }
        }
        type Pick = fn(&ModelCounters) -> &Histogram;
        let histograms: [(&str, &str, &[f64], Pick); 5] = [
            (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                vllm::TTFT_BUCKETS_S,
                |c| &c.ttft,
            ),
            (
                "vllm:time_per_output_token_seconds",
                "Histogram of time per output token in seconds.",
                vllm::ITL_BUCKETS_S,
                |c| &c.itl,
            ),
            (
                "vllm:e2e_request_latency_seconds",
                "Histogram of end to end request latency in seconds.",
                vllm::E2E_BUCKETS_S,
                |c| &c.e2e,
            ),
            ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", vllm::TOKEN_BUCKETS, |c| {
                &c.request_prompt
            }),
            ("vllm:request_generation_tokens", "Number of generation tokens processed.", vllm::TOKEN_BUCKETS, |c| {
                &c.request_generation
            }),
        ];
        for (name, help, buckets, pick) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (model, c) in &self.models {
                pick(c).render(&mut out, name, model, buckets);
            }
        }
        out
    }
}

impl ModelCounters {
    fn record(&mut self, f: &Finished) {
        self.success += 1;
        self.prompt_tokens += u64::from(f.input_tokens);
        self.generation_tokens += u64::from(f.output_tokens);
        self.ttft.observe(vllm::TTFT_BUCKETS_S, f.ttft_s);
        if let Some(itl) = f.itl_s {
            // vLLM observes every inter-token gap; the mean gap stands in for each of them.
            self.itl.observe_n(vllm::ITL_BUCKETS_S, itl, u64::from(f.output_tokens - 1));
        }
        self.e2e.observe(vllm::E2E_BUCKETS_S, f.e2e_s);
        self.request_prompt.observe(vllm::TOKEN_BUCKETS, f64::from(f.input_tokens));
        self.request_generation.observe(vllm::TOKEN_BUCKETS, f64::from(f.output_tokens));
    }
}

/// Synthetic traffic for a scenario without a trace: Poisson arrivals at each load entry's rate,
/// modulated by a daily-like wave (±`swing` over `period_s`) so the controller has something to
/// follow; prompt and output lengths uniform within ±50 % of the entry's means. Deterministic.
pub fn synthetic_requests(snapshot: &Snapshot, duration_s: f64, period_s: f64, swing: f64, seed: u64) -> Vec<Request> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    let swing = swing.clamp(0.0, 0.95);
    for (m, model) in snapshot.models.iter().enumerate() {
        for (k, demand) in model.demands.iter().enumerate() {
            let peak = demand.arrival_rps * (1.0 + swing);
            if peak <= 0.0 {
                continue;
            }
            let mut t = 0.0;
            loop {
                t += -(1.0 - rng.next_f64()).ln() / peak;
                if t >= duration_s {
                    break;
                }
                let rate = demand.arrival_rps * (1.0 + swing * (std::f64::consts::TAU * t / period_s).sin());
                if rng.next_f64() * peak > rate {
                    continue; // thinned
                }
                // Sizes drawn from the class's distributions (inverse CDF).
                let draw = |rng: &mut SplitMix64, sizes: &SizeDistribution| {
                    (sizes.quantile(rng.next_f64()).round().clamp(1.0, f64::from(u32::MAX))) as u32
                };
                out.push(Request {
                    arrival_s: t,
                    input_tokens: draw(&mut rng, &demand.workload.input),
                    output_tokens: draw(&mut rng, &demand.workload.output),
                    model: m,
                    demand: k,
                });
            }
        }
    }
    out.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_requests_count_against_each_class_of_their_model() {
        // chat: premium wants p95 TTFT ≤ 2 s and mean ITL ≤ 60 ms.
        let snapshot = crate::controller::testing::observed(8.0, 1, 1, 0.0).snapshot;
        let done = |ttft_s: f64, itl_s: Option<f64>| Finished {
            variant: 0,
            ttft_s,
            itl_s,
            e2e_s: 9.0,
            input_tokens: 10,
            output_tokens: 5,
        };
        let sample = Sample {
            t_s: 5.0,
            interval_s: 5.0,
            variants: Vec::new(),
            demands: Vec::new(),
            backlog: Vec::new(),
            finished: vec![vec![done(1.0, Some(0.05)), done(3.0, Some(0.05)), done(1.0, Some(0.07)), done(1.5, None)]],
        };
        let mut counts = BTreeMap::new();
        count_attainment(&mut counts, &snapshot, &sample);
        count_attainment(&mut counts, &snapshot, &sample);
        // Met: the first (both within) and the single-token one (no inter-token gap), twice.
        assert_eq!(counts[&("chat".to_string(), "premium".to_string())], ObservedAttainment::of(4, 8));
    }
}
