import { assert, assertEquals } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { wrapForImport } from "../../test/_wrap.ts";
import { Compartment } from "./compartment.ts";
import { openCompartment } from "./files.ts";
import {
  decodeKeyList,
  decodeKeyRecord,
  decodeResponse,
  encodeRequest,
  keyIdBytes,
  type KeyRecord,
  Op,
  Status,
  WRAPPING_KEY_SPEC,
} from "../core/protocol.ts";
import { wasmModule } from "../../test/_wasm.ts";
import { tempDir, tempDirSync } from "../../test/_temp.ts";

const P256 = new Uint8Array([4]);

function call(c: Compartment, op: Op, ...parts: Uint8Array[]): { status: number; body: Uint8Array } {
  return decodeResponse(c.handle(encodeRequest(op, ...parts)));
}

function generate(c: Compartment, spec = P256): KeyRecord {
  const { status, body } = call(c, Op.GENERATE, spec);
  assertEquals(status, Status.OK);
  return decodeKeyRecord(body)!;
}

function unseal(c: Compartment, id: string, blob: Uint8Array): number {
  return call(c, Op.UNSEAL, keyIdBytes(id)!, blob).status;
}

function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
}

Deno.test("the master key is made once in the guest (0600), reloaded on later starts, and seals keys that open only under it", () => {
  const dir = tempDirSync();
  try {
    const masterKeyPath = `${dir}/master.key`;
    const first = openCompartment({ wasm: wasmModule(), masterKeyPath, createMasterKey: true });
    assertEquals(Deno.statSync(masterKeyPath).size, 32);
    assertEquals(Deno.statSync(masterKeyPath).mode! & 0o777, 0o600);
    const key = generate(first);
    assert(key.sealed !== undefined && key.sealed.length > 100, "generate answers the sealed blob");

    const again = openCompartment({ wasm: wasmModule(), masterKeyPath });
    assertEquals(again.masterKeyId, first.masterKeyId);
    assertEquals(call(again, Op.PUBLIC_KEY, keyIdBytes(key.id)!).status, Status.KEY_NOT_FOUND);
    assertEquals(unseal(again, key.id, key.sealed!), Status.OK);
    assertEquals(call(again, Op.SIGN, keyIdBytes(key.id)!, new Uint8Array([7, 0]), new Uint8Array(32)).status, Status.OK);

    // A second start never replaces an existing key file, and a missing one is an error unless asked for.
    assertEquals(call(openCompartment({ wasm: wasmModule(), masterKeyPath, createMasterKey: true }), Op.MASTER_KEY_ID).body, call(first, Op.MASTER_KEY_ID).body);
    let missing = "";
    try {
      openCompartment({ wasm: wasmModule(), masterKeyPath: `${dir}/absent.key` });
    } catch (err) {
      missing = (err as Error).message;
    }
    assert(missing.includes("absent.key is missing"), missing);

    const other = openCompartment({ wasm: wasmModule(), masterKeyPath: `${dir}/other.key`, createMasterKey: true });
    assert(other.masterKeyId !== first.masterKeyId);
    assertEquals(unseal(other, key.id, key.sealed!), Status.SEAL_INVALID, "sealed under another master key");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a corrupt, truncated or mis-addressed blob is SEAL_INVALID for that key only", () => {
  const dir = tempDirSync();
  try {
    const c = openCompartment({ wasm: wasmModule(), masterKeyPath: `${dir}/master.key`, createMasterKey: true });
    const a = generate(c);
    const b = generate(c);
    const fresh = openCompartment({ wasm: wasmModule(), masterKeyPath: `${dir}/master.key` });
    const flipped = a.sealed!.slice();
    flipped[40] ^= 1;
    assertEquals(unseal(fresh, a.id, flipped), Status.SEAL_INVALID);
    assertEquals(unseal(fresh, a.id, a.sealed!.subarray(0, a.sealed!.length - 1)), Status.SEAL_INVALID);
    assertEquals(unseal(fresh, a.id, a.sealed!.subarray(0, 10)), Status.SEAL_INVALID);
    assertEquals(unseal(fresh, b.id, a.sealed!), Status.SEAL_INVALID, "a's blob under b's id");
    const respec = a.sealed!.slice();
    respec[2] = 5;
    assertEquals(unseal(fresh, a.id, respec), Status.SEAL_INVALID, "spec is bound too");
    assertEquals(unseal(fresh, b.id, b.sealed!), Status.OK, "other keys keep working");
    assertEquals(unseal(fresh, a.id, a.sealed!), Status.OK);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the cache is bounded by bytes: least recently used keys are evicted and come back from their blobs", () => {
  const dir = tempDirSync();
  try {
    // Room for about three P-256 keys.
    const c = openCompartment({ wasm: wasmModule(), masterKeyPath: `${dir}/master.key`, createMasterKey: true, cacheBytes: 4096 });
    const keys = Array.from({ length: 6 }, () => generate(c));
    const cached = decodeKeyList(call(c, Op.LIST).body)!.map((k) => k.id);
    assertEquals(cached, keys.slice(-cached.length).reverse().map((k) => k.id), "most recent first, oldest gone");
    assert(cached.length >= 2 && cached.length < 6, `${cached.length} keys cached`);
    const stats = new DataView(call(c, Op.STATS).body.slice().buffer);
    assertEquals(stats.getUint32(0, true), cached.length);
    assert(stats.getBigUint64(4, true) <= 4096n, "accounted bytes stay within the budget");
    assertEquals(stats.getBigUint64(12, true), 4096n);
    assertEquals(stats.getBigUint64(20, true), BigInt(6 - cached.length), "evictions");
    assertEquals(call(c, Op.SIGN, keyIdBytes(keys[0].id)!, new Uint8Array([7, 0]), new Uint8Array(32)).status, Status.KEY_NOT_FOUND);
    assertEquals(unseal(c, keys[0].id, keys[0].sealed!), Status.OK);
    assertEquals(call(c, Op.SIGN, keyIdBytes(keys[0].id)!, new Uint8Array([7, 0]), new Uint8Array(32)).status, Status.OK);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("wrapped import: a key wrapped by openssl to the guest's wrapping key is unwrapped, cached and sealed", async () => {
  const dir = await tempDir();
  try {
    const c = openCompartment({ wasm: wasmModule(), masterKeyPath: `${dir}/master.key`, createMasterKey: true });
    const wrapping = generate(c, new Uint8Array([WRAPPING_KEY_SPEC]));
    assertEquals(wrapping.keySpec, "RSA_4096");
    assertEquals(call(c, Op.PUBLIC_KEY, keyIdBytes(wrapping.id)!).status, Status.KEY_NOT_FOUND, "a wrapping key is never cached");
    const [p256] = await makeKeys(dir, ["ECC_NIST_P256"]);
    const wrapped = await wrapForImport(dir, wrapping.spki, p256.path);
    const head = [keyIdBytes(wrapping.id)!, u32(wrapping.sealed!.length), wrapping.sealed!];
    const imported = call(c, Op.IMPORT, P256, ...head, wrapped);
    assertEquals(imported.status, Status.OK);
    const record = decodeKeyRecord(imported.body)!;
    assertEquals(record.id, p256.id);
    assertEquals(record.spki, p256.spki);
    assert(record.sealed !== undefined);

    const flipped = wrapped.slice();
    flipped[wrapped.length - 3] ^= 1;
    assertEquals(call(c, Op.IMPORT, P256, ...head, flipped).status, Status.BAD_WRAPPED, "key-wrap integrity");
    flipped.set(wrapped);
    flipped[5] ^= 1;
    assertEquals(call(c, Op.IMPORT, P256, ...head, flipped).status, Status.BAD_WRAPPED, "OAEP");
    assertEquals(call(c, Op.IMPORT, new Uint8Array([5]), ...head, wrapped).status, Status.BAD_WRAPPED, "stated spec");
    assertEquals(call(c, Op.IMPORT, P256, ...head, wrapped.subarray(0, 300)).status, Status.BAD_WRAPPED, "truncated");
    // A signing key's blob is not a wrapping key.
    const signing = generate(c);
    assertEquals(
      call(c, Op.IMPORT, P256, keyIdBytes(signing.id)!, u32(signing.sealed!.length), signing.sealed!, wrapped).status,
      Status.SEAL_INVALID,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rotation: with the previous master key beside the new one, blobs open under either and reseal under the new one only", async () => {
  const dir = await tempDir();
  try {
    const [oldPath, newPath] = [`${dir}/old.key`, `${dir}/new.key`];
    const before = openCompartment({ wasm: wasmModule(), masterKeyPath: oldPath, createMasterKey: true });
    const key = generate(before);
    const wrapping = generate(before, new Uint8Array([WRAPPING_KEY_SPEC]));

    const rotating = openCompartment({ wasm: wasmModule(), masterKeyPath: newPath, createMasterKey: true, previousMasterKeyPath: oldPath });
    assert(rotating.masterKeyId !== before.masterKeyId);
    assertEquals(rotating.previousMasterKeyId, before.masterKeyId);
    assertEquals(unseal(rotating, key.id, key.sealed!), Status.OK, "opens under the previous master key");
    const resealed = call(rotating, Op.RESEAL, keyIdBytes(key.id)!, key.sealed!);
    const resealedWrapping = call(rotating, Op.RESEAL, keyIdBytes(wrapping.id)!, wrapping.sealed!);
    assertEquals([resealed.status, resealedWrapping.status], [Status.OK, Status.OK]);
    assertEquals(call(rotating, Op.RESEAL, keyIdBytes(key.id)!, resealed.body).status, Status.OK, "a blob already resealed reseals again");
    assertEquals(call(rotating, Op.RESEAL, keyIdBytes(wrapping.id)!, key.sealed!).status, Status.SEAL_INVALID, "under another id");
    const flipped = key.sealed!.slice();
    flipped[40] ^= 1;
    assertEquals(call(rotating, Op.RESEAL, keyIdBytes(key.id)!, flipped).status, Status.SEAL_INVALID);
    const purpose = key.sealed!.slice();
    purpose[1] = 7;
    assertEquals(call(rotating, Op.RESEAL, keyIdBytes(key.id)!, purpose).status, Status.SEAL_INVALID);

    const after = openCompartment({ wasm: wasmModule(), masterKeyPath: newPath });
    assertEquals(unseal(after, key.id, resealed.body), Status.OK, "the new master key alone opens the resealed blob");
    assertEquals(call(after, Op.SIGN, keyIdBytes(key.id)!, new Uint8Array([7, 0]), new Uint8Array(32)).status, Status.OK);
    assertEquals(unseal(openCompartment({ wasm: wasmModule(), masterKeyPath: newPath }), key.id, key.sealed!), Status.SEAL_INVALID, "not the old blob");
    assertEquals(unseal(openCompartment({ wasm: wasmModule(), masterKeyPath: oldPath }), key.id, resealed.body), Status.SEAL_INVALID, "nor the old key the new blob");
    // The resealed wrapping key still unwraps imports.
    const [p256] = await makeKeys(dir, ["ECC_NIST_P256"]);
    const wrapped = await wrapForImport(dir, wrapping.spki, p256.path);
    const imported = call(after, Op.IMPORT, P256, keyIdBytes(wrapping.id)!, u32(resealedWrapping.body.length), resealedWrapping.body, wrapped);
    assertEquals([imported.status, decodeKeyRecord(imported.body)?.id], [Status.OK, p256.id]);

    assertEquals(call(openCompartment({ wasm: wasmModule() }), Op.RESEAL, keyIdBytes(key.id)!, key.sealed!).status, Status.NO_MASTER_KEY);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
