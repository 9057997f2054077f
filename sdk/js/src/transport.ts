/** What a transport reports to the client. */
export interface TransportHandlers {
  /** The transport is open: the client sends CONNECT. */
  onOpen(): void;
  /** One text message from the server: a JSON frame or an array of frames. */
  onMessage(text: string): void;
  /**
   * The transport closed or could not open; status is the WebSocket close
   * status (1006 when the connection was lost), or its equivalent.
   */
  onClose(status: number, reason: string): void;
}

/** One open (or opening) connection of a transport. */
export interface Transport {
  /** Sends one text message. */
  send(text: string): void;
  /** Closes the connection; no handler is called after this. */
  close(): void;
}

/**
 * A way to reach a Herald server. The client picks, for each endpoint, the
 * first transport of its `transports` option that supports the URL.
 */
export interface TransportFactory {
  readonly name: string;
  supports(url: string): boolean;
  open(url: string, handlers: TransportHandlers): Transport;
}

/** The WebSocket constructor shape the client needs (browsers' and the `ws` package's). */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

/** The WebSocket object shape the client needs. */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/**
 * The WebSocket transport, for ws:// and wss:// endpoints, with JSON frames
 * in text messages. It uses ctor, or the global WebSocket (browsers, Node
 * 22+); in Node 20 pass the `ws` package's WebSocket.
 */
export function webSocketTransport(ctor?: WebSocketConstructor): TransportFactory {
  return {
    name: 'websocket',
    supports: (url) => /^wss?:\/\//i.test(url),
    open(url, h) {
      const WS = ctor || ((globalThis as any).WebSocket as WebSocketConstructor | undefined);
      if (!WS) throw new Error('no WebSocket: pass options.websocket');
      const ws = new WS(url);
      ws.binaryType = 'arraybuffer';
      let done = false;
      const decoder = new TextDecoder();
      ws.onopen = () => !done && h.onOpen();
      ws.onmessage = (ev) => {
        if (done) return;
        const d = ev.data;
        // ws delivers text as string; a binary message is not JSON anyway
        h.onMessage(typeof d === 'string' ? d : decoder.decode(d as ArrayBuffer));
      };
      ws.onerror = () => {}; // followed by close
      ws.onclose = (ev) => {
        if (done) return;
        done = true;
        h.onClose(ev.code, ev.reason);
      };
      return {
        send: (text) => ws.send(text),
        close() {
          done = true;
          ws.onopen = ws.onmessage = ws.onclose = null;
          try {
            ws.close(1000);
          } catch {
            // already closed
          }
        },
      };
    },
  };
}

/** The EventSource constructor shape the SSE transport needs (browsers' EventSource). */
export interface EventSourceConstructor {
  new (url: string): EventSourceLike;
}

/** The EventSource object shape the SSE transport needs. */
export interface EventSourceLike {
  onmessage: ((ev: { data: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  addEventListener(type: string, fn: (ev: { data: string }) => void): void;
  close(): void;
}

/** The fetch shape the SSE transport needs (the global fetch). */
export type FetchLike = (url: string, init: { method: string; body: string; headers: Record<string, string> }) => Promise<{ status: number }>;

/** What the SSE transport uses; default the globals. */
export interface SSEOptions {
  eventSource?: EventSourceConstructor;
  fetch?: FetchLike;
}

/**
 * The event stream URL of an endpoint: a ws:// or wss:// URL becomes http://
 * or https:// with its last path segment replaced by "sse" (the server's
 * SSE endpoint beside its WebSocket one: /ws -> /sse); an http(s):// URL is
 * taken as it is.
 */
export function sseURL(url: string): string {
  const m = /^ws(s?):\/\/([^/?#]*)([^?#]*)/i.exec(url);
  return m ? `http${m[1]}://${m[2]}${(m[3] || '/').replace(/[^/]*$/, 'sse')}` : url;
}

/**
 * The Server-Sent Events transport, for networks where WebSocket does not
 * get through: JSON frames come down an EventSource, and go up with fetch
 * POSTs to the session URL the stream's first event names, one at a time,
 * in order (frames queued meanwhile go together in one POST). It takes
 * ws(s):// endpoints (see sseURL) and http(s):// ones, and uses the given
 * EventSource and fetch or the globals; without an EventSource it supports
 * nothing, so the client skips it.
 */
export function sseTransport(opts: SSEOptions = {}): TransportFactory {
  const ES = () => opts.eventSource || ((globalThis as any).EventSource as EventSourceConstructor | undefined);
  const F = () => opts.fetch || ((globalThis as any).fetch as FetchLike | undefined);
  return {
    name: 'sse',
    supports: (url) => !!ES() && !!F() && /^(wss?|https?):\/\//i.test(url),
    open(url, h) {
      const stream = sseURL(url);
      const es = new (ES()!)(stream);
      const fetch = F()!;
      let done = false;
      let post = '';
      let busy = false;
      let q: string[] = [];
      const end = (status: number, reason: string) => {
        if (done) return;
        done = true;
        es.close();
        h.onClose(status, reason);
      };
      const pump = () => {
        if (busy || done || !post || !q.length) return;
        // up to 32 KiB per POST (the server takes a frame limit's worth)
        let n = 0;
        let size = 0;
        while (n < q.length && (n === 0 || size + q[n].length < 32768)) size += q[n++].length + 1;
        const parts = q.splice(0, n).map((t) => (t[0] === '[' ? t.slice(1, -1) : t)).filter(Boolean);
        busy = true;
        fetch(post, { method: 'POST', body: parts.length === 1 ? parts[0] : '[' + parts + ']', headers: { 'Content-Type': 'text/plain' } }).then(
          (r) => {
            busy = false;
            if (r.status >= 300) end(1006, 'POST answered ' + r.status);
            else pump();
          },
          (e) => end(1006, 'POST failed: ' + (e && e.message)),
        );
      };
      es.addEventListener('session', (ev) => {
        if (done || post) return;
        try {
          post = new URL(JSON.parse(ev.data).path, stream).href;
        } catch {
          return end(1006, 'bad session event');
        }
        h.onOpen();
        pump();
      });
      es.onmessage = (ev) => !done && h.onMessage(ev.data);
      // EventSource would reconnect by itself, to a new session: end here instead
      es.onerror = () => end(1006, post ? 'event stream lost' : 'event stream failed');
      return {
        send(text) {
          q.push(text);
          pump();
        },
        close() {
          done = true;
          q = [];
          es.close();
        },
      };
    },
  };
}
