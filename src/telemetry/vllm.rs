//! vLLM's metric conventions, shared by the simulator's exposition and the SLO-target info metric
//! so the `le` labels of both match exactly.

/// `vllm:time_to_first_token_seconds` bucket boundaries.
pub const TTFT_BUCKETS_S: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];

/// `vllm:time_per_output_token_seconds` bucket boundaries.
pub const ITL_BUCKETS_S: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];

/// `vllm:e2e_request_latency_seconds` bucket boundaries.
pub const E2E_BUCKETS_S: &[f64] =
    &[0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0];

/// Token-count buckets of `vllm:request_prompt_tokens` / `vllm:request_generation_tokens`.
pub const TOKEN_BUCKETS: &[f64] =
    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0];

/// The largest boundary at or below `value` (the smallest when all are above): attainment read
/// at it never overstates attainment at `value`.
pub fn bucket_at_or_below(buckets: &[f64], value: f64) -> f64 {
    buckets.iter().copied().rfind(|&b| b <= value + 1e-12).unwrap_or(buckets[0])
}

/// An `le` label as Python's prometheus_client writes it (vLLM): `1.0`, `0.25`, `2560.0`.
pub fn format_le(bound: f64) -> String {
    format!("{bound:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_fall_on_the_bucket_at_or_below() {
        assert_eq!(format_le(bucket_at_or_below(TTFT_BUCKETS_S, 2.0)), "1.0");
        assert_eq!(format_le(bucket_at_or_below(TTFT_BUCKETS_S, 0.25)), "0.25");
        assert_eq!(format_le(bucket_at_or_below(ITL_BUCKETS_S, 0.05)), "0.05");
        assert_eq!(format_le(bucket_at_or_below(ITL_BUCKETS_S, 0.001)), "0.01");
        assert_eq!(format_le(2560.0), "2560.0");
    }
}
