//! Test harness for a real control plane: etcd + kube-apiserver from `scripts/controlplane`,
//! kubectl against it, and a kube client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::repo_root;

/// A running etcd + kube-apiserver (see scripts/controlplane/README.md).
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// Stop on drop (false for the shared one, which stops itself when the test process exits).
    owned: bool,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

fn parse_env(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("env")).expect("control plane env file");
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.trim_matches(|c| c == '\'' || c == '"').to_string(),
            )
        })
        .collect()
}

impl ControlPlane {
    /// Starts a fresh control plane in a new temporary directory. It stops itself when this
    /// process exits, even if the test panics before `Drop`.
    pub fn start() -> ControlPlane {
        let dir = std::env::temp_dir().join(format!(
            "pgbaseline-cp-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("control plane dir");
        let started = Instant::now();
        let out = Command::new(repo_root().join("scripts/controlplane/start"))
            .arg(&dir)
            .env("CONTROLPLANE_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/controlplane/start");
        assert!(
            out.status.success(),
            "scripts/controlplane/start failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = parse_env(&dir);
        let cp = ControlPlane {
            kubeconfig: PathBuf::from(&env["KUBECONFIG"]),
            kubectl: PathBuf::from(&env["KUBECTL"]),
            dir,
            owned: true,
        };
        eprintln!(
            "control plane up in {:.1}s at {}",
            started.elapsed().as_secs_f64(),
            env["APISERVER_URL"]
        );
        cp
    }

    /// One control plane shared by every test of this process (tests use fresh namespaces).
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| {
            let mut cp = ControlPlane::start();
            cp.owned = false;
            cp.install_crd();
            cp
        })
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout; panics with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Installs the CRDs from `crds/` and waits until they are established.
    pub fn install_crd(&self) {
        for name in [
            "databasesecuritypolicies.pgbaseline.io",
            "awsaccounts.pgbaseline.io",
        ] {
            let crd = repo_root().join(format!("crds/{name}.yaml"));
            self.kubectl_ok(
                &[
                    "apply",
                    "--server-side",
                    "-f",
                    crd.to_str().expect("utf-8 path"),
                ],
                None,
            );
            self.wait_established(name);
        }
    }

    /// Waits until the CRD `name` is established. `kubectl wait` fails at once ("accessor
    /// error") on a CRD whose status has no conditions yet, right after it is applied: first
    /// wait for the apiserver to give it some.
    pub fn wait_established(&self, name: &str) {
        let crd = format!("crd/{name}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self
            .kubectl(&["get", &crd, "-o", "jsonpath={.status.conditions}"], None)
            .stdout
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{crd} has no status after 60s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.kubectl_ok(
            &["wait", "--for=condition=Established", "--timeout=60s", &crd],
            None,
        );
    }

    /// Creates a fresh namespace `prefix-N` (namespaces are never reused: there is no
    /// controller-manager to finish deleting them).
    pub fn namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        );
        self.kubectl_ok(&["create", "namespace", &name], None);
        name
    }

    /// Stops kube-apiserver, keeps it down `downtime`, and starts it again (same port, etcd).
    pub fn restart_apiserver(&self, downtime: Duration) {
        let out = Command::new(repo_root().join("scripts/controlplane/restart-apiserver"))
            .arg(&self.dir)
            .env("DOWNTIME", downtime.as_secs().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run restart-apiserver");
        assert!(
            out.status.success(),
            "restart-apiserver failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A kube client for this control plane (admin).
    pub async fn client(&self) -> kube::Client {
        pgbaseline::controller::install_crypto_provider();
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(repo_root().join("scripts/controlplane/stop"))
                .arg("--purge")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .output();
        }
    }
}

impl ControlPlane {
    /// The apiserver's URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        parse_env(&self.dir)["APISERVER_URL"].clone()
    }

    /// Sends `body` exactly as given (`Content-Type: application/yaml`) to `path_and_query` as
    /// the admin, and returns the HTTP status and the JSON answer (an object or a `Status`).
    /// kubectl converts YAML to JSON itself; this lets the apiserver read the YAML.
    pub fn send_yaml(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let pki = self.dir.join("pki");
        let arg = |name: &str| pki.join(name).to_str().expect("utf-8 path").to_string();
        let mut child = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-X", method])
            .args([
                "--cacert",
                &arg("ca.crt"),
                "--cert",
                &arg("admin.crt"),
                "--key",
                &arg("admin.key"),
            ])
            .args([
                "-H",
                "Content-Type: application/yaml",
                "-H",
                "Accept: application/json",
            ])
            .args(["--data-binary", "@-", "-w", "\n%{http_code}"])
            .arg(format!("{}{path_and_query}", self.url()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run curl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body)
            .expect("write request body");
        let out = child.wait_with_output().expect("curl output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (json, status) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let status: u16 = status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl gave no HTTP status: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let json =
            serde_json::from_str(json).unwrap_or(serde_json::Value::String(json.to_string()));
        (status, json)
    }
}
