/*
 * herald.js - the JavaScript client of the Herald push server.
 *
 * The protocol it speaks is docs/protocol.md. One file, no dependencies, no
 * build step. Load it either way:
 *
 *   <script src="/herald.js"></script>          // defines window.Herald
 *   <script type="module">
 *     import "/herald.js";                       // same file as a module:
 *     const { Herald } = globalThis;             // it defines globalThis.Herald
 *   </script>
 *
 * (A single file cannot carry an `export` statement and still load as a
 * classic script, so the module form reads the global it defines. Under
 * CommonJS, `require("./herald.js")` returns { Herald, HeraldError }.)
 *
 * Node.js: version 22 has a global WebSocket; before it, install the `ws`
 * package, which herald.js finds by itself, or pass an implementation:
 *
 *   const { Herald } = require("herald-client");  // or "./herald.js"
 *   const herald = new Herald("ws://127.0.0.1:8080/connection/websocket", {
 *     WebSocket: require("ws"),          // optional where a global exists
 *     getToken: () => fetchTokenFromMyBackend(),   // a Promise of a JWT
 *   });
 *
 * Without any WebSocket implementation connect() throws an Error that says
 * so; it never sits in "connecting". Types: herald.d.ts beside this file.
 *
 * Usage:
 *
 *   const herald = new Herald("/connection/websocket", { name: "ann" });
 *   herald.on("state", (s) => console.log(s.state, s.transport));
 *   const sub = herald.subscribe("chat:lobby", {
 *     onPublication(pub) { console.log(pub.offset, pub.data, pub.info); },
 *     onJoin(info) {}, onLeave(info) {},
 *     onSubscribed(result) {},      // every (re)subscription's result
 *     onUnrecovered(result) {},     // messages were missed: reload state
 *     onUnsubscribed({reason}) {},  // the server ended it (the connection stays)
 *   });
 *   herald.connect();
 *   await herald.publish("chat:lobby", { text: "hi" });   // -> {epoch, offset}
 *   const { clients } = await herald.presence("chat:lobby");
 *   const { publications } = await herald.history("chat:lobby", { limit: 20 });
 *   sub.unsubscribe();
 *
 * Behaviour:
 * - Every command carries an id; its reply resolves the Promise with the
 *   result, or rejects it with a HeraldError {code, message, temporary}.
 *   Commands issued while (re)connecting wait for the connection; after
 *   `timeout` ms without a reply they fail with a temporary error.
 * - A lost connection is re-established with exponential backoff and full
 *   jitter (minDelay .. maxDelay), but only when the close code allows it:
 *   codes below 3500 (including 1006, network error), or a disconnect push
 *   that says reconnect: true. Codes 3500 and above stop the client.
 * - On reconnect every subscription is sent again with since = {epoch,
 *   offset} of the last publication seen, so the server replays what was
 *   missed. If it cannot (recovered: false) onUnrecovered is called and the
 *   application reloads its state (history, for example). Publications are
 *   also deduplicated by offset, defensively.
 * - SSE fallback: when WebSocket fails several times in a row before it ever
 *   opened (a proxy that blocks it), or with the option sse: "force", the
 *   subscriptions are read from one EventSource on
 *   /sse?channel=A&channel=B... That is read-only: publish, presence and
 *   history reject with code 108 (not available). Every event names its
 *   channel, and its id holds the position of every channel of the stream
 *   ("A@epoch:offset;B@epoch:offset"), so the browser's own reconnect
 *   resumes each of them with Last-Event-ID; the server then sends what was
 *   missed, or an "unrecovered" event for the channel whose position is
 *   gone, which calls that subscription's onUnrecovered. When the set of
 *   subscriptions changes, the stream is closed and one opened for the new
 *   set (once for several subscribe() calls in a row), resuming every
 *   channel from the position it holds (?last_event_id=). The server takes
 *   up to max_sse_channels (32 by default) channels on one stream. A stream
 *   refused for good (an HTTP error) ends the client ("disconnected",
 *   reconnect false), unless it had opened before and options.getToken is
 *   there: then, as after an expired token, it starts again with a fresh
 *   token after the backoff.
 * - Keepalive: a ping command every pingInterval ms (25 s); a ping left
 *   without reply by the next one closes the socket and reconnects.
 * - Tokens: options.getToken(), when given, is called before every
 *   connection attempt and must return the connection JWT (or a Promise of
 *   it). A token that throws or rejects there counts as a failed attempt
 *   (backoff, then again) and is reported with the "error" event.
 *   Refresh without reconnecting: when the server pushes `refresh` (sent
 *   refresh_ahead seconds before the token's exp), getToken() is called
 *   again and the new token goes out with the `refresh` command on the
 *   same connection ("refreshed" event). If that getToken fails, or the
 *   server refuses the token, "error" reports it (code 2 for getToken);
 *   the server then closes with 3006 at exp and the client reconnects,
 *   asking getToken() for a fresh token as for any attempt.
 *   A subscription to a private channel may take { getToken(channel) } for
 *   its subscription token, called before every (re)subscribe and on the
 *   server's `sub_refresh` push for that channel (then sent with the
 *   `sub_refresh` command). A failure there goes to the subscription's
 *   onError and the "error" event ({error, channel}); the server then ends
 *   the subscription at the token's exp.
 *
 * Events (herald.on(name, fn), herald.off(name, fn)):
 *   "connected"     {client, user, version, transport}
 *   "disconnected"  {code, reason, reconnect}
 *   "state"         {state: "disconnected" | "connecting" | "connected",
 *                    transport: "websocket" | "sse" | null,
 *                    retryIn: ms until the next attempt, or 0}
 *   "error"         {error, channel?}: a subscription failed (also passed
 *                    to its onError handler when there is one), or a
 *                    getToken() or a refresh failed
 *   "refreshed"     {channel, result}: a token was replaced on the open
 *                    connection (channel null: the connection's token;
 *                    result: the refresh reply, {expires, ttl})
 *   "subscribed"    {channel, epoch, offset}: the server subscribed the
 *                    connection (the token's subs claim, the connect
 *                    proxy's channels, /api/subscribe); that channel's
 *                    pushes then come as the three events below, unless
 *                    the application subscribed to it itself
 *   "publication"   {channel, pub}, "join" {channel, info},
 *   "leave"         {channel, info}: of a server-side subscription
 *   "unsubscribed"  {channel, reason}: the server ended a subscription
 *                    (/api/unsubscribe, an expired subscription token); an
 *                    application's subscription also gets onUnsubscribed
 *                    and is dropped, so subscribe() may be called again
 */
