//! libFuzzer target over the signer guest, built natively: the first input
//! byte picks an export (every one but `kc_trap`), the rest is its request.
//! The guest's own modules and C (../src, ../c) are compiled in; the six
//! `keycell` imports are served from here as the host serves them. A master
//! key is loaded and three keys are cached before the first input, so that
//! requests naming them get as far as signing and sealing.
//!
//! Checked on every input: no panic or abort, a response inside the host's
//! 64 KiB buffer, an answer that is a length or one of the ABI's status
//! codes (-1..=-10), and from kc_verify one byte, 0 or 1.
//!
//! `KEYCELL_FUZZ_SEEDS=dir` writes a seed corpus of valid requests before
//! fuzzing starts. `KEYCELL_FUZZ_PLANTED_CRASH=1` panics on a valid signature
//! over a message holding `kc!!`, to show that the fuzzer finds a crash deep
//! in the guest (the positive control).

#![no_main]

extern crate alloc;

include!(concat!(env!("OUT_DIR"), "/guest_modules.rs"));

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Stand-ins for the two wasm32 intrinsics the guest uses.
mod native {
    pub fn unreachable() -> ! {
        std::process::abort()
    }
    pub fn memory_size() -> usize {
        0
    }
}

const RESPONSE_CAP: i64 = 64 * 1024;
const CACHE_BUDGET: u64 = 1 << 20;
const MASTER_KEY: [u8; 32] = *b"keycell fuzz master key, 32 byte";

struct Host {
    request: Vec<u8>,
    response: Vec<u8>,
    rng: u64,
}

thread_local! {
    static HOST: RefCell<Host> = const { RefCell::new(Host { request: Vec::new(), response: Vec::new(), rng: 0x9e37_79b9_7f4a_7c15 }) };
    static BASE: RefCell<Vec<BaseKey>> = const { RefCell::new(Vec::new()) };
}

/// Answers per export and status (all successes counted as 0), printed at exit.
static ANSWERS: Mutex<BTreeMap<(&'static str, i32), u64>> = Mutex::new(BTreeMap::new());
static PLANTED_CRASH: AtomicBool = AtomicBool::new(false);

#[no_mangle]
pub extern "C" fn in_len() -> i32 {
    HOST.with(|h| h.borrow().request.len() as i32)
}

#[no_mangle]
pub extern "C" fn in_read8(off: i32) -> i64 {
    HOST.with(|h| {
        let h = h.borrow();
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            let at = off as i64 + i as i64;
            if at >= 0 && (at as usize) < h.request.len() {
                *x = h.request[at as usize];
            }
        }
        i64::from_le_bytes(b)
    })
}

#[no_mangle]
pub extern "C" fn in_read1(off: i32) -> i32 {
    HOST.with(|h| {
        let h = h.borrow();
        if off >= 0 && (off as usize) < h.request.len() {
            h.request[off as usize] as i32
        } else {
            -1
        }
    })
}

fn write_out(off: i32, bytes: &[u8]) {
    let end = off as i64 + bytes.len() as i64;
    // The host traps here, and a trap is a guest bug.
    assert!(off >= 0 && end <= RESPONSE_CAP, "response write at {off} past the 64 KiB buffer");
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        if h.response.len() < end as usize {
            h.response.resize(end as usize, 0);
        }
        h.response[off as usize..end as usize].copy_from_slice(bytes);
    })
}

#[no_mangle]
pub extern "C" fn out_write8(off: i32, v: i64) {
    write_out(off, &v.to_le_bytes());
}

#[no_mangle]
pub extern "C" fn out_write1(off: i32, b: i32) {
    assert!((0..256).contains(&b), "out_write1 of {b}");
    write_out(off, &[b as u8]);
}

/// Deterministic, so that a crash replays from its input alone.
#[no_mangle]
pub extern "C" fn keycell_rand8() -> u64 {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        h.rng ^= h.rng << 13;
        h.rng ^= h.rng >> 7;
        h.rng ^= h.rng << 17;
        h.rng
    })
}

#[no_mangle]
pub extern "C" fn __wasm_call_ctors() {}

type Export = extern "C" fn() -> i32;

