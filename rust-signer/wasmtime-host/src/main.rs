//! keycell's signer guest (`wasm/signer.wasm` or `wasm/signer-wide.wasm`, the same bytes the Deno
//! compartment runs) in wasmtime, serving the compartment's message protocol over stdin/stdout.
//!
//! It is `src/guest/compartment.ts` for another engine: the same six imports (rust-signer/ABI.md),
//! the same known-answer self-test at every instantiation (its vectors come from the parent, which
//! keeps them in `src/guest/self_test.ts`), the master key and key files read from their files
//! straight into the guest, and a trapping guest re-instantiated. Secrets that pass through this
//! process's own memory (the master key on its way in or out, key files, requests) are zeroed as
//! soon as the guest has them, so key material stays in the guest's linear memory.
//!
//! Usage: `keycell-wasmtime-host [--master-key PATH [--create-master-key]] [--keys DIR]
//! [--cache-bytes N]`. Every frame is `length (u32 LE) || bytes`. The parent sends one init frame
//! (the module and the self-test), the host answers `0 || key file report` or `1 || why`; then each
//! frame is a protocol request (`op || body`) answered, in order, by a response (`status || body`).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, Ordering};

use wasmtime::{Caller, Config, Engine, Linker, Module, OptLevel, Store, TypedFunc};

/// Largest response the guest may write (the compartment's cap).
const MAX_OUTPUT: usize = 64 * 1024;
/// Largest request frame the host reads; a larger one answers BAD_REQUEST.
const MAX_REQUEST: usize = 1 << 20;
/// Largest key file the host reads (the compartment's cap).
const MAX_KEY_FILE: u64 = 64 * 1024;
const MASTER_KEY_BYTES: usize = 32;
const GUEST_TAG: &[u8] = b"keycell.guest.v1";
/// Stack bytes zeroed after every guest call: the compiled guest runs on this thread's stack, and
/// its spilled registers may hold key material until later calls overwrite them (the isolation
/// scans found none left even without this; it costs a 128 KiB memset, a few microseconds).
const STACK_SCRUB_BYTES: usize = 128 * 1024;

/// Operations and statuses of `src/core/protocol.ts` (test/guest_codes_test.ts compares them).
mod protocol {
    pub const OP_GENERATE: u8 = 2;
    pub const OP_PUBLIC_KEY: u8 = 3;
    pub const OP_SIGN: u8 = 4;
    pub const OP_DROP: u8 = 5;
    pub const OP_LIST: u8 = 6;
    pub const OP_HEALTH: u8 = 7;
    pub const OP_TRAP: u8 = 8;
    pub const OP_UNSEAL: u8 = 9;
    pub const OP_IMPORT: u8 = 10;
    pub const OP_STATS: u8 = 11;
    pub const OP_MASTER_KEY_ID: u8 = 12;
    pub const OP_RESEAL: u8 = 13;
    pub const OP_VERIFY: u8 = 14;

    pub const STATUS_OK: u8 = 0;
    pub const STATUS_BAD_REQUEST: u8 = 1;
    pub const STATUS_NO_MASTER_KEY: u8 = 9;
    pub const STATUS_GUEST_TRAPPED: u8 = 32;
    pub const STATUS_UNAVAILABLE: u8 = 33;
    pub const STATUS_BAD_OP: u8 = 34;
}
use protocol::*;

/// The guest's exports, in the order of `Guest::exports`.
const EXPORTS: [&str; 16] = [
    "kc_load",
    "kc_generate",
    "kc_public_key",
    "kc_sign",
    "kc_drop",
    "kc_list",
    "kc_tag",
    "kc_trap",
    "kc_master_new",
    "kc_master_load",
    "kc_master_previous",
    "kc_unseal",
    "kc_reseal",
    "kc_import",
    "kc_stats",
    "kc_verify",
];
const KC_LOAD: usize = 0;
const KC_SIGN: usize = 3;
const KC_DROP: usize = 4;
const KC_TAG: usize = 6;
const KC_MASTER_NEW: usize = 8;
const KC_MASTER_LOAD: usize = 9;

