//! GPU inventory per accelerator product, from Nodes and Pods (DESIGN §5). Pure functions over
//! k8s-openapi types.
//!
//! - A node counts when it is Ready, not cordoned, and carries no `NoSchedule`/`NoExecute` taint
//!   outside the tolerated keys (`allot-config` `tolerated_taint_keys`; default the GPU
//!   operators' `nvidia.com/gpu` and `amd.com/gpu`). This is a simplification: Allot does not
//!   evaluate each workload's tolerations, affinity or CPU/memory fit. When the scheduler
//!   disagrees, pods become Unschedulable and [`effective_gpus`] trusts the scheduler.
//! - Its GPUs are its allocatable `nvidia.com/gpu` or `amd.com/gpu`, of the product in its
//!   `nvidia.com/gpu.product` (NVIDIA GPU feature discovery) or `amd.com/gpu.product-name` (AMD
//!   node labeller) label.
//! - GPUs requested by pods Allot does not manage, bound to a counted node and not finished, are
//!   taken away. GPUs of Allot's own pods stay: the plan may move them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::k8s::config::PoolConfig;

/// Extended resources that are GPUs.
pub const GPU_RESOURCES: [&str; 2] = ["nvidia.com/gpu", "amd.com/gpu"];

/// Node labels naming the GPU product, in order of preference.
pub const PRODUCT_LABELS: [&str; 3] =
    ["nvidia.com/gpu.product", "amd.com/gpu.product-name", "beta.amd.com/gpu.product-name"];

/// The GPUs of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeGpus {
    pub node: String,
    /// The product label's value; `None` when the node has GPUs but no product label.
    pub device: Option<String>,
    pub allocatable: u32,
    /// Why the node's GPUs are not counted; `None` when they are.
    pub excluded: Option<String>,
}

/// GPUs of one device (product) across the counted nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInventory {
    pub nodes: u32,
    /// Allocatable GPUs of the counted nodes.
    pub allocatable_gpus: u32,
    /// Requested by pods Allot does not manage.
    pub other_gpus: u32,
    /// Requested by Allot's own scheduled pods.
    pub managed_gpus: u32,
}

impl DeviceInventory {
    /// GPUs Allot may use: allocatable minus what others hold.
    pub fn observed_gpus(&self) -> u32 {
        self.allocatable_gpus.saturating_sub(self.other_gpus)
    }
}

/// Inventory per device, plus the nodes left out and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub devices: BTreeMap<String, DeviceInventory>,
    /// `(node, reason)` for GPU nodes that were not counted, sorted by node.
    pub excluded_nodes: Vec<(String, String)>,
}

/// Whole GPUs in a quantity (`"8"`); anything else (fractions, suffixes) is not a GPU count.
fn whole(q: &Quantity) -> Option<u32> {
    q.0.trim().parse().ok()
}

/// The GPUs a node offers and whether they count.
pub fn node_gpus(node: &Node, tolerated_taint_keys: &[String]) -> Option<NodeGpus> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let gpus: u32 = GPU_RESOURCES.iter().filter_map(|r| allocatable.and_then(|a| a.get(*r)).and_then(whole)).sum();
    let labels = node.metadata.labels.as_ref();
    let device = PRODUCT_LABELS.iter().find_map(|l| labels.and_then(|m| m.get(*l))).cloned();
    if gpus == 0 && device.is_none() {
        return None;
    }
    let spec = node.spec.as_ref();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let blocking_taint = spec.and_then(|s| s.taints.as_ref()).into_iter().flatten().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated_taint_keys.iter().any(|k| k == &t.key)
    });
    let excluded = if device.is_none() {
        Some(format!("no GPU product label ({})", PRODUCT_LABELS.join(", ")))
    } else if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        Some("cordoned".to_string())
    } else if !ready {
        Some("not Ready".to_string())
    } else {
        blocking_taint.map(|t| format!("taint {}={}:{}", t.key, t.value.as_deref().unwrap_or(""), t.effect))
    };
    Some(NodeGpus { node: name, device, allocatable: gpus, excluded })
}