(function (global) {
  "use strict";

  /* Close codes: below 3500 reconnect, from 3500 on stay disconnected. */
  var CODE_NO_RECONNECT = 3500;

  /* Errors raised by the client itself (never sent by a server). */
  var E_CLIENT_DISCONNECTED = 0; /* the connection closed before a reply */
  var E_CLIENT_TIMEOUT = 1; /* no reply within options.timeout */
  var E_NOT_AVAILABLE = 108; /* the protocol's "not available": SSE mode */
  var E_CLIENT_TOKEN = 2; /* getToken() failed */

  /* WebSocket.OPEN, for implementations that lack the static constant. */
  var OPEN = 1;

  /* Node's CommonJS require, reached through `module` so that bundlers do
   * not try to bundle the optional `ws` package. */
  function optionalRequire(name) {
    try {
      if (typeof module === "object" && module && module.require) {
        return module.require(name);
      }
    } catch (e) {
      /* not installed */
    }
    return null;
  }

  /* The WebSocket constructor to use: the option, the global (browsers,
   * Node 22 and later), or the `ws` package; null when there is none. */
  function findWebSocket(option) {
    if (typeof option === "function") {
      return option;
    }
    if (typeof global.WebSocket === "function") {
      return global.WebSocket;
    }
    var ws = optionalRequire("ws");
    return typeof ws === "function" ? ws : ws && ws.WebSocket ? ws.WebSocket : null;
  }

  var NO_WEBSOCKET =
    "herald: no WebSocket implementation: this runtime has no global " +
    "WebSocket (Node.js before 22) and the `ws` package is not installed. " +
    "Run `npm install ws`, or pass one: new Herald(url, { WebSocket: " +
    "require(\"ws\") })";

  /**
   * An error reply, or a failure of the client itself.
   * code: the protocol's error code (100..112), or 0 (disconnected) and 1
   * (timeout) for errors of the client; temporary: retrying may succeed.
   */
  function HeraldError(code, message, temporary) {
    var e = new Error(message);
    Object.setPrototypeOf(e, HeraldError.prototype);
    e.name = "HeraldError";
    e.code = code;
    e.temporary = !!temporary;
    return e;
  }
  HeraldError.prototype = Object.create(Error.prototype);
  HeraldError.prototype.constructor = HeraldError;

  var DEFAULTS = {
    token: undefined, // connection JWT; not needed in anonymous mode
    name: undefined, // sent with connect as "name"
    sse: "auto", // "auto", "force", false, or the SSE endpoint's URL
    wsFailuresBeforeSse: 3, // failures before any open, then SSE ("auto")
    minDelay: 500, // reconnect backoff, ms
    maxDelay: 20000,
    pingInterval: 25000, // ms; 0 disables the keepalive
    timeout: 10000, // ms a command waits for its reply
    getToken: undefined, // () => token or Promise of it, before each attempt
    WebSocket: undefined, // the WebSocket constructor (default: found)
    EventSource: undefined, // the EventSource constructor (default: global)
  };

  /* Resolves a possibly relative URL against the page, with the scheme of
   * the wanted kind ("ws" or "http"). */
  function absoluteUrl(url, kind) {
    var base =
      typeof location !== "undefined" ? location.href : "http://localhost/";
    var u = new URL(url, base);
    var secure = u.protocol === "https:" || u.protocol === "wss:";
    if (kind === "ws") {
      u.protocol = secure ? "wss:" : "ws:";
    } else {
      u.protocol = secure ? "https:" : "http:";
    }
    return u;
  }

  /**
   * A subscription to one channel; returned by Herald#subscribe.
   * Read-only fields: channel, epoch and offset (the position of the last
   * publication seen, null before the first subscribe result), state
   * ("subscribing", "subscribed", "unsubscribed").
   */
  function Subscription(client, channel, handlers) {
    this._client = client;
    this.channel = channel;
    this.handlers = handlers || {};
    this.epoch = null;
    this.offset = 0;
    this.state = "subscribing";
    this._pending = null; // pushes received before the subscribe result
    this._refreshFor = null; // the socket a sub_refresh is under way on
  }

  /** Stops receiving publications of this channel. */
  Subscription.prototype.unsubscribe = function () {
    this._client._unsubscribe(this);
  };

  Subscription.prototype._call = function (name, arg) {
    var fn = this.handlers[name];
    if (typeof fn !== "function") {
      return;
    }
    try {
      fn.call(this, arg, this);
    } catch (e) {
      // An application handler's exception must not break the client.
      setTimeout(function () {
        throw e;
      });
    }
  };

  /* Delivers one publication unless its offset was seen already. */
  Subscription.prototype._deliver = function (pub) {
    if (typeof pub.offset === "number" && pub.offset <= this.offset) {
      return; // a duplicate: already delivered
    }
    if (typeof pub.offset === "number") {
      this.offset = pub.offset;
    }
    this._call("onPublication", pub);
  };

  /**
   * new Herald(url, options): url is the WebSocket endpoint, absolute or
   * relative to the page ("/connection/websocket"). Options: see DEFAULTS.
   */
  function Herald(url, options) {
    if (!(this instanceof Herald)) {
      return new Herald(url, options);
    }
    this.options = Object.assign({}, DEFAULTS, options || {});
    this.url = absoluteUrl(url || "/connection/websocket", "ws").href;
    this.state = "disconnected";
    this.transport = null;
    this.clientId = null;
    this.user = null;
    this._listeners = {};
    this._subs = new Map();
    this._serverSubs = new Map(); // channel -> {epoch, offset}: the server's
    this._nextId = 1;
    this._calls = new Map(); // id -> {resolve, reject, timer, frame}
    this._queue = []; // {id, frame} of commands waiting for the connection
    this._ws = null;
    this._wanted = false; // connect() called, disconnect() not
    this._attempt = 0; // consecutive failed attempts, for the backoff
    this._everOpened = false; // a WebSocket opened at least once
    this._wsFailures = 0; // failures before any open
    this._retryTimer = null;
    this._pingTimer = null;
    this._pingPending = false;
    this._lastDisconnect = null; // the disconnect push of this socket
    this._pingLost = false; // the socket was dropped for a missing pong
    this._sseOpened = false; // SSE mode: a stream opened
    this._sseLive = false; // SSE mode: the token is had, streams may open
    this._es = null; // SSE mode: the one EventSource of every subscription
    this._esChannels = []; // ... and its channels, in the order of its URL
    this._sseTimer = null; // a reopen for a new set of channels, pending
    this._WebSocket = findWebSocket(this.options.WebSocket);
    this._EventSource =
      this.options.EventSource ||
      (typeof global.EventSource === "function" ? global.EventSource : null);
    this._token = this.options.token; // the latest connection token
    this._attemptId = 0; // drops the answer of an outdated getToken()
    this._refreshFor = null; // the socket a refresh is under way on
  }

  /* -------------------------------------------------------------------- */
  /* Events                                                               */
  /* -------------------------------------------------------------------- */

  /** Adds a listener; returns a function that removes it. */
  Herald.prototype.on = function (name, fn) {
    (this._listeners[name] = this._listeners[name] || []).push(fn);
    var self = this;
    return function () {
      self.off(name, fn);
    };
  };

  Herald.prototype.off = function (name, fn) {
    var list = this._listeners[name];
    if (list) {
      this._listeners[name] = list.filter(function (f) {
        return f !== fn;
      });
    }
  };

  Herald.prototype._emit = function (name, arg) {
    var list = (this._listeners[name] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].call(this, arg);
      } catch (e) {
        setTimeout(function () {
          throw e;
        });
      }
    }
  };

  Herald.prototype._setState = function (state, transport, retryIn) {
    this.state = state;
    this.transport = transport;
    this._emit("state", {
      state: state,
      transport: transport,
      retryIn: retryIn || 0,
    });
  };

  /* -------------------------------------------------------------------- */
  /* Connection                                                           */
  /* -------------------------------------------------------------------- */

  /**
   * Connects (and keeps reconnecting as the close codes allow). Throws an
   * Error when WebSocket is needed and no implementation was found.
   */
  Herald.prototype.connect = function () {
    if (this._wanted) {
      return this;
    }
    if (!this._WebSocket && this.options.sse !== "force") {
      throw new Error(NO_WEBSOCKET);
    }
    this._wanted = true;
    this._attempt = 0;
    if (this.options.sse === "force") {
      this._startSse();
    } else {
      this._openWebSocket();
    }
    return this;
  };

  /** Disconnects for good (until connect() is called again). */
  Herald.prototype.disconnect = function () {
    var was = this.state !== "disconnected" || this._retryTimer;
    this._wanted = false;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopPing();
    if (this._ws) {
      var ws = this._ws;
      this._ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, "client disconnect");
      } catch (e) {
        /* already closed */
      }
    }
    this._stopSse();
    this._failCalls(
      HeraldError(E_CLIENT_DISCONNECTED, "disconnected", false),
      true
    );
    this._subs.forEach(function (sub) {
      sub.state = "subscribing";
    });
    this._serverSubs.clear();
    if (was) {
      this._setState("disconnected", null);
      this._emit("disconnected", {
        code: 0,
        reason: "client disconnect",
        reconnect: false,
      });
    }
    return this;
  };

  /**
   * Drops the connection and connects again at once, for example after
   * options.name or options.token changed. Subscriptions recover.
   */
  Herald.prototype.reconnect = function () {
    var forced = this.transport === "sse" || this.options.sse === "force";
    this.disconnect();
    this._wanted = true;
    this._attempt = 0;
    if (forced) {
      this._startSse();
    } else {
      this._openWebSocket();
    }
    return this;
  };

  /*
   * Calls options.getToken() when there is one and passes the token to
   * then(); a failure is reported with "error" and counts as a failed
   * attempt (fail(reason)). Without getToken, then() runs at once.
   */
  Herald.prototype._withToken = function (then, fail) {
    var self = this;
    var getToken = this.options.getToken;
    if (typeof getToken !== "function") {
      then();
      return;
    }
    var id = ++this._attemptId;
    var p;
    try {
      p = Promise.resolve(getToken.call(this));
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      function (token) {
        if (id !== self._attemptId || !self._wanted) {
          return; // disconnect() or a newer attempt came first
        }
        if (typeof token !== "string" || !token) {
          throw new Error("getToken() gave no token");
        }
        self._token = token;
        then();
      }
    ).catch(function (e) {
      if (id !== self._attemptId || !self._wanted) {
        return;
      }
      var err = HeraldError(
        E_CLIENT_TOKEN,
        "getToken failed: " + (e && e.message ? e.message : String(e)),
        true
      );
      self._emit("error", { error: err });
      fail(err.message);
    });
  };

  Herald.prototype._openWebSocket = function () {
    var self = this;
    this._setState("connecting", "websocket");
    this._lastDisconnect = null;
    this._withToken(
      function () {
        self._openSocket();
      },
      function (reason) {
        self._wsClosed(null, 1006, reason);
      }
    );
  };

  Herald.prototype._openSocket = function () {
    var self = this;
    var ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (e) {
      this._wsClosed(null, 1006, String(e && e.message));
      return;
    }
    this._ws = ws;
    ws.onopen = function () {
      self._everOpened = true;
      self._wsFailures = 0;
      var params = {};
      if (self._token) {
        params.token = self._token;
      }
      if (self.options.name) {
        params.name = String(self.options.name);
      }
      self
        ._call("connect", params, true)
        .then(function (result) {
          self._onConnected(ws, result);
        })
        .catch(function (err) {
          // 101/109 come with a close frame too (3500/3006); if not, close.
          if (self._ws === ws && ws.readyState === OPEN) {
            ws.close(err.code === 109 ? 3006 : 3500, err.message);
          }
        });
    };
    ws.onmessage = function (ev) {
      if (self._ws === ws) {
        self._onFrame(ev.data);
      }
    };
    ws.onerror = function () {
      /* the close event follows and decides */
    };
    ws.onclose = function (ev) {
      if (self._ws === ws) {
        self._wsClosed(ws, ev.code, ev.reason);
      }
    };
  };

  Herald.prototype._onConnected = function (ws, result) {
    if (this._ws !== ws) {
      return;
    }
    var self = this;
    this._attempt = 0;
    this.clientId = result.client;
    this.user = result.user;
    this._setState("connected", "websocket");
    this._emit("connected", {
      client: result.client,
      user: result.user,
      version: result.version,
      transport: "websocket",
    });
    this._startPing();
    // Subscriptions first (so they recover before new publishes), then the
    // commands that waited for the connection.
    this._subs.forEach(function (sub) {
      self._sendSubscribe(sub);
    });
    var queue = this._queue;
    this._queue = [];
    queue.forEach(function (q) {
      var call = self._calls.get(q.id);
      if (call) {
        call.sent = true;
        ws.send(q.frame);
      }
    });
  };

  Herald.prototype._wsClosed = function (ws, code, reason) {
    var push = this._lastDisconnect;
    this._ws = null;
    this._stopPing();
    var wasConnected = this.state === "connected";
    if (push) {
      code = push.code;
      reason = push.reason;
    }
    var reconnect;
    if (push && typeof push.reconnect === "boolean") {
      reconnect = push.reconnect;
    } else if (this._pingLost) {
      reconnect = true;
    } else {
      reconnect = !(code >= CODE_NO_RECONNECT);
    }
    this._pingLost = false;
    // Commands that were sent get no reply any more; queued ones may wait
    // for the next connection when there will be one.
    this._failCalls(
      HeraldError(E_CLIENT_DISCONNECTED, "connection closed", true),
      !reconnect || !this._wanted
    );
    this._subs.forEach(function (sub) {
      if (sub.state !== "unsubscribed") {
        sub.state = "subscribing";
      }
    });
    this._serverSubs.clear(); // the next connection is subscribed anew
    if (!this._everOpened) {
      this._wsFailures++;
    }
    if (wasConnected || !reconnect) {
      this._emit("disconnected", {
        code: code,
        reason: reason || "",
        reconnect: reconnect && this._wanted,
      });
    }
    if (!this._wanted) {
      this._setState("disconnected", null);
      return;
    }
    if (!reconnect) {
      this._wanted = false;
      this._setState("disconnected", null);
      return;
    }
    var sse = this.options.sse;
    if (
      sse &&
      this._EventSource &&
      !this._everOpened &&
      this._wsFailures >= this.options.wsFailuresBeforeSse
    ) {
      this._startSse();
      return;
    }
    this._scheduleReconnect();
  };

  /* Exponential backoff with full jitter: a uniform delay between minDelay
   * and min(maxDelay, minDelay * 2^(attempt + 1)), so that clients dropped
   * together (a server restart) do not all come back at the same moment. */
  Herald.prototype._backoff = function () {
    var o = this.options;
    var cap = Math.min(o.maxDelay, o.minDelay * Math.pow(2, this._attempt + 1));
    this._attempt = Math.min(this._attempt + 1, 30);
    return Math.round(o.minDelay + Math.random() * Math.max(0, cap - o.minDelay));
  };

  Herald.prototype._scheduleReconnect = function () {
    var self = this;
    var delay = this._backoff();
    clearTimeout(this._retryTimer);
    this._setState("connecting", "websocket", delay);
    this._retryTimer = setTimeout(function () {
      self._retryTimer = null;
      if (self._wanted) {
        self._openWebSocket();
      }
    }, delay);
  };

  Herald.prototype._startPing = function () {
    var self = this;
    this._stopPing();
    if (!this.options.pingInterval) {
      return;
    }
    this._pingTimer = setInterval(function () {
      var ws = self._ws;
      if (!ws || self.state !== "connected") {
        return;
      }
      if (self._pingPending) {
        // No reply to the last ping: the connection is dead.
        // Give up on it at once: a dead peer may never finish the
        // closing handshake.
        self._pingLost = true;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close(4000, "no ping reply");
        } catch (e) {
          /* closing anyway */
        }
        self._wsClosed(ws, 4000, "no ping reply");
        return;
      }
      self._pingPending = true;
      self
        ._call("ping", {}, true)
        .then(function () {
          self._pingPending = false;
        })
        .catch(function () {
          self._pingPending = false;
        });
    }, this.options.pingInterval);
  };

  Herald.prototype._stopPing = function () {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    this._pingPending = false;
  };

  /* -------------------------------------------------------------------- */
  /* Commands and replies                                                 */
  /* -------------------------------------------------------------------- */

  /*
   * Sends {"id": n, method: params} and returns a Promise of its result.
   * now: send even before the connect reply (connect itself and pings);
   * otherwise the command waits in the queue until the client is connected.
   */
  Herald.prototype._call = function (method, params, now) {
    var self = this;
    if (this.transport === "sse" && this.state !== "disconnected") {
      return Promise.reject(
        HeraldError(
          E_NOT_AVAILABLE,
          method + " is not available over SSE (read-only)",
          false
        )
      );
    }
    if (!this._wanted) {
      return Promise.reject(
        HeraldError(E_CLIENT_DISCONNECTED, "not connected", false)
      );
    }
    var id = this._nextId++;
    var cmd = { id: id };
    cmd[method] = params || {};
    var frame = JSON.stringify(cmd);
    return new Promise(function (resolve, reject) {
      var call = { resolve: resolve, reject: reject, timer: null, sent: false };
      call.timer = setTimeout(function () {
        self._calls.delete(id);
        self._queue = self._queue.filter(function (q) {
          return q.id !== id;
        });
        reject(HeraldError(E_CLIENT_TIMEOUT, method + ": timeout", true));
      }, self.options.timeout);
      self._calls.set(id, call);
      var ws = self._ws;
      if (
        ws &&
        ws.readyState === OPEN &&
        (now || self.state === "connected")
      ) {
        call.sent = true;
        ws.send(frame);
      } else {
        self._queue.push({ id: id, frame: frame });
      }
    });
  };

  /* Rejects the calls sent on the closed connection; queued calls too when
   * all: there will be no connection to send them on. */
  Herald.prototype._failCalls = function (err, all) {
    var self = this;
    this._calls.forEach(function (call, id) {
      if (call.sent || all) {
        clearTimeout(call.timer);
        self._calls.delete(id);
        call.reject(err);
      }
    });
    if (all) {
      this._queue = [];
    }
  };

  /* A frame holds one JSON object, or several separated by newlines. */
  Herald.prototype._onFrame = function (text) {
    if (typeof text !== "string") {
      return; // the protocol uses text frames only
    }
    var lines = text.indexOf("\n") < 0 ? [text] : text.split("\n");
    for (var i = 0; i < lines.length; i++) {
      if (!lines[i].trim()) {
        continue;
      }
      var msg;
      try {
        msg = JSON.parse(lines[i]);
      } catch (e) {
        continue;
      }
      if (msg && typeof msg.id === "number" && msg.id > 0) {
        this._onReply(msg);
      } else if (msg && msg.push) {
        this._onPush(msg.push);
      }
    }
  };

  Herald.prototype._onReply = function (msg) {
    var call = this._calls.get(msg.id);
    if (!call) {
      return; // timed out already
    }
    this._calls.delete(msg.id);
    clearTimeout(call.timer);
    if (msg.error) {
      var e = msg.error;
      call.reject(HeraldError(e.code, e.message || "error", e.temporary));
    } else {
      call.resolve(msg.result || {});
    }
  };

  Herald.prototype._onPush = function (push) {
    if (push.disconnect) {
      // The close frame with the same code follows.
      this._lastDisconnect = push.disconnect;
      return;
    }
    if (push.refresh && push.channel === undefined) {
      this._refreshConnection();
      return;
    }
    if (push.subscribe) {
      this._serverSubscribed(push.channel, push.subscribe);
      return;
    }
    if (push.unsubscribe) {
      this._serverUnsubscribed(push.channel, push.unsubscribe);
      return;
    }
    var sub = this._subs.get(push.channel);
    if (!sub) {
      var held = this._serverSubs.get(push.channel);
      if (held) {
        this._dispatchServerSub(push.channel, held, push);
      }
      return;
    }
    if (sub.state === "unsubscribed") {
      return;
    }
    if (push.sub_refresh) {
      // Not kept for after a subscribe result: the server sends it only
      // on a subscription it holds, and once per token.
      this._refreshSubscription(sub);
      return;
    }
    if (sub.state === "subscribing") {
      // Arrived before our subscribe result: keep it for after the result.
      (sub._pending = sub._pending || []).push(push);
      return;
    }
    this._dispatch(sub, push);
  };

  Herald.prototype._dispatch = function (sub, push) {
    if (push.pub) {
      sub._deliver(push.pub);
    } else if (push.join) {
      sub._call("onJoin", push.join);
    } else if (push.leave) {
      sub._call("onLeave", push.leave);
    }
  };

  /* -------------------------------------------------------------------- */
  /* Server-side subscriptions: the subscribe and unsubscribe pushes      */
  /* -------------------------------------------------------------------- */

  /*
   * The server subscribed this connection to channel (the token's subs
   * claim, the connect proxy's channels, /api/subscribe). Without a
   * subscription of the application's own for the channel, its pushes go
   * to the client's "publication", "join" and "leave" events, and
   * "subscribed" says it began. The server subscribes again on every
   * connection, so these are forgotten when the connection ends.
   */
  Herald.prototype._serverSubscribed = function (channel, pos) {
    if (typeof channel !== "string" || this._subs.has(channel)) {
      return; // the application's own subscription receives the channel
    }
    var held = {
      epoch: typeof pos.epoch === "string" ? pos.epoch : null,
      offset: typeof pos.offset === "number" ? pos.offset : 0,
    };
    this._serverSubs.set(channel, held);
    this._emit("subscribed", {
      channel: channel,
      epoch: held.epoch,
      offset: held.offset,
    });
  };

  Herald.prototype._dispatchServerSub = function (channel, held, push) {
    if (push.pub) {
      var pub = push.pub;
      if (typeof pub.offset === "number") {
        if (pub.offset <= held.offset) {
          return; // a duplicate: already delivered
        }
        held.offset = pub.offset;
      }
      this._emit("publication", { channel: channel, pub: pub });
    } else if (push.join) {
      this._emit("join", { channel: channel, info: push.join });
    } else if (push.leave) {
      this._emit("leave", { channel: channel, info: push.leave });
    }
  };

  /*
   * The server ended a subscription (/api/unsubscribe, or a subscription
   * token that expired without sub_refresh). The application's own
   * subscription is dropped (so that subscribe() may be called again) and
   * told with onUnsubscribed; either kind is announced with
   * "unsubscribed". The connection stays.
   */
  Herald.prototype._serverUnsubscribed = function (channel, why) {
    var reason = why && typeof why.reason === "string" ? why.reason : "";
    if (this._serverSubs.delete(channel)) {
      this._emit("unsubscribed", { channel: channel, reason: reason });
      return;
    }
    var sub = this._subs.get(channel);
    if (!sub || sub.state === "unsubscribed") {
      return;
    }
    sub.state = "unsubscribed";
    this._subs.delete(channel);
    sub._call("onUnsubscribed", { reason: reason });
    this._emit("unsubscribed", { channel: channel, reason: reason });
  };

  /* -------------------------------------------------------------------- */
  /* Credentials: the refresh and sub_refresh pushes                      */
  /* -------------------------------------------------------------------- */

  /* Calls fn.call(self, arg) for a token: a Promise of it, or rejected
   * with a HeraldError E_CLIENT_TOKEN naming what went wrong. */
  function askToken(fn, self, arg) {
    var p;
    try {
      p = Promise.resolve(fn.call(self, arg));
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.then(
      function (token) {
        if (typeof token !== "string" || !token) {
          throw new Error("getToken() gave no token");
        }
        return token;
      }
    ).catch(function (e) {
      if (e && e.name === "HeraldError") {
        throw e;
      }
      throw HeraldError(
        E_CLIENT_TOKEN,
        "getToken failed: " + (e && e.message ? e.message : String(e)),
        true
      );
    });
  }

  /*
   * The server's refresh push: the connection token ends soon. With
   * options.getToken a new token is asked for and sent with the refresh
   * command on the same connection. A failure (getToken, or the command
   * refused) is reported with "error"; the server then closes with 3006 at
   * exp and the reconnect asks getToken again. Without getToken nothing is
   * done here: the 3006 reconnect is all there is.
   */
  Herald.prototype._refreshConnection = function () {
    var self = this;
    var getToken = this.options.getToken;
    var ws = this._ws;
    if (typeof getToken !== "function" || !ws || this._refreshFor === ws) {
      return; // nothing to ask, or already asking for this connection
    }
    this._refreshFor = ws;
    askToken(getToken, this)
      .then(function (token) {
        if (self._ws !== ws || self.state !== "connected") {
          return null; // a newer connection asked for its own token
        }
        self._token = token;
        return self._call("refresh", { token: token }, false);
      })
      .then(
        function (result) {
          if (self._refreshFor === ws) {
            self._refreshFor = null;
          }
          if (result) {
            self._emit("refreshed", { channel: null, result: result });
          }
        },
        function (err) {
          if (self._refreshFor === ws) {
            self._refreshFor = null;
          }
          if (self._ws !== ws || err.code === E_CLIENT_DISCONNECTED) {
            return; // the connection ended: the reconnect takes over
          }
          self._emit("error", { error: err });
        }
      );
  };

  /*
   * The server's sub_refresh push for sub: its subscription token ends
   * soon. With a subscription getToken(channel) a new token is asked for
   * and sent with sub_refresh. A failure is reported with the
   * subscription's onError and "error" {error, channel}; the server then
   * ends the subscription with an unsubscribe push at exp.
   */
  Herald.prototype._refreshSubscription = function (sub) {
    var self = this;
    var ws = this._ws;
    if (typeof sub.getToken !== "function" || !ws || sub._refreshFor === ws) {
      return;
    }
    sub._refreshFor = ws;
    askToken(sub.getToken, sub, sub.channel)
      .then(function (token) {
        if (
          self._ws !== ws ||
          self._subs.get(sub.channel) !== sub ||
          self.state !== "connected"
        ) {
          return null; // unsubscribed, or a new connection subscribes anew
        }
        sub.token = token;
        return self._call(
          "sub_refresh",
          { channel: sub.channel, token: token },
          false
        );
      })
      .then(
        function (result) {
          if (sub._refreshFor === ws) {
            sub._refreshFor = null;
          }
          if (result) {
            self._emit("refreshed", { channel: sub.channel, result: result });
          }
        },
        function (err) {
          if (sub._refreshFor === ws) {
            sub._refreshFor = null;
          }
          if (
            self._ws !== ws ||
            self._subs.get(sub.channel) !== sub ||
            err.code === E_CLIENT_DISCONNECTED
          ) {
            return;
          }
          sub._call("onError", err);
          self._emit("error", { error: err, channel: sub.channel });
        }
      );
  };

  /* -------------------------------------------------------------------- */
  /* Subscriptions                                                        */
  /* -------------------------------------------------------------------- */

  /**
   * Subscribes to channel. handlers: onPublication(pub), onJoin(info),
   * onLeave(info), onSubscribed(result), onUnrecovered(result),
   * onError(error); options.token for private channels (a subscription
   * JWT), or options.getToken(channel), called before every (re)subscribe
   * for a fresh one (a token or a Promise of it). Works before connect(): the subscription is sent once connected,
   * and again, recovering, after every reconnect. Throws if the channel is
   * already subscribed.
   */
  Herald.prototype.subscribe = function (channel, handlers, options) {
    if (this._subs.has(channel)) {
      throw new Error("herald: already subscribed to " + channel);
    }
    var sub = new Subscription(this, channel, handlers);
    sub.token = options && options.token;
    sub.getToken = options && options.getToken;
    this._subs.set(channel, sub);
    if (this._sseLive) {
      this._sseSchedule(); // a new stream with this channel too
    } else if (this.state === "connected" && this.transport === "websocket") {
      this._sendSubscribe(sub);
    }
    return sub;
  };

  /** The subscription of channel, or undefined. */
  Herald.prototype.getSubscription = function (channel) {
    return this._subs.get(channel);
  };

  Herald.prototype._sendSubscribe = function (sub) {
    var self = this;
    if (typeof sub.getToken !== "function") {
      this._subscribeNow(sub);
      return;
    }
    sub.state = "subscribing";
    var p;
    try {
      p = Promise.resolve(sub.getToken(sub.channel));
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      function (token) {
        if (self._subs.get(sub.channel) !== sub || self.state !== "connected") {
          return; // gone, or it waits for the next connection
        }
        sub.token = token;
        self._subscribeNow(sub);
      },
      function (e) {
        if (self._subs.get(sub.channel) !== sub) {
          return;
        }
        var err = HeraldError(
          E_CLIENT_TOKEN,
          "getToken failed: " + (e && e.message ? e.message : String(e)),
          false
        );
        sub.state = "unsubscribed";
        self._subs.delete(sub.channel);
        sub._call("onError", err);
        self._emit("error", { error: err, channel: sub.channel });
      }
    );
  };

  Herald.prototype._subscribeNow = function (sub) {
    var self = this;
    var params = { channel: sub.channel };
    if (sub.token) {
      params.token = sub.token;
    }
    var since = sub.epoch !== null;
    if (since) {
      params.since = { epoch: sub.epoch, offset: sub.offset };
    }
    sub.state = "subscribing";
    sub._pending = null;
    this._call("subscribe", params, false).then(
      function (result) {
        if (self._subs.get(sub.channel) !== sub) {
          return; // unsubscribed meanwhile
        }
        self._onSubscribed(sub, result, since);
      },
      function (err) {
        if (self._subs.get(sub.channel) !== sub) {
          return;
        }
        if (err.code === E_CLIENT_DISCONNECTED && err.temporary) {
          return; // resubscribed on the next connection
        }
        if (err.code === 105) {
          // Already subscribed on this connection: nothing was lost.
          sub.state = "subscribed";
          return;
        }
        if (err.temporary && self.state === "connected") {
          setTimeout(function () {
            if (self._subs.get(sub.channel) === sub && self.state === "connected") {
              self._sendSubscribe(sub);
            }
          }, self._backoff());
          return;
        }
        sub.state = "unsubscribed";
        self._subs.delete(sub.channel);
        sub._call("onError", err);
        self._emit("error", { error: err, channel: sub.channel });
      }
    );
  };

  Herald.prototype._onSubscribed = function (sub, result, since) {
    var pending = sub._pending || [];
    sub._pending = null;
    sub.state = "subscribed";
    var lost = since && result.recovered === false;
    if (lost || sub.epoch !== result.epoch) {
      // A new stream (or the old position is gone): start from its present.
      sub.epoch = result.epoch;
      sub.offset = 0;
    }
    var pubs = result.publications || [];
    for (var i = 0; i < pubs.length; i++) {
      sub._deliver(pubs[i]);
    }
    if (typeof result.offset === "number" && result.offset > sub.offset) {
      sub.offset = result.offset;
    }
    sub._call("onSubscribed", result);
    if (lost) {
      sub._call("onUnrecovered", result);
    }
    for (var j = 0; j < pending.length; j++) {
      this._dispatch(sub, pending[j]);
    }
  };

  Herald.prototype._unsubscribe = function (sub) {
    if (this._subs.get(sub.channel) !== sub) {
      return;
    }
    this._subs.delete(sub.channel);
    var wasActive = sub.state === "subscribed";
    sub.state = "unsubscribed";
    if (this._sseLive) {
      this._sseSchedule(); // a new stream without this channel
    }
    if (wasActive && this.transport === "websocket" && this.state === "connected") {
      this._call("unsubscribe", { channel: sub.channel }, false).catch(
        function () {
          /* the connection is gone: so is the subscription */
        }
      );
    }
  };

  /* -------------------------------------------------------------------- */
  /* Other commands                                                       */
  /* -------------------------------------------------------------------- */

  /** Publishes JSON data to channel: Promise of {epoch, offset}. */
  Herald.prototype.publish = function (channel, data) {
    return this._call("publish", { channel: channel, data: data }, false);
  };

  /** Who is subscribed: Promise of {clients: {id: {user, info}}}. */
  Herald.prototype.presence = function (channel) {
    return this._call("presence", { channel: channel }, false);
  };

  /**
   * Stored publications: Promise of {epoch, offset, publications}.
   * options.limit: the latest n; options.since: {epoch, offset}.
   */
  Herald.prototype.history = function (channel, options) {
    var params = { channel: channel };
    if (options && options.limit) {
      params.limit = options.limit;
    }
    if (options && options.since) {
      params.since = options.since;
    }
    return this._call("history", params, false);
  };

  /* -------------------------------------------------------------------- */
  /* SSE fallback                                                         */
  /* -------------------------------------------------------------------- */

  /* "epoch:offset" into {epoch, offset}, or null. */
  function parsePosition(text) {
    var colon = text.lastIndexOf(":");
    if (colon <= 0) {
      return null;
    }
    var offset = Number(text.slice(colon + 1));
    if (!Number.isFinite(offset)) {
      return null;
    }
    return { epoch: text.slice(0, colon), offset: offset };
  }

  /*
   * The position of channel in an SSE event id: "epoch:offset" on a stream
   * of one channel, "CHANNEL@epoch:offset" items joined by ";" on a stream
   * of several (docs/protocol.md); null when the id has none.
   */
  function ssePosition(id, channel, single) {
    var items = id.split(";");
    for (var i = 0; i < items.length; i++) {
      var at = items[i].lastIndexOf("@");
      if (at < 0) {
        if (single && items.length === 1) {
          return parsePosition(items[i]);
        }
      } else if (items[i].slice(0, at) === channel) {
        return parsePosition(items[i].slice(at + 1));
      }
    }
    return null;
  }

  /* The URL of a stream of channels, resuming from the positions held. */
  Herald.prototype._sseUrl = function (channels) {
    var o = this.options.sse;
    var u;
    if (typeof o === "string" && o !== "auto" && o !== "force") {
      u = absoluteUrl(o, "http");
    } else {
      u = absoluteUrl(this.url, "http");
      u.pathname = "/sse";
      u.search = "";
    }
    var items = [];
    for (var i = 0; i < channels.length; i++) {
      u.searchParams.append("channel", channels[i]);
      var sub = this._subs.get(channels[i]);
      if (sub && sub.epoch !== null) {
        items.push(channels[i] + "@" + sub.epoch + ":" + sub.offset);
      }
    }
    if (items.length) {
      // A new EventSource sends no Last-Event-ID: the positions go in the
      // query (the browser's own Last-Event-ID wins when it reconnects).
      u.searchParams.set("last_event_id", items.join(";"));
    }
    if (this._token) {
      u.searchParams.set("token", this._token);
    }
    return u.href;
  };

  Herald.prototype._startSse = function () {
    var self = this;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopSse();
    this._failCalls(
      HeraldError(E_NOT_AVAILABLE, "not available over SSE (read-only)", false),
      true
    );
    // "connected" once the stream opens; with no subscription yet, at once
    // (there is nothing to open).
    this._setState("connecting", "sse");
    this._withToken(
      function () {
        self._sseLive = true;
        self._sseOpenStream();
      },
      function () {
        self._sseRetry();
      }
    );
  };

  /* Starts SSE again after the backoff, with a fresh token. */
  Herald.prototype._sseRetry = function () {
    var self = this;
    var delay = this._backoff();
    this._stopSse();
    this._setState("connecting", "sse", delay);
    this._retryTimer = setTimeout(function () {
      self._retryTimer = null;
      if (self._wanted) {
        self._startSse();
      }
    }, delay);
  };

  Herald.prototype._sseConnected = function () {
    if (this._sseOpened) {
      return;
    }
    this._sseOpened = true;
    this._setState("connected", "sse");
    this._emit("connected", {
      client: null,
      user: null,
      version: null,
      transport: "sse",
    });
  };

  /* The set of channels changed: one new stream for all of them, soon (so
   * that several subscribe() calls in a row open it once). */
  Herald.prototype._sseSchedule = function () {
    var self = this;
    if (this._sseTimer) {
      return;
    }
    this._sseTimer = setTimeout(function () {
      self._sseTimer = null;
      if (self._sseLive) {
        self._sseOpenStream();
      }
    }, 0);
  };

  Herald.prototype._sseCloseStream = function () {
    var es = this._es;
    this._es = null;
    this._esChannels = [];
    if (es) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
    }
  };

  /*
   * Opens the one EventSource of every subscription (closing the one
   * before), resuming each channel from the position it holds.
   */
  Herald.prototype._sseOpenStream = function () {
    var self = this;
    var ES = this._EventSource;
    clearTimeout(this._sseTimer);
    this._sseTimer = null;
    this._sseCloseStream();
    var channels = [];
    this._subs.forEach(function (sub, channel) {
      if (sub.state !== "unsubscribed") {
        channels.push(channel);
      }
    });
    if (channels.length === 0 || !ES) {
      this._sseConnected();
      return;
    }
    var es = new ES(this._sseUrl(channels));
    var opened = false;
    this._es = es;
    this._esChannels = channels;
    es.onopen = function () {
      if (self._es !== es) {
        return;
      }
      opened = true;
      self._attempt = 0;
      self._sseConnected();
      for (var i = 0; i < channels.length; i++) {
        var sub = self._subs.get(channels[i]);
        if (sub && sub.state === "subscribing") {
          sub.state = "subscribed";
          sub._call("onSubscribed", {
            epoch: sub.epoch,
            offset: sub.offset,
            transport: "sse",
          });
        }
      }
    };
    es.onmessage = function (ev) {
      if (self._es === es) {
        self._sseMessage(channels, ev);
      }
    };
    es.addEventListener("unrecovered", function (ev) {
      if (self._es === es) {
        self._sseUnrecovered(channels, ev);
      }
    });
    es.onerror = function () {
      if (self._es !== es) {
        return;
      }
      if (es.readyState !== 2 /* CLOSED */) {
        // CONNECTING: the browser retries and resumes with Last-Event-ID.
        if (self.state === "connected") {
          self._sseOpened = false;
          self._setState("connecting", "sse");
        }
        return;
      }
      // Refused (an HTTP error): EventSource does not retry.
      self._sseCloseStream();
      if (opened && typeof self.options.getToken === "function") {
        // It worked before: most likely the token in its URL expired.
        // Start again with a fresh one.
        self._sseRetry();
        return;
      }
      self._wanted = false;
      self._stopSse();
      self._setState("disconnected", null);
      self._emit("disconnected", {
        code: 0,
        reason: "SSE stream refused",
        reconnect: false,
      });
    };
  };

  /* A publication on the stream of channels. */
  Herald.prototype._sseMessage = function (channels, ev) {
    var msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (!msg || typeof msg !== "object") {
      return;
    }
    var single = channels.length === 1;
    var channel =
      typeof msg.channel === "string" ? msg.channel : single ? channels[0] : null;
    var sub = channel === null ? undefined : this._subs.get(channel);
    if (!sub || sub.state === "unsubscribed") {
      return;
    }
    var pos = ssePosition(ev.lastEventId || "", channel, single);
    if (pos && sub.epoch !== pos.epoch) {
      sub.epoch = pos.epoch; // a new stream: offsets start again
      sub.offset = 0;
    }
    // {"channel", "pub": {offset, data, info?}}, or the publication's
    // fields next to "channel" ({"channel", "offset", "data"}).
    var p = typeof msg.pub === "object" && msg.pub ? msg.pub : msg;
    var pub = { offset: p.offset, data: p.data };
    if (p.b64 !== undefined) {
      pub.b64 = p.b64;
    }
    if (p.info !== undefined) {
      pub.info = p.info;
    }
    if (typeof pub.offset !== "number" && pos) {
      pub.offset = pos.offset;
    }
    sub._deliver(pub);
  };

  /* "unrecovered": the position of one channel is gone; its data names the
   * channel and its present position. */
  Herald.prototype._sseUnrecovered = function (channels, ev) {
    var d = null;
    try {
      d = JSON.parse(ev.data);
    } catch (e) {
      /* an older server sent {} */
    }
    d = d && typeof d === "object" ? d : {};
    var single = channels.length === 1;
    var channel =
      typeof d.channel === "string" ? d.channel : single ? channels[0] : null;
    var sub = channel === null ? undefined : this._subs.get(channel);
    if (!sub || sub.state === "unsubscribed") {
      return;
    }
    var pos =
      typeof d.epoch === "string" && typeof d.offset === "number"
        ? { epoch: d.epoch, offset: d.offset }
        : ssePosition(ev.lastEventId || "", channel, single);
    sub.epoch = pos ? pos.epoch : null;
    sub.offset = pos ? pos.offset : 0;
    sub._call("onUnrecovered", {
      recovered: false,
      epoch: pos ? pos.epoch : undefined,
      offset: pos ? pos.offset : undefined,
      transport: "sse",
    });
  };

  Herald.prototype._stopSse = function () {
    clearTimeout(this._sseTimer);
    this._sseTimer = null;
    this._sseLive = false;
    this._sseCloseStream();
    this._sseOpened = false;
  };

  Herald.HeraldError = HeraldError;
  Herald.version = "1.0.0";

  global.Herald = Herald;
  global.HeraldError = HeraldError;
  if (typeof module === "object" && module && module.exports) {
    module.exports = { Herald: Herald, HeraldError: HeraldError };
  }
})(typeof globalThis !== "undefined" ? globalThis : this);
