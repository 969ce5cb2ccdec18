//! PEM armor. Not cryptography, but the decoded bytes are the private key, so
//! the output lives in a `Secret` and the base64 alphabet is decoded without
//! table lookups or data-dependent branches on key characters.

use crate::Secret;

/// DER form named by a PEM label, as `kcc_parse_key` numbers them.
pub(crate) const FORM_PKCS8: i32 = 1;
pub(crate) const FORM_PKCS1: i32 = 2;
pub(crate) const FORM_SEC1: i32 = 3;

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
    if !starts_with_at(s, after_end, label) || !starts_with_at(s, after_end + label.len(), DASHES)
    {
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
pub(crate) fn decode(s: &[u8]) -> Option<(i32, Secret)> {
    let mut pos = skip_ws(s, 0);
    let mut b = block(s, pos)?;
    if b.label == b"EC PARAMETERS" {
        pos = skip_ws(s, b.next);
        b = block(s, pos)?;
    }
    let form = match b.label {
        b"PRIVATE KEY" => FORM_PKCS8,
        b"RSA PRIVATE KEY" => FORM_PKCS1,
        b"EC PRIVATE KEY" => FORM_SEC1,
        _ => return None,
    };
    if skip_ws(s, b.next) != s.len() {
        return None;
    }
    let der = base64_decode(&s[b.body.0..b.body.1])?;
    Some((form, der))
}
