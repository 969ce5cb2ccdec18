import { constants, createHash, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { assert, assertEquals } from "../../test/_assert.ts";
import { ecdsaDerToRaw, ecdsaRawToDer } from "../../test/_verify.ts";
import type { KeySpec, SigningAlgorithmName } from "../core/algorithms.ts";
import { derToRaw, type VerifyInput, verifySignature } from "./verify.ts";

// Signatures made by node:crypto (its own code, not keycell's), checked by both of verify.ts's
// paths: WebCrypto over the message, and the arithmetic over the digest.

const HASHES = { SHA_256: "sha256", SHA_384: "sha384", SHA_512: "sha512" } as const;

function spkiOf(key: KeyObject): Uint8Array {
  return new Uint8Array(key.export({ type: "spki", format: "der" }));
}

function digest(hash: string, message: Uint8Array): Uint8Array {
  return new Uint8Array(createHash(hash).update(message).digest());
}

/** Both paths' answers for one signature. */
async function both(input: Omit<VerifyInput, "messageType">, hash: string): Promise<[boolean, boolean]> {
  return [
    await verifySignature({ ...input, messageType: "RAW" }),
    await verifySignature({ ...input, messageType: "DIGEST", message: digest(hash, input.message) }),
  ];
}

const EC_CASES = [["P-256", "ECC_NIST_P256", 32], ["P-384", "ECC_NIST_P384", 48]] as const;

Deno.test("ECDSA: node:crypto's signatures verify over the message and over the digest, for both curves and every hash", async () => {
  for (const [curve, keySpec, width] of EC_CASES) {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
    for (const [name, hash] of Object.entries(HASHES)) {
      const algorithm = `ECDSA_${name}` as SigningAlgorithmName;
      for (let i = 0; i < 12; i++) {
        const message = crypto.getRandomValues(new Uint8Array(1 + i * 7));
        const der = new Uint8Array(sign(hash, message, privateKey));
        const input = { publicKey: spkiOf(publicKey), keySpec: keySpec as KeySpec, algorithm, message };
        const what = `${curve} ${algorithm} #${i}`;
        assertEquals(await both({ ...input, signature: der }, hash), [true, true], `${what} DER`);
        const raw = ecdsaDerToRaw(der, width);
        assertEquals(await both({ ...input, signature: raw, signatureFormat: "RAW" }, hash), [true, true], `${what} RAW`);

        const flipped = raw.slice();
        flipped[i % flipped.length] ^= 0x01;
        assertEquals(await both({ ...input, signature: flipped, signatureFormat: "RAW" }, hash), [false, false], `${what} flipped bit`);
        const otherMessage = message.slice();
        otherMessage[0] ^= 0x80;
        assertEquals(await both({ ...input, message: otherMessage, signature: der }, hash), [false, false], `${what} other message`);
      }
    }
  }
});

Deno.test("ECDSA: malformed signatures are invalid, not errors: wrong width, bad DER, r or s of 0 or at least n", async () => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const message = new TextEncoder().encode("malformed");
  const der = new Uint8Array(sign("sha256", message, privateKey));
  const raw = ecdsaDerToRaw(der, 32);
  const n = Uint8Array.fromHex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
  const input = { publicKey: spkiOf(publicKey), keySpec: "ECC_NIST_P256" as const, algorithm: "ECDSA_SHA_256" as const, message };
  const rawCases: [string, Uint8Array][] = [
    ["empty", new Uint8Array()],
    ["one byte short", raw.subarray(1)],
    ["one byte long", new Uint8Array([...raw, 0])],
    ["r = 0", new Uint8Array([...new Uint8Array(32), ...raw.subarray(32)])],
    ["s = 0", new Uint8Array([...raw.subarray(0, 32), ...new Uint8Array(32)])],
    ["r = n", new Uint8Array([...n, ...raw.subarray(32)])],
    ["s = n", new Uint8Array([...raw.subarray(0, 32), ...n])],
    ["all ones", new Uint8Array(64).fill(0xff)],
  ];
  for (const [what, signature] of rawCases) {
    assertEquals(await both({ ...input, signature, signatureFormat: "RAW" }, "sha256"), [false, false], what);
  }
  const derCases: [string, Uint8Array][] = [
    ["empty", new Uint8Array()],
    ["not a SEQUENCE", Uint8Array.of(0x31, ...der.subarray(1))],
    ["trailing byte", new Uint8Array([...der, 0])],
    ["cut short", der.subarray(0, der.length - 1)],
    ["raw given as DER", raw],
    ["garbage", crypto.getRandomValues(new Uint8Array(70))],
  ];
  for (const [what, signature] of derCases) {
    assertEquals(await both({ ...input, signature }, "sha256"), [false, false], what);
  }
  // High s (n - s) is the same signature to ECDSA: valid on both paths, as for WebCrypto and openssl.
  const s = BigInt(`0x${raw.subarray(32).toHex()}`);
  const highS = Uint8Array.fromHex((BigInt(`0x${n.toHex()}`) - s).toString(16).padStart(64, "0"));
  assertEquals(await both({ ...input, signature: new Uint8Array([...raw.subarray(0, 32), ...highS]), signatureFormat: "RAW" }, "sha256"), [
    true,
    true,
  ]);
});

