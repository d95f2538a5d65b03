//! Kubernetes surface of Allot: the VariantAutoscaling CRD ([`crd`]) and the ConfigMaps the
//! controller reads ([`config`]). Documented for users in `docs/kubernetes.md`.

pub mod config;
pub mod crd;
