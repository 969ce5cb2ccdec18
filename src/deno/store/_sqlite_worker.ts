/**
 * The Worker that runs {@linkcode SqliteKeyStore} for {@linkcode SqliteWorkerStore}: node:sqlite is
 * synchronous, so a slow or frozen disk stalls this thread and not the one answering requests.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { SqliteKeyStore } from "./sqlite.ts";
import { SealedUnderOtherKey } from "../../core/key_store.ts";
import type { StoreCall, StoreReply } from "./sqlite_worker_store.ts";

let store: SqliteKeyStore | undefined;

self.onmessage = (event: MessageEvent<StoreCall>) => {
  const { id, method, args } = event.data;
  let reply: StoreReply;
  try {
    if (method === "open") {
      store = SqliteKeyStore.open(args[0] as string);
      reply = { id, value: store.journalMode };
    } else {
      // Every method of SqliteKeyStore settles synchronously (it wraps results in resolved promises).
      const call = (store as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[method];
      call.apply(store, args).then(
        (value) => self.postMessage({ id, value } satisfies StoreReply),
        (err) => self.postMessage(failure(id, err)),
      );
      return;
    }
  } catch (err) {
    reply = failure(id, err);
  }
  self.postMessage(reply);
};

function failure(id: number, err: unknown): StoreReply {
  return { id, error: (err as Error).message ?? String(err), fenced: err instanceof SealedUnderOtherKey };
}
