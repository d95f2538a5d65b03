//! The discrete-event engine: replicas doing continuous batching, least-loaded routing, start-up
//! delays, Pending replicas when the inventory is exhausted, prefill/decode hand-off, and a
//! policy called every control period on lagged metrics.
//!
//! Step semantics (also in `docs/evaluation.md`): a replica runs one step at a time. At the start
//! of a step it admits queued requests while fewer than B are active, in arrival order. The step
//! lasts `prefill + decode` where
//! - `prefill = γ + δ·P + ε·Σ I_i·p_i` when the step prefills P > 0 prompt tokens (p_i of request
//!   i, whose prompt has I_i tokens): the profile's batch prefill, `prefill(n) = γ + δ·I·n + ε·I²·n`
//!   for n prompts of I tokens. Without chunking, whole prompts are admitted while their tokens
//!   fit the budget C (`max_num_batched_tokens`; the first always does); with chunked prefill,
//!   P ≤ C − (decoding requests) and prompts are prefilled in order, in pieces;
//! - `decode = α + β·k + η·Σ context` when k > 0 requests are decoding: `ITL(k)`.
//!
//! A request's first token comes at the end of the step that finishes its prompt; each later step
//! in which it decodes makes one more token, so it leaves after O − 1 decode steps. Time is in
//! seconds; profile parameters are in ms.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::policy::{Observation, Policy};
use super::trace::Request;
use crate::analyze::{LatencyParams, Role};
use crate::scenario::Snapshot;

/// Settings of one simulation run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Time from scheduling a replica to its serving (image pull, model load), seconds.
    pub startup_s: f64,
    /// How often the policy runs, seconds.
    pub control_period_s: f64,
    /// How old the newest metric a policy sees is, seconds.
    pub metric_lag_s: f64,
    /// Metric samples are taken this often, seconds.
    pub sample_period_s: f64,
    /// Rates are averaged over this window, seconds.
    pub window_s: f64,
    /// vLLM `max_num_batched_tokens`: prompt tokens one step may prefill (unlimited when
    /// `None`). Without chunking, whole prompts are admitted while they fit (at least one).
    pub max_batched_tokens: Option<u32>,
    /// Chunked prefill: prompts are split to fill the budget left after the step's decodes.
    pub chunked_prefill: bool,
    /// KV-cache transfer from a prefill to a decode replica, seconds.
    pub kv_handoff_s: f64,
    /// A request that finds no ready replica of its model waits this long, then is dropped.
    pub drop_after_s: f64,
    /// After the last arrival, requests in flight get this long to finish.
    pub drain_s: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            startup_s: 120.0,
            control_period_s: 30.0,
            metric_lag_s: 15.0,
            sample_period_s: 5.0,
            window_s: 60.0,
            max_batched_tokens: Some(8192),
            chunked_prefill: false,
            kv_handoff_s: 0.02,
            drop_after_s: 60.0,
            drain_s: 600.0,
        }
    }
}

/// Lifecycle of a simulated replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    /// Wanted but no GPUs of its type are free.
    Pending,
    /// GPUs allocated, starting up.
    Booting,
    Ready,
    /// Scaled down: takes no new requests, finishes what it has, then frees its GPUs.
    Draining,
    Gone,
}

/// One metric sample of one variant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantSample {
    /// Replicas asked for (pending + booting + ready).
    pub desired: u32,
    pub ready: u32,
    pub booting: u32,
    pub pending: u32,
    /// Requests queued on its ready and draining replicas (vLLM `num_requests_waiting`).
    pub waiting: u32,
    /// Requests in its batches (vLLM `num_requests_running`).
    pub running: u32,
    /// Batch slots of its ready replicas (B per replica): the KV utilization proxy's denominator.
    pub slots: u32,
    /// Requests routed to it since the previous sample.
    pub arrivals: u32,
}

/// Arrivals of one (model, class) since the previous sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemandSample {
    pub arrivals: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Everything the metrics pipeline records at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub t_s: f64,
    /// Length of the interval this sample's counters cover.
    pub interval_s: f64,
    /// Indexed like `Snapshot::variants`.
    pub variants: Vec<VariantSample>,
    /// Indexed like `Snapshot::models`, then like each model's `demands`.
    pub demands: Vec<Vec<DemandSample>>,
    /// Requests waiting for a ready replica of the model (the gateway's queue), per model.
    pub backlog: Vec<u32>,
    /// Requests finished since the previous sample, per model (what vLLM's histograms record).
    pub finished: Vec<Vec<Finished>>,
}

/// One finished request, as vLLM's metrics see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finished {
    pub ttft_s: f64,
    /// Mean time per output token after the first; `None` for single-token outputs.
    pub itl_s: Option<f64>,
    pub e2e_s: f64,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// What happened to one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestOutcome {
    pub arrival_s: f64,
    /// `None` when it never got a first token.
    pub first_token_s: Option<f64>,
    /// `None` when it did not finish.
    pub done_s: Option<f64>,
    pub dropped: bool,
}

