//! `allot fit`: latency profiles (`models/*.yaml`) from benchmark CSV (DESIGN §3 "Fitting").
//!
//! Reads the CSV, groups it by (model, hardware, tensor-parallel degree), fits each group with
//! [`crate::analyze::fit`], prints one table line per group and writes one [`ProfileSpec`] file
//! per group that fitted. Groups whose fit is meaningless are skipped with the reason; the
//! command fails only when every group fails.
//!
//! ## The Splitwise format (`--format splitwise`)
//! Columns `model,hardware,prompt_size,batch_size,token_size,…,prompt_time,token_time,…,
//! tensor_parallel`, times in ms (see `shared/data/profiling/README.md`). The sweep design fixes
//! which rows feed which fit:
//! * ITL: the batch sweep, rows with `prompt_size = 512` and `token_size = 128`;
//!   x = `batch_size`, y = `token_time`.
//! * prefill: the prompt sweep (`batch_size = 1`, `token_size = 128`) ∪ the batch sweep;
//!   n = `batch_size`, I = `prompt_size`, y = `prompt_time`.
//! * the output sweep (`token_size ≠ 128`) is not used (it would only inform η, not fitted).
//!
//! ## Exclusions
//! A rule `MODEL:TP:BATCH` (each field may be `*`) drops matching rows from every fit of every
//! hardware, with a note in the profile's provenance. The format has default rules
//! ([`default_excludes`]); `--exclude` adds rules, `--no-default-excludes` drops the defaults.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};

use crate::analyze::fit::{
    DEFAULT_MIN_R2, FitOptions, ItlFit, PrefillFit, Residual, fit_itl, fit_prefill, largest_residuals, latency_params,
};
use crate::scenario::profile::{FitQuality, ProfileSpec, Provenance};

/// Provenance `source` of profiles fitted from the Splitwise data set.
pub const SPLITWISE_SOURCE: &str = "Mutinifni/splitwise-sim data/perf_model.csv @ \
     8f99e7dc9b407f4ce2488d03dd44c0b8b946dab0 (MIT), via shared/data/profiling/splitwise_perf_model.csv";

/// Prompt tokens of the Splitwise batch sweep.
pub const SPLITWISE_SWEEP_PROMPT: u32 = 512;
/// Output tokens of the Splitwise batch and prompt sweeps.
pub const SPLITWISE_SWEEP_OUTPUT: u32 = 128;

/// Significant digits kept in written profiles.
const SIGNIFICANT_DIGITS: usize = 6;
/// Residuals printed per fit.
const WORST_RESIDUALS: usize = 3;

/// Input data layouts `allot fit` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum DataFormat {
    /// Splitwise `perf_model.csv` (Mutinifni/splitwise-sim).
    #[default]
    Splitwise,
}

/// `allot fit`: fit latency profiles from benchmark CSV.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct FitArgs {
    /// Benchmark CSV file.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Layout of the CSV file.
    #[arg(long, value_enum, default_value_t = DataFormat::Splitwise)]
    pub format: DataFormat,
    /// Fit only this model (as named in the data).
    #[arg(long)]
    pub model: Option<String>,
    /// Fit only this hardware (as named in the data).
    #[arg(long)]
    pub hardware: Option<String>,
    /// Fit only this tensor-parallel degree (1 to 1024).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub tp: Option<u32>,
    /// Also fit ε, the prefill term in batch·prompt².
    #[arg(long)]
    pub quadratic_prefill: bool,
    /// Refuse fits whose R² is below this (0 to 1).
    #[arg(long, default_value_t = DEFAULT_MIN_R2, allow_negative_numbers = true,
          value_parser = super::bounds::Number::within(0.0, 1.0))]
    pub min_r2: f64,
    /// Drop rows matching MODEL:TP:BATCH (`*` matches anything); adds to the format's defaults.
    #[arg(long = "exclude", value_name = "MODEL:TP:BATCH")]
    pub exclude: Vec<ExcludeRule>,
    /// Do not apply the format's default exclusions.
    #[arg(long)]
    pub no_default_excludes: bool,
    /// Write one `<model>_<hardware>_tp<N>.yaml` per fitted group into this folder.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Print the profiles as YAML documents on stdout (the table then goes to stderr).
    #[arg(long)]
    pub print: bool,
}

impl FitArgs {
    /// The command line that reproduces this run, recorded in each profile's provenance.
    pub fn command_line(&self) -> String {
        let mut parts =
            vec!["allot".to_string(), "fit".into(), "--data".into(), shell_word(&self.data.display().to_string())];
        if self.format != DataFormat::default() {
            parts.push("--format".into());
            if let Some(v) = self.format.to_possible_value() {
                parts.push(v.get_name().to_string());
            }
        }
        for (flag, value) in [("--model", &self.model), ("--hardware", &self.hardware)] {
            if let Some(v) = value {
                parts.push(flag.into());
                parts.push(shell_word(v));
            }
        }
        if let Some(tp) = self.tp {
            parts.push("--tp".into());
            parts.push(tp.to_string());
        }
        if self.quadratic_prefill {
            parts.push("--quadratic-prefill".into());
        }
        if self.min_r2 != DEFAULT_MIN_R2 {
            parts.push("--min-r2".into());
            parts.push(self.min_r2.to_string());
        }
        if self.no_default_excludes {
            parts.push("--no-default-excludes".into());
        }
        for rule in &self.exclude {
            parts.push("--exclude".into());
            parts.push(shell_word(&rule.to_string()));
        }
        if let Some(dir) = &self.out_dir {
            parts.push("--out-dir".into());
            parts.push(shell_word(&dir.display().to_string()));
        }
        if self.print {
            parts.push("--print".into());
        }
        parts.join(" ")
    }

