//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder renews
//! `renewTime` every few seconds; another candidate takes the Lease over once it has seen the
//! same record (holder, renewTime, transitions) unchanged for `leaseDurationSeconds` by its *own*
//! clock, so clock skew between replicas does not matter. Every write is a replace carrying the
//! `resourceVersion` read just before, so two candidates racing for one Lease get one success and
//! one 409 Conflict.
//!
//! Leadership is reported through a `watch::Sender<bool>`: the controller applies only while it
//! is `true`, and followers keep serving read-only endpoints.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Who competes for which Lease, and how long a term lasts.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a term lasts without renewal.
    pub duration: Duration,
    /// How often the holder renews and others retry.
    pub retry: Duration,
}

/// One candidate for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// The other holder's record as last read, and when (by this replica's clock) it last changed.
    observed: Mutex<Option<(Record, Timestamp)>>,
}

/// What identifies one renewal of a Lease.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            clock: Box::new(Timestamp::now),
            observed: Mutex::new(None),
        }
    }

    /// Use another clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    fn duration_s(&self) -> i32 {
        i32::try_from(self.settings.duration.as_secs()).unwrap_or(i32::MAX).max(1)
    }

    /// One election round: create the Lease, renew it, or take it over when expired. Returns
    /// whether this replica holds it now. A lost race (409) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = (self.clock)();
        let me = &self.settings.identity;
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(self.duration_s()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(me.as_str()) {
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.duration_s());
        } else {
            let record = Record {
                holder: holder.clone(),
                renew_time: spec.renew_time.clone(),
                transitions: spec.lease_transitions,
            };
            let changed_at = {
                let mut observed = self.observed.lock().expect("the lock is never held across a panic");
                match observed.as_ref() {
                    Some((seen, at)) if *seen == record => *at,
                    _ => {
                        *observed = Some((record, now));
                        now
                    }
                }
            };
            let term_s = i64::from(spec.lease_duration_seconds.unwrap_or_else(|| self.duration_s()).max(1));
            let expired = holder.is_none()
                || changed_at.checked_add(SignedDuration::from_secs(term_s)).is_ok_and(|end| end <= now);
            if !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(me.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.duration_s());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        // The resourceVersion read above makes this a compare-and-swap.
        conflict_is_false(self.api.replace(&self.settings.name, &PostParams::default(), &lease).await)
    }

    /// Give the Lease up (on shutdown) so another replica takes over at once, not after expiry.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else { return Ok(()) };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime((self.clock)()));
        conflict_is_false(self.api.replace(&self.settings.name, &PostParams::default(), &lease).await).map(|_| ())
    }

    /// Compete until `shutdown` completes, publishing leadership on `leader`; then release the
    /// Lease if held. An error loses leadership at once: a leader that cannot renew must stop
    /// acting before another one may start.
    pub async fn run(self, leader: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let leading = match self.try_acquire_or_renew().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.settings.name, "leader election failed");
                    false
                }
            };
            leader.send_if_modified(|v| std::mem::replace(v, leading) != leading);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.settings.retry) => {}
            }
        }
        if leader.send_replace(false)
            && let Err(e) = self.release().await
        {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
}

/// This replica's identity in the Lease and in Events when none is configured: the pod name
/// (`POD_NAME`, or the hostname inside a pod, which Kubernetes sets to the pod name), else the
/// hostname plus a random suffix, so two processes started outside a cluster never both believe
/// they hold the Lease.
pub fn default_identity() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let hostname = hostname::get().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty());
    identity_from(
        env("POD_NAME"),
        env("KUBERNETES_SERVICE_HOST").is_some(),
        hostname.or_else(|| env("HOSTNAME")),
        random_suffix(),
    )
}

/// [`default_identity`] from its inputs.
pub fn identity_from(pod_name: Option<String>, in_pod: bool, hostname: Option<String>, suffix: String) -> String {
    match (pod_name, in_pod, hostname) {
        (Some(pod), _, _) => pod,
        (None, true, Some(host)) => host,
        (None, _, Some(host)) => format!("{host}-{suffix}"),
        (None, _, None) => format!("allot-{suffix}"),
    }
}

/// Eight hex digits that differ between processes (std's randomly keyed hasher, the time and
/// the process id).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_pod_name_else_a_unique_hostname() {
        let s = || "1a2b3c4d".to_string();
        assert_eq!(
            identity_from(Some("allot-7d9f-x2".into()), true, Some("allot-7d9f-x2".into()), s()),
            "allot-7d9f-x2"
        );
        assert_eq!(
            identity_from(None, true, Some("allot-7d9f-x2".into()), s()),
            "allot-7d9f-x2",
            "a pod's hostname is its name"
        );
        assert_eq!(identity_from(None, false, Some("laptop".into()), s()), "laptop-1a2b3c4d");
        assert_eq!(identity_from(None, false, None, s()), "allot-1a2b3c4d");
        assert_ne!(random_suffix(), random_suffix(), "two processes (or calls) differ");
    }
}
