//! The connection to Redis: one server behind a reconnecting multiplexed connection; a Redis
//! Cluster behind the redis crate's cluster client, which follows slots as they move and
//! reconnects to restarted nodes; or the master a set of Sentinels names, followed through
//! fail-overs. `REDIS_URL` names the first two alike (the server says which it is, `INFO
//! cluster`); Sentinels are named by `redis+sentinel://`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

/// The longest tidegate waits for any Redis reply. Above the longest blocking wait a worker
/// asks for (its idle block), well above any script's run time.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to Redis, cheap to clone (clones share it). Commands and scripts run on it as on
/// any `redis::aio::ConnectionLike`.
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Followed),
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
            Redis::Sentinel(c) => Box::pin(
                c.follow_through(move |mut m| async move { m.req_packed_command(cmd).await }),
            ),
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
            Redis::Sentinel(c) => Box::pin(c.follow_through(move |mut m| async move {
                m.req_packed_commands(cmd, offset, count).await
            })),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(c) => c.get_db(),
            Redis::Cluster(c) => c.get_db(),
            Redis::Sentinel(c) => c.master().1.get_db(),
        }
    }
}

/// The master the Sentinels name, on a reconnecting connection, replaced when a command's
/// error says the master may have moved (its address refuses, drops or times out, or it
/// answers as a replica): the command fails (callers retry, as on any Redis error) and the
/// next one goes to the master the Sentinels name then. As BullMQ on ioredis: what the old
/// master acknowledged but had not replicated is lost on fail-over; jobs whose settling was
/// lost run again once their locks lapse.
#[derive(Clone)]
pub struct Followed {
    sentinels: Arc<tokio::sync::Mutex<SentinelClient>>,
    /// The master's connection and how many times it has been replaced.
    master: Arc<RwLock<(u64, ConnectionManager)>>,
}

impl Followed {
    fn master(&self) -> (u64, ConnectionManager) {
        match self.master.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn follow_through<T, F, Fut>(&self, call: F) -> redis::RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (generation, conn) = self.master();
        let result = call(conn).await;
        if let Err(e) = &result
            && master_may_have_moved(e)
        {
            self.follow(generation).await;
        }
        result
    }

    /// Asks the Sentinels for the master and connects to it, unless another caller already
    /// replaced connection `seen`. A failure is logged; the next failing command asks again.
    async fn follow(&self, seen: u64) {
        let mut sentinels = self.sentinels.lock().await;
        if self.master().0 != seen {
            return;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, master(&mut sentinels)).await {
            Ok(Ok(conn)) => {
                let mut m = match self.master.write() {
                    Ok(m) => m,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *m = (seen + 1, conn);
                tracing::info!("following the master the Sentinels name");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the master the Sentinels name"),
            Err(_) => tracing::warn!("the Sentinels did not name a reachable master in time"),
        }
    }
}

/// Whether `e` may mean the master changed: its address is gone, silent or a replica now.
fn master_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown)
}

/// A `redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>` URL: the
/// Sentinels to ask and the master set's name; the password is the master's.
#[derive(Debug, PartialEq)]
struct SentinelUrl {
    sentinels: Vec<(String, u16)>,
    master: String,
    username: Option<String>,
    password: Option<String>,
}

const SENTINEL_SCHEME: &str = "redis+sentinel";

fn sentinel_url(url: &str) -> Option<Result<SentinelUrl, String>> {
    let rest = url.strip_prefix(SENTINEL_SCHEME)?.strip_prefix("://")?;
    Some(parse_sentinel_url(rest))
}

