//! Validation: the one place where input is checked. A [`Scenario`] becomes a [`Snapshot`] or a
//! list of problems, each naming the path of the offending field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::bundled;
use super::format::{PdRatioSpec, Scenario, ShapeSpec, TargetSpec, TokenCountSpec};
use super::profile::ProfileSpec;
use super::snapshot::*;
use crate::analyze::capacity::{Slo, Target};
use crate::analyze::engine::EngineSpec;
use crate::analyze::queue::Workload;
use crate::analyze::sizes::{DEFAULT_CV, Shape, SizeDistribution};
use crate::analyze::{ItlPopulation, Role};

/// Largest values we accept; anything above is a typo or a unit mistake. Importers (WVA) check
/// against the same bounds in their own units.
pub(crate) const MAX_GPUS: u32 = 1_000_000;
pub(crate) const MAX_GPUS_PER_REPLICA: u32 = 1024;
pub(crate) const MAX_BATCH: u32 = 65_536;
pub(crate) const MAX_REPLICAS: u32 = 100_000;
pub(crate) const MAX_COST_USD_PER_GPU_HOUR: f64 = 1_000.0;
pub(crate) const MAX_RATE_RPS: f64 = 1e6;
pub(crate) const MAX_TOKENS: f64 = 1e7;
pub(crate) const MAX_TARGET_MS: f64 = 1e7;
pub(crate) const MAX_PROFILE_MS: f64 = 1e6;
const MAX_STEP_TOKENS: u32 = 10_000_000;
const MAX_KV_TOKENS: f64 = 1e10;
const MAX_ARRIVAL_CV: f64 = 10.0;

/// Problems listed one by one; past this many, the rest are counted in one last entry (2 million
/// duplicate names once printed 137 MB of errors).
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// One thing wrong with the input, at a path such as `variants[3].profile`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything wrong with a scenario; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

impl Invalid {
    /// At most [`MAX_LISTED_PROBLEMS`] problems, then one entry (path `(more)`) counting the rest
    /// and the `unlisted` ones found but not kept.
    pub fn capped(mut problems: Vec<Problem>, unlisted: usize) -> Invalid {
        let more = problems.len().saturating_sub(MAX_LISTED_PROBLEMS) + unlisted;
        problems.truncate(MAX_LISTED_PROBLEMS);
        if more > 0 {
            problems.push(Problem {
                path: "(more)".into(),
                message: format!("{more} more problem{} not listed", if more == 1 { "" } else { "s" }),
            });
        }
        Invalid { problems }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "invalid scenario ({n} problem{}):", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Problems {
    listed: Vec<Problem>,
    /// Problems found beyond [`MAX_LISTED_PROBLEMS`].
    unlisted: usize,
}

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(Problem { path: path.into(), message: message.into() });
        } else {
            self.unlisted += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    fn into_invalid(self) -> Invalid {
        Invalid::capped(self.listed, self.unlisted)
    }

    /// A finite number within `[lo, hi]` (`lo_open` excludes `lo`).
    fn number(&mut self, path: impl Into<String>, v: f64, lo: f64, lo_open: bool, hi: f64) -> bool {
        let ok = v.is_finite() && (if lo_open { v > lo } else { v >= lo }) && v <= hi;
        if !ok {
            let bound = if lo_open { ">" } else { "≥" };
            self.push(path, format!("must be a finite number {bound} {lo} and ≤ {hi}, got {v}"));
        }
        ok
    }

    fn count(&mut self, path: impl Into<String>, v: u32, lo: u32, hi: u32) -> bool {
        let ok = (lo..=hi).contains(&v);
        if !ok {
            self.push(path, format!("must be between {lo} and {hi}, got {v}"));
        }
        ok
    }

    fn name(&mut self, path: impl Into<String>, name: &str) {
        if name.trim().is_empty() || name.chars().count() > 253 {
            self.push(path, format!("must be a non-empty name of at most 253 characters, got {name:?}"));
        } else if name.chars().any(char::is_control) {
            // Names reach terminals, logs and metric labels: an ESC or a newline there is an attack.
            self.push(path, format!("must not contain control characters, got {name:?}"));
        }
    }

    /// Free text shown to people (names in reports, devices): no control characters.
    fn text(&mut self, path: impl Into<String>, text: &str) {
        if text.chars().any(char::is_control) {
            self.push(path, format!("must not contain control characters, got {text:?}"));
        }
    }
}

/// Index names of a list, reporting duplicates.
fn index_names<'a>(
    problems: &mut Problems,
    list: &str,
    names: impl Iterator<Item = &'a str>,
) -> BTreeMap<&'a str, usize> {
    let mut index = BTreeMap::new();
    for (i, name) in names.enumerate() {
        problems.name(format!("{list}[{i}].name"), name);
        if let Some(first) = index.insert(name, i) {
            problems.push(format!("{list}[{i}].name"), format!("duplicate name {name:?} (first at {list}[{first}])"));
            index.insert(name, first);
        }
    }
    index
}

