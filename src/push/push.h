/*
 * push.h - the push server's building blocks, as plain data structures and
 * pure functions (no loop, no sockets): JSON scanning and writing, the
 * client protocol, JWT verification, and the hub of channels with their
 * history and presence. src/push/server.c binds them to the runtime.
 *
 * Why our own JSON code: published data is embedded in pushes byte for byte
 * (never re-encoded, so what a backend publishes is exactly what clients
 * get, and one encoding serves every subscriber). That needs the raw text of
 * a member, which DOM libraries such as cJSON do not keep. The scanner here
 * validates (RFC 8259) and hands out spans of the input instead.
 */
#ifndef HERALD_PUSH_H
#define HERALD_PUSH_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* JSON (json.c)                                                            */
/* ------------------------------------------------------------------------ */

typedef enum push_json_type {
  PUSH_JSON_INVALID = 0,
  PUSH_JSON_NULL,
  PUSH_JSON_FALSE,
  PUSH_JSON_TRUE,
  PUSH_JSON_NUMBER,
  PUSH_JSON_STRING,
  PUSH_JSON_ARRAY,
  PUSH_JSON_OBJECT
} push_json_type;

/* A JSON value: a span of validated text (leading/trailing whitespace
 * excluded). Borrowed from the input it was found in. */
typedef struct push_json {
  const char *p;
  size_t n;
} push_json;

#define PUSH_JSON_MAX_DEPTH 64

/* Validates p[0..n) as exactly one JSON value (RFC 8259: UTF-8, no trailing
 * commas, no comments, depth <= PUSH_JSON_MAX_DEPTH), whitespace around it
 * allowed. Returns 0 and sets *out to the value's span, or -1.
 * An object that names a member twice, at any depth, is refused: names are
 * compared after unescaping, so {"id":1,"\u0069d":2} is refused too (I-JSON,
 * RFC 7493 section 2.3; RFC 8259 section 4 leaves repeats undefined). This
 * costs O(n log n) in the worst case, and memory for the names of the
 * objects open at once (a small fixed buffer, then the heap). */
int push_json_parse(const char *p, size_t n, push_json *out);

/* Why push_json_parse_ex refused a text. */
typedef enum push_json_fault {
  PUSH_JSON_OK = 0,
  PUSH_JSON_SYNTAX,    /* not one JSON value, or nested too deep */
  PUSH_JSON_DUPLICATE, /* an object names a member twice */
  PUSH_JSON_NOMEM      /* out of memory while checking member names */
} push_json_fault;

typedef struct push_json_error {
  push_json_fault fault;
  /* PUSH_JSON_DUPLICATE: the repeated name as written (a raw string value,
   * quotes included, inside p; read it with push_json_str), at an
   * occurrence after the first. Otherwise empty. */
  push_json name;
  /* Where in p the text stopped being what was expected: the byte at
   * which the scan failed (a syntax error; n when the text ended early) or
   * the repeated name. For messages with a line and column. */
  size_t offset;
} push_json_error;

/* push_json_parse, saying why it refused: *err (may be NULL) is set on
 * every return. */
int push_json_parse_ex(const char *p, size_t n, push_json *out,
                       push_json_error *err);

/* The type of an already validated value (looks at its first byte). */
push_json_type push_json_type_of(push_json v);

/* Finds the member named key (compared after unescaping the member name) in
 * an object; the first match wins (an object push_json_parse accepted has
 * no other). Returns 1 and sets *out, 0 if absent or obj is not an
 * object. */
int push_json_get(push_json obj, const char *key, push_json *out);

/* Iterates an array's elements or an object's members: *pos starts at 0.
 * Returns 1 with the next element (for objects *key is the member name as a
 * raw string value, quotes included; key may be NULL), 0 at the end. */
int push_json_next(push_json v, size_t *pos, push_json *key, push_json *value);

/* Unescapes a string value into out (cap bytes, NUL added). Returns the
 * length, or -1 if v is not a string or does not fit. */
long push_json_str(push_json v, char *out, size_t cap);

/* Reads a non-negative integer (no fraction, no exponent, <= 2^53). Returns
 * 0 or -1. */
