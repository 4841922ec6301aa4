/*
 * herald/core.h - the sans-I/O WebSocket protocol core (RFC 6455).
 *
 * The core turns bytes into events and sends into bytes. It owns no socket,
 * reads no clock, writes no log and allocates only through the herald_mem
 * hooks of the config it was created with. Any split of the input yields the
 * same events.
 *
 * Typical use (server role):
 *
 *   herald_config cfg;
 *   herald_config_init(&cfg, HERALD_ROLE_SERVER);
 *   herald_conn *c;
 *   herald_conn_new(&c, &cfg);
 *   ... bytes arrive in buf[0..len) ...
 *   size_t off = 0;
 *   for (;;) {
 *     herald_event ev;
 *     int n = herald_conn_recv(c, buf + off, len - off, &ev);
 *     if (n < 0) break;                       // c queued a close or an HTTP
 *     off += (size_t)n;                       // error; flush it, then close
 *     if (ev.type == HERALD_EV_NONE) break;   // keep buf[off..len) for later
 *     handle(&ev);
 *   }
 *   struct iovec iov[64];
 *   int cnt = herald_conn_output(c, iov, 64);
 *   ssize_t w = writev(fd, iov, cnt);
 *   herald_conn_output_consumed(c, (size_t)w);
 *
 * Threading: a herald_conn is not thread-safe; use each from one thread at a
 * time. A herald_config may be shared by many connections and threads as long
 * as nobody modifies it.
 */
#ifndef HERALD_CORE_H
#define HERALD_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h> /* struct iovec: output is handed out ready for writev */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HERALD_API __attribute__((visibility("default")))
#else
#define HERALD_API
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * One negative enum for the whole library, in bands that stay clear of the
 * negative errno values libuv returns (-1..-4095 never reaches -1100..-1599
 * except through UV_EAI_* at -3000 and below):
 *   -11xx  the peer broke the protocol or went over a limit: the connection
 *          is failed and the core has queued the close frame (or HTTP
 *          refusal) that answers it;
 *   -13xx  the caller misused the API: nothing happened, the connection is
 *          still usable;
 *   -15xx  fatal resource errors: only herald_conn_del() is allowed after.
 * 0 means success. herald_err_close_code() maps each to its close code.
 *
 * X(name, value, close code or 0, message)
 */
#define HERALD_ERRORS(X)                                                       \
  X(PROTO, -1100, 1002, "protocol error")                                      \
  X(BAD_UTF8, -1101, 1007, "invalid UTF-8 in text")                            \
  X(TOO_BIG, -1102, 1009, "message too big")                                   \
  X(POLICY, -1103, 1008, "policy limit exceeded")                              \
  X(BAD_CLOSE, -1104, 1002, "invalid close frame")                             \
  X(BUSY, -1105, 1013, "shared budget for unfinished messages exhausted")      \
  X(HTTP, -1110, 0, "malformed HTTP head")                                     \
  X(HEAD_TOO_BIG, -1111, 0, "HTTP head too large")                             \
  X(HANDSHAKE, -1112, 0, "WebSocket handshake refused")                        \
  X(EXTENSION, -1113, 1010, "extension negotiation failed")                    \
  X(INFLATE, -1114, 1007, "invalid compressed data")                           \
  X(INVALID_ARG, -1300, 0, "invalid argument")                                 \
  X(BAD_STATE, -1301, 0, "not allowed in this connection state")               \
  X(CLOSED, -1302, 0, "connection is closing or closed")                       \
  X(NOMEM, -1500, 1011, "out of memory")                                       \
  X(INTERNAL, -1501, 1011, "internal error")

typedef enum herald_err {
  HERALD_OK = 0,
#define HERALD_ERR_ENUM_(name, value, code, msg) HERALD_ERR_##name = value,
  HERALD_ERRORS(HERALD_ERR_ENUM_)
#undef HERALD_ERR_ENUM_
} herald_err;

/* Returns a static, human-readable message for err ("unknown error" for a
 * value that is not a herald_err). Never NULL. */
HERALD_API const char *herald_strerror(int err);

/* Returns the symbolic name of err ("HERALD_ERR_PROTO"), or "UNKNOWN". */
HERALD_API const char *herald_err_name(int err);

/* Returns 1 if err is fatal (band -15xx): the connection must be deleted. */
HERALD_API int herald_err_is_fatal(int err);

/* Returns the close code that answers err (1002, 1007, 1008, 1009, 1010,
 * 1011, 1013), or 0 when no close frame applies. */
HERALD_API uint16_t herald_err_close_code(int err);

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

/* Allocation hooks. Every allocation of the core goes through these, so a
 * test can fail the Nth one. NULL in a config means malloc/realloc/free. */
typedef struct herald_mem {
  void *(*malloc)(size_t size, void *user_data);
  void *(*realloc)(void *ptr, size_t size, void *user_data);
  void (*free)(void *ptr, void *user_data);
  void *user_data;
} herald_mem;

/* ------------------------------------------------------------------------ */
/* Plain data shared by the handshake and the HTTP layer                     */
/* ------------------------------------------------------------------------ */

/* A borrowed byte span; ptr is not NUL-terminated. len 0 means absent or
 * empty (ptr may then be NULL). */
typedef struct herald_str {
  const char *ptr;
  size_t len;
} herald_str;

typedef struct herald_header {
  herald_str name;  /* as sent; compare case-insensitively */
  herald_str value; /* leading and trailing whitespace removed */
} herald_header;

