//! Tags and manifest references (tag or digest): what parses prints back
//! as it was given and stays within the spec's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{Reference, Tag};

fuzz_target!(|s: &str| {
    if let Ok(t) = Tag::parse(s) {
        assert_eq!(t.as_str(), s);
        assert!(s.len() <= oci::name::MAX_TAG_LEN);
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
    }
});
