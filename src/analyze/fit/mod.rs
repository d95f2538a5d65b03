//! Fitting latency profiles from measurements (DESIGN §3 "Fitting"): pure functions on text
//! and numbers; reading files and writing profiles is the CLI's job (`cli::fit`).
//!
//! - [`linear`]: non-negative least squares on engine step timings (the Splitwise format).
//! - [`splitwise`]: the Splitwise `perf_model.csv` format, grouped and fitted with [`linear`].
//! - [`guidellm`], [`vllm_bench`]: load-generator exports → [`measurement::Measurement`]s.
//! - [`through_model`]: fitting a profile to measurements through the planner's prediction
//!   path, with residuals, leave-one-mix-out checks and capacities at SLOs.
//! - [`report`]: screening, the fit and its checks as one result the CLI prints.

pub mod guidellm;
pub mod linear;
pub mod measurement;
pub mod report;
pub mod splitwise;
pub mod through_model;
pub mod vllm_bench;

pub use linear::*;
