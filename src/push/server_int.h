/* server_int.h - what the files of `herald serve` share: the server, its
 * clients and the engine calls in flight. Private to src/push/server*.c,
 * client.c, commands.c, http.c, api.c, sse.c, metrics.c and demo.c.
 *
 * One loop runs everything: the hub is a plain single-threaded structure, so
 * every client, publication and HTTP request of the server lives on that
 * loop's thread and no lock is taken on the message path. Fan-out encodes a
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
#include "push/limits.h"
#include "push/log.h"
#include "push/push.h"

#ifndef HERALD_VERSION_STRING
#define HERALD_VERSION_STRING "0.0.0"
#endif

typedef struct push_server push_server;
typedef struct push_op push_op;
struct pusher_sock;  /* a Pusher connection (pusher_int.h) */
struct pusher_state; /* the server's Pusher apps (pusher_int.h) */

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
  char sse_epoch[PUSH_EPOCH_MAX + 1];
  int64_t exp; /* the connection token's exp (s); 0: none */
  push_bucket rl_cmd, rl_pub, rl_sub;
  push_op *ops; /* engine calls in flight for this client */
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
  push_op *prev, *next; /* in c->ops, or in the free list */
};

#define PUSH_LAT_BUCKETS 12

struct push_server {
  push_config *cfg;
  herald_server *srv;
  herald_loop *loop;
  push_hub *hub;
  push_engine *engine; /* NULL only before the loop starts */
  char node[16];       /* this node's name: client ids start with it */
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
  push_ip_table *ips; /* connection rate per client IP */
  struct pusher_state *pusher; /* Pusher apps, or NULL (docs/pusher.md) */
  uint64_t lat_count, lat_bucket[PUSH_LAT_BUCKETS + 1];
  double lat_sum;
};

#define PUSH_SCRATCH_KEEP (64 * 1024)
#define PUSH_ENGINE_DOWN_MSG "engine unavailable: try again later"

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

/* 1 when channel exists in the hub or there is room for one more under
 * max_channels_total; else counts the refusal and returns 0 (client.c). */
int push_channel_room(push_server *ps, const char *channel);

/* The address of a peer ("1.2.3.4:5" or "[::1]:5") without its port,
 * in a static buffer valid until the next call (client.c). */
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
void push_sse(push_server *ps, herald_http *h, const herald_request *req);
void push_sse_keepalive(push_server *ps);
/* Sends one publication on an SSE stream. Returns 0, or -1 when the client
 * was over its output cap: it is disconnected and freed. */
int push_sse_send_pub(push_client *c, const char *channel, push_pub *pub);
void push_metrics(push_server *ps, herald_http *h);
/* Records one delivery's latency (from the publication's making). */
void push_record_latency(push_server *ps, const push_pub *pub);
/* This node's entry in /api/info (and in Redis' node list). */
void push_node_json(void *ud, push_buf *b);

/* ---- Pusher Channels (pusher*.c, docs/pusher.md) ---- */

/* Sets up the apps of cfg->pusher, once the engine runs. Returns 0 or -1
 * (out of memory). */
int push_pusher_start(push_server *ps);
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
void push_pusher_message(push_client *c, herald_opcode op,
                         const uint8_t *data, size_t len);
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

/* ---- the demo publisher (demo.c) ---- */
void push_demo_start(push_server *ps, uv_loop_t *uv);

#endif
