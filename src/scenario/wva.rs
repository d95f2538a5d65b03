//! Import of WVA / llm-inferno optimizer JSON (`{"system": {...}}`, reference/wva.md §1.5), so
//! their users bring their data unchanged.
//!
//! Mapping: a WVA *server* (one deployment of a model in one class) becomes an Allot model of the
//! same name; each accelerator it may run on becomes a variant `server@acc`. Rates are converted
//! from req/min to req/s, costs from cents to USD per GPU-hour (WVA's unit cost is per accelerator
//! unit of `multiplicity` GPUs).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::format::*;
use super::profile::{ProfileSpec, Provenance};
use super::validate::{Invalid, Problem};
use crate::analyze::{ItlPopulation, LatencyParams, Role, Statistic};

/// Inventory used for WVA's "unlimited" mode, where capacity is not constrained.
const UNLIMITED_GPUS: u32 = 100_000;

#[derive(Debug, Deserialize)]
pub struct WvaDocument {
    pub system: WvaSystem,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WvaSystem {
    pub accelerator_data: AcceleratorData,
    pub model_data: ModelData,
    pub service_class_data: ServiceClassData,
    pub server_data: ServerData,
    #[serde(default)]
    pub optimizer_data: Option<OptimizerData>,
    #[serde(default)]
    pub capacity_data: Option<CapacityData>,
}

#[derive(Debug, Deserialize)]
pub struct AcceleratorData {
    pub accelerators: Vec<WvaAccelerator>,
}

#[derive(Debug, Deserialize)]
pub struct WvaAccelerator {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "one")]
    pub multiplicity: u32,
    /// Cents per hour per accelerator unit.
    pub cost: f64,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
