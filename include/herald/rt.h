/*
 * herald/rt.h - the runtime: WebSocket servers and clients on libuv.
 *
 * A herald_loop is one event loop on one thread: its sockets, its timers and
 * its read buffer. A herald_server runs one loop per worker thread, each with
 * its own SO_REUSEPORT listeners, so connections never move between threads;
 * every callback of a connection runs on its loop's thread. Sends made during
 * one loop pass are written with one writev per connection, before the loop
 * sleeps.
 *
 * Echo server in a few lines:
 *
 *   static void on_message(herald_ws *ws, herald_opcode op, uint8_t *data,
 *                          size_t len, void *ud) {
 *     herald_ws_send(ws, op, data, len);
 *   }
 *   int main(void) {
 *     herald_server_config cfg;
 *     herald_server_config_init(&cfg);
 *     const char *listen[] = {"127.0.0.1:9001"};
 *     cfg.listen = listen;
 *     cfg.nlisten = 1;
 *     herald_ws_callbacks cb = {.on_message = on_message};
 *     herald_server *srv;
 *     if (herald_server_new(&srv, &cfg) != 0) return 1;
 *     herald_server_route(srv, "*", &cb, NULL);
 *     return herald_server_run(srv);  // until SIGINT/SIGTERM
 *   }
 *
 * Errors are the negative herald_err values of herald/core.h, plus the
 * negative libuv error codes (UV_E*) for system failures; herald_rt_strerror()
 * names both.
 */
#ifndef HERALD_RT_H
#define HERALD_RT_H

#include <stddef.h>
#include <stdint.h>

#include "herald/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct herald_loop herald_loop;
typedef struct herald_server herald_server;
typedef struct herald_ws herald_ws;
typedef struct herald_http herald_http;

/* Returns a static message for a herald_err or a libuv error code. */
HERALD_API const char *herald_rt_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Limits and timeouts                                                      */
/* ------------------------------------------------------------------------ */

typedef enum herald_slow_policy {
  HERALD_SLOW_CLOSE = 0, /* over the hard cap: close with 1008 */
  HERALD_SLOW_DROP = 1   /* over the hard cap: drop the message */
} herald_slow_policy;

/* Runtime limits of one connection. Every field has a default set by
 * herald_rt_limits_init(); 0 turns a timeout off. */
typedef struct herald_rt_limits {
  uint32_t handshake_timeout_ms;  /* 10000: opening handshake (slowloris) */
  uint32_t idle_timeout_ms;       /* 0 (off): no bytes received -> 1001 */
  uint32_t ping_interval_ms;      /* 0 (off): send a ping every N ms; a
                                     connection that received nothing for
                                     N ms also frees its idle buffers and
                                     its context-free zlib streams then
                                     (herald_conn_trim) */
  uint32_t pong_timeout_ms;       /* 10000: no pong after a ping -> 1006 */
  uint32_t close_timeout_ms;      /* 3000: close handshake grace, then TCP
                                     close */
  size_t send_high_water;         /* 1 MiB: sends return BACKPRESSURE above */
  size_t send_low_water;          /* 256 KiB: on_drain once below */
  size_t send_hard_cap;           /* 16 MiB: the slow-consumer policy applies */
  herald_slow_policy slow_policy; /* HERALD_SLOW_CLOSE */
  uint32_t max_pings_per_sec;     /* 100: ping flood -> close 1008 */
  size_t max_http_body;           /* 1 MiB: plain HTTP request body -> 413 */
} herald_rt_limits;

HERALD_API void herald_rt_limits_init(herald_rt_limits *limits);

/* ------------------------------------------------------------------------ */
/* Loop                                                                     */
/* ------------------------------------------------------------------------ */

