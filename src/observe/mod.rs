//! Observe: from what the cluster shows to the scenario the core plans on (DESIGN §2, §5).
//!
//! Pure functions over k8s-openapi and CRD types: [`inventory`] counts GPUs per product from
//! Nodes and Pods, [`pods`] classifies a variant's pods (ready, booting, unschedulable, gated),
//! and [`snapshot`] assembles VariantAutoscalings, configuration, inventory, pod states and load
//! into a [`crate::scenario::Scenario`]. Fetching those objects is the controller's job.

pub mod inventory;
pub mod pods;
pub mod snapshot;
