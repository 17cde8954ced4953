//! The command line: `crd`, `check` and `run`. Thin: parse, set up telemetry, call the library.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;

use crate::api::DatabaseSecurityPolicy;
use crate::check::{self, Exit};
use crate::manifest::{Loader, MAX_INPUT_BYTES};

/// Exit code when a selected database does not comply.
pub const EXIT_NON_COMPLIANT: u8 = 1;
/// Exit code for bad input or an error (clap uses it for usage errors too).
pub const EXIT_ERROR: u8 = 2;
/// Exit code when everything selected complies but nothing was checked: a policy selected no
/// database, or switches on no control.
pub const EXIT_NOTHING_SELECTED: u8 = 3;

const CHECK_EXIT_CODES: &str = "\
Exit codes (when several apply: 2, then 1, then 3):
  0  every database a policy selected complies, and every policy selected at least one
  1  a selected database does not comply (or is pending a reboot)
  2  bad input (file, line, field path and reason on stderr), an AWS error, a finding that could
     not be evaluated, or the report could not be written
  3  everything selected complies, but nothing was checked: a policy selected no database (a tag
     or identifier typo must not pass a CI gate) or checks no control; the report names those
     policies (such a posture is rejected as bad input, exit 2, when read from a manifest)

Manifests are read as the apiserver reads them (YAML 1.1 scalars such as yes/on/0755, schema
defaults, strict field validation, CEL rules). A policy (namespace/name) may appear only once
across all files: the same file given twice, two paths to one file, or two documents with the
same name are rejected with exit code 2. Each input is limited to 4 MiB.
If stdout is closed early (`check ... | head`), the rest of the report is dropped quietly and
the exit code is still the verdict.";

#[derive(Parser, Debug)]
#[command(
    name = "pgbaseline",
    version,
    about = "PostgreSQL security baselines for Amazon RDS and Aurora, enforced from Kubernetes"
)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a CustomResourceDefinition as YAML (DatabaseSecurityPolicy by default).
    Crd {
        /// Which CRD: `policy` (DatabaseSecurityPolicy) or `account` (AwsAccount).
        #[arg(long, value_enum, default_value_t = CrdKind::Policy)]
        kind: CrdKind,
    },
    /// Evaluate policy manifests against AWS once (exit 0 compliant, 1 non-compliant, 2 error,
    /// 3 a policy selected or checked nothing).
    #[command(after_long_help = CHECK_EXIT_CODES, after_help = CHECK_EXIT_CODES)]
    Check(CheckArgs),
    /// Run the operator: watch DatabaseSecurityPolicy resources and keep databases at baseline.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Namespace to watch (repeatable); all namespaces when omitted.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Elect a leader with a coordination.k8s.io Lease; only the leader reconciles.
    #[arg(long)]
    pub leader_election: bool,
    /// Spread the work over every replica: one Lease per (account, region) key in the
    /// leader-election namespace, named after --lease-name; each key is swept and remediated
    /// by one replica at a time, and a policy by the replica holding all of its keys. Replaces
    /// --leader-election (one replica working, the others standing by).
    #[arg(long)]
    pub scale_out: bool,
    /// Namespace of the leader election Lease.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    pub leader_election_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "pgbaseline-leader")]
    pub lease_name: String,
    /// Names this replica on Events (default: $POD_NAME, else the hostname, else random). The
    /// Lease holder is this plus a per-process suffix: two replicas never share one.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Client-side limit on AWS requests per second (per region).
    #[arg(long, default_value_t = crate::aws::DEFAULT_REQUESTS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub requests_per_second: u32,
    /// Longest one AWS call may take, retries included (`30s`, `2m`, or seconds); an attempt
    /// gets a third of it. A hung AWS endpoint costs at most this much.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub aws_timeout: std::time::Duration,
    /// How long a managed parameter group must stay unused before it is deleted (`90s`, `30m`,
    /// `1h`, or seconds).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub managed_group_grace: std::time::Duration,
    /// Policy reports, one per policy and database: `auto` writes `openreports.io/v1alpha1`
    /// Reports when the apiserver serves them, else `wgpolicyk8s.io/v1alpha2` PolicyReports, else
    /// none (re-checked every minute; never both); `openreports` or `wgpolicyk8s` forces one;
    /// `off` writes none.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(crate::controller::reports::ReportsMode))]
    pub policy_reports: crate::controller::reports::ReportsMode,
    /// An SQS queue EventBridge delivers RDS events and CloudTrail API-call records to (see
    /// `deploy/events/`): drift shows within seconds of a change instead of at the next resync.
    /// One per account and region, or one central queue; repeat the flag. Read by the leader,
    /// with the operator's own credentials.
    #[arg(long = "event-queue", value_name = "URL", value_parser = parse_queue_url)]
    pub event_queues: Vec<String>,
    /// How long events about one account and region are gathered before its databases are
    /// re-read (a burst costs one re-read).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    pub event_debounce: std::time::Duration,
    #[command(flatten)]
    pub db: DbArgs,
    /// A namespace whose policies may log in with `database.connection.masterUserSecret`
    /// (repeatable). Elsewhere such a policy's databases report `CredentialsUnavailable`: the
    /// master password opens any database a policy selects, so reading it is the operator
    /// admin's decision, as Secrets are (`secretRef` needs a Role in the namespace).
    #[arg(long = "db-master-secret-namespace", value_name = "NS")]
    pub db_master_secret_namespaces: Vec<String>,
}

