//! Test harness: the project's AWS emulator as a child process, and the pgbaseline binary.
#![allow(dead_code)]

pub mod controlplane;
pub mod operator;
pub mod postgres;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One emulator process (`tests/emulator/serve`), killed on drop.
pub struct Emulator {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

/// One AWS call the emulator saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub service: String,
    pub action: String,
    pub status: u16,
    pub throttled: bool,
    /// The AWS account the call acted in (the emulator's default account for the operator's
    /// own identity).
    pub account: String,
    /// The caller's STS session name (empty for long-term keys).
    pub session: String,
    /// The region the call was signed for.
    pub region: String,
}

impl Call {
    /// The code's own notion of a read, so the tests and the operator cannot disagree.
    pub fn is_mutating(&self) -> bool {
        !pgbaseline::aws::is_read_operation(&self.action)
    }
}

/// The calls of a `/_emulator/calls` answer.
pub fn parse_calls(body: &Value) -> Option<Vec<Call>> {
    Some(
        body["calls"]
            .as_array()?
            .iter()
            .map(|c| Call {
                service: c["service"].as_str().unwrap_or_default().to_string(),
                action: c["action"].as_str().unwrap_or_default().to_string(),
                status: c["status"].as_u64().unwrap_or(0) as u16,
                throttled: c["throttled"].as_bool().unwrap_or(false),
                account: c["account"].as_str().unwrap_or_default().to_string(),
                session: c["session"].as_str().unwrap_or_default().to_string(),
                region: c["region"].as_str().unwrap_or_default().to_string(),
            })
            .collect(),
    )
}

impl Emulator {
    /// Starts the emulator, seeded with `fleet` (`small`, `F1000`) when given.
    pub fn start(fleet: Option<&str>) -> Emulator {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("pgbaseline-emulator-{port}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(repo_root().join("tests/emulator/serve"));
        cmd.arg("--port").arg(port.to_string());
        if let Some(fleet) = fleet {
            cmd.arg("--seed").arg(fleet);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .expect("start tests/emulator/serve");
        let mut emulator = Emulator {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(Some(status)) = emulator.child.try_wait() {
                panic!("emulator exited with {status}: {}", emulator.log_tail());
            }
            if ureq::get(&format!("{}/_emulator/health", emulator.url))
                .call()
                .is_ok()
                && std::fs::read_to_string(&emulator.log)
                    .unwrap_or_default()
                    .contains("listening")
            {
                return emulator;
            }
            assert!(
                Instant::now() < deadline,
                "emulator did not start: {}",
                emulator.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    /// Every call since the last reset, in order.
    pub fn calls(&self) -> Vec<Call> {
        let body: Value = ureq::get(&format!("{}/_emulator/calls", self.url))
            .call()
            .expect("call log")
            .body_mut()
            .read_json()
            .expect("json");
        parse_calls(&body).expect("calls array")
    }

    pub fn mutating_calls(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::is_mutating).collect()
    }

    /// How many calls of `action` the emulator answered (successful or not).
    pub fn count_calls(&self, action: &str) -> usize {
        self.calls().iter().filter(|c| c.action == action).count()
    }

    pub fn reset_calls(&self) {
        ureq::post(&format!("{}/_emulator/calls/reset", self.url))
            .send_empty()
            .expect("reset calls");
    }

    /// Registers roles' trust requirements, revocations and expiries (`/_emulator/roles`).
    pub fn set_roles(&self, roles: Value) {
        ureq::post(&format!("{}/_emulator/roles", self.url))
            .send_json(roles)
            .expect("roles");
    }

    /// SDK clients acting in `account` (the emulator isolates accounts by the assumed role's
    /// account), for seeding another account's fleet.
    pub async fn sdk_config_in(&self, account: &str, region: &str) -> aws_config::SdkConfig {
        let base = self.sdk_config().await;
        let provider = aws_config::sts::AssumeRoleProvider::builder(format!(
            "arn:aws:iam::{account}:role/seeder"
        ))
        .configure(&base)
        .session_name("test-seeder")
        .build()
        .await;
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(provider)
            .load()
            .await
    }

    /// How many requests a latency fault is holding right now.
    pub fn delayed(&self) -> u64 {
        let body: Value = ureq::get(&format!("{}/_emulator/calls", self.url))
            .call()
            .expect("call log")
            .body_mut()
            .read_json()
            .expect("json");
        body["delayed"].as_u64().unwrap_or(0)
    }

    pub fn set_faults(&self, faults: Value) {
        ureq::post(&format!("{}/_emulator/faults", self.url))
            .send_json(faults)
            .expect("faults");
    }

    /// Environment for an AWS client pointed at this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// SDK clients against the emulator, for seeding and drift injection.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_rds::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the pgbaseline binary with `args` against `emulator`.
pub fn pgbaseline(emulator: &Emulator, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgbaseline"));
    cmd.current_dir(repo_root())
        .args(args)
        .env_remove("AWS_PROFILE");
    for (k, v) in emulator.env() {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgbaseline")
}

/// A small multi-threaded runtime for the SDK calls a test makes itself.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The JSON report `pgbaseline check -o json` printed (panics with both streams if it is not).
pub fn report_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout={} stderr={}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A policy manifest `test/<name>`.
pub fn policy_manifest(
    name: &str,
    selector: &str,
    mode: &str,
    posture: &str,
    remediation: &str,
) -> String {
    format!(
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  selector: {selector}\n  mode: {mode}\n  posture:\n{posture}\n  remediation: {remediation}\n"
    )
}

/// Writes `text` to a temporary manifest file and returns its path.
pub fn manifest(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path
}
