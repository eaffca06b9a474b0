//! Manifest parsing and validation with any Content-Type: never panics, and
//! what it accepts is one of the stored types with sizes within int64.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::manifest::{self, Kind};
use oci::media;

const TYPES: [Option<&str>; 8] = [
    None,
    Some(media::OCI_MANIFEST),
    Some(media::OCI_INDEX),
    Some(media::DOCKER_MANIFEST),
    Some(media::DOCKER_MANIFEST_LIST),
    Some("application/json"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|input: (u8, &[u8])| {
    let (which, body) = input;
    let ct = TYPES[usize::from(which) % TYPES.len()];
    if let Ok(m) = manifest::parse(ct, body) {
        assert!(manifest::is_manifest_media_type(&m.media_type));
        match m.kind {
            Kind::Image => assert!(m.config.is_some()),
            Kind::Index => {}
        }
        let all = m
            .config
            .iter()
            .chain(m.subject.iter())
            .chain(m.layers.iter())
            .chain(m.manifests.iter());
        for d in all {
            assert!(d.size <= manifest::MAX_DESCRIPTOR_SIZE);
        }
        let _ = m.referrer_artifact_type();
        let _ = m.required_blobs().count();
    }
});
