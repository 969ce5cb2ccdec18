// Child of _x64_code.ts: compiles a module (flags make every function go
// through the optimizing tier up front), says so, and waits for stdin to close.
new WebAssembly.Module(Deno.readFileSync(Deno.args[0]));
console.log("COMPILED");
for await (const _ of Deno.stdin.readable) { /* wait */ }
