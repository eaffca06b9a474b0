//! Signed tokens (JWT, ES256 or RS256): the signing key of the built-in
//! token service, issuing, and validating tokens of this service and of
//! external issuers given by a JWKS.

use super::scope::Scope;
use crate::config::{ExternalIssuer, TokenConfig};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Tolerated clock difference when checking `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Lifetime of refresh tokens.
pub const REFRESH_TTL_SECS: u64 = 7 * 24 * 3600;

/// The claims of a token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub aud: serde_json::Value,
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Scope>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token service's private key.
pub struct SigningKey {
    enc: EncodingKey,
    alg: Algorithm,
    /// The public key, as a JWK with a `kid`.
    jwk: Jwk,
    dec: DecodingKey,
}

fn jwk_from_json(v: serde_json::Value) -> anyhow::Result<(Jwk, DecodingKey)> {
    let jwk: Jwk = serde_json::from_value(v)?;
    let dec = DecodingKey::from_jwk(&jwk)?;
    Ok((jwk, dec))
}

/// A key id: a short SHA-256 fingerprint of the public key.
fn kid(public: &[u8]) -> String {
    B64URL.encode(&Sha256::digest(public)[..15])
}

impl SigningKey {
    /// The key from `key_file`, else the one generated into
    /// `<data_dir>/_auth/token-key.pem` (made on first start).
    pub fn load_or_generate(config: &TokenConfig, data_dir: &Path) -> anyhow::Result<SigningKey> {
        let path = match &config.key_file {
            Some(p) => p.clone(),
            None => {
                let p = data_dir.join("_auth").join("token-key.pem");
                if !p.exists() {
                    generate_key_file(&p)?;
                    tracing::info!(key = %p.display(), "generated the token signing key");
                }
                p
            }
        };
        let text = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read token key {}: {e}", path.display()))?;
        SigningKey::from_pem(&text)
            .map_err(|e| anyhow::anyhow!("token key {}: {e}", path.display()))
    }

    /// A PKCS#8 P-256 key (ES256) or an RSA key, PKCS#8 or PKCS#1 (RS256).
    pub fn from_pem(text: &[u8]) -> anyhow::Result<SigningKey> {
        let p = pem::parse(text).map_err(|e| anyhow::anyhow!("not a PEM key: {e}"))?;
        let der = p.contents();
        match p.tag() {
            "PRIVATE KEY" => {
                if let Ok(kp) = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &SystemRandom::new(),
                ) {
                    return Self::ec(der, kp.public_key().as_ref());
                }
                let kp = RsaKeyPair::from_pkcs8(der)
                    .map_err(|e| anyhow::anyhow!("neither a P-256 nor an RSA PKCS#8 key ({e})"))?;
                Self::rsa(text, &kp)
            }
            "RSA PRIVATE KEY" => {
                let kp =
                    RsaKeyPair::from_der(der).map_err(|e| anyhow::anyhow!("bad RSA key: {e}"))?;
                Self::rsa(text, &kp)
            }
            "EC PRIVATE KEY" => anyhow::bail!(
                "SEC1 EC keys are not supported: convert it with `openssl pkcs8 -topk8 -nocrypt`"
            ),
            other => anyhow::bail!("unsupported PEM block {other:?}: want PRIVATE KEY"),
        }
    }

    fn ec(pkcs8: &[u8], public: &[u8]) -> anyhow::Result<SigningKey> {
        // An uncompressed P-256 point: 0x04 || x || y.
        if public.len() != 65 {
            anyhow::bail!("unexpected P-256 public key length");
        }
        let (jwk, dec) = jwk_from_json(serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "kid": kid(public),
            "x": B64URL.encode(&public[1..33]),
            "y": B64URL.encode(&public[33..65]),
        }))?;
        Ok(SigningKey {
            enc: EncodingKey::from_ec_der(pkcs8),
            alg: Algorithm::ES256,
            jwk,
            dec,
        })
    }

    fn rsa(pem_text: &[u8], kp: &RsaKeyPair) -> anyhow::Result<SigningKey> {
        let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
        let (jwk, dec) = jwk_from_json(serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256",
            "kid": kid(kp.public().as_ref()),
            "n": B64URL.encode(&c.n),
            "e": B64URL.encode(&c.e),
        }))?;
        Ok(SigningKey {
            enc: EncodingKey::from_rsa_pem(pem_text)?,
            alg: Algorithm::RS256,
            jwk,
            dec,
        })
    }

    fn kid(&self) -> Option<&str> {
        self.jwk.common.key_id.as_deref()
    }

    /// The public key set, for `GET /token/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Sign `claims`.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut h = Header::new(self.alg);
        h.kid = self.kid().map(str::to_owned);
        Ok(jsonwebtoken::encode(&h, claims, &self.enc)?)
    }
}

