//! Kubernetes adapter of the controller (DESIGN §5–6), documented for users in
//! `docs/kubernetes.md`:
//!
//! - [`crd`]: the `VariantAutoscaling` custom resource (`llmd.ai/v1alpha1`, WVA-compatible, every
//!   WVA shape);
//! - [`variant`]: variants from VariantAutoscalings (each parsed on its own) and from annotated
//!   HPAs and KEDA ScaledObjects (WVA v0.8+'s annotation mode); what a scale target says;
//! - [`config`]: WVA's ConfigMaps and Allot's `allot-config`;
//! - [`cache`]: the watch-backed state a cycle reads (reflectors);
//! - [`cluster`]: [`KubeCluster`], the controller's [`crate::controller::Cluster`] on a real API
//!   server (observe: caches and assembly; act: status, events, optional scaling);
//! - [`status`]: what a VariantAutoscaling's status says after a cycle (pure);
//! - [`lease`]: leader election on a Lease, and this replica's identity;
//! - [`replan`]: which watch events ask for a prompt re-plan;
//! - [`selector`]: label selectors as the `scale` subresource reports them.
//!
//! From cluster objects to a scenario is [`crate::observe`] (pure). Adapters take plain settings
//! ([`Scope`], [`LeaseSettings`]); the command line that builds them and the wiring of HTTP, loop,
//! elector and shutdown live in `crate::cli::serve` (the composition root).

pub mod cache;
pub mod cluster;
pub mod config;
pub mod crd;
pub mod lease;
pub mod replan;
pub mod selector;
pub mod status;
pub mod variant;

pub use cluster::{KubeCluster, LoadFactory, Scope};
pub use lease::{LeaderElector, LeaseSettings, default_identity};

/// The Lease the replicas of one installation compete for.
pub const DEFAULT_LEASE_NAME: &str = "allot-leader";
