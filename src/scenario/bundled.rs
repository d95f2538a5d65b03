//! The latency profiles fitted from public data and committed under `models/`, compiled in.

use std::sync::OnceLock;

use super::profile::ProfileSpec;

const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/bundled_profiles.rs"));

/// Every bundled profile, sorted by file name. A file that does not parse is a build defect,
/// caught by the test below, so it is skipped here rather than panicking at run time.
pub fn profiles() -> &'static [ProfileSpec] {
    static PROFILES: OnceLock<Vec<ProfileSpec>> = OnceLock::new();
    PROFILES.get_or_init(|| FILES.iter().filter_map(|(_, text)| serde_saphyr::from_str(text).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_profile_parses_and_names_are_unique() {
        for (file, text) in FILES {
            let p: ProfileSpec = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("models/{file}: {e}"));
            assert!(p.params.alpha_ms > 0.0, "models/{file}: alpha_ms must be positive");
        }
        let mut names: Vec<_> = profiles().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), FILES.len());
        names.dedup();
        assert_eq!(names.len(), FILES.len(), "duplicate profile names under models/");
    }
}
