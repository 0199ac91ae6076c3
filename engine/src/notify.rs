//! Delivery to a Slack-compatible incoming webhook: a message posted with retries and backoff.
//! The webhook URL is a secret and never reaches a log line (request errors are logged without
//! it). What the messages say is their sender's (`runs::report`).

use std::time::Duration;

use serde_json::Value;

/// Posts reports to one webhook.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    url: String,
    /// Wait before the first retry; doubled for each later one.
    backoff: Duration,
}

/// Tries per message, the first included.
const ATTEMPTS: u32 = 4;

impl Notifier {
    pub fn new(url: String) -> Result<Self, reqwest::Error> {
        Self::with_backoff(url, Duration::from_secs(1))
    }

    pub fn with_backoff(url: String, backoff: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { http, url, backoff })
    }

    /// Sends `message`, retrying network errors, 429 and 5xx with doubling waits. Returns
    /// whether it was delivered; failures are logged, never returned: a report must not fail
    /// the run it reports on.
    pub async fn send(&self, message: &Value) -> bool {
        let mut wait = self.backoff;
        for attempt in 1..=ATTEMPTS {
            let retryable = match self.http.post(&self.url).json(message).send().await {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    let status = r.status();
                    tracing::warn!(%status, attempt, "the webhook refused the run report");
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), attempt, "cannot reach the webhook");
                    true
                }
            };
            if !retryable || attempt == ATTEMPTS {
                break;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        tracing::error!("the run report was not delivered");
        false
    }
}
