import { assert, assertEquals } from "../../test/_assert.ts";
import { tempDir } from "../../test/_temp.ts";
import { WASM } from "../../test/_wasm.ts";
import {
  ALGORITHM_CODES,
  type AlgorithmName,
  decodeKeyList,
  decodeKeyRecord,
  decodeResponse,
  encodeRequest,
  KEY_SPEC_CODES,
  keyIdBytes,
  type KeySpec,
  Op,
  Status,
} from "../core/protocol.ts";
import type { KeyFamily } from "../core/algorithms.ts";
import { FamilyGuests, type Guest } from "./family_guests.ts";
import { openCompartment } from "./files.ts";

// The routing does not depend on which module each guest runs, and this process has no wide
// arithmetic: both guests here run the 32-bit module, each watched for the requests it answers.
// test/guest_select_test.ts runs the real pair (the wide module for RSA) in `serve`.

/** A guest that remembers the operation of every request it answers. */
function watched(inner: Guest): Guest & { ops: number[] } {
  const ops: number[] = [];
  return { ops, keyFiles: inner.keyFiles, handle: (request) => (ops.push(request[0]), inner.handle(request)) };
}

async function pair() {
  const dir = await tempDir("keycell-family-");
  const options = { wasm: WASM, masterKeyPath: `${dir}/master.key` };
  const guests = {
    EC: watched(openCompartment({ ...options, createMasterKey: true })),
    RSA: watched(openCompartment(options)),
  } satisfies Record<KeyFamily, Guest>;
  return { guests, family: new FamilyGuests(guests) };
}

function generate(guest: Guest, spec: KeySpec) {
  const { status, body } = decodeResponse(guest.handle(encodeRequest(Op.GENERATE, new Uint8Array([KEY_SPEC_CODES[spec]]))));
  assertEquals(status, Status.OK);
  const record = decodeKeyRecord(body);
  assert(record?.sealed !== undefined);
  return record;
}

const sign = (id: string, algorithm: AlgorithmName) =>
  encodeRequest(Op.SIGN, keyIdBytes(id)!, new Uint8Array([ALGORITHM_CODES[algorithm], 0]), new Uint8Array(algorithm.endsWith("384") ? 48 : 32).fill(7));

const listed = (guest: Guest) => (decodeKeyList(decodeResponse(guest.handle(encodeRequest(Op.LIST))).body) ?? []).map((k) => k.id).sort();

Deno.test("family guests: a key is made in its family's guest and signed there, and nowhere else", async () => {
  const { guests, family } = await pair();
  const rsa = generate(family, "RSA_2048");
  const ec = generate(family, "ECC_NIST_P256");
  assertEquals(listed(guests.RSA), [rsa.id]);
  assertEquals(listed(guests.EC), [ec.id]);
  guests.RSA.ops.length = guests.EC.ops.length = 0;

  assertEquals(family.handle(sign(rsa.id, "RSASSA_PSS_SHA_256"))[0], Status.OK);
  assertEquals([guests.RSA.ops, guests.EC.ops], [[Op.SIGN], []]);
  assertEquals(family.handle(sign(ec.id, "ECDSA_SHA_256"))[0], Status.OK);
  assertEquals([guests.RSA.ops, guests.EC.ops], [[Op.SIGN], [Op.SIGN]]);
  // A public key is asked of the EC guest first, then of the RSA guest.
  assertEquals(family.handle(encodeRequest(Op.PUBLIC_KEY, keyIdBytes(rsa.id)!))[0], Status.OK);
  assertEquals(family.handle(encodeRequest(Op.PUBLIC_KEY, keyIdBytes(ec.id)!))[0], Status.OK);
  assertEquals(family.keyFiles, []);
});

