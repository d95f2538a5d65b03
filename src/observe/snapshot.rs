//! Assemble a [`Scenario`] from what the controller observed: VariantAutoscalings, the parsed
//! ConfigMaps, the GPU inventory, each variant's pod states and target, and the load per model.
//! The result goes through [`crate::scenario::validate`] like any scenario file, so the controller
//! plans with exactly the code `allot plan` and the REST API use.
//!
//! Mapping (documented in `docs/kubernetes.md`, "From cluster to scenario"):
//! - one VariantAutoscaling = one variant named `namespace/name`; its accelerator, GPUs per
//!   replica, batch size and latency profile come from whichever of WVA's shapes it uses
//!   ([`resolve`]);
//! - current replicas = ready + booting pods (or LeaderWorkerSet groups); unschedulable and gated
//!   pods are not capacity;
//! - accelerators = the `accelerator-unit-costs` entries with the inventory of their device and
//!   pool ([`effective_gpus`]); where pods are Unschedulable the assembly reports evidence
//!   ([`PendingEvidence`]) and the loop's [`super::pending::PendingMemory`] shrinks the type;
//! - service classes = `service-classes-config`, restricted to models some variant serves.
//!
//! A VariantAutoscaling that cannot be used (unknown accelerator, bad perfParms, no class, no
//! profile) is skipped with a reason that names the field, and the rest is planned: one bad
//! object must not stop the fleet.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use super::inventory::{DeviceInventory, EffectiveGpus, Inventory, effective_gpus};
use super::pending::{AcceleratorEvidence, PendingEvidence, PendingPod};
use super::pods::VariantPods;
use crate::analyze::{LatencyParams, Role};
use crate::k8s::config::{ClusterConfig, ServiceClass};
use crate::k8s::crd::{ACCELERATOR_LABEL, PROFILE_ANNOTATION, PerfParms, VariantAutoscaling};
use crate::scenario::format::{
    AcceleratorSpec, ClassTargetSpec, HistogramSpec, LoadSpec, Scenario, ServiceClassSpec, TargetSpec, TokenCountSpec,
    TokenDistributionSpec, VariantSpec,
};
use crate::scenario::profile::{ProfileSpec, Provenance};
use crate::scenario::{Invalid, Snapshot};

/// vLLM's default `--max-num-seqs`, which WVA also assumes: the batch size of a variant whose
/// object does not say.
pub const DEFAULT_MAX_BATCH: u32 = 256;

/// Observed demand of one model (from Prometheus), in Allot's units.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelLoad {
    /// `spec.modelID` of the variants serving it.
    pub model: String,
    /// Service class of this traffic; `None`: the class of the model's variants.
    pub class: Option<String>,
    pub arrival_rate_rps: f64,
    /// Mean prompt tokens per request.
    pub input_tokens: f64,
    /// Mean generated tokens per request.
    pub output_tokens: f64,
    /// The prompt sizes' histogram (vLLM's `vllm:request_prompt_tokens`), checked usable; the
    /// plan then sizes for the distribution instead of the mean's default shape.
    pub input_histogram: Option<HistogramSpec>,
    /// The same for generated tokens.
    pub output_histogram: Option<HistogramSpec>,
}

/// What the scale target itself says about a variant's replicas (from its object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetFacts {
    /// Accelerators one replica requests according to the pod template(s); for a
    /// LeaderWorkerSet the whole group's (leader + size − 1 workers).
    pub gpus_per_replica: Option<u32>,
    /// The GPU product the pod template's node selector asks for (`nvidia.com/gpu.product`).
    pub node_product: Option<String>,
}

/// Everything one planning cycle observed.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub variants: &'a [VariantAutoscaling],
    pub config: &'a ClusterConfig,
    pub inventory: &'a Inventory,
    /// Pod states per variant name (`namespace/name`); a missing entry means no pods.
    pub pods: &'a BTreeMap<String, VariantPods>,
    /// Per variant name, what its scale target's object says; a missing entry means nothing.
    pub targets: &'a BTreeMap<String, TargetFacts>,
    pub load: &'a [ModelLoad],
}

/// A VariantAutoscaling left out of the plan, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// `namespace/name`.
    pub variant: String,
    pub reason: String,
}

/// The inventory of one accelerator and what limits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceleratorInventory {
    pub name: String,
    pub device: String,
    pub inventory: DeviceInventory,
    pub effective: EffectiveGpus,
    /// Variants with pods Unschedulable on this type now (beyond the pool's grace), sorted.
    pub unschedulable_variants: Vec<String>,
}

/// The assembled scenario and how it came about.
#[derive(Clone, Debug, PartialEq)]
pub struct Assembly {
    pub scenario: Scenario,
    /// Sorted by name.
    pub accelerators: Vec<AcceleratorInventory>,
    /// Sorted by variant.
    pub skipped: Vec<Skipped>,
    /// Non-fatal findings; also carried into the plan's warnings.
    pub warnings: Vec<String>,
    /// What the scheduler says about room per accelerator, for the pending-pod memory.
    pub evidence: PendingEvidence,
}

impl Assembly {
    /// Validate the scenario into the snapshot the core plans on.
    pub fn validate(&self) -> Result<Snapshot, Invalid> {
        crate::scenario::validate(&self.scenario)
    }
}

