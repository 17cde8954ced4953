//! Reads one region's PostgreSQL fleet with as few calls as the data allows:
//! paged instance and cluster listings (100 a page), each distinct parameter group read once with
//! the `parameter-name` filter, engine defaults cached per family, security groups and NACLs in
//! batched calls, KMS aliases, engine versions and certificates only when a policy needs them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_rds::types::{DbCluster, DbInstance, Filter, Parameter};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use tokio::sync::OnceCell;

use crate::api::{DatabaseKind, DatabaseSecurityPolicySpec, Engine};
use crate::posture::catalogue::controlled_parameters;
use crate::posture::drift::{self, Target};
use crate::posture::model::{ApplyType, Database, Fleet, IngressRule, NaclEntry, ParameterValue};

use super::convert::{self, GroupRead, Reads, apply_type, family_of, fill_sharers};
use super::{AwsRegion, Failure, groups};

/// Page size of the listing calls (the AWS maximum).
const PAGE: i32 = 100;
/// Parameter groups read at once.
const GROUP_READ_CONCURRENCY: usize = 4;
/// IDs per batched EC2 call.
const EC2_BATCH: usize = 200;

/// Which optional reads the policies of a sweep need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub kms_aliases: bool,
    pub engine_versions: bool,
    pub certificates: bool,
    pub network: bool,
    /// The region's parameter-group listing: where managed copies exist, what they came from,
    /// which are no longer used. Only Enforce needs it.
    pub group_listing: bool,
}

impl Needs {
    /// The union of what the given policies check.
    pub fn for_policies<'a>(
        specs: impl IntoIterator<Item = &'a DatabaseSecurityPolicySpec>,
    ) -> Needs {
        let mut needs = Needs::default();
        for spec in specs {
            let p = &spec.posture;
            needs.kms_aliases |= p
                .encryption
                .as_ref()
                .and_then(|e| e.storage.as_ref())
                .is_some_and(|s| s.kms_key_id.is_some());
            needs.engine_versions |= p
                .maintenance
                .as_ref()
                .and_then(|m| m.engine_version_current)
                == Some(true);
            needs.certificates |= p
                .transport
                .as_ref()
                .is_some_and(|t| t.ca_certificate.is_some());
            needs.network |= p
                .network
                .as_ref()
                .is_some_and(|n| n.ingress.is_some() || n.acl == Some(true));
            needs.group_listing |= spec.enforces_anything();
        }
        needs
    }
}

/// What a targeted re-read found.
#[derive(Debug)]
pub struct Reread {
    /// The sweep's fleet with the re-read databases replaced.
    pub fleet: Fleet,
    /// The databases read (those no longer there are gone from `fleet`).
    pub read: BTreeSet<(DatabaseKind, String)>,
}

/// A `Filters` entry naming these identifiers (RDS takes up to 100 per filter; an event names
/// few, and a group or security group shared by more is re-read in one listing anyway).
fn id_filter(name: &str, ids: &BTreeSet<String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(ids.iter().cloned().collect()))
        .build()
}

/// Engine-default parameters of one family, read at most once.
type EngineDefaults = Arc<OnceCell<BTreeMap<String, ParameterValue>>>;

/// Caches that outlive one sweep (engine facts do not change between sweeps).
#[derive(Debug, Default)]
struct Caches {
    engine_defaults: HashMap<(bool, String), EngineDefaults>,
    newest_minor: HashMap<(String, String), Option<String>>,
    certificates: Option<BTreeMap<String, DateTime<Utc>>>,
}

/// The fleet reader of one region.
#[derive(Debug)]
pub struct Inventory {
    aws: AwsRegion,
    caches: Mutex<Caches>,
    /// Cleared when an endpoint rejects the `parameter-name` filter.
    filter_supported: AtomicBool,
    /// Set once a filtered read has been answered either way.
    filter_probed: AtomicBool,
}

impl Inventory {
    pub fn new(aws: AwsRegion) -> Inventory {
        Inventory {
            aws,
            caches: Mutex::new(Caches::default()),
            filter_supported: AtomicBool::new(true),
            filter_probed: AtomicBool::new(false),
        }
    }

    pub fn aws(&self) -> &AwsRegion {
        &self.aws
    }

