//! GPU inventory per accelerator product, from Nodes and Pods (DESIGN §5). Pure functions over
//! k8s-openapi types.
//!
//! - A node counts when it is Ready, not cordoned, and carries no `NoSchedule`/`NoExecute` taint
//!   outside the tolerated keys (`allot-config` `tolerated_taint_keys`; default the GPU
//!   operators' `nvidia.com/gpu` and `amd.com/gpu`). This is a simplification: Allot does not
//!   evaluate each workload's tolerations, affinity or CPU/memory fit. When the scheduler
//!   disagrees, pods become Unschedulable and the pending-pod memory trusts the scheduler.
//! - Its GPUs are its allocatable `nvidia.com/gpu` or `amd.com/gpu`, of the product in its
//!   `nvidia.com/gpu.product` (NVIDIA GPU feature discovery) or `amd.com/gpu.product-name` (AMD
//!   node labeller) label.
//! - MIG slices are accelerators of their own. Under the GPU operator's `single` strategy they
//!   are `nvidia.com/gpu` and GFD already names the product `<product>-MIG-<profile>`; under the
//!   `mixed` strategy each allocatable `nvidia.com/mig-<profile>` resource is counted as device
//!   `<product>-MIG-<profile>` (the same name), separately from the node's whole GPUs.
//! - GPUs requested by pods Allot does not manage, bound to a counted node and not finished, are
//!   taken away. GPUs of Allot's own pods stay: the plan may move them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::k8s::config::PoolConfig;

/// Extended resources that are whole GPUs.
pub const GPU_RESOURCES: [&str; 2] = ["nvidia.com/gpu", "amd.com/gpu"];

/// Prefix of the MIG slice resources of the NVIDIA device plugin's `mixed` strategy
/// (`nvidia.com/mig-1g.10gb`).
pub const MIG_RESOURCE_PREFIX: &str = "nvidia.com/mig-";

/// Node labels naming the GPU product, in order of preference.
pub const PRODUCT_LABELS: [&str; 3] =
    ["nvidia.com/gpu.product", "amd.com/gpu.product-name", "beta.amd.com/gpu.product-name"];

/// Whether a resource name is an accelerator Allot counts (a whole GPU or a MIG slice).
pub fn is_accelerator_resource(resource: &str) -> bool {
    GPU_RESOURCES.contains(&resource) || resource.strip_prefix(MIG_RESOURCE_PREFIX).is_some_and(|p| !p.is_empty())
}

/// The device name of `resource` on a node labelled with `product`: the product itself for whole
/// GPUs, `<product>-MIG-<profile>` for a MIG slice.
pub fn device_name(product: &str, resource: &str) -> String {
    match resource.strip_prefix(MIG_RESOURCE_PREFIX) {
        Some(profile) => format!("{product}-MIG-{profile}"),
        None => product.to_string(),
    }
}

/// One accelerator resource of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDevice {
    /// The extended resource (`nvidia.com/gpu`, `nvidia.com/mig-3g.40gb`).
    pub resource: String,
    /// The device name inventory is counted by.
    pub device: String,
    pub allocatable: u32,
}

/// The accelerators of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeGpus {
    pub node: String,
    /// The product label's value; `None` when the node has GPUs but no product label.
    pub product: Option<String>,
    /// One entry per accelerator resource with allocatable > 0, sorted by resource.
    pub devices: Vec<NodeDevice>,
    /// Why the node's GPUs are not counted; `None` when they are.
    pub excluded: Option<String>,
}

impl NodeGpus {
    /// Allocatable accelerators of all resources.
    pub fn allocatable(&self) -> u32 {
        self.devices.iter().map(|d| d.allocatable).sum()
    }
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
    /// Allocatable GPUs per counted node.
    pub node_gpus: BTreeMap<String, u32>,
    /// Free GPUs per counted node: allocatable minus every bound pod's request (fragmentation
    /// shows here; the total does not).
    pub free_gpus: BTreeMap<String, u32>,
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

/// Whole units in a quantity (`"8"`); anything else (fractions, suffixes) is not a GPU count.
fn whole(q: &Quantity) -> Option<u32> {
    q.0.trim().parse().ok()
}

/// The accelerators a node offers and whether they count.
pub fn node_gpus(node: &Node, tolerated_taint_keys: &[String]) -> Option<NodeGpus> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let labels = node.metadata.labels.as_ref();
    let product = PRODUCT_LABELS.iter().find_map(|l| labels.and_then(|m| m.get(*l))).cloned();
    let resources: Vec<(String, u32)> = allocatable
        .into_iter()
        .flatten()
        .filter(|(r, _)| is_accelerator_resource(r))
        .filter_map(|(r, q)| whole(q).filter(|n| *n > 0).map(|n| (r.clone(), n)))
        .collect();
    if resources.is_empty() && product.is_none() {
        return None;
    }
    let devices = resources
        .into_iter()
        .map(|(resource, allocatable)| NodeDevice {
            device: device_name(product.as_deref().unwrap_or_default(), &resource),
            resource,
            allocatable,
        })
        .collect();
    let spec = node.spec.as_ref();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let blocking_taint = spec.and_then(|s| s.taints.as_ref()).into_iter().flatten().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated_taint_keys.iter().any(|k| k == &t.key)
    });
    let excluded = if product.is_none() {
        Some(format!("no GPU product label ({})", PRODUCT_LABELS.join(", ")))
    } else if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        Some("cordoned".to_string())
    } else if !ready {
        Some("not Ready".to_string())
    } else {
        blocking_taint.map(|t| format!("taint {}={}:{}", t.key, t.value.as_deref().unwrap_or(""), t.effect))
    };
    Some(NodeGpus { node: name, product, devices, excluded })
}

