// A TCP proxy in front of a server, to cut connections and take an endpoint
// down and up again, as a network would.
import { createConnection, createServer } from 'node:net';
import { createServer as createHTTPServer, request } from 'node:http';
import type { AddressInfo, Server, Socket } from 'node:net';

export class Proxy {
  /** Connections accepted, including those refused while down. */
  accepted = 0;
  private server: Server;
  private socks = new Set<Socket>();
  private isDown = false;

  private constructor(private target: { host: string; port: number }) {
    this.server = createServer((client) => {
      this.accepted++;
      if (this.isDown) return void client.destroy();
      const upstream = createConnection(this.target);
      this.socks.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.socks.delete(client);
        this.socks.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  /** Starts a proxy to the host:port of url (ws://host:port/path). */
  static async to(url: string): Promise<Proxy> {
    const u = new URL(url);
    const p = new Proxy({ host: u.hostname, port: Number(u.port) });
    await new Promise<void>((r) => p.server.listen(0, '127.0.0.1', r));
    p.path = u.pathname;
    return p;
  }

  path = '/';

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** The proxied WebSocket URL. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}${this.path}`;
  }

  /** Drops every connection abruptly (no close frame): the client sees a lost connection. */
  cut(): void {
    for (const s of this.socks) s.destroy();
    this.socks.clear();
  }

  /** Cuts connections and refuses new ones until up(). */
  down(): void {
    this.isDown = true;
    this.cut();
  }

  up(): void {
    this.isDown = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** A listening TCP port that accepts and closes every connection at once: an endpoint that is down. */
export async function deadEndpoint(): Promise<{ url: string; attempts: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { url: `ws://127.0.0.1:${port}/ws`, attempts: () => n, close: () => new Promise((r) => server.close(() => r())) };
}

/**
 * An HTTP proxy in front of a server that passes plain requests (the SSE
 * stream, its POSTs) and refuses WebSocket upgrades by closing the socket,
 * as some corporate proxies do.
 */
export async function noWebSocketProxy(wsURL: string): Promise<{ url: string; upgrades: () => number; close: () => Promise<void> }> {
  const target = new URL(wsURL);
  let upgrades = 0;
  const sockets = new Set<Socket>();
  const server = createHTTPServer((req, res) => {
    const up = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode || 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (_req, socket) => {
    upgrades++;
    socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}${target.pathname}`,
    upgrades: () => upgrades,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
