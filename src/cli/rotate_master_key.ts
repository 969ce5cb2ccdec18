/**
 * `keycell rotate-master-key`: replaces the master key. A guest makes the new master key and holds
 * the old one beside it; every sealed blob in the key store, and the wrapping key, is opened and
 * sealed anew inside that guest and written back; the store then records the new master key's id,
 * and the key files change places. No key, old or new, is ever outside the guest but on its way
 * from its file, in a buffer that is zeroed.
 *
 * Nodes may run beside it: the rotation first fences the store (its master key id becomes the old
 * id followed by the new one), and a node adds a key only in a transaction that finds its own
 * master key id there, so no blob sealed under the old key can appear after the pass that
 * reseals them all. Those nodes keep signing with the keys they hold and answer 503 for new keys
 * until they are restarted with the new master key. An interrupted rotation is finished by
 * running it again.
 *
 * @module
 */

import { openCompartment } from "../guest/files.ts";
import { decodeResponse, encodeRequest, keyIdBytes, Op, Status, toHex } from "../core/protocol.ts";
import { decodeWrappingKey, encodeWrappingKey } from "../core/sealed_keys.ts";
import { fileExists, nextMasterKeyPath } from "../deno/sealed_start.ts";
import { type KeyStore, META } from "../core/key_store.ts";

/** What a rotation did. */
export interface RotationReport {
  /** Hex ids (HMAC of a fixed label) of the master keys before and after. */
  previousId: string;
  masterKeyId: string;
  /** Signing keys whose blobs were sealed anew. */
  resealed: number;
  /** Whether the store had a wrapping key, now sealed anew. */
  wrappingKey: boolean;
  /** Keys whose blobs opened under neither master key (corrupt, or sealed under a third key): left as they were. */
  unopenable: string[];
}

/**
 * The files of a data directory's master key during and after a rotation.
 *
 * @example
 * ```ts
 * import { masterKeyFiles } from "./rotate_master_key.ts";
 *
 * masterKeyFiles(".keycell"); // { current: ".keycell/master.key", next: ".keycell/master.key.next", previous: ".keycell/master.key.previous" }
 * ```
 */
export function masterKeyFiles(dataDir: string): { current: string; next: string; previous: string } {
  const current = `${dataDir}/master.key`;
  return { current, next: nextMasterKeyPath(current), previous: `${current}.previous` };
}

/**
 * Rotates the master key of `dataDir` over `store`. On success `master.key` holds the new key and
 * `master.key.previous` the old one (keep it until backups hold the new one, then delete it).
 * Throws, changing nothing that a second run cannot finish, when the store or a file fails.
 *
 * @example
 * ```ts
 * import type { KeyStore } from "../core/key_store.ts";
 * import { rotateMasterKey } from "./rotate_master_key.ts";
 *
 * async function rotate(store: KeyStore): Promise<void> {
 *   const wasm = Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url));
 *   const report = await rotateMasterKey({ wasm, store, dataDir: ".keycell" });
 *   console.log(`${report.resealed} keys now sealed under ${report.masterKeyId}`);
 * }
 * ```
 */
export async function rotateMasterKey(options: { wasm: BufferSource; store: KeyStore; dataDir: string }): Promise<RotationReport> {
  const { store } = options;
  const files = masterKeyFiles(options.dataDir);
  const resuming = fileExists(files.next);
  // A run that stopped after moving master.key away but before putting the new key in its place.
  const old = resuming && !fileExists(files.current) && fileExists(files.previous) ? files.previous : files.current;
  if (!fileExists(old)) throw new Error(`the master key ${files.current} is missing`);
  const guest = openCompartment({ wasm: options.wasm, masterKeyPath: files.next, createMasterKey: true, previousMasterKeyPath: old });
  const [masterKeyId, previousId] = [guest.masterKeyId!, guest.previousMasterKeyId!];

  // Fence first: the store's master key id becomes `old || new`, and from then on no node can add
  // a blob (they check the id in the same transaction as the insert), so the pass below sees every
  // key there will be; nodes still running on the old key answer 503 until restarted with the new one.
  const previous = Uint8Array.fromHex(previousId);
  const fence = new Uint8Array([...previous, ...Uint8Array.fromHex(masterKeyId)]);
  const recorded = await store.setMetaOnce(META.MASTER_KEY_ID, fence);
  const recordedId = toHex(recorded);
  const fenced = recordedId === toHex(fence) ||
    (recordedId === previousId && await store.replaceMeta(META.MASTER_KEY_ID, recorded, fence));
  if (!fenced && recordedId !== masterKeyId) {
    if (!resuming) Deno.removeSync(files.next);
    const underWay = recorded.length === 64 ? ` (a rotation to ${toHex(recorded.subarray(32))} is under way)` : "";
    throw new Error(`the key store's keys are sealed under master key ${toHex(recorded.subarray(0, 32))}${underWay}, not ${old} (${previousId})`);
  }

  const reseal = (id: string, sealed: Uint8Array): Uint8Array | undefined => {
    const { status, body } = decodeResponse(guest.handle(encodeRequest(Op.RESEAL, keyIdBytes(id)!, sealed)));
    if (status === Status.OK) return body.slice();
    if (status === Status.SEAL_INVALID) return undefined;
    throw new Error(`the guest could not reseal key ${id} (status ${status})`);
  };

  const report: RotationReport = { previousId, masterKeyId, resealed: 0, wrappingKey: false, unopenable: [] };
  let cursor: string | undefined;
  do {
    const page = await store.list({ limit: 500, cursor });
    for (const { id } of page.keys) {
      const stored = await store.get(id);
      if (stored === undefined) continue;
      const resealed = reseal(id, stored.sealed);
      if (resealed === undefined) report.unopenable.push(id);
      else if (await store.replaceSealed(id, stored.sealed, resealed)) report.resealed++;
    }
    cursor = page.nextCursor;
  } while (cursor !== undefined);

  const wrapping = await store.getMeta(META.WRAPPING_KEY);
  if (wrapping !== undefined) {
    const key = decodeWrappingKey(wrapping);
    const resealed = reseal(key.id, key.sealed);
    if (resealed === undefined) throw new Error(`the wrapping key ${key.id} opens under neither master key`);
    if (!await store.replaceMeta(META.WRAPPING_KEY, wrapping, encodeWrappingKey({ id: key.id, spki: key.spki, sealed: resealed }))) {
      throw new Error("the key store's wrapping key changed during the rotation; is another rotation running?");
    }
    report.wrappingKey = true;
  }

  if (fenced && !await store.replaceMeta(META.MASTER_KEY_ID, fence, Uint8Array.fromHex(masterKeyId))) {
    throw new Error("the key store's master key id changed during the rotation; is another rotation running?");
  }

  if (old === files.current) Deno.renameSync(files.current, files.previous);
  Deno.renameSync(files.next, files.current);
  return report;
}