int push_json_u64(push_json v, uint64_t *out);

/* The length of the well-formed UTF-8 sequence at s[0..n) (n >= 1), 1 to 4,
 * or 0 if none starts there (RFC 3629 section 4: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
size_t push_utf8_seq(const unsigned char *s, size_t n);

/* A growable output buffer (buf.c). Functions return 0, or -1 when out of
 * memory (the buffer then keeps what it had). */
typedef struct push_buf {
  char *p;
  size_t len, cap;
} push_buf;

int push_buf_raw(push_buf *b, const char *p, size_t n);
int push_buf_str(push_buf *b, const char *s, size_t n); /* as a JSON string,
                                                           escaped */
int push_buf_u64(push_buf *b, uint64_t v);
void push_buf_free(push_buf *b);
/* Empties b for reuse as a scratch buffer, keeping its memory unless it grew
 * past keep bytes (then it is freed, so one huge message does not pin it). */
void push_buf_done(push_buf *b, size_t keep);

/* ------------------------------------------------------------------------ */
/* Client protocol (proto.c): docs/protocol.md                              */
/* ------------------------------------------------------------------------ */

typedef enum push_method {
  PUSH_CONNECT = 1,
  PUSH_SUBSCRIBE,
  PUSH_UNSUBSCRIBE,
  PUSH_PUBLISH,
  PUSH_PRESENCE,
  PUSH_HISTORY,
  PUSH_PING,
  PUSH_REFRESH,     /* a new connection token */
  PUSH_SUB_REFRESH, /* a new subscription token */
  PUSH_RPC          /* a call the backend answers (rpc_url) */
} push_method;

/* Error codes of docs/protocol.md. */
enum {
  PUSH_E_INTERNAL = 100,
  PUSH_E_UNAUTHORIZED = 101,
  PUSH_E_UNKNOWN_NAMESPACE = 102,
  PUSH_E_PERMISSION = 103,
  PUSH_E_METHOD = 104,
  PUSH_E_ALREADY_SUBSCRIBED = 105,
  PUSH_E_LIMIT = 106,
  PUSH_E_BAD_REQUEST = 107,
  PUSH_E_NOT_AVAILABLE = 108,
  PUSH_E_TOKEN_EXPIRED = 109,
  PUSH_E_TOO_MANY = 110,
  PUSH_E_NOT_SUBSCRIBED = 111,
  PUSH_E_ENGINE = 112,
  PUSH_E_BACKEND = 113 /* the application's backend did not answer */
};

/* Disconnect codes (WebSocket close codes) of docs/protocol.md. */
enum {
  PUSH_D_NORMAL = 3000,
  PUSH_D_SHUTDOWN = 3001,
  PUSH_D_SLOW = 3004,
  PUSH_D_NO_PING = 3005,
  PUSH_D_TOKEN_EXPIRED = 3006,
  PUSH_D_BACKEND = 3007,      /* the backend could not decide the connect */
  PUSH_D_INSUFFICIENT = 3010, /* missed what the engine no longer has */
  PUSH_D_INVALID_TOKEN = 3500,
  PUSH_D_BAD_REQUEST = 3501,
  PUSH_D_FORCED = 3502,
  PUSH_D_ORIGIN = 3503,
  PUSH_D_CONNECTION_LIMIT = 3508 /* user_connection_limit */
};

#define PUSH_EPOCH_MAX 16
#define PUSH_IDEM_MAX 64 /* bytes of an idempotency_key */
#define PUSH_CHANNEL_MAX 255

/* A stream position. set == 0: none given. */
typedef struct push_pos {
  char epoch[PUSH_EPOCH_MAX + 1];
  uint64_t offset;
  int set;
} push_pos;

/* One decoded command. Spans borrow the frame text. */
typedef struct push_cmd {
  uint64_t id;
  push_method method;
  char channel[PUSH_CHANNEL_MAX + 1]; /* unescaped, validated name */
  push_json token;                    /* string value, or n == 0 */
  push_json name;
  push_json data; /* publish: the raw JSON of "data", or n == 0 */
  push_json b64;  /* publish: the base64 string, or n == 0 */
  push_pos since;
  uint64_t limit; /* history: 0 = server default */
  push_json rpc;  /* rpc: the method (a string value), or n == 0 */
  /* connect, rpc: "data", any JSON (in data above). publish:
   * idempotency_key, "" when none. */
  char idem[PUSH_IDEM_MAX + 1];
} push_cmd;

