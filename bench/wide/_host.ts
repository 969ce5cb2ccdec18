/**
 * A minimal host for the signer guest (rust-signer/ABI.md), for the wide-multiply
 * probes and benchmarks: nothing from src/, so any module file can be driven.
 *
 * @module
 */

/** Byte arrays over a plain ArrayBuffer, as WebCrypto requires. */
export type Bytes = Uint8Array<ArrayBuffer>;

const RESPONSE_CAP = 64 * 1024;

/** One instance of a signer module, called through the ABI's imports. */
export class Guest {
  req: Uint8Array = new Uint8Array(0);
  out: Bytes = new Uint8Array(RESPONSE_CAP);
  exports: Record<string, () => number>;

  constructor(module: WebAssembly.Module) {
    const imports = {
      keycell: {
        in_len: () => this.req.length,
        in_read8: (off: number): bigint => {
          let v = 0n;
          for (let i = 7; i >= 0; i--) {
            const p = off + i;
            v = (v << 8n) | BigInt(p >= 0 && p < this.req.length ? this.req[p] : 0);
          }
          return BigInt.asIntN(64, v);
        },
        in_read1: (off: number): number => off >= 0 && off < this.req.length ? this.req[off] : -1,
        out_write1: (off: number, byte: number) => {
          this.out[off] = byte;
        },
        out_write8: (off: number, v: bigint) => {
          if (off < 0 || off + 8 > RESPONSE_CAP) throw new RangeError("response past 64 KiB");
          let x = BigInt.asUintN(64, v);
          for (let i = 0; i < 8; i++) {
            this.out[off + i] = Number(x & 0xffn);
            x >>= 8n;
          }
        },
        rand8: (): bigint => {
          const b = new BigInt64Array(1);
          crypto.getRandomValues(b);
          return b[0];
        },
      },
    };
    this.exports = new WebAssembly.Instance(module, imports).exports as Record<string, () => number>;
  }

  /** Calls an export; returns the response, or throws with the error code. */
  call(name: string, req: Uint8Array = new Uint8Array(0)): Bytes {
    this.req = req;
    const code = this.exports[name]();
    if (code < 0) throw new Error(`${name} failed with ${code}`);
    return this.out.slice(0, code);
  }

  /** Loads a private key (PEM or DER); returns its 32-byte id and SPKI DER. */
  load(key: Uint8Array): { id: Bytes; spki: Bytes } {
    const rec = this.call("kc_load", key);
    return { id: rec.slice(1, 33), spki: rec.slice(33) };
  }

  /** Signs a digest with algorithm code `alg` (ABI.md); ECDSA as fixed-width r||s. */
  sign(id: Uint8Array, alg: number, digest: Uint8Array, flags = 0): Bytes {
    const req = new Uint8Array(34 + digest.length);
    req.set(id);
    req[32] = alg;
    req[33] = flags;
    req.set(digest, 34);
    return this.call("kc_sign", req);
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
