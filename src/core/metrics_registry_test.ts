import { assertEquals, assertThrows } from "../../test/_assert.ts";
import { Registry } from "./metrics_registry.ts";

Deno.test("metrics registry: the exposition of a small sequence, line for line (the text prom-client 15.1.3 wrote for the same calls)", () => {
  const registry = new Registry();
  const requests = registry.counter("app_requests_total", 'Requests, by "route"\\status\nsecond line.', ["route", "status"]);
  const seconds = registry.histogram("app_seconds", "Time, by operation.", ["operation"], [0.001, 0.01, 1]);
  registry.counter("app_unused_total", "Never counted.", ["kind"]);
  const total = registry.histogram("app_total_seconds", "Time.", [], [1]);
  registry.gauge("app_build_info", "Version; always 1.", ["version"]).set(["1.2.3"], 1);
  let open = 0;
  registry.read("gauge", "app_open", "Open now.", () => open);
  registry.read("counter", "app_lost_total", "Lost.", () => 7);
  seconds.init(["list"]);
  requests.inc(["/a", "200"]);
  requests.inc(['q"\\\nz', "200"]);
  requests.inc(["/a", "200"]);
  requests.inc(["/b", "500"], 3);
  requests.inc(["/a", "404"], 0);
  seconds.observe(["sign"], 0.001);
  seconds.observe(["sign"], 0.5);
  seconds.observe(["sign"], 2);
  seconds.observe(["list"], 0.0001);
  total.observe([], 0.25);
  open = 2.5;

  assertEquals(registry.contentType, "text/plain; version=0.0.4; charset=utf-8");
  assertEquals(
    registry.render(),
    `# HELP app_requests_total Requests, by "route"\\\\status\\nsecond line.
# TYPE app_requests_total counter
app_requests_total{route="/a",status="200"} 2
app_requests_total{route="q\\"\\\\\\nz",status="200"} 1
app_requests_total{route="/b",status="500"} 3
app_requests_total{route="/a",status="404"} 0

# HELP app_seconds Time, by operation.
# TYPE app_seconds histogram
app_seconds_bucket{le="0.001",operation="list"} 1
app_seconds_bucket{le="0.01",operation="list"} 1
app_seconds_bucket{le="1",operation="list"} 1
app_seconds_bucket{le="+Inf",operation="list"} 1
app_seconds_sum{operation="list"} 0.0001
app_seconds_count{operation="list"} 1
app_seconds_bucket{le="0.001",operation="sign"} 1
app_seconds_bucket{le="0.01",operation="sign"} 1
app_seconds_bucket{le="1",operation="sign"} 2
app_seconds_bucket{le="+Inf",operation="sign"} 3
app_seconds_sum{operation="sign"} 2.501
app_seconds_count{operation="sign"} 3

# HELP app_unused_total Never counted.
# TYPE app_unused_total counter

# HELP app_total_seconds Time.
# TYPE app_total_seconds histogram
app_total_seconds_bucket{le="1"} 1
app_total_seconds_bucket{le="+Inf"} 1
app_total_seconds_sum 0.25
app_total_seconds_count 1

# HELP app_build_info Version; always 1.
# TYPE app_build_info gauge
app_build_info{version="1.2.3"} 1

# HELP app_open Open now.
# TYPE app_open gauge
app_open 2.5

# HELP app_lost_total Lost.
# TYPE app_lost_total counter
app_lost_total 7
`,
  );
});

Deno.test("metrics registry: label values that would join to the same text are different series", () => {
  const registry = new Registry();
  const requests = registry.counter("app_requests_total", "Requests.", ["route", "status"]);
  requests.inc(["x,status:1", "2"]);
  requests.inc(["x", "1,status:2"]);
  requests.inc(["a\u0000b", "c"]);
  requests.inc(["a", "b\u0000c"]);
  const lines = registry.render().split("\n").filter((line) => line.startsWith("app_requests_total"));
  assertEquals(lines, [
    'app_requests_total{route="x,status:1",status="2"} 1',
    'app_requests_total{route="x",status="1,status:2"} 1',
    'app_requests_total{route="a\u0000b",status="c"} 1',
    'app_requests_total{route="a",status="b\u0000c"} 1',
  ]);
});

Deno.test("metrics registry: init makes a series at zero and leaves one that exists as it is", () => {
  const registry = new Registry();
  const seconds = registry.histogram("app_seconds", "Time.", ["operation"], [1]);
  seconds.init(["list"]);
  assertEquals(registry.render().split("\n").filter((line) => line.startsWith("app_seconds_count")), ['app_seconds_count{operation="list"} 0']);
  seconds.observe(["list"], 2);
  seconds.init(["list"]);
  assertEquals(registry.render().split("\n").filter((line) => line.startsWith("app_seconds_")), [
    'app_seconds_bucket{le="1",operation="list"} 0',
    'app_seconds_bucket{le="+Inf",operation="list"} 1',
    'app_seconds_sum{operation="list"} 2',
    'app_seconds_count{operation="list"} 1',
  ]);
});

Deno.test("metrics registry: values that are not finite numbers are written as the text format spells them, and a name is registered once", () => {
  const registry = new Registry();
  registry.read("gauge", "app_nan", "Not a number.", () => NaN);
  registry.read("gauge", "app_up", "Up.", () => Infinity);
  registry.read("gauge", "app_down", "Down.", () => -Infinity);
  assertEquals(registry.render().split("\n").filter((line) => line.startsWith("app_")), ["app_nan NaN", "app_up +Inf", "app_down -Inf"]);
  assertThrows(() => registry.counter("app_up", "Again.", []), /already registered/);
});
