//! `allot fit` on real GuideLLM sweeps of vLLM (models/data/guidellm-exp2: Qwen2.5-14B, 16
//! prompt/output mixes): the fit through the planner's prediction path, and how well the fitted
//! profile predicts each mix when that mix is left out (docs/latency-model.md, "Targets").

use std::path::Path;

use allot::analyze::engine::EngineSpec;
use allot::analyze::fit::guidellm;
use allot::analyze::fit::measurement::Measurement;
use allot::analyze::fit::report::{FitRequest, fit_report};
use allot::analyze::fit::through_model::{
    FreeParameters, Stat, mape, measured_capacity, predicted_capacity, residuals,
};
use allot::cli::fit::{DEFAULT_SLOS, parse_slo, report_text};

fn sweeps() -> Vec<Measurement> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data/guidellm-exp2");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the data lives in the repository)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 16, "16 mixes");
    files
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).expect("readable");
            let mix = p.file_stem().expect("stem").to_string_lossy().into_owned();
            guidellm::parse_csv(&text, &p.display().to_string(), &mix).expect("parses")
        })
        .collect()
}

/// Mixes the test fits on (the corners of the 64–4096 grid and two on the diagonal); the other
/// ten are predicted out of sample. The full fit with one refit per left-out mix is what
/// `allot fit --leave-one-out` prints (docs/latency-model.md records it); it takes minutes.
const TRAIN: [&str; 6] = [
    "sweep-i64-o64",
    "sweep-i64-o4096",
    "sweep-i4096-o64",
    "sweep-i4096-o4096",
    "sweep-i256-o256",
    "sweep-i1024-o1024",
];

#[test]
fn guidellm_sweeps_fit_and_predict_mixes_out_of_sample() {
    let measurements = sweeps();
    assert_eq!(measurements.len(), 160);
    let engine = EngineSpec::default().resolve(1024, 1);
    let slos: Vec<_> = DEFAULT_SLOS.iter().map(|s| parse_slo(s).expect("valid")).collect();
    let (train, test): (Vec<Measurement>, Vec<Measurement>) =
        measurements.iter().cloned().partition(|m| TRAIN.contains(&m.mix.as_str()));
    let request = FitRequest {
        measurements: train.clone(),
        engine,
        free: FreeParameters::default(),
        slos: slos.clone(),
        leave_one_mix_out: false,
    };
    let report = fit_report(&request).expect("fits");
    eprintln!("{}", report_text(&report, &train, &engine));

    // Out of sample: the runs of the ten other mixes that pass the same steady-state screen.
    let usable: Vec<&Measurement> = test.iter().filter(|m| m.steady_state().is_ok()).collect();
    assert!(usable.len() >= 60, "{} usable held-out runs", usable.len());
    let held_out = residuals(report.params, engine, &usable);
    let mut capacity_errors = Vec::new();
    let mixes: std::collections::BTreeSet<&str> = usable.iter().map(|m| m.mix.as_str()).collect();
    for mix in &mixes {
        let runs: Vec<&Measurement> = usable.iter().copied().filter(|m| m.mix == *mix).collect();
        for (name, slo) in &slos {
            let (Some(measured), Some(predicted)) =
                (measured_capacity(&runs, slo), predicted_capacity(report.params, engine, &runs, slo))
            else {
                continue;
            };
            if measured.rps > 0.0 && !measured.censored {
                let e = predicted.rps / measured.rps - 1.0;
                eprintln!(
                    "held out {mix} {name}: measured {:.2} req/s, predicted {:.2} ({:+.0} %)",
                    measured.rps,
                    predicted.rps,
                    100.0 * e
                );
                capacity_errors.push(e);
            }
        }
    }
    let in_sample_itl = report.mape[&Stat::MeanItl];
    let held_itl = mape(&held_out, Stat::MeanItl).expect("ITL");
    let held_ttft = mape(&held_out, Stat::MeanTtft).expect("TTFT");
    let median_capacity_error = {
        let mut abs: Vec<f64> = capacity_errors.iter().map(|e| e.abs()).collect();
        abs.sort_by(f64::total_cmp);
        abs[abs.len() / 2]
    };
    eprintln!(
        "in-sample ITL MAPE {:.1} %; held-out ITL {:.1} %, TTFT {:.1} %; capacity at SLO median |error| {:.0} % over {} checks",
        100.0 * in_sample_itl,
        100.0 * held_itl,
        100.0 * held_ttft,
        100.0 * median_capacity_error,
        capacity_errors.len()
    );
    assert!(in_sample_itl < 0.10, "in-sample mean ITL MAPE {in_sample_itl}");
    assert!(held_itl < 0.15, "held-out mean ITL MAPE {held_itl}");
    assert!(held_ttft < 0.35, "held-out mean TTFT MAPE {held_ttft}");
    assert!(capacity_errors.len() >= 8, "{} capacity checks", capacity_errors.len());
    assert!(median_capacity_error < 0.25, "median capacity error {median_capacity_error}");
}
