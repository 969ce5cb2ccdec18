/**
 * A process's main isolate over the inspector protocol (the process runs with
 * `--inspect=127.0.0.1:0`): a V8 heap snapshot, or its memory after a full garbage collection. A
 * heap snapshot holds every JS string but never the bytes of an ArrayBuffer or a wasm memory, so
 * it catches keys in string form only.
 *
 * @module
 */

/**
 * Returns the snapshot's JSON text as bytes.
 *
 * @example
 * ```ts
 * const snapshot = await heapSnapshot("ws://127.0.0.1:43109/ec52…");
 * ```
 */
export async function heapSnapshot(url: string, timeoutMs = 60_000): Promise<Uint8Array> {
  const socket = new WebSocket(url);
  const chunks: string[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("heap snapshot timed out")), timeoutMs);
      socket.onerror = () => reject(new Error(`cannot reach the inspector at ${url}`));
      socket.onopen = () => {
        socket.send(JSON.stringify({ id: 1, method: "HeapProfiler.enable" }));
        socket.send(JSON.stringify({ id: 2, method: "HeapProfiler.collectGarbage" }));
        socket.send(JSON.stringify({ id: 3, method: "HeapProfiler.takeHeapSnapshot", params: { reportProgress: false } }));
      };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(message.params.chunk);
        if (message.error) reject(new Error(`inspector: ${JSON.stringify(message.error)}`));
        if (message.id === 3) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
  } finally {
    socket.close();
  }
  return new TextEncoder().encode(chunks.join(""));
}

/** `Deno.memoryUsage()` of a process, in bytes. */
export interface MemoryUsage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
}

/**
 * Runs a full garbage collection in the process, then answers its `Deno.memoryUsage()`: what its
 * V8 heap holds alive, apart from garbage not yet collected.
 *
 * @example
 * ```ts
 * const { heapUsed } = await memoryAfterCollection("ws://127.0.0.1:43109/ec52…");
 * ```
 */
export async function memoryAfterCollection(url: string, timeoutMs = 30_000): Promise<MemoryUsage> {
  const socket = new WebSocket(url);
  try {
    return await new Promise<MemoryUsage>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("reading the memory timed out")), timeoutMs);
      socket.onerror = () => reject(new Error(`cannot reach the inspector at ${url}`));
      socket.onopen = () => {
        socket.send(JSON.stringify({ id: 1, method: "HeapProfiler.collectGarbage" }));
        socket.send(JSON.stringify({
          id: 2,
          method: "Runtime.evaluate",
          params: { expression: "JSON.stringify(Deno.memoryUsage())", returnByValue: true },
        }));
      };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.error) reject(new Error(`inspector: ${JSON.stringify(message.error)}`));
        if (message.id === 2) {
          clearTimeout(timer);
          resolve(JSON.parse(message.result.result.value));
        }
      };
    });
  } finally {
    socket.close();
  }
}
