/**
 * What every benchmark report says about where it ran: the CPU, the load, the commit.
 *
 * @module
 */

/**
 * The 1-, 5- and 15-minute load averages, as /proc/loadavg gives them.
 *
 * @example
 * ```ts
 * loadAverage(); // "0.52 0.61 0.70"
 * ```
 */
export function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

/**
 * The CPU's model name and the instruction-set extensions that change signing speed.
 *
 * @example
 * ```ts
 * cpuModel(); // "AMD EPYC; avx2, bmi2, adx"
 * ```
 */
export function cpuModel(): string {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const match = /^model name\s*:\s*(.+)$/m.exec(cpuinfo);
  const flags = /^flags\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].split(" ") ?? [];
  const notable = ["avx2", "avx512f", "avx512ifma", "bmi2", "adx"].filter((f) => flags.includes(f));
  return `${match?.[1] ?? "unknown"}; ${notable.join(", ") || "no AVX2"}`;
}

/**
 * The short commit of the tree at `root`, with `+changes` when it has uncommitted ones.
 *
 * @example
 * ```ts
 * await gitCommit("."); // "d492ca7"
 * ```
 */
export async function gitCommit(root: string): Promise<string> {
  try {
    const git = (args: string[]) => new Deno.Command("git", { args: ["-C", root, ...args], stdout: "piped", stderr: "null" }).output();
    const head = new TextDecoder().decode((await git(["rev-parse", "--short", "HEAD"])).stdout).trim();
    const dirty = new TextDecoder().decode((await git(["status", "--porcelain", "--untracked-files=no"])).stdout).trim() !== "";
    return head ? `${head}${dirty ? "+changes" : ""}` : "unknown";
  } catch {
    return "unknown";
  }
}

/** The machine a benchmark ran on, as its report records it. */
export interface Machine {
  cpu: string;
  cores: number;
  loadBefore: string;
  loadAfter: string;
  kernel: string;
}

/**
 * The head of a report's machine table: the header and the CPU, kernel and load rows (a report
 * adds its own rows after them).
 *
 * @example
 * ```ts
 * import { machineRows } from "./_machine.ts";
 *
 * const lines = machineRows({ cpu: "AMD EPYC", cores: 2, loadBefore: "0.1", loadAfter: "0.5", kernel: "6.1" });
 * ```
 */
export function machineRows(machine: Machine): string[] {
  return [
    "| machine | |",
    "|---|---|",
    `| CPU | ${machine.cpu} (${machine.cores} cores visible) |`,
    `| kernel | ${machine.kernel} |`,
    `| load average before / after | ${machine.loadBefore} / ${machine.loadAfter} |`,
  ];
}
