import { assertEquals } from "../../test/_assert.ts";
import { Status } from "../core/protocol.ts";
import { FairScheduler } from "./scheduler.ts";

/** A signer that records the order of calls and answers each when released. */
function recorder() {
  const order: string[] = [];
  const waiting: (() => void)[] = [];
  const signer = async (request: Uint8Array) => {
    order.push(new TextDecoder().decode(request));
    await new Promise<void>((resolve) => waiting.push(resolve));
    return Uint8Array.of(Status.OK);
  };
  /** Answers calls one at a time until `count` calls have been answered. */
  const release = async (count: number) => {
    for (let released = 0; released < count;) {
      if (waiting.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        continue;
      }
      waiting.shift()!();
      released++;
    }
  };
  return { order, signer, release };
}

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("scheduler: lanes take turns, whatever each has queued", async () => {
  const { order, signer, release } = recorder();
  const scheduler = new FairScheduler(signer, { maxWaitMs: 60_000 });
  const [a, b, c] = [scheduler.lane(), scheduler.lane(), scheduler.lane()];
  const calls = [
    ...["a1", "a2", "a3", "a4", "a5"].map((r) => a.call(bytes(r))),
    ...["b1", "b2"].map((r) => b.call(bytes(r))),
    c.call(bytes("c1")),
  ];
  await release(calls.length);
  await Promise.all(calls);
  assertEquals(order, ["a1", "a2", "b1", "c1", "a3", "b2", "a4", "a5"]);
});

Deno.test("scheduler: the queue is bounded; a lane that closed is dropped before its calls run", async () => {
  const { order, signer, release } = recorder();
  const scheduler = new FairScheduler(signer, { maxQueued: 3, maxWaitMs: 60_000 });
  const a = scheduler.lane();
  const gone = scheduler.lane();
  const first = a.call(bytes("a1")); // running, not queued
  const queued = [gone.call(bytes("g1")), gone.call(bytes("g2")), a.call(bytes("a2"))];
  assertEquals(scheduler.queued, 3);
  assertEquals((await a.call(bytes("a3")))[0], Status.UNAVAILABLE, "past the bound: refused at once");
  gone.close();
  await release(2);
  const answers = await Promise.all([first, ...queued]);
  assertEquals(answers.map((r) => r[0]), [Status.OK, Status.UNAVAILABLE, Status.UNAVAILABLE, Status.OK]);
  assertEquals(order, ["a1", "a2"], "the closed lane's calls never reached the signer");
  assertEquals(scheduler.stats, { refused: 1, dropped: 2, called: 2 });
  assertEquals((await gone.call(bytes("g3")))[0], Status.UNAVAILABLE);
  assertEquals(scheduler.stats.dropped, 3);
});

Deno.test("scheduler: up to `concurrency` calls run at once", async () => {
  let running = 0;
  let most = 0;
  const scheduler = new FairScheduler(async () => {
    most = Math.max(most, ++running);
    await new Promise((resolve) => setTimeout(resolve, 1));
    running--;
    return Uint8Array.of(Status.OK);
  }, { concurrency: 3, maxWaitMs: 60_000 });
  const lanes = [scheduler.lane(), scheduler.lane()];
  await Promise.all(Array.from({ length: 20 }, (_, i) => lanes[i % 2].call(bytes(`${i}`))));
  assertEquals(most, 3);
  assertEquals(scheduler.stats.called, 20);
});

Deno.test("scheduler: a signer that throws answers UNAVAILABLE and the next call still runs", async () => {
  let calls = 0;
  const scheduler = new FairScheduler(() => {
    if (calls++ === 0) throw new Error("trap");
    return Uint8Array.of(Status.OK);
  });
  const lane = scheduler.lane();
  assertEquals((await lane.call(bytes("x")))[0], Status.UNAVAILABLE);
  assertEquals((await lane.call(bytes("y")))[0], Status.OK);
});