/* How a loop does its socket I/O (docs/design.md, "The io_uring backend"). */
typedef enum herald_io_backend {
  /* The process default: what herald_io_backend_set_default() set, else the
   * environment variable HERALD_IO_BACKEND ("epoll", "io_uring", "auto"),
   * else HERALD_IO_AUTO. */
  HERALD_IO_DEFAULT = 0,
  HERALD_IO_EPOLL = 1, /* an epoll set: read() and sendmsg() per socket */
  HERALD_IO_URING = 2, /* io_uring: multishot receives into a buffer ring
                          shared by the loop, sendmsg() per socket; needs
                          Linux 6.0 */
  /* The default choice: for now epoll. io_uring is opt-in until it is as
   * cheap as epoll on every shape (docs/performance.md); then auto will
   * run it when the kernel allows and fall back to epoll. */
  HERALD_IO_AUTO = 3
} herald_io_backend;

/* Parses "epoll", "io_uring" (or "uring") and "auto". Returns 0, or
 * HERALD_ERR_INVALID_ARG for any other name (*out untouched). */
HERALD_API int herald_io_backend_parse(const char *name,
                                       herald_io_backend *out);

/* "epoll", "io_uring", "auto" or "default": a static string. */
HERALD_API const char *herald_io_backend_name(herald_io_backend b);

/* Sets the process default used for HERALD_IO_DEFAULT by loops made from
 * now on (HERALD_IO_DEFAULT itself means HERALD_IO_AUTO here). Call it
 * before making loops; it is not meant to race with herald_loop_new(). */
HERALD_API void herald_io_backend_set_default(herald_io_backend b);

/* What a loop made with b would run: HERALD_IO_EPOLL or HERALD_IO_URING.
 * HERALD_IO_DEFAULT and HERALD_IO_AUTO are resolved; HERALD_IO_URING is
 * returned as asked even when the kernel cannot run it (the loop's creation
 * fails then). Thread-safe. */
HERALD_API herald_io_backend herald_io_backend_resolve(herald_io_backend b);

/* Creates a loop. uv: an existing libuv loop to attach to (the caller runs
 * it), or NULL for a loop of its own (run with herald_loop_run()). Its
 * backend is the process default (HERALD_IO_DEFAULT). Returns 0,
 * HERALD_ERR_NOMEM, or a UV_E* code. */
HERALD_API int herald_loop_new(herald_loop **ploop, void *uv_loop);

/* As herald_loop_new(), with the I/O backend given. Returns 0,
 * HERALD_ERR_NOMEM, HERALD_ERR_INVALID_ARG (not a herald_io_backend), a
 * UV_E* code, or, for HERALD_IO_URING on a kernel that cannot run it, the
 * negative errno of what failed (UV_ENOSYS, UV_EPERM when io_uring is
 * disabled, ...); HERALD_IO_AUTO never fails for that. On io_uring, a
 * loop attached to uv_loop makes its ring without deferred completion
 * work (libuv watches the ring's fd), one of its own with it. */
HERALD_API int herald_loop_new_backend(herald_loop **ploop, void *uv_loop,
                                       herald_io_backend backend);

/* The backend a loop runs: HERALD_IO_EPOLL or HERALD_IO_URING. */
HERALD_API herald_io_backend herald_loop_backend(const herald_loop *loop);

/* What a loop's I/O backend holds and has done, for metrics. On epoll every
 * field is 0. */
typedef struct herald_loop_io_stats {
  /* io_uring: bytes in the receive pool the loop's plain connections share.
   * It starts at 64 KiB and doubles, at most once per pass, while receives
   * find no buffer free, up to 1 MiB; it never shrinks. */
  size_t recv_pool_bytes;
  uint64_t recv_pool_waits; /* io_uring: receives that found no buffer free */
  /* io_uring: receives made straight into the message buffer of a large
   * frame being reassembled, instead of into the pool. */
  uint64_t recv_placed;
} herald_loop_io_stats;

/* Fills *out with the loop's figures since it was made. Loop thread only
 * (in one of its callbacks, its pass hook or a post). */
HERALD_API void herald_loop_io_stats_get(const herald_loop *loop,
                                         herald_loop_io_stats *out);

