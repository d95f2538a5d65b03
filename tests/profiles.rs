//! The bundled Splitwise profiles are what their recorded command produces from the data in the
//! repository (models/README.md): rerun `allot fit` exactly as each file's provenance says, in a
//! scratch directory that sees the same `models/data`, and compare the files byte for byte.

use std::path::Path;
use std::process::Command;

#[test]
fn committed_splitwise_profiles_are_reproducible_from_models_data() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("allot-profiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("models")).expect("scratch dir");
    std::os::unix::fs::symlink(repo.join("models/data"), scratch.join("models/data")).expect("link the data");
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .current_dir(&scratch)
        .args(["fit", "--data", "models/data/splitwise_perf_model.csv", "--quadratic-prefill", "--out-dir", "models"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut checked = 0;
    for entry in std::fs::read_dir(scratch.join("models")).expect("written") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().expect("name");
        let want = std::fs::read_to_string(&path).expect("written profile");
        let committed = repo.join("models").join(name);
        let have = std::fs::read_to_string(&committed).unwrap_or_else(|e| panic!("{}: {e}", committed.display()));
        assert!(have == want, "{} is stale: rerun the command in its provenance", committed.display());
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert_eq!(checked, 12, "every Splitwise group has its committed profile");
}
