//! Deterministic synthetic fleets of any size, for benchmarks and scale tests.
//!
//! Latency parameters are the bundled Splitwise fits' ranges scaled per accelerator type (a
//! faster type has smaller α, δ); request sizes are the Azure 2023 trace means. Inventory is
//! set from what the cheapest plan uses with unlimited GPUs: `headroom` 1.5 leaves room, 0.6
//! forces scarcity. (Test and benchmark support: it plans with the core to size the fleet.)

use std::collections::BTreeMap;

use crate::analyze::{LatencyParams, Role, Statistic};
use crate::scenario::format::*;
use crate::scenario::profile::ProfileSpec;

/// Shape of a generated fleet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FleetSpec {
    pub models: usize,
    pub variants: usize,
    pub accelerator_types: usize,
    /// Inventory over what the cheapest plan uses with unlimited GPUs.
    pub headroom: f64,
    pub seed: u64,
}

impl FleetSpec {
    pub const SMALL: FleetSpec = FleetSpec { models: 20, variants: 80, accelerator_types: 8, headroom: 1.5, seed: 1 };
    pub const MEDIUM: FleetSpec =
        FleetSpec { models: 100, variants: 500, accelerator_types: 10, headroom: 1.5, seed: 2 };
    pub const LARGE: FleetSpec =
        FleetSpec { models: 250, variants: 2500, accelerator_types: 20, headroom: 1.5, seed: 3 };

    /// The same fleet with too few GPUs, so the fair-share phases run.
    pub fn scarce(self) -> FleetSpec {
        FleetSpec { headroom: 0.6, ..self }
    }
}

/// splitmix64: a tiny deterministic generator, so fleets are identical on every machine.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// Generate a fleet scenario.
pub fn fleet(spec: FleetSpec) -> Scenario {
    let mut rng = Rng(spec.seed);
    // Accelerator types: speed factor s (1 = an H100), price roughly following speed.
    let types: Vec<(String, f64, f64)> = (0..spec.accelerator_types)
        .map(|a| {
            let speed = rng.range(0.35, 1.2);
            let cost = 4.25 * speed * rng.range(0.8, 1.25);
            (format!("gpu-{a:02}"), speed, cost)
        })
        .collect();
    let classes = [("premium", 1u32, 3000.0, Statistic::P95, 60.0), ("standard", 2, 8000.0, Statistic::P90, 100.0)];
    let sizes = [(1155.0, 211.0), (2048.0, 28.0)];

    let mut load = Vec::new();
    let mut targets: BTreeMap<&str, Vec<ClassTargetSpec>> = BTreeMap::new();
    let mut variants = Vec::new();
    let mut profiles = Vec::new();
    let per_model = spec.variants / spec.models.max(1);
    for m in 0..spec.models {
        let model = format!("model-{m:03}");
        let (input, output) = rng.pick(&sizes);
        let n_classes = if rng.unit() < 0.5 { 1 } else { 2 };
        for &(class, _, ttft_ms, statistic, itl_ms) in classes.iter().take(n_classes) {
            let rps = (rng.range(0.5f64.ln(), 12.0f64.ln())).exp();
            load.push(LoadSpec {
                model: model.clone(),
                class: class.into(),
                arrival_rate_rps: rps,
                input_tokens: input.into(),
                output_tokens: output.into(),
                arrival_cv: None,
            });
            targets.entry(class).or_default().push(ClassTargetSpec {
                model: model.clone(),
                ttft: Some(TargetSpec { ms: ttft_ms, statistic, over: None }),
                itl: Some(TargetSpec { ms: itl_ms, statistic: Statistic::Mean, over: None }),
            });
        }
        let count = if m < spec.variants % spec.models.max(1) { per_model + 1 } else { per_model };
        for v in 0..count {
            let a = (rng.next_u64() % types.len() as u64) as usize;
            let (ref type_name, speed, _) = types[a];
            let gpus = rng.pick(&[1u32, 2, 4, 8]);
            // Bigger tensor-parallel groups decode faster, with diminishing returns (papers.md §4).
            let tp_speed = speed * f64::from(gpus).powf(0.3);
            let params = LatencyParams {
                alpha_ms: rng.range(25.0, 45.0) / tp_speed,
                beta_ms: rng.range(0.2, 0.6) / tp_speed,
                gamma_ms: rng.range(5.0, 40.0),
                delta_ms: rng.range(0.02, 0.08) / tp_speed,
                ..LatencyParams::default()
            };
            let name = format!("{model}-v{v}");
            profiles.push(ProfileSpec {
                name: name.clone(),
                params,
                max_batch_profiled: None,
                engine: None,
                provenance: None,
            });
            variants.push(VariantSpec {
                name,
                model: model.clone(),
                accelerator: type_name.clone(),
                gpus_per_replica: gpus,
                role: Role::Both,
                max_batch: rng.pick(&[32, 64, 128]),
                min_replicas: 0,
                max_replicas: None,
                current_replicas: if rng.unit() < 0.3 { 1 } else { 0 },
                profile: Some(format!("{model}-v{v}")),
                engine: None,
                capacity_rps: BTreeMap::new(),
            });
        }
    }
    let accelerators = types
        .iter()
        .map(|(name, _, cost)| AcceleratorSpec {
            name: name.clone(),
            device: None,
            gpus: 0,
            cost_usd_per_gpu_hour: (cost * 100.0).round() / 100.0,
        })
        .collect();
    // Current replicas must fit: drop them on types where they would not.
    let mut scenario = Scenario {
        name: Some(format!(
            "synthetic fleet: {} models, {} variants, {} types, headroom {}",
            spec.models, spec.variants, spec.accelerator_types, spec.headroom
        )),
        accelerators,
        service_classes: classes
            .iter()
            .filter_map(|&(name, priority, ..)| {
                targets.remove(name).map(|t| ServiceClassSpec { name: name.into(), priority, weight: None, targets: t })
            })
            .collect(),
        load,
        variants,
        profiles,
        optimizer: OptimizerSpec::default(),
        min_replicas: Default::default(),
        import_notes: vec![],
    };
    scenario.optimizer.mip_gap = 0.01;
    size_inventory(&mut scenario, spec.headroom);
    scenario
}

/// Set each type's GPUs to `headroom` × what the cheapest plan uses there when GPUs are
/// unlimited (the per-model optima), so 1.5 leaves room and 0.6 forces scarcity.
fn size_inventory(scenario: &mut Scenario, headroom: f64) {
    for a in &mut scenario.accelerators {
        a.gpus = 1_000_000;
    }
    let Ok(snapshot) = crate::scenario::validate(scenario) else { return };
    let plan = crate::optimize::plan(&snapshot);
    for acc in &mut scenario.accelerators {
        let used = plan.accelerators.iter().find(|a| a.name == acc.name).map_or(0, |a| a.used_gpus);
        acc.gpus = (f64::from(used) * headroom).ceil() as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_fleets_are_valid_and_deterministic() {
        for spec in [FleetSpec::SMALL, FleetSpec::SMALL.scarce()] {
            let a = fleet(spec);
            assert_eq!(a, fleet(spec), "same seed, same fleet");
            let snapshot = crate::scenario::validate(&a).expect("generated fleets validate");
            assert_eq!(snapshot.variants.len(), spec.variants);
            assert_eq!(snapshot.models.len(), spec.models);
            assert_eq!(snapshot.accelerators.len(), spec.accelerator_types);
        }
    }
}
