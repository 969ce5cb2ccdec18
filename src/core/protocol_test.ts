import { assertEquals } from "../../test/_assert.ts";
import {
  decodeKeyList,
  decodeKeyRecord,
  decodeResponse,
  decodeVerify,
  encodeRequest,
  encodeResponse,
  encodeVerify,
  keyIdBytes,
  Op,
  Status,
  toHex,
} from "./protocol.ts";

Deno.test("key ids: only 64 lowercase hex digits convert", () => {
  const id = "0123456789abcdef".repeat(4);
  assertEquals(toHex(keyIdBytes(id)!), id);
  for (const bad of ["", "0".repeat(63), "0".repeat(65), "A".repeat(64), "g".repeat(64), "../".repeat(21) + "a"]) {
    assertEquals(keyIdBytes(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("requests and responses frame op/status and body", () => {
  assertEquals([...encodeRequest(Op.SIGN, new Uint8Array([1, 2]), new Uint8Array([3]))], [Op.SIGN, 1, 2, 3]);
  const { status, body } = decodeResponse(encodeResponse(Status.OK, new Uint8Array([9])));
  assertEquals([status, [...body]], [Status.OK, [9]]);
  assertEquals(decodeResponse(new Uint8Array()).status, Status.BAD_OP);
});

Deno.test("key records and lists reject malformed bodies", () => {
  const id = new Uint8Array(32).fill(0xab);
  const record = decodeKeyRecord(new Uint8Array([4, ...id, 0x30, 0x00]));
  assertEquals(record, { keySpec: "ECC_NIST_P256", id: "ab".repeat(32), spki: new Uint8Array([0x30, 0x00]) });
  assertEquals(decodeKeyRecord(new Uint8Array([9, ...id, 0x30])), undefined, "unknown spec");
  assertEquals(decodeKeyRecord(new Uint8Array([4, ...id])), undefined, "no SPKI");

  const list = new Uint8Array([2, 0, 0, 0, 1, ...id, 5, ...id]);
  assertEquals(decodeKeyList(list), [{ keySpec: "RSA_2048", id: "ab".repeat(32) }, { keySpec: "ECC_NIST_P384", id: "ab".repeat(32) }]);
  assertEquals(decodeKeyList(list.subarray(0, list.length - 1)), undefined, "truncated");
  assertEquals(decodeKeyList(new Uint8Array([1, 0])), undefined, "no count");
});

Deno.test("verify requests: the fields come back as they went; a body whose lengths run past its end is refused", () => {
  const request = {
    publicKey: Uint8Array.of(1, 2, 3),
    algorithm: "RSASSA_PSS_SHA_384",
    messageType: "RAW",
    message: Uint8Array.of(9, 9),
    signature: Uint8Array.of(7),
  } as const;
  const body = encodeVerify(request)!;
  assertEquals([...body], [5, 1, 3, 0, 1, 2, 3, 1, 0, 7, 9, 9]);
  assertEquals(decodeVerify(body), request);
  assertEquals(decodeVerify(encodeVerify({ ...request, algorithm: "ECDSA_SHA_256", signatureFormat: "RAW", messageType: "DIGEST" })!)?.signatureFormat, "RAW");
  assertEquals(decodeVerify(body.subarray(0, 8)), undefined, "the signature runs past the end");
  assertEquals(decodeVerify(body.subarray(0, 5)), undefined, "the key runs past the end");
  assertEquals(decodeVerify(Uint8Array.of(99, ...body.subarray(1))), undefined, "an unknown algorithm");
  assertEquals(decodeVerify(Uint8Array.of(5, 4, ...body.subarray(2))), undefined, "an unknown flag");
  assertEquals(encodeVerify({ ...request, signature: new Uint8Array(0x10000) }), undefined, "a signature past what a u16 says");
});