const EXPORTS: [(&str, Export); 15] = [
    ("kc_load", keys::kc_load),
    ("kc_generate", keys::kc_generate),
    ("kc_public_key", keys::kc_public_key),
    ("kc_sign", sign::kc_sign),
    ("kc_drop", keys::kc_drop),
    ("kc_list", keys::kc_list),
    ("kc_tag", keys::kc_tag),
    ("kc_master_new", seal::kc_master_new),
    ("kc_master_load", seal::kc_master_load),
    ("kc_master_previous", seal::kc_master_previous),
    ("kc_unseal", seal::kc_unseal),
    ("kc_reseal", seal::kc_reseal),
    ("kc_import", seal::kc_import),
    ("kc_stats", keys::kc_stats),
    ("kc_verify", sign::kc_verify),
];
const OP_GENERATE: usize = 1;
const OP_SIGN: usize = 3;
const OP_MASTER_LOAD: usize = 8;
const OP_MASTER_PREVIOUS: usize = 9;
const OP_UNSEAL: usize = 10;
const OP_VERIFY: usize = 14;

/// Calls an export with `request`; answers its return value and response.
fn call(op: usize, request: &[u8]) -> (i32, Vec<u8>) {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        h.request.clear();
        h.request.extend_from_slice(request);
        h.response.clear();
    });
    let (name, export) = EXPORTS[op];
    let r = export();
    let response = HOST.with(|h| std::mem::take(&mut h.borrow_mut().response));
    assert!(
        (-10..=-1).contains(&r) || (r >= 0 && r as usize <= response.len().max(0) + 7 && (r as i64) <= RESPONSE_CAP),
        "{name} answered {r}, neither a length within what it wrote ({}) nor a status code",
        response.len()
    );
    *ANSWERS.lock().unwrap().entry((name, r.min(0))).or_insert(0) += 1;
    let n = r.max(0) as usize;
    (r, response[..n.min(response.len())].to_vec())
}

struct BaseKey {
    wrapping: bool,
    spec: u8,
    id: [u8; 32],
    spki: Vec<u8>,
    blob: Vec<u8>,
}

/// Splits a key record (`spec || id || spki DER`, then a sealed blob).
fn parse_record(r: &[u8]) -> BaseKey {
    let spki = &r[33..];
    let (header, len) = match spki[1] {
        n if n < 0x80 => (2, n as usize),
        0x81 => (3, spki[2] as usize),
        0x82 => (4, (spki[2] as usize) << 8 | spki[3] as usize),
        n => panic!("SPKI length form {n:#x}"),
    };
    BaseKey {
        wrapping: false,
        spec: r[0],
        id: r[1..33].try_into().unwrap(),
        spki: spki[..header + len].to_vec(),
        blob: spki[header + len..].to_vec(),
    }
}

fn load_master() {
    let mut request = CACHE_BUDGET.to_le_bytes().to_vec();
    request.extend_from_slice(&MASTER_KEY);
    assert_eq!(call(OP_MASTER_LOAD, &request).0, 32, "the master key loads");
}

/// Puts back what an input may have taken away: the master key (and the cache
/// budget that comes with it) and the three base keys.
fn restore(op: usize) {
    if op == OP_MASTER_LOAD || op == OP_MASTER_PREVIOUS {
        load_master();
    }
    BASE.with(|base| {
        for k in base.borrow().iter().filter(|k| !k.wrapping) {
            if call(2, &k.id).0 < 0 {
                let mut request = k.id.to_vec();
                request.extend_from_slice(&k.blob);
                assert!(call(OP_UNSEAL, &request).0 > 0, "a base key re-opens from its blob");
            }
        }
    });
}

fn digest_len(alg: u8) -> usize {
    [0, 32, 48, 64, 32, 48, 64, 32, 48, 64, 20, 28, 36, 20, 28, 36][alg as usize]
}

