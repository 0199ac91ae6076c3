//! Redis key names, the only place they are spelled: a queue's in BullMQ v5's layout
//! (`<prefix>:<queue>:<suffix>`), a database budget's, and tidegate's own (`tidegate:*`: runs,
//! planning locks, the database's CPU history).

/// Every name BullMQ v5 gives a key of its own directly under a queue's base
/// (`<prefix>:<queue>:<name>`), those tidegate's scripts use and those only BullMQ's producers
/// and workers write (`waiting-children`, `repeat`, `limiter`, `de`, and `metrics`, which heads
/// `metrics:completed` and `metrics:failed`). A job's hash is the base plus its id, so a job
/// whose id is one of these would be that queue key: `GET …/jobs/meta` read the queue's meta
/// hash as a job and `DELETE` deleted it, unpausing the queue while its jobs stayed in `paused`.
pub const RESERVED: &[&str] = &[
    "wait",
    "paused",
    "active",
    "prioritized",
    "pc",
    "delayed",
    "completed",
    "failed",
    "id",
    "meta",
    "events",
    "marker",
    "stalled",
    "stalled-check",
    "waiting-children",
    "repeat",
    "limiter",
    "de",
    "metrics",
];

/// Whether `id` names one of the queue's own keys (see [`RESERVED`]), so never a job.
pub(crate) fn is_reserved(id: &str) -> bool {
    RESERVED.contains(&id)
}

/// Whether `id` can be a job's: the job's hash key is the queue's base plus the id, so an empty
/// id (the base itself), one with `:` (a job's own sub-keys, `<id>:lock` and `<id>:logs`, or
/// further names) or a reserved name would name some other key.
pub(crate) fn can_be_job_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(':') && !is_reserved(id)
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `<prefix>:<queue>:`: job hashes are this followed by the job id.
    base: String,
}

impl Keys {
    pub fn new(prefix: &str, queue: &str) -> Self {
        Self {
            base: format!("{prefix}:{queue}:"),
        }
    }

    /// The common prefix of every key of the queue; a job's hash key is this plus its id.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    /// LIST of job ids ready to run; producers push on the left, workers take from the right.
    pub fn wait(&self) -> String {
        self.key("wait")
    }
    /// LIST that holds waiting jobs while the queue is paused.
    pub fn paused(&self) -> String {
        self.key("paused")
    }
    /// LIST of job ids being processed.
    pub fn active(&self) -> String {
        self.key("active")
    }
    /// ZSET of waiting jobs that carry a priority.
    pub fn prioritized(&self) -> String {
        self.key("prioritized")
    }
    /// Counter that keeps equal priorities in FIFO order.
    pub(crate) fn priority_counter(&self) -> String {
        self.key("pc")
    }
    /// ZSET of jobs waiting for a time; score = due ms × 4096 + a tiebreaker.
    pub fn delayed(&self) -> String {
        self.key("delayed")
    }
    /// ZSET of finished jobs; score = finishedOn (ms).
    pub fn completed(&self) -> String {
        self.key("completed")
    }
    pub fn failed(&self) -> String {
        self.key("failed")
    }
    /// Counter for generated job ids.
    pub fn id(&self) -> String {
        self.key("id")
    }
    /// HASH of queue-wide state: `paused`, `opts.maxLenEvents`, `version`.
    pub fn meta(&self) -> String {
        self.key("meta")
    }
    /// STREAM of job events.
    pub fn events(&self) -> String {
        self.key("events")
    }
    /// ZSET that wakes blocked workers; score = when there is work (0 = now).
    pub fn marker(&self) -> String {
        self.key("marker")
    }
    /// SET of active jobs seen at the last stalled check.
    pub fn stalled(&self) -> String {
        self.key("stalled")
    }
    /// Key whose expiry spaces stalled checks across all workers.
    pub(crate) fn stalled_check(&self) -> String {
        self.key("stalled-check")
    }
    pub fn job(&self, id: &str) -> String {
        self.key(id)
    }
    /// STRING counting the jobs started in the current window of the queue's rate limit; it
    /// expires with the window (BullMQ's workers write it).
    pub fn limiter(&self) -> String {
        self.key("limiter")
    }
    /// HASH of the tidegate process governing the queue's rate limit (`holder`, `until`), the
    /// limit it last wrote (`max`, `duration`, `at`) and the one it found (`found`), restored
    /// when it hands the queue back. No job's key: BullMQ's job ids cannot hold `:`.
    pub fn governor(&self) -> String {
        self.key("tidegate:governor")
    }
}