    /// The exclusion rules in force: the format's defaults (unless disabled), then `--exclude`.
    pub fn exclusion_rules(&self) -> Vec<ExcludeRule> {
        let mut rules = if self.no_default_excludes { Vec::new() } else { default_excludes(self.format) };
        rules.extend(self.exclude.iter().cloned());
        rules
    }
}

fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Rows to drop: `MODEL:TP:BATCH`, each field `*` for any. Applies to every hardware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExcludeRule {
    pub model: Option<String>,
    pub tensor_parallel: Option<u32>,
    pub batch_size: Option<u32>,
    /// Why, recorded in the provenance notes of affected profiles.
    pub reason: String,
}

impl ExcludeRule {
    pub fn matches(&self, row: &SplitwiseRow) -> bool {
        self.model.as_ref().is_none_or(|m| *m == row.model)
            && self.tensor_parallel.is_none_or(|tp| tp == row.tensor_parallel)
            && self.batch_size.is_none_or(|b| b == row.batch_size)
    }
}

impl fmt::Display for ExcludeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_star = |v: Option<String>| v.unwrap_or_else(|| "*".into());
        write!(
            f,
            "{}:{}:{}",
            or_star(self.model.clone()),
            or_star(self.tensor_parallel.map(|v| v.to_string())),
            or_star(self.batch_size.map(|v| v.to_string()))
        )
    }
}

impl FromStr for ExcludeRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = s.split(':').collect();
        let [model, tp, batch] = fields.as_slice() else {
            return Err(format!("exclusion rule {s:?}: expected MODEL:TP:BATCH (use * for any)"));
        };
        let number = |field: &str, name: &str| -> Result<Option<u32>, String> {
            if field == "*" {
                Ok(None)
            } else {
                field
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("exclusion rule {s:?}: {name} {field:?} is not a whole number or *"))
            }
        };
        if model.is_empty() {
            return Err(format!("exclusion rule {s:?}: empty model (use * for any)"));
        }
        Ok(ExcludeRule {
            model: (*model != "*").then(|| model.to_string()),
            tensor_parallel: number(tp, "TP")?,
            batch_size: number(batch, "batch size")?,
            reason: "excluded by --exclude".into(),
        })
    }
}

/// The exclusions a data format applies unless `--no-default-excludes`.
///
/// Splitwise: llama2-70b at TP 2 and batch 64 is a memory-limited run on every GPU — both
/// prompt_time and token_time *drop* from batch 32 to 64 (A100: prefill 6,607 → 796 ms).
pub fn default_excludes(format: DataFormat) -> Vec<ExcludeRule> {
    match format {
        DataFormat::Splitwise => vec![ExcludeRule {
            model: Some("llama2-70b".into()),
            tensor_parallel: Some(2),
            batch_size: Some(64),
            reason: "known anomaly: llama2-70b TP 2 batch 64 is a memory-limited run (2×80 GB barely holds the \
                     fp16 weights); prompt_time and token_time both drop from batch 32 to 64. See \
                     shared/data/profiling/README.md"
                .into(),
        }],
    }
}

/// One data row of a Splitwise `perf_model.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitwiseRow {
    /// Line number in the file (1 = header).
    pub line: u64,
    pub model: String,
    pub hardware: String,
    pub prompt_size: u32,
    pub batch_size: u32,
    pub token_size: u32,
    pub prompt_time_ms: f64,
    pub token_time_ms: f64,
    pub tensor_parallel: u32,
}

