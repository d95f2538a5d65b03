//! One replica under Poisson-like load (DESIGN §3): the engine's step physics, request sizes as
//! distributions, the engine's limits, and the state-dependent batch queue in front of them.
//!
//! **Steps.** With k requests decoding, a step takes `base(k) = α + β·k + η·k·L + ζ·k²`
//! (L = the mean context of a decoding request) plus, when it takes prompts in, `γ + δ·P + ε·Σ I·p`.
//! Arrivals at rate λ bring prompt work `pw = δ·I + ε·I²` each, so a fraction f = λ·E[pw] of the
//! engine's time goes to prefill and the mean step a decoding request sees is
//! `step(k) = (base(k) + γ·π(k)) / (1 − f)`, π(k) the share of steps that take a prompt in.
//!
//! **Queue.** n requests present (admitted or waiting): min(n, B) are in the batch, where B is the
//! effective concurrency: `max_num_seqs`, or what the KV cache holds of this class's sizes when
//! that is less. Each holds its slot for T(n) = its own prefill steps + (E[O] − 1)·step(n), so
//! the chain's departure rate is μ(n) = n/T(n) and p_n ∝ Π λ/μ(i). The queue in front of the
//! batch is unbounded, as vLLM's is: λ ≥ μ(B) has no steady state. Above B the tail is geometric
//! and summed in closed form; the head is summed in log space around its mode, exactly up to
//! 16 states and in blocks of relative width 1/8 beyond (ln T interpolated quadratically inside
//! a block, Σ ln n exact), so μ is evaluated O(log B) times. Waits scale with the arrival and service variability (Allen–Cunneen).
//!
//! **Statistics** (arrivals see the time average: PASTA). TTFT of a prompt of I tokens arriving
//! with n others present: the API overhead, the rest of the step in flight (uniform over a
//! length-biased step), `scheduling_delay_steps` steps, the FCFS wait for the step budget behind
//! other prompts (Kingman), then its own ⌈I / (budget − n)⌉ steps and its prefill work; above
//! B, the exponential wait for a slot first. ITL per request: the mean step over its O − 1
//! steps, whose spread comes from the other prompts admitted meanwhile (a compound renewal sum);
//! ITL per token: the duration of the step a token ends. Means are exact sums over the chain
//! and the size strata; percentiles are the mixtures' quantiles (bisection on the CDF).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::engine::{ConcurrencyLimit, EngineLimits};
use super::normal;
use super::sizes::{STRATA, SizeDistribution, stratum_weight};
use super::{ItlPopulation, LatencyParams, Role, Statistic};

/// Floor on any time used as a divisor (ms): a fit may legitimately give a zero time.
const MIN_TIME_MS: f64 = 1e-9;

/// States summed one by one; beyond, geometric blocks (at least 8: see [`ln_gamma`]).
const EXACT_STATES: u32 = 16;

/// Blocks beyond [`EXACT_STATES`] span this fraction of their first state.
const BLOCK_FRACTION: f64 = 1.0 / 8.0;

/// A block of up to this number squared keeps every state with its own weight; a wider block is
/// summed in parts of this many states, each kept as one state of the chain.
const SUB_BLOCK_STATES: u32 = 8;

/// States below this share of the largest weight are dropped (e^-40 ≈ 4e-18).
const NEGLIGIBLE_LOG_WEIGHT: f64 = 40.0;

/// The chain's busy states are merged into bins before latencies are computed (the latency
/// given n is smooth in n): bin k holds the slice of the occupancy's quantile function between
/// the previous edge and `BIN_EDGES[k]` (shares of the busy probability). The slices are fine in
/// the upper tail, where the p90–p99 latencies come from, and coarse in the body, where only
/// means and medians do: 21 bins resolve the top 1 % in four slices, where 48 equal ones gave it
/// half of one.
const BIN_EDGES: [f64; 21] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995, 0.9975,
    1.0,
];

/// Quantile levels of [`Statistic`], ascending.
const LEVELS: [f64; 4] = [0.50, 0.90, 0.95, 0.99];

/// The requests of one traffic class: size distributions and arrival variability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// Prompt tokens per request.
    pub input: SizeDistribution,
    /// Generated tokens per request (the first comes from prefill).
    pub output: SizeDistribution,
    /// Squared coefficient of variation of inter-arrival times: 1 for Poisson arrivals, 0 for a
    /// constant rate (GuideLLM's `constant` profile), above 1 for bursty traffic.
    pub arrival_cv2: f64,
}

impl Workload {
    /// Poisson arrivals of requests with these size distributions.
    pub fn new(input: SizeDistribution, output: SizeDistribution) -> Self {
        Self { input: input.at_least(1.0), output: output.at_least(1.0), arrival_cv2: 1.0 }
    }

    /// Known only by mean sizes: the documented default shape (lognormal, CV 1).
    pub fn from_means(input_tokens: f64, output_tokens: f64) -> Self {
        Self::new(SizeDistribution::from_mean(input_tokens), SizeDistribution::from_mean(output_tokens))
    }

    /// Every request of the same size.
    pub fn constant(input_tokens: f64, output_tokens: f64) -> Self {
        Self::new(SizeDistribution::constant(input_tokens), SizeDistribution::constant(output_tokens))
    }

    /// The requests of several classes sent to one replica, by rate.
    pub fn mixture(classes: &[(f64, Workload)]) -> Self {
        let total: f64 = classes.iter().map(|(rps, _)| rps.max(0.0)).sum();
        if classes.len() == 1 || total <= 0.0 {
            return classes.first().map_or(Self::constant(1.0, 1.0), |c| c.1);
        }
        let input: Vec<(f64, SizeDistribution)> = classes.iter().map(|(r, w)| (*r, w.input)).collect();
        let output: Vec<(f64, SizeDistribution)> = classes.iter().map(|(r, w)| (*r, w.output)).collect();
        // Superposed arrival streams: the rate-weighted variability (exact for Poisson streams).
        let arrival_cv2 = classes.iter().map(|(r, w)| r.max(0.0) * w.arrival_cv2).sum::<f64>() / total;
        Self { input: SizeDistribution::mixture(&input), output: SizeDistribution::mixture(&output), arrival_cv2 }
    }

    pub fn with_arrival_cv2(self, arrival_cv2: f64) -> Self {
        Self { arrival_cv2: arrival_cv2.max(0.0), ..self }
    }

    pub fn mean_input_tokens(&self) -> f64 {
        self.input.mean()
    }

    pub fn mean_output_tokens(&self) -> f64 {
        self.output.mean()
    }

    /// L: the mean context of a request in the batch, time-averaged and length-biased:
    /// E[I] + E[O²]/(2·E[O]) (a request holds I + t tokens at its t-th step and stays O steps).
    pub fn context_tokens(&self) -> f64 {
        self.input.mean() + self.output.second_moment() / (2.0 * self.output.mean().max(1.0))
    }
}

/// One replica of a variant serving one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaModel {
    params: LatencyParams,
    limits: EngineLimits,
    role: Role,
    workload: Workload,
    /// B: the effective concurrency.
    batch: u32,
    /// Prompt tokens and prefill work δ·I + ε·I² (ms) of each input stratum.
    input_tokens: [f64; STRATA],
    prefill_work_ms: [f64; STRATA],
    mean_prefill_work_ms: f64,
    /// Output tokens of each output stratum.
    output_tokens: [f64; STRATA],
    /// The workload's moments, computed once: every step and μ evaluation needs them.
    mean_input_tokens: f64,
    mean_output_tokens: f64,
    /// L, see [`Workload::context_tokens`].
    context_tokens: f64,
    /// λ* (req/s): the largest sustainable arrival rate.
    saturation_rps: f64,
}

/// Mean behaviour of a step with `k` requests decoding, at one arrival rate.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    /// The decode part: α + βk + ηkL + ζk² (0 when nothing decodes).
    base_ms: f64,
    /// Mean step duration a decoding request sees.
    mean_ms: f64,
    /// Prompts taken in per step.
    admissions: f64,
    /// Share of steps that take at least one prompt in.
    prefill_share: f64,
    /// Mean duration of such a step.
    prefill_step_ms: f64,
    /// Prompts such a step takes in, on average (c = ν/π).
    prompts_per_prefill_step: f64,
}

impl Step {
    /// An idle replica: nothing in flight.
    const IDLE: Step = Step {
        base_ms: 0.0,
        mean_ms: 0.0,
        admissions: 0.0,
        prefill_share: 0.0,
        prefill_step_ms: 0.0,
        prompts_per_prefill_step: 1.0,
    };
}

impl ReplicaModel {
    /// The model of one replica; `limits.max_num_seqs` of 0 is treated as 1.
    pub fn new(params: LatencyParams, limits: EngineLimits, role: Role, workload: Workload) -> Self {
        let batch = limits.effective_concurrency(role, &workload.input, &workload.output).max(1);
        let mut input_tokens = [0.0; STRATA];
        let mut prefill_work_ms = [0.0; STRATA];
        let mut output_tokens = [0.0; STRATA];
        for (j, (_, tokens)) in workload.input.strata().enumerate() {
            input_tokens[j] = tokens;
            prefill_work_ms[j] = params.delta_ms * tokens + params.prefill_quadratic_ms * tokens * tokens;
        }
        for (j, (_, tokens)) in workload.output.strata().enumerate() {
            output_tokens[j] = tokens;
        }
        let mean_prefill_work_ms: f64 = (0..STRATA).map(|j| stratum_weight(j) * prefill_work_ms[j]).sum();
        let mut model = Self {
            params,
            limits,
            role,
            workload,
            batch,
            input_tokens,
            prefill_work_ms,
            mean_prefill_work_ms,
            output_tokens,
            mean_input_tokens: workload.input.mean(),
            mean_output_tokens: workload.output.mean(),
            context_tokens: workload.context_tokens(),
            saturation_rps: 0.0,
        };
        model.saturation_rps = model.solve_saturation();
        model
    }

    /// A model with only a sequence limit and constant sizes: the simplest replica.
    pub fn simple(params: LatencyParams, max_num_seqs: u32, role: Role, workload: Workload) -> Self {
        Self::new(params, EngineLimits::sequences_only(max_num_seqs), role, workload)
    }