/// Write a new P-256 PKCS#8 key to `path`, mode 0600, crash-safely (temp
/// file, fsync, rename, fsync of the directory).
fn generate_key_file(path: &Path) -> anyhow::Result<()> {
    let doc = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("bad key path {}", path.display()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".token-key.{}.tmp",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        // the directory may be new too
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                std::fs::File::open(parent)?.sync_all()
            }
            _ => Ok(()),
        }
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write token key {}: {e}", path.display())
    })
}

/// Algorithms accepted in tokens: asymmetric only, so a public key can
/// never be used as an HMAC secret.
const ACCEPTED_ALGS: [Algorithm; 8] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn validate(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
) -> Option<Claims> {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Claims>(token, key, &v)
        .ok()
        .map(|d| d.claims)
}

/// The keys of an external issuer, replaced when its JWKS is read again.
pub struct ExternalKeys {
    pub config: ExternalIssuer,
    pub audience: String,
    keys: RwLock<Arc<Vec<(Jwk, DecodingKey)>>>,
}

impl ExternalKeys {
    pub fn new(config: ExternalIssuer, default_audience: &str) -> anyhow::Result<ExternalKeys> {
        if config.issuer.is_empty() {
            anyhow::bail!("auth.external_issuers: issuer is required");
        }
        if config.jwks_file.is_some() == config.jwks_url.is_some() {
            anyhow::bail!(
                "auth.external_issuers {:?}: give exactly one of jwks_file and jwks_url",
                config.issuer
            );
        }
        Ok(ExternalKeys {
            audience: config
                .audience
                .clone()
                .unwrap_or_else(|| default_audience.to_owned()),
            config,
            keys: RwLock::new(Arc::new(Vec::new())),
        })
    }

    /// Replace the keys with those of a JWKS document. Symmetric keys are
    /// refused.
    pub fn set_jwks(&self, text: &[u8]) -> anyhow::Result<usize> {
        let set: JwkSet = serde_json::from_slice(text)
            .map_err(|e| anyhow::anyhow!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                tracing::warn!(issuer = %self.config.issuer, "ignoring a symmetric key in a JWKS");
                continue;
            }
            match DecodingKey::from_jwk(&jwk) {
                Ok(dec) => keys.push((jwk, dec)),
                Err(e) => {
                    tracing::warn!(issuer = %self.config.issuer, error = %e, "ignoring an unusable JWKS key")
                }
            }
        }
        let n = keys.len();
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
        Ok(n)
    }

    /// Read the JWKS file or fetch the URL once.
    pub async fn refresh(&self, http: &reqwest::Client) -> anyhow::Result<usize> {
        let text = if let Some(f) = &self.config.jwks_file {
            tokio::fs::read(f)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read JWKS file {}: {e}", f.display()))?
        } else if let Some(u) = &self.config.jwks_url {
            let resp = http.get(u).send().await?.error_for_status()?;
            resp.bytes().await?.to_vec()
        } else {
            return Ok(0);
        };
        self.set_jwks(&text)
    }

    pub fn source(&self) -> String {
        match (&self.config.jwks_file, &self.config.jwks_url) {
            (Some(f), _) => f.display().to_string(),
            (_, Some(u)) => u.clone(),
            _ => String::new(),
        }
    }

    fn verify(&self, token: &str, header: &Header) -> Option<Claims> {
        let keys = self.keys.read().ok()?.clone();
        keys.iter()
            .filter(|(jwk, _)| header.kid.is_none() || jwk.common.key_id == header.kid)
            .filter(|(jwk, _)| {
                jwk.common
                    .key_algorithm
                    .is_none_or(|a| a.to_string() == format!("{:?}", header.alg))
            })
            .find_map(|(_, dec)| {
                validate(token, dec, header.alg, &self.config.issuer, &self.audience)
            })
    }

    pub fn refresh_every(&self) -> Duration {
        Duration::from_secs(self.config.refresh_secs.max(1))
    }
}

/// Whose token it is.
pub enum Verified {
    /// Issued by this registry's token service.
    Own(Claims),
    External(Claims),
}

/// This registry's token service: its key and the `iss` of its tokens.
pub struct OwnIssuer {
    pub key: SigningKey,
    pub issuer: String,
}

/// Validates tokens: this registry's own, and those of external issuers.
pub struct Verifier {
    pub own: Option<OwnIssuer>,
    pub external: Vec<Arc<ExternalKeys>>,
}

