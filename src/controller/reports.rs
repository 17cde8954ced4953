//! Policy reports in the cluster: which API group to write (discovery, re-checked every minute;
//! never both), and per policy the apply of changed reports and the deletion of reports whose
//! database left the selection or whose policy is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

use crate::api::{DatabaseResult, DatabaseSecurityPolicy};
use crate::posture::policy_report::{
    DIGEST_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, POLICY_UID_LABEL, ReportApi, desired_reports,
};

use super::metrics::Metrics;

const FIELD_MANAGER: &str = "pgbaseline";
/// How long a discovery answer is trusted: a report CRD installed later is picked up within it.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// `--policy-reports`: which report API to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportsMode {
    /// `openreports.io` when served, else `wgpolicyk8s.io`, else none.
    Auto,
    /// This group whatever discovery says (writes fail, and are logged, if it is not served).
    Only(ReportApi),
    Off,
}

impl FromStr for ReportsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ReportsMode::Auto),
            "openreports" => Ok(ReportsMode::Only(ReportApi::OpenReports)),
            "wgpolicyk8s" => Ok(ReportsMode::Only(ReportApi::WgPolicy)),
            "off" => Ok(ReportsMode::Off),
            other => Err(format!(
                "unknown report API {other:?}: one of auto, openreports, wgpolicyk8s, off"
            )),
        }
    }
}

#[derive(Debug, Default)]
struct Choice {
    /// The API written to.
    api: Option<ReportApi>,
    /// Which report APIs the apiserver served at the last discovery, and when that was.
    served: BTreeSet<ReportApi>,
    checked: Option<Instant>,
    /// Policies whose reports in the other served groups were removed since `api` was chosen
    /// (once per policy per process and per switch: never both groups).
    cleaned: BTreeSet<String>,
}

/// What one sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    pub applied: usize,
    pub unchanged: usize,
    pub deleted: usize,
}

pub struct Reports {
    mode: ReportsMode,
    choice: Mutex<Choice>,
}

fn resource(api: ReportApi) -> ApiResource {
    ApiResource {
        group: api.group().into(),
        version: api.version().into(),
        api_version: api.api_version(),
        kind: api.kind().into(),
        plural: api.plural().into(),
    }
}

fn by_policy(uid: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{POLICY_UID_LABEL}={uid}"
    ))
}

/// Whether the apiserver serves this report API now.
async fn served(client: &Client, api: ReportApi) -> bool {
    match client.list_api_group_resources(&api.api_version()).await {
        Ok(list) => list.resources.iter().any(|r| r.name == api.plural()),
        Err(_) => false,
    }
}

impl Reports {
    pub fn new(mode: ReportsMode) -> Reports {
        Reports {
            mode,
            choice: Mutex::new(Choice::default()),
        }
    }

    /// The API to write now and the other served ones (discovery cached for a minute);
    /// whether `uid`'s reports in those others still have to be removed (the first time).
    async fn choose(
        &self,
        client: &Client,
        uid: &str,
    ) -> (Option<ReportApi>, Vec<ReportApi>, bool) {
        let mut choice = self.choice.lock().await;
        let fresh = choice
            .checked
            .is_some_and(|at| at.elapsed() < DISCOVERY_TTL);
        if self.mode != ReportsMode::Off && !fresh {
            let mut now_served = BTreeSet::new();
            for api in ReportApi::ALL {
                if served(client, api).await {
                    now_served.insert(api);
                }
            }
            choice.served = now_served;
            choice.checked = Some(Instant::now());
        }
        let api = match self.mode {
            ReportsMode::Off => None,
            ReportsMode::Only(api) => Some(api),
            ReportsMode::Auto => ReportApi::choose(|api| choice.served.contains(&api)),
        };
        if api != choice.api {
            if choice.api.is_some() {
                tracing::info!(from = ?choice.api, to = ?api, "policy report API changed");
            }
            choice.api = api;
            choice.cleaned.clear();
        }
        let others = choice
            .served
            .iter()
            .copied()
            .filter(|other| Some(*other) != api)
            .collect();
        let first = api.is_some() && choice.cleaned.insert(uid.to_string());
        (api, others, first)
    }

    /// Makes the policy's reports match `results` (every selected database): applies the ones
    /// whose content changed, deletes the ones of databases no longer selected, and the first
    /// time (per process, and after a switch of group) removes the policy's reports from the
    /// other served group.
    pub async fn sync(
        &self,
        client: &Client,
        metrics: &Metrics,
        policy: &DatabaseSecurityPolicy,
        results: &[DatabaseResult],
    ) -> Result<Writes, kube::Error> {
        let (Some(uid), Some(namespace)) = (policy.metadata.uid.as_deref(), policy.namespace())
        else {
            return Ok(Writes::default());
        };
        let (api, others, first) = self.choose(client, uid).await;
        let Some(api) = api else {
            return Ok(Writes::default());
        };
        let mut writes = Writes::default();
        if first {
            for other in others {
                writes.deleted += delete_all(client, metrics, other, &namespace, uid).await?;
            }
        }
        let reports: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &resource(api));
        let existing: BTreeMap<String, Option<String>> = reports
            .list(&by_policy(uid))
            .await?
            .items
            .into_iter()
            .map(|r| {
                let digest = r.annotations().get(DIGEST_ANNOTATION).cloned();
                (r.name_any(), digest)
            })
            .collect();
        let now = chrono::Utc::now().timestamp();
        let desired = desired_reports(api, policy, results, now);
        let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
        for report in &desired {
            if existing.get(&report.name) == Some(&Some(report.digest.clone())) {
                writes.unchanged += 1;
                continue;
            }
            reports
                .patch(
                    &report.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&report.object),
                )
                .await?;
            metrics.report_written(api.group(), "apply");
            writes.applied += 1;
        }
        for name in existing.keys().filter(|n| !wanted.contains(n.as_str())) {
            delete_one(&reports, name).await?;
            metrics.report_written(api.group(), "delete");
            writes.deleted += 1;
        }
        Ok(writes)
    }

    /// Deletes every report of a deleted policy, in every served group (Kubernetes' garbage
    /// collector does it too, from the owner reference, when it runs; this does not wait).
    pub async fn forget(&self, client: &Client, metrics: &Metrics, namespace: &str, uid: &str) {
        let (api, others, _) = self.choose(client, uid).await;
        for api in api.into_iter().chain(others) {
            if let Err(e) = delete_all(client, metrics, api, namespace, uid).await {
                tracing::warn!(error = %e, api = api.group(), "could not delete the reports of a deleted policy");
            }
        }
        self.choice.lock().await.cleaned.remove(uid);
    }
}

async fn delete_one(reports: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    match reports.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn delete_all(
    client: &Client,
    metrics: &Metrics,
    api: ReportApi,
    namespace: &str,
    uid: &str,
) -> Result<usize, kube::Error> {
    let reports: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource(api));
    let mut deleted = 0;
    for report in reports.list(&by_policy(uid)).await?.items {
        delete_one(&reports, &report.name_any()).await?;
        metrics.report_written(api.group(), "delete");
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_takes_four_values_and_refuses_the_rest() {
        assert_eq!("auto".parse(), Ok(ReportsMode::Auto));
        assert_eq!("off".parse(), Ok(ReportsMode::Off));
        assert_eq!(
            "openreports".parse(),
            Ok(ReportsMode::Only(ReportApi::OpenReports))
        );
        assert_eq!(
            "wgpolicyk8s".parse(),
            Ok(ReportsMode::Only(ReportApi::WgPolicy))
        );
        assert!("both".parse::<ReportsMode>().is_err());
    }
}
