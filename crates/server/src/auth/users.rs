//! Users: an htpasswd file (bcrypt, as `htpasswd -B` writes it) and users
//! declared in the config, and password verification.
//!
//! bcrypt is slow on purpose, so verification runs on the blocking pool and
//! a successful one is remembered for a short while (a SHA-256 of the user
//! name and password, compared in constant time), so that a push with Basic
//! credentials does not pay for a bcrypt per request. An unknown user still
//! costs one bcrypt, against a dummy hash: timing does not tell which users
//! exist.

use super::policy::Principal;
use crate::config::UserConfig;
use dashmap::DashMap;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a successful verification is remembered.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// At most this many remembered verifications (one per user).
const CACHE_MAX: usize = 4096;

#[derive(Clone, Debug)]
struct User {
    hash: String,
    groups: Vec<String>,
}

pub struct Users {
    by_name: HashMap<String, User>,
    /// user name → (SHA-256 of name and password, when it was verified).
    cache: DashMap<String, ([u8; 32], Instant)>,
    dummy_hash: String,
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

/// Parse an htpasswd file into (user, bcrypt hash) pairs. Blank lines and
/// `#` comments are skipped; a hash that is not bcrypt is an error (Wharf
/// does not accept the weaker MD5, SHA-1 and crypt hashes).
pub fn parse_htpasswd(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {}: expected user:hash", i + 1));
        };
        if user.is_empty() {
            return Err(format!("line {}: empty user name", i + 1));
        }
        if !is_bcrypt(hash) {
            return Err(format!(
                "line {}: the hash of user {user:?} is not bcrypt; create it with `htpasswd -B` or `wharf passwd`",
                i + 1
            ));
        }
        out.push((user.to_owned(), hash.to_owned()));
    }
    Ok(out)
}

fn fingerprint(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl Users {
    /// Users from an htpasswd file and the config; the config wins on a
    /// name given in both.
    pub fn load(htpasswd: Option<&Path>, declared: &[UserConfig]) -> anyhow::Result<Users> {
        let mut by_name = HashMap::new();
        if let Some(path) = htpasswd {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read htpasswd file {}: {e}", path.display())
            })?;
            for (name, hash) in parse_htpasswd(&text)
                .map_err(|e| anyhow::anyhow!("htpasswd file {}: {e}", path.display()))?
            {
                by_name.insert(
                    name,
                    User {
                        hash,
                        groups: Vec::new(),
                    },
                );
            }
        }
        for u in declared {
            if u.name.is_empty() || u.name.contains(':') {
                anyhow::bail!("auth.users: invalid user name {:?}", u.name);
            }
            if !is_bcrypt(&u.password_hash) {
                anyhow::bail!(
                    "auth.users: the password_hash of {:?} is not a bcrypt hash (make one with `wharf passwd`)",
                    u.name
                );
            }
            by_name.insert(
                u.name.clone(),
                User {
                    hash: u.password_hash.clone(),
                    groups: u.groups.clone(),
                },
            );
        }
        // The dummy costs what a real hash costs.
        let cost = by_name
            .values()
            .find_map(|u| u.hash.get(4..6).and_then(|c| c.parse::<u32>().ok()))
            .unwrap_or(bcrypt::DEFAULT_COST)
            .clamp(4, 31);
        let dummy_hash = bcrypt::hash(rand::random::<[u8; 16]>(), cost)
            .map_err(|e| anyhow::anyhow!("bcrypt: {e}"))?;
        Ok(Users {
            by_name,
            cache: DashMap::new(),
            dummy_hash,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The principal of a known user (for mTLS names and refresh tokens).
    pub fn principal(&self, name: &str) -> Option<Principal> {
        self.by_name
            .get(name)
            .map(|u| Principal::user(name, &u.groups))
    }

    /// The groups of a user, if declared (mTLS names need not be users).
    pub fn groups(&self, name: &str) -> Vec<String> {
        self.by_name
            .get(name)
            .map(|u| u.groups.clone())
            .unwrap_or_default()
    }

    /// Check a user name and password; the user's principal if they match.
    pub async fn verify(self: &Arc<Self>, user: &str, password: &str) -> Option<Principal> {
        let fp = fingerprint(user, password);
        if let Some(entry) = self.cache.get(user) {
            let (cached, at) = *entry;
            drop(entry);
            if at.elapsed() < CACHE_TTL && bool::from(cached.ct_eq(&fp)) {
                return self.principal(user);
            }
        }
        let known = self.by_name.get(user);
        let hash = known.map_or(self.dummy_hash.clone(), |u| u.hash.clone());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if !ok || known.is_none() {
            return None;
        }
        self.remember(user, fp);
        self.principal(user)
    }

    fn remember(&self, user: &str, fp: [u8; 32]) {
        if self.cache.len() >= CACHE_MAX {
            self.cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if self.cache.len() >= CACHE_MAX {
                self.cache.clear();
            }
        }
        self.cache.insert(user.to_owned(), (fp, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd() {
        let h = "$2y$05$abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyzABCDE";
        let text = format!("# comment\n\nalice:{h}\n  bob:{h}  \n");
        let users = parse_htpasswd(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].0, "alice");
        assert_eq!(users[1], ("bob".to_owned(), h.to_owned()));
        let e = parse_htpasswd("carol:$apr1$xyz$abc\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("not bcrypt"), "{e}");
        assert!(parse_htpasswd("nocolon\n").is_err());
        assert!(parse_htpasswd(":$2y$05$x\n").is_err());
    }

    #[tokio::test]
    async fn verify_and_cache() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Arc::new(
            Users::load(
                None,
                &[UserConfig {
                    name: "alice".into(),
                    password_hash: hash,
                    groups: vec!["devs".into()],
                }],
            )
            .unwrap(),
        );
        assert_eq!(
            users.verify("alice", "s3cret").await,
            Some(Principal::user("alice", &["devs".into()]))
        );
        // again, from the cache
        assert!(users.verify("alice", "s3cret").await.is_some());
        assert!(users.verify("alice", "wrong").await.is_none());
        assert!(users.verify("nobody", "s3cret").await.is_none());
        assert!(users.verify("alice", "").await.is_none());
        assert!(
            Users::load(
                None,
                &[UserConfig {
                    name: "x".into(),
                    password_hash: "plain".into(),
                    groups: vec![],
                }]
            )
            .is_err()
        );
    }
}
