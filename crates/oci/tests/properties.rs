//! Property tests: the parsers take any input without panicking, accepted
//! names are always safe as storage keys, and builders round-trip.

use oci::path::{self, Route};
use oci::{Digest, Reference, RepoName, Tag};
use proptest::prelude::*;

fn name_strategy() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,5}(([._]|__|-{1,2})[a-z0-9]{1,5}){0,2}";
    prop::collection::vec(component, 1..8).prop_map(|c| c.join("/"))
}

proptest! {
    #[test]
    fn path_parse_never_panics(s in ".{0,200}") {
        let _ = path::parse(&s);
        let _ = path::parse(&format!("/v2/{s}"));
    }

    #[test]
    fn digest_parse_never_panics(s in ".{0,200}") {
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert_eq!(d.to_string(), s);
        }
    }

    #[test]
    fn reference_parse_never_panics(s in ".{0,200}") {
        let _ = Reference::parse(&s);
    }

    #[test]
    fn accepted_names_are_safe_keys(s in "[a-z0-9._/-]{0,40}|.{0,40}") {
        if let Ok(n) = RepoName::parse(&s, 255) {
            let n = n.as_str();
            prop_assert!(!n.starts_with('/') && !n.ends_with('/'));
            for c in n.split('/') {
                prop_assert!(!c.is_empty());
                prop_assert!(!c.starts_with('.') && !c.starts_with('_') && !c.starts_with('-'));
                prop_assert!(c != ".." && c != ".");
            }
        }
    }

    #[test]
    fn generated_names_are_valid_and_route(name in name_strategy(), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
        prop_assert!(RepoName::parse(&name, 255).is_ok());
        prop_assert!(Tag::parse(&tag).is_ok());
        let m = path::manifest_path(&name, &tag);
        prop_assert_eq!(path::parse(&m), Some(Route::Manifest { name: &name, reference: &tag }));
        let t = path::tags_path(&name);
        prop_assert_eq!(path::parse(&t), Some(Route::Tags { name: &name }));
        let u = path::uploads_path(&name);
        prop_assert_eq!(path::parse(&u), Some(Route::Uploads { name: &name }));
        let d = Digest::sha256_of(tag.as_bytes()).to_string();
        let b = path::blob_path(&name, &d);
        prop_assert_eq!(path::parse(&b), Some(Route::Blob { name: &name, digest: &d }));
        let r = path::referrers_path(&name, &d);
        prop_assert_eq!(path::parse(&r), Some(Route::Referrers { name: &name, digest: &d }));
    }

    #[test]
    fn manifest_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), ct in prop::option::of(".{0,40}")) {
        let _ = oci::manifest::parse(ct.as_deref(), &bytes);
    }

    #[test]
    fn manifest_parse_json_shapes(
        schema in prop::option::of(-2i64..4),
        mt in prop::option::of(prop::sample::select(vec![
            oci::media::OCI_MANIFEST, oci::media::OCI_INDEX, oci::media::DOCKER_MANIFEST,
            oci::media::DOCKER_MANIFEST_LIST, "text/plain", "",
        ])),
        size in -5i64..5,
        with_config in any::<bool>(),
        with_manifests in any::<bool>(),
    ) {
        let mut v = serde_json::json!({});
        if let Some(s) = schema { v["schemaVersion"] = s.into(); }
        if let Some(m) = mt { v["mediaType"] = m.into(); }
        let desc = serde_json::json!({"mediaType": "x", "digest": Digest::sha256_of(b"").to_string(), "size": size});
        if with_config { v["config"] = desc.clone(); }
        if with_manifests { v["manifests"] = serde_json::json!([desc]); }
        let body = serde_json::to_vec(&v).unwrap();
        if let Ok(m) = oci::manifest::parse(None, &body) {
            prop_assert_eq!(schema, Some(2));
            prop_assert!(size >= 0);
            prop_assert!(oci::manifest::is_manifest_media_type(&m.media_type));
        }
    }
}
