// The SSE transport against a real herald server: chosen by option, and as
// the automatic fallback when WebSocket upgrades do not get through.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sseTransport, webSocketTransport } from '../src/index';
import type { ConnectedContext, Message, SubscribedContext } from '../src/index';
import { sseURL } from '../src/transport';
import { NodeEventSource, TestEventSource } from './helpers/eventsource';
import { HeraldServer, heraldBin } from './helpers/herald';
import { Proxy, noWebSocketProxy } from './helpers/proxy';
import { Recorder, eventually, next } from './helpers/wait';
import { NodeWebSocket, makeClient, unique } from './helpers/client';

test('sseURL: the sibling "sse" of a WebSocket path; http(s) URLs as they are', () => {
  expect(sseURL('ws://h:1/ws')).toBe('http://h:1/sse');
  expect(sseURL('wss://h/push/ws?x=1')).toBe('https://h/push/sse');
  expect(sseURL('ws://h:1')).toBe('http://h:1/sse');
  expect(sseURL('https://h/custom/sse')).toBe('https://h/custom/sse');
});

test('without an EventSource, SSE supports nothing and the client keeps to WebSocket', () => {
  expect(sseTransport().supports('ws://h/ws')).toBe(typeof (globalThis as any).EventSource === 'function');
  expect(sseTransport({ eventSource: NodeEventSource }).supports('ws://h/ws')).toBe(true);
  expect(webSocketTransport().supports('http://h/sse')).toBe(false);
});

describe.skipIf(!heraldBin)('SSE against a real herald server', () => {
  const srv = new HeraldServer();
  beforeAll(() => srv.start({ history_size: 10 }));
  afterAll(() => srv.stop());

  test('falls back to SSE when WebSocket upgrades are refused: inbox and ACK', async () => {
    const proxy = await noWebSocketProxy(srv.ws);
    const user = unique('sse-alice');
    const h = makeClient({ endpoints: proxy.url, token: srv.token(user), device: 'd1', eventSource: NodeEventSource });
    const errors = new Recorder(h, 'error');
    const connected = next<ConnectedContext>(h, 'connected', () => true, 10_000);
    const pushes = new Recorder<Message>(h, 'push');
    h.connect();
    const ctx = await connected;
    expect(ctx.transport).toBe('sse');
    expect(h.transport).toBe('sse');
    expect(ctx.endpoint).toBe(proxy.url);
    expect(proxy.upgrades()).toBe(2); // fallbackAfter: two refused WebSocket attempts, then SSE
    expect(errors.items.length).toBe(2);
    const r = await srv.push(user, { data: { hello: 'sse' } });
    const [m] = await pushes.until(1);
    expect(m).toMatchObject({ stream: `u:${user}`, seq: r.seq, data: { hello: 'sse' } });
    await eventually(async () => expect(await srv.unread(user, 'd1')).toMatchObject({ last: 1, acked: 1, unread: 0 }));
    h.disconnect();
    await proxy.close();
  });

  test('transports: ["sse"] connects over SSE directly; ACKs, PINGs and DISCONNECT go up with POSTs', async () => {
    const user = unique('sse-bob');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'd2', transports: ['sse'], eventSource: NodeEventSource, pingInterval: 200 });
    const pushes = new Recorder<Message>(h, 'push');
    const connected = next<ConnectedContext>(h, 'connected');
    h.connect();
    expect((await connected).transport).toBe('sse');
    for (const d of ['a', 'b', 'c']) await srv.push(user, { data: d });
    await pushes.until(3);
    expect(pushes.items.map((m) => m.data)).toEqual(['a', 'b', 'c']);
    await eventually(async () => expect((await srv.unread(user, 'd2')).acked).toBe(3));
    // heartbeats: PINGs (every 180 ms) go up and their PONGs come down; the session stays
    const session = h.session;
    const es = TestEventSource.made[TestEventSource.made.length - 1];
    const before = (await srv.stats()).connections.frames_in;
    await eventually(async () => expect((await srv.stats()).connections.frames_in).toBeGreaterThanOrEqual(before + 3), 5000);
    expect(h.state).toBe('connected');
    expect(h.session).toBe(session);
    expect(es.readyState).toBe(1);
    const gone = next(h, 'disconnected');
    h.disconnect();
    expect(await gone).toMatchObject({ code: 3000, reconnect: false });
    await eventually(() => expect(es.readyState).toBe(2));
  });

  test('topic over SSE: subscribe, lose the stream, recover what was missed, then live', async () => {
    const user = unique('sse-gina');
    const topic = unique('sse-news');
    const proxy = await Proxy.to(srv.ws);
    const h = makeClient({ endpoints: proxy.url, token: srv.token(user, { topics: [topic] }), device: 'g1', transports: ['sse'], eventSource: NodeEventSource });
    h.connect();
    const sub = h.subscribe(topic);
    const pubs = new Recorder<Message>(sub, 'publication');
    const subscribed = new Recorder<SubscribedContext>(sub, 'subscribed');
    await sub.ready(5000);
    expect(h.transport).toBe('sse');
    await srv.publish(topic, { data: 1 });
    await srv.publish(topic, { data: 2 });
    await pubs.until(2);
    proxy.down();
    await next(sub, 'subscribing');
    for (const d of [3, 4, 5]) await srv.publish(topic, { data: d });
    proxy.up();
    const again = await subscribed.until(2);
    expect(again[1]).toMatchObject({ recovering: true, recovered: true, position: { seq: 5 } });
    await srv.publish(topic, { data: 6 });
    await pubs.until(6);
    expect(pubs.items.map((m) => m.data)).toEqual([1, 2, 3, 4, 5, 6]);
    h.disconnect();
    await proxy.close();
  });

  test('WebSocket stays the first choice when it works', async () => {
    const user = unique('sse-carl');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), websocket: NodeWebSocket, eventSource: NodeEventSource });
    const connected = next<ConnectedContext>(h, 'connected');
    h.connect();
    expect((await connected).transport).toBe('websocket');
  });
});