    pub fn params(&self) -> &LatencyParams {
        &self.params
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    /// B: the most requests in the batch (max_num_seqs, or the KV cache's limit when lower).
    pub fn max_batch(&self) -> u32 {
        self.batch
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// λ*: the largest arrival rate one replica sustains (req/s).
    pub fn saturation_rps(&self) -> f64 {
        self.saturation_rps
    }

    /// The decode part of a step with `k` requests decoding (ms): α + β·k + η·k·L + ζ·k².
    pub fn decode_base_ms(&self, k: f64) -> f64 {
        if k <= 0.0 {
            return 0.0;
        }
        self.params.step_ms(k, k * self.context_tokens, 0.0, 0.0)
    }

    /// A step with `k` decoding that also prefills `prompts` prompts of `tokens` tokens each
    /// (γ included).
    fn prefill_step_ms(&self, k: f64, prompts: f64, tokens: f64) -> f64 {
        let context = k.max(0.0) * self.context_tokens;
        self.params.step_ms(k.max(0.0), context, prompts * tokens, prompts * tokens * tokens)
    }

    /// Tokens a step has for prompts while `decoding` requests decode.
    fn prompt_budget_tokens(&self, decoding: f64) -> f64 {
        if self.limits.chunked_prefill {
            (f64::from(self.limits.max_num_batched_tokens) - decoding).max(1.0)
        } else {
            f64::INFINITY
        }
    }

    /// Steps a prompt of `tokens` takes while `decoding` requests decode: ⌈I / budget⌉ chunks
    /// with chunked prefill, one step without (vLLM then needs the budget to cover any prompt).
    fn prefill_steps(&self, tokens: f64, decoding: f64) -> f64 {
        if self.limits.chunked_prefill { (tokens / self.prompt_budget_tokens(decoding)).ceil().max(1.0) } else { 1.0 }
    }

    /// The step of a batch with `k` decoding at arrival rate `lambda_rps` (role both; decode
    /// replicas never prefill). Prompts arrive ν = λ·E[step] per step; a share π = 1 − e^{−ν} of
    /// steps take c = ν/π of them in. E[step] = (1 − π)·S(k, 0) + π·S(k, c·I) solves a fixed
    /// point (regula falsi between the plain step and the additive bound), with the mean prompt
    /// (the strata enter the percentiles, not the mean).
    fn step(&self, k: f64, lambda_rps: f64) -> Step {
        let base_ms = self.decode_base_ms(k);
        if self.role == Role::Decode
            || lambda_rps <= 0.0
            || self.mean_prefill_work_ms <= 0.0 && self.params.gamma_ms <= 0.0
        {
            return Step {
                base_ms,
                mean_ms: base_ms,
                admissions: 0.0,
                prefill_share: 0.0,
                prefill_step_ms: base_ms,
                prompts_per_prefill_step: 1.0,
            };
        }
        let lambda_per_ms = lambda_rps / 1000.0;
        let mean_input = self.mean_input_tokens;
        let at = |mean: f64| -> (f64, f64, f64, f64) {
            let nu = lambda_per_ms * mean;
            let pi = -(-nu).exp_m1();
            let c = if pi > 1e-300 { nu / pi } else { 1.0 };
            let prefill = self.prefill_step_ms(k, c, mean_input);
            ((1.0 - pi) * base_ms + pi * prefill, nu, pi, prefill)
        };
        // g(m) = at(m) − m is positive at the plain step and negative at the additive bound
        // (base + γ)/(1 − λ·E[pw]) when that is finite. at is increasing, so the fixed-point step
        // at(base) stays below the root: the secant through base and at(base) starts close, and
        // converges in a few evaluations; a secant step that leaves the bracket bisects instead.
        let free = 1.0 - lambda_per_ms * self.mean_prefill_work_ms;
        let lo0 = base_ms.max(MIN_TIME_MS);
        let at_lo0 = at(lo0);
        let g_lo0 = at_lo0.0 - lo0;
        let (mean, (_, admissions, prefill_share, prefill_step_ms)) = if g_lo0 <= 0.0 {
            (lo0, at_lo0)
        } else if free <= 1e-6 {
            // Unbounded (prefill work fills the engine): the caller's saturation check catches it.
            (1e9, at(1e9))
        } else {
            let (mut lo, mut hi) = (lo0, (base_ms + self.params.gamma_ms) / free);
            let (mut a, mut g_a) = (lo0, g_lo0);
            let mut b = (lo0 + g_lo0).min(hi);
            let mut at_b = at(b);
            let mut g_b = at_b.0 - b;
            for _ in 0..60 {
                if g_b.abs() <= 1e-7 * b {
                    break;
                }
                if g_b > 0.0 {
                    lo = b;
                } else {
                    hi = b;
                }
                if hi - lo <= 1e-7 * hi {
                    break;
                }
                let secant = if g_b != g_a { b - g_b * (b - a) / (g_b - g_a) } else { f64::NAN };
                let next = if secant > lo && secant < hi { secant } else { 0.5 * (lo + hi) };
                (a, g_a) = (b, g_b);
                b = next;
                at_b = at(b);
                g_b = at_b.0 - b;
            }
            (b, at_b)
        };
        let prompts_per_prefill_step = if prefill_share > 1e-300 { admissions / prefill_share } else { 1.0 };
        Step { base_ms, mean_ms: mean, admissions, prefill_share, prefill_step_ms, prompts_per_prefill_step }
    }

    /// How long a prompt of `tokens` takes from its first step to its first token while `others`
    /// requests decode: ⌈I / budget⌉ steps, each with its share of the prompt (ms).
    fn own_prefill_time_ms(&self, tokens: f64, others: f64) -> f64 {
        let steps = self.prefill_steps(tokens, others);
        steps * self.prefill_step_ms(others, 1.0 / steps, tokens)
    }

    /// Mean time of a prompt's own prefill steps when `others` requests decode (ms).
    fn own_prefill_ms(&self, others: f64, _lambda_rps: f64) -> f64 {
        (0..STRATA).map(|j| stratum_weight(j) * self.own_prefill_time_ms(self.input_tokens[j], others)).sum()
    }

    /// T(n): how long one request holds its batch slot with n in the batch (ms).
    pub fn service_time_ms(&self, n: f64, lambda_rps: f64) -> f64 {
        let n = n.max(1.0);
        let decode_steps = self.mean_output_tokens - 1.0;
        let t = match self.role {
            Role::Both => {
                self.own_prefill_ms(n - 1.0, lambda_rps) + decode_steps.max(0.0) * self.step(n, lambda_rps).mean_ms
            }
            Role::Prefill => {
                // A batch of n prompts shares steps of the budget: γ per step, its work per prompt.
                let steps =
                    (n * self.mean_input_tokens / f64::from(self.limits.max_num_batched_tokens)).ceil().max(1.0);
                self.params.gamma_ms * steps + n * self.mean_prefill_work_ms
            }
            Role::Decode => decode_steps.max(1.0) * self.decode_base_ms(n),
        };
        t.max(MIN_TIME_MS)
    }

    /// μ(n) = n / T(n) in req/s.
    fn departure_rps(&self, n: f64, lambda_rps: f64) -> f64 {
        1000.0 * n / self.service_time_ms(n, lambda_rps)
    }

    /// The largest λ with λ < μ(B)(λ) whose prompts also fit the step budget. Both conditions
    /// hold on an interval [0, λ_i): μ(B)(λ) − λ falls in λ and is found by regula falsi
    /// (Illinois), the budget only checked at that root and bisected below it when it fails
    /// (prompts long against the budget).
    fn solve_saturation(&self) -> f64 {
        let b = f64::from(self.batch);
        let ceiling = match self.role {
            Role::Both if self.mean_prefill_work_ms > 0.0 => 1000.0 / self.mean_prefill_work_ms,
            _ => f64::INFINITY,
        };
        // μ(B) only falls as λ's prompts take the engine's time: μ(B)(0) bounds λ*.
        let idle_mu = self.departure_rps(b, 0.0);
        let hi = idle_mu.min(ceiling);
        if self.role != Role::Both {
            return hi;
        }
        let excess = |lambda: f64| self.departure_rps(b, lambda) - lambda;
        let (mut lo, mut hi) = (0.0, hi);
        let (mut g_lo, mut g_hi) = (idle_mu, excess(hi));
        if g_hi > 0.0 {
            // The prefill ceiling binds: just below it.
            lo = hi * (1.0 - 1e-9);
        } else {
            let mut kept = 0_i8;
            for i in 0..100 {
                if hi - lo <= 1e-9 * hi {
                    break;
                }
                let width = hi - lo;
                // Interpolate while the ends have a usable slope (a NaN one bisects).
                let slope = g_lo - g_hi;
                let mid = if i % 3 != 2 && slope > 0.0 {
                    (lo + g_lo * width / slope).clamp(lo + 1e-4 * width, hi - 1e-4 * width)
                } else {
                    0.5 * (lo + hi)
                };
                let g = excess(mid);
                if g > 0.0 {
                    (lo, g_lo) = (mid, g);
                    if kept == -1 {
                        g_hi *= 0.5;
                    }
                    kept = -1;
                } else {
                    (hi, g_hi) = (mid, g);
                    if kept == 1 {
                        g_lo *= 0.5;
                    }
                    kept = 1;
                }
            }
        }
        if self.prompts_fit(lo) {
            return lo;
        }
        let mut fits = 0.0;
        for _ in 0..80 {
            let mid = 0.5 * (fits + lo);
            if self.prompts_fit(mid) {
                fits = mid;
            } else {
                lo = mid;
            }
            if lo - fits <= 1e-9 * lo {
                break;
            }
        }
        fits
    }

    /// Whether λ's prompt tokens fit what the step budget leaves after the decodes, at the
    /// batch the fluid fixed point n = λ·T(n) gives (chunked prefill; without it every prompt
    /// gets its own step).
    fn prompts_fit(&self, lambda_rps: f64) -> bool {
        if !self.limits.chunked_prefill {
            return true;
        }
        let b = f64::from(self.batch);
        let mut n: f64 = 1.0;
        for _ in 0..30 {
            let next = (lambda_rps * self.service_time_ms(n, lambda_rps) / 1000.0).clamp(1.0, b);
            let settled = (next - n).abs() <= 1e-6 * n;
            n = next;
            if settled {
                break;
            }
        }
        let step_ms = self.step(n, lambda_rps).mean_ms;
        lambda_rps / 1000.0 * self.mean_input_tokens * step_ms < self.prompt_budget_tokens(n)
    }

    /// Steady state at `arrival_rps`; `None` when λ is negative, not finite, or at or above
    /// saturation (the unbounded queue has no steady state there).
    pub fn steady(&self, arrival_rps: f64) -> Option<Steady<'_>> {
        let lambda = arrival_rps;
        if !lambda.is_finite() || lambda < 0.0 || lambda >= self.saturation_rps {
            return None;
        }
        Some(Steady::new(self, lambda))
    }

    /// Every statistic at `arrival_rps` (see [`ReplicaModel::steady`]).
    pub fn analyze(&self, arrival_rps: f64) -> Option<QueueMetrics> {
        self.steady(arrival_rps).map(|s| s.metrics())
    }

    /// A chain state with its step and per-stratum prefill steps.
    fn stepped(&self, n: f64, probability: f64, lambda_rps: f64) -> Stepped {
        let step = self.step(n, lambda_rps);
        let mut prefill_steps_ms = [step.base_ms; STRATA];
        if step.prefill_share > 0.0 {
            for (j, slot) in prefill_steps_ms.iter_mut().enumerate() {
                *slot = self.prefill_step_ms(n, step.prompts_per_prefill_step, self.input_tokens[j]);
            }
        }
        Stepped { n, probability, step, prefill_steps_ms }
    }

    /// Squared coefficient of variation of the time a request holds its slot, over the size strata.
    fn service_cv2(&self, n: f64, lambda_rps: f64) -> f64 {
        let step = self.step(n, lambda_rps).mean_ms;
        let prefill: Vec<f64> = (0..STRATA).map(|j| self.own_prefill_time_ms(self.input_tokens[j], n - 1.0)).collect();
        let decode: Vec<f64> = (0..STRATA).map(|j| (self.output_tokens[j] - 1.0).max(0.0) * step).collect();
        let (mp, vp) = mean_var(&prefill);
        let (md, vd) = mean_var(&decode);
        let (mean, var) = match self.role {
            Role::Both => (mp + md, vp + vd),
            Role::Prefill => (mp, vp),
            Role::Decode => (md, vd),
        };
        if mean > 0.0 { var / (mean * mean) } else { 0.0 }
    }
}

/// Mean and variance of per-stratum values.
fn mean_var(values: &[f64]) -> (f64, f64) {
    let mean: f64 = values.iter().enumerate().map(|(j, v)| stratum_weight(j) * v).sum();
    let var = values.iter().enumerate().map(|(j, v)| stratum_weight(j) * (v - mean).powi(2)).sum();
    (mean, var)
}

/// One (possibly merged) state of the chain below B.
#[derive(Clone, Copy, Debug)]
struct State {
    /// Requests present (a bin's probability-weighted mean).
    n: f64,
    probability: f64,
}

/// A state with the step its batch runs.
#[derive(Clone, Copy, Debug)]
struct Stepped {
    n: f64,
    probability: f64,
    step: Step,
    /// A prefill step's duration when its prompts are of input stratum j.
    prefill_steps_ms: [f64; STRATA],
}

/// What an arriving prompt meets in one state of the chain, per input stratum: computed once per
/// steady state, since TTFT's CDF is evaluated many times (quantile searches) at fixed states.
#[derive(Clone, Debug)]
struct Arrival {
    probability: f64,
    /// It waited for a batch slot first (n ≥ B).
    waited: bool,
    parts: [TtftParts; STRATA],
}

/// The steady state of one replica at one arrival rate: the chain's distribution, from which
/// every statistic is computed.
#[derive(Clone, Debug)]
pub struct Steady<'a> {
    model: &'a ReplicaModel,
    lambda_rps: f64,
    /// P(n = 0).
    idle: f64,
    /// States 1 ≤ n < B, merged into bins.
    busy: Vec<Stepped>,
    /// The state a request that waited for a slot is admitted into (B − 1 others).
    admitted: Stepped,
    /// Batch sizes a decoding request is part of, weighted by how many requests see each
    /// (∝ m·P(batch = m)), normalised.
    present: Vec<Stepped>,
    /// P(n ≥ B): an arrival waits for a slot.
    wait_probability: f64,
    /// Mean of that wait given it happens (ms), after the variability scaling.
    wait_given_ms: f64,
    mean_in_service: f64,
    mean_queue_len: f64,
    /// The FCFS wait for the step budget behind other prompts.
    prompt_wait: Exponential,
    /// The arrival states (idle, busy bins, waited) with what a prompt meets in each: built on
    /// the first TTFT statistic asked for (an ITL-only target never needs it).
    arrivals: std::sync::OnceLock<Vec<Arrival>>,
    /// Per `present` state and output stratum: the standard deviation of a request's mean ITL.
    itl_spread_ms: Vec<[f64; STRATA]>,
}