/// GPUs a pod requests: the larger of its containers' sum and its largest init container
/// (requests, or limits where no request is given, as Kubernetes defaults them).
pub fn pod_gpu_request(pod: &Pod) -> u32 {
    let Some(spec) = pod.spec.as_ref() else { return 0 };
    let gpus = |c: &k8s_openapi::api::core::v1::Container| -> u32 {
        let res = c.resources.as_ref();
        GPU_RESOURCES
            .iter()
            .filter_map(|r| {
                res.and_then(|x| x.requests.as_ref())
                    .and_then(|m| m.get(*r))
                    .or_else(|| res.and_then(|x| x.limits.as_ref()).and_then(|m| m.get(*r)))
            })
            .filter_map(whole)
            .sum()
    };
    let main: u32 = spec.containers.iter().map(gpus).sum();
    let init = spec.init_containers.iter().flatten().map(gpus).max().unwrap_or(0);
    main.max(init)
}

/// Count GPUs per device. `is_managed` tells Allot's own pods (those of VariantAutoscaling
/// targets) from everything else.
pub fn observe(
    nodes: &[Node],
    pods: &[Pod],
    tolerated_taint_keys: &[String],
    is_managed: impl Fn(&Pod) -> bool,
) -> Inventory {
    let mut inventory = Inventory::default();
    let mut device_of_node: BTreeMap<String, String> = BTreeMap::new();
    for node in nodes {
        let Some(g) = node_gpus(node, tolerated_taint_keys) else { continue };
        match (&g.excluded, &g.device) {
            (None, Some(device)) => {
                let d = inventory.devices.entry(device.clone()).or_default();
                d.nodes += 1;
                d.allocatable_gpus += g.allocatable;
                device_of_node.insert(g.node, device.clone());
            }
            (Some(reason), _) => inventory.excluded_nodes.push((g.node, reason.clone())),
            (None, None) => unreachable!("a node without product label is excluded"),
        }
    }
    inventory.excluded_nodes.sort();
    for pod in pods {
        let finished = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_ref());
        let Some(device) = node.and_then(|n| device_of_node.get(n)) else { continue };
        if finished {
            continue;
        }
        let gpus = pod_gpu_request(pod);
        let d = inventory.devices.get_mut(device).expect("device_of_node only names counted devices");
        if is_managed(pod) {
            d.managed_gpus += gpus;
        } else {
            d.other_gpus += gpus;
        }
    }
    inventory
}

/// Why an accelerator's effective inventory has the value it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InventoryLimit {
    /// What the nodes offer, minus other workloads.
    Nodes,
    /// Nodes plus what the pool's autoscaler can add (`pools.<name>.extra_gpus`).
    PoolGrowth { extra_gpus: u32 },
    /// Capped by `pools.<name>.max_gpus`.
    PoolCap { max_gpus: u32 },
    /// Pods of a managed variant are Unschedulable on this type: the scheduler says it is full,
    /// so Allot plans with only the GPUs its own pods already hold.
    Full { held_gpus: u32 },
}

/// An accelerator's effective inventory C_a and the reason for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveGpus {
    pub gpus: u32,
    /// What the nodes show, before pools and the full signal.
    pub observed_gpus: u32,
    pub limit: InventoryLimit,
}

