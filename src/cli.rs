//! The command line: `crd`, `check` and `run`. Thin: parse, set up telemetry, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;

use crate::api::DatabaseSecurityPolicy;
use crate::check::{self, Exit};
use crate::manifest::parse_policies;

/// Exit code for bad input or an error (clap uses it for usage errors too).
pub const EXIT_ERROR: u8 = 2;

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
    /// Print the DatabaseSecurityPolicy CustomResourceDefinition as YAML.
    Crd,
    /// Evaluate policy manifests against AWS once (exit 0 compliant, 1 non-compliant, 2 error).
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
    /// Identity in the Lease and on Events (default: $POD_NAME, else the hostname, else random).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Client-side limit on AWS requests per second (per region).
    #[arg(long, default_value_t = crate::aws::DEFAULT_REQUESTS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub requests_per_second: u32,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) => "info,aws_config=error,aws_smithy_runtime=warn,kube_lease_manager=warn",
        _ => "warn,aws_config=error",
    };
    init_tracing(cli.log_json, default_level);
    match cli.command {
        Command::Run(args) => run_operator(args),
        Command::Crd => match crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
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
        leader_election_namespace: args.leader_election_namespace,
        lease_name: args.lease_name,
        identity,
        metrics_addr: args.metrics_addr,
        requests_per_second: args.requests_per_second,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    match runtime.block_on(crate::controller::run(options)) {
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
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
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
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = if name == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
        } else {
            std::fs::read_to_string(file).map_err(|e| format!("{name}: {e}"))?
        };
        match parse_policies(&name, &text) {
            Ok(found) => policies.extend(found),
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
    };
    let (mut report, stats) = match runtime.block_on(check::run(&policies, options)) {
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
    match args.output {
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => return fail(&e.to_string()),
        },
        Output::Table => {
            print!("{}", report.table());
            if let Some(calls) = &report.stats {
                println!("\nAWS calls (attempts, retries included):");
                for (call, n) in calls {
                    println!("  {call:<48} {n}");
                }
            }
        }
    }
    match report.exit() {
        Exit::Compliant => ExitCode::SUCCESS,
        Exit::NonCompliant => ExitCode::from(1),
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

/// The CRD exactly as `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&DatabaseSecurityPolicy::crd())
}
