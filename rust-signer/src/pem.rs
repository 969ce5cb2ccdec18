//! PEM armor. Not cryptography, but the decoded bytes are the private key, so
//! the output lives in a `Secret` and the base64 alphabet is decoded without
//! table lookups or data-dependent branches on key characters.

use crate::codes::Form;
use crate::memory::Secret;

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == b'\r' || c == b'\n'
}

fn skip_ws(s: &[u8], mut pos: usize) -> usize {
    while pos < s.len() && is_ws(s[pos]) {
        pos += 1;
    }
    pos
}

fn starts_with_at(s: &[u8], pos: usize, pat: &[u8]) -> bool {
    s.len() >= pos && s[pos..].starts_with(pat)
}

fn find(s: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    if from > s.len() || pat.is_empty() {
        return None;
    }
    s[from..].windows(pat.len()).position(|w| w == pat).map(|i| i + from)
}

/// True when the input looks like PEM rather than DER.
pub(crate) fn looks_like_pem(s: &[u8]) -> bool {
    starts_with_at(s, skip_ws(s, 0), BEGIN)
}

/// One armored block: label and the base64 body's range; `next` is where
/// the text after its END line starts.
struct Block<'a> {
    label: &'a [u8],
    body: (usize, usize),
    next: usize,
}

fn block(s: &[u8], pos: usize) -> Option<Block<'_>> {
    if !starts_with_at(s, pos, BEGIN) {
        return None;
    }
    let label_start = pos + BEGIN.len();
    let label_end = find(s, label_start, DASHES)?;
    let label = &s[label_start..label_end];
    if label.is_empty() || !label.iter().all(|&c| c == b' ' || c.is_ascii_uppercase()) {
        return None;
    }
    let body_start = label_end + DASHES.len();
    let end_pos = find(s, body_start, END)?;
    let after_end = end_pos + END.len();
    if !starts_with_at(s, after_end, label) || !starts_with_at(s, after_end + label.len(), DASHES) {
        return None;
    }
    Some(Block { label, body: (body_start, end_pos), next: after_end + label.len() + DASHES.len() })
}

/// Value of a base64 character, or -1. Branch-free so the time taken does
/// not depend on which key characters are seen.
fn b64_value(c: u8) -> i32 {
    let c = c as i32;
    let mut r = -1i32;
    r += (((64 - c) & (c - 91)) >> 8) & (c - 64);
    r += (((96 - c) & (c - 123)) >> 8) & (c - 70);
    r += (((47 - c) & (c - 58)) >> 8) & (c + 5);
    r += (((42 - c) & (c - 44)) >> 8) & 63;
    r += (((46 - c) & (c - 48)) >> 8) & 64;
    r
}

fn base64_decode(s: &[u8]) -> Option<Secret> {
    let mut out = Secret::with_capacity(s.len() / 4 * 3 + 3)?;
    let mut acc: u32 = 0;
    let mut n = 0u32; // sextets in acc
    let mut pads = 0u32;
    let mut total = 0usize;
    let mut bad = 0i32;
    for &c in s {
        if is_ws(c) {
            continue;
        }
        total += 1;
        if c == b'=' {
            pads += 1;
            if pads > 2 {
                return None;
            }
            continue;
        }
        if pads > 0 {
            return None;
        }
        let v = b64_value(c);
        bad |= v;
        acc = (acc << 6) | (v as u32 & 63);
        n += 1;
        if n == 4 {
            out.push((acc >> 16) as u8);
            out.push((acc >> 8) as u8);
            out.push(acc as u8);
            acc = 0;
            n = 0;
        }
    }
    let ok = bad >= 0 && total % 4 == 0 && n + pads == if n == 0 { 0 } else { 4 };
    if !ok {
        unsafe { core::ptr::write_volatile(&mut acc, 0) };
        return None;
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => {
            out.push((acc >> 10) as u8);
            out.push((acc >> 2) as u8);
        }
        _ => {}
    }
    // acc held key bits; overwrite it before the frame is reused.
    unsafe { core::ptr::write_volatile(&mut acc, 0) };
    Some(out)
}

