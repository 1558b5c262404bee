// Real Envelope servers for the tests: the binary at ENVELOPE_BIN on
// loopback, each with its own data directory; the audit log is its stdout.

import { spawn, ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const INDEX = '[[keys]]\nname = "default"\n[[keys.indexes]]\nname = "email"\nnormalize = "email"\nbits = 32\n';

export class Server {
  addr = "";
  /** Where /metrics is served, when the config has `metrics_listen`. */
  metrics = "";
  private proc?: ChildProcess;
  private out: string;

  private constructor(readonly dir: string) {
    this.out = path.join(dir, "server.out");
  }

  static async start(config = INDEX): Promise<Server> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "envelope-ts-"));
    const s = new Server(dir);
    const data = path.join(dir, "data");
    fs.mkdirSync(data, { mode: 0o700 });
    fs.writeFileSync(path.join(dir, "server.toml"), config);
    const bin = process.env.ENVELOPE_BIN ?? path.join(os.homedir(), ".cache/envelope/target/debug/envelope");
    s.proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--config",
      path.join(dir, "server.toml")], {
      stdio: ["ignore", fs.openSync(s.out, "w"), fs.openSync(path.join(dir, "server.log"), "w")],
    });
    for (let i = 0; i < 300; i++) {
      const m = /^listening on (\S+)$/m.exec(fs.readFileSync(s.out, "utf8"));
      if (m) {
        s.addr = m[1];
        s.metrics = /^metrics on (\S+)$/m.exec(fs.readFileSync(s.out, "utf8"))?.[1] ?? "";
        return s;
      }
      if (s.proc.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    s.stop();
    throw new Error(fs.readFileSync(path.join(dir, "server.log"), "utf8"));
  }

  /** The audit lines of `rpc` so far (the writer flushes every 10 ms). */
  async audit(rpc: string): Promise<Array<Record<string, unknown>>> {
    await new Promise((r) => setTimeout(r, 100));
    return fs.readFileSync(this.out, "utf8").split("\n")
      .filter((l) => l.startsWith("{") && l.includes(`"rpc":"${rpc}"`))
      .map((l) => JSON.parse(l));
  }

  /** Sends `signal` to the server (SIGSTOP, SIGCONT). */
  signal(signal: NodeJS.Signals): void {
    this.proc?.kill(signal);
  }

  stop(): void {
    this.proc?.kill("SIGKILL");
  }
}
