//! Which watch events ask for a prompt re-plan: a VariantAutoscaling's new spec (its
//! `metadata.generation`; Allot's own status writes do not move it) or its deletion, and edits of
//! the configuration ConfigMaps after the initial listing.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::runtime::watcher;

/// The filter's memory: generations seen and whether the initial listing is over.
#[derive(Debug, Default)]
pub struct ReplanFilter {
    /// `metadata.generation` per object uid.
    generations: BTreeMap<String, Option<i64>>,
    /// The initial listing is over (ConfigMaps: earlier events are the state, not changes).
    listed: bool,
}

impl ReplanFilter {
    /// A new spec generation or a deletion asks; the initial listing and status writes (which do
    /// not move the generation) do not.
    pub fn variant_event<K: kube::Resource>(&mut self, event: &watcher::Event<K>) -> bool {
        match event {
            watcher::Event::InitApply(o) => {
                self.generations.insert(o.uid().unwrap_or_default(), o.meta().generation);
                false
            }
            watcher::Event::Apply(o) => {
                self.generations.insert(o.uid().unwrap_or_default(), o.meta().generation) != Some(o.meta().generation)
            }
            watcher::Event::Delete(o) => {
                self.generations.remove(&o.uid().unwrap_or_default());
                true
            }
            watcher::Event::Init | watcher::Event::InitDone => false,
        }
    }

    /// A change to one of the named ConfigMaps after the initial listing asks.
    pub fn config_event<K: kube::Resource>(&mut self, event: &watcher::Event<K>, names: &[String]) -> bool {
        match event {
            watcher::Event::InitDone => {
                self.listed = true;
                false
            }
            watcher::Event::Apply(cm) | watcher::Event::Delete(cm) => {
                self.listed && names.iter().any(|n| *n == cm.name_any())
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DynamicObject, ObjectMeta};

    use super::*;

    fn va(uid: &str, generation: i64) -> DynamicObject {
        let mut o = DynamicObject::new("v", &super::super::cache::variant_autoscaling_resource());
        o.metadata = ObjectMeta { uid: Some(uid.into()), generation: Some(generation), ..ObjectMeta::default() };
        o
    }

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap { metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() }, ..ConfigMap::default() }
    }

    #[test]
    fn spec_changes_and_deletions_ask_for_a_replan_status_writes_do_not() {
        let mut f = ReplanFilter::default();
        assert!(!f.variant_event(&watcher::Event::<DynamicObject>::Init));
        assert!(!f.variant_event(&watcher::Event::InitApply(va("a", 1))));
        assert!(!f.variant_event(&watcher::Event::<DynamicObject>::InitDone));
        // Allot's own status patch: same generation.
        assert!(!f.variant_event(&watcher::Event::Apply(va("a", 1))));
        // A user edits the spec.
        assert!(f.variant_event(&watcher::Event::Apply(va("a", 2))));
        // A new variant appears.
        assert!(f.variant_event(&watcher::Event::Apply(va("b", 1))));
        assert!(f.variant_event(&watcher::Event::Delete(va("a", 2))));
    }

    #[test]
    fn only_edits_of_the_named_config_maps_after_the_listing_ask() {
        let names = vec!["allot-config".to_string(), "accelerator-unit-costs".to_string()];
        let mut f = ReplanFilter::default();
        assert!(!f.config_event(&watcher::Event::InitApply(config_map("allot-config")), &names));
        assert!(!f.config_event(&watcher::Event::Apply(config_map("allot-config")), &names), "still listing");
        assert!(!f.config_event(&watcher::Event::<ConfigMap>::InitDone, &names));
        assert!(f.config_event(&watcher::Event::Apply(config_map("allot-config")), &names));
        assert!(f.config_event(&watcher::Event::Delete(config_map("accelerator-unit-costs")), &names));
        assert!(!f.config_event(&watcher::Event::Apply(config_map("kube-root-ca.crt")), &names));
    }
}
