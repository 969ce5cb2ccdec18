import { assert, assertEquals } from "../../test/_assert.ts";
import { makeKeys, openssl } from "../../test/_fixtures.ts";
import { toHex } from "./protocol.ts";
import { keylessNames, parseSpki } from "./key_names.ts";
import { tempDir } from "../../test/_temp.ts";

const root = await tempDir("keycell-keyless-keys-");
const keys = await makeKeys(root, ["RSA_2048", "RSA_3072", "ECC_NIST_P256", "ECC_NIST_P384"]);

Deno.test("SKI equals openssl's subjectKeyIdentifier of a certificate made from the key", async () => {
  for (const key of keys) {
    const cert = `${root}/${key.keySpec}.crt`;
    await openssl(["req", "-x509", "-new", "-key", key.path, "-subj", "/CN=keycell-test", "-days", "1", "-out", cert]);
    const text = new TextDecoder().decode(await openssl(["x509", "-in", cert, "-noout", "-ext", "subjectKeyIdentifier"]));
    const expected = /([0-9A-F]{2}(:[0-9A-F]{2}){19})/.exec(text)?.[1].replaceAll(":", "").toLowerCase();
    assert(expected, `openssl printed an SKI: ${text}`);
    const names = keylessNames(key.spki);
    assertEquals(toHex(names!.ski), expected, key.keySpec);
  }
});

Deno.test("certificate digest is sha256 of openssl's uppercase modulus text; RSA only", async () => {
  for (const key of keys) {
    const names = keylessNames(key.spki);
    if (!key.keySpec.startsWith("RSA")) {
      assertEquals(names!.certificateDigest, undefined, key.keySpec);
      continue;
    }
    const text = new TextDecoder().decode(await openssl(["rsa", "-in", key.path, "-noout", "-modulus"])).trim();
    assert(/^Modulus=[0-9A-F]+$/.test(text), text);
    const hex = text.slice("Modulus=".length);
    const expected = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(hex)));
    assertEquals(toHex(names!.certificateDigest!), toHex(expected), key.keySpec);
  }
});

Deno.test("a modulus with a leading zero nibble is written without it", async () => {
  // A hand-made SPKI whose modulus is 0x0123: the digest is over "123".
  const rsaKey = Uint8Array.of(0x30, 0x07, 0x02, 0x03, 0x00, 0x01, 0x23, 0x02, 0x00);
  rsaKey[1] = rsaKey.length - 2;
  const alg = Uint8Array.of(0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00);
  const bits = Uint8Array.of(0x03, rsaKey.length + 1, 0x00, ...rsaKey);
  const spki = Uint8Array.of(0x30, alg.length + bits.length, ...alg, ...bits);
  assertEquals(parseSpki(spki)?.rsaModulus, Uint8Array.of(0x01, 0x23));
  const expected = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("123")));
  assertEquals(keylessNames(spki)!.certificateDigest, expected);
});

Deno.test("what is not an SPKI is refused", () => {
  for (const bad of [new Uint8Array(), Uint8Array.of(0x30), Uint8Array.of(0x30, 0x00), keys[0].spki.subarray(0, 40), Uint8Array.of(0x30, 0x84, 1, 1, 1, 1)]) {
    assertEquals(parseSpki(bad), undefined);
  }
});
