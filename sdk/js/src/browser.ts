// The browser bundle's entry: the global Herald is the client class, with
// the other exports as its properties (Herald.memoryStorage, ...).
import { Herald, VERSION } from './client';
import { Subscription } from './subscription';
import { sseTransport, webSocketTransport } from './transport';
import { memoryStorage } from './storage';
import { ErrorCode, DisconnectCode } from './protocol';

(globalThis as any).Herald = Object.assign(Herald, { Herald, VERSION, Subscription, webSocketTransport, sseTransport, memoryStorage, ErrorCode, DisconnectCode });