/// Parse Splitwise CSV; `source` names the input in errors (which name file, line and column).
pub fn parse_splitwise<R: Read>(reader: R, source: &str) -> anyhow::Result<Vec<SplitwiseRow>> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(reader);
    let headers = csv.headers().with_context(|| format!("{source}: cannot read the CSV header"))?.clone();
    let column = |name: &str| -> anyhow::Result<usize> {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            anyhow!("{source}: missing column `{name}` (header: {})", headers.iter().collect::<Vec<_>>().join(","))
        })
    };
    let c_model = column("model")?;
    let c_hardware = column("hardware")?;
    let c_prompt = column("prompt_size")?;
    let c_batch = column("batch_size")?;
    let c_token = column("token_size")?;
    let c_prompt_time = column("prompt_time")?;
    let c_token_time = column("token_time")?;
    let c_tp = column("tensor_parallel")?;

    let mut rows = Vec::new();
    for record in csv.records() {
        let record = record.with_context(|| format!("{source}: malformed CSV"))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |c: usize, name: &str| -> anyhow::Result<&str> {
            match record.get(c) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => bail!("{source}: line {line}, column `{name}`: empty or missing"),
            }
        };
        let count = |c: usize, name: &str| -> anyhow::Result<u32> {
            let v = field(c, name)?;
            match v.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{source}: line {line}, column `{name}`: {v:?} is not a positive whole number"),
            }
        };
        let time = |c: usize, name: &str| -> anyhow::Result<f64> {
            let v = field(c, name)?;
            match v.parse::<f64>() {
                Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
                _ => bail!("{source}: line {line}, column `{name}`: {v:?} is not a positive finite time in ms"),
            }
        };
        rows.push(SplitwiseRow {
            line,
            model: field(c_model, "model")?.to_string(),
            hardware: field(c_hardware, "hardware")?.to_string(),
            prompt_size: count(c_prompt, "prompt_size")?,
            batch_size: count(c_batch, "batch_size")?,
            token_size: count(c_token, "token_size")?,
            prompt_time_ms: time(c_prompt_time, "prompt_time")?,
            token_time_ms: time(c_token_time, "token_time")?,
            tensor_parallel: count(c_tp, "tensor_parallel")?,
        });
    }
    Ok(rows)
}

/// (model, hardware, tensor-parallel degree): one profile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub model: String,
    pub hardware: String,
    pub tensor_parallel: u32,
}

impl GroupKey {
    /// Profile name, `model/hardware/tpN`.
    pub fn profile_name(&self) -> String {
        format!("{}/{}/tp{}", self.model, self.hardware, self.tensor_parallel)
    }

    /// File name, `model_hardware_tpN.yaml`.
    pub fn file_name(&self) -> String {
        format!("{}_{}_tp{}.yaml", self.model, self.hardware, self.tensor_parallel)
    }

    pub fn data_selector(&self) -> String {
        format!("model={} hardware={} tensor_parallel={}", self.model, self.hardware, self.tensor_parallel)
    }
}

/// Rows removed from a group by one rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Exclusion {
    pub rule: ExcludeRule,
    /// File line numbers of the removed rows.
    pub lines: Vec<u64>,
}

/// The rows of one group, split by the fit they feed.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub key: GroupKey,
    /// Batch sweep rows (ITL fit), file order.
    pub itl_rows: Vec<SplitwiseRow>,
    /// Prompt sweep ∪ batch sweep rows (prefill fit), file order.
    pub prefill_rows: Vec<SplitwiseRow>,
    /// Rows dropped by exclusion rules.
    pub excluded: Vec<Exclusion>,
    /// Rows identical in every parsed field (times to the bit) to an earlier row, counted once.
    pub duplicate_lines: Vec<u64>,
    /// Rows in no fit (the output sweep).
    pub unused_rows: usize,
}

/// Which optional filters select groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupFilter {
    pub model: Option<String>,
    pub hardware: Option<String>,
    pub tensor_parallel: Option<u32>,
}

impl GroupFilter {
    fn matches(&self, row: &SplitwiseRow) -> bool {
        self.model.as_ref().is_none_or(|m| *m == row.model)
            && self.hardware.as_ref().is_none_or(|h| *h == row.hardware)
            && self.tensor_parallel.is_none_or(|tp| tp == row.tensor_parallel)
    }
}

/// Group Splitwise rows by (model, hardware, TP), apply exclusions (first matching rule wins),
/// drop exact duplicates and split each group's rows into the ITL and prefill sets. Sorted by key.
///
/// Duplicates: in the Splitwise file the point shared by the three sweeps (batch 1, prompt 512,
/// output 128) is listed once per sweep with bit-identical times — copies of one measurement,
/// not repetitions — so a row equal to an earlier one in every parsed field is counted once.
pub fn group_splitwise(rows: &[SplitwiseRow], filter: &GroupFilter, rules: &[ExcludeRule]) -> Vec<Group> {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut seen = HashSet::new();
    for row in rows.iter().filter(|r| filter.matches(r)) {
        let key =
            GroupKey { model: row.model.clone(), hardware: row.hardware.clone(), tensor_parallel: row.tensor_parallel };
        let group = groups.entry(key.clone()).or_insert_with(|| Group {
            key,
            itl_rows: Vec::new(),
            prefill_rows: Vec::new(),
            excluded: Vec::new(),
            duplicate_lines: Vec::new(),
            unused_rows: 0,
        });
        if let Some(rule) = rules.iter().find(|r| r.matches(row)) {
            match group.excluded.iter_mut().find(|e| e.rule == *rule) {
                Some(e) => e.lines.push(row.line),
                None => group.excluded.push(Exclusion { rule: rule.clone(), lines: vec![row.line] }),
            }
            continue;
        }
        let identity = (
            &row.model,
            &row.hardware,
            row.tensor_parallel,
            row.prompt_size,
            row.batch_size,
            row.token_size,
            row.prompt_time_ms.to_bits(),
            row.token_time_ms.to_bits(),
        );
        if !seen.insert(identity) {
            group.duplicate_lines.push(row.line);
            continue;
        }
        let batch_sweep = row.prompt_size == SPLITWISE_SWEEP_PROMPT && row.token_size == SPLITWISE_SWEEP_OUTPUT;
        let prompt_sweep = row.batch_size == 1 && row.token_size == SPLITWISE_SWEEP_OUTPUT;
        if batch_sweep {
            group.itl_rows.push(row.clone());
        }
        if batch_sweep || prompt_sweep {
            group.prefill_rows.push(row.clone());
        } else {
            group.unused_rows += 1;
        }
    }
    groups.into_values().collect()
}

