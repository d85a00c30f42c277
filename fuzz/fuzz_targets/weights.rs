//! Untrusted weights files (`importWeights`, IndexedDB, the server's `PUT`): any bytes are a
//! typed error or weights that write back and read back to themselves; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tacit_rm::store;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(w) = store::from_bytes(bytes) {
        let again = store::to_bytes(&w).expect("weights that were read can be written");
        assert_eq!(store::from_bytes(&again).expect("and read back"), w);
    }
});
