import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals, assertRejects } from "../../../test/_assert.ts";
import { namedKeyConformance, storeConformance } from "../../../test/_store_conformance.ts";
import { KeycellError } from "../../core/errors.ts";
import { SealedSigner } from "../../core/sealed_keys.ts";
import { ProtocolSignerClient } from "../../core/signer_client.ts";
import { InlineTransport } from "../../guest/inline.ts";
import { SqliteWorkerStore } from "./sqlite_worker_store.ts";
import { catchLog } from "../../../test/_log.ts";
import { tempDir } from "../../../test/_temp.ts";
import { WASM } from "../../../test/_wasm.ts";


Deno.test("SqliteWorkerStore: the same behaviour as SqliteKeyStore, fencing errors included, across the thread", async () => {
  const dir = await tempDir("keycell-store-");
  try {
    const store = await SqliteWorkerStore.open(`${dir}/keys.db`);
    await storeConformance(store);
    await namedKeyConformance(store);
    await store.close();
    const reopened = await SqliteWorkerStore.open(`${dir}/keys.db`);
    assertEquals(await reopened.count(), 4);
    await reopened.close();
    await assertRejects(() => SqliteWorkerStore.open(`${dir}/absent/keys.db`), Error, "the file cannot be opened is reported");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SqliteWorkerStore: a store another process keeps open in WAL mode still opens, with a warning that names the risk", async () => {
  const dir = await tempDir("keycell-store-");
  const held = new DatabaseSync(`${dir}/keys.db`);
  try {
    held.exec("PRAGMA journal_mode = WAL; CREATE TABLE older (n INTEGER);");
    let store: SqliteWorkerStore | undefined;
    const lines = await catchLog(async () => {
      store = await SqliteWorkerStore.open(`${dir}/keys.db`);
    });
    assertEquals(await store!.count(), 0);
    await store!.close();
    assert(lines.some((l) => l.toError && /stays in wal mode while another process has it open/.test(l.line)), JSON.stringify(lines));
  } finally {
    held.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SqliteWorkerStore: a stalled database delays only what needs it; cached keys keep signing, the rest is 503", async () => {
  const dir = await tempDir("keycell-store-");
  const store = await SqliteWorkerStore.open(`${dir}/keys.db`);
  const signer = new SealedSigner(new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath: `${dir}/master.key`, createMasterKey: true })), store, {
    storeTimeoutMs: 2_000,
  });
  const holder = new DatabaseSync(`${dir}/keys.db`);
  try {
    const cached = await signer.generate("ECC_NIST_P256");
    // Another connection takes the write lock: the store's next write waits for it (busy timeout),
    // as it would for a disk that stopped answering.
    holder.exec("BEGIN IMMEDIATE");
    let generateSettled = false;
    const generating = signer.generate("ECC_NIST_P256").finally(() => generateSettled = true);
    // A timer: it fires only if this thread is free while the store waits on the lock.
    await new Promise((resolve) => setTimeout(resolve, 20));
    const signature = await signer.sign({ keyId: cached.id, algorithm: "ECDSA_SHA_256", messageType: "RAW", message: new Uint8Array(8) });
    assert(signature.length > 0);
    assert(!generateSettled, "the signature did not wait for the stalled store");
    await assertRejects(() => generating, (err: unknown) => err instanceof KeycellError && err.code === "signer_unavailable");
    holder.exec("ROLLBACK");
    assertEquals((await signer.getKey(cached.id)).id, cached.id, "the store answers again once the lock is gone");
  } finally {
    holder.close();
    await signer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