/* Runs the loop until it has nothing left to do or herald_loop_stop().
 * Returns 0 when nothing was left, nonzero when stopped with work left.
 *
 * On a loop of its own (herald_loop_new(.., NULL)) the thread sleeps in
 * herald's epoll set, which holds libuv's backend fd: a pass costs one
 * epoll_wait, and libuv runs (uv_run(UV_RUN_NOWAIT)) only on the passes
 * where it has something to do: one of its fds is ready, a timer is due,
 * or it has idle or pending work. Timers, signals, async handles, DNS and
 * the application's own handles work as usual; only prepare and check
 * handles see fewer passes, so per-pass work belongs in
 * herald_loop_on_pass(). Stop such a loop with herald_loop_stop() (or
 * uv_stop() from a herald callback). On a loop attached to the caller's
 * uv_loop_t this is uv_run(UV_RUN_DEFAULT), and herald's set is one fd in
 * libuv's. */
HERALD_API int herald_loop_run(herald_loop *loop);

/* Sets fn(loop, ud) to run once per loop pass, after the pass's I/O and
 * timers and before its output is written; NULL removes it. One hook per
 * loop (a second call replaces the first). Loop thread only. */
HERALD_API void herald_loop_on_pass(herald_loop *loop,
                                    void (*fn)(herald_loop *loop, void *ud),
                                    void *ud);

/* Thread-safe: asks the loop to return from herald_loop_run(). */
HERALD_API void herald_loop_stop(herald_loop *loop);

/* Frees the loop. Every connection on it must be closed first (on_close
 * called). */
HERALD_API void herald_loop_del(herald_loop *loop);

/* The loop's uv_loop_t, for the caller's own timers and handles. */
HERALD_API void *herald_loop_uv(herald_loop *loop);

/* Thread-safe: runs fn(arg) on the loop's thread during its next pass.
 * Returns 0, HERALD_ERR_NOMEM, or HERALD_ERR_CLOSED when the loop is
 * shutting down (fn will not run). */
HERALD_API int herald_loop_post(herald_loop *loop, void (*fn)(void *arg),
                                void *arg);

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

/* How a connection ended, passed to on_close. */
typedef struct herald_close_info {
  uint16_t code;      /* the peer's code; 1005 when it sent none; 1006 when
                         the connection ended without a close handshake */
  const char *reason; /* the peer's reason (UTF-8, not NUL-terminated) */
  size_t reasonlen;
  int remote;        /* 1: the peer sent a close frame */
  const char *error; /* NULL, or our diagnostic: why we failed or dropped
                        the connection ("pong timeout", a protocol error,
                        "connection refused") */
} herald_close_info;

/* Callbacks of a connection. ud is the user_data given with them (route or
 * connect). Every callback may send, close, and set user data; none may free
 * the connection (the runtime does, after on_close). */
typedef struct herald_ws_callbacks {
  /* Server: decide on an upgrade request. Return 0 to accept (optionally
   * choose accept->subprotocol or add accept->headers; the strings must live
   * until the call returns), or an HTTP status 400-599 to refuse. NULL:
   * accept every request with no subprotocol. */
  int (*on_upgrade)(herald_ws *ws, const herald_request *req,
                    herald_accept *accept, void *ud);
  /* The connection is open: messages may flow. */
  void (*on_open)(herald_ws *ws, void *ud);
  /* A whole message. data is writable and valid only during the call. */
  void (*on_message)(herald_ws *ws, herald_opcode op, uint8_t *data, size_t len,
                     void *ud);
  /* Streaming: when set, messages arrive here in chunks as they are read
   * and on_message is not used. first/fin mark the message's edges. */
  void (*on_chunk)(herald_ws *ws, herald_opcode op, uint8_t *data, size_t len,
                   int first, int fin, void *ud);
  /* A ping arrived (the pong is already queued), or a pong. */
  void (*on_ping)(herald_ws *ws, const uint8_t *data, size_t len, void *ud);
  void (*on_pong)(herald_ws *ws, const uint8_t *data, size_t len, void *ud);
  /* The send buffer fell below send_low_water after a BACKPRESSURE. */
  void (*on_drain)(herald_ws *ws, void *ud);
  /* The connection is gone: the last callback. ws is freed on return. For a
   * client whose connection never opened, on_open was not called. */
  void (*on_close)(herald_ws *ws, const herald_close_info *info, void *ud);
} herald_ws_callbacks;

