//! tidegate behind Redis Sentinel: a master, a replica and three Sentinels on loopback, the
//! test's own (`redis-server --sentinel`). A real `tidegate run` given only the Sentinels works
//! a run's jobs; the master is killed (SIGKILL) mid-run, the Sentinels promote the replica, and
//! every job completes once, counted in its run. As with BullMQ on ioredis, what the master had
//! acknowledged but not yet replicated may be lost: a job whose settling was lost runs again
//! once its lock lapses (at least once), so the effects here are upserts keyed by the job.

mod common;

use std::time::{Duration, Instant};

use common::scenario::{Scenario, Server, all_jobs_done, aof_redis_args, direct, listening};

const MASTER_SET: &str = "tidegate";

/// Waits until `port` answers `command` with a reply containing `want`.
async fn replies(port: u16, command: &[&str], want: &str) {
    let what = format!("{command:?} on :{port} to say {want:?}");
    common::eventually(&what, Duration::from_secs(60), || async {
        let mut conn = direct(port).await?;
        let reply: redis::Value = redis::cmd(command[0])
            .arg(&command[1..])
            .query_async(&mut conn)
            .await
            .ok()?;
        text(&reply).contains(want).then_some(())
    })
    .await;
}

/// A reply as text: strings as they are, arrays joined by spaces.
fn text(reply: &redis::Value) -> String {
    match reply {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        other => format!("{other:?}"),
    }
}

/// A Sentinel watching the master on `master` (its config file, which Sentinel rewrites, is
/// written once, before the first start).
fn sentinel(master: u16) -> Server {
    Server::start("redis-server", move |port, dir| {
        let conf = dir.join("sentinel.conf");
        if !conf.exists() {
            let text = format!(
                "bind 127.0.0.1\nport {port}\ndir {}\n\
                 sentinel monitor {MASTER_SET} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {MASTER_SET} 1000\n\
                 sentinel failover-timeout {MASTER_SET} 5000\n",
                dir.display()
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
        }
        vec![conf.to_string_lossy().into_owned(), "--sentinel".into()]
    })
}

#[tokio::test]
async fn the_master_killed_mid_run_fails_over_and_no_job_is_lost() {
    const JOBS: usize = 1500;
    let mut master = Server::start("redis-server", aof_redis_args);
    listening(master.port).await;
    let master_port = master.port;
    let replica = Server::start("redis-server", move |port, dir| {
        let mut args = aof_redis_args(port, dir);
        args.extend(["--replicaof".into(), format!("127.0.0.1 {master_port}")]);
        args
    });
    listening(replica.port).await;
    replies(
        replica.port,
        &["INFO", "replication"],
        "master_link_status:up",
    )
    .await;
    let sentinels: Vec<Server> = (0..3).map(|_| sentinel(master.port)).collect();
    for s in &sentinels {
        listening(s.port).await;
        // Each knows the replica and the two other Sentinels, so a quorum can fail over.
        replies(
            s.port,
            &["INFO", "sentinel"],
            &format!("slaves=1,sentinels={}", sentinels.len()),
        )
        .await;
    }
    let url = format!(
        "redis+sentinel://{}/{MASTER_SET}",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mongodb_uri = common::mongodb_uri();
    let s = Scenario::new("sentinel", &url, &mongodb_uri, JOBS).await;
    let _running = s.start(&url, &mongodb_uri).await;

    let before = s.q.counts().await.expect("counts").completed;
    assert!(before < JOBS as u64, "the kill came too late to test");
    master.kill();
    let killed = Instant::now();
    replies(
        sentinels[0].port,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_SET],
        &replica.port.to_string(),
    )
    .await;
    eprintln!(
        "the Sentinels named the replica {:?} after the kill",
        killed.elapsed()
    );
    all_jobs_done(&s.q, JOBS, Duration::from_secs(120)).await;
    eprintln!("every job done {:?} after the kill", killed.elapsed());
    s.assert_done_once(&mongodb_uri).await;
}
