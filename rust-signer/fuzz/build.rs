//! Builds what the harness links: the guest's Rust modules as they are in
//! `../src` (two wasm32-only intrinsics swapped for native stand-ins), its C
//! in `../c`, and BoringSSL from the Debian source tree that
//! `scripts/build-signer.sh` unpacks, all with libFuzzer's coverage counters.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const CC: &str = "clang-19";
const AR: &str = "llvm-ar-19";
const GUEST_MODULES: [&str; 9] = ["abi", "boring", "cache", "codes", "keys", "memory", "pem", "seal", "sign"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let signer = manifest.parent().unwrap().to_path_buf();
    let root = signer.parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=../src");
    println!("cargo:rerun-if-changed=../c");
    println!("cargo:rerun-if-changed=build.rs");

    write_guest_modules(&signer.join("src"), &out.join("guest_modules.rs"));

    let bssl = root.join(".cache/boringssl/src");
    if !bssl.join("sources.mk").exists() {
        panic!("{} is missing: run `deno task check:signer` once to unpack BoringSSL", bssl.display());
    }
    let flags = c_flags();
    let flags_id = {
        // A change of flags or compiler gets a fresh object directory.
        let version = Command::new(CC).arg("--version").output().expect("clang-19 is required").stdout;
        let mut h: u64 = 0xcbf29ce484222325;
        for b in flags.join(" ").bytes().chain(version) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    };
    let obj = root.join(format!(".cache/boringssl/obj-fuzz-{flags_id}"));
    let sources = crypto_sources(&bssl);
    let include = [format!("-I{}", bssl.join("src/include").display())];
    let crypto_objs = compile(&bssl, &sources, &obj, &flags, &["-Isrc/include".into(), "-Isrc/crypto".into()], false);
    archive(&out.join("libkc_fuzz_crypto.a"), &crypto_objs);

    let c_dir = signer.join("c");
    let mut c_files: Vec<String> = fs::read_dir(&c_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".c"))
        .collect();
    c_files.sort();
    // platform.c's vsnprintf replaces wasi-libc's in the guest; here it must
    // not replace the C library's, so it is renamed (and still fuzzed).
    let mut driver_flags = flags.clone();
    driver_flags.extend(include.iter().cloned());
    driver_flags.push("-Dvsnprintf=kcc_guest_vsnprintf".into());
    let driver_objs = compile(&c_dir, &c_files, &out.join("driver"), &driver_flags, &[], true);
    archive(&out.join("libkc_fuzz_driver.a"), &driver_objs);

    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=kc_fuzz_driver");
    println!("cargo:rustc-link-lib=static=kc_fuzz_crypto");
}

fn c_flags() -> Vec<String> {
    [
        "-O2",
        "-fPIC",
        "-g0",
        "-DOPENSSL_NO_ASM",
        "-D__TRUSTY__",
        "-std=gnu11",
        "-w",
        // assert() stays on: a failed BoringSSL assertion is a finding.
        "-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The guest's modules, each wrapped in `mod name { .. }` at the harness's
/// crate root so that their `crate::` paths resolve as in the guest.
fn write_guest_modules(src: &Path, out: &Path) {
    let mut text = String::new();
    for name in GUEST_MODULES {
        let body = fs::read_to_string(src.join(format!("{name}.rs"))).unwrap();
        let body: String = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("//!"))
            .map(|l| {
                l.replace("core::arch::wasm32::unreachable()", "crate::native::unreachable()")
                    .replace("core::arch::wasm32::memory_size(0)", "crate::native::memory_size()")
            })
            .collect::<Vec<_>>()
            .join("\n");
        text.push_str(&format!(
            "#[allow(dead_code, unused_imports, unused_attributes, clippy::all)]\nmod {name} {{\n{body}\n}}\n"
        ));
    }
    if fs::read_to_string(out).ok().as_deref() != Some(text.as_str()) {
        fs::write(out, text).unwrap();
    }
}

fn crypto_sources(bssl: &Path) -> Vec<String> {
    let mk = fs::read_to_string(bssl.join("sources.mk")).unwrap();
    let start = mk.find("crypto_sources :=").expect("sources.mk lists crypto_sources");
    let mut list = Vec::new();
    for line in mk[start..].lines().skip(1) {
        let item = line.trim().trim_end_matches('\\').trim();
        if item.ends_with(".c") {
            list.push(item.to_string());
        }
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    list.sort();
    list
}

/// Compiles `files` (relative to `dir`) into `obj`, two at a time per CPU;
/// an object already there is reused unless `always`.
fn compile(dir: &Path, files: &[String], obj: &Path, flags: &[String], extra: &[String], always: bool) -> Vec<PathBuf> {
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let outputs: Vec<PathBuf> = files.iter().map(|f| obj.join(format!("{f}.o"))).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= files.len() {
                    break;
                }
                let o = &outputs[i];
                if !always && o.exists() {
                    continue;
                }
                fs::create_dir_all(o.parent().unwrap()).unwrap();
                let tmp = o.with_extension("o.tmp");
                let status = Command::new(CC)
                    .current_dir(dir)
                    .args(flags)
                    .args(extra)
                    .arg("-c")
                    .arg(&files[i])
                    .arg("-o")
                    .arg(&tmp)
                    .status()
                    .expect("clang-19 runs");
                if status.success() {
                    fs::rename(&tmp, o).unwrap();
                } else {
                    failed.lock().unwrap().push(files[i].clone());
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    if !failed.is_empty() {
        panic!("compilation failed: {failed:?}");
    }
    outputs
}

fn archive(out: &Path, objs: &[PathBuf]) {
    let _ = fs::remove_file(out);
    let status = Command::new(AR).arg("rcs").arg(out).args(objs).status().expect("llvm-ar-19 runs");
    assert!(status.success(), "{AR} failed");
}