impl<'a> Steady<'a> {
    fn new(model: &'a ReplicaModel, lambda: f64) -> Self {
        if lambda == 0.0 {
            return Self::idle(model);
        }
        let b = model.batch;
        let chain = Chain::solve(model, lambda);
        let stepped = |n: f64, probability: f64| model.stepped(n, probability, lambda);
        let busy: Vec<Stepped> = merge_bins(chain.busy).into_iter().map(|s| stepped(s.n, s.probability)).collect();
        let admitted = stepped(f64::from(b.saturating_sub(1)), chain.wait_probability);

        let mut present: Vec<Stepped> =
            busy.iter().map(|s| Stepped { probability: s.probability * s.n.max(1.0), ..*s }).collect();
        if chain.wait_probability > 0.0 {
            present.push(stepped(f64::from(b), chain.wait_probability * f64::from(b)));
        }
        let total: f64 = present.iter().map(|s| s.probability).sum();
        if total > 0.0 {
            present.iter_mut().for_each(|s| s.probability /= total);
        } else {
            // λ → 0⁺: a lone request.
            present = vec![stepped(1.0, 1.0)];
        }

        // Waiting for a slot: exponential with rate μ(B)(1 − r) in the birth–death chain, scaled
        // by (c_a² + c_s²)/2 for other arrival and service variability (Allen–Cunneen).
        let variability = (model.workload.arrival_cv2 + model.service_cv2(f64::from(b), lambda)) / 2.0;
        let wait_given_ms = if chain.wait_probability > 0.0 {
            variability * 1000.0 / (chain.mu_b_rps - lambda).max(1e-300)
        } else {
            0.0
        };
        let prompt_wait = Self::prompt_wait(model, lambda, chain.mean_in_service);
        Self {
            model,
            lambda_rps: lambda,
            idle: chain.idle,
            busy,
            admitted,
            present,
            wait_probability: chain.wait_probability,
            wait_given_ms,
            mean_in_service: chain.mean_in_service,
            mean_queue_len: chain.mean_queue_len,
            prompt_wait,
            arrivals: std::sync::OnceLock::new(),
            itl_spread_ms: Vec::new(),
        }
        .with_itl_spread()
    }

    /// The arrival states with what a prompt meets in each (see [`Steady::arrivals`]).
    fn arrivals(&self) -> &[Arrival] {
        self.arrivals.get_or_init(|| {
            let at = |others: f64, step: &Step| -> [TtftParts; STRATA] {
                std::array::from_fn(|j| self.ttft_parts(others, step, j))
            };
            let mut arrivals = Vec::with_capacity(self.busy.len() + 2);
            arrivals.push(Arrival { probability: self.idle, waited: false, parts: at(0.0, &Step::IDLE) });
            for s in &self.busy {
                arrivals.push(Arrival { probability: s.probability, waited: false, parts: at(s.n, &s.step) });
            }
            if self.wait_probability > 0.0 {
                arrivals.push(Arrival {
                    probability: self.wait_probability,
                    waited: true,
                    parts: at(self.admitted.n, &self.admitted.step),
                });
            }
            arrivals
        })
    }

    /// Fills [`Steady::itl_spread_ms`] from the states requests decode in.
    fn with_itl_spread(mut self) -> Self {
        let m = self.model;
        self.itl_spread_ms = self
            .present
            .iter()
            .map(|s| {
                let step = &s.step;
                // Over its K steps a request meets N prefill steps (mean K·π; variance
                // c_a²·K·π(1 − π), binomial for Poisson arrivals), each longer than a plain step
                // by e_j: its mean ITL is base + Σe/K.
                let (mut e_mean, mut e_sq) = (0.0, 0.0);
                for j in 0..STRATA {
                    let e = s.prefill_steps_ms[j] - step.base_ms;
                    e_mean += stratum_weight(j) * e;
                    e_sq += stratum_weight(j) * e * e;
                }
                let e_var = (e_sq - e_mean * e_mean).max(0.0);
                let pi = step.prefill_share;
                let count_var_per_step = m.workload.arrival_cv2 * pi * (1.0 - pi);
                std::array::from_fn(|j| {
                    let k = (m.output_tokens[j] - 1.0).max(1.0);
                    let variance = k * pi * e_var + k * count_var_per_step * e_mean * e_mean;
                    variance.sqrt() / k
                })
            })
            .collect();
        self
    }

    /// Prompts behind prompts: the step budget serves λ·E[I] tokens at C per step, a G/G/1 queue
    /// in tokens (Kingman): W = ρ/(1 − ρ)·(c_a² + c_I²)/2·S, S the steps one prompt needs.
    /// Negligible unless prompts are long against the budget.
    fn prompt_wait(model: &ReplicaModel, lambda: f64, mean_in_service: f64) -> Exponential {
        if model.role != Role::Both || !model.limits.chunked_prefill {
            return Exponential::mixed(0.0, 0.0);
        }
        let decoding = mean_in_service.max(1.0);
        let c = model.prompt_budget_tokens(decoding);
        let step = model.step(decoding, lambda);
        let input = &model.workload.input;
        let rho = (lambda / 1000.0 * input.mean() * step.mean_ms / c).min(0.999);
        if rho < 1e-4 {
            return Exponential::mixed(0.0, 0.0);
        }
        let full_step_ms = step.base_ms + model.params.gamma_ms + model.params.delta_ms * c;
        let service_ms = input.mean() / c * full_step_ms;
        let input_cv2 = (input.second_moment() / (input.mean() * input.mean()) - 1.0).max(0.0);
        let mean_wait = rho / (1.0 - rho) * (model.workload.arrival_cv2 + input_cv2) / 2.0 * service_ms;
        Exponential::mixed(rho, mean_wait / rho)
    }

