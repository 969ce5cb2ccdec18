/**
 * A small ext4 file system on a loop device, for a data directory that can be frozen
 * (fsfreeze), remounted read-only, or filled. Needs root and util-linux/e2fsprogs; where they are
 * missing, {@linkcode loopUnavailable} says why and the scenarios that need it do not run.
 *
 * @module
 */

import { tempDir } from "../_temp.ts";

async function run(command: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
}

/** Why loop-device file systems cannot be made here, or undefined when they can. */
export function loopUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") return "loop devices are Linux's";
  if (Deno.uid() !== 0) return "mounting a loop device needs root";
  for (const tool of ["losetup", "mkfs.ext4", "fsfreeze", "mount", "chattr"]) {
    const found = new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null", stderr: "null" }).outputSync().success;
    if (!found) return `${tool} is not installed (util-linux, e2fsprogs)`;
  }
  if (!new Deno.Command("sh", { args: ["-c", "losetup -f"], stdout: "null", stderr: "null" }).outputSync().success) return "no free loop device";
  return undefined;
}

/** A mounted loop file system. */
export interface LoopFs {
  /** The mount point. */
  dir: string;
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** Makes every file and directory read-only (immutable), root's processes included. */
  readOnly(): Promise<void>;
  readWrite(): Promise<void>;
  /** Fills the file system. */
  fill(): Promise<void>;
  /** Removes what `fill` wrote. */
  unfill(): Promise<void>;
  /** Thaws, unmounts and removes it. */
  close(): Promise<void>;
}

/**
 * Makes and mounts an ext4 file system of `mib` MiB.
 *
 * @example
 * ```ts
 * const fs = await mountLoop(64);
 * try { await fs.freeze(); await fs.thaw(); } finally { await fs.close(); }
 * ```
 */
export async function mountLoop(mib: number): Promise<LoopFs> {
  const root = await tempDir("keycell-loopfs-");
  const image = `${root}/fs.img`;
  const dir = `${root}/mnt`;
  await Deno.mkdir(dir);
  await run("truncate", ["-s", `${mib}M`, image]);
  await run("mkfs.ext4", ["-q", "-m", "0", image]);
  await run("mount", ["-o", "loop", image, dir]);
  const filler = `${dir}/filler`;
  let frozen = false;
  return {
    dir,
    freeze: async () => (await run("fsfreeze", ["-f", dir]), frozen = true, undefined),
    thaw: async () => {
      if (frozen) await run("fsfreeze", ["-u", dir]);
      frozen = false;
    },
    // A file system with files open for writing cannot be remounted read-only (EBUSY): every file
    // and directory made immutable instead, which refuses writes through open descriptors too.
    readOnly: () => run("chattr", ["-R", "+i", dir]),
    readWrite: () => run("chattr", ["-R", "-i", dir]),
    fill: async () => {
      // Until the disk says no (dd's failure then is the point), and the last blocks one by one.
      await run("dd", ["if=/dev/zero", `of=${filler}`, "bs=1M", "status=none"]).catch(() => {});
      await run("dd", ["if=/dev/zero", `of=${filler}-tail`, "bs=4k", "status=none"]).catch(() => {});
      await run("sync", ["-f", dir]);
    },
    unfill: async () => {
      await Deno.remove(filler).catch(() => {});
      await Deno.remove(`${filler}-tail`).catch(() => {});
    },
    close: async () => {
      await run("chattr", ["-R", "-i", dir]).catch(() => {});
      if (frozen) await run("fsfreeze", ["-u", dir]).catch(() => {});
      await run("umount", ["-l", dir]).catch(() => {});
      await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
}
