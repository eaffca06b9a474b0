//! `sha256:<hex>` / `sha512:<hex>`: a digest that parses prints back as the
//! same string and parses again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::Digest;

fuzz_target!(|s: &str| {
    if let Ok(d) = s.parse::<Digest>() {
        let printed = d.to_string();
        assert_eq!(printed, s);
        assert_eq!(printed.parse::<Digest>().ok(), Some(d.clone()));
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
    }
    // The algorithm part alone (digest-algorithm=...).
    let _ = s.parse::<oci::Algorithm>();
});
