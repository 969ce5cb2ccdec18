// Proves rust-signer/ABI.md against wasm/signer.wasm itself, with a minimal
// host (test/_guest_host.ts, nothing from src/), keys made by the openssl CLI, and
// signatures checked by openssl and WebCrypto.

import assert from "node:assert/strict";
import { ecdsaDerToRaw, ecdsaRawToDer, HASH_BYTES, type Hash, opensslVerify, type Scheme, webCryptoCheck } from "./_verify.ts";
import { WASM, wasmModule } from "./_wasm.ts";
import { tempDirSync } from "./_temp.ts";
import { type Bytes, GuestHost } from "./_guest_host.ts";

const BAD_REQUEST = -1;
const KEY_NOT_FOUND = -2;
const BAD_KEY = -3;
const WRONG_KEY_TYPE = -4;
const BAD_DIGEST_LENGTH = -5;

const FLAG_RAW = 1;
const FLAG_RS = 2;

type Family = "RSA" | "EC";

interface Alg {
  code: number;
  scheme: Scheme;
  hash: Hash;
}

const ALGS: Alg[] = [
  { code: 1, scheme: "pkcs1", hash: "sha256" },
  { code: 2, scheme: "pkcs1", hash: "sha384" },
  { code: 3, scheme: "pkcs1", hash: "sha512" },
  { code: 4, scheme: "pss", hash: "sha256" },
  { code: 5, scheme: "pss", hash: "sha384" },
  { code: 6, scheme: "pss", hash: "sha512" },
  { code: 7, scheme: "ecdsa", hash: "sha256" },
  { code: 8, scheme: "ecdsa", hash: "sha384" },
  { code: 9, scheme: "ecdsa", hash: "sha512" },
  { code: 10, scheme: "pkcs1", hash: "sha1" },
  { code: 11, scheme: "pkcs1", hash: "sha224" },
  { code: 12, scheme: "pkcs1", hash: "md5-sha1" },
  { code: 13, scheme: "ecdsa", hash: "sha1" },
  { code: 14, scheme: "ecdsa", hash: "sha224" },
  { code: 15, scheme: "ecdsa", hash: "md5-sha1" },
];

interface Spec {
  code: number;
  family: Family;
  name: string;
  bits?: number;
  curve?: string;
  webCurve?: string;
  order?: number;
}

const SPECS: Spec[] = [
  { code: 1, family: "RSA", name: "rsa2048", bits: 2048 },
  { code: 2, family: "RSA", name: "rsa3072", bits: 3072 },
  { code: 3, family: "RSA", name: "rsa4096", bits: 4096 },
  { code: 4, family: "EC", name: "p256", curve: "prime256v1", webCurve: "P-256", order: 32 },
  { code: 5, family: "EC", name: "p384", curve: "secp384r1", webCurve: "P-384", order: 48 },
];

function familyOf(s: Scheme): Family {
  return s === "ecdsa" ? "EC" : "RSA";
}

// ---------------------------------------------------------------- host side

/** The ABI's host half, with the response buffer cleared before each call so no stale byte passes for output. */
class Guest extends GuestHost {
  override call(name: string, req?: Uint8Array): { code: number; out: Bytes } {
    this.out.fill(0);
    return super.call(name, req);
  }
}

interface KeyRecord {
  spec: number;
  id: Bytes;
  spki: Bytes;
}

function parseRecord(b: Bytes): KeyRecord {
  assert.ok(b.length > 33, "key record too short");
  return { spec: b[0], id: b.slice(1, 33), spki: b.slice(33) };
}

