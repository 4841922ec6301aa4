/* server_int.h - what the files of `herald serve` share: the server, its
 * clients and the engine calls in flight. Private to src/push/server*.c,
 * client.c, commands.c, http.c, api.c, sse.c, metrics.c and demo.c.
 *
 * One loop runs each push_server: the hub is a plain single-threaded
 * structure, so every client, publication and HTTP request of a server
 * lives on its loop's thread and no lock is taken on the message path.
 * With several loops (threads) each has its own push_server, hub and
 * clients, and their threads engines (engine_threads.c) pass channels'
 * publications between them once per loop pass. Fan-out encodes a
 * publication once (the hub builds its push text) and every subscriber's
 * send references those bytes until its socket took them.
 *
 * Who calls whom: server.c (lifecycle) wires the runtime's callbacks to
 * commands.c (WebSocket) and http.c (plain HTTP: health, metrics, static
 * files), which hands /api/ to api.c and /sse to sse.c. All of them answer
 * through client.c (clients, replies, delivery, engine calls in flight),
 * and reach channels only through the hub and the engine (engine.h).
 */
#ifndef HERALD_PUSH_SERVER_INT_H
#define HERALD_PUSH_SERVER_INT_H

#include <stdint.h>
#include <uv.h>

#include "herald/rt.h"
#include "push/config.h"
#include "push/engine.h"
#include "push/http_client.h"
#include "push/limits.h"
#include "push/log.h"
#include "push/push.h"
#include "push/webhook.h"

#ifndef HERALD_VERSION_STRING
#define HERALD_VERSION_STRING "0.0.0"
#endif

typedef struct push_server push_server;
typedef struct push_op push_op;
struct pusher_sock;  /* a Pusher connection (pusher_int.h) */
struct pusher_state; /* the server's Pusher apps (pusher_int.h) */
struct pusher_node;  /* what the node's loops share of them (pusher_int.h) */

typedef struct push_client {
  push_server *ps;
  herald_ws *ws;    /* WebSocket clients */
  herald_http *sse; /* SSE clients */
  char id[32];
  char user[256];
  char *info;     /* raw JSON from the token, or NULL */
  char **allowed; /* the token's "channels" claim */
  size_t nallowed;
  int connected;
  int gone; /* closing: deliver nothing more */
  char **subs;
  size_t nsubs, capsubs;
  /* Per subscription, beside subs: its subscription token's exp (s; 0:
   * none) and whether the sub_refresh push went out for it. */
  struct push_sub_exp {
    int64_t exp;
    int warned;
  } * sub_exp;
  size_t nsub_exp; /* subscriptions with an exp */
  /* The application's backend (proxy.c): request headers forwarded to it
   * ("Name: value" lines), and the state of the connection's credentials. */
  char **fwd;
  size_t nfwd;
  int connecting;   /* connect waits for the backend or the engine */
  int exp_by_proxy; /* exp came from the connect proxy: refresh_url */
  int refresh_sent; /* the refresh push for this exp went out */
  int refreshing;   /* a refresh proxy request is in flight */
  int counted;      /* among its user's connections (the engine's) */
  int announced;    /* the connect webhook went out: so will disconnect */
  int close_code;   /* why it ended, for the disconnect webhook */
  char close_reason[64];
  /* An SSE stream's channels (sse.c), in the order of the request. */
  struct push_sse_chan *sse_chans;
  size_t nsse_chans;
  size_t sse_pending; /* channels still syncing before the stream starts */
  int64_t exp;        /* the connection token's exp (s); 0: none */
  push_bucket rl_cmd, rl_pub, rl_sub;
  push_op *ops;               /* engine calls in flight for this client */
  struct pusher_sock *pusher; /* a Pusher connection, or NULL */
  struct push_client *prev, *next;
} push_client;

/* An engine call in flight (the Redis engine answers later): what to do
 * with the answer. c becomes NULL when the client goes first; h, an HTTP
 * request, must be answered in every case. */
typedef struct push_bcast push_bcast;

/* Called once the channel is current (push_op_sync), with PUSH_ENGINE_OK
 * (holding one reference on the channel) or PUSH_ENGINE_DOWN. */
typedef void (*push_op_fn)(push_op *op, int status);

typedef struct push_proxy_answer push_proxy_answer;
/* A proxy answer for op (proxy.c); the callee owns op from then on. */
typedef void (*push_proxy_fn)(push_op *op, const push_proxy_answer *a);

