//! Pending pods with memory (DESIGN §5): the scheduler's "this accelerator type is full" is
//! evidence that outlives the pods that showed it.
//!
//! Without memory the plan oscillates: the plan asks for a third replica, the pod stays
//! Unschedulable, the type looks full and the plan drops to two, the pending pod is deleted, the
//! type no longer looks full, and the plan asks for three again. [`PendingMemory`] is the loop's
//! explicit state that breaks the cycle: a type seen full stays full (its effective inventory C_a
//! shrinks to the GPUs Allot's pods hold there) until contrary evidence arrives —
//!
//! - a pod of that type schedules: a remembered pending pod is bound, or a new pod of a managed
//!   variant is bound on a node of that type (the scheduler found room);
//! - the nodes change: a node of that type appears, disappears or changes its allocatable GPUs;
//! - room appears: some node of that type has more free GPUs than when the type was last seen full
//!   (another workload finished, a replica was deleted);
//! - or the memory times out (`allot-config` `full_type_memory`, default 10 min), so a missed
//!   signal cannot pin a type forever.
//!
//! Everything here is pure: the adapter reports [`PendingEvidence`] with each observation, the
//! loop keeps one [`PendingMemory`] and applies it to each observation before `decide`, so a
//! decision is a function of (snapshot, memory).

use std::collections::{BTreeMap, BTreeSet};

use crate::scenario::format::Scenario;

/// A pod of a managed variant that the scheduler cannot place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PendingPod {
    /// `namespace/name` of the variant.
    pub variant: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The pod's uid (names are reused by StatefulSets).
    pub uid: String,
    /// GPUs (or GPU slices) the pod requests.
    pub gpus: u32,
}

/// What one observation says about room on one accelerator (a key of `accelerator-unit-costs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceleratorEvidence {
    /// Pods of managed variants on this type that are Unschedulable now (beyond the pool's grace
    /// for a pool that a cluster autoscaler grows). Sorted.
    pub unschedulable: Vec<PendingPod>,
    /// Uids of managed variants' pods bound to a node of this type.
    pub bound_uids: BTreeSet<String>,
    /// GPUs Allot's pods hold on this type (bound pods of planned variants).
    pub held_gpus: u32,
    /// Allocatable GPUs per counted node of this type.
    pub node_gpus: BTreeMap<String, u32>,
    /// Free GPUs per counted node (allocatable minus every bound pod's request).
    pub free_gpus: BTreeMap<String, u32>,
}

/// What an observation reports for the memory: per accelerator name, and how long a full type
/// is remembered without fresh evidence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PendingEvidence {
    pub accelerators: BTreeMap<String, AcceleratorEvidence>,
    /// Seconds a type stays full after its last Unschedulable pod; 0 turns the memory off
    /// (only pods Unschedulable now mark a type full).
    pub memory_s: f64,
}

/// Why a type is considered full.
#[derive(Clone, Debug, PartialEq)]
pub struct FullType {
    /// When the type was first seen full (observation time, seconds).
    pub since_s: f64,
    /// When an Unschedulable pod was last seen on it.
    pub last_seen_s: f64,
    /// The remembered pending pods (by uid) and the smallest request among them.
    pub pending_uids: BTreeSet<String>,
    pub smallest_request_gpus: u32,
    /// Variants whose pods were Unschedulable, sorted.
    pub variants: Vec<String>,
    /// The nodes and their free GPUs when last seen full: contrary evidence is a change from these.
    pub node_gpus: BTreeMap<String, u32>,
    pub free_gpus: BTreeMap<String, u32>,
    pub bound_uids: BTreeSet<String>,
    /// Whether pods are Unschedulable in the latest observation (else: remembered).
    pub live: bool,
}

/// What changed in the memory in one update (for logs and warnings).
#[derive(Clone, Debug, PartialEq)]
pub enum MemoryChange {
    /// A type became full.
    Full { accelerator: String, variants: Vec<String> },
    /// A remembered full type was released, and why.
    Released { accelerator: String, reason: String },
}

/// The loop's memory of full accelerator types.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PendingMemory {
    /// By accelerator name.
    pub full: BTreeMap<String, FullType>,
}