/// Valid requests for every export, each as `op || request`.
fn seeds(base: &[BaseKey]) -> Vec<Vec<u8>> {
    let with = |op: usize, parts: &[&[u8]]| -> Vec<u8> {
        let mut v = vec![op as u8];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    let mut out = vec![
        with(OP_GENERATE, &[&[4]]),
        with(OP_GENERATE, &[&[5]]),
        with(5, &[]),
        with(6, &[]),
        with(13, &[]),
        with(7, &[&CACHE_BUDGET.to_le_bytes()]),
        with(OP_MASTER_LOAD, &[&CACHE_BUDGET.to_le_bytes(), &MASTER_KEY]),
        with(OP_MASTER_PREVIOUS, &[&[7u8; 32]]),
        with(4, &[&[0u8; 32]]),
    ];
    let wrapping = base.iter().find(|k| k.wrapping);
    for k in base {
        out.push(with(OP_UNSEAL, &[&k.id, &k.blob]));
        out.push(with(11, &[&k.id, &k.blob]));
        if Some(k.id) == wrapping.map(|w| w.id) {
            continue;
        }
        out.push(with(2, &[&k.id]));
        out.push(with(4, &[&k.id]));
        let algs: &[u8] = if k.spec >= 4 { &[7, 8, 9, 13, 14, 15] } else { &[1, 2, 3, 4, 5, 6, 10, 11, 12] };
        for &alg in algs {
            out.push(with(OP_SIGN, &[&k.id, &[alg, 0], &vec![0x5a; digest_len(alg)]]));
            out.push(with(OP_SIGN, &[&k.id, &[alg, 1], b"keycell"]));
            if k.spec >= 4 {
                out.push(with(OP_SIGN, &[&k.id, &[alg, 3], b"keycell"]));
            }
        }
        // Verifying requests that carry a signature the key just made, so
        // that mutations start from a valid one.
        let (alg, all_flags): (u8, &[u8]) = if k.spec >= 4 { (7, &[0, 1, 2, 3]) } else { (4, &[0, 1]) };
        for &flags in all_flags {
            let message = if flags & 1 != 0 { b"keycell".to_vec() } else { vec![0x5a; digest_len(alg)] };
            let (r, sig) = call(OP_SIGN, &[&k.id[..], &[alg, flags], &message].concat());
            assert!(r > 0, "signing a verify seed answered {r}");
            let spki_len = (k.spki.len() as u16).to_le_bytes();
            let sig_len = (sig.len() as u16).to_le_bytes();
            out.push(with(OP_VERIFY, &[&[alg, flags], &spki_len, &k.spki, &sig_len, &sig, &message]));
        }
    }
    if let Some(w) = wrapping {
        for spec in [1u8, 4, 5] {
            let len = (w.blob.len() as u32).to_le_bytes();
            out.push(with(12, &[&[spec], &w.id, &len, &w.blob, &[0xa5; 512], &[0x3c; 48]]));
        }
    }
    out
}

fn init() {
    PLANTED_CRASH.store(std::env::var_os("KEYCELL_FUZZ_PLANTED_CRASH").is_some(), Ordering::SeqCst);
    load_master();
    let mut base = Vec::new();
    for spec in [4u8, 5, 1, 0x83] {
        let (r, response) = call(OP_GENERATE, &[spec]);
        assert!(r > 0, "generating spec {spec} answered {r}");
        base.push(BaseKey { wrapping: spec == 0x83, ..parse_record(&response) });
    }
    if let Some(dir) = std::env::var_os("KEYCELL_FUZZ_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds(&base).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed).unwrap();
        }
    }
    BASE.with(|b| *b.borrow_mut() = base);
    extern "C" fn print_answers() {
        if let Ok(a) = ANSWERS.lock() {
            let counts: Vec<String> = a
                .iter()
                .map(|((name, r), n)| if *r >= 0 { format!("{name}:ok={n}") } else { format!("{name}:{r}={n}") })
                .collect();
            eprintln!("keycell-fuzz answers: {}", counts.join(" "));
        }
    }
    extern "C" {
        fn atexit(f: extern "C" fn()) -> i32;
    }
    unsafe { atexit(print_answers) };
}

/// RSA generation takes a one-byte request and seconds of CPU; it stays out
/// of the fuzzed calls (cargo and Deno tests cover it), EC generation stays in.
fn is_rsa_generation(op: usize, request: &[u8]) -> bool {
    op == OP_GENERATE && request.len() == 1 && matches!(request[0], 1 | 2 | 3 | 0x83)
}

libfuzzer_sys::fuzz_target!(init: init(), |data: &[u8]| {
    let Some((&selector, request)) = data.split_first() else { return };
    let op = selector as usize % EXPORTS.len();
    if is_rsa_generation(op, request) {
        return;
    }
    let (r, response) = call(op, request);
    if op == OP_VERIFY && r >= 0 {
        assert!(r == 1 && response[0] <= 1, "kc_verify answered {r} bytes: {response:?}");
    }
    if PLANTED_CRASH.load(Ordering::Relaxed) && op == OP_SIGN && r > 0 && request.len() > 34 {
        // Anywhere in the message, as a 4-byte comparison: libFuzzer's comparison tracing can
        // solve for that, so the control measures the harness, not luck.
        for w in request[34..].windows(4) {
            // black_box keeps each window a separate comparison rather than a vectorized scan.
            if std::hint::black_box(u32::from_le_bytes([w[0], w[1], w[2], w[3]])) == u32::from_le_bytes(*b"kc!!") {
                panic!("planted crash: a valid signature over a message holding kc!!");
            }
        }
    }
    restore(op);
});