/// Accelerators a pod requests, per resource: the larger of its containers' sum and its largest
/// init container (requests, or limits where no request is given, as Kubernetes defaults them).
pub fn pod_gpu_requests(pod: &Pod) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let Some(spec) = pod.spec.as_ref() else { return out };
    let container = |c: &k8s_openapi::api::core::v1::Container| -> BTreeMap<String, u32> {
        let res = c.resources.as_ref();
        let requests = res.and_then(|x| x.requests.as_ref());
        let limits = res.and_then(|x| x.limits.as_ref());
        let names = requests.into_iter().flatten().chain(limits.into_iter().flatten()).map(|(r, _)| r);
        names
            .filter(|r| is_accelerator_resource(r))
            .filter_map(|r| {
                let q = requests.and_then(|m| m.get(r)).or_else(|| limits.and_then(|m| m.get(r)))?;
                Some((r.clone(), whole(q)?))
            })
            .collect()
    };
    for c in &spec.containers {
        for (r, n) in container(c) {
            *out.entry(r).or_insert(0) += n;
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (r, n) in container(c) {
            let e = out.entry(r).or_insert(0);
            *e = (*e).max(n);
        }
    }
    out.retain(|_, n| *n > 0);
    out
}

/// Accelerators a pod requests, all resources together.
pub fn pod_gpu_request(pod: &Pod) -> u32 {
    pod_gpu_requests(pod).values().sum()
}

/// Count GPUs per device. `is_managed` tells Allot's own pods (those of VariantAutoscaling
/// targets) from everything else.
pub fn observe(
    nodes: &[Node],
    pods: &[Pod],
    tolerated_taint_keys: &[String],
    is_managed: impl Fn(&Pod) -> bool,
) -> Inventory {
    observe_refs(nodes.iter(), pods.iter(), tolerated_taint_keys, is_managed)
}

/// [`observe`] over references (the controller's caches hand out shared objects).
pub fn observe_refs<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    pods: impl IntoIterator<Item = &'a Pod>,
    tolerated_taint_keys: &[String],
    is_managed: impl Fn(&Pod) -> bool,
) -> Inventory {
    let mut inventory = Inventory::default();
    // (node, resource) → device, for the counted nodes.
    let mut device_of: BTreeMap<(String, String), String> = BTreeMap::new();
    for node in nodes {
        let Some(g) = node_gpus(node, tolerated_taint_keys) else { continue };
        if let Some(reason) = &g.excluded {
            inventory.excluded_nodes.push((g.node.clone(), reason.clone()));
            continue;
        }
        for d in &g.devices {
            let inv = inventory.devices.entry(d.device.clone()).or_default();
            inv.nodes += 1;
            inv.allocatable_gpus += d.allocatable;
            inv.node_gpus.insert(g.node.clone(), d.allocatable);
            inv.free_gpus.insert(g.node.clone(), d.allocatable);
            device_of.insert((g.node.clone(), d.resource.clone()), d.device.clone());
        }
    }
    inventory.excluded_nodes.sort();
    for pod in pods {
        let finished = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) else { continue };
        if finished {
            continue;
        }
        let managed = is_managed(pod);
        for (resource, gpus) in pod_gpu_requests(pod) {
            let Some(device) = device_of.get(&(node.clone(), resource)) else { continue };
            let d = inventory.devices.get_mut(device).expect("device_of only names counted devices");
            if managed {
                d.managed_gpus += gpus;
            } else {
                d.other_gpus += gpus;
            }
            if let Some(free) = d.free_gpus.get_mut(node) {
                *free = free.saturating_sub(gpus);
            }
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
}

/// An accelerator's inventory C_a before the pending-pod memory ([`super::pending`]), and the
/// reason for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveGpus {
    pub gpus: u32,
    /// What the nodes show, before pools.
    pub observed_gpus: u32,
    pub limit: InventoryLimit,
}