/* A parsed HTTP/1.1 request head. Every span points into the bytes passed to
 * herald_conn_recv(); they stay valid while the caller keeps those bytes
 * unchanged and at most until the next herald_conn_* call that changes the
 * connection's state (accept, reject, reset, del). */
typedef struct herald_request {
  herald_str method;
  herald_str target; /* request-target as sent: path?query */
  herald_str path;   /* target up to '?' (for an absolute-form target,
                        "http://host/x", that includes scheme and host) */
  herald_str query;  /* after '?', without it; empty if none */
  int version_minor; /* HTTP/1.<minor> */
  const herald_header *headers;
  size_t nheaders;
  size_t head_len; /* bytes of the head, through the empty line */

  /* Filled for every request: */
  int websocket; /* 1: a valid WebSocket upgrade (RFC 6455 4.2.1) */
  herald_str host;
  herald_str origin;
  herald_str content_length; /* raw value, empty if absent */
  /* Filled when websocket == 1: */
  herald_str key;        /* Sec-WebSocket-Key */
  herald_str protocols;  /* Sec-WebSocket-Protocol, comma list (first line) */
  herald_str extensions; /* Sec-WebSocket-Extensions (first line) */
} herald_request;

/* A parsed HTTP/1.1 response head (client role). Same lifetime rules. */
typedef struct herald_response {
  int status;
  herald_str reason;
  int version_minor;
  const herald_header *headers;
  size_t nheaders;
  size_t head_len;
  herald_str protocol;   /* Sec-WebSocket-Protocol chosen by the server */
  herald_str extensions; /* Sec-WebSocket-Extensions accepted */
} herald_response;

/* Reads a Content-Length value (RFC 9110 section 8.6: 1*DIGIT, nothing
 * else, not empty) into *out. Returns 0, or -1 (nothing written) if v is
 * not one or does not fit in 64 bits. A request the core parsed has passed
 * this check already (with the framing rules of RFC 9112 section 6.3). */
HERALD_API int herald_http_content_length(herald_str v, uint64_t *out);

/* Looks up the first header named name (case-insensitive) in headers.
 * Returns 1 and fills *value if found, 0 otherwise. */
HERALD_API int herald_header_find(const herald_header *headers, size_t n,
                                  const char *name, herald_str *value);

/* Iterates a comma-separated token list (RFC 9110 5.6.1), skipping empty
 * elements and whitespace. *pos starts at 0. Returns 1 and fills *token while
 * tokens remain, 0 at the end. */
HERALD_API int herald_list_next(herald_str list, size_t *pos,
                                herald_str *token);

/* ------------------------------------------------------------------------ */
/* Configuration and limits                                                  */
/* ------------------------------------------------------------------------ */

typedef enum herald_role {
  HERALD_ROLE_SERVER = 0,
  HERALD_ROLE_CLIENT = 1
} herald_role;

/* Fills buf with len cryptographically secure random bytes. Returns 0 on
 * success, nonzero on failure. */
typedef int (*herald_random_fn)(void *buf, size_t len, void *user_data);

/* A byte budget shared by connections (below, "A byte budget"). */
typedef struct herald_budget herald_budget;

/*
 * permessage-deflate (RFC 7692) policy. Off by default. The four window and
 * context fields are what a client offers and what a server accepts; the
 * rest steer our own compressor. Memory per direction and connection is
 * documented in docs/performance.md (about 2^(bits+2) + 2^(mem_level+9)
 * bytes to compress, 2^bits + 7 KiB to decompress, each allocated when the
 * first compressed message needs it).
 */
typedef struct herald_deflate_config {
  int enabled; /* 0: never offered or accepted (default) */
  /* 0 (default). Client: ask the server not to keep its compression context
   * between messages (saves our inflate window between messages). Server:
   * always answer with it (needed for herald_conn_send_frame() of
   * compressed frames). An offer that asks for it is always accepted. */
  int server_no_context_takeover;
  /* 0 (default). Client: promise to reset our compressor after every
   * message. Server: always ask the client to (our inflater is reset
   * between messages). An offer that asks for it is always accepted. */
  int client_no_context_takeover;
  /* 15 (default), 8..15: the largest LZ77 window, in bits, the server
   * compresses with. Client: offered when below 15. Server: the answer is
   * min(offer, this); zlib cannot compress with an 8-bit window, so 8 acts
   * as 9 and an offer that demands 8 is declined. */
  int server_max_window_bits;
  /* 15 (default), 8..15: the largest window the client compresses with.
   * Client: offered (valueless when 15). Server: below 15, offers that do
   * not let us limit the client's window are declined. A client whose
   * agreed window is 8 sends its messages uncompressed (legal: compression
   * is per message). */
  int client_max_window_bits;
  /* 64: whole messages shorter than this are sent uncompressed. */
  size_t threshold;
  /* 3: zlib level, 0..9 or -1 (zlib's default, 6). On JSON-like text 6
   * is about 15 % smaller than 3 but about 40 % slower (docs/performance.md).
   */
  int level;
  /* 8: zlib memLevel, 1..9: the compressor's hash table is
   * 2^(mem_level+9) bytes. */
  int mem_level;
  /* 4096: whole messages of at least this many bytes are compressed with
   * Intel ISA-L's igzip (level 2) instead of zlib, when herald was built
   * with it (herald_deflate_fast_available()); 0: always zlib. From 4 KiB
   * up igzip takes a quarter to a half of zlib level 3's CPU, for about
   * 10 % more bytes on JSON (and fewer to 25 % more on very repetitive
   * text); below ~1 KiB it is slower (docs/performance.md). Costs about
   * 245 KiB more per connection once such a message is sent, kept with
   * context takeover. Either engine continues the other's context. */
  size_t fast_min_size;
  /* NULL (default): none. A budget (herald_budget_new) shared with other
   * connections for their compression state, counted at its largest for
   * the agreed parameters: zlib's compressor, 2^(bits+2) + 2^(mem_level+9)
   * + 6 KiB when we compress, and its decompressor, 32 KiB + 7 KiB, drawn
   * when permessage-deflate would be agreed; igzip's, about 215 KiB plus
   * 2^bits with context takeover, drawn when a message first needs it.
   * Refused, the extension is not agreed (server: the 101 answers without
   * it; client: it is not offered) and the connection goes on without
   * compression; igzip refused, the connection compresses with zlib. Each
   * refusal counts in herald_budget_refused(). Drawn bytes are given back
   * when the connection is deleted (igzip's when its compressor is freed:
   * herald_conn_trim() without context takeover). The budget must outlive
   * every connection that uses it. */
  herald_budget *budget;
} herald_deflate_config;

