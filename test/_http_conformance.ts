/**
 * The HTTP API's conformance checks, shared by every server that serves it (workerd, Deno Deploy):
 * the same statuses and error codes as `serve`, signatures checked by openssl and WebCrypto.
 *
 * @module
 */

import { assert, assertEquals } from "./_assert.ts";
import { type FixtureKey, makeKeys, openssl } from "./_fixtures.ts";
import { wrapForImport } from "./_wrap.ts";
import { type Api, apiClient, generate, signAndVerify, signEveryWay } from "./_server.ts";
import { startServer } from "./_command.ts";
import { sha256Hex } from "../src/host/auth.ts";
import { tempDir } from "./_temp.ts";

/** A response's JSON body. */
export async function json(res: Response): Promise<Record<string, unknown>> {
  return await res.json();
}

/** A failed response's status and error code. */
export async function statusAndCode(res: Response): Promise<[number, string]> {
  return [res.status, ((await json(res)).error as { code: string }).code];
}

/** The keys {@linkcode checkKeyRoutes} made: a P-256 and an RSA-2048 key generated, a P-384 key imported wrapped. */
export interface ConformanceKeys {
  ec: FixtureKey;
  rsa: FixtureKey;
  p384: FixtureKey;
}

/**
 * Authentication, generation, wrapped import (a tampered one refused), listing and paging, get and
 * signing with every key, on a server with no keys yet. `root` is a directory for fixture files.
 *
 * @example
 * ```ts
 * import { checkKeyRoutes } from "./_http_conformance.ts";
 * import { apiClient } from "./_server.ts";
 *
 * async function check(server: { url: string }, token: string, root: string) {
 *   return await checkKeyRoutes(server, apiClient(server, token), root);
 * }
 * ```
 */
