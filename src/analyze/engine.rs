//! The inference engine's limits on one replica (DESIGN §3 "what real engines add"): how many
//! sequences it runs at once, how many tokens one step may process, and how many tokens its
//! KV cache holds. Measured on real vLLM, ignoring them makes capacity 20–75 % optimistic: a
//! replica whose KV cache holds 55 requests of the class's size saturates at 55 in flight,
//! whatever `max_num_seqs` says.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Role;
use super::sizes::SizeDistribution;

/// vLLM's default step token budget (`max_num_batched_tokens`) for online serving.
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: u32 = 8192;
/// vLLM's KV-cache block size (tokens).
pub const DEFAULT_BLOCK_SIZE_TOKENS: u32 = 16;
/// vLLM's default `gpu_memory_utilization`.
pub const DEFAULT_GPU_MEMORY_UTILIZATION: f64 = 0.9;
/// GPU memory per GPU kept for activations, CUDA graphs and the allocator when deriving the KV
/// cache from memory, GiB (vLLM profiles this at start-up; 2–5 GiB is typical).
pub const DEFAULT_RESERVE_GIB: f64 = 3.0;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// KV-cache capacity derived from memory, as vLLM sizes it at start-up:
/// tokens = (gpus · (memory · utilization − reserve) − weights) / bytes per token.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvCacheMemory {
    /// Memory of one GPU, GiB (80 for an H100-80GB).
    pub gpu_memory_gib: f64,
    /// Fraction of GPU memory vLLM may use (`--gpu-memory-utilization`, default 0.9).
    #[serde(default = "default_utilization")]
    pub gpu_memory_utilization: f64,
    /// Model weights over all GPUs of a replica, GiB (≈ parameters × bytes per parameter).
    pub weights_gib: f64,
    /// KV bytes per token over the whole model: 2 · layers · KV heads · head dim · bytes per value.
    pub kv_bytes_per_token: f64,
    /// Per-GPU memory kept for activations and CUDA graphs, GiB (default 3).
    #[serde(default = "default_reserve")]
    pub reserve_gib: f64,
}

fn default_utilization() -> f64 {
    DEFAULT_GPU_MEMORY_UTILIZATION
}

fn default_reserve() -> f64 {
    DEFAULT_RESERVE_GIB
}

impl KvCacheMemory {
    /// Tokens the KV cache of a replica of `gpus` GPUs holds; 0 when the weights do not fit.
    pub fn tokens(&self, gpus: u32) -> f64 {
        let gpus = f64::from(gpus);
        let usable = gpus * (self.gpu_memory_gib * self.gpu_memory_utilization - self.reserve_gib) - self.weights_gib;
        (usable * GIB / self.kv_bytes_per_token).max(0.0)
    }
}

/// Engine settings as written in a profile or a variant; every field optional (a variant's
/// value wins over its profile's, which wins over the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// Step token budget (`--max-num-batched-tokens`, default 8192).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_num_batched_tokens: Option<u32>,
    /// Chunked prefill (`--enable-chunked-prefill`, default on as in vLLM V1): a prompt longer
    /// than what a step has left is split over steps that also decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunked_prefill: Option<bool>,
    /// KV-cache capacity of one replica, tokens (vLLM logs it as "GPU KV cache size").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_tokens: Option<f64>,
    /// Or the memory it is derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_memory: Option<KvCacheMemory>,
    /// KV block size, tokens (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size_tokens: Option<u32>,
}

impl EngineSpec {
    /// `self` where set, else `fallback`.
    pub fn or(&self, fallback: &EngineSpec) -> EngineSpec {
        EngineSpec {
            max_num_batched_tokens: self.max_num_batched_tokens.or(fallback.max_num_batched_tokens),
            chunked_prefill: self.chunked_prefill.or(fallback.chunked_prefill),
            kv_cache_tokens: self.kv_cache_tokens.or(if self.kv_cache_memory.is_some() {
                None
            } else {
                fallback.kv_cache_tokens
            }),
            kv_cache_memory: self.kv_cache_memory.or(if self.kv_cache_tokens.is_some() {
                None
            } else {
                fallback.kv_cache_memory
            }),
            block_size_tokens: self.block_size_tokens.or(fallback.block_size_tokens),
        }
    }