/// Sorted names → position in the sorted list.
fn sorted_positions<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let set: BTreeSet<&str> = names.collect();
    set.into_iter().enumerate().map(|(i, n)| (n, i)).collect()
}

fn target(problems: &mut Problems, path: String, spec: &Option<TargetSpec>, itl: bool) -> Option<Target> {
    let spec = spec.as_ref()?;
    if !itl && spec.over.is_some() {
        problems.push(format!("{path}.over"), "applies only to itl targets (TTFT is one value per request)");
    }
    problems.number(format!("{path}.ms"), spec.ms, 0.0, true, MAX_TARGET_MS).then_some(Target {
        ms: spec.ms,
        statistic: spec.statistic,
        over: spec.over.unwrap_or(ItlPopulation::Request),
    })
}

/// A token-count distribution from its spec; problems at `path`, notes into `warnings`.
fn token_distribution(
    problems: &mut Problems,
    warnings: &mut Vec<String>,
    path: &str,
    spec: &TokenCountSpec,
) -> Option<SizeDistribution> {
    let positive = |problems: &mut Problems, field: &str, v: f64| {
        problems.number(format!("{path}{field}"), v, 1.0, false, MAX_TOKENS)
    };
    let d = match spec {
        TokenCountSpec::Mean(mean) => {
            return positive(problems, "", *mean).then(|| SizeDistribution::from_mean(*mean));
        }
        TokenCountSpec::Distribution(d) => d,
    };
    let before = problems.listed.len() + problems.unlisted;
    if let Some(m) = d.mean {
        positive(problems, ".mean", m);
    }
    if let Some(m) = d.max {
        positive(problems, ".max", m);
    }
    let percentiles: Vec<(f64, f64, &str)> =
        [(0.5, d.p50, "p50"), (0.9, d.p90, "p90"), (0.95, d.p95, "p95"), (0.99, d.p99, "p99")]
            .into_iter()
            .filter_map(|(q, v, name)| v.map(|v| (q, v, name)))
            .collect();
    for &(_, v, name) in &percentiles {
        positive(problems, &format!(".{name}"), v);
    }
    if let Some(cv) = d.cv {
        problems.number(format!("{path}.cv"), cv, 0.0, false, 20.0);
    }
    if let Some(spread) = d.spread {
        problems.number(format!("{path}.spread"), spread, 0.0, false, 1.0);
    }
    if problems.listed.len() + problems.unlisted > before {
        return None;
    }
    let forms =
        [d.shape.is_some() || d.cv.is_some() || d.spread.is_some(), !percentiles.is_empty(), d.histogram.is_some()];
    if forms.iter().filter(|f| **f).count() > 1 {
        problems.push(path, "give one of: a shape (with mean, cv, spread), percentiles, or a histogram");
        return None;
    }
    let result = if let Some(h) = &d.histogram {
        let buckets: Vec<(f64, f64)> = h.buckets.iter().map(|b| (b.le, b.count)).collect();
        SizeDistribution::from_histogram(&buckets, h.count, h.sum).map(|dist| (dist, None))
    } else if !percentiles.is_empty() {
        let points: Vec<(f64, f64)> = percentiles.iter().map(|&(q, v, _)| (q, v)).collect();
        SizeDistribution::from_percentiles(d.mean, &points, d.max)
    } else {
        let Some(mean) = d.mean else {
            problems.push(format!("{path}.mean"), "is required with a shape (or give percentiles or a histogram)");
            return None;
        };
        let shape = match d.shape.unwrap_or(ShapeSpec::Lognormal) {
            ShapeSpec::Lognormal => Shape::Lognormal { cv: d.cv.unwrap_or(DEFAULT_CV) },
            ShapeSpec::Exponential => Shape::Exponential,
            ShapeSpec::Uniform => Shape::Uniform { spread: d.spread.unwrap_or(0.5) },
            ShapeSpec::Constant => Shape::Constant,
        };
        let dist = SizeDistribution::with_shape(mean, shape);
        Ok((d.max.map_or(dist, |max| capped(dist, max)), None))
    };
    match result {
        Ok((dist, note)) => {
            if let Some(note) = note {
                warnings.push(format!("{path}: {note}"));
            }
            Some(dist)
        }
        Err(e) => {
            problems.push(path, e.0);
            None
        }
    }
}

