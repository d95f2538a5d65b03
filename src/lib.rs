//! Allot: a global placement optimizer for LLM inference replicas.
//!
//! Data flow (docs in `../shared/DESIGN.md` §2): a [`scenario::Snapshot`] is analyzed
//! ([`analyze`]: per-replica capacity at each SLO), optimized ([`optimize`]: a MILP over
//! inventory, variants and classes) into a [`plan::Plan`]. `analyze` and `optimize` are pure:
//! no I/O, no clock, no async. Adapters (files, HTTP) live in [`scenario::load`], [`api`] and
//! the CLI.

pub mod analyze;
pub mod api;
pub mod optimize;
pub mod plan;
pub mod prometheus;
pub mod scenario;
pub mod sim;
pub mod synthetic;

pub mod cli;
