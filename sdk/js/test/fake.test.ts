// The SDK against a fake server (the ws package), for what a real server
// cannot be made to do on demand: a seq jump, a duplicate, silence, odd closes.
import { afterEach, describe, expect, test } from 'vitest';
import type { ConnectedContext, DisconnectedContext, ErrorContext, Frame, GapContext, Message, ResetContext, SubscribedContext } from '../src/index';
import { FakeServer } from './helpers/fake';
import type { FakeConn } from './helpers/fake';
import { Recorder, next } from './helpers/wait';
import { makeClient } from './helpers/client';

const servers: FakeServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});
async function fake(): Promise<FakeServer> {
  const s = await FakeServer.start();
  servers.push(s);
  return s;
}

const push = (stream: string, epoch: string, seq: number, extra: Partial<Frame> = {}): Frame => ({
  type: 'push', stream, epoch, seq, msg_id: `${stream}/${epoch}/${seq}`, data: { seq }, time: 1700000000000 + seq, ...extra,
});

/** A PING from the fake server, answered by PONG: every frame the client sent before the PONG has arrived. */
async function roundTrip(c: FakeConn): Promise<void> {
  const time = Date.now() + Math.floor(Math.random() * 1e6);
  c.send({ type: 'ping', time });
  await c.next((f) => f.type === 'pong' && f.time === time);
}