impl RequestOutcome {
    pub fn ttft_ms(&self) -> Option<f64> {
        self.first_token_s.map(|t| 1000.0 * (t - self.arrival_s))
    }

    /// Arrival to last token.
    pub fn e2e_ms(&self) -> Option<f64> {
        self.done_s.map(|t| 1000.0 * (t - self.arrival_s))
    }

    /// Mean time between its tokens after the first; 0 for a one-token request.
    pub fn itl_ms(&self, output_tokens: u32) -> Option<f64> {
        let (first, done) = (self.first_token_s?, self.done_s?);
        Some(if output_tokens > 1 { 1000.0 * (done - first) / f64::from(output_tokens - 1) } else { 0.0 })
    }
}

/// Busy time of one replica over its life.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaRecord {
    pub variant: usize,
    /// Time with a step in flight.
    pub busy_s: f64,
    /// ∫ requests in the batch dt: with `busy_s`, the mean batch.
    pub batch_request_s: f64,
    /// When it got GPUs, when it became ready, when it gave them back.
    pub allocated_s: Option<f64>,
    pub ready_s: Option<f64>,
    pub released_s: Option<f64>,
}

/// The result of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOutcome {
    pub requests: Vec<RequestOutcome>,
    pub samples: Vec<Sample>,
    pub replicas: Vec<ReplicaRecord>,
    /// Cost is counted over [0, horizon]: up to the last arrival.
    pub horizon_s: f64,
    /// GPU-hours per accelerator (allocated GPUs: booting, ready or draining replicas).
    pub gpu_hours: Vec<f64>,
    pub cost_usd: f64,
    /// Σ |Δ desired replicas| over all control decisions.
    pub replica_changes: u32,
    /// Replica-seconds spent Pending.
    pub pending_replica_s: f64,
    /// Time the simulation ended (all done, or the drain limit).
    pub end_s: f64,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    /// An idle replica got work: it starts a step once every arrival at this instant is queued.
    Wake(u32),
    StepEnd(u32),
    Ready(u32),
    Handoff(u32),
    Sample,
    Control,
}

#[derive(Clone, Copy, Debug)]
struct Scheduled {
    t_s: f64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed so the `BinaryHeap` pops the earliest (time, then insertion order) first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.t_s.total_cmp(&self.t_s).then(other.seq.cmp(&self.seq))
    }
}

struct Replica {
    variant: usize,
    state: ReplicaState,
    queue: VecDeque<u32>,
    /// Admitted requests whose prompt is not finished, with the prompt tokens left.
    prefilling: VecDeque<(u32, u32)>,
    /// (decode step after which it leaves, request), earliest first.
    decoding: BinaryHeap<std::cmp::Reverse<(u64, u32)>>,
    /// Decode steps done so far.
    steps: u64,
    busy: bool,
    step_start_s: f64,
    step_decodes: bool,
    /// Requests in the batch during the step in flight.
    step_batch: usize,
    /// Requests whose prompt the step in flight finishes.
    step_prefilled: Vec<u32>,
    /// Σ (prompt + generated tokens) of decoding requests, for η.
    context_tokens: f64,
    record: ReplicaRecord,
}

impl Replica {
    fn active(&self) -> usize {
        self.prefilling.len() + self.decoding.len()
    }

    fn load(&self) -> usize {
        self.active() + self.queue.len()
    }

    fn has_work(&self) -> bool {
        self.load() > 0
    }
}

/// The variant facts the hot loop needs.
struct VariantInfo {
    model: usize,
    accelerator: usize,
    gpus: u32,
    role: Role,
    max_batch: usize,
    params: LatencyParams,
}

/// Run `requests` (sorted by arrival) through the fleet of `snapshot` under `policy`.
/// `progress` is told the fraction of arrivals replayed, at most once per percent.
pub fn run(
    snapshot: &Snapshot,
    requests: &[Request],
    policy: &mut dyn Policy,
    config: &SimConfig,
    progress: &mut dyn FnMut(f64),
) -> SimOutcome {
    let mut sim = Sim::new(snapshot, requests, config);
    sim.run(policy, progress);
    sim.finish()
}