/// Inventory C_a of one accelerator from its device's nodes and the configured pool (DESIGN §5).
/// A type the scheduler says is full shrinks further, in [`super::pending::PendingMemory::shrink`].
pub fn effective_gpus(observed: &DeviceInventory, pool: Option<&PoolConfig>) -> EffectiveGpus {
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
        let h100 = &inv.devices[H100];
        assert_eq!((h100.nodes, h100.allocatable_gpus, h100.other_gpus, h100.managed_gpus), (2, 16, 0, 0));
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
        // Per node: the training job fragments h100-a, the managed pod h100-b.
        assert_eq!(d.free_gpus, BTreeMap::from([("h100-a".to_string(), 4), ("h100-b".to_string(), 6)]));
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
    fn pools_grow_and_cap() {
        let d =
            DeviceInventory { nodes: 2, allocatable_gpus: 16, other_gpus: 4, managed_gpus: 6, ..Default::default() };
        assert_eq!(
            effective_gpus(&d, None),
            EffectiveGpus { gpus: 12, observed_gpus: 12, limit: InventoryLimit::Nodes }
        );
        let grow = PoolConfig { extra_gpus: 16, ..Default::default() };
        assert_eq!(effective_gpus(&d, Some(&grow)).gpus, 28);
        let cap = PoolConfig { max_gpus: Some(8), extra_gpus: 16, ..Default::default() };
        assert_eq!(
            effective_gpus(&d, Some(&cap)),
            EffectiveGpus { gpus: 8, observed_gpus: 12, limit: InventoryLimit::PoolCap { max_gpus: 8 } }
        );
        // A type nobody has nodes of, but a pool may grow.
        assert_eq!(effective_gpus(&DeviceInventory::default(), Some(&grow)).gpus, 16);
    }

    /// An A100 node under the GPU operator's `mixed` MIG strategy, labelled as GFD does: two GPUs
    /// sliced, the others whole.
    fn mig_mixed_node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                "nvidia.com/mig.strategy": "mixed",
                "nvidia.com/mig-1g.10gb.count": "7",
                "nvidia.com/mig-3g.40gb.count": "2"
            }},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "96", "nvidia.com/gpu": "6", "nvidia.com/mig-1g.10gb": "7",
                                "nvidia.com/mig-3g.40gb": "2"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .expect("fixture is a valid Node")
    }

    #[test]
    fn mig_slices_are_accelerators_of_their_own() {
        let nodes = [mig_mixed_node("a100-mig-a"), node("a100-b", "NVIDIA-A100-SXM4-80GB", 8)];
        let g = node_gpus(&nodes[0], &tolerated()).expect("a GPU node");
        let devices: Vec<(&str, &str, u32)> =
            g.devices.iter().map(|d| (d.resource.as_str(), d.device.as_str(), d.allocatable)).collect();
        assert_eq!(
            devices,
            vec![
                ("nvidia.com/gpu", "NVIDIA-A100-SXM4-80GB", 6),
                ("nvidia.com/mig-1g.10gb", "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", 7),
                ("nvidia.com/mig-3g.40gb", "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb", 2),
            ]
        );
        // A pod on one 1g.10gb slice and a foreign pod on a 3g.40gb slice.
        let mut small = on_node(pod("small-1", "ready"), "a100-mig-a", 0);
        let requests = small.spec.as_mut().expect("spec").containers[0].resources.as_mut().expect("res");
        for m in [requests.requests.as_mut(), requests.limits.as_mut()].into_iter().flatten() {
            m.remove("nvidia.com/gpu");
            m.insert("nvidia.com/mig-1g.10gb".into(), Quantity("1".into()));
        }
        let mut foreign = small.clone();
        foreign.metadata.name = Some("notebook".into());
        foreign.metadata.labels = None;
        let res = foreign.spec.as_mut().expect("spec").containers[0].resources.as_mut().expect("res");
        for m in [res.requests.as_mut(), res.limits.as_mut()].into_iter().flatten() {
            m.remove("nvidia.com/mig-1g.10gb");
            m.insert("nvidia.com/mig-3g.40gb".into(), Quantity("1".into()));
        }
        assert_eq!(pod_gpu_requests(&small), BTreeMap::from([("nvidia.com/mig-1g.10gb".to_string(), 1)]));
        let inv = observe(&nodes, &[small, foreign], &tolerated(), |p| p.metadata.labels.is_some());
        let slice = &inv.devices["NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"];
        assert_eq!((slice.allocatable_gpus, slice.managed_gpus, slice.other_gpus), (7, 1, 0));
        let big = &inv.devices["NVIDIA-A100-SXM4-80GB-MIG-3g.40gb"];
        assert_eq!((big.allocatable_gpus, big.other_gpus, big.observed_gpus()), (2, 1, 1));
        assert_eq!(inv.devices["NVIDIA-A100-SXM4-80GB"].allocatable_gpus, 14, "whole GPUs of both nodes");
    }
}