    /// The limits of a replica of `gpus` GPUs running at most `max_num_seqs` sequences.
    pub fn resolve(&self, max_num_seqs: u32, gpus: u32) -> EngineLimits {
        let kv_cache_tokens = self.kv_cache_tokens.or_else(|| self.kv_cache_memory.map(|m| m.tokens(gpus)));
        EngineLimits {
            max_num_seqs: max_num_seqs.max(1),
            max_num_batched_tokens: self.max_num_batched_tokens.unwrap_or(DEFAULT_MAX_NUM_BATCHED_TOKENS).max(1),
            chunked_prefill: self.chunked_prefill.unwrap_or(true),
            kv_cache_tokens,
            block_size_tokens: self.block_size_tokens.unwrap_or(DEFAULT_BLOCK_SIZE_TOKENS).max(1),
        }
    }
}

/// The resolved limits the model and the simulator use.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct EngineLimits {
    /// Most sequences in the running batch (`--max-num-seqs`; the variant's `max_batch`).
    pub max_num_seqs: u32,
    /// Tokens one step may process: the running decodes plus prefill chunks.
    pub max_num_batched_tokens: u32,
    pub chunked_prefill: bool,
    /// KV-cache tokens of one replica; `None` when not known (then only `max_num_seqs` bounds
    /// the batch, and the plan says so).
    pub kv_cache_tokens: Option<f64>,
    pub block_size_tokens: u32,
}

impl EngineLimits {
    /// Only a sequence limit (the model of profiles without engine information).
    pub fn sequences_only(max_num_seqs: u32) -> Self {
        EngineSpec::default().resolve(max_num_seqs, 1)
    }

    /// Mean KV tokens one request holds while it is in the batch, time-averaged: a request of
    /// prompt I and output O holds I + t tokens at its t-th decode step, so over its O steps it
    /// holds I + O/2 on average, and longer requests are in the batch longer (weight O). Block
    /// rounding adds half a block. Prefill replicas hold only the prompt.
    pub fn kv_tokens_per_request(&self, role: Role, input: &SizeDistribution, output: &SizeDistribution) -> f64 {
        let half_block = f64::from(self.block_size_tokens) / 2.0;
        match role {
            Role::Prefill => input.mean() + half_block,
            Role::Both | Role::Decode => {
                let mean_output = output.mean().max(1.0);
                input.mean() + output.second_moment() / (2.0 * mean_output) + half_block
            }
        }
    }

    /// Effective concurrency: min(max_num_seqs, what the KV cache holds of this workload).
    pub fn effective_concurrency(&self, role: Role, input: &SizeDistribution, output: &SizeDistribution) -> u32 {
        let by_kv = self.kv_cache_tokens.map(|kv| {
            let per_request = self.kv_tokens_per_request(role, input, output).max(1.0);
            (kv / per_request).floor().clamp(0.0, f64::from(u32::MAX)) as u32
        });
        match by_kv {
            Some(kv) => self.max_num_seqs.min(kv.max(1)),
            None => self.max_num_seqs,
        }
    }

    /// Which limit binds the effective concurrency.
    pub fn concurrency_limit(
        &self,
        role: Role,
        input: &SizeDistribution,
        output: &SizeDistribution,
    ) -> ConcurrencyLimit {
        if self.effective_concurrency(role, input, output) < self.max_num_seqs {
            ConcurrencyLimit::KvCache
        } else {
            ConcurrencyLimit::MaxNumSeqs
        }
    }
}

