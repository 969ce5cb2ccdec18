//! kc_sign: a signature with a cached key over a digest, or over a RAW
//! message the guest hashes as it streams in.

use crate::abi::{init, read_public, request_len, respond, StackWipe};
use crate::boring::{kcc_hash_begin, kcc_hash_end, kcc_hash_len, kcc_hash_update, kcc_sign};
use crate::codes::{Algorithm, Scheme, Status};
use crate::keys::cache;

/// Sign flag: the message is RAW and the guest hashes it.
const FLAG_RAW: u8 = 1;
/// Sign flag: ECDSA output as fixed-width `r || s` (JWS) instead of DER.
const FLAG_RS: u8 = 2;

/// `id (32) || alg (1) || flags (1)`.
const HEAD: usize = 34;

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
    let alg = match Algorithm::from_u8(head[32]) {
        Some(a) => a,
        None => return Status::BAD_REQUEST.code(),
    };
    let (scheme, h) = (alg.scheme(), alg.hash() as i32);
    let flags = head[33];
    if flags & !(FLAG_RAW | FLAG_RS) != 0 {
        return Status::BAD_REQUEST.code();
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&head[..32]);
    let (spec, key) = match cache().touch(&id) {
        Some(e) => (e.spec, e.key.as_ptr()),
        None => return Status::KEY_NOT_FOUND.code(),
    };
    if (scheme == Scheme::ECDSA) != spec.is_ec() {
        return Status::WRONG_KEY_TYPE.code();
    }
    let hlen = unsafe { kcc_hash_len(h) } as usize;
    let msg_len = n - HEAD;
    let mut digest = [0u8; 64];
    if flags & FLAG_RAW != 0 {
        // Stream the message through the hash in chunks so a large RAW
        // message never needs a buffer of its size.
        let mut chunk = [0u8; 4096];
        let r = unsafe { kcc_hash_begin(h) };
        if r < 0 {
            return r;
        }
        let mut off = 0usize;
        while off < msg_len {
            let take = core::cmp::min(chunk.len(), msg_len - off);
            read_public(HEAD + off, &mut chunk[..take]);
            unsafe { kcc_hash_update(chunk.as_ptr(), take) };
            off += take;
        }
        if unsafe { kcc_hash_end(digest.as_mut_ptr()) } as usize != hlen {
            return Status::CRYPTO_FAILURE.code();
        }
    } else {
        if msg_len != hlen {
            return Status::BAD_DIGEST_LENGTH.code();
        }
        read_public(HEAD, &mut digest[..hlen]);
    }
    let mut sig = [0u8; 512];
    let rs = (flags & FLAG_RS != 0) as i32;
    let len = unsafe { kcc_sign(key, scheme as i32, h, digest.as_ptr(), hlen, rs, sig.as_mut_ptr(), sig.len()) };
    if len < 0 {
        return len;
    }
    respond(&[&sig[..len as usize]])
}
