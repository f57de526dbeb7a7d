//! Awaiting conditions with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How often a condition is re-checked.
pub const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it yields `Some`, or fails with a timeout naming `what`.
/// Errors from `check` end the wait at once (a process died, a request was refused).
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