struct push_op {
  push_server *ps;
  push_client *c;
  herald_http *h;
  push_op_fn synced; /* NULL: not a sync (publish, presence, nodes) */
  int subscribe;     /* a subscribe: push_op_pending_sub finds it */
  int cancelled;     /* unsubscribed before the subscribe completed */
  uint64_t id;
  char channel[PUSH_CHANNEL_MAX + 1];
  push_pos since;
  uint64_t limit;
  push_bcast *bc; /* an API publish: the request it is part of */
  size_t bc_index;
  int server_side;       /* a subscribe the server made: a push, no reply */
  push_proxy_fn proxied; /* the backend's answer goes here */
  int proxy_kind;        /* PUSH_PROXY_* */
  uint64_t proxy_started_us;
  char *data; /* owned: a publication waiting for the backend */
  size_t data_len;
  int data_b64; /* data is a base64 string value */
  char *hook;   /* owned: a publish webhook event, less its end */
  size_t hook_len;
  char idem[PUSH_IDEM_MAX + 1]; /* idempotency_key, "" when none */
  push_op *prev, *next;         /* in c->ops, or in the free list */
};

#define PUSH_LAT_BUCKETS 12

/* The backend proxy's kinds of request (proxy.c). */
enum {
  PUSH_PROXY_CONNECT,
  PUSH_PROXY_REFRESH,
  PUSH_PROXY_SUBSCRIBE,
  PUSH_PROXY_PUBLISH,
  PUSH_PROXY_RPC,
  PUSH_PROXY_KINDS
};
#define PUSH_PROXY_LAT_BUCKETS 10

typedef struct push_proxy_stats {
  uint64_t requests, unavailable, refused;
  uint64_t lat_bucket[PUSH_PROXY_LAT_BUCKETS + 1];
  double lat_sum;
} push_proxy_stats;

/* What a loop's hub and engine say, for node-wide answers (node.c). */
typedef struct push_figures {
  uint64_t subscriptions, channels, history_bytes, history_evictions;
  uint64_t idem_evicted, nclients;
  push_engine_figures engine; /* the engine's own (Redis: its connections') */
  herald_loop_io_stats io;    /* the loop's I/O backend (io_uring) */
} push_figures;

struct push_server {
  push_config *cfg;
  herald_server *srv;
  herald_loop *loop;
  push_hub *hub;
  push_engine *engine;  /* NULL only before the loop starts */
  char node[16];        /* this node's name: client ids start with it */
  int thread, nthreads; /* this loop's index among the node's loops */
  unsigned ticks;       /* of the once-a-second timer */
  int64_t presence_refresh_ms;
  int exit_code;
  push_jwt_keys keys;
  uint64_t next_id;
  push_client *clients;
  size_t nclients;
  push_op *free_ops; /* recycled engine calls: a publish allocates none */
  size_t nfree_ops;
  uv_timer_t tick, demo;
  /* Scratch for replies: a command's result, then its envelope. Replies
   * are copied into the connection, so these are free again at once. */
  push_buf result, envelope;
  uv_signal_t sigint, sigterm, sighup;
  int timers_started;
  int stopping;
  int64_t started_ms;
  uint64_t flush_us; /* during the pass's hub flush: its start */
  double demo_price[5];
  /* metrics */
  uint64_t messages_in, messages_out, bytes_in, bytes_out, publications;
  uint64_t drops, slow_disconnects, connects_total, auth_failures;
  uint64_t engine_unavailable;
  uint64_t limited_commands, limited_publishes, limited_subscribes;
  uint64_t limited_connections, channel_limit_refusals, tokens_expired;
  push_ip_table *ips;              /* connection rate per client IP */
  struct pusher_state *pusher;     /* Pusher apps, or NULL (docs/pusher.md) */
  struct pusher_node *pusher_node; /* shared by every loop; NULL: no apps */
  uint64_t lat_count, lat_bucket[PUSH_LAT_BUCKETS + 1];
  double lat_sum;
  /* The application's backend: outgoing HTTP, the proxy, webhooks. */
  push_http_client *http; /* NULL: no proxy and no webhooks */
  push_webhook *webhook;  /* NULL: no webhooks */
  char **upgrade_fwd;     /* headers of the upgrade being opened */
  size_t nupgrade_fwd;
  size_t proxy_in_flight;
  push_proxy_stats proxy[PUSH_PROXY_KINDS];
  uint64_t proxy_overloaded;
  uint64_t refresh_pushes, refreshes, sub_expired;
  uint64_t user_limit_refusals, idempotent_hits;
  push_figures fig;        /* push_node_figures */
  const push_server *view; /* during a node-wide answer: the sums */
};

