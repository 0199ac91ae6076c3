//! tidegate on a real Redis Cluster: three `redis-server` masters in cluster mode on loopback,
//! the test's own (append-only with `appendfsync always`, so a killed node keeps what it
//! acknowledged). BullMQ's producer adds the jobs under BullMQ's cluster convention (the `{bull}`
//! prefix, through ioredis' `Cluster`), a real `tidegate run` pointed at one node works them, the
//! node that holds the queue's slot is killed and restarted mid-run, and every job ends once,
//! counted in its run; bull-board's adapter then reads the queue from the cluster.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::scenario::{
    Scenario, Server, all_jobs_done, aof_redis_args, direct, free_port, listening, patient,
    upsert_data,
};
use serde_json::{Value, json};

/// Three masters of a cluster, each a [`Server`] with a cluster bus port of its own (a free port:
/// the default, port + 10000, may be past 65535 or taken).
struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    async fn start() -> Self {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                let bus = free_port();
                Server::start("redis-server", move |port, dir| {
                    let mut args = aof_redis_args(port, dir);
                    args.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-port",
                            &bus.to_string(),
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "2000",
                        ]
                        .map(str::to_owned),
                    );
                    args
                })
            })
            .collect();
        for node in &nodes {
            listening(node.port).await;
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .status()
            .expect("run redis-cli (Debian's redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        cluster.wait_ok().await;
        cluster
    }

    /// One node's URL: tidegate and BullMQ find the others from it.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    /// Waits until every node says the cluster is ok (all slots served, nodes agree).
    async fn wait_ok(&self) {
        common::eventually("the cluster to be ok", Duration::from_secs(60), || async {
            for node in &self.nodes {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut direct(node.port).await?)
                    .await
                    .ok()?;
                info.contains("cluster_state:ok").then_some(())?;
            }
            Some(())
        })
        .await;
    }

    /// The node that serves `key`'s slot: the one that does not redirect it.
    async fn owner(&self, key: &str) -> usize {
        for (i, node) in self.nodes.iter().enumerate() {
            let mut conn = direct(node.port).await.expect("a node answers");
            match redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
            {
                Ok(_) => return i,
                Err(e) if e.kind() == redis::ErrorKind::Moved => {}
                Err(e) => panic!("node {i}: {e}"),
            }
        }
        panic!("no node serves {key}");
    }
}

/// BullMQ on the cluster, under `{bull}`.
fn bullmq(cluster: &Cluster, args: &[&str], input: &str) -> Value {
    common::bullmq(
        args,
        &[
            ("REDIS_URL", &cluster.url()),
            ("BULL_CLUSTER", "1"),
            ("BULL_PREFIX", "{bull}"),
        ],
        input,
    )
}

#[tokio::test]
async fn bullmq_feeds_a_cluster_tidegate_works_it_through_a_node_restart_losing_nothing() {
    const JOBS: usize = 1500;
    let mut cluster = Cluster::start().await;
    let url = cluster.url();
    let mongodb_uri = common::mongodb_uri();
    let mut s = Scenario::empty("{bull}", "cluster", &url, &mongodb_uri).await;

    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| json!({"name": "upsert", "data": upsert_data(i, &s.run), "opts": patient()}))
        .collect();
    let ids = bullmq(
        &cluster,
        &["add", &s.queue_name],
        &serde_json::to_string(&jobs).expect("JSON"),
    );
    assert_eq!(ids.as_array().map(Vec::len), Some(JOBS), "{ids}");
    s.planned(JOBS).await;

    let _running = s.start(&url, &mongodb_uri).await;
    let owner = cluster.owner(&s.q.keys().wait()).await;
    let run_keys_owner = cluster
        .owner(&format!("{{bull}}tidegate:run:{}", s.run))
        .await;
    assert_eq!(owner, run_keys_owner, "a run's keys share its queue's slot");

    let before = s.q.counts().await.expect("counts").completed;
    assert!(before < JOBS as u64, "the kill came too late to test");
    cluster.nodes[owner].kill();
    let down = Instant::now();
    cluster.nodes[owner].restart();
    listening(cluster.nodes[owner].port).await;
    cluster.wait_ok().await;
    eprintln!(
        "the queue's node back and the cluster ok {:?} after the kill",
        down.elapsed()
    );
    all_jobs_done(&s.q, JOBS, Duration::from_secs(120)).await;
    s.assert_done_once(&mongodb_uri).await;

    let board = bullmq(&cluster, &["board", &s.queue_name, "none"], "");
    assert_eq!(board["counts"]["completed"], JOBS, "{board}");
    assert_eq!(board["counts"]["failed"], 0, "{board}");
}

/// On a cluster, a prefix without a hash tag would put a queue's keys (and its runs') in many
/// slots, which no script may touch at once: start-up refuses it, naming the variable.
#[tokio::test]
async fn a_prefix_without_a_hash_tag_is_refused_on_a_cluster() {
    let cluster = Cluster::start().await;
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("run")
        .env("REDIS_URL", cluster.url())
        .env("MONGODB_URI", common::mongodb_uri())
        .env("TIDEGATE_QUEUE_PREFIX", "bull")
        .env("TIDEGATE_HTTP_ADDR", "127.0.0.1:0")
        .env("TIDEGATE_START_TIMEOUT", "10s")
        .output()
        .expect("run tidegate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("TIDEGATE_QUEUE_PREFIX") && stderr.contains("{bull}"),
        "{stderr}"
    );
}
