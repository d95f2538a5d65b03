//! Observe: from what the cluster shows to the scenario the core plans on (DESIGN §2, §5).
//!
//! Pure functions over k8s-openapi and CRD types: [`inventory`] counts GPUs (and MIG slices) per
//! product from Nodes and Pods, [`pods`] classifies a variant's pods (ready, booting,
//! unschedulable, gated; LeaderWorkerSet groups as one replica), [`snapshot`] assembles
//! VariantAutoscalings, configuration, inventory, pod states and load into a
//! [`crate::scenario::Scenario`], and [`pending`] is the loop's memory of accelerator types the
//! scheduler has said are full. Fetching those objects is the adapter's job.

pub mod inventory;
pub mod pending;
pub mod pods;
pub mod snapshot;
