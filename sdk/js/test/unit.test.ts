// Unit tests: the JSON codec, the code tables, the emitter, storage, and the
// client's reconnect schedule through a pluggable in-memory transport.
import { afterEach, describe, expect, test, vi } from 'vitest';
import { Herald, memoryStorage } from '../src/index';
import type { ConnectedContext, Frame, Message, TransportFactory, TransportHandlers } from '../src/index';
import { codeFromClose, decode, encode, fromBase64, reconnectAdvised } from '../src/protocol';
import { Emitter } from '../src/emitter';

describe('JSON frames', () => {
  test('one frame is an object, several an array', () => {
    expect(encode([{ type: 'ping', time: 5 }])).toBe('{"type":"ping","time":5}');
    expect(encode([{ type: 'ack', stream: 'u:a', seq: 1 }, { type: 'ack', stream: 'u:b', seq: 2 }])).toBe(
      '[{"type":"ack","stream":"u:a","seq":1},{"type":"ack","stream":"u:b","seq":2}]',
    );
  });

  test('a message is an object or an array of them, from the protocol examples', () => {
    expect(decode('{"type":"connected","session":"s-9f2c","node":"node-a","heartbeat":180000,"time":1700000000000}')).toEqual([
      { type: 'connected', session: 's-9f2c', node: 'node-a', heartbeat: 180000, time: 1700000000000 },
    ]);
    const batch = decode(
      '[{"type":"push","stream":"t:news","epoch":"e7","seq":42,"msg_id":"m-42","data":{"title":"hi"},"time":1700000000500},' +
        '{"type":"push","stream":"u:alice","epoch":"e3","seq":8,"msg_id":"m-43","b64":"3q2+7w==","time":1700000000600}]',
    );
    expect(batch.map((f) => f.seq)).toEqual([42, 8]);
    expect(batch[0].data).toEqual({ title: 'hi' });
    expect(Array.from(fromBase64(batch[1].b64!))).toEqual([0xde, 0xad, 0xbe, 0xef]);
    expect(decode('[]')).toEqual([]);
  });

  test('what is not a frame is refused', () => {
    expect(() => decode('not json')).toThrow();
    expect(() => decode('{"stream":"u:a"}')).toThrow(/type/);
    expect(() => decode('[{"type":"ping"},42]')).toThrow(/type/);
    expect(() => decode('{"type":"push","stream":"s","data":1,"b64":"AA=="}')).toThrow(/both/);
  });

  test('WebSocket close statuses map to disconnect codes', () => {
    expect([1000, 1001, 4003, 4007, 1006, 1011].map(codeFromClose)).toEqual([3000, 3001, 3003, 3007, 3010, 3010]);
  });

  test('reconnect advice follows the protocol table', () => {
    const advised = [3000, 3001, 3002, 3003, 3004, 3005, 3006, 3007, 3008, 3009, 3010, 3011, 3012, 3013, 3014, 3015, 3999].filter(reconnectAdvised);
    expect(advised).toEqual([3001, 3002, 3005, 3006, 3010, 3011, 3012, 3013, 3014]);
  });
});

describe('Emitter', () => {
  class E extends Emitter<{ x: (n: number) => unknown }> {
    fire(n: number, fail?: (e: unknown) => void) {
      return this._emit('x', [n], fail);
    }
  }

  test('listeners run in order; once, off; a throwing listener does not stop the others', async () => {
    const e = new E();
    const got: string[] = [];
    const errors: unknown[] = [];
    const b = (n: number) => got.push('b' + n);
    e.on('x', (n) => got.push('a' + n));
    e.on('x', () => {
      throw new Error('boom');
    });
    e.on('x', b);
    e.once('x', (n) => got.push('once' + n));
    expect(e.fire(1, (err) => errors.push(err))).toBeUndefined();
    e.off('x', b);
    e.fire(2);
    expect(got).toEqual(['a1', 'b1', 'once1', 'a2']);
    expect(errors).toHaveLength(1);
    e.on('x', async () => 'later');
    expect(e.fire(3)).toHaveLength(1); // the promises of async listeners come back
  });
});

test('memoryStorage', () => {
  const s = memoryStorage();
  expect(s.getItem('k')).toBeNull();
  s.setItem('k', 'v');
  expect(s.getItem('k')).toBe('v');
  s.removeItem('k');
  expect(s.getItem('k')).toBeNull();
});

/**
 * An in-memory transport: a second implementation of the Transport
 * interface, for the "mem:" scheme. The test plays the server.
 */
class MemTransport implements TransportFactory {
  readonly name = 'mem';
  opened: { url: string; at: number; h: TransportHandlers; sent: Frame[] }[] = [];
  /** Accept connections (else they fail as an endpoint that is down would). */
  up = new Set<string>();

  supports(url: string) {
    return url.startsWith('mem:');
  }

  open(url: string, h: TransportHandlers) {
    const conn = { url, at: Date.now(), h, sent: [] as Frame[] };
    this.opened.push(conn);
    queueMicrotask(() => (this.up.has(url) ? h.onOpen() : h.onClose(1006, 'refused')));
    return {
      send: (text: string) => conn.sent.push(...decode(text)),
      close: () => {},
    };
  }
}

