//! The Splitwise profiling format (`Mutinifni/splitwise-sim` `data/perf_model.csv`): per-batch
//! prefill and decode times measured in isolation, fitted by (non-negative) least squares.
//!
//! Columns `model,hardware,prompt_size,batch_size,token_size,…,prompt_time,token_time,…,
//! tensor_parallel`, times in ms (see `shared/data/profiling/README.md`). The sweep design fixes
//! which rows feed which fit:
//! * ITL: the batch sweep (`prompt_size = 512`, `token_size = 128`, batch varies) and the output
//!   sweep (batch 1, `prompt_size = 512`, `token_size` varies): `ITL(n, L) = α + β·n + η·n·L`
//!   with L = prompt + output/2.
//! * prefill: the prompt sweep (`batch_size = 1`, `token_size = 128`) ∪ the batch sweep;
//!   n = `batch_size`, I = `prompt_size`, y = `prompt_time`.
//!
//! A rule `MODEL:TP:BATCH` (each field may be `*`) drops matching rows from every fit of every
//! hardware, with a note in the profile's provenance ([`default_excludes`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use super::linear::{FitError, FitOptions, ItlFit, PrefillFit, fit_itl_with_context, fit_prefill, latency_params};
use crate::scenario::profile::{FitQuality, ProfileSpec, Provenance};

/// Provenance `source` of profiles fitted from the Splitwise data set.
pub const SPLITWISE_SOURCE: &str = "Mutinifni/splitwise-sim data/perf_model.csv @ \
     8f99e7dc9b407f4ce2488d03dd44c0b8b946dab0 (MIT), via models/data/splitwise_perf_model.csv";

/// Prompt tokens of the Splitwise batch sweep.
pub const SPLITWISE_SWEEP_PROMPT: u32 = 512;
/// Output tokens of the Splitwise batch and prompt sweeps.
pub const SPLITWISE_SWEEP_OUTPUT: u32 = 128;

/// Significant digits kept in written profiles.
pub const SIGNIFICANT_DIGITS: usize = 6;

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
pub fn default_excludes() -> Vec<ExcludeRule> {
    {
        vec![ExcludeRule {
            model: Some("llama2-70b".into()),
            tensor_parallel: Some(2),
            batch_size: Some(64),
            reason: "known anomaly: llama2-70b TP 2 batch 64 is a memory-limited run (2×80 GB barely holds the \
                     fp16 weights); prompt_time and token_time both drop from batch 32 to 64. See \
                     shared/data/profiling/README.md"
                .into(),
        }]
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

/// Why a Splitwise file could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SplitwiseError {
    #[error("{file}: {message}")]
    Malformed { file: String, message: String },
    #[error("{file}: missing column `{column}` (header: {header})")]
    MissingColumn { file: String, column: &'static str, header: String },
    #[error("{file}: line {line}, column `{column}`: {message}")]
    Field { file: String, line: u64, column: &'static str, message: String },
    #[error(
        "{file}: column `{column}` looks like {unit}, not milliseconds (median {median} for rows where a real \
         GPU takes at least {floor_ms} ms); convert it to ms"
    )]
    Units { file: String, column: &'static str, unit: &'static str, median: f64, floor_ms: f64 },
}

/// Parse Splitwise CSV; `source` names the input in errors (which name file, line and column).
/// Times must be in milliseconds: a column whose values are implausibly small for a GPU step
/// (seconds written where ms are expected) is refused, not fitted.
pub fn parse_splitwise(text: &str, source: &str) -> Result<Vec<SplitwiseRow>, SplitwiseError> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let malformed = |e: csv::Error| SplitwiseError::Malformed { file: source.to_string(), message: e.to_string() };
    let headers = csv.headers().map_err(malformed)?.clone();
    let column = |name: &'static str| -> Result<usize, SplitwiseError> {
        headers.iter().position(|h| h == name).ok_or_else(|| SplitwiseError::MissingColumn {
            file: source.to_string(),
            column: name,
            header: headers.iter().collect::<Vec<_>>().join(","),
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
        let record = record.map_err(malformed)?;
        let line = record.position().map_or(0, |p| p.line());
        let bad = |column: &'static str, message: String| SplitwiseError::Field {
            file: source.to_string(),
            line,
            column,
            message,
        };
        let field = |c: usize, name: &'static str| -> Result<&str, SplitwiseError> {
            match record.get(c) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(bad(name, "empty or missing".into())),
            }
        };
        let count = |c: usize, name: &'static str| -> Result<u32, SplitwiseError> {
            let v = field(c, name)?;
            match v.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(name, format!("{v:?} is not a positive whole number"))),
            }
        };
        let time = |c: usize, name: &'static str| -> Result<f64, SplitwiseError> {
            let v = field(c, name)?;
            match v.parse::<f64>() {
                Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
                _ => Err(bad(name, format!("{v:?} is not a positive finite time in ms"))),
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
    check_units(&rows, source)?;
    Ok(rows)
}

