//! Prometheus metrics. Label values are the same CamelCase reasons as conditions and events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::DatabaseResult;
use crate::aws::CallStats;
use crate::posture::failure::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct FindingLabels {
    pub policy: String,
    pub control: String,
    /// The control's severity, so alerts can page on `Critical` only.
    pub severity: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RemediationLabels {
    pub control: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub region: String,
    /// The `AwsAccount` (empty: the operator's own identity).
    pub account: String,
    pub service: String,
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReportLabels {
    pub api: String,
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
    /// The `AwsAccount` (empty: the operator's own identity).
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `Connected`, or the reason the attempt failed (`DatabaseUnreachable`, …).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct AccountLabels {
    pub account: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct EventLabels {
    /// `rds` (an RDS event) or `cloudtrail` (an API call record); empty for a malformed message.
    pub source: String,
    /// `handled`, `released` (scale-out: handed back for the replica that holds its account
    /// and region), or why not: `own_call`, `failed_call`, `unknown_account`, `irrelevant`,
    /// `malformed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn sweep_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

fn connect_histogram() -> Histogram {
    // 5 ms (a local server) to ~20 s (twice the longest connect timeout one would set).
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

type AwsKey = (String, String, String, String, &'static str);

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
    pub findings: Family<FindingLabels, Gauge>,
    pub remediations: Family<RemediationLabels, Counter>,
    pub aws_calls: Family<AwsCallLabels, Counter>,
    pub sweep_duration: Family<RegionLabels, Histogram, fn() -> Histogram>,
    pub last_sweep: Family<RegionLabels, Gauge<f64, AtomicU64>>,
    pub leader: Gauge,
    /// With `--scale-out`: the (account, region) keys this replica holds, and the live replicas.
    pub shard_keys: Gauge,
    pub shard_replicas: Gauge,
    pub status_writes: Counter,
    pub managed_groups: Family<RegionLabels, Gauge>,
    pub managed_groups_deleted: Family<RegionLabels, Counter>,
    /// Failures to assume or verify an account's role, by account and AWS code.
    pub account_failures: Family<AccountLabels, Counter>,
    pub report_writes: Family<ReportLabels, Counter>,
    /// Connection attempts of the in-database layer, by outcome.
    pub database_connections: Family<OutcomeLabels, Counter>,
    /// How long connecting took (TCP, TLS and login), by outcome.
    pub database_connect_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    /// Drift-queue messages by source and outcome.
    pub events: Family<EventLabels, Counter>,
    /// Targeted re-reads after events, by account and region.
    pub event_rereads: Family<RegionLabels, Counter>,
    /// Policies reconciled at once because an event concerned their databases.
    pub event_wakes: Counter,
    /// From an event's time to the end of the reconcile it woke.
    pub event_to_status: Histogram,
    /// Failed receives and deletes on the drift queues, by AWS code.
    pub event_queue_errors: Family<CodeLabels, Counter>,
    /// The finding series each policy set last time, to drop the ones that went away.
    finding_series: Mutex<BTreeMap<String, BTreeSet<FindingLabels>>>,
    /// The AWS call counts already exported, per region.
    aws_seen: Mutex<BTreeMap<AwsKey, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pgbaseline");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of DatabaseSecurityPolicy objects by result (the Ready reason or an error class)",
            reconciles.clone(),
        );
        let reconcile_duration: Family<ResultLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let findings = Family::<FindingLabels, Gauge>::default();
        registry.register(
            "findings",
            "Selected databases per policy, control and finding status",
            findings.clone(),
        );
        let remediations = Family::<RemediationLabels, Counter>::default();
        registry.register(
            "remediations",
            "Remediation actions by control and result (Remediated, RemediationFailed, or QuotaExceeded when the account's parameter-group quota left no room)",
            remediations.clone(),
        );
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        registry.register(
            "aws_calls",
            "AWS API call attempts (retries included) by region, service, action and outcome",
            aws_calls.clone(),
        );
        let sweep_duration: Family<RegionLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(sweep_histogram);
        registry.register(
            "sweep_duration_seconds",
            "Duration of one inventory sweep of a region",
            sweep_duration.clone(),
        );
        let last_sweep = Family::<RegionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_successful_sweep_timestamp_seconds",
            "Unix time of the last successful inventory sweep of a region",
            last_sweep.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader lease (or runs without leader election)",
            leader.clone(),
        );
        let shard_keys = Gauge::default();
        registry.register(
            "shard_keys",
            "With --scale-out: the (account, region) keys whose Lease this replica holds",
            shard_keys.clone(),
        );
        let shard_replicas = Gauge::default();
        registry.register(
            "shard_replicas",
            "With --scale-out: the live replicas this replica counts (itself included)",
            shard_replicas.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status patches sent to the apiserver",
            status_writes.clone(),
        );
        let managed_groups = Family::<RegionLabels, Gauge>::default();
        registry.register(
            "managed_parameter_groups",
            "Parameter groups named like pgbaseline's managed copies in a region (DB and cluster), at the last sweep that listed them",
            managed_groups.clone(),
        );
        let managed_groups_deleted = Family::<RegionLabels, Counter>::default();
        registry.register(
            "managed_parameter_groups_deleted",
            "Unused managed parameter groups deleted after the grace period",
            managed_groups_deleted.clone(),
        );
        let account_failures = Family::<AccountLabels, Counter>::default();
        registry.register(
            "account_failures",
            "Failures of an AwsAccount's credentials (the role not assumed, the identity not confirmed, or the session refused), by account and AWS error code",
            account_failures.clone(),
        );
        let report_writes = Family::<ReportLabels, Counter>::default();
        registry.register(
            "policy_report_writes",
            "Policy report writes by API group and operation (apply, delete); 0 in steady state: a report is written only when its content changes",
            report_writes.clone(),
        );
        let database_connections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "database_connections",
            "Connection attempts of the in-database controls (TCP, verified TLS and login) by outcome: Connected, or the reason it failed (DatabaseUnreachable, TlsVerificationFailed, AuthenticationFailed, ...)",
            database_connections.clone(),
        );
        let database_connect_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(connect_histogram);
        registry.register(
            "database_connect_duration_seconds",
            "Time to connect to a database (TCP, verified TLS and login), by outcome",
            database_connect_duration.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Messages read from the drift queues, by source (rds, cloudtrail) and outcome (handled, released to the replica holding their account and region, own_call, failed_call, unknown_account, irrelevant, malformed)",
            events.clone(),
        );
        let event_rereads = Family::<RegionLabels, Counter>::default();
        registry.register(
            "event_rereads",
            "Targeted re-reads of the databases events concern (one per debounced batch of an account and region)",
            event_rereads.clone(),
        );
        let event_wakes = Counter::default();
        registry.register(
            "event_wakes",
            "Policies reconciled at once because an event concerned a database they select",
            event_wakes.clone(),
        );
        let event_to_status = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        registry.register(
            "event_to_status_seconds",
            "From an AWS event's time to the end of the reconcile it woke (status written when it changed)",
            event_to_status.clone(),
        );
        let event_queue_errors = Family::<CodeLabels, Counter>::default();
        registry.register(
            "event_queue_errors",
            "Failed receives and deletes on the drift queues, by AWS error code",
            event_queue_errors.clone(),
        );
        Metrics {
            registry,
            database_connections,
            database_connect_duration,
            events,
            event_rereads,
            event_wakes,
            event_to_status,
            event_queue_errors,
            report_writes,
            account_failures,
            managed_groups,
            managed_groups_deleted,
            reconciles,
            reconcile_duration,
            findings,
            remediations,
            aws_calls,
            sweep_duration,
            last_sweep,
            leader,
            shard_keys,
            shard_replicas,
            status_writes,
            finding_series: Mutex::default(),
            aws_seen: Mutex::default(),
        }
    }

    /// One connection attempt of the in-database layer.
    pub fn database_connection(&self, outcome: &str, took: std::time::Duration) {
        let labels = OutcomeLabels {
            outcome: outcome.to_string(),
        };
        self.database_connections.get_or_create(&labels).inc();
        self.database_connect_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts one drift-queue message.
    pub fn event(&self, source: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn event_reread(&self, account: &str, region: &str) {
        self.event_rereads
            .get_or_create(&RegionLabels {
                region: region.to_string(),
                account: account.to_string(),
            })
            .inc();
    }

    pub fn event_queue_error(&self, code: &str) {
        self.event_queue_errors
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts one write of a policy report.
    pub fn report_written(&self, api: &str, operation: &str) {
        self.report_writes
            .get_or_create(&ReportLabels {
                api: api.to_string(),
                operation: operation.to_string(),
            })
            .inc();
    }

    /// Records one reconcile.
    pub fn reconciled(&self, result: Reason, seconds: f64) {
        let labels = ResultLabels {
            result: result.as_str().to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Replaces the finding gauges of `policy` with counts over `results`.
    pub fn set_findings(&self, policy: &str, results: &[DatabaseResult]) {
        let mut counts: BTreeMap<FindingLabels, i64> = BTreeMap::new();
        for result in results {
            for finding in &result.findings {
                *counts
                    .entry(FindingLabels {
                        policy: policy.to_string(),
                        control: finding.control.as_str().to_string(),
                        severity: finding.severity.as_str().to_string(),
                        status: finding.status.as_str().to_string(),
                    })
                    .or_insert(0) += 1;
            }
        }
        let Ok(mut series) = self.finding_series.lock() else {
            return;
        };
        let previous = series.remove(policy).unwrap_or_default();
        for gone in previous.iter().filter(|l| !counts.contains_key(*l)) {
            self.findings.remove(gone);
        }
        for (labels, n) in &counts {
            self.findings.get_or_create(labels).set(*n);
        }
        series.insert(policy.to_string(), counts.into_keys().collect());
    }

    /// Drops every finding series of a deleted policy.
    pub fn forget_policy(&self, policy: &str) {
        if let Ok(mut series) = self.finding_series.lock() {
            for labels in series.remove(policy).unwrap_or_default() {
                self.findings.remove(&labels);
            }
        }
    }

    pub fn remediation(&self, control: &str, result: Reason) {
        self.remediations
            .get_or_create(&RemediationLabels {
                control: control.to_string(),
                result: result.as_str().to_string(),
            })
            .inc();
    }

    /// Managed groups of a region at the last listing, and how many were just deleted.
    pub fn managed_groups_deleted(&self, account: &str, region: &str, deleted: usize) {
        let labels = RegionLabels {
            region: region.to_string(),
            account: account.to_string(),
        };
        self.managed_groups_deleted
            .get_or_create(&labels)
            .inc_by(u64::try_from(deleted).unwrap_or(u64::MAX));
    }

    pub fn managed_groups(&self, account: &str, region: &str, count: usize) {
        self.managed_groups
            .get_or_create(&RegionLabels {
                region: region.to_string(),
                account: account.to_string(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn sweep(&self, account: &str, region: &str, seconds: f64, ok: bool) {
        let labels = RegionLabels {
            region: region.to_string(),
            account: account.to_string(),
        };
        self.sweep_duration.get_or_create(&labels).observe(seconds);
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            self.last_sweep.get_or_create(&labels).set(now);
        }
    }

    /// One failure to assume or verify an account's role.
    pub fn account_failure(&self, account: &str, code: &str) {
        self.account_failures
            .get_or_create(&AccountLabels {
                account: account.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Brings the AWS call counters up to date with a region's [`CallStats`].
    pub fn sync_aws_calls(&self, account: &str, region: &str, stats: &CallStats) {
        let Ok(mut seen) = self.aws_seen.lock() else {
            return;
        };
        for ((service, action, outcome), n) in stats.snapshot() {
            let key = (
                account.to_string(),
                region.to_string(),
                service,
                action,
                outcome,
            );
            let before = seen.get(&key).copied().unwrap_or(0);
            // Fewer than before: the account region's clients were made afresh (new counts).
            let before = if n < before { 0 } else { before };
            if n > before {
                self.aws_calls
                    .get_or_create(&AwsCallLabels {
                        region: key.1.clone(),
                        account: key.0.clone(),
                        service: key.2.clone(),
                        action: key.3.clone(),
                        outcome: outcome.to_string(),
                    })
                    .inc_by(n - before);
                seen.insert(key, n);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ControlId, DatabaseKind, Finding, FindingStatus};

    fn result(status: FindingStatus) -> DatabaseResult {
        DatabaseResult {
            id: "a".into(),
            kind: DatabaseKind::Instance,
            region: "us-east-1".into(),
            engine: "postgres".into(),
            compliant: status.is_compliant(),
            findings: vec![Finding {
                control: ControlId::ForceSsl,
                severity: crate::api::Severity::High,
                status,
                observed: String::new(),
                expected: String::new(),
                message: String::new(),
            }],
        }
    }

    #[test]
    fn finding_series_follow_the_latest_results() {
        let m = Metrics::new();
        m.set_findings("ns/p", &[result(FindingStatus::NonCompliant)]);
        let text = m.encode();
        assert!(text.contains(
            "pgbaseline_findings{policy=\"ns/p\",control=\"transport.forceSsl\",severity=\"High\",status=\"NonCompliant\"} 1"
        ));
        m.set_findings("ns/p", &[result(FindingStatus::Compliant)]);
        let text = m.encode();
        assert!(!text.contains("NonCompliant"), "{text}");
        assert!(text.contains("status=\"Compliant\"} 1"));
        m.forget_policy("ns/p");
        assert!(!m.encode().contains("ns/p"));
    }

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.reconciled(Reason::Compliant, 0.1);
        m.remediation("transport.forceSsl", Reason::Remediated);
        m.sweep("", "us-east-1", 1.0, true);
        m.sweep("payments", "eu-west-1", 1.0, true);
        m.account_failure("payments", "AccessDenied");
        m.database_connection("Connected", std::time::Duration::from_millis(12));
        m.database_connection("AuthenticationFailed", std::time::Duration::from_millis(3));
        let text = m.encode();
        for name in [
            "pgbaseline_reconciles_total{result=\"Compliant\"} 1",
            "pgbaseline_reconcile_duration_seconds_bucket",
            "pgbaseline_remediations_total{control=\"transport.forceSsl\",result=\"Remediated\"} 1",
            "pgbaseline_sweep_duration_seconds_count{region=\"us-east-1\",account=\"\"} 1",
            "pgbaseline_sweep_duration_seconds_count{region=\"eu-west-1\",account=\"payments\"} 1",
            "pgbaseline_last_successful_sweep_timestamp_seconds{region=\"us-east-1\",account=\"\"}",
            "pgbaseline_account_failures_total{account=\"payments\",code=\"AccessDenied\"} 1",
            "pgbaseline_leader",
            "pgbaseline_database_connections_total{outcome=\"Connected\"} 1",
            "pgbaseline_database_connections_total{outcome=\"AuthenticationFailed\"} 1",
            "pgbaseline_database_connect_duration_seconds_count{outcome=\"Connected\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
