import { Emitter, waitFor } from './emitter';
import { codeFromClose, decode, encode, fromBase64, reconnectAdvised } from './protocol';
import type { Frame, ResumePosition, StreamPosition } from './protocol';
import { defaultStorage } from './storage';
import type { StorageLike } from './storage';
import { sseTransport, webSocketTransport } from './transport';
import type { Transport, TransportFactory } from './transport';
import { Subscription } from './subscription';
import type { SubscriptionOwner, UnrecoveredContext } from './subscription';
import type { ErrorContext, HeraldEvents, HeraldOptions, Message, State } from './types';

/** The SDK's version, sent in CONNECT as herald-js/<version>. */
export const VERSION = '0.1.0';

/** Options of Herald.subscribe. */
export interface SubscribeOptions {
  /**
   * Recover from this position (the last publication processed, as
   * Subscription.position tells it): the server replays the publications
   * after since.seq in epoch since.epoch, then the live ones. Without it
   * the subscription starts live. Either way, after a reconnect it
   * recovers from its last position by itself.
   */
  since?: StreamPosition;
}

interface Pos {
  epoch: string;
  seq: number;
  t: number; // update tick: the newest are kept first
}

interface Req {
  _sub: Subscription;
  _kind: 'sub' | 'unsub' | 'skip';
  _rec?: boolean;
}

/** One connection attempt, and the connection when it succeeds. */
class Conn {
  _t?: Transport;
  _tf = ''; // the transport's name
  _up = false; // the transport opened
  _ok = false; // CONNECTED arrived
  _closed = false;
  _since = 0;
  _iv = 0;
  _pending = new Map<number, Req>();
  _fatal?: Frame; // fatal ERROR without id: explains the DISCONNECT that follows
  _disc?: Frame;
  _timer?: ReturnType<typeof setTimeout>; // connect timeout
  _ping?: ReturnType<typeof setTimeout>;
  _pong?: ReturnType<typeof setTimeout>;
  constructor(readonly _url: string) {}
}

const msg = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * A Herald client: it connects to one of its endpoints, receives the user's
 * inbox and broadcasts, subscribes to topics, acknowledges, deduplicates,
 * recovers what was missed, keeps the connection alive with heartbeats and
 * reconnects with exponential backoff and full jitter.
 */
export class Herald extends Emitter<HeraldEvents> implements SubscriptionOwner {
  /** The connection state. */
  state: State = 'disconnected';
  /** The session id and node of the current connection ("" when not connected). */
  session = '';
  node = '';
  /** The device id sent in CONNECT. */
  readonly device: string;
  /** The transport of the current connection ("websocket", "sse"; "" when not connected). */
  transport = '';

  private _o: Required<Pick<HeraldOptions, 'minBackoff' | 'maxBackoff' | 'connectTimeout' | 'heartbeatGrace' | 'ackDelay' | 'autoAck' | 'dedupeSize' | 'client'>> & HeraldOptions;
  private _eps: string[];
  private _tfs: TransportFactory[];
  private _st: StorageLike;
  private _pre: string;
  private _token: string;
  private _conn: Conn | null = null;
  private _gen = 0;
  private _round: string[] = [];
  private _ri = 0;
  private _bo = 0;
  private _retry?: ReturnType<typeof setTimeout>;
  private _last: string;
  private _alt = '';
  private _subs = new Map<string, Subscription>();
  private _pos = new Map<string, Pos>();
  private _tick = 0;
  private _ids = new Map<string, 1>();
  private _acks = new Map<string, number>();
  private _flushT?: ReturnType<typeof setTimeout>;
  private _dirty = false;
  private _q: [Conn, Frame][] = [];
  private _pumping = false;
  private _id = 0;
  private _gapOk = '';
  private _expired = 0;
  private _tix = new Map<string, number>(); // endpoint -> index of its transport among those that support it
  private _tfail = new Map<string, number>(); // endpoint -> attempts in a row whose transport never opened