/* Results of a send (>= 0); errors are negative herald_err values. */
typedef enum herald_send_result {
  HERALD_SEND_OK = 0,           /* queued */
  HERALD_SEND_BACKPRESSURE = 1, /* queued, but buffered > send_high_water */
  HERALD_SEND_DROPPED = 2       /* not queued: over send_hard_cap (with
                                   HERALD_SLOW_CLOSE the connection is also
                                   being closed with 1008) */
} herald_send_result;

/* Queues a message; data is copied, so it is borrowed for the call only.
 * op: HERALD_OP_TEXT or HERALD_OP_BINARY. Returns a herald_send_result, or
 * HERALD_ERR_CLOSED (close already sent), HERALD_ERR_BAD_STATE (not open),
 * HERALD_ERR_INVALID_ARG, HERALD_ERR_NOMEM. */
HERALD_API int herald_ws_send(herald_ws *ws, herald_opcode op, const void *data,
                              size_t len);

/* As herald_ws_send, without copying: data must stay valid until release(ctx)
 * is called (once; also when the send fails or the connection dies). */
HERALD_API int herald_ws_send_ref(herald_ws *ws, herald_opcode op,
                                  const void *data, size_t len,
                                  herald_release_fn release, void *ctx);

/* Queues a complete frame built once for many connections (server role):
 * herald_frame_prepare(), or herald_frame_header() followed by the payload
 * in one block. No copy when release is given and len >= the connection's
 * core.copy_threshold: the connection references frame until release(ctx),
 * so a broadcast costs each recipient a queue entry, not the bytes.
 * compressed as herald_conn_send_frame(). Returns as herald_ws_send(), and
 * HERALD_ERR_INVALID_ARG when frame is not one final, unmasked text or
 * binary frame, HERALD_ERR_BAD_STATE when compressed does not fit the
 * connection (see herald_conn_send_frame); release(ctx) is called on every
 * failure. */
HERALD_API int herald_ws_send_frame(herald_ws *ws, const uint8_t *frame,
                                    size_t len, int compressed,
                                    herald_release_fn release, void *ctx);

/* Queues one fragment of a message (fin = 0 until the last). Same returns. */
HERALD_API int herald_ws_send_fragment(herald_ws *ws, herald_opcode op,
                                       const void *data, size_t len, int fin);

/* Queues a ping (len <= 125). Returns 0 or a negative herald_err. */
HERALD_API int herald_ws_ping(herald_ws *ws, const void *data, size_t len);

/* Starts the close handshake (code 0: no code). The connection is closed
 * once the peer answers, or after close_timeout_ms. Returns 0,
 * HERALD_ERR_CLOSED, HERALD_ERR_INVALID_ARG. Safe to call on a connection
 * that is already closing. */
HERALD_API int herald_ws_close(herald_ws *ws, uint16_t code, const char *reason,
                               size_t reasonlen);

/* Bytes queued and not yet written. On an io_uring loop, up to 16 KiB
 * handed to the kernel in a send that has not completed yet count as
 * written. */
HERALD_API size_t herald_ws_buffered(const herald_ws *ws);

/* Flow control of input. herald_ws_pause_read() stops reading the
 * connection: no more callbacks for its input after the one running (if
 * any) returns; what was read and not yet handled is kept, and the kernel's
 * buffer then pushes back on the peer (TCP flow control). Timers keep
 * running, so a connection paused longer than idle_timeout_ms is dropped.
 * herald_ws_resume_read() continues it on the loop's next pass, after the
 * output queued so far has been written: a server that pauses a connection
 * whose messages fan out to many others, and resumes it at once, lets those
 * messages reach the sockets before it reads more (herald serve does this
 * for publishers). Both are no-ops on a closed connection and may be called
 * from any callback of the connection's loop. */