fn export_of(op: u8) -> Option<usize> {
    Some(match op {
        OP_GENERATE => 1,
        OP_PUBLIC_KEY => 2,
        OP_SIGN => KC_SIGN,
        OP_DROP => KC_DROP,
        OP_LIST => 5,
        OP_HEALTH => KC_TAG,
        OP_TRAP => 7,
        OP_UNSEAL => 11,
        OP_RESEAL => 12,
        OP_IMPORT => 13,
        OP_STATS => 14,
        OP_VERIFY => 15,
        _ => return None,
    })
}

/// Overwrites `bytes` with zeros in a way the compiler keeps: a plain fill whose result is then
/// observed by `black_box`, so it is not removed as a dead store.
fn zero(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(&mut *bytes);
    compiler_fence(Ordering::SeqCst);
}

/// Zeroes the stack below the caller's frame, where the guest's frames were.
#[inline(never)]
fn scrub_stack() {
    let mut area = std::mem::MaybeUninit::<[u8; STACK_SCRUB_BYTES]>::uninit();
    // SAFETY: the pointer covers exactly the array, which is written before anything reads it.
    let area = unsafe {
        std::ptr::write_bytes(area.as_mut_ptr() as *mut u8, 0, STACK_SCRUB_BYTES);
        area.assume_init_mut()
    };
    std::hint::black_box(area);
}

/// What the imports see: the current request, the response buffer and the entropy pool.
struct Host {
    /// The request; the guest reads it from `base` on.
    input: Vec<u8>,
    base: usize,
    output: Box<[u8]>,
    entropy: [u8; 512],
    entropy_used: usize,
    urandom: File,
}

impl Host {
    fn request(&self) -> &[u8] {
        &self.input[self.base..]
    }
}

struct Guest {
    store: Store<Host>,
    exports: Vec<TypedFunc<(), i32>>,
}

/// The known answers every instantiation must give before a real key goes in.
struct SelfTest {
    digest: Vec<u8>,
    keys: Vec<SelfTestKey>,
}

struct SelfTestKey {
    name: String,
    der: Vec<u8>,
    id: [u8; 32],
    alg: u8,
    signature: Option<Vec<u8>>,
}

struct Options {
    master_key: Option<PathBuf>,
    create_master_key: bool,
    keys_dir: Option<PathBuf>,
    cache_bytes: u64,
}

/// One key file's outcome: its name, and the key record or why it was skipped.
enum KeyFileReport {
    Loaded(String, Vec<u8>),
    Skipped(String, String),
}

enum Call {
    Returned(i32),
    Trapped,
}

struct Compartment {
    engine: Engine,
    module: Module,
    linker: Linker<Host>,
    options: Options,
    self_test: SelfTest,
    guest: Option<Guest>,
    master_key_id: Option<[u8; 32]>,
    report: Vec<KeyFileReport>,
    /// Set when a re-created instance failed: every request answers UNAVAILABLE.
    broken: bool,
    /// The reused request buffer (capacity MAX_REQUEST, so it never moves).
    spare: Vec<u8>,
}