/// A group that fitted.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupFit {
    pub key: GroupKey,
    pub itl: ItlFit,
    pub prefill: PrefillFit,
    /// Largest batch size in the ITL fit.
    pub max_batch: u32,
    pub notes: Vec<String>,
}

/// Fit one group; `extra_notes` (e.g. from [`cross_group_notes`]) are appended to its notes.
pub fn fit_group(
    group: &Group,
    quadratic: bool,
    options: &FitOptions,
    extra_notes: &[String],
) -> anyhow::Result<GroupFit> {
    let itl_points: Vec<(f64, f64)> =
        group.itl_rows.iter().map(|r| (f64::from(r.batch_size), r.token_time_ms)).collect();
    let prefill_points: Vec<(f64, f64, f64)> = group
        .prefill_rows
        .iter()
        .map(|r| (f64::from(r.batch_size), f64::from(r.prompt_size), r.prompt_time_ms))
        .collect();
    let itl = fit_itl(&itl_points, options)?;
    let prefill = fit_prefill(&prefill_points, quadratic, options)?;
    let max_batch = group.itl_rows.iter().map(|r| r.batch_size).max().unwrap_or(0);

    let mut notes = Vec::new();
    for e in &group.excluded {
        notes.push(format!(
            "excluded {} row(s) matching {} (lines {}): {}",
            e.lines.len(),
            e.rule,
            line_ranges(&e.lines),
            e.rule.reason
        ));
    }
    if !group.duplicate_lines.is_empty() {
        notes.push(format!(
            "{} row(s) (lines {}) repeat earlier rows exactly (the batch 1 / prompt {SPLITWISE_SWEEP_PROMPT} / output \
             {SPLITWISE_SWEEP_OUTPUT} point is listed once per sweep with identical times) and were counted once",
            group.duplicate_lines.len(),
            line_ranges(&group.duplicate_lines)
        ));
    }
    let symbol = |name: &'static str| -> &'static str {
        match name {
            "alpha" => "α",
            "beta" => "β",
            "gamma" => "γ",
            "delta" => "δ",
            "epsilon" => "ε",
            other => other,
        }
    };
    for (fit, names) in [(&itl.fit, ["alpha", "beta", ""]), (&prefill.fit, ["gamma", "delta", "epsilon"])] {
        for &name in &fit.clamped {
            let index = names.iter().position(|n| *n == name).unwrap_or(0);
            let unconstrained = fit.unconstrained.get(index).copied().unwrap_or(f64::NAN);
            let why = match name {
                "gamma" => " (prefill grows faster than linearly in batch·prompt on this hardware)",
                "epsilon" => " (prefill is not super-linear in prompt length here)",
                _ => "",
            };
            notes.push(format!(
                "{} clamped to 0: the unconstrained least-squares value was {}{why}; this is the exact \
                 non-negative least-squares fit",
                symbol(name),
                round_sig(unconstrained, 4)
            ));
        }
    }
    notes.push(format!(
        "ITL measured at prompt {SPLITWISE_SWEEP_PROMPT} / output {SPLITWISE_SWEEP_OUTPUT} tokens only; the context \
         term η is not fitted (0)"
    ));
    notes.extend(extra_notes.iter().cloned());
    Ok(GroupFit { key: group.key.clone(), itl, prefill, max_batch, notes })
}

/// For each group, notes on data that is derived from another group of the same model and TP
/// rather than measured separately: `token_time` bit-identical row for row (ITL), or
/// `prompt_time` an exact constant multiple row for row (prefill). In the Splitwise file the
/// `h100-80gb-pcap` rows are the `h100-80gb` rows with `prompt_time × 1.3` and every other
/// column copied.
pub fn cross_group_notes(groups: &[Group]) -> Vec<Vec<String>> {
    let sweep = |rows: &[SplitwiseRow]| -> Vec<(u32, u32, u32)> {
        rows.iter().map(|r| (r.prompt_size, r.batch_size, r.token_size)).collect()
    };
    let token_bits = |rows: &[SplitwiseRow]| -> Vec<u64> { rows.iter().map(|r| r.token_time_ms.to_bits()).collect() };
    groups
        .iter()
        .map(|g| {
            let mut notes = Vec::new();
            for o in groups {
                if o.key.model != g.key.model
                    || o.key.tensor_parallel != g.key.tensor_parallel
                    || o.key.hardware == g.key.hardware
                {
                    continue;
                }
                if !g.itl_rows.is_empty()
                    && sweep(&g.itl_rows) == sweep(&o.itl_rows)
                    && token_bits(&g.itl_rows) == token_bits(&o.itl_rows)
                {
                    notes.push(format!(
                        "token_time is identical, row for row, to the {} rows of this model and TP: the ITL data \
                         is not an independent measurement, so α and β equal that profile's",
                        o.key.hardware
                    ));
                }
                if !g.prefill_rows.is_empty() && sweep(&g.prefill_rows) == sweep(&o.prefill_rows) {
                    let ratios: Vec<f64> = g
                        .prefill_rows
                        .iter()
                        .zip(&o.prefill_rows)
                        .map(|(a, b)| a.prompt_time_ms / b.prompt_time_ms)
                        .collect();
                    let first = ratios[0];
                    if first != 1.0 && ratios.iter().all(|r| (r - first).abs() <= 1e-9 * first) {
                        let (slow, fast, factor) = if first > 1.0 {
                            (&g.key.hardware, &o.key.hardware, first)
                        } else {
                            (&o.key.hardware, &g.key.hardware, 1.0 / first)
                        };
                        notes.push(format!(
                            "prompt_time of {slow} is exactly {}× that of {fast} on every row (same model and TP): \
                             one is derived from the other, not measured separately",
                            round_sig(factor, 6)
                        ));
                    }
                }
            }
            notes
        })
        .collect()
}

