//! The store side of the cache: a cached manifest without its blobs, and
//! what the garbage collector does with it. (The HTTP behaviour, against
//! real upstreams, is in crates/wharf/tests/mirror.rs.)

use bytes::Bytes;
use oci::{Digest, ErrorCode, Reference, RepoName, Tag};
use std::sync::Arc;
use std::time::Duration;
use store::fs::FsBackend;
use store::{Registry, RegistryConfig};

fn name(s: &str) -> RepoName {
    RepoName::parse(s, 255).unwrap()
}

fn open(dir: &std::path::Path) -> Registry {
    Registry::new(
        Arc::new(FsBackend::open(dir, true).unwrap()),
        RegistryConfig::default(),
    )
}

fn image(config: &[u8], layer: &[u8]) -> Bytes {
    let d = |b: &[u8]| Digest::sha256_of(b).to_string();
    Bytes::from(
        serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(layer), "size": layer.len()}],
        }))
        .unwrap(),
    )
}

fn stream(data: Vec<u8>) -> store::ByteStream {
    Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from(data))]))
}

#[tokio::test]
async fn a_cached_manifest_needs_no_blobs_and_keeps_every_other_rule() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let repo = name("hub/library/app");
    let body = image(b"{}", b"layer");
    let digest = Digest::sha256_of(&body);
    let tag = Reference::Tag(Tag::parse("1.0").unwrap());
    let mt = Some(oci::media::OCI_MANIFEST);

    // A push needs the blobs; the cache does not.
    let e = reg
        .manifest_put(&repo, &tag, mt, body.clone(), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, store::Error::Registry(ref r) if r.code == ErrorCode::ManifestBlobUnknown));
    let put = reg
        .manifest_put_cached(&repo, &tag, mt, body.clone())
        .await
        .unwrap();
    assert_eq!(put.digest, digest);
    let m = reg.manifest_get(&repo, &tag).await.unwrap();
    assert_eq!((m.digest, m.body), (digest.clone(), body.clone()));
    let link = reg
        .backend()
        .read(&store::keys::repo_manifest(&repo, &digest))
        .await
        .unwrap()
        .unwrap();
    let link: serde_json::Value = serde_json::from_slice(&link).unwrap();
    assert_eq!(link["cached"], true);

    // The digest is checked, and a body that is no manifest refused.
    let wrong = Reference::Digest(Digest::sha256_of(b"other"));
    let e = reg
        .manifest_put_cached(&repo, &wrong, mt, body.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, store::Error::Registry(ref r) if r.code == ErrorCode::DigestInvalid));
    let e = reg
        .manifest_put_cached(&repo, &tag, mt, Bytes::from_static(b"not json"))
        .await
        .unwrap_err();
    assert!(matches!(e, store::Error::Registry(ref r) if r.code == ErrorCode::ManifestInvalid));

    // Immutable tags hold for cached tags too.
    let dir2 = tempfile::tempdir().unwrap();
    let strict = Registry::new(
        Arc::new(FsBackend::open(dir2.path(), true).unwrap()),
        RegistryConfig {
            delete_enabled: true,
            immutable_tags: vec![store::ImmutableTags {
                name: "test".into(),
                repos: vec![oci::pattern::Pattern::parse("**").unwrap()],
                tags: vec![oci::pattern::Pattern::parse("*").unwrap()],
            }],
            ..RegistryConfig::default()
        },
    );
    strict
        .manifest_put_cached(&repo, &tag, mt, body.clone())
        .await
        .unwrap();
    let e = strict
        .manifest_put_cached(&repo, &tag, mt, image(b"{ }", b"layer"))
        .await
        .unwrap_err();
    assert!(matches!(e, store::Error::Registry(ref r) if r.code == ErrorCode::Denied));
}

#[tokio::test]
async fn the_collector_keeps_a_cached_image_and_what_it_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let repo = name("hub/library/app");
    let (config, layer) = (b"{\"a\":1}".to_vec(), vec![7u8; 300_000]);
    let body = image(&config, &layer);
    let tag = Reference::Tag(Tag::parse("latest").unwrap());
    reg.manifest_put_cached(&repo, &tag, Some(oci::media::OCI_MANIFEST), body.clone())
        .await
        .unwrap();
    // One of its blobs fetched so far, as a client's pull would.
    let layer_d = Digest::sha256_of(&layer);
    reg.upload_whole(&repo, stream(layer.clone()), &layer_d)
        .await
        .unwrap();
    // And content nothing names, which goes.
    let junk = Digest::sha256_of(b"junk");
    reg.upload_whole(&repo, stream(b"junk".to_vec()), &junk)
        .await
        .unwrap();
    let opts = store::gc::GcOptions {
        grace: Duration::ZERO,
        ..Default::default()
    };
    let report = store::gc::collect(&reg, &opts).await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    let m = reg.manifest_get(&repo, &tag).await.unwrap();
    assert_eq!(m.body, body);
    assert_eq!(reg.blob_size(&repo, &layer_d).await.unwrap(), Some(300_000));
    assert_eq!(reg.blob_size(&repo, &junk).await.unwrap(), None);
    // The blob not fetched yet is simply not there (the cache fetches it
    // when asked).
    assert_eq!(
        reg.blob_size(&repo, &Digest::sha256_of(&config))
            .await
            .unwrap(),
        None
    );
}

#[test]
fn ns_selects_the_upstream_by_registry_host() {
    let cfg = |name: &str, url: &str, prefix: &str| -> crate::UpstreamConfig {
        toml::from_str(&format!(
            "name = \"{name}\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n"
        ))
        .unwrap()
    };
    let specs = crate::config::check(
        &[
            cfg("hub", "https://registry-1.docker.io", "dockerhub"),
            cfg("ghcr", "https://ghcr.io", "mirrors/ghcr"),
            cfg("hub2", "https://index.docker.io", "dockerhub2"),
        ],
        255,
    )
    .unwrap();
    let local = |ns: &str, n: &str| crate::local_for_ns(specs.iter(), ns, &name(n), 255);
    assert_eq!(
        local("docker.io", "library/alpine").unwrap().as_str(),
        "dockerhub/library/alpine",
        "the first upstream of the registry"
    );
    assert_eq!(
        local("registry-1.docker.io", "grafana/grafana")
            .unwrap()
            .as_str(),
        "dockerhub/grafana/grafana"
    );
    assert_eq!(
        local("ghcr.io", "owner/app").unwrap().as_str(),
        "mirrors/ghcr/owner/app"
    );
    // No upstream of that host: 404 NAME_UNKNOWN naming it.
    for ns in ["quay.io", "", "ghcr.io:443x", "docker.io/x"] {
        let e = local(ns, "owner/app").unwrap_err();
        assert_eq!((e.code, e.status), (ErrorCode::NameUnknown, 404), "{ns:?}");
        assert!(e.message.contains("owner/app") && e.message.contains("not mirrored"));
    }
    // No cache configured at all: the same answer.
    let e =
        crate::local_for_ns(std::iter::empty(), "docker.io", &name("library/x"), 255).unwrap_err();
    assert_eq!(e.code, ErrorCode::NameUnknown);
    // Too long once prefixed: 400 NAME_INVALID.
    let long = "a".repeat(250);
    let e = crate::local_for_ns(specs.iter(), "docker.io", &name(&long), 255).unwrap_err();
    assert_eq!((e.code, e.status), (ErrorCode::NameInvalid, 400));
}