export async function checkKeyRoutes(server: { url: string }, api: Api, root: string): Promise<ConformanceKeys> {
  const anonymous = await fetch(`${server.url}/v1/keys`);
  assertEquals([anonymous.status, anonymous.headers.get("WWW-Authenticate"), (await json(anonymous)).error], [401, "Bearer", {
    code: "unauthorized",
    message: "a bearer token is required",
  }]);
  assertEquals(await statusAndCode(await apiClient(server, "not-the-token")("GET", "/v1/keys")), [401, "unauthorized"]);

  const ec = await generate(api, "ECC_NIST_P256", root);
  const rsa = await generate(api, "RSA_2048", root);

  // Wrapped import: openssl wraps a key to the guest's wrapping key.
  const wrapping = await api("GET", "/v1/wrapping-key");
  assertEquals(wrapping.status, 200);
  const wrappingSpki = Uint8Array.fromBase64((await json(wrapping)).publicKey as string);
  const [p384] = await makeKeys(`${root}/fixtures`, ["ECC_NIST_P384"]);
  const wrapped = await wrapForImport(root, wrappingSpki, p384.path);
  const flipped = wrapped.slice();
  flipped[flipped.length - 1] ^= 1;
  assertEquals(await statusAndCode(await api("POST", "/v1/keys/import", { keySpec: "ECC_NIST_P384", wrappedKey: flipped.toBase64() })), [400, "bad_request"]);
  const imported = await api("POST", "/v1/keys/import", { keySpec: "ECC_NIST_P384", wrappedKey: wrapped.toBase64() });
  assertEquals([imported.status, (await json(imported)).id], [201, p384.id]);
  await signAndVerify(api, p384);

  const all = [ec.id, rsa.id, p384.id].sort();
  assertEquals(((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id), all);
  const paged: string[] = [];
  let cursor: unknown;
  for (let pages = 0; pages < 3; pages++) {
    const page = await json(await api("GET", `/v1/keys?limit=1${cursor ? `&cursor=${cursor}` : ""}`));
    paged.push(...(page.keys as { id: string }[]).map((k) => k.id));
    cursor = page.nextCursor;
  }
  assertEquals([paged, cursor], [all, undefined], "three pages of one, the last without a cursor");
  assertEquals((await api("GET", "/v1/keys?limit=0")).status, 400);

  const got = await api("GET", `/v1/keys/${rsa.id}`);
  const shown = await got.json();
  assertEquals([got.status, shown.id, shown.keySpec, shown.publicKey], [200, rsa.id, "RSA_2048", rsa.spki.toBase64()]);
  assertEquals([shown.name, shown.state, shown.primary, shown.versions.length], [rsa.id, "enabled", rsa.id, 1], "a key named by its id");
  // As PEM, the same SPKI, in a block openssl reads.
  const asPem = await json(await api("GET", `/v1/keys/${ec.id}?format=pem`));
  assertEquals([asPem.id, asPem.keySpec, asPem.publicKey], [ec.id, "ECC_NIST_P256", undefined]);
  const pemText = asPem.publicKeyPem as string;
  assert(pemText.startsWith("-----BEGIN PUBLIC KEY-----\n") && pemText.endsWith("\n-----END PUBLIC KEY-----"), pemText);
  assertEquals(await openssl(["pkey", "-pubin", "-outform", "DER"], new TextEncoder().encode(pemText)), ec.spki);
  await signAndVerify(api, ec);
  await signAndVerify(api, rsa);
  return { ec, rsa, p384 };
}

/**
 * The errors `serve` answers for unknown keys and routes and bad requests, then deleting `key`:
 * afterwards it is `key_not_found` everywhere, a second delete included.
 *
 * @example
 * ```ts
 * import { checkErrorsAndDelete } from "./_http_conformance.ts";
 * import type { Api } from "./_server.ts";
 * import type { FixtureKey } from "./_fixtures.ts";
 *
 * async function check(api: Api, ec: FixtureKey) {
 *   await checkErrorsAndDelete(api, ec);
 * }
 * ```
 */
export async function checkErrorsAndDelete(api: Api, key: FixtureKey): Promise<void> {
  assert(key.keySpec === "ECC_NIST_P256", "the key deleted is the P-256 one");
  const sign = { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" };
  const absent = "0".repeat(64);
  assertEquals(await statusAndCode(await api("GET", `/v1/keys/${absent}`)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("GET", "/v1/keys/not-an-id")), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${absent}/sign`, sign)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("GET", "/v1/nowhere")), [404, "not_found"]);
  assertEquals(await statusAndCode(await api("POST", "/v1/keys", { keySpec: "RSA_1024" })), [400, "bad_request"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${key.id}/sign`, { ...sign, algorithm: "RSASSA_PSS_SHA_256" })), [400, "bad_request"]);

  assertEquals((await api("DELETE", `/v1/keys/${key.id}?immediately=true`)).status, 204);
  assertEquals(await statusAndCode(await api("GET", `/v1/keys/${key.id}`)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${key.id}/sign`, sign)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("DELETE", `/v1/keys/${key.id}?immediately=true`)), [404, "key_not_found"]);
}

/**
 * After a restart: the kept keys are listed and sign, and a token scoped to `scoped` lists only
 * that key, with no cursor to the others.
 *
 * @example
 * ```ts
 * import { checkAfterRestart } from "./_http_conformance.ts";
 * import { apiClient } from "./_server.ts";
 * import type { FixtureKey } from "./_fixtures.ts";
 *
 * async function check(server: { url: string }, admin: string, scopedToken: string, rsa: FixtureKey, p384: FixtureKey) {
 *   await checkAfterRestart(apiClient(server, admin), apiClient(server, scopedToken), rsa, [rsa, p384]);
 * }
 * ```
 */
export async function checkAfterRestart(api: Api, scopedApi: Api, scoped: FixtureKey, kept: FixtureKey[]): Promise<void> {
  assertEquals(((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id), kept.map((k) => k.id).sort());
  const page = await json(await scopedApi("GET", "/v1/keys?limit=1"));
  assertEquals([(page.keys as { id: string }[]).map((k) => k.id), page.nextCursor], [[scoped.id], undefined], "only the token's key, no cursor");
  for (const key of kept) await signAndVerify(api, key);
}

/**
 * `serve` with `env`, through {@linkcode checkKeyRoutes} and {@linkcode checkErrorsAndDelete}
 * (the RSA and P-384 keys also signed every way when `everyWay`), then stopped and started again
 * with a second token scoped to the RSA key: {@linkcode checkAfterRestart}.
 *
 * @example
 * ```ts
 * import { checkServeAcrossRestart } from "./_http_conformance.ts";
 *
 * await checkServeAcrossRestart("keycell-serve-", { KEYCELL_SIGNER: "worker" }, false);
 * ```
 */
export async function checkServeAcrossRestart(prefix: string, env: Record<string, string>, everyWay: boolean): Promise<void> {
  const root = await tempDir(prefix);
  const dataDir = `${root}/data`;
  let server = await startServer({ dataDir, env });
  const admin = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  let keys: ConformanceKeys;
  try {
    const api = apiClient(server, admin);
    keys = await checkKeyRoutes(server, api, root);
    if (everyWay) for (const key of [keys.rsa, keys.p384]) await signEveryWay(api, key);
    await checkErrorsAndDelete(api, keys.ec);
  } finally {
    assertEquals(await server.stop(), 0);
  }
  const scoped = "rsa-only-secret";
  await Deno.writeTextFile(
    `${dataDir}/tokens.json`,
    JSON.stringify({ tokens: [{ name: "admin", sha256: sha256Hex(admin), keys: "*" }, { name: "rsa-only", sha256: sha256Hex(scoped), keys: [keys.rsa.id] }] }),
  );
  server = await startServer({ dataDir, env });
  try {
    await checkAfterRestart(apiClient(server, admin), apiClient(server, scoped), keys.rsa, [keys.rsa, keys.p384]);
  } finally {
    assertEquals(await server.stop(), 0);
  }
}

/**
 * Named keys over HTTP: made with a name and metadata, rotated (the name signs with the new
 * primary, the old version by its id, both verify), disabled and enabled, scheduled for deletion
 * and cancelled, then deleted at once. Leaves the server's other keys as they were.
 *
 * @example
 * ```ts
 * import { checkNamedKeys } from "./_http_conformance.ts";
 * import type { Api } from "./_server.ts";
 *
 * async function check(api: Api) {
 *   await checkNamedKeys(api);
 * }
 * ```
 */
export async function checkNamedKeys(api: Api): Promise<void> {
  const name = "conformance-web";
  const sign = { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" };
  const before = ((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id);
  const created = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256", name, description: "the web key", labels: { team: "edge" } });
  const first = await json(created);
  assertEquals([created.status, first.name], [201, name]);
  assertEquals(await statusAndCode(await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256", name })), [409, "key_name_taken"]);
  assertEquals(await statusAndCode(await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256", name: "ab".repeat(32) })), [400, "bad_request"]);

  /** Signs by `ref`; checks the signature by the key id the answer names; resolves with that id. */
  const signs = async (ref: string): Promise<string> => {
    const res = await api("POST", `/v1/keys/${ref}/sign`, sign);
    const answer = await json(res);
    assertEquals(res.status, 200, JSON.stringify(answer));
    const verified = await json(await api("POST", `/v1/keys/${answer.keyId}/verify`, { ...sign, signature: answer.signature }));
    assertEquals(verified.valid, true);
    return answer.keyId as string;
  };
  assertEquals(await signs(name), first.id);

  const rotated = await api("POST", `/v1/keys/${name}/rotate`);
  const after = await json(rotated);
  assertEquals(rotated.status, 200);
  const second = after.primary as string;
  assert(second !== first.id, "a new version");
  assertEquals((after.versions as { id: string; version: number }[]).map((v) => [v.id, v.version]), [[first.id, 1], [second, 2]]);
  assertEquals(await signs(name), second, "the name signs with the new primary");
  assertEquals(await signs(first.id as string), first.id, "the old version signs by its id");
  const described = await json(await api("GET", `/v1/keys/${name}`));
  assertEquals(
    [described.id, described.name, described.state, described.primary, described.description, described.labels],
    [second, name, "enabled", second, "the web key", { team: "edge" }],
  );
  assert(typeof described.created === "string" && !Number.isNaN(Date.parse(described.created)), "an ISO 8601 creation time");
  assertEquals((await json(await api("GET", `/v1/keys/${first.id}`))).name, name, "an id shows its name");

  assertEquals((await json(await api("POST", `/v1/keys/${name}/disable`))).state, "disabled");
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${name}/sign`, sign)), [409, "key_disabled"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${first.id}/sign`, sign)), [409, "key_disabled"], "every version");
  assertEquals((await json(await api("GET", `/v1/keys/${name}`))).state, "disabled", "shown while disabled");
  const listed = ((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id);
  assert(listed.includes(first.id as string) && listed.includes(second), "listed while disabled");
  assertEquals((await json(await api("POST", `/v1/keys/${name}/enable`))).state, "enabled");
  assertEquals(await signs(name), second);

  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${name}/schedule-deletion`, { pendingWindowDays: 3 })), [400, "bad_request"]);
  const scheduled = await json(await api("POST", `/v1/keys/${name}/schedule-deletion`, { pendingWindowDays: 7 }));
  assertEquals(scheduled.state, "pending_deletion");
  assert(Date.parse(scheduled.deletionDate as string) > Date.parse(described.created as string), "a deletion date to come");
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${name}/sign`, sign)), [409, "key_pending_deletion"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${name}/enable`)), [409, "key_pending_deletion"]);
  const cancelled = await json(await api("POST", `/v1/keys/${name}/cancel-deletion`));
  assertEquals([cancelled.state, cancelled.deletionDate], ["disabled", undefined], "cancelled into disabled, as AWS KMS does");

  assertEquals(await statusAndCode(await api("DELETE", `/v1/keys/${name}`)), [400, "bad_request"], "not at once unless asked");
  assertEquals((await api("DELETE", `/v1/keys/${name}?immediately=true`)).status, 204);
  assertEquals(await statusAndCode(await api("GET", `/v1/keys/${name}`)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${first.id}/sign`, sign)), [404, "key_not_found"], "every version went");
  assertEquals(((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id), before);
}