/// The `namespace/name` of a VariantAutoscaling: its variant name in plans.
pub fn variant_name(va: &VariantAutoscaling) -> String {
    format!("{}/{}", va.namespace().unwrap_or_else(|| "default".into()), va.name_any())
}

/// A usable VariantAutoscaling, resolved against the configuration.
struct Resolved {
    name: String,
    model: String,
    accelerator: String,
    class: String,
    spec: VariantSpec,
    /// The inline profile, unless the variant names a bundled one.
    profile: Option<ProfileSpec>,
    pods: VariantPods,
}

/// Build the scenario for one planning cycle.
pub fn assemble(obs: &Observation<'_>) -> Assembly {
    let config = obs.config;
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();

    // Variants, sorted by name so every later decision is independent of list order.
    let mut vas: Vec<&VariantAutoscaling> =
        obs.variants.iter().filter(|va| va.metadata.deletion_timestamp.is_none()).collect();
    vas.sort_by_key(|va| variant_name(va));
    let mut resolved: Vec<Resolved> = Vec::new();
    for va in vas {
        let name = variant_name(va);
        match resolve(va, &name, obs, &mut warnings) {
            Ok(r) => {
                if resolved.iter().any(|o| o.name == r.name) {
                    skipped.push(Skipped { variant: name, reason: "duplicate name".into() });
                } else {
                    resolved.push(r);
                }
            }
            Err(reason) => skipped.push(Skipped { variant: name, reason }),
        }
    }

    // Accelerators: the inventory of their device and pool, and the scheduler's evidence.
    let mut accelerators = Vec::new();
    let mut evidence = PendingEvidence { memory_s: config.allot.full_type_memory.as_secs_f64(), ..Default::default() };
    for acc in &config.accelerators {
        let pool = config.allot.pools.get(&acc.name);
        let grace_s = pool.map_or(0.0, |p| f64::from(p.scale_up_grace_s));
        let inventory = obs.inventory.devices.get(&acc.device).cloned().unwrap_or_default();
        let mut ev = AcceleratorEvidence {
            held_gpus: inventory.managed_gpus,
            node_gpus: inventory.node_gpus.clone(),
            free_gpus: inventory.free_gpus.clone(),
            ..AcceleratorEvidence::default()
        };
        let mut unschedulable_variants = Vec::new();
        for r in resolved.iter().filter(|r| r.accelerator == acc.name) {
            ev.bound_uids.extend(r.pods.bound_uids.iter().cloned());
            let mut pending = r.pods.evidence_beyond(grace_s).peekable();
            if pending.peek().is_some() {
                unschedulable_variants.push(r.name.clone());
            }
            ev.unschedulable.extend(pending.map(|p| PendingPod {
                variant: r.name.clone(),
                pod: p.pod.clone(),
                uid: p.uid.clone(),
                gpus: p.gpus,
            }));
            if !r.pods.gates.is_empty() {
                warnings.push(format!(
                    "variant {}: {} replicas wait on scheduling gates ({}); not counted as capacity, the type is not full",
                    r.name,
                    r.pods.gated,
                    r.pods.gates.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        ev.unschedulable.sort();
        evidence.accelerators.insert(acc.name.clone(), ev);
        accelerators.push(AcceleratorInventory {
            name: acc.name.clone(),
            device: acc.device.clone(),
            effective: effective_gpus(&inventory, pool),
            inventory,
            unschedulable_variants,
        });
    }

    let service_classes = classes_for(&config.classes, &resolved, &mut warnings);
    let load = load_for(obs.load, &resolved, &config.classes, &mut warnings);

    let scenario = Scenario {
        name: Some("cluster snapshot".into()),
        accelerators: accelerators
            .iter()
            .map(|a| {
                let cost = config.accelerator(&a.name).map_or(0.0, |c| config.cost_usd_per_gpu_hour(c));
                AcceleratorSpec {
                    name: a.name.clone(),
                    device: Some(a.device.clone()),
                    gpus: a.effective.gpus,
                    cost_usd_per_gpu_hour: cost,
                }
            })
            .collect(),
        service_classes,
        load,
        variants: resolved.iter().map(|r| r.spec.clone()).collect(),
        profiles: resolved.iter().filter_map(|r| r.profile.clone()).collect(),
        optimizer: config.allot.optimizer.clone(),
        min_replicas: Default::default(),
        import_notes: warnings.clone(),
    };
    Assembly { scenario, accelerators, skipped, warnings, evidence }
}

/// The accelerator a variant runs on, from whichever field its WVA shape uses (docs/kubernetes.md):
/// `spec.acceleratorType`, the `inference.optimization/acceleratorName` label, the only
/// `modelProfile` entry, or the product its target's node selector asks for.
fn accelerator_of(
    va: &VariantAutoscaling,
    config: &ClusterConfig,
    target: Option<&TargetFacts>,
) -> Result<String, String> {
    let spec = &va.spec;
    let known = |name: &str| config.accelerator(name).is_some();
    // acceleratorType may name a key of accelerator-unit-costs or its device.
    let by_type = match &spec.accelerator_type {
        None => None,
        Some(t) if known(t) => Some(t.clone()),
        Some(t) => match config.accelerators.iter().find(|a| a.device.eq_ignore_ascii_case(t)) {
            Some(a) => Some(a.name.clone()),
            None => {
                return Err(format!(
                    "spec.acceleratorType {t:?} is neither a key nor a device of the accelerator-unit-costs ConfigMap"
                ));
            }
        },
    };
    let label = va.labels().get(ACCELERATOR_LABEL).cloned();
    let entries = spec.model_profile.as_ref().map(|p| p.accelerators.as_slice()).unwrap_or_default();
    let accelerator = match (by_type, label) {
        (Some(t), Some(l)) if t != l => {
            return Err(format!("spec.acceleratorType {t:?} and label {ACCELERATOR_LABEL}={l:?} disagree"));
        }
        (Some(t), _) => t,
        (None, Some(l)) => l,
        (None, None) => match (entries, target.and_then(|t| t.node_product.as_deref())) {
            ([only], _) => only.acc.clone(),
            ([], Some(product)) => match config.accelerators.iter().find(|a| a.device == product) {
                Some(a) => a.name.clone(),
                None => {
                    return Err(format!(
                        "the target's pods select nvidia.com/gpu.product={product:?}, which no accelerator-unit-costs entry names as its device"
                    ));
                }
            },
            ([], None) => {
                return Err(format!(
                    "no accelerator: set spec.acceleratorType, the label {ACCELERATOR_LABEL}, or a modelProfile entry"
                ));
            }
            (many, _) => {
                return Err(format!(
                    "label {ACCELERATOR_LABEL} is missing and spec.modelProfile lists {} accelerators; \
                     set the label to the one this variant runs on",
                    many.len()
                ));
            }
        },
    };
    if !known(&accelerator) {
        return Err(format!("accelerator {accelerator:?} is not in the accelerator-unit-costs ConfigMap"));
    }
    Ok(accelerator)
}

/// Resolve one VariantAutoscaling, or say why it cannot be planned.
fn resolve(
    va: &VariantAutoscaling,
    name: &str,
    obs: &Observation<'_>,
    warnings: &mut Vec<String>,
) -> Result<Resolved, String> {
    let spec = &va.spec;
    let config = obs.config;
    let target = obs.targets.get(name);
    let accelerator = accelerator_of(va, config, target)?;
    let entries = spec.model_profile.as_ref().map(|p| p.accelerators.as_slice()).unwrap_or_default();
    let entry = entries.iter().enumerate().find(|(_, e)| e.acc == accelerator);
    if entry.is_none() && !entries.is_empty() && spec.variant_profile.is_none() {
        return Err(format!("spec.modelProfile.accelerators has no entry for accelerator {accelerator:?}"));
    }

    // The latency profile: inline perfParms (simplified shape first), else a bundled profile.
    let inline: Option<(&PerfParms, String)> = match (&spec.variant_profile, entry) {
        (Some(vp), _) if vp.perf_parms.is_some() => {
            vp.perf_parms.as_ref().map(|p| (p, "spec.variantProfile.perfParms".to_string()))
        }
        (_, Some((i, e))) => {
            e.perf_parms.as_ref().map(|p| (p, format!("spec.modelProfile.accelerators[{i}].perfParms")))
        }
        _ => None,
    };
    let profile_name = format!("{name}@{accelerator}");
    let (profile_ref, profile) = match (inline, va.annotations().get(PROFILE_ANNOTATION)) {
        (Some((parms, field)), _) => {
            let params = parse_perf_parms(parms).map_err(|m| format!("{field}.{m}"))?;
            let profile = ProfileSpec {
                name: profile_name.clone(),
                params,
                max_batch_profiled: None,
                engine: None,
                provenance: Some(Provenance {
                    source: format!("VariantAutoscaling {name} {field}"),
                    command: None,
                    data_selector: None,
                    itl_fit: None,
                    prefill_fit: None,
                    notes: vec![],
                }),
            };
            (profile_name, Some(profile))
        }
        (None, Some(bundled)) => {
            if !crate::scenario::bundled::profiles().iter().any(|p| &p.name == bundled) {
                return Err(format!(
                    "annotation {PROFILE_ANNOTATION}: no bundled profile {bundled:?} (models/ lists the names)"
                ));
            }
            (bundled.clone(), None)
        }
        (None, None) => {
            return Err(format!(
                "no latency profile: give spec.variantProfile.perfParms, spec.modelProfile.accelerators[].perfParms, \
                 or annotation {PROFILE_ANNOTATION} naming a profile bundled in models/"
            ));
        }
    };

    // GPUs per replica: what the pods really request wins over what the object declares.
    let declared = spec.accelerator_count.or(entry.map(|(_, e)| e.acc_count)).filter(|n| *n > 0);
    let gpus_per_replica = match (target.and_then(|t| t.gpus_per_replica).filter(|n| *n > 0), declared) {
        (Some(t), Some(d)) if t != d => {
            warnings.push(format!(
                "variant {name}: its target's pods request {t} accelerators per replica, the VariantAutoscaling says {d}; planning with {t}"
            ));
            t
        }
        (Some(t), _) => t,
        (None, Some(d)) => d,
        (None, None) => 1,
    };
    let max_batch =
        match (spec.variant_profile.as_ref().map(|p| p.max_batch_size), entry.map(|(_, e)| e.max_batch_size)) {
            (Some(b), _) | (None, Some(b)) => b.max(1),
            (None, None) => DEFAULT_MAX_BATCH,
        };

    let class = match &spec.service_class {
        Some(c) => {
            let class = config
                .classes
                .iter()
                .find(|k| &k.name == c)
                .ok_or_else(|| format!("spec.serviceClass {c:?} is not in the service-classes-config ConfigMap"))?;
            if !has_target(class, &spec.model_id) {
                return Err(format!("service class {c:?} has no SLO target for model {:?}", spec.model_id));
            }
            class.name.clone()
        }
        None => default_class(&config.classes, &spec.model_id)
            .ok_or_else(|| format!("no service class has an SLO target for model {:?}", spec.model_id))?
            .name
            .clone(),
    };

    let min_replicas = spec.min_replicas.unwrap_or(if config.allot.scale_to_zero { 0 } else { 1 });
    if let Some(max) = spec.max_replicas
        && max < min_replicas
    {
        return Err(format!("spec.maxReplicas {max} is below the minimum of {min_replicas} replicas"));
    }
    let pods = obs.pods.get(name).cloned().unwrap_or_default();
    let role: Role = spec.role();
    Ok(Resolved {
        name: name.to_string(),
        model: spec.model_id.clone(),
        accelerator: accelerator.clone(),
        class,
        spec: VariantSpec {
            name: name.to_string(),
            model: spec.model_id.clone(),
            accelerator,
            gpus_per_replica,
            role,
            max_batch,
            min_replicas,
            max_replicas: spec.max_replicas,
            current_replicas: pods.current_replicas(),
            profile: Some(profile_ref),
            capacity_rps: BTreeMap::new(),
            engine: None,
        },
        profile,
        pods,
    })
}

/// WVA's perfParms (decimal strings, ms) as latency parameters. The error names the field.
fn parse_perf_parms(p: &PerfParms) -> Result<LatencyParams, String> {
    let get = |map: &BTreeMap<String, String>, group: &str, key: &str| -> Result<f64, String> {
        let text = map.get(key).ok_or_else(|| format!("{group}.{key}: missing"))?;
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("{group}.{key}: must be a decimal number of milliseconds ≥ 0, got {text:?}")),
        }
    };
    let params = LatencyParams {
        alpha_ms: get(&p.decode_parms, "decodeParms", "alpha")?,
        beta_ms: get(&p.decode_parms, "decodeParms", "beta")?,
        gamma_ms: get(&p.prefill_parms, "prefillParms", "gamma")?,
        delta_ms: get(&p.prefill_parms, "prefillParms", "delta")?,
        ..LatencyParams::default()
    };
    if params.alpha_ms <= 0.0 {
        return Err("decodeParms.alpha: must be > 0 (a decode step takes time)".into());
    }
    if params.gamma_ms + params.delta_ms <= 0.0 {
        return Err("prefillParms: gamma and delta are both 0 (a prefill takes time)".into());
    }
    Ok(params)
}

fn has_target(class: &ServiceClass, model: &str) -> bool {
    class.targets.iter().any(|t| t.model == model && (t.itl_ms.is_some() || t.ttft_ms.is_some()))
}

/// WVA's class lookup by modelID, made deterministic: the most important class (smallest
/// priority, then name) with a target for the model.
fn default_class<'a>(classes: &'a [ServiceClass], model: &str) -> Option<&'a ServiceClass> {
    classes.iter().filter(|c| has_target(c, model)).min_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)))
}