    /// A failed read of `what`: the region's failure (`Err`, fails the sweep) or a sentence
    /// for the databases it concerns.
    fn unread(&self, e: Failure, what: &str) -> Result<String, Failure> {
        if e.class.is_regional() {
            return Err(e);
        }
        let e = self.aws.locate(e);
        tracing::warn!(region = %self.aws.region, error = %e, "could not read {what}");
        Ok(format!("could not read {what}: {e}"))
    }

    /// One sweep of the region. The listings (instances, clusters, and the region's parameter
    /// groups when Enforce needs them) must succeed; a read about some resources only (one
    /// parameter group, a batch of security groups, the KMS aliases…) that fails is carried on
    /// the databases it concerns ([`ReadErrors`]), unless the failure is the region's (throttled
    /// past the retries, unreachable, no credentials), which fails the sweep.
    pub async fn sweep(&self, needs: Needs) -> Result<Fleet, Failure> {
        self.sweep_inner(needs)
            .await
            .map_err(|e| self.aws.locate(e))
    }

    async fn sweep_inner(&self, needs: Needs) -> Result<Fleet, Failure> {
        let instances = self.describe_instances(Vec::new()).await?;
        let clusters = self.describe_clusters(Vec::new()).await?;
        let (mut databases, kms_keys) = self.read_databases(instances, clusters, needs).await?;
        fill_sharers(&mut databases);
        let parameter_groups = if needs.group_listing {
            groups::list(&self.aws).await?
        } else {
            Vec::new()
        };
        Ok(Fleet {
            databases,
            kms_keys,
            parameter_groups,
        })
    }

    /// A re-read of what an event's `targets` may have changed, in `fleet` (the last sweep):
    /// the instances and clusters it concerns (listed by identifier in filtered calls), their
    /// parameter groups, security groups and ACLs, nothing else; the KMS aliases and the
    /// region's group listing are the sweep's. Returns the fleet with those databases replaced
    /// (a deleted one is gone, a new one added) and which databases were read.
    pub async fn reread(
        &self,
        needs: Needs,
        fleet: &Fleet,
        targets: &BTreeSet<Target>,
    ) -> Result<Reread, Failure> {
        self.reread_inner(needs, fleet, targets)
            .await
            .map_err(|e| self.aws.locate(e))
    }

    async fn reread_inner(
        &self,
        needs: Needs,
        fleet: &Fleet,
        targets: &BTreeSet<Target>,
    ) -> Result<Reread, Failure> {
        let wanted = drift::to_reread(fleet, targets);
        let mut instances = if wanted.instances.is_empty() {
            Vec::new()
        } else {
            self.describe_instances(vec![id_filter("db-instance-id", &wanted.instances)])
                .await?
        };
        // An instance the event named may be an Aurora member the sweep did not know: its
        // cluster is the database.
        let mut cluster_ids = wanted.clusters.clone();
        cluster_ids.extend(
            instances
                .iter()
                .filter_map(|i| i.db_cluster_identifier().map(str::to_string)),
        );
        let clusters = if cluster_ids.is_empty() {
            Vec::new()
        } else {
            let clusters = self
                .describe_clusters(vec![id_filter("db-cluster-id", &cluster_ids)])
                .await?;
            // Members are described with their cluster (roles, per-member settings).
            let members = self
                .describe_instances(vec![id_filter("db-cluster-id", &cluster_ids)])
                .await?;
            let known: BTreeSet<String> = instances
                .iter()
                .filter_map(|i| i.db_instance_identifier().map(str::to_string))
                .collect();
            instances.extend(members.into_iter().filter(|m| {
                m.db_instance_identifier()
                    .is_some_and(|id| !known.contains(id))
            }));
            clusters
        };
        let reread_needs = Needs {
            kms_aliases: false,
            group_listing: false,
            ..needs
        };
        let (fresh, _) = self
            .read_databases(instances, clusters, reread_needs)
            .await?;
        let read: BTreeSet<(DatabaseKind, String)> = wanted
            .instances
            .iter()
            .map(|id| (DatabaseKind::Instance, id.clone()))
            .chain(
                cluster_ids
                    .iter()
                    .map(|id| (DatabaseKind::Cluster, id.clone())),
            )
            .collect();
        let mut databases = drift::splice(&fleet.databases, fresh, &read);
        fill_sharers(&mut databases);
        Ok(Reread {
            fleet: Fleet {
                databases,
                kms_keys: fleet.kms_keys.clone(),
                parameter_groups: fleet.parameter_groups.clone(),
            },
            read,
        })
    }

