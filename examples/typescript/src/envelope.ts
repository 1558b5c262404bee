// What every Node caller of Envelope needs: a client with mTLS, a gRPC
// service config (per-method deadlines, retries of UNAVAILABLE only,
// round-robin over the replicas), promises over grpc-js callbacks, and the
// client-side data-key pattern for large files. docs/CLIENTS.md explains
// the choices; the types come from ../../proto (npm run generate).

import * as crypto from "node:crypto";
import * as grpc from "@grpc/grpc-js";

import { EnvelopeClient, GenerateDataKeyRequest, UnwrapDataKeyRequest } from "../gen/envelope/v1/envelope";

// UNAVAILABLE is a replica down or draining: retried. INVALID_ARGUMENT (a
// tampered record, a wrong context), PERMISSION_DENIED and
// FAILED_PRECONDITION are answers and never retried.
const retryPolicy = {
  maxAttempts: 4,
  initialBackoff: "0.05s",
  maxBackoff: "1s",
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE"],
};
const bulk = ["EncryptBatch", "DecryptBatch", "EncryptColumn", "DecryptColumn", "RewrapBatch", "ReencryptBatch",
  "ReencryptColumn"];
const streams = ["EncryptStream", "DecryptStream", "EncryptColumnStream", "DecryptColumnStream"];

export const serviceConfig = {
  // Every address behind the name (a headless Kubernetes Service's pods),
  // not one connection for everything.
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [
    { name: [{ service: "envelope.v1.Envelope" }], timeout: "2s", retryPolicy },
    { name: bulk.map((method) => ({ service: "envelope.v1.Envelope", method })), timeout: "30s", retryPolicy },
    // A broken stream is resent by the application from its last answer.
    { name: streams.map((method) => ({ service: "envelope.v1.Envelope", method })), timeout: "3600s" },
    { name: [{ service: "envelope.v1.Admin" }], timeout: "60s" },
  ],
};

/** A headless Service's name, for example. */
export const kubernetesTarget = "dns:///envelope-headless.envelope.svc.cluster.local:50051";

export interface Tls {
  ca: Buffer;
  /** mTLS: the certificate's SPIFFE URI (or CN) is the identity the policy grants. */
  cert?: Buffer;
  key?: Buffer;
  serverName?: string;
}

/**
 * A client for `target` ("host:port", or "dns:///name:port" for every
 * replica behind a name). `authority` names the service in each call's
 * :authority header: needed for a target that lists addresses
 * ("ipv4:a:1,b:2"), whose default authority the server refuses.
 */
export function connect(target: string, tls?: Tls, authority?: string): EnvelopeClient {
  const options: grpc.ChannelOptions = {
    "grpc.service_config": JSON.stringify(serviceConfig),
    "grpc.enable_retries": 1,
    "grpc.max_receive_message_length": 64 << 20,
  };
  if (authority) options["grpc.default_authority"] = authority;
  if (tls?.serverName) options["grpc.ssl_target_name_override"] = tls.serverName;
  const creds = tls
    ? grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null)
    : grpc.credentials.createInsecure();
  return new EnvelopeClient(target, creds, options);
}

// The last of the generated overloads: (request, metadata, options, callback).
type Unary<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientUnaryCall;

/** One unary call as a promise: `await call(client, client.encrypt, req)`. */
export function call<Req, Res>(client: EnvelopeClient, method: Unary<Req, Res>, req: Req,
  metadata = new grpc.Metadata()): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, req, metadata, {}, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

// Large files: one GenerateDataKey, then AES-256-GCM here, chunk by chunk;
// only the wrapped key is stored with the file. The format is the Python
// quickstart's (examples/file-format-vector.json pins it for both): a magic,
// the wrapped key, an 8-byte random nonce prefix, then chunks sealed with the
// nonce (prefix, chunk number) and, as associated data, the number, a
// last-chunk flag and the context.
const MAGIC = Buffer.from("EQS1");
export const CHUNK = 1 << 20;

/** MAGIC, n (u32), last (u8), then each entry sorted by the UTF-8 bytes of
 * its key: key and value, each a u32 length and its UTF-8 bytes. */
