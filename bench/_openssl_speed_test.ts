import { assertEquals } from "../test/_assert.ts";
import { opensslSpeed, parseOpensslSpeed } from "./_openssl_speed.ts";

Deno.test("openssl speed -mr lines give sign/s by algorithm", () => {
  const output = [
    "+DTP:2048:private:rsa:1",
    "+R1:2773:2048:1.00",
    "+F2:2:2048:2773.000000:51363.000000",
    "+F4:3:256:38589.000000:12531.000000",
    "+F4:4:384:1614.500000:1822.000000",
  ].join("\n");
  assertEquals(parseOpensslSpeed(output), { rsa2048: 2773, ecdsap256: 38589, ecdsap384: 1614.5 });
});

Deno.test("openssl speed runs and reports a positive rate", async () => {
  const rate = await opensslSpeed("ecdsap256", 1);
  assertEquals(rate.wall > 0 && rate.cpu > 0, true, `ecdsap256 gave ${JSON.stringify(rate)}`);
});
