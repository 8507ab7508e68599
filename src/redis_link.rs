//! How the broker's stages open Redis: a connection manager that connects on
//! first use. A shared kernel, like `clock`: the quotas and the bulk-lookup
//! detector each keep their state in Redis and each open it this way.

use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A connection manager that connects on first use, with connection and
/// response timeouts and few, quick retries: the caller's outage logic, not
/// the manager, decides how long to wait for Redis.
pub fn lazy_manager(
    client: &redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}
