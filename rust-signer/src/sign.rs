//! kc_sign: a signature with a cached key over a digest, or over a RAW
//! message the guest hashes as it streams in. kc_verify: the same message
//! rules, checked against a signature with a public key the request carries.

use crate::abi::{init, read_public, read_span, request_len, respond, StackWipe};
use crate::boring::{kcc_hash_begin, kcc_hash_end, kcc_hash_len, kcc_hash_update, kcc_sign, kcc_verify};
use crate::codes::{Algorithm, Scheme, Status};
use crate::keys::cache;

/// Sign flag: the message is RAW and the guest hashes it.
const FLAG_RAW: u8 = 1;
/// Sign flag: ECDSA output as fixed-width `r || s` (JWS) instead of DER.
const FLAG_RS: u8 = 2;

/// `id (32) || alg (1) || flags (1)`.
const HEAD: usize = 34;

/// kc_verify's `alg (1) || flags (1) || spki length (u16 LE)`.
const VERIFY_HEAD: usize = 4;

/// The longest signature the guest makes (RSA-4096), and so the longest it
/// buffers to verify; kcc_verify refuses keys whose signatures are longer.
const MAX_SIGNATURE: usize = 512;

/// The algorithm and flags of a request, or BAD_REQUEST for an unknown
/// algorithm or flag bit.
fn alg_and_flags(alg: u8, flags: u8) -> Result<(Algorithm, u8), i32> {
    let alg = Algorithm::from_u8(alg).ok_or(Status::BAD_REQUEST.code())?;
    if flags & !(FLAG_RAW | FLAG_RS) != 0 {
        return Err(Status::BAD_REQUEST.code());
    }
    Ok((alg, flags))
}

/// Puts the digest of the message that ends the request at `off` into
/// `digest` and answers its length. A RAW message streams through hash `h`
/// in chunks, so a large one never needs a buffer of its size. A DIGEST is
/// copied when it has the hash's length; any other length is answered
/// unread, and kcc_sign and kcc_verify turn it into BAD_DIGEST_LENGTH after
/// their key checks, so both exports report errors in the same order.
fn message_digest(off: usize, flags: u8, h: i32, digest: &mut [u8; 64]) -> Result<usize, i32> {
    let hlen = unsafe { kcc_hash_len(h) } as usize;
    let msg_len = request_len().saturating_sub(off);
    if flags & FLAG_RAW == 0 {
        if msg_len == hlen {
            read_public(off, &mut digest[..hlen]);
        }
        return Ok(msg_len);
    }
    let mut chunk = [0u8; 4096];
    let r = unsafe { kcc_hash_begin(h) };
    if r < 0 {
        return Err(r);
    }
    let mut done = 0usize;
    while done < msg_len {
        let take = core::cmp::min(chunk.len(), msg_len - done);
        read_public(off + done, &mut chunk[..take]);
        unsafe { kcc_hash_update(chunk.as_ptr(), take) };
        done += take;
    }
    if unsafe { kcc_hash_end(digest.as_mut_ptr()) } as usize != hlen {
        return Err(Status::CRYPTO_FAILURE.code());
    }
    Ok(hlen)
}

#[no_mangle]
pub extern "C" fn kc_sign() -> i32 {
    init();
    let _wipe = StackWipe;
    let n = request_len();
    if n < HEAD {
        return Status::BAD_REQUEST.code();
    }
    let mut head = [0u8; HEAD];
    read_public(0, &mut head);
    let (alg, flags) = match alg_and_flags(head[32], head[33]) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let (scheme, h) = (alg.scheme(), alg.hash() as i32);
    let mut id = [0u8; 32];
    id.copy_from_slice(&head[..32]);
    let (spec, key) = match cache().touch(&id) {
        Some(e) => (e.spec, e.key.as_ptr()),
        None => return Status::KEY_NOT_FOUND.code(),
    };
    if (scheme == Scheme::ECDSA) != spec.is_ec() {
        return Status::WRONG_KEY_TYPE.code();
    }
    let mut digest = [0u8; 64];
    let digest_len = match message_digest(HEAD, flags, h, &mut digest) {
        Ok(len) => len,
        Err(e) => return e,
    };
    let mut sig = [0u8; MAX_SIGNATURE];
    let rs = (flags & FLAG_RS != 0) as i32;
    let len = unsafe { kcc_sign(key, scheme as i32, h, digest.as_ptr(), digest_len, rs, sig.as_mut_ptr(), sig.len()) };
    if len < 0 {
        return len;
    }
    respond(&[&sig[..len as usize]])
}

#[no_mangle]
pub extern "C" fn kc_verify() -> i32 {
    init();
    // No StackWipe: only public values pass through BoringSSL's frames here.
    let n = request_len();
    if n < VERIFY_HEAD {
        return Status::BAD_REQUEST.code();
    }
    let mut head = [0u8; VERIFY_HEAD];
    read_public(0, &mut head);
    let (alg, flags) = match alg_and_flags(head[0], head[1]) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let spki_len = u16::from_le_bytes([head[2], head[3]]) as usize;
    let sig_len_at = VERIFY_HEAD + spki_len;
    if n < sig_len_at + 2 {
        return Status::BAD_REQUEST.code();
    }
    let mut sig_len = [0u8; 2];
    read_public(sig_len_at, &mut sig_len);
    let sig_len = u16::from_le_bytes(sig_len) as usize;
    let sig_at = sig_len_at + 2;
    let msg_at = sig_at + sig_len;
    if n < msg_at {
        return Status::BAD_REQUEST.code();
    }
    let spki = match read_span(VERIFY_HEAD, spki_len) {
        Some(v) => v,
        None => return Status::NO_SPACE.code(),
    };
    // A signature too long to buffer goes on empty, which no scheme
    // accepts: it is invalid, yet the key and digest are still checked.
    let mut sig = [0u8; MAX_SIGNATURE];
    let sig_len = if sig_len <= sig.len() { sig_len } else { 0 };
    read_public(sig_at, &mut sig[..sig_len]);
    let (scheme, h) = (alg.scheme(), alg.hash() as i32);
    let mut digest = [0u8; 64];
    let digest_len = match message_digest(msg_at, flags, h, &mut digest) {
        Ok(len) => len,
        Err(e) => return e,
    };
    let rs = (flags & FLAG_RS != 0) as i32;
    let r = unsafe {
        kcc_verify(spki.as_ptr(), spki.len(), scheme as i32, h, digest.as_ptr(), digest_len, rs, sig.as_ptr(), sig_len)
    };
    if r < 0 {
        return r;
    }
    respond(&[&[r as u8]])
}
