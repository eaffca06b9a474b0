//! Harness for the client tests: a spawned `wharf serve` (or Debian's
//! docker-registry) on a free loopback port, and `wharf` client runs in an
//! isolated HOME / XDG environment.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(child: &mut Child, host: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "server exited early with {st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(mut s) = std::net::TcpStream::connect(host) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = [0u8; 12];
                // 401: auth is on
                if s.read_exact(&mut buf).is_ok()
                    && (buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 401"))
                {
                    return;
                }
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "server on {host} not ready: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A registry process on loopback, killed on drop.
pub struct Server {
    pub host: String,
    child: Child,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    /// `wharf serve` with a fresh data directory and extra flags.
    pub fn wharf(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let log = dir.path().join("server.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(WHARF);
        for (k, _) in std::env::vars() {
            if k.starts_with("WHARF_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args(["serve", "--listen", &host, "--no-fsync", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        wait_ready(&mut child, &host, &log);
        Server {
            host,
            child,
            dir,
            log,
        }
    }

    /// Debian's docker-registry (distribution 2.x), or `None` if missing.
    pub fn docker_registry() -> Option<Server> {
        if !Path::new(DOCKER_REGISTRY).exists() {
            eprintln!("skipped: {DOCKER_REGISTRY} is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        wait_ready(&mut child, &host, &log);
        Some(Server {
            host,
            child,
            dir,
            log,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests in wharf's access log with this method whose path contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("method={method} ")) && l.contains(needle))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An isolated user environment for `wharf` client runs.
pub struct Env {
    pub home: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let home = tempfile::tempdir().unwrap();
        for d in ["cache", "run", "work"] {
            std::fs::create_dir_all(home.path().join(d)).unwrap();
        }
        Env { home }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.home.path().join(p)
    }

    pub fn cache(&self) -> PathBuf {
        self.path("cache/wharf")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(WHARF);
        for (k, _) in std::env::vars() {
            if k.starts_with("WHARF_") || k == "DOCKER_CONFIG" || k == "REGISTRY_AUTH_FILE" {
                c.env_remove(k);
            }
        }
        c.env("HOME", self.home.path())
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .current_dir(self.path("work"))
            .stdin(Stdio::null());
        c
    }

    /// A command for `program` (a wrapper such as `sh` or `script` that runs
    /// wharf) with the environment and directory [`cmd`](Self::cmd) gives
    /// wharf; `WHARF` is the binary's path.
    pub fn wrapper(&self, program: &str) -> Command {
        let wharf = self.cmd();
        let mut c = Command::new(program);
        for (k, v) in wharf.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = wharf.get_current_dir() {
            c.current_dir(d);
        }
        c
    }

    /// Run `wharf ARGS` in `cwd` (default: $HOME/work).
    pub fn run_in(&self, cwd: Option<&Path>, args: &[&str]) -> Output {
        let mut c = self.cmd();
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c.args(args).output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_in(None, args)
    }

    /// Run and insist on success; returns stdout.
    pub fn ok(&self, cwd: Option<&Path>, args: &[&str]) -> String {
        let o = self.run_in(cwd, args);
        assert!(
            o.status.success(),
            "wharf {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Run, expect failure with `code`; returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            o.status.code(),
            Some(code),
            "wharf {args:?}: stdout {} stderr {err}",
            String::from_utf8_lossy(&o.stdout)
        );
        err
    }

    pub fn json(&self, cwd: Option<&Path>, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(cwd, &a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// What a file tree holds: path → kind, mode and content (or link target).
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let v = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                format!("dir {mode:o}")
            } else {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "file {mode:o} {} {}",
                    data.len(),
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
                )
            };
            out.insert(rel, v);
        }
    }
    walk(root, root, &mut out);
    out
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A source tree with files, a nested directory, an executable, an empty
/// file, a symlink and binary data, under `root/src`.
pub fn sample_tree(root: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = root.join("src");
    std::fs::create_dir_all(src.join("dir/nested/deeper")).unwrap();
    std::fs::write(src.join("dir/readme.txt"), b"hello wharf\n").unwrap();
    std::fs::write(src.join("dir/nested/data.bin"), bytes(300_000, 7)).unwrap();
    std::fs::write(src.join("dir/nested/deeper/empty"), b"").unwrap();
    std::fs::write(src.join("dir/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        src.join("dir/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("dir/nested/deeper"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::symlink("readme.txt", src.join("dir/link")).unwrap();
    std::fs::write(src.join("single.txt"), b"one file\n").unwrap();
    src
}

pub fn venv_python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/wharf-e2e-venv/bin/python");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: oras-py venv {} is missing", p.display());
        None
    }
}

/// tests/e2e/helpers/oras_e2e.py in the repository.
pub fn oras_helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/helpers/oras_e2e.py")
}
