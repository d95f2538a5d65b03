//! Bundles the fitted latency profiles under `models/` into the binary, so scenarios (and the
//! REST API) can name them without shipping files.

use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-changed=models");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from("&[\n");
    for f in &files {
        let name = f.file_name().expect("listed file has a name").to_string_lossy();
        out.push_str(&format!("    ({name:?}, include_str!({:?})),\n", f.display().to_string()));
    }
    out.push(']');
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled_profiles.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}
