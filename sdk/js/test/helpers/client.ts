import WebSocket from 'ws';
import { afterEach } from 'vitest';
import { Herald, memoryStorage } from '../../src/index';
import type { HeraldOptions, WebSocketConstructor } from '../../src/index';

/** The ws package's WebSocket, as the SDK's websocket option (Node 20 has no global one). */
export const NodeWebSocket = WebSocket as unknown as WebSocketConstructor;

const made: Herald[] = [];
afterEach(() => {
  for (const h of made.splice(0)) h.disconnect();
});

/** A client with test-friendly timings, disconnected after each test. */
export function makeClient(opts: HeraldOptions): Herald {
  const h = new Herald({
    storage: memoryStorage(),
    websocket: NodeWebSocket,
    minBackoff: 20,
    maxBackoff: 200,
    ackDelay: 20,
    connectTimeout: 3000,
    ...opts,
  });
  made.push(h);
  return h;
}

let n = 0;
/** A name unique in this test run. */
export const unique = (prefix: string) => `${prefix}-${process.pid}-${++n}`;