Deno.test("family guests: answers are those of one guest holding every key", async () => {
  const { guests, family } = await pair();
  const rsa = generate(family, "RSA_2048");
  const ec = generate(family, "ECC_NIST_P256");
  // One guest holding both keys, for the answers to compare with.
  const one = openCompartment({ wasm: WASM, masterKeyPath: `${(await tempDir("keycell-family-one-"))}/master.key`, createMasterKey: true });
  const mine = { rsa: generate(one, "RSA_2048").id, ec: generate(one, "ECC_NIST_P256").id };
  const statusOf = (guest: Guest, request: Uint8Array) => decodeResponse(guest.handle(request)).status;

  // A key of the other family: the algorithm's guest does not hold it, the other one refuses it.
  assertEquals(statusOf(family, sign(rsa.id, "ECDSA_SHA_256")), statusOf(one, sign(mine.rsa, "ECDSA_SHA_256")));
  assertEquals(statusOf(family, sign(ec.id, "RSASSA_PKCS1_V1_5_SHA_256")), statusOf(one, sign(mine.ec, "RSASSA_PKCS1_V1_5_SHA_256")));
  assertEquals(statusOf(family, sign(ec.id, "RSASSA_PKCS1_V1_5_SHA_256")), Status.WRONG_KEY_TYPE);
  // No such key, in either guest.
  assertEquals(statusOf(family, sign("ab".repeat(32), "ECDSA_SHA_256")), Status.KEY_NOT_FOUND);
  assertEquals(statusOf(family, sign("ab".repeat(32), "RSASSA_PKCS1_V1_5_SHA_256")), Status.KEY_NOT_FOUND);
  assertEquals(statusOf(family, encodeRequest(Op.PUBLIC_KEY, keyIdBytes("ab".repeat(32))!)), Status.KEY_NOT_FOUND);
  // Malformed requests are refused as one guest refuses them.
  assertEquals(statusOf(family, new Uint8Array([Op.SIGN])), statusOf(one, new Uint8Array([Op.SIGN])));
  assertEquals(statusOf(family, new Uint8Array([Op.GENERATE, 99])), statusOf(one, new Uint8Array([Op.GENERATE, 99])));
  assertEquals(statusOf(family, new Uint8Array([Op.UNSEAL])), statusOf(one, new Uint8Array([Op.UNSEAL])));
  assertEquals(statusOf(family, encodeRequest(Op.HEALTH)), Status.OK);
  assertEquals(guests.RSA.ops.includes(Op.HEALTH) && guests.EC.ops.includes(Op.HEALTH), true, "both guests are asked for health");
});

Deno.test("family guests: the list is the union; a dropped key is gone from both; a sealed key reopens in its family's guest", async () => {
  const { guests, family } = await pair();
  const rsa = generate(family, "RSA_2048");
  const ec = generate(family, "ECC_NIST_P384");
  assertEquals(listed(family), [rsa.id, ec.id].sort());

  for (const key of [rsa, ec]) assertEquals(family.handle(encodeRequest(Op.DROP, keyIdBytes(key.id)!))[0], Status.OK);
  assertEquals([listed(family), listed(guests.RSA), listed(guests.EC)], [[], [], []]);
  assertEquals(family.handle(encodeRequest(Op.DROP, keyIdBytes(rsa.id)!))[0], Status.KEY_NOT_FOUND);

  // Both guests hold the same master key: each blob opens, in the guest of its spec.
  for (const key of [rsa, ec]) assertEquals(family.handle(encodeRequest(Op.UNSEAL, keyIdBytes(key.id)!, key.sealed!))[0], Status.OK);
  assertEquals([listed(guests.RSA), listed(guests.EC)], [[rsa.id], [ec.id]]);
  assertEquals(family.handle(sign(ec.id, "ECDSA_SHA_384"))[0], Status.OK);
  assertEquals(family.handle(sign(rsa.id, "RSASSA_PKCS1_V1_5_SHA_256"))[0], Status.OK);
});

Deno.test("family guests: the cache counters are both guests' added up", async () => {
  const { guests, family } = await pair();
  generate(family, "RSA_2048");
  generate(family, "ECC_NIST_P256");
  generate(family, "ECC_NIST_P384");
  const counters = (guest: Guest) => {
    const { status, body } = decodeResponse(guest.handle(encodeRequest(Op.STATS)));
    assertEquals(status, Status.OK);
    const view = new DataView(body.buffer, body.byteOffset, body.length);
    return { keys: view.getUint32(0, true), counters: [4, 12, 20, 28].map((at) => view.getBigUint64(at, true)) };
  };
  const [rsa, ec, both] = [counters(guests.RSA), counters(guests.EC), counters(family)];
  assertEquals([rsa.keys, ec.keys], [1, 2]);
  assertEquals(both, { keys: 3, counters: rsa.counters.map((n, i) => n + ec.counters[i]) });
});
