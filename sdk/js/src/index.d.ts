// Type declarations of @maula/chat, the JavaScript client of maula-chat's protocol v1.

/** The WebSocket subprotocol of protocol v1. */
export declare const SUBPROTOCOL: 'maula.v1';

/** A WebSocket constructor: the browser's, Node 22+'s global, or e.g. the `ws` package's. */
export interface WebSocketLike {
  readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ConnectOptions {
  /** Session JWT from /auth/login or /auth/register. */
  token?: string;
  /** Tool API key (mk_<tool>_...); chats with its tool only. */
  apiKey?: string;
  /** WebSocket implementation where there is no global one (Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Redials after a drop before giving up with ConnectionLostError (default 10; 0 disables). */
  maxReconnectAttempts?: number;
  /** First redial delay in ms (default 100), doubled per failure up to maxReconnectBackoffMs (5000), with jitter. */
  reconnectBackoffMs?: number;
  maxReconnectBackoffMs?: number;
  /** How long a cancelled reply waits for the server's chat.cancelled (default 10000 ms). */
  cancelTimeoutMs?: number;
}

export interface ChatRequest {
  tool: string;
  provider: 'claude' | 'gpt' | 'grok' | 'mistral' | 'gemini' | 'echo' | (string & {});
  message: string;
  model?: string;
  /** Continue this conversation; absent starts a new one (see Result.sessionId). */
  sessionId?: string;
  analysisId?: string;
  maxTokens?: number;
  temperature?: number;
  /** Stop the reply when the socket drops instead of keeping it for resume. */
  cancelOnDisconnect?: boolean;
  /** Request id; absent picks a unique one. */
  id?: string;
}

export interface Usage {
  input: number;
  output: number;
  cacheRead: number;
  cacheWrite: number;
  reasoning: number;
  estimated?: boolean;
}

export interface Result {
  id: string;
  sessionId?: string;
  messageId?: string;
  provider?: string;
  model?: string;
  /** stop, length, stop_sequence, content_filter, credits_exhausted, or cancelled. */
  finishReason: string;
  cancelled: boolean;
  usage?: Usage;
  costUsd?: number;
  /** Exact cost in micro-dollars. */
  costMicros?: number;
  creditsLeft?: number;
  /** The last delta's seq. */
  seq: number;
}

export interface Progress {
  usage: Usage;
  costUsd: number;
  creditsLeft: number;
}

export interface Page {
  before?: Date | string;
  limit?: number;
}

export interface ChatMessage {
  id: string;
  role: 'user' | 'assistant' | string;
  message: string;
  provider?: string;
  model?: string;
  requestId?: string;
  finishReason?: string;
  usage?: Usage;
  costMicros?: number;
  timestamp: string;
}

export interface History {
  type: 'history';
  id: string;
  tool: string;
  sessionId: string;
  messages: ChatMessage[];
  hasMore: boolean;
}

export interface SessionInfo {
  sessionId: string;
  lastMessageAt: string;
  messages: number;
  preview: string;
}

export interface Sessions {
  type: 'sessions';
  id: string;
  tool: string;
  sessions: SessionInfo[];
  hasMore: boolean;
}

/** One running reply: iterate its text pieces (each exactly once, in order); await `result`. */
export declare class Reply implements AsyncIterable<string> {
  readonly id: string;
  /** Known once chat.started arrived. */
  readonly sessionId: string | undefined;
  /** The latest running estimate (chat.usage). */
  readonly progress: Progress | undefined;
  /** How the reply ended; rejects with a typed error after chat.error. */
  readonly result: Promise<Result>;
  /** Asks the server to stop the reply (what the AbortSignal does). */
  cancel(): void;
  /** The whole text once the reply ended. */
  text(): Promise<string>;
  [Symbol.asyncIterator](): AsyncIterator<string>;
}

export declare class Client {
  /** Successful redials after dropped connections. */
  readonly reconnects: number;
  chat(req: ChatRequest, opts?: { signal?: AbortSignal }): Reply;
  history(tool: string, sessionId: string, page?: Page): Promise<History>;
  sessions(tool: string, page?: Page): Promise<Sessions>;
  /** Round trip in ms. */
  ping(): Promise<number>;
  close(): Promise<void>;
}

/** Connects and authenticates; rejects with UnauthorizedError for refused credentials. */
export declare function connect(url: string, options?: ConnectOptions): Promise<Client>;

/** http(s) → ws(s), appending /ai/chat when missing. */
export declare function chatURL(url: string): string;

export interface ErrorOptions {
  code?: string;
  retryable?: boolean;
  retryAfterMs?: number;
  cause?: unknown;
}

export declare class MaulaError extends Error {
  constructor(message: string, options?: ErrorOptions);
  /** The protocol's error code (docs/protocol.md). */
  readonly code: string;
  readonly retryable: boolean;
  readonly retryAfterMs: number;
}
export declare class InsufficientCreditsError extends MaulaError {}
export declare class RateLimitError extends MaulaError {}
export declare class ProviderError extends MaulaError {}
export declare class UnauthorizedError extends MaulaError {}
export declare class ForbiddenError extends MaulaError {}
export declare class ProtocolError extends MaulaError {}
export declare class ConnectionLostError extends MaulaError {}
export declare class ClosedError extends MaulaError {}

export declare function errorFromFrame(frame: { code: string; message?: string; retryable?: boolean; retryAfterMs?: number }): MaulaError;

/** Encoders of the client frames (low level). */
export declare const frames: {
  auth(token: string): object;
  chatSend(id: string, req: ChatRequest): object;
  cancel(id: string): object;
  resume(id: string, afterSeq: number): object;
  historyGet(id: string, tool: string, sessionId: string, page?: Page): object;
  sessionsList(id: string, tool: string, page?: Page): object;
  ping(id: string): object;
};