fn imports(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap("keycell", "in_len", |c: Caller<'_, Host>| c.data().request().len() as i32)?;
    linker.func_wrap("keycell", "in_read8", |c: Caller<'_, Host>, off: i32| -> i64 {
        let input = c.data().request();
        let mut v = [0u8; 8];
        for (i, byte) in v.iter_mut().enumerate() {
            let at = off as i64 + i as i64;
            if at >= 0 && (at as usize) < input.len() {
                *byte = input[at as usize];
            }
        }
        i64::from_le_bytes(v)
    })?;
    linker.func_wrap("keycell", "in_read1", |c: Caller<'_, Host>, off: i32| -> i32 {
        let input = c.data().request();
        if off >= 0 && (off as usize) < input.len() { input[off as usize] as i32 } else { -1 }
    })?;
    linker.func_wrap("keycell", "out_write1", |mut c: Caller<'_, Host>, off: i32, byte: i32| -> wasmtime::Result<()> {
        if off < 0 || off as usize >= MAX_OUTPUT {
            wasmtime::bail!("guest response too large");
        }
        c.data_mut().output[off as usize] = byte as u8;
        Ok(())
    })?;
    linker.func_wrap("keycell", "out_write8", |mut c: Caller<'_, Host>, off: i32, v: i64| -> wasmtime::Result<()> {
        if off < 0 || off as usize + 8 > MAX_OUTPUT {
            wasmtime::bail!("guest response too large");
        }
        c.data_mut().output[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    })?;
    linker.func_wrap("keycell", "rand8", |mut c: Caller<'_, Host>| -> wasmtime::Result<i64> {
        let host = c.data_mut();
        if host.entropy_used + 8 > host.entropy.len() {
            host.urandom.read_exact(&mut host.entropy)?;
            host.entropy_used = 0;
        }
        let at = host.entropy_used;
        let mut v = [0u8; 8];
        v.copy_from_slice(&host.entropy[at..at + 8]);
        zero(&mut host.entropy[at..at + 8]);
        host.entropy_used += 8;
        let value = i64::from_le_bytes(v);
        zero(&mut v);
        Ok(value)
    })?;
    Ok(linker)
}

impl Compartment {
    fn create(wasm: &[u8], self_test: SelfTest, options: Options) -> Result<Compartment, String> {
        let mut config = Config::new();
        config.wasm_wide_arithmetic(true);
        config.cranelift_opt_level(OptLevel::Speed);
        // Linear memory as one anonymous mapping (no copy-on-write image of the data segment), so
        // the guest's memory is a single region the isolation tests can tell apart.
        config.memory_init_cow(false);
        // Tables filled at instantiation: lazily initialised ones add a check to every indirect
        // call, which cost P-256 signing about a sixth of its rate (bench/wasmtime).
        config.table_lazy_init(false);
        let engine = Engine::new(&config).map_err(|e| format!("wasmtime: {e}"))?;
        let module = Module::new(&engine, wasm).map_err(|e| format!("the module does not compile: {e}"))?;
        let linker = imports(&engine).map_err(|e| format!("wasmtime: {e}"))?;
        let mut compartment = Compartment {
            engine,
            module,
            linker,
            options,
            self_test,
            guest: None,
            master_key_id: None,
            report: Vec::new(),
            broken: false,
            spare: Vec::with_capacity(MAX_REQUEST),
        };
        compartment.instantiate()?;
        Ok(compartment)
    }

    fn new_guest(&self) -> Result<Guest, String> {
        let urandom = File::open("/dev/urandom").map_err(|e| format!("cannot open /dev/urandom: {e}"))?;
        let host = Host {
            input: Vec::new(),
            base: 0,
            output: vec![0u8; MAX_OUTPUT].into_boxed_slice(),
            entropy: [0u8; 512],
            entropy_used: 512,
            urandom,
        };
        let mut store = Store::new(&self.engine, host);
        let instance = self.linker.instantiate(&mut store, &self.module).map_err(|e| format!("the module does not instantiate: {e}"))?;
        let mut exports = Vec::with_capacity(EXPORTS.len());
        for name in EXPORTS {
            exports.push(instance.get_typed_func::<(), i32>(&mut store, name).map_err(|e| format!("{name}: {e}"))?);
        }
        Ok(Guest { store, exports })
    }

    /// Calls one export with `input` (moved in, handed back); the guest reads it from `base`.
    fn invoke(guest: &mut Guest, export: usize, input: &mut Vec<u8>, base: usize) -> Call {
        let host = guest.store.data_mut();
        std::mem::swap(&mut host.input, input);
        host.base = base;
        let result = guest.exports[export].call(&mut guest.store, ());
        let host = guest.store.data_mut();
        std::mem::swap(&mut host.input, input);
        host.base = 0;
        scrub_stack();
        match result {
            Ok(n) => Call::Returned(n),
            Err(_) => Call::Trapped,
        }
    }

