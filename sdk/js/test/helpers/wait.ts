// Waiting for events and conditions, with timeouts: no sleeps.

/** Anything with on/off, like Herald and Subscription. */
interface Source {
  on(event: any, fn: any): unknown;
  off(event: any, fn: any): unknown;
}

/** Resolves with the first argument of the next event that matches pred. */
export function next<T = any>(src: Source, event: string, pred: (arg: T) => boolean = () => true, ms = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      src.off(event, fn);
      reject(new Error(`timeout: no ${event} event in ${ms} ms`));
    }, ms);
    const fn = (arg: T) => {
      if (!pred(arg)) return;
      clearTimeout(timer);
      src.off(event, fn);
      resolve(arg);
    };
    src.on(event, fn);
  });
}

/** Retries fn until it stops throwing (or returns true), for conditions only seen by polling (the HTTP API). */
export async function eventually<T>(fn: () => Promise<T> | T, ms = 5000, every = 20): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v !== false) return v;
      if (Date.now() > end) throw new Error('condition still false');
    } catch (e) {
      if (Date.now() > end) throw e;
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Records every event of a kind, and lets a test wait until n have arrived. */
export class Recorder<T = any> {
  items: T[] = [];
  private waiters: { n: number; resolve: () => void }[] = [];
  private readonly name: string;

  constructor(src?: Source, event?: string) {
    this.name = event ?? 'items';
    if (src && event) src.on(event, (x: T) => this.add(x));
  }

  add(x: T): void {
    this.items.push(x);
    this.waiters = this.waiters.filter((w) => (this.items.length >= w.n ? (w.resolve(), false) : true));
  }

  /** Resolves when at least n items were recorded. */
  until(n: number, ms = 5000): Promise<T[]> {
    if (this.items.length >= n) return Promise.resolve(this.items);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout: ${this.items.length} of ${n} ${this.name} events in ${ms} ms`)), ms);
      this.waiters.push({ n, resolve: () => (clearTimeout(timer), resolve(this.items)) });
    });
  }
}
