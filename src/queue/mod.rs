//! The Redis job queue. For now: the shared Redis connection; the BullMQ-layout queue builds on
//! it.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Opens a multiplexed, self-reconnecting connection. Fails when Redis cannot be reached now,
/// so a wrong `REDIS_URL` stops startup instead of surfacing later as stuck jobs.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new().set_number_of_retries(3);
    client.get_connection_manager_with_config(config).await
}

/// One `PING` round trip.
pub async fn ping(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(drop)
}
