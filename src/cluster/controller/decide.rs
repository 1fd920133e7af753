//! What a reconcile does with a pool, decided from what it observed, without I/O: which pods go,
//! which get the binary, how many are made, and when the pool is looked at again. The
//! controller ([`super`]) observes, calls these, and acts.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::ExponentialBackoff;

use crate::backend::k8s::labels::{READY_AT_ANNOTATION, TEMPLATE_ANNOTATION};
use crate::backend::k8s::pool::resource::BuildrPool;
use crate::backend::k8s::pool::{State, warm, was_taken};
use crate::backend::k8s::startup::{Start, classify};

/// How soon a pool with pods still starting is looked at again, besides its pods' own events.
const STARTING_RECHECK: Duration = Duration::from_secs(5);
/// The first wait of a pool in trouble (a failed reconcile, a pod that cannot start or ended
/// unused), doubled at each trouble in a row up to [`TROUBLE_MAX`]: a pool that can never fill
/// is not hammered with pods.
const TROUBLE_FIRST: Duration = Duration::from_secs(5);
const TROUBLE_MAX: Duration = Duration::from_secs(300);
/// How long the replacement of a pod a run has just taken waits: the run has the node's cores
/// while its inputs go in, the pod's start and a seed's pull of the replacement come after.
/// On a node of two cores, a replacement started at once took a seeded run's input phases
/// from 0.6-0.8 s to 1.0 s. The price is a replacement ready that much later, which only a run
/// that comes before it would have been ready anyway (a pod's start, a seed's pull) notices.
pub const REFILL_AFTER_TAKE: Duration = Duration::from_secs(2);

/// The pool's pods, sorted by what becomes of them in this reconcile.
#[derive(Debug, Default)]
pub struct Decision {
    /// Ready, oldest first.
    pub ready: Vec<Pod>,
    /// Running, binary not in yet: the controller copies it in.
    pub to_fill: Vec<Pod>,
    pub starting: usize,
    /// The pods in use, by name.
    pub taken: Vec<String>,
    /// To delete: ended, idle past `maxIdle`, of an older template, taken once, not as the
    /// pool made them, or beyond `size`.
    pub spent: Vec<String>,
    /// How many of the pool's pods ended without a run: they could not start, or ran out.
    pub ended: usize,
    /// Why a pod cannot start, if one cannot.
    pub failing: Option<String>,
    /// A pod with the pool's labels that the pool did not make, deleted, and why.
    pub not_as_made: Option<String>,
    /// When the next ready pod has waited `maxIdle`.
    pub next_expiry: Option<SystemTime>,
}

impl Decision {
    /// Whether the pool is in trouble: its replacements are then made at the pace of its
    /// backoff ([`Pace`]).
    pub fn troubled(&self) -> bool {
        self.failing.is_some() || self.ended > 0
    }
}

/// Sorts the pool's pods, as listed from `template` (its digest) and `image`, at `now`; then,
/// beyond `size` (it was lowered), the youngest ready pods go first.
pub fn decide(
    pool: &BuildrPool,
    pods: Vec<Pod>,
    template: &str,
    image: &str,
    now: SystemTime,
) -> Decision {
    let mut decision = Decision::default();
    let uid = pool.metadata.uid.as_deref();
    let max_idle = pool.spec.max_idle();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ended = matches!(phase, Some("Failed" | "Succeeded"));
        let state = State::of(&pod);
        if state == Some(State::Taken) {
            if !ended {
                decision.taken.push(pod.name_any());
            }
            continue;
        }
        // Taken once, it is never the pool's again, whatever its labels say now.
        if was_taken(&pod) {
            decision.spent.push(pod.name_any());
            continue;
        }
        // A pod of a pool of the same name that was deleted: the garbage collector's.
        let ours = pod
            .owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid);
        if !ours {
            continue;
        }
        let stale = pod
            .annotations()
            .get(TEMPLATE_ANNOTATION)
            .map(String::as_str)
            != Some(template);
        if ended || stale {
            decision.ended += usize::from(ended);
            decision.spent.push(pod.name_any());
            continue;
        }
        // Runs would pass it over: made by hand, or changed since (by an admission webhook
        // too, which the log then names: every pod the pool makes would go this way).
        if let Err(why) = warm::as_made(pool, &pod) {
            decision.not_as_made.get_or_insert(format!(
                "deleted pod {}, which runs would not take: {why}",
                pod.name_any()
            ));
            decision.spent.push(pod.name_any());
            continue;
        }
        match state {
            Some(State::Ready) => {
                let ready_at = pod
                    .annotations()
                    .get(READY_AT_ANNOTATION)
                    .and_then(|at| humantime::parse_rfc3339(at).ok())
                    .unwrap_or(now);
                let expires = ready_at + max_idle;
                if expires <= now {
                    decision.spent.push(pod.name_any());
                } else {
                    decision.next_expiry =
                        Some(decision.next_expiry.map_or(expires, |e| e.min(expires)));
                    decision.ready.push(pod);
                }
            }
            _ => match classify(&pod, image) {
                Start::Running => decision.to_fill.push(pod),
                Start::Failed(why) => {
                    decision.failing.get_or_insert(why);
                    decision.starting += 1;
                }
                Start::Waiting(_) => decision.starting += 1,
            },
        }
    }
    // Oldest first, so that the youngest go when the pool shrinks.
    decision
        .ready
        .sort_by_key(|pod| pod.metadata.creation_timestamp.clone().map(|t| t.0));
    let size = pool.spec.size as usize;
    while decision.ready.len() + decision.to_fill.len() + decision.starting > size
        && let Some(extra) = decision.ready.pop()
    {
        decision.spent.push(extra.name_any());
    }
    decision
}

