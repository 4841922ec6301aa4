/**
 * herald.d.ts - TypeScript declarations of herald.js, the JavaScript client
 * of the Herald push server (docs/protocol.md). Kept by hand beside the
 * file it describes; tests/js checks them with `tsc --strict`.
 */

/** JSON as the protocol carries it. */
export type Json =
  | null
  | boolean
  | number
  | string
  | Json[]
  | { [key: string]: Json };

/** A stream position: publications after `offset` of `epoch`. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/** One publication of a channel. */
export interface Publication {
  offset: number;
  /** The JSON payload (absent when the publication was binary: see b64). */
  data?: Json;
  /** A binary payload in base64. */
  b64?: string;
  /** Who published it: {client, user, info}, when the server says. */
  info?: ClientInfo;
}

export interface ClientInfo {
  client?: string;
  user?: string;
  info?: Json;
}

/** A subscribe result; for onUnrecovered over SSE, epoch and offset are
 * the channel's present position. */
export interface SubscribeResult extends Partial<StreamPosition> {
  /** With `since`: false when the missed publications are gone. */
  recovered?: boolean;
  /** Replayed publications (recovery). */
  publications?: Publication[];
  /** "sse" when the subscription runs over Server-Sent Events. */
  transport?: "sse";
}

export interface SubscriptionHandlers {
  onPublication?(pub: Publication, sub: Subscription): void;
  onJoin?(info: ClientInfo, sub: Subscription): void;
  onLeave?(info: ClientInfo, sub: Subscription): void;
  /** Every (re)subscription's result. */
  onSubscribed?(result: SubscribeResult, sub: Subscription): void;
  /** The server ended the subscription (/api/unsubscribe, or its token
   * expired without sub_refresh); it is dropped from the client. */
  onUnsubscribed?(ev: { reason: string }, sub: Subscription): void;
  /** Publications were missed and cannot be replayed: reload state. */
  onUnrecovered?(result: SubscribeResult, sub: Subscription): void;
  onError?(error: HeraldError, sub: Subscription): void;
}

export interface SubscribeOptions {
  /** A subscription JWT for a private channel. */
  token?: string;
  /** Called before every (re)subscribe for a fresh subscription token, and
   * on the server's sub_refresh push for this channel. */
  getToken?(channel: string): string | Promise<string>;
}

export declare class Subscription {
  readonly channel: string;
  /** Null before the first subscribe result. */
  readonly epoch: string | null;
  readonly offset: number;
  readonly state: "subscribing" | "subscribed" | "unsubscribed";
  handlers: SubscriptionHandlers;
  unsubscribe(): void;
}

/** What `new WebSocket(url)` must give: the browser's API (or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export type EventSourceConstructor = new (url: string) => any;

export interface HeraldOptions {
  /** Connection JWT; not needed in anonymous mode. */
  token?: string;
  /** Called before every connection attempt for a fresh token, and on the
   * server's refresh push (the new token is sent without reconnecting). */
  getToken?(): string | Promise<string>;
  /** Sent with connect as "name". */
  name?: string;
  /** "auto" (default), "force", false, or the SSE endpoint's URL. In SSE
   * mode every subscription shares one EventSource (up to the server's
   * max_sse_channels, 32 by default), reopened when the set changes. */
  sse?: "auto" | "force" | false | string;
  /** WebSocket failures before any open, then SSE (with "auto"). 3 */
  wsFailuresBeforeSse?: number;
  /** Reconnect backoff, ms: 500 and 20000. */
  minDelay?: number;
  maxDelay?: number;
  /** ms between ping commands; 0 disables the keepalive. 25000 */
  pingInterval?: number;
  /** ms a command waits for its reply. 10000 */
  timeout?: number;
  /** The WebSocket implementation: default the global one, else `ws`. */
  WebSocket?: WebSocketConstructor;
  /** The EventSource implementation for SSE: default the global one. */
  EventSource?: EventSourceConstructor;
}

export type State = "disconnected" | "connecting" | "connected";
export type Transport = "websocket" | "sse";

export interface HeraldEvents {
  connected: {
    client: string | null;
    user: string | null;
    version: string | null;
    transport: Transport;
  };
  disconnected: { code: number; reason: string; reconnect: boolean };
  state: { state: State; transport: Transport | null; retryIn: number };
  /** A subscription failed, getToken() failed, or a refresh was refused;
   * channel names the subscription when it was one. */
  error: { error: HeraldError; channel?: string };
  /** A token was replaced on the open connection after the server's
   * refresh (channel null) or sub_refresh (channel) push. */
  refreshed: { channel: string | null; result: RefreshResult };
  /** The server subscribed the connection to channel (the token's subs
   * claim, the connect proxy's channels, /api/subscribe). */
  subscribed: { channel: string; epoch: string | null; offset: number };
  /** A publication, join or leave of a server-side subscription (one the
   * application did not make itself with subscribe()). */
  publication: { channel: string; pub: Publication };
  join: { channel: string; info: ClientInfo };
  leave: { channel: string; info: ClientInfo };
  /** The server ended a subscription: /api/unsubscribe, or a subscription
   * token that expired. An application's Subscription is dropped too. */
  unsubscribed: { channel: string; reason: string };
}

/** The reply to refresh and sub_refresh. */
export interface RefreshResult {
  expires: boolean;
  /** Seconds until the new token's exp. */
  ttl?: number;
}

export interface HistoryOptions {
  limit?: number;
  since?: StreamPosition;
}

export declare class Herald {
  /**
   * url: the WebSocket endpoint ("/connection/websocket" relative to the
   * page, or absolute).
   */
  constructor(url?: string, options?: HeraldOptions);
  readonly url: string;
  readonly options: HeraldOptions;
  readonly state: State;
  readonly transport: Transport | null;
  readonly clientId: string | null;
  readonly user: string | null;

  /** Throws when no WebSocket implementation was found (and sse is not
   * "force"). */
  connect(): this;
  disconnect(): this;
  reconnect(): this;

  on<K extends keyof HeraldEvents>(
    name: K,
    fn: (ev: HeraldEvents[K]) => void
  ): () => void;
  off<K extends keyof HeraldEvents>(
    name: K,
    fn: (ev: HeraldEvents[K]) => void
  ): void;

  subscribe(
    channel: string,
    handlers?: SubscriptionHandlers,
    options?: SubscribeOptions
  ): Subscription;
  getSubscription(channel: string): Subscription | undefined;

  publish(channel: string, data: Json): Promise<StreamPosition>;
  presence(
    channel: string
  ): Promise<{ clients: { [client: string]: ClientInfo } }>;
  history(
    channel: string,
    options?: HistoryOptions
  ): Promise<StreamPosition & { publications: Publication[] }>;

  static HeraldError: typeof HeraldError;
  static version: string;
}

/** An error reply (code 100-112), or one of the client's own: 0
 * disconnected, 1 timeout, 2 getToken failed. */
export declare class HeraldError extends Error {
  constructor(code: number, message: string, temporary?: boolean);
  code: number;
  temporary: boolean;
}
