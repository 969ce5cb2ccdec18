/**
 * The compartment's secrets from files, on Deno: a master key file and a directory of key files;
 * or a master key from an environment variable, where the platform keeps secrets there (Deno
 * Deploy). Each is read synchronously straight into the compartment's buffer, which it zeroes once
 * the guest has the bytes; nothing here keeps a copy (an environment variable is a string the
 * runtime keeps, which nothing can zero).
 *
 * @module
 */

import { Compartment, type KeySource, type MasterKeySource } from "./compartment.ts";
import { FamilyGuests, type Guest } from "./family_guests.ts";

/** A compartment's start options, with secrets named by path (they cross to a Worker as they are). */
export interface FileOptions {
  /** The guest module's bytes, or compiled. */
  wasm: BufferSource | WebAssembly.Module;
  /** A directory of PEM/DER private keys, loaded at start and again whenever the guest is re-created. */
  keysDir?: string;
  /** The master key file, read straight into the guest. */
  masterKeyPath?: string;
  /** Instead of a file: the environment variable holding the master key ({@linkcode masterKeyFromEnv}). */
  masterKeyEnv?: string;
  /** Let the guest create the master key file (mode 0600) when it does not exist (first start only). */
  createMasterKey?: boolean;
  /** The master key file being rotated away from. */
  previousMasterKeyPath?: string;
  /** Budget of the guest's cache of unsealed keys, in bytes. */
  cacheBytes?: number;
}

/**
 * Instantiates a compartment whose secrets come from files.
 *
 * @example
 * ```ts
 * import { openCompartment } from "./files.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * const compartment = openCompartment({
 *   wasm: Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url)),
 *   masterKeyPath: `${dir}/master.key`,
 *   createMasterKey: true,
 * });
 * console.log(compartment.masterKeyId); // 64 hex digits
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function openCompartment(options: FileOptions): Compartment {
  const { keysDir, masterKeyPath, masterKeyEnv, previousMasterKeyPath, ...rest } = options;
  return Compartment.create({
    ...rest,
    ...(keysDir !== undefined ? { keys: keyDirectory(keysDir) } : {}),
    ...(masterKeyPath !== undefined ? { masterKey: masterKeyFile(masterKeyPath) } : {}),
    ...(masterKeyEnv !== undefined ? { masterKey: masterKeyFromEnv(masterKeyEnv) } : {}),
    ...(previousMasterKeyPath !== undefined ? { previousMasterKey: masterKeyFile(previousMasterKeyPath) } : {}),
  });
}

/**
 * Instantiates the guest whose secrets come from files: one compartment, or with `rsaWasm` two
 * ({@linkcode FamilyGuests}): RSA keys in an instance of `rsaWasm`, EC keys in one of `wasm`. The
 * EC one starts first, so it is the one that makes the master key on a first start.
 *
 * @example
 * ```ts
 * import { openGuest } from "./files.ts";
 *
 * const guest = openGuest({
 *   wasm: Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url)),
 *   rsaWasm: Deno.readFileSync(new URL("../../wasm/signer-wide.wasm", import.meta.url)),
 * });
 * guest.handle(new Uint8Array([7])); // HEALTH: Uint8Array [0]
 * ```
 */
export function openGuest(options: FileOptions & { rsaWasm?: BufferSource | WebAssembly.Module }): Guest {
  const { rsaWasm, ...ec } = options;
  if (rsaWasm === undefined) return openCompartment(ec);
  const EC = openCompartment(ec);
  return new FamilyGuests({ EC, RSA: openCompartment({ ...ec, wasm: rsaWasm, createMasterKey: false }) });
}

/**
 * A master key file; `create` writes a new one, mode 0600, and never over an existing file.
 *
 * @example
 * ```ts
 * import { masterKeyFile } from "./files.ts";
 *
 * masterKeyFile("/nonexistent/master.key").size(); // undefined
 * ```
 */
export function masterKeyFile(path: string): MasterKeySource {
  return {
    name: path,
    size() {
      try {
        return Deno.statSync(path).size;
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return undefined;
        throw new Error(`cannot read the master key ${path}: ${(err as Error).name}`);
      }
    },
    read: (into) => readFully(path, into),
    create(key) {
      const file = Deno.openSync(path, { write: true, createNew: true, mode: 0o600 });
      try {
        for (let at = 0; at < key.length;) at += file.writeSync(key.subarray(at));
        file.syncSync();
      } finally {
        file.close();
      }
    },
  };
}

/**
 * A master key held in an environment variable as base64 (44 characters) or hex (64 digits) of
 * its 32 bytes: a platform secret. The variable's string stays in the runtime (and the process
 * environment), where it cannot be zeroed; the bytes are decoded straight into the compartment's
 * buffer each time the guest is (re)created. An unset or empty variable is no key (`size()` is
 * `undefined`); the guest cannot create one here, a platform secret is set by its owner.
 *
 * @example
 * ```ts
 * import { masterKeyFromEnv } from "./files.ts";
 *
 * masterKeyFromEnv("KEYCELL_UNSET_VARIABLE").size(); // undefined
 * ```
 */
export function masterKeyFromEnv(name: string): MasterKeySource {
  const value = (): string | undefined => {
    const text = Deno.env.get(name)?.trim();
    if (text === undefined || text === "") return undefined;
    if (!BASE64_32.test(text) && !HEX_32.test(text)) {
      throw new Error(`the master key ${name} must be base64 (44 characters) or hex (64 digits) of 32 bytes`);
    }
    return text;
  };
  return {
    name,
    size: () => value() === undefined ? undefined : 32,
    read(into) {
      const text = value();
      if (text === undefined) throw new Error(`the master key ${name} is missing`);
      const { written } = HEX_32.test(text) ? into.setFromHex(text) : into.setFromBase64(text);
      if (written !== into.length) throw new Error(`the master key ${name} is not ${into.length} bytes`);
    },
  };
}

const BASE64_32 = /^[A-Za-z0-9+/]{43}=$/;
const HEX_32 = /^[0-9a-fA-F]{64}$/;

/**
 * The regular files of a directory, in name order; names starting with `.` are left out.
 *
 * @example
 * ```ts
 * import { keyDirectory } from "./files.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * console.log(keyDirectory(dir).list()); // []
 * Deno.removeSync(dir);
 * ```
 */
export function keyDirectory(dir: string): KeySource {
  return {
    name: dir,
    list() {
      try {
        return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => !n.startsWith(".")).sort();
      } catch (err) {
        throw new Error(`cannot read the key directory: ${(err as Error).name}`);
      }
    },
    size(file) {
      let info: Deno.FileInfo;
      try {
        info = Deno.statSync(`${dir}/${file}`);
      } catch (err) {
        throw new Error(`cannot stat: ${(err as Error).name}`);
      }
      if (!info.isFile) throw new Error("not a regular file");
      return info.size;
    },
    read(file, into) {
      try {
        readFully(`${dir}/${file}`, into);
      } catch (err) {
        throw new Error(`cannot read: ${(err as Error).name}`);
      }
    },
  };
}

/** Fills `buffer` from the start of a file; a file shorter than the buffer is an error. */
function readFully(path: string, buffer: Uint8Array): void {
  const file = Deno.openSync(path, { read: true });
  try {
    let at = 0;
    while (at < buffer.length) {
      const n = file.readSync(buffer.subarray(at));
      if (n === null || n === 0) throw new Error(`${path} shrank while being read`);
      at += n;
    }
  } finally {
    file.close();
  }
}
