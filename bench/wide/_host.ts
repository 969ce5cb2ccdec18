/**
 * The signer guest's ABI host (test/_guest_host.ts) with the calls the wide-multiply probes and
 * benchmarks make: nothing from src/, so any module file can be driven.
 *
 * @module
 */

import { type Bytes, GuestHost } from "../../test/_guest_host.ts";

export type { Bytes } from "../../test/_guest_host.ts";

/** One instance of a signer module, with the calls the benchmarks make. */
export class Guest extends GuestHost {
  /** Loads a private key (PEM or DER); returns its 32-byte id and SPKI DER. */
  load(key: Uint8Array): { id: Bytes; spki: Bytes } {
    const rec = this.ok("kc_load", key);
    return { id: rec.slice(1, 33), spki: rec.slice(33) };
  }

  /** Signs a digest with algorithm code `alg` (ABI.md); ECDSA as fixed-width r||s. */
  sign(id: Uint8Array, alg: number, digest: Uint8Array, flags = 0): Bytes {
    const req = new Uint8Array(34 + digest.length);
    req.set(id);
    req[32] = alg;
    req[33] = flags;
    req.set(digest, 34);
    return this.ok("kc_sign", req);
  }
}

/** Algorithm codes (ABI.md) used here. */
export const Alg = { RSA_PKCS1_SHA256: 1, RSA_PSS_SHA256: 4, ECDSA_SHA256: 7, ECDSA_SHA384: 8 } as const;
/** kc_sign flag: ECDSA as fixed-width r || s. */
export const FLAG_RS = 2;

/** Makes a PKCS#8 PEM key with the openssl CLI. */
export function opensslKey(kind: "rsa2048" | "rsa3072" | "rsa4096" | "p256" | "p384"): Bytes {
  const args = kind.startsWith("rsa")
    ? ["genpkey", "-algorithm", "RSA", "-pkeyopt", `rsa_keygen_bits:${kind.slice(3)}`]
    : ["genpkey", "-algorithm", "EC", "-pkeyopt", `ec_paramgen_curve:${kind === "p256" ? "prime256v1" : "secp384r1"}`];
  // clearEnv: a parent may run this under stdbuf, whose LD_PRELOAD Deno
  // refuses to pass on.
  const r = new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped", clearEnv: true }).outputSync();
  if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
  return r.stdout as Bytes;
}