/// Redis key names of one database's write budget, shared by every process of every queue
/// that writes to that database. One hash tag holds them in one Redis Cluster slot, so one
/// script can touch them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetKeys {
    base: String,
}

impl BudgetKeys {
    /// `name` names the database (see `TIDEGATE_BUDGET`).
    pub fn new(name: &str) -> Self {
        Self {
            base: format!("{{tidegate:budget:{name}}}:"),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    /// HASH: `leader`, `leader_until`, `errors`, the leader's last decision (`budget`, `live`,
    /// `limiter`, `cpu`, ..., `decided_at`) and one `pace:<queue>` field per queue.
    pub fn budget(&self) -> String {
        self.key("budget")
    }
    /// ZSET of the processes sharing the budget; score = when their membership lapses (ms).
    pub fn members(&self) -> String {
        self.key("members")
    }
    /// HASH: process id → its queue, weight and backlog.
    pub(crate) fn member_info(&self) -> String {
        self.key("member-info")
    }
    /// HASH: `<process>:<seq>` → a batch in flight (start, documents, queue).
    pub fn in_flight(&self) -> String {
        self.key("in-flight")
    }
    /// ZSET of finished batches (start, end, documents, queue); score = end (ms).
    pub(crate) fn finished_batches(&self) -> String {
        self.key("finished")
    }
    /// HASH: `start` (ms) and `documents` of the last batch of `queue` to take its turn, and
    /// `took`, its batches' mean run time (ms).
    pub fn turn(&self, queue: &str) -> String {
        self.key(&format!("turn:{queue}"))
    }
    /// ZSET of `queue`'s batches running, by any process; score = when the lease lapses (ms).
    pub fn running(&self, queue: &str) -> String {
        self.key(&format!("running:{queue}"))
    }
}

/// The hash tag of `key` as Redis Cluster reads it: what lies between the first `{` and the
/// first `}` after it, when not empty. Keys with one tag share a slot.
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

/// Redis key names of one run's live state, kept beside the run's record in MongoDB. The
/// script that settles a job counts its finish in its run's keys, so on a Redis Cluster they
/// carry the queue prefix's hash tag: `{bull}tidegate:run:<id>` beside `{bull}:<queue>:...`
/// (no `:` after the tag, so no queue's key can be spelled the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunKeys {
    base: String,
}

impl RunKeys {
    /// The keys of run `run` of the queues under `prefix`.
    pub fn new(prefix: &str, run: &str) -> Self {
        let base = match hash_tag(prefix) {
            Some(tag) => format!("{{{tag}}}tidegate:run:{run}"),
            None => format!("tidegate:run:{run}"),
        };
        Self { base }
    }