function aad(context: Record<string, string>, n: number, last: boolean): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(n, 0);
  head.writeUInt8(last ? 1 : 0, 4);
  const parts = [MAGIC, head];
  const entries = Object.entries(context).map(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
  // By UTF-8 bytes, not JavaScript's UTF-16 order.
  entries.sort(([a], [b]) => Buffer.compare(a, b));
  for (const [k, v] of entries) {
    for (const b of [k, v]) {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      parts.push(len, b);
    }
  }
  return Buffer.concat(parts);
}

function nonce(prefix: Buffer, n: number): Buffer {
  const b = Buffer.alloc(12);
  prefix.copy(b, 0);
  b.writeUInt32BE(n, 8);
  return b;
}

/** Seals `data` chunk by chunk: the body of the file format. */
export function sealChunks(dataKey: Buffer, prefix: Buffer, context: Record<string, string>, data: Buffer,
  chunk = CHUNK): Buffer {
  const parts: Buffer[] = [];
  const count = Math.max(1, Math.ceil(data.length / chunk));
  for (let n = 0; n < count; n++) {
    const cipher = crypto.createCipheriv("aes-256-gcm", dataKey, nonce(prefix, n));
    cipher.setAAD(aad(context, n, n === count - 1));
    const body = Buffer.concat([cipher.update(data.subarray(n * chunk, (n + 1) * chunk)), cipher.final(),
      cipher.getAuthTag()]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    parts.push(len, body);
  }
  return Buffer.concat(parts);
}

/** Opens what sealChunks sealed; throws on any change to it. */
export function openChunks(dataKey: Buffer, prefix: Buffer, context: Record<string, string>, body: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (let n = 0; ; n++) {
    if (at + 4 > body.length) throw new Error("the file is cut short");
    const len = body.readUInt32BE(at);
    const sealed = body.subarray(at + 4, at + 4 + len);
    at += 4 + len;
    if (sealed.length < 16 || sealed.length !== len) throw new Error("the file is cut short");
    const last = at >= body.length;
    const decipher = crypto.createDecipheriv("aes-256-gcm", dataKey, nonce(prefix, n));
    decipher.setAAD(aad(context, n, last));
    decipher.setAuthTag(sealed.subarray(sealed.length - 16));
    out.push(decipher.update(sealed.subarray(0, sealed.length - 16)), decipher.final());
    if (last) return Buffer.concat(out);
  }
}

/** Encrypts `data` under a fresh data key; returns the stored bytes and the key's master-key version.
 * The key's copy decoded here is wiped; grpc-js's receive buffer is not ours to wipe. */
export async function encryptFile(client: EnvelopeClient, key: string, context: Record<string, string>,
  data: Buffer): Promise<{ sealed: Buffer; keyVersion: string }> {
  const dk = await call(client, client.generateDataKey, GenerateDataKeyRequest.fromPartial({ key, context }));
  try {
    const prefix = crypto.randomBytes(8);
    const size = Buffer.alloc(2);
    size.writeUInt16BE(dk.wrappedKey.length);
    const body = sealChunks(dk.plaintextKey, prefix, context, data);
    return { sealed: Buffer.concat([MAGIC, size, dk.wrappedKey, prefix, body]), keyVersion: dk.keyVersion };
  } finally {
    dk.plaintextKey.fill(0);
  }
}

/** Decrypts what encryptFile stored; throws on any change to it. */
export async function decryptFile(client: EnvelopeClient, key: string, context: Record<string, string>,
  sealed: Buffer): Promise<Buffer> {
  if (!sealed.subarray(0, 4).equals(MAGIC)) throw new Error("not an encrypted file");
  const size = sealed.readUInt16BE(4);
  const wrappedKey = sealed.subarray(6, 6 + size);
  const prefix = sealed.subarray(6 + size, 14 + size);
  const dk = await call(client, client.unwrapDataKey, UnwrapDataKeyRequest.fromPartial({ key, wrappedKey, context }));
  try {
    return openChunks(dk.plaintextKey, prefix, context, sealed.subarray(14 + size));
  } finally {
    dk.plaintextKey.fill(0);
  }
}