/// A decode step of a real GPU serving an LLM takes at least ~1 ms, a prefill of 128 or more
/// tokens likewise: medians far below mean the file is in seconds.
fn check_units(rows: &[SplitwiseRow], source: &str) -> Result<(), SplitwiseError> {
    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    let checks: [(&'static str, Vec<f64>); 2] = [
        ("token_time", rows.iter().map(|r| r.token_time_ms).collect()),
        ("prompt_time", rows.iter().filter(|r| r.prompt_size >= 128).map(|r| r.prompt_time_ms).collect()),
    ];
    for (column, values) in checks {
        if let Some(m) = median(values)
            && m < 0.5
        {
            let unit = if m < 5e-4 { "minutes or hours" } else { "seconds" };
            return Err(SplitwiseError::Units { file: source.to_string(), column, unit, median: m, floor_ms: 1.0 });
        }
    }
    Ok(())
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
    /// Output sweep rows (batch 1, prompt 512, output ≠ 128): ITL against context length (η).
    pub context_rows: Vec<SplitwiseRow>,
    /// Rows in no fit.
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
            context_rows: Vec::new(),
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
        let output_sweep = row.batch_size == 1 && row.prompt_size == SPLITWISE_SWEEP_PROMPT && !batch_sweep;
        if batch_sweep || prompt_sweep {
            group.prefill_rows.push(row.clone());
        } else if output_sweep {
            group.context_rows.push(row.clone());
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
) -> Result<GroupFit, FitError> {
    // ITL(n, L) = α + β·n + η·n·L over the batch sweep (n varies at L = 512 + 128/2) and the
    // output sweep (n = 1, L = prompt + output/2 varies): the context term is identifiable.
    let itl_points: Vec<(f64, f64, f64)> = group
        .itl_rows
        .iter()
        .chain(&group.context_rows)
        .map(|r| (f64::from(r.batch_size), f64::from(r.prompt_size) + f64::from(r.token_size) / 2.0, r.token_time_ms))
        .collect();
    let prefill_points: Vec<(f64, f64, f64)> = group
        .prefill_rows
        .iter()
        .map(|r| (f64::from(r.batch_size), f64::from(r.prompt_size), r.prompt_time_ms))
        .collect();
    let itl = fit_itl_with_context(&itl_points, options)?;
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
            "eta" => "η",
            other => other,
        }
    };
    for (fit, names) in [(&itl.fit, ["alpha", "beta", "eta"]), (&prefill.fit, ["gamma", "delta", "epsilon"])] {
        for &name in &fit.clamped {
            let index = names.iter().position(|n| *n == name).unwrap_or(0);
            let unconstrained = fit.unconstrained.get(index).copied().unwrap_or(f64::NAN);
            let why = match name {
                "gamma" => " (prefill grows faster than linearly in batch·prompt on this hardware)",
                "epsilon" => " (prefill is not super-linear in prompt length here)",
                "eta" => " (ITL does not grow with context length in the output sweep)",
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
    if group.context_rows.is_empty() {
        notes.push(format!(
            "ITL measured at prompt {SPLITWISE_SWEEP_PROMPT} / output {SPLITWISE_SWEEP_OUTPUT} tokens only; the \
             context term η could not be fitted (0)"
        ));
    } else {
        notes.push(format!(
            "η fitted from the output sweep ({} rows at batch 1, outputs {}–{} tokens) with the batch sweep",
            group.context_rows.len(),
            group.context_rows.iter().map(|r| r.token_size).min().unwrap_or(0),
            group.context_rows.iter().map(|r| r.token_size).max().unwrap_or(0),
        ));
    }
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
        engine: None,
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
pub fn round_sig(x: f64, digits: usize) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{:.*e}", digits.saturating_sub(1), x).parse().unwrap_or(x)
}

/// `1-5, 9` style list of sorted line numbers.
pub fn line_ranges(lines: &[u64]) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::linear::FitOptions;
    use super::*;
    use crate::scenario::profile::ProfileSpec;

    const SNIPPET: &str = "\
model,hardware,prompt_size,batch_size,token_size,peak_power,average_power,prompt_time,token_time,e2e_time,tensor_parallel
m,gpu,512,1,128,0,0,100,30.0,0,2
m,gpu,512,2,128,0,0,190,30.6,0,2
m,gpu,512,4,128,0,0,370,31.2,0,2
m,gpu,512,8,128,0,0,730,32.4,0,2
m,gpu,512,64,128,0,0,50,20.0,0,2
m,gpu,1024,1,128,0,0,190,30.1,0,2
m,gpu,2048,1,128,0,0,370,30.2,0,2
m,gpu,512,1,1024,0,0,100,30.1,0,2
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
        let rows = parse_splitwise(SNIPPET, "snippet.csv").expect("parse");
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
        assert_eq!(g.context_rows.len(), 1, "the output-sweep row feeds η");
        assert_eq!(g.unused_rows, 0);
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
        let rows = parse_splitwise(SNIPPET, "snippet.csv").expect("parse");
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
        let mut rules = default_excludes();
        rules[0].model = Some(model.into());
        rules
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let bad = "model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel\n\
                   m,gpu,512,1,128,100,30,2\nm,gpu,512,x,128,100,30,2\n";
        let err = parse_splitwise(bad, "bad.csv").unwrap_err().to_string();
        assert!(err.contains("bad.csv") && err.contains("line 3") && err.contains("batch_size"), "{err}");
        let bad = "model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel\n\
                   m,gpu,512,1,128,100,NaN,2\n";
        let err = parse_splitwise(bad, "bad.csv").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("token_time"), "{err}");
        let err = parse_splitwise("model,hardware\n", "h.csv").unwrap_err().to_string();
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
        assert_eq!(default_excludes()[0].to_string(), "llama2-70b:2:64");
    }

    #[test]
    fn reproduces_reference_fit_on_real_data() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/data/splitwise_perf_model.csv");
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (the data lives in the repository)"));
        let rows = parse_splitwise(&text, path).expect("parse");
        assert_eq!(rows.len(), 1260);
        let filter = GroupFilter {
            model: Some("llama2-70b".into()),
            hardware: Some("h100-80gb".into()),
            tensor_parallel: Some(8),
        };
        let groups = group_splitwise(&rows, &filter, &default_excludes());
        assert_eq!(groups.len(), 1);
        let fit = fit_group(&groups[0], false, &FitOptions::default(), &[]).expect("fit");
        // With the output sweep, η takes the context growth α and β no longer absorb.
        assert!(fit.itl.eta_ms > 0.0, "η = {}", fit.itl.eta_ms);
        assert!(fit.itl.alpha_ms > 25.0 && fit.itl.alpha_ms < 31.0, "α = {}", fit.itl.alpha_ms);
        assert!(fit.itl.beta_ms > 0.25 && fit.itl.beta_ms < 0.35, "β = {}", fit.itl.beta_ms);
        assert!(fit.itl.fit.quality.r2 >= 0.95, "R² = {}", fit.itl.fit.quality.r2);
        let within = |v: f64, want: f64| (v - want).abs() <= 0.01 * want;
        assert!(within(fit.prefill.gamma_ms, 11.3), "γ = {}", fit.prefill.gamma_ms);
        assert!(within(fit.prefill.delta_ms, 0.0909), "δ = {}", fit.prefill.delta_ms);
        assert_eq!(fit.max_batch, 64);

        // The anomaly: with the default rule, TP 2 stops at batch 32 and the fit is sound.
        let filter = GroupFilter {
            model: Some("llama2-70b".into()),
            hardware: Some("a100-80gb".into()),
            tensor_parallel: Some(2),
        };
        let groups = group_splitwise(&rows, &filter, &default_excludes());
        assert_eq!(groups[0].excluded[0].lines.len(), 5);
        let fit = fit_group(&groups[0], false, &FitOptions::default(), &[]).expect("fit");
        assert_eq!(fit.max_batch, 32);
        assert_eq!(groups[0].duplicate_lines.len(), 10, "the shared sweep point is listed three times");
        // A100 prefill has a negative unconstrained intercept: clamped, and said so.
        assert!(fit.prefill.fit.unconstrained[0] < 0.0);
        assert_eq!(fit.prefill.gamma_ms, 0.0);
        assert!(fit.notes.iter().any(|n| n.starts_with("γ clamped to 0")));
    }

    #[test]
    fn times_in_seconds_are_refused_not_fitted() {
        let text = "model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel\n\
                    m,gpu,512,1,128,0.100,0.030,2\nm,gpu,512,2,128,0.190,0.031,2\nm,gpu,1024,1,128,0.19,0.030,2\n";
        let err = parse_splitwise(text, "s.csv").unwrap_err().to_string();
        assert!(err.contains("looks like seconds") && err.contains("token_time"), "{err}");
    }
}
