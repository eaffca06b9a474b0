//! Manifest documents: just enough of the OCI image manifest, OCI image index
//! and Docker schema 2 manifest / manifest list to validate a push, find the
//! blobs and manifests it references, and answer the referrers API.
//!
//! The bytes a client pushed are always stored and served as they are; this
//! module only reads them.

use crate::digest::Digest;
use crate::media;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A content descriptor (OCI image spec, descriptor.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// Whether a manifest lists blobs (image manifest) or other manifests (index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// What Wharf needs to know about a pushed manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The media type the manifest is stored and served with.
    pub media_type: String,
    pub kind: Kind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error(
        "Docker schema 1 manifests are not supported: push with a schema 2 or OCI client (e.g. skopeo copy --format v2s2)"
    )]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("Content-Type {content_type:?} does not match the manifest's mediaType {media_type:?}")]
    MediaTypeMismatch {
        content_type: String,
        media_type: String,
    },
    #[error("an image manifest needs a config descriptor")]
    MissingConfig,
    #[error("an image index needs a manifests list")]
    MissingManifests,
    #[error("descriptor size {0} is out of range (the image spec's sizes are int64)")]
    SizeOutOfRange(u64),
}

/// The largest descriptor size: the image spec defines `size` as an int64.
pub const MAX_DESCRIPTOR_SIZE: u64 = i64::MAX as u64;

/// Is this a manifest media type Wharf stores?
pub fn is_manifest_media_type(mt: &str) -> bool {
    matches!(
        mt,
        media::OCI_MANIFEST
            | media::OCI_INDEX
            | media::DOCKER_MANIFEST
            | media::DOCKER_MANIFEST_LIST
    )
}

fn kind_of(mt: &str) -> Option<Kind> {
    match mt {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => Some(Kind::Image),
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => Some(Kind::Index),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    // Schema 1 markers.
    fs_layers: Option<serde_json::Value>,
}

/// Parse and validate a pushed manifest. `content_type` is the request's
/// `Content-Type` (parameters are ignored).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, ManifestError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    let ct = content_type.map(media::essence).filter(|c| !c.is_empty());
    if matches!(
        ct,
        Some(media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)
    ) || raw.fs_layers.is_some()
        || raw.schema_version == Some(1)
    {
        return Err(ManifestError::Schema1);
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let body_mt = raw.media_type.as_deref().filter(|m| !m.is_empty());
    if let Some(mt) = body_mt
        && !is_manifest_media_type(mt)
    {
        return Err(ManifestError::UnsupportedMediaType(mt.to_owned()));
    }
    let ct_known = ct.filter(|c| is_manifest_media_type(c));
    let media_type = match (ct_known, body_mt) {
        (Some(c), Some(b)) if c != b => {
            return Err(ManifestError::MediaTypeMismatch {
                content_type: c.to_owned(),
                media_type: b.to_owned(),
            });
        }
        (Some(c), _) => c.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) => {
            // A generic or missing Content-Type and no mediaType: infer from the shape,
            // unless the client named a type we do not store.
            if let Some(c) = ct
                && c != media::JSON
                && c != media::OCTET_STREAM
            {
                return Err(ManifestError::UnsupportedMediaType(c.to_owned()));
            }
            if raw.manifests.is_some() {
                media::OCI_INDEX.to_owned()
            } else {
                media::OCI_MANIFEST.to_owned()
            }
        }
    };
    let kind = kind_of(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;
    match kind {
        Kind::Image if raw.config.is_none() => return Err(ManifestError::MissingConfig),
        Kind::Index if raw.manifests.is_none() => return Err(ManifestError::MissingManifests),
        _ => {}
    }
    let descriptors = raw.config.iter().chain(raw.subject.iter());
    let lists = raw.layers.iter().chain(raw.manifests.iter()).flatten();
    if let Some(d) = descriptors
        .chain(lists)
        .find(|d| d.size > MAX_DESCRIPTOR_SIZE)
    {
        return Err(ManifestError::SizeOutOfRange(d.size));
    }
    Ok(Manifest {
        media_type,
        kind,
        config: raw.config,
        layers: raw.layers.unwrap_or_default(),
        manifests: raw.manifests.unwrap_or_default(),
        subject: raw.subject,
        artifact_type: raw.artifact_type.filter(|a| !a.is_empty()),
        annotations: raw.annotations,
    })
}

impl Manifest {
    /// The artifact type a referrers listing shows for this manifest: its
    /// `artifactType`, else (image manifests only) the config media type.
    pub fn referrer_artifact_type(&self) -> Option<String> {
        match (&self.artifact_type, self.kind, &self.config) {
            (Some(a), _, _) => Some(a.clone()),
            (None, Kind::Image, Some(c)) => Some(c.media_type.clone()),
            _ => None,
        }
    }

    /// Blobs this manifest needs in the repository (config and distributable layers).
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|l| {
            !media::is_non_distributable(&l.media_type)
                && l.urls.as_ref().is_none_or(|u| u.is_empty())
        }))
    }
}

