//! The body of `POST /v1/allocataires/recherche`, through `routes::nir_of_search_body`.
//!
//! Invariants: no panic; a body is accepted only when it holds a valid NIR, and
//! refused with `400 invalid-request` otherwise, with a detail that quotes
//! nothing of the body.

#![no_main]

use caf_broker::domain::Nir;
use caf_broker::routes::nir_of_search_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match nir_of_search_body(data) {
        Ok(nir) => assert_eq!(Nir::parse(nir.as_str()).as_ref(), Ok(&nir)),
        Err(error) => {
            assert_eq!(
                error.status(),
                400,
                "a search body refused with another status"
            );
            assert_eq!(error.code(), "invalid-request");
            let detail = error.detail();
            // No run of digits longer than a line or column number comes back.
            let text = String::from_utf8_lossy(data);
            for run in text.split(|c: char| !c.is_ascii_digit()) {
                if run.len() >= 6 {
                    assert!(!detail.contains(run), "the detail quotes the body");
                }
            }
        }
    }
});
