import { Emitter, waitFor } from './emitter';
import type { Message } from './types';
import type { StreamPosition } from './protocol';

/** The state of a subscription. */
export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/** Why a subscription is (re)subscribing or ended: a code (0 when local) and text. */
export interface SubscriptionStateContext {
  code: number;
  reason: string;
}

/** The answer of the server to a SUBSCRIBE. */
export interface SubscribedContext {
  /** The topic stream's position: publications after it follow. */
  position?: StreamPosition;
  /** The SUBSCRIBE carried a position: the server was asked to replay what was missed. */
  recovering: boolean;
  /** The replay succeeded: every missed publication was delivered before this event. */
  recovered: boolean;
}

/** Missed publications of a topic that the server could not replay. */
export interface UnrecoveredContext {
  stream: string;
  /** The server's reason, e.g. "epoch changed" or "history trimmed". */
  reason: string;
  /** Where the stream continues from. */
  position?: StreamPosition;
}

/** A refused SUBSCRIBE: 1001 forbidden, 1002 too many subscriptions, 1004 bad name. */
export interface SubscriptionErrorContext {
  code: number;
  reason: string;
}

/** Events of a Subscription. */
export type SubscriptionEvents = {
  subscribing: (ctx: SubscriptionStateContext) => void;
  subscribed: (ctx: SubscribedContext) => void;
  unsubscribed: (ctx: SubscriptionStateContext) => void;
  /** A publication of the topic, in order, once. Return a Promise to hold the next one back until it settles. */
  publication: (msg: Message) => void | Promise<unknown>;
  unrecovered: (ctx: UnrecoveredContext) => void;
  error: (ctx: SubscriptionErrorContext) => void;
};

/** What a Subscription needs from its client. */
export interface SubscriptionOwner {
  _unsubscribe(sub: Subscription): void;
  _position(stream: string): StreamPosition | undefined;
}

/**
 * A subscription to a topic, made by Herald.subscribe. It is renewed after
 * every reconnect, recovering what was published meanwhile, until
 * unsubscribe() or a refusal by the server.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** The topic, without the "t:" of its stream name. */
  readonly topic: string;
  /** The stream name, "t:<topic>". */
  readonly stream: string;
  /** The current state. */
  state: SubscriptionState = 'unsubscribed';
  /** @internal a SUBSCRIBE with a position is in flight */
  _recovering = false;
  private _owner: SubscriptionOwner;

  /** @internal use Herald.subscribe */
  constructor(owner: SubscriptionOwner, topic: string) {
    super();
    this._owner = owner;
    this.topic = topic;
    this.stream = 't:' + topic;
  }

  /** The last position processed: the epoch and seq of the last publication delivered, or of the subscription's start. */
  get position(): StreamPosition | undefined {
    return this._owner._position(this.stream);
  }

  /** Ends the subscription and forgets its position. */
  unsubscribe(): void {
    this._owner._unsubscribe(this);
  }

  /**
   * Resolves when the subscription is subscribed (at once if it is), rejects
   * if it ends first or after timeout milliseconds (when given).
   */
  ready(timeout?: number): Promise<void> {
    if (this.state === 'subscribed') return Promise.resolve();
    if (this.state === 'unsubscribed') return Promise.reject(new Error('herald: unsubscribed'));
    return waitFor(this, 'subscribed', 'unsubscribed', () => true, timeout);
  }

  /** @internal */
  _set(state: SubscriptionState, ctx?: SubscriptionStateContext): void {
    if (state === this.state) return;
    this.state = state;
    if (state !== 'subscribed') this._emit(state, [ctx!]);
  }

  /** @internal */
  _fire<K extends keyof SubscriptionEvents>(event: K, args: Parameters<SubscriptionEvents[K]>, fail?: (e: unknown) => void) {
    return this._emit(event, args, fail);
  }
}