HERALD_API void herald_ws_pause_read(herald_ws *ws);
HERALD_API void herald_ws_resume_read(herald_ws *ws);

HERALD_API void herald_ws_set_data(herald_ws *ws, void *data);
HERALD_API void *herald_ws_data(const herald_ws *ws);

/* The loop the connection lives on. */
HERALD_API herald_loop *herald_ws_loop(const herald_ws *ws);

/* The subprotocol agreed on, "" if none. Valid for the connection's life. */
HERALD_API const char *herald_ws_subprotocol(const herald_ws *ws);

/* The peer's address as text ("127.0.0.1:53211"), "" when unknown. The
 * text is in a thread-local buffer, valid until the next call on the same
 * thread. */
HERALD_API const char *herald_ws_peer(const herald_ws *ws);

/* ------------------------------------------------------------------------ */
/* Plain HTTP on a server's port                                            */
/* ------------------------------------------------------------------------ */

/* Called for a request that is not a WebSocket upgrade, with its whole body
 * (Content-Length; any Transfer-Encoding, and ambiguous framing, is
 * refused with 400 and the connection closed). The handler must
 * call herald_http_respond() exactly once, now or later on the same loop;
 * req, its spans and body are valid only during the call. */
typedef void (*herald_http_fn)(herald_http *h, const herald_request *req,
                               const uint8_t *body, size_t bodylen, void *ud);

/* Sends a complete response (copied) with Content-Length. Keeps the
 * connection alive for the next request unless the client asked to close.
 * Returns 0, HERALD_ERR_BAD_STATE (already answered), HERALD_ERR_INVALID_ARG
 * or HERALD_ERR_NOMEM. If the client went away, the call still succeeds and
 * the response is discarded. */
HERALD_API int herald_http_respond(herald_http *h, int status,
                                   const herald_header *headers,
                                   size_t nheaders, const void *body,
                                   size_t bodylen);

/* Starts a streamed response instead of herald_http_respond(): sends the
 * head (status and headers, no Content-Length, "Connection: close"), then
 * herald_http_write() adds body bytes (Server-Sent Events, long polls). When
 * the client goes away first, on_gone(h, ud) runs once on the loop's thread;
 * h stays valid until herald_http_end(), which the application must call in
 * every case (it finishes the response if the client is still there, and
 * frees h). Returns 0, HERALD_ERR_BAD_STATE (already answered),
 * HERALD_ERR_INVALID_ARG or HERALD_ERR_NOMEM. */
HERALD_API int herald_http_stream(herald_http *h, int status,
                                  const herald_header *headers, size_t nheaders,
                                  void (*on_gone)(herald_http *h, void *ud),
                                  void *ud);

/* Queues body bytes of a streamed response (copied). Returns a
 * herald_send_result (DROPPED when over send_hard_cap: the bytes were not
 * queued), HERALD_ERR_CLOSED when the client is gone, or
 * HERALD_ERR_BAD_STATE when h is not streaming. */
HERALD_API int herald_http_write(herald_http *h, const void *data, size_t len);

/* Ends a streamed response and frees h. */
HERALD_API void herald_http_end(herald_http *h);

/* ------------------------------------------------------------------------ */
/* Server                                                                   */
/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* TLS (OpenSSL 3)                                                          */
/* ------------------------------------------------------------------------ */

/* One certificate chain (PEM, leaf first) and its private key (PEM). */
typedef struct herald_tls_cert {
  const char *cert_file;
  const char *key_file;
} herald_tls_cert;

/* Server TLS. With ncerts > 0 every listener of the server speaks TLS 1.2 or
 * 1.3 only (OpenSSL's default cipher suites, server preference, no
 * compression, no renegotiation), offers ALPN "http/1.1", and chooses among
 * certs by SNI: the first certificate whose names match the requested host
 * name, else certs[0]. */