/// A shape cut at `max` (sizes above become `max`).
fn capped(dist: SizeDistribution, max: f64) -> SizeDistribution {
    let quantile = |q: f64| dist.quantile(q).min(max);
    let points: Vec<(f64, f64)> =
        [0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999].iter().map(|&q| (q, quantile(q))).collect();
    SizeDistribution::from_percentiles(None, &points, Some(max)).map_or(dist, |(d, _)| d)
}

/// The engine settings of a variant: its own over its profile's; problems at `path`.
fn engine_spec(problems: &mut Problems, path: &str, spec: &EngineSpec) {
    if let Some(t) = spec.max_num_batched_tokens {
        problems.count(format!("{path}.max_num_batched_tokens"), t, 1, MAX_STEP_TOKENS);
    }
    if let Some(b) = spec.block_size_tokens {
        problems.count(format!("{path}.block_size_tokens"), b, 1, 1024);
    }
    if let Some(kv) = spec.kv_cache_tokens {
        problems.number(format!("{path}.kv_cache_tokens"), kv, 0.0, true, MAX_KV_TOKENS);
    }
    if spec.kv_cache_tokens.is_some() && spec.kv_cache_memory.is_some() {
        problems.push(path, "give kv_cache_tokens or kv_cache_memory, not both");
    }
    if let Some(m) = &spec.kv_cache_memory {
        let p = format!("{path}.kv_cache_memory");
        problems.number(format!("{p}.gpu_memory_gib"), m.gpu_memory_gib, 0.0, true, 10_000.0);
        problems.number(format!("{p}.gpu_memory_utilization"), m.gpu_memory_utilization, 0.0, true, 1.0);
        problems.number(format!("{p}.weights_gib"), m.weights_gib, 0.0, false, 1e6);
        problems.number(format!("{p}.kv_bytes_per_token"), m.kv_bytes_per_token, 0.0, true, 1e9);
        problems.number(format!("{p}.reserve_gib"), m.reserve_gib, 0.0, false, 10_000.0);
    }
}

/// `optimizer.pd_ratio` when the scenario does not set it.
pub const DEFAULT_PD_RATIO: PdRatio = PdRatio { min: 0.25, max: 4.0 };

