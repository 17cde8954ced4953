//! A real PostgreSQL 15 + pgaudit for the in-database tests, started by
//! `scripts/postgres/start` into a temporary directory and stopped by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo_root;

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ca: PathBuf,
    /// Plaintext clients this test keeps connected (killed on drop).
    clients: Vec<Child>,
}

impl Postgres {
    /// Starts a server; with `seed`, loads one violation of every in-database control.
    pub fn start(seed: bool) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("pgbaseline-pg-")
            .tempdir()
            .expect("tempdir");
        let out = Command::new(repo_root().join("scripts/postgres/start"))
            .arg(dir.path())
            .output()
            .expect("run scripts/postgres/start");
        assert!(
            out.status.success(),
            "scripts/postgres/start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("env")).expect("env file");
        let value = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} in env"))
                .to_string()
        };
        let pg = Postgres {
            port: value("PGPORT").parse().expect("port"),
            ca: PathBuf::from(value("CA")),
            dir,
            clients: Vec::new(),
        };
        if seed {
            let out = Command::new(repo_root().join("scripts/postgres/seed"))
                .arg(pg.dir.path())
                .output()
                .expect("seed");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pg
    }

    /// Runs SQL as the superuser over the Unix socket; rows as `a|b` lines.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Everything the in-database controls read or change, as text: equal before and after a
    /// run means the run wrote nothing these controls could see.
    pub fn catalogue_snapshot(&self) -> String {
        let mut out = String::new();
        let server = [
            "SELECT rolname, rolsuper, rolcanlogin, rolcreaterole, coalesce(rolpassword, '') FROM pg_authid ORDER BY 1",
            "SELECT roleid::regrole, member::regrole FROM pg_auth_members ORDER BY 1, 2",
            "SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting ORDER BY 1, 2",
            "SELECT datname, datacl FROM pg_database ORDER BY 1",
        ];
        for q in server {
            out.push_str(&self.psql("postgres", q));
            out.push('\n');
        }
        for db in ["postgres", "app", "reports"] {
            for q in [
                "SELECT nspname, nspowner::regrole, nspacl FROM pg_namespace ORDER BY 1",
                "SELECT extname, extversion FROM pg_extension ORDER BY 1",
                "SELECT oid::regprocedure, prosecdef, proconfig FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
                "SELECT evtname, evtenabled FROM pg_event_trigger ORDER BY 1",
                "SELECT count(*) FROM pg_class",
            ] {
                out.push_str(&format!("{db}: {}\n", self.psql(db, q)));
            }
        }
        out
    }

    /// Keeps a client connected without TLS (role plaintext_client) until the test ends, and
    /// waits until the server lists it.
    pub fn connect_plaintext_client(&mut self) {
        let child = Command::new("psql")
            .args(["-X", "-q", "-c", "SELECT pg_sleep(600)"])
            .arg(format!(
                "host=127.0.0.1 port={} user=plaintext_client dbname=app sslmode=disable application_name=legacy-app",
                self.port
            ))
            .env("PGPASSWORD", "plaintext-password")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("plaintext psql");
        self.clients.push(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'plaintext_client' AND NOT s.ssl",
        ) != "1"
        {
            assert!(Instant::now() < deadline, "plaintext client did not connect");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A directory of Secrets for `check --db-secrets-dir`: DIR/<name>/{username,password}.
    pub fn secrets_dir(&self, secrets: &[(&str, &str, &str)]) -> PathBuf {
        let root = self.dir.path().join("secrets");
        for (name, user, password) in secrets {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).expect("secret dir");
            std::fs::write(dir.join("username"), user).expect("username");
            std::fs::write(dir.join("password"), password).expect("password");
        }
        root
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(repo_root().join("scripts/postgres/stop"))
            .arg(self.dir.path())
            .status();
    }
}