    /// Everything the databases of these listings need read, as the fleet's databases (without
    /// their sharers), and the KMS aliases when `needs` asks for them.
    async fn read_databases(
        &self,
        instances: Vec<DbInstance>,
        clusters: Vec<DbCluster>,
        needs: Needs,
    ) -> Result<(Vec<Database>, BTreeMap<String, String>), Failure> {
        let instances: Vec<DbInstance> = instances
            .into_iter()
            .filter(|i| i.engine().and_then(Engine::parse).is_some())
            .collect();
        let clusters: Vec<DbCluster> = clusters
            .into_iter()
            .filter(|c| c.engine().and_then(Engine::parse).is_some())
            .collect();

        // Each distinct group once, however many databases share it. A group's family is the
        // engine and major version of the databases attached to it (AWS refuses any other), so
        // no call is spent looking it up.
        let mut groups: BTreeMap<(bool, String), String> = BTreeMap::new();
        for i in instances
            .iter()
            .filter(|i| i.db_cluster_identifier().is_none())
        {
            if let Some(name) = i
                .db_parameter_groups()
                .first()
                .and_then(|g| g.db_parameter_group_name())
            {
                let family = family_of(i.engine(), i.engine_version());
                groups.insert((false, name.to_string()), family);
            }
        }
        for c in &clusters {
            if let Some(name) = c.db_cluster_parameter_group() {
                let family = family_of(c.engine(), c.engine_version());
                groups.insert((true, name.to_string()), family);
            }
        }
        let mut groups = groups.into_iter();
        let mut group_values: HashMap<(bool, String), Result<GroupRead, Failure>> = HashMap::new();
        // Until an endpoint has answered one filtered read, read one group alone: if it rejects
        // the filter, one call is wasted rather than one per concurrent read.
        if !self.filter_probed.load(Ordering::Relaxed)
            && let Some((key, family)) = groups.next()
        {
            let read = self.read_group(key.0, &key.1, family).await;
            group_values.insert(key, read);
        }
        let rest: Vec<((bool, String), Result<GroupRead, Failure>)> =
            stream::iter(groups.map(|(key, family)| async move {
                let read = self.read_group(key.0, &key.1, family).await;
                (key, read)
            }))
            .buffer_unordered(GROUP_READ_CONCURRENCY)
            .collect()
            .await;
        group_values.extend(rest);
        let mut group_reads: HashMap<(bool, String), Result<GroupRead, String>> =
            HashMap::with_capacity(group_values.len());
        for ((cluster, name), read) in group_values {
            let read = match read {
                Ok(read) => Ok(read),
                Err(e) => {
                    let kind = if cluster { "DB cluster" } else { "DB" };
                    Err(self.unread(e, &format!("{kind} parameter group {name}"))?)
                }
            };
            group_reads.insert((cluster, name), read);
        }

        let mut unread_sgs: BTreeMap<String, String> = BTreeMap::new();
        let mut unread_subnets: BTreeMap<String, String> = BTreeMap::new();
        let (security_groups, nacls) = if needs.network {
            let sg_ids: BTreeSet<String> = instances
                .iter()
                .flat_map(|i| {
                    i.vpc_security_groups()
                        .iter()
                        .filter_map(|g| g.vpc_security_group_id().map(str::to_string))
                })
                .chain(clusters.iter().flat_map(|c| {
                    c.vpc_security_groups()
                        .iter()
                        .filter_map(|g| g.vpc_security_group_id().map(str::to_string))
                }))
                .collect();
            let subnets: BTreeSet<String> = instances
                .iter()
                .filter_map(|i| i.db_subnet_group())
                .flat_map(|g| {
                    g.subnets()
                        .iter()
                        .filter_map(|s| s.subnet_identifier().map(str::to_string))
                })
                .collect();
            (
                self.describe_security_groups(&sg_ids, &mut unread_sgs)
                    .await?,
                self.describe_nacls(&subnets, &mut unread_subnets).await?,
            )
        } else {
            (BTreeMap::new(), BTreeMap::new())
        };
        let (kms_keys, unread_kms) = if needs.kms_aliases {
            match self.kms_aliases().await {
                Ok(keys) => (keys, None),
                Err(e) => (
                    BTreeMap::new(),
                    Some(self.unread(e, "the region's KMS aliases")?),
                ),
            }
        } else {
            (BTreeMap::new(), None)
        };
        // AWS describes each instance's CA with its expiry; the certificate list is read only
        // when some instance lacks that detail.
        let missing_expiry = instances.iter().any(|i| {
            i.certificate_details()
                .and_then(|d| d.valid_till())
                .is_none()
        });
        let (certificates, unread_certificates) = if needs.certificates && missing_expiry {
            match self.certificates().await {
                Ok(c) => (c, None),
                Err(e) => (
                    BTreeMap::new(),
                    Some(self.unread(e, "the certificate authorities' expiry dates")?),
                ),
            }
        } else {
            (BTreeMap::new(), None)
        };

        let reads = Reads {
            groups: &group_reads,
            security_groups: &security_groups,
            nacls: &nacls,
            certificates: &certificates,
            unread_security_groups: &unread_sgs,
            unread_subnets: &unread_subnets,
            unread_certificates: unread_certificates.as_deref(),
        };
        let mut databases = Vec::with_capacity(instances.len() + clusters.len());
        let by_id: HashMap<&str, &DbInstance> = instances
            .iter()
            .filter_map(|i| i.db_instance_identifier().map(|id| (id, i)))
            .collect();
        for i in instances
            .iter()
            .filter(|i| i.db_cluster_identifier().is_none())
        {
            databases.push(convert::instance_model(&self.aws.region, i, &reads));
        }
        for c in &clusters {
            databases.push(convert::cluster_model(&self.aws.region, c, &by_id, &reads));
        }
        if let Some(why) = &unread_kms {
            for db in &mut databases {
                db.read_errors.kms_aliases = Some(why.clone());
            }
        }
        if needs.engine_versions {
            for db in &mut databases {
                match self.newest_minor(db.engine, &db.engine_version).await {
                    Ok(newest) => db.newest_minor_version = newest,
                    Err(e) => {
                        let what = format!(
                            "the upgrade targets of {} {}",
                            db.engine.as_str(),
                            db.engine_version
                        );
                        db.read_errors.engine_versions = Some(self.unread(e, &what)?);
                    }
                }
            }
        }
        Ok((databases, kms_keys))
    }

