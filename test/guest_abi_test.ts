// Proves rust-signer/ABI.md against wasm/signer.wasm itself, with a minimal
// host (test/_guest_host.ts, nothing from src/), keys made by the openssl CLI, and
// signatures checked by openssl and WebCrypto.

import assert from "node:assert/strict";
import { constants, createPrivateKey, sign as nodeSign, type SignKeyObjectInput } from "node:crypto";
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

// test/guest_wide_test.ts runs the kc_verify tests again over wasm/signer-wide.wasm, which V8 runs
// only in a child given the wide-arithmetic flag, by naming that module here.
const MODULE_PATH = Deno.env.get("KEYCELL_GUEST_ABI_MODULE");

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

const module = MODULE_PATH === undefined ? wasmModule() : new WebAssembly.Module(Deno.readFileSync(MODULE_PATH));
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

// ---------------------------------------------------------------- kc_verify

function verifyReq(alg: number, flags: number, spki: Bytes, sig: Bytes, msg: Bytes): Bytes {
  const u16 = (n: number) => new Uint8Array([n & 0xff, n >> 8]);
  return concat(new Uint8Array([alg, flags]), u16(spki.length), spki, u16(sig.length), sig, msg);
}

/** kc_verify's answer: 1 or 0 (checked to be one byte), or the error code. */
function verify(g: Guest, alg: number, flags: number, spki: Bytes, sig: Bytes, msg: Bytes): number {
  const { code, out } = g.call("kc_verify", verifyReq(alg, flags, spki, sig, msg));
  if (code < 0) return code;
  assert.equal(code, 1, "kc_verify answers one byte");
  assert.ok(out[0] === 0 || out[0] === 1, `kc_verify answered ${out[0]}`);
  return out[0];
}

function flipped(b: Bytes, at = b.length >> 1): Bytes {
  const out = b.slice();
  out[at] ^= 0x01;
  return out;
}

const byName = (name: string) => KEYS.find((k) => k.spec.name === name)!;

function tlv(tag: number, ...body: Bytes[]): Bytes {
  const b = concat(...body);
  const len = b.length < 0x80 ? [b.length] : b.length < 0x100 ? [0x81, b.length] : [0x82, b.length >> 8, b.length & 0xff];
  return concat(new Uint8Array([tag, ...len]), b);
}

/** An RSA SubjectPublicKeyInfo with modulus `n` (big-endian, unsigned) and exponent 65537, built by hand. */
function rsaSpki(n: Bytes): Bytes {
  const rsaEncryption = Uint8Array.fromHex("06092a864886f70d0101010500");
  const key = tlv(0x30, tlv(0x02, new Uint8Array([0]), n), tlv(0x02, Uint8Array.fromHex("010001")));
  return tlv(0x30, tlv(0x30, rsaEncryption), tlv(0x03, new Uint8Array([0]), key));
}

Deno.test("kc_verify: the guest's own signatures verify as DIGEST and RAW; a flipped message or signature byte does not", () => {
  const g = new Guest(module);
  for (const k of KEYS) {
    const id = parseRecord(g.ok("kc_load", k.pkcs8Pem)).id;
    const spki = k.pubDer;
    for (const a of ALGS.filter((a) => familyOf(a.scheme) === k.spec.family)) {
      const digest = digestOf(a.hash, MSG);
      const forms = a.scheme === "ecdsa" ? [0, FLAG_RS] : [0];
      for (const form of forms) {
        const what = `${k.spec.name} alg ${a.code} (${a.scheme}/${a.hash})${form ? " r||s" : ""}`;
        const sig = g.ok("kc_sign", signReq(id, a.code, form, digest));
        assert.equal(verify(g, a.code, form, spki, sig, digest), 1, `${what}: DIGEST`);
        assert.equal(verify(g, a.code, form | FLAG_RAW, spki, sig, MSG), 1, `${what}: RAW`);
        // The first byte: ECDSA reads only as many leading digest bits as the order has (SHA-512 on P-256).
        assert.equal(verify(g, a.code, form, spki, sig, flipped(digest, 0)), 0, `${what}: flipped digest`);
        assert.equal(verify(g, a.code, form | FLAG_RAW, spki, sig, flipped(MSG)), 0, `${what}: flipped message`);
        assert.equal(verify(g, a.code, form | FLAG_RAW, spki, sig, MSG.slice(1)), 0, `${what}: shorter message`);
        for (const at of [0, sig.length >> 1, sig.length - 1]) {
          assert.equal(verify(g, a.code, form, spki, flipped(sig, at), digest), 0, `${what}: signature byte ${at} flipped`);
        }
        if (a.scheme === "ecdsa") {
          // Each form read as the other is malformed, not an error.
          assert.equal(verify(g, a.code, form ^ FLAG_RS, spki, sig, digest), 0, `${what}: read in the other form`);
        }
      }
    }
  }
});