/* Returns 1 if name is a valid channel name (1..255 bytes of letters,
 * digits and _ - . : @ / = ,). */
int push_channel_valid(const char *name, size_t n);

/* Reads a publication's "data" or "b64" from params (a publish command's
 * params, or an API body): exactly one of them, b64 a string of valid
 * base64. Sets *data or *b64 (the other is left as it was) and returns
 * NULL, or returns the message of error 107 / HTTP 400. The one check both
 * ways of publishing share. */
const char *push_publish_decode(push_json params, push_json *data,
                                push_json *b64);

/*
 * Decodes the next command of a frame: frames may hold several commands
 * separated by '\n'. *pos starts at 0. Returns 1 with *cmd filled, 0 at the
 * end of the frame, or -1 on a malformed command: then *err is the error
 * code to answer (107 or 104), *errmsg a static text, and cmd->id the id if
 * one could be read (0 otherwise). Decoding continues after a bad command.
 * A command whose JSON repeats a member name in any object is malformed
 * (107, "duplicate key in JSON object", id 0); running out of memory while
 * checking names gives 100.
 */
int push_cmd_next(const char *frame, size_t n, size_t *pos, push_cmd *cmd,
                  int *err, const char **errmsg);

/* Replies and pushes, appended to b. Each returns 0 or -1 (out of memory).
 * result_json: the raw JSON object of the result ("{}" if empty). */
int push_reply(push_buf *b, uint64_t id, const char *result_json, size_t n);
int push_reply_error(push_buf *b, uint64_t id, int code, const char *message,
                     int temporary);

/* {"offset":N,"data":DATA} or {"offset":N,"b64":"..."}, plus "info" when
 * client is not NULL: {"client":..., "user":...}. The publication object that
 * history stores and pushes embed. */
int push_pub_encode(push_buf *b, uint64_t offset, push_json data, push_json b64,
                    const char *client, const char *user);

/* {"push":{"channel":C,"pub":PUB}} around an encoded publication. */
int push_push_pub(push_buf *b, const char *channel, const char *pub,
                  size_t publen);
int push_push_join(push_buf *b, const char *channel, const char *client,
                   const char *user, push_json info, int leave);
int push_push_disconnect(push_buf *b, int code, const char *reason,
                         int reconnect);

/* ------------------------------------------------------------------------ */
/* JWT (jwt.c, OpenSSL)                                                     */
/* ------------------------------------------------------------------------ */

typedef struct push_jwt_keys {
  const char *hmac_secret; /* HS256, or NULL */
  const char *rsa_pem;     /* RS256 public key (PEM text), or NULL */
  const char *ec_pem;      /* ES256 public key (PEM text), or NULL */
} push_jwt_keys;

typedef struct push_jwt_claims {
  char sub[256];
  int64_t exp;                        /* 0: absent */
  char channel[PUSH_CHANNEL_MAX + 1]; /* subscription tokens */
  char *info;      /* raw JSON of "info", malloc'd, or NULL */
  char **channels; /* "channels" claim, malloc'd array, or NULL */
  size_t nchannels;
  char **subs; /* "subs" claim: subscribed by the server at connect */
  size_t nsubs;
} push_jwt_claims;

enum {
  PUSH_JWT_OK = 0,
  PUSH_JWT_MALFORMED = -1, /* not three base64url parts, bad JSON */
  PUSH_JWT_BAD_SIG = -2,   /* forged, wrong key, or alg not configured */
  PUSH_JWT_EXPIRED = -3,   /* exp <= now */
  PUSH_JWT_NO_EXP = -4,    /* exp required and absent */
  PUSH_JWT_NOT_YET = -5    /* now < nbf: not valid yet (RFC 7519 4.1.5) */
};