/// The profile file content for a fitted group (numbers rounded to 6 significant digits).
pub fn to_profile(fit: &GroupFit, source: &str, command: &str) -> ProfileSpec {
    let mut params = latency_params(&fit.itl, &fit.prefill);
    for v in [
        &mut params.alpha_ms,
        &mut params.beta_ms,
        &mut params.gamma_ms,
        &mut params.delta_ms,
        &mut params.prefill_quadratic_ms,
        &mut params.itl_context_ms,
    ] {
        *v = round_sig(*v, SIGNIFICANT_DIGITS);
    }
    let rounded = |q: &FitQuality| FitQuality {
        r2: round_sig(q.r2, SIGNIFICANT_DIGITS),
        rmse_ms: round_sig(q.rmse_ms, SIGNIFICANT_DIGITS),
        mape: round_sig(q.mape, SIGNIFICANT_DIGITS),
        points: q.points,
    };
    ProfileSpec {
        name: fit.key.profile_name(),
        params,
        max_batch_profiled: Some(fit.max_batch),
        provenance: Some(Provenance {
            source: source.to_string(),
            command: Some(command.to_string()),
            data_selector: Some(fit.key.data_selector()),
            itl_fit: Some(rounded(&fit.itl.fit.quality)),
            prefill_fit: Some(rounded(&fit.prefill.fit.quality)),
            notes: fit.notes.clone(),
        }),
    }
}

/// `x` rounded to `digits` significant digits.
fn round_sig(x: f64, digits: usize) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{:.*e}", digits.saturating_sub(1), x).parse().unwrap_or(x)
}

/// `1-5, 9` style list of sorted line numbers.
fn line_ranges(lines: &[u64]) -> String {
    let mut sorted = lines.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    out.join(", ")
}

const TABLE_HEADER: &str =
    "model        hardware         tp     α ms  β ms/req  R² ITL  MAPE     γ ms  δ ms/tok    ε ms/tok²  R² pre  MAPE";

fn table_line(fit: &GroupFit) -> String {
    let k = &fit.key;
    let (i, p) = (&fit.itl, &fit.prefill);
    let eps = if p.quadratic { format!("{:>11.3e}", p.epsilon_ms) } else { format!("{:>11}", "-") };
    format!(
        "{:<12} {:<16} {:>2} {:>8.2} {:>9.4} {:>7.4} {:>5.1}% {:>8.2} {:>9.5} {eps} {:>7.4} {:>4.1}%",
        k.model,
        k.hardware,
        k.tensor_parallel,
        i.alpha_ms,
        i.beta_ms,
        i.fit.quality.r2,
        100.0 * i.fit.quality.mape,
        p.gamma_ms,
        p.delta_ms,
        p.fit.quality.r2,
        100.0 * p.fit.quality.mape,
    )
}