struct Sim<'a> {
    snapshot: &'a Snapshot,
    requests: &'a [Request],
    config: &'a SimConfig,
    variants: Vec<VariantInfo>,
    heap: BinaryHeap<Scheduled>,
    seq: u64,
    now_s: f64,
    replicas: Vec<Replica>,
    /// Ready replicas taking new requests (role both/prefill) and decode replicas, per model.
    entry_ready: Vec<Vec<u32>>,
    decode_ready: Vec<Vec<u32>>,
    backlog: Vec<VecDeque<u32>>,
    decode_backlog: Vec<VecDeque<u32>>,
    pending: Vec<u32>,
    free_gpus: Vec<u32>,
    allocated_gpus: Vec<u32>,
    outcomes: Vec<RequestOutcome>,
    in_flight: usize,
    // Accounting.
    accounted_s: f64,
    horizon_s: f64,
    gpu_seconds: Vec<f64>,
    pending_replica_s: f64,
    replica_changes: u32,
    // Metrics.
    samples: Vec<Sample>,
    last_sample_s: f64,
    variant_arrivals: Vec<u32>,
    demand_counts: Vec<Vec<DemandSample>>,
    finished: Vec<Vec<Finished>>,
    desired: Vec<u32>,
}

impl<'a> Sim<'a> {
    fn new(snapshot: &'a Snapshot, requests: &'a [Request], config: &'a SimConfig) -> Self {
        let variants: Vec<VariantInfo> = snapshot
            .variants
            .iter()
            .map(|v| VariantInfo {
                model: v.model,
                accelerator: v.accelerator,
                gpus: v.gpus_per_replica,
                role: v.role,
                max_batch: v.max_batch.max(1) as usize,
                // A variant without a profile (measured capacity only) cannot be simulated
                // faithfully; it gets a neutral 30 ms step (validation warns about it elsewhere).
                params: v.profile.as_ref().map_or(
                    LatencyParams { alpha_ms: 30.0, ..LatencyParams::default() },
                    |p| p.params,
                ),
            })
            .collect();
        let models = snapshot.models.len();
        let horizon_s = requests.last().map_or(0.0, |r| r.arrival_s);
        Self {
            snapshot,
            requests,
            config,
            variants,
            heap: BinaryHeap::new(),
            seq: 0,
            now_s: 0.0,
            replicas: Vec::new(),
            entry_ready: vec![Vec::new(); models],
            decode_ready: vec![Vec::new(); models],
            backlog: vec![VecDeque::new(); models],
            decode_backlog: vec![VecDeque::new(); models],
            pending: Vec::new(),
            free_gpus: snapshot.accelerators.iter().map(|a| a.gpus).collect(),
            allocated_gpus: vec![0; snapshot.accelerators.len()],
            outcomes: requests
                .iter()
                .map(|r| RequestOutcome { arrival_s: r.arrival_s, first_token_s: None, done_s: None, dropped: false })
                .collect(),
            in_flight: 0,
            accounted_s: 0.0,
            horizon_s,
            gpu_seconds: vec![0.0; snapshot.accelerators.len()],
            pending_replica_s: 0.0,
            replica_changes: 0,
            samples: Vec::new(),
            last_sample_s: 0.0,
            variant_arrivals: vec![0; snapshot.variants.len()],
            demand_counts: snapshot.models.iter().map(|m| vec![DemandSample::default(); m.demands.len()]).collect(),
            finished: vec![Vec::new(); snapshot.models.len()],
            desired: vec![0; snapshot.variants.len()],
        }
    }

    fn schedule(&mut self, t_s: f64, event: Event) {
        self.seq += 1;
        self.heap.push(Scheduled { t_s, seq: self.seq, event });
    }