    /// λ = 0: an arriving request is alone.
    fn idle(model: &'a ReplicaModel) -> Self {
        let lone = model.stepped(1.0, 1.0, 0.0);
        Self {
            model,
            lambda_rps: 0.0,
            idle: 1.0,
            busy: Vec::new(),
            admitted: Stepped { probability: 0.0, ..lone },
            present: vec![lone],
            wait_probability: 0.0,
            wait_given_ms: 0.0,
            mean_in_service: 0.0,
            mean_queue_len: 0.0,
            prompt_wait: Exponential::mixed(0.0, 0.0),
            arrivals: std::sync::OnceLock::new(),
            itl_spread_ms: Vec::new(),
        }
        .with_itl_spread()
    }

    pub fn arrival_rps(&self) -> f64 {
        self.lambda_rps
    }

    /// λ / λ*.
    pub fn utilization(&self) -> f64 {
        self.lambda_rps / self.model.saturation_rps
    }

    // ---- TTFT ----

    /// What a prompt of stratum j meets when it arrives with `others` present (below B), their
    /// batch running `step`: the fixed part (ms) and the rest of the step in flight.
    fn ttft_parts(&self, others: f64, step: &Step, j: usize) -> TtftParts {
        let m = self.model;
        let p = &m.params;
        let tokens = m.input_tokens[j];
        match m.role {
            Role::Decode => TtftParts { fixed_ms: 0.0, residual: Residual::NONE },
            Role::Prefill => {
                // It joins the prompts being batched: the batch's steps and their work.
                let total_tokens = others * m.mean_input_tokens + tokens;
                let steps = (total_tokens / f64::from(m.limits.max_num_batched_tokens)).ceil().max(1.0);
                TtftParts {
                    fixed_ms: p.ttft_overhead_ms
                        + p.gamma_ms * steps
                        + others * m.mean_prefill_work_ms
                        + m.prefill_work_ms[j],
                    residual: Residual::NONE,
                }
            }
            Role::Both if others < 0.5 => TtftParts {
                fixed_ms: p.ttft_overhead_ms + m.own_prefill_time_ms(tokens, 0.0),
                residual: Residual::NONE,
            },
            Role::Both => {
                let own = m.own_prefill_time_ms(tokens, others);
                // The step in flight is another prompt's prefill step with probability φ (their
                // time share) for Poisson arrivals; evenly spaced arrivals rarely land in one
                // while prefills do not overlap (φ small), so the chance scales from φ·c_a² up
                // to φ as φ grows: φ·(c_a² + (1 − c_a²)·φ⁴).
                let time_share =
                    if step.mean_ms > 0.0 { step.prefill_share * step.prefill_step_ms / step.mean_ms } else { 0.0 };
                let phi = time_share.clamp(0.0, 1.0);
                let cv2 = m.workload.arrival_cv2.min(1.0);
                let landing = phi * (cv2 + (1.0 - cv2) * phi.powi(4));
                // The step scheduled meanwhile is of the same kind.
                let delayed = (1.0 - landing) * step.base_ms + landing * step.prefill_step_ms;
                TtftParts {
                    fixed_ms: p.ttft_overhead_ms + p.scheduling_delay_steps * delayed + own,
                    residual: Residual {
                        plain_ms: step.base_ms,
                        prefill_ms: step.prefill_step_ms,
                        prefill_share: landing,
                    },
                }
            }
        }
    }

    /// Σ over the arrival states (idle, busy bins, waited) and prompt strata of
    /// P(state)·w_j·g(parts, waited).
    fn over_arrivals(&self, g: impl Fn(&TtftParts, bool) -> f64) -> f64 {
        self.arrivals()
            .iter()
            .map(|a| {
                a.probability * a.parts.iter().enumerate().map(|(j, p)| stratum_weight(j) * g(p, a.waited)).sum::<f64>()
            })
            .sum()
    }

    /// Mean TTFT (ms). For a decode replica: the wait before its first decode step.
    pub fn mean_ttft_ms(&self) -> f64 {
        let slot_wait = self.wait_probability * self.wait_given_ms;
        if self.model.role == Role::Decode {
            return slot_wait;
        }
        self.over_arrivals(|parts, _| parts.fixed_ms + parts.residual.mean_ms()) + slot_wait + self.prompt_wait.mean()
    }

    /// P(TTFT ≤ t).
    pub fn ttft_cdf(&self, t_ms: f64) -> f64 {
        let slot = Exponential::mixed(1.0, self.wait_given_ms);
        if self.model.role == Role::Decode {
            // The wait for a slot is the whole "TTFT".
            return (1.0 - self.wait_probability) * f64::from(t_ms >= 0.0) + self.wait_probability * slot.cdf(t_ms);
        }
        let waited = self.prompt_wait.plus(&slot);
        self.over_arrivals(|parts, after_wait| {
            let x = t_ms - parts.fixed_ms;
            if after_wait {
                // After a wait the rest of a step is folded into its mean.
                waited.cdf(x - parts.residual.mean_ms())
            } else {
                parts.residual.plus_cdf(&self.prompt_wait, x)
            }
        })
        .clamp(0.0, 1.0)
    }

    /// The q-quantile of TTFT (smallest t with P(TTFT ≤ t) ≥ q, to 1e-9 relative).
    pub fn ttft_quantile_ms(&self, q: f64) -> f64 {
        quantile_by_bisection(|t| self.ttft_cdf(t), q, self.mean_ttft_ms())
    }

    // ---- ITL ----

    /// Mean ITL over `population` (ms). Prefill replicas make no decode tokens: 0.
    pub fn mean_itl_ms(&self, population: ItlPopulation) -> f64 {
        if self.model.role == Role::Prefill {
            return 0.0;
        }
        match population {
            ItlPopulation::Request => self.present.iter().map(|s| s.probability * s.step.mean_ms).sum(),
            ItlPopulation::Token => {
                // Tokens come m per step: state m's token share ∝ P(m)·m / step(m), and
                // `present` already carries P(m)·m.
                let tokens: f64 = self.present.iter().map(|s| s.probability / s.step.mean_ms.max(MIN_TIME_MS)).sum();
                1.0 / tokens
            }
        }
    }

    /// P(ITL ≤ t) over `population`.
    pub fn itl_cdf(&self, population: ItlPopulation, t_ms: f64) -> f64 {
        let m = self.model;
        if m.role == Role::Prefill {
            return f64::from(t_ms >= 0.0);
        }
        match population {
            ItlPopulation::Request => {
                let mut total = 0.0;
                for (s, spread) in self.present.iter().zip(&self.itl_spread_ms) {
                    let p: f64 =
                        (0..STRATA).map(|j| stratum_weight(j) * normal_cdf(t_ms, s.step.mean_ms, spread[j])).sum();
                    total += s.probability * p;
                }
                total.clamp(0.0, 1.0)
            }
            ItlPopulation::Token => {
                let (mut tokens, mut below) = (0.0, 0.0);
                for s in &self.present {
                    let step = &s.step;
                    let share = s.probability / step.mean_ms.max(MIN_TIME_MS);
                    tokens += share;
                    // Plain steps, and steps that also prefill (by the prompts' stratum).
                    let mut p = (1.0 - step.prefill_share) * f64::from(step.base_ms <= t_ms);
                    if step.prefill_share > 0.0 {
                        for j in 0..STRATA {
                            p += step.prefill_share * stratum_weight(j) * f64::from(s.prefill_steps_ms[j] <= t_ms);
                        }
                    }
                    below += share * p;
                }
                (below / tokens).clamp(0.0, 1.0)
            }
        }
    }

    /// The q-quantile of ITL over `population`.
    pub fn itl_quantile_ms(&self, population: ItlPopulation, q: f64) -> f64 {
        if self.model.role == Role::Prefill {
            return 0.0;
        }
        quantile_by_bisection(|t| self.itl_cdf(population, t), q, self.mean_itl_ms(population))
    }

    // ---- everything ----

    /// Mean KV-cache tokens in use over the cache's capacity, when the capacity is known.
    pub fn kv_cache_utilization(&self) -> Option<f64> {
        let m = self.model;
        m.limits.kv_cache_tokens.filter(|kv| *kv > 0.0).map(|kv| {
            self.mean_in_service * m.limits.kv_tokens_per_request(m.role, &m.workload.input, &m.workload.output) / kv
        })
    }

    /// Every statistic.
    pub fn metrics(&self) -> QueueMetrics {
        let m = self.model;
        let ttft = LatencyStats::new(self.mean_ttft_ms(), LEVELS.map(|q| self.ttft_quantile_ms(q)));
        let itl = |population| {
            LatencyStats::new(self.mean_itl_ms(population), LEVELS.map(|q| self.itl_quantile_ms(population, q)))
        };
        QueueMetrics {
            role: m.role,
            arrival_rps: self.lambda_rps,
            saturation_rps: m.saturation_rps,
            utilization: self.utilization(),
            effective_concurrency: m.batch,
            concurrency_limit: m.limits.concurrency_limit(m.role, &m.workload.input, &m.workload.output),
            mean_in_service: self.mean_in_service,
            mean_queue_len: self.mean_queue_len,
            wait_probability: self.wait_probability,
            mean_wait_ms: self.wait_probability * self.wait_given_ms,
            kv_cache_utilization: self.kv_cache_utilization(),
            ttft,
            itl: itl(ItlPopulation::Request),
            itl_token: itl(ItlPopulation::Token),
        }
    }