/// The configured classes, restricted to targets of models some variant serves.
fn classes_for(classes: &[ServiceClass], resolved: &[Resolved], warnings: &mut Vec<String>) -> Vec<ServiceClassSpec> {
    let served: BTreeSet<&str> = resolved.iter().map(|r| r.model.as_str()).collect();
    let mut out = Vec::new();
    for c in classes {
        let mut targets = Vec::new();
        for t in c.targets.iter().filter(|t| served.contains(t.model.as_str())) {
            if t.itl_ms.is_none() && t.ttft_ms.is_none() {
                warnings.push(format!(
                    "service class {}: model {:?} has neither slo-tpot nor slo-ttft; ignored",
                    c.name, t.model
                ));
                continue;
            }
            targets.push(ClassTargetSpec {
                model: t.model.clone(),
                ttft: t.ttft_ms.map(|ms| TargetSpec { ms, statistic: t.ttft_statistic, over: None }),
                // WVA's TPOT target is vLLM's per-token average.
                itl: t.itl_ms.map(|ms| TargetSpec {
                    ms,
                    statistic: t.itl_statistic,
                    over: Some(crate::analyze::ItlPopulation::Token),
                }),
            });
        }
        if !targets.is_empty() {
            out.push(ServiceClassSpec { name: c.name.clone(), priority: c.priority, weight: c.weight, targets });
        }
    }
    out
}

