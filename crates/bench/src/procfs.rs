//! The server's memory and CPU from /proc, sampled by a background thread
//! (a thread, not a task, so a saturated runtime cannot delay it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// (VmRSS, VmHWM) of `pid` in KiB.
pub fn mem_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User and system CPU seconds of a process ("self" or a pid).
pub fn cpu_secs(pid: &str) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, the 12th and 13th after ")".
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = clk_tck();
    Some((
        f.get(11)?.parse::<f64>().ok()? / t,
        f.get(12)?.parse::<f64>().ok()? / t,
    ))
}

#[derive(Clone, Copy, Default)]
pub struct CpuSnap {
    pub server_user: f64,
    pub server_sys: f64,
    pub client: f64,
    /// The storage's processes (the S3 cluster's nodes), all together.
    pub storage: f64,
}

impl CpuSnap {
    /// CPU used so far by the server `pid`, this process, and the storage
    /// processes `storage` (empty: none watched).
    pub fn now(pid: Option<u32>, storage: &[u32]) -> CpuSnap {
        let (su, ss) = pid
            .and_then(|p| cpu_secs(&p.to_string()))
            .unwrap_or_default();
        let (cu, cs) = cpu_secs("self").unwrap_or_default();
        let st = storage
            .iter()
            .filter_map(|p| cpu_secs(&p.to_string()))
            .map(|(u, s)| u + s)
            .sum();
        CpuSnap {
            server_user: su,
            server_sys: ss,
            client: cu + cs,
            storage: st,
        }
    }

    /// JSON fields for the CPU used since `self`, over `secs` of wall time.
    pub fn since(&self, pid: Option<u32>, storage: &[u32], secs: f64) -> serde_json::Value {
        let n = CpuSnap::now(pid, storage);
        let su = n.server_user - self.server_user;
        let ss = n.server_sys - self.server_sys;
        let c = n.client - self.client;
        let mut v = serde_json::json!({
            "server_cpu_user_s": round3(su),
            "server_cpu_sys_s": round3(ss),
            "server_cpu_pct": round1(100.0 * (su + ss) / secs.max(1e-9)),
            "client_cpu_pct": round1(100.0 * c / secs.max(1e-9)),
        });
        if !storage.is_empty() {
            let st = n.storage - self.storage;
            v["storage_cpu_s"] = serde_json::json!(round3(st));
            v["storage_cpu_pct"] = serde_json::json!(round1(100.0 * st / secs.max(1e-9)));
        }
        v
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Default)]
struct Inner {
    stop: AtomicBool,
    gone: AtomicBool,
    last_kib: AtomicU64,
    max_kib: AtomicU64,
    window_max_kib: AtomicU64,
    scenario_max_kib: AtomicU64,
    hwm_kib: AtomicU64,
    samples: AtomicU64,
}

/// Samples VmRSS / VmHWM of the server every 100 ms.
pub struct Sampler {
    pid: u32,
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let inner = Arc::new(Inner::default());
        let i = inner.clone();
        let thread = std::thread::spawn(move || {
            while !i.stop.load(Ordering::Relaxed) {
                match mem_kib(pid) {
                    Some((rss, hwm)) => {
                        i.last_kib.store(rss, Ordering::Relaxed);
                        i.max_kib.fetch_max(rss, Ordering::Relaxed);
                        i.window_max_kib.fetch_max(rss, Ordering::Relaxed);
                        i.scenario_max_kib.fetch_max(rss, Ordering::Relaxed);
                        i.hwm_kib.fetch_max(hwm, Ordering::Relaxed);
                        i.samples.fetch_add(1, Ordering::Relaxed);
                    }
                    None => i.gone.store(true, Ordering::Relaxed),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            pid,
            inner,
            thread: Some(thread),
        }
    }

    /// RSS now (read directly, not the last sample).
    pub fn rss_now_kib(&self) -> u64 {
        mem_kib(self.pid).map_or(0, |m| m.0)
    }

    /// Start a new window; returns the RSS now.
    pub fn window_reset(&self) -> u64 {
        let now = self.rss_now_kib();
        self.inner.window_max_kib.store(now, Ordering::Relaxed);
        now
    }

    pub fn window_max_kib(&self) -> u64 {
        self.inner
            .window_max_kib
            .load(Ordering::Relaxed)
            .max(self.rss_now_kib())
    }

    /// The largest RSS since the last call (the scenario just finished).
    pub fn take_scenario_max_kib(&self) -> u64 {
        let now = self.rss_now_kib();
        self.inner
            .scenario_max_kib
            .swap(now, Ordering::Relaxed)
            .max(now)
    }

    /// (max sampled VmRSS, max VmHWM, samples, server gone?)
    pub fn totals(&self) -> (u64, u64, u64, bool) {
        let (rss, hwm) = mem_kib(self.pid).unwrap_or_default();
        (
            self.inner.max_kib.load(Ordering::Relaxed).max(rss),
            self.inner.hwm_kib.load(Ordering::Relaxed).max(hwm),
            self.inner.samples.load(Ordering::Relaxed),
            self.inner.gone.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// KiB to MB (10^6 bytes).
pub fn mb(kib: u64) -> f64 {
    round1(kib as f64 * 1024.0 / 1e6)
}