function concat(...parts: Bytes[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function signReq(id: Bytes, alg: number, flags: number, msg: Bytes): Bytes {
  return concat(id, new Uint8Array([alg, flags]), msg);
}

const hex = (b: Bytes) => b.toHex();

// ---------------------------------------------------------------- openssl side

const dir = tempDirSync("keycell-guest-abi-");
let fileSeq = 0;

function openssl(args: string[]): { ok: boolean; out: Bytes; err: string } {
  const r = new Deno.Command("openssl", { args, stdin: "null", stdout: "piped", stderr: "piped" }).outputSync();
  return { ok: r.success, out: r.stdout, err: new TextDecoder().decode(r.stderr) };
}

function must(args: string[]): Bytes {
  const r = openssl(args);
  if (!r.ok) throw new Error(`openssl ${args.join(" ")}: ${r.err}`);
  return r.out;
}

function tmp(name: string, data?: Bytes): string {
  const path = `${dir}/${fileSeq++}-${name}`;
  if (data) Deno.writeFileSync(path, data);
  return path;
}

function digestOf(hash: Hash, msg: Bytes): Bytes {
  const f = tmp("msg", msg);
  if (hash === "md5-sha1") {
    return concat(must(["dgst", "-md5", "-binary", f]), must(["dgst", "-sha1", "-binary", f]));
  }
  return must(["dgst", `-${hash}`, "-binary", f]);
}

interface KeyFiles {
  spec: Spec;
  pkcs8Pem: Bytes;
  pkcs8Der: Bytes;
  tradPem: Bytes; // PKCS#1 or SEC1
  tradDer: Bytes;
  withParams?: Bytes; // EC PARAMETERS block then SEC1
  pubDer: Bytes;
  keyPath: string;
  pubPath: string;
}

function makeKey(spec: Spec): KeyFiles {
  const keyPath = tmp(`${spec.name}.pem`);
  if (spec.family === "RSA") {
    must(["genpkey", "-algorithm", "RSA", "-pkeyopt", `rsa_keygen_bits:${spec.bits}`, "-out", keyPath]);
  } else {
    must(["genpkey", "-algorithm", "EC", "-pkeyopt", `ec_paramgen_curve:${spec.curve}`, "-out", keyPath]);
  }
  const tool = spec.family === "RSA" ? "rsa" : "ec";
  const trad = spec.family === "RSA" ? ["-traditional"] : [];
  const pubPath = tmp(`${spec.name}.pub.pem`);
  must(["pkey", "-in", keyPath, "-pubout", "-out", pubPath]);
  const files: KeyFiles = {
    spec,
    pkcs8Pem: Deno.readFileSync(keyPath),
    pkcs8Der: must(["pkey", "-in", keyPath, "-outform", "DER"]),
    tradPem: must([tool, "-in", keyPath, ...trad]),
    tradDer: must([tool, "-in", keyPath, ...trad, "-outform", "DER"]),
    pubDer: must(["pkey", "-in", keyPath, "-pubout", "-outform", "DER"]),
    keyPath,
    pubPath,
  };
  if (spec.family === "EC") {
    const params = must(["ecparam", "-name", spec.curve!]);
    files.withParams = concat(params, files.tradPem);
  }
  return files;
}

async function sha256(b: Bytes): Promise<Bytes> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", b));
}

// ---------------------------------------------------------------- fixtures

const module = wasmModule();
const KEYS = SPECS.map(makeKey);
const MSG = new TextEncoder().encode("keycell signs this message; ".repeat(300));
const webcryptoUnsupported = new Set<string>();

Deno.test("kc_load reads every key form and ids are SHA-256 of the SPKI", async () => {
  const g = new Guest(module);
  for (const k of KEYS) {
    const expectedId = await sha256(k.pubDer);
    const forms: [string, Bytes][] = [
      ["PKCS#8 PEM", k.pkcs8Pem],
      ["PKCS#8 DER", k.pkcs8Der],
      [k.spec.family === "RSA" ? "PKCS#1 PEM" : "SEC1 PEM", k.tradPem],
      [k.spec.family === "RSA" ? "PKCS#1 DER" : "SEC1 DER", k.tradDer],
    ];
    if (k.withParams) forms.push(["SEC1 PEM after EC PARAMETERS", k.withParams]);
    if (k.spec.family === "RSA") {
      assert.ok(new TextDecoder().decode(k.tradPem).includes("BEGIN RSA PRIVATE KEY"));
    } else {
      assert.ok(new TextDecoder().decode(k.tradPem).includes("BEGIN EC PRIVATE KEY"));
      assert.ok(new TextDecoder().decode(k.withParams!).startsWith("-----BEGIN EC PARAMETERS-----"));
    }
    for (const [form, bytes] of forms) {
      const rec = parseRecord(g.ok("kc_load", bytes));
      assert.equal(rec.spec, k.spec.code, `${k.spec.name} ${form}: spec`);
      assert.equal(hex(rec.id), hex(expectedId), `${k.spec.name} ${form}: id`);
      assert.equal(hex(rec.spki), hex(k.pubDer), `${k.spec.name} ${form}: spki`);
    }
  }
  // Loading the same key in five forms keeps one copy of each.
  const list = g.ok("kc_list");
  const count = new DataView(list.buffer).getUint32(0, true);
  assert.equal(count, KEYS.length);
  assert.equal(list.length, 4 + 33 * KEYS.length);
  for (let i = 0; i < count; i++) {
    const spec = list[4 + 33 * i];
    const id = list.slice(5 + 33 * i, 37 + 33 * i);
    const k = KEYS.find((x) => x.spec.code === spec)!;
    assert.equal(hex(id), hex(await sha256(k.pubDer)));
  }
  // kc_public_key answers the same record.
  for (const k of KEYS) {
    const id = await sha256(k.pubDer);
    const rec = parseRecord(g.ok("kc_public_key", id));
    assert.equal(hex(rec.spki), hex(k.pubDer));
    assert.equal(rec.spec, k.spec.code);
  }
});

Deno.test("kc_sign: every algorithm on every loaded key", async () => {
  const g = new Guest(module);
  const ids = new Map<string, Bytes>();
  for (const k of KEYS) ids.set(k.spec.name, parseRecord(g.ok("kc_load", k.pkcs8Pem)).id);
  let md5sha1Mode = "";
  for (const k of KEYS) {
    const id = ids.get(k.spec.name)!;
    for (const a of ALGS) {
      const what = `${k.spec.name} alg ${a.code} (${a.scheme}/${a.hash})`;
      const digest = digestOf(a.hash, MSG);
      assert.equal(digest.length, HASH_BYTES[a.hash]);
      if (familyOf(a.scheme) !== k.spec.family) {
        assert.equal(g.call("kc_sign", signReq(id, a.code, 0, digest)).code, WRONG_KEY_TYPE, what);
        continue;
      }
      const sigDigest = g.ok("kc_sign", signReq(id, a.code, 0, digest));
      const sigRaw = g.ok("kc_sign", signReq(id, a.code, FLAG_RAW, MSG));

      if (a.scheme === "pkcs1") {
        // Deterministic: must equal openssl's signature over the same digest,
        // and RAW must equal DIGEST.
        const dg = tmp("dgst", digest);
        let expected: Bytes;
        const r = openssl(["pkeyutl", "-sign", "-inkey", k.keyPath, "-in", dg, "-pkeyopt", `digest:${a.hash}`]);
        if (r.ok) {
          expected = r.out;
          if (a.hash === "md5-sha1") md5sha1Mode = "pkeyutl digest:md5-sha1";
        } else {
          assert.equal(a.hash, "md5-sha1", `${what}: openssl pkeyutl -sign failed: ${r.err}`);
          // No DigestInfo for MD5+SHA-1 (TLS 1.0/1.1): the padded block holds
          // just the 36 bytes, which -verifyrecover gives back.
          const rec = must(["pkeyutl", "-verifyrecover", "-pubin", "-inkey", k.pubPath, "-in", tmp("sig", sigDigest)]);
          assert.equal(hex(rec), hex(digest), `${what}: recovered digest`);
          expected = sigDigest;
          md5sha1Mode = "pkeyutl -verifyrecover";
        }
        assert.equal(hex(sigDigest), hex(expected), `${what}: equals openssl`);
        assert.equal(hex(sigRaw), hex(sigDigest), `${what}: RAW equals DIGEST`);
        assert.equal(sigDigest.length, k.spec.bits! / 8);
      } else {
        // Randomized: verify both with openssl over the digest.
        const sigs: [string, Bytes][] = [["DIGEST", sigDigest], ["RAW", sigRaw]];
        if (a.scheme === "ecdsa") {
          const rs = g.ok("kc_sign", signReq(id, a.code, FLAG_RS, digest));
          const rsRaw = g.ok("kc_sign", signReq(id, a.code, FLAG_RS | FLAG_RAW, MSG));
          assert.equal(rs.length, 2 * k.spec.order!, `${what}: r||s width`);
          assert.equal(rsRaw.length, 2 * k.spec.order!, `${what}: r||s width`);
          assert.equal(sigDigest[0], 0x30, `${what}: DER`);
          sigs.push(["r||s", ecdsaRawToDer(rs)], ["r||s RAW", ecdsaRawToDer(rsRaw)]);
          let web = await webCryptoCheck(k.pubDer, a, MSG, rs);
          if (web === false) {
            // Deno's WebCrypto refuses digests shorter than half the curve
            // order (P-384 with SHA-1), even from openssl: then it cannot judge.
            const theirs = ecdsaDerToRaw(
              must(["pkeyutl", "-sign", "-inkey", k.keyPath, "-in", tmp("dgst", digest)]),
              k.spec.order!,
            );
            if (await webCryptoCheck(k.pubDer, a, MSG, theirs) === false) {
              web = "unsupported";
            }
          }
          if (web === "unsupported") {
            webcryptoUnsupported.add(`ECDSA ${k.spec.webCurve} ${a.hash}`);
          } else {
            assert.ok(web, `${what}: WebCrypto rejects r||s`);
            const webRaw = await webCryptoCheck(k.pubDer, a, MSG, rsRaw);
            assert.ok(webRaw, `${what}: WebCrypto rejects RAW r||s`);
          }
        } else {
          for (const [mode, sig] of [["DIGEST", sigDigest], ["RAW", sigRaw]] as const) {
            const web = await webCryptoCheck(k.pubDer, a, MSG, sig);
            if (web === "unsupported") webcryptoUnsupported.add(`RSA-PSS ${a.hash}`);
            else assert.ok(web, `${what} ${mode}: WebCrypto rejects`);
          }
        }
        for (const [mode, sig] of sigs) {
          assert.ok(await opensslVerify(k.pubDer, a, digest, sig), `${what} ${mode}: openssl rejects`);
        }
        // The salt is the hash length: openssl refuses hash length + 1.
        if (a.scheme === "pss") {
          const longerSalt = { saltLength: HASH_BYTES[a.hash] + 1 };
          assert.equal(await opensslVerify(k.pubDer, a, digest, sigDigest, longerSalt), false, `${what}: salt length`);
        }
      }
      // PKCS#1 v1.5 through WebCrypto as well, where it knows the hash.
      if (a.scheme === "pkcs1") {
        const web = await webCryptoCheck(k.pubDer, a, MSG, sigDigest);
        if (web === "unsupported") webcryptoUnsupported.add(`RSASSA-PKCS1-v1_5 ${a.hash}`);
        else assert.ok(web, `${what}: WebCrypto rejects`);
      }
    }
  }
  assert.ok(md5sha1Mode, "MD5+SHA-1 was checked");
  console.log(`  MD5+SHA-1 PKCS#1 checked with ${md5sha1Mode}`);
  if (webcryptoUnsupported.size) {
    console.log(`  WebCrypto lacks (openssl verified these): ${[...webcryptoUnsupported].join(", ")}`);
  }
});

Deno.test("kc_generate: every spec makes a key that signs verifiably", async () => {
  const g = new Guest(module);
  for (const spec of SPECS) {
    const rec = parseRecord(g.ok("kc_generate", new Uint8Array([spec.code])));
    assert.equal(rec.spec, spec.code);
    assert.equal(hex(rec.id), hex(await sha256(rec.spki)));
    const pubPath = tmp(`gen-${spec.name}.der`, rec.spki);
    const text = new TextDecoder().decode(
      must(["pkey", "-pubin", "-inform", "DER", "-in", pubPath, "-text_pub", "-noout"]),
    );
    if (spec.family === "RSA") {
      assert.ok(text.includes(`(${spec.bits} bit)`), `${spec.name}: ${text.slice(0, 60)}`);
      assert.ok(text.includes("Exponent: 65537"));
    } else {
      assert.ok(text.includes(spec.curve === "prime256v1" ? "P-256" : "P-384"), text);
    }
    const algs = spec.family === "RSA" ? [1, 4] : [7, 8];
    for (const code of algs) {
      const a = ALGS[code - 1];
      const digest = digestOf(a.hash, MSG);
      const sig = g.ok("kc_sign", signReq(rec.id, code, 0, digest));
      assert.ok(await opensslVerify(rec.spki, a, digest, sig), `${spec.name} alg ${code}`);
      // WebCrypto's ECDSA signatures are r||s, not DER.
      const webSig = a.scheme === "ecdsa" ? g.ok("kc_sign", signReq(rec.id, code, FLAG_RS, digest)) : sig;
      const web = await webCryptoCheck(rec.spki, a, MSG, webSig);
      assert.notEqual(web, false, `${spec.name} alg ${code}: WebCrypto rejects`);
    }
  }
  const list = g.ok("kc_list");
  assert.equal(new DataView(list.buffer).getUint32(0, true), SPECS.length);
});

Deno.test("kc_drop frees the key: sign and public key then answer KEY_NOT_FOUND", () => {
  const g = new Guest(module);
  const rec = parseRecord(g.ok("kc_load", KEYS[3].pkcs8Pem));
  const digest = digestOf("sha256", MSG);
  g.ok("kc_sign", signReq(rec.id, 7, 0, digest));
  assert.equal(g.call("kc_drop", rec.id).code, 0);
  assert.equal(g.call("kc_sign", signReq(rec.id, 7, 0, digest)).code, KEY_NOT_FOUND);
  assert.equal(g.call("kc_public_key", rec.id).code, KEY_NOT_FOUND);
  assert.equal(g.call("kc_drop", rec.id).code, KEY_NOT_FOUND);
  assert.equal(new DataView(g.ok("kc_list").buffer).getUint32(0, true), 0);
  // And it can come back.
  assert.equal(hex(parseRecord(g.ok("kc_load", KEYS[3].pkcs8Der)).id), hex(rec.id));
});

Deno.test("error codes -1..-5", () => {
  const g = new Guest(module);
  const rsa = parseRecord(g.ok("kc_load", KEYS[0].pkcs8Pem));
  const ec = parseRecord(g.ok("kc_load", KEYS[3].pkcs8Pem));
  const d32 = new Uint8Array(32).fill(7);
  const unknownId = new Uint8Array(32).fill(0xab);

  // -1 BAD_REQUEST: short frames, unknown codes, bad flags.
  assert.equal(g.call("kc_sign", new Uint8Array(0)).code, BAD_REQUEST);
  assert.equal(g.call("kc_sign", concat(rsa.id, new Uint8Array([1]))).code, BAD_REQUEST);
  assert.equal(g.call("kc_sign", rsa.id.slice(0, 31)).code, BAD_REQUEST);
  for (const alg of [0, 16, 255]) {
    assert.equal(g.call("kc_sign", signReq(rsa.id, alg, 0, d32)).code, BAD_REQUEST, `alg ${alg}`);
  }
  for (const flags of [4, 8, 0x80, 0xff]) {
    assert.equal(g.call("kc_sign", signReq(ec.id, 7, flags, d32)).code, BAD_REQUEST, `flags ${flags}`);
  }
  assert.equal(g.call("kc_generate", new Uint8Array(0)).code, BAD_REQUEST);
  assert.equal(g.call("kc_generate", new Uint8Array([1, 1])).code, BAD_REQUEST);
  for (const spec of [0, 6, 255]) {
    assert.equal(g.call("kc_generate", new Uint8Array([spec])).code, BAD_REQUEST, `spec ${spec}`);
  }
  assert.equal(g.call("kc_public_key", rsa.id.slice(0, 31)).code, BAD_REQUEST);
  assert.equal(g.call("kc_public_key", concat(rsa.id, new Uint8Array([0]))).code, BAD_REQUEST);
  assert.equal(g.call("kc_drop", new Uint8Array(0)).code, BAD_REQUEST);
  assert.equal(g.call("kc_load", new Uint8Array(0)).code, BAD_REQUEST);
  assert.equal(g.call("kc_list", new Uint8Array([0])).code, BAD_REQUEST);

  // -2 KEY_NOT_FOUND.
  assert.equal(g.call("kc_sign", signReq(unknownId, 1, 0, d32)).code, KEY_NOT_FOUND);
  assert.equal(g.call("kc_public_key", unknownId).code, KEY_NOT_FOUND);
  assert.equal(g.call("kc_drop", unknownId).code, KEY_NOT_FOUND);

  // -3 BAD_KEY: garbage, truncated, wrong labels, unsupported sizes and curves.
  const enc = new TextEncoder();
  const rsa1024 = tmp("rsa1024.pem");
  must(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", rsa1024]);
  const p521 = tmp("p521.pem");
  must(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp521r1", "-out", p521]);
  const pemText = new TextDecoder().decode(KEYS[0].pkcs8Pem);
  const badKeys: [string, Bytes][] = [
    ["garbage", enc.encode("not a key at all")],
    ["random bytes", crypto.getRandomValues(new Uint8Array(300))],
    ["DER SEQUENCE junk", new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00])],
    ["truncated DER", KEYS[0].pkcs8Der.slice(0, 200)],
    ["DER with trailing bytes", concat(KEYS[0].pkcs8Der, new Uint8Array([0]))],
    ["RSA 1024 PKCS#8", Deno.readFileSync(rsa1024)],
    ["RSA 1024 PKCS#1", must(["rsa", "-in", rsa1024, "-traditional"])],
    ["P-521", Deno.readFileSync(p521)],
    ["public key PEM", Deno.readFileSync(KEYS[0].pubPath)],
    ["wrong label", enc.encode(pemText.replaceAll("PRIVATE KEY", "CERTIFICATE"))],
    ["mismatched END", enc.encode(pemText.replace("END PRIVATE KEY", "END RSA PRIVATE KEY"))],
    ["PKCS#8 under RSA label", enc.encode(pemText.replaceAll("PRIVATE KEY", "RSA PRIVATE KEY"))],
    ["bad base64", enc.encode(pemText.replace(/\n[A-Za-z0-9+/]/, "\n!"))],
    ["text after END", enc.encode(pemText + "trailing")],
  ];
  for (const [what, bytes] of badKeys) {
    assert.equal(g.call("kc_load", bytes).code, BAD_KEY, what);
  }

  // -4 WRONG_KEY_TYPE.
  assert.equal(g.call("kc_sign", signReq(rsa.id, 7, 0, d32)).code, WRONG_KEY_TYPE);
  assert.equal(g.call("kc_sign", signReq(ec.id, 1, 0, d32)).code, WRONG_KEY_TYPE);
  assert.equal(g.call("kc_sign", signReq(ec.id, 4, 0, d32)).code, WRONG_KEY_TYPE);

  // -5 BAD_DIGEST_LENGTH.
  for (const [id, alg, len] of [[rsa.id, 1, 31], [rsa.id, 1, 33], [rsa.id, 1, 0], [rsa.id, 12, 32],
    [rsa.id, 4, 48], [ec.id, 7, 64], [ec.id, 9, 32], [ec.id, 15, 20]] as const) {
    assert.equal(g.call("kc_sign", signReq(id, alg, 0, new Uint8Array(len))).code, BAD_DIGEST_LENGTH, `alg ${alg} len ${len}`);
  }
  // A RAW message has no length rule, even empty.
  assert.ok(g.call("kc_sign", signReq(ec.id, 7, FLAG_RAW, new Uint8Array(0))).code > 0);

  // The guest still works after all of that.
  assert.ok(g.call("kc_sign", signReq(rsa.id, 1, 0, d32)).code > 0);
});

Deno.test("kc_trap traps; kc_tag returns the tag, which is in the data segment", () => {
  const g = new Guest(module);
  assert.throws(() => g.call("kc_trap"), WebAssembly.RuntimeError);
  const tag = g.ok("kc_tag");
  assert.equal(new TextDecoder().decode(tag), "keycell.guest.v1");
  assert.equal(g.call("kc_tag", new Uint8Array([1])).code, BAD_REQUEST);
  const bytes = WASM;
  const needle = new TextEncoder().encode("keycell.guest.v1");
  let found = 0;
  for (let i = 0; i + needle.length <= bytes.length; i++) {
    if (needle.every((b, j) => bytes[i + j] === b)) found++;
  }
  assert.equal(found, 1, "the tag sits once in the module's data");
});

Deno.test("all exports take no arguments and return i32; no export is reachable past the allowlist", () => {
  const g = new Guest(module);
  const names = Object.keys(g.exports).sort();
  assert.deepEqual(names, [
    "kc_drop",
    "kc_generate",
    "kc_import",
    "kc_list",
    "kc_load",
    "kc_master_load",
    "kc_master_new",
    "kc_master_previous",
    "kc_public_key",
    "kc_reseal",
    "kc_sign",
    "kc_stats",
    "kc_tag",
    "kc_trap",
    "kc_unseal",
  ]);
  for (const n of names) assert.equal((g.exports[n] as unknown as { length: number }).length, 0, n);
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch {
    // best effort
  }
});