/* 1 if this build compresses large messages with ISA-L's igzip
 * (herald_deflate_config.fast_min_size), 0 if it has zlib only. */
HERALD_API int herald_deflate_fast_available(void);

/*
 * A byte budget shared by many connections, on any threads: what they may
 * hold together of one kind of memory. One kind is compression state
 * (herald_deflate_config.budget, above); the other, described here, is
 * messages that have not finished arriving (herald_config.budget).
 *
 * A message that is not delivered in place (whole in one read) nor in chunks
 * (streaming) is reassembled in its connection's message buffer, which grows
 * with it up to max_message_size, after inflating. A peer can make that
 * buffer large with little input (a compressed message) and keep it for as
 * long as the connection lives by never finishing the message. With a budget
 * in the config, a connection draws on it for its message buffer, at the
 * buffer's full size, from the first byte of a message put there until the
 * message is delivered, the connection fails, its transport ends
 * (herald_conn_recv_eof) or it is deleted. A connection whose buffer would
 * take the total past the limit fails with HERALD_ERR_BUSY (close 1013, try
 * again later) and gives its bytes back at once; no other connection is
 * touched. Thread-safe (one atomic counter).
 */
/* Creates a budget of limit bytes (0: no limit, counting only), allocated
 * through mem (NULL: malloc). Returns 0 and sets *pbudget, or
 * HERALD_ERR_INVALID_ARG / HERALD_ERR_NOMEM. */
HERALD_API int herald_budget_new(herald_budget **pbudget, uint64_t limit,
                                 const herald_mem *mem);

/* Frees budget (NULL is fine). Every connection using it must be deleted
 * first. */
HERALD_API void herald_budget_del(herald_budget *budget);

/* Bytes drawn now, across all its connections. Thread-safe. */
HERALD_API uint64_t herald_budget_used(const herald_budget *budget);

/* Draws refused so far: connections failed with HERALD_ERR_BUSY (or, for
 * a compression budget, compression not agreed or igzip not used).
 * Thread-safe. */
HERALD_API uint64_t herald_budget_refused(const herald_budget *budget);

/*
 * Everything a peer can make grow has a limit here, with its default and the
 * reaction when it is passed. Initialise with herald_config_init(), then
 * override fields. A connection borrows its config: the config must outlive
 * every connection created with it, and must not change while they live.
 */
typedef struct herald_config {
  herald_role role;
  const herald_mem *mem; /* NULL: libc */

  /* Opening handshake. */
  size_t max_head_bytes; /* 8192: HTTP head bytes -> 431 (server) or
                            HERALD_ERR_HEAD_TOO_BIG (client) */
  size_t max_headers;    /* 64: header lines -> 431 */

  /* Frames and messages. */
  uint64_t max_frame_size;   /* 16 MiB: one frame's payload -> close 1009 */
  uint64_t max_message_size; /* 16 MiB: one message's payload, after any
                                decompression -> close 1009 */
  uint32_t max_fragments;    /* 65536: frames in one message -> close 1008 */
  /* 64: pongs queued and not yet written. Every ping is answered while fewer
   * wait; past that, later pings share one pong, for the latest of them
   * (RFC 6455 5.5.3), queued once fewer wait. Must not be 0. */
  uint32_t max_pending_pongs;
  /* NULL (default): none. A budget shared with other connections for the
   * message buffers of unfinished messages; see herald_budget. Passing it
   * -> close 1013. Borrowed, like the config. */
  herald_budget *budget;

  /* Delivery. 0 (default): each message is delivered whole, reassembled from
   * its fragments. 1: each frame's payload is delivered as it arrives, in
   * chunks (ev.fin marks the last), and nothing is buffered; UTF-8 is still
   * validated incrementally and max_message_size still applies. */
  int stream_messages;

  /* Send path. Payloads shorter than copy_threshold bytes are copied into the
   * connection's output buffer (cheaper than one more iovec); longer ones are
   * referenced when the caller supplies a release callback. Default 1024. */
  size_t copy_threshold;

  /* Client role: source of Sec-WebSocket-Key and masking keys. NULL: the
   * core's own generator (getrandom(2), buffered). */
  herald_random_fn random;
  void *random_user_data;

  /* permessage-deflate; see herald_deflate_config. A compressed message's
   * size limits: max_frame_size applies to each compressed frame as sent,
   * max_message_size to the inflated message (checked while inflating: a
   * peer can never make the core hold more), and the compressed bytes of
   * one message may not exceed max_message_size + max_message_size / 8 +
   * 64 KiB (close 1009). */
  herald_deflate_config deflate;
} herald_config;

