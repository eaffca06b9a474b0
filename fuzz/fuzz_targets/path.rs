//! The `/v2/` path grammar, parsed from the right: never panics on any path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = oci::path::parse(s);
});