fn parse_sentinel_url(rest: &str) -> Result<SentinelUrl, String> {
    let (authority, master) = rest
        .split_once('/')
        .ok_or("no master name: redis+sentinel://host:port,.../<master name>")?;
    let master = master.trim_end_matches('/');
    if master.is_empty() || master.contains('/') {
        return Err("the path must be the master set's name, and only it".into());
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':')) {
        None => (None, None),
        Some(None) => (None, userinfo.map(str::to_owned)),
        Some(Some((user, pass))) => (
            (!user.is_empty()).then(|| user.to_owned()),
            Some(pass.to_owned()),
        ),
    };
    let sentinels = hosts
        .split(',')
        .map(|h| {
            let (host, port) = h.rsplit_once(':').unwrap_or((h, "26379"));
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port"))?;
            if host.is_empty() {
                return Err(format!("{h:?} has no host"));
            }
            Ok((host.to_owned(), port))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(SentinelUrl {
        sentinels,
        master: master.to_owned(),
        username,
        password,
    })
}

/// Whether `url` is a valid Sentinel URL (for the settings' check), when it is one at all.
pub(crate) fn check_sentinel_url(url: &str) -> Option<Result<(), String>> {
    sentinel_url(url).map(|r| r.map(drop))
}

impl SentinelUrl {
    fn client(&self) -> redis::RedisResult<SentinelClient> {
        let mut builder = SentinelClientBuilder::new(
            self.sentinels
                .iter()
                .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port)),
            self.master.clone(),
            SentinelServerType::Master,
        )?;
        if let Some(user) = &self.username {
            builder = builder.set_client_to_redis_username(user.clone());
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password.clone());
        }
        builder.build()
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_factor(1)
        .set_max_delay(1000)
        .set_number_of_retries(2)
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

/// A connection to the master the Sentinels name now (the redis crate checks its `ROLE`).
async fn master(sentinels: &mut SentinelClient) -> redis::RedisResult<ConnectionManager> {
    let client = sentinels.async_get_client().await?;
    client
        .get_connection_manager_with_config(manager_config())
        .await
}

fn invalid(what: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, "REDIS_URL", what))
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
    if let Some(spec) = sentinel_url(url) {
        let mut sentinels = spec.map_err(invalid)?.client()?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT * 2, master(&mut sentinels))
            .await
            .map_err(|_| {
                invalid("the Sentinels did not name a reachable master in time".into())
            })??;
        return Ok(Redis::Sentinel(Followed {
            sentinels: Arc::new(tokio::sync::Mutex::new(sentinels)),
            master: Arc::new(RwLock::new((0, conn))),
        }));
    }
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
    let client = redis::Client::open(url)?;
    Ok(Redis::Single(
        client
            .get_connection_manager_with_config(manager_config())
            .await?,
    ))
}

/// A connection of its own to `client`'s server, with short time limits and no retry.
async fn once(client: redis::Client) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Whether the server at `url` runs in cluster mode.
async fn is_cluster_node(url: &str) -> redis::RedisResult<bool> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut once(redis::Client::open(url)?).await?)
        .await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// One `PING` to the first node `url` lists, with no retry: whether Redis answers now
/// (start-up asks this before it opens connections that retry on their own).
pub(crate) async fn ping_once(url: &str) -> redis::RedisResult<()> {
    if let Some(spec) = sentinel_url(url) {
        let mut sentinels = spec.map_err(invalid)?.client()?;
        let client = tokio::time::timeout(Duration::from_secs(2), sentinels.async_get_client())
            .await
            .map_err(|_| invalid("no Sentinel named a master within 2 s".into()))??;
        let mut conn = once(client).await?;
        return ping(&mut conn).await;
    }
    let first = nodes(url).first().copied().unwrap_or(url);
    ping(&mut once(redis::Client::open(first)?).await?).await
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
    fn a_sentinel_url_names_the_sentinels_the_master_set_and_its_password() {
        let parsed = |u: &str| sentinel_url(u).expect("a sentinel URL");
        assert_eq!(
            parsed("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/mymaster"),
            Ok(SentinelUrl {
                sentinels: vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26380)],
                master: "mymaster".into(),
                username: None,
                password: Some("pw".into()),
            })
        );
        assert_eq!(
            parsed("redis+sentinel://s1/m/"),
            Ok(SentinelUrl {
                sentinels: vec![("s1".into(), 26379)],
                master: "m".into(),
                username: None,
                password: None,
            })
        );
        assert!(
            parsed("redis+sentinel://s1:26379").is_err(),
            "no master name"
        );
        assert!(parsed("redis+sentinel://s1:x/m").is_err(), "no port");
        assert!(
            parsed("redis+sentinel://s1/m/0").is_err(),
            "more than a name"
        );
        assert!(sentinel_url("redis://s1/m").is_none());
    }

    #[test]
    fn a_url_list_names_its_nodes() {
        assert_eq!(nodes("redis://a:1"), ["redis://a:1"]);
        assert_eq!(
            nodes("redis://a:1, redis://b:2,"),
            ["redis://a:1", "redis://b:2"]
        );
    }
}
