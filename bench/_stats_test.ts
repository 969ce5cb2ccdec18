import { assertEquals } from "../test/_assert.ts";
import { fmt, latencyOf, median, percentile } from "./_stats.ts";

Deno.test("median takes the middle value, or the mean of the middle two", () => {
  assertEquals(median([5, 1, 3]), 3);
  assertEquals(median([4, 1, 3, 2]), 2.5);
  assertEquals(Number.isNaN(median([])), true);
});

Deno.test("percentiles are nearest-rank over sorted values", () => {
  const values = Array.from({ length: 1000 }, (_, i) => i + 1);
  assertEquals(percentile(values, 50), 500);
  assertEquals(percentile(values, 99), 990);
  assertEquals(percentile(values, 99.9), 999);
  assertEquals(percentile(values, 100), 1000);
  assertEquals(percentile([7], 99.9), 7);
});

Deno.test("latencyOf sorts before taking percentiles", () => {
  assertEquals(latencyOf([3, 1, 2, 4]), { p50: 2, p99: 4, p999: 4, max: 4 });
});

Deno.test("fmt keeps three significant digits below 100 and whole numbers above", () => {
  assertEquals([fmt(5635.4), fmt(12.345), fmt(0.01234), fmt(NaN), fmt(undefined)], ["5635", "12.3", "0.0123", "—", "—"]);
});