    /// Every instance (with `filters`: those they match), page by page.
    async fn describe_instances(&self, filters: Vec<Filter>) -> Result<Vec<DbInstance>, Failure> {
        let rds = &self.aws.rds;
        let filters = &(!filters.is_empty()).then_some(filters);
        self.aws
            .paged(|marker| async move {
                let page = rds
                    .describe_db_instances()
                    .max_records(PAGE)
                    .set_filters(filters.clone())
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk("DescribeDBInstances", e))?;
                Ok((
                    page.db_instances().to_vec(),
                    page.marker().map(str::to_string),
                ))
            })
            .await
    }

    async fn describe_clusters(&self, filters: Vec<Filter>) -> Result<Vec<DbCluster>, Failure> {
        let rds = &self.aws.rds;
        let filters = &(!filters.is_empty()).then_some(filters);
        self.aws
            .paged(|marker| async move {
                let page = rds
                    .describe_db_clusters()
                    .max_records(PAGE)
                    .set_filters(filters.clone())
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk("DescribeDBClusters", e))?;
                Ok((
                    page.db_clusters().to_vec(),
                    page.marker().map(str::to_string),
                ))
            })
            .await
    }

    /// The controlled parameters of one group: explicit values over engine defaults.
    async fn read_group(
        &self,
        cluster: bool,
        name: &str,
        family: String,
    ) -> Result<GroupRead, Failure> {
        let wanted = controlled_parameters();
        let explicit = if self.filter_supported.load(Ordering::Relaxed) {
            let result = groups::parameters(&self.aws, cluster, name, Some(&wanted)).await;
            self.filter_probed.store(true, Ordering::Relaxed);
            match result {
                Ok(p) => p,
                Err(e)
                    if e.code.starts_with("InvalidParameter")
                        && e.message.to_ascii_lowercase().contains("filter") =>
                {
                    // An older endpoint: read full pages from now on.
                    self.filter_supported.store(false, Ordering::Relaxed);
                    groups::parameters(&self.aws, cluster, name, None).await?
                }
                Err(e) => return Err(e),
            }
        } else {
            groups::parameters(&self.aws, cluster, name, None).await?
        };
        let explicit: Vec<Parameter> = explicit
            .into_iter()
            .filter(|p| p.parameter_name().is_some_and(|n| wanted.contains(&n)))
            .collect();
        // DescribeDB(Cluster)Parameters lists every parameter of the group, defaults included,
        // with its apply type; the engine defaults are read only when some controlled parameter
        // is missing from that answer (an older endpoint, or a trimmed catalogue).
        let complete = wanted.iter().all(|w| {
            explicit
                .iter()
                .any(|p| p.parameter_name() == Some(w) && p.apply_type().is_some())
        });
        let mut parameters = if complete {
            BTreeMap::new()
        } else {
            self.engine_defaults(cluster, &family).await?
        };
        for p in &explicit {
            let Some(n) = p.parameter_name() else {
                continue;
            };
            let entry = parameters.entry(n.to_string()).or_insert(ParameterValue {
                value: None,
                apply_type: ApplyType::Static,
                modifiable: true,
            });
            if let Some(v) = p.parameter_value() {
                entry.value = Some(v.to_string());
            }
            if let Some(t) = p.apply_type() {
                entry.apply_type = apply_type(t);
            }
            if let Some(m) = p.is_modifiable() {
                entry.modifiable = m;
            }
        }
        Ok(GroupRead { family, parameters })
    }

    /// Engine defaults of the controlled parameters, once per family for the process lifetime.
    async fn engine_defaults(
        &self,
        cluster: bool,
        family: &str,
    ) -> Result<BTreeMap<String, ParameterValue>, Failure> {
        // One cell per family: concurrent group reads of the same family wait for one call.
        let cell = match self.caches.lock() {
            Ok(mut caches) => caches
                .engine_defaults
                .entry((cluster, family.to_string()))
                .or_default()
                .clone(),
            Err(_) => Arc::new(OnceCell::new()),
        };
        cell.get_or_try_init(|| self.fetch_engine_defaults(cluster, family))
            .await
            .cloned()
    }

    async fn fetch_engine_defaults(
        &self,
        cluster: bool,
        family: &str,
    ) -> Result<BTreeMap<String, ParameterValue>, Failure> {
        let wanted = controlled_parameters();
        let filters = vec![
            Filter::builder()
                .name("parameter-name")
                .set_values(Some(wanted.iter().map(|s| s.to_string()).collect()))
                .build(),
        ];
        let rds = &self.aws.rds;
        let filters = &filters;
        let params: Vec<Parameter> = self
            .aws
            .paged(|marker| async move {
                let defaults = if cluster {
                    rds.describe_engine_default_cluster_parameters()
                        .db_parameter_group_family(family)
                        .set_filters(Some(filters.clone()))
                        .max_records(PAGE)
                        .set_marker(marker)
                        .send()
                        .await
                        .map_err(|e| {
                            Failure::from_sdk("DescribeEngineDefaultClusterParameters", e)
                        })?
                        .engine_defaults()
                        .cloned()
                } else {
                    rds.describe_engine_default_parameters()
                        .db_parameter_group_family(family)
                        .set_filters(Some(filters.clone()))
                        .max_records(PAGE)
                        .set_marker(marker)
                        .send()
                        .await
                        .map_err(|e| Failure::from_sdk("DescribeEngineDefaultParameters", e))?
                        .engine_defaults()
                        .cloned()
                };
                Ok(defaults
                    .map(|d| (d.parameters().to_vec(), d.marker().map(str::to_string)))
                    .unwrap_or_default())
            })
            .await?;
        let map: BTreeMap<String, ParameterValue> = params
            .iter()
            .filter_map(|p| {
                let name = p.parameter_name()?;
                wanted.contains(&name).then(|| {
                    (
                        name.to_string(),
                        ParameterValue {
                            value: p.parameter_value().map(str::to_string),
                            apply_type: p.apply_type().map(apply_type).unwrap_or(ApplyType::Static),
                            modifiable: p.is_modifiable().unwrap_or(true),
                        },
                    )
                })
            })
            .collect();
        Ok(map)
    }

    /// Ingress rules per security group; the ids of a batch that could not be read go to
    /// `unread` with the reason.
    async fn describe_security_groups(
        &self,
        ids: &BTreeSet<String>,
        unread: &mut BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Vec<IngressRule>>, Failure> {
        let mut out = BTreeMap::new();
        let ids: Vec<String> = ids.iter().cloned().collect();
        for batch in ids.chunks(EC2_BATCH) {
            self.aws.throttle().await;
            let resp = match self
                .aws
                .ec2
                .describe_security_groups()
                .set_group_ids(Some(batch.to_vec()))
                .send()
                .await
            {
                Ok(resp) => resp,
                Err(e) => {
                    let e = Failure::from_sdk("DescribeSecurityGroups", e);
                    let why = self.unread(e, "the database's security groups")?;
                    unread.extend(batch.iter().map(|id| (id.clone(), why.clone())));
                    continue;
                }
            };
            for group in resp.security_groups() {
                if let Some(id) = group.group_id() {
                    out.insert(id.to_string(), convert::ingress_rules(group));
                }
            }
        }
        Ok(out)
    }

    /// Inbound NACL entries per subnet; the subnets of a batch that could not be read go to
    /// `unread` with the reason.
    async fn describe_nacls(
        &self,
        subnets: &BTreeSet<String>,
        unread: &mut BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Vec<NaclEntry>>, Failure> {
        let mut out: BTreeMap<String, Vec<NaclEntry>> = BTreeMap::new();
        let subnets: Vec<String> = subnets.iter().cloned().collect();
        for batch in subnets.chunks(EC2_BATCH) {
            self.aws.throttle().await;
            let filter = aws_sdk_ec2::types::Filter::builder()
                .name("association.subnet-id")
                .set_values(Some(batch.to_vec()))
                .build();
            let resp = match self
                .aws
                .ec2
                .describe_network_acls()
                .filters(filter)
                .send()
                .await
            {
                Ok(resp) => resp,
                Err(e) => {
                    let e = Failure::from_sdk("DescribeNetworkAcls", e);
                    let why = self.unread(e, "the network ACLs of the database's subnets")?;
                    unread.extend(batch.iter().map(|id| (id.clone(), why.clone())));
                    continue;
                }
            };
            for acl in resp.network_acls() {
                let entries = convert::inbound_entries(acl);
                for assoc in acl.associations() {
                    if let Some(subnet) = assoc.subnet_id() {
                        out.entry(subnet.to_string())
                            .or_default()
                            .extend(entries.iter().cloned());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Alias names and key ids to key ARNs.
    async fn kms_aliases(&self) -> Result<BTreeMap<String, String>, Failure> {
        let mut out = BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            self.aws.throttle().await;
            let page = self
                .aws
                .kms
                .list_aliases()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| Failure::from_sdk("ListAliases", e))?;
            out.extend(convert::alias_keys(page.aliases()));
            match (page.truncated(), page.next_marker()) {
                (true, Some(m)) => marker = Some(m.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn certificates(&self) -> Result<BTreeMap<String, DateTime<Utc>>, Failure> {
        if let Some(hit) = self.caches.lock().ok().and_then(|c| c.certificates.clone()) {
            return Ok(hit);
        }
        self.aws.throttle().await;
        let resp = self
            .aws
            .rds
            .describe_certificates()
            .send()
            .await
            .map_err(|e| Failure::from_sdk("DescribeCertificates", e))?;
        let map: BTreeMap<String, DateTime<Utc>> = resp
            .certificates()
            .iter()
            .filter_map(|c| {
                Some((
                    c.certificate_identifier()?.to_string(),
                    convert::to_chrono(c.valid_till()?)?,
                ))
            })
            .collect();
        if let Ok(mut caches) = self.caches.lock() {
            caches.certificates = Some(map.clone());
        }
        Ok(map)
    }

    /// The newest minor version of `version`'s major, cached per (engine, version).
    async fn newest_minor(&self, engine: Engine, version: &str) -> Result<Option<String>, Failure> {
        let key = (engine.as_str().to_string(), version.to_string());
        if let Some(hit) = self
            .caches
            .lock()
            .ok()
            .and_then(|c| c.newest_minor.get(&key).cloned())
        {
            return Ok(hit);
        }
        self.aws.throttle().await;
        let resp = self
            .aws
            .rds
            .describe_db_engine_versions()
            .engine(engine.as_str())
            .engine_version(version)
            .send()
            .await
            .map_err(|e| Failure::from_sdk("DescribeDBEngineVersions", e))?;
        let newest = resp
            .db_engine_versions()
            .first()
            .map(|v| convert::newest_minor(version, v.valid_upgrade_target()));
        if let Ok(mut caches) = self.caches.lock() {
            caches.newest_minor.insert(key, newest.clone());
        }
        Ok(newest)
    }
}
