//! Import of WVA / llm-inferno optimizer JSON (`{"system": {...}}`, reference/wva.md §1.5), read
//! and planned the way WVA reads and plans it, so its users bring their data unchanged:
//!
//! - Go's JSON reading: an absent or `null` field is its zero value, keys match regardless of
//!   case, unknown keys are ignored (here with a warning naming them);
//! - WVA's defaults: a server's empty class is `Free`, `accCount` ≤ 0 is 1, a priority outside
//!   1..=100 is 100, the batch is the server's `maxBatchSize` or else
//!   `max(maxBatchSize·atTokens/avgOutTokens, 1)`, a later entry of the same name replaces an
//!   earlier one;
//! - WVA's failure mode: what makes WVA allocate nothing to a server (no class, no target, no
//!   usable performance data, a negative load) skips that server with a warning naming the WVA
//!   field and the value written there; the other servers are planned. Only a document where no
//!   server can be planned is an error.
//!
//! Mapping: a WVA *server* (one deployment of a model in one class) becomes an Allot model of the
//! same name; each accelerator it may run on becomes a variant `server@acc`; `minNumReplicas`
//! becomes the model's `min_replicas`: at least that many replicas wherever they are placed.
//! Rates are converted from req/min to req/s, costs from cents per accelerator unit (of
//! `multiplicity` GPUs) to USD per GPU-hour.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::LoadError;
use super::format::*;
use super::profile::{ProfileSpec, Provenance};
use super::validate::{
    self, Invalid, MAX_BATCH, MAX_COST_USD_PER_GPU_HOUR, MAX_GPUS, MAX_GPUS_PER_REPLICA, MAX_PROFILE_MS, MAX_RATE_RPS,
    MAX_REPLICAS, MAX_TARGET_MS, MAX_TOKENS, Problem,
};
use crate::analyze::{ItlPopulation, LatencyParams, Role, Statistic};

/// Inventory of each accelerator type in WVA's "unlimited" mode, where capacity is not constrained.
const UNLIMITED_GPUS: u32 = 100_000;
/// WVA's `config.DefaultServiceClassName`: the class of a server that names none.
const DEFAULT_CLASS: &str = "Free";
/// WVA's `config.DefaultServiceClassPriority`, for priorities outside 1..=100.
const DEFAULT_PRIORITY: u32 = 100;

