// The TypeScript quickstart against real Envelope servers on loopback.

import { execFileSync } from "node:child_process";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { call, connect, decryptFile, encryptFile, openChunks, sealChunks, serviceConfig } from "../src/envelope";
import { main } from "../src/quickstart";
import * as pb from "../gen/envelope/v1/envelope";
import { INDEX, Server } from "./server";

const root = path.join(__dirname, "..", "..");

test("the service config is what docs/CLIENTS.md says", () => {
  assert.deepEqual(serviceConfig.loadBalancingConfig, [{ round_robin: {} }]);
  const timeouts = new Map<string, string>();
  const retries = new Map<string, unknown>();
  for (const mc of serviceConfig.methodConfig) {
    for (const name of mc.name as { service: string; method?: string }[]) {
      const key = `${name.service}/${name.method ?? ""}`;
      timeouts.set(key, mc.timeout);
      retries.set(key, (mc as { retryPolicy?: unknown }).retryPolicy);
    }
  }
  const env = "envelope.v1.Envelope";
  assert.equal(timeouts.get(`${env}/`), "2s");
  for (const m of ["EncryptBatch", "DecryptBatch", "EncryptColumn", "DecryptColumn", "RewrapBatch", "ReencryptBatch",
    "ReencryptColumn"]) {
    assert.equal(timeouts.get(`${env}/${m}`), "30s", m);
  }
  for (const m of ["EncryptStream", "DecryptStream", "EncryptColumnStream", "DecryptColumnStream"]) {
    assert.equal(timeouts.get(`${env}/${m}`), "3600s", m);
    assert.equal(retries.get(`${env}/${m}`), undefined, m);
  }
  assert.equal(timeouts.get("envelope.v1.Admin/"), "60s");
  assert.equal(retries.get("envelope.v1.Admin/"), undefined);
  const policy = {
    maxAttempts: 4,
    initialBackoff: "0.05s",
    maxBackoff: "1s",
    backoffMultiplier: 2,
    retryableStatusCodes: ["UNAVAILABLE"],
  };
  assert.deepEqual(retries.get(`${env}/`), policy);
  assert.deepEqual(retries.get(`${env}/EncryptBatch`), policy);
});