/* Fills cfg with the documented defaults for role. */
HERALD_API void herald_config_init(herald_config *cfg, herald_role role);

/* ------------------------------------------------------------------------ */
/* Connection                                                                */
/* ------------------------------------------------------------------------ */

typedef struct herald_conn herald_conn;

/* RFC 6455 section 7 states, as seen from this endpoint. */
typedef enum herald_state {
  HERALD_STATE_CONNECTING = 0, /* opening handshake in progress */
  HERALD_STATE_OPEN = 1,       /* messages flow both ways */
  HERALD_STATE_CLOSING = 2,    /* we sent a close frame, the peer has not */
  HERALD_STATE_CLOSED = 3      /* close handshake done, connection failed,
                                  or HTTP request refused */
} herald_state;

typedef enum herald_opcode {
  HERALD_OP_CONT = 0x0,
  HERALD_OP_TEXT = 0x1,
  HERALD_OP_BINARY = 0x2,
  HERALD_OP_CLOSE = 0x8,
  HERALD_OP_PING = 0x9,
  HERALD_OP_PONG = 0xA
} herald_opcode;

/* Close codes of RFC 6455 section 7.4.1 (and 1012-1014 from the IANA
 * registry). 1005 and 1006 are never sent; they only appear in events. */
enum {
  HERALD_CLOSE_NORMAL = 1000,
  HERALD_CLOSE_GOING_AWAY = 1001,
  HERALD_CLOSE_PROTOCOL = 1002,
  HERALD_CLOSE_UNSUPPORTED = 1003,
  HERALD_CLOSE_NO_STATUS = 1005,
  HERALD_CLOSE_ABNORMAL = 1006,
  HERALD_CLOSE_BAD_DATA = 1007,
  HERALD_CLOSE_POLICY = 1008,
  HERALD_CLOSE_TOO_BIG = 1009,
  HERALD_CLOSE_EXTENSION = 1010,
  HERALD_CLOSE_INTERNAL = 1011,
  HERALD_CLOSE_RESTART = 1012,
  HERALD_CLOSE_TRY_LATER = 1013,
  HERALD_CLOSE_BAD_GATEWAY = 1014
};

/* Returns 1 if code may appear in a close frame on the wire (RFC 6455 7.4):
 * 1000-1003, 1007-1014 and 3000-4999. */
HERALD_API int herald_close_code_valid(uint32_t code);

typedef enum herald_event_type {
  HERALD_EV_NONE = 0, /* the input was consumed and no event is complete */
  HERALD_EV_REQUEST,  /* server: an HTTP request head arrived (ev.request) */
  HERALD_EV_OPEN,     /* client: the server accepted (ev.response) */
  HERALD_EV_TEXT,     /* a text message or chunk (ev.data, ev.len, ev.fin) */
  HERALD_EV_BINARY,   /* a binary message or chunk */
  HERALD_EV_PING,     /* a ping; the pong is already queued (unless our
                         close frame went out first: then none is owed) */
  HERALD_EV_PONG,     /* a pong */
  HERALD_EV_CLOSE     /* the peer closed (ev.code, ev.data = reason), or the
                         transport ended (code 1006) */
} herald_event_type;

/*
 * One event. Its pointers are borrowed: data points either into the caller's
 * input buffer (which the core unmasks in place) or into the connection's own
 * message buffer, and is valid until the next herald_conn_* call on the same
 * connection or until the caller changes that input, whichever comes first.
 * Copy what you keep.
 */
typedef struct herald_event {
  herald_event_type type;
  uint8_t *data; /* payload, reason of a close; writable, not NUL-terminated */
  size_t len;
  int first;     /* TEXT/BINARY: 1 on the first chunk of a message */
  int fin;       /* TEXT/BINARY: 1 on the last chunk (always in whole mode) */
  uint16_t code; /* CLOSE: the peer's code, 1005 if it sent none, 1006 when
                    the transport ended without a close frame */
  const herald_request *request;   /* REQUEST */
  const herald_response *response; /* OPEN */
} herald_event;

/* Creates a connection in state CONNECTING for cfg->role. cfg is borrowed for
 * the connection's whole life, until herald_conn_del() returns (which frees
 * through cfg->mem). Returns 0 and sets *pconn, or
 * HERALD_ERR_NOMEM / HERALD_ERR_INVALID_ARG (leaving *pconn unchanged). */
HERALD_API int herald_conn_new(herald_conn **pconn, const herald_config *cfg);

/* Frees conn. Payloads still queued for output have their release callbacks
 * called. conn may be NULL. */
HERALD_API void herald_conn_del(herald_conn *conn);

HERALD_API herald_state herald_conn_state(const herald_conn *conn);

/* Turns streaming delivery on (1) or off (0) for this connection, overriding
 * cfg->stream_messages. Called between messages it applies at once; called
 * while a message is arriving, that message keeps its mode and the change
 * applies from the next one. */
HERALD_API void herald_conn_set_streaming(herald_conn *conn, int on);

