// The workerd positive control of test/isolation_edge_test.ts: a Worker that does what keycell-api
// must never do, keeping a private key in its isolate's JS memory, once as bytes (a Uint8Array of
// the PKCS#8 DER) and once as a string (the PEM text). The key arrives XORed with 0x5a, so the
// plain bytes exist only where this Worker's JS puts them, not in workerd's request buffers.

let kept;

export default {
  async fetch(request) {
    if (request.method !== "POST") return new Response(kept ? `holding ${kept.der.length} bytes\n` : "holding nothing\n");
    const masked = new Uint8Array(await request.arrayBuffer());
    const der = masked.map((b) => b ^ 0x5a);
    let binary = "";
    for (const b of der) binary += String.fromCharCode(b);
    const pem = `-----BEGIN PRIVATE KEY-----\n${btoa(binary)}\n-----END PRIVATE KEY-----\n`;
    kept = { der, pem };
    masked.fill(0);
    return new Response(`holding ${der.length} DER bytes and ${pem.length} PEM characters\n`);
  },
};
