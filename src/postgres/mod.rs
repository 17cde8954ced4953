//! The only module that talks to PostgreSQL (tokio-postgres over rustls): it reads what the
//! in-database controls need into a [`indb::Observation`] and runs the SQL fixes Enforce planned.
//!
//! Safety rules, each enforced here:
//! - it connects only to the host names and port AWS reports for a database (an instance's
//!   endpoint; an Aurora cluster's writer endpoint and each member's instance endpoint); the optional
//!   `connect_addr` (an operator- or CLI-level flag, for tests and private routing) changes only
//!   the IP address dialled, while TLS still verifies the AWS host name;
//! - TLS always (`sslmode=require` plus a rustls verifier: the chain against the CA bundle and
//!   the host name), never plaintext, never unverified;
//! - bounded: a connect timeout, a statement and lock timeout, one connection per database
//!   server at a time, a global cap on concurrent connections, `application_name=pgbaseline`;
//! - Audit sessions are read-only (`default_transaction_read_only=on` and `BEGIN READ ONLY`);
//! - no credential ever enters an error message: messages are made from error kinds and the
//!   server's own text, which never echoes a password or a token.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::api::DatabaseKind;
use crate::aws::AwsRegion;
use crate::posture::effective::{EffectiveSettings, Setting};
use crate::posture::indb::{
    DatabaseFacts, Definer, EventTrigger, Failure, Observation, Override, Reason, ServerFacts,
    Session, SqlFix, Superuser,
};
use crate::posture::model::Database;

/// Default cap on connections open at once, over all databases.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Settings of the layer (flags of `run` and `check`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// PEM bundle of the CAs that sign the servers' certificates (the RDS global bundle in
    /// production). Without it every database is an `Error` finding: never unverified.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Dial this address instead of resolving the AWS host name (tests, private routing); the
    /// certificate must still name the AWS host.
    pub connect_addr: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub concurrency: usize,
    /// The namespaces whose policies may use the RDS-managed master secret (the operator's
    /// `--db-master-secret-namespace`); `None`: no namespace to ask about (`check`).
    pub master_secret_namespaces: Option<Vec<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ca_bundle: None,
            connect_addr: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            concurrency: DEFAULT_CONCURRENCY,
            master_secret_namespaces: None,
        }
    }
}

/// A password that prints as `***`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How to log in, as resolved for one policy.
#[derive(Clone, Debug)]
pub enum Login {
    Password {
        user: String,
        password: Password,
    },
    /// An IAM token generated per connection for this role.
    Iam {
        user: String,
    },
    /// The master user's credentials from the secret RDS manages in Secrets Manager for each
    /// database (`MasterUserSecret`, as DescribeDBInstances/DescribeDBClusters report it; never
    /// a secret a policy names), fetched for each look and never kept.
    MasterUserSecret,
    /// The credentials could not be had; every database of the policy reports why.
    Unavailable {
        reason: Reason,
        message: String,
    },
}

impl Login {
    /// Why credentials could not be had (every database of the policy reports it).
    pub fn unavailable(message: impl Into<String>) -> Login {
        Login::Unavailable {
            reason: Reason::CredentialsUnavailable,
            message: message.into(),
        }
    }

    /// The policy's login when it needs no Kubernetes Secret (an IAM user, the RDS-managed
    /// master secret, resolved per database when connecting), or the Secret to read: the one
    /// decision `check` (secrets directory) and the operator (the policy's namespace) share.
    pub fn of_spec(
        spec: &crate::api::DatabaseSecurityPolicySpec,
    ) -> Result<Login, &crate::api::SecretRef> {
        let Some(connection) = spec
            .posture
            .database
            .as_ref()
            .and_then(|d| d.connection.as_ref())
        else {
            return Ok(Login::unavailable("the policy has no database.connection"));
        };
        if let Some(user) = &connection.iam_user {
            return Ok(Login::Iam { user: user.clone() });
        }
        if connection.master_user_secret.is_some() {
            return Ok(Login::MasterUserSecret);
        }
        match &connection.secret_ref {
            Some(secret) => Err(secret),
            None => Ok(Login::unavailable(
                "database.connection names no credentials",
            )),
        }
    }

