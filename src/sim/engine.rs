//! The discrete-event engine: replicas doing continuous batching, least-loaded routing, start-up
//! delays, Pending replicas when the inventory is exhausted, prefill/decode hand-off, and a
//! policy called every control period on lagged metrics.
//!
//! Step semantics (also in `docs/evaluation.md`) follow vLLM's V1 scheduler, step by step and
//! independently of the analytical model. A replica runs one step at a time, with the variant's
//! engine limits (`max_num_seqs`, the step token budget C = `max_num_batched_tokens`, chunked
//! prefill, the KV cache in blocks):
//! - the running requests go first: every decoding request needs its next token's KV slot; when
//!   the cache has no free block for them, the most recently admitted running request is
//!   preempted (its blocks freed; it goes back to the front of the queue and recomputes its prompt
//!   and the tokens it had generated, as vLLM's recompute preemption does);
//! - unfinished prompts continue, then queued requests are admitted in arrival order while fewer
//!   than `max_num_seqs` run, the budget has tokens left and the cache has blocks for their
//!   chunk. With chunked prefill, P ≤ C − (decoding requests) and prompts are prefilled in order,
//!   in pieces; without, whole prompts are admitted while they fit C (the first always does);
//! - a request that reaches a busy engine is first scheduled `scheduling_delay_steps` (rounded)
//!   steps after the step in flight ends; an idle engine takes it at once.
//!
//! The step lasts `prefill + decode`: `γ + δ·P + ε·Σ I_i·p_i` when it prefills P > 0 tokens (p_i
//! of a prompt of I_i tokens), plus `α + β·k + η·Σ context + ζ·k²` when k > 0 requests decode. A
//! request's first token comes at the end of the step that finishes its prompt; each later step in
//! which it decodes makes one more token, so it leaves after O − 1 decode steps. The profile's
//! `ttft_overhead_ms` (time outside the engine) is added to its first token and completion. Time
//! is in seconds; profile parameters are in ms.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

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
    /// KV-cache transfer from a prefill to a decode replica, seconds.
    pub kv_handoff_s: f64,
    /// A request that finds no ready replica of its model waits this long, then is dropped.
    pub drop_after_s: f64,
    /// After the last arrival, requests in flight get this long to finish.
    pub drain_s: f64,
    /// The simulated servers' step times over the profile's (1.3: the profile is 30 %
    /// optimistic): a truth the policies do not know, to test calibration against.
    pub true_latency_factor: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            startup_s: 120.0,
            control_period_s: 30.0,
            metric_lag_s: 15.0,
            sample_period_s: 5.0,
            window_s: 60.0,
            kv_handoff_s: 0.02,
            drop_after_s: 60.0,
            drain_s: 600.0,
            true_latency_factor: 1.0,
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
    /// Start-up times (scheduled to ready, seconds) of its replicas that became ready since the
    /// previous sample.
    pub startups_s: Vec<f64>,
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
    /// The variant whose replica finished it (indexed like `Snapshot::variants`).
    pub variant: usize,
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
    /// Running requests preempted because the KV cache was full (each recomputes its prompt).
    pub preemptions: u64,
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
    /// Waiting requests with the step count from which they may be scheduled.
    queue: VecDeque<(u32, u64)>,
    /// Admitted requests whose prompt is not finished, with the prompt tokens left.
    prefilling: VecDeque<(u32, u32)>,
    /// (decode step after which it leaves, request), earliest first. Entries of preempted
    /// requests stay until popped and are skipped (their request is no longer `running` here).
    decoding: BinaryHeap<std::cmp::Reverse<(u64, u32)>>,
    /// Decode steps done so far.
    steps: u64,
    /// Steps started so far (for the scheduling delay).
    started: u64,
    /// Running requests (prefilling or decoding) by admission order, for preemption.
    running: BTreeSet<(u64, u32)>,
    /// Requests decoding (the heap may also hold stale entries of preempted ones).
    decoding_count: usize,
    /// KV blocks in use.
    kv_blocks: u64,
    /// Decoding requests by (held tokens − decode steps) mod block size: those whose next token
    /// needs a new block are one residue class, so a step's new blocks are counted in O(1).
    residue: Vec<u32>,
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
        self.running.len()
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
    /// Step token budget (∞ without a limit).
    budget: u64,
    chunked: bool,
    /// KV-cache blocks of one replica (`None`: not limited) and the block size.
    kv_blocks: Option<u64>,
    block_tokens: u64,
    /// Whole steps a request reaching a busy engine waits beyond the step in flight.
    delay_steps: u64,
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
    /// `optimizer.routing: weighted`: the policy's planned req/s per variant, and the smooth
    /// weighted round-robin credit of each (None: least-loaded over the model's replicas).
    route_weights: Option<Vec<f64>>,
    route_credit: Vec<f64>,
    // Per request: prompt tokens to prefill (its prompt, plus what it had generated when it was
    // preempted), output tokens generated, the decode-heap entry that is current (u64::MAX: not
    // decoding), and the KV tokens it held when it started decoding, at which decode step.
    prompt_len: Vec<u32>,
    generated: Vec<u32>,
    decode_done: Vec<u64>,
    kv_base: Vec<u32>,
    decode_start: Vec<u64>,
    admit_seq: u64,
    preemptions: u64,
    /// Start-up times since the last sample, per variant.
    startups: Vec<Vec<f64>>,
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
                max_batch: v.engine.max_num_seqs.max(1) as usize,
                // A variant without a profile (measured capacity only) cannot be simulated
                // faithfully; it gets a neutral 30 ms step (validation warns about it elsewhere).
                params: v.profile.as_ref().map_or(LatencyParams { alpha_ms: 30.0, ..LatencyParams::default() }, |p| {
                    p.params.corrected(config.true_latency_factor, config.true_latency_factor)
                }),
                budget: u64::from(v.engine.max_num_batched_tokens),
                chunked: v.engine.chunked_prefill,
                block_tokens: u64::from(v.engine.block_size_tokens.max(1)),
                kv_blocks: v
                    .engine
                    .kv_cache_tokens
                    .map(|t| (t / f64::from(v.engine.block_size_tokens.max(1))).floor().max(1.0) as u64),
                delay_steps: v.profile.as_ref().map_or(0, |p| p.params.scheduling_delay_steps.round().max(0.0) as u64),
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
            route_weights: None,
            route_credit: vec![0.0; snapshot.variants.len()],
            prompt_len: requests.iter().map(|r| r.input_tokens).collect(),
            generated: vec![0; requests.len()],
            decode_done: vec![u64::MAX; requests.len()],
            kv_base: vec![0; requests.len()],
            decode_start: vec![0; requests.len()],
            admit_seq: 0,
            preemptions: 0,
            startups: vec![Vec::new(); snapshot.variants.len()],
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
                Event::Ready(r) => {
                    self.note_startup(r);
                    self.ready(r);
                }
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
    fn pick(&self, candidates: impl IntoIterator<Item = u32>) -> Option<u32> {
        let mut best: Option<(u32, usize, usize)> = None;
        for id in candidates {
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
        if let Some(variant) = self.weighted_variant(model) {
            let ready =
                self.entry_ready[model].iter().copied().filter(|&id| self.replicas[id as usize].variant == variant);
            if let Some(id) = self.pick(ready) {
                self.enqueue(id, q);
                return;
            }
        }
        match self.pick(self.entry_ready[model].iter().copied()) {
            Some(id) => self.enqueue(id, q),
            None => self.backlog[model].push_back(q),
        }
    }

    /// With weighted routing, the variant the next request of `model` goes to: smooth weighted
    /// round-robin (nginx's) over the variants with a ready replica and a planned rate, so the
    /// split follows the plan's rates deterministically. None: route least-loaded.
    fn weighted_variant(&mut self, model: usize) -> Option<usize> {
        let weights = self.route_weights.as_ref()?;
        let mut ready: Vec<usize> =
            self.entry_ready[model].iter().map(|&id| self.replicas[id as usize].variant).collect();
        ready.sort_unstable();
        ready.dedup();
        ready.retain(|&v| weights[v] > 0.0);
        let total: f64 = ready.iter().map(|&v| weights[v]).sum();
        let mut best: Option<usize> = None;
        for &v in &ready {
            self.route_credit[v] += weights[v];
            if best.is_none_or(|b| self.route_credit[v] > self.route_credit[b]) {
                best = Some(v);
            }
        }
        let chosen = best?;
        self.route_credit[chosen] -= total;
        Some(chosen)
    }

    fn route_decode(&mut self, q: u32) {
        let model = self.requests[q as usize].model;
        match self.pick(self.decode_ready[model].iter().copied()) {
            Some(id) => self.enqueue(id, q),
            None => self.decode_backlog[model].push_back(q),
        }
    }

    fn enqueue(&mut self, id: u32, q: u32) {
        let rep = &mut self.replicas[id as usize];
        let info = &self.variants[rep.variant];
        // A busy engine schedules a newcomer only after the step in flight and its delay.
        let eligible = if rep.busy { rep.started + info.delay_steps } else { 0 };
        rep.queue.push_back((q, eligible));
        self.variant_arrivals[rep.variant] += u32::from(info.role != Role::Decode);
        if !rep.busy {
            rep.busy = true;
            self.schedule(self.now_s, Event::Wake(id));
        }
    }

    /// KV tokens a running request holds.
    fn held_tokens(&self, rep: &Replica, q: u32) -> u64 {
        let i = q as usize;
        if self.decode_done[i] != u64::MAX {
            u64::from(self.kv_base[i]) + (rep.steps - self.decode_start[i])
        } else {
            let left = rep.prefilling.iter().find(|(x, _)| *x == q).map_or(0, |(_, l)| *l);
            u64::from(self.prompt_len[i] - left)
        }
    }

    /// Free a running request's KV blocks and send it back to the front of the queue to
    /// recompute its prompt and the tokens it had generated (vLLM's recompute preemption).
    fn preempt(&mut self, id: u32, q: u32) {
        let held = {
            let rep = &self.replicas[id as usize];
            self.held_tokens(rep, q)
        };
        let i = q as usize;
        let info = &self.variants[self.replicas[id as usize].variant];
        let bs = info.block_tokens;
        let rep = &mut self.replicas[id as usize];
        rep.kv_blocks = rep.kv_blocks.saturating_sub(held.div_ceil(bs));
        if self.decode_done[i] != u64::MAX {
            let r = ((u64::from(self.kv_base[i]) % bs + bs - self.decode_start[i] % bs) % bs) as usize;
            rep.residue[r] = rep.residue[r].saturating_sub(1);
            rep.decoding_count -= 1;
            self.decode_done[i] = u64::MAX;
        } else {
            rep.prefilling.retain(|(x, _)| *x != q);
        }
        let req = &self.requests[i];
        self.prompt_len[i] = req.input_tokens + self.generated[i];
        rep.queue.push_front((q, 0));
        self.preemptions += 1;
    }

    fn start_step(&mut self, id: u32) {
        let now = self.now_s;
        let v = self.replicas[id as usize].variant;
        let (role, max_batch, budget_cap, chunked, kv_cap, bs) = {
            let info = &self.variants[v];
            (info.role, info.max_batch, info.budget, info.chunked, info.kv_blocks, info.block_tokens)
        };
        let started = {
            let rep = &mut self.replicas[id as usize];
            rep.started += 1;
            rep.started - 1
        };
        // 1. The decodes' next tokens need KV room; preempt the newest running requests if not.
        if let Some(cap) = kv_cap {
            loop {
                let rep = &self.replicas[id as usize];
                let class = ((bs - rep.steps % bs) % bs) as usize;
                let need = u64::from(rep.residue[class]);
                if rep.kv_blocks + need <= cap || rep.running.len() <= 1 {
                    self.replicas[id as usize].kv_blocks += need;
                    break;
                }
                let Some(&(_, victim)) = rep.running.last() else { break };
                self.replicas[id as usize].running.pop_last();
                self.preempt(id, victim);
            }
        }
        let decoding = self.replicas[id as usize].decoding_count;
        // 2. Unfinished prompts continue, then newcomers are admitted, within the token budget
        //    (what the decodes leave of it, with chunking) and the KV cache.
        let mut budget = if chunked { budget_cap.saturating_sub(decoding as u64).max(1) } else { budget_cap };
        let (mut tokens, mut quadratic) = (0u64, 0.0f64);
        let mut prefilled: Vec<u32> = Vec::new();
        let free_blocks = |rep: &Replica| kv_cap.map_or(u64::MAX, |cap| cap.saturating_sub(rep.kv_blocks));
        {
            let prompt_len = &self.prompt_len;
            let rep = &mut self.replicas[id as usize];
            let mut order: Vec<(u32, u32)> = rep.prefilling.iter().copied().collect();
            for (q, left) in order.iter_mut() {
                if budget == 0 {
                    break;
                }
                let total = u64::from(prompt_len[*q as usize]);
                let done = total - u64::from(*left);
                let mut take = u64::from(*left).min(budget);
                if kv_cap.is_some() {
                    let room = (free_blocks(rep) + done.div_ceil(bs)) * bs;
                    take = take.min(room.saturating_sub(done));
                }
                if take == 0 {
                    break;
                }
                rep.kv_blocks += (done + take).div_ceil(bs) - done.div_ceil(bs);
                budget -= take;
                tokens += take;
                quadratic += total as f64 * take as f64;
                *left -= take as u32;
                if *left == 0 {
                    prefilled.push(*q);
                }
            }
            rep.prefilling = order.into_iter().filter(|(_, l)| *l > 0).collect();
        }
        // Newcomers, in arrival order.
        loop {
            let rep = &self.replicas[id as usize];
            if rep.active() >= max_batch {
                break;
            }
            let Some(&(q, eligible)) = rep.queue.front() else { break };
            if eligible > started {
                break;
            }
            let i = q as usize;
            if role == Role::Decode {
                // The prompt's KV arrived with the hand-off.
                let held = u64::from(self.requests[i].input_tokens) + 1;
                if kv_cap.is_some_and(|_| held.div_ceil(bs) > free_blocks(rep)) && rep.active() > 0 {
                    break;
                }
                let rep = &mut self.replicas[id as usize];
                rep.queue.pop_front();
                rep.kv_blocks += held.div_ceil(bs);
                self.admit_seq += 1;
                rep.running.insert((self.admit_seq, q));
                self.generated[i] = self.generated[i].max(1);
                self.start_decoding(id, q, held as u32);
                continue;
            }
            let total = u64::from(self.prompt_len[i]);
            if !chunked && tokens > 0 && tokens + total > budget_cap {
                break;
            }
            if chunked && budget == 0 {
                break;
            }
            let mut take = if chunked { total.min(budget) } else { total };
            if kv_cap.is_some() {
                take = take.min(free_blocks(rep) * bs);
                if take == 0 {
                    break;
                }
            }
            let rep = &mut self.replicas[id as usize];
            rep.queue.pop_front();
            self.admit_seq += 1;
            rep.running.insert((self.admit_seq, q));
            rep.kv_blocks += take.div_ceil(bs);
            budget = budget.saturating_sub(take);
            tokens += take;
            quadratic += total as f64 * take as f64;
            if take == total {
                prefilled.push(q);
            } else {
                rep.prefilling.push_back((q, (total - take) as u32));
            }
        }
        let p = self.variants[v].params;
        let rep = &mut self.replicas[id as usize];
        // The profile's step: memory- and compute-bound parts, plus γ when it prefills.
        let step_ms = p.step_ms(decoding as f64, rep.context_tokens, tokens as f64, quadratic);
        rep.busy = true;
        rep.step_start_s = now;
        rep.step_decodes = decoding > 0;
        rep.step_batch = rep.active();
        rep.step_prefilled = prefilled;
        // A floor keeps time moving when a fit gives a zero step.
        let end = now + step_ms.max(1e-6) / 1000.0;
        self.schedule(end, Event::StepEnd(id));
    }

    /// Put `q` into the decode batch of replica `id`, holding `held` KV tokens.
    fn start_decoding(&mut self, id: u32, q: u32, held: u32) {
        let i = q as usize;
        let bs = self.variants[self.replicas[id as usize].variant].block_tokens;
        let rep = &mut self.replicas[id as usize];
        let steps_left = u64::from(self.requests[i].output_tokens.saturating_sub(self.generated[i]).max(1));
        let done = rep.steps + steps_left;
        rep.decoding.push(std::cmp::Reverse((done, q)));
        rep.decoding_count += 1;
        self.decode_done[i] = done;
        self.kv_base[i] = held;
        self.decode_start[i] = rep.steps;
        let r = ((u64::from(held) % bs + bs - rep.steps % bs) % bs) as usize;
        rep.residue[r] += 1;
        rep.context_tokens += f64::from(held);
    }

    fn step_end(&mut self, id: u32) {
        let now = self.now_s;
        let v = self.replicas[id as usize].variant;
        let (role, bs) = (self.variants[v].role, self.variants[v].block_tokens);
        let overhead_s = self.variants[v].params.ttft_overhead_ms / 1000.0;
        let mut finished: Vec<u32> = Vec::new();
        {
            let rep = &mut self.replicas[id as usize];
            rep.record.busy_s += now - rep.step_start_s;
            rep.record.batch_request_s += (now - rep.step_start_s) * rep.step_batch as f64;
            rep.busy = false;
            if rep.step_decodes {
                rep.steps += 1;
                rep.context_tokens += rep.decoding_count as f64;
                while let Some(&std::cmp::Reverse((done_step, q))) = rep.decoding.peek() {
                    if done_step > rep.steps {
                        break;
                    }
                    rep.decoding.pop();
                    let i = q as usize;
                    if self.decode_done[i] != done_step {
                        continue; // preempted since
                    }
                    let held = u64::from(self.kv_base[i]) + (rep.steps - self.decode_start[i]);
                    rep.context_tokens -= held as f64;
                    rep.kv_blocks = rep.kv_blocks.saturating_sub(held.div_ceil(bs));
                    let r = ((u64::from(self.kv_base[i]) % bs + bs - self.decode_start[i] % bs) % bs) as usize;
                    rep.residue[r] = rep.residue[r].saturating_sub(1);
                    rep.decoding_count -= 1;
                    self.decode_done[i] = u64::MAX;
                    self.generated[i] = self.requests[i].output_tokens;
                    finished.push(q);
                }
            }
        }
        let mut handoffs: Vec<u32> = Vec::new();
        let prefilled = std::mem::take(&mut self.replicas[id as usize].step_prefilled);
        for &q in &prefilled {
            let i = q as usize;
            if self.outcomes[i].first_token_s.is_none() {
                self.outcomes[i].first_token_s = Some(now + overhead_s);
            }
            self.generated[i] = self.generated[i].max(1);
            let req = &self.requests[i];
            if req.output_tokens <= self.generated[i] {
                finished.push(q);
                let held = u64::from(self.prompt_len[i]);
                let rep = &mut self.replicas[id as usize];
                rep.kv_blocks = rep.kv_blocks.saturating_sub(held.div_ceil(bs));
            } else if role == Role::Prefill {
                handoffs.push(q);
                let held = u64::from(self.prompt_len[i]);
                let rep = &mut self.replicas[id as usize];
                rep.kv_blocks = rep.kv_blocks.saturating_sub(held.div_ceil(bs));
            } else {
                let held = self.prompt_len[i];
                self.start_decoding(id, q, held);
            }
        }
        {
            let rep = &mut self.replicas[id as usize];
            if rep.decoding_count == 0 {
                rep.context_tokens = 0.0; // no drift from float sums
            }
            for &q in finished.iter().chain(&handoffs) {
                rep.running.retain(|&(_, x)| x != q);
            }
        }
        for q in finished {
            let i = q as usize;
            let outcome = &mut self.outcomes[i];
            outcome.done_s = Some(now + overhead_s);
            self.in_flight -= 1;
            let req = &self.requests[i];
            let first = outcome.first_token_s.unwrap_or(now + overhead_s);
            let done = now + overhead_s;
            self.finished[req.model].push(Finished {
                variant: v,
                ttft_s: first - outcome.arrival_s,
                itl_s: (req.output_tokens > 1).then(|| (done - first) / f64::from(req.output_tokens - 1)),
                e2e_s: done - outcome.arrival_s,
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
            started: 0,
            running: BTreeSet::new(),
            decoding_count: 0,
            kv_blocks: 0,
            residue: vec![0; self.variants[v].block_tokens as usize],
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

    /// Remember how long a replica that is about to be ready took to start (for the metrics).
    fn note_startup(&mut self, id: u32) {
        let rep = &self.replicas[id as usize];
        if let (ReplicaState::Booting, Some(from)) = (rep.state, rep.record.allocated_s) {
            self.startups[rep.variant].push(self.now_s - from);
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
            s.startups_s = std::mem::take(&mut self.startups[v]);
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
        if self.snapshot.settings.routing == crate::scenario::format::RoutingSpec::Weighted {
            self.route_weights = policy.routing_weights(self.snapshot);
        }
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
            preemptions: self.preemptions,
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
        let mut snapshot = fleet([1, 0], false);
        snapshot.variants[0].engine.max_num_batched_tokens = 256;
        snapshot.variants[0].engine.chunked_prefill = true;
        let out = run_fixed(&snapshot, &requests(&[0.0]), vec![1, 0], &SimConfig::default());
        // 1000 tokens in chunks of 256: four steps, each paying γ.
        assert!((out.requests[0].ttft_ms().expect("served") - (4.0 * 10.0 + 100.0)).abs() < 1e-6);
    }

    #[test]
    fn a_full_kv_cache_preempts_the_newest_request_which_recomputes() {
        let mut snapshot = fleet([1, 0], false);
        // 2048 tokens = 128 blocks: two prompts of 1000 (63 blocks each) fit, their decodes do not.
        snapshot.variants[0].engine.kv_cache_tokens = Some(2048.0);
        let reqs: Vec<Request> = [0.0, 0.001]
            .iter()
            .map(|&t| Request { arrival_s: t, input_tokens: 1000, output_tokens: 200, model: 0, demand: 0 })
            .collect();
        let out = run_fixed(&snapshot, &reqs, vec![1, 0], &SimConfig::default());
        assert!(out.preemptions >= 1, "{}", out.preemptions);
        let (a, b) = (out.requests[0], out.requests[1]);
        assert!(a.done_s.is_some() && b.done_s.is_some());
        // The newest request waited for the older one and recomputed: it finishes well after it.
        assert!(b.done_s.expect("done") > a.done_s.expect("done") + 0.5, "{a:?} {b:?}");
        // Without the cache limit nothing is preempted.
        let out = run_fixed(&fleet([1, 0], false), &reqs, vec![1, 0], &SimConfig::default());
        assert_eq!(out.preemptions, 0);
    }

    #[test]
    fn a_busy_engine_takes_a_newcomer_after_its_scheduling_delay() {
        let with_delay = |steps: f64| {
            let mut snapshot = fleet([1, 0], false);
            let params = &mut snapshot.variants[0].profile.as_mut().expect("profile").params;
            params.scheduling_delay_steps = steps;
            params.ttft_overhead_ms = 5.0;
            // One request decoding for a while, a second arriving in the middle of a step.
            let reqs = vec![
                Request { arrival_s: 0.0, input_tokens: 100, output_tokens: 500, model: 0, demand: 0 },
                Request { arrival_s: 1.0005, input_tokens: 100, output_tokens: 2, model: 0, demand: 0 },
            ];
            let out = run_fixed(&snapshot, &reqs, vec![1, 0], &SimConfig::default());
            out.requests[1].ttft_ms().expect("served")
        };
        let (now, later) = (with_delay(0.0), with_delay(1.0));
        // One more decode step of ITL(1) = 21 ms before the prefill step.
        assert!((later - now - 21.0).abs() < 1.0, "{now} vs {later}");
        // The overhead is part of every TTFT: at least 5 ms + the prefill of 100 tokens.
        assert!(now >= 5.0 + 10.0 + 0.1 * 100.0);
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

    /// Fixed replicas, and planned rates for a router that follows them.
    struct Planned(Vec<u32>, Vec<f64>);

    impl Policy for Planned {
        fn name(&self) -> &str {
            "planned"
        }
        fn decide(&mut self, _: &Observation<'_>) -> Vec<u32> {
            self.0.clone()
        }
        fn routing_weights(&self, _: &Snapshot) -> Option<Vec<f64>> {
            Some(self.1.clone())
        }
    }

    #[test]
    fn weighted_routing_splits_requests_by_the_planned_rates() {
        // Arrivals after the first control tick (30 s), spaced so both replicas are idle each
        // time: least-loaded sends each to the lowest id; weighted sends three of every four to a,
        // as planned (counted over the samples, which may end before the last arrivals).
        let reqs = requests(&(0..40).map(|i| 31.0 + f64::from(i) * 2.0).collect::<Vec<_>>());
        let arrivals = |out: &SimOutcome, v: usize| out.samples.iter().map(|s| s.variants[v].arrivals).sum::<u32>();
        let config = SimConfig::default();
        let mut weighted = fleet([1, 1], false);
        weighted.settings.routing = crate::scenario::format::RoutingSpec::Weighted;
        let out = run(&weighted, &reqs, &mut Planned(vec![1, 1], vec![3.0, 1.0]), &config, &mut |_| {});
        let (a, b) = (arrivals(&out, 0), arrivals(&out, 1));
        assert!(a + b >= 36 && a.abs_diff(3 * b) <= 3, "weighted: {a} / {b}");
        // The same plan under least-loaded routing (the default) ignores the rates: with both
        // replicas idle at every arrival, each goes to the lowest id.
        let out = run(&fleet([1, 1], false), &reqs, &mut Planned(vec![1, 1], vec![3.0, 1.0]), &config, &mut |_| {});
        let (a, b) = (arrivals(&out, 0), arrivals(&out, 1));
        assert!(a >= 36 && b == 0, "least-loaded: {a} / {b}");
    }
}