/*
 * Feeds received bytes and returns at most one event.
 *
 * in: the caller's buffer; the core unmasks payloads in place, so it must be
 * writable. It is borrowed for the call, and event data may point into it.
 *
 * Returns the number of bytes consumed (>= 0, at most 1 GiB per call) and
 * fills *ev. Type NONE means every byte was consumed or the bytes left are an
 * incomplete unit; after an event, call again with the bytes that remain. Bytes
 * not consumed must be presented again, followed by newer bytes, on the next
 * call: the core leaves an incomplete HTTP head (up to cfg->max_head_bytes) or
 * an incomplete frame header or control frame (up to 14 + 125 bytes) in the
 * caller's buffer rather than copying it. Data payloads are always consumed as
 * they arrive.
 *
 * Returns a negative herald_err when the peer broke the protocol. The core has
 * then queued the answer (a close frame with herald_err_close_code(), or an
 * HTTP 4xx refusal), moved to CLOSED, and returns the same error on every
 * later call (the error is sticky). herald_conn_error_reason() says what was
 * wrong. The caller should flush the output, then close the transport.
 *
 * After HERALD_EV_REQUEST the caller must answer with herald_conn_accept(),
 * herald_conn_reject(), or (for plain HTTP) serve it and call
 * herald_conn_reset(); until then recv returns HERALD_ERR_BAD_STATE.
 * In CLOSED (after the close handshake) input is discarded.
 */
HERALD_API int herald_conn_recv(herald_conn *conn, uint8_t *in, size_t inlen,
                                herald_event *ev);

/*
 * Reading a large payload straight into its final place. While a data frame
 * of a message delivered whole (not streamed, not compressed) is being
 * received and the message buffer already holds room for the rest of the
 * frame, herald_conn_recv_room() returns where that rest goes: the free end
 * of the message buffer, with *room set to the frame's remaining payload
 * bytes (>= 1). The caller may read up to *room bytes of input there (the
 * bytes that follow in the stream: exactly what it would otherwise pass to
 * herald_conn_recv()) and then must call herald_conn_recv_placed() with the
 * count, before any other call on the connection. Returns NULL (and *room
 * 0) in every other state: input then goes through herald_conn_recv(). The
 * pointer is the connection's; it is valid until the next call.
 */
HERALD_API uint8_t *herald_conn_recv_room(herald_conn *conn, size_t *room);

/* Processes n bytes (1 <= n <= the room given) that the caller read at the
 * pointer herald_conn_recv_room() returned, as herald_conn_recv() would
 * have processed them: unmasked, checked (UTF-8) and added to the message,
 * which is delivered in *ev once complete. Returns n and fills *ev (NONE
 * until the message is complete), or a negative herald_err: the peer broke
 * the protocol (as for herald_conn_recv), or HERALD_ERR_INVALID_ARG when n
 * is 0, exceeds the room, or no room was given (nothing changed). */
HERALD_API int herald_conn_recv_placed(herald_conn *conn, size_t n,
                                       herald_event *ev);

/* Tells the core the transport has ended (EOF or error). If the connection
 * was OPEN or CLOSING (no close frame from the peer yet, no failure), fills
 * *ev with HERALD_EV_CLOSE code 1006 (RFC 6455 7.1.5) and returns 1; in every
 * other state (still in the handshake, refused, failed, already closed) fills
 * HERALD_EV_NONE and returns 0. The connection is CLOSED afterwards and later
 * input is discarded; later calls return 0. */
HERALD_API int herald_conn_recv_eof(herald_conn *conn, herald_event *ev);

/* A short static description of the protocol error that failed the
 * connection, citing the RFC section; "" if none. */
HERALD_API const char *herald_conn_error_reason(const herald_conn *conn);

/* ---- opening handshake ------------------------------------------------- */

typedef struct herald_accept {
  const char *subprotocol;      /* one of the offered ones, or NULL */
  const herald_header *headers; /* extra response headers, or NULL */
  size_t nheaders;
  int no_deflate; /* 1: no permessage-deflate for this connection, even if
                     cfg->deflate.enabled and the client offers it */
} herald_accept;

/* Server: accepts the WebSocket request of the last HERALD_EV_REQUEST. Queues
 * the 101 response (copied) and moves to OPEN. opts may be NULL.
 * With cfg->deflate.enabled (and not opts->no_deflate), the first
 * permessage-deflate offer that the policy accepts, across every
 * Sec-WebSocket-Extensions header of the request, is answered in the 101
 * (RFC 7692 5); herald_conn_deflate() then reports the agreed parameters.
 * Unacceptable offers are declined silently: the connection opens without
 * compression.
 * Returns 0, HERALD_ERR_BAD_STATE (no pending upgrade request),
 * HERALD_ERR_INVALID_ARG (subprotocol not offered, or a header with CR/LF),
 * or HERALD_ERR_NOMEM. */
HERALD_API int herald_conn_accept(herald_conn *conn, const herald_accept *opts);

/* Server: refuses the pending request with an HTTP status (400-599) and a
 * short plain-text reason (may be NULL). Queues the response (copied) and
 * moves to CLOSED; the caller closes the transport once it is flushed.
 * Returns 0, HERALD_ERR_BAD_STATE, HERALD_ERR_INVALID_ARG or
 * HERALD_ERR_NOMEM. */
HERALD_API int herald_conn_reject(herald_conn *conn, int status,
                                  const char *reason,
                                  const herald_header *headers,
                                  size_t nheaders);

/* Server: answers the pending plain HTTP request (websocket == 0) with a
 * complete response: status (100-599 except 101), extra headers, and body
 * (copied; Content-Length is added). keep_alive: 1 to wait for the next
 * request on this connection (the caller must have consumed the request's
 * body), 0 to add "Connection: close" and move to CLOSED. Returns 0,
 * HERALD_ERR_BAD_STATE (no pending plain request), HERALD_ERR_INVALID_ARG
 * (status, or CR/LF in a header) or HERALD_ERR_NOMEM. */