Deno.test("kc_verify: signatures made by node:crypto verify, and one with another PSS salt length does not", () => {
  const g = new Guest(module);
  const node: [string, number, string][] = [
    ["rsa2048", 1, "sha256"],
    ["rsa2048", 2, "sha384"],
    ["rsa3072", 3, "sha512"],
    ["rsa2048", 10, "sha1"],
    ["rsa2048", 11, "sha224"],
    ["rsa2048", 12, "md5-sha1"],
    ["rsa2048", 4, "sha256"],
    ["rsa4096", 5, "sha384"],
    ["rsa2048", 6, "sha512"],
    ["p256", 7, "sha256"],
    ["p256", 8, "sha384"],
    ["p384", 8, "sha384"],
    ["p384", 7, "sha256"],
    ["p384", 9, "sha512"],
  ];
  for (const [name, code, hash] of node) {
    const k = byName(name);
    const a = ALGS[code - 1];
    const key = createPrivateKey(new TextDecoder().decode(k.pkcs8Pem));
    const what = `${name} alg ${code} (${a.scheme}/${hash})`;
    const digest = digestOf(a.hash, MSG);
    const options: [number, Omit<SignKeyObjectInput, "key">][] = a.scheme === "pss"
      ? [[0, { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_BYTES[a.hash] }]]
      : a.scheme === "ecdsa"
      ? [[0, { dsaEncoding: "der" }], [FLAG_RS, { dsaEncoding: "ieee-p1363" }]]
      : [[0, {}]];
    for (const [form, opts] of options) {
      const sig = new Uint8Array(nodeSign(hash, MSG, { key, ...opts }));
      assert.equal(verify(g, code, form, k.pubDer, sig, digest), 1, `${what} ${JSON.stringify(opts)}: DIGEST`);
      assert.equal(verify(g, code, form | FLAG_RAW, k.pubDer, sig, MSG), 1, `${what} ${JSON.stringify(opts)}: RAW`);
      assert.equal(verify(g, code, form, k.pubDer, flipped(sig), digest), 0, `${what} ${JSON.stringify(opts)}: flipped`);
    }
    if (a.scheme === "pss") {
      for (const saltLength of [0, HASH_BYTES[a.hash] + 1]) {
        const sig = new Uint8Array(nodeSign(hash, MSG, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }));
        assert.equal(verify(g, code, 0, k.pubDer, sig, digest), 0, `${what}: salt ${saltLength}`);
      }
    }
  }
  // PKCS#1 v1.5 and PSS are told apart: one's signature is not the other's.
  const rsa = byName("rsa2048");
  const key = createPrivateKey(new TextDecoder().decode(rsa.pkcs8Pem));
  const pkcs1 = new Uint8Array(nodeSign("sha256", MSG, key));
  assert.equal(verify(g, 4, FLAG_RAW, rsa.pubDer, pkcs1, MSG), 0, "PKCS#1 v1.5 signature as PSS");
  assert.equal(verify(g, 3, FLAG_RAW, rsa.pubDer, pkcs1, MSG), 0, "SHA-256 signature as SHA-512");
});

