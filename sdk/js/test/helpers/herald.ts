// Runs a real herald server as a child process, and talks to its HTTP API.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';

/** The herald binary built by the global setup ('' when Go is missing and CI is not set). */
export const heraldBin = inject('heraldBin');

export interface TokenOptions {
  topics?: string[];
  /** Expiry, seconds since the epoch; default an hour from now. */
  exp?: number;
}

export class HeraldServer {
  readonly app = 'test';
  readonly secret = 'test-secret-' + randomBytes(12).toString('hex');
  readonly apiKey = 'test-api-key-' + randomBytes(12).toString('hex');
  ws = '';
  /** The server API's base URL, its path prefix included. */
  api = '';
  /** api.path: a prefix for the server API's paths ('' for none); set before start. */
  apiPath = '';
  log = '';
  private proc?: ChildProcess;
  private dir = mkdtempSync(join(tmpdir(), 'herald-srv-'));

  /** Starts herald with extra top-level YAML config lines; resolves when it listens. */
  async start(extra: Record<string, string | number> = {}): Promise<this> {
    const cfg = [
      `data_dir: ${join(this.dir, 'data')}`,
      'ws:',
      '  addr: 127.0.0.1:0',
      'tcp:',
      '  addr: ""',
      'api:',
      '  addr: 127.0.0.1:0',
      ...(this.apiPath ? [`  path: ${this.apiPath}`] : []),
      'apps:',
      `  - id: ${this.app}`,
      `    secret: ${this.secret}`,
      '    api_keys:',
      `      - ${this.apiKey}`,
      'log:',
      '  format: json',
      '  level: info',
      ...Object.entries(extra).map(([k, v]) => `${k}: ${v}`),
    ].join('\n');
    const file = join(this.dir, 'herald.yaml');
    writeFileSync(file, cfg + '\n');
    const proc = (this.proc = spawn(heraldBin, ['serve', '-config', file], { stdio: ['ignore', 'ignore', 'pipe'] }));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('herald did not start in 10 s:\n' + this.log)), 10_000);
      proc.on('exit', (code) => reject(new Error(`herald exited with ${code}:\n${this.log}`)));
      proc.stderr!.setEncoding('utf8');
      let buf = '';
      proc.stderr!.on('data', (chunk: string) => {
        this.log += chunk;
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line.includes('"herald started"')) continue;
          const rec = JSON.parse(line);
          this.ws = `ws://${rec.ws}${rec.ws_path}`;
          this.api = `http://${rec.api}${this.apiPath}`;
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return this;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Mints an HS256 client token (claims as in docs/protocol.md: sub, app, exp, iat, topics). */
  token(user: string, opts: TokenOptions = {}): string {
    const now = Math.floor(Date.now() / 1000);
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: user, app: this.app, iat: now, exp: opts.exp ?? now + 3600, topics: opts.topics ?? ['*'] })}`;
    return `${body}.${createHmac('sha256', this.secret).update(body).digest('base64url')}`;
  }

  async call(method: string, path: string, body?: unknown): Promise<any> {
    const res = await fetch(this.api + path, {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  push(user: string, msg: Record<string, unknown>) {
    return this.call('POST', `/v1/apps/${this.app}/users/${encodeURIComponent(user)}/messages`, msg);
  }

  publish(topic: string, msg: Record<string, unknown>) {
    return this.call('POST', `/v1/apps/${this.app}/topics/${encodeURIComponent(topic)}/messages`, msg);
  }

  broadcast(msg: Record<string, unknown>) {
    return this.call('POST', `/v1/apps/${this.app}/broadcast`, msg);
  }

  unread(user: string, device: string): Promise<{ last: number; acked: number; unread: number }> {
    return this.call('GET', `/v1/apps/${this.app}/users/${encodeURIComponent(user)}/unread?device=${encodeURIComponent(device)}`);
  }

  kick(user: string, body: Record<string, unknown> = {}) {
    return this.call('POST', `/v1/apps/${this.app}/users/${encodeURIComponent(user)}/kick`, body);
  }

  stats() {
    return this.call('GET', '/v1/stats');
  }
}