/// An SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`, or an emulator's).
fn parse_queue_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "{text:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
            )
        })?;
    let mut parts = rest.split('/');
    let (Some(host), Some(_account), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{text:?}: a queue URL ends in /<account>/<name>"));
    };
    if host.is_empty() || name.is_empty() || parts.next().is_some() || text.len() > 2048 {
        return Err(format!("{text:?}: a queue URL ends in /<account>/<name>"));
    }
    Ok(text.to_string())
}

/// The in-database layer's settings (shared by `run` and `check`).
#[derive(clap::Args, Debug, Clone)]
pub struct DbArgs {
    /// PEM bundle of the CAs that sign the databases' server certificates (the RDS global
    /// bundle). Without it no database is connected to and the in-database controls are errors.
    #[arg(long, value_name = "PEM", env = "PGBASELINE_DB_CA_BUNDLE")]
    pub db_ca_bundle: Option<PathBuf>,
    /// Dial this IP address for every database instead of resolving the host name AWS reports
    /// (tests, private routing). TLS still verifies the certificate against the AWS host name.
    #[arg(long, value_name = "IP")]
    pub db_connect_addr: Option<std::net::IpAddr>,
    /// Most database connections open at once, over all databases.
    #[arg(long, default_value_t = crate::postgres::DEFAULT_CONCURRENCY, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=512), usize::from))]
    pub db_concurrency: usize,
    /// Longest a database connection (TCP, TLS, login) may take.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub db_connect_timeout: std::time::Duration,
    /// Longest one catalogue read or fix may take (`statement_timeout`).
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub db_statement_timeout: std::time::Duration,
}

impl DbArgs {
    pub fn settings(&self) -> crate::postgres::Settings {
        crate::postgres::Settings {
            ca_bundle: self.db_ca_bundle.clone(),
            connect_addr: self.db_connect_addr,
            connect_timeout: self.db_connect_timeout,
            statement_timeout: self.db_statement_timeout,
            concurrency: self.db_concurrency,
            master_secret_namespaces: None,
        }
    }
}

