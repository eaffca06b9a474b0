//! `Content-Range` of upload chunks and `Range` of blob GETs, at any size up
//! to u64::MAX: never an overflow, and the results keep their promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{ByteRange, ChunkRange};

fuzz_target!(|input: (u64, &str)| {
    let (size, s) = input;
    if let Ok(r) = ChunkRange::parse(s) {
        assert!(r.start() <= r.end());
        assert_eq!(
            u128::from(r.len()),
            u128::from(r.end()) - u128::from(r.start()) + 1
        );
        assert_eq!(ChunkRange::parse(&r.to_string()), Ok(r));
    }
    for size in [size, 0, 1, u64::MAX] {
        if let ByteRange::Part { start, end } = ByteRange::parse(Some(s), size) {
            assert!(start < end && end <= size, "{s:?} {size}: {start}..{end}");
        }
    }
});
