//! NIRs written inside released text are replaced by `[redacted]`. Pure and total.
//!
//! The policy never releases the `nir` field, but a CAF agent may have typed a
//! NIR into a free-text field (an address complement, a benefit label). Every
//! string the filter releases is scanned, and each NIR in it, and only the NIR,
//! is replaced by [`REDACTED`]: the rest of the text stays readable.
//!
//! What counts as a NIR is what [`crate::domain::Nir::parse`] accepts: 13
//! digits (`2A`/`2B`, either case, as the department), then a 2-digit key that
//! matches the mod-97 rule, written either in one piece
//! (`295109912611193`) or in its printed groups separated by single spaces
//! (`2 95 10 99 126 111 93`). A candidate must not touch another digit on
//! either side, so a longer run of digits is never cut into a NIR. The key
//! makes false positives rare: about one 15-digit run in 97 has a valid one by
//! chance, and dates, amounts or numéros are far too short.
//!
//! Cost: a string shorter than 15 bytes, or with fewer than 13 digits, is
//! skipped after one count; another is read once, byte by byte, without
//! allocating unless a NIR is found.

use serde_json::Value;

/// What replaces a NIR found in released text.
pub const REDACTED: &str = "[redacted]";

/// The NIR's length without separators.
const NIR_CHARS: usize = 15;
/// In the printed form, a space comes before these character positions:
/// `S AA MM DD CCC OOO KK` (sex, year, month, department, commune, order, key).
const SPACE_BEFORE: [usize; 6] = [1, 3, 5, 7, 10, 13];