  constructor(options: HeraldOptions) {
    super();
    const o = (this._o = {
      minBackoff: 500,
      maxBackoff: 20000,
      connectTimeout: 10000,
      heartbeatGrace: 10000,
      ackDelay: 100,
      autoAck: true,
      dedupeSize: 1000,
      client: 'herald-js/' + VERSION,
      ...options,
    });
    this._eps = ([] as string[]).concat(o.endpoints).filter(Boolean);
    if (!this._eps.length) throw new Error('herald: no endpoints');
    this._tfs = (o.transports || ['websocket', 'sse']).map((t) =>
      t === 'websocket' ? webSocketTransport(o.websocket) : t === 'sse' ? sseTransport({ eventSource: o.eventSource, fetch: o.fetch }) : t,
    );
    this._st = o.storage || defaultStorage();
    this._pre = o.storagePrefix ?? 'herald:';
    this._token = o.token || '';
    let dev = o.device || this._sget('device');
    if (!dev) {
      dev = 'js-' + Date.now().toString(36) + Math.random().toString(36).slice(2);
      this._sput('device', dev);
    }
    this.device = dev;
    const last = this._sget('endpoint');
    this._last = last && this._eps.includes(last) ? last : '';
    try {
      const saved = JSON.parse(this._sget('pos') || '{}') as Record<string, [string, number, number]>;
      for (const s in saved) {
        const [epoch, seq, t] = saved[s];
        if (s.startsWith('u:')) this._pos.set(s, { epoch, seq, t });
        this._tick = Math.max(this._tick, t);
      }
    } catch {
      // unreadable: start without positions
    }
  }

  /** The endpoint of the current connection, or the last one that worked. */
  get endpoint(): string {
    return this._conn?._ok ? this._conn._url : this._last;
  }

  /** Starts connecting (and reconnecting, until disconnect() or a refusal). */
  connect(): void {
    if (this.state !== 'disconnected') return;
    this._bo = 0;
    this._round = [];
    this._state('connecting');
    this._emit('connecting', [{ code: 0, reason: 'connect called' }]);
    void this._open();
  }

  /**
   * Flushes pending ACKs and positions, sends DISCONNECT (normal), closes
   * the connection and stops reconnecting. connect() starts again.
   */
  disconnect(): void {
    this._gen++;
    clearTimeout(this._retry);
    const c = this._conn;
    this._flush();
    if (c) {
      if (c._ok) this._send(c, [{ type: 'disconnect', code: 3000 }]);
      this._abort(c, 3000, 'disconnect called', false);
    } else if (this.state !== 'disconnected') {
      this._state('disconnected');
      this._emit('disconnected', [{ code: 3000, reason: 'disconnect called', reconnect: false }]);
    }
  }