#define PUSH_SCRATCH_KEEP (64 * 1024)
#define PUSH_ENGINE_DOWN_MSG "engine unavailable: try again later"

/* ---- the node's loops (server.c) ---- */

/* The server of the calling thread's loop (NULL on other threads). */
push_server *push_server_here(void);
/* Takes a new connection from ip out of the node's per-IP rate (shared by
 * every loop, under a lock: once per connection). Returns what
 * push_ip_take does. */
int push_server_ip_take(push_server *ps, const char *ip);
/* Addresses in that table now. */
size_t push_server_ips(push_server *ps);

/* Channels this loop owns now, and those the node's other loops owned at
 * the end of their last pass: max_channels_total counts both. */
uint64_t push_server_held(const push_server *ps);
uint64_t push_server_held_elsewhere(const push_server *ps);
/* Every loop's server: *all points at an array of the returned count. */
int push_server_all(push_server **all);

/* ---- node-wide answers (node.c) ---- */

/* Adds the other loops' connections, subscriptions and channels, as of
 * their last tick, to f (nothing with one loop). */
void push_server_add_others(const push_server *ps, push_figures *f);

/* Fills ps->fig from its hub and engine (on ps's own thread). */
void push_node_figures(push_server *ps);
/* Calls answer(ps, view, h) on ps's loop with view holding every loop's
 * counters and figures summed (view == ps with one loop; otherwise a copy
 * of ps, valid during the call, whose pointers are ps's). On failure h is
 * answered 503 instead. */
void push_node_answer(push_server *ps, herald_http *h,
                      void (*answer)(push_server *ps, const push_server *view,
                                     herald_http *h));

/* Runs each(loop's server, arg) on every loop (this one's at once), then
 * done(ps, h, the sum of what they returned, arg) on ps's loop; arg must
 * live until done, which owns it. */
typedef uint64_t (*push_node_fn)(push_server *ps, const void *arg);
void push_node_each(push_server *ps, herald_http *h, push_node_fn each,
                    void *arg,
                    void (*done)(push_server *ps, herald_http *h, uint64_t sum,
                                 void *arg));

/* Runs fill(loop's server, out) on every loop, then collected(ps, h, outs,
 * n) on ps's loop with every loop's out (valid during the call). */
void push_node_collect(push_server *ps, herald_http *h,
                       void (*fill)(push_server *ps, push_buf *out),
                       void (*collected)(push_server *ps, herald_http *h,
                                         push_buf *outs, int n));

/* ---- time (client.c) ---- */
int64_t push_now_ms(void); /* wall clock, for publication times and JWT */
uint64_t push_mono_us(void);

/* ---- clients (client.c) ---- */

/* A new client, in the server's list, with a node-unique id. NULL when out
 * of memory. */
push_client *push_client_new(push_server *ps);
/* Leaves every channel (and its presence) and frees the client. Engine
 * calls in flight for it finish without it. */
void push_client_free(push_client *c);
/* Sends the disconnect push, then closes with code (SSE: ends the stream
 * and frees the client at once). */
void push_client_disconnect(push_client *c, int code, const char *reason);
int push_client_subscribed(const push_client *c, const char *channel);
/* The client becomes the token's: user, exp (the tick disconnects it then,
 * 3006), info, channels. Takes what cl owns and frees the rest. */
void push_client_take_claims(push_client *c, push_jwt_claims *cl);
/* Adds channel to c's subscriptions (after push_hub_subscribe). Returns 0
 * or -1 (out of memory). */
int push_client_add_sub(push_client *c, const char *channel);
void push_client_drop_sub(push_client *c, const char *channel);
/* The hub's view of c as a subscriber. */
push_sub push_client_sub(push_client *c);
/* c as a presence entry. */
push_member push_client_member(const push_client *c);

/* ---- replies to WebSocket clients (client.c) ---- */

/* Sends one text message. A client over its output cap is disconnected as
 * a slow consumer (3004), so a dropped reply never looks like an answer. */
void push_send_text(push_client *c, const char *p, size_t n);
void push_client_reply(push_client *c, uint64_t id, const push_buf *result);
void push_client_error(push_client *c, uint64_t id, int code, const char *msg,
                       int temporary);