impl PendingMemory {
    /// Fold one observation's evidence into the memory at time `now_s`.
    pub fn update(&mut self, evidence: &PendingEvidence, now_s: f64) -> Vec<MemoryChange> {
        let mut changes = Vec::new();
        // Types with no evidence at all left the cluster configuration: forget them.
        self.full.retain(|name, _| evidence.accelerators.contains_key(name));
        for (name, ev) in &evidence.accelerators {
            if !ev.unschedulable.is_empty() {
                let variants: Vec<String> =
                    ev.unschedulable.iter().map(|p| p.variant.clone()).collect::<BTreeSet<_>>().into_iter().collect();
                let smallest = ev.unschedulable.iter().map(|p| p.gpus).min().unwrap_or(0);
                let entry = self.full.entry(name.clone());
                let is_new = matches!(entry, std::collections::btree_map::Entry::Vacant(_));
                let full = entry.or_insert_with(|| FullType {
                    since_s: now_s,
                    last_seen_s: now_s,
                    pending_uids: BTreeSet::new(),
                    smallest_request_gpus: smallest,
                    variants: Vec::new(),
                    node_gpus: BTreeMap::new(),
                    free_gpus: BTreeMap::new(),
                    bound_uids: BTreeSet::new(),
                    live: true,
                });
                full.last_seen_s = now_s;
                full.live = true;
                full.pending_uids = ev.unschedulable.iter().map(|p| p.uid.clone()).collect();
                full.smallest_request_gpus = smallest;
                full.node_gpus = ev.node_gpus.clone();
                full.free_gpus = ev.free_gpus.clone();
                full.bound_uids = ev.bound_uids.clone();
                if is_new || full.variants != variants {
                    changes.push(MemoryChange::Full { accelerator: name.clone(), variants: variants.clone() });
                }
                full.variants = variants;
                continue;
            }
            let Some(full) = self.full.get_mut(name) else { continue };
            full.live = false;
            if let Some(reason) = contrary_evidence(full, ev, now_s, evidence.memory_s) {
                self.full.remove(name);
                changes.push(MemoryChange::Released { accelerator: name.clone(), reason });
            }
        }
        changes
    }

    /// Whether `accelerator` is considered full now.
    pub fn is_full(&self, accelerator: &str) -> bool {
        self.full.contains_key(accelerator)
    }

    /// Apply the memory to an observed scenario: a full type's inventory shrinks to the GPUs
    /// Allot's pods hold there (`evidence`), and a variant's minimum that no longer fits is lowered
    /// to the replicas it runs, so the plan stays feasible. Returns the warnings to show with the
    /// plan; the scenario is unchanged when no type is full.
    pub fn shrink(&self, scenario: &mut Scenario, evidence: &PendingEvidence) -> Vec<String> {
        let mut warnings = Vec::new();
        for acc in &mut scenario.accelerators {
            let Some(full) = self.full.get(&acc.name) else { continue };
            let held = evidence.accelerators.get(&acc.name).map_or(0, |e| e.held_gpus);
            let why = if full.live {
                format!("pods of {} are Unschedulable", full.variants.join(", "))
            } else {
                format!(
                    "pods of {} were Unschedulable {:.0} s ago and nothing has changed since",
                    full.variants.join(", "),
                    (full.last_seen_s - full.since_s).max(0.0)
                )
            };
            if held < acc.gpus {
                warnings.push(format!(
                    "accelerator {}: {why}; planning with the {held} GPUs Allot's pods hold instead of the {} the nodes show",
                    acc.name, acc.gpus
                ));
                acc.gpus = held;
            }
            for v in scenario.variants.iter_mut().filter(|v| v.accelerator == acc.name) {
                if v.min_replicas > v.current_replicas {
                    warnings.push(format!(
                        "variant {}: minReplicas {} lowered to the {} replicas that could be scheduled on full accelerator {}",
                        v.name, v.min_replicas, v.current_replicas, acc.name
                    ));
                    v.min_replicas = v.current_replicas;
                }
            }
        }
        scenario.import_notes.extend(warnings.iter().cloned());
        warnings
    }
}

