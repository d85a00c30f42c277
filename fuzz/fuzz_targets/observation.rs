//! Untrusted observations as a host hands them over (JSON in the CLI and the tests, the same
//! serde shape the browser decodes): any text is a typed error or an observation that
//! validates and turns into example rows with finite features; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tacit_rm::feedback::events::Observation;

const DIM: usize = 4;

fuzz_target!(|bytes: &[u8]| {
    let Ok(obs) = serde_json::from_slice::<Observation>(bytes) else {
        return;
    };
    if obs.validate(DIM).is_ok() {
        let features = tacit_rm::feedback::events::exposure_features(&obs)
            .expect("a validated observation has exposure features");
        assert!(features.iter().all(|f| f.is_finite()), "{features:?}");
    }
});
