/**
 * The bound on a signer call's wait, through the whole app over a transport that counts what
 * reaches the guest. Assertions are on answers and counts, never on time.
 */

import { assert, assertEquals } from "../../../test/_assert.ts";
import { ADMIN } from "../../../test/_app.ts";
import { createApp } from "../app.ts";
import { sha256Hex, TokenStore } from "../auth.ts";
import { encodeResponse, Op, Status } from "../../core/protocol.ts";
import { ProtocolSignerClient, type Transport } from "../../core/signer_client.ts";

const KEY_ID = "ab".repeat(32);
const SIGNATURE = Uint8Array.of(1, 2, 3);

/**
 * A guest behind a transport: counts the signatures that reach it, and holds each until
 * `finish()` (the first after `firstTakesMs`, when set, so the pace is known to be slower than that).
 */
function countingGuest(options: { firstTakesMs?: number } = {}) {
  const held: (() => void)[] = [];
  const guest = {
    signed: 0,
    /** The last byte of each signed message, in the order they reached the guest. */
    messages: [] as number[],
    /** Finishes the oldest held signature. */
    finish: () => held.shift()!(),
    get holding() {
      return held.length;
    },
  };
  const transport: Transport = {
    mode: "counting",
    request: async (request) => {
      if (request[0] !== Op.SIGN) return encodeResponse(Status.OK);
      guest.signed++;
      guest.messages.push(request[request.length - 1]);
      if (guest.signed === 1 && options.firstTakesMs !== undefined) await new Promise((resolve) => setTimeout(resolve, options.firstTakesMs));
      else await new Promise<void>((resolve) => held.push(resolve));
      return encodeResponse(Status.OK, SIGNATURE);
    },
    close: () => Promise.resolve(),
  };
  return { guest, signer: new ProtocolSignerClient(transport) };
}

function appOver(signer: ProtocolSignerClient, maxWaitMs: number) {
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
  const app = createApp({ signer, tokens, queue: { concurrency: 1, maxWaitMs } });
  const sign = (signal?: AbortSignal) =>
    app.request(
      new Request(`http://keycell.test/v1/keys/${KEY_ID}/sign`, {
        method: "POST",
        headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" },
        body: JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).toBase64() }),
        signal,
      }),
    );
  return Object.assign(sign, { app });
}

/** Waits until `ready()` holds; the bound only keeps a broken app from hanging the suite. */
async function until(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 3000 && !ready(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert(ready(), `never happened: ${what}`);
}

async function busyAnswer(res: Response): Promise<[number, string, string | null]> {
  return [res.status, (await res.json()).error?.code, res.headers.get("Retry-After")];
}

Deno.test("queue wait: a signer call that would wait past the bound answers 503 busy with Retry-After at once, and never reaches the guest", async () => {
  // The first signature takes 40 ms or more with the only place busy: a queued call would wait at
  // least that long, past the 20 ms bound.
  const { guest, signer } = countingGuest({ firstTakesMs: 40 });
  const sign = appOver(signer, 20);
  assertEquals((await sign()).status, 200, "a call alone is signed");
  const held = sign();
  await until(() => guest.holding === 1, "the second signature holds the only place");
  assertEquals(await busyAnswer(await sign()), [503, "busy", "1"]);
  assertEquals(guest.holding, 1, "answered while the place is still held");
  assertEquals(guest.signed, 2, "the refused call never reached the guest");
  const early = await sign.app.request(`/v1/keys/${KEY_ID}/sign`, { method: "POST", headers: { Authorization: `Bearer ${ADMIN}` }, body: "not json" });
  assertEquals(await busyAnswer(early), [503, "busy", "1"], "refused before its body is read");
  guest.finish();
  assertEquals((await held).status, 200);
});

Deno.test("queue wait: a call still queued when the bound has passed answers 503 busy then, though the guest is still busy", async () => {
  const { guest, signer } = countingGuest();
  const sign = appOver(signer, 20);
  const held = sign();
  await until(() => guest.holding === 1, "the first signature holds the only place");
  // The pace is not known yet, so the call is queued; the bound then runs out while it waits.
  assertEquals(await busyAnswer(await sign()), [503, "busy", "1"]);
  assertEquals([guest.holding, guest.signed], [1, 1], "refused before it reached the guest");
  guest.finish();
  assertEquals((await held).status, 200);
});

Deno.test("queue wait: a request whose client has gone is dropped before it reaches the guest; the next one is signed", async () => {
  const { guest, signer } = countingGuest();
  const sign = appOver(signer, 600_000);
  const held = sign();
  await until(() => guest.holding === 1, "the first signature holds the only place");
  const client = new AbortController();
  const queued = sign(client.signal);
  const gone = AbortSignal.abort();
  const alreadyGone = sign(gone);
  client.abort();
  assertEquals((await queued).status, 503, "dropped as its client went");
  assertEquals((await alreadyGone).status, 503, "dropped as it arrived");
  const next = sign();
  guest.finish();
  assertEquals((await held).status, 200);
  await until(() => guest.holding === 1, "the next request reaches the guest");
  guest.finish();
  assertEquals((await next).status, 200);
  assertEquals(guest.signed, 2, "the two requests whose client had gone never reached the guest");
});

Deno.test("queue wait: /healthz answers while every place is held and calls queue", async () => {
  const { guest, signer } = countingGuest();
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
  const app = createApp({ signer, tokens, queue: { concurrency: 1, maxWaitMs: 600_000 } });
  const sign = () =>
    app.request(`/v1/keys/${KEY_ID}/sign`, {
      method: "POST",
      headers: { Authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).toBase64() }),
    });
  const calls = [sign(), sign()];
  await until(() => guest.holding === 1, "the first signature holds the only place");
  assertEquals((await app.request("/healthz")).status, 200);
  guest.finish();
  await until(() => guest.holding === 1, "the queued one runs next");
  guest.finish();
  assertEquals((await Promise.all(calls)).map((r) => r.status), [200, 200]);
});

Deno.test("queue wait: tokens take turns, so one token's many queued requests do not hold up another's", async () => {
  const { guest, signer } = countingGuest();
  const FLOOD = "flood-token";
  const tokens = TokenStore.fromEntries([
    { name: "flood", sha256: sha256Hex(FLOOD), keys: "*" },
    { name: "admin", sha256: sha256Hex(ADMIN), keys: "*" },
  ]);
  const app = createApp({ signer, tokens, queue: { concurrency: 1, maxWaitMs: 600_000 } });
  const sign = (token: string, last: number) =>
    app.request(`/v1/keys/${KEY_ID}/sign`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      body: JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(last).toBase64() }),
    });
  const flood = [sign(FLOOD, 1)];
  await until(() => guest.holding === 1, "the flood's first signature holds the only place");
  for (let i = 0; i < 4; i++) flood.push(sign(FLOOD, 1));
  await until(() => guest.signed === 1 && flood.length === 5, "the flood's others are queued");
  // Give the flood's requests time to reach the queue before the other token's arrives.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const other = sign(ADMIN, 2);
  for (let finished = 0; finished < 6; finished++) {
    await until(() => guest.holding === 1, "a signature holds the place");
    guest.finish();
  }
  assertEquals([...(await Promise.all([...flood, other])).map((r) => r.status)], [200, 200, 200, 200, 200, 200]);
  // The flood's lane queued first, so it may have the first turn; the other token's comes next,
  // ahead of the flood's three other queued requests (first come, first served puts it last).
  assertEquals(guest.messages.toSorted(), [1, 1, 1, 1, 1, 2]);
  assert(guest.messages.indexOf(2) <= 2, `signed in the order ${guest.messages}`);
});
