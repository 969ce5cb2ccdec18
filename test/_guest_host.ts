/**
 * The host half of the guest's ABI (rust-signer/ABI.md) and nothing else: the guest pulls the
 * request through `in_*` and pushes the response through `out_*`. It imports nothing from src/,
 * so the ABI tests and the wide-multiply benchmarks can drive any module file with it.
 *
 * @module
 */

/** Byte arrays over a plain ArrayBuffer, as WebCrypto requires. */
export type Bytes = Uint8Array<ArrayBuffer>;

/** The largest response a guest may write. */
export const RESPONSE_CAP = 64 * 1024;

/**
 * One instance of a signer module, called through the ABI's imports.
 *
 * @example
 * ```ts
 * import { GuestHost } from "./_guest_host.ts";
 * import { wasmModule } from "./_wasm.ts";
 *
 * const guest = new GuestHost(wasmModule());
 * guest.ok("kc_tag").length; // 16
 * ```
 */
export class GuestHost {
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
          if (off < 0 || off >= RESPONSE_CAP) throw new RangeError("response past 64 KiB");
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

  /** Calls an export with `req`: its code, and its response when the code is not an error. */
  call(name: string, req: Uint8Array = new Uint8Array(0)): { code: number; out: Bytes } {
    this.req = req;
    const code = this.exports[name]();
    return { code, out: code >= 0 ? this.out.slice(0, code) : new Uint8Array(0) };
  }

  /** {@linkcode GuestHost.call}, throwing with the error code when the call failed. */
  ok(name: string, req?: Uint8Array): Bytes {
    const { code, out } = this.call(name, req);
    if (code < 0) throw new Error(`${name} failed with ${code}`);
    return out;
  }
}
