// A fake Herald server built with the ws package, for what a real server
// cannot be made to do on demand: a seq jump, a duplicate, silence.
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import type { Frame } from '../../src/protocol';

/** One client connection to the fake server. */
export class FakeConn {
  frames: Frame[] = [];
  closed = false;
  private waiters: { pred: (f: Frame) => boolean; resolve: (i: number) => void }[] = [];
  private seen = 0;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const v = JSON.parse(String(data));
      for (const f of Array.isArray(v) ? v : [v]) {
        const i = this.frames.push(f) - 1;
        if (i < this.seen) continue;
        const w = this.waiters.find((w) => w.pred(f));
        if (w) {
          this.waiters = this.waiters.filter((x) => x !== w);
          w.resolve(i);
        }
      }
    });
    ws.on('close', () => (this.closed = true));
  }

  /** Resolves with the next frame (received from now on, or already received and not yet taken) that matches. */
  next(pred: ((f: Frame) => boolean) | string, ms = 5000): Promise<Frame> {
    const p = typeof pred === 'string' ? (f: Frame) => f.type === pred : pred;
    for (let i = this.seen; i < this.frames.length; i++) {
      if (p(this.frames[i])) {
        this.seen = i + 1;
        return Promise.resolve(this.frames[i]);
      }
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fake server: no matching frame in ${ms} ms; got ${JSON.stringify(this.frames)}`)), ms);
      this.waiters.push({
        pred: p,
        resolve: (i) => {
          clearTimeout(timer);
          this.seen = i + 1;
          resolve(this.frames[i]);
        },
      });
    });
  }

  /** Sends frames as one text message (an array when several). */
  send(...frames: Frame[]): void {
    this.ws.send(JSON.stringify(frames.length === 1 ? frames[0] : frames));
  }

  /** Waits for CONNECT and answers CONNECTED. */
  async accept(heartbeat = 180000): Promise<Frame> {
    const c = await this.next('connect');
    this.send({ type: 'connected', session: 's-' + Math.random().toString(36).slice(2), node: 'fake', heartbeat, time: Date.now() });
    return c;
  }
}

export class FakeServer {
  conns: FakeConn[] = [];
  private wss!: WebSocketServer;
  private waiters: ((c: FakeConn) => void)[] = [];

  static async start(): Promise<FakeServer> {
    const s = new FakeServer();
    s.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((r) => s.wss.once('listening', r));
    s.wss.on('connection', (ws) => {
      const c = new FakeConn(ws);
      s.conns.push(c);
      const ws2 = s.waiters;
      s.waiters = [];
      for (const w of ws2) w(c);
    });
    return s;
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/ws`;
  }

  /** Resolves with connection number i (0-based), waiting for it if needed. */
  conn(i: number, ms = 5000): Promise<FakeConn> {
    if (this.conns[i]) return Promise.resolve(this.conns[i]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fake server: no connection #${i} in ${ms} ms`)), ms);
      const check = () => {
        if (this.conns[i]) {
          clearTimeout(timer);
          resolve(this.conns[i]);
        } else this.waiters.push(check);
      };
      check();
    });
  }

  close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    return new Promise((r) => this.wss.close(() => r()));
  }
}