/// Load entries per (model, class): a load without a class goes to the model's class (the most
/// important of its variants' classes); repeated entries are summed.
fn load_for(
    load: &[ModelLoad],
    resolved: &[Resolved],
    classes: &[ServiceClass],
    warnings: &mut Vec<String>,
) -> Vec<LoadSpec> {
    let mut model_classes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in resolved {
        model_classes.entry(r.model.as_str()).or_default().insert(r.class.as_str());
    }
    let priority = |name: &str| classes.iter().find(|c| c.name == name).map_or(u32::MAX, |c| c.priority);
    let mut sums: BTreeMap<(String, String), TokenSums> = BTreeMap::new();
    for l in load {
        let Some(own) = model_classes.get(l.model.as_str()) else {
            warnings.push(format!("load for model {:?} ignored: no VariantAutoscaling serves it", l.model));
            continue;
        };
        if !(l.arrival_rate_rps.is_finite() && l.arrival_rate_rps >= 0.0) {
            warnings.push(format!(
                "load for model {:?} ignored: arrival rate {} is not a rate",
                l.model, l.arrival_rate_rps
            ));
            continue;
        }
        let class = match &l.class {
            Some(c) => {
                if !classes.iter().any(|k| &k.name == c && has_target(k, &l.model)) {
                    warnings
                        .push(format!("load for model {:?} ignored: class {c:?} has no SLO target for it", l.model));
                    continue;
                }
                c.clone()
            }
            None => {
                if own.len() > 1 {
                    warnings.push(format!(
                        "model {:?}: its variants name different service classes ({}); unlabelled load goes to the most important",
                        l.model,
                        own.iter().copied().collect::<Vec<_>>().join(", ")
                    ));
                }
                own.iter()
                    .min_by_key(|c| (priority(c), **c))
                    .map(|c| c.to_string())
                    .expect("a served model has a class")
            }
        };
        sums.entry((l.model.clone(), class)).or_default().add(l);
    }
    sums.into_iter()
        .map(|((model, class), s)| {
            let (input_mean, output_mean) = (s.mean(s.rate_x_input, s.input), s.mean(s.rate_x_output, s.output));
            LoadSpec {
                model,
                class,
                arrival_rate_rps: s.rate_rps,
                input_tokens: sizes(input_mean, s.input_histogram),
                output_tokens: sizes(output_mean, s.output_histogram),
                arrival_cv: None,
            }
        })
        .collect()
}

