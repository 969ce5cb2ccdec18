/**
 * Runs `openssl speed` for one algorithm and reads its machine-readable output.
 *
 * @module
 */

/**
 * Signatures per second from `openssl speed -mr` output, by speed name (`rsa2048`, `ecdsap256`).
 * OpenSSL 3 prints `+F2:index:bits:sign/s:verify/s` for RSA and `+F4:...` for ECDSA.
 *
 * @example
 * ```ts
 * parseOpensslSpeed("+F2:2:2048:2773.000000:51363.000000\n"); // { rsa2048: 2773 }
 * ```
 */
export function parseOpensslSpeed(output: string): Record<string, number> {
  const found: Record<string, number> = {};
  for (const line of output.split("\n")) {
    const match = /^\+F([24]):\d+:(\d+):([\d.]+):[\d.]+$/.exec(line.trim());
    if (!match) continue;
    const name = match[1] === "2" ? `rsa${match[2]}` : `ecdsap${match[2]}`;
    found[name] = Number(match[3]);
  }
  return found;
}

/**
 * Native signatures for one `openssl speed` algorithm on one core: per wall-clock second (with
 * `-elapsed`) and per second of its own CPU time (openssl's default), one run each.
 *
 * @example
 * ```ts
 * await opensslSpeed("ecdsap256", 1); // { wall: ~40000, cpu: ~40000 } on an idle 2020s x86 core
 * ```
 */
export async function opensslSpeed(name: string, seconds: number): Promise<{ wall: number; cpu: number }> {
  return { wall: await opensslSpeedRun(name, seconds, ["-elapsed"]), cpu: await opensslSpeedRun(name, seconds, []) };
}

async function opensslSpeedRun(name: string, seconds: number, mode: string[]): Promise<number> {
  const out = await new Deno.Command("openssl", {
    args: ["speed", ...mode, "-mr", "-seconds", String(Math.max(1, Math.round(seconds))), name],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const value = parseOpensslSpeed(text)[name];
  if (!out.success || value === undefined) throw new Error(`openssl speed ${name} gave no result:\n${text}`);
  return value;
}

/**
 * The `openssl version` line.
 *
 * @example
 * ```ts
 * await opensslVersion(); // "OpenSSL 3.0.19 27 Jan 2026 (Library: ...)"
 * ```
 */
export async function opensslVersion(): Promise<string> {
  const out = await new Deno.Command("openssl", { args: ["version"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim();
}
