/** Listener signatures by event name. */
export type EventMap = { [event: string]: (...args: any[]) => unknown };

/**
 * A small typed event emitter. A listener of a message event (`push`,
 * `broadcast`, `publication`) may return a Promise: the message counts as
 * processed (and is acknowledged) when it settles.
 */
export class Emitter<E extends EventMap> {
  private _ls: { [K in keyof E]?: E[K][] } = {};

  /** Adds a listener. */
  on<K extends keyof E>(event: K, fn: E[K]): this {
    (this._ls[event] ||= []).push(fn);
    return this;
  }

  /** Adds a listener that is removed after its first call. */
  once<K extends keyof E>(event: K, fn: E[K]): this {
    const w = ((...args: any[]) => {
      this.off(event, w);
      return fn(...args);
    }) as E[K];
    return this.on(event, w);
  }

  /** Removes a listener, or every listener of the event when fn is omitted. */
  off<K extends keyof E>(event: K, fn?: E[K]): this {
    const ls = this._ls[event];
    if (ls) this._ls[event] = fn ? ls.filter((l) => l !== fn) : [];
    return this;
  }

  /**
   * Calls the listeners of event in order. A listener that throws does not
   * stop the others; its error goes to fail. Returns the promises listeners
   * returned, if any.
   */
  protected _emit<K extends keyof E>(event: K, args: Parameters<E[K]>, fail?: (e: unknown) => void): Promise<unknown>[] | undefined {
    const ls = this._ls[event];
    let ps: Promise<unknown>[] | undefined;
    if (ls) {
      for (const fn of ls.slice()) {
        try {
          const r = fn(...args) as any;
          if (r && typeof r.then === 'function') (ps ||= []).push(r);
        } catch (e) {
          if (fail) fail(e);
        }
      }
    }
    return ps;
  }
}

/**
 * Resolves on the event ok; rejects on the event ko (when bad says so for
 * its argument), or after timeout ms when timeout is given.
 */
export function waitFor(em: Emitter<any>, ok: string, ko: string, bad: (ctx: any) => boolean, timeout?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let t: ReturnType<typeof setTimeout> | undefined;
    const end = (e?: Error) => {
      clearTimeout(t);
      em.off(ok, yes).off(ko, no);
      e ? reject(e) : resolve();
    };
    const yes = () => end();
    const no = (ctx: any) => bad(ctx) && end(new Error('herald: ' + ctx.reason));
    em.on(ok, yes).on(ko, no);
    if (timeout) t = setTimeout(() => end(new Error('herald: timeout waiting for ' + ok)), timeout);
  });
}