/// How many pods to create once the fills are done: the difference to `size`, none while the
/// pool's replacements are held back by its backoff.
pub fn to_create(size: u32, ready: usize, starting: usize, held: bool) -> usize {
    if held {
        return 0;
    }
    (size as usize).saturating_sub(ready + starting)
}

/// When to look at a pool again that is not in trouble: soon while pods start, else when its
/// next ready pod has waited `max_idle` (all of it when none is ready).
pub fn next_look(decision: &Decision, max_idle: Duration, now: SystemTime) -> Duration {
    if decision.starting > 0 {
        return STARTING_RECHECK;
    }
    let due = decision
        .next_expiry
        .and_then(|at| at.duration_since(now).ok())
        .unwrap_or(max_idle);
    due + Duration::from_secs(1)
}

/// A pool's backoff: how long it waits after each trouble in a row (a failed reconcile, or a
/// reconcile that found it failing), and until when its replacement pods are held back. Kept
/// in the controller's memory only: a restarted controller starts afresh, at worst one round
/// sooner. A changed pool (its generation) starts afresh too: a fixed template fills at once.
pub struct Pace {
    backoff: ExponentialBackoff,
    /// Replacements are not made before this.
    hold_until: Option<Instant>,
    /// The pool's generation the pace is about.
    generation: Option<i64>,
    /// The pods in use when the pool was last looked at (none before the first look).
    taken: Option<foldhash::HashSet<String>>,
    /// Replacements of pods just taken are not made before this.
    refill_at: Option<Instant>,
}

impl Default for Pace {
    fn default() -> Self {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(TROUBLE_FIRST)
            .with_max_delay(TROUBLE_MAX)
            .with_factor(2.0)
            .without_max_times();
        Self {
            backoff: builder.into(),
            hold_until: None,
            generation: None,
            taken: None,
            refill_at: None,
        }
    }
}

impl Pace {
    /// Starts afresh if the pool changed since the pace was last asked about it.
    pub fn of_generation(&mut self, generation: Option<i64>) -> &mut Self {
        if generation != self.generation {
            *self = Self {
                generation,
                ..Self::default()
            };
        }
        self
    }