    fn run(&mut self, policy: &mut dyn Policy, progress: &mut dyn FnMut(f64)) {
        // The fleet at t = 0 is the scenario's current replicas, already serving.
        for v in 0..self.variants.len() {
            for _ in 0..self.snapshot.variants[v].current_replicas {
                self.add_replica(v, true);
            }
        }
        self.schedule(self.config.sample_period_s, Event::Sample);
        self.schedule(self.config.control_period_s, Event::Control);
        let end_limit_s = self.horizon_s + self.config.drain_s;
        let total = self.requests.len().max(1);
        let mut next_arrival = 0usize;
        let mut reported_percent = 0usize;
        loop {
            let arrival_t = self.requests.get(next_arrival).map(|r| r.arrival_s);
            let event_t = self.heap.peek().map(|e| e.t_s);
            // Arrivals go first at equal times: a deterministic, documented tie-break.
            let take_arrival = match (arrival_t, event_t) {
                (Some(a), Some(e)) => a <= e,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_arrival {
                self.advance(self.requests[next_arrival].arrival_s);
                self.arrive(next_arrival as u32);
                next_arrival += 1;
                let percent = next_arrival * 100 / total;
                if percent > reported_percent {
                    reported_percent = percent;
                    progress(next_arrival as f64 / total as f64);
                }
                continue;
            }
            let Some(ev) = self.heap.pop() else { break };
            if next_arrival >= self.requests.len() && (self.in_flight == 0 || ev.t_s > end_limit_s) {
                break;
            }
            self.advance(ev.t_s);
            match ev.event {
                Event::Wake(r) => self.start_step(r),
                Event::StepEnd(r) => self.step_end(r),
                Event::Ready(r) => self.ready(r),
                Event::Handoff(q) => self.route_decode(q),
                Event::Sample => {
                    self.sample();
                    if self.now_s < end_limit_s {
                        self.schedule(self.now_s + self.config.sample_period_s, Event::Sample);
                    }
                }
                Event::Control => {
                    self.control(policy);
                    if self.now_s + self.config.control_period_s <= self.horizon_s {
                        self.schedule(self.now_s + self.config.control_period_s, Event::Control);
                    }
                }
            }
        }
        if reported_percent < 100 {
            progress(1.0);
        }
    }

    /// Move the clock, integrating GPU and pending time up to the horizon.
    fn advance(&mut self, t_s: f64) {
        let until = t_s.min(self.horizon_s);
        if until > self.accounted_s {
            let dt = until - self.accounted_s;
            for (acc, &gpus) in self.allocated_gpus.iter().enumerate() {
                self.gpu_seconds[acc] += dt * f64::from(gpus);
            }
            self.pending_replica_s += dt * self.pending.len() as f64;
            self.accounted_s = until;
        }
        self.now_s = t_s;
    }

    fn arrive(&mut self, q: u32) {
        let r = self.requests[q as usize];
        self.in_flight += 1;
        let d = &mut self.demand_counts[r.model][r.demand];
        d.arrivals += 1;
        d.input_tokens += u64::from(r.input_tokens);
        d.output_tokens += u64::from(r.output_tokens);
        self.route(q);
    }

    /// Least-loaded ready replica (requests active + queued, over B; ties to the lowest id).
    fn pick(&self, candidates: &[u32]) -> Option<u32> {
        let mut best: Option<(u32, usize, usize)> = None;
        for &id in candidates {
            let rep = &self.replicas[id as usize];
            let b = self.variants[rep.variant].max_batch;
            let load = rep.load();
            let better = match best {
                None => true,
                // load/b < best_load/best_b without division.
                Some((_, bl, bb)) => load * bb < bl * b,
            };
            if better {
                best = Some((id, load, b));
            }
        }
        best.map(|b| b.0)
    }

    fn route(&mut self, q: u32) {
        let model = self.requests[q as usize].model;
        match self.pick(&self.entry_ready[model]) {
            Some(id) => self.enqueue(id, q),
            None => self.backlog[model].push_back(q),
        }
    }

    fn route_decode(&mut self, q: u32) {
        let model = self.requests[q as usize].model;
        match self.pick(&self.decode_ready[model]) {
            Some(id) => self.enqueue(id, q),
            None => self.decode_backlog[model].push_back(q),
        }
    }

    fn enqueue(&mut self, id: u32, q: u32) {
        let rep = &mut self.replicas[id as usize];
        rep.queue.push_back(q);
        self.variant_arrivals[rep.variant] += u32::from(self.variants[rep.variant].role != Role::Decode);
        if !rep.busy {
            rep.busy = true;
            self.schedule(self.now_s, Event::Wake(id));
        }
    }

    fn start_step(&mut self, id: u32) {
        let now = self.now_s;
        let rep = &mut self.replicas[id as usize];
        let info = &self.variants[rep.variant];
        let cap = self.config.max_batched_tokens.map_or(u64::MAX, u64::from);
        let chunked = self.config.chunked_prefill;
        // Whole prompts (no chunking) are admitted while they fit the step's token budget; the
        // first always fits, as in vLLM, so a long prompt is never stuck.
        let mut admitted_tokens = 0u64;
        while rep.active() < info.max_batch {
            let Some(&q) = rep.queue.front() else { break };
            let req = &self.requests[q as usize];
            let prompt = u64::from(req.input_tokens);
            if info.role != Role::Decode && !chunked && admitted_tokens > 0 && admitted_tokens + prompt > cap {
                break;
            }
            rep.queue.pop_front();
            if info.role == Role::Decode {
                let steps_left = u64::from(req.output_tokens.saturating_sub(1).max(1));
                rep.decoding.push(std::cmp::Reverse((rep.steps + steps_left, q)));
                rep.context_tokens += f64::from(req.input_tokens) + 1.0;
            } else {
                admitted_tokens += prompt;
                rep.prefilling.push_back((q, req.input_tokens));
            }
        }
        let decoding = rep.decoding.len();
        // Chunked prefill shares the budget with the decode tokens of the step.
        let mut budget = if chunked { cap.saturating_sub(decoding as u64).max(1) } else { u64::MAX };
        let (mut tokens, mut quadratic) = (0u64, 0.0f64);
        rep.step_prefilled.clear();
        for (q, left) in rep.prefilling.iter_mut() {
            if budget == 0 {
                break;
            }
            let take = u64::from(*left).min(budget);
            budget -= take;
            tokens += take;
            quadratic += f64::from(self.requests[*q as usize].input_tokens) * take as f64;
            *left -= take as u32;
            if *left == 0 {
                rep.step_prefilled.push(*q);
            }
        }
        // Finished prompts are a prefix of the FIFO.
        for _ in 0..rep.step_prefilled.len() {
            rep.prefilling.pop_front();
        }
        let p = &info.params;
        let mut step_ms = 0.0;
        if tokens > 0 {
            step_ms += p.gamma_ms + p.delta_ms * tokens as f64 + p.prefill_quadratic_ms * quadratic;
        }
        if decoding > 0 {
            step_ms += p.alpha_ms + p.beta_ms * decoding as f64 + p.itl_context_ms * rep.context_tokens;
        }
        rep.busy = true;
        rep.step_start_s = now;
        rep.step_decodes = decoding > 0;
        rep.step_batch = rep.active() + rep.step_prefilled.len();
        // A floor keeps time moving when a fit gives a zero step.
        let end = now + step_ms.max(1e-6) / 1000.0;
        self.schedule(end, Event::StepEnd(id));
    }

    fn step_end(&mut self, id: u32) {
        let now = self.now_s;
        let rep = &mut self.replicas[id as usize];
        let role = self.variants[rep.variant].role;
        rep.record.busy_s += now - rep.step_start_s;
        rep.record.batch_request_s += (now - rep.step_start_s) * rep.step_batch as f64;
        rep.busy = false;
        let mut finished: Vec<u32> = Vec::new();
        if rep.step_decodes {
            rep.steps += 1;
            rep.context_tokens += rep.decoding.len() as f64;
            while let Some(&std::cmp::Reverse((done_step, q))) = rep.decoding.peek() {
                if done_step > rep.steps {
                    break;
                }
                rep.decoding.pop();
                let req = &self.requests[q as usize];
                rep.context_tokens -= f64::from(req.input_tokens) + f64::from(req.output_tokens);
                finished.push(q);
            }
        }
        let mut handoffs: Vec<u32> = Vec::new();
        for i in 0..rep.step_prefilled.len() {
            let q = rep.step_prefilled[i];
            self.outcomes[q as usize].first_token_s = Some(now);
            let req = &self.requests[q as usize];
            if req.output_tokens <= 1 {
                finished.push(q);
            } else if role == Role::Prefill {
                handoffs.push(q);
            } else {
                let steps_left = u64::from(req.output_tokens - 1);
                rep.decoding.push(std::cmp::Reverse((rep.steps + steps_left, q)));
                rep.context_tokens += f64::from(req.input_tokens) + 1.0;
            }
        }
        rep.step_prefilled.clear();
        if rep.decoding.is_empty() {
            rep.context_tokens = 0.0; // no drift from float sums
        }
        for q in finished {
            let outcome = &mut self.outcomes[q as usize];
            outcome.done_s = Some(now);
            self.in_flight -= 1;
            let req = &self.requests[q as usize];
            let first = outcome.first_token_s.unwrap_or(now);
            self.finished[req.model].push(Finished {
                ttft_s: first - outcome.arrival_s,
                itl_s: (req.output_tokens > 1).then(|| (now - first) / f64::from(req.output_tokens - 1)),
                e2e_s: now - outcome.arrival_s,
                input_tokens: req.input_tokens,
                output_tokens: req.output_tokens,
            });
        }
        for q in handoffs {
            self.schedule(now + self.config.kv_handoff_s, Event::Handoff(q));
        }
        let rep = &self.replicas[id as usize];
        if rep.has_work() {
            self.start_step(id);
        } else if rep.state == ReplicaState::Draining {
            self.retire(id);
        }
    }

    /// A new replica of `v`: scheduled when GPUs are free, else Pending. `serving` makes it
    /// ready at once (the fleet that exists when the simulation starts).
    fn add_replica(&mut self, v: usize, serving: bool) {
        let id = self.replicas.len() as u32;
        self.replicas.push(Replica {
            variant: v,
            state: ReplicaState::Pending,
            queue: VecDeque::new(),
            prefilling: VecDeque::new(),
            decoding: BinaryHeap::new(),
            steps: 0,
            busy: false,
            step_start_s: 0.0,
            step_decodes: false,
            step_batch: 0,
            step_prefilled: Vec::new(),
            context_tokens: 0.0,
            record: ReplicaRecord {
                variant: v,
                busy_s: 0.0,
                batch_request_s: 0.0,
                allocated_s: None,
                ready_s: None,
                released_s: None,
            },
        });
        self.desired[v] += 1;
        self.pending.push(id);
        self.schedule_pending(serving);
    }

    /// Give free GPUs to Pending replicas in the order they were asked for (a smaller one may
    /// pass a larger one that does not fit, as the Kubernetes scheduler does).
    fn schedule_pending(&mut self, serving: bool) {
        let mut i = 0;
        while i < self.pending.len() {
            let id = self.pending[i];
            let info = &self.variants[self.replicas[id as usize].variant];
            let (acc, gpus) = (info.accelerator, info.gpus);
            if self.free_gpus[acc] >= gpus {
                self.free_gpus[acc] -= gpus;
                self.allocated_gpus[acc] += gpus;
                self.pending.remove(i);
                let rep = &mut self.replicas[id as usize];
                rep.state = ReplicaState::Booting;
                rep.record.allocated_s = Some(self.now_s);
                if serving {
                    self.ready(id);
                } else {
                    self.schedule(self.now_s + self.config.startup_s, Event::Ready(id));
                }
            } else {
                i += 1;
            }
        }
    }

    fn ready(&mut self, id: u32) {
        let rep = &mut self.replicas[id as usize];
        if rep.state != ReplicaState::Booting {
            return; // cancelled while booting
        }
        rep.state = ReplicaState::Ready;
        rep.record.ready_s = Some(self.now_s);
        let info = &self.variants[rep.variant];
        let model = info.model;
        if info.role == Role::Decode {
            insert_sorted(&mut self.decode_ready[model], id);
            while let Some(q) = self.decode_backlog[model].pop_front() {
                if !self.drop_if_stale(q) {
                    self.route_decode(q);
                }
            }
        } else {
            insert_sorted(&mut self.entry_ready[model], id);
            while let Some(q) = self.backlog[model].pop_front() {
                if !self.drop_if_stale(q) {
                    self.route(q);
                }
            }
        }
    }

    /// The gateway gives up on a request that found no replica for longer than `drop_after_s`.
    fn drop_if_stale(&mut self, q: u32) -> bool {
        let o = &mut self.outcomes[q as usize];
        if o.arrival_s >= self.now_s - self.config.drop_after_s {
            return false;
        }
        o.dropped = true;
        self.in_flight -= 1;
        true
    }

    /// Scale `v` down by one: a Pending replica first, then a booting one, then the least
    /// loaded ready one (newest on ties), which drains.
    fn remove_replica(&mut self, v: usize) {
        let newest = |state: ReplicaState, reps: &[Replica]| {
            (0..reps.len()).rev().find(|&i| reps[i].variant == v && reps[i].state == state).map(|i| i as u32)
        };
        self.desired[v] -= 1;
        if let Some(id) = newest(ReplicaState::Pending, &self.replicas) {
            self.pending.retain(|&p| p != id);
            self.replicas[id as usize].state = ReplicaState::Gone;
            return;
        }
        if let Some(id) = newest(ReplicaState::Booting, &self.replicas) {
            self.retire(id);
            return;
        }
        let model = self.variants[v].model;
        let list =
            if self.variants[v].role == Role::Decode { &self.decode_ready[model] } else { &self.entry_ready[model] };
        let victim = list
            .iter()
            .rev()
            .copied()
            .filter(|&id| self.replicas[id as usize].variant == v)
            .min_by_key(|&id| self.replicas[id as usize].load());
        let Some(id) = victim else { return };
        self.replicas[id as usize].state = ReplicaState::Draining;
        if self.variants[v].role == Role::Decode {
            self.decode_ready[model].retain(|&x| x != id);
        } else {
            self.entry_ready[model].retain(|&x| x != id);
        }
        let rep = &self.replicas[id as usize];
        if !rep.busy && !rep.has_work() {
            self.retire(id);
        }
    }

    fn retire(&mut self, id: u32) {
        let rep = &mut self.replicas[id as usize];
        rep.state = ReplicaState::Gone;
        rep.record.released_s = Some(self.now_s);
        let info = &self.variants[rep.variant];
        self.free_gpus[info.accelerator] += info.gpus;
        self.allocated_gpus[info.accelerator] -= info.gpus;
        self.schedule_pending(false);
    }

    fn sample(&mut self) {
        let mut variants = vec![VariantSample::default(); self.variants.len()];
        for rep in &self.replicas {
            let s = &mut variants[rep.variant];
            match rep.state {
                ReplicaState::Pending => s.pending += 1,
                ReplicaState::Booting => s.booting += 1,
                ReplicaState::Ready => {
                    s.ready += 1;
                    s.slots += self.variants[rep.variant].max_batch as u32;
                }
                ReplicaState::Draining | ReplicaState::Gone => {}
            }
            if matches!(rep.state, ReplicaState::Ready | ReplicaState::Draining) {
                s.waiting += rep.queue.len() as u32;
                s.running += rep.active() as u32;
            }
        }
        for (v, s) in variants.iter_mut().enumerate() {
            s.desired = self.desired[v];
            s.arrivals = std::mem::take(&mut self.variant_arrivals[v]);
        }
        // The gateway gives up on requests that found no replica for too long.
        let cutoff = self.now_s - self.config.drop_after_s;
        for m in 0..self.backlog.len() {
            for queue in [&mut self.backlog[m], &mut self.decode_backlog[m]] {
                while let Some(&q) = queue.front() {
                    if self.outcomes[q as usize].arrival_s >= cutoff {
                        break;
                    }
                    queue.pop_front();
                    self.outcomes[q as usize].dropped = true;
                    self.in_flight -= 1;
                }
            }
        }
        let demands = self.demand_counts.iter_mut().map(|m| m.iter_mut().map(std::mem::take).collect()).collect();
        self.samples.push(Sample {
            t_s: self.now_s,
            interval_s: self.now_s - self.last_sample_s,
            variants,
            demands,
            backlog: (0..self.backlog.len())
                .map(|m| (self.backlog[m].len() + self.decode_backlog[m].len()) as u32)
                .collect(),
            finished: self.finished.iter_mut().map(std::mem::take).collect(),
        });
        self.last_sample_s = self.now_s;
    }

    fn control(&mut self, policy: &mut dyn Policy) {
        let visible_until = self.now_s - self.config.metric_lag_s;
        let visible = self.samples.partition_point(|s| s.t_s <= visible_until + 1e-9);
        let obs = Observation {
            now_s: self.now_s,
            snapshot: self.snapshot,
            desired: &self.desired,
            samples: &self.samples[..visible],
            window_s: self.config.window_s,
        };
        let wanted = policy.decide(&obs);
        for v in 0..self.variants.len() {
            let target = wanted.get(v).copied().unwrap_or(self.desired[v]).min(self.snapshot.variants[v].max_replicas);
            self.replica_changes += target.abs_diff(self.desired[v]);
            while self.desired[v] < target {
                self.add_replica(v, false);
            }
            while self.desired[v] > target {
                self.remove_replica(v);
            }
        }
    }

    fn finish(mut self) -> SimOutcome {
        let end = self.now_s;
        self.advance(end.max(self.horizon_s));
        let gpu_hours: Vec<f64> = self.gpu_seconds.iter().map(|s| s / 3600.0).collect();
        let cost_usd =
            gpu_hours.iter().zip(&self.snapshot.accelerators).map(|(h, a)| h * a.cost_usd_per_gpu_hour).sum();
        SimOutcome {
            requests: self.outcomes,
            samples: self.samples,
            replicas: self.replicas.into_iter().map(|r| r.record).collect(),
            horizon_s: self.horizon_s,
            gpu_hours,
            cost_usd,
            replica_changes: self.replica_changes,
            pending_replica_s: self.pending_replica_s,
            end_s: end,
        }
    }
}

fn insert_sorted(list: &mut Vec<u32>, id: u32) {
    let at = list.partition_point(|&x| x < id);
    list.insert(at, id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    /// Fixed replicas per variant from the first control tick on.
    struct Fixed(Vec<u32>);

    impl Policy for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn decide(&mut self, _: &Observation<'_>) -> Vec<u32> {
            self.0.clone()
        }
    }

    /// Two variants of one model on one 8-GPU pool; `pd` makes them prefill and decode.
    fn fleet(current: [u32; 2], pd: bool) -> Snapshot {
        let (r0, r1) = if pd { ("prefill", "decode") } else { ("both", "both") };
        let text = format!(
            "accelerators: [{{ name: GPU, gpus: 8, cost_usd_per_gpu_hour: 2 }}]\n\
             service_classes: [{{ name: c, priority: 1, targets: [{{ model: m, ttft: {{ ms: 1000 }}, itl: {{ ms: 100 }} }}] }}]\n\
             load: [{{ model: m, class: c, arrival_rate_rps: 1, input_tokens: 1000, output_tokens: 11 }}]\n\
             profiles: [{{ name: p, alpha_ms: 20, beta_ms: 1, gamma_ms: 10, delta_ms: 0.1 }}]\n\
             variants:\n\
             - {{ name: a, model: m, accelerator: GPU, gpus_per_replica: 4, max_batch: 8, role: {r0}, current_replicas: {}, profile: p }}\n\
             - {{ name: b, model: m, accelerator: GPU, gpus_per_replica: 4, max_batch: 8, role: {r1}, current_replicas: {}, profile: p }}\n",
            current[0], current[1]
        );
        scenario::load(&text).expect("valid test scenario")
    }

    fn requests(times: &[f64]) -> Vec<Request> {
        times
            .iter()
            .map(|&t| Request { arrival_s: t, input_tokens: 1000, output_tokens: 11, model: 0, demand: 0 })
            .collect()
    }

    fn run_fixed(snapshot: &Snapshot, reqs: &[Request], wanted: Vec<u32>, config: &SimConfig) -> SimOutcome {
        run(snapshot, reqs, &mut Fixed(wanted), config, &mut |_| {})
    }

    #[test]
    fn a_lone_request_takes_one_prefill_then_its_decode_steps() {
        let out = run_fixed(&fleet([1, 0], false), &requests(&[1.0]), vec![1, 0], &SimConfig::default());
        let o = out.requests[0];
        // prefill(1) = 10 + 0.1·1000 = 110 ms; ITL(1) = 21 ms for the 10 later tokens.
        assert!((o.ttft_ms().expect("served") - 110.0).abs() < 1e-6);
        assert!((o.itl_ms(11).expect("done") - 21.0).abs() < 1e-6);
        assert!((o.e2e_ms().expect("done") - 320.0).abs() < 1e-6);
        assert!((out.replicas[0].busy_s - 0.32).abs() < 1e-9);
    }

    #[test]
    fn replicas_beyond_the_inventory_stay_pending() {
        let config = SimConfig { control_period_s: 10.0, ..SimConfig::default() };
        // Ask for 2 + 2 replicas of 4 GPUs on 8 GPUs: 2 are Pending from t = 10 to the horizon.
        let out = run_fixed(&fleet([1, 0], false), &requests(&[0.0, 100.0]), vec![2, 2], &config);
        assert!((out.pending_replica_s - 2.0 * 90.0).abs() < 1e-6, "{}", out.pending_replica_s);
        // 4 GPUs for 10 s, then 8 GPUs for 90 s, at $2 per GPU-hour.
        let gpu_s = 4.0 * 10.0 + 8.0 * 90.0;
        assert!((out.gpu_hours[0] - gpu_s / 3600.0).abs() < 1e-9);
        assert!((out.cost_usd - 2.0 * gpu_s / 3600.0).abs() < 1e-9);
        assert_eq!(out.replica_changes, 3);
    }

    #[test]
    fn new_replicas_serve_after_their_startup_and_the_gateway_drops_what_waits_too_long() {
        let config =
            SimConfig { control_period_s: 30.0, startup_s: 100.0, drop_after_s: 120.0, ..SimConfig::default() };
        // No replica until the tick at 30 s; it is ready at 130 s. The request of t = 5 waits
        // 125 s > 120 s and is dropped; the one of t = 20 is served.
        let out = run_fixed(&fleet([0, 0], false), &requests(&[5.0, 20.0, 200.0]), vec![1, 0], &config);
        assert!(out.requests[0].dropped);
        let served = out.requests[1];
        assert!(!served.dropped);
        assert!((served.first_token_s.expect("served") - 130.11).abs() < 1e-6, "{served:?}");
        assert!(out.requests[2].done_s.is_some());
        assert_eq!(out.replicas[0].ready_s, Some(130.0));
    }

    #[test]
    fn disaggregated_requests_pay_the_kv_handoff() {
        let config = SimConfig { kv_handoff_s: 0.05, ..SimConfig::default() };
        let out = run_fixed(&fleet([1, 1], true), &requests(&[1.0]), vec![1, 1], &config);
        let o = out.requests[0];
        assert!((o.ttft_ms().expect("served") - 110.0).abs() < 1e-6);
        // Hand-off 50 ms, then 10 decode steps of 21 ms on the decode replica.
        let done_ms = 1000.0 * (o.done_s.expect("done") - 1.0);
        assert!((done_ms - (110.0 + 50.0 + 210.0)).abs() < 1e-6, "{done_ms}");
    }

    #[test]
    fn chunked_prefill_spreads_a_prompt_over_steps() {
        let config = SimConfig { max_batched_tokens: Some(256), chunked_prefill: true, ..SimConfig::default() };
        let out = run_fixed(&fleet([1, 0], false), &requests(&[0.0]), vec![1, 0], &config);
        // 1000 tokens in chunks of 256: four steps, each paying γ.
        assert!((out.requests[0].ttft_ms().expect("served") - (4.0 * 10.0 + 100.0)).abs() < 1e-6);
    }

    #[test]
    fn routing_picks_the_least_loaded_replica_and_runs_are_repeatable() {
        let reqs = requests(&(0..40).map(|i| f64::from(i) * 0.05).collect::<Vec<_>>());
        let a = run_fixed(&fleet([1, 1], false), &reqs, vec![1, 1], &SimConfig::default());
        let b = run_fixed(&fleet([1, 1], false), &reqs, vec![1, 1], &SimConfig::default());
        assert_eq!(a, b);
        let (x, y) = (a.replicas[0].busy_s, a.replicas[1].busy_s);
        assert!(x > 0.0 && y > 0.0 && (x - y).abs() < 0.5 * x.max(y), "busy {x} vs {y}");
    }
}
