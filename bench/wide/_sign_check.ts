/**
 * Signs with a signer module through every key type and checks each
 * signature independently: PKCS#1 v1.5 byte for byte against node:crypto
 * (and, for the first few per key, `openssl pkeyutl -sign`), PSS and ECDSA
 * verified by WebCrypto. Keys come from the openssl CLI. Prints one JSON
 * object: per key type, how many were signed, checked and wrong.
 *
 *   deno run --allow-read --allow-write --allow-run=openssl --v8-flags=--experimental-wasm-wide-arithmetic \
 *     bench/wide/_sign_check.ts MODULE [SCALE]
 *
 * SCALE multiplies the default counts (RSA-2048 200, RSA-3072 40,
 * RSA-4096 16, P-256 400, P-384 100).
 *
 * @module
 */

import { createPrivateKey, sign as nodeSign } from "node:crypto";
import { Alg, type Bytes, FLAG_RS, Guest, opensslKey } from "./_host.ts";

/** kc_sign flag: the message is raw and the guest hashes it. */
const FLAG_RAW = 1;
/** How many PKCS#1 signatures per key are also compared with the openssl CLI. */
const OPENSSL_CROSS_CHECKS = 5;

/** Per key type: signatures made, checked, and found wrong. */
export interface SignCheck {
  signed: number;
  wrong: number;
  opensslIdentical: number;
}

type Kind = "rsa2048" | "rsa3072" | "rsa4096" | "p256" | "p384";

const COUNTS: Record<Kind, number> = { rsa2048: 200, rsa3072: 40, rsa4096: 16, p256: 400, p384: 100 };

function opensslSign(pem: Bytes, digest: Bytes): Bytes {
  const dir = Deno.makeTempDirSync({ prefix: "keycell-wide-" });
  try {
    Deno.writeFileSync(`${dir}/key.pem`, pem);
    Deno.writeFileSync(`${dir}/dgst`, digest);
    const r = new Deno.Command("openssl", {
      args: ["pkeyutl", "-sign", "-inkey", `${dir}/key.pem`, "-in", `${dir}/dgst`, "-pkeyopt", "digest:sha256"],
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
    }).outputSync();
    if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
    return r.stdout as Bytes;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Runs the check over one module.
 * @param module the compiled signer module
 * @param scale multiplies the default counts
 * @returns per key type, signatures made and found wrong
 * @example
 * ```ts
 * const r = await signCheck(new WebAssembly.Module(Deno.readFileSync("wasm/signer.wasm")), 0.1);
 * console.log(r.p256.wrong); // 0
 * ```
 */
export async function signCheck(module: WebAssembly.Module, scale = 1): Promise<Record<string, SignCheck>> {
  const g = new Guest(module);
  const out: Record<string, SignCheck> = {};
  for (const kind of Object.keys(COUNTS) as Kind[]) {
    const pem = opensslKey(kind);
    const { id, spki } = g.load(pem);
    const n = Math.max(1, Math.round(COUNTS[kind] * scale));
    const r: SignCheck = { signed: 0, wrong: 0, opensslIdentical: 0 };
    if (kind.startsWith("rsa")) {
      const priv = createPrivateKey({ key: new TextDecoder().decode(pem), format: "pem" });
      const pss = await crypto.subtle.importKey("spki", spki, { name: "RSA-PSS", hash: "SHA-256" }, false, ["verify"]);
      for (let i = 0; i < n; i++) {
        const msg = crypto.getRandomValues(new Uint8Array(64));
        // Alternate PKCS#1 v1.5 (deterministic: compared byte for byte) and PSS.
        if (i % 2 === 0) {
          const sig = g.sign(id, Alg.RSA_PKCS1_SHA256, msg, FLAG_RAW);
          const want = nodeSign("sha256", msg, priv);
          if (!same(sig, want)) r.wrong++;
          if (i / 2 < OPENSSL_CROSS_CHECKS) {
            const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", msg));
            if (same(sig, opensslSign(pem, digest))) r.opensslIdentical++;
            else r.wrong++;
          }
        } else {
          const sig = g.sign(id, Alg.RSA_PSS_SHA256, msg, FLAG_RAW);
          if (!await crypto.subtle.verify({ name: "RSA-PSS", saltLength: 32 }, pss, sig, msg)) r.wrong++;
        }
        r.signed++;
      }
    } else {
      const [curve, hash, alg] = kind === "p256"
        ? ["P-256", "SHA-256", Alg.ECDSA_SHA256] as const
        : ["P-384", "SHA-384", Alg.ECDSA_SHA384] as const;
      const pub = await crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: curve }, false, ["verify"]);
      for (let i = 0; i < n; i++) {
        const msg = crypto.getRandomValues(new Uint8Array(64));
        const sig = g.sign(id, alg, msg, FLAG_RAW | FLAG_RS);
        if (!await crypto.subtle.verify({ name: "ECDSA", hash }, pub, sig, msg)) r.wrong++;
        r.signed++;
      }
    }
    out[kind] = r;
  }
  // Keys generated inside the guest sign correctly too.
  for (const [spec, kind, alg, curve, hash] of [[1, "rsa2048-generated", Alg.RSA_PSS_SHA256, "", "SHA-256"], [5, "p384-generated", Alg.ECDSA_SHA384, "P-384", "SHA-384"]] as const) {
    const rec = g.ok("kc_generate", new Uint8Array([spec]));
    // No master key is set, so no sealed blob follows the SPKI.
    const id = rec.slice(1, 33);
    const spki = rec.slice(33);
    const pub = curve
      ? await crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: curve }, false, ["verify"])
      : await crypto.subtle.importKey("spki", spki, { name: "RSA-PSS", hash }, false, ["verify"]);
    const r: SignCheck = { signed: 0, wrong: 0, opensslIdentical: 0 };
    for (let i = 0; i < 20; i++) {
      const msg = crypto.getRandomValues(new Uint8Array(64));
      const sig = g.sign(id, alg, msg, FLAG_RAW | (curve ? FLAG_RS : 0));
      const ok = curve
        ? await crypto.subtle.verify({ name: "ECDSA", hash }, pub, sig, msg)
        : await crypto.subtle.verify({ name: "RSA-PSS", saltLength: 32 }, pub, sig, msg);
      if (!ok) r.wrong++;
      r.signed++;
    }
    out[kind] = r;
  }
  return out;
}

if (import.meta.main) {
  const module = new WebAssembly.Module(Deno.readFileSync(Deno.args[0]));
  console.log(JSON.stringify(await signCheck(module, Number(Deno.args[1] ?? 1))));
}
