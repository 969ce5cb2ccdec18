import { DatabaseSync } from "node:sqlite";
import { namedKeyConformance, storeConformance } from "../../test/_store_conformance.ts";
import { DurableKeyStore, type KeyStoreMethods, type KeyStoreNamespace, type RpcListOptions } from "./durable_key_store.ts";
import { durableObjectKeyStore } from "./sql_store.ts";
import type { SqlKeyStore } from "../core/sql_key_store.ts";
import { durableObjectStorage } from "../../test/_durable_object_storage.ts";

/**
 * A namespace whose one object holds a {@linkcode SqlKeyStore} on node:sqlite, answering as RPC
 * does: arguments and results copied, an error's message kept but not its class.
 */
function namespace(store: SqlKeyStore): KeyStoreNamespace {
  const remote = new Proxy({} as KeyStoreMethods, {
    get: (_, method: keyof KeyStoreMethods) => async (...args: unknown[]) => {
      try {
        const copied = structuredClone(args);
        // As KeyStoreObject does: a listing's ids arrive as an array.
        if (method === "list") {
          const { ids, ...options } = copied[0] as RpcListOptions;
          if (ids !== undefined && !Array.isArray(ids)) throw new Error("ids must cross RPC as an array");
          return structuredClone(await store.list(ids === undefined ? options : { ...options, ids: new Set(ids) }));
        }
        // deno-lint-ignore no-explicit-any
        return structuredClone(await (store[method] as any)(...copied));
      } catch (err) {
        throw new Error((err as Error).message);
      }
    },
  });
  return { idFromName: (name) => name, get: () => remote };
}

Deno.test("DurableKeyStore: the store conformance suite through an RPC-shaped stub, a fenced put refused as SealedUnderOtherKey", async () => {
  const db = new DatabaseSync(":memory:");
  try {
    const store = new DurableKeyStore(namespace(durableObjectKeyStore(durableObjectStorage(db))));
    await storeConformance(store);
    await namedKeyConformance(store);
  } finally {
    db.close();
  }
});
