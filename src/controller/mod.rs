//! `pgbaseline run`: the operator. Short async glue around the pure core: a kube-runtime
//! `Controller` over `DatabaseSecurityPolicy`, a shared per-region inventory, status through
//! server-side apply, Events, Prometheus metrics, leader election and graceful shutdown.

pub mod accounts;
pub mod event_queue;
pub mod events;
pub mod fleet;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod reports;
pub mod scaleout;
pub mod shards;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::{self, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::api::{AwsAccount, DatabaseSecurityPolicy};

use self::metrics::Metrics;
use self::reconcile::Context;

/// Reconciles running at once.
const CONCURRENCY: u16 = 4;

/// How `pgbaseline run` was configured (from the command line).
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    pub leader_election: bool,
    /// Spread the (account, region) keys over every replica (a Lease per key) instead of
    /// electing one leader.
    pub scale_out: bool,
    pub leader_election_namespace: String,
    pub lease_name: String,
    /// Names this replica on Events (the pod name); the Lease holder is this plus a
    /// per-process suffix, so two replicas given the same identity cannot both lead.
    pub identity: String,
    pub metrics_addr: std::net::SocketAddr,
    pub requests_per_second: u32,
    /// Limit on each AWS call, retries included.
    pub aws_timeout: Duration,
    /// How long a managed parameter group stays unused before it is deleted.
    pub managed_group_grace: Duration,
    /// The in-database layer.
    pub db: crate::postgres::Settings,
    /// Which policy report API to write.
    pub policy_reports: reports::ReportsMode,
    /// The event path (drift queues).
    pub events: event_queue::Settings,
}

/// The AWS SDK and kube both link rustls, with different crypto back-ends; kube's client needs
/// a process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// After SIGTERM, how long reconciles in flight get to finish before they are dropped. With the
/// lease release and the HTTP server's end, shutdown takes at most about 20 s, inside the pod's
/// 30 s grace period whatever AWS does.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Resolves [`SHUTDOWN_DRAIN`] after `stop` turns true.
async fn drained(stop: watch::Receiver<bool>) {
    stopped(stop).await;
    tokio::time::sleep(SHUTDOWN_DRAIN).await;
    tracing::warn!(
        seconds = SHUTDOWN_DRAIN.as_secs(),
        "reconciles still running after the shutdown drain; stopping them"
    );
}