describe('with a fake server', () => {
  test('CONNECT carries version, token, device, client and a broadcast resume position', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 'tok', device: 'dev-1' });
    h.connect();
    const c = await s.conn(0);
    expect(await c.accept()).toEqual({
      type: 'connect', version: 1, token: 'tok', device: 'dev-1', client: 'herald-js/0.1.0', resume: [{ stream: 'b' }],
    });
    await h.ready(5000);
  });

  test('a topic gap: resubscribes from the last position, the replay fills it, in order', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd' });
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    const sub = h.subscribe('news');
    const pubs = new Recorder<Message>(sub, 'publication');
    const gaps = new Recorder<GapContext>(h, 'gap');
    const s1 = await c.next('subscribe');
    expect(s1).toEqual({ type: 'subscribe', id: s1.id, topic: 'news' });
    c.send({ type: 'reply', id: s1.id, stream: 't:news', epoch: 'e1' }, push('t:news', 'e1', 1), push('t:news', 'e1', 2), push('t:news', 'e1', 4));
    const u = await c.next('unsubscribe');
    const s2 = await c.next('subscribe');
    expect(u.topic).toBe('news');
    expect(s2).toMatchObject({ topic: 'news', epoch: 'e1', seq: 2 });
    expect(gaps.items).toEqual([{ stream: 't:news', epoch: 'e1', after: 2, seq: 4, action: 'resubscribe' }]);
    // a live push of the old subscription still on its way, then the replay and the REPLY
    c.send(push('t:news', 'e1', 5), { type: 'reply', id: u.id });
    c.send(push('t:news', 'e1', 3), push('t:news', 'e1', 4), { type: 'reply', id: s2.id, stream: 't:news', epoch: 'e1', seq: 4, recovered: true });
    const ctx = await next<SubscribedContext>(sub, 'subscribed');
    expect(ctx).toEqual({ position: { epoch: 'e1', seq: 4 }, recovering: true, recovered: true });
    c.send(push('t:news', 'e1', 5));
    await pubs.until(5);
    expect(pubs.items.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(gaps.items).toHaveLength(1);
  });

  test('an inbox gap: reconnects, the resend fills it; the same gap again is accepted', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd' });
    const pushes = new Recorder<Message>(h, 'push');
    const gaps = new Recorder<GapContext>(h, 'gap');
    h.connect();
    const c0 = await s.conn(0);
    await c0.accept();
    c0.send(push('u:al', 'e', 1), push('u:al', 'e', 2), push('u:al', 'e', 4));
    const c1 = await s.conn(1);
    // what was processed was acknowledged before the client left
    expect(c0.frames).toContainEqual({ type: 'ack', stream: 'u:al', seq: 2 });
    const connect = await c1.accept();
    expect(connect.resume).toContainEqual({ stream: 'u:al', epoch: 'e', seq: 2 });
    c1.send(push('u:al', 'e', 3), push('u:al', 'e', 4));
    await pushes.until(4);
    // 5 expired on the server: the jump comes again after the reconnect, and is accepted
    c1.send(push('u:al', 'e', 6));
    const c2 = await s.conn(2);
    await c2.accept();
    c2.send(push('u:al', 'e', 6));
    await pushes.until(5);
    expect(pushes.items.map((m) => m.seq)).toEqual([1, 2, 3, 4, 6]);
    expect(gaps.items.map((g) => [g.after, g.seq, g.action])).toEqual([[2, 4, 'reconnect'], [4, 6, 'reconnect'], [4, 6, 'accept']]);
  });

  test('duplicates are dropped by (epoch, seq) and by message id; a new epoch is reported', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd', ackDelay: 0 });
    const pushes = new Recorder<Message>(h, 'push');
    const dups = new Recorder<Message>(h, 'duplicate');
    const resets = new Recorder<ResetContext>(h, 'reset');
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    c.send(
      push('u:al', 'e1', 1),
      push('u:al', 'e1', 2),
      push('u:al', 'e1', 2), // repeated
      push('u:al', 'e1', 1), // older
      { type: 'push', stream: 'u:al', msg_id: 'live-1', data: 'no history' }, // no seq: by id only
      { type: 'push', stream: 'u:al', msg_id: 'live-1', data: 'no history' },
    );
    await dups.until(3);
    expect(pushes.items.map((m) => m.id)).toEqual(['u:al/e1/1', 'u:al/e1/2', 'live-1']);
    // the store was reset: sequence numbers start again; a message seen before keeps its id
    c.send(push('u:al', 'e2', 1, { msg_id: 'u:al/e1/2' }), push('u:al', 'e2', 2));
    await pushes.until(4);
    expect(resets.items).toEqual([{ stream: 'u:al', previous: { epoch: 'e1', seq: 2 }, epoch: 'e2' }]);
    expect(dups.items.map((m) => m.id)).toEqual(['u:al/e1/2', 'u:al/e1/1', 'live-1', 'u:al/e1/2']);
    expect(pushes.items.map((m) => m.id)).toEqual(['u:al/e1/1', 'u:al/e1/2', 'live-1', 'u:al/e2/2']);
    expect(h.position('u:al')).toEqual({ epoch: 'e2', seq: 2 });
  });

  test('one cumulative ACK per received batch, sent after the handlers settle', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd', ackDelay: 0 });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const seen = new Recorder<Message>(h, 'push');
    h.on('push', (m) => (m.seq === 1 ? held : undefined)); // the first handler is slow
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    c.send(...[1, 2, 3, 4, 5].map((n) => push('u:al', 'e', n)), push('t:not-subscribed', 'e', 1), push('b', 'e', 1));
    await seen.until(1);
    // an ACK of another stream goes out with the next flush: an ACK of the
    // held message, had it been queued, would go with it or before it
    h.ack('u:other', 1);
    await c.next((f) => f.type === 'ack' && f.stream === 'u:other');
    expect(seen.items).toHaveLength(1); // the others wait for the first handler
    expect(c.frames.filter((f) => f.type === 'ack' && f.stream === 'u:al')).toEqual([]);
    release();
    await seen.until(5);
    await c.next((f) => f.type === 'ack' && f.stream === 'u:al');
    await roundTrip(c);
    // only the inbox is acknowledged, once, up to the last message
    expect(c.frames.filter((f) => f.type === 'ack' && f.stream === 'u:al')).toEqual([{ type: 'ack', stream: 'u:al', seq: 5 }]);
  });

  test('with autoAck off, ack() acknowledges', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd', autoAck: false, ackDelay: 0 });
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    c.send(push('u:al', 'e', 1), push('u:al', 'e', 2));
    const m = await next<Message>(h, 'push', (m) => m.seq === 2);
    await roundTrip(c);
    expect(c.frames.some((f) => f.type === 'ack')).toBe(false);
    h.ack(m.stream, m.seq);
    expect(await c.next('ack')).toEqual({ type: 'ack', stream: 'u:al', seq: 2 });
  });

  test('PINGs at the announced heartbeat; silence past heartbeat + grace is a dead connection', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd', heartbeatGrace: 300 });
    h.connect();
    const c0 = await s.conn(0);
    const t0 = Date.now();
    await c0.accept(200);
    const ping = await c0.next('ping');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150); // 90 % of 200 ms
    expect(typeof ping.time).toBe('number');
    c0.send({ type: 'pong', time: ping.time });
    await c0.next('ping'); // the next one: the fake server goes silent
    const d = await next<DisconnectedContext>(h, 'disconnected');
    expect(d).toEqual({ code: 3010, reason: 'heartbeat timeout', reconnect: true });
    await (await s.conn(1)).accept();
    await h.ready(5000);
  });

  test('disconnect() sends the pending ACK, then DISCONNECT normal, and closes', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd', ackDelay: 60_000 });
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    c.send(push('u:al', 'e', 1));
    await next(h, 'push');
    const closed = new Promise((r) => c.ws.once('close', r));
    h.disconnect();
    await closed;
    expect(c.frames.slice(1)).toEqual([{ type: 'ack', stream: 'u:al', seq: 1 }, { type: 'disconnect', code: 3000 }]);
  });

  test('a PING from the server is answered with a PONG echoing its time', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd' });
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    c.send({ type: 'ping', time: 123456 });
    expect(await c.next('pong')).toEqual({ type: 'pong', time: 123456 });
  });

  test('DISCONNECT with reconnect and alt: reconnects to the alternate address', async () => {
    const a = await fake();
    const b = await fake();
    const h = makeClient({ endpoints: a.url, token: 't', device: 'd' });
    h.connect();
    const c = await a.conn(0);
    await c.accept();
    const d = next<DisconnectedContext>(h, 'disconnected');
    c.send({ type: 'disconnect', code: 3001, reason: 'draining', reconnect: true, alt: b.url });
    c.ws.close(1001);
    expect(await d).toEqual({ code: 3001, reason: 'draining', reconnect: true });
    await (await b.conn(0)).accept();
    expect((await next<ConnectedContext>(h, 'connected')).endpoint).toBe(b.url);
  });

  test('a close status without DISCONNECT: 4003 is read as replaced (no reconnect)', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd' });
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    const d = next<DisconnectedContext>(h, 'disconnected');
    c.ws.close(4003, 'replaced');
    expect(await d).toEqual({ code: 3003, reason: 'replaced', reconnect: false });
    expect(h.state).toBe('disconnected');
  });

  test('a message that is not a frame: reported, and the client reconnects', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd' });
    const errors = new Recorder<ErrorContext>(h, 'error');
    h.connect();
    const c = await s.conn(0);
    await c.accept();
    c.ws.send('{"no":"type"}');
    await (await s.conn(1)).accept();
    await h.ready(5000);
    expect(errors.items[0]).toMatchObject({ type: 'protocol' });
  });

  test('no CONNECTED within connectTimeout: the next endpoint is tried', async () => {
    const mute = await fake();
    const b = await fake();
    const h = makeClient({ endpoints: [mute.url, b.url], token: 't', device: 'd', connectTimeout: 500 });
    const errors = new Recorder<ErrorContext>(h, 'error');
    h.connect();
    await (await mute.conn(0)).next('connect'); // and never answers
    await (await b.conn(0)).accept();
    expect((await next<ConnectedContext>(h, 'connected')).endpoint).toBe(b.url);
    expect(errors.items[0]).toEqual({ type: 'connect', code: 3010, message: 'connect timeout', endpoint: mute.url });
  });

  test('getToken is called when there is no token; an empty token stops the client', async () => {
    const s = await fake();
    const tokens = ['first', ''];
    const h = makeClient({ endpoints: s.url, getToken: async () => tokens.shift()!, device: 'd' });
    h.connect();
    const c = await s.conn(0);
    expect((await c.accept()).token).toBe('first');
    const d = next<DisconnectedContext>(h, 'disconnected', (x) => !x.reconnect);
    // expired: the client asks getToken again, which has nothing
    c.send({ type: 'error', code: 2005, reason: 'token expired' }, { type: 'disconnect', code: 3007, reason: 'auth failed' });
    c.ws.close(4007);
    expect(await d).toEqual({ code: 3007, reason: 'getToken returned no token', reconnect: false });
  });

  test('subscriptions are renewed after a reconnect, with their position', async () => {
    const s = await fake();
    const h = makeClient({ endpoints: s.url, token: 't', device: 'd' });
    h.connect();
    const c0 = await s.conn(0);
    await c0.accept();
    const sub = h.subscribe('scores');
    const f = await c0.next('subscribe');
    c0.send({ type: 'reply', id: f.id, stream: 't:scores', epoch: 'e9', seq: 41 }, push('t:scores', 'e9', 42));
    await next(sub, 'publication');
    c0.ws.terminate();
    await next(sub, 'subscribing');
    const c1 = await s.conn(1);
    await c1.accept();
    expect(await c1.next('subscribe')).toMatchObject({ topic: 'scores', epoch: 'e9', seq: 42 });
  });
});