    fn invoke_bytes(guest: &mut Guest, export: usize, bytes: &[u8]) -> Call {
        let mut input = bytes.to_vec();
        let result = Self::invoke(guest, export, &mut input, 0);
        zero(&mut input);
        result
    }

    /// A fresh instance with the tag checked, the self-test passed, the master key given and the
    /// key directory loaded. A key file that traps the guest is skipped on the next attempt.
    fn instantiate(&mut self) -> Result<(), String> {
        self.guest = None;
        let mut poisoned = HashSet::new();
        loop {
            let mut guest = self.new_guest()?;
            let tag = Self::invoke_bytes(&mut guest, KC_TAG, &[]);
            let output = &guest.store.data().output;
            if !matches!(tag, Call::Returned(n) if n as usize == GUEST_TAG.len() && &output[..GUEST_TAG.len()] == GUEST_TAG) {
                return Err("the module is not a keycell guest (tag mismatch)".into());
            }
            self.run_self_test(&mut guest)?;
            self.set_master_key(&mut guest)?;
            match self.load_keys(&mut guest, &mut poisoned) {
                Some(report) => {
                    self.report = report;
                    self.guest = Some(guest);
                    return Ok(());
                }
                None => continue,
            }
        }
    }

    fn run_self_test(&self, guest: &mut Guest) -> Result<(), String> {
        let mut loaded: Vec<[u8; 32]> = Vec::new();
        let result = (|| {
            for key in &self.self_test.keys {
                let fail = |what: String| format!("the guest failed its self-test: {}: {what}", key.name);
                let record = match Self::invoke_bytes(guest, KC_LOAD, &key.der) {
                    Call::Returned(n) if n >= 33 => n,
                    Call::Returned(n) => return Err(fail(format!("load answered {n}"))),
                    Call::Trapped => return Err(fail("load answered trapped".into())),
                };
                let _ = record;
                let mut id = [0u8; 32];
                id.copy_from_slice(&guest.store.data().output[1..33]);
                loaded.push(id);
                if id != key.id {
                    return Err(fail("wrong public key".into()));
                }
                let mut request = Vec::with_capacity(34 + self.self_test.digest.len());
                request.extend_from_slice(&id);
                request.push(key.alg);
                request.push(0);
                request.extend_from_slice(&self.self_test.digest);
                let signed = match Self::invoke_bytes(guest, KC_SIGN, &request) {
                    Call::Returned(n) if n > 0 => n as usize,
                    Call::Returned(n) => return Err(fail(format!("sign answered {n}"))),
                    Call::Trapped => return Err(fail("sign answered trapped".into())),
                };
                if let Some(expected) = &key.signature {
                    if &guest.store.data().output[..signed] != expected.as_slice() {
                        return Err(fail("wrong signature".into()));
                    }
                }
            }
            Ok(())
        })();
        for id in &loaded {
            Self::invoke_bytes(guest, KC_DROP, id);
        }
        zero(&mut guest.store.data_mut().output);
        result
    }

