/**
 * `keycell keys ...`: the key operations of a running keycell from the command line, in the
 * style of `vault` and `aws kms`: human output by default, `--json` for scripts, one line on
 * failure (no stack traces), and exit codes a script can act on.
 *
 * @module
 */

import { KeycellClient, type Key, type KeyDetails, type SignOptions } from "../client/client.ts";
import { ALGORITHMS, type AlgorithmName, KEY_SPECS, type KeySpec } from "../core/algorithms.ts";
import { KeycellError } from "../core/errors.ts";
import { publicKeyPem } from "../core/key_names.ts";

/** Exit codes of the `keys` commands. */
export const Exit = {
  OK: 0,
  /** The server refused or failed the request. */
  FAILED: 1,
  /** The command line is wrong. */
  USAGE: 2,
  /** The server could not be reached. */
  UNREACHABLE: 3,
  /** `verify`: the signature does not verify. */
  INVALID: 4,
} as const;

/** Where a command reads its settings and writes its output. */
export interface KeysContext {
  /** Server base URL. */
  url: string;
  token?: string;
  out: (line: string) => void;
  err: (line: string) => void;
  /** Reads a file a command names (`--message-file`). */
  readFile: (path: string) => Uint8Array;
  fetch?: typeof fetch;
  /** Shows that a slow request (key generation) is under way, until it settles; never with `--json`. */
  progress?: <T>(label: string, work: Promise<T>) => Promise<T>;
}

/** `keycell keys` usage. */
export const KEYS_USAGE = `usage: keycell keys <command> [--json]

  <key> is a key's name, or a key id (which, for sign and verify, is that version alone)

  list                                  the keys the token may use
  create <keySpec> [--jwks] [--name NAME] [--description TEXT] [--label K=V]...
                                        generate a key inside the guest (${Object.keys(KEY_SPECS).join(", ")});
                                        --jwks also publishes it in /.well-known/jwks.json
  get <key>                             one key: its versions, state and metadata
  rotate <key>                          a new version, made in the guest, becomes primary; older ones stay
  disable <key> | enable <key>          stop every version of the key signing, or let it sign again
  delete <key> [--days N] [--now]       schedule the key's deletion in N days (7 to 30, default 30); it signs
                                        no more meanwhile. --now deletes it, every version, at once
  cancel-deletion <key>                 keep a key scheduled for deletion (it is then disabled)
  pubkey <key>                          its public key, PEM
  jwk <key>                             its public key, JWK
  jwks <id> on|off                      publish the key in /.well-known/jwks.json, or stop
  sign <key> <algorithm> (--message TEXT | --message-file FILE) [--digest] [--raw-signature]
                                        the signature, base64
  verify <key> <algorithm> (--message TEXT | --message-file FILE) (--signature BASE64 | --signature-file FILE)
         [--digest] [--raw-signature]   "valid" (exit 0) or "invalid" (exit 4), checked with the public key

  The server is KEYCELL_URL (default: http://KEYCELL_LISTEN); the token KEYCELL_TOKEN or the admin token
  in KEYCELL_DATA_DIR. Exit codes: 0 done, 1 refused by the server, 2 usage, 3 server not reachable,
  4 signature invalid (verify).`;

/**
 * Runs one `keycell keys` command; resolves with its exit code.
 *
 * @example
 * ```ts
 * import { runKeys } from "./keys.ts";
 *
 * const lines: string[] = [];
 * const code = await runKeys(["frobnicate"], {
 *   url: "http://127.0.0.1:1", out: (l) => lines.push(l), err: (l) => lines.push(l), readFile: () => new Uint8Array(),
 * });
 * console.log(code); // 2: usage
 * ```
 */
