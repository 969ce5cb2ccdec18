/**
 * Two guests behind one message function: RSA keys in one, EC keys in the other.
 *
 * The wide guest (64-bit limbs, `i64.mul_wide_u`) signs RSA about 1.5x as fast as the 32-bit
 * guest, and RSA needs no extra check for it (BoringSSL checks each private-key operation with
 * the public exponent). For ECDSA it must verify each signature it makes, which leaves it at about
 * 0.45x. So `KEYCELL_GUEST=auto` runs both: a key of the RSA family is generated, imported and
 * unsealed in the wide guest, an EC key in the 32-bit one, and each request goes to the guest its
 * key or algorithm belongs to. Both hold the master key and the opt-in key directory.
 *
 * @module
 */

import { ALGORITHMS, KEY_SPECS, type KeyFamily } from "../core/algorithms.ts";
import {
  ALGORITHM_BY_CODE,
  encodeResponse,
  KEY_ID_BYTES,
  type KeyFileReport,
  type KeySpec,
  mergeKeyLists,
  Op,
  SPEC_BY_CODE,
  Status,
  WRAPPING_KEY_SPEC,
} from "../core/protocol.ts";

/** A guest as a message function: a {@linkcode Compartment}, or a pair of them. */
export interface Guest {
  /** Answers one guest-protocol request (src/core/protocol.ts). */
  handle(request: Uint8Array): Uint8Array;
  /** What loading the key directory did. */
  readonly keyFiles: readonly KeyFileReport[];
}

/** Where a sealed blob's key spec is: after the key id and the blob's version and purpose bytes. */
const SEALED_SPEC_AT = 1 + KEY_ID_BYTES + 2;
/** A STATS answer's body: keys (u32), accounted bytes, budget, evictions, linear memory bytes (u64 each). */
const STATS_BYTES = 4 + 4 * 8;
/** Where a sign request's algorithm code is: after the key id. */
const SIGN_ALGORITHM_AT = 1 + KEY_ID_BYTES;

/**
 * Routes each request to the guest for its key's family.
 *
 * - GENERATE, IMPORT and UNSEAL name a key spec (UNSEAL in its blob): they go to that family's
 *   guest, so the key lives there; the RSA-4096 wrapping key lives in the RSA guest.
 * - SIGN and VERIFY name an algorithm: its family's guest first. A key only the other guest holds
 *   (a key made from a wrapping key in the RSA guest) is then asked of that one, so the answer is
 *   what one guest holding every key would give (`WRONG_KEY_TYPE`, say), never `KEY_NOT_FOUND`.
 * - PUBLIC_KEY asks the EC guest, then the RSA guest; DROP, LIST, STATS and HEALTH go to both (a
 *   deleted key is zeroed wherever it is; the key list is their union, the cache counters their sums).
 * - Anything else (the master key's id, reseal, trap) goes to the EC guest.
 *
 * @example
 * ```ts
 * import { FamilyGuests } from "./family_guests.ts";
 * import { Compartment } from "./compartment.ts";
 *
 * const ec = Compartment.create({ wasm: Deno.readFileSync("wasm/signer.wasm") });
 * const rsa = Compartment.create({ wasm: Deno.readFileSync("wasm/signer-wide.wasm") });
 * const guests = new FamilyGuests({ RSA: rsa, EC: ec });
 * guests.handle(new Uint8Array([7])); // HEALTH, asked of both: Uint8Array [0]
 * ```
 */
export class FamilyGuests implements Guest {
  readonly #rsa: Guest;
  readonly #ec: Guest;

  /** Takes ownership of both guests. */
  constructor(guests: Record<KeyFamily, Guest>) {
    this.#rsa = guests.RSA;
    this.#ec = guests.EC;
  }

  /** The EC guest's report: both load the same directory. */
  get keyFiles(): readonly KeyFileReport[] {
    return this.#ec.keyFiles;
  }

  handle(request: Uint8Array): Uint8Array {
    switch (request[0]) {
      case Op.GENERATE:
        return request[1] === WRAPPING_KEY_SPEC ? this.#rsa.handle(request) : this.#bySpec(request[1]).handle(request);
      case Op.IMPORT:
        return this.#bySpec(request[1]).handle(request);
      case Op.UNSEAL:
        return this.#bySpec(request[SEALED_SPEC_AT]).handle(request);
      case Op.SIGN:
        return this.#eitherFrom(this.#byAlgorithm(request[SIGN_ALGORITHM_AT]), request);
      case Op.VERIFY:
        return this.#byAlgorithm(request[1]).handle(request);
      case Op.PUBLIC_KEY:
        return this.#eitherFrom(this.#ec, request);
      case Op.DROP: {
        const rsa = this.#rsa.handle(request);
        const ec = this.#ec.handle(request);
        return rsa[0] === Status.OK ? rsa : ec;
      }
      case Op.LIST:
        return mergeKeyLists([this.#rsa.handle(request), this.#ec.handle(request)]);
      case Op.STATS:
        return this.#stats(request);
      case Op.HEALTH: {
        const rsa = this.#rsa.handle(request);
        return rsa[0] === Status.OK ? this.#ec.handle(request) : rsa;
      }
      default:
        return this.#ec.handle(request);
    }
  }

  /** The guest for a key spec's code; an unknown code goes to the EC guest, which refuses it. */
  #bySpec(code: number | undefined): Guest {
    const spec: KeySpec | undefined = code === undefined ? undefined : SPEC_BY_CODE.get(code);
    return spec !== undefined && KEY_SPECS[spec].family === "RSA" ? this.#rsa : this.#ec;
  }

  /** The guest for an algorithm's code; an unknown code goes to the EC guest, which refuses it. */
  #byAlgorithm(code: number | undefined): Guest {
    const algorithm = code === undefined ? undefined : ALGORITHM_BY_CODE.get(code);
    return algorithm !== undefined && ALGORITHMS[algorithm].family === "RSA" ? this.#rsa : this.#ec;
  }

  /** Asks `first`, and the other guest only when `first` does not hold the key. */
  #eitherFrom(first: Guest, request: Uint8Array): Uint8Array {
    const answer = first.handle(request);
    if (answer[0] !== Status.KEY_NOT_FOUND) return answer;
    return (first === this.#rsa ? this.#ec : this.#rsa).handle(request);
  }

  /** Both guests' cache counters (ABI.md, kc_stats: a u32 and four u64, little-endian), added up. */
  #stats(request: Uint8Array): Uint8Array {
    const answers = [this.#rsa.handle(request), this.#ec.handle(request)];
    const failed = answers.find((a) => a[0] !== Status.OK || a.length !== 1 + STATS_BYTES);
    if (failed !== undefined) return failed;
    const sum = new DataView(new ArrayBuffer(STATS_BYTES));
    for (const answer of answers) {
      const counters = new DataView(answer.buffer, answer.byteOffset + 1, STATS_BYTES);
      sum.setUint32(0, sum.getUint32(0, true) + counters.getUint32(0, true), true);
      for (let at = 4; at < STATS_BYTES; at += 8) sum.setBigUint64(at, sum.getBigUint64(at, true) + counters.getBigUint64(at, true), true);
    }
    return encodeResponse(Status.OK, new Uint8Array(sum.buffer));
  }


}