void push_client_reply_pos(push_client *c, uint64_t id, const push_pos *pos);
/* 112 (temporary): the engine is unavailable. Counted here only. */
void push_client_engine_down(push_client *c, uint64_t id);

/* ---- JSON pieces of results (client.c) ---- */
void push_put_pos(push_buf *b, const push_pos *pos);
/* {"epoch","offset"[,"recovered"][,"publications"]} of subscribe/history. */
void push_put_result(push_buf *b, const push_result *r, int with_recovered,
                     int with_pubs);
void push_put_error(push_buf *b, int code, const char *msg);
/* Bytes the result's publications take. */
size_t push_result_bytes(const push_result *r);

/* ---- engine calls in flight (client.c) ---- */

/* A call for client c (may be NULL) or HTTP request h (may be NULL).
 * Returns NULL when out of memory. */
push_op *push_op_new(push_server *ps, push_client *c, herald_http *h,
                     uint64_t id, const char *channel);
void push_op_free(push_op *op);
/* Runs op->synced once op->channel is current, then frees op. */
void push_op_sync(push_op *op);
/* The subscribe of c to channel still waiting for the engine, or NULL. */
push_op *push_op_pending_sub(const push_client *c, const char *channel);
size_t push_op_npending_subs(const push_client *c);
/* Answers 112 / 503 to whoever op is for, if still there. */
void push_op_engine_down(push_op *op);

/* Publishes p to channel and counts it. PUSH_ENGINE_OK: *pos is set and
 * op is untouched (the caller frees it); PUSH_ENGINE_PENDING: on_done gets
 * op; PUSH_ENGINE_DOWN or _ERROR: op untouched. */
int push_publish(push_server *ps, const char *channel,
                 const push_publication *p, push_pos *pos, push_op *op,
                 push_engine_cb on_done);

/* The second half of push_publish for a PENDING one: counts it and sends
 * its publish webhook. Call from on_done before anything else. */
void push_publish_done(push_op *op, const push_engine_reply *rep);

/* 1 when channel exists in the hub or there is room for one more under
 * max_channels_total; else counts the refusal and returns 0 (client.c). */
int push_channel_room(push_server *ps, const char *channel);

/* The address of a peer ("1.2.3.4:5" or "[::1]:5") without its port,
 * in a thread-local buffer valid until the next call (client.c). */
const char *push_peer_ip(const char *peer);

/* Every presence entry of c leaves the engine (client.c). */
void push_client_presence_leave(push_client *c);

/* ---- WebSocket (commands.c) ---- */
void push_ws_callbacks(herald_ws_callbacks *cb);
/* An Origin header, when present, must be allowed. */
int push_origin_ok(const push_server *ps, const herald_request *req);
/* May c subscribe to channel (its claims, or a subscription token)? */
int push_may_subscribe(push_client *c, const push_ns *ns, const char *channel,
                       push_json token);

/* ---- HTTP (http.c, api.c, sse.c, metrics.c) ---- */
void push_on_http(herald_http *h, const herald_request *req,
                  const uint8_t *body, size_t len, void *ud);
void push_http_json(herald_http *h, int status, const char *body, size_t len);
void push_http_error(herald_http *h, int status, int code, const char *msg);
void push_http_result(herald_http *h, const push_buf *result);
/* 503 with 112: the engine is unavailable. Counted here only. */
void push_http_engine_down(push_server *ps, herald_http *h);
/* Finds query parameter name, URL-decoded into out (NUL-terminated). Returns
 * 1 when present and valid; 0 when absent, badly encoded, too long or
 * holding a NUL byte (%00). */
int push_query_param(herald_str q, const char *name, char *out, size_t cap);
/* The next parameter name at or after *from (0 to begin), for names given
 * several times: 1 with it URL-decoded into out and *from past it, 0 when
 * there is no more, -1 when this one is badly encoded, too long or holds a
 * NUL byte (*from past it too). */
int push_query_next(herald_str q, const char *name, size_t *from, char *out,
                    size_t cap);
int push_path_is(const herald_request *req, const char *p);
int push_method_is(const herald_request *req, const char *m);

/* Serves req from static_dir (static.c) if one is configured: returns 1
 * when it answered (the file, 404 or 403), 0 when there is no static_dir.
 * Files over PUSH_STATIC_MAX_FILE bytes are refused (403). */
#define PUSH_STATIC_MAX_FILE (16u << 20)
int push_static_serve(push_server *ps, herald_http *h,
                      const herald_request *req);

