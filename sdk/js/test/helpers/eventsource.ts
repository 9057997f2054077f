// A minimal EventSource for the tests (Node 20 has none), over fetch
// streaming: named and unnamed events, multi-line data, one error at the
// end of the stream (it never reconnects: the SDK closes it on error).
import type { EventSourceConstructor, EventSourceLike } from '../../src/index';

type Listener = (ev: { data: string }) => void;

export class TestEventSource implements EventSourceLike {
  /** Every instance made, for tests that look at them. */
  static made: TestEventSource[] = [];
  onmessage: Listener | null = null;
  onerror: ((ev: any) => void) | null = null;
  readyState = 0;
  private listeners = new Map<string, Listener[]>();
  private ctl = new AbortController();

  constructor(readonly url: string) {
    TestEventSource.made.push(this);
    void this.run();
  }

  addEventListener(type: string, fn: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) || []), fn]);
  }

  close(): void {
    this.readyState = 2;
    this.ctl.abort();
  }

  private dispatch(event: string, data: string): void {
    if (this.readyState === 2) return;
    if (event === 'message') this.onmessage?.({ data });
    for (const fn of this.listeners.get(event) || []) fn({ data });
  }

  private async run(): Promise<void> {
    try {
      const res = await fetch(this.url, { headers: { Accept: 'text/event-stream' }, signal: this.ctl.signal });
      if (res.status !== 200 || !res.body) throw new Error('status ' + res.status);
      this.readyState = 1;
      const dec = new TextDecoder();
      let buf = '';
      let event = '';
      let data: string[] = [];
      for await (const chunk of res.body as any as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + (buf.startsWith('\r\n', i) ? 2 : 1));
          if (line === '') {
            if (data.length) this.dispatch(event || 'message', data.join('\n'));
            event = '';
            data = [];
          } else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          else if (line.startsWith('event:')) event = line.slice(6).trim();
        }
      }
    } catch {
      // aborted or failed: report below
    }
    if (this.readyState !== 2) {
      this.readyState = 2;
      this.onerror?.({});
    }
  }
}

export const NodeEventSource = TestEventSource as unknown as EventSourceConstructor;
