/**
 * Starts the throwaway PostgreSQL cluster of scripts/postgres-test.sh for a test, and stops it.
 * Fails, never skips, when no server can be started.
 *
 * @module
 */

const SCRIPT = new URL("../scripts/postgres-test.sh", import.meta.url).pathname;

/** A running test cluster. */
export interface TestPostgres {
  url: string;
  stop(): Promise<void>;
  /** Stops the server, keeping its data, as an outage does. */
  halt(): Promise<void>;
  /** Starts a halted server again on the same address. */
  resume(): Promise<void>;
}

async function script(args: string[]): Promise<void> {
  const out = await new Deno.Command("bash", { args: [SCRIPT, ...args], stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`postgres-test.sh ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
}

/**
 * Installs PostgreSQL if needed and starts a cluster on 127.0.0.1.
 *
 * @example
 * ```ts
 * const pg = await startTestPostgres();
 * try { ... } finally { await pg.stop(); }
 * ```
 */
export async function startTestPostgres(): Promise<TestPostgres> {
  const out = await new Deno.Command("bash", { args: [SCRIPT, "start"], stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) throw new Error(`PostgreSQL did not start: ${new TextDecoder().decode(out.stderr)}`);
  const [dir, url] = text.split(" ");
  return {
    url,
    stop: async () => {
      await new Deno.Command("bash", { args: [SCRIPT, "stop", dir], stdout: "null", stderr: "null" }).output();
    },
    halt: () => script(["halt", dir]),
    resume: () => script(["resume", dir]),
  };
}
