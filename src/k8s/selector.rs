//! Label selectors in their string form, as the `scale` subresource reports them
//! (`status.selector`: `app=llama,tier in (a,b),!canary`). Reading the selector from `scale`
//! works for every scalable kind (Deployment, StatefulSet, LeaderWorkerSet…), so Allot finds a
//! variant's pods without knowing the target's schema.

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: also true when the label is absent.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: also true when the label is absent.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed selector: all requirements must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// Parse Kubernetes' selector syntax. The error names the offending part.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            out.push(parse_requirement(part)?);
        }
        Ok(Selector(out))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the selector has no requirement (it would select every pod of the namespace).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Split on commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in selector {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in selector {text:?}"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let bad = |why: &str| format!("selector requirement {part:?}: {why}");
    let key_ok = |k: &str| !k.is_empty() && !k.contains(char::is_whitespace);
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return if key_ok(key) { Ok(Requirement::DoesNotExist(key.into())) } else { Err(bad("expected !key")) };
    }
    if let Some((k, v)) = part.split_once("!=") {
        let (k, v) = (k.trim(), v.trim());
        return if key_ok(k) { Ok(Requirement::NotEquals(k.into(), v.into())) } else { Err(bad("empty key")) };
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        let (k, v) = (k.trim(), v.trim());
        return if key_ok(k) { Ok(Requirement::Equals(k.into(), v.into())) } else { Err(bad("empty key")) };
    }
    if let Some(open) = part.find('(') {
        let Some(inner) = part[open + 1..].strip_suffix(')') else { return Err(bad("expected a closing ')'")) };
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        return match head.as_slice() {
            [k, "in"] => Ok(Requirement::In(k.to_string(), values)),
            [k, "notin"] => Ok(Requirement::NotIn(k.to_string(), values)),
            _ => Err(bad("expected `key in (…)` or `key notin (…)`")),
        };
    }
    if key_ok(part) { Ok(Requirement::Exists(part.into())) } else { Err(bad("unrecognized requirement")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_every_form_the_api_server_writes() {
        let s = Selector::parse("app=llama,tier in (gpu, fast),env!=dev,track notin (canary),managed,!legacy")
            .expect("valid selector");
        assert_eq!(
            s.0,
            vec![
                Requirement::Equals("app".into(), "llama".into()),
                Requirement::In("tier".into(), vec!["gpu".into(), "fast".into()]),
                Requirement::NotEquals("env".into(), "dev".into()),
                Requirement::NotIn("track".into(), vec!["canary".into()]),
                Requirement::Exists("managed".into()),
                Requirement::DoesNotExist("legacy".into()),
            ]
        );
        let pod = labels(&[("app", "llama"), ("tier", "gpu"), ("managed", "yes")]);
        assert!(s.matches(&pod));
        assert!(!s.matches(&labels(&[("app", "llama"), ("tier", "cpu"), ("managed", "")])));
        assert!(!s.matches(&labels(&[("app", "llama"), ("tier", "gpu"), ("managed", ""), ("legacy", "1")])));
        assert!(!s.matches(&labels(&[("app", "llama"), ("tier", "gpu")])), "managed must exist");
    }

    #[test]
    fn empty_selector_matches_everything_and_bad_ones_are_errors() {
        assert!(Selector::parse("").expect("empty is valid").matches(&labels(&[])));
        for bad in ["app in (a", "=x", "tier into (a)", "a b", "!"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
