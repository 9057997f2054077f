import type { StreamPosition } from './protocol';
import type { StorageLike } from './storage';
import type { EventSourceConstructor, FetchLike, TransportFactory, WebSocketConstructor } from './transport';
import type { Subscription, UnrecoveredContext } from './subscription';

/** One message pushed by the server. */
export interface Message {
  /** "u:<user>" (the inbox), "t:<topic>" or "b" (broadcast). */
  stream: string;
  /** The identity of the stream's stored history; "" when the server keeps none. */
  epoch: string;
  /** Sequence number in the stream, from 1; 0 when the server keeps no history. */
  seq: number;
  /** Message id, unique per app. */
  id: string;
  /** The payload, when it is JSON (the parsed value). */
  data?: unknown;
  /** The payload, when it is not JSON (binary, plain text): its bytes. */
  bytes?: Uint8Array;
  /** When the server accepted the message, Unix milliseconds (0 if unknown). */
  time: number;
  /** The subscription, for a topic message. */
  subscription?: Subscription;
}

/** Connection states. */
export type State = 'disconnected' | 'connecting' | 'connected';

/** A connection attempt starts (first connect, or reconnect after code/reason). */
export interface ConnectingContext {
  code: number;
  reason: string;
}

/** The server accepted the connection (CONNECTED). */
export interface ConnectedContext {
  session: string;
  node: string;
  /** The heartbeat interval the server announced, milliseconds. */
  heartbeat: number;
  /** The server's clock, Unix milliseconds. */
  time: number;
  endpoint: string;
  /** The transport connected: "websocket" or "sse" (or a custom transport's name). */
  transport: string;
}

/**
 * A connection ended. code and reason come from the server's DISCONNECT
 * frame, else from the WebSocket close status, else 3010 "connection lost"
 * (or the local cause: "heartbeat timeout", "disconnect called", ...).
 * reconnect: whether the client reconnects by itself.
 */
export interface DisconnectedContext {
  code: number;
  reason: string;
  reconnect: boolean;
}

/** Something went wrong; the client carries on unless a disconnected event says otherwise. */
export interface ErrorContext {
  /**
   * connect: an attempt failed (endpoint down, refused, timed out);
   * server: an ERROR frame without a request (code 2xxx: fatal);
   * subscribe: a subscription was refused; token: getToken failed;
   * handler: a listener threw or its promise rejected;
   * protocol: the server sent something that could not be decoded.
   */
  type: 'connect' | 'server' | 'subscribe' | 'token' | 'handler' | 'protocol';
  code?: number;
  message: string;
  endpoint?: string;
  error?: unknown;
}

/** A stream's epoch changed: its history was reset and seq started again. */
export interface ResetContext {
  stream: string;
  previous: StreamPosition;
  epoch: string;
}

/**
 * A PUSH whose seq jumped past the next one (after, the last processed, to seq).
 * action: resubscribe (a topic: recovered from history), reconnect (the inbox or
 * broadcast stream: the server resends from its stored position) or accept (the
 * same jump came back after a reconnect: those messages are gone, for example
 * expired).
 */
export interface GapContext {
  stream: string;
  epoch: string;
  after: number;
  seq: number;
  action: 'resubscribe' | 'reconnect' | 'accept';
}

/** Events of a Herald client. */
export type HeraldEvents = {
  connecting: (ctx: ConnectingContext) => void;
  connected: (ctx: ConnectedContext) => void;
  disconnected: (ctx: DisconnectedContext) => void;
  error: (ctx: ErrorContext) => void;
  /** A message of the user's inbox, in order, once. Acknowledged when the listeners return (or their promises settle). */
  push: (msg: Message) => void | Promise<unknown>;
  /** A broadcast to every connection of the app, in order, once. */
  broadcast: (msg: Message) => void | Promise<unknown>;
  /** A publication of any subscribed topic (after the subscription's own listeners). */
  publication: (msg: Message) => void | Promise<unknown>;
  /** Missed messages of a topic or of the broadcast stream could not be recovered: re-fetch that state. */
  unrecovered: (ctx: UnrecoveredContext) => void;
  reset: (ctx: ResetContext) => void;
  gap: (ctx: GapContext) => void;
  /** A message dropped as a repeat (same stream and epoch, seq not above the last; or a known id). */
  duplicate: (msg: Message) => void;
};

/** Options of the Herald client. Durations are in milliseconds. */
export interface HeraldOptions {
  /** WebSocket URLs (ws:// or wss://); each (re)connect starts with the last one that worked. */
  endpoints: string | string[];
  /** The client token (a JWT minted by your backend). */
  token?: string;
  /** Returns a fresh token: called when there is none and when the server refuses one as expired. */
  getToken?: () => Promise<string>;
  /** A stable id of this device or installation; default: generated once and kept in storage. */
  device?: string;
  /** Where the device id, the inbox positions and the last endpoint are kept; default localStorage when usable, else memory. */
  storage?: StorageLike;
  /** Prefix of the storage keys; default "herald:". */
  storagePrefix?: string;
  /** A WebSocket constructor, for Node 20 (the ws package); default the global WebSocket. */
  websocket?: WebSocketConstructor;
  /**
   * Transports for each endpoint, in order of preference: "websocket",
   * "sse" or a TransportFactory; default ["websocket", "sse"]. Those that do
   * not support an endpoint (SSE without an EventSource) are skipped. After
   * fallbackAfter attempts in a row on an endpoint whose transport never
   * opened, the client tries the next one there.
   */
  transports?: ('websocket' | 'sse' | TransportFactory)[];
  /** Attempts in a row whose transport never opened before the next transport is tried; default 2. */
  fallbackAfter?: number;
  /** An EventSource constructor for the SSE transport; default the global EventSource (browsers). */
  eventSource?: EventSourceConstructor;
  /** A fetch function for the SSE transport's POSTs; default the global fetch. */
  fetch?: FetchLike;
  /** Backoff between reconnect rounds: full jitter, random in [0, min(maxBackoff, minBackoff·2ⁿ)]. Defaults 500 and 20000. */
  minBackoff?: number;
  maxBackoff?: number;
  /** Time allowed from opening the transport to CONNECTED; default 10000. */
  connectTimeout?: number;
  /** Caps the heartbeat interval the server announces (PINGs go at 90 % of it). */
  pingInterval?: number;
  /** How long after a PING the connection may stay silent before it counts as dead; default 10000. */
  heartbeatGrace?: number;
  /** Delay before the cumulative ACKs (and the stored positions) are flushed; 0: after each received message. Default 100. */
  ackDelay?: number;
  /** Acknowledge inbox messages once processed; default true. With false, call ack(). */
  autoAck?: boolean;
  /** How many message ids are remembered to drop repeats; default 1000. */
  dedupeSize?: number;
  /** The client name sent in CONNECT; default "herald-js/<version>". */
  client?: string;
}
