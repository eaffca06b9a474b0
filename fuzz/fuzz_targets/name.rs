//! Repository names: what parses is the input, within the length limit,
//! and has no component a storage key could trip over.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::RepoName;

fuzz_target!(|input: (u8, &str)| {
    let (max, s) = input;
    let max = usize::from(max);
    for limit in [max, oci::name::DEFAULT_MAX_NAME_LEN, usize::MAX] {
        if let Ok(n) = RepoName::parse(s, limit) {
            assert_eq!(n.as_str(), s);
            assert!(s.len() <= limit);
            for c in s.split('/') {
                assert!(!c.is_empty() && !c.starts_with(['_', '.', '-']) && c != "..");
            }
        }
    }
});