Deno.test("kc_verify: malformed signatures are 0; bad frames, keys, algorithms and digests are errors", () => {
  const g = new Guest(module);
  const ec = byName("p256");
  const rsa = byName("rsa4096");
  const ecId = parseRecord(g.ok("kc_load", ec.pkcs8Pem)).id;
  const rsaId = parseRecord(g.ok("kc_load", rsa.pkcs8Pem)).id;
  const d32 = digestOf("sha256", MSG);
  const der = g.ok("kc_sign", signReq(ecId, 7, 0, d32));
  const rs = g.ok("kc_sign", signReq(ecId, 7, FLAG_RS, d32));
  const rsaSig = g.ok("kc_sign", signReq(rsaId, 1, 0, d32));
  assert.equal(verify(g, 7, 0, ec.pubDer, der, d32), 1);
  assert.equal(verify(g, 7, FLAG_RS, ec.pubDer, rs, d32), 1);
  assert.equal(verify(g, 1, 0, rsa.pubDer, rsaSig, d32), 1);

  // 0: malformed signatures.
  const order = Uint8Array.fromHex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
  const longForm = concat(new Uint8Array([0x30, 0x81, der[1]]), der.slice(2));
  const malformed: [string, number, number, Bytes, Bytes][] = [
    ["empty DER", 7, 0, ec.pubDer, new Uint8Array(0)],
    ["empty r||s", 7, FLAG_RS, ec.pubDer, new Uint8Array(0)],
    ["empty RSA", 1, 0, rsa.pubDer, new Uint8Array(0)],
    ["truncated DER", 7, 0, ec.pubDer, der.slice(0, -1)],
    ["DER with a trailing byte", 7, 0, ec.pubDer, concat(der, new Uint8Array([0]))],
    ["DER with a long-form length", 7, 0, ec.pubDer, longForm],
    ["513-byte DER", 7, 0, ec.pubDer, new Uint8Array(513).fill(0x30)],
    ["513-byte RSA", 1, 0, rsa.pubDer, concat(new Uint8Array([0]), rsaSig)],
    ["65535-byte RSA", 1, 0, rsa.pubDer, new Uint8Array(65535).fill(1)],
    ["RSA one byte short", 1, 0, rsa.pubDer, rsaSig.slice(1)],
    ["r||s one byte short", 7, FLAG_RS, ec.pubDer, rs.slice(1)],
    ["r||s one byte long", 7, FLAG_RS, ec.pubDer, concat(rs, new Uint8Array([0]))],
    ["r = 0", 7, FLAG_RS, ec.pubDer, concat(new Uint8Array(32), rs.slice(32))],
    ["s = 0", 7, FLAG_RS, ec.pubDer, concat(rs.slice(0, 32), new Uint8Array(32))],
    ["r = the order", 7, FLAG_RS, ec.pubDer, concat(order, rs.slice(32))],
    ["s = the order", 7, FLAG_RS, ec.pubDer, concat(rs.slice(0, 32), order)],
    ["r = s = all ones", 7, FLAG_RS, ec.pubDer, new Uint8Array(64).fill(0xff)],
  ];
  for (const [what, alg, flags, spki, sig] of malformed) {
    assert.equal(verify(g, alg, flags, spki, sig, d32), 0, what);
  }
  // The message still follows a signature too long to buffer.
  assert.equal(verify(g, 1, FLAG_RAW, rsa.pubDer, new Uint8Array(600), MSG), 0);
  assert.equal(verify(g, 1, 0, rsa.pubDer, new Uint8Array(600), new Uint8Array(31)), BAD_DIGEST_LENGTH);

  // -1 BAD_REQUEST: truncated frames, lengths past the request, unknown algorithms and flag bits.
  const full = verifyReq(7, 0, ec.pubDer, der, d32);
  const sigLenAt = 4 + ec.pubDer.length;
  const longSigLen = verifyReq(7, 0, ec.pubDer, new Uint8Array(0), d32).map((b, i) => i === sigLenAt + 1 ? 0xff : b);
  const frames: [string, Bytes][] = [
    ["empty", new Uint8Array(0)],
    ["alg and flags only", full.slice(0, 2)],
    ["no signature length", full.slice(0, sigLenAt)],
    ["half a signature length", full.slice(0, sigLenAt + 1)],
    ["SPKI past the end", full.slice(0, sigLenAt - 1)],
    ["signature past the end", full.slice(0, sigLenAt + 2 + der.length - 1)],
    ["SPKI length past the end", concat(new Uint8Array([7, 0, 0xff, 0xff]), ec.pubDer)],
    ["signature length past the end", longSigLen],
  ];
  for (const [what, req] of frames) assert.equal(g.call("kc_verify", req).code, BAD_REQUEST, what);
  for (const alg of [0, 16, 255]) assert.equal(verify(g, alg, 0, ec.pubDer, der, d32), BAD_REQUEST, `alg ${alg}`);
  for (const flags of [4, 8, 0x80, 0xff]) assert.equal(verify(g, 7, flags, ec.pubDer, der, d32), BAD_REQUEST, `flags ${flags}`);

  // -3 BAD_KEY: not a public key the guest takes, whatever else is wrong.
  const p521 = tmp("verify-p521.pem");
  must(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp521r1", "-out", p521]);
  const ed25519 = tmp("verify-ed25519.pem");
  must(["genpkey", "-algorithm", "ED25519", "-out", ed25519]);
  const badSpkis: [string, Bytes][] = [
    ["empty", new Uint8Array(0)],
    ["random bytes", crypto.getRandomValues(new Uint8Array(91))],
    ["truncated", ec.pubDer.slice(0, -1)],
    ["trailing byte", concat(ec.pubDer, new Uint8Array([0]))],
    ["a private key", ec.pkcs8Der],
    ["P-521", must(["pkey", "-in", p521, "-pubout", "-outform", "DER"])],
    ["Ed25519", must(["pkey", "-in", ed25519, "-pubout", "-outform", "DER"])],
    ["point off the curve", flipped(ec.pubDer, ec.pubDer.length - 1)],
  ];
  // RSA past 4096 bits, whose signatures would not fit the guest's buffer; 4096 bits is taken.
  const modulus = (bytes: number, top: number) => concat(new Uint8Array([top]), new Uint8Array(bytes - 1).fill(0xff));
  badSpkis.push(["RSA 4097 bits", rsaSpki(modulus(513, 0x01))]);
  assert.equal(verify(g, 1, 0, rsaSpki(modulus(512, 0xff)), rsaSig, d32), 0, "RSA 4096 bits, built the same way");
  for (const [what, spki] of badSpkis) {
    assert.equal(verify(g, 7, 0, spki, der, d32), BAD_KEY, what);
    assert.equal(verify(g, 1, FLAG_RAW, spki, rsaSig, MSG), BAD_KEY, `${what}, RAW`);
    assert.equal(verify(g, 7, 0, spki, der, d32.slice(1)), BAD_KEY, `${what}, before the digest length`);
  }

  // -4 WRONG_KEY_TYPE, before the digest length.
  for (const alg of [1, 4, 12]) assert.equal(verify(g, alg, 0, ec.pubDer, der, d32), WRONG_KEY_TYPE, `alg ${alg} on EC`);
  for (const alg of [7, 15]) assert.equal(verify(g, alg, 0, rsa.pubDer, rsaSig, d32), WRONG_KEY_TYPE, `alg ${alg} on RSA`);
  assert.equal(verify(g, 1, 0, ec.pubDer, der, new Uint8Array(3)), WRONG_KEY_TYPE);

  // -5 BAD_DIGEST_LENGTH; a RAW message has no length rule, even empty.
  for (const [alg, spki, sig, len] of [[1, rsa.pubDer, rsaSig, 31], [1, rsa.pubDer, rsaSig, 0], [4, rsa.pubDer, rsaSig, 48],
    [12, rsa.pubDer, rsaSig, 32], [7, ec.pubDer, der, 33], [9, ec.pubDer, der, 32], [15, ec.pubDer, der, 20]] as const) {
    assert.equal(verify(g, alg, 0, spki, sig, new Uint8Array(len)), BAD_DIGEST_LENGTH, `alg ${alg} len ${len}`);
  }
  const empty = new Uint8Array(0);
  assert.equal(verify(g, 7, FLAG_RAW, ec.pubDer, g.ok("kc_sign", signReq(ecId, 7, FLAG_RAW, empty)), empty), 1);

  // Verifying needs no loaded key and no master key, and leaves the cache as it was.
  const fresh = new Guest(module);
  assert.equal(verify(fresh, 7, 0, ec.pubDer, der, d32), 1);
  assert.equal(verify(fresh, 1, 0, rsa.pubDer, rsaSig, d32), 1);
  assert.equal(new DataView(fresh.ok("kc_list").buffer).getUint32(0, true), 0);
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
    "kc_verify",
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
