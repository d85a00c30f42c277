//! Untrusted deltas (the body of every push): any bytes are a typed error or a delta whose
//! wire form reads back to itself; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tacit_rm::sync::Delta;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(d) = Delta::from_bytes(bytes) {
        let again = d.to_bytes().expect("a delta that was read can be written");
        assert_eq!(Delta::from_bytes(&again).expect("and read back"), d);
    }
});