    /// A password login from a Secret's two values, or why it is unavailable.
    pub fn from_secret(user: Result<String, String>, password: Result<String, String>) -> Login {
        match (user, password) {
            (Ok(user), Ok(password)) => Login::Password {
                user,
                password: Password::new(password),
            },
            (Err(why), _) | (_, Err(why)) => Login::unavailable(why),
        }
    }
}

/// Told of every connection attempt: its outcome (`Connected`, or the [`Reason`] it failed
/// with) and how long it took (the operator's metrics).
pub type ConnectionObserver = Arc<dyn Fn(&'static str, Duration) + Send + Sync>;

/// The outcome of a connection attempt that succeeded, as [`ConnectionObserver`] is told.
pub const CONNECTED: &str = "Connected";

/// The layer: TLS configuration, limits and counters, shared by every policy and sweep.
pub struct Layer {
    settings: Settings,
    tls: Result<MakeRustlsConnect, String>,
    slots: Arc<Semaphore>,
    connections: std::sync::atomic::AtomicU64,
    observer: Option<ConnectionObserver>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Read-only queries, each verified on PostgreSQL 15 + pgaudit 1.7 (see the README's
/// in-database section for the RDS grants they need).
mod sql {
    pub const DATABASES: &str = "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate AND datname <> 'rdsadmin' AND has_database_privilege(datname, 'CONNECT') ORDER BY datname";
    pub const PRELOAD: &str = "SELECT current_setting('shared_preload_libraries')";
    pub const SUPERUSERS: &str = "WITH RECURSIVE m(member, via) AS (SELECT am.member, r.rolname::text FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid WHERE r.rolname = 'rds_superuser' UNION SELECT am.member, m.via || ' > ' || pg_get_userbyid(am.roleid)::text FROM pg_auth_members am JOIN m ON am.roleid = m.member) SELECT r.rolname::text, r.rolcanlogin, min(m.via) FROM m JOIN pg_roles r ON r.oid = m.member GROUP BY 1, 2 ORDER BY 1";
    pub const MD5: &str = "SELECT t.rolname::text FROM rds_tools.role_password_encryption_type() t JOIN pg_roles r ON r.rolname = t.rolname WHERE r.rolcanlogin AND t.encryption_type = 'md5' ORDER BY 1";
    pub const OVERRIDES: &str = "SELECT r.rolname::text, d.datname::text, c FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase CROSS JOIN LATERAL unnest(s.setconfig) c ORDER BY 1, 2, 3";
    pub const SESSIONS: &str = "SELECT a.usename::text, a.datname::text, host(a.client_addr), coalesce(s.ssl, false) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.backend_type = 'client backend' AND a.client_addr IS NOT NULL AND a.pid <> pg_backend_pid() AND coalesce(a.usename, '') <> 'rdsadmin' ORDER BY 1, 2, 3";
    pub const ROLES: &str = "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)";
    pub const PUBLIC_CREATE: &str = "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND has_schema_privilege('public', n.oid, 'CREATE') ORDER BY 1";
    pub const PGAUDIT: &str = "SELECT extversion::text FROM pg_extension WHERE extname = 'pgaudit'";
    pub const DEFINERS: &str = "SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner)::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}'::text[])) c WHERE c LIKE 'search\\_path=%') AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') ORDER BY 1";
    /// What the server runs with, for the controlled parameters; a placeholder setting that
    /// `pg_settings` does not list (`rds.force_ssl` outside RDS) is read with `current_setting`.
    pub const SETTINGS: &str = "SELECT n, coalesce(s.setting, current_setting(n, true)), coalesce(s.source, 'unknown'), coalesce(s.pending_restart, false) FROM unnest($1::text[]) AS n LEFT JOIN pg_settings s ON s.name = n ORDER BY 1";
    pub const EVENT_TRIGGERS: &str = "SELECT e.evtname::text, pg_get_userbyid(e.evtowner)::text, x.extname::text FROM pg_event_trigger e LEFT JOIN pg_depend d ON d.classid = 'pg_event_trigger'::regclass AND d.objid = e.oid AND d.deptype = 'e' LEFT JOIN pg_extension x ON x.oid = d.refobjid ORDER BY 1";
}

/// The database visited first, where the server-wide facts are read.
const FIRST_DATABASE: &str = "postgres";

impl Layer {
    pub fn new(settings: Settings) -> Layer {
        let tls = load_tls(settings.ca_bundle.as_deref());
        let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Layer {
            settings,
            tls,
            slots,
            connections: Default::default(),
            observer: None,
        }
    }

    /// The same layer, telling `observer` of every connection attempt.
    pub fn observed_by(mut self, observer: ConnectionObserver) -> Layer {
        self.observer = Some(observer);
        self
    }

    /// `login` as a policy of `namespace` may use it: the RDS-managed master secret only where
    /// the operator allows it (the other logins are the policy's own).
    pub fn login_for(&self, namespace: &str, login: Login) -> Login {
        match (&login, &self.settings.master_secret_namespaces) {
            (Login::MasterUserSecret, Some(allowed)) if !allowed.iter().any(|n| n == namespace) => {
                Login::unavailable(format!(
                    "namespace {namespace} may not use database.connection.masterUserSecret: the operator allows it only in {} (--db-master-secret-namespace, chart database.masterUserSecretNamespaces)",
                    if allowed.is_empty() {
                        "no namespace".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ))
            }
            _ => login,
        }
    }

    /// The cap on connections open at once.
    pub fn concurrency(&self) -> usize {
        self.settings.concurrency.max(1)
    }

    /// Connections opened since the start (for benchmarks and metrics).
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads everything the in-database controls need from one RDS instance or Aurora cluster
    /// (through its writer endpoint), one database at a time, read-only. `roles` are the role
    /// names whose existence matters (`audit.pgaudit.role`); `parameters` the settings whose
    /// effective values the parameter controls compare with the group: read on the instance's
    /// endpoint, or on each Aurora member's instance endpoint as AWS reports it.
    pub async fn observe(
        &self,
        database: &Database,
        login: &Login,
        aws: &AwsRegion,
        roles: &[String],
        parameters: &[String],
    ) -> Observation {
        let Some(host) = database.attributes.endpoint.clone() else {
            return Observation::failed(
                Reason::NoEndpoint,
                "AWS reports no endpoint for the database (creating, stopped or deleting)",
            );
        };
        let port = database.attributes.port;
        let _slot = self.slots.acquire().await;
        let login = self.resolve(database, login, aws).await;
        let login = &login;
        let first = match self
            .connect(&host, port, FIRST_DATABASE, login, aws, true)
            .await
        {
            Ok(client) => client,
            Err(failure) => {
                let mut observation = Observation::failed(failure.reason, failure.message.clone());
                // The members are not tried: the same login (and, most often, the same
                // network path) would fail again, each costing a connect timeout.
                if !parameters.is_empty() {
                    observation.effective = instances(database)
                        .into_iter()
                        .map(|instance| EffectiveSettings {
                            instance,
                            read: Err((failure.reason, failure.message.clone())),
                        })
                        .collect();
                }
                return observation;
            }
        };
        let (server, mut names) = match self.server_facts(&first, roles).await {
            Ok(read) => read,
            Err(failure) => return Observation::failed(failure.reason, failure.message),
        };
        let mut observation = Observation {
            server: Some(server),
            databases: Vec::new(),
            failures: Vec::new(),
            effective: Vec::new(),
        };
        // An instance's settings on the connection already open; an Aurora cluster's on each
        // member (the cluster endpoint does not say which instance answered).
        if !parameters.is_empty() && database.kind == DatabaseKind::Instance {
            observation.effective.push(EffectiveSettings {
                instance: database.id.clone(),
                read: self
                    .effective_settings(&first, parameters)
                    .await
                    .map_err(|f| (f.reason, f.message)),
            });
        }
        // The first database first: its connection is reused, so one is open at a time.
        names.sort_by_key(|n| n != FIRST_DATABASE);
        let mut first = Some(first);
        for name in names {
            let reuse = if name == FIRST_DATABASE {
                first.take()
            } else {
                None
            };
            let client = match reuse {
                Some(client) => client,
                None => {
                    // One connection per server at a time: the previous one is closed first.
                    match self.connect(&host, port, &name, login, aws, true).await {
                        Ok(client) => client,
                        Err(f) => {
                            observation.failures.push(Failure {
                                database: Some(name.clone()),
                                ..f
                            });
                            continue;
                        }
                    }
                }
            };
            match self.database_facts(&client, &name).await {
                Ok(facts) => observation.databases.push(facts),
                Err(f) => observation.failures.push(Failure {
                    database: Some(name.clone()),
                    ..f
                }),
            }
            drop(client);
        }
        drop(first);
        if !parameters.is_empty() && database.kind == DatabaseKind::Cluster {
            observation.effective = self.member_settings(database, login, aws, parameters).await;
        }
        observation
    }

    /// The settings each Aurora member runs with, read on its instance endpoint (one member at
    /// a time, one connection each, to the first database).
    async fn member_settings(
        &self,
        database: &Database,
        login: &Login,
        aws: &AwsRegion,
        parameters: &[String],
    ) -> Vec<EffectiveSettings> {
        let mut out = Vec::new();
        for member in &database.members {
            let read = match &member.endpoint {
                None => Err((
                    Reason::NoEndpoint,
                    "AWS reports no endpoint for the member".to_string(),
                )),
                Some(host) => {
                    match self
                        .connect(
                            host,
                            database.attributes.port,
                            FIRST_DATABASE,
                            login,
                            aws,
                            true,
                        )
                        .await
                    {
                        Err(f) => Err((f.reason, f.message)),
                        Ok(client) => self
                            .effective_settings(&client, parameters)
                            .await
                            .map_err(|f| (f.reason, f.message)),
                    }
                }
            };
            out.push(EffectiveSettings {
                instance: member.id.clone(),
                read,
            });
        }
        out
    }

    async fn effective_settings(
        &self,
        client: &Client,
        parameters: &[String],
    ) -> Result<BTreeMap<String, Setting>, Failure> {
        let rows = client
            .query(sql::SETTINGS, &[&parameters])
            .await
            .map_err(|e| what(classify(&e), sql::SETTINGS))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let value: Option<String> = r.get(1);
                Some((
                    r.get::<_, String>(0),
                    Setting {
                        value: value?,
                        source: r.get(2),
                        pending_restart: r.get(3),
                    },
                ))
            })
            .collect())
    }

    /// The login to use for `database`: the policy's, or for the managed master secret the
    /// credentials it holds now (one GetSecretValue per look; the value is never kept or shown).
    async fn resolve(&self, database: &Database, login: &Login, aws: &AwsRegion) -> Login {
        if !matches!(login, Login::MasterUserSecret) {
            return login.clone();
        }
        let Some(arn) = database.attributes.master_user_secret_arn.as_deref() else {
            return Login::unavailable(
                "AWS reports no MasterUserSecret for the database: its master password is not managed in Secrets Manager (see auth.managedMasterPassword)",
            );
        };
        match aws.master_user_secret(arn).await {
            Ok((user, password)) => Login::Password {
                user,
                password: Password::new(password),
            },
            Err(e) => Login::unavailable(format!(
                "the database's master user secret: {}: {}: {}",
                e.call, e.code, e.message
            )),
        }
    }

    /// Runs the SQL fixes on one database server, each in its own transaction, and returns how
    /// each went. Names are quoted by [`SqlFix::sql`]; a fix that cannot be written safely is
    /// not run.
    pub async fn apply(
        &self,
        database: &Database,
        login: &Login,
        aws: &AwsRegion,
        fixes: &[SqlFix],
    ) -> Vec<(SqlFix, Result<(), String>)> {
        let mut by_db: BTreeMap<&str, Vec<&SqlFix>> = BTreeMap::new();
        for fix in fixes {
            by_db
                .entry(fix.database().unwrap_or(FIRST_DATABASE))
                .or_default()
                .push(fix);
        }
        let mut out = Vec::new();
        let Some(host) = database.attributes.endpoint.clone() else {
            return fixes
                .iter()
                .map(|f| (f.clone(), Err("AWS reports no endpoint".to_string())))
                .collect();
        };
        let _slot = self.slots.acquire().await;
        let login = &self.resolve(database, login, aws).await;
        for (name, fixes) in by_db {
            let client = match self
                .connect(&host, database.attributes.port, name, login, aws, false)
                .await
            {
                Ok(client) => client,
                Err(f) => {
                    for fix in fixes {
                        out.push((fix.clone(), Err(format!("{}: {}", f.reason, f.message))));
                    }
                    continue;
                }
            };
            for fix in fixes {
                let result = match fix.sql() {
                    None => {
                        Err("refused: a name in the statement is not a plain identifier".into())
                    }
                    Some(statement) => client
                        .batch_execute(&format!("BEGIN; {statement}; COMMIT"))
                        .await
                        .map_err(|e| {
                            let f = classify(&e);
                            format!("{}: {}", f.reason, f.message)
                        }),
                };
                if result.is_err() {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                out.push((fix.clone(), result));
            }
        }
        out
    }

    async fn connect(
        &self,
        host: &str,
        port: u16,
        dbname: &str,
        login: &Login,
        aws: &AwsRegion,
        read_only: bool,
    ) -> Result<Client, Failure> {
        let tls = self.tls.as_ref().map_err(|why| Failure {
            database: None,
            reason: Reason::TlsVerificationFailed,
            message: why.clone(),
        })?;
        let (user, secret) = match login {
            Login::Unavailable { reason, message } => {
                return Err(Failure {
                    database: None,
                    reason: *reason,
                    message: message.clone(),
                });
            }
            Login::Password { user, password } => (user.clone(), password.0.clone()),
            // Resolved per database before connecting (`resolve`).
            Login::MasterUserSecret => {
                return Err(Failure {
                    database: None,
                    reason: Reason::CredentialsUnavailable,
                    message: "the master user secret was not resolved".into(),
                });
            }
            Login::Iam { user } => match aws.db_auth_token(host, port, user).await {
                Ok(token) => (user.clone(), token),
                Err(e) => {
                    return Err(Failure {
                        database: None,
                        reason: Reason::CredentialsUnavailable,
                        message: format!("IAM token: {}: {}", e.code, e.message),
                    });
                }
            },
        };
        let mut config = Config::new();
        config
            .host(host)
            .port(port)
            .user(&user)
            .password(secret)
            .dbname(dbname)
            .application_name("pgbaseline")
            .ssl_mode(SslMode::Require)
            .connect_timeout(self.settings.connect_timeout)
            .options(format!(
                "-c statement_timeout={} -c lock_timeout=2000 -c idle_in_transaction_session_timeout={}{}",
                self.settings.statement_timeout.as_millis(),
                self.settings.statement_timeout.as_millis() * 3,
                if read_only { " -c default_transaction_read_only=on" } else { "" }
            ));
        if let Some(addr) = self.settings.connect_addr {
            config.hostaddr(addr);
        }
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limit = self.settings.connect_timeout * 2;
        let started = std::time::Instant::now();
        let connected = match tokio::time::timeout(limit, config.connect(tls.clone())).await {
            Err(_) => Err(Failure {
                database: None,
                reason: Reason::DatabaseUnreachable,
                message: format!("{host}:{port}: no answer within {}s", limit.as_secs()),
            }),
            Ok(Err(e)) => {
                let mut f = classify(&e);
                f.message = format!("{host}:{port}: {}", f.message);
                Err(f)
            }
            Ok(Ok(pair)) => Ok(pair),
        };
        if let Some(observer) = &self.observer {
            let outcome = match &connected {
                Ok(_) => CONNECTED,
                Err(f) => f.reason.as_str(),
            };
            observer(outcome, started.elapsed());
        }
        let (client, connection) = connected?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        if read_only {
            client
                .batch_execute("BEGIN READ ONLY")
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(client)
    }

    async fn server_facts(
        &self,
        client: &Client,
        roles: &[String],
    ) -> Result<(ServerFacts, Vec<String>), Failure> {
        let q = |text: &'static str| async move {
            client
                .query(text, &[])
                .await
                .map_err(|e| what(classify(&e), text))
        };
        let names: Vec<String> = q(sql::DATABASES).await?.iter().map(|r| r.get(0)).collect();
        let preload: String = q(sql::PRELOAD)
            .await?
            .first()
            .map(|r| r.get(0))
            .unwrap_or_default();
        let superusers = q(sql::SUPERUSERS)
            .await?
            .iter()
            .map(|r| Superuser {
                role: r.get(0),
                can_login: r.get(1),
                via: r.get(2),
            })
            .collect();
        let md5_roles = q(sql::MD5).await?.iter().map(|r| r.get(0)).collect();
        let overrides = q(sql::OVERRIDES)
            .await?
            .iter()
            .filter_map(|r| {
                let entry: String = r.get(2);
                let (setting, value) = entry.split_once('=')?;
                Some(Override {
                    role: r.get(0),
                    database: r.get(1),
                    setting: setting.to_string(),
                    value: value.to_string(),
                })
            })
            .collect();
        let sessions = q(sql::SESSIONS)
            .await?
            .iter()
            .map(|r| Session {
                user: r.get::<_, Option<String>>(0).unwrap_or_default(),
                database: r.get::<_, Option<String>>(1).unwrap_or_default(),
                client_addr: r.get::<_, Option<String>>(2).unwrap_or_default(),
                ssl: r.get(3),
            })
            .collect();
        let existing = client
            .query(sql::ROLES, &[&roles])
            .await
            .map_err(|e| what(classify(&e), sql::ROLES))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok((
            ServerFacts {
                preload: preload
                    .split(',')
                    .map(|l| l.trim().trim_matches('"').to_string())
                    .filter(|l| !l.is_empty())
                    .collect(),
                superusers,
                md5_roles,
                overrides,
                sessions,
                roles: existing,
            },
            names,
        ))
    }

    async fn database_facts(&self, client: &Client, name: &str) -> Result<DatabaseFacts, Failure> {
        let q = |text: &'static str| async move {
            client
                .query(text, &[])
                .await
                .map_err(|e| what(classify(&e), text))
        };
        Ok(DatabaseFacts {
            name: name.to_string(),
            public_create: q(sql::PUBLIC_CREATE)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            pgaudit: q(sql::PGAUDIT).await?.first().map(|r| r.get(0)),
            definers: q(sql::DEFINERS)
                .await?
                .iter()
                .map(|r| Definer {
                    function: r.get(0),
                    owner: r.get(1),
                })
                .collect(),
            event_triggers: q(sql::EVENT_TRIGGERS)
                .await?
                .iter()
                .map(|r| EventTrigger {
                    name: r.get(0),
                    owner: r.get(1),
                    extension: r.get(2),
                })
                .collect(),
        })
    }
}

/// The instances whose settings the parameter controls compare: an RDS instance, or each Aurora
/// member.
fn instances(database: &Database) -> Vec<String> {
    match database.kind {
        DatabaseKind::Instance => vec![database.id.clone()],
        DatabaseKind::Cluster => database.members.iter().map(|m| m.id.clone()).collect(),
    }
}

/// Names the catalogue read that failed (its first words), for people.
fn what(mut failure: Failure, statement: &str) -> Failure {
    let head: String = statement.chars().take(60).collect();
    failure.message = format!("{} (reading: {head}...)", failure.message);
    failure
}

/// The reason and a one-line message of a driver error. The server's message never holds the
/// password or token; the client side is described by kind only.
fn classify(e: &tokio_postgres::Error) -> Failure {
    let failure = |reason, message: String| Failure {
        database: None,
        reason,
        message,
    };
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let reason = match code {
            "28P01" | "28000" => Reason::AuthenticationFailed,
            "42501" => Reason::PermissionDenied,
            "57014" | "55P03" => Reason::Timeout,
            _ => Reason::QueryFailed,
        };
        return failure(reason, format!("{} ({code})", db.message()));
    }
    // Walk the source chain for the TLS or IO cause.
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let text = chain.join(": ");
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        failure(Reason::TlsVerificationFailed, text)
    } else if lower.contains("timed out")
        || lower.contains("refused")
        || lower.contains("unreachable")
        || lower.contains("error connecting")
        || lower.contains("failed to lookup")
        || lower.contains("dns")
    {
        failure(Reason::DatabaseUnreachable, text)
    } else if lower.contains("password") || lower.contains("authentication") {
        failure(Reason::AuthenticationFailed, text)
    } else if lower.contains("ssl") {
        failure(Reason::TlsVerificationFailed, text)
    } else {
        failure(Reason::DatabaseUnreachable, text)
    }
}

