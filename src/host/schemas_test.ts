import { assertEquals } from "../../test/_assert.ts";
import { decodeBase64, JwsBody, SignBody } from "./schemas.ts";
import { decodeBase64url } from "./jose.ts";

Deno.test("decodeBase64 takes only standard, padded, canonical base64", () => {
  assertEquals(decodeBase64("AQI="), new Uint8Array([1, 2]));
  assertEquals(decodeBase64(""), new Uint8Array(0));
  assertEquals(decodeBase64("+/8="), new Uint8Array([0xfb, 0xff]));
  for (const bad of ["AQI", "AQJ=", "AQ I=", " AQI=", "AQI=\n", "-_8=", "AQI==", "A===", "not base64!", "AQI=AQI="]) {
    assertEquals(decodeBase64(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("the schemas' base64 and base64url fields take exactly what decodeBase64 and decodeBase64url take", () => {
  const signBody = (message: string) => ({ algorithm: "ECDSA_SHA_256", messageType: "RAW", message });
  const jwsBody = (payload: string) => ({ protectedHeader: { alg: "ES256" }, payload });
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_= .";
  // Encodings of up to 5 random bytes in both alphabets, each also with every other last
  // character and without its padding.
  const samples = new Set<string>(["", "AQI=", "AQJ=", "-_8", "-_8="]);
  for (let n = 0; n < 200; n++) {
    const bytes = crypto.getRandomValues(new Uint8Array(n % 6));
    for (const text of [bytes.toBase64(), bytes.toBase64({ alphabet: "base64url", omitPadding: true })]) {
      samples.add(text);
      for (const last of alphabet) samples.add(text.slice(0, -1) + last);
      samples.add(text.replace(/=+$/, ""));
    }
  }
  for (const text of samples) {
    if (text !== "") assertEquals(SignBody.safeParse(signBody(text)).success, decodeBase64(text) !== undefined, `base64 ${JSON.stringify(text)}`);
    assertEquals(JwsBody.safeParse(jwsBody(text)).success, decodeBase64url(text) !== undefined, `base64url ${JSON.stringify(text)}`);
  }
});