/// An image index body, as the referrers API returns it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexDocument<'a> {
    pub schema_version: u32,
    pub media_type: &'a str,
    pub manifests: &'a [Descriptor],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn oci_manifest_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/x.sbom","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"application/x.l","digest":"{}","size":3}}],"subject":{{"mediaType":"{}","digest":"{}","size":9}},"annotations":{{"a":"b"}}}}"#,
            media::OCI_MANIFEST,
            media::OCI_EMPTY,
            d(1),
            d(2),
            media::OCI_MANIFEST,
            d(3)
        );
        let m = parse(Some(media::OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(m.subject.unwrap().digest.to_string(), d(3));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sbom"));
    }

    #[test]
    fn artifact_type_falls_back_to_config() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/x.cfg","digest":"{}","size":2}},"layers":[]}}"#,
            d(1)
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/x.cfg")
        );
    }

    #[test]
    fn index_and_docker_list() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media::DOCKER_MANIFEST_LIST,
            media::DOCKER_MANIFEST,
            d(4)
        );
        let m = parse(Some(media::DOCKER_MANIFEST_LIST), body.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(m.referrer_artifact_type(), None);
    }

    #[test]
    fn rejects() {
        assert!(matches!(parse(None, b"{"), Err(ManifestError::Json(_))));
        assert!(matches!(parse(None, b"[]"), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(None, b"{\"schemaVersion\":1,\"fsLayers\":[]}"),
            Err(ManifestError::Schema1)
        ));
        assert!(matches!(
            parse(None, b"{\"schemaVersion\":3}"),
            Err(ManifestError::SchemaVersion)
        ));
        assert!(matches!(
            parse(Some(media::OCI_MANIFEST), b"{\"schemaVersion\":2}"),
            Err(ManifestError::MissingConfig)
        ));
        assert!(matches!(
            parse(
                Some(media::OCI_INDEX),
                format!(
                    "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"manifests\":[]}}",
                    media::OCI_MANIFEST
                )
                .as_bytes()
            ),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            parse(
                Some("text/plain"),
                b"{\"schemaVersion\":2,\"manifests\":[]}"
            ),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        // A descriptor with a bad digest is invalid JSON for our purposes.
        assert!(parse(
            None,
            b"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:zz\",\"size\":1}}"
        )
        .is_err());
        // Sizes past int64 (the image spec's type), up to u64::MAX.
        for size in [super::MAX_DESCRIPTOR_SIZE + 1, u64::MAX] {
            let body = format!(
                "{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"x\",\"digest\":\"{}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"x\",\"digest\":\"{}\",\"size\":{size}}}]}}",
                d(1),
                d(2)
            );
            assert_eq!(
                parse(None, body.as_bytes()),
                Err(ManifestError::SizeOutOfRange(size))
            );
        }
        // Past u64: not a size at all.
        assert!(matches!(
            parse(
                None,
                format!("{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"x\",\"digest\":\"{}\",\"size\":18446744073709551616}}}}", d(1)).as_bytes()
            ),
            Err(ManifestError::Json(_))
        ));
        let max_ok = format!(
            "{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"x\",\"digest\":\"{}\",\"size\":{}}}}}",
            d(1),
            super::MAX_DESCRIPTOR_SIZE
        );
        assert!(parse(None, max_ok.as_bytes()).is_ok());
        // Negative size.
        assert!(parse(
            None,
            format!("{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"x\",\"digest\":\"{}\",\"size\":-1}}}}", d(1)).as_bytes()
        )
        .is_err());
    }
}
