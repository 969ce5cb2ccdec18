import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { KeycellError } from "./errors.ts";
import { FairScheduler } from "./scheduler.ts";

/** Jobs that record the order they run in and finish each when released. */
function recorder() {
  const order: string[] = [];
  const waiting: (() => void)[] = [];
  const job = (name: string) => async () => {
    order.push(name);
    await new Promise<void>((resolve) => waiting.push(resolve));
    return name;
  };
  /** Finishes jobs one at a time until `count` have finished. */
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
  return { order, job, release };
}

const isBusy = (err: unknown) => err instanceof KeycellError && err.code === "busy";
/** What a call settled as: its value, or "refused". */
const outcome = (call: Promise<string>) => call.catch((err) => (assert(isBusy(err)), "refused"));

Deno.test("scheduler: lanes take turns, whatever each has queued", async () => {
  const { order, job, release } = recorder();
  const scheduler = new FairScheduler({ maxWaitMs: 60_000 });
  const [a, b, c] = [scheduler.lane(), scheduler.lane(), scheduler.lane()];
  const calls = [
    ...["a1", "a2", "a3", "a4", "a5"].map((r) => a.run(job(r))),
    ...["b1", "b2"].map((r) => b.run(job(r))),
    c.run(job("c1")),
  ];
  await release(calls.length);
  assertEquals(await Promise.all(calls), ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "c1"], "each call gets its own job's value");
  assertEquals(order, ["a1", "a2", "b1", "c1", "a3", "b2", "a4", "a5"]);
});

Deno.test("scheduler: the queue is bounded; a lane that closed is dropped before its calls run", async () => {
  const { order, job, release } = recorder();
  const scheduler = new FairScheduler({ maxQueued: 3, maxWaitMs: 60_000 });
  const a = scheduler.lane();
  const gone = scheduler.lane();
  const first = outcome(a.run(job("a1"))); // running, not queued
  const queued = [gone.run(job("g1")), gone.run(job("g2")), a.run(job("a2"))].map(outcome);
  assertEquals(scheduler.queued, 3);
  await assertRejects(() => a.run(job("a3")), isBusy, "past the bound: refused at once");
  gone.close();
  await release(2);
  const answers = await Promise.all([first, ...queued]);
  assertEquals(answers, ["a1", "refused", "refused", "a2"]);
  assertEquals(order, ["a1", "a2"], "the closed lane's calls never ran");
  assertEquals(scheduler.stats, { refused: 1, dropped: 2, called: 2, express: 0 });
  await assertRejects(() => gone.run(job("g3")), isBusy);
  assertEquals(scheduler.stats.dropped, 3);
});

Deno.test("scheduler: a queued call whose signal aborts is dropped alone; its lane's other calls run in turn", async () => {
  const { order, job, release } = recorder();
  const scheduler = new FairScheduler({ maxWaitMs: 60_000 });
  const lane = scheduler.lane();
  const gone = new AbortController();
  const first = outcome(lane.run(job("a1"), { signal: gone.signal })); // running: it runs on
  const dropped = outcome(lane.run(job("a2"), { signal: gone.signal }));
  const kept = outcome(lane.run(job("a3")));
  assertEquals(scheduler.queued, 2);
  gone.abort();
  assertEquals(scheduler.queued, 1, "dropped at once, not when its turn comes");
  assertEquals(await dropped, "refused");
  await assertRejects(() => lane.run(job("a4"), { signal: gone.signal }), isBusy, "a call that would queue with its signal aborted: dropped at once");
  await release(2);
  assertEquals(await Promise.all([first, kept]), ["a1", "a3"]);
  assertEquals(order, ["a1", "a3"]);
  assertEquals(scheduler.stats, { refused: 0, dropped: 2, called: 2, express: 0 });
});

Deno.test("scheduler: up to `concurrency` calls run at once", async () => {
  let running = 0;
  let most = 0;
  const scheduler = new FairScheduler({ concurrency: 3, maxWaitMs: 60_000 });
  const job = async () => {
    most = Math.max(most, ++running);
    await new Promise((resolve) => setTimeout(resolve, 1));
    running--;
  };
  const lanes = [scheduler.lane(), scheduler.lane()];
  await Promise.all(Array.from({ length: 20 }, (_, i) => lanes[i % 2].run(job)));
  assertEquals(most, 3);
  assertEquals(scheduler.stats.called, 20);
});