/// `90s`, `30m`, `2h`, `1d`, or a number of seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 30m, 1h)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    n.checked_mul(scale)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A duration of at least one second and at most an hour.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(text)?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{text}: must be between 1s and 1h"));
    }
    Ok(d)
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// A DatabaseSecurityPolicy manifest (multi-document YAML allowed; `-` reads stdin).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Remediate as Enforce would (per-control Audit overrides still hold).
    #[arg(long)]
    pub fix: bool,
    /// Add the AWS calls made, per action.
    #[arg(long)]
    pub stats: bool,
    /// Client-side limit on AWS requests per second (per region).
    #[arg(long, default_value_t = crate::aws::DEFAULT_REQUESTS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub requests_per_second: u32,
    /// Longest one AWS call may take, retries included (`30s`, `2m`, or seconds); an attempt
    /// gets a third of it. A hung AWS endpoint costs at most this much.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub aws_timeout: std::time::Duration,
    #[command(flatten)]
    pub db: DbArgs,
    /// Where `database.connection.secretRef` is read from: DIR/<secret name>/<key>, the layout
    /// of a mounted Secret (check runs outside the cluster and reads no Secret from it).
    #[arg(long, value_name = "DIR")]
    pub db_secrets_dir: Option<PathBuf>,
    /// Check another account: assume this role (as the operator does for an AwsAccount). The
    /// session is read-only unless `--fix` is given.
    #[arg(long, value_name = "ARN", value_parser = parse_role_arn)]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy requires (or set PGBASELINE_EXTERNAL_ID, which
    /// keeps it out of the process list).
    #[arg(
        long,
        env = "PGBASELINE_EXTERNAL_ID",
        hide_env_values = true,
        requires = "role_arn"
    )]
    pub external_id: Option<String>,
    /// A region to check policies that name none in (repeatable); the environment's region by
    /// default.
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
}

/// `arn:aws…:iam::<12 digits>:role/<name>`.
fn parse_role_arn(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("arn:")
        .and_then(|r| r.split_once(":iam::"))
        .filter(|(partition, _)| partition.starts_with("aws"))
        .map(|(_, rest)| rest);
    match rest.and_then(|r| r.split_once(":role/")) {
        Some((account, role))
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !role.is_empty() =>
        {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "{text}: not an IAM role ARN (arn:aws:iam::<account id>:role/<name>)"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One block per database, one line per control.
    Table,
    /// The stable JSON report documented in the README.
    Json,
    /// JUnit XML: one test suite per database, one test case per control.
    Junit,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) => "info,aws_config=error,aws_smithy_runtime=warn",
        _ => "warn,aws_config=error",
    };
    init_tracing(cli.log_json, default_level);
    match cli.command {
        Command::Run(args) => run_operator(args),
        Command::Crd { kind } => match match kind {
            CrdKind::Policy => crd_yaml(),
            CrdKind::Account => account_crd_yaml(),
        } {
            Ok(yaml) => match write_stdout(&yaml) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => e,
            },
            Err(e) => fail(&e.to_string()),
        },
        Command::Check(args) => run_check(args),
    }
}

fn run_operator(args: RunArgs) -> ExitCode {
    let identity = args
        .identity
        .filter(|i| !i.is_empty())
        .or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(random_identity);
    let options = crate::controller::Options {
        namespaces: args.namespaces,
        leader_election: args.leader_election,
        scale_out: args.scale_out,
        leader_election_namespace: args.leader_election_namespace,
        lease_name: args.lease_name,
        identity,
        metrics_addr: args.metrics_addr,
        requests_per_second: args.requests_per_second,
        aws_timeout: args.aws_timeout,
        managed_group_grace: args.managed_group_grace,
        db: crate::postgres::Settings {
            master_secret_namespaces: Some(args.db_master_secret_namespaces),
            ..args.db.settings()
        },
        policy_reports: args.policy_reports,
        events: crate::controller::event_queue::Settings {
            queues: args.event_queues,
            debounce: args.event_debounce,
        },
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let result = runtime.block_on(crate::controller::run(options));
    // A task that is still running (a DNS lookup on a blocking thread…) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator failed");
            fail(&format!("{e:#}"))
        }
    }
}

fn random_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("pgbaseline-{:016x}", h.finish())
}

fn fail(message: &str) -> ExitCode {
    // Never panic on a closed or full stderr.
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::from(EXIT_ERROR)
}

/// Writes all of `text` to stdout and flushes it. A reader that went away (`| head`) is no
/// error: the rest is dropped quietly. Any other write error (a full disk) is an error, with a
/// message, instead of a panic.
fn write_stdout(text: &str) -> Result<(), ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(fail(&format!("writing to stdout: {e}"))),
    }
}