/// Effective inventory C_a of one accelerator (DESIGN §5).
///
/// `observed` is the device's inventory (default when no node has it), `pool` the configured
/// adjustments, and `full` whether a managed variant on this type has pods Unschedulable beyond
/// the pool's grace. A full type shrinks to the GPUs Allot's pods hold there: the free GPUs the
/// node count shows are not schedulable (fragmentation, other resources, affinity, quota), so
/// the next plan must not count on them, and moves the unmet demand to other variants.
pub fn effective_gpus(observed: &DeviceInventory, pool: Option<&PoolConfig>, full: bool) -> EffectiveGpus {
    let observed_gpus = observed.observed_gpus();
    let mut gpus = observed_gpus;
    let mut limit = InventoryLimit::Nodes;
    if let Some(p) = pool {
        if p.extra_gpus > 0 {
            gpus = gpus.saturating_add(p.extra_gpus);
            limit = InventoryLimit::PoolGrowth { extra_gpus: p.extra_gpus };
        }
        if let Some(max) = p.max_gpus
            && max < gpus
        {
            gpus = max;
            limit = InventoryLimit::PoolCap { max_gpus: max };
        }
    }
    if full && observed.managed_gpus < gpus {
        gpus = observed.managed_gpus;
        limit = InventoryLimit::Full { held_gpus: observed.managed_gpus };
    }
    EffectiveGpus { gpus, observed_gpus, limit }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::observe::pods::tests::pod;

    /// A GPU node as the API server returns it (GPU operator labels, allocatable, taint).
    pub(crate) fn node(name: &str, product: &str, gpus: u32) -> Node {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "node.kubernetes.io/instance-type": "p5.48xlarge",
                    "nvidia.com/gpu.count": gpus.to_string(),
                    "nvidia.com/gpu.product": product,
                    "nvidia.com/gpu.present": "true"
                }
            },
            "spec": {
                "providerID": format!("aws:///us-east-1a/i-{name}"),
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
            },
            "status": {
                "allocatable": {"cpu": "191450m", "memory": "2029372264Ki", "nvidia.com/gpu": gpus.to_string(), "pods": "110"},
                "capacity": {"cpu": "192", "memory": "2097152000Ki", "nvidia.com/gpu": gpus.to_string(), "pods": "110"},
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady"}
                ]
            }
        }))
        .expect("fixture is a valid Node")
    }

    fn amd_node(name: &str, gpus: u32) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"amd.com/gpu.product-name": "AMD_Instinct_MI300X", "amd.com/gpu.family": "AI"}},
            "spec": {},
            "status": {
                "allocatable": {"amd.com/gpu": gpus.to_string()},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .expect("fixture is a valid Node")
    }

    fn tolerated() -> Vec<String> {
        vec!["nvidia.com/gpu".into(), "amd.com/gpu".into()]
    }

    fn on_node(mut p: Pod, node: &str, gpus: u32) -> Pod {
        let spec = p.spec.as_mut().expect("fixture has a spec");
        spec.node_name = Some(node.into());
        let q = Quantity(gpus.to_string());
        let res = spec.containers[0].resources.as_mut().expect("fixture has resources");
        res.requests.as_mut().expect("requests").insert("nvidia.com/gpu".into(), q.clone());
        res.limits.as_mut().expect("limits").insert("nvidia.com/gpu".into(), q);
        p
    }

    const H100: &str = "NVIDIA-H100-80GB-HBM3";

    #[test]
    fn counts_ready_schedulable_nodes_per_product() {
        let mut cordoned = node("h100-c", H100, 8);
        cordoned.spec.as_mut().expect("spec").unschedulable = Some(true);
        let mut not_ready = node("h100-d", H100, 8);
        not_ready.status.as_mut().expect("status").conditions.as_mut().expect("conditions")[1].status =
            "Unknown".into();
        let mut tainted = node("h100-e", H100, 8);
        tainted.spec.as_mut().expect("spec").taints.as_mut().expect("taints").push(k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        });
        let cpu_node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cpu-1"}, "status": {"allocatable": {"cpu": "16"}}
        }))
        .expect("valid Node");
        let nodes = [
            node("h100-a", H100, 8),
            node("h100-b", H100, 8),
            node("a100-a", "NVIDIA-A100-SXM4-80GB", 8),
            amd_node("mi300-a", 8),
            cordoned,
            not_ready,
            tainted,
            cpu_node,
        ];
        let inv = observe(&nodes, &[], &tolerated(), |_| false);
        assert_eq!(
            inv.devices[H100],
            DeviceInventory { nodes: 2, allocatable_gpus: 16, other_gpus: 0, managed_gpus: 0 }
        );
        assert_eq!(inv.devices["NVIDIA-A100-SXM4-80GB"].allocatable_gpus, 8);
        assert_eq!(inv.devices["AMD_Instinct_MI300X"].allocatable_gpus, 8);
        assert_eq!(
            inv.excluded_nodes,
            vec![
                ("h100-c".to_string(), "cordoned".to_string()),
                ("h100-d".to_string(), "not Ready".to_string()),
                ("h100-e".to_string(), "taint node.kubernetes.io/unreachable=:NoExecute".to_string()),
            ]
        );
        // Without tolerating the GPU operator's taint, no NVIDIA node counts.
        let strict = observe(&nodes, &[], &[], |_| false);
        assert!(!strict.devices.contains_key(H100));
        assert!(strict.devices.contains_key("AMD_Instinct_MI300X"));
    }

    #[test]
    fn other_workloads_gpus_are_subtracted_and_managed_ones_kept() {
        let nodes = [node("h100-a", H100, 8), node("h100-b", H100, 8)];
        let mut other_pending = pod("training-0", "new");
        other_pending.metadata.labels = None;
        let mut training = on_node(pod("training-1", "ready"), "h100-a", 4);
        training.metadata.labels = None;
        let mut finished = on_node(pod("job-1", "failed"), "h100-b", 8);
        finished.metadata.labels = None;
        let pods = [
            training,
            finished,
            other_pending,                                 // not bound: takes nothing yet
            on_node(pod("llama-1", "ready"), "h100-b", 2), // managed
            on_node(pod("elsewhere", "ready"), "unknown-node", 8),
        ];
        let inv = observe(&nodes, &pods, &tolerated(), |p| {
            p.metadata.labels.is_some() && p.metadata.name.as_deref() != Some("elsewhere")
        });
        let d = &inv.devices[H100];
        assert_eq!((d.allocatable_gpus, d.other_gpus, d.managed_gpus, d.observed_gpus()), (16, 4, 2, 12));
    }

    #[test]
    fn pod_gpu_request_reads_requests_limits_and_init_containers() {
        let p = on_node(pod("x", "ready"), "n", 4);
        assert_eq!(pod_gpu_request(&p), 4);
        let mut limits_only = p.clone();
        limits_only.spec.as_mut().expect("spec").containers[0].resources.as_mut().expect("res").requests = None;
        assert_eq!(pod_gpu_request(&limits_only), 4);
        let mut with_init = p.clone();
        let mut init = with_init.spec.as_ref().expect("spec").containers[0].clone();
        init.resources
            .as_mut()
            .expect("res")
            .requests
            .as_mut()
            .expect("req")
            .insert("nvidia.com/gpu".into(), Quantity("8".into()));
        with_init.spec.as_mut().expect("spec").init_containers = Some(vec![init]);
        assert_eq!(pod_gpu_request(&with_init), 8);
    }

    #[test]
    fn pools_grow_and_cap_and_a_full_type_shrinks_to_held_gpus() {
        let d = DeviceInventory { nodes: 2, allocatable_gpus: 16, other_gpus: 4, managed_gpus: 6 };
        assert_eq!(
            effective_gpus(&d, None, false),
            EffectiveGpus { gpus: 12, observed_gpus: 12, limit: InventoryLimit::Nodes }
        );
        let grow = PoolConfig { extra_gpus: 16, ..Default::default() };
        assert_eq!(effective_gpus(&d, Some(&grow), false).gpus, 28);
        let cap = PoolConfig { max_gpus: Some(8), extra_gpus: 16, ..Default::default() };
        assert_eq!(
            effective_gpus(&d, Some(&cap), false),
            EffectiveGpus { gpus: 8, observed_gpus: 12, limit: InventoryLimit::PoolCap { max_gpus: 8 } }
        );
        assert_eq!(
            effective_gpus(&d, Some(&cap), true),
            EffectiveGpus { gpus: 6, observed_gpus: 12, limit: InventoryLimit::Full { held_gpus: 6 } }
        );
        // A type nobody has nodes of, but a pool may grow.
        assert_eq!(effective_gpus(&DeviceInventory::default(), Some(&grow), false).gpus, 16);
    }
}
