//! The operator as a child process (`pgbaseline run`) against a control plane and the emulator,
//! and waiting on the objects it writes.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Api;
use serde::de::DeserializeOwned;

use super::controlplane::ControlPlane;
use super::{Emulator, free_port, repo_root};

pub struct Operator {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(cp: &ControlPlane, emulator: &Emulator, args: &[&str]) -> Operator {
        Operator::start_with_env(cp, emulator, args, &[])
    }

    /// Like [`Operator::start`], with environment variables set (`Some`) or removed (`None`)
    /// over the emulator's.
    pub fn start_with_env(
        cp: &ControlPlane,
        emulator: &Emulator,
        args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Operator {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("pgbaseline-operator-{port}.log"));
        let out = std::fs::File::create(&log).expect("operator log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgbaseline"));
        cmd.current_dir(repo_root())
            .arg("run")
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info,pgbaseline=debug,aws_config=error")
            .env_remove("AWS_PROFILE")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out);
        for (k, v) in emulator.env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd.spawn().expect("start pgbaseline run");
        let mut op = Operator {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = op.child.try_wait() {
                panic!("operator exited with {status}:\n{}", op.log_tail());
            }
            if ureq::get(&format!("{}/healthz", op.base)).call().is_ok() {
                return op;
            }
            assert!(
                Instant::now() < deadline,
                "operator did not start:\n{}",
                op.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut resp = ureq::get(&format!("{}{path}", self.base))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.body_mut().read_to_string().ok()?))
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Sum of the samples whose line starts with `prefix` (a name, optionally with labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        sum_metric(&self.metrics(), prefix)
    }

    /// Waits until the metric `prefix` reaches at least `value`; panics after `timeout` with
    /// the operator's log.
    pub async fn wait_metric_at_least(
        &self,
        prefix: &str,
        value: f64,
        timeout: Duration,
        what: &str,
    ) {
        let deadline = Instant::now() + timeout;
        while self.metric(prefix) < value {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?}: {what} ({prefix} = {})\n{}",
                self.metric(prefix),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: the process dies without releasing anything (a crashed replica).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of the samples whose line starts with `prefix` (a name, optionally with labels).
pub fn sum_metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// Polls `name` until `pred` holds; panics after `timeout` with the last object and the
/// operator's log.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    op: &Operator,
    pred: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(p) = api.get(name).await {
            if pred(&p) {
                return p;
            }
            last = Some(p);
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {name}: {what}\nlast: {}\noperator log:\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                op.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
