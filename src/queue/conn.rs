//! The connection to Redis: one server behind a reconnecting multiplexed connection, or a Redis
//! Cluster behind the redis crate's cluster client, which follows slots as they move and
//! reconnects to restarted nodes. `REDIS_URL` names either; which one it is, the server says
//! (`INFO cluster`), so a user points tidegate at any node of a cluster as at a single server.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// The longest tidegate waits for any Redis reply. Above the longest blocking wait a worker
/// asks for (its idle block), well above any script's run time.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to Redis, cheap to clone (clones share it). Commands and scripts run on it as on
/// any `redis::aio::ConnectionLike`.
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Redis {
    /// Whether this is a Redis Cluster, where every key one script touches must share a slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(c) => c.req_packed_command(cmd),
            Redis::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(c) => c.req_packed_commands(cmd, offset, count),
            Redis::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(c) => c.get_db(),
            Redis::Cluster(c) => c.get_db(),
        }
    }
}

/// The nodes `REDIS_URL` lists: one URL, or several separated by commas (seeds of a cluster).
fn nodes(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Opens a connection to the server or cluster `url` names. Fails when Redis cannot be reached
/// now, so a wrong `REDIS_URL` stops startup instead of surfacing later as stuck jobs.
///
/// Reconnection: the redis crate hands `factor` to backon as the multiplier of a 1-s first
/// delay, capped at 60 s by default, so its defaults wait a minute or more between attempts
/// once Redis is back (work sat still for 96-117 s after a restart). Here every attempt is
/// about a second apart, three per command that finds the connection broken; the next
/// command starts three more. The cluster client retries a command on a moved slot or a lost
/// node the same way, 0.1 to 1 s apart.
pub async fn connect(url: &str) -> redis::RedisResult<Redis> {
    let nodes = nodes(url);
    if nodes.len() > 1 || is_cluster_node(nodes.first().copied().unwrap_or(url)).await? {
        let client = ClusterClient::builder(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(5)
            .min_retry_wait(100)
            .max_retry_wait(1000)
            .build()?;
        return Ok(Redis::Cluster(client.get_async_connection().await?));
    }
    let config = ConnectionManagerConfig::new()
        .set_factor(1)
        .set_max_delay(1000)
        .set_number_of_retries(2)
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    let client = redis::Client::open(url)?;
    Ok(Redis::Single(
        client.get_connection_manager_with_config(config).await?,
    ))
}

/// A connection of its own to one node, with short time limits and no retry.
async fn once(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Whether the server at `url` runs in cluster mode.
async fn is_cluster_node(url: &str) -> redis::RedisResult<bool> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut once(url).await?)
        .await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// One `PING` to the first node `url` lists, with no retry: whether Redis answers now
/// (start-up asks this before it opens connections that retry on their own).
pub(crate) async fn ping_once(url: &str) -> redis::RedisResult<()> {
    let first = nodes(url).first().copied().unwrap_or(url);
    ping(&mut once(first).await?).await
}

/// One `PING` round trip.
pub async fn ping(conn: &mut impl ConnectionLike) -> redis::RedisResult<()> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_list_names_its_nodes() {
        assert_eq!(nodes("redis://a:1"), ["redis://a:1"]);
        assert_eq!(
            nodes("redis://a:1, redis://b:2,"),
            ["redis://a:1", "redis://b:2"]
        );
    }
}