HERALD_API int herald_conn_respond(herald_conn *conn, int status,
                                   const herald_header *headers,
                                   size_t nheaders, const void *body,
                                   size_t bodylen, int keep_alive);

/* Server: after serving a plain HTTP request (websocket == 0) yourself, makes
 * the connection wait for the next request head (HTTP keep-alive). Bytes of
 * the served request (head and body) must have been consumed by the caller.
 * Returns 0, or HERALD_ERR_BAD_STATE (no pending plain request). */
HERALD_API int herald_conn_reset(herald_conn *conn);

typedef struct herald_client_opts {
  const char *host;   /* Host header value, with ":port" when not default */
  const char *path;   /* request-target, "/" if NULL */
  const char *origin; /* NULL: no Origin header */
  const char *const *subprotocols; /* offered, in order of preference */
  size_t nsubprotocols;
  const herald_header *headers; /* extra request headers */
  size_t nheaders;
} herald_client_opts;

/* Client: queues the opening handshake request (with a fresh random key).
 * With cfg->deflate.enabled it offers permessage-deflate (RFC 7692 5, the
 * parameters from cfg->deflate); the response is then checked: an
 * extension we did not offer, or a permessage-deflate answer with invalid,
 * repeated, unknown or inconsistent parameters, fails the handshake with
 * HERALD_ERR_EXTENSION (herald_conn_error_reason() says which).
 * All strings are copied. Returns 0, HERALD_ERR_BAD_STATE (not a client in
 * CONNECTING, or already started), HERALD_ERR_INVALID_ARG (missing host,
 * CR/LF in a value, bad subprotocol token), HERALD_ERR_INTERNAL (random
 * source failed) or HERALD_ERR_NOMEM. The response is validated by
 * herald_conn_recv(), which returns HERALD_EV_OPEN or HERALD_ERR_HANDSHAKE. */
HERALD_API int herald_conn_client_start(herald_conn *conn,
                                        const herald_client_opts *opts);

/* The permessage-deflate parameters in force (RFC 7692 7.1), as the
 * server's response stated them. */
typedef struct herald_deflate_params {
  int server_no_context_takeover;
  int client_no_context_takeover;
  int server_max_window_bits; /* 8..15; 15 when the response omitted it */
  int client_max_window_bits; /* 8..15; 15 when the response omitted it */
} herald_deflate_params;

/* Returns 1 and fills *out (may be NULL) if permessage-deflate was agreed
 * in the opening handshake, 0 otherwise (out is zeroed). */
HERALD_API int herald_conn_deflate(const herald_conn *conn,
                                   herald_deflate_params *out);

/* ---- sending ------------------------------------------------------------ */

/* Called once when the core no longer needs a referenced payload. */
typedef void (*herald_release_fn)(void *ctx);

/* Send flags. */
enum {
  HERALD_SEND_MORE = 1,        /* more fragments of this message follow (FIN
                                  = 0) */
  HERALD_SEND_NO_COMPRESS = 2, /* send this message uncompressed even if
                                  permessage-deflate was agreed */
  HERALD_SEND_BORROW = 4       /* with release NULL: data stays valid until
                                  herald_conn_output_own(), see below */
};

/*
 * Queues a data message, or one fragment of it.
 *
 * op: HERALD_OP_TEXT or HERALD_OP_BINARY, the same on every fragment of a
 * message (the core writes CONT on the wire for all but the first).
 * data/len: the payload. The core does not validate outgoing UTF-8.
 *
 * Compression: when permessage-deflate was agreed, a whole message (no
 * HERALD_SEND_MORE, not a fragment) of at least cfg->deflate.threshold
 * bytes is compressed into the output buffer (so the payload is always
 * copied, and release is called before return), unless flags has
 * HERALD_SEND_NO_COMPRESS. Fragmented messages go out uncompressed.
 *
 * Ownership: if release is NULL, or len < cfg->copy_threshold, or the role is
 * client (payloads are masked into the output buffer), the payload is copied
 * and release (if any) is called before this function returns. Otherwise the
 * core keeps the pointer, and data must stay valid and unchanged until the
 * core calls release(ctx), exactly once, after the bytes were reported
 * written by herald_conn_output_consumed() or when the connection is deleted.
 * On error release is not called and nothing was queued.
 *
 * Borrowing: with HERALD_SEND_BORROW and release NULL, a payload the rules
 * above would reference (not compressed, len >= cfg->copy_threshold, server
 * role) is referenced without a release: data must stay valid and unchanged
 * until the caller's next herald_conn_output_own(), which copies whatever
 * of it is still unwritten. For a payload in a read buffer that the caller
 * reuses only after writing: queue, write, own, reuse; the bytes written
 * at once are never copied.
 *
 * Echoes: with release NULL, a payload that lies in the message just
 * delivered from the connection's own message buffer (ev.data of the last
 * whole message, before the next herald_conn_recv()), and that the rules
 * above would reference, is not copied: the output queue takes that buffer
 * over and frees it once written. ev.data stays valid as before.
 *
 * Returns 0, HERALD_ERR_CLOSED (a close frame was already sent or the
 * connection is CLOSED: nothing is written after close), HERALD_ERR_BAD_STATE
 * (CONNECTING, or op differs from the message in progress),
 * HERALD_ERR_INVALID_ARG, HERALD_ERR_NOMEM, or HERALD_ERR_INTERNAL (zlib
 * failed; nothing was queued).
 */