    /// Gives the guest its master key: read from the file straight into the request, or on first
    /// start made by the guest and written to the file. Every buffer that held it is zeroed.
    fn set_master_key(&mut self, guest: &mut Guest) -> Result<(), String> {
        let Some(path) = self.options.master_key.clone() else { return Ok(()) };
        let budget = self.options.cache_bytes.to_le_bytes();
        let shown = path.display();
        let size = match std::fs::metadata(&path) {
            Ok(meta) => Some(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read the master key {shown}: {:?}", e.kind())),
        };
        let id = match size {
            None => {
                if !self.options.create_master_key {
                    return Err(format!("the master key {shown} is missing"));
                }
                let result = Self::invoke_bytes(guest, KC_MASTER_NEW, &budget);
                if !matches!(result, Call::Returned(n) if n as usize == 2 * MASTER_KEY_BYTES) {
                    return Err("the guest could not make a master key".into());
                }
                let output = &mut guest.store.data_mut().output;
                let written = write_new_key_file(&path, &output[..MASTER_KEY_BYTES]);
                zero(&mut output[..MASTER_KEY_BYTES]);
                written.map_err(|e| format!("cannot write the master key {shown}: {e}"))?;
                output[MASTER_KEY_BYTES..2 * MASTER_KEY_BYTES].try_into().unwrap()
            }
            Some(size) if size as usize != MASTER_KEY_BYTES => {
                return Err(format!("the master key {shown} is {size} bytes, not {MASTER_KEY_BYTES}"));
            }
            Some(_) => {
                // Exactly the capacity it needs, so the key is never copied by a reallocation.
                let mut request = Vec::with_capacity(budget.len() + MASTER_KEY_BYTES);
                request.extend_from_slice(&budget);
                request.resize(budget.len() + MASTER_KEY_BYTES, 0);
                let read = File::open(&path).and_then(|mut f| f.read_exact(&mut request[budget.len()..]));
                let result = match read {
                    Ok(()) => Some(Self::invoke(guest, KC_MASTER_LOAD, &mut request, 0)),
                    Err(_) => None,
                };
                zero(&mut request);
                match result {
                    Some(Call::Returned(n)) if n as usize == MASTER_KEY_BYTES => {}
                    Some(_) => return Err(format!("the guest refused the master key {shown}")),
                    None => return Err(format!("cannot read the master key {shown}")),
                }
                guest.store.data().output[..MASTER_KEY_BYTES].try_into().unwrap()
            }
        };
        self.master_key_id = Some(id);
        Ok(())
    }

    /// Loads every key file; `None` when one trapped the guest (it is then poisoned).
    fn load_keys(&self, guest: &mut Guest, poisoned: &mut HashSet<String>) -> Option<Vec<KeyFileReport>> {
        let Some(dir) = &self.options.keys_dir else { return Some(Vec::new()) };
        let mut names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(e) => {
                return Some(vec![KeyFileReport::Skipped(
                    dir.display().to_string(),
                    format!("cannot read the key directory: {:?}", e.kind()),
                )]);
            }
        };
        names.sort();
        let mut report = Vec::new();
        for name in names {
            if poisoned.contains(&name) {
                report.push(KeyFileReport::Skipped(name, "the signer failed while loading it".into()));
                continue;
            }
            match Self::load_key(guest, &dir.join(&name)) {
                Err(why) => report.push(KeyFileReport::Skipped(name, why)),
                Ok(None) => {
                    poisoned.insert(name);
                    return None;
                }
                Ok(Some(record)) => report.push(KeyFileReport::Loaded(name, record)),
            }
        }
        Some(report)
    }