Deno.test("scheduler: a job that fails rejects its own call alone, and the next call still runs", async () => {
  const scheduler = new FairScheduler();
  const lane = scheduler.lane();
  await assertRejects(() => lane.run(() => { throw new Error("trap"); }), /trap/);
  await assertRejects(() => lane.run(() => Promise.reject(new KeycellError("key_not_found", "no key with that id"))), KeycellError);
  assertEquals(await lane.run(() => "ok"), "ok");
});

Deno.test("scheduler: load counts calls waiting and running, so a call can tell it is alone", async () => {
  const scheduler = new FairScheduler({ concurrency: 1 });
  const lane = scheduler.lane();
  const seen: number[] = [];
  assertEquals(scheduler.load, 0);
  await lane.run(() => seen.push(scheduler.load));
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const a = lane.run(async () => {
    seen.push(scheduler.load);
    await gate;
  });
  const b = scheduler.lane().run(() => seen.push(scheduler.load));
  assertEquals(scheduler.load, 2, "one running, one waiting");
  release();
  await Promise.all([a, b]);
  assertEquals(seen, [1, 1, 1], "each call ran alone");
  assertEquals(scheduler.load, 0);
  lane.close();
});

Deno.test("scheduler: a call still queued when its wait has run out is refused then, though no slot frees", async () => {
  const { order, job, release } = recorder();
  const scheduler = new FairScheduler({ maxWaitMs: 50 });
  const lane = scheduler.lane();
  const stuck = outcome(lane.run(job("stuck"))); // holds the only slot past the wait
  const queued = outcome(scheduler.lane().run(job("queued")));
  assertEquals(await queued, "refused", "answered while the slot is still held");
  assertEquals(scheduler.queued, 0);
  await release(1);
  assertEquals(await stuck, "stuck");
  assertEquals(order, ["stuck"], "the refused call never ran");
  assertEquals(scheduler.stats, { refused: 1, dropped: 0, called: 1, express: 0 });
});

Deno.test("scheduler: what a queued call would wait is judged from how often calls finish; past the bound it is refused at once", async () => {
  const scheduler = new FairScheduler({ concurrency: 2, maxWaitMs: 200 });
  const lane = scheduler.lane();
  let releaseSlow!: () => void;
  // One slot held by a slow call for the whole test: quick calls in the other slot set the pace.
  const slow = lane.run(() => new Promise<string>((resolve) => releaseSlow = () => resolve("slow")));
  const quick = () => new Promise<string>((resolve) => setTimeout(() => resolve("quick"), 5));
  const first = await Promise.all(Array.from({ length: 8 }, () => outcome(lane.run(quick))));
  assertEquals(first, Array(8).fill("quick"), "a few calls' wait is within the bound, the slow call notwithstanding");
  assertEquals(scheduler.stats.refused, 0);
  // Calls finish every 5 ms or more: a thousand queued at once would wait far past 200 ms.
  assert(!lane.refuses());
  const flood = Array.from({ length: 1000 }, () => outcome(lane.run(quick)));
  assert(lane.refuses(), "a full queue takes no more");
  const answers = await Promise.all(flood);
  const refused = answers.filter((a) => a === "refused").length;
  assert(refused > 0 && refused < 1000, `${refused} of 1000 refused`);
  assertEquals(answers[0], "quick", "the first call queued is admitted");
  assertEquals(answers.at(-1), "refused", "the last, behind the others, is not");
  releaseSlow();
  assertEquals(await slow, "slow");
});

Deno.test("scheduler: a call from a lane with nothing else under way starts at once as an express call, at most one in expressEvery + 1", async () => {
  const { order, job, release } = recorder();
  const scheduler = new FairScheduler({ concurrency: 1, maxWaitMs: 60_000, expressEvery: 1 });
  const busy = scheduler.lane();
  const light = scheduler.lane();
  const express: Record<string, boolean> = {};
  const run = (lane: typeof busy, name: string) => lane.run((call) => (express[name] = call.express, job(name)()));
  const calls = [run(busy, "a1"), run(busy, "a2"), run(busy, "a3")];
  assertEquals(order, ["a1", "a2"], "a1 express, a2 in the only slot, a3 waits");
  await release(1);
  await new Promise((resolve) => setTimeout(resolve, 0)); // a1 settles
  assert(!light.refuses(), "a light lane's call is taken though the queue has its turn to come");
  calls.push(run(light, "l1"));
  assertEquals(order, ["a1", "a2", "l1"], "l1 starts at once, beside the busy slot and before a3");
  calls.push(run(light, "l2"));
  await release(4);
  assertEquals(await Promise.all(calls), ["a1", "a2", "a3", "l1", "l2"]);
  assertEquals(order, ["a1", "a2", "l1", "a3", "l2"], "l2, its lane busy with l1, takes its turn");
  assertEquals(express, { a1: true, a2: false, a3: false, l1: true, l2: false });
  assertEquals(scheduler.stats, { refused: 0, dropped: 0, called: 5, express: 2 });
});