describe('reconnect schedule (fake timers, in-memory transport)', () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  test('every endpoint once per round, then exponential backoff with full jitter, capped', async () => {
    vi.useFakeTimers();
    vi.spyOn(Math, 'random').mockReturnValue(0.5); // half of each cap
    const mem = new MemTransport();
    const h = new Herald({ endpoints: ['mem:a', 'mem:b'], token: 't', transports: [mem], storage: memoryStorage(), minBackoff: 100, maxBackoff: 400 });
    const t0 = Date.now();
    h.connect();
    await vi.advanceTimersByTimeAsync(1000);
    const attempts = mem.opened.slice(0, 10).map((o) => `${o.url}@${o.at - t0}`);
    // caps 100, 200, 400, 400, ...: waits 50, 100, 200, 200
    expect(attempts).toEqual(['mem:a@0', 'mem:b@0', 'mem:a@50', 'mem:b@50', 'mem:a@150', 'mem:b@150', 'mem:a@350', 'mem:b@350', 'mem:a@550', 'mem:b@550']);
    // b comes up: it is used, and kept as the endpoint to start with
    mem.up.add('mem:b');
    const connected = new Promise<ConnectedContext>((r) => h.once('connected', r));
    await vi.advanceTimersByTimeAsync(200);
    const conn = mem.opened.at(-1)!;
    expect(conn.url).toBe('mem:b');
    expect(conn.sent[0]).toMatchObject({ type: 'connect', version: 1, token: 't' });
    conn.h.onMessage('{"type":"connected","session":"s1","node":"n","heartbeat":1000}');
    expect((await connected).endpoint).toBe('mem:b');
    expect(h.endpoint).toBe('mem:b');

    // a pushed message through this transport, acknowledged after the ack delay
    const got: Message[] = [];
    h.on('push', (m) => void got.push(m));
    conn.h.onMessage('{"type":"push","stream":"u:x","epoch":"e","seq":1,"msg_id":"m1","data":[1,2]}');
    expect(got[0]).toMatchObject({ stream: 'u:x', seq: 1, data: [1, 2] });
    await vi.advanceTimersByTimeAsync(100);
    expect(conn.sent).toContainEqual({ type: 'ack', stream: 'u:x', seq: 1 });

    // the connection is lost after less than maxBackoff: the backoff goes on
    // (a server that accepts and drops at once is not hammered); the next
    // round starts with b
    const n = mem.opened.length;
    conn.h.onClose(1006, '');
    await vi.advanceTimersByTimeAsync(199);
    expect(mem.opened.length).toBe(n);
    await vi.advanceTimersByTimeAsync(1);
    expect(mem.opened[n].url).toBe('mem:b');
    h.disconnect();
  });

  test('fallback: after fallbackAfter attempts whose transport never opened, the next transport, at once; it stays', async () => {
    vi.useFakeTimers();
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const blocked = new MemTransport(); // never opens, like a WebSocket a proxy refuses
    const other = new MemTransport();
    other.up.add('mem:a');
    const second: TransportFactory = { name: 'second', supports: (u) => other.supports(u), open: (u, hs) => other.open(u, hs) };
    const h = new Herald({ endpoints: 'mem:a', token: 't', transports: [blocked, second], storage: memoryStorage(), minBackoff: 100, maxBackoff: 400 });
    const t0 = Date.now();
    const connected = new Promise<ConnectedContext>((r) => h.once('connected', r));
    h.connect();
    await vi.advanceTimersByTimeAsync(60);
    // two refused attempts (the second after a 50 ms backoff), then the other transport at once
    expect(blocked.opened.map((o) => o.at - t0)).toEqual([0, 50]);
    expect(other.opened.map((o) => o.at - t0)).toEqual([50]);
    const conn = other.opened[0];
    conn.h.onMessage('{"type":"connected","session":"s1","node":"n","heartbeat":1000}');
    expect((await connected).transport).toBe('second');
    expect(h.transport).toBe('second');
    // lost: the endpoint reconnects over the transport that worked
    conn.h.onClose(1006, '');
    expect(h.transport).toBe('');
    await vi.advanceTimersByTimeAsync(400);
    expect(blocked.opened.length).toBe(2);
    expect(other.opened.length).toBe(2);
    h.disconnect();
  });

  test('a transport that opens and is then refused (a bad token) does not count toward the fallback', async () => {
    vi.useFakeTimers();
    const first = new MemTransport();
    first.up.add('mem:a');
    const other = new MemTransport();
    const second: TransportFactory = { name: 'second', supports: (u) => other.supports(u), open: (u, hs) => other.open(u, hs) };
    const h = new Herald({ endpoints: 'mem:a', token: 't', transports: [first, second], storage: memoryStorage(), minBackoff: 10, maxBackoff: 20 });
    h.connect();
    for (let i = 0; i < 4; i++) {
      await vi.advanceTimersByTimeAsync(30);
      first.opened.at(-1)!.h.onClose(1006, ''); // opened, then lost before CONNECTED
    }
    expect(first.opened.length).toBeGreaterThanOrEqual(4);
    expect(other.opened.length).toBe(0);
    h.disconnect();
  });
});
