import { assertEquals, assertThrows } from "../../test/_assert.ts";
import { TokenBucket } from "./rate.ts";

Deno.test("token bucket: a burst, then the sustained rate, with the wait until the next request", () => {
  let now = 0;
  const bucket = new TokenBucket({ perSecond: 10, burst: 3 }, () => now);
  assertEquals([bucket.take(), bucket.take(), bucket.take()], [0, 0, 0]);
  assertEquals(bucket.take(), 0.1, "empty: one refills in 100 ms");
  now = 50;
  assertEquals(bucket.take(), 0.05, "a refused request takes nothing");
  now = 100;
  assertEquals([bucket.take(), bucket.take() > 0], [0, true]);
  now = 60_000;
  assertEquals([bucket.take(), bucket.take(), bucket.take(), bucket.take() > 0], [0, 0, 0, true], "refills to the burst, no further");
});

Deno.test("token bucket: fractional rates, the default burst, and limits that make no sense", () => {
  let now = 0;
  const slow = new TokenBucket({ perSecond: 0.5 }, () => now);
  assertEquals([slow.take(), slow.take()], [0, 2], "burst defaults to at least 1; one every two seconds");
  now = 2000;
  assertEquals(slow.take(), 0);
  const fast = new TokenBucket({ perSecond: 5 }, () => now);
  assertEquals([0, 1, 2, 3, 4].map(() => fast.take()), [0, 0, 0, 0, 0], "burst defaults to perSecond");
  for (const limit of [{ perSecond: 0 }, { perSecond: -1 }, { perSecond: Infinity }, { perSecond: 1, burst: 0.5 }, { perSecond: NaN }]) {
    assertThrows(() => new TokenBucket(limit), Error, JSON.stringify(limit));
  }
});