/// Turns `stop` true on SIGTERM or SIGINT.
fn spawn_signal_handler(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term => tracing::info!("SIGTERM: shutting down"),
        }
        let _ = stop.send(true);
    });
}

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(options: Options) -> anyhow::Result<()> {
    install_crypto_provider();
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_signal_handler(stop_tx);

    let mut ctx = Context::new(
        client.clone(),
        Reporter {
            controller: "pgbaseline".into(),
            instance: Some(options.identity.clone()),
        },
        metrics.clone(),
        options.requests_per_second,
    );
    ctx.managed_group_grace = options.managed_group_grace;
    let connections = metrics.clone();
    ctx.db = Some(
        crate::postgres::Layer::new(options.db.clone()).observed_by(Arc::new(
            move |outcome, took| connections.database_connection(outcome, took),
        )),
    );
    ctx.reports = reports::Reports::new(options.policy_reports);
    let leadership = (options.leader_election && !options.scale_out)
        .then(|| Arc::new(lease::Leadership::default()));
    ctx.leadership = leadership.clone();
    let shards = options
        .scale_out
        .then(|| Arc::new(scaleout::Shards::default()));
    ctx.shards = shards.clone();
    ctx.regions.set_call_timeout(options.aws_timeout);
    let ctx = Arc::new(ctx);

    let server = http::serve(
        options.metrics_addr,
        http::State {
            metrics: metrics.clone(),
            ready: ready.clone(),
            ctx: ctx.clone(),
        },
        stopped(stop_rx.clone()),
    )
    .await?;
    tracing::info!(
        addr = %options.metrics_addr,
        identity = %options.identity,
        namespaces = ?options.namespaces,
        leader_election = options.leader_election,
        "pgbaseline operator starting"
    );

    if let Some(shards) = shards {
        // Every replica watches and serves; each reconciles the policies whose keys it holds.
        // The operator's own region is resolved first: a policy without a region is keyed by it.
        if let Err(e) = ctx.regions.get(None).await {
            tracing::warn!(error = %e, "no default AWS region: policies without selector.region wait");
        }
        let config = scaleout::Config {
            group: options.lease_name.clone(),
            namespace: options.leader_election_namespace.clone(),
            holder: lease::holder_identity(&options.identity),
        };
        tracing::info!(holder = %config.holder, group = %config.group, "scale-out over replicas");
        let elector = scaleout::Elector::new(client.clone(), config, shards, ctx.clone());
        let (release_tx, release_rx) = watch::channel(false);
        let election = tokio::spawn(elector.run(stopped(release_rx)));
        ready.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        tokio::select! {
            _ = run_controllers(ctx.clone(), &options.namespaces, &options.events, stop_rx.clone()) => {}
            _ = drained(stop_rx.clone()) => {}
        }
        metrics.leader.set(0);
        // Reconciles are done: give the keys up for a quick handover.
        release(release_tx, election, "the scale-out leases").await;
    } else if let Some(leadership) = leadership {
        let config = lease::LeaseConfig {
            name: options.lease_name.clone(),
            namespace: options.leader_election_namespace.clone(),
            holder: lease::holder_identity(&options.identity),
        };
        tracing::info!(holder = %config.holder, lease = %config.name, "leader election");
        let (elector, mut leading) = lease::Elector::new(client.clone(), config, leadership);
        let (release_tx, release_rx) = watch::channel(false);
        let election = tokio::spawn(elector.run(stopped(release_rx)));
        ready.store(true, Ordering::Relaxed);
        'outer: loop {
            // Standby: serve health and metrics, wait for the lease.
            while !*leading.borrow_and_update() {
                tokio::select! {
                    changed = leading.changed() => if changed.is_err() {
                        anyhow::bail!("the leader election task ended");
                    },
                    _ = stopped(stop_rx.clone()) => break 'outer,
                }
            }
            tracing::info!(identity = %options.identity, lease = %options.lease_name, "became the leader");
            metrics.leader.set(1);
            let lost = async {
                loop {
                    if leading.changed().await.is_err() || !*leading.borrow_and_update() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = run_controllers(ctx.clone(), &options.namespaces, &options.events, stop_rx.clone()) => break 'outer,
                _ = drained(stop_rx.clone()) => break 'outer,
                _ = lost => {
                    // Dropping the controllers cancels reconciles in flight; a run between two
                    // calls has already been stopped by the term's end (`Leadership`).
                    tracing::warn!(identity = %options.identity, "lost the lease; standing by");
                    metrics.leader.set(0);
                }
            }
        }
        metrics.leader.set(0);
        // Reconciles are done: give the lease up for a quick handover.
        release(release_tx, election, "the lease").await;
    } else {
        ready.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        tokio::select! {
            _ = run_controllers(ctx.clone(), &options.namespaces, &options.events, stop_rx.clone()) => {}
            _ = drained(stop_rx.clone()) => {}
        }
    }
    ready.store(false, Ordering::Relaxed);
    // Give the HTTP server its graceful end too.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    tracing::info!("pgbaseline operator stopped");
    Ok(())
}

/// Tells an election task to release what it holds and waits for it (bounded: shutdown must
/// end inside the pod's grace period).
async fn release(
    release_tx: watch::Sender<bool>,
    election: tokio::task::JoinHandle<()>,
    what: &str,
) {
    let _ = release_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(12), election)
        .await
        .is_err()
    {
        tracing::warn!("timed out releasing {what}");
    }
}