test("the README's code is src/quickstart.ts, and it runs", async () => {
  const readme = fs.readFileSync(path.join(root, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.equal(blocks.length, 1, "README.md holds one ts block: the quickstart");
  assert.equal(blocks[0], fs.readFileSync(path.join(root, "src", "quickstart.ts"), "utf8"));
  const s = await Server.start();
  try {
    const log = (await main(s.addr)).join("\n");
    for (const step of ["record:", "batch: 100 records", "column: 1000 rows", "index: token", "file:"]) {
      assert.ok(log.includes(step), log);
    }
  } finally {
    s.stop();
  }
});

test("a changed file is refused", async () => {
  const s = await Server.start();
  const client = connect(s.addr);
  try {
    const data = Buffer.alloc((1 << 20) + 100, 7);
    const { sealed } = await encryptFile(client, "default", { file: "a" }, data);
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 5] ^= 1;
    const size = sealed.readUInt16BE(4);
    const firstLen = sealed.readUInt32BE(14 + size);
    const cut = sealed.subarray(0, 14 + size + 4 + firstLen);
    for (const [bad, ctx] of [[flipped, { file: "a" }], [cut, { file: "a" }], [sealed, { file: "b" }]] as const) {
      await assert.rejects(decryptFile(client, "default", ctx, bad));
    }
  } finally {
    client.close();
    s.stop();
  }
});

test("a tampered record is answered once, not retried", async () => {
  const s = await Server.start();
  const client = connect(s.addr);
  try {
    const ctx = { a: "b" };
    const { ciphertext } = await call(client, client.encrypt,
      pb.EncryptRequest.fromPartial({ plaintext: Buffer.from("x"), context: ctx }));
    const bad = Buffer.from(ciphertext);
    bad[bad.length - 1] ^= 1;
    await assert.rejects(call(client, client.decrypt, pb.DecryptRequest.fromPartial({ ciphertext: bad, context: ctx })),
      (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT);
    assert.equal((await s.audit("Decrypt")).length, 1);
  } finally {
    client.close();
    s.stop();
  }
});

test("a unary call gets its whole 2 s deadline", async () => {
  // The server is stopped (SIGSTOP): the call waits its deadline, all of it.
  const s = await Server.start();
  const client = connect(s.addr);
  try {
    s.signal("SIGSTOP");
    const start = performance.now();
    await assert.rejects(call(client, client.encrypt, pb.EncryptRequest.fromPartial({ plaintext: Buffer.from("x") })),
      (e: grpc.ServiceError) => e.code === grpc.status.DEADLINE_EXCEEDED);
    const waited = (performance.now() - start) / 1000;
    assert.ok(waited >= 1.95 && waited < 30, `${waited}`);
  } finally {
    s.signal("SIGCONT");
    client.close();
    s.stop();
  }
});

test("UNAVAILABLE is retried four times", async () => {
  // An audit log that cannot be written, with on_failure = "refuse": every
  // Envelope call is UNAVAILABLE; the server's metrics count the attempts.
  const s = await Server.start('metrics_listen = "127.0.0.1:0"\n[audit]\noutput = "/dev/full"\n' +
    'on_failure = "refuse"\n' + INDEX);
  const client = connect(s.addr);
  const unavailable = async () => (await (await fetch(`http://${s.metrics}/metrics`)).text()).split("\n")
    .filter((l) => l.startsWith("envelope_requests_total{") && l.includes('rpc="Encrypt"') &&
      l.includes('code="UNAVAILABLE"'))
    .reduce((n, l) => n + Number(l.split(" ").pop()), 0);
  const encrypt = () => call(client, client.encrypt, pb.EncryptRequest.fromPartial({ plaintext: Buffer.from("x") }));
  try {
    // The first call's line cannot be written: from then on, calls are refused.
    for (let i = 0; ; i++) {
      assert.ok(i < 400, "calls went on with an unwritable audit log");
      const refused = await encrypt().then(() => false, () => true);
      if (refused) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    for (let i = 0; i < 3; i++) {
      const before = await unavailable();
      await assert.rejects(encrypt(), (e: grpc.ServiceError) =>
        e.code === grpc.status.UNAVAILABLE && e.details.includes("audit log cannot be written"));
      assert.equal((await unavailable()) - before, 4);
    }
  } finally {
    client.close();
    s.stop();
  }
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

test("round-robin spreads calls and skips a dead replica", async () => {
  const [a, b] = [await Server.start(), await Server.start()];
  const client = connect(`ipv4:${a.addr},127.0.0.1:${await freePort()},${b.addr}`, undefined, "envelope");
  try {
    const encrypt = () => call(client, client.encrypt, pb.EncryptRequest.fromPartial({ plaintext: Buffer.from("x") }));
    for (let i = 0; i < 20; i++) await encrypt();
    const before = [(await a.audit("Encrypt")).length, (await b.audit("Encrypt")).length];
    for (let i = 0; i < 40; i++) await encrypt();
    const seen = [(await a.audit("Encrypt")).length - before[0], (await b.audit("Encrypt")).length - before[1]];
    assert.equal(seen[0] + seen[1], 40);
    assert.ok(Math.min(...seen) >= 10, String(seen));
  } finally {
    client.close();
    a.stop();
    b.stop();
  }
});

test("an mTLS identity meets the policy", async () => {
  // A CA, a server certificate for localhost, a client certificate with CN ts-client (openssl).
  const dir = fs.mkdtempSync(path.join(require("node:os").tmpdir(), "envelope-ts-pki-"));
  const f = (n: string) => path.join(dir, n);
  const ssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
    "-subj", "/CN=ts quickstart CA", "-keyout", f("ca.key"), "-out", f("ca.crt"));
  for (const [name, cn, ext] of [
    ["server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"],
    ["client", "ts-client", "extendedKeyUsage=clientAuth"],
  ]) {
    fs.writeFileSync(f(`${name}.ext`), `basicConstraints=CA:FALSE\n${ext}\n`);
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${cn}`,
      "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`));
    ssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial",
      "-days", "1", "-extfile", f(`${name}.ext`), "-out", f(`${name}.crt`));
    fs.chmodSync(f(`${name}.key`), 0o600);
  }
  fs.writeFileSync(f("policy.toml"),
    '[[allow]]\ncallers = ["ts-client"]\nkeys = ["*"]\noperations = ["encrypt", "decrypt"]\n');
  const s = await Server.start(`policy_file = "${f("policy.toml")}"\n[tls]\ncert = "${f("server.crt")}"\n` +
    `key = "${f("server.key")}"\nclient_ca = "${f("ca.crt")}"\n${INDEX}`);
  const read = (n: string) => fs.readFileSync(f(n));
  const client = connect(s.addr, { ca: read("ca.crt"), cert: read("client.crt"), key: read("client.key"),
    serverName: "localhost" });
  try {
    // Connected before the first call's deadline starts (see the Python suite's note).
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 20_000, (e) => (e ? reject(e) : resolve())));
    const sealed = await call(client, client.encrypt, pb.EncryptRequest.fromPartial({ plaintext: Buffer.from("mTLS") }));
    const opened = await call(client, client.decrypt, pb.DecryptRequest.fromPartial({ ciphertext: sealed.ciphertext }));
    assert.equal(opened.plaintext.toString(), "mTLS");
    assert.equal((await s.audit("Encrypt"))[0].caller, "ts-client");
    // TLS without a client certificate: the server served none of its attempts.
    const anonymous = connect(s.addr, { ca: read("ca.crt"), serverName: "localhost" });
    await assert.rejects(call(anonymous, anonymous.encrypt, pb.EncryptRequest.fromPartial({ plaintext: Buffer.from("x") })));
    anonymous.close();
    assert.equal((await s.audit("Encrypt")).length, 1);
  } finally {
    client.close();
    s.stop();
  }
});

test("the file format matches the shared vector", () => {
  const v = JSON.parse(fs.readFileSync(path.join(root, "..", "file-format-vector.json"), "utf8"));
  const hex = (s: string) => Buffer.from(s, "hex");
  const sealed = sealChunks(hex(v.key), hex(v.prefix), v.context, hex(v.plaintext), v.chunk);
  assert.equal(sealed.toString("hex"), v.sealed);
  assert.equal(openChunks(hex(v.key), hex(v.prefix), v.context, hex(v.sealed)).toString("hex"), v.plaintext);
});