/// Reads at most [`MAX_INPUT_BYTES`] from `reader`; more is an error, not an allocation.
fn read_bounded(name: &str, reader: impl Read) -> Result<String, String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "{name}: larger than {} MiB; a policy manifest is a few KiB",
            MAX_INPUT_BYTES / (1024 * 1024)
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        format!("{name}:{line}: not UTF-8 text (byte {at})")
    })
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_tracing(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn read_policies(files: &[PathBuf]) -> Result<Vec<DatabaseSecurityPolicy>, String> {
    if files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        return Err("`-f -` (stdin) may be given only once".into());
    }
    let loader = Loader::new()?;
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    // namespace/name → where it was first defined: a policy is one object in the cluster.
    let mut defined: std::collections::BTreeMap<String, String> = Default::default();
    for file in files {
        let name = file.display().to_string();
        let text = if name == "-" {
            read_bounded("stdin", std::io::stdin().lock())?
        } else {
            let opened = std::fs::File::open(file).map_err(|e| format!("{name}: {e}"))?;
            read_bounded(&name, opened)?
        };
        match loader.load(&name, &text) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    let _ = writeln!(std::io::stderr(), "warning: {warning}");
                }
                for p in loaded.policies {
                    let here = format!("{}:{} (document {})", p.source_name, p.line, p.document);
                    match defined.entry(p.key()) {
                        std::collections::btree_map::Entry::Occupied(first) => {
                            problems.push(format!(
                                "{here}: policy {} is already defined at {}; each policy may appear once (it is one object in the cluster), so give each file once",
                                first.key(),
                                first.get()
                            ));
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(here);
                            policies.push(p.policy);
                        }
                    }
                }
            }
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
    }
    if !problems.is_empty() {
        return Err(format!("invalid policy:\n  {}", problems.join("\n  ")));
    }
    if policies.is_empty() {
        return Err("no DatabaseSecurityPolicy found in the given files".into());
    }
    Ok(policies)
}

fn run_check(args: CheckArgs) -> ExitCode {
    let policies = match read_policies(&args.files) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let options = check::Options {
        fix: args.fix,
        requests_per_second: args.requests_per_second,
        call_timeout: args.aws_timeout,
        db: args.db.settings(),
        secrets_dir: args.db_secrets_dir.clone(),
        role_arn: args.role_arn.clone(),
        external_id: args.external_id.clone(),
        regions: args.regions.clone(),
    };
    let (mut report, stats) = match runtime.block_on(check::run(&policies, &options)) {
        Ok(r) => r,
        Err(e) => return fail(&format!("AWS {e}")),
    };
    if args.stats {
        let mut calls = std::collections::BTreeMap::new();
        for s in &stats {
            for ((service, operation, _), n) in s.snapshot() {
                *calls.entry(format!("{service}:{operation}")).or_insert(0) += n;
            }
        }
        report.stats = Some(calls);
    }
    let text = match args.output {
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(e) => return fail(&e.to_string()),
        },
        Output::Junit => match report.junit() {
            Ok(xml) => xml + "\n",
            Err(e) => return fail(&e.to_string()),
        },
        Output::Table => {
            let mut text = report.table();
            if let Some(calls) = &report.stats {
                text.push_str("\nAWS calls (attempts, retries included):\n");
                for (call, n) in calls {
                    text.push_str(&format!("  {call:<48} {n}\n"));
                }
            }
            text
        }
    };
    if let Err(code) = write_stdout(&text) {
        return code;
    }
    match report.exit() {
        Exit::Compliant => ExitCode::SUCCESS,
        Exit::NonCompliant => ExitCode::from(EXIT_NON_COMPLIANT),
        Exit::NothingSelected => ExitCode::from(EXIT_NOTHING_SELECTED),
        Exit::Error => ExitCode::from(EXIT_ERROR),
    }
}

/// Two worker threads: the work is IO-bound and the operator should stay small.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// The CRDs `pgbaseline crd` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CrdKind {
    Policy,
    Account,
}

/// The `AwsAccount` CRD exactly as `crds/` holds it.
pub fn account_crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX / 2 };
    serde_saphyr::to_string_with_options(&crate::api::AwsAccount::crd(), options)
}

/// The CRD exactly as `crds/` holds it: long lines are not folded, multi-line text is a literal
/// block, and strings a YAML 1.1 reader would take for another type are quoted.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX / 2 };
    serde_saphyr::to_string_with_options(&DatabaseSecurityPolicy::crd(), options)
}

#[cfg(test)]
mod duration_tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_take_a_unit_or_seconds_and_refuse_the_rest() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("4s"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "h", "1x", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