/// Decodes a PEM private key: an optional `EC PARAMETERS` block, then one
/// key block, with only whitespace around. Returns the DER form and bytes.
pub(crate) fn decode(s: &[u8]) -> Option<(Form, Secret)> {
    let mut pos = skip_ws(s, 0);
    let mut b = block(s, pos)?;
    if b.label == b"EC PARAMETERS" {
        pos = skip_ws(s, b.next);
        b = block(s, pos)?;
    }
    let form = match b.label {
        b"PRIVATE KEY" => Form::PKCS8,
        b"RSA PRIVATE KEY" => Form::PKCS1,
        b"EC PRIVATE KEY" => Form::SEC1,
        _ => return None,
    };
    if skip_ws(s, b.next) != s.len() {
        return None;
    }
    let der = base64_decode(&s[b.body.0..b.body.1])?;
    Some((form, der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Plain RFC 4648 base64, lines of 64 as OpenSSL writes them.
    fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                out.push(if i <= chunk.len() { ALPHABET[(v >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
            }
        }
        let lines: Vec<&str> = out.as_bytes().chunks(64).map(|l| core::str::from_utf8(l).unwrap()).collect();
        lines.join("\n")
    }

    fn armor(label: &str, body: &str) -> String {
        alloc::format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    fn decoded(text: &str) -> Option<(Form, Vec<u8>)> {
        decode(text.as_bytes()).map(|(form, der)| (form, der.bytes().to_vec()))
    }

    #[test]
    fn b64_value_matches_the_alphabet_for_every_byte() {
        for c in 0..=255u8 {
            let want = ALPHABET.iter().position(|&a| a == c).map_or(-1, |i| i as i32);
            assert_eq!(b64_value(c), want, "byte {c}");
        }
    }

    #[test]
    fn decodes_every_length_and_byte_value() {
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..bytes.len() {
            let der = &bytes[..len];
            let got = decoded(&armor("PRIVATE KEY", &encode(der)));
            assert_eq!(got, Some((Form::PKCS8, der.to_vec())), "length {len}");
        }
    }

    #[test]
    fn the_label_names_the_form() {
        let body = encode(b"\x30\x03\x02\x01\x00");
        assert_eq!(decoded(&armor("PRIVATE KEY", &body)).map(|d| d.0), Some(Form::PKCS8));
        assert_eq!(decoded(&armor("RSA PRIVATE KEY", &body)).map(|d| d.0), Some(Form::PKCS1));
        assert_eq!(decoded(&armor("EC PRIVATE KEY", &body)).map(|d| d.0), Some(Form::SEC1));
        for label in ["PUBLIC KEY", "CERTIFICATE", "ENCRYPTED PRIVATE KEY", "EC PARAMETERS", "private key"] {
            assert_eq!(decoded(&armor(label, &body)), None, "{label}");
        }
    }

    #[test]
    fn skips_one_ec_parameters_block_and_surrounding_whitespace() {
        let params = armor("EC PARAMETERS", "BggqhkjOPQMBBw==");
        let key = armor("EC PRIVATE KEY", "MAMCAQA=");
        let text = alloc::format!(" \r\n\t{params}\r\n{key}\n\n");
        assert!(looks_like_pem(text.as_bytes()));
        assert_eq!(decoded(&text), Some((Form::SEC1, b"\x30\x03\x02\x01\x00".to_vec())));
        // Only one, and only before the key.
        assert_eq!(decoded(&alloc::format!("{params}{params}{key}")), None);
        assert_eq!(decoded(&alloc::format!("{key}{params}")), None);
    }

    #[test]
    fn refuses_broken_armor() {
        let body = encode(b"0123456789");
        let cases = [
            // END label differs from BEGIN.
            alloc::format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n"),
            // No END line.
            alloc::format!("-----BEGIN PRIVATE KEY-----\n{body}\n"),
            // Text after the block, or a second key.
            alloc::format!("{}trailing", armor("PRIVATE KEY", &body)),
            alloc::format!("{}{}", armor("PRIVATE KEY", &body), armor("PRIVATE KEY", &body)),
            // Text before it.
            alloc::format!("x{}", armor("PRIVATE KEY", &body)),
            String::from("-----BEGIN -----\nMDAx\n-----END -----\n"),
        ];
        for text in cases.iter() {
            assert_eq!(decoded(text), None, "{text:?}");
        }
    }

    #[test]
    fn refuses_bad_base64() {
        for body in ["MDA", "MDAx=", "M===", "MD==MDAx", "MD=x", "MDA*", "MDAx\0", "MD-_", "====", "MDAxM"] {
            assert_eq!(decoded(&armor("PRIVATE KEY", body)), None, "{body:?}");
        }
        assert_eq!(decoded(&armor("PRIVATE KEY", "MD==")).map(|d| d.1), Some(b"0".to_vec()));
        assert_eq!(decoded(&armor("PRIVATE KEY", "MDA=")).map(|d| d.1), Some(b"00".to_vec()));
        assert_eq!(decoded(&armor("PRIVATE KEY", "M D\tA\r\nx")).map(|d| d.1), Some(b"001".to_vec()));
    }

    #[test]
    fn der_does_not_look_like_pem() {
        assert!(!looks_like_pem(b"\x30\x82\x04\xbe"));
        assert!(!looks_like_pem(b""));
        assert!(!looks_like_pem(b"-----BEGIN"));
        assert!(looks_like_pem(b"\n-----BEGIN X"));
    }
}