Deno.test("derToRaw takes strict DER only: minimal positive integers that fit, nothing after", () => {
  const raw = Uint8Array.fromHex("80" + "11".repeat(31) + "00".repeat(31) + "01");
  const der = ecdsaRawToDer(raw);
  assertEquals(derToRaw(der, 32), raw);
  assertEquals(derToRaw(Uint8Array.of(0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02), 2), Uint8Array.of(0, 1, 0, 2));
  const refused: [string, number[]][] = [
    ["a needless leading zero", [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x02]],
    ["a negative integer", [0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x02]],
    ["an empty integer", [0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x02]],
    ["a wider integer than the curve's", [0x30, 0x08, 0x02, 0x03, 0x01, 0x01, 0x01, 0x02, 0x01, 0x02]],
    ["a long-form length that fits the short form", [0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]],
    ["a length past the end", [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]],
    ["a third integer", [0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x02, 0x01, 0x03]],
  ];
  for (const [what, bytes] of refused) assertEquals(derToRaw(Uint8Array.from(bytes), 2), undefined, what);
});

Deno.test("RSA: PKCS#1 v1.5 and PSS signatures verify over the message and over the digest; tampering does not", async () => {
  for (const modulusLength of [2048, 3072]) {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength });
    const keySpec = `RSA_${modulusLength}` as KeySpec;
    for (const [name, hash] of Object.entries(HASHES)) {
      const saltLength = digest(hash, new Uint8Array()).length;
      for (const pss of [false, true]) {
        const algorithm = `${pss ? "RSASSA_PSS" : "RSASSA_PKCS1_V1_5"}_${name}` as SigningAlgorithmName;
        const message = crypto.getRandomValues(new Uint8Array(100));
        const key = pss ? { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength } : privateKey;
        const signature = new Uint8Array(sign(hash, message, key));
        const input = { publicKey: spkiOf(publicKey), keySpec, algorithm, message };
        const what = `${keySpec} ${algorithm}`;
        assertEquals(await both({ ...input, signature }, hash), [true, true], what);
        const flipped = signature.slice();
        flipped[10] ^= 0x04;
        assertEquals(await both({ ...input, signature: flipped }, hash), [false, false], `${what} flipped bit`);
        assertEquals(await both({ ...input, signature: signature.subarray(1) }, hash), [false, false], `${what} short`);
        assertEquals(
          await both({ ...input, signature: new Uint8Array(signature.length).fill(0xff) }, hash),
          [false, false],
          `${what} >= n`,
        );
        assertEquals(await both({ ...input, signature: new Uint8Array() }, hash), [false, false], `${what} empty`);
      }
      // The other scheme's signature does not pass for this one.
      const message = new TextEncoder().encode("scheme");
      const pkcs1 = new Uint8Array(sign(hash, message, privateKey));
      const input = { publicKey: spkiOf(publicKey), keySpec, message, signature: pkcs1 };
      assertEquals(await both({ ...input, algorithm: `RSASSA_PSS_${name}` as SigningAlgorithmName }, hash), [false, false]);
    }
    // PSS with another salt length than the hash's is not keycell's PSS.
    const message = new TextEncoder().encode("salt");
    const signature = new Uint8Array(
      sign("sha256", message, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 20 }),
    );
    const input = { publicKey: spkiOf(publicKey), keySpec, algorithm: "RSASSA_PSS_SHA_256" as const, message, signature };
    assertEquals(await both(input, "sha256"), [false, false]);
  }
});

Deno.test("an algorithm of the other family, or a digest of the wrong length, is false", async () => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const message = new TextEncoder().encode("family");
  const signature = new Uint8Array(sign("sha256", message, privateKey));
  const base = { publicKey: spkiOf(publicKey), keySpec: "ECC_NIST_P256" as const, message, signature };
  assert(await verifySignature({ ...base, algorithm: "ECDSA_SHA_256", messageType: "RAW" }));
  assertEquals(await verifySignature({ ...base, algorithm: "RSASSA_PSS_SHA_256", messageType: "RAW" }), false);
  assertEquals(await verifySignature({ ...base, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(31) }), false);
});