HERALD_API int herald_conn_send(herald_conn *conn, herald_opcode op,
                                const void *data, size_t len, unsigned flags,
                                herald_release_fn release, void *ctx);

/* Queues a ping (len <= 125, copied). Returns 0, HERALD_ERR_CLOSED,
 * HERALD_ERR_BAD_STATE, HERALD_ERR_INVALID_ARG or HERALD_ERR_NOMEM. */
HERALD_API int herald_conn_ping(herald_conn *conn, const void *data,
                                size_t len);

/* Queues an unsolicited pong (len <= 125, copied). Same returns as ping. */
HERALD_API int herald_conn_pong(herald_conn *conn, const void *data,
                                size_t len);

/* Starts the close handshake: queues a close frame with code (a valid code,
 * see herald_close_code_valid(), or 0 for a close without a code) and reason
 * (UTF-8, at most 123 bytes, copied), and moves to CLOSING, or to CLOSED when
 * the peer's close already arrived. Returns 0, HERALD_ERR_CLOSED (already
 * sent), HERALD_ERR_BAD_STATE (CONNECTING), HERALD_ERR_INVALID_ARG (code or
 * reason) or HERALD_ERR_NOMEM. */
HERALD_API int herald_conn_close(herald_conn *conn, uint16_t code,
                                 const char *reason, size_t reasonlen);

/* ---- output ------------------------------------------------------------- */

/* Fills iov[0..iovcnt) with the pending output in order and returns the
 * number of entries used (0: nothing to write). The memory is owned by the
 * connection (or by the sender of a referenced payload) and stays valid
 * until the next call on conn that may add output or consume it (any send,
 * close, accept, reject, respond, recv, or herald_conn_output() itself): take
 * the iovecs, write them, report what was written, in that order. */
HERALD_API int herald_conn_output(herald_conn *conn, struct iovec *iov,
                                  int iovcnt);

/* Reports that the first n bytes of the pending output were written. Calls
 * the release callbacks of payloads now fully written. Returns 0, or
 * HERALD_ERR_INVALID_ARG if n exceeds the pending output. */
HERALD_API int herald_conn_output_consumed(herald_conn *conn, size_t n);

/* Copies into the connection's own buffer the unwritten part of every
 * payload queued with HERALD_SEND_BORROW, after which the caller may reuse
 * that memory. Cheap when nothing is borrowed. Returns 0 or
 * HERALD_ERR_NOMEM (then the borrowed payloads are still referenced: the
 * caller must keep them valid or delete the connection). Invalidates
 * earlier iovecs. */
HERALD_API int herald_conn_output_own(herald_conn *conn);

/* Bytes queued and not yet reported written. */
HERALD_API size_t herald_conn_output_size(const herald_conn *conn);

/* Releases the output and message buffers while they are empty, so an idle
 * connection holds only its own struct, and the zlib streams of directions
 * without context takeover (with takeover, the window is the context and
 * stays). Call it when a connection goes idle; everything is allocated again
 * on demand. */
HERALD_API void herald_conn_trim(herald_conn *conn);

/* Returns 1 when the transport should now be closed: the connection is
 * CLOSED and all its output has been consumed. */
HERALD_API int herald_conn_done(const herald_conn *conn);

/* ------------------------------------------------------------------------ */
/* Standalone helpers (no connection needed)                                 */
/* ------------------------------------------------------------------------ */

/* Largest frame header: 2 + 8 (length) + 4 (mask). */
#define HERALD_MAX_FRAME_HEADER 14

/* Writes a frame header into out (at least HERALD_MAX_FRAME_HEADER bytes) and
 * returns its length. mask: NULL for an unmasked (server) frame, else the 4
 * key bytes (the caller masks the payload). rsv: RSV1-3 bits (0x40, 0x20,
 * 0x10) to set. A server frame's bytes are the same for every recipient, so
 * this is the building block of encode-once broadcast. */
HERALD_API size_t herald_frame_header(uint8_t *out, herald_opcode op, int fin,
                                      unsigned rsv, uint64_t len,
                                      const uint8_t *mask);

/*
 * Encode once, send to many (server role). Builds one complete, unmasked,
 * final frame holding a whole message: compressed with a fresh raw-deflate
 * stream of 2^window_bits bytes (9..15) at zlib level (-1..9), or plain
 * when window_bits is 0 or when compressing did not make it smaller. The
 * frame is allocated through mem (NULL: malloc) and belongs to the caller,
 * who frees it with herald_frame_free(mem, frame) once every connection it
 * was queued on has released it. *compressed (may be NULL) receives
 * window_bits if the frame is compressed, else 0: pass it to
 * herald_conn_send_frame(). Returns 0, HERALD_ERR_INVALID_ARG,
 * HERALD_ERR_NOMEM or HERALD_ERR_INTERNAL.
 */
HERALD_API int herald_frame_prepare(herald_opcode op, const void *data,
                                    size_t len, int window_bits, int level,
                                    const herald_mem *mem, uint8_t **frame,
                                    size_t *framelen, int *compressed);

/* Frees a frame from herald_frame_prepare() (NULL is fine). */
HERALD_API void herald_frame_free(const herald_mem *mem, uint8_t *frame);

