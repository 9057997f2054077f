export { Herald, VERSION } from './client';
export type { SubscribeOptions } from './client';
export { Subscription } from './subscription';
export type {
  SubscriptionState,
  SubscriptionEvents,
  SubscriptionStateContext,
  SubscribedContext,
  SubscriptionErrorContext,
  UnrecoveredContext,
} from './subscription';
export type {
  Message,
  State,
  HeraldEvents,
  HeraldOptions,
  ConnectingContext,
  ConnectedContext,
  DisconnectedContext,
  ErrorContext,
  ResetContext,
  GapContext,
} from './types';
export { sseTransport, webSocketTransport } from './transport';
export type {
  EventSourceConstructor,
  EventSourceLike,
  FetchLike,
  SSEOptions,
  Transport,
  TransportFactory,
  TransportHandlers,
  WebSocketConstructor,
  WebSocketLike,
} from './transport';
export { memoryStorage } from './storage';
export type { StorageLike } from './storage';
export { ErrorCode, DisconnectCode } from './protocol';
export type { Frame, FrameType, StreamPosition, ResumePosition } from './protocol';