typedef struct herald_tls_server_config {
  const herald_tls_cert *certs;
  size_t ncerts;
} herald_tls_server_config;

/* Loads every certificate and key of cfg the way herald_server_new() would,
 * then frees them: lets a program say why TLS cannot start before it builds
 * a server. Returns 0, HERALD_ERR_INVALID_ARG (a file is missing or
 * unreadable, or a key does not match its certificate) or HERALD_ERR_NOMEM,
 * and sets *error (when error is not NULL) to a static English sentence
 * naming the failure, or NULL on success. */
HERALD_API int herald_tls_check(const herald_tls_server_config *cfg,
                                const char **error);

typedef struct herald_server_config {
  const char *const *listen; /* "127.0.0.1:8080", "[::1]:8080", ":8080" */
  size_t nlisten;
  int threads;        /* loops (threads) to run; 0: one per core. Default 1 */
  int handle_signals; /* 1 (default): SIGINT/SIGTERM start a graceful
                         shutdown in herald_server_run() */
  uint32_t shutdown_grace_ms; /* 5000: wait for close handshakes, then exit */
  int backlog;                /* 1024 */
  herald_config core;         /* protocol limits (role is forced to server) */
  /* 256 MiB: bytes all connections of the server, on all its threads, may
   * hold together for messages still arriving (reassembled or inflated, see
   * herald_budget); the connection that would go past it is closed with
   * 1013 and no other is touched. 0: no limit (still counted). Unused when
   * core.budget is set: that budget, the caller's (it may be shared with
   * other servers and clients), is drawn on instead. */
  uint64_t max_partial_bytes;
  /* 1 GiB: bytes of compression state (permessage-deflate) all connections
   * of the server, on all its threads, may hold together, each counted at
   * its largest for its agreed parameters (about 300 KiB at the default
   * window 15 and mem_level 8, 550 KiB once it compresses a message of
   * fast_min_size or more with context takeover; see
   * herald_deflate_config.budget). A connection that would go past it is
   * accepted without permessage-deflate, and a large message whose igzip
   * state would is compressed with zlib; no connection is closed for it.
   * 0: no limit (still counted). Unused when core.deflate.budget is set. */
  uint64_t max_deflate_bytes;
  herald_rt_limits limits;
  herald_http_fn on_http; /* NULL: plain requests get 426 */
  void *http_user_data;
  herald_tls_server_config tls; /* ncerts == 0: plain TCP */
  /* Called on worker 0's thread after each SIGHUP-triggered certificate
   * reload with its result (0 or a negative error); NULL: ignored. */
  void (*on_tls_reload)(int result, const char *error, void *ud);
  void *tls_reload_user_data;
  /* HERALD_IO_DEFAULT: the loops' I/O backend (see herald_io_backend);
   * herald_server_run() fails with the error of herald_loop_new_backend()
   * when HERALD_IO_URING cannot run. */
  herald_io_backend io_backend;
} herald_server_config;

/* Fills cfg with defaults (no listen address). */
HERALD_API void herald_server_config_init(herald_server_config *cfg);

/* Creates a server; cfg is copied (the strings it points to must live as
 * long as the server). Listening starts in herald_server_run(). Returns 0,
 * HERALD_ERR_INVALID_ARG (no listen address, bad address) or
 * HERALD_ERR_NOMEM. */
HERALD_API int herald_server_new(herald_server **psrv,
                                 const herald_server_config *cfg);

/* Routes upgrade requests for path (exact match on the path, without query)
 * to cb; "*" matches any path without a route of its own. cb is copied. Call
 * before herald_server_run(). Returns 0, HERALD_ERR_INVALID_ARG,
 * HERALD_ERR_NOMEM. Requests for unrouted paths get 404. */
