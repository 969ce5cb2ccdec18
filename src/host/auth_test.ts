import { assert, assertEquals, assertThrows } from "../../test/_assert.ts";
import { admit, mayUse, newToken, sha256Hex, TokenStore } from "./auth.ts";
import { KeycellError } from "../core/errors.ts";

const isUnauthorized = (err: unknown) => err instanceof KeycellError && err.code === "unauthorized";

Deno.test("a configured token authenticates with its scope; anything else is unauthorized", () => {
  const store = TokenStore.fromEntries([
    { name: "all", sha256: sha256Hex("alpha"), keys: "*" },
    { name: "one", sha256: sha256Hex("beta"), keys: ["a".repeat(64)] },
  ]);
  assertEquals(store.authenticate("Bearer alpha"), { name: "all", keys: "*" });
  const one = store.authenticate("Bearer beta");
  assertEquals(one.name, "one");
  assert(mayUse(one, "a".repeat(64)));
  assert(!mayUse(one, "b".repeat(64)));
  for (const header of [undefined, "", "Bearer", "Bearer ", "bearer alpha", "Basic alpha", "Bearer alph", "Bearer alpha ", `Bearer ${"x".repeat(513)}`]) {
    assertThrows(() => store.authenticate(header), isUnauthorized, JSON.stringify(header));
  }
});

Deno.test("an empty store admits no one", () => {
  assertThrows(() => TokenStore.fromEntries([]).authenticate("Bearer anything"), isUnauthorized);
});

Deno.test("a malformed hash is refused when the store is built", () => {
  let thrown: unknown;
  try {
    TokenStore.fromEntries([{ name: "x", sha256: "ABC", keys: "*" }]);
  } catch (err) {
    thrown = err;
  }
  assert(thrown instanceof Error && thrown.message.includes("sha256"));
});

Deno.test("tokens are stored as their SHA-256, lowercase hex", () => {
  // FIPS 180-2's test vector, so the one hash that stores and checks tokens is checked against the standard.
  assertEquals(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
});

Deno.test("new tokens are 256-bit base64url and distinct", () => {
  const a = newToken();
  assert(/^[A-Za-z0-9_-]{43}$/.test(a), a);
  assert(a !== newToken());
});

Deno.test("a token with a rate is admitted up to its burst, then refused with when to retry; others are not limited", () => {
  const store = TokenStore.fromEntries([
    { name: "slow", sha256: sha256Hex("slow"), keys: "*", rate: { perSecond: 0.001, burst: 2 } },
    { name: "free", sha256: sha256Hex("free"), keys: "*" },
  ]);
  admit(store.authenticate("Bearer slow"));
  admit(store.authenticate("Bearer slow"));
  let refused: unknown;
  try {
    admit(store.authenticate("Bearer slow"));
  } catch (err) {
    refused = err;
  }
  assert(refused instanceof KeycellError && refused.code === "rate_limited", String(refused));
  assert(refused.retryAfterSeconds! > 990 && refused.retryAfterSeconds! <= 1000, String(refused.retryAfterSeconds));
  for (let i = 0; i < 100; i++) admit(store.authenticate("Bearer free"));
});

Deno.test("a rate that makes no sense is refused when the store is built, naming the token", () => {
  for (const rate of [{ perSecond: 0 }, { perSecond: 10, burst: 0 }, { perSecond: "10" }]) {
    assertThrows(
      () => TokenStore.fromEntries([{ name: "edge", sha256: sha256Hex("x"), keys: "*", rate: rate as never }]),
      (err: Error) => err.message.startsWith('token "edge": rate: '),
      JSON.stringify(rate),
    );
  }
});