/*
 * Queues a frame built by herald_frame_prepare() (or any single unmasked
 * final text/binary frame) on a server connection, between messages.
 * compressed: 0 for a plain frame, else the window bits it was compressed
 * with; such a frame is taken only if the connection agreed
 * permessage-deflate with server_no_context_takeover and a server window of
 * at least that many bits (our compressor keeps no context there, so a
 * message compressed elsewhere cannot upset it).
 * Ownership as herald_conn_send(): with release NULL or a frame shorter than
 * cfg->copy_threshold it is copied (and release called); otherwise it is
 * referenced until release(ctx). Returns 0, HERALD_ERR_CLOSED,
 * HERALD_ERR_BAD_STATE (client role, CONNECTING, a fragmented message in
 * progress, or compressed frames not allowed on this connection: send the
 * plain frame instead), HERALD_ERR_INVALID_ARG (not one well-formed frame,
 * or RSV1 disagrees with compressed) or HERALD_ERR_NOMEM.
 */
HERALD_API int herald_conn_send_frame(herald_conn *conn, const uint8_t *frame,
                                      size_t len, int compressed,
                                      herald_release_fn release, void *ctx);

/* Computes Sec-WebSocket-Accept for key (RFC 6455 4.2.2): writes 28
 * characters and a NUL into out. */
HERALD_API void herald_accept_key(const char *key, size_t keylen, char out[29]);

/* Validates UTF-8 in one go. Returns 1 if p[0..n) is complete, valid UTF-8. */
HERALD_API int herald_utf8_valid(const void *p, size_t n);

/* ---- base64 (RFC 4648) -------------------------------------------------- */

/* Characters herald_base64_encode() writes for n bytes: 4 * ceil(n / 3). */
#define HERALD_BASE64_ENCODED_LEN(n) (4 * (((size_t)(n) + 2) / 3))

/* Bytes herald_base64_decode() may write for n characters, at most. */
#define HERALD_BASE64_DECODED_MAX(n) ((size_t)(n) / 4 * 3)

/* Encodes in[0..n) as base64 with padding (RFC 4648 section 4, alphabet
 * A-Z a-z 0-9 + /, '=' to fill the last group of four) into out[0..outcap),
 * the caller's buffer. Writes exactly HERALD_BASE64_ENCODED_LEN(n)
 * characters and no NUL (add one when a C string is wanted: the output
 * never contains one). in may be NULL when n is 0; in and out must not
 * overlap. Nothing is allocated and nothing is kept after the call.
 * Returns the number of characters written, or HERALD_ERR_INVALID_ARG,
 * with nothing written, when outcap is less than that. */
HERALD_API long herald_base64_encode(char *out, size_t outcap,
                                     const uint8_t *in, size_t n);

/* Decodes in[0..n) (not NUL-terminated; may be NULL when n is 0) into
 * out[0..outcap), the caller's buffer. Only the canonical padded form is
 * accepted, so that a byte string has exactly one encoding: a length that
 * is a multiple of 4, characters of the alphabet above only (no
 * whitespace, line breaks or base64url "-_"), '=' only as the last one or
 * two characters, and zero in the bits the padding leaves unused (RFC 4648
 * section 3.5). Exactly the decoded length is room enough, and
 * HERALD_BASE64_DECODED_MAX(n) always is. in and out must not overlap.
 * Nothing is allocated and nothing is kept after the call.
 * Returns the number of bytes written (0 for n == 0), or
 * HERALD_ERR_INVALID_ARG when in is not canonical base64 or its bytes do
 * not fit in outcap. After an error out[0..outcap) may have been changed;
 * when the bytes merely did not fit, nothing was written. */
HERALD_API long herald_base64_decode(uint8_t *out, size_t outcap,
                                     const char *in, size_t n);

/* The value (0..63) of one base64 character c, or -1 when c is not in the
 * alphabet. c62 and c63 are the alphabet's last two characters, '+' and
 * '/' for base64 (RFC 4648 section 4) or '-' and '_' for base64url
 * (section 5); they must not be letters, digits or '='. The padding '='
 * has no value. For readers the functions above do not cover: unpadded
 * base64url (JWT), or base64 inside an escaped JSON string. */
HERALD_API int herald_base64_value(unsigned char c, char c62, char c63);

/* ------------------------------------------------------------------------ */
/* Streaming HTTP responses                                                  */
/* ------------------------------------------------------------------------ */

/* Server: answers the pending plain HTTP request with a response whose body
 * is streamed (Server-Sent Events): queues the head (status 200-599, extra
 * headers, "Connection: close", no Content-Length), after which the body is
 * whatever herald_conn_stream_write() queues, until herald_conn_stream_end()
 * (then CLOSED: the caller closes the transport once flushed). Further input
 * is discarded. Returns 0, HERALD_ERR_BAD_STATE (no pending plain request),
 * HERALD_ERR_INVALID_ARG or HERALD_ERR_NOMEM. */
HERALD_API int herald_conn_stream_start(herald_conn *conn, int status,
                                        const herald_header *headers,
                                        size_t nheaders);

/* Queues body bytes of a streaming response (copied). Returns 0,
 * HERALD_ERR_BAD_STATE (not streaming), HERALD_ERR_INVALID_ARG or
 * HERALD_ERR_NOMEM. */
HERALD_API int herald_conn_stream_write(herald_conn *conn, const void *data,
                                        size_t len);

/* Ends a streaming response. Returns 0 or HERALD_ERR_BAD_STATE. */
HERALD_API int herald_conn_stream_end(herald_conn *conn);

#ifdef __cplusplus
}
#endif

#endif /* HERALD_CORE_H */