    /// One statistic of TTFT.
    pub fn ttft_ms(&self, statistic: Statistic) -> f64 {
        match statistic.quantile() {
            None => self.mean_ttft_ms(),
            Some(q) => self.ttft_quantile_ms(q),
        }
    }

    /// One statistic of ITL over `population`.
    pub fn itl_ms(&self, statistic: Statistic, population: ItlPopulation) -> f64 {
        match statistic.quantile() {
            None => self.mean_itl_ms(population),
            Some(q) => self.itl_quantile_ms(population, q),
        }
    }
}

/// The chain's stationary distribution, before binning.
struct Chain {
    idle: f64,
    /// 1 ≤ n < B: single states up to [`EXACT_STATES`], blocks beyond.
    busy: Vec<State>,
    wait_probability: f64,
    mean_in_service: f64,
    mean_queue_len: f64,
    mu_b_rps: f64,
}

impl Chain {
    /// p_n ∝ Π_{i≤n} λ/μ(i), summed in log space from n = 0 up to B (or until the weights past
    /// the mode are negligible). Beyond [`EXACT_STATES`], μ is evaluated only at block knots
    /// every n·[`BLOCK_FRACTION`] states: ln(λ/μ(n)) = ln(λ·T(n)/1000) − ln n, the smooth part
    /// ln T interpolated quadratically between the knots and Σ ln n summed exactly (ln Γ), so an
    /// M/M/c chain (T constant) is exact at any block width. A block's mass is then a sum of
    /// exp(L), taken state by state for narrow blocks and by Simpson's rule on 32 intervals for
    /// wide ones. So μ is evaluated O(log B) times: about 40 for B = 256.
    fn solve(model: &ReplicaModel, lambda: f64) -> Chain {
        let b = model.batch;
        let ln_lambda = lambda.ln();
        let f = |n: f64| ln_lambda - model.departure_rps(n, lambda).ln();
        let mut states: Vec<(f64, f64)> = Vec::new(); // (n, log mass) for 1 ≤ n < B
        let mut log_w = 0.0; // log w(n) at the last state summed; w(0) = 1
        let mut max_log = 0.0_f64;
        let mut n: u32 = 0;
        let mut f_n = f64::NAN; // ln(λ/μ) at the last state summed
        let mut reached_b = false;
        loop {
            if n + 1 >= b {
                log_w += f(f64::from(b));
                reached_b = true;
                break;
            }
            let width = if n < EXACT_STATES { 1 } else { ((f64::from(n) * BLOCK_FRACTION) as u32).clamp(1, b - 1 - n) };
            if width == 1 {
                let next = f(f64::from(n + 1));
                log_w += next;
                n += 1;
                f_n = next;
                states.push((f64::from(n), log_w));
            } else {
                let n0 = f64::from(n);
                let start = if f_n.is_nan() { f(n0) } else { f_n };
                let s_f = f64::from(width);
                let middle = f(n0 + s_f / 2.0);
                let end = f(n0 + s_f);
                // The smooth part h(t) = f(n0 + t) + ln(n0 + t) ≈ a + b·t + c·t² through
                // t = 0, s/2, s (Simpson exactness), so L(i) = log_w + Σ_{t=1..i} h(t) − Σ ln(n0 + t)
                // in closed form.
                let (h0, h_mid, h_end) = (start + n0.ln(), middle + (n0 + s_f / 2.0).ln(), end + (n0 + s_f).ln());
                let (a, c) = (h0, 2.0 * (h_end - 2.0 * h_mid + h0) / (s_f * s_f));
                let b = (h_end - h0) / s_f - c * s_f;
                let base = log_w;
                let ln_gamma_start = ln_gamma(n0 + 1.0);
                let log_at = |i: f64| {
                    base + a * i + b * i * (i + 1.0) / 2.0 + c * i * (i + 1.0) * (2.0 * i + 1.0) / 6.0
                        - (ln_gamma(n0 + i + 1.0) - ln_gamma_start)
                };
                // Every state of the block keeps its own weight (up to sub-blocks of 32 states
                // when the block is wider), so the bins formed later resolve n as finely as an
                // exact sum would: only μ's evaluations are saved.
                if width <= SUB_BLOCK_STATES * SUB_BLOCK_STATES {
                    for i in 1..=width {
                        let log_mass = log_at(f64::from(i));
                        states.push((n0 + f64::from(i), log_mass));
                        max_log = max_log.max(log_mass);
                    }
                } else {
                    let mut first = 0;
                    while first < width {
                        let part = (width - first).min(SUB_BLOCK_STATES);
                        let (log_mass, mean_i) = block_mass(&|i: f64| log_at(f64::from(first) + i), part);
                        states.push((n0 + f64::from(first) + mean_i, log_mass));
                        max_log = max_log.max(log_mass);
                        first += part;
                    }
                }
                log_w = log_at(s_f);
                n += width;
                f_n = end;
            }
            max_log = max_log.max(states.last().map_or(0.0, |s| s.1));
            // Past the mode the weights only fall: stop once they are negligible.
            if log_w < max_log - NEGLIGIBLE_LOG_WEIGHT && f_n < 0.0 {
                break;
            }
        }
        // The tail n ≥ B: w_B·r^k with r = λ/μ(B); Σ = w_B/(1 − r), Σ k·w_B r^k = w_B·r/(1 − r)².
        let mu_b_rps = model.departure_rps(f64::from(b), lambda);
        let r = lambda / mu_b_rps;
        let (log_tail, log_queue) = if reached_b && r < 1.0 {
            (log_w - (1.0 - r).ln(), log_w + r.ln() - 2.0 * (1.0 - r).ln())
        } else {
            (f64::NEG_INFINITY, f64::NEG_INFINITY)
        };
        let top = states.iter().map(|s| s.1).fold(log_tail.max(0.0), f64::max);
        let z: f64 = (-top).exp() + states.iter().map(|s| (s.1 - top).exp()).sum::<f64>() + (log_tail - top).exp();
        let wait_probability = (log_tail - top).exp() / z;
        let busy: Vec<State> = states
            .iter()
            .map(|&(n, lw)| State { n, probability: (lw - top).exp() / z })
            .filter(|s| s.probability > 0.0)
            .collect();
        let mean_in_service = busy.iter().map(|s| s.n * s.probability).sum::<f64>() + f64::from(b) * wait_probability;
        Chain {
            idle: (-top).exp() / z,
            busy,
            wait_probability,
            mean_in_service,
            mean_queue_len: (log_queue - top).exp() / z,
            mu_b_rps,
        }
    }
}

/// ln Γ(z) for z ≥ 8 by Stirling's series (error below 1e-11 there; the chain's blocks start
/// beyond [`EXACT_STATES`] ≥ 8, so z = n + 1 ≥ 9).
fn ln_gamma(z: f64) -> f64 {
    let inv = 1.0 / z;
    let inv2 = inv * inv;
    (z - 0.5) * z.ln() - z
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))
}

/// log Σ_{i=1..width} e^{L(i)} and the mean i under those weights, for a smooth L.
fn block_mass(log_at: &impl Fn(f64) -> f64, width: u32) -> (f64, f64) {
    const DIRECT: u32 = 32;
    let shift = log_at(1.0).max(log_at(f64::from(width))).max(log_at(f64::from(width) / 2.0));
    if width <= DIRECT {
        let (mut mass, mut moment) = (0.0, 0.0);
        for i in 1..=width {
            let w = (log_at(f64::from(i)) - shift).exp();
            mass += w;
            moment += f64::from(i) * w;
        }
        return (shift + mass.ln(), moment / mass);
    }
    // Σ_{i=1..s} g(i) ≈ ∫_1^s g + (g(1) + g(s))/2 (Euler–Maclaurin), the integral by Simpson.
    const INTERVALS: u32 = 32;
    let (lo, hi) = (1.0, f64::from(width));
    let h = (hi - lo) / f64::from(INTERVALS);
    let (mut mass, mut moment) = (0.0, 0.0);
    for k in 0..=INTERVALS {
        let x = lo + h * f64::from(k);
        let coefficient = if k == 0 || k == INTERVALS {
            1.0
        } else if k % 2 == 1 {
            4.0
        } else {
            2.0
        };
        let w = (log_at(x) - shift).exp();
        mass += coefficient * h / 3.0 * w;
        moment += coefficient * h / 3.0 * x * w;
    }
    let (g_lo, g_hi) = ((log_at(lo) - shift).exp(), (log_at(hi) - shift).exp());
    mass += (g_lo + g_hi) / 2.0;
    moment += (lo * g_lo + hi * g_hi) / 2.0;
    (shift + mass.ln(), moment / mass)
}

/// Merge consecutive states into the bins of [`BIN_EDGES`], each at its probability-weighted
/// mean n. A state that straddles an edge is split between the two bins, so each bin is the
/// mean of a fixed slice of the quantile function: a continuous function of the chain's
/// probabilities, and one that grows when the chain's distribution shifts up. (Cutting only
/// between whole states made the bins jump as λ moved a state across a cut, and a p99 could
/// fall as the load rose; so would keeping short chains unbinned.) Pieces of one state that
/// end up side by side are one point of the distribution again.
fn merge_bins(states: Vec<State>) -> Vec<State> {
    let total: f64 = states.iter().map(|s| s.probability).sum();
    if states.len() <= 1 || total.is_nan() || total <= 0.0 {
        return states;
    }
    let mut out: Vec<State> = Vec::with_capacity(BIN_EDGES.len());
    let mut push = |mass: f64, moment: f64| {
        if mass <= 0.0 {
            return;
        }
        let n = moment / mass;
        match out.last_mut() {
            Some(last) if (last.n - n).abs() <= 1e-12 * n.abs().max(1.0) => last.probability += mass,
            _ => out.push(State { n, probability: mass }),
        }
    };
    let (mut bin, mut closed) = (0, 0.0);
    let (mut mass, mut moment) = (0.0, 0.0);
    for s in states {
        let mut left = s.probability;
        // (The last bin takes whatever rounding leaves.)
        while bin + 1 < BIN_EDGES.len() && closed + mass + left >= BIN_EDGES[bin] * total {
            let take = (BIN_EDGES[bin] * total - closed - mass).clamp(0.0, left);
            mass += take;
            moment += take * s.n;
            left -= take;
            push(mass, moment);
            closed += mass;
            (mass, moment) = (0.0, 0.0);
            bin += 1;
        }
        mass += left;
        moment += left * s.n;
    }
    push(mass, moment);
    out
}