  /** Resolves when connected (at once if connected); rejects when the client stops, or after timeout ms. */
  ready(timeout?: number): Promise<void> {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'disconnected') return Promise.reject(new Error('herald: disconnected'));
    return waitFor(this, 'connected', 'disconnected', (c) => !c.reconnect, timeout);
  }

  /** Replaces the token used by the next connection attempts. */
  setToken(token: string): void {
    this._token = token;
  }

  /**
   * Subscribes to topic, now or as soon as connected, and returns the
   * Subscription (the existing one if the topic is subscribed already).
   */
  subscribe(topic: string, options: SubscribeOptions = {}): Subscription {
    if (!topic) throw new Error('herald: empty topic');
    let sub = this._subs.get(topic);
    if (sub) return sub;
    sub = new Subscription(this, topic);
    this._subs.set(topic, sub);
    const since = options.since;
    if (since) this._pos.set(sub.stream, { epoch: since.epoch, seq: since.seq, t: ++this._tick });
    sub._set('subscribing', { code: 0, reason: 'subscribe called' });
    const c = this._conn;
    if (c?._ok) this._send(c, [this._subFrame(c, sub)]);
    return sub;
  }

  /** Ends the subscription to topic, if any. */
  unsubscribe(topic: string): void {
    const sub = this._subs.get(topic);
    if (sub) this._unsubscribe(sub);
  }

  /** The subscription to topic, if any. */
  getSubscription(topic: string): Subscription | undefined {
    return this._subs.get(topic);
  }

  /** All current subscriptions. */
  subscriptions(): Subscription[] {
    return [...this._subs.values()];
  }

  /** The last position processed in stream ("u:<user>", "t:<topic>", "b"). */
  position(stream: string): StreamPosition | undefined {
    return this._position(stream);
  }

  /**
   * Acknowledges stream up to seq (cumulative), with the next flush. Only
   * needed with autoAck: false; only inbox streams ("u:<user>") are stored
   * by the server.
   */
  ack(stream: string, seq: number): void {
    if (stream && seq > 0 && seq > (this._acks.get(stream) || 0)) {
      this._acks.set(stream, seq);
      this._schedule();
    }
  }

  /** @internal */
  _position(stream: string): StreamPosition | undefined {
    const p = this._pos.get(stream);
    return p && { epoch: p.epoch, seq: p.seq };
  }

  /** @internal */
  _unsubscribe(sub: Subscription): void {
    if (this._subs.get(sub.topic) !== sub) return;
    this._subs.delete(sub.topic);
    this._pos.delete(sub.stream);
    const c = this._conn;
    if (c?._ok) {
      const id = this._nextId();
      c._pending.set(id, { _sub: sub, _kind: 'unsub' });
      this._send(c, [{ type: 'unsubscribe', id, topic: sub.topic }]);
    }
    sub._recovering = false;
    sub._set('unsubscribed', { code: 0, reason: 'unsubscribe called' });
  }

  // ---- connection ----

  private async _open(): Promise<void> {
    const gen = ++this._gen;
    if (this._ri >= this._round.length) this._round = [];
    if (!this._round.length) {
      const first = this._alt || this._last;
      this._alt = '';
      this._round = first ? [first, ...this._eps.filter((e) => e !== first)] : this._eps.slice();
      this._ri = 0;
    }
    let token = this._token;
    if (!token) {
      const get = this._o.getToken;
      if (!get) return this._stop(3007, 'no token');
      try {
        token = await get();
      } catch (e) {
        if (gen !== this._gen) return;
        this._err({ type: 'token', message: 'getToken: ' + msg(e), error: e });
        return this._next(false, false);
      }
      if (gen !== this._gen) return;
      if (!token) return this._stop(3007, 'getToken returned no token');
      this._token = token;
    }
    const url = this._round[this._ri];
    const c = (this._conn = new Conn(url));
    const tfs = this._tfs.filter((t) => t.supports(url));
    const tf = tfs[(this._tix.get(url) || 0) % tfs.length];
    try {
      if (!tf) throw new Error('no transport for ' + url);
      c._tf = tf.name;
      c._t = tf.open(url, {
        onOpen: () => {
          c._up = true;
          this._send(c, [this._connectFrame(token)]);
        },
        onMessage: (text) => this._data(c, text),
        onClose: (status, reason) => this._closed(c, status, reason),
      });
    } catch (e) {
      return this._end(c, 3010, msg(e), true);
    }
    c._timer = setTimeout(() => this._abort(c, 3010, 'connect timeout', true), this._o.connectTimeout);
  }

  private _connectFrame(token: string): Frame {
    const resume: ResumePosition[] = [];
    if (!this._pos.has('b')) resume.push({ stream: 'b' }); // ask for a broadcast position
    const ps = [...this._pos].filter(([s]) => !s.startsWith('t:')).sort((a, b) => b[1].t - a[1].t);
    for (const [stream, p] of ps.slice(0, 255)) resume.push({ stream, epoch: p.epoch || undefined, seq: p.seq || undefined });
    return { type: 'connect', version: 1, token, device: this.device, client: this._o.client, resume };
  }

  private _data(c: Conn, text: string): void {
    if (c._closed) return;
    clearTimeout(c._pong);
    c._pong = undefined;
    let frames: Frame[];
    try {
      frames = decode(text);
    } catch (e) {
      this._err({ type: 'protocol', message: 'bad message from server: ' + msg(e), error: e });
      return this._abort(c, 3010, 'bad message from server', true);
    }
    for (const f of frames) {
      switch (f.type) {
        case 'ping':
          this._send(c, [{ type: 'pong', time: f.time }]);
          break;
        case 'pong':
          break;
        case 'connected':
          this._connected(c, f);
          break;
        case 'disconnect':
          c._disc = f;
          break;
        case 'error':
          if (!f.id) {
            if ((f.code || 0) >= 2000) c._fatal = f;
            this._err({ type: 'server', code: f.code, message: f.reason || 'error ' + f.code });
            break;
          }
        // fall through: the answer to a request, in order with pushes
        default:
          this._q.push([c, f]);
      }
    }
    this._pump();
    if (c._disc && !c._closed) {
      // the server closes next: no need to wait for it
      c._t?.close();
      this._closed(c, 1000, '');
    }
  }

  private _connected(c: Conn, f: Frame): void {
    if (c._ok) return;
    clearTimeout(c._timer);
    c._ok = true;
    c._since = Date.now();
    this._expired = 0;
    this.session = f.session || '';
    this.node = f.node || '';
    this.transport = c._tf;
    this._tfail.delete(c._url);
    this._last = c._url;
    this._sput('endpoint', c._url);
    this._round = [];
    const iv = Math.min(f.heartbeat || Infinity, this._o.pingInterval || Infinity);
    if (iv < Infinity && iv > 0) {
      c._iv = iv * 0.9;
      this._ping(c);
    }
    this._state('connected');
    const frames: Frame[] = [];
    for (const sub of this._subs.values()) frames.push(this._subFrame(c, sub));
    this._send(c, frames);
    this._flush(); // ACKs left from the previous connection
    this._emit('connected', [{ session: this.session, node: this.node, heartbeat: f.heartbeat || 0, time: f.time || 0, endpoint: c._url, transport: c._tf }]);
  }

  private _ping(c: Conn): void {
    c._ping = setTimeout(() => {
      if (c._closed) return;
      this._send(c, [{ type: 'ping', time: Date.now() }]);
      c._pong ||= setTimeout(() => this._abort(c, 3010, 'heartbeat timeout', true), this._o.heartbeatGrace);
      this._ping(c);
    }, c._iv);
  }

  /** The transport closed: the server's DISCONNECT (or the close status) says why. */
  private _closed(c: Conn, status: number, reason: string): void {
    const d = c._disc;
    const code = d?.code || codeFromClose(status);
    let reconnect = d ? !!d.reconnect : reconnectAdvised(code);
    let now = false;
    if (c._fatal?.code === 2005 && this._o.getToken) {
      // expired: get a new token and retry at once (with backoff if it happens again)
      this._token = '';
      reconnect = true;
      now = this._expired++ === 0;
    }
    if (d?.alt) this._alt = resolveAlt(c._url, d.alt);
    this._end(c, code, d?.reason || reason || (code === 3010 ? 'connection lost' : 'closed'), reconnect, now);
  }

  /** Closes c from this side. */
  private _abort(c: Conn, code: number, reason: string, reconnect: boolean, now = false): void {
    if (c._closed) return;
    c._t?.close();
    this._end(c, code, reason, reconnect, now);
  }

  private _end(c: Conn, code: number, reason: string, reconnect: boolean, now = false): void {
    if (c._closed) return;
    c._closed = true;
    clearTimeout(c._timer);
    clearTimeout(c._ping);
    clearTimeout(c._pong);
    if (this._conn !== c) return;
    this._conn = null;
    const was = c._ok;
    if (was) {
      this.session = this.node = this.transport = '';
      for (const sub of this._subs.values()) {
        sub._recovering = false;
        sub._set('subscribing', { code, reason });
      }
      this._flush();
    }
    if (!reconnect) return this._stop(code, reason);
    if (was) this._emit('disconnected', [{ code, reason, reconnect: true }]);
    else this._err({ type: 'connect', code, message: reason, endpoint: c._url });
    this._state('connecting');
    this._emit('connecting', [{ code, reason }]);
    if (was && Date.now() - c._since >= this._o.maxBackoff) this._bo = 0; // it was healthy
    const fell = !was && this._fallback(c);
    this._next(!was && !now && !fell, now || fell);
  }

  /**
   * After fallbackAfter attempts in a row on an endpoint whose transport
   * never opened (refused, blocked, closed before open), the endpoint's
   * next transport is tried, at once. Reports whether it switched.
   */
  private _fallback(c: Conn): boolean {
    const url = c._url;
    const n = this._tfs.filter((t) => t.supports(url)).length;
    if (c._up || n < 2) return false;
    const f = (this._tfail.get(url) || 0) + 1;
    this._tfail.set(url, f);
    if (f < (this._o.fallbackAfter || 2)) return false;
    this._tfail.delete(url);
    this._tix.set(url, (this._tix.get(url) || 0) + 1);
    return true;
  }

  /** Schedules the next attempt: the next endpoint of the round at once, or a new round after a backoff. */
  private _next(advance: boolean, now: boolean): void {
    let delay = 0;
    if (!advance || ++this._ri >= this._round.length) {
      if (!now) {
        this._round = [];
        const cap = Math.min(this._o.maxBackoff, this._o.minBackoff * 2 ** Math.min(this._bo++, 30));
        delay = Math.random() * cap;
      }
    }
    if (!delay) return void this._open();
    const gen = this._gen;
    this._retry = setTimeout(() => gen === this._gen && this._open(), delay);
  }

  private _stop(code: number, reason: string): void {
    this._conn = null;
    this._state('disconnected');
    this._emit('disconnected', [{ code, reason, reconnect: false }]);
  }

  private _state(s: State): void {
    this.state = s;
  }

  private _send(c: Conn, frames: Frame[]): void {
    if (!frames.length || c._closed || !c._t) return;
    try {
      c._t.send(encode(frames));
    } catch (e) {
      this._abort(c, 3010, 'send failed: ' + msg(e), true);
    }
  }

  private _err(ctx: ErrorContext): void {
    this._emit('error', [ctx]);
  }

  private _nextId(): number {
    this._id = (this._id % 0xffffffff) + 1;
    return this._id;
  }

  // ---- frames in order: pushes, replies, request errors ----

  private _pump(): void {
    if (this._pumping) return;
    this._pumping = true;
    while (this._q.length) {
      const [c, f] = this._q.shift()!;
      let r: Promise<unknown> | void = undefined;
      try {
        r = f.type === 'push' ? this._push(c, f) : f.type === 'reply' ? this._reply(c, f) : f.type === 'error' ? this._reqError(c, f) : undefined;
      } catch (e) {
        this._err({ type: 'protocol', message: msg(e), error: e });
      }
      if (r) {
        r.then(undefined, (e) => this._err({ type: 'handler', message: msg(e), error: e })).then(() => {
          this._pumping = false;
          this._pump();
        });
        return;
      }
    }
    this._pumping = false;
  }

  private _push(c: Conn, f: Frame): Promise<unknown> | void {
    const stream = f.stream;
    if (!stream) return;
    const seq = f.seq || 0;
    const epoch = f.epoch || '';
    const topic = stream.startsWith('t:') ? stream.slice(2) : undefined;
    const sub = topic !== undefined ? this._subs.get(topic) : undefined;
    if (topic !== undefined && !sub) return; // unsubscribed meanwhile
    const m: Message = { stream, epoch, seq, id: f.msg_id || '', time: f.time || 0 };
    if (f.data != null) m.data = f.data;
    else if (f.b64) m.bytes = fromBase64(f.b64);
    if (sub) m.subscription = sub;
    const p = this._pos.get(stream);
    if (seq && p && p.epoch === epoch) {
      if (seq <= p.seq) {
        if (stream.startsWith('u:') && this._o.autoAck) this.ack(stream, p.seq); // the server is behind: move it
        this._emit('duplicate', [m]);
        return;
      }
      if (seq > p.seq + 1) {
        const gap = { stream, epoch, after: p.seq, seq };
        if (sub) {
          if (sub._recovering) return; // the replay brings it
          this._emit('gap', [{ ...gap, action: 'resubscribe' }]);
          return this._regap(c, sub);
        }
        const key = stream + '|' + epoch + '|' + p.seq;
        if (this._gapOk !== key) {
          // the server resends the inbox from the stored position, and the
          // broadcast stream from the resume position, on the next connection
          this._gapOk = key;
          this._emit('gap', [{ ...gap, action: 'reconnect' }]);
          this._q = this._q.filter(([q]) => q !== c);
          this._flush();
          return this._abort(c, 3010, 'gap in ' + stream, true, true);
        }
        this._emit('gap', [{ ...gap, action: 'accept' }]);
      }
    } else if (seq && p && p.epoch && epoch && p.epoch !== epoch) {
      this._acks.delete(stream);
      this._emit('reset', [{ stream, previous: { epoch: p.epoch, seq: p.seq }, epoch }]);
    }
    if (m.id && this._ids.has(m.id)) {
      this._emit('duplicate', [m]);
      return this._done(m);
    }
    const fail = (e: unknown) => this._err({ type: 'handler', message: msg(e), error: e });
    let ps: Promise<unknown>[] | undefined;
    if (sub) ps = [...(sub._fire('publication', [m], fail) || []), ...(this._emit('publication', [m], fail) || [])];
    else ps = this._emit(stream === 'b' ? 'broadcast' : 'push', [m], fail);
    if (ps && ps.length) return Promise.all(ps.map((x) => x.then(undefined, fail))).then(() => this._done(m));
    this._done(m);
  }

  /** m was processed: remember it, move the stream's position, acknowledge. */
  private _done(m: Message): void {
    if (m.id) {
      this._ids.delete(m.id);
      this._ids.set(m.id, 1);
      if (this._ids.size > this._o.dedupeSize) this._ids.delete(this._ids.keys().next().value!);
    }
    if (!m.seq || (m.subscription && this._subs.get(m.subscription.topic) !== m.subscription)) return;
    this._pos.set(m.stream, { epoch: m.epoch, seq: m.seq, t: ++this._tick });
    if (m.stream.startsWith('u:')) {
      this._dirty = true; // stored with the next flush
      if (this._o.autoAck) this.ack(m.stream, m.seq);
      else this._schedule();
    }
  }

  private _reply(c: Conn, f: Frame): void {
    const req = f.id ? c._pending.get(f.id) : undefined;
    if (f.id) {
      c._pending.delete(f.id);
      if (!req) return;
      if (req._kind !== 'sub') {
        if (req._kind === 'unsub' && !this._subs.has(req._sub.topic)) this._pos.delete(req._sub.stream);
        return;
      }
      if (this._subs.get(req._sub.topic) !== req._sub) return;
    }
    const sub = req?._sub;
    const stream = f.stream;
    const unrecovered = !f.recovered && !!f.reason;
    if (stream && f.epoch) {
      const p = this._pos.get(stream);
      if (unrecovered || !p || p.epoch !== f.epoch || p.seq < (f.seq || 0)) {
        if (p && p.epoch !== f.epoch) this._acks.delete(stream);
        this._pos.set(stream, { epoch: f.epoch, seq: f.seq || 0, t: ++this._tick });
      }
    }
    if (unrecovered && stream) {
      const ctx: UnrecoveredContext = { stream, reason: f.reason!, position: this._position(stream) };
      sub?._fire('unrecovered', [ctx]);
      this._emit('unrecovered', [ctx]);
    }
    if (sub) {
      sub._recovering = false;
      sub._set('subscribed');
      sub._fire('subscribed', [{ position: sub.position, recovering: !!req!._rec, recovered: !!f.recovered }]);
    }
  }

  private _reqError(c: Conn, f: Frame): void {
    const req = c._pending.get(f.id!);
    c._pending.delete(f.id!);
    const ctx = { code: f.code || 0, reason: f.reason || 'error ' + f.code };
    this._err({ type: 'subscribe', code: ctx.code, message: ctx.reason });
    const sub = req?._sub;
    if (req?._kind === 'sub' && sub && this._subs.get(sub.topic) === sub) {
      this._subs.delete(sub.topic);
      sub._recovering = false;
      sub._fire('error', [ctx]);
      sub._set('unsubscribed', ctx);
    }
  }

  /** A SUBSCRIBE for sub, carrying its position when there is one, so that the server replays what was missed. */
  private _subFrame(c: Conn, sub: Subscription): Frame {
    const id = this._nextId();
    const p = this._pos.get(sub.stream);
    const f: Frame = { type: 'subscribe', id, topic: sub.topic };
    if (p?.epoch) {
      f.epoch = p.epoch;
      f.seq = p.seq;
    }
    sub._recovering = !!f.epoch;
    c._pending.set(id, { _sub: sub, _kind: 'sub', _rec: sub._recovering });
    return f;
  }

  /** A gap in a topic: subscribe again from the last position; the server replays the rest in order. */
  private _regap(c: Conn, sub: Subscription): void {
    const id = this._nextId();
    c._pending.set(id, { _sub: sub, _kind: 'skip' });
    const f = this._subFrame(c, sub);
    sub._set('subscribing', { code: 0, reason: 'gap in ' + sub.stream });
    this._send(c, [{ type: 'unsubscribe', id, topic: sub.topic }, f]);
  }

  // ---- ACKs and stored positions ----

  private _schedule(): void {
    this._flushT ||= setTimeout(() => this._flush(), this._o.ackDelay);
  }

  private _flush(): void {
    clearTimeout(this._flushT);
    this._flushT = undefined;
    const c = this._conn;
    if (c?._ok && this._acks.size) {
      const frames: Frame[] = [];
      for (const [stream, seq] of this._acks) frames.push({ type: 'ack', stream, seq });
      this._acks.clear();
      this._send(c, frames);
    }
    if (this._dirty) {
      this._dirty = false;
      const out: Record<string, [string, number, number]> = {};
      // only inboxes: topic and broadcast positions belong with the state
      // the application derives from them (see SubscribeOptions.since)
      const ps = [...this._pos].filter(([s]) => s.startsWith('u:')).sort((a, b) => b[1].t - a[1].t).slice(0, 256);
      for (const [s, p] of ps) out[s] = [p.epoch, p.seq, p.t];
      this._sput('pos', JSON.stringify(out));
    }
  }

  private _sget(k: string): string | null {
    try {
      return this._st.getItem(this._pre + k);
    } catch {
      return null;
    }
  }

  private _sput(k: string, v: string): void {
    try {
      this._st.setItem(this._pre + k, v);
    } catch {
      // full or unavailable: the client still works for this session
    }
  }
}

/** A DISCONNECT's alt: a full URL as it is; a bare host:port replaces the host of the current URL. */
function resolveAlt(cur: string, alt: string): string {
  if (alt.includes('://')) return alt;
  try {
    const u = new URL(cur);
    u.host = alt;
    return u.toString();
  } catch {
    return alt;
  }
}