/* Verifies token (alg from its header must be HS256, RS256 or ES256 and
 * have a key; "none" and everything else are refused), then its claims at
 * time now (seconds). require_exp: refuse tokens without exp. Fills *claims
 * on PUSH_JWT_OK (free with push_jwt_claims_free).
 * "nbf", when present, must be a NumericDate not after now (a fraction
 * rounds it up); "exp" must be after now (a fraction rounds it down). No
 * leeway for clock skew either way. */
int push_jwt_verify(const char *token, size_t n, const push_jwt_keys *keys,
                    int64_t now, int require_exp, push_jwt_claims *claims);
void push_jwt_claims_free(push_jwt_claims *claims);

/* ------------------------------------------------------------------------ */
/* Hub: channels, history, presence (hub.c)                                 */
/* ------------------------------------------------------------------------ */

/* A publication shared by history and every subscriber's send queue. json is
 * the encoded publication (push_pub_encode); frame is the whole push text
 * ({"push":{"channel":...,"pub":...}}) sent to subscribers: encoded once. */
typedef struct push_pub {
  uint32_t refs;
  uint64_t offset;
  int64_t time_ms;
  uint64_t born_us; /* CLOCK_MONOTONIC when this node made it: latency */
  size_t json_off, json_len; /* the pub object inside frame */
  size_t frame_len;
  /* The WebSocket header of frame (a final, unmasked text frame) ends
   * exactly where frame begins: wshdr + PUSH_WSHDR_MAX - wshdr_len is one
   * complete WebSocket frame of wshdr_len + frame_len bytes that every
   * subscriber's queue references (push_pub_ws_frame). */
  uint8_t wshdr_len;
  uint8_t wshdr[14];
  char frame[];
} push_pub;

#define PUSH_WSHDR_MAX 14

/* The WebSocket frame of p and its length. */
static inline const uint8_t *push_pub_ws_frame(const push_pub *p, size_t *len) {
  *len = p->wshdr_len + p->frame_len;
  return p->wshdr + PUSH_WSHDR_MAX - p->wshdr_len;
}

push_pub *push_pub_ref(push_pub *p);
void push_pub_unref(push_pub *p);

/* Namespace options (docs/config.md). */
typedef struct push_ns {
  char name[64];          /* "" for the default namespace */
  int publish;            /* clients may publish */
  int presence;           /* presence is kept */
  int join_leave;         /* join/leave pushes */
  int private_channels;   /* subscribing needs a subscription token */
  uint32_t history_size;  /* publications kept per channel; 0: none */
  uint32_t history_ttl_s; /* seconds a publication is kept; 0: forever */
  /* The backend asked at subscribe / publish (docs/backend.md); NULL:
   * not asked. Owned by the configuration, which outlives the hub. */
  const char *subscribe_proxy_url;
  const char *publish_proxy_url;
} push_ns;

typedef struct push_hub push_hub;

/* A subscriber as the hub sees it: an opaque pointer (never NULL) and its
 * delivery function, called once per publication, from push_hub_flush,
 * with a reference the callee must eventually push_pub_unref. Callbacks may
 * unsubscribe (themselves or others) and change presence; they must not delete
 * the hub. Functions that take a channel return -1 when its namespace is not
 * configured: check push_hub_ns() first to answer 102. */
typedef struct push_sub {
  void *client;
  void (*deliver)(void *client, push_pub *pub);
  void (*presence_event)(void *client, const char *frame, size_t len);
} push_sub;

/* Creates a hub with its namespaces (copied). Epochs come from
 * getrandom(2). Returns NULL when out of memory. */
push_hub *push_hub_new(const push_ns *ns, size_t nns);
void push_hub_del(push_hub *hub);

/* The namespace of a channel, or NULL when it has none configured. */
const push_ns *push_hub_ns(push_hub *hub, const char *channel);

/*
 * Publishes: assigns the next offset, encodes the publication and its push
 * frame once, appends it to the channel's history (bounded by history_size
 * and history_ttl_s), and queues it for every current subscriber: the next
 * push_hub_flush delivers it. Returns 0 and the new position in *pos, or
 * -1: out of memory, the channel's namespace is not configured, or a
 * publish to the same channel from inside one of its own deliver callbacks
 * (it would reorder the stream). Nothing was published.
 */