Deno.test("scheduler: a lane's share is unbounded until calls have finished with every slot busy, then at least two calls a slot", async () => {
  const scheduler = new FairScheduler({ concurrency: 2, maxWaitMs: 1 });
  assertEquals(scheduler.share, Infinity);
  const lane = scheduler.lane();
  const call = () => lane.run(() => new Promise<void>((resolve) => setTimeout(resolve, 5)));
  await Promise.all([call(), call()]);
  // Calls finishing every few ms: a quarter of a 1 ms wait holds none, so the floor holds.
  assertEquals(scheduler.share, 4);
});

Deno.test("scheduler: an unbounded call is refused neither at once nor when the bound has passed; bounded calls beside it are", async () => {
  const { order, job, release } = recorder();
  const scheduler = new FairScheduler({ maxWaitMs: 20 });
  const lane = scheduler.lane();
  // The first call takes 40 ms or more with the only slot busy: any queued call would wait past 20 ms.
  await lane.run(() => new Promise((resolve) => setTimeout(resolve, 40)));
  const held = outcome(lane.run(job("held")));
  const unbounded = outcome(lane.run(job("unbounded"), { bounded: false }));
  assertEquals(await outcome(lane.run(job("bounded"))), "refused", "a bounded call is refused at once");
  const queuedBounded = outcome(scheduler.lane().run(job("late"), { bounded: true }));
  // The pace is known, so the late call is refused at once too; the unbounded one stays queued
  // through several sweeps of the 20 ms bound.
  assertEquals(await queuedBounded, "refused");
  await new Promise((resolve) => setTimeout(resolve, 100));
  assertEquals(scheduler.queued, 1, "the unbounded call still waits");
  await release(2);
  assertEquals(await Promise.all([held, unbounded]), ["held", "unbounded"]);
  assertEquals(order, ["held", "unbounded"]);
  assertEquals(scheduler.stats.refused, 2);
});

Deno.test("scheduler: a refusal is `busy`, with a time to retry after", async () => {
  const scheduler = new FairScheduler({ maxQueued: 0 });
  const lane = scheduler.lane();
  const running = lane.run(() => new Promise((resolve) => setTimeout(resolve, 1)));
  const err = await lane.run(() => "never").catch((e) => e);
  assert(isBusy(err));
  assertEquals(err.retryAfterSeconds, 1);
  await running;
});

Deno.test("scheduler: a lane that never empties does not keep the calls it has run", async () => {
  // In a process of its own, where the heap can be collected on demand. Two chains of calls, each
  // queueing its next as it runs, keep one call queued behind the running one throughout; the
  // last measures the heap while the lane is still busy. Each call holds about 40 KiB.
  const code = `
    import { FairScheduler } from ${JSON.stringify(new URL("./scheduler.ts", import.meta.url).href)};
    const lane = new FairScheduler({ concurrency: 1, maxWaitMs: 60_000 }).lane();
    let left = 2_000;
    gc();
    const before = Deno.memoryUsage().heapUsed;
    const { promise, resolve } = Promise.withResolvers();
    const submit = () => {
      const request = new Array(5_000).fill(left);
      lane.run(() => {
        if (--left > 0) submit();
        else if (left === 0) {
          gc();
          resolve({ before, after: Deno.memoryUsage().heapUsed, queued: lane.load - 1 });
        }
        return request.length;
      });
    };
    submit();
    submit();
    console.log(JSON.stringify(await promise));
    Deno.exit(0); // not waiting for the queue sweep's timer
  `;
  const out = await new Deno.Command(Deno.execPath(), { args: ["eval", "--v8-flags=--expose-gc", code], stdout: "piped", stderr: "piped" }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  const { before, after, queued } = JSON.parse(new TextDecoder().decode(out.stdout));
  assertEquals(queued, 1, "the lane was still busy when measured");
  // 2,000 calls of 40 KiB would be about 80 MiB.
  assert(after - before < 16 * 1024 * 1024, `the heap grew ${((after - before) / 1024 / 1024).toFixed(1)} MiB over 2,000 calls`);
});