    /// HASH `total`, `completed`, `failed`: the run's jobs and those that finished.
    pub fn counts(&self) -> String {
        self.base.clone()
    }
    /// HASH of failure reason → count, for the run's report.
    pub fn reasons(&self) -> String {
        format!("{}:reasons", self.base)
    }
    /// HASH `done`, `since` (ms): the finished count the stall check last saw, and since when.
    pub fn progress(&self) -> String {
        format!("{}:progress", self.base)
    }
    /// Set once the run's stall has been reported.
    pub fn stalled(&self) -> String {
        format!("{}:stalled", self.base)
    }
}

/// Counter of the run ids of one day (`<date>-r<n>`).
pub(crate) fn run_sequence(date: &str) -> String {
    format!("tidegate:runs:{date}:seq")
}

/// Lock with a lease that lets one replica plan an application's scheduled day into the queue
/// whose keys start with `base` (`<prefix>:<queue>:`).
pub(crate) fn plan_lock(base: &str, application: &str, date: &str) -> String {
    format!("tidegate:plan-lock:{base}{application}:{date}")
}

/// HASH of an application's schedule on the queue whose keys start with `base`, shared by its
/// replicas: `since` (when a process first ran it), `through` (firings up to here are
/// handled), `missed` and `last_missed` (firings older than the catch-up window when a process
/// came to them), all in ms. Outside the queue's own keys, which BullMQ's tools may delete.
pub fn schedule(base: &str, application: &str) -> String {
    format!("tidegate:schedule:{base}{application}")
}

/// ZSET of the database CPU the pacers' leaders saw, one member per control interval (score =
/// ms): run reports read the mean and peak over a run from it. One per Redis, since a run
/// report does not know which budget watched its database.
pub(crate) const DB_CPU: &str = "tidegate:db-cpu";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_bullmq_layout() {
        let keys = Keys::new("bull", "scoreCollect");
        assert_eq!(keys.wait(), "bull:scoreCollect:wait");
        assert_eq!(keys.job("42"), "bull:scoreCollect:42");
        assert_eq!(keys.stalled_check(), "bull:scoreCollect:stalled-check");
        assert_eq!(Keys::new("{bull}", "q").meta(), "{bull}:q:meta");
    }

    #[test]
    fn every_key_of_a_queue_is_reserved_and_no_job_id_can_name_one() {
        let keys = Keys::new("bull", "q");
        let spelled = [
            keys.wait(),
            keys.paused(),
            keys.active(),
            keys.prioritized(),
            keys.priority_counter(),
            keys.delayed(),
            keys.completed(),
            keys.failed(),
            keys.id(),
            keys.meta(),
            keys.events(),
            keys.marker(),
            keys.stalled(),
            keys.stalled_check(),
        ];
        for key in &spelled {
            let name = key.strip_prefix(keys.base()).expect("under the base");
            assert!(
                is_reserved(name),
                "{key} is a queue key but {name:?} is not reserved"
            );
            assert!(!can_be_job_id(name), "{name:?}");
        }
        for name in RESERVED {
            assert!(!can_be_job_id(name), "{name:?}");
        }
        assert!(can_be_job_id("42") && can_be_job_id("score-2026-11-24-r1-u1"));
        assert!(
            can_be_job_id("Meta"),
            "Redis keys are case-sensitive: not the meta key"
        );
        assert!(!can_be_job_id("") && !can_be_job_id("1:lock"));
    }

    #[test]
    fn a_runs_keys_share_the_queue_prefixs_hash_tag() {
        assert_eq!(hash_tag("{bull}"), Some("bull"));
        assert_eq!(hash_tag("a{b}c{d}"), Some("b"));
        assert_eq!(
            hash_tag("{}{b}"),
            None,
            "Redis reads an empty first tag as none"
        );
        assert_eq!(hash_tag("bull"), None);
        let tagged = RunKeys::new("{bull}", "2026-12-01-r1");
        assert_eq!(tagged.counts(), "{bull}tidegate:run:2026-12-01-r1");
        assert_eq!(
            hash_tag(&tagged.reasons()),
            hash_tag(&Keys::new("{bull}", "q").wait())
        );
        assert_eq!(RunKeys::new("bull", "x").counts(), "tidegate:run:x");
    }

    #[test]
    fn a_budgets_keys_share_one_hash_tag() {
        let keys = BudgetKeys::new("db.example:27017");
        assert_eq!(keys.budget(), "{tidegate:budget:db.example:27017}:budget");
        assert_eq!(
            keys.finished_batches(),
            "{tidegate:budget:db.example:27017}:finished"
        );
    }
}