    /// One key file into the guest: its record, `None` for a trap, or why it was skipped.
    fn load_key(guest: &mut Guest, path: &Path) -> Result<Option<Vec<u8>>, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat: {:?}", e.kind()))?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        let size = meta.len();
        if size == 0 || size > MAX_KEY_FILE {
            return Err(format!("size {size} is outside 1..{MAX_KEY_FILE} bytes"));
        }
        let mut buffer = vec![0u8; size as usize];
        let read = File::open(path).and_then(|mut f| f.read_exact(&mut buffer));
        let result = match read {
            Ok(()) => Ok(Self::invoke(guest, KC_LOAD, &mut buffer, 0)),
            Err(e) => Err(format!("cannot read: {:?}", e.kind())),
        };
        zero(&mut buffer);
        match result? {
            Call::Trapped => Ok(None),
            Call::Returned(-3) => {
                Err("not a supported private key (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA 2048/3072/4096, P-256, P-384)".into())
            }
            Call::Returned(-7) => Err("the signer has no room for another key".into()),
            Call::Returned(n) if n < 0 => Err(format!("rejected ({n})")),
            Call::Returned(n) => Ok(Some(guest.store.data().output[..n as usize].to_vec())),
        }
    }

    /// Answers one protocol request into `response` (`status || body`).
    fn handle(&mut self, request: &[u8], response: &mut Vec<u8>) {
        if self.broken {
            response.push(STATUS_UNAVAILABLE);
            return;
        }
        let op = request.first().copied().unwrap_or(0);
        if op == OP_MASTER_KEY_ID {
            match &self.master_key_id {
                Some(id) => {
                    response.push(STATUS_OK);
                    response.extend_from_slice(id);
                }
                None => response.push(STATUS_NO_MASTER_KEY),
            }
            return;
        }
        let Some(export) = export_of(op) else {
            response.push(STATUS_BAD_OP);
            return;
        };
        let guest = self.guest.as_mut().expect("a guest unless broken");
        // The request is copied into the reused buffer, whose capacity it never exceeds.
        let mut input = std::mem::take(&mut self.spare);
        input.extend_from_slice(request);
        let result = Self::invoke(guest, export, &mut input, 1);
        zero(&mut input);
        input.clear();
        self.spare = input;
        match result {
            Call::Trapped => {
                response.push(STATUS_GUEST_TRAPPED);
                if let Err(why) = self.instantiate() {
                    // The new instance must not sign: answer UNAVAILABLE from now on.
                    eprintln!("keycell-wasmtime-host: the guest trapped and could not be re-created: {why}");
                    self.broken = true;
                }
            }
            Call::Returned(n) if n < 0 => response.push((-n) as u8),
            Call::Returned(n) => {
                let output = &mut guest.store.data_mut().output;
                let body = &output[..n as usize];
                if export == KC_TAG && body != GUEST_TAG {
                    response.push(STATUS_UNAVAILABLE);
                    return;
                }
                response.push(STATUS_OK);
                response.extend_from_slice(body);
                zero(&mut output[..n as usize]);
            }
        }
    }
}

fn write_new_key_file(path: &Path, key: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(key)?;
    file.sync_all()
}

/// Reads frames from a descriptor without any buffer but its own, which it zeroes as it goes.
struct FrameReader {
    file: File,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new(file: File) -> FrameReader {
        FrameReader { file, buffer: vec![0u8; MAX_REQUEST + 4], start: 0, end: 0 }
    }

    /// Whether a whole frame is already buffered (nothing more to read before answering it).
    fn has_frame(&self) -> bool {
        let available = self.end - self.start;
        available >= 4 && {
            let len = u32::from_le_bytes(self.buffer[self.start..self.start + 4].try_into().unwrap()) as usize;
            available >= 4 + len
        }
    }

    fn fill(&mut self, want: usize) -> io::Result<bool> {
        while self.end - self.start < want {
            if self.start > 0 {
                let (start, end) = (self.start, self.end);
                self.buffer.copy_within(start..end, 0);
                let stale = end - start;
                zero(&mut self.buffer[stale..end]);
                self.start = 0;
                self.end = stale;
            }
            let n = self.file.read(&mut self.buffer[self.end..])?;
            if n == 0 {
                return Ok(false);
            }
            self.end += n;
        }
        Ok(true)
    }

    /// The next frame, handed to `f`, then zeroed; `Ok(false)` at the end of input.
    fn next(&mut self, limit: usize, mut f: impl FnMut(Option<&[u8]>)) -> io::Result<bool> {
        if !self.fill(4)? {
            return Ok(false);
        }
        let len = u32::from_le_bytes(self.buffer[self.start..self.start + 4].try_into().unwrap()) as usize;
        self.start += 4;
        if len > limit {
            // Too large to buffer: skip it and answer without it.
            let mut left = len;
            while left > 0 {
                if !self.fill(1)? {
                    return Ok(false);
                }
                let take = left.min(self.end - self.start);
                self.start += take;
                left -= take;
            }
            f(None);
            return Ok(true);
        }
        if !self.fill(len)? {
            return Ok(false);
        }
        let (start, end) = (self.start, self.start + len);
        f(Some(&self.buffer[start..end]));
        zero(&mut self.buffer[start..end]);
        self.start = end;
        Ok(true)
    }
}