/// What bounds the running batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyLimit {
    MaxNumSeqs,
    KvCache,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_from_memory_matches_vllm_sizing() {
        // Qwen2.5-14B on one H100-80GB: 48 layers · 8 KV heads · 128 dims · 2 (K, V) · 2 bytes =
        // 196,608 bytes per token; ~27.5 GiB of weights; 0.9 · 80 − 3 − 27.5 = 41.5 GiB of KV.
        let memory = KvCacheMemory {
            gpu_memory_gib: 80.0,
            gpu_memory_utilization: 0.9,
            weights_gib: 27.5,
            kv_bytes_per_token: 196_608.0,
            reserve_gib: 3.0,
        };
        let tokens = memory.tokens(1);
        assert!((tokens - 41.5 * GIB / 196_608.0).abs() < 1.0, "{tokens}");
        assert!(tokens > 220_000.0 && tokens < 230_000.0);
        // Weights that do not fit leave no cache.
        assert_eq!(KvCacheMemory { weights_gib: 200.0, ..memory }.tokens(1), 0.0);
        // Tensor parallel: memory adds up, the weights are counted once.
        assert!(memory.tokens(2) > 2.0 * memory.tokens(1));
    }

    #[test]
    fn the_kv_cache_bounds_concurrency_for_long_requests() {
        // OPT-13B on an A100-40GB holds ~27k tokens: ~55 requests of 250 + 230 tokens.
        let limits = EngineSpec { kv_cache_tokens: Some(27_000.0), ..Default::default() }.resolve(256, 1);
        let input = SizeDistribution::constant(250.0);
        let output = SizeDistribution::constant(460.0);
        // Each holds 250 + 460/2 + 8 = 488 tokens on average.
        assert_eq!(limits.effective_concurrency(Role::Both, &input, &output), 55);
        assert_eq!(limits.concurrency_limit(Role::Both, &input, &output), ConcurrencyLimit::KvCache);
        // Short requests: max_num_seqs binds.
        let short = SizeDistribution::constant(20.0);
        assert_eq!(limits.effective_concurrency(Role::Both, &short, &short), 256);
        // A prefill replica holds only the prompt.
        assert!(limits.effective_concurrency(Role::Prefill, &input, &output) > 100);
    }

    #[test]
    fn longer_outputs_hold_more_on_average_than_their_mean_suggests() {
        // Length bias: requests with long outputs stay longer, so E[O²]/(2E[O]) > E[O]/2.
        let limits = EngineSpec { kv_cache_tokens: Some(100_000.0), ..Default::default() }.resolve(1024, 1);
        let input = SizeDistribution::constant(100.0);
        let constant = SizeDistribution::constant(400.0);
        let spread = SizeDistribution::from_mean(400.0);
        assert!(
            limits.kv_tokens_per_request(Role::Both, &input, &spread)
                > limits.kv_tokens_per_request(Role::Both, &input, &constant) + 100.0
        );
    }

    #[test]
    fn variant_settings_win_over_the_profile() {
        let profile =
            EngineSpec { max_num_batched_tokens: Some(2048), kv_cache_tokens: Some(1e5), ..Default::default() };
        let variant = EngineSpec {
            kv_cache_memory: Some(KvCacheMemory {
                gpu_memory_gib: 80.0,
                gpu_memory_utilization: 0.9,
                weights_gib: 10.0,
                kv_bytes_per_token: 1e5,
                reserve_gib: 3.0,
            }),
            ..Default::default()
        };
        let merged = variant.or(&profile);
        assert_eq!(merged.max_num_batched_tokens, Some(2048));
        // The variant's memory replaces the profile's token count.
        assert_eq!(merged.kv_cache_tokens, None);
        assert!(merged.kv_cache_memory.is_some());
        let limits = merged.resolve(256, 1);
        assert!(limits.chunked_prefill);
        assert_eq!(limits.block_size_tokens, 16);
    }
}