/// The rest of the step in flight: uniform over a plain step of `plain_ms` with probability
/// 1 − `prefill_share`, over a prefill step of `prefill_ms` otherwise.
#[derive(Clone, Copy, Debug)]
struct Residual {
    plain_ms: f64,
    prefill_ms: f64,
    prefill_share: f64,
}

impl Residual {
    const NONE: Residual = Residual { plain_ms: 0.0, prefill_ms: 0.0, prefill_share: 0.0 };

    fn mean_ms(&self) -> f64 {
        0.5 * ((1.0 - self.prefill_share) * self.plain_ms + self.prefill_share * self.prefill_ms)
    }

    /// P(R + W ≤ x) for a wait W independent of R.
    fn plus_cdf(&self, wait: &Exponential, x: f64) -> f64 {
        (1.0 - self.prefill_share) * wait.plus_uniform_cdf(self.plain_ms, x)
            + self.prefill_share * wait.plus_uniform_cdf(self.prefill_ms, x)
    }
}

/// The fixed part of a TTFT and the rest of the step in flight.
#[derive(Clone, Copy, Debug)]
struct TtftParts {
    fixed_ms: f64,
    residual: Residual,
}

/// A wait that is 0 with probability 1 − `probability`, else exponential with mean `mean_ms`;
/// optionally the sum of two such (independent) exponential parts.
#[derive(Clone, Copy, Debug)]
struct Exponential {
    probability: f64,
    mean_ms: f64,
    /// A second exponential part that always happens (for waits in series), mean in ms.
    second_mean_ms: Option<f64>,
}

impl Exponential {
    fn mixed(probability: f64, mean_ms: f64) -> Self {
        let probability = if mean_ms > 0.0 { probability.clamp(0.0, 1.0) } else { 0.0 };
        Self { probability, mean_ms, second_mean_ms: None }
    }

    /// This wait followed by an always-present exponential `other` (its probability is taken as 1).
    fn plus(&self, other: &Exponential) -> Exponential {
        Exponential { second_mean_ms: Some(other.mean_ms), ..*self }
    }

    /// E[W] (the first part only).
    fn mean(&self) -> f64 {
        self.probability * self.mean_ms
    }

    /// P(W ≤ x).
    fn cdf(&self, x: f64) -> f64 {
        if x < 0.0 {
            return 0.0;
        }
        let exp_cdf = |mean: f64, x: f64| if mean > 0.0 { exponential_cdf(x / mean) } else { 1.0 };
        match self.second_mean_ms {
            None => (1.0 - self.probability) + self.probability * exp_cdf(self.mean_ms, x),
            Some(second) => {
                let only_second = exp_cdf(second, x);
                let both = hypoexponential_cdf(self.mean_ms, second, x);
                (1.0 - self.probability) * only_second + self.probability * both
            }
        }
    }

    /// P(U + W ≤ x) with U uniform on [0, width].
    fn plus_uniform_cdf(&self, width: f64, x: f64) -> f64 {
        if x < 0.0 {
            return 0.0;
        }
        if width <= 0.0 {
            return self.cdf(x);
        }
        let upto = x.min(width);
        // ∫_0^upto P(W ≤ x − u) du / width: the atom gives upto; the exponential part gives
        // upto − mean·(e^{−(x−upto)/mean} − e^{−x/mean}).
        let atom = upto;
        let exp_part = if self.probability > 0.0 && self.mean_ms > 0.0 {
            let m = self.mean_ms;
            upto - m * (decay((x - upto) / m) - decay(x / m))
        } else {
            upto
        };
        ((1.0 - self.probability) * atom + self.probability * exp_part) / width
    }
}

/// Beyond this many means an exponential's tail e^{−y} (< 4·10⁻¹⁸) is below what a CDF near 1
/// can hold in f64: taken as 0, which spares the exp calls that dominate capacity sizing.
const NEGLIGIBLE_DECAY: f64 = 40.0;

/// e^{−y} for y ≥ 0, 0 past [`NEGLIGIBLE_DECAY`].
fn decay(y: f64) -> f64 {
    if y > NEGLIGIBLE_DECAY { 0.0 } else { (-y).exp() }
}

/// 1 − e^{−y} for y ≥ 0: exact near 0, 1 past [`NEGLIGIBLE_DECAY`].
fn exponential_cdf(y: f64) -> f64 {
    if y > NEGLIGIBLE_DECAY { 1.0 } else { -(-y).exp_m1() }
}

/// P(E₁ + E₂ ≤ x) for independent exponentials with means a and b.
fn hypoexponential_cdf(a: f64, b: f64, x: f64) -> f64 {
    if a <= 0.0 {
        return if b > 0.0 { exponential_cdf(x / b) } else { 1.0 };
    }
    if b <= 0.0 {
        return exponential_cdf(x / a);
    }
    if (a - b).abs() <= 1e-9 * a.max(b) {
        // Erlang(2): 1 − e^{−x/a}(1 + x/a).
        let y = x / a;
        return 1.0 - decay(y) * (1.0 + y);
    }
    // 1 − (a·e^{−x/a} − b·e^{−x/b}) / (a − b).
    1.0 - (a * decay(x / a) - b * decay(x / b)) / (a - b)
}

/// P(X ≤ t) for X normal with this mean and sd (a step at the mean when sd is 0).
fn normal_cdf(t: f64, mean: f64, sd: f64) -> f64 {
    if sd <= 1e-12 * mean.abs().max(1e-12) {
        return f64::from(t >= mean);
    }
    normal::cdf_fast((t - mean) / sd)
}

/// Smallest t ≥ 0 with cdf(t) ≥ q, to 1e-9 relative, for a non-decreasing cdf: regula falsi
/// (Illinois) on cdf − q inside a bracket, with a bisection step whenever the bracket does not
/// halve (a CDF with atoms jumps), so a smooth CDF takes a handful of evaluations.
fn quantile_by_bisection(cdf: impl Fn(f64) -> f64, q: f64, scale_ms: f64) -> f64 {
    if cdf(0.0) >= q {
        return 0.0;
    }
    let mut hi = scale_ms.abs().max(1e-6) * 2.0;
    let mut f_hi = cdf(hi) - q;
    let mut guard = 0;
    while f_hi < 0.0 && guard < 200 {
        hi *= 2.0;
        f_hi = cdf(hi) - q;
        guard += 1;
    }
    let (mut lo, mut f_lo) = (0.0, cdf(0.0) - q);
    let mut side = 0i8;
    for i in 0..200 {
        let width = hi - lo;
        if width <= 1e-9 * hi {
            break;
        }
        // Every third step bisects; otherwise interpolate (Illinois halves the stale end).
        let mid = if i % 3 == 2 || f_hi - f_lo <= 0.0 {
            0.5 * (lo + hi)
        } else {
            let t = lo - f_lo * (hi - lo) / (f_hi - f_lo);
            t.clamp(lo + 0.01 * width, hi - 0.01 * width)
        };
        let f_mid = cdf(mid) - q;
        if f_mid >= 0.0 {
            hi = mid;
            f_hi = f_mid;
            if side == 1 {
                f_lo *= 0.5;
            }
            side = 1;
        } else {
            lo = mid;
            f_lo = f_mid;
            if side == -1 {
                f_hi *= 0.5;
            }
            side = -1;
        }
    }
    hi
}

/// Mean and quantiles of one latency, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencyStats {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl LatencyStats {
    fn new(mean_ms: f64, [p50_ms, p90_ms, p95_ms, p99_ms]: [f64; 4]) -> Self {
        Self { mean_ms, p50_ms, p90_ms, p95_ms, p99_ms }
    }

    pub fn get(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::Mean => self.mean_ms,
            Statistic::P50 => self.p50_ms,
            Statistic::P90 => self.p90_ms,
            Statistic::P95 => self.p95_ms,
            Statistic::P99 => self.p99_ms,
        }
    }
}

/// Steady state of one replica at one arrival rate (see the module documentation).
///
/// For a `Decode` replica, which does no prefill, `ttft` is the wait before its first decode
/// step (the request's 2nd token). A `Prefill` replica makes no decode tokens and reports ITL 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueMetrics {
    pub role: Role,
    /// λ (req/s).
    pub arrival_rps: f64,
    /// λ*: the largest sustainable rate (req/s).
    pub saturation_rps: f64,
    /// λ / λ*.
    pub utilization: f64,
    /// B: the most requests in the batch.
    pub effective_concurrency: u32,
    /// What bounds B: `max_num_seqs` or the KV cache.
    pub concurrency_limit: ConcurrencyLimit,
    /// N_s = E[min(n, B)].
    pub mean_in_service: f64,
    /// L_q = E[max(n − B, 0)].
    pub mean_queue_len: f64,
    /// P(n ≥ B): the probability that an arrival waits for a slot.
    pub wait_probability: f64,
    /// Mean wait for a slot (ms).
    pub mean_wait_ms: f64,
    /// Mean KV-cache tokens in use over the capacity, when it is known.
    pub kv_cache_utilization: Option<f64>,
    pub ttft: LatencyStats,
    /// Per-request ITL (each request's mean time per output token).
    pub itl: LatencyStats,
    /// Per-token ITL (every token's gap).
    pub itl_token: LatencyStats,
}

impl QueueMetrics {
    pub fn ttft_ms(&self, statistic: Statistic) -> f64 {
        self.ttft.get(statistic)
    }

    /// Per-request ITL.
    pub fn itl_ms(&self, statistic: Statistic) -> f64 {
        self.itl.get(statistic)
    }

    pub fn itl_ms_over(&self, statistic: Statistic, population: ItlPopulation) -> f64 {
        match population {
            ItlPopulation::Request => self.itl.get(statistic),
            ItlPopulation::Token => self.itl_token.get(statistic),
        }
    }

    pub fn mean_ttft_ms(&self) -> f64 {
        self.ttft.mean_ms
    }

