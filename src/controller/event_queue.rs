//! The event path (`--event-queue`): while this replica leads, long-polls the drift queues,
//! reads each message with the pure [`drift::read`], gathers the hints of each (account,
//! region) for a short quiet time, re-reads just the databases they concern into that region's
//! cached sweep, and wakes the policies of that (account, region). An event is a hint: the
//! re-read is the truth, and the periodic resync stays the backstop. Messages are deleted once
//! handled (ignored and malformed ones at once; hints after their re-read): one that is not
//! comes back after its visibility timeout and is handled again, which is harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch};

use crate::aws::Failure;
use crate::aws::queue::{EventQueue, LONG_POLL, Message};
use crate::posture::drift::{
    self, Batch, Debounce, Identity, Reading, own_arn_prefix, session_arn_prefix,
};

use super::fleet::Key;
use super::reconcile::Context;

/// Default quiet time before a batch is handled.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(2);
/// With scale-out, how many times a message about another replica's (account, region) is handed
/// back before it is dropped (SQS gives it to a random reader; the resync is the backstop). The
/// queue's dead-letter `maxReceiveCount` must be above it.
const RELEASES: u32 = 12;
/// Backoff of a queue whose receive failed: 5 s doubling to a minute.
const RECEIVE_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How the event path is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// SQS queue URLs; empty: no event path.
    pub queues: Vec<String>,
    pub debounce: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queues: Vec::new(),
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// A message and the queue it came from (deleted there).
#[derive(Debug)]
struct Received {
    queue: usize,
    message: Message,
}

/// Runs the event path until `stop`; returns at once without queues. `wake` makes the
/// controllers look at their policies (only those made due reconcile).
pub async fn run(
    ctx: Arc<Context>,
    settings: Settings,
    wake: broadcast::Sender<()>,
    stop: watch::Receiver<bool>,
) {
    if settings.queues.is_empty() {
        return;
    }
    let own = own_identity(&ctx, stop.clone()).await;
    let Some((own_account, own_prefix)) = own else {
        return;
    };
    let default_region = ctx.regions.default_region();
    let mut queues = Vec::new();
    for url in &settings.queues {
        queues.push(EventQueue::new(url, default_region.as_deref(), ctx.call_timeout()).await);
    }
    tracing::info!(queues = ?settings.queues, debounce = ?settings.debounce, "reading drift events");
    let (tx, mut rx) = mpsc::channel::<(usize, Vec<Message>)>(queues.len() * 2);
    // Aborted when this future ends or is dropped (a replica that loses the lead drops its
    // controllers and this with them): no receive outlives the consumer.
    let _receivers = Receivers(
        queues
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, queue)| tokio::spawn(receive_loop(ctx.clone(), i, queue, tx.clone())))
            .collect(),
    );
    drop(tx);
    let mut pending: Debounce<Key, Option<Received>> = Debounce::new(settings.debounce);
    loop {
        let wait = pending
            .next_due(Instant::now())
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = super::stopped(stop.clone()) => break,
            received = rx.recv() => {
                let Some((queue, messages)) = received else { break };
                let identity = identity(&ctx, &own_account, &own_prefix);
                let mut done = Vec::new();
                for message in messages {
                    let Some((keys, hint)) = read(&ctx, &identity, &own_account, &message.body)
                    else {
                        done.push(Received { queue, message });
                        continue;
                    };
                    let (mine, others): (Vec<Key>, Vec<Key>) =
                        keys.into_iter().partition(|k| holds(&ctx, k));
                    if mine.is_empty() && !others.is_empty() && message.receives < RELEASES {
                        // Scale-out: another replica holds it; hand the message back for it.
                        ctx.metrics.event(hint.source.as_str(), "released");
                        if let Some(q) = queues.get(queue)
                            && let Err(e) = q.release(&message).await
                        {
                            ctx.metrics.event_queue_error(&e.code);
                        }
                        continue;
                    }
                    ctx.metrics.event(hint.source.as_str(), "handled");
                    let mut message = Some(Received { queue, message });
                    for key in mine {
                        pending.add(key, &hint, message.take(), Instant::now());
                    }
                    done.extend(message);
                }
                delete(&ctx, &queues, done).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        for (key, batch) in pending.due(Instant::now()) {
            handle(&ctx, &key, batch, &queues, &wake).await;
        }
    }
}

/// The receive tasks, aborted on drop.
struct Receivers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Receivers {
    fn drop(&mut self) {
        for r in &self.0 {
            r.abort();
        }
    }
}

/// The operator's own account and caller prefix (`GetCallerIdentity`), retried until known:
/// without it the operator's own changes could not be told from others'.
async fn own_identity(ctx: &Context, stop: watch::Receiver<bool>) -> Option<(String, String)> {
    let mut delay = Duration::from_secs(5);
    loop {
        let who = match ctx.regions.get(None).await {
            Ok(region) => region.aws.caller_identity().await,
            Err(e) => Err(e),
        };
        match who {
            Ok(who) => return Some((who.account, own_arn_prefix(&who.arn))),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "drift events wait for the operator's own identity");
                ctx.metrics.event_queue_error(&e.code);
            }
        }
        tokio::select! {
            _ = super::stopped(stop.clone()) => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECEIVE_BACKOFF_MAX);
    }
}

