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