/// Replaces every NIR in the strings of `value` (at any depth) by
/// [`REDACTED`]; returns how many were replaced.
pub fn redact_nirs(value: &mut Value) -> usize {
    match value {
        Value::String(text) => match redact_text(text) {
            Some((redacted, count)) => {
                *text = redacted;
                count
            }
            None => 0,
        },
        Value::Array(items) => items.iter_mut().map(redact_nirs).sum(),
        Value::Object(fields) => fields.values_mut().map(redact_nirs).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// `text` with each NIR replaced by [`REDACTED`], and how many there were;
/// `None` (nothing allocated) when it holds none.
pub fn redact_text(text: &str) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    // A NIR has 13 digits at least (15 without a Corsican department): most
    // text (names, address lines, labels) is ruled out by this count alone.
    if bytes.len() < NIR_CHARS || bytes.iter().filter(|b| b.is_ascii_digit()).count() < 13 {
        return None;
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut count = 0;
    let mut at = 0;
    while at + NIR_CHARS <= bytes.len() {
        let starts_a_number = bytes.get(at).is_some_and(u8::is_ascii_digit)
            && (at == 0 || bytes.get(at - 1).is_some_and(|b| !b.is_ascii_digit()));
        if starts_a_number && let Some(end) = nir_at(bytes, at) {
            // `at` and `end` sit next to ASCII bytes, so both are char boundaries.
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(text.get(copied..at).unwrap_or_default());
            out.push_str(REDACTED);
            copied = end;
            count += 1;
            at = end;
        } else {
            at += 1;
        }
    }
    out.map(|mut out| {
        out.push_str(text.get(copied..).unwrap_or_default());
        (out, count)
    })
}

/// The end of the NIR that starts at `start`, in one piece or in printed groups.
fn nir_at(bytes: &[u8], start: usize) -> Option<usize> {
    read_nir(bytes, start, false).or_else(|| read_nir(bytes, start, true))
}

/// Reads 15 NIR characters from `start` (with the printed form's spaces when
/// `spaced`), and returns where they end if they make a valid NIR that no
/// digit follows.
fn read_nir(bytes: &[u8], start: usize, spaced: bool) -> Option<usize> {
    let mut chars = [0u8; NIR_CHARS];
    let mut at = start;
    for (position, slot) in chars.iter_mut().enumerate() {
        if spaced && SPACE_BEFORE.contains(&position) {
            if bytes.get(at) != Some(&b' ') {
                return None;
            }
            at += 1;
        }
        *slot = *bytes.get(at)?;
        at += 1;
    }
    let followed_by_a_digit = bytes.get(at).is_some_and(u8::is_ascii_digit);
    (!followed_by_a_digit && is_nir(&chars)).then_some(at)
}

/// The rule of [`crate::domain::Nir::parse`] on 15 bytes, without allocating:
/// the body's digits (`2A` read as 19, `2B` as 18) mod 97 give the key.
fn is_nir(chars: &[u8; NIR_CHARS]) -> bool {
    let digit = |b: u8| b.is_ascii_digit().then(|| u32::from(b - b'0'));
    let corsica = match (chars[5], chars[6]) {
        (b'2', b'A' | b'a') => Some((1, 9)),
        (b'2', b'B' | b'b') => Some((1, 8)),
        _ => None,
    };
    let mut remainder = 0u32;
    for (position, &c) in chars[..13].iter().enumerate() {
        let value = match (corsica, position) {
            (Some((five, _)), 5) => five,
            (Some((_, six)), 6) => six,
            _ => match digit(c) {
                Some(value) => value,
                None => return false,
            },
        };
        remainder = (remainder * 10 + value) % 97;
    }
    match (digit(chars[13]), digit(chars[14])) {
        (Some(tens), Some(units)) => tens * 10 + units == 97 - remainder,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::Nir;

    fn redacted(text: &str) -> String {
        redact_text(text).map_or_else(|| text.to_owned(), |(out, _)| out)
    }

    #[test]
    fn a_nir_with_a_valid_key_is_replaced_and_the_rest_of_the_text_kept() {
        assert_eq!(
            redact_text("NIR 295109912611193 vu au guichet"),
            Some(("NIR [redacted] vu au guichet".to_owned(), 1))
        );
        assert_eq!(redacted("295109912611193"), "[redacted]");
        assert_eq!(redacted("(295109912611193)."), "([redacted]).");
        assert_eq!(redacted("nir:295109912611193"), "nir:[redacted]");
    }

    #[test]
    fn the_same_digits_with_a_wrong_key_are_kept() {
        for text in [
            "295109912611194",
            "ref 295109912611190 ok",
            "253072A07300470",
            "123456789012345",
        ] {
            assert_eq!(redact_text(text), None, "{text:?}");
        }
    }

    #[test]
    fn corsican_departments_are_recognised_in_either_case() {
        assert_eq!(redacted("a 253072A07300443 b"), "a [redacted] b");
        assert_eq!(redacted("a 253072b07300470 b"), "a [redacted] b");
        assert_eq!(redact_text("253072B07300443"), None, "2B has its own key");
        assert_eq!(redact_text("253072C07300443"), None);
    }

    #[test]
    fn the_printed_form_with_spaces_is_recognised() {
        assert_eq!(
            redact_text("Sécu : 2 95 10 99 126 111 93."),
            Some(("Sécu : [redacted].".to_owned(), 1))
        );
        assert_eq!(redacted("2 53 07 2A 073 004 43"), "[redacted]");
        assert_eq!(redact_text("2 95 10 99 126 111 94"), None, "wrong key");
        assert_eq!(
            redact_text("2 95 10 99 12 6111 93"),
            None,
            "only the printed grouping counts"
        );
        assert_eq!(redact_text("2  95 10 99 126 111 93"), None);
    }

    #[test]
    fn a_nir_inside_a_longer_run_of_digits_is_not_cut_out() {
        // Each of these holds a valid NIR's 15 digits, but glued to another digit.
        for text in [
            "1295109912611193",
            "2951099126111930",
            "x 12951099126111930 y",
            "2 95 10 99 126 111 931",
        ] {
            assert_eq!(redact_text(text), None, "{text:?}");
        }
    }

    #[test]
    fn letters_and_punctuation_around_a_nir_do_not_hide_it() {
        assert_eq!(redacted("A295109912611193B"), "A[redacted]B");
        assert_eq!(
            redacted("295109912611193-295109912611193"),
            "[redacted]-[redacted]"
        );
        assert_eq!(
            redact_text("295109912611193 et 180057512345627"),
            Some(("[redacted] et [redacted]".to_owned(), 2))
        );
    }

    #[test]
    fn dates_amounts_numeros_and_short_text_are_left_alone() {
        for text in [
            "",
            "2024-09-30",
            "2024-10-12T06:00:00Z",
            "1271.42",
            "1000002",
            "Revenu de solidarité active",
            "13 RUE PASTEUR 7250 MANOUBA",
            "2951099126111",
            "IBAN FR76 3000 6000 0112 3456 7890 189",
            "tél. 00 33 1 23 45 67 89, dossier 1000002 du 2024-09-30",
        ] {
            assert_eq!(redact_text(text), None, "{text:?}");
        }
    }

    #[test]
    fn text_around_a_nir_keeps_its_multibyte_characters() {
        assert_eq!(
            redacted("né à Sfax — 180057512345627 — été"),
            "né à Sfax — [redacted] — été"
        );
    }

    #[test]
    fn the_scanner_agrees_with_the_nir_parser_on_every_key() {
        // All 100 keys for a few bodies: exactly the one the parser accepts is redacted.
        for body in [
            "2951099126111",
            "253072A073004",
            "253072B073004",
            "1800575123456",
        ] {
            for key in 0..100 {
                let candidate = format!("{body}{key:02}");
                assert_eq!(
                    redact_text(&candidate).is_some(),
                    Nir::parse(&candidate).is_ok(),
                    "{candidate}"
                );
            }
        }
    }

    #[test]
    fn every_string_of_a_released_tree_is_scanned_and_the_replacements_counted() {
        let mut data = json!({
            "adresse": {"complement_information": "NIR 295109912611193", "pays": "TUNISIE"},
            "prestations": [
                {"libelle": "RSA (2 95 10 99 126 111 93)", "montant_mensuel_eur": "635.71"},
                {"libelle": "Allocations familiales", "etat": null}
            ],
            "nombre_enfants": 2,
        });
        assert_eq!(redact_nirs(&mut data), 2);
        assert_eq!(data["adresse"]["complement_information"], "NIR [redacted]");
        assert_eq!(data["prestations"][0]["libelle"], "RSA ([redacted])");
        assert_eq!(data["adresse"]["pays"], "TUNISIE");
        assert_eq!(data["prestations"][1]["libelle"], "Allocations familiales");
        assert_eq!(redact_nirs(&mut data), 0, "nothing left to redact");
    }
}
