/**
 * `deno run -A bench/http_app.ts [--compare DIR]... [--rounds N] [--seconds S]`: the CPU that
 * keycell's HTTP app costs per signing request when served, apart from any guest.
 *
 * The app (`createApp`, its middleware and routes, tokens, validation, metrics and the signer
 * queue) runs over a signer that answers at once, served by `Deno.serve` on loopback
 * (bench/_stub_app.ts), under wrk with 32 connections POSTing a P-256 sign body. Beside it, in the
 * same rounds and rotating order: a bare `Deno.serve` handler that reads the body and answers
 * JSON (the runtime's own share), and for each `--compare DIR` the app of the tree at DIR, a
 * worktree of another commit with its dependencies installed. CPU per request is the server process's user
 * + system time from /proc over the requests wrk counted; figures are medians over rounds. Needs
 * wrk (bench/install_tools.sh installs it).
 *
 * @module
 */

import { startDeno } from "../test/_command.ts";
import { processCpuSeconds, wrkRun } from "./http.ts";
import { median } from "./_stats.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const TOKEN = "k".repeat(43);
const SIGN_PATH = `/v1/keys/${"ab".repeat(32)}/sign`;

const option = (name: string) => {
  const at = Deno.args.indexOf(name);
  return at < 0 ? undefined : Deno.args[at + 1];
};
const compared = Deno.args.flatMap((arg, at) => arg === "--compare" && at + 1 < Deno.args.length ? [Deno.args[at + 1]] : []);
const rounds = Number(option("--rounds") ?? 5);
const seconds = Number(option("--seconds") ?? 4);

const subjects = [
  { name: "bare Deno.serve handler", tree: "bare", config: ROOT },
  { name: "this tree's app", tree: ROOT, config: ROOT },
  ...compared.map((tree) => ({ name: `${tree}'s app`, tree, config: tree })),
];
const servers = await Promise.all(subjects.map(async (subject) => {
  const port = freePort();
  const process = await startDeno({
    args: ["--allow-all", "--config", `${subject.config}/deno.json`, `${ROOT}/bench/_stub_app.ts`, subject.tree, String(port), TOKEN],
    ready: /ready/,
  });
  return { ...subject, port, process, samples: [] as number[] };
}));
try {
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < servers.length; i++) {
      const server = servers[(i + round) % servers.length];
      await wrk(server.port, 1);
      const before = processCpuSeconds(server.process.pid);
      const requests = await wrk(server.port, seconds);
      const us = (processCpuSeconds(server.process.pid) - before) * 1e6 / requests;
      server.samples.push(us);
      console.error(`http_app: round ${round + 1}/${rounds}: ${server.name}: ${us.toFixed(1)} µs per request`);
    }
  }
} finally {
  await Promise.all(servers.map((s) => s.process.stop()));
}
const own = median(servers[1].samples);
console.log("| served | CPU µs per request (median) | against this tree's app | by round |");
console.log("|---|---|---|---|");
for (const s of servers) {
  const m = median(s.samples);
  console.log(`| ${s.name} | ${m.toFixed(1)} | ${(m / own).toFixed(2)}x | ${s.samples.map((x) => x.toFixed(1)).join(", ")} |`);
}

/** Runs wrk for `seconds` against the sign route of the app on `port`; the requests it counted, all answered 200. */
async function wrk(port: number, seconds: number): Promise<number> {
  const figures = await wrkRun("wrk", `http://127.0.0.1:${port}`, SIGN_PATH, TOKEN, 32, seconds);
  if (figures.non2xx > 0 || figures.socketErrors > 0) throw new Error(`the app answered ${figures.non2xx} requests with an error, ${figures.socketErrors} socket errors`);
  return figures.requests;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}