fn pd_ratio(problems: &mut Problems, path: &str, spec: &PdRatioSpec) -> PdRatio {
    problems.number(format!("{path}.min"), spec.min, 0.0, true, 1000.0);
    problems.number(format!("{path}.max"), spec.max, 0.0, true, 1000.0);
    if spec.min > spec.max {
        problems.push(path, format!("min {} is above max {}", spec.min, spec.max));
    }
    PdRatio { min: spec.min, max: spec.max }
}

fn check_profile(problems: &mut Problems, path: &str, p: &ProfileSpec) {
    let q = &p.params;
    for (field, v) in q.named() {
        let (lo, hi) = match field {
            "scheduling_delay_steps" => (0.0, 4.0),
            "roofline_exponent" => (1.0, 16.0),
            _ => (0.0, MAX_PROFILE_MS),
        };
        problems.number(format!("{path}.{field}"), v, lo, false, hi);
    }
    if q.alpha_ms <= 0.0 {
        problems.push(format!("{path}.alpha_ms"), "must be > 0: a decode step takes time");
    }
    if q.gamma_ms + q.delta_ms + q.prefill_quadratic_ms <= 0.0 {
        problems
            .push(path, "prefill parameters gamma_ms, delta_ms, prefill_quadratic_ms are all 0: a prefill takes time");
    }
    if let Some(e) = &p.engine {
        engine_spec(problems, &format!("{path}.engine"), e);
    }
}

