//! Helpers shared by integration tests (`mod support;` in a test file). Each test binary uses a
//! different part, hence the blanket dead-code allowance.
#![allow(dead_code)]

pub mod browser;
pub mod exprs;
pub mod prometheus;
