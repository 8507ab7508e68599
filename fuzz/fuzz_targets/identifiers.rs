//! The identifiers a client sends: numéro allocataire, NIR (and its key), purpose, case reference, and
//! the NIR finder that redacts released text.
//!
//! Invariants: no panic; a parsed numéro is its canonical digits and parses to
//! itself; a parsed NIR has 15 characters whose key `Nir::key_of` confirms; on
//! 15 bytes, the redaction's NIR finder and `Nir::parse` agree; redacted text
//! holds no NIR any more.

#![no_main]

use caf_broker::domain::{CaseReference, Nir, NumeroAllocataire, PostCode, Purpose, Role, Subject};
use caf_broker::policy::{REDACTED, redact_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(numero) = NumeroAllocataire::parse(text) {
        let canonical = numero.as_str();
        assert!((1..=7).contains(&canonical.len()));
        assert!(canonical.bytes().all(|b| b.is_ascii_digit()) && !canonical.starts_with('0'));
        assert!(text.ends_with(canonical));
        assert_eq!(NumeroAllocataire::parse(canonical).as_ref(), Ok(&numero));
    }

    let _ = Nir::key_of(text);
    let nir = Nir::parse(text);
    if let Ok(nir) = &nir {
        let clear = nir.as_str();
        assert_eq!(clear.len(), 15);
        assert_eq!(clear, text.to_ascii_uppercase());
        assert_eq!(Nir::key_of(&clear[..13]), clear[13..].parse().ok());
        assert_eq!(Nir::parse(clear).as_ref(), Ok(nir));
    }
    if text.len() == 15 {
        let found = redact_text(text);
        assert_eq!(
            nir.is_ok(),
            found == Some((REDACTED.to_owned(), 1)),
            "Nir::parse and the redaction disagree on a 15-byte text"
        );
    }
    if let Some((redacted, count)) = redact_text(text) {
        assert!(count > 0);
        assert_eq!(redact_text(&redacted), None, "a NIR left in redacted text");
    }

    let _ = Purpose::parse(text);
    let _ = Role::parse(text);
    let _ = PostCode::parse(text);
    let _ = CaseReference::parse(text);
    let _ = Subject::parse(text);
});