// The document as Go's encoding/json fills WVA's structs (pkg/config/types.go): every field
// optional, zero when absent. Integers are i64 so that out-of-range values reach the checks
// below (and their messages) instead of failing the whole document.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Document {
    system: System,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct System {
    accelerator_data: AcceleratorData,
    model_data: ModelData,
    service_class_data: ServiceClassData,
    server_data: ServerData,
    optimizer_data: Option<OptimizerData>,
    capacity_data: Option<CapacityData>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AcceleratorData {
    accelerators: Vec<Accelerator>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Accelerator {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    multiplicity: Option<i64>,
    /// Cents per hour per accelerator unit.
    cost: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ModelData {
    models: Vec<ModelPerf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ModelPerf {
    name: String,
    acc: String,
    acc_count: i64,
    max_batch_size: i64,
    at_tokens: i64,
    decode_parms: DecodeParms,
    prefill_parms: PrefillParms,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DecodeParms {
    alpha: f64,
    beta: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PrefillParms {
    gamma: f64,
    delta: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ServiceClassData {
    service_classes: Vec<ServiceClass>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ServiceClass {
    name: String,
    priority: i64,
    model_targets: Vec<ModelTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ModelTarget {
    model: String,
    #[serde(rename = "slo-itl")]
    slo_itl: f64,
    #[serde(rename = "slo-ttft")]
    slo_ttft: f64,
    #[serde(rename = "slo-tps")]
    slo_tps: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ServerData {
    servers: Vec<Server>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Server {
    name: String,
    class: String,
    model: String,
    keep_accelerator: bool,
    min_num_replicas: i64,
    max_batch_size: i64,
    current_alloc: Allocation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Allocation {
    accelerator: String,
    num_replicas: i64,
    load: Load,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Load {
    /// Requests per minute.
    arrival_rate: f64,
    avg_in_tokens: f64,
    avg_out_tokens: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OptimizerData {
    optimizer: Optimizer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Optimizer {
    unlimited: bool,
    delayed_best_effort: bool,
    saturation_policy: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CapacityData {
    count: Vec<Count>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Count {
    #[serde(rename = "type")]
    kind: String,
    count: i64,
}

/// The keys WVA's structs have, for matching keys as Go does and naming unknown ones.
#[derive(Clone, Copy)]
enum Shape {
    Leaf,
    Object(&'static [(&'static str, Shape)]),
    List(&'static Shape),
}

const LOAD: Shape =
    Shape::Object(&[("arrivalRate", Shape::Leaf), ("avgInTokens", Shape::Leaf), ("avgOutTokens", Shape::Leaf)]);
const ALLOCATION: Shape = Shape::Object(&[
    ("accelerator", Shape::Leaf),
    ("numReplicas", Shape::Leaf),
    ("maxBatch", Shape::Leaf),
    ("cost", Shape::Leaf),
    ("itlAverage", Shape::Leaf),
    ("ttftAverage", Shape::Leaf),
    ("load", LOAD),
]);
const SERVER: Shape = Shape::Object(&[
    ("name", Shape::Leaf),
    ("class", Shape::Leaf),
    ("model", Shape::Leaf),
    ("keepAccelerator", Shape::Leaf),
    ("minNumReplicas", Shape::Leaf),
    ("maxBatchSize", Shape::Leaf),
    ("currentAlloc", ALLOCATION),
    ("desiredAlloc", ALLOCATION),
]);
const POWER: Shape =
    Shape::Object(&[("idle", Shape::Leaf), ("full", Shape::Leaf), ("midPower", Shape::Leaf), ("midUtil", Shape::Leaf)]);
const ACCELERATOR: Shape = Shape::Object(&[
    ("name", Shape::Leaf),
    ("type", Shape::Leaf),
    ("multiplicity", Shape::Leaf),
    ("memSize", Shape::Leaf),
    ("memBW", Shape::Leaf),
    ("power", POWER),
    ("cost", Shape::Leaf),
]);
const MODEL_PERF: Shape = Shape::Object(&[
    ("name", Shape::Leaf),
    ("acc", Shape::Leaf),
    ("accCount", Shape::Leaf),
    ("maxBatchSize", Shape::Leaf),
    ("atTokens", Shape::Leaf),
    ("decodeParms", Shape::Object(&[("alpha", Shape::Leaf), ("beta", Shape::Leaf)])),
    ("prefillParms", Shape::Object(&[("gamma", Shape::Leaf), ("delta", Shape::Leaf)])),
]);
const MODEL_TARGET: Shape = Shape::Object(&[
    ("model", Shape::Leaf),
    ("slo-itl", Shape::Leaf),
    ("slo-ttft", Shape::Leaf),
    ("slo-tps", Shape::Leaf),
]);
const SERVICE_CLASS: Shape =
    Shape::Object(&[("name", Shape::Leaf), ("priority", Shape::Leaf), ("modelTargets", Shape::List(&MODEL_TARGET))]);
const COUNT: Shape = Shape::Object(&[("type", Shape::Leaf), ("count", Shape::Leaf)]);
const SYSTEM: Shape = Shape::Object(&[
    ("acceleratorData", Shape::Object(&[("accelerators", Shape::List(&ACCELERATOR))])),
    ("modelData", Shape::Object(&[("models", Shape::List(&MODEL_PERF))])),
    ("serviceClassData", Shape::Object(&[("serviceClasses", Shape::List(&SERVICE_CLASS))])),
    ("serverData", Shape::Object(&[("servers", Shape::List(&SERVER))])),
    (
        "optimizerData",
        Shape::Object(&[(
            "optimizer",
            Shape::Object(&[
                ("unlimited", Shape::Leaf),
                ("delayedBestEffort", Shape::Leaf),
                ("saturationPolicy", Shape::Leaf),
            ]),
        )]),
    ),
    ("capacityData", Shape::Object(&[("count", Shape::List(&COUNT))])),
]);
const DOCUMENT: Shape = Shape::Object(&[("system", SYSTEM)]);

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Read a value as Go's encoding/json reads it into WVA's structs: `null` leaves the zero value,
/// a key matches its field regardless of case (exact spelling first), and a key no field has is
/// dropped, each with a note naming it.
fn normalize(value: &mut Value, shape: Shape, path: &str, notes: &mut Vec<String>) {
    match (shape, value) {
        (Shape::Object(fields), Value::Object(map)) => {
            for (key, mut v) in std::mem::take(map) {
                let here = join(path, &key);
                let field = fields
                    .iter()
                    .find(|(k, _)| *k == key)
                    .or_else(|| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)));
                let Some(&(name, child)) = field else {
                    notes.push(format!("{here}: not a field WVA reads; ignored"));
                    continue;
                };
                if v.is_null() {
                    continue;
                }
                if name != key {
                    notes.push(format!("{here}: read as {:?} (WVA matches keys regardless of case)", join(path, name)));
                }
                normalize(&mut v, child, &join(path, name), notes);
                if map.insert(name.to_string(), v).is_some() {
                    notes.push(format!("{here}: {name:?} is given twice (in different case); the last one counts"));
                }
            }
        }
        (Shape::List(item), Value::Array(items)) => {
            for (i, v) in items.iter_mut().enumerate() {
                if v.is_null() && matches!(item, Shape::Object(_)) {
                    *v = Value::Object(serde_json::Map::new());
                }
                normalize(v, *item, &format!("{path}[{i}]"), notes);
            }
        }
        // Leaves, and values of the wrong type (the typed read reports those at their path).
        _ => {}
    }
}

/// Read and convert a WVA document (a parsed JSON or YAML value with a top-level `system`).
pub(super) fn import(mut value: Value) -> Result<Scenario, LoadError> {
    let mut notes = Vec::new();
    normalize(&mut value, DOCUMENT, "", &mut notes);
    let doc: Document = super::text::from_json_value(value)?;
    let converted = Converter::new(&doc.system, notes).convert()?;
    Ok(converted.settle()?)
}

/// An accelerator name that variants may use.
struct Usable {
    /// Index into the Allot accelerators (pools).
    pool: usize,
    multiplicity: u32,
}

/// One Allot accelerator: the GPUs of one WVA type at one price.
struct Pool {
    kind: String,
    name: String,
    per_gpu_usd: f64,
    /// WVA path of the accelerator that defined it.
    path: String,
}

/// A usable `modelData` entry.
struct Perf<'a> {
    index: usize,
    entry: &'a ModelPerf,
    gpus_per_replica: u32,
    profile: String,
}

struct Converter<'a> {
    sys: &'a System,
    notes: Vec<String>,
    /// Why servers were skipped (these become the errors when no server is left).
    skipped: Vec<Problem>,
    unlimited: bool,
}

/// A converted scenario and, per Allot path prefix, the WVA path it came from.
struct Converted {
    scenario: Scenario,
    origins: Vec<(String, String)>,
    /// Per model (server name): the WVA path of `minNumReplicas`.
    min_paths: BTreeMap<String, String>,
}

/// Later entries of one name replace earlier ones, as in WVA's maps; the survivors in order.
fn last_wins<'a, T>(
    items: &'a [T],
    key: impl Fn(&T) -> String,
    list_path: &str,
    what: &str,
    notes: &mut Vec<String>,
) -> Vec<(usize, &'a T)> {
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(earlier) = last.insert(key(item), i) {
            notes.push(format!(
                "{list_path}[{i}]: {what} {:?} again; it replaces {list_path}[{earlier}], as in WVA",
                key(item)
            ));
        }
    }
    let keep: BTreeSet<usize> = last.into_values().collect();
    items.iter().enumerate().filter(|(i, _)| keep.contains(i)).collect()
}

impl<'a> Converter<'a> {
    fn new(sys: &'a System, notes: Vec<String>) -> Self {
        let unlimited = sys.optimizer_data.as_ref().is_some_and(|o| o.optimizer.unlimited);
        Self { sys, notes, skipped: Vec::new(), unlimited }
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// Skip a server: a note now, and an error if nothing is left to plan.
    fn skip(&mut self, path: String, message: String) {
        self.notes.push(format!("{path}: {message}; this server is not planned (WVA allocates nothing to it)"));
        self.skipped.push(Problem { path, message });
    }

    fn optimizer_notes(&mut self) {
        let Some(o) = self.sys.optimizer_data.as_ref().map(|o| &o.optimizer) else { return };
        let path = "system.optimizerData.optimizer";
        let short = if self.unlimited { " (in unlimited mode WVA does not use it either)" } else { "" };
        if !o.saturation_policy.is_empty() && o.saturation_policy != "None" {
            self.note(format!(
                "{path}.saturationPolicy: {:?} is ignored{short}: when GPUs are short Allot shares them by priority tier, max-min fair, instead of WVA's best-effort policies",
                o.saturation_policy
            ));
        }
        if o.delayed_best_effort {
            self.note(format!(
                "{path}.delayedBestEffort: true is ignored{short}: Allot serves higher priorities first, then shares what is left"
            ));
        }
    }

    /// GPUs per WVA accelerator type in limited mode.
    fn capacity(&mut self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        if self.unlimited {
            return counts;
        }
        let Some(capacity) = &self.sys.capacity_data else {
            self.note(
                "system.capacityData: absent in limited mode (optimizerData.optimizer.unlimited is not true): every accelerator type has 0 GPUs, so nothing can be placed, as in WVA".into(),
            );
            return counts;
        };
        let list = "system.capacityData.count";
        for (i, c) in last_wins(&capacity.count, |c| c.kind.clone(), list, "type", &mut self.notes) {
            let path = format!("{list}[{i}].count");
            let gpus = if c.count < 0 {
                self.note(format!("{path}: {} is negative; 0 GPUs of {:?}", c.count, c.kind));
                0
            } else if c.count > i64::from(MAX_GPUS) {
                self.note(format!("{path}: {} is above {MAX_GPUS}; {MAX_GPUS} GPUs of {:?}", c.count, c.kind));
                MAX_GPUS
            } else {
                c.count as u32
            };
            counts.insert(c.kind.clone(), gpus);
        }
        counts
    }

    /// Pools (one per type and price) and the accelerator names variants may use.
    fn accelerators(&mut self, counts: &BTreeMap<String, u32>) -> (Vec<Pool>, BTreeMap<&'a str, Usable>) {
        let list = "system.acceleratorData.accelerators";
        let sys = self.sys;
        let mut pools: Vec<Pool> = Vec::new();
        let mut usable = BTreeMap::new();
        for (i, a) in last_wins(&sys.accelerator_data.accelerators, |a| a.name.clone(), list, "name", &mut self.notes) {
            let path = format!("{list}[{i}]");
            if a.name.is_empty() || a.kind.is_empty() {
                self.note(format!("{path}: needs a name and a type, got {:?} and {:?}; left out", a.name, a.kind));
                continue;
            }
            let multiplicity = match a.multiplicity {
                None => 1,
                Some(m) if m <= 0 => {
                    self.note(format!(
                        "{path}.multiplicity: {m} would count no GPUs (WVA's controller uses 1); Allot uses 1"
                    ));
                    1
                }
                Some(m) if m > i64::from(MAX_GPUS_PER_REPLICA) => {
                    self.note(format!("{path}.multiplicity: {m} is above {MAX_GPUS_PER_REPLICA} GPUs; left out"));
                    continue;
                }
                Some(m) => m as u32,
            };
            let per_gpu_usd = a.cost / 100.0 / f64::from(multiplicity);
            if !(a.cost.is_finite() && a.cost >= 0.0 && per_gpu_usd <= MAX_COST_USD_PER_GPU_HOUR) {
                self.note(format!(
                    "{path}.cost: must be ≥ 0 cents/h and at most {MAX_COST_USD_PER_GPU_HOUR} USD per GPU-hour, got {} (per unit of {multiplicity} GPU); left out",
                    a.cost
                ));
                continue;
            }
            let same_price =
                |p: &Pool| p.kind == a.kind && (p.per_gpu_usd - per_gpu_usd).abs() <= 1e-9 * per_gpu_usd.max(1.0);
            let pool = match pools.iter().position(same_price) {
                Some(p) => p,
                None => match pools.iter().find(|p| p.kind == a.kind) {
                    Some(other) if !self.unlimited => {
                        let text = format!(
                            "{path}.cost: type {:?} is already priced at {} USD per GPU-hour by {}; its GPUs are one capacity but Allot prices a type once, so in limited mode this accelerator is left out (in unlimited mode each price is its own pool)",
                            a.kind, other.per_gpu_usd, other.path
                        );
                        self.note(text);
                        continue;
                    }
                    Some(_) => {
                        pools.push(Pool {
                            kind: a.kind.clone(),
                            name: format!("{}@{}", a.kind, a.name),
                            per_gpu_usd,
                            path: path.clone(),
                        });
                        pools.len() - 1
                    }
                    None => {
                        pools.push(Pool {
                            kind: a.kind.clone(),
                            name: a.kind.clone(),
                            per_gpu_usd,
                            path: path.clone(),
                        });
                        pools.len() - 1
                    }
                },
            };
            usable.insert(a.name.as_str(), Usable { pool, multiplicity });
        }
        if !self.unlimited {
            let kinds: BTreeSet<&str> = pools.iter().map(|p| p.kind.as_str()).collect();
            for kind in counts.keys().filter(|k| !kinds.contains(k.as_str())) {
                self.note(format!("system.capacityData.count: type {kind:?} has no accelerator; ignored"));
            }
        }
        (pools, usable)
    }

    /// Usable performance entries by (model, accelerator name).
    fn performance(&mut self, usable: &BTreeMap<&str, Usable>) -> BTreeMap<(&'a str, &'a str), Perf<'a>> {
        let list = "system.modelData.models";
        let sys = self.sys;
        let mut out = BTreeMap::new();
        let entries =
            last_wins(&sys.model_data.models, |p| format!("{}/{}", p.name, p.acc), list, "model/acc", &mut self.notes);
        for (i, p) in entries {
            let path = format!("{list}[{i}]");
            let Some(acc) = usable.get(p.acc.as_str()) else {
                let why = if sys.accelerator_data.accelerators.iter().any(|a| a.name == p.acc) {
                    "was left out above"
                } else {
                    "is not defined in acceleratorData"
                };
                self.note(format!("{path}.acc: accelerator {:?} {why}; this entry is not used", p.acc));
                continue;
            };
            // WVA reads accCount ≤ 0 as 1; the product is checked, not wrapped.
            let acc_count = p.acc_count.max(1);
            let gpus = i128::from(acc_count) * i128::from(acc.multiplicity);
            if gpus > i128::from(MAX_GPUS_PER_REPLICA) {
                self.note(format!(
                    "{path}.accCount: {acc_count} × multiplicity {} = {gpus} GPUs per replica, more than {MAX_GPUS_PER_REPLICA}; this entry is not used",
                    acc.multiplicity
                ));
                continue;
            }
            let params = [
                ("decodeParms.alpha", p.decode_parms.alpha),
                ("decodeParms.beta", p.decode_parms.beta),
                ("prefillParms.gamma", p.prefill_parms.gamma),
                ("prefillParms.delta", p.prefill_parms.delta),
            ];
            if let Some((field, v)) =
                params.iter().find(|(_, v)| !(v.is_finite() && (0.0..=MAX_PROFILE_MS).contains(v)))
            {
                self.note(format!(
                    "{path}.{field}: must be a number of ms in [0, {MAX_PROFILE_MS}], got {v}; this entry is not used"
                ));
                continue;
            }
            if p.decode_parms.alpha <= 0.0 || p.prefill_parms.gamma + p.prefill_parms.delta <= 0.0 {
                self.note(format!(
                    "{path}: alpha must be > 0 and gamma + delta > 0 (a decode step and a prefill take time), got alpha {} gamma {} delta {}; this entry is not used",
                    p.decode_parms.alpha, p.prefill_parms.gamma, p.prefill_parms.delta
                ));
                continue;
            }
            if p.max_batch_size <= 0 || p.at_tokens <= 0 {
                self.note(format!(
                    "{path}: maxBatchSize {} and atTokens {}: unless the server sets maxBatchSize, WVA's batch max(maxBatchSize·atTokens/avgOutTokens, 1) is 1 request, and so is Allot's",
                    p.max_batch_size, p.at_tokens
                ));
            }
            out.insert(
                (p.name.as_str(), p.acc.as_str()),
                Perf { index: i, entry: p, gpus_per_replica: gpus as u32, profile: format!("{}/{}", p.name, p.acc) },
            );
        }
        out
    }

    fn convert(mut self) -> Result<Converted, Invalid> {
        self.optimizer_notes();
        let counts = self.capacity();
        let (pools, usable) = self.accelerators(&counts);
        let perf = self.performance(&usable);
        let sys = self.sys;

        let classes_list = "system.serviceClassData.serviceClasses";
        let classes: BTreeMap<&str, (usize, &ServiceClass)> = last_wins(
            &sys.service_class_data.service_classes,
            |c| c.name.clone(),
            classes_list,
            "name",
            &mut self.notes,
        )
        .into_iter()
        .map(|(i, c)| (c.name.as_str(), (i, c)))
        .collect();

        let mut origins: Vec<(String, String)> = Vec::new();
        let mut min_paths = BTreeMap::new();
        let mut service_classes: BTreeMap<&str, (usize, ServiceClassSpec)> = BTreeMap::new();
        let mut load = Vec::new();
        let mut variants = Vec::new();
        let mut profiles: BTreeMap<String, ProfileSpec> = BTreeMap::new();
        let mut min_replicas = BTreeMap::new();

        let servers_list = "system.serverData.servers";
        let servers = last_wins(&sys.server_data.servers, |s| s.name.clone(), servers_list, "name", &mut self.notes);
        'servers: for (i, s) in servers {
            let path = format!("{servers_list}[{i}]");
            if s.name.is_empty() {
                self.skip(format!("{path}.name"), "is empty".into());
                continue;
            }
            // The class and its target for the model.
            let class_name = if s.class.is_empty() { DEFAULT_CLASS } else { s.class.as_str() };
            let Some(&(c, class)) = classes.get(class_name) else {
                let given = if s.class.is_empty() {
                    format!("empty, so WVA's default {DEFAULT_CLASS:?},")
                } else {
                    format!("{:?}", s.class)
                };
                self.skip(format!("{path}.class"), format!("{given} is not a service class"));
                continue;
            };
            let targets: Vec<(usize, &ModelTarget)> =
                class.model_targets.iter().enumerate().filter(|(_, t)| t.model == s.model).collect();
            let Some(&(t, target)) = targets.last() else {
                self.skip(
                    format!("{path}.model"),
                    format!("class {class_name:?} has no target for model {:?}", s.model),
                );
                continue;
            };
            let target_path = format!("{classes_list}[{c}].modelTargets[{t}]");
            if targets.len() > 1 {
                self.note(format!(
                    "{target_path}: model {:?} has {} targets in class {class_name:?}; the last counts, as in WVA",
                    s.model,
                    targets.len()
                ));
            }
            for (field, ms) in [("slo-itl", target.slo_itl), ("slo-ttft", target.slo_ttft), ("slo-tps", target.slo_tps)]
            {
                if !(ms.is_finite() && (0.0..=MAX_TARGET_MS).contains(&ms)) {
                    self.skip(
                        format!("{target_path}.{field}"),
                        format!("must be ≥ 0 and at most {MAX_TARGET_MS}, got {ms}"),
                    );
                    continue 'servers;
                }
            }
            if target.slo_tps > 0.0 {
                self.note(format!(
                    "{target_path}.slo-tps: {} is ignored for server {:?} (WVA sizes to slo-tps/avgOutTokens instead of the arrival rate; Allot sizes to the arrival rate)",
                    target.slo_tps, s.name
                ));
            }
            // WVA's targets are means; its TPOT is vLLM's per-token average.
            let mean = |ms: f64, over: Option<ItlPopulation>| {
                (ms > 0.0).then_some(TargetSpec { ms, statistic: Statistic::Mean, over })
            };
            let (mut ttft, mut itl) = (mean(target.slo_ttft, None), mean(target.slo_itl, Some(ItlPopulation::Token)));
            if ttft.is_none() && itl.is_none() {
                self.note(format!(
                    "{target_path}: no slo-itl or slo-ttft; server {:?} is sized by throughput alone (up to optimizer.max_utilization of a replica's saturation rate), as WVA sizes to its maximum rate",
                    s.name
                ));
                itl = Some(TargetSpec { ms: MAX_TARGET_MS, statistic: Statistic::Mean, over: None });
                ttft = None;
            }

            // Load, checked in WVA's units.
            let l = &s.current_alloc.load;
            let load_path = format!("{path}.currentAlloc.load");
            for (field, v, unit) in [
                ("arrivalRate", l.arrival_rate, "req/min"),
                ("avgInTokens", l.avg_in_tokens, "tokens"),
                ("avgOutTokens", l.avg_out_tokens, "tokens"),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    self.skip(format!("{load_path}.{field}"), format!("must be ≥ 0 {unit}, got {v}"));
                    continue 'servers;
                }
            }
            if l.arrival_rate / 60.0 > MAX_RATE_RPS {
                self.skip(
                    format!("{load_path}.arrivalRate"),
                    format!("{} req/min is above {} req/min", l.arrival_rate, MAX_RATE_RPS * 60.0),
                );
                continue;
            }
            for (field, v) in [("avgInTokens", l.avg_in_tokens), ("avgOutTokens", l.avg_out_tokens)] {
                if v > MAX_TOKENS {
                    self.skip(format!("{load_path}.{field}"), format!("{v} tokens is above {MAX_TOKENS}"));
                    continue 'servers;
                }
            }
            let mut has_load = l.arrival_rate > 0.0;
            if has_load && l.avg_out_tokens < 1.0 {
                self.note(format!(
                    "{load_path}.avgOutTokens: {} with arrivalRate {}: WVA treats the server as idle (no load), and so does Allot",
                    l.avg_out_tokens, l.arrival_rate
                ));
                has_load = false;
            }
            if has_load && l.avg_in_tokens < 1.0 {
                self.note(format!(
                    "{load_path}.avgInTokens: {}; Allot's latency model takes prompts of at least 1 token",
                    l.avg_in_tokens
                ));
            }

            // Replica bounds and the current allocation.
            let min = if s.min_num_replicas < 0 {
                self.note(format!("{path}.minNumReplicas: {} is negative; 0", s.min_num_replicas));
                0
            } else if s.min_num_replicas > i64::from(MAX_REPLICAS) {
                self.skip(format!("{path}.minNumReplicas"), format!("{} is above {MAX_REPLICAS}", s.min_num_replicas));
                continue;
            } else {
                s.min_num_replicas as u32
            };
            if s.max_batch_size > i64::from(MAX_BATCH) {
                self.skip(format!("{path}.maxBatchSize"), format!("{} is above {MAX_BATCH}", s.max_batch_size));
                continue;
            }
            let current = &s.current_alloc;
            let current_replicas = if current.num_replicas < 0 {
                self.note(format!("{path}.currentAlloc.numReplicas: {} is negative; 0", current.num_replicas));
                0
            } else if current.num_replicas > i64::from(MAX_REPLICAS) {
                self.skip(
                    format!("{path}.currentAlloc.numReplicas"),
                    format!("{} is above {MAX_REPLICAS}", current.num_replicas),
                );
                continue;
            } else {
                current.num_replicas as u32
            };

            // Candidate accelerators: the current one with keepAccelerator, else every one.
            let current_acc = current.accelerator.as_str();
            let candidates: Vec<&Perf> = if s.keep_accelerator && !current_acc.is_empty() {
                match perf.get(&(s.model.as_str(), current_acc)) {
                    Some(p) => vec![p],
                    None => {
                        self.skip(
                            format!("{path}.currentAlloc.accelerator"),
                            format!("keepAccelerator pins {current_acc:?}, but model {:?} has no usable modelData entry there", s.model),
                        );
                        continue;
                    }
                }
            } else {
                perf.iter().filter(|((m, _), _)| *m == s.model).map(|(_, p)| p).collect()
            };
            if candidates.is_empty() {
                self.skip(format!("{path}.model"), format!("no usable modelData entry for model {:?}", s.model));
                continue;
            }
            if current_replicas > 0 && !current_acc.is_empty() && !candidates.iter().any(|p| p.entry.acc == current_acc)
            {
                self.note(format!(
                    "{path}.currentAlloc: {current_replicas} replicas on {current_acc:?}, where the server has no variant; not counted as running"
                ));
            }

            // Planned: class target, load, variants, profiles, minimum.
            let (_, spec) = service_classes.entry(class.name.as_str()).or_insert_with(|| {
                let priority =
                    u32::try_from(class.priority).ok().filter(|p| (1..=100).contains(p)).unwrap_or(DEFAULT_PRIORITY);
                (c, ServiceClassSpec { name: class.name.clone(), priority, weight: None, targets: vec![] })
            });
            spec.targets.push(ClassTargetSpec { model: s.name.clone(), ttft, itl });
            if has_load {
                origins.push((format!("load[{}]", load.len()), load_path.clone()));
                load.push(LoadSpec {
                    model: s.name.clone(),
                    class: class.name.clone(),
                    arrival_rate_rps: l.arrival_rate / 60.0,
                    // WVA's model takes every request at the mean sizes: planned the same way.
                    input_tokens: constant_tokens(l.avg_in_tokens.max(1.0)),
                    output_tokens: constant_tokens(l.avg_out_tokens),
                    arrival_cv: None,
                });
            }
            if min > 0 {
                min_replicas.insert(s.name.clone(), min);
            }
            min_paths.insert(s.name.clone(), format!("{path}.minNumReplicas"));
            for p in candidates {
                let pool = &pools[usable[p.entry.acc.as_str()].pool];
                let max_batch = self.batch(s, &path, p, l.avg_out_tokens);
                origins
                    .push((format!("variants[{}]", variants.len()), format!("system.modelData.models[{}]", p.index)));
                variants.push(VariantSpec {
                    name: format!("{}@{}", s.name, p.entry.acc),
                    model: s.name.clone(),
                    accelerator: pool.name.clone(),
                    gpus_per_replica: p.gpus_per_replica,
                    role: Role::Both,
                    max_batch,
                    min_replicas: 0,
                    max_replicas: None,
                    current_replicas: if p.entry.acc == current_acc { current_replicas } else { 0 },
                    profile: Some(p.profile.clone()),
                    capacity_rps: BTreeMap::new(),
                    engine: None,
                });
                profiles.entry(p.profile.clone()).or_insert_with(|| profile(p));
            }
        }

        if variants.is_empty() {
            let mut problems = std::mem::take(&mut self.skipped);
            problems
                .push(Problem { path: "system.serverData.servers".into(), message: "no server can be planned".into() });
            return Err(Invalid::capped(problems, 0));
        }
        if self.unlimited {
            self.note(format!("WVA unlimited mode: every accelerator type gets {UNLIMITED_GPUS} GPUs"));
        }
        for (p, pool) in pools.iter().enumerate() {
            origins.push((format!("accelerators[{p}]"), pool.path.clone()));
        }
        for (i, (_, (c, _))) in service_classes.iter().enumerate() {
            origins.push((format!("service_classes[{i}]"), format!("{classes_list}[{c}]")));
        }
        let scenario = Scenario {
            name: Some("imported from WVA optimizer JSON".into()),
            accelerators: pools
                .iter()
                .map(|p| AcceleratorSpec {
                    name: p.name.clone(),
                    device: Some(p.kind.clone()),
                    gpus: if self.unlimited { UNLIMITED_GPUS } else { counts.get(&p.kind).copied().unwrap_or(0) },
                    cost_usd_per_gpu_hour: p.per_gpu_usd,
                })
                .collect(),
            service_classes: service_classes.into_values().map(|(_, spec)| spec).collect(),
            load,
            variants,
            profiles: profiles.into_values().collect(),
            min_replicas,
            optimizer: OptimizerSpec::default(),
            import_notes: self.notes,
        };
        Ok(Converted { scenario, origins, min_paths })
    }

    /// WVA's batch (pkg/core/allocation.go): the server's `maxBatchSize`, else the profile's
    /// scaled by reference to output tokens, at least 1; capped at Allot's limit.
    fn batch(&mut self, s: &Server, path: &str, p: &Perf, avg_out_tokens: f64) -> u32 {
        let n = if s.max_batch_size > 0 {
            i128::from(s.max_batch_size)
        } else if avg_out_tokens >= 1.0 {
            let scaled = i128::from(p.entry.max_batch_size) * i128::from(p.entry.at_tokens);
            // Integer division, as in Go (avgOutTokens is an int there).
            (scaled / avg_out_tokens.floor() as i128).max(1)
        } else {
            // Idle: WVA's zero-load allocation uses the profile's batch; it only sizes the minimum.
            i128::from(p.entry.max_batch_size).max(1)
        };
        if n > i128::from(MAX_BATCH) {
            self.note(format!("{path}: WVA's batch for {:?} is {n}; Allot caps it at {MAX_BATCH}", p.entry.acc));
            return MAX_BATCH;
        }
        n as u32
    }
}

/// Every request of `tokens` tokens (WVA's queueing model knows only means).
fn constant_tokens(tokens: f64) -> TokenCountSpec {
    TokenCountSpec::Distribution(TokenDistributionSpec {
        mean: Some(tokens),
        shape: Some(ShapeSpec::Constant),
        ..TokenDistributionSpec::default()
    })
}

fn profile(p: &Perf) -> ProfileSpec {
    ProfileSpec {
        name: p.profile.clone(),
        params: LatencyParams {
            alpha_ms: p.entry.decode_parms.alpha,
            beta_ms: p.entry.decode_parms.beta,
            gamma_ms: p.entry.prefill_parms.gamma,
            delta_ms: p.entry.prefill_parms.delta,
            ..LatencyParams::default()
        },
        max_batch_profiled: u32::try_from(p.entry.max_batch_size).ok().filter(|&b| b > 0),
        engine: None,
        provenance: Some(Provenance {
            source: format!("WVA optimizer JSON (system.modelData.models[{}])", p.index),
            command: None,
            data_selector: None,
            itl_fit: None,
            prefill_fit: None,
            notes: vec![],
        }),
    }
}

impl Converted {
    /// Validate the converted scenario like any other. A model minimum that cannot fit is what
    /// WVA would leave unallocated: it is dropped with a note. Anything else (not expected
    /// after the checks above) is reported at the WVA object it came from.
    fn settle(mut self) -> Result<Scenario, Invalid> {
        let Err(invalid) = validate::validate(&self.scenario) else { return Ok(self.scenario) };
        let (minimums, other): (Vec<Problem>, Vec<Problem>) =
            invalid.problems.into_iter().partition(|p| p.path.starts_with("min_replicas."));
        if !other.is_empty() {
            let problems = other.into_iter().map(|p| self.to_wva(p)).collect();
            return Err(Invalid::capped(problems, 0));
        }
        for p in minimums {
            let model = p.path.trim_start_matches("min_replicas.").to_string();
            self.scenario.min_replicas.remove(&model);
            let at = self.min_paths.get(&model).cloned().unwrap_or(p.path);
            self.scenario.import_notes.push(format!("{at}: {}; the minimum is dropped", p.message));
        }
        validate::validate(&self.scenario)
            .map_err(|e| Invalid::capped(e.problems.into_iter().map(|p| self.to_wva(p)).collect(), 0))?;
        Ok(self.scenario)
    }

    fn to_wva(&self, p: Problem) -> Problem {
        let origin = self
            .origins
            .iter()
            .filter(|(prefix, _)| p.path == *prefix || p.path.starts_with(&format!("{prefix}.")))
            .max_by_key(|(prefix, _)| prefix.len());
        match origin {
            Some((prefix, wva)) => {
                let field = p.path[prefix.len()..].trim_start_matches('.');
                let what = if field.is_empty() { String::new() } else { format!("{field} (after conversion): ") };
                Problem { path: wva.clone(), message: format!("{what}{}", p.message) }
            }
            None => Problem { path: format!("(converted) {}", p.path), message: p.message },
        }
    }
}