/// A load's token counts: its histogram when every merged entry had one, else the mean.
fn sizes(mean: f64, histogram: Merged) -> TokenCountSpec {
    match histogram {
        Merged::Histogram(h) => {
            TokenCountSpec::Distribution(TokenDistributionSpec { histogram: Some(h), ..Default::default() })
        }
        Merged::Nothing | Merged::Mixed => mean.into(),
    }
}

/// Histograms of the entries merged into one load so far.
#[derive(Default)]
enum Merged {
    #[default]
    Nothing,
    Histogram(HistogramSpec),
    /// An entry without one, or with other bucket bounds: the merged load plans on the mean.
    Mixed,
}

impl Merged {
    fn add(&mut self, histogram: Option<&HistogramSpec>) {
        *self = match (std::mem::take(self), histogram) {
            (Merged::Nothing, Some(h)) => Merged::Histogram(h.clone()),
            (Merged::Histogram(mut sum), Some(h))
                if sum.buckets.len() == h.buckets.len()
                    && sum.buckets.iter().zip(&h.buckets).all(|(a, b)| a.le == b.le) =>
            {
                sum.buckets.iter_mut().zip(&h.buckets).for_each(|(a, b)| a.count += b.count);
                sum.count += h.count;
                sum.sum = sum.sum.zip(h.sum).map(|(a, b)| a + b);
                Merged::Histogram(sum)
            }
            _ => Merged::Mixed,
        };
    }
}

/// Running sums to merge load entries: rate-weighted token means, plain means when no traffic.
#[derive(Default)]
struct TokenSums {
    rate_rps: f64,
    rate_x_input: f64,
    rate_x_output: f64,
    input: f64,
    output: f64,
    entries: f64,
    input_histogram: Merged,
    output_histogram: Merged,
}

impl TokenSums {
    fn add(&mut self, l: &ModelLoad) {
        self.input_histogram.add(l.input_histogram.as_ref());
        self.output_histogram.add(l.output_histogram.as_ref());
        // The scenario needs at least one token each way (WVA's import does the same).
        let tokens = |t: f64| if t.is_finite() { t.max(1.0) } else { 1.0 };
        self.rate_rps += l.arrival_rate_rps;
        self.rate_x_input += l.arrival_rate_rps * tokens(l.input_tokens);
        self.rate_x_output += l.arrival_rate_rps * tokens(l.output_tokens);
        self.input += tokens(l.input_tokens);
        self.output += tokens(l.output_tokens);
        self.entries += 1.0;
    }