/// Who the operator is now: its own account and identity, and every `AwsAccount`'s account
/// id and the sessions it opens there.
fn identity(ctx: &Context, own_account: &str, own_prefix: &str) -> Identity {
    let mut identity = Identity {
        own_arn_prefixes: vec![own_prefix.to_string()],
        accounts: [own_account.to_string()].into(),
    };
    for account in accounts(ctx) {
        identity.accounts.insert(account.spec.account_id.clone());
        let roles = std::iter::once(&account.spec.audit_role_arn)
            .chain(account.spec.enforce_role_arn.as_ref());
        identity
            .own_arn_prefixes
            .extend(roles.filter_map(|r| session_arn_prefix(r)));
    }
    identity
}

fn accounts(ctx: &Context) -> Vec<Arc<crate::api::AwsAccount>> {
    ctx.accounts
        .read()
        .ok()
        .and_then(|a| a.as_ref().map(|store| store.state()))
        .unwrap_or_default()
}

/// Reads one message: the (account, region) keys its hint concerns, or `None` when it is
/// ignored or malformed (counted; deleted at once). A hint is counted by the caller (handled
/// here, or released to the replica that holds its keys).
fn read(
    ctx: &Context,
    identity: &Identity,
    own_account: &str,
    body: &str,
) -> Option<(Vec<Key>, drift::Hint)> {
    match drift::read(body, identity) {
        Reading::Hint(hint) => {
            let keys = keys_of(ctx, own_account, &hint.account, &hint.region);
            Some((keys, hint))
        }
        Reading::Ignored(source, why) => {
            tracing::debug!(source = source.as_str(), reason = ?why, "drift event ignored");
            ctx.metrics.event(source.as_str(), why.as_str());
            None
        }
        Reading::Malformed(why) => {
            tracing::warn!(reason = %why, "malformed drift-queue message deleted");
            ctx.metrics.event("", "malformed");
            None
        }
    }
}

/// Whether this replica reconciles the policies of `key` (always, without scale-out).
fn holds(ctx: &Context, key: &Key) -> bool {
    ctx.shards
        .as_ref()
        .is_none_or(|shards| shards.holds(std::slice::from_ref(key)))
}

/// The keys of an account id: the operator's own (empty account name) and every `AwsAccount`
/// of that id.
fn keys_of(ctx: &Context, own_account: &str, account_id: &str, region: &str) -> Vec<Key> {
    let mut keys = Vec::new();
    if account_id == own_account {
        keys.push(Key {
            account: String::new(),
            region: region.to_string(),
        });
    }
    for account in accounts(ctx) {
        if account.spec.account_id == account_id {
            keys.push(Key {
                account: kube::ResourceExt::name_any(&*account),
                region: region.to_string(),
            });
        }
    }
    keys
}

/// One quiet batch: re-read what it concerns into the region's sweep, wake the region's
/// policies, delete its messages.
async fn handle(
    ctx: &Context,
    key: &Key,
    batch: Batch<Option<Received>>,
    queues: &[EventQueue],
    wake: &broadcast::Sender<()>,
) {
    let region = ctx
        .regions
        .all()
        .await
        .into_iter()
        .find(|r| r.key() == *key);
    let reread = match &region {
        Some(region) => region.refresh(&batch.targets, &ctx.metrics).await,
        None => None,
    };
    let woken = match &reread {
        Some(Ok(refreshed)) => {
            let woken = ctx.wake(key, batch.earliest, |p| {
                drift::concerns(
                    &p.spec.selector,
                    [&refreshed.before, &refreshed.after],
                    &refreshed.read,
                )
            });
            tracing::info!(%key, targets = ?batch.targets, databases = refreshed.read.len(), woken, "drift event: re-read");
            woken
        }
        Some(Err(e)) => {
            tracing::warn!(%key, error = %e, "drift event: the re-read failed; the policies sweep");
            ctx.wake(key, batch.earliest, |_| true)
        }
        None => {
            tracing::info!(%key, targets = ?batch.targets, "drift event: no sweep to refresh; the policies sweep");
            ctx.wake(key, batch.earliest, |_| true)
        }
    };
    if woken > 0 {
        ctx.metrics.event_wakes.inc_by(woken as u64);
        let _ = wake.send(());
    }
    delete(ctx, queues, batch.messages.into_iter().flatten().collect()).await;
}

async fn delete(ctx: &Context, queues: &[EventQueue], messages: Vec<Received>) {
    let mut by_queue: BTreeMap<usize, Vec<Message>> = BTreeMap::new();
    for r in messages {
        by_queue.entry(r.queue).or_default().push(r.message);
    }
    for (i, messages) in by_queue {
        let Some(queue) = queues.get(i) else { continue };
        match queue.delete(&messages).await {
            Ok(0) => {}
            Ok(failed) => {
                tracing::warn!(queue = %queue.url, failed, "some drift-queue messages were not deleted");
                ctx.metrics.event_queue_error("DeleteFailed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not delete drift-queue messages");
                ctx.metrics.event_queue_error(&e.code);
            }
        }
    }
}

/// Long-polls one queue forever, handing each non-empty receive to the event loop; a failure
/// backs off this queue alone.
async fn receive_loop(
    ctx: Arc<Context>,
    index: usize,
    queue: EventQueue,
    tx: mpsc::Sender<(usize, Vec<Message>)>,
) {
    let mut delay = Duration::from_secs(5);
    loop {
        match queue.receive(LONG_POLL).await {
            Ok(messages) => {
                delay = Duration::from_secs(5);
                if !messages.is_empty() && tx.send((index, messages)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                log_receive_failure(&queue, &e, delay);
                ctx.metrics.event_queue_error(&e.code);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECEIVE_BACKOFF_MAX);
            }
        }
    }
}

fn log_receive_failure(queue: &EventQueue, e: &Failure, retry_in: Duration) {
    tracing::warn!(queue = %queue.url, error = %e, ?retry_in, "could not receive drift events");
}