/// Check a scenario and build the snapshot the core plans on.
pub fn validate(scenario: &Scenario) -> Result<Snapshot, Invalid> {
    let mut problems = Problems::default();
    let mut warnings = scenario.import_notes.clone();
    if let Some(name) = &scenario.name {
        problems.text("name", name);
    }

    // Accelerators.
    let acc_index = index_names(&mut problems, "accelerators", scenario.accelerators.iter().map(|a| a.name.as_str()));
    for (i, a) in scenario.accelerators.iter().enumerate() {
        if let Some(device) = &a.device {
            problems.text(format!("accelerators[{i}].device"), device);
        }
        problems.count(format!("accelerators[{i}].gpus"), a.gpus, 0, MAX_GPUS);
        problems.number(
            format!("accelerators[{i}].cost_usd_per_gpu_hour"),
            a.cost_usd_per_gpu_hour,
            0.0,
            false,
            MAX_COST_USD_PER_GPU_HOUR,
        );
    }
    if scenario.accelerators.is_empty() {
        problems.push("accelerators", "must list at least one accelerator type");
    }

    // Profiles: the scenario's own, then the bundled ones for names it does not define.
    let profile_index = index_names(&mut problems, "profiles", scenario.profiles.iter().map(|p| p.name.as_str()));
    for (i, p) in scenario.profiles.iter().enumerate() {
        check_profile(&mut problems, &format!("profiles[{i}]"), p);
    }
    let bundled = bundled::profiles();

    // Variants and the models they serve.
    index_names(&mut problems, "variants", scenario.variants.iter().map(|v| v.name.as_str()));
    if scenario.variants.is_empty() {
        problems.push("variants", "must list at least one variant");
    }
    let model_pos = sorted_positions(scenario.variants.iter().map(|v| v.model.as_str()));

    // Service classes and their targets.
    index_names(&mut problems, "service_classes", scenario.service_classes.iter().map(|c| c.name.as_str()));
    let class_pos = sorted_positions(scenario.service_classes.iter().map(|c| c.name.as_str()));
    // (model, class) → SLO
    let mut slos: BTreeMap<(&str, &str), Slo> = BTreeMap::new();
    for (i, c) in scenario.service_classes.iter().enumerate() {
        let path = format!("service_classes[{i}]");
        problems.count(format!("{path}.priority"), c.priority, 1, 100);
        if let Some(w) = c.weight {
            problems.number(format!("{path}.weight"), w, 0.0, true, 1000.0);
        }
        if c.targets.is_empty() {
            problems.push(format!("{path}.targets"), "must list at least one model target");
        }
        for (j, t) in c.targets.iter().enumerate() {
            let tpath = format!("{path}.targets[{j}]");
            if !model_pos.contains_key(t.model.as_str()) {
                problems.push(format!("{tpath}.model"), format!("no variant serves model {:?}", t.model));
            }
            if t.ttft.is_none() && t.itl.is_none() {
                problems.push(tpath.clone(), "needs a ttft or an itl target (or both)");
            }
            let slo = Slo {
                ttft: target(&mut problems, format!("{tpath}.ttft"), &t.ttft, false),
                itl: target(&mut problems, format!("{tpath}.itl"), &t.itl, true),
            };
            if slos.insert((t.model.as_str(), c.name.as_str()), slo).is_some() {
                problems.push(
                    format!("{tpath}.model"),
                    format!("class {:?} already has a target for model {:?}", c.name, t.model),
                );
            }
        }
    }

    // Load.
    let mut demands: BTreeMap<&str, Vec<Demand>> = BTreeMap::new();
    let mut seen_load = BTreeSet::new();
    for (i, l) in scenario.load.iter().enumerate() {
        let path = format!("load[{i}]");
        let rate_ok = problems.number(format!("{path}.arrival_rate_rps"), l.arrival_rate_rps, 0.0, false, MAX_RATE_RPS);
        let input = token_distribution(&mut problems, &mut warnings, &format!("{path}.input_tokens"), &l.input_tokens);
        let output =
            token_distribution(&mut problems, &mut warnings, &format!("{path}.output_tokens"), &l.output_tokens);
        let arrival_cv = l.arrival_cv.unwrap_or(1.0);
        let cv_ok = problems.number(format!("{path}.arrival_cv"), arrival_cv, 0.0, false, MAX_ARRIVAL_CV);
        if !model_pos.contains_key(l.model.as_str()) {
            problems.push(format!("{path}.model"), format!("no variant serves model {:?}", l.model));
            continue;
        }
        let Some(&class) = class_pos.get(l.class.as_str()) else {
            problems.push(format!("{path}.class"), format!("no service class {:?}", l.class));
            continue;
        };
        let Some(slo) = slos.get(&(l.model.as_str(), l.class.as_str())) else {
            problems.push(path, format!("class {:?} has no target for model {:?}", l.class, l.model));
            continue;
        };
        if !seen_load.insert((l.model.as_str(), l.class.as_str())) {
            problems.push(path, format!("duplicate load for model {:?} class {:?}", l.model, l.class));
            continue;
        }
        if let (true, true, Some(input), Some(output)) = (rate_ok, cv_ok, input, output) {
            demands.entry(l.model.as_str()).or_default().push(Demand {
                class,
                arrival_rps: l.arrival_rate_rps,
                workload: Workload::new(input, output).with_arrival_cv2(arrival_cv * arrival_cv),
                slo: *slo,
            });
        }
    }

    // Optimizer settings.
    let o = &scenario.optimizer;
    problems.number("optimizer.time_limit_s", o.time_limit_s, 0.0, true, 3600.0);
    problems.number("optimizer.mip_gap", o.mip_gap, 0.0, false, 0.5);
    problems.number("optimizer.max_utilization", o.max_utilization, 0.0, true, 0.99);
    problems.number(
        "optimizer.transition.replica_change_fraction",
        o.transition.replica_change_fraction,
        0.0,
        false,
        100.0,
    );
    problems.number(
        "optimizer.transition.accelerator_move_fraction",
        o.transition.accelerator_move_fraction,
        0.0,
        false,
        100.0,
    );
    // Unset, the documented default applies (docs/scenario.md): without any bound a plan could
    // pair one prefill replica with any number of decode replicas.
    let default_pd =
        Some(o.pd_ratio.as_ref().map_or(DEFAULT_PD_RATIO, |r| pd_ratio(&mut problems, "optimizer.pd_ratio", r)));
    let mut pd_by_model = BTreeMap::new();
    for (model, r) in &o.pd_ratio_by_model {
        let path = format!("optimizer.pd_ratio_by_model.{model}");
        if !model_pos.contains_key(model.as_str()) {
            problems.push(path.clone(), format!("no variant serves model {model:?}"));
        }
        pd_by_model.insert(model.as_str(), pd_ratio(&mut problems, &path, r));
    }

    // Variants.
    let mut without_kv = 0usize;
    let mut roles: BTreeMap<&str, BTreeSet<Role>> = BTreeMap::new();
    let mut variants = Vec::new();
    for (i, v) in scenario.variants.iter().enumerate() {
        let path = format!("variants[{i}]");
        problems.name(format!("{path}.model"), &v.model);
        problems.count(format!("{path}.gpus_per_replica"), v.gpus_per_replica, 1, MAX_GPUS_PER_REPLICA);
        problems.count(format!("{path}.max_batch"), v.max_batch, 1, MAX_BATCH);
        problems.count(format!("{path}.min_replicas"), v.min_replicas, 0, MAX_REPLICAS);
        problems.count(format!("{path}.current_replicas"), v.current_replicas, 0, MAX_REPLICAS);
        if let Some(max) = v.max_replicas {
            problems.count(format!("{path}.max_replicas"), max, 0, MAX_REPLICAS);
            if max < v.min_replicas {
                problems
                    .push(format!("{path}.max_replicas"), format!("{max} is below min_replicas {}", v.min_replicas));
            }
        }
        roles.entry(v.model.as_str()).or_default().insert(v.role);
        let Some(&acc_i) = acc_index.get(v.accelerator.as_str()) else {
            problems.push(format!("{path}.accelerator"), format!("no accelerator {:?}", v.accelerator));
            continue;
        };
        let acc = &scenario.accelerators[acc_i];

        let profile = match &v.profile {
            None => None,
            Some(name) => match profile_index.get(name.as_str()) {
                Some(&p) => Some(&scenario.profiles[p]),
                None => match bundled.iter().find(|p| &p.name == name) {
                    Some(p) => Some(p),
                    None => {
                        problems.push(
                            format!("{path}.profile"),
                            format!("no profile {name:?} in the scenario or bundled from models/"),
                        );
                        continue;
                    }
                },
            },
        };
        if let (Some(p), Some(max_profiled)) = (profile, profile.and_then(|p| p.max_batch_profiled))
            && v.max_batch > max_profiled.saturating_mul(2)
        {
            warnings.push(format!(
                "variants[{i}] ({}): max_batch {} is far above the {} profile {:?} was measured at; latency is extrapolated",
                v.name, v.max_batch, max_profiled, p.name
            ));
        }

        let mut measured = BTreeMap::new();
        for (class, rps) in &v.capacity_rps {
            let cpath = format!("{path}.capacity_rps.{class}");
            problems.number(cpath.clone(), *rps, 0.0, false, MAX_RATE_RPS);
            match class_pos.get(class.as_str()) {
                Some(&k) => {
                    if !slos.contains_key(&(v.model.as_str(), class.as_str())) {
                        problems.push(cpath, format!("class {class:?} has no target for model {:?}", v.model));
                    }
                    measured.insert(k, *rps);
                }
                None => problems.push(cpath, format!("no service class {class:?}")),
            }
        }
        // Every class with load on this model needs either a profile or a measured capacity.
        if profile.is_none() {
            for d in demands.get(v.model.as_str()).into_iter().flatten() {
                if !measured.contains_key(&d.class) {
                    let class = class_pos_name(&class_pos, d.class);
                    problems.push(
                        format!("{path}.profile"),
                        format!(
                            "needs a profile, or capacity_rps for class {class:?} which has load on model {:?}",
                            v.model
                        ),
                    );
                }
            }
        }

        let profile_engine = profile.and_then(|p| p.engine).unwrap_or_default();
        if let Some(e) = &v.engine {
            engine_spec(&mut problems, &format!("{path}.engine"), e);
        }
        let engine = v.engine.unwrap_or_default().or(&profile_engine).resolve(v.max_batch, v.gpus_per_replica);
        if engine.kv_cache_tokens.is_none() {
            without_kv += 1;
        } else if engine.kv_cache_tokens == Some(0.0) {
            problems.push(format!("{path}.engine"), "the model's weights leave no GPU memory for the KV cache");
        }

        let fit = acc.gpus.checked_div(v.gpus_per_replica).unwrap_or(0);
        let max_replicas = v.max_replicas.unwrap_or(MAX_REPLICAS).min(fit);
        if fit == 0 && v.gpus_per_replica > 0 {
            warnings.push(format!(
                "variants[{i}] ({}): one replica needs {} GPUs but {} has {}; it cannot be placed",
                v.name, v.gpus_per_replica, acc.name, acc.gpus
            ));
        }
        variants.push(Variant {
            name: v.name.clone(),
            model: model_pos[v.model.as_str()],
            accelerator: 0, // remapped to the sorted position below
            gpus_per_replica: v.gpus_per_replica,
            role: v.role,
            max_batch: v.max_batch,
            engine,
            min_replicas: v.min_replicas,
            max_replicas,
            current_replicas: v.current_replicas,
            profile: profile.map(|p| NamedProfile { name: p.name.clone(), params: p.params }),
            measured_capacity_rps: measured,
        });
        // Remember the accelerator by name until sorting.
        variants.last_mut().expect("just pushed").accelerator = acc_i;
    }

    if without_kv > 0 {
        warnings.push(format!(
            "{without_kv} of {} variants have no KV-cache size (engine.kv_cache_tokens or engine.kv_cache_memory, \
             on the variant or its profile): only max_batch bounds their batch, which is optimistic for long requests",
            scenario.variants.len()
        ));
    }

    // Roles: disaggregated models need both halves, and ratio bounds apply only to them.
    let mut models = Vec::new();
    for &model in model_pos.keys() {
        let r = &roles[model];
        let disaggregated = r.contains(&Role::Prefill) || r.contains(&Role::Decode);
        if r.contains(&Role::Prefill) != r.contains(&Role::Decode) {
            let (has, lacks) = if r.contains(&Role::Prefill) { ("prefill", "decode") } else { ("decode", "prefill") };
            problems.push("variants", format!("model {model:?} has {has} variants but no {lacks} variant"));
        }
        let pd = pd_by_model.get(model).copied().or(default_pd);
        if pd_by_model.contains_key(model) && !disaggregated {
            problems.push(format!("optimizer.pd_ratio_by_model.{model}"), "model has no prefill/decode variants");
        }
        models.push(Model {
            name: model.to_string(),
            demands: demands.remove(model).map(sort_demands).unwrap_or_default(),
            pd_ratio: if disaggregated { pd } else { None },
            min_replicas: scenario.min_replicas.get(model).copied().unwrap_or(0),
        });
    }
    for (model, &n) in &scenario.min_replicas {
        let path = format!("min_replicas.{model}");
        if !model_pos.contains_key(model.as_str()) {
            problems.push(path, format!("no variant serves model {model:?}"));
        } else if problems.count(path.clone(), n, 0, MAX_REPLICAS) {
            let room = model_room(scenario, &variants, model_pos[model.as_str()]);
            if u64::from(n) > room {
                problems.push(
                    path,
                    format!(
                        "needs {n} replicas of model {model:?} but at most {room} fit its variants' bounds and GPUs"
                    ),
                );
            }
        }
    }

    // Minimum replicas must fit the inventory, or no plan exists at all.
    let mut min_gpus: BTreeMap<usize, u64> = BTreeMap::new();
    for v in &variants {
        *min_gpus.entry(v.accelerator).or_default() += u64::from(v.min_replicas) * u64::from(v.gpus_per_replica);
    }
    for (&a, &need) in &min_gpus {
        let acc = &scenario.accelerators[a];
        if need > u64::from(acc.gpus) {
            problems.push(
                format!("accelerators[{a}].gpus"),
                format!(
                    "the variants' min_replicas need {need} GPUs of {:?} but only {} are available",
                    acc.name, acc.gpus
                ),
            );
        }
    }

    if !problems.is_empty() {
        return Err(problems.into_invalid());
    }

    // Sort everything by name and remap indices, so the plan never depends on input order.
    let mut accelerators: Vec<(usize, Accelerator)> = scenario
        .accelerators
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                i,
                Accelerator {
                    name: a.name.clone(),
                    device: a.device.clone(),
                    gpus: a.gpus,
                    cost_usd_per_gpu_hour: a.cost_usd_per_gpu_hour,
                },
            )
        })
        .collect();
    accelerators.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let mut acc_remap = vec![0; accelerators.len()];
    for (sorted, (orig, _)) in accelerators.iter().enumerate() {
        acc_remap[*orig] = sorted;
    }
    for v in &mut variants {
        v.accelerator = acc_remap[v.accelerator];
    }
    variants.sort_by(|a, b| a.name.cmp(&b.name));

    let mut classes: Vec<ServiceClass> = scenario
        .service_classes
        .iter()
        .map(|c| ServiceClass { name: c.name.clone(), priority: c.priority, weight: c.weight.unwrap_or(1.0) })
        .collect();
    classes.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(Snapshot {
        name: scenario.name.clone(),
        accelerators: accelerators.into_iter().map(|(_, a)| a).collect(),
        classes,
        models,
        variants,
        settings: Settings {
            time_limit_s: o.time_limit_s,
            mip_gap: o.mip_gap,
            max_utilization: o.max_utilization,
            transition: TransitionCosts {
                replica_change_fraction: o.transition.replica_change_fraction,
                accelerator_move_fraction: o.transition.accelerator_move_fraction,
            },
            routing: o.routing,
        },
        warnings,
    })
}