/// Reads the init frame: the module, then the self-test digest and keys.
fn parse_init(frame: &[u8]) -> Option<(Vec<u8>, SelfTest)> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let bytes = frame.get(at..at + n)?;
        at += n;
        Some(bytes)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) as usize;
    let wasm_len = u32_at(take(4)?);
    let wasm = take(wasm_len)?.to_vec();
    let digest_len = u32_at(take(4)?);
    let digest = take(digest_len)?.to_vec();
    let count = take(1)?[0] as usize;
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = u32_at(take(4)?);
        let name = String::from_utf8(take(name_len)?.to_vec()).ok()?;
        let der_len = u32_at(take(4)?);
        let der = take(der_len)?.to_vec();
        let id: [u8; 32] = take(32)?.try_into().ok()?;
        let alg = take(1)?[0];
        let sig_len = u32_at(take(4)?);
        let signature = if sig_len == 0 { None } else { Some(take(sig_len)?.to_vec()) };
        keys.push(SelfTestKey { name, der, id, alg, signature });
    }
    Some((wasm, SelfTest { digest, keys }))
}

fn encode_report(report: &[KeyFileReport], out: &mut Vec<u8>) {
    out.extend_from_slice(&(report.len() as u32).to_le_bytes());
    for entry in report {
        let (kind, name, payload) = match entry {
            KeyFileReport::Loaded(name, record) => (0u8, name, record.as_slice()),
            KeyFileReport::Skipped(name, why) => (1u8, name, why.as_bytes()),
        };
        out.push(kind);
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options { master_key: None, create_master_key: false, keys_dir: None, cache_bytes: 64 * 1024 * 1024 };
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--master-key") => options.master_key = Some(args.next().ok_or("--master-key needs a path")?.into()),
            Some("--create-master-key") => options.create_master_key = true,
            Some("--keys") => options.keys_dir = Some(args.next().ok_or("--keys needs a directory")?.into()),
            Some("--cache-bytes") => {
                let value = args.next().ok_or("--cache-bytes needs a number")?;
                options.cache_bytes = value.to_str().and_then(|v| v.parse().ok()).ok_or("--cache-bytes needs a number")?;
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(options)
}

fn send(frame: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = frame.len();
    frame.extend_from_slice(&[0; 4]);
    body(frame);
    let len = (frame.len() - at - 4) as u32;
    frame[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("keycell-wasmtime-host: {why}");
            std::process::exit(2);
        }
    };
    // SAFETY: descriptors 0 and 1 are this process's stdin and stdout, used nowhere else; unlike
    // std's Stdin and Stdout they carry no buffer of their own that would keep request bytes.
    let (input, mut output) = unsafe { (File::from_raw_fd(0), File::from_raw_fd(1)) };
    let mut reader = FrameReader::new(input);
    let mut frames: Vec<u8> = Vec::with_capacity(256 * 1024);

    let mut init = None;
    let got = reader.next(MAX_REQUEST, |frame| init = frame.and_then(parse_init));
    let Ok(true) = got else { std::process::exit(1) };
    let started = match init {
        None => Err("the init frame is malformed".to_string()),
        Some((wasm, self_test)) => Compartment::create(&wasm, self_test, options),
    };
    let mut compartment = match started {
        Ok(compartment) => {
            send(&mut frames, |f| {
                f.push(0);
                encode_report(&compartment.report, f);
            });
            compartment
        }
        Err(why) => {
            send(&mut frames, |f| {
                f.push(1);
                f.extend_from_slice(why.as_bytes());
            });
            let _ = output.write_all(&frames);
            std::process::exit(1);
        }
    };
    if output.write_all(&frames).is_err() {
        std::process::exit(1);
    }
    frames.clear();

    loop {
        let more = reader.next(MAX_REQUEST, |frame| {
            send(&mut frames, |f| match frame {
                Some(request) => compartment.handle(request, f),
                None => f.push(STATUS_BAD_REQUEST),
            });
        });
        match more {
            Ok(true) => {}
            _ => break,
        }
        // Answers queue while more requests are already here; they leave together.
        if !reader.has_frame() {
            if output.write_all(&frames).is_err() {
                break;
            }
            frames.clear();
        }
    }
}