    /// Whether the pool's replacements are held back at `now`.
    pub fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|until| now < until)
    }

    /// How long replacements wait at `now`, if they do: [`REFILL_AFTER_TAKE`] from the look
    /// that first finds a pod of `taken` in use (the pods in use at the controller's first look
    /// are no news).
    pub fn refill_wait(&mut self, taken: &[String], now: Instant) -> Option<Duration> {
        let taken: foldhash::HashSet<String> = taken.iter().cloned().collect();
        if let Some(known) = &self.taken
            && !taken.is_subset(known)
        {
            self.refill_at = Some(now + REFILL_AFTER_TAKE);
        }
        self.taken = Some(taken);
        let wait = self.refill_at?.saturating_duration_since(now);
        (!wait.is_zero()).then_some(wait)
    }

    /// The wait after a reconcile that failed.
    pub fn failed(&mut self) -> Duration {
        self.next()
    }

    /// When to look again after a reconcile that found the pool `troubled` (else in order: the
    /// pace is reset and `None` returned). Replacements made now hold the next ones back for
    /// the next wait; held ones wait for the hold to end.
    pub fn after(&mut self, troubled: bool, held: bool, now: Instant) -> Option<Duration> {
        if !troubled {
            self.backoff.reset();
            self.hold_until = None;
            return None;
        }
        match self.hold_until {
            Some(until) if held => Some(until.saturating_duration_since(now)),
            _ => {
                let wait = self.next();
                self.hold_until = Some(now + wait);
                Some(wait)
            }
        }
    }

    fn next(&mut self) -> Duration {
        self.backoff.next().unwrap_or(TROUBLE_MAX)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus};
    use k8s_openapi::api::core::v1::{PodStatus, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::backend::k8s::labels::{STATE_LABEL, TAKEN_MARK};
    use crate::backend::k8s::pool::resource::BuildrPoolSpec;
    use crate::task;

    const BINARY: &str = "ab12";
    const IMAGE: &str = "debian:bookworm";

    fn pool(size: u32) -> BuildrPool {
        let mut pool = BuildrPool::new(
            "warm",
            BuildrPoolSpec {
                container: task::Container {
                    image: Some(IMAGE.to_string()),
                    ..task::Container::default()
                },
                size,
                max_idle: Some(Duration::from_secs(600)),
                seed: None,
            },
        );
        pool.metadata.uid = Some("uid-1".to_string());
        pool
    }

    fn template(pool: &BuildrPool) -> String {
        warm::template_digest(pool, BINARY, None)
    }

    /// A pod the pool made, named `name`, created `age_secs` after the epoch.
    fn made(pool: &BuildrPool, name: &str, created: i64) -> Pod {
        let plan = warm::plan(pool, "builds", "amd64").unwrap();
        let mut pod = warm::pod(&plan, pool, BINARY, None);
        pod.metadata.name = Some(name.to_string());
        pod.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        pod
    }

    fn running(mut pod: Pod) -> Pod {
        pod.status = Some(PodStatus {
            phase: Some("Running".to_string()),
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    fn labelled(mut pod: Pod, state: State) -> Pod {
        let labels = pod.metadata.labels.get_or_insert_default();
        labels.insert(STATE_LABEL.to_string(), state.as_str().to_string());
        pod
    }

    /// Ready since `ready_at` seconds after the epoch.
    fn ready(pod: Pod, ready_at: u64) -> Pod {
        let mut pod = labelled(running(pod), State::Ready);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(ready_at);
        pod.metadata.annotations.get_or_insert_default().insert(
            READY_AT_ANNOTATION.to_string(),
            humantime::format_rfc3339_seconds(at).to_string(),
        );
        pod
    }

    fn ended(mut pod: Pod) -> Pod {
        pod.status = Some(PodStatus {
            phase: Some("Failed".to_string()),
            ..PodStatus::default()
        });
        pod
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(|pod| pod.name_any()).collect()
    }

    #[test]
    fn an_empty_pool_creates_its_size_and_looks_again_when_its_pods_start() {
        let pool = pool(3);
        let decision = decide(&pool, Vec::new(), &template(&pool), IMAGE, at(1000));
        assert!(decision.spent.is_empty() && decision.to_fill.is_empty());
        assert!(!decision.troubled());
        assert_eq!(
            to_create(3, decision.ready.len(), decision.starting, false),
            3
        );
        assert_eq!(to_create(3, 0, 0, true), 0, "held back: none");
        // Nothing starting, nothing ready: a full maxIdle, and a second.
        assert_eq!(
            next_look(&decision, Duration::from_secs(600), at(1000)),
            Duration::from_secs(601)
        );
    }

    #[test]
    fn pods_are_sorted_by_what_becomes_of_them() {
        let pool = pool(5);
        let mut stale = ready(made(&pool, "stale", 1), 900);
        stale
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(TEMPLATE_ANNOTATION.to_string(), "older".to_string());
        let mut once_taken = ready(made(&pool, "once-taken", 2), 900);
        once_taken
            .spec
            .get_or_insert_default()
            .tolerations
            .get_or_insert_default()
            .push(Toleration {
                key: Some(TAKEN_MARK.to_string()),
                ..Toleration::default()
            });
        let mut foreign = made(&pool, "foreign", 3);
        foreign.metadata.owner_references = None;
        let mut by_hand = ready(made(&pool, "by-hand", 4), 900);
        by_hand.spec.get_or_insert_default().containers[0].image = Some("evil".to_string());
        let pods = vec![
            ready(made(&pool, "fresh", 10), 950),
            ready(made(&pool, "idle", 11), 100),
            running(made(&pool, "to-fill", 12)),
            made(&pool, "starting", 13),
            labelled(running(made(&pool, "in-use", 14)), State::Taken),
            ended(labelled(made(&pool, "used", 15), State::Taken)),
            ended(made(&pool, "ended", 16)),
            stale,
            once_taken,
            foreign,
            by_hand,
        ];
        let decision = decide(&pool, pods, &template(&pool), IMAGE, at(1000));
        assert_eq!(names(&decision.ready), ["fresh"]);
        assert_eq!(names(&decision.to_fill), ["to-fill"]);
        assert_eq!((decision.starting, decision.taken.len()), (1, 1));
        assert_eq!(
            decision.spent,
            ["idle", "ended", "stale", "once-taken", "by-hand"],
            "the foreign pod is the garbage collector's, the used one its run's"
        );
        assert_eq!(decision.ended, 1);
        assert!(decision.troubled(), "a pod ended unused");
        assert!(
            decision
                .not_as_made
                .as_deref()
                .is_some_and(|why| why.starts_with("deleted pod by-hand")),
            "{:?}",
            decision.not_as_made
        );
        // The fresh pod is due at 950 + 600.
        assert_eq!(decision.next_expiry, Some(at(1550)));
        assert_eq!(
            next_look(&decision, Duration::from_secs(600), at(1000)),
            STARTING_RECHECK
        );
    }

    #[test]
    fn a_lowered_size_deletes_the_youngest_ready_pods() {
        let pool = pool(2);
        let pods = vec![
            ready(made(&pool, "young", 30), 900),
            ready(made(&pool, "old", 10), 900),
            ready(made(&pool, "middle", 20), 900),
            made(&pool, "starting", 40),
        ];
        let decision = decide(&pool, pods, &template(&pool), IMAGE, at(1000));
        assert_eq!(names(&decision.ready), ["old"]);
        assert_eq!(decision.spent, ["young", "middle"]);
        assert_eq!(
            to_create(2, decision.ready.len(), decision.starting, false),
            0
        );
        // Nothing starts: looked at again when "old" has waited maxIdle (900 + 600).
        let settled = Decision {
            starting: 0,
            ..decision
        };
        assert_eq!(
            next_look(&settled, Duration::from_secs(600), at(1000)),
            Duration::from_secs(501)
        );
    }

    #[test]
    fn a_pod_that_cannot_start_is_the_pools_failing_reason() {
        let pool = pool(1);
        let mut pod = made(&pool, "unpullable", 10);
        pod.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ContainerState {
                    waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                        reason: Some("ErrImagePull".to_string()),
                        message: Some("not found".to_string()),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        let decision = decide(&pool, vec![pod], &template(&pool), IMAGE, at(1000));
        assert_eq!(
            decision.starting, 1,
            "counted, so that none is made beside it"
        );
        assert!(decision.troubled());
        assert!(decision.failing.is_some());
    }

    #[test]
    fn a_troubled_pool_waits_longer_each_time_and_an_untroubled_one_starts_afresh() {
        let mut pace = Pace::default();
        let start = Instant::now();
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(
                !pace.held(now),
                "the hold is over when it is looked at again"
            );
            let wait = pace.after(true, pace.held(now), now).unwrap();
            // Events come sooner: the hold holds then, and the wait is what is left of it.
            let soon = now + Duration::from_secs(1);
            assert!(pace.held(soon));
            assert_eq!(
                pace.after(true, true, soon),
                Some(wait - Duration::from_secs(1))
            );
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(pace.after(false, false, now), None);
        assert!(!pace.held(now));
        assert_eq!(pace.failed(), TROUBLE_FIRST, "reset by the pool in order");
        assert_eq!(pace.failed(), Duration::from_secs(10));
        // A changed pool is not held back by its old trouble.
        pace.of_generation(Some(1));
        pace.after(true, false, now);
        assert!(pace.held(now));
        assert!(!pace.of_generation(Some(2)).held(now));
        assert_eq!(pace.failed(), TROUBLE_FIRST);
    }

    #[test]
    fn a_pod_just_taken_is_replaced_after_a_wait_and_one_taken_before_the_first_look_at_once() {
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut pace = Pace::default();
        let now = Instant::now();
        assert_eq!(pace.refill_wait(&names(&["a"]), now), None);
        assert_eq!(pace.refill_wait(&names(&[]), now), None, "a run ended");
        // Taken since the last look: its replacement waits, and later looks wait what is left.
        assert_eq!(
            pace.refill_wait(&names(&["b"]), now),
            Some(REFILL_AFTER_TAKE)
        );
        let soon = now + Duration::from_millis(500);
        assert_eq!(
            pace.refill_wait(&names(&["b"]), soon),
            Some(REFILL_AFTER_TAKE - Duration::from_millis(500))
        );
        assert_eq!(
            pace.refill_wait(&names(&["b"]), now + REFILL_AFTER_TAKE),
            None
        );
        // Another take starts the wait again.
        let later = now + Duration::from_secs(10);
        assert_eq!(
            pace.refill_wait(&names(&["b", "c"]), later),
            Some(REFILL_AFTER_TAKE)
        );
    }
}
