// The SDK against a real herald server, built and started by the tests.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { memoryStorage } from '../src/index';
import type { ConnectedContext, DisconnectedContext, ErrorContext, Message, SubscribedContext, UnrecoveredContext } from '../src/index';
import { HeraldServer, heraldBin } from './helpers/herald';
import { Proxy, deadEndpoint } from './helpers/proxy';
import { Recorder, eventually, next } from './helpers/wait';
import { makeClient, unique } from './helpers/client';

const HISTORY = 10;

describe.skipIf(!heraldBin)('against a real herald server', () => {
  const srv = new HeraldServer();
  beforeAll(() => srv.start({ history_size: HISTORY }));
  afterAll(() => srv.stop());

  const seqs = (ms: Message[]) => ms.map((m) => m.seq);

  test('connects and reports the session', async () => {
    const user = unique('alice');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'laptop' });
    const connected = next<ConnectedContext>(h, 'connected');
    h.connect();
    const ctx = await connected;
    expect(ctx.session).not.toBe('');
    expect(ctx.heartbeat).toBe(180000);
    expect(ctx.endpoint).toBe(srv.ws);
    expect(h.state).toBe('connected');
    expect(h.session).toBe(ctx.session);
  });

  test('an inbox push arrives, and its ACK is stored once the handler returns', async () => {
    const user = unique('bob');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'phone' });
    const pushes = new Recorder<Message>(h, 'push');
    h.connect();
    await h.ready(5000);
    const r1 = await srv.push(user, { data: { text: 'hello' } });
    const r2 = await srv.push(user, { b64: 'AAECAwQ=' }); // not JSON: arrives as bytes
    const [m1, m2] = await pushes.until(2);
    expect(m1).toMatchObject({ stream: `u:${user}`, seq: r1.seq, id: r1.id, data: { text: 'hello' } });
    expect(m1.epoch).toMatch(/^[0-9a-f]{32}$/);
    expect(m1.time).toBeGreaterThan(0);
    expect(m2.seq).toBe(r2.seq);
    expect(Array.from(m2.bytes!)).toEqual([0, 1, 2, 3, 4]);
    expect(m2.data).toBeUndefined();
    // one cumulative ACK moves the device's position to the last message
    await eventually(async () => expect(await srv.unread(user, 'phone')).toMatchObject({ last: 2, acked: 2, unread: 0 }));
    expect(h.position(`u:${user}`)).toEqual({ epoch: m1.epoch, seq: 2 });
  });

  test('an async handler holds the ACK back until it settles', async () => {
    const user = unique('carol');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'tab', ackDelay: 0 });
    let release!: () => void;
    const handled = new Promise<void>((r) => (release = r));
    const started = new Recorder<Message>(h, 'push');
    h.on('push', () => handled);
    h.connect();
    await h.ready(5000);
    await srv.push(user, { data: 1 });
    await started.until(1);
    // the handler has the message and has not returned: no ACK may have been
    // sent (the fake-server tests check the frames themselves)
    await srv.push(user, { data: 2 }); // waits behind the first handler
    expect((await srv.unread(user, 'tab')).acked).toBe(0);
    release();
    await started.until(2);
    await eventually(async () => expect((await srv.unread(user, 'tab')).acked).toBe(2));
  });

  test('resume after a lost connection: what was pushed meanwhile arrives, nothing twice', async () => {
    const user = unique('dave');
    const proxy = await Proxy.to(srv.ws);
    // Nothing is acknowledged before the end (a reconnect flushes pending ACKs at once, which
    // would race with the server's catch-up), so the server resends what the client already
    // has: it must drop those
    const h = makeClient({ endpoints: proxy.url, token: srv.token(user), device: 'd1', autoAck: false });
    const pushes = new Recorder<Message>(h, 'push');
    const dups = new Recorder<Message>(h, 'duplicate');
    h.connect();
    await h.ready(5000);
    await srv.push(user, { data: 'a' });
    await srv.push(user, { data: 'b' });
    await pushes.until(2);
    const lost = next<DisconnectedContext>(h, 'disconnected');
    proxy.down();
    expect(await lost).toMatchObject({ code: 3010, reconnect: true });
    for (const d of ['c', 'd', 'e']) await srv.push(user, { data: d });
    const back = next(h, 'connected');
    proxy.up();
    await back;
    await pushes.until(5);
    await dups.until(2); // a and b came again (never acknowledged) and were dropped
    expect(pushes.items.map((m) => m.data)).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(seqs(dups.items)).toEqual([1, 2]);
    h.ack(`u:${user}`, 5);
    h.disconnect(); // flushes the ACK before DISCONNECT
    await eventually(async () => expect((await srv.unread(user, 'd1')).acked).toBe(5));
    await proxy.close();
  });

  test('resume after disconnect() and connect()', async () => {
    const user = unique('erin');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'e' });
    const pushes = new Recorder<Message>(h, 'push');
    h.connect();
    await h.ready(5000);
    await srv.push(user, { data: 1 });
    await pushes.until(1);
    h.disconnect();
    await srv.push(user, { data: 2 });
    await srv.push(user, { data: 3 });
    h.connect();
    await pushes.until(3);
    expect(pushes.items.map((m) => m.data)).toEqual([1, 2, 3]);
  });

  test('a reload with the same storage keeps the device and drops what was processed before', async () => {
    const user = unique('fred');
    const storage = memoryStorage();
    const proxy = await Proxy.to(srv.ws);
    // the device id comes from storage; ACKs wait 10 s, so none reaches the server
    const h = makeClient({ endpoints: proxy.url, token: srv.token(user), storage, ackDelay: 10_000 });
    const pushes = new Recorder<Message>(h, 'push');
    h.connect();
    await h.ready(5000);
    for (const d of [1, 2, 3]) await srv.push(user, { data: d });
    await pushes.until(3);
    proxy.down(); // lost before the ACK went out; the positions are stored
    await next(h, 'disconnected');
    h.disconnect();
    await srv.push(user, { data: 4 });
    expect(storage.getItem('herald:device')).toBe(h.device);

    const h2 = makeClient({ endpoints: srv.ws, token: srv.token(user), storage });
    expect(h2.device).toBe(h.device);
    expect(h2.position(`u:${user}`)?.seq).toBe(3);
    const again = new Recorder<Message>(h2, 'push');
    const dups = new Recorder<Message>(h2, 'duplicate');
    h2.connect();
    await again.until(1);
    expect(again.items.map((m) => m.data)).toEqual([4]);
    expect(seqs(dups.items)).toEqual([1, 2, 3]);
    await eventually(async () => expect((await srv.unread(user, h.device)).acked).toBe(4));
    await proxy.close();
  });

  test('broadcasts arrive, and those missed while disconnected are recovered', async () => {
    const user = unique('fay');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'b1' });
    const got = new Recorder<Message>(h, 'broadcast');
    h.connect();
    await h.ready(5000);
    await eventually(() => h.position('b') !== undefined); // the REPLY with id 0 tells the position
    await srv.broadcast({ data: { n: 1 } });
    await got.until(1);
    h.disconnect();
    await srv.broadcast({ data: { n: 2 } });
    await srv.broadcast({ data: { n: 3 } });
    h.connect();
    await got.until(3);
    const mine = got.items.map((m) => m.data);
    expect(mine).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(got.items.every((m) => m.stream === 'b')).toBe(true);
  });

  test('topic: publications in order, recovered after a reconnect, then live', async () => {
    const user = unique('gina');
    const topic = unique('news');
    const proxy = await Proxy.to(srv.ws);
    const h = makeClient({ endpoints: proxy.url, token: srv.token(user, { topics: [topic] }), device: 'g1' });
    h.connect();
    const sub = h.subscribe(topic);
    const pubs = new Recorder<Message>(sub, 'publication');
    const all = new Recorder<Message>(h, 'publication');
    const subscribed = new Recorder<SubscribedContext>(sub, 'subscribed');
    await sub.ready(5000);
    expect(subscribed.items[0]).toMatchObject({ recovering: false, recovered: false, position: { seq: 0 } });
    await srv.publish(topic, { data: 1 });
    await srv.publish(topic, { data: 2 });
    await pubs.until(2);
    proxy.down();
    await next(sub, 'subscribing');
    for (const d of [3, 4, 5]) await srv.publish(topic, { data: d });
    proxy.up();
    const again = await subscribed.until(2);
    expect(again[1]).toMatchObject({ recovering: true, recovered: true, position: { seq: 5 } });
    expect(pubs.items.map((m) => m.data)).toEqual([1, 2, 3, 4, 5]); // replayed before the REPLY
    await srv.publish(topic, { data: 6 });
    await pubs.until(6);
    expect(pubs.items.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(all.items.length).toBe(6);
    expect(pubs.items[0].subscription).toBe(sub);
    await proxy.close();
  });

  test('topic: subscribe with since replays from that position', async () => {
    const user = unique('hank');
    const topic = unique('prices');
    for (const d of [1, 2, 3, 4]) await srv.publish(topic, { data: d });
    // learn the epoch from a plain subscription
    const probe = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'p' });
    probe.connect();
    const s0 = probe.subscribe(topic);
    await s0.ready(5000);
    const epoch = s0.position!.epoch;
    expect(s0.position!.seq).toBe(4);

    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'h' });
    h.connect();
    const sub = h.subscribe(topic, { since: { epoch, seq: 1 } });
    const pubs = new Recorder<Message>(sub, 'publication');
    const ctx = await next<SubscribedContext>(sub, 'subscribed');
    expect(ctx).toMatchObject({ recovering: true, recovered: true, position: { epoch, seq: 4 } });
    expect(pubs.items.map((m) => m.data)).toEqual([2, 3, 4]);
    await srv.publish(topic, { data: 5 });
    await pubs.until(4);
    expect(pubs.items.map((m) => m.seq)).toEqual([2, 3, 4, 5]);
    // unsubscribe forgets the position; a publication after it is not delivered
    sub.unsubscribe();
    expect(sub.state).toBe('unsubscribed');
    expect(h.position(sub.stream)).toBeUndefined();
  });

  test('topic: a position of another epoch cannot be recovered, and it is reported', async () => {
    const user = unique('ivy');
    const topic = unique('alerts');
    await srv.publish(topic, { data: 'old' });
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'i' });
    const lost = new Recorder<UnrecoveredContext>(h, 'unrecovered');
    h.connect();
    const sub = h.subscribe(topic, { since: { epoch: 'f'.repeat(32), seq: 7 } });
    const subLost = next<UnrecoveredContext>(sub, 'unrecovered');
    const pubs = new Recorder<Message>(sub, 'publication');
    const ctx = await next<SubscribedContext>(sub, 'subscribed');
    expect(ctx).toMatchObject({ recovering: true, recovered: false });
    const u = await subLost;
    expect(u.stream).toBe(`t:${topic}`);
    expect(u.reason).not.toBe('');
    expect(u.position!.seq).toBe(1); // continues from the server's position
    expect(u.position!.epoch).not.toBe('f'.repeat(32));
    expect(lost.items).toHaveLength(1);
    await srv.publish(topic, { data: 'new' });
    await pubs.until(1);
    expect(pubs.items.map((m) => m.data)).toEqual(['new']);
  });

  test('topic: a position trimmed from history cannot be recovered', async () => {
    const user = unique('jack');
    const topic = unique('ticker');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'j' });
    h.connect();
    const sub = h.subscribe(topic);
    await sub.ready(5000);
    const epoch = sub.position!.epoch;
    h.disconnect();
    for (let i = 1; i <= HISTORY + 5; i++) await srv.publish(topic, { data: i });
    const lost = next<UnrecoveredContext>(sub, 'unrecovered');
    const subscribed = next<SubscribedContext>(sub, 'subscribed');
    h.connect(); // resubscribes from seq 0: 1..5 are gone
    const u = await lost;
    expect(u.reason).toMatch(/.+/);
    expect(u.position).toEqual({ epoch, seq: HISTORY + 5 });
    expect(await subscribed).toMatchObject({ recovering: true, recovered: false });
  });

  test('a token refused as expired at reconnect is replaced through getToken', async () => {
    const user = unique('kate');
    const proxy = await Proxy.to(srv.ws);
    const exp = Math.floor(Date.now() / 1000) + 2; // valid for 1-2 s
    let calls = 0;
    const h = makeClient({
      endpoints: proxy.url,
      token: srv.token(user, { exp }),
      getToken: async () => (calls++, srv.token(user)),
      device: 'k',
    });
    const errors = new Recorder<ErrorContext>(h, 'error');
    const connected = new Recorder<ConnectedContext>(h, 'connected');
    h.connect();
    await connected.until(1);
    expect(calls).toBe(0); // a token was given: not called for the first connection
    // wait for the token's expiry on the clock, then lose the connection
    await new Promise((r) => setTimeout(r, exp * 1000 - Date.now() + 50));
    proxy.cut();
    await connected.until(2);
    expect(calls).toBe(1);
    expect(errors.items).toContainEqual(expect.objectContaining({ type: 'server', code: 2005 }));
    expect(h.state).toBe('connected');
    await proxy.close();
  });

  test('without getToken, a bad token stops the client', async () => {
    const h = makeClient({ endpoints: srv.ws, token: 'not-a-jwt', device: 'x' });
    const errors = new Recorder<ErrorContext>(h, 'error');
    const d = next<DisconnectedContext>(h, 'disconnected');
    h.connect();
    expect(await d).toMatchObject({ code: 3007, reconnect: false });
    expect(errors.items).toContainEqual(expect.objectContaining({ type: 'server', code: 2004 }));
    expect(h.state).toBe('disconnected');
    await expect(h.ready()).rejects.toThrow();
  });

  test('the second endpoint is used when the first is down, and tried first next time', async () => {
    const user = unique('leo');
    const dead = await deadEndpoint();
    const storage = memoryStorage();
    const opts = { endpoints: [dead.url, srv.ws], token: srv.token(user), device: 'l', storage };
    const h = makeClient(opts);
    const errors = new Recorder<ErrorContext>(h, 'error');
    h.connect();
    const ctx = await next<ConnectedContext>(h, 'connected');
    expect(ctx.endpoint).toBe(srv.ws);
    expect(dead.attempts()).toBe(1);
    expect(errors.items[0]).toMatchObject({ type: 'connect', endpoint: dead.url });
    h.disconnect();
    // the last endpoint that worked is kept in storage and tried first
    const h2 = makeClient(opts);
    h2.connect();
    expect((await next<ConnectedContext>(h2, 'connected')).endpoint).toBe(srv.ws);
    expect(dead.attempts()).toBe(1);
    await dead.close();
  });

  test('kicked: disconnected with the code and no reconnect', async () => {
    const user = unique('mia');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'm' });
    const states: string[] = [];
    h.on('connecting', () => states.push('connecting'));
    h.on('disconnected', () => states.push('disconnected'));
    h.connect();
    await h.ready(5000);
    const d = next<DisconnectedContext>(h, 'disconnected');
    // The server indexes a device for kicks once its inbox catch-up is over,
    // just after CONNECTED; a live push arriving says that moment has passed.
    const synced = next(h, 'push');
    await srv.push(user, { data: 'sync' });
    await synced;
    expect(await srv.kick(user, { reason: 'signed out' })).toEqual({ kicked: 1 });
    expect(await d).toEqual({ code: 3004, reason: 'signed out', reconnect: false });
    expect(h.state).toBe('disconnected');
    expect(states).toEqual(['connecting', 'disconnected']);
  });

  test('replaced by a second login of the same device: no reconnect', async () => {
    const user = unique('ned');
    const a = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'same' });
    a.connect();
    await a.ready(5000);
    const d = next<DisconnectedContext>(a, 'disconnected');
    const b = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'same' });
    b.connect();
    expect(await d).toMatchObject({ code: 3003, reconnect: false });
    await b.ready(5000);
    expect(a.state).toBe('disconnected');
  });

  test('disconnect() says goodbye with DISCONNECT normal', async () => {
    const user = unique('olga');
    // the clients of the tests before have gone, and been counted
    const stats = await eventually(async () => {
      const st = await srv.stats();
      expect(st.connections.open).toBe(0);
      return st;
    });
    const before = stats.connections.disconnects.normal;
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user), device: 'o' });
    h.connect();
    await h.ready(5000);
    const d = next<DisconnectedContext>(h, 'disconnected');
    h.disconnect();
    expect(await d).toEqual({ code: 3000, reason: 'disconnect called', reconnect: false });
    await eventually(async () => expect((await srv.stats()).connections.disconnects.normal).toBe(before + 1));
  });

  test('a forbidden topic is refused and reported on the subscription', async () => {
    const user = unique('pia');
    const h = makeClient({ endpoints: srv.ws, token: srv.token(user, { topics: ['allowed'] }), device: 'p' });
    h.connect();
    const sub = h.subscribe('secret');
    const err = next(sub, 'error');
    const ended = next(sub, 'unsubscribed');
    expect(await err).toMatchObject({ code: 1001 });
    await ended;
    expect(sub.state).toBe('unsubscribed');
    expect(h.getSubscription('secret')).toBeUndefined();
    await expect(sub.ready()).rejects.toThrow();
  });
});