int push_hub_publish(push_hub *hub, const char *channel, push_json data,
                     push_json b64, const char *client, const char *user,
                     int64_t now_ms, push_pos *pos);

/*
 * Delivers every queued publication: channel by channel, each subscriber
 * gets all of its pending ones in a row, in order (so its client,
 * connection and output queue are visited once per flush, not once per
 * publication). Call it once per loop pass, before the output is written;
 * the hub also flushes a channel before a join or leave push on it, before
 * a load, and at tick. From inside a callback it does nothing.
 */
void push_hub_flush(push_hub *hub);

/* The frame bytes the queued publications will hand out (each times its
 * live subscribers at publish time): what the next flush will queue. */
uint64_t push_hub_pending_bytes(const push_hub *hub);

/* The result of a subscribe or a history query. pubs: references the caller
 * must release with push_result_free. */
typedef struct push_result {
  push_pos pos; /* the stream's current position */
  int recovered;
  push_pub **pubs;
  size_t npubs;
} push_result;
void push_result_free(push_result *r);

/*
 * Subscribes sub to channel. since (may be NULL or unset): recover from that
 * position: r->recovered = 1 and r->pubs hold every publication after it if
 * the epoch matches and history has them all, else r->recovered = 0 and no
 * pubs. The subscription and the history read happen together, so nothing
 * published is missed or delivered twice. Returns 0, 1 if sub was already
 * subscribed (nothing changed), or -1 (out of memory).
 */
int push_hub_subscribe(push_hub *hub, const char *channel, const push_sub *sub,
                       const push_pos *since, int64_t now_ms, push_result *r);

/* Returns 0, or 1 if sub was not subscribed. */
int push_hub_unsubscribe(push_hub *hub, const char *channel, void *client);

/* History after since (or the latest limit entries when since is unset),
 * at most limit (0: all kept). r->recovered says whether since could be
 * honoured. Returns 0 or -1. */
int push_hub_history(push_hub *hub, const char *channel, uint64_t limit,
                     const push_pos *since, int64_t now_ms, push_result *r);

/* Presence: one entry per (channel, client). info: raw JSON or NULL. Join
 * and leave pushes go to the channel's subscribers through
 * sub->presence_event when the namespace has join_leave. */
int push_hub_presence_add(push_hub *hub, const char *channel,
                          const char *client, const char *user,
                          const char *info);
void push_hub_presence_remove(push_hub *hub, const char *channel,
                              const char *client);
/* Writes {"clients":{id:{"user":..., "info":...}}} into b. */
int push_hub_presence_json(push_hub *hub, const char *channel, push_buf *b);

/* Writes {"channels":{name:{"subscribers":n}}} into b. */
int push_hub_channels_json(push_hub *hub, push_buf *b);

/* Drops history past its TTL and forgets channels with no subscribers, no
 * presence and no history. Call about once a second. */
void push_hub_tick(push_hub *hub, int64_t now_ms);

/*
 * Caps the memory that history takes across all channels at max_bytes (0:
 * no cap, the default). Each publication in a history counts its whole
 * allocation (the struct and its push frame), once however many
 * subscribers reference it; engine-fed histories (push_hub_load) count
 * too. When appending a publication to a history would take the total past
 * the cap, the oldest history entries of the whole hub, in the order they
 * were appended, are dropped until it fits: a flood of new channels evicts
 * old history instead of growing memory, and publishing is never refused
 * for it. An evicted entry is gone as if expired: recovering across it
 * gives recovered = 0. A publication larger than the whole cap is still
 * delivered but not kept (nor is the channel's older history, which could
 * then no longer lead up to its position). Setting a cap below the current
 * total evicts at once.
 */
void push_hub_set_history_limit(push_hub *hub, uint64_t max_bytes);

/* The bytes of history the hub keeps now, counted as the cap counts them
 * (0 once no channel has history). */
uint64_t push_hub_history_bytes(const push_hub *hub);