/// Most replicas model `m` can have over its variants: per accelerator type, the GPUs left by
/// every variant's minimum, filled with the model's smallest replicas there (within their
/// `max_replicas`). A bound for each model alone; minimums of several models that compete for
/// one type are checked by the solver.
fn model_room(scenario: &Scenario, variants: &[Variant], m: usize) -> u64 {
    let mut reserved: BTreeMap<usize, u64> = BTreeMap::new();
    for v in variants {
        *reserved.entry(v.accelerator).or_default() += u64::from(v.min_replicas) * u64::from(v.gpus_per_replica);
    }
    let mut room = 0;
    let types: BTreeSet<usize> = variants.iter().filter(|v| v.model == m).map(|v| v.accelerator).collect();
    for a in types {
        let on_a: Vec<&Variant> = variants.iter().filter(|v| v.model == m && v.accelerator == a).collect();
        let own_min: u64 = on_a.iter().map(|v| u64::from(v.min_replicas)).sum();
        let free = u64::from(scenario.accelerators[a].gpus).saturating_sub(reserved.get(&a).copied().unwrap_or(0));
        let smallest = on_a.iter().map(|v| u64::from(v.gpus_per_replica)).min().unwrap_or(1).max(1);
        let bound: u64 = on_a.iter().map(|v| u64::from(v.max_replicas)).sum();
        room += (own_min + free / smallest).min(bound);
    }
    room
}

fn class_pos_name<'a>(class_pos: &BTreeMap<&'a str, usize>, pos: usize) -> &'a str {
    class_pos.iter().find(|(_, p)| **p == pos).map(|(n, _)| *n).expect("position came from this map")
}

fn sort_demands(mut d: Vec<Demand>) -> Vec<Demand> {
    d.sort_by_key(|d| d.class);
    d
}
