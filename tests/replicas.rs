//! Three `tidegate run` processes of one queue, scraped by the real Prometheus: what the
//! processes share (the queue's depth, what the write budget's leader sees) is exported once,
//! not three times, and a process that stops leading stops exporting it. The leader is frozen
//! (SIGSTOP) until another takes the lease, then thawed: alive again, it must not go on
//! exporting its last reading beside the new leader's.

mod common;

use std::time::Duration;

use common::scenario::{self, free_port};
use tidegate::queue::{NewJob, Queue, connect};

/// The value of a query that yields one number, if it does.
async fn number(expr: &str) -> Option<f64> {
    match common::promql(expr).await.as_slice() {
        [(_, value)] => Some(*value),
        _ => None,
    }
}

/// The instances (`host:port`) for which `expr` holds.
async fn instances(expr: &str) -> Vec<String> {
    let mut found: Vec<String> = common::promql(expr)
        .await
        .into_iter()
        .filter_map(|(labels, _)| labels.get("instance")?.as_str().map(str::to_owned))
        .collect();
    found.sort();
    found
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test]
async fn shared_facts_are_exported_once_and_dropped_by_a_former_leader() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let queue_name = common::unique("replicas");
    let database = common::unique("tidegate_replicas");
    let q = Queue::new(redis, "bull", &queue_name);
    q.pause().await.expect("pause");
    let jobs: Vec<NewJob> = (0..20)
        .map(|i| NewJob::new("upsert", scenario::upsert_data(i, "none")))
        .collect();
    q.add_bulk(&jobs).await.expect("add");

    let budget = common::unique("replicas_budget");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut processes: Vec<common::Running> = ports
        .iter()
        .map(|port| {
            let addr = format!("127.0.0.1:{port}");
            scenario::start(
                scenario::command(
                    &queue_name,
                    &database,
                    &common::redis_url(),
                    &common::mongodb_uri(),
                )
                .env("TIDEGATE_HTTP_ADDR", &addr)
                .env("TIDEGATE_BUDGET", &budget)
                .env("TIDEGATE_CONTROL_INTERVAL", "500ms"),
            )
        })
        .collect();
    let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let scraped = common::Scraped::new("replicas", &targets);
    let test = format!("test=\"{}\"", scraped.label);

    // Once, whatever the number of processes: the queue's 20 paused jobs, one leader's view.
    let depth = format!("sum(tidegate_queue_jobs{{{test},state=\"paused\"}})");
    let depth_series = format!("count(tidegate_queue_jobs{{{test},state=\"paused\"}})");
    let leader_view = format!("tidegate_limiting_signal{{{test},signal=\"blind\"}}");
    let leader = common::eventually(
        "three processes scraped, the depth and the leader's view once",
        Duration::from_secs(60),
        || async {
            let up = number(&format!("count(up{{{test}}} == 1)")).await;
            let viewers = instances(&leader_view).await;
            let settled = up == Some(3.0)
                && number(&depth).await == Some(20.0)
                && number(&depth_series).await == Some(1.0)
                && viewers.len() == 1;
            settled.then(|| viewers[0].clone())
        },
    )
    .await;
    assert_eq!(
        instances(&format!("tidegate_control_leader{{{test}}} == 1")).await,
        std::slice::from_ref(&leader)
    );
    let at = targets
        .iter()
        .position(|t| *t == leader)
        .expect("a process");
    let pid = processes[at].0.id();

    // Frozen past its lease: another process leads.
    signal(pid, "-STOP");
    let successor = common::eventually(
        "another process to lead",
        Duration::from_secs(60),
        || async {
            let leading = instances(&format!("tidegate_control_leader{{{test}}} == 1")).await;
            let viewers = instances(&leader_view).await;
            (leading.len() == 1 && leading[0] != leader && viewers == leading)
                .then(|| leading[0].clone())
        },
    )
    .await;

    // Thawed: scraped again, the former leader exports none of what only a leader knows.
    signal(pid, "-CONT");
    common::eventually(
        "the former leader to be scraped again and export nothing of the leader's",
        Duration::from_secs(60),
        || async {
            let back = number(&format!("up{{{test},instance=\"{leader}\"}}")).await;
            let was = number(&format!(
                "tidegate_control_leader{{{test},instance=\"{leader}\"}}"
            ))
            .await;
            let viewers = instances(&leader_view).await;
            let members = instances(&format!("tidegate_control_members{{{test}}}")).await;
            let settled = back == Some(1.0)
                && was == Some(0.0)
                && viewers == [successor.clone()]
                && members == [successor.clone()]
                && number(&depth).await == Some(20.0)
                && number(&depth_series).await == Some(1.0);
            settled.then_some(())
        },
    )
    .await;
    drop(scraped);
    processes.clear();
}