pub struct ModelData {
    pub models: Vec<WvaModelPerf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WvaModelPerf {
    pub name: String,
    pub acc: String,
    #[serde(default = "one")]
    pub acc_count: u32,
    pub max_batch_size: u32,
    #[serde(default)]
    pub at_tokens: u32,
    pub decode_parms: DecodeParms,
    pub prefill_parms: PrefillParms,
}

#[derive(Debug, Deserialize)]
pub struct DecodeParms {
    pub alpha: f64,
    pub beta: f64,
}

#[derive(Debug, Deserialize)]
pub struct PrefillParms {
    pub gamma: f64,
    pub delta: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceClassData {
    pub service_classes: Vec<WvaServiceClass>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WvaServiceClass {
    pub name: String,
    pub priority: i64,
    pub model_targets: Vec<WvaModelTarget>,
}

#[derive(Debug, Deserialize)]
pub struct WvaModelTarget {
    pub model: String,
    #[serde(rename = "slo-itl", default)]
    pub slo_itl: f64,
    #[serde(rename = "slo-ttft", default)]
    pub slo_ttft: f64,
    #[serde(rename = "slo-tps", default)]
    pub slo_tps: f64,
}

#[derive(Debug, Deserialize)]
pub struct ServerData {
    pub servers: Vec<WvaServer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WvaServer {
    pub name: String,
    pub class: String,
    pub model: String,
    #[serde(default)]
    pub keep_accelerator: bool,
    #[serde(default)]
    pub min_num_replicas: u32,
    #[serde(default)]
    pub max_batch_size: u32,
    #[serde(default)]
    pub current_alloc: Option<WvaAllocation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WvaAllocation {
    #[serde(default)]
    pub accelerator: String,
    #[serde(default)]
    pub num_replicas: u32,
    #[serde(default)]
    pub load: Option<WvaLoad>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WvaLoad {
    /// Requests per minute.
    #[serde(default)]
    pub arrival_rate: f64,
    #[serde(default)]
    pub avg_in_tokens: f64,
    #[serde(default)]
    pub avg_out_tokens: f64,
}

#[derive(Debug, Deserialize)]
pub struct OptimizerData {
    pub optimizer: WvaOptimizer,
}

#[derive(Debug, Deserialize)]
pub struct WvaOptimizer {
    #[serde(default)]
    pub unlimited: bool,
}

#[derive(Debug, Deserialize)]
pub struct CapacityData {
    pub count: Vec<WvaCount>,
}

#[derive(Debug, Deserialize)]
pub struct WvaCount {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u32,
}

/// Convert a WVA system into a scenario (validated afterwards like any other).
pub fn convert(doc: &WvaDocument) -> Result<Scenario, Invalid> {
    let sys = &doc.system;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });

    let unlimited = sys.optimizer_data.as_ref().is_some_and(|o| o.optimizer.unlimited);
    let counts: BTreeMap<&str, u32> =
        sys.capacity_data.iter().flat_map(|c| &c.count).map(|c| (c.kind.as_str(), c.count)).collect();

    // Accelerator names → types; inventory and price are per type (per GPU).
    let mut by_name: BTreeMap<&str, &WvaAccelerator> = BTreeMap::new();
    let mut types: BTreeMap<&str, AcceleratorSpec> = BTreeMap::new();
    for (i, a) in sys.accelerator_data.accelerators.iter().enumerate() {
        if a.multiplicity == 0 || !a.cost.is_finite() || a.cost < 0.0 {
            problem(
                format!("system.acceleratorData.accelerators[{i}]"),
                format!("multiplicity must be ≥ 1 and cost a finite number ≥ 0, got {} and {}", a.multiplicity, a.cost),
            );
            continue;
        }
        by_name.insert(a.name.as_str(), a);
        let per_gpu_usd = a.cost / 100.0 / f64::from(a.multiplicity);
        let entry = types.entry(a.kind.as_str()).or_insert_with(|| AcceleratorSpec {
            name: a.kind.clone(),
            device: Some(a.kind.clone()),
            gpus: if unlimited { UNLIMITED_GPUS } else { counts.get(a.kind.as_str()).copied().unwrap_or(0) },
            cost_usd_per_gpu_hour: per_gpu_usd,
        });
        if (entry.cost_usd_per_gpu_hour - per_gpu_usd).abs() > 1e-9 {
            problem(
                format!("system.acceleratorData.accelerators[{i}].cost"),
                format!(
                    "type {:?} already has a per-GPU cost of {} USD/h; accelerators of one type must agree",
                    a.kind, entry.cost_usd_per_gpu_hour
                ),
            );
        }
    }
    if unlimited {
        notes.push(format!("WVA unlimited mode: every accelerator type gets {UNLIMITED_GPUS} GPUs"));
    }

    // Class targets per WVA model.
    let classes_by_name: BTreeMap<&str, &WvaServiceClass> =
        sys.service_class_data.service_classes.iter().map(|c| (c.name.as_str(), c)).collect();

    let mut service_classes: BTreeMap<&str, ServiceClassSpec> = BTreeMap::new();
    let mut load = Vec::new();
    let mut variants = Vec::new();
    let mut profiles: BTreeMap<String, ProfileSpec> = BTreeMap::new();

    for (i, s) in sys.server_data.servers.iter().enumerate() {
        let path = format!("system.serverData.servers[{i}]");
        let Some(class) = classes_by_name.get(s.class.as_str()) else {
            problem(format!("{path}.class"), format!("no service class {:?}", s.class));
            continue;
        };
        let Some(t) = class.model_targets.iter().find(|t| t.model == s.model) else {
            problem(format!("{path}.model"), format!("class {:?} has no target for model {:?}", s.class, s.model));
            continue;
        };
        if t.slo_tps > 0.0 {
            notes.push(format!(
                "server {:?}: slo-tps is not supported and was ignored (Allot sizes to the arrival rate)",
                s.name
            ));
        }
        let target = |ms: f64| (ms > 0.0).then_some(TargetSpec { ms, statistic: Statistic::Mean, over: None });
        // WVA's TPOT is vLLM's per-token average.
        let itl_target = |ms: f64| {
            (ms > 0.0).then_some(TargetSpec { ms, statistic: Statistic::Mean, over: Some(ItlPopulation::Token) })
        };
        // WVA maps priorities outside [1, 100] to 100.
        let priority = u32::try_from(class.priority).ok().filter(|p| (1..=100).contains(p)).unwrap_or(100);
        service_classes
            .entry(class.name.as_str())
            .or_insert_with(|| ServiceClassSpec { name: class.name.clone(), priority, weight: None, targets: vec![] })
            .targets
            .push(ClassTargetSpec { model: s.name.clone(), ttft: target(t.slo_ttft), itl: itl_target(t.slo_itl) });

        let current = s.current_alloc.as_ref();
        if let Some(l) = current.and_then(|a| a.load.as_ref()) {
            load.push(LoadSpec {
                model: s.name.clone(),
                class: s.class.clone(),
                arrival_rate_rps: l.arrival_rate / 60.0,
                input_tokens: l.avg_in_tokens.max(1.0).into(),
                output_tokens: l.avg_out_tokens.max(1.0).into(),
                arrival_cv: None,
            });
        }
        let current_acc = current.map(|a| a.accelerator.as_str()).filter(|a| !a.is_empty());
        let candidates: Vec<&WvaModelPerf> = sys
            .model_data
            .models
            .iter()
            .filter(|p| p.name == s.model && (!s.keep_accelerator || current_acc.is_none_or(|c| c == p.acc)))
            .collect();
        if candidates.is_empty() {
            problem(path.clone(), format!("no performance data for model {:?} on an allowed accelerator", s.model));
            continue;
        }
        let out_tokens = current.and_then(|a| a.load.as_ref()).map_or(0.0, |l| l.avg_out_tokens);
        let min_on = current_acc.filter(|c| candidates.iter().any(|p| p.acc == *c)).unwrap_or(&candidates[0].acc);
        for perf in candidates {
            let Some(acc) = by_name.get(perf.acc.as_str()) else {
                problem(path.clone(), format!("model {:?} has data for unknown accelerator {:?}", s.model, perf.acc));
                continue;
            };
            let profile_name = format!("{}/{}", perf.name, perf.acc);
            profiles.entry(profile_name.clone()).or_insert_with(|| ProfileSpec {
                name: profile_name.clone(),
                params: LatencyParams {
                    alpha_ms: perf.decode_parms.alpha,
                    beta_ms: perf.decode_parms.beta,
                    gamma_ms: perf.prefill_parms.gamma,
                    delta_ms: perf.prefill_parms.delta,
                    ..LatencyParams::default()
                },
                max_batch_profiled: Some(perf.max_batch_size),
                engine: None,
                provenance: Some(Provenance {
                    source: "WVA optimizer JSON (modelData)".into(),
                    command: None,
                    data_selector: None,
                    itl_fit: None,
                    prefill_fit: None,
                    notes: vec![],
                }),
            });
            // WVA scales the profile's batch by reference tokens / output tokens when set.
            let max_batch = if s.max_batch_size > 0 {
                s.max_batch_size
            } else if perf.at_tokens > 0 && out_tokens >= 1.0 {
                ((f64::from(perf.max_batch_size) * f64::from(perf.at_tokens) / out_tokens).floor() as u32).max(1)
            } else {
                perf.max_batch_size
            };
            variants.push(VariantSpec {
                name: format!("{}@{}", s.name, perf.acc),
                model: s.name.clone(),
                accelerator: acc.kind.clone(),
                gpus_per_replica: perf.acc_count.max(1) * acc.multiplicity,
                role: Role::Both,
                max_batch,
                min_replicas: if perf.acc == min_on { s.min_num_replicas } else { 0 },
                max_replicas: None,
                current_replicas: if current_acc == Some(perf.acc.as_str()) {
                    current.map_or(0, |a| a.num_replicas)
                } else {
                    0
                },
                profile: Some(profile_name),
                engine: None,
                capacity_rps: BTreeMap::new(),
            });
        }
    }

    if !problems.is_empty() {
        return Err(Invalid { problems });
    }
    Ok(Scenario {
        name: Some("imported from WVA optimizer JSON".into()),
        accelerators: types.into_values().collect(),
        service_classes: service_classes.into_values().collect(),
        load,
        variants,
        profiles: profiles.into_values().collect(),
        optimizer: OptimizerSpec::default(),
        import_notes: notes,
    })
}
