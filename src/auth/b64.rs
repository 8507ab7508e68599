//! Strict base64url without padding (RFC 7515 section 2), for the token's header and payload.
//!
//! jsonwebtoken keeps its decoder private, and reading the header ourselves is
//! what lets `alg: none` be told apart from a malformed header.

/// Decodes unpadded base64url, rejecting padding, other alphabets and
/// non-canonical trailing bits, as jsonwebtoken's own decoder does.
pub(super) fn decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &c in input {
        acc = (acc << 6) | u32::from(sextet(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits are padding of the last byte and must be zero.
    (acc == 0).then_some(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Encodes to unpadded base64url, for crafting tokens in tests.
#[cfg(test)]
pub(super) fn encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_inverts_encoding_for_every_length_remainder() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0xfe, 0x00, 0x3e, 0x3f],
        ] {
            assert_eq!(decode(encode(input).as_bytes()).as_deref(), Some(input));
        }
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn padding_other_alphabets_and_stray_bits_are_rejected() {
        for bad in ["Zm9v=", "Zg==", "a+b/", "Z", "Zh", "Zm9=", "ab.c", "Zm9vYh"] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