    pub fn mean_itl_ms(&self) -> f64 {
        self.itl.mean_ms
    }

    /// Nothing is blocked or dropped, so the replica serves all it is offered.
    pub fn predicted_throughput_rps(&self) -> f64 {
        self.arrival_rps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::engine::EngineSpec;
    use proptest::prelude::*;

    const STATS: [Statistic; 5] = [Statistic::Mean, Statistic::P50, Statistic::P90, Statistic::P95, Statistic::P99];
    const POPULATIONS: [ItlPopulation; 2] = [ItlPopulation::Request, ItlPopulation::Token];

    fn params(alpha_ms: f64, beta_ms: f64, gamma_ms: f64, delta_ms: f64) -> LatencyParams {
        LatencyParams { alpha_ms, beta_ms, gamma_ms, delta_ms, ..LatencyParams::default() }
    }

    fn assert_rel(actual: f64, expected: f64, tol: f64) {
        let scale = actual.abs().max(expected.abs()).max(1e-300);
        assert!(
            (actual - expected).abs() <= tol * scale,
            "{actual} vs {expected} (rel {:e})",
            (actual - expected).abs() / scale
        );
    }

    /// Erlang C by the stable Erlang B recursion: P(wait) in M/M/c with offered load a.
    fn erlang_c(c: u32, a: f64) -> f64 {
        let mut erlang_b = 1.0;
        for k in 1..=c {
            erlang_b = a * erlang_b / (f64::from(k) + a * erlang_b);
        }
        erlang_b / (1.0 - a / f64::from(c) * (1.0 - erlang_b))
    }

    /// A decode replica with a flat step: every request holds its slot (O − 1)·α, so the chain
    /// is M/M/c with c = B.
    fn flat_decode(c: u32) -> ReplicaModel {
        ReplicaModel::simple(params(25.0, 0.0, 0.0, 0.0), c, Role::Decode, Workload::constant(1000.0, 101.0))
    }

    #[test]
    fn a_flat_decode_replica_is_mmc_erlang_c_up_to_b_4096() {
        for c in [1, 2, 8, 64, 700, 4096] {
            let model = flat_decode(c);
            let mu1 = 1000.0 / (100.0 * 25.0);
            assert_rel(model.saturation_rps(), f64::from(c) * mu1, 1e-12);
            for rho in [0.3, 0.9, 0.99] {
                let lambda = rho * f64::from(c) * mu1;
                let s = model.steady(lambda).expect("stable");
                let erlang = erlang_c(c, lambda / mu1);
                // Blocks beyond 512 states approximate the sums: 1e-4 there, 1e-9 below.
                let tol = if c > EXACT_STATES { 1e-5 } else { 1e-9 };
                if erlang < 1e-15 {
                    // Far below the mode states are dropped once negligible.
                    assert!(s.wait_probability < 1e-15);
                    continue;
                }
                assert_rel(s.wait_probability, erlang, tol);
                // Constant sizes: service SCV 0, Poisson arrivals: the M/M/c wait halves
                // (Allen–Cunneen), the probability stays.
                let wait_ms = 0.5 * 1000.0 * erlang / (f64::from(c) * mu1 - lambda);
                assert_rel(s.wait_probability * s.wait_given_ms, wait_ms, tol);
                assert_rel(s.mean_in_service, lambda / mu1, tol.max(1e-9));
                // Every token at α: ITL is flat.
                for p in POPULATIONS {
                    assert_rel(s.mean_itl_ms(p), 25.0, 1e-9);
                }
            }
        }
    }

    /// p_n by direct products over a truncated chain, state by state (an independent check).
    fn naive_distribution(model: &ReplicaModel, lambda: f64, n_max: usize) -> Vec<f64> {
        let b = model.max_batch() as usize;
        let mut log_p = vec![0.0];
        for n in 1..=n_max {
            let m = n.min(b) as f64;
            log_p.push(log_p[n - 1] + (lambda / model.departure_rps(m, lambda)).ln());
        }
        let top = log_p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let p: Vec<f64> = log_p.iter().map(|l| (l - top).exp()).collect();
        let z: f64 = p.iter().sum();
        p.iter().map(|x| x / z).collect()
    }

    #[test]
    fn the_chain_matches_a_direct_truncated_sum() {
        let p = LatencyParams { itl_context_ms: 2e-4, ..params(20.0, 0.8, 5.0, 0.05) };
        let model = ReplicaModel::simple(p, 8, Role::Both, Workload::from_means(300.0, 50.0));
        let lambda = 0.9 * model.saturation_rps();
        let s = model.steady(lambda).expect("stable");
        let naive = naive_distribution(&model, lambda, 20_000);
        let b = 8;
        let in_service: f64 = naive.iter().enumerate().map(|(n, x)| n.min(b) as f64 * x).sum();
        let queue: f64 = naive.iter().enumerate().map(|(n, x)| n.saturating_sub(b) as f64 * x).sum();
        let waiting: f64 = naive[b..].iter().sum();
        assert_rel(s.mean_in_service, in_service, 1e-9);
        assert_rel(s.mean_queue_len, queue, 1e-9);
        assert_rel(s.wait_probability, waiting, 1e-9);
        assert_rel(s.idle, naive[0], 1e-9);
    }

    #[test]
    fn blocks_keep_the_distribution_of_a_realistic_replica() {
        // B = 256 with prefill, a context term and lognormal sizes: the blocks (beyond 16 states,
        // width n/8) against the state-by-state sum, at light, medium and heavy load.
        let p = LatencyParams { itl_context_ms: 2e-5, itl_quadratic_ms: 1e-4, ..params(12.0, 0.05, 2.0, 0.04) };
        let model = ReplicaModel::simple(p, 256, Role::Both, Workload::from_means(1000.0, 200.0));
        for load in [0.3, 0.8, 0.97] {
            let lambda = load * model.saturation_rps();
            let s = model.steady(lambda).expect("stable");
            let naive = naive_distribution(&model, lambda, 40_000);
            let in_service: f64 = naive.iter().enumerate().map(|(n, x)| n.min(256) as f64 * x).sum();
            let waiting: f64 = naive[256..].iter().sum();
            assert_rel(s.mean_in_service, in_service, 1e-6);
            assert!((s.wait_probability - waiting).abs() < 1e-6, "{} vs {waiting} at {load}", s.wait_probability);
            assert!((s.idle - naive[0]).abs() < 1e-9, "{} vs {} at {load}", s.idle, naive[0]);
        }
    }

    #[test]
    fn blocks_beyond_512_states_keep_the_distribution() {
        // B = 4000 at high load: the mode is far beyond the exact states.
        let p = params(10.0, 0.02, 0.0, 0.0);
        let model = ReplicaModel::simple(p, 4000, Role::Decode, Workload::constant(100.0, 500.0));
        let lambda = 0.97 * model.saturation_rps();
        let s = model.steady(lambda).expect("stable");
        let naive = naive_distribution(&model, lambda, 60_000);
        let in_service: f64 = naive.iter().enumerate().map(|(n, x)| n.min(4000) as f64 * x).sum();
        assert_rel(s.mean_in_service, in_service, 1e-3);
        let waiting: f64 = naive[4000..].iter().sum();
        assert!((s.wait_probability - waiting).abs() < 1e-3, "{} vs {waiting}", s.wait_probability);
    }

    #[test]
    fn quantiles_are_the_smallest_times_reaching_q() {
        let p = LatencyParams { ttft_overhead_ms: 4.0, scheduling_delay_steps: 1.0, ..params(12.0, 0.05, 1.0, 0.04) };
        let model = ReplicaModel::simple(p, 64, Role::Both, Workload::from_means(1000.0, 200.0));
        for load in [0.05, 0.5, 0.95] {
            let s = model.steady(load * model.saturation_rps()).expect("stable");
            for q in LEVELS {
                let t = s.ttft_quantile_ms(q);
                assert!(s.ttft_cdf(t) >= q - 1e-9, "ttft q {q} at {load}");
                assert!(s.ttft_cdf(t * (1.0 - 1e-6)) < q, "ttft q {q} at {load}");
                for pop in POPULATIONS {
                    let t = s.itl_quantile_ms(pop, q);
                    assert!(s.itl_cdf(pop, t) >= q - 1e-9, "itl {pop:?} q {q} at {load}");
                    assert!(s.itl_cdf(pop, t * (1.0 - 1e-6)) < q, "itl {pop:?} q {q} at {load}");
                }
            }
        }
    }

    #[test]
    fn light_load_p90_ttft_is_the_prefill_of_the_p90_prompt() {
        // The real-vLLM finding: at light load the p90 TTFT is the p90 prompt's prefill, far
        // above the mean prompt's.
        let p = params(10.0, 0.05, 0.0, 0.1);
        let sizes = Workload::new(SizeDistribution::from_mean(1000.0), SizeDistribution::constant(100.0));
        let model = ReplicaModel::simple(p, 64, Role::Both, sizes);
        let s = model.steady(1e-6).expect("stable");
        let p90_prompt = sizes.input.quantile(0.9);
        let t = s.ttft_quantile_ms(0.9);
        assert!(t > 1.5 * 0.1 * 1000.0, "p90 {t} must be well above the mean prompt's 100 ms");
        // Between the two strata around level 0.9.
        assert!(
            t <= 0.1 * sizes.input.quantile(0.95) + 1e-6 && t >= 0.1 * sizes.input.quantile(0.8),
            "{t} vs {p90_prompt}"
        );
        // A constant prompt: the percentile is the mean prompt's.
        let constant = ReplicaModel::simple(p, 64, Role::Both, Workload::constant(1000.0, 100.0));
        assert_rel(constant.steady(1e-6).expect("stable").ttft_quantile_ms(0.9), 100.0, 1e-6);
    }

    #[test]
    fn the_kv_cache_limits_saturation() {
        // OPT-13B-like: a cache of 27k tokens holds 55 requests of 250 + 460; max_num_seqs 256.
        let p = LatencyParams { itl_context_ms: 1e-5, ..params(25.0, 0.2, 5.0, 0.08) };
        let workload = Workload::constant(250.0, 460.0);
        let unlimited = ReplicaModel::simple(p, 256, Role::Both, workload);
        let limits = EngineSpec { kv_cache_tokens: Some(27_000.0), ..Default::default() }.resolve(256, 1);
        let limited = ReplicaModel::new(p, limits, Role::Both, workload);
        assert_eq!(limited.max_batch(), 55);
        assert!(limited.saturation_rps() < 0.5 * unlimited.saturation_rps());
        let m = limited.analyze(0.8 * limited.saturation_rps()).expect("stable");
        assert_eq!(m.concurrency_limit, ConcurrencyLimit::KvCache);
        let kv = m.kv_cache_utilization.expect("known capacity");
        assert!(kv > 0.3 && kv <= 1.0, "{kv}");
        // Above the limited saturation there is no steady state.
        assert!(limited.analyze(1.05 * limited.saturation_rps()).is_none());
    }

    #[test]
    fn prompts_longer_than_the_step_budget_take_more_steps_and_wait() {
        let p = params(15.0, 0.05, 2.0, 0.04);
        let long = Workload::new(SizeDistribution::from_mean(12_000.0), SizeDistribution::from_mean(300.0));
        let small_budget = EngineSpec { max_num_batched_tokens: Some(2048), ..Default::default() }.resolve(256, 1);
        let big_budget = EngineSpec { max_num_batched_tokens: Some(65_536), ..Default::default() }.resolve(256, 1);
        let a = ReplicaModel::new(p, small_budget, Role::Both, long);
        let b = ReplicaModel::new(p, big_budget, Role::Both, long);
        let lambda = 0.4 * a.saturation_rps().min(b.saturation_rps());
        let ttft_small = a.steady(lambda).expect("stable").mean_ttft_ms();
        let ttft_big = b.steady(lambda).expect("stable").mean_ttft_ms();
        assert!(ttft_small > ttft_big, "{ttft_small} vs {ttft_big}");
    }

    #[test]
    fn other_prompts_stall_decodes() {
        // ITL grows with the arrival rate through the prefill work of the other prompts.
        let p = params(10.0, 0.02, 0.0, 0.04);
        let model = ReplicaModel::simple(p, 512, Role::Both, Workload::constant(4000.0, 64.0));
        let low = model.steady(0.1 * model.saturation_rps()).expect("stable");
        let high = model.steady(0.8 * model.saturation_rps()).expect("stable");
        assert!(high.mean_itl_ms(ItlPopulation::Request) > 1.5 * low.mean_itl_ms(ItlPopulation::Request));
        // Per token, the stalls make a long tail: the p99 token waits for a whole prefill.
        assert!(high.itl_quantile_ms(ItlPopulation::Token, 0.99) > 0.04 * 4000.0);
    }

    #[test]
    fn constant_rate_arrivals_wait_less_than_poisson_ones() {
        let p = params(10.0, 0.05, 1.0, 0.04);
        let poisson = ReplicaModel::simple(p, 16, Role::Both, Workload::from_means(2000.0, 100.0));
        let constant =
            ReplicaModel::simple(p, 16, Role::Both, Workload::from_means(2000.0, 100.0).with_arrival_cv2(0.0));
        let lambda = 0.9 * poisson.saturation_rps();
        let a = poisson.steady(lambda).expect("stable");
        let b = constant.steady(lambda).expect("stable");
        assert!(b.mean_ttft_ms() < a.mean_ttft_ms());
        assert!(b.itl_quantile_ms(ItlPopulation::Request, 0.9) <= a.itl_quantile_ms(ItlPopulation::Request, 0.9));
    }

    #[test]
    fn zero_arrivals_are_a_lone_request() {
        let p = LatencyParams { ttft_overhead_ms: 3.0, scheduling_delay_steps: 1.0, ..params(20.0, 0.8, 5.0, 0.05) };
        let model = ReplicaModel::simple(p, 8, Role::Both, Workload::constant(300.0, 50.0));
        let m = model.analyze(0.0).expect("stable");
        assert_eq!(m.utilization, 0.0);
        assert_eq!(m.mean_in_service, 0.0);
        assert_eq!(m.wait_probability, 0.0);
        for s in STATS {
            // Overhead + γ + δ·I: no step in flight, no scheduling delay.
            assert_rel(m.ttft_ms(s), 3.0 + 5.0 + 0.05 * 300.0, 1e-9);
            assert_rel(m.itl_ms(s), model.decode_base_ms(1.0), 1e-9);
        }
        for lambda in [1e-9, 1e-100, f64::MIN_POSITIVE] {
            let m = model.analyze(lambda).expect("stable");
            assert_rel(m.mean_ttft_ms(), 3.0 + 5.0 + 0.05 * 300.0, 1e-6);
        }
    }

    #[test]
    fn unstable_or_invalid_rates_have_no_steady_state() {
        let model = ReplicaModel::simple(params(20.0, 0.8, 5.0, 0.05), 8, Role::Both, Workload::constant(300.0, 50.0));
        let mu = model.saturation_rps();
        for lambda in [mu, 2.0 * mu, -1.0, f64::NAN, f64::INFINITY] {
            assert!(model.analyze(lambda).is_none(), "{lambda}");
        }
        assert!(model.analyze(mu * (1.0 - 1e-9)).is_some());
    }

    #[test]
    fn roles_report_what_they_produce() {
        let p = params(20.0, 0.8, 40.0, 0.05);
        let prefill = ReplicaModel::simple(p, 8, Role::Prefill, Workload::constant(300.0, 50.0));
        let m = prefill.analyze(0.9 * prefill.saturation_rps()).expect("stable");
        assert_eq!(m.itl, LatencyStats::new(0.0, [0.0; 4]));
        assert!(m.mean_ttft_ms() > 40.0 + 0.05 * 300.0);
        let decode = ReplicaModel::simple(p, 8, Role::Decode, Workload::constant(300.0, 50.0));
        let m = decode.analyze(0.9 * decode.saturation_rps()).expect("stable");
        assert!(m.mean_itl_ms() > decode.decode_base_ms(1.0));
        assert_rel(m.mean_ttft_ms(), m.mean_wait_ms, 1e-9);
    }

    fn arb_model() -> impl Strategy<Value = ReplicaModel> {
        (
            (5.0..60.0f64, 0.0..2.0f64, 0.0..50.0f64, 0.001..0.5f64),
            (0.0..1e-6f64, 0.0..1e-5f64, 0.0..1e-3f64, 0.0..2.0f64),
            (1.0..8000.0f64, 1.0..2000.0f64, 1u32..=512, 0.0..2.0f64),
            (prop_oneof![Just(Role::Both), Just(Role::Prefill), Just(Role::Decode)], 1.0..4.0f64),
        )
            .prop_map(|((alpha, beta, gamma, delta), (eps, eta, zeta, kappa), (i, o, b, cv), (role, r))| {
                let params = LatencyParams {
                    alpha_ms: alpha,
                    beta_ms: beta,
                    gamma_ms: gamma,
                    delta_ms: delta,
                    prefill_quadratic_ms: eps,
                    itl_context_ms: eta,
                    itl_quadratic_ms: zeta,
                    ttft_overhead_ms: 2.0,
                    scheduling_delay_steps: kappa,
                    roofline_exponent: r,
                };
                let input = SizeDistribution::with_shape(i, crate::analyze::sizes::Shape::Lognormal { cv });
                ReplicaModel::simple(params, b, role, Workload::new(input, SizeDistribution::from_mean(o)))
            })
    }

    /// a ≤ b up to rounding.
    fn at_most(a: f64, b: f64) -> bool {
        a <= b + 1e-6 * b.abs().max(1.0)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn latencies_are_non_decreasing_in_load(model in arb_model(), u1 in 0.0..0.99f64, u2 in 0.0..0.99f64) {
            let (lo, hi) = (u1.min(u2), u1.max(u2));
            let mu = model.saturation_rps();
            let a = model.analyze(lo * mu).expect("stable");
            let b = model.analyze(hi * mu).expect("stable");
            prop_assert!(at_most(a.mean_ttft_ms(), b.mean_ttft_ms()), "ttft mean {} > {}", a.mean_ttft_ms(), b.mean_ttft_ms());
            prop_assert!(at_most(a.mean_itl_ms(), b.mean_itl_ms()), "itl mean {} > {}", a.mean_itl_ms(), b.mean_itl_ms());
            prop_assert!(at_most(a.wait_probability, b.wait_probability));
            prop_assert!(at_most(a.mean_in_service, b.mean_in_service));
        }

        #[test]
        fn percentiles_are_non_decreasing_in_q(model in arb_model(), u in 0.0..0.99f64) {
            let m = model.analyze(u * model.saturation_rps()).expect("stable");
            for pair in [Statistic::P50, Statistic::P90, Statistic::P95, Statistic::P99].windows(2) {
                prop_assert!(at_most(m.ttft_ms(pair[0]), m.ttft_ms(pair[1])), "ttft {:?} {} > {}", pair, m.ttft_ms(pair[0]), m.ttft_ms(pair[1]));
                prop_assert!(at_most(m.itl_ms(pair[0]), m.itl_ms(pair[1])), "itl {:?} {} > {}", pair, m.itl_ms(pair[0]), m.itl_ms(pair[1]));
                prop_assert!(at_most(m.itl_token.get(pair[0]), m.itl_token.get(pair[1])), "itl token {:?}", pair);
            }
        }

        #[test]
        fn probabilities_and_means_are_consistent(model in arb_model(), u in 0.0..0.99f64) {
            let m = model.analyze(u * model.saturation_rps()).expect("stable");
            prop_assert!((0.0..=1.0).contains(&m.wait_probability));
            prop_assert!(m.mean_in_service >= 0.0);
            prop_assert!(at_most(m.mean_in_service, f64::from(model.max_batch())));
            prop_assert!(m.mean_wait_ms >= 0.0 && m.mean_wait_ms.is_finite());
            for s in STATS {
                prop_assert!(m.ttft_ms(s).is_finite() && m.ttft_ms(s) >= 0.0);
                prop_assert!(m.itl_ms(s).is_finite() && m.itl_ms(s) >= 0.0);
            }
        }
    }
}