fn residual_line(group: &Group, fit: &GroupFit) -> String {
    let describe = |rows: &[SplitwiseRow], residuals: &[Residual], prefill: bool| -> String {
        largest_residuals(residuals, WORST_RESIDUALS)
            .iter()
            .filter_map(|r| {
                let row = rows.get(r.index)?;
                let at = if prefill {
                    format!("{}×{}", row.batch_size, row.prompt_size)
                } else {
                    format!("b{}", row.batch_size)
                };
                Some(format!("{at} {:+.2} (line {})", r.residual_ms, row.line))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "    largest residuals (ms) ITL: {}; prefill: {}",
        describe(&group.itl_rows, &fit.itl.fit.residuals, false),
        describe(&group.prefill_rows, &fit.prefill.fit.residuals, true)
    )
}

/// Run `allot fit`.
pub fn run(args: &FitArgs) -> anyhow::Result<()> {
    if !(args.min_r2.is_finite() && args.min_r2 <= 1.0) {
        bail!("--min-r2 {}: must be a finite number ≤ 1", args.min_r2);
    }
    let path = &args.data;
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let rows = match args.format {
        DataFormat::Splitwise => parse_splitwise(io::BufReader::new(file), &path.display().to_string())?,
    };
    let filter = GroupFilter { model: args.model.clone(), hardware: args.hardware.clone(), tensor_parallel: args.tp };
    let groups = group_splitwise(&rows, &filter, &args.exclusion_rules());
    if groups.is_empty() {
        let mut wanted = Vec::new();
        if let Some(m) = &args.model {
            wanted.push(format!("--model {m}"));
        }
        if let Some(h) = &args.hardware {
            wanted.push(format!("--hardware {h}"));
        }
        if let Some(tp) = args.tp {
            wanted.push(format!("--tp {tp}"));
        }
        if wanted.is_empty() {
            bail!("{}: no data rows", path.display());
        }
        bail!("{}: no rows match {}", path.display(), wanted.join(" "));
    }
    let identical = cross_group_notes(&groups);
    let options = FitOptions { min_r2: args.min_r2 };
    let command = args.command_line();

    let stdout = io::stdout();
    let stderr = io::stderr();
    let mut table: Box<dyn Write> = if args.print { Box::new(stderr.lock()) } else { Box::new(stdout.lock()) };
    writeln!(table, "{TABLE_HEADER}")?;
    let mut profiles = Vec::new();
    let mut failures = 0usize;
    for (group, same) in groups.iter().zip(&identical) {
        match fit_group(group, args.quadratic_prefill, &options, same) {
            Ok(fit) => {
                writeln!(table, "{}", table_line(&fit))?;
                writeln!(table, "{}", residual_line(group, &fit))?;
                for note in fit.notes.iter().filter(|n| n.contains("clamped") || n.starts_with("excluded")) {
                    writeln!(table, "    note: {note}")?;
                }
                profiles.push((group.key.file_name(), to_profile(&fit, SPLITWISE_SOURCE, &command)));
            }
            Err(e) => {
                failures += 1;
                writeln!(
                    table,
                    "{:<12} {:<16} {:>2} SKIPPED: {e:#}",
                    group.key.model, group.key.hardware, group.key.tensor_parallel
                )?;
            }
        }
    }
    table.flush()?;
    drop(table);

    if let Some(dir) = &args.out_dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for (file_name, profile) in &profiles {
        let text = profile_file_text(profile)?;
        if let Some(dir) = &args.out_dir {
            let out = dir.join(file_name);
            write_file(&out, &text)?;
        }
        if args.print {
            let mut out = stdout.lock();
            writeln!(out, "---\n{text}")?;
        }
    }
    if let Some(dir) = &args.out_dir {
        eprintln!("wrote {} profile(s) to {}", profiles.len(), dir.display());
    }
    if profiles.is_empty() {
        bail!("every group failed to fit ({failures} group(s)); no profile written");
    }
    Ok(())
}

/// The text of a profile file: a header comment and the YAML document, newline-terminated.
pub fn profile_file_text(profile: &ProfileSpec) -> anyhow::Result<String> {
    let yaml =
        serde_saphyr::to_string(profile).with_context(|| format!("cannot serialize profile {}", profile.name))?;
    let newline = if yaml.ends_with('\n') { "" } else { "\n" };
    Ok(format!("# Generated by `allot fit`; regenerate with provenance.command rather than editing.\n{yaml}{newline}"))
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNIPPET: &str = "\
model,hardware,prompt_size,batch_size,token_size,peak_power,average_power,prompt_time,token_time,e2e_time,tensor_parallel
m,gpu,512,1,128,0,0,100,30.0,0,2
m,gpu,512,2,128,0,0,190,30.6,0,2
m,gpu,512,4,128,0,0,370,31.2,0,2
m,gpu,512,8,128,0,0,730,32.4,0,2
m,gpu,512,64,128,0,0,50,20.0,0,2
m,gpu,1024,1,128,0,0,190,30.1,0,2
m,gpu,2048,1,128,0,0,370,30.2,0,2
m,gpu,512,1,1024,0,0,100,33.0,0,2
m,gpu-pcap,512,1,128,0,0,120,30.0,0,2
m,gpu-pcap,512,2,128,0,0,230,30.6,0,2
m,gpu-pcap,512,4,128,0,0,450,31.2,0,2
m,gpu-pcap,512,8,128,0,0,890,32.4,0,2
m,gpu,512,1,128,0,0,60,25.0,0,8
m,gpu,512,1,128,0,0,100,30.0,0,2
";

    fn rule(s: &str) -> ExcludeRule {
        s.parse().expect("rule")
    }

    #[test]
    fn parses_groups_and_excludes() {
        let rows = parse_splitwise(SNIPPET.as_bytes(), "snippet.csv").expect("parse");
        assert_eq!(rows.len(), 14);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[4].batch_size, 64);

        let groups = group_splitwise(&rows, &GroupFilter::default(), &[rule("m:2:64")]);
        let names: Vec<String> = groups.iter().map(|g| g.key.profile_name()).collect();
        assert_eq!(names, ["m/gpu/tp2", "m/gpu/tp8", "m/gpu-pcap/tp2"]);
        let g = &groups[0];
        assert_eq!(g.itl_rows.iter().map(|r| r.batch_size).collect::<Vec<_>>(), [1, 2, 4, 8]);
        assert_eq!(
            g.prefill_rows.iter().map(|r| (r.batch_size, r.prompt_size)).collect::<Vec<_>>(),
            [(1, 512), (2, 512), (4, 512), (8, 512), (1, 1024), (1, 2048)]
        );
        assert_eq!(g.unused_rows, 1, "the output-sweep row is unused");
        assert_eq!(g.excluded.len(), 1);
        assert_eq!(g.excluded[0].lines, [6]);
        assert_eq!(g.duplicate_lines, [15], "an exact copy of line 2 is counted once");
        assert!(groups[1].excluded.is_empty() && groups[2].excluded.is_empty());

        // Without the rule the batch-64 row is in both fits.
        let groups = group_splitwise(&rows, &GroupFilter::default(), &[]);
        assert_eq!(groups[0].itl_rows.len(), 5);
        // Filters.
        let filter = GroupFilter { hardware: Some("gpu".into()), tensor_parallel: Some(8), ..Default::default() };
        let groups = group_splitwise(&rows, &filter, &[]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].key.file_name(), "m_gpu_tp8.yaml");
    }

    #[test]
    fn fits_snippet_and_notes_exclusions_and_identical_itl() {
        let rows = parse_splitwise(SNIPPET.as_bytes(), "snippet.csv").expect("parse");
        let groups = group_splitwise(&rows, &GroupFilter::default(), &default_excludes_for("m"));
        let identical = cross_group_notes(&groups);
        assert_eq!(identical[0].len(), 1);
        assert!(identical[0][0].starts_with("token_time is identical, row for row, to the gpu-pcap rows"));
        assert_eq!(identical[2].len(), 1);
        assert!(identical[2][0].contains("the gpu rows"));
        assert!(identical[1].is_empty());
        let fit = fit_group(&groups[0], false, &FitOptions::default(), &identical[0]).expect("fit");
        assert_eq!(fit.max_batch, 8);
        assert!(fit.itl.beta_ms > 0.0 && fit.prefill.delta_ms > 0.0);
        assert!(fit.notes.iter().any(|n| n.starts_with("excluded 1 row(s) matching m:2:64 (lines 6)")));
        assert!(fit.notes.iter().any(|n| n.contains("gpu-pcap")));
        // prompt_time an exact multiple of another group's: noted on both sides.
        let scaled: Vec<SplitwiseRow> = rows
            .iter()
            .filter(|r| r.hardware == "gpu")
            .map(|r| SplitwiseRow {
                hardware: "gpu-slow".into(),
                prompt_time_ms: r.prompt_time_ms * 1.3,
                token_time_ms: r.token_time_ms + 1.0,
                ..r.clone()
            })
            .chain(rows.iter().filter(|r| r.hardware == "gpu").cloned())
            .collect();
        let groups2 = group_splitwise(&scaled, &GroupFilter { tensor_parallel: Some(2), ..Default::default() }, &[]);
        let notes = cross_group_notes(&groups2);
        let want = "prompt_time of gpu-slow is exactly 1.3× that of gpu on every row (same model and \
                    TP): one is derived from the other, not measured separately";
        assert_eq!(notes[0], [want]);
        assert_eq!(notes[1], [want]);
        let profile = to_profile(&fit, "test", "allot fit --data x");
        assert_eq!(profile.name, "m/gpu/tp2");
        let yaml = serde_saphyr::to_string(&profile).expect("yaml");
        let back: ProfileSpec = serde_saphyr::from_str(&yaml).expect("round trip");
        assert_eq!(back, profile);
        // The TP 8 group has one point: refused, not fitted.
        assert!(fit_group(&groups[1], false, &FitOptions::default(), &[]).is_err());
    }

    fn default_excludes_for(model: &str) -> Vec<ExcludeRule> {
        let mut rules = default_excludes(DataFormat::Splitwise);
        rules[0].model = Some(model.into());
        rules
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let bad = "model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel\n\
                   m,gpu,512,1,128,100,30,2\nm,gpu,512,x,128,100,30,2\n";
        let err = parse_splitwise(bad.as_bytes(), "bad.csv").unwrap_err().to_string();
        assert!(err.contains("bad.csv") && err.contains("line 3") && err.contains("batch_size"), "{err}");
        let bad = "model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel\n\
                   m,gpu,512,1,128,100,NaN,2\n";
        let err = parse_splitwise(bad.as_bytes(), "bad.csv").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("token_time"), "{err}");
        let err = parse_splitwise("model,hardware\n".as_bytes(), "h.csv").unwrap_err().to_string();
        assert!(err.contains("missing column `prompt_size`"), "{err}");
    }

    #[test]
    fn exclude_rules_parse_and_print() {
        let r = rule("llama2-70b:2:64");
        assert_eq!(r.to_string(), "llama2-70b:2:64");
        let r = rule("*:*:64");
        assert_eq!((r.model.clone(), r.tensor_parallel, r.batch_size), (None, None, Some(64)));
        assert_eq!(r.to_string(), "*:*:64");
        assert!("a:b".parse::<ExcludeRule>().is_err());
        assert!("a:two:64".parse::<ExcludeRule>().is_err());
        assert_eq!(default_excludes(DataFormat::Splitwise)[0].to_string(), "llama2-70b:2:64");
    }

    #[test]
    fn command_line_is_reproducible() {
        let args = FitArgs {
            data: "../shared/data/profiling/splitwise_perf_model.csv".into(),
            format: DataFormat::Splitwise,
            model: None,
            hardware: None,
            tp: Some(8),
            quadratic_prefill: true,
            min_r2: DEFAULT_MIN_R2,
            exclude: vec![rule("*:*:64")],
            no_default_excludes: false,
            out_dir: Some("models".into()),
            print: false,
        };
        assert_eq!(
            args.command_line(),
            "allot fit --data ../shared/data/profiling/splitwise_perf_model.csv --tp 8 --quadratic-prefill \
             --exclude '*:*:64' --out-dir models"
        );
        assert_eq!(args.exclusion_rules().len(), 2);
    }

    #[test]
    fn reproduces_reference_fit_on_real_data() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/profiling/splitwise_perf_model.csv");
        let Ok(file) = fs::File::open(path) else {
            println!("skipping: {path} not found");
            return;
        };
        let rows = parse_splitwise(io::BufReader::new(file), path).expect("parse");
        assert_eq!(rows.len(), 1260);
        let filter = GroupFilter {
            model: Some("llama2-70b".into()),
            hardware: Some("h100-80gb".into()),
            tensor_parallel: Some(8),
        };
        let groups = group_splitwise(&rows, &filter, &default_excludes(DataFormat::Splitwise));
        assert_eq!(groups.len(), 1);
        let fit = fit_group(&groups[0], false, &FitOptions::default(), &[]).expect("fit");
        let within = |v: f64, want: f64| (v - want).abs() <= 0.01 * want;
        assert!(within(fit.itl.alpha_ms, 29.56), "α = {}", fit.itl.alpha_ms);
        assert!(within(fit.itl.beta_ms, 0.313), "β = {}", fit.itl.beta_ms);
        assert!(fit.itl.fit.quality.r2 >= 0.98, "R² = {}", fit.itl.fit.quality.r2);
        assert!(within(fit.prefill.gamma_ms, 11.3), "γ = {}", fit.prefill.gamma_ms);
        assert!(within(fit.prefill.delta_ms, 0.0909), "δ = {}", fit.prefill.delta_ms);
        assert_eq!(fit.max_batch, 64);

        // The anomaly: with the default rule, TP 2 stops at batch 32 and the fit is sound.
        let filter = GroupFilter {
            model: Some("llama2-70b".into()),
            hardware: Some("a100-80gb".into()),
            tensor_parallel: Some(2),
        };
        let groups = group_splitwise(&rows, &filter, &default_excludes(DataFormat::Splitwise));
        assert_eq!(groups[0].excluded[0].lines.len(), 5);
        let fit = fit_group(&groups[0], false, &FitOptions::default(), &[]).expect("fit");
        assert_eq!(fit.max_batch, 32);
        assert_eq!(groups[0].duplicate_lines.len(), 10, "the shared sweep point is listed three times");
        // A100 prefill has a negative unconstrained intercept: clamped, and said so.
        assert!(fit.prefill.fit.unconstrained[0] < 0.0);
        assert_eq!(fit.prefill.gamma_ms, 0.0);
        assert!(fit.notes.iter().any(|n| n.starts_with("γ clamped to 0")));
    }

    /// The committed `models/*.yaml` are exactly what the recorded command produces now.
    #[test]
    fn committed_profiles_are_reproducible() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/profiling/splitwise_perf_model.csv");
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let Ok(file) = fs::File::open(data) else {
            println!("skipping: {data} not found");
            return;
        };
        let rows = parse_splitwise(io::BufReader::new(file), data).expect("parse");
        let args = FitArgs {
            data: "../shared/data/profiling/splitwise_perf_model.csv".into(),
            format: DataFormat::Splitwise,
            model: None,
            hardware: None,
            tp: None,
            quadratic_prefill: true,
            min_r2: DEFAULT_MIN_R2,
            exclude: Vec::new(),
            no_default_excludes: false,
            out_dir: Some("models".into()),
            print: false,
        };
        let groups = group_splitwise(&rows, &GroupFilter::default(), &args.exclusion_rules());
        let identical = cross_group_notes(&groups);
        let mut checked = 0;
        for (group, same) in groups.iter().zip(&identical) {
            let fit = fit_group(group, true, &FitOptions::default(), same).expect("every group fits");
            let want = profile_file_text(&to_profile(&fit, SPLITWISE_SOURCE, &args.command_line())).expect("yaml");
            let path = models.join(group.key.file_name());
            let have = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(have, want, "{} is stale: rerun the command in its provenance", path.display());
            let parsed: ProfileSpec = serde_saphyr::from_str(&have).expect("profile parses");
            assert_eq!(parsed, to_profile(&fit, SPLITWISE_SOURCE, &args.command_line()));
            checked += 1;
        }
        assert_eq!(checked, 12);
    }
}