void push_api(push_server *ps, herald_http *h, const herald_request *req,
              const uint8_t *body, size_t len);
/* A message of another node (push_engine_control): a disconnect, subscribe
 * or unsubscribe the API asked there, applied to this node's clients. */
void push_on_control(void *ud, const char *msg, size_t len);
void push_sse(push_server *ps, herald_http *h, const herald_request *req);
void push_sse_keepalive(push_server *ps);
/* Sends one publication on an SSE stream (to the channel its frame names).
 * Returns 0, or -1 when the client was over its output cap: it is
 * disconnected and freed. */
int push_sse_send_pub(push_client *c, push_pub *pub);
/* Frees what an SSE client holds beside its subscriptions (push_client_free
 * calls it): its channels' positions, the engine references of channels
 * synced for a stream that never started. */
void push_sse_free(push_client *c);
void push_metrics(push_server *ps, herald_http *h);
/* Records one delivery's latency (from the publication's making). */
void push_record_latency(push_server *ps, const push_pub *pub);
/* This node's entry in /api/info (and in Redis' node list). */
void push_node_json(void *ud, push_buf *b);

/* ---- Pusher Channels (pusher*.c, docs/pusher.md) ---- */

/* What the loops of a node share about the apps of cfg->pusher (their
 * connection counts, for max_connections, and their metrics), for
 * nthreads loops: made before the loops start. Returns NULL when there
 * are no apps (*err 0) or when out of memory (*err 1). Free it with
 * push_pusher_node_del once no loop runs (NULL allowed). */
struct pusher_node *push_pusher_node_new(const push_config *cfg, int nthreads,
                                         int *err);
void push_pusher_node_del(struct pusher_node *n);
/* Sets up the apps of cfg->pusher, once the engine runs. Returns 0 or -1
 * (out of memory). */
int push_pusher_start(push_server *ps);
/* At shutdown, after the clients left: stops the Pusher webhooks. */
void push_pusher_stop(push_server *ps);
void push_pusher_free(push_server *ps);
/* Once a second: presence refresh, the cluster's connection counts. */
void push_pusher_tick(push_server *ps, int64_t now_ms);
/* An upgrade to /app/...: returns 1 (the verdict is kept on ws for
 * push_pusher_open, which answers even a refusal the Pusher way: after
 * the handshake, with pusher:error and a close code), or 0 when the path
 * is not Pusher's. */
int push_pusher_upgrade(push_server *ps, herald_ws *ws,
                        const herald_request *req);
void push_pusher_open(push_server *ps, herald_ws *ws);
void push_pusher_message(push_client *c, herald_opcode op, const uint8_t *data,
                         size_t len);
/* Leaves every channel (presence too); the connection stays. */
void push_pusher_leave_all(push_client *c);
/* The connection is gone: frees its Pusher side (c->pusher). */
void push_pusher_closed(push_client *c);
/* push_client_disconnect for a Pusher connection: herald's code mapped to
 * Pusher's (3001 -> 4200, 3004 -> 4100, 3502 -> 4009). */
void push_pusher_disconnect(push_client *c, int code, const char *reason);
/* 1 when a hub channel is a Pusher one (its subscribers are not clients). */
int push_pusher_channel(const char *hub_channel);
/* Requests under /apps/ (the HTTP API). */
void push_pusher_api(push_server *ps, herald_http *h, const herald_request *req,
                     const uint8_t *body, size_t len);
void push_pusher_metrics(push_server *ps, push_buf *b);
/* ,"pusher":{"<app id>":connections,...} for this node's entry. */
void push_pusher_node_json(push_server *ps, push_buf *b);
/* ---- the application's backend (proxy.c) ---- */

/* What the backend answered: a result, an error for the client, a
 * disconnect, or nothing usable (unavailable: a timeout, a refused
 * connection, a status other than 200, garbage, the in-flight limit). */
enum {
  PUSH_PROXY_RESULT,
  PUSH_PROXY_ERROR,
  PUSH_PROXY_DISCONNECT,
  PUSH_PROXY_UNAVAILABLE
};
struct push_proxy_answer {
  int kind;
  push_json result; /* RESULT: the object (valid during the callback) */
  int code;         /* ERROR, DISCONNECT */
  int temporary;
  char message[128]; /* ERROR: message; DISCONNECT: reason; else why */
};

