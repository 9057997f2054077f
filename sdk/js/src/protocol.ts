// The JSON encoding of the Herald wire protocol (docs/protocol.md §6).

/** The name of a frame type, the `type` key of a JSON frame. */
export type FrameType =
  | 'connect' | 'connected' | 'push' | 'ack' | 'subscribe' | 'unsubscribe'
  | 'ping' | 'pong' | 'disconnect' | 'error' | 'uplink' | 'reply';

/** A position in a stream: its epoch and the last sequence number processed. */
export interface StreamPosition {
  epoch: string;
  seq: number;
}

/** One resume position of CONNECT. */
export interface ResumePosition {
  stream: string;
  epoch?: string;
  seq?: number;
}

/** A frame as it travels in JSON. Absent keys mean zero values. */
export interface Frame {
  type: FrameType;
  id?: number;
  version?: number;
  token?: string;
  device?: string;
  client?: string;
  resume?: ResumePosition[];
  session?: string;
  node?: string;
  heartbeat?: number;
  stream?: string;
  topic?: string;
  epoch?: string;
  seq?: number;
  msg_id?: string;
  data?: unknown;
  b64?: string;
  time?: number;
  code?: number;
  reason?: string;
  reconnect?: boolean;
  alt?: string;
  recovered?: boolean;
}

/** Error codes of ERROR frames (docs/protocol.md §8). 2000 and above are fatal. */
export const ErrorCode = {
  BadRequest: 1000,
  Forbidden: 1001,
  TooManySubscriptions: 1002,
  NotSupported: 1003,
  BadName: 1004,
  Malformed: 2000,
  TooLarge: 2001,
  UnsupportedVersion: 2002,
  NotAuthenticated: 2003,
  BadToken: 2004,
  TokenExpired: 2005,
  Internal: 2500,
} as const;

/** Disconnect codes of DISCONNECT frames (docs/protocol.md §9). */
export const DisconnectCode = {
  Normal: 3000,
  Shutdown: 3001,
  SlowConsumer: 3002,
  Replaced: 3003,
  Kicked: 3004,
  IdleTimeout: 3005,
  AuthTimeout: 3006,
  AuthFailed: 3007,
  ProtocolError: 3008,
  DuplicateRefused: 3009,
  ConnectionLost: 3010,
  ServerError: 3011,
} as const;

/** Whether the protocol advises reconnecting after a disconnect code. */
export function reconnectAdvised(code: number): boolean {
  // 3001 shutdown, 3002 slow consumer, 3005 idle timeout, 3006 auth
  // timeout, 3010 connection lost, 3011 server error, 3012 policy
  // violation, 3013 app connection limit, 3014 unavailable.
  return code === 3001 || code === 3002 || code === 3005 || code === 3006 || (code >= 3010 && code <= 3014);
}

/**
 * The disconnect code a WebSocket close status stands for: 1000 → 3000,
 * 1001 → 3001, 4000 + n → 3000 + n; anything else is a lost connection.
 */
export function codeFromClose(status: number): number {
  if (status === 1000) return 3000;
  if (status === 1001) return 3001;
  if (status > 4000 && status < 5000) return status - 1000;
  return 3010;
}

/** Encodes frames as one text message: an object, or an array for several. */
export function encode(frames: Frame[]): string {
  return JSON.stringify(frames.length === 1 ? frames[0] : frames);
}

/**
 * Decodes one text message: a frame object or an array of them. It throws
 * on anything else (invalid JSON, a frame without a type, both data and b64).
 */
export function decode(text: string): Frame[] {
  const v: unknown = JSON.parse(text);
  const frames = (Array.isArray(v) ? v : [v]) as Frame[];
  for (const f of frames) {
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') throw new Error('frame without a type');
    if (f.data !== undefined && f.b64 !== undefined) throw new Error('frame with both data and b64');
  }
  return frames;
}

/** Decodes standard base64 (with padding) to bytes. */
export function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