HERALD_API int herald_server_route(herald_server *srv, const char *path,
                                   const herald_ws_callbacks *cb, void *ud);

/* Binds every listener (on every thread), then runs until
 * herald_server_stop() or a signal, and shuts down gracefully: stop
 * accepting, close every connection with 1001, wait for the close
 * handshakes up to shutdown_grace_ms. Returns 0 after a clean shutdown, or a
 * negative error if a listener could not be bound (nothing runs then). */
HERALD_API int herald_server_run(herald_server *srv);

/* Reads the certificate and key files of cfg.tls again and uses them for
 * new connections; open connections keep theirs. Thread-safe. With
 * handle_signals, SIGHUP calls it. Returns 0, or HERALD_ERR_INVALID_ARG when
 * a file cannot be loaded (the old certificates stay in use; *error, if not
 * NULL, is set to a static description). */
HERALD_API int herald_server_reload_tls(herald_server *srv, const char **error);

/* Thread-safe and async-signal-safe: starts the graceful shutdown. */
HERALD_API void herald_server_stop(herald_server *srv);

/* The port the first listener is bound to (useful with port 0), once
 * herald_server_run() has bound it; 0 before. Safe to call from any thread
 * (for instance to wait for a server that runs on another one). */
HERALD_API int herald_server_port(const herald_server *srv);

/* The budget the server's connections draw on for unfinished messages:
 * its own (max_partial_bytes) or core.budget. herald_budget_used() on it
 * is the bytes held now, herald_budget_refused() the connections closed
 * with 1013 for it; both thread-safe. Valid until herald_server_del(). */
HERALD_API const herald_budget *herald_server_budget(const herald_server *srv);

/* The budget the server's connections draw on for compression state: its
 * own (max_deflate_bytes) or core.deflate.budget. herald_budget_used() on
 * it is the bytes drawn now, herald_budget_refused() the connections that
 * went without compression (or without igzip) for it; both thread-safe.
 * Valid until herald_server_del(). */
HERALD_API const herald_budget *
herald_server_deflate_budget(const herald_server *srv);

/* Called on each worker loop when it starts, before it accepts; lets the
 * application keep per-thread state. Set before herald_server_run(). */
HERALD_API void
herald_server_on_loop_start(herald_server *srv,
                            void (*fn)(herald_loop *loop, void *ud), void *ud);

HERALD_API void herald_server_del(herald_server *srv);

/* ------------------------------------------------------------------------ */
/* Client                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct herald_client_config {
  const char *url;    /* ws://host[:port]/path?query, or wss:// (TLS) */
  const char *origin; /* NULL: none */
  const char *const *subprotocols;
  size_t nsubprotocols;
  const herald_header *headers;
  size_t nheaders;
  uint32_t connect_timeout_ms; /* 10000: DNS + TCP + handshake */
  const char *bind_address;    /* NULL, or a local source IP (127.0.0.2) */
  /* wss:// only. The server's certificate is verified against the system's
   * CA store (or tls_ca_file) and its name against the URL's host (or
   * tls_server_name, also sent as SNI), unless tls_insecure is 1. */
  const char *tls_ca_file;
  const char *tls_server_name;
  int tls_insecure;
  herald_config core; /* role is forced to client */
  herald_rt_limits limits;
} herald_client_config;

HERALD_API void herald_client_config_init(herald_client_config *cfg);

/* Starts connecting; everything in cfg is copied. On success the
 * connection's callbacks follow: on_open, or on_close with info->error when
 * it fails (DNS, refused, timeout, TLS verification, handshake refused).
 * Returns 0 and sets *pws (may be NULL), or HERALD_ERR_INVALID_ARG (bad URL) /
 * HERALD_ERR_NOMEM; then no callback is called. */
HERALD_API int herald_connect(herald_loop *loop,
                              const herald_client_config *cfg,
                              const herald_ws_callbacks *cb, void *ud,
                              herald_ws **pws);

#ifdef __cplusplus
}
#endif

#endif /* HERALD_RT_H */