/* The start of every proxy request's body: {"client","transport",
 * "protocol","encoding"[,"user"]. The caller appends its fields and "}". */
void push_proxy_body(push_buf *b, const push_client *c, int with_user);
/* Posts body to url for op (kind PUSH_PROXY_*); fn gets the answer and op,
 * once, never before this returns unless the request could not even start
 * (over proxy.max_in_flight, out of memory): then fn runs at once with
 * PUSH_PROXY_UNAVAILABLE. */
void push_proxy_call(push_server *ps, int kind, const char *url, push_op *op,
                     const push_buf *body, push_proxy_fn fn);
/* Answers a client's command with what the backend said when it was not a
 * result: the error, the disconnect, or 113 (backend unavailable). */
void push_proxy_reply(push_client *c, uint64_t id, const push_proxy_answer *a);
/* The proxy's metrics, per kind. */
void push_proxy_metrics(push_server *ps, push_buf *b);
/* Captures the upgrade request's headers listed in proxy.headers. */
void push_proxy_capture(push_server *ps, const herald_request *req);
/* Gives a new client the captured headers. */
void push_proxy_adopt(push_server *ps, push_client *c);

/* ---- webhooks (proxy.c) ---- */

/* Starts the HTTP client and the webhook sender if the configuration asks
 * for them. Returns 0, or -1 with a message in err. */
int push_backend_start(push_server *ps, uv_loop_t *uv, char *err,
                       size_t errlen);
void push_backend_stop(push_server *ps);
/* 1 when webhooks announce event (PUSH_WH_*). */
int push_hook_on(const push_server *ps, unsigned event);
/* Sends one event: b holds {"event":...,<fields> without its closing brace;
 * the time and node are added. */
void push_hook_send(push_server *ps, push_buf *b);
/* {"event":NAME,"time_ms":T,"node":N into b. */
void push_hook_begin(push_server *ps, push_buf *b, const char *name);
/* A client subscribed to / left channel: join/leave webhooks, and whether
 * the channel became occupied or vacated here (the engine decides it for
 * the cluster and calls back on_occupancy). */
void push_client_joined(push_client *c, const char *channel);
void push_client_left(push_client *c, const char *channel);
/* The engine's word that channel is occupied (1) or vacated (0) in the
 * whole cluster: the webhook. */
void push_on_occupancy(void *ud, const char *channel, int occupied);

/* ---- credentials and server-side control (commands.c) ---- */

/* Subscribes c to channel on the server's initiative: the client gets a
 * subscribe push instead of a reply. Returns 0, or -1 when it cannot be
 * (unknown namespace, already subscribed, max_channels): logged. */
int push_server_subscribe(push_client *c, const char *channel);
/* Ends c's subscription to channel on the server's initiative, with an
 * unsubscribe push carrying reason. Returns 1 when c was subscribed. */
int push_server_unsubscribe(push_client *c, const char *channel,
                            const char *reason);
/* ---- connect.c ---- */

/* The connect command: answers cmd->id, or disconnects. */
void push_cmd_connect(push_client *c, const push_cmd *cmd);

/* ---- credentials.c ---- */

/* Once a second: refresh pushes and proxy refreshes ahead of exp, and the
 * end of connections (3006) and subscriptions whose credentials expired. */
void push_credentials_tick(push_server *ps, int64_t now_ms);
/* The refresh and sub_refresh commands: answer cmd->id. */
void push_cmd_refresh(push_client *c, const push_cmd *cmd);
void push_cmd_sub_refresh(push_client *c, const push_cmd *cmd);

/* ---- shared by connect.c, commands.c and credentials.c ---- */

/* Verifies the JWT tok into *claims (the caller frees them with
 * push_jwt_claims_free); on failure answers id and disconnects. Returns 0
 * or -1. (connect.c) */
int push_check_token(push_client *c, uint64_t id, push_json tok,
                     push_jwt_claims *claims);
/* May c subscribe to channel of namespace ns? Its claims, or the
 * subscription token (whose exp goes to *exp; 0 when none was needed).
 * Returns 1 or 0. (commands.c) */
int push_may_subscribe_exp(push_client *c, const push_ns *ns,
                           const char *channel, push_json token, int64_t *exp);
/* Sets the exp of c's subscription to channel (a subscription token's). */
void push_client_set_sub_exp(push_client *c, const char *channel, int64_t exp);

/* ---- the demo publisher (demo.c) ---- */
void push_demo_start(push_server *ps, uv_loop_t *uv);

#endif