    fn mean(&self, weighted: f64, plain: f64) -> f64 {
        if self.rate_rps > 0.0 { weighted / self.rate_rps } else { plain / self.entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::config::ClusterConfig;
    use crate::observe::inventory::{observe, tests::node};
    use crate::observe::pods::summarize;
    use crate::observe::pods::tests::{now, pod};

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn config() -> ClusterConfig {
        ClusterConfig::parse(
            &crate::k8s::config::AllotConfig::default(),
            &data(&[
                ("H100", r#"{"device": "NVIDIA-H100-80GB-HBM3", "cost": "425.00"}"#),
                ("A100", r#"{"device": "NVIDIA-A100-SXM4-80GB", "cost": "221.00"}"#),
            ]),
            &data(&[(
                "premium.yaml",
                "name: Premium\npriority: 1\ndata:\n  - model: meta-llama/Llama-2-70b\n    slo-tpot: 80\n    slo-ttft: 2000\n",
            )]),
            None,
            None,
        )
        .expect("test config parses")
    }

    /// A VariantAutoscaling with the bundled Splitwise fits of Llama-2-70B (models/), tp4.
    fn va(name: &str, acc: &str, alpha: &str, beta: &str, delta: &str) -> VariantAutoscaling {
        let v = serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1",
            "kind": "VariantAutoscaling",
            "metadata": {"name": name, "namespace": "llm", "labels": {ACCELERATOR_LABEL: acc}},
            "spec": {
                "modelID": "meta-llama/Llama-2-70b",
                "sloClassRef": {"name": "premium", "key": "llama"},
                "modelProfile": {"accelerators": [{
                    "acc": acc, "accCount": 4, "maxBatchSize": 64,
                    "perfParms": {"decodeParms": {"alpha": alpha, "beta": beta},
                                  "prefillParms": {"gamma": "1.5", "delta": delta}}
                }]},
                "minReplicas": 0
            }
        });
        serde_json::from_value(v).expect("fixture is a valid VariantAutoscaling")
    }

    fn vas() -> Vec<VariantAutoscaling> {
        vec![
            va("llama-h100", "H100", "28.41", "0.3455", "0.1067"),
            va("llama-a100", "A100", "42.89", "0.4299", "0.3242"),
        ]
    }

    /// Four 4-GPU H100 nodes, each with one 2-GPU job of someone else on two of them: the node
    /// count says 12 GPUs are free, but no node has 4 free GPUs beyond the two Allot holds.
    fn cluster(unschedulable: usize) -> (Inventory, BTreeMap<String, VariantPods>) {
        let nodes = [
            node("h100-a", "NVIDIA-H100-80GB-HBM3", 4),
            node("h100-b", "NVIDIA-H100-80GB-HBM3", 4),
            node("h100-c", "NVIDIA-H100-80GB-HBM3", 4),
            node("h100-d", "NVIDIA-H100-80GB-HBM3", 4),
            node("a100-a", "NVIDIA-A100-SXM4-80GB", 8),
            node("a100-b", "NVIDIA-A100-SXM4-80GB", 8),
        ];
        let gpu_pod = |name: &str, state: &str, node: &str, gpus: &str| {
            let mut p = pod(name, state);
            let spec = p.spec.as_mut().expect("spec");
            if !node.is_empty() {
                spec.node_name = Some(node.into());
            }
            let res = spec.containers[0].resources.as_mut().expect("resources");
            for m in [res.requests.as_mut(), res.limits.as_mut()].into_iter().flatten() {
                m.insert("nvidia.com/gpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(gpus.into()));
            }
            p
        };
        let mut h100_pods =
            vec![gpu_pod("llama-h100-1", "ready", "h100-a", "4"), gpu_pod("llama-h100-2", "ready", "h100-b", "4")];
        for i in 0..unschedulable {
            h100_pods.push(gpu_pod(&format!("llama-h100-p{i}"), "unschedulable", "", "4"));
        }
        let mut others = vec![gpu_pod("batch-1", "ready", "h100-c", "2"), gpu_pod("batch-2", "ready", "h100-d", "2")];
        for p in &mut others {
            p.metadata.labels = None;
        }
        let all: Vec<_> = h100_pods.iter().chain(&others).cloned().collect();
        let inventory = observe(&nodes, &all, &config().allot.tolerated_taint_keys, |p| p.metadata.labels.is_some());
        let mut pods = BTreeMap::new();
        pods.insert("llm/llama-h100".to_string(), summarize(&h100_pods, now(), Some(600)));
        (inventory, pods)
    }

    fn load(rps: f64) -> Vec<ModelLoad> {
        vec![ModelLoad {
            model: "meta-llama/Llama-2-70b".into(),
            class: None,
            arrival_rate_rps: rps,
            input_tokens: 2048.0,
            output_tokens: 128.0,
            input_histogram: None,
            output_histogram: None,
        }]
    }

    fn assembled(
        vas: &[VariantAutoscaling],
        config: &ClusterConfig,
        inventory: &Inventory,
        pods: &BTreeMap<String, VariantPods>,
        load: &[ModelLoad],
    ) -> Assembly {
        let targets = BTreeMap::new();
        assemble(&Observation { variants: vas, config, inventory, pods, targets: &targets, load })
    }

    /// The assembly as the loop plans it: the pending-pod memory applied (one observation).
    fn remembered(mut a: Assembly) -> Assembly {
        let mut memory = crate::observe::pending::PendingMemory::default();
        memory.update(&a.evidence, 0.0);
        let notes = memory.shrink(&mut a.scenario, &a.evidence);
        a.warnings.extend(notes);
        a
    }

    fn replicas(plan: &crate::plan::Plan, variant: &str) -> u32 {
        plan.variants.iter().find(|v| v.name == variant).map(|v| v.replicas).expect("variant is planned")
    }

    #[test]
    fn builds_a_valid_scenario_from_cluster_objects() {
        let (inventory, pods) = cluster(0);
        let config = config();
        let vas = vas();
        let load = load(2.0);
        let a = assembled(&vas, &config, &inventory, &pods, &load);
        assert!(a.skipped.is_empty(), "{:?}", a.skipped);
        let s = &a.scenario;
        let accs: Vec<(&str, u32, f64)> =
            s.accelerators.iter().map(|x| (x.name.as_str(), x.gpus, x.cost_usd_per_gpu_hour)).collect();
        assert_eq!(accs, vec![("A100", 16, 2.21), ("H100", 12, 4.25)]);
        let h100 = s.variants.iter().find(|v| v.name == "llm/llama-h100").expect("variant");
        assert_eq!(
            (h100.accelerator.as_str(), h100.gpus_per_replica, h100.max_batch, h100.current_replicas),
            ("H100", 4, 64, 2)
        );
        assert_eq!(h100.profile.as_deref(), Some("llm/llama-h100@H100"));
        assert_eq!(s.profiles.iter().find(|p| p.name == "llm/llama-h100@H100").map(|p| p.params.alpha_ms), Some(28.41));
        assert_eq!(s.load[0].class, "Premium");
        assert_eq!(s.service_classes[0].targets[0].itl.map(|t| t.ms), Some(80.0));
        let snapshot = a.validate().expect("assembled scenario validates");
        assert_eq!(snapshot.variants.len(), 2);
    }

    #[test]
    fn unschedulable_pods_move_demand_to_another_variant() {
        let config = config();
        let vas = vas();
        let load = load(6.0);

        // Without the signal the node count offers 12 H100 GPUs, and the cheapest plan uses
        // more than the 8 Allot's pods hold: it would ask again for GPUs the scheduler cannot place.
        let (inventory, pods) = cluster(0);
        let blind = assembled(&vas, &config, &inventory, &pods, &load);
        let blind_plan = crate::optimize::plan(&blind.validate().expect("valid"));
        assert!(replicas(&blind_plan, "llm/llama-h100") > 2, "test premise: H100 is preferred\n{blind_plan:#?}");

        // Two pods of the H100 variant are Unschedulable: H100 is full at the 8 GPUs held.
        let (inventory, pods) = cluster(2);
        let a = assembled(&vas, &config, &inventory, &pods, &load);
        let h100 = a.accelerators.iter().find(|x| x.name == "H100").expect("H100");
        assert_eq!(h100.effective.observed_gpus, 12);
        assert_eq!(h100.unschedulable_variants, vec!["llm/llama-h100"]);
        let ev = &a.evidence.accelerators["H100"];
        assert_eq!((ev.unschedulable.len(), ev.held_gpus), (2, 8));
        assert_eq!(ev.unschedulable[0].gpus, 4, "the evidence carries each pod's GPU request");
        assert_eq!(ev.free_gpus.values().copied().max(), Some(2), "no node has 4 free GPUs");
        let a = remembered(a);
        assert_eq!(a.scenario.accelerators.iter().find(|x| x.name == "H100").map(|x| x.gpus), Some(8));
        let variant = a.scenario.variants.iter().find(|v| v.name == "llm/llama-h100").expect("variant");
        assert_eq!(variant.current_replicas, 2, "unschedulable pods are not current replicas");
        let plan = crate::optimize::plan(&a.validate().expect("valid"));
        assert!(replicas(&plan, "llm/llama-h100") <= 2, "no more H100 replicas than fit\n{plan:#?}");
        assert!(replicas(&plan, "llm/llama-a100") > replicas(&blind_plan, "llm/llama-a100"));
        let served: f64 = plan.models.iter().map(|m| m.served_fraction).fold(1.0, f64::min);
        assert!(served > 0.999, "the demand is still served, on A100\n{plan:#?}");
        assert!(plan.warnings.iter().any(|w| w.contains("Unschedulable")));
    }

    #[test]
    fn bad_variants_are_skipped_with_a_reason() {
        let (inventory, pods) = cluster(0);
        let config = config();
        let bad_parm = va("bad-parm", "H100", "fast", "0.3", "0.1");
        let unknown_acc = va("tpu", "TPUv5", "20", "0.3", "0.1");
        let mut no_class = va("other-model", "H100", "20", "0.3", "0.1");
        no_class.spec.model_id = "ibm/granite-13b".into();
        let mut two_profiles = va("no-label", "H100", "20", "0.3", "0.1");
        two_profiles.metadata.labels = None;
        let profile = two_profiles.spec.model_profile.as_mut().expect("modelProfile");
        let extra = profile.accelerators[0].clone();
        profile.accelerators.push(crate::k8s::crd::AcceleratorProfile { acc: "A100".into(), ..extra });
        let mut min_over_max = va("bounds", "H100", "20", "0.3", "0.1");
        min_over_max.spec.min_replicas = Some(3);
        min_over_max.spec.max_replicas = Some(1);
        let mut vas = vas();
        vas.extend([bad_parm, unknown_acc, no_class, two_profiles, min_over_max]);
        let load = load(1.0);
        let a = assembled(&vas, &config, &inventory, &pods, &load);
        let reasons: BTreeMap<&str, &str> = a.skipped.iter().map(|s| (s.variant.as_str(), s.reason.as_str())).collect();
        assert_eq!(reasons.len(), 5, "{reasons:#?}");
        assert!(reasons["llm/bad-parm"].starts_with("spec.modelProfile.accelerators[0].perfParms.decodeParms.alpha"));
        assert!(reasons["llm/tpu"].contains("\"TPUv5\" is not in the accelerator-unit-costs"));
        assert!(reasons["llm/other-model"].contains("no service class"));
        assert!(reasons["llm/no-label"].contains(ACCELERATOR_LABEL));
        assert!(reasons["llm/bounds"].contains("maxReplicas"));
        assert_eq!(a.scenario.variants.len(), 2);
        a.validate().expect("the good variants still plan");
    }

    #[test]
    fn default_min_replicas_follows_scale_to_zero_and_is_lowered_on_a_full_type() {
        let (inventory, pods) = cluster(2);
        let mut config = config();
        let mut vas = vas();
        for v in &mut vas {
            v.spec.min_replicas = None;
        }
        vas[0].spec.min_replicas = Some(4);
        let load = load(1.0);
        let a = remembered(assembled(&vas, &config, &inventory, &pods, &load));
        let min = |a: &Assembly, n: &str| a.scenario.variants.iter().find(|v| v.name == n).map(|v| v.min_replicas);
        assert_eq!(min(&a, "llm/llama-a100"), Some(1), "WVA's default without scale-to-zero");
        assert_eq!(min(&a, "llm/llama-h100"), Some(2), "lowered to what is scheduled on the full H100 type");
        a.validate().expect("still plannable");
        config.allot.scale_to_zero = true;
        let a = assembled(&vas, &config, &inventory, &pods, &load);
        assert_eq!(min(&a, "llm/llama-a100"), Some(0));
    }

    #[test]
    fn load_is_attributed_to_classes_and_summed() {
        let (inventory, pods) = cluster(0);
        let config = config();
        let vas = vas();
        let mut load = load(1.0);
        load.push(ModelLoad { arrival_rate_rps: 3.0, input_tokens: 1024.0, ..load[0].clone() });
        load.push(ModelLoad { model: "nobody/serves-this".into(), ..load[0].clone() });
        load.push(ModelLoad { class: Some("Gold".into()), ..load[0].clone() });
        let a = assembled(&vas, &config, &inventory, &pods, &load);
        assert_eq!(a.scenario.load.len(), 1);
        let l = &a.scenario.load[0];
        assert_eq!(
            (l.arrival_rate_rps, l.input_tokens.mean_hint(), l.output_tokens.mean_hint()),
            (4.0, Some(1280.0), Some(128.0))
        );
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
    }

    fn histogram(counts: &[(f64, f64)], count: f64, sum: f64) -> HistogramSpec {
        HistogramSpec {
            buckets: counts
                .iter()
                .map(|&(le, count)| crate::scenario::format::HistogramBucketSpec { le, count })
                .collect(),
            count,
            sum: Some(sum),
        }
    }

    #[test]
    fn observed_size_histograms_are_planned_on_and_merged() {
        let (inventory, pods) = cluster(0);
        let config = config();
        let vas = vas();
        let mut load = load(1.0);
        load[0].input_histogram = Some(histogram(&[(512.0, 0.2), (2048.0, 0.7), (8192.0, 1.0)], 1.0, 2227.2));
        let a = assembled(&vas, &config, &inventory, &pods, &load);
        let TokenCountSpec::Distribution(d) = &a.scenario.load[0].input_tokens else {
            panic!("a histogram, not a mean: {:?}", a.scenario.load[0].input_tokens)
        };
        assert_eq!(d.histogram.as_ref().map(|h| h.count), Some(1.0));
        assert_eq!(a.scenario.load[0].output_tokens, TokenCountSpec::Mean(128.0));
        let snapshot = a.validate().expect("plannable");
        let input = &snapshot.models[0].demands[0].workload.input;
        // Uniform inside each bucket: 0.2·256 + 0.5·1280 + 0.3·5120.
        assert!((input.mean() - 2227.2).abs() < 1.0, "the histogram's mean: {}", input.mean());
        assert!(input.quantile(0.9) > 2048.0, "a tail above the mean");
        // Two entries with the same buckets add up; one without a histogram falls back to the mean.
        let mut two = load.clone();
        two.push(two[0].clone());
        let a = assembled(&vas, &config, &inventory, &pods, &two);
        let TokenCountSpec::Distribution(d) = &a.scenario.load[0].input_tokens else { panic!("merged histogram") };
        assert_eq!(d.histogram.as_ref().map(|h| (h.count, h.sum)), Some((2.0, Some(4454.4))));
        two[1].input_histogram = None;
        let a = assembled(&vas, &config, &inventory, &pods, &two);
        assert_eq!(a.scenario.load[0].input_tokens, TokenCountSpec::Mean(2048.0));
    }
}