/// Why a remembered full type is no longer full, if it is not.
fn contrary_evidence(full: &FullType, ev: &AcceleratorEvidence, now_s: f64, memory_s: f64) -> Option<String> {
    if let Some(uid) = full.pending_uids.iter().find(|u| ev.bound_uids.contains(*u)) {
        return Some(format!("pending pod {uid} was scheduled"));
    }
    if ev.bound_uids.iter().any(|u| !full.bound_uids.contains(u)) {
        return Some("a new pod of a managed variant was scheduled on it".into());
    }
    if ev.node_gpus != full.node_gpus {
        return Some("its nodes or their allocatable GPUs changed".into());
    }
    if let Some((node, free)) =
        ev.free_gpus.iter().find(|(node, free)| **free > full.free_gpus.get(*node).copied().unwrap_or(0))
    {
        return Some(format!("node {node} has {free} free GPUs now"));
    }
    if now_s - full.last_seen_s >= memory_s {
        return Some(format!("no pod has been Unschedulable on it for {:.0} s", now_s - full.last_seen_s));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(uid: &str, gpus: u32) -> PendingPod {
        PendingPod { variant: "llm/llama-h100".into(), pod: format!("llm/{uid}"), uid: uid.into(), gpus }
    }

    /// Four 4-GPU nodes; two hold a replica each, two have 2 GPUs of someone else's job.
    fn evidence(unschedulable: Vec<PendingPod>) -> PendingEvidence {
        let nodes: BTreeMap<String, u32> = ["a", "b", "c", "d"].iter().map(|n| (n.to_string(), 4)).collect();
        let free = [("a", 0), ("b", 0), ("c", 2), ("d", 2)].iter().map(|(n, f)| (n.to_string(), *f)).collect();
        let ev = AcceleratorEvidence {
            unschedulable,
            bound_uids: ["r1", "r2"].iter().map(|s| s.to_string()).collect(),
            held_gpus: 8,
            node_gpus: nodes,
            free_gpus: free,
        };
        PendingEvidence { accelerators: [("H100".to_string(), ev)].into_iter().collect(), memory_s: 600.0 }
    }

    #[test]
    fn a_full_type_stays_full_after_its_pending_pod_is_deleted() {
        let mut memory = PendingMemory::default();
        let changes = memory.update(&evidence(vec![pending("p3", 4)]), 0.0);
        assert_eq!(
            changes,
            vec![MemoryChange::Full { accelerator: "H100".into(), variants: vec!["llm/llama-h100".into()] }]
        );
        // The plan dropped to two replicas and the pending pod was deleted: nothing changed on the
        // nodes, so the type is still full.
        for t in [30.0, 60.0, 300.0] {
            assert!(memory.update(&evidence(vec![]), t).is_empty());
            assert!(memory.is_full("H100"), "remembered at {t} s");
        }
        assert!(!memory.full["H100"].live);
    }

    #[test]
    fn contrary_evidence_releases_a_full_type() {
        type Change = Box<dyn Fn(&mut PendingEvidence)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "scheduled",
                Box::new(|e| {
                    e.accelerators.get_mut("H100").expect("H100").bound_uids.insert("p3".into());
                }),
            ),
            (
                "new pod",
                Box::new(|e| {
                    e.accelerators.get_mut("H100").expect("H100").bound_uids.insert("r9".into());
                }),
            ),
            (
                "nodes",
                Box::new(|e| {
                    e.accelerators.get_mut("H100").expect("H100").node_gpus.insert("e".into(), 8);
                }),
            ),
            (
                "room",
                Box::new(|e| {
                    e.accelerators.get_mut("H100").expect("H100").free_gpus.insert("c".into(), 4);
                }),
            ),
        ];
        for (what, change) in cases {
            let mut memory = PendingMemory::default();
            memory.update(&evidence(vec![pending("p3", 4)]), 0.0);
            let mut later = evidence(vec![]);
            change(&mut later);
            let changes = memory.update(&later, 30.0);
            assert!(!memory.is_full("H100"), "{what}: released");
            assert!(matches!(&changes[..], [MemoryChange::Released { .. }]), "{what}: {changes:?}");
        }
    }

    #[test]
    fn the_memory_times_out_and_less_room_is_not_contrary_evidence() {
        let mut memory = PendingMemory::default();
        memory.update(&evidence(vec![pending("p3", 4)]), 0.0);
        let mut fuller = evidence(vec![]);
        fuller.accelerators.get_mut("H100").expect("H100").free_gpus.insert("c".into(), 0);
        memory.update(&fuller, 100.0);
        assert!(memory.is_full("H100"), "a node with fewer free GPUs is no reason to ask again");
        // Still pending at 100 s refreshes the memory; 600 s of silence after that releases it.
        memory.update(&evidence(vec![pending("p3", 4)]), 100.0);
        memory.update(&evidence(vec![]), 650.0);
        assert!(memory.is_full("H100"));
        let changes = memory.update(&evidence(vec![]), 700.0);
        assert!(!memory.is_full("H100"));
        assert!(
            matches!(&changes[..], [MemoryChange::Released { reason, .. }] if reason.contains("600 s")),
            "{changes:?}"
        );
    }

    #[test]
    fn zero_memory_only_trusts_pods_pending_now() {
        let mut memory = PendingMemory::default();
        let mut ev = evidence(vec![pending("p3", 4)]);
        ev.memory_s = 0.0;
        memory.update(&ev, 0.0);
        assert!(memory.is_full("H100"));
        let mut quiet = evidence(vec![]);
        quiet.memory_s = 0.0;
        memory.update(&quiet, 30.0);
        assert!(!memory.is_full("H100"));
    }
}
