import * as crypto from "node:crypto";

import { call, connect, decryptFile, encryptFile } from "./envelope";
import * as pb from "../gen/envelope/v1/envelope";

export async function main(addr: string): Promise<string[]> {
  const client = connect(addr);
  const ctx = { table: "users", column: "email" };
  const log: string[] = [];

  // One record.
  const sealed = await call(client, client.encrypt,
    pb.EncryptRequest.fromPartial({ plaintext: Buffer.from("ana@example.com"), context: ctx }));
  const opened = await call(client, client.decrypt,
    pb.DecryptRequest.fromPartial({ ciphertext: sealed.ciphertext, context: ctx }));
  if (opened.plaintext.toString() !== "ana@example.com") throw new Error("record");
  log.push(`record: ${sealed.ciphertext.length} bytes under version ${sealed.keyVersion}`);

  // A batch: items fail one by one, never the whole call.
  const items = Array.from({ length: 100 }, (_, i) =>
    ({ plaintext: Buffer.from(`user${i}@example.com`), context: ctx, indexes: [] }));
  const batch = await call(client, client.encryptBatch, pb.EncryptBatchRequest.fromPartial({ items }));
  const back = await call(client, client.decryptBatch, pb.DecryptBatchRequest.fromPartial({
    items: batch.results.map((r) => ({ ciphertext: r.ciphertext, context: ctx })),
  }));
  if (back.results.some((r, i) => !r.plaintext?.equals(items[i].plaintext))) throw new Error("batch");
  log.push(`batch: ${back.results.length} records`);

  // A column: one shared context, each row's id bound into its record.
  const rows = Array.from({ length: 1000 }, (_, i) => String(i + 1));
  const values = rows.map((id) => Buffer.from(`user${id}@example.com`));
  const column = await call(client, client.encryptColumn, pb.EncryptColumnRequest.fromPartial({
    context: ctx, plaintexts: values, rowField: "id", rowValues: rows, indexes: ["email"],
  }));
  const plain = await call(client, client.decryptColumn, pb.DecryptColumnRequest.fromPartial({
    context: ctx, ciphertexts: column.ciphertexts, rowField: "id", rowValues: rows,
  }));
  if (plain.plaintexts.some((p, i) => !p.equals(values[i]))) throw new Error("column");
  log.push(`column: ${plain.plaintexts.length} rows under version ${column.keyVersion}`);

  // A blind-index token: the value as stored in the index column, to look rows up by.
  const token = await call(client, client.computeIndex, pb.ComputeIndexRequest.fromPartial({
    index: "email", values: [Buffer.from("User1@Example.com")],
  }));
  const first = token.results[0].tokens[0];
  if (!first.token.equals(column.indexTokens["email"].tokens[0])) throw new Error("index");
  log.push(`index: token ${first.token.toString("hex")} under version ${first.keyVersion}`);

  // A large file: one data key from the server, AES-256-GCM here.
  const data = crypto.randomBytes(3 * (1 << 20) + 12345);
  const file = await encryptFile(client, "default", { file: "report.pdf" }, data);
  const restored = await decryptFile(client, "default", { file: "report.pdf" }, file.sealed);
  if (!restored.equals(data)) throw new Error("file");
  log.push(`file: ${data.length} bytes, data key under version ${file.keyVersion}`);

  client.close();
  return log;
}

if (require.main === module) {
  main(process.env.ENVELOPE_ADDR ?? "127.0.0.1:50051").then(
    (log) => console.log(log.join("\n")),
    (err) => { console.error(err); process.exit(1); },
  );
}
