/**
 * The key server's signer over the sealed key store, so it serves the same keys as `serve`.
 *
 * The key server names keys by the guest's LIST and PUBLIC_KEY, and asks for keys it may not hold
 * yet; this function answers those from the store, opens a stored key in the guest on a signing
 * miss, and stores what the guest generates (and forgets what is deleted), so the `process` signer
 * mode persists keys as the other modes do. Everything else goes to the guest unchanged.
 *
 * @module
 */

import {
  encodeKeyList,
  encodeKeyRecord,
  encodeResponse,
  errorStatus,
  KEY_ID_BYTES,
  KEY_SPEC_CODES,
  type KeySpec,
  keyIdBytes,
  Op,
  Status,
  StoreOp,
  toHex,
} from "../core/protocol.ts";
import { KeycellError } from "../core/errors.ts";
import type { SealedSigner } from "../core/sealed_keys.ts";
import type { SignerFunction } from "./server.ts";

const SPEC_BY_CODE = new Map<number, KeySpec>(Object.entries(KEY_SPEC_CODES).map(([s, c]) => [c, s as KeySpec]));

/**
 * A {@linkcode SignerFunction} whose keys are the store's.
 *
 * @param sealed the sealed signer over this process's guest and the store.
 * @param guest the guest's own message function, for what the store has no part in.
 *
 * @example
 * ```ts
 * import type { SealedSigner } from "../core/sealed_keys.ts";
 * import type { Transport } from "../core/signer_client.ts";
 * import { KeylessServer } from "./server.ts";
 * import { storeBackedSigner } from "./store_signer.ts";
 *
 * // As src/deno/sealed_start.ts starts them: the sealed signer and its guest's transport.
 * declare const sealed: SealedSigner;
 * declare const transport: Transport;
 * const server = new KeylessServer({ signer: storeBackedSigner(sealed, (r) => transport.request(r)), keys: sealed });
 * ```
 */
export function storeBackedSigner(sealed: SealedSigner, guest: SignerFunction): SignerFunction {
  return async (request) => {
    const id = () => toHex(request.subarray(1, 1 + KEY_ID_BYTES));
    const keyed = request.length >= 1 + KEY_ID_BYTES;
    try {
      switch (request[0]) {
        case Op.LIST: {
          const keys = await sealed.listKeys();
          return encodeResponse(Status.OK, encodeKeyList(keys));
        }
        case Op.PUBLIC_KEY: {
          if (!keyed) break;
          const key = await sealed.getKey(id());
          return encodeResponse(Status.OK, encodeKeyRecord({ ...key, spki: key.publicKey }));
        }
        case Op.GENERATE: {
          const keySpec = SPEC_BY_CODE.get(request[1]);
          if (keySpec === undefined || request.length !== 2) break;
          const key = await sealed.generate(keySpec);
          return encodeResponse(Status.OK, encodeKeyRecord({ ...key, spki: key.publicKey }));
        }
        case Op.DROP: {
          if (!keyed) break;
          await sealed.deleteKey(id());
          return encodeResponse(Status.OK);
        }
        case StoreOp.LIST_PAGE: {
          if (request.length !== 3 && request.length !== 3 + KEY_ID_BYTES) break;
          const limit = request[1] | (request[2] << 8);
          const cursor = request.length > 3 ? toHex(request.subarray(3)) : undefined;
          const page = await sealed.listPage({ limit, cursor });
          const next = page.nextCursor === undefined ? [new Uint8Array([0])] : [new Uint8Array([1]), keyIdBytes(page.nextCursor)!];
          return encodeResponse(Status.OK, ...next, encodeKeyList(page.keys));
        }
        case StoreOp.WRAPPING_KEY: {
          const wrapping = await sealed.wrappingKey();
          return encodeResponse(Status.OK, encodeKeyRecord({ id: wrapping.id, keySpec: "RSA_4096", spki: wrapping.spki }));
        }
        case StoreOp.IMPORT_WRAPPED: {
          const keySpec = SPEC_BY_CODE.get(request[1]);
          if (keySpec === undefined) break;
          const key = await sealed.importWrapped(keySpec, request.slice(2));
          return encodeResponse(Status.OK, encodeKeyRecord({ ...key, spki: key.publicKey }));
        }
        case StoreOp.JWKS_LIST: {
          if (request.length !== 1) break;
          const ids = await sealed.jwksKeyIds();
          return encodeResponse(Status.OK, ...ids.map((i) => keyIdBytes(i)!));
        }
        case StoreOp.JWKS_MARK: {
          if (request.length !== 2 + KEY_ID_BYTES || request[1 + KEY_ID_BYTES] > 1) break;
          await sealed.setJwks(id(), request[1 + KEY_ID_BYTES] === 1);
          return encodeResponse(Status.OK);
        }
        case Op.SIGN: {
          if (!keyed) break;
          await sealed.confirm(id());
          const first = await guest(request);
          if (first[0] !== Status.KEY_NOT_FOUND) return first;
          await sealed.load(id());
          return await guest(request);
        }
      }
      return await guest(request);
    } catch (err) {
      if (err instanceof KeycellError) return encodeResponse(errorStatus(err));
      throw err;
    }
  };
}