export async function runKeys(args: readonly string[], context: KeysContext): Promise<number> {
  const json = args.includes("--json");
  const words = args.filter((a) => a !== "--json");
  const [command, ...rest] = words;
  const usage = (why: string) => {
    context.err(`keycell: ${why}`);
    context.err(KEYS_USAGE);
    return Exit.USAGE;
  };
  const client = new KeycellClient({ url: context.url, token: context.token, fetch: context.fetch });
  const show = (key: Key) =>
    json ? context.out(JSON.stringify(keyJson(key))) : context.out(`${key.id}  ${key.keySpec}${key.name !== undefined ? `  ${key.name}` : ""}`);
  /** A named key: its id line as `show` prints it, then its state, metadata and versions. */
  const describe = (key: KeyDetails) => {
    if (json) return context.out(JSON.stringify({ ...key, publicKey: key.publicKey.toBase64() }));
    context.out(`${key.id}  ${key.keySpec}`);
    context.out(`  name         ${key.name}`);
    context.out(`  state        ${key.state}${key.deletionDate !== undefined ? ` (deleted on ${key.deletionDate})` : ""}`);
    if (key.created !== undefined) context.out(`  created      ${key.created}`);
    if (key.description !== undefined) context.out(`  description  ${key.description}`);
    for (const [k, v] of Object.entries(key.labels ?? {})) context.out(`  label        ${k}=${v}`);
    for (const v of key.versions) {
      context.out(`  version ${v.version}    ${v.id}${v.id === key.primary ? "  primary" : ""}${v.created !== undefined ? `  ${v.created}` : ""}`);
    }
  };
  try {
    switch (command) {
      case "list": {
        const keys = await client.listKeys();
        if (json) context.out(JSON.stringify({ keys: keys.map(keyJson) }));
        else if (keys.length === 0) context.out("no keys");
        else keys.forEach(show);
        return Exit.OK;
      }
      case "create": {
        const [spec] = rest;
        if (!(spec in KEY_SPECS)) return usage(`create needs a key spec: ${Object.keys(KEY_SPECS).join(", ")}`);
        const labels: Record<string, string> = {};
        for (const label of flags(rest, "--label")) {
          const at = label.indexOf("=");
          if (at < 1) return usage(`--label takes NAME=VALUE, not ${JSON.stringify(label)}`);
          labels[label.slice(0, at)] = label.slice(at + 1);
        }
        const name = flag(rest, "--name");
        const description = flag(rest, "--description");
        const creating = client.createKey(spec as KeySpec, {
          jwks: rest.includes("--jwks"),
          ...(name !== undefined ? { name } : {}),
          ...(description !== undefined ? { description } : {}),
          ...(Object.keys(labels).length > 0 ? { labels } : {}),
        });
        show(await (json || context.progress === undefined ? creating : context.progress(`generating ${spec}`, creating)));
        return Exit.OK;
      }
      case "rotate":
      case "disable":
      case "enable":
      case "cancel-deletion": {
        const [ref] = rest;
        if (ref === undefined) return usage(`${command} needs a key name or id`);
        const change = { rotate: client.rotateKey, disable: client.disableKey, enable: client.enableKey, "cancel-deletion": client.cancelKeyDeletion };
        describe(await change[command].call(client, ref));
        return Exit.OK;
      }
      case "jwk": {
        const [id] = rest;
        if (id === undefined) return usage("jwk needs a key id");
        context.out(JSON.stringify(await client.getJwk(id)));
        return Exit.OK;
      }
      case "jwks": {
        const [id, state] = rest;
        if (id === undefined || (state !== "on" && state !== "off")) return usage("jwks needs a key id and on or off");
        await client.setJwks(id, state === "on");
        context.out(json ? JSON.stringify({ id, jwks: state === "on" }) : `${state === "on" ? "published" : "unpublished"} ${id}`);
        return Exit.OK;
      }
      case "get":
      case "pubkey":
      case "delete": {
        const [id] = rest;
        if (id === undefined) return usage(`${command} needs a key name or id`);
        if (command === "delete") {
          if (rest.includes("--now")) {
            await client.deleteKey(id);
            context.out(json ? JSON.stringify({ deleted: id }) : `deleted ${id}`);
            return Exit.OK;
          }
          const days = flag(rest, "--days");
          if (days !== undefined && !/^\d+$/.test(days)) return usage("--days takes a whole number of days, 7 to 30");
          describe(await client.scheduleKeyDeletion(id, days === undefined ? undefined : Number(days)));
        } else if (command === "pubkey") {
          const key = await client.getKey(id);
          context.out(json ? JSON.stringify({ id, publicKeyPem: publicKeyPem(key.publicKey) }) : publicKeyPem(key.publicKey));
        } else {
          describe(await client.describeKey(id));
        }
        return Exit.OK;
      }
      case "sign":
        return await sign(client, rest, json, context, usage);
      case "verify":
        return await verify(client, rest, json, context, usage);
      case undefined:
        return usage("keys needs a command");
      default:
        return usage(`unknown keys command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (!(err instanceof KeycellError)) throw err;
    context.err(`keycell: ${err.code}: ${err.message}`);
    return err.code === "signer_unavailable" && err.message.startsWith("cannot reach") ? Exit.UNREACHABLE : Exit.FAILED;
  }
}

async function sign(
  client: KeycellClient,
  args: readonly string[],
  json: boolean,
  context: KeysContext,
  usage: (why: string) => number,
): Promise<number> {
  const options = signOptions("sign", args, context, usage);
  if (typeof options === "number") return options;
  const [ref, algorithm] = args;
  const { keyId, signature } = await client.signWithKeyId(ref, options);
  context.out(json ? JSON.stringify({ keyId, algorithm, signature: signature.toBase64() }) : signature.toBase64());
  return Exit.OK;
}

async function verify(
  client: KeycellClient,
  args: readonly string[],
  json: boolean,
  context: KeysContext,
  usage: (why: string) => number,
): Promise<number> {
  const options = signOptions("verify", args, context, usage);
  if (typeof options === "number") return options;
  const text = flag(args, "--signature");
  const file = flag(args, "--signature-file");
  if ((text === undefined) === (file === undefined)) return usage("verify needs one of --signature BASE64 or --signature-file FILE");
  let signature: Uint8Array;
  if (text !== undefined) {
    try {
      signature = Uint8Array.fromBase64(text);
    } catch {
      return usage("--signature must be base64");
    }
  } else {
    const read = readOrFail(file!, context);
    if (read === undefined) return Exit.USAGE;
    signature = read;
  }
  const [id, algorithm] = args;
  const valid = await client.verify(id, { ...options, signature });
  context.out(json ? JSON.stringify({ keyId: id, algorithm, valid }) : valid ? "valid" : "invalid");
  return valid ? Exit.OK : Exit.INVALID;
}

/** The value after a flag, if the flag is there. */
function flag(args: readonly string[], name: string): string | undefined {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
}

/** The values after every use of a flag that may be repeated. */
function flags(args: readonly string[], name: string): string[] {
  return args.flatMap((a, i) => a === name && i + 1 < args.length ? [args[i + 1]] : []);
}

function readOrFail(file: string, context: KeysContext): Uint8Array | undefined {
  try {
    return context.readFile(file);
  } catch (err) {
    context.err(`keycell: cannot read ${file}: ${(err as Error).message}`);
    return undefined;
  }
}

/** `<id> <algorithm> (--message TEXT | --message-file FILE) [--digest] [--raw-signature]`, or the usage exit code. */
function signOptions(
  command: string,
  args: readonly string[],
  context: KeysContext,
  usage: (why: string) => number,
): SignOptions | number {
  const [id, algorithm] = args;
  if (id === undefined || !(algorithm in ALGORITHMS)) return usage(`${command} needs a key id and an algorithm, such as ECDSA_SHA_256`);
  const text = flag(args, "--message");
  const file = flag(args, "--message-file");
  if ((text === undefined) === (file === undefined)) return usage(`${command} needs one of --message TEXT or --message-file FILE`);
  const message = text !== undefined ? new TextEncoder().encode(text) : readOrFail(file!, context);
  if (message === undefined) return Exit.USAGE;
  return {
    algorithm: algorithm as AlgorithmName,
    message,
    messageType: args.includes("--digest") ? "DIGEST" : "RAW",
    ...(args.includes("--raw-signature") ? { signatureFormat: "RAW" as const } : {}),
  };
}

function keyJson(key: Key): { id: string; keySpec: KeySpec; publicKey: string; name?: string } {
  return { id: key.id, keySpec: key.keySpec, publicKey: key.publicKey.toBase64(), ...(key.name !== undefined ? { name: key.name } : {}) };
}
