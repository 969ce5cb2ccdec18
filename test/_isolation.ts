/**
 * What the isolation suites share: the guest tag, and a recorder that scans and writes each scan
 * into its suite's report (rewritten after each scan, so a failing run still leaves what it saw).
 * Each suite has its own report: `deno test` runs every test file in an isolate of its own.
 *
 * @module
 */

import { heapSnapshot } from "./_inspector.ts";
import { type IsolationReport, writeIsolationReport } from "./_isolation_report.ts";
import { type Hit, type Pattern, type Region, type RegionKind, scanBytes, scanProcess } from "./_procmem.ts";
import { componentsOf, keyOf, secretPatterns } from "./_secrets.ts";

/** The 16-byte tag in the guest's data segment. */
export const GUEST_TAG = new TextEncoder().encode("keycell.guest.v1");

const SEAL_LABEL = new TextEncoder().encode("keycell.seal.v1");

/**
 * Opens a sealed blob with WebCrypto, independently of keycell's code:
 * `1 || purpose || spec || nonce (12) || ciphertext || tag`, AES-256-GCM under the master key with
 * the seal label, purpose, spec and id as associated data.
 *
 * @example
 * ```ts
 * const der = await openBlob(await Deno.readFile("master.key"), Uint8Array.fromHex(id), sealed);
 * ```
 */
export async function openBlob(master: Uint8Array<ArrayBuffer>, id: Uint8Array, blob: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const aad = new Uint8Array([...SEAL_LABEL, blob[1], blob[2], ...id]);
  const key = await crypto.subtle.importKey("raw", master, "AES-GCM", false, ["decrypt"]);
  const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: blob.slice(3, 15), additionalData: aad }, key, blob.slice(15));
  return new Uint8Array(plain);
}

/**
 * Patterns for a PKCS#8 key: its components in every form, via openssl (a PEM file is written in
 * `dir` for it and removed).
 *
 * @example
 * ```ts
 * const patterns = await pkcs8Patterns("generated-RSA_2048", der, dir);
 * ```
 */
export async function pkcs8Patterns(label: string, der: Uint8Array<ArrayBuffer>, dir: string): Promise<Pattern[]> {
  const path = `${dir}/${label}.pem`;
  await Deno.writeTextFile(path, `-----BEGIN PRIVATE KEY-----\n${der.toBase64()}\n-----END PRIVATE KEY-----\n`);
  try {
    return secretPatterns(label, await componentsOf(path), der);
  } finally {
    await Deno.remove(path);
  }
}

/**
 * Scans processes and records every scan in `<reports dir>/<name>.{json,md}` (.cache/reports, or reports/ under `deno task isolation`) (`<name>-full` when
 * KEYCELL_ISOLATION_FULL=1 reads every readable mapping).
 *
 * @example
 * ```ts
 * const recorder = new IsolationRecorder("isolation");
 * const { hits } = await recorder.scan("worker", "after loading", server.pid, patterns, server.inspector);
 * ```
 */
export class IsolationRecorder {
  readonly #name: string;
  readonly #report: IsolationReport = { full: Deno.env.get("KEYCELL_ISOLATION_FULL") === "1", scans: [] };

  constructor(name: string) {
    this.#name = name;
  }

  /** Scans a process for the patterns (and, given its inspector, the main isolate's heap snapshot). */
  async scan(
    mode: string,
    phase: string,
    pid: number,
    patterns: Pattern[],
    inspector?: string,
  ): Promise<{ hits: Hit[]; snapshotHits: string[]; regions: Region[] }> {
    const result = scanProcess(pid, patterns, GUEST_TAG, { full: this.#report.full });
    let snapshotHits: string[] = [];
    let snapshotBytes = 0;
    if (inspector) {
      const snapshot = await heapSnapshot(inspector);
      snapshotHits = scanBytes(snapshot, patterns).map((h) => h.label);
      snapshotBytes = snapshot.length;
    }
    this.#report.scans.push({
      mode,
      phase,
      durationMs: Math.round(result.durationMs),
      bytesRead: result.bytesRead,
      guestRegions: result.regions.filter((r) => r.kind === "guest").length,
      hits: tally(result.hits),
      ...(inspector ? { heapSnapshot: { bytes: snapshotBytes, hits: snapshotHits.length } } : {}),
    });
    await writeIsolationReport(this.#report, this.#name);
    return { hits: result.hits, snapshotHits, regions: result.regions };
  }
}

function tally(hits: Hit[]): Record<string, Partial<Record<RegionKind, number>>> {
  const out: Record<string, Partial<Record<RegionKind, number>>> = {};
  for (const hit of hits) {
    const perKey = out[keyOf(hit.label)] ??= {};
    perKey[hit.region.kind] = (perKey[hit.region.kind] ?? 0) + 1;
  }
  return out;
}
