/**
 * The soak: `serve` in process mode under mixed operations for a long time (30 minutes in the
 * full run): HTTP key generation (P-256 and RSA-2048), signatures, sign-batch, JWS, reads,
 * listing and deletes, and Keyless signatures on the key server's socket beside them. Every
 * answer must be the expected one; resident memory of `serve` and its key server is sampled
 * throughout and its slope stated.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { startServer } from "../_command.ts";
import { apiClient } from "../_server.ts";
import { tempDir } from "../_temp.ts";
import { algorithmsFor, digestFor } from "../_verify.ts";
import { KeylessClient } from "../../src/keyless/client.ts";
import { Opcode } from "../../src/keyless/codec.ts";
import { keylessNames } from "../../src/core/key_names.ts";
import { after, closedLoop, descriptors, latencies, mib, rssKib, size, sleep, slope, Tally } from "./_measure.ts";
import { recordRow } from "./_report.ts";

interface Key {
  id: string;
  keySpec: "ECC_NIST_P256" | "RSA_2048";
  ski: Uint8Array;
}

/** Runs the soak and records its row. */
export async function soak(): Promise<void> {
  const minutes = Number(Deno.env.get("KEYCELL_SOAK_MINUTES") ?? size(0.05, 30));
  const durationMs = minutes * 60_000;
  const dataDir = await tempDir("keycell-soak-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "process" } });
  const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
  // Keys every loop signs with, and each loop's own: a loop deletes only keys it made, so no
  // signature races a delete of its key.
  const shared: Key[] = [];
  const own: Key[][] = [[], [], [], []];
  const generate = async (keySpec: Key["keySpec"], into: Key[]): Promise<string> => {
    const res = await api("POST", "/v1/keys", { keySpec });
    if (res.status !== 201) return (await res.body?.cancel(), String(res.status));
    const body = await res.json();
    into.push({ id: body.id, keySpec, ski: keylessNames(Uint8Array.fromBase64(body.publicKey))!.ski });
    return "201";
  };
  const digest = await digestFor("ECDSA_SHA_256", new TextEncoder().encode("soak"));
  const pick = (keys: Key[]) => keys[Math.floor(Math.random() * keys.length)];
  const status = async (res: Promise<Response>) => {
    const r = await res;
    await r.body?.cancel();
    return String(r.status);
  };

  const keyless = await KeylessClient.connect({ transport: "unix", path: `${dataDir}/keyserver.sock` });
  const samples: { x: number; y: number; fds: number }[] = [];
  try {
    for (let i = 0; i < 8; i++) assertEquals(await generate(i % 4 === 0 ? "RSA_2048" : "ECC_NIST_P256", shared), "201");
    const started = performance.now();
    const stop = after(durationMs);
    const sampleEvery = size(500, 15_000);
    const sampler = (async () => {
      while (!stop()) {
        samples.push({ x: (performance.now() - started) / 60_000, y: rssKib(server.pid), fds: descriptors(server.pid) });
        await sleep(sampleEvery);
      }
      samples.push({ x: (performance.now() - started) / 60_000, y: rssKib(server.pid), fds: descriptors(server.pid) });
    })();
    const ops: Record<string, number> = {};
    const lastOp: string[] = [];
    const once = async (loop: number): Promise<string> => {
      const mine = own[loop];
      const roll = Math.random();
      const key = pick(mine.length > 0 && Math.random() < 0.5 ? mine : shared);
      const op = roll < 0.3 ? "sign" : roll < 0.4 ? "sign-batch" : roll < 0.5 ? "jws" : roll < 0.6 ? "get" : roll < 0.65 ? "list" : roll < 0.72 ? "generate" : roll < 0.77 ? "delete" : "keyless";
      ops[op] = (ops[op] ?? 0) + 1;
      lastOp[loop] = op;
      const algorithm = algorithmsFor(key.keySpec)[0];
      const message = (await digestFor(algorithm, crypto.getRandomValues(new Uint8Array(32)))).toBase64();
      switch (op) {
        case "sign":
          return await status(api("POST", `/v1/keys/${key.id}/sign`, { algorithm, messageType: "DIGEST", message }));
        case "sign-batch":
          return await status(api("POST", `/v1/keys/${key.id}/sign-batch`, { batch: [1, 2, 3].map(() => ({ algorithm, messageType: "DIGEST", message })) }));
        case "jws":
          return await status(api("POST", `/v1/keys/${key.id}/jws`, { protectedHeader: { alg: key.keySpec === "RSA_2048" ? "RS256" : "ES256" }, payload: "c29haw" }));
        case "get":
          return await status(api("GET", `/v1/keys/${key.id}`));
        case "list":
          return await status(api("GET", "/v1/keys"));
        case "generate":
          return mine.length >= 15 ? "200" : await generate(Math.random() < 0.05 ? "RSA_2048" : "ECC_NIST_P256", mine);
        case "delete": {
          if (mine.length <= 5) return "200";
          const victim = mine.shift()!;
          const s = await status(api("DELETE", `/v1/keys/${victim.id}?immediately=true`));
          return s === "204" ? "200" : s;
        }
        default: {
          const opcode = key.keySpec === "RSA_2048" ? Opcode.RSA_SIGN_SHA256 : Opcode.ECDSA_SIGN_SHA256;
          const answer = await keyless.request({ opcode, payload: digest, ski: key.ski });
          return answer.kind === "ok" ? "ok" : `keyless ${answer.kind === "error" ? answer.code : answer.kind}`;
        }
      }
    };
    // A failure is counted under its operation's name: "jws 400".
    const named = async (loop: number) => {
      const kind = await once(loop);
      return ["200", "201", "ok"].includes(kind) ? kind : `${lastOp[loop]} ${kind}`;
    };
    const tally = await closedLoop(4, named, stop, new Tally());
    await sampler;
    const warm = samples.filter((s) => s.x >= minutes * 0.1);
    const perMinute = slope(warm) / 1024;
    const first = warm[0] ?? samples[0];
    const last = samples.at(-1)!;
    const figures = [
      `${minutes} min, 4 loops: ${tally.total} operations (${Object.entries(ops).map(([k, n]) => `${k} ${n}`).join(", ")})`,
      `errors: ${tally.failures} (${tally.describe()})`,
      `latency of every answer: ${latencies(tally.good)}`,
      `RSS of serve + key server after warm-up ${mib(first.y)}, at the end ${mib(last.y)}, slope ${perMinute.toFixed(3)} MiB/min over ${warm.length} samples; descriptors ${first.fds} -> ${last.fds}`,
    ];
    await recordRow({ row: "soak", verdict: tally.failures === 0 ? "pass" : "fail", figures });
    assertEquals(tally.failures, 0, figures.join("\n"));
    assert(last.y < first.y * 1.5 + 64 * 1024, `RSS grew: ${figures.join("\n")}`);
  } finally {
    keyless.close();
    assertEquals(await server.stop(), 0);
  }
}