impl Verifier {
    /// Own tokens must have the token service's issuer and `aud` = `audience`.
    pub fn verify(&self, token: &str, audience: &str) -> Option<Verified> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if !ACCEPTED_ALGS.contains(&header.alg) {
            return None;
        }
        if let Some(OwnIssuer { key, issuer }) = &self.own
            && header.alg == key.alg
            && (header.kid.is_none() || header.kid.as_deref() == key.kid())
            && let Some(c) = validate(token, &key.dec, key.alg, issuer, audience)
        {
            return Some(Verified::Own(c));
        }
        self.external
            .iter()
            .find_map(|x| x.verify(token, &header))
            .map(Verified::External)
    }
}

/// Claims for a new token of `sub` with `access`, valid for `ttl` seconds.
pub fn new_claims(issuer: &str, audience: &str, sub: &str, access: Vec<Scope>, ttl: u64) -> Claims {
    let now = unix_now();
    Claims {
        iss: issuer.to_owned(),
        sub: sub.to_owned(),
        aud: serde_json::Value::String(audience.to_owned()),
        exp: now + ttl,
        nbf: now.saturating_sub(1),
        iat: now,
        jti: hex::encode(rand::random::<[u8; 16]>()),
        access,
    }
}

/// The path of the generated key under a data directory.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("_auth").join("token-key.pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::load_or_generate(&TokenConfig::default(), dir.path()).unwrap();
        let path = default_key_path(dir.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // the same key on the next start
        let again = SigningKey::load_or_generate(&TokenConfig::default(), dir.path()).unwrap();
        assert_eq!(k.kid(), again.kid());
        k
    }

    fn verifier(k: SigningKey) -> Verifier {
        Verifier {
            own: Some(OwnIssuer {
                key: k,
                issuer: "iss".into(),
            }),
            external: vec![],
        }
    }

    #[test]
    fn issue_and_validate() {
        let k = key();
        let access = vec![Scope::parse("repository:a/b:pull").unwrap()];
        let good = k
            .sign(&new_claims("iss", "svc", "alice", access.clone(), 60))
            .unwrap();
        let wrong_aud = k
            .sign(&new_claims("iss", "other", "alice", access.clone(), 60))
            .unwrap();
        let wrong_iss = k
            .sign(&new_claims("evil", "svc", "alice", access.clone(), 60))
            .unwrap();
        let mut old = new_claims("iss", "svc", "alice", access.clone(), 60);
        old.exp = unix_now() - 3600;
        let expired = k.sign(&old).unwrap();
        let other_key = key();
        let forged = other_key
            .sign(&new_claims("iss", "svc", "alice", access.clone(), 60))
            .unwrap();
        let v = verifier(k);
        match v.verify(&good, "svc") {
            Some(Verified::Own(c)) => {
                assert_eq!(c.sub, "alice");
                assert_eq!(c.access, access);
            }
            _ => panic!("a good token was refused"),
        }
        for bad in [&wrong_aud, &wrong_iss, &expired, &forged] {
            assert!(v.verify(bad, "svc").is_none());
        }
        assert!(v.verify("not.a.token", "svc").is_none());
        assert!(v.verify("", "svc").is_none());
    }

    #[test]
    fn external_jwks() {
        let issuer_key = key();
        let jwks = serde_json::to_vec(&issuer_key.jwks()).unwrap();
        let ext = ExternalKeys::new(
            ExternalIssuer {
                issuer: "ext".into(),
                jwks_file: Some("unused".into()),
                ..Default::default()
            },
            "svc",
        )
        .unwrap();
        assert_eq!(ext.set_jwks(&jwks).unwrap(), 1);
        let v = Verifier {
            own: Some(OwnIssuer {
                key: key(),
                issuer: "iss".into(),
            }),
            external: vec![Arc::new(ext)],
        };
        let t = issuer_key
            .sign(&new_claims("ext", "svc", "bob", vec![], 60))
            .unwrap();
        assert!(matches!(v.verify(&t, "svc"), Some(Verified::External(c)) if c.sub == "bob"));
        let t = issuer_key
            .sign(&new_claims("iss", "svc", "bob", vec![], 60))
            .unwrap();
        assert!(
            v.verify(&t, "svc").is_none(),
            "an external key cannot sign as us"
        );
        // symmetric keys are ignored
        let hs = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"x"}]}"#;
        let ext = ExternalKeys::new(
            ExternalIssuer {
                issuer: "ext".into(),
                jwks_url: Some("http://127.0.0.1:1/".into()),
                ..Default::default()
            },
            "svc",
        )
        .unwrap();
        assert_eq!(ext.set_jwks(hs).unwrap(), 0);
    }

    #[test]
    fn rsa_pem_keys() {
        // A PKCS#1 RSA key is accepted for RS256 (ring cannot generate one,
        // so this only checks the error path of a garbled key).
        assert!(
            SigningKey::from_pem(
                b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
            )
            .is_err()
        );
        assert!(
            SigningKey::from_pem(
                b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
            )
            .is_err()
        );
        assert!(SigningKey::from_pem(b"garbage").is_err());
    }
}