/* How many history entries the cap has evicted since push_hub_new (not
 * those dropped by history_size, TTL or push_hub_drop_history): a counter
 * for metrics. */
uint64_t push_hub_history_evictions(const push_hub *hub);

/* ---- streams fed by an engine (the Redis engine, redis.c) ---- */

/* A publication as an engine stores it: offset, time, and its encoding
 * minus the leading {"offset":N (push_pub_tail), which the hub puts back. */
typedef struct push_ext_pub {
  uint64_t offset;
  int64_t time_ms;
  const char *tail;
  size_t tail_len;
} push_ext_pub;

/* Encodes a publication's tail: push_pub_encode without the offset. */
int push_pub_tail(push_buf *b, push_json data, push_json b64,
                  const char *client, const char *user);

/* Sets channel's position to epoch/offset and its history to e[0..n)
 * (oldest first; only the entries that lead without a hole up to offset are
 * kept, at most history_size). Subscribers stay and get nothing: deliver
 * what they missed with push_hub_append before. Creates the channel.
 * Returns 0, or -1 (out of memory, unconfigured namespace, or called from a
 * callback of this channel). */
int push_hub_load(push_hub *hub, const char *channel, const char *epoch,
                  uint64_t offset, const push_ext_pub *e, size_t n,
                  int64_t now_ms);

/* Appends e and queues it for every subscriber (push_hub_flush), if it follows
 * the channel's position (same epoch, offset + 1). Returns 0, 1 when it does
 * not follow (nothing changed: the caller resynchronizes), or -1 (out of
 * memory, no such channel, or from a callback of this channel). */
int push_hub_append(push_hub *hub, const char *channel, const char *epoch,
                    const push_ext_pub *e);

/* A publication as another hub of this process encoded it: its frame
 * (push_pub.frame, the whole push of this channel) and where the pub
 * object lies in it. */
typedef struct push_ext_frame {
  uint64_t offset;
  int64_t time_ms;
  const char *frame;
  size_t frame_len;
  size_t json_off, json_len;
} push_ext_frame;

/* push_hub_append with the push already encoded (the threads engine's
 * followers: the owner's hub encoded it for the same channel): the frame
 * is copied, not encoded again. The same returns, and -1 as well when
 * json_off and json_len do not lie in the frame. */
int push_hub_append_frame(push_hub *hub, const char *channel, const char *epoch,
                          const push_ext_frame *f);
/* The hash of a channel's name in this hub (fixed for the hub's life), and
 * push_hub_append_frame given it: a follower keeps the hash of each channel
 * it follows instead of hashing the name at every publication. */
uint32_t push_hub_hash(const push_hub *hub, const char *channel);
int push_hub_append_frame_hashed(push_hub *hub, const char *channel,
                                 uint32_t hash, const char *epoch,
                                 const push_ext_frame *f);

/* The channel's position; -1 if the hub has no such channel. */
int push_hub_pos(push_hub *hub, const char *channel, push_pos *pos);

/* Live subscribers of channel, and a walk over them (fn may unsubscribe). */
size_t push_hub_nsubscribers(push_hub *hub, const char *channel);
void push_hub_each_subscriber(push_hub *hub, const char *channel,
                              void (*fn)(void *client, void *ud), void *ud);

/* Sends a push frame made elsewhere (a join or leave from another node) to
 * the channel's subscribers through presence_event. */
void push_hub_broadcast_raw(push_hub *hub, const char *channel,
                            const char *frame, size_t len);

/* Forgets the channel's history (a replica no longer kept current). */
void push_hub_drop_history(push_hub *hub, const char *channel);

/* Writes n random characters of [a-z0-9] (uniform, from getrandom) and a
 * NUL into out: epochs, node names. Returns 0 or -1. */
int push_random_id(char *out, size_t n);

/* SipHash-1-3 of s under key, folded to 32 bits: for tables whose keys
 * peers choose. */
uint32_t push_hash_str(const uint64_t key[2], const char *s, size_t n);

/* Counts for metrics. */
size_t push_hub_nchannels(const push_hub *hub);
size_t push_hub_nsubscriptions(const push_hub *hub);

#endif