/// One controller per watched namespace (or one over all namespaces), sharing `ctx`; returns
/// once `stop` turns true and reconciles in flight are done.
async fn run_controllers(
    ctx: Arc<Context>,
    namespaces: &[String],
    events: &event_queue::Settings,
    stop: watch::Receiver<bool>,
) {
    let apis: Vec<Api<DatabaseSecurityPolicy>> = if namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    // The event path wakes the policies an event concerns; every controller then looks at its
    // policies, and those not made due return at once.
    let (wake, _) = tokio::sync::broadcast::channel::<()>(16);
    // Accounts: verified (status) by their own controller, whose cache the guard reads.
    let accounts = Controller::new(
        Api::<AwsAccount>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .with_config(ControllerConfig::default().concurrency(2))
    .trigger_backoff(WatchBackoff::default())
    .graceful_shutdown_on(stopped(stop.clone()));
    // With --scale-out, what a replica owns changes with the keys it holds.
    let accounts = match &ctx.shards {
        Some(shards) => accounts.reconcile_all_on(scaleout::on_new_keys(shards)),
        None => accounts,
    };
    let account_store = accounts.store();
    if let Ok(mut s) = ctx.accounts.write() {
        *s = Some(account_store.clone());
    }
    runs.push(
        accounts
            .run(
                accounts::reconcile_account,
                accounts::account_error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    );
    for api in apis {
        let ctx_for_accounts = ctx.clone();
        let controller = Controller::new(api, watcher::Config::default())
            .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
            .trigger_backoff(WatchBackoff::default())
            // A changed account is looked at again by the policies that name it.
            .watches(
                Api::<AwsAccount>::all(ctx.client.clone()),
                watcher::Config::default(),
                move |account| {
                    let name = kube::ResourceExt::name_any(&account);
                    ctx_for_accounts
                        .policies()
                        .into_iter()
                        .filter(|p| p.spec.account_ref.as_ref().is_some_and(|r| r.name == name))
                        .map(|p| kube::runtime::reflector::ObjectRef::from_obj(&*p))
                        .collect::<Vec<_>>()
                },
            )
            .reconcile_all_on(woken(wake.subscribe()))
            .graceful_shutdown_on(stopped(stop.clone()));
        let controller = match &ctx.shards {
            Some(shards) => controller.reconcile_all_on(scaleout::on_new_keys(shards)),
            None => controller,
        };
        stores.push(controller.store());
        let ctx_for_results = ctx.clone();
        let account_store = account_store.clone();
        let ctx_run = ctx.clone();
        runs.push(
            async move {
                // A policy naming an account is judged against a complete account cache.
                if account_store.wait_until_ready().await.is_err() {
                    return;
                }
                controller
                    .run(reconcile::reconcile, reconcile::error_policy, ctx_run)
                    .for_each(move |result| {
                        handle_result(&ctx_for_results, result);
                        futures::future::ready(())
                    })
                    .await
            }
            .boxed(),
        );
    }
    if let Ok(mut s) = ctx.stores.write() {
        *s = stores;
    }
    runs.push(event_queue::run(ctx.clone(), events.clone(), wake, stop.clone()).boxed());
    futures::future::join_all(runs).await;
}

/// A wake-up per broadcast (a lagging receiver has missed some: one wake-up covers them).
fn woken(rx: tokio::sync::broadcast::Receiver<()>) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// Backoff of the watch after errors: 0.5 s doubling to 5 s, with jitter, so the operator is back
/// within seconds of an apiserver restart (kube's default waits up to 30 s).
#[derive(Debug, Default)]
struct WatchBackoff {
    attempt: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = Duration::from_millis(500).saturating_mul(1 << self.attempt.min(4));
        self.attempt = self.attempt.saturating_add(1);
        Some(
            base.min(Duration::from_secs(5))
                .mul_f64(0.75 + 0.5 * reconcile::random_fraction()),
        )
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

type RunResult = Result<
    (
        kube::runtime::reflector::ObjectRef<DatabaseSecurityPolicy>,
        controller::Action,
    ),
    controller::Error<reconcile::Error, watcher::Error>,
>;

fn handle_result(ctx: &Arc<Context>, result: RunResult) {
    match result {
        Ok(_) => {}
        Err(controller::Error::ObjectNotFound(obj)) => {
            // The policy was deleted: nothing more is done on its behalf.
            tracing::info!(policy = %obj.name, "policy deleted; forgetting it");
            if let (Some(uid), Some(namespace)) = (
                ctx.forget(obj.namespace.as_deref(), &obj.name),
                obj.namespace,
            ) {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    ctx.reports
                        .forget(&ctx.client, &ctx.metrics, &namespace, &uid)
                        .await;
                });
            }
        }
        Err(controller::Error::ReconcilerFailed(_, _)) => {
            // Logged by the error policy.
        }
        Err(e) => tracing::warn!(error = %e, "controller"),
    }
}
