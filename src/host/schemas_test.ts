import { assertEquals } from "../../test/_assert.ts";
import { decodeBase64 } from "./schemas.ts";

Deno.test("decodeBase64 takes only standard, padded, canonical base64", () => {
  assertEquals(decodeBase64("AQI="), new Uint8Array([1, 2]));
  assertEquals(decodeBase64(""), new Uint8Array(0));
  assertEquals(decodeBase64("+/8="), new Uint8Array([0xfb, 0xff]));
  for (const bad of ["AQI", "AQJ=", "AQ I=", " AQI=", "AQI=\n", "-_8=", "AQI==", "A===", "not base64!", "AQI=AQI="]) {
    assertEquals(decodeBase64(bad), undefined, JSON.stringify(bad));
  }
});