/// A rustls connector that verifies the chain against `bundle` and the host name.
fn load_tls(bundle: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let Some(path) = bundle else {
        return Err("no CA bundle configured (--db-ca-bundle): pgbaseline never connects without verifying the server certificate".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA bundle {} holds no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let login = Login::Password {
            user: "auditor".into(),
            password: Password::new("hunter2"),
        };
        assert!(!format!("{login:?}").contains("hunter2"));
    }

    #[test]
    fn the_master_secret_is_used_only_where_the_operator_allows_it() {
        let layer = |allowed: Option<Vec<String>>| {
            Layer::new(Settings {
                master_secret_namespaces: allowed,
                ..Settings::default()
            })
        };
        let refused = |login: &Login| matches!(login, Login::Unavailable { reason: Reason::CredentialsUnavailable, message } if message.contains("may not use database.connection.masterUserSecret"));
        let operator = layer(Some(vec!["platform".into()]));
        assert!(matches!(
            operator.login_for("platform", Login::MasterUserSecret),
            Login::MasterUserSecret
        ));
        assert!(refused(
            &operator.login_for("team-a", Login::MasterUserSecret)
        ));
        assert!(refused(
            &layer(Some(Vec::new())).login_for("platform", Login::MasterUserSecret)
        ));
        // The policy's own credentials are not the operator's to gate.
        assert!(matches!(
            operator.login_for("team-a", Login::Iam { user: "a".into() }),
            Login::Iam { .. }
        ));
        // `check` has no namespace to ask about.
        assert!(matches!(
            layer(None).login_for("team-a", Login::MasterUserSecret),
            Login::MasterUserSecret
        ));
    }

    #[test]
    fn without_a_ca_bundle_nothing_connects() {
        let layer = Layer::new(Settings::default());
        assert!(layer.tls.is_err());
    }
}
