//! The drift-event queue: long-polled SQS receives and batched deletes, with the operator's own
//! credentials (the queue policy in `deploy/events/` lets EventBridge send to it; the
//! operator's IAM statement allows receive, delete and change-visibility on it only).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use super::{Failure, one_line};

/// How long one receive waits for a message (SQS's maximum): one call per 20 s when idle.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// Messages per receive and per delete batch (SQS's maximum).
const BATCH: i32 = 10;

/// One received message.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub body: String,
    pub receipt: String,
}

/// One SQS queue of EventBridge messages.
#[derive(Clone, Debug)]
pub struct EventQueue {
    pub url: String,
    pub region: String,
    sqs: aws_sdk_sqs::Client,
}

/// The region of a queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`), when the
/// URL says it.
pub fn region_of_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut labels = host.split('.');
    match (labels.next(), labels.next()) {
        (Some("sqs"), Some(region)) if !region.is_empty() && region != "amazonaws" => {
            Some(region.to_string())
        }
        _ => None,
    }
}

impl EventQueue {
    /// Clients for `url` from the standard environment (the region from the URL, else
    /// `default_region`). A receive waits [`LONG_POLL`] for messages, so its time limits are
    /// that plus `call_timeout`.
    pub async fn new(
        url: &str,
        default_region: Option<&str>,
        call_timeout: Duration,
    ) -> EventQueue {
        let region = region_of_url(url).or_else(|| default_region.map(str::to_string));
        let limit = LONG_POLL + call_timeout.max(Duration::from_secs(1));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(limit)
                    .operation_attempt_timeout(limit)
                    .operation_timeout(limit * 2)
                    .build(),
            );
        if let Some(region) = &region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        EventQueue {
            url: url.to_string(),
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
            sqs: aws_sdk_sqs::Client::new(&config),
        }
    }

    /// Up to ten messages, waiting up to `wait` for the first.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<Message>, Failure> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(wait.min(LONG_POLL).as_secs() as i32)
            .send()
            .await
            .map_err(|e| self.locate(Failure::from_sdk("ReceiveMessage", e)))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(Message {
                    id: m.message_id()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                })
            })
            .collect())
    }

    /// Deletes handled messages, ten per call. Returns how many SQS did not delete (they come
    /// back after their visibility timeout and are handled again: harmless, an event is a hint).
    pub async fn delete(&self, messages: &[Message]) -> Result<usize, Failure> {
        let mut failed = 0;
        for chunk in messages.chunks(BATCH as usize) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt)
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.locate(Failure::from_sdk("DeleteMessageBatch", e)))?;
            failed += out.failed().len();
        }
        Ok(failed)
    }

    fn locate(&self, e: Failure) -> Failure {
        let mut e = e.located(&self.region, None);
        e.message = one_line(&format!("{} (queue {})", e.message, self.url));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_aws_queue_url_only() {
        assert_eq!(
            region_of_url("https://sqs.eu-west-1.amazonaws.com/111122223333/pgbaseline-drift"),
            Some("eu-west-1".into())
        );
        assert_eq!(
            region_of_url("http://127.0.0.1:4566/123456789012/pgbaseline-drift"),
            None
        );
        assert_eq!(region_of_url("not a url"), None);
    }
}
