/*
 * server.c - `herald serve`: the push modules on the runtime.
 *
 * One loop runs everything: the hub is a plain single-threaded structure, so
 * every client, publication and HTTP request of the server lives on that
 * loop's thread and no lock is taken on the message path. Fan-out encodes a
 * publication once (the hub builds its push text) and every subscriber's
 * send references those bytes (herald_ws_send_ref) until its socket took
 * them.
 *
 * A subscriber whose send buffer passes client_output_cap is cut off with
 * 3004 (reconnect and recover): it never slows the others, and it loses
 * nothing it cannot get back from history.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <uv.h>

#include "app/cli.h"
#include "herald/rt.h"
#include "push/redis.h"
#include "push/server.h"
#include "push/web.h"

#ifndef HERALD_VERSION_STRING
#define HERALD_VERSION_STRING "0.0.0"
#endif

typedef struct push_server push_server;
typedef struct pending_op pending_op;

typedef struct client {
  push_server *ps;
  herald_ws *ws;    /* WebSocket clients */
  herald_http *sse; /* SSE clients */
  char id[24];
  char user[256];
  char *info;     /* raw JSON from the token, or NULL */
  char **allowed; /* the token's "channels" claim */
  size_t nallowed;
  int connected;
  int gone; /* closing: deliver nothing more */
  char **subs;
  size_t nsubs, capsubs;
  char sse_epoch[PUSH_EPOCH_MAX + 1];
  pending_op *ops; /* engine calls in flight for this client */
  struct client *prev, *next;
} client;

/* An engine call in flight (the Redis engine answers later): what to do
 * with the answer. c becomes NULL when the client goes first; h, an HTTP
 * request, must be answered in every case. */
enum {
  OP_SUBSCRIBE,
  OP_HISTORY,
  OP_PUBLISH,
  OP_PRESENCE,
  OP_SSE,
  OP_API_HISTORY,
  OP_API_PRESENCE,
  OP_API_INFO,
  OP_API_PUBLISH,
  OP_DEMO
};

typedef struct bcast bcast;

struct pending_op {
  push_server *ps;
  client *c;
  herald_http *h;
  int kind;
  int cancelled; /* unsubscribed before the subscribe completed */
  uint64_t id;
  char channel[PUSH_CHANNEL_MAX + 1];
  push_pos since;
  uint64_t limit;
  bcast *bc; /* OP_API_PUBLISH: the request it is part of */
  size_t bc_index;
  pending_op *prev, *next; /* in c->ops */
};

#define LAT_BUCKETS 12
static const double lat_bounds[LAT_BUCKETS] = {0.00005, 0.0001, 0.00025, 0.0005,
                                               0.001,   0.0025, 0.005,   0.01,
                                               0.025,   0.05,   0.1,     0.5};

struct push_server {
  push_config *cfg;
  herald_server *srv;
  herald_loop *loop;
  push_hub *hub;
  push_redis *redis; /* the Redis engine, or NULL (memory, or stopped) */
  char node[16];     /* this node's name: client ids start with it */
  int64_t presence_refresh_ms;
  int exit_code;
  push_jwt_keys keys;
  uint64_t next_id;
  client *clients;
  size_t nclients;
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
  uint64_t lat_count, lat_bucket[LAT_BUCKETS + 1];
  double lat_sum;
};

/* Bytes of pushes one loop pass may queue (push_hub_pending_bytes) before
 * the client whose commands caused them is paused until they are flushed
 * and written (ws_message): 16 KiB per
 * client, so that each subscriber's write carries many pushes (one syscall
 * for many frames is what makes fan-out fast), within 8..256 MiB. */
#define PASS_FANOUT_PER_CLIENT (16u << 10)
#define PASS_FANOUT_MIN ((uint64_t)8 << 20)
#define PASS_FANOUT_MAX ((uint64_t)256 << 20)

static uint64_t pass_budget(const push_server *ps) {
  uint64_t b = (uint64_t)ps->nclients * PASS_FANOUT_PER_CLIENT;
  return b < PASS_FANOUT_MIN   ? PASS_FANOUT_MIN
         : b > PASS_FANOUT_MAX ? PASS_FANOUT_MAX
                               : b;
}

static push_server g_server; /* one per process: signal handlers need it */

/* ---- time ------------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- clients ---------------------------------------------------------- */

static client *client_new(push_server *ps) {
  client *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  c->ps = ps;
  /* With several nodes, ids must be unique among them: the node's name
   * leads. */
  if (ps->cfg->engine_redis) {
    snprintf(c->id, sizeof(c->id), "%s-%" PRIu64, ps->node, ++ps->next_id);
  } else {
    snprintf(c->id, sizeof(c->id), "c%" PRIu64, ++ps->next_id);
  }
  c->next = ps->clients;
  if (ps->clients) {
    ps->clients->prev = c;
  }
  ps->clients = c;
  ps->nclients++;
  return c;
}

static int client_subscribed(const client *c, const char *channel) {
  for (size_t i = 0; i < c->nsubs; i++) {
    if (strcmp(c->subs[i], channel) == 0) {
      return 1;
    }
  }
  return 0;
}

static void client_drop_sub(client *c, const char *channel) {
  for (size_t i = 0; i < c->nsubs; i++) {
    if (strcmp(c->subs[i], channel) == 0) {
      free(c->subs[i]);
      c->subs[i] = c->subs[--c->nsubs];
      return;
    }
  }
}

static void engine_presence_remove(push_server *ps, const client *c,
                                   const char *channel);
static void engine_release(push_server *ps, const char *channel);

/* Leaves every channel and frees the client. Engine calls still in flight
 * for it finish without it. */
static void client_free(client *c) {
  push_server *ps = c->ps;
  for (size_t i = 0; i < c->nsubs; i++) {
    const push_ns *ns = push_hub_ns(ps->hub, c->subs[i]);
    push_hub_unsubscribe(ps->hub, c->subs[i], c);
    if (ns && ns->presence) {
      engine_presence_remove(ps, c, c->subs[i]);
    }
    engine_release(ps, c->subs[i]);
    free(c->subs[i]);
  }
  free(c->subs);
  for (pending_op *op = c->ops; op; op = op->next) {
    op->c = NULL;
  }
  for (size_t i = 0; i < c->nallowed; i++) {
    free(c->allowed[i]);
  }
  free(c->allowed);
  free(c->info);
  if (c->prev) {
    c->prev->next = c->next;
  } else {
    ps->clients = c->next;
  }
  if (c->next) {
    c->next->prev = c->prev;
  }
  ps->nclients--;
  free(c);
}

static void client_disconnect(client *c, int code, const char *reason);

/* Sends one reply or push. A client whose queue is over client_output_cap
 * gets nothing more: it is disconnected as a slow consumer (3004), so that
 * a dropped reply can never look like an answered one. */
static void send_text(client *c, const char *p, size_t n) {
  if (c->ws == NULL || c->gone) {
    return;
  }
  int rv = herald_ws_send(c->ws, HERALD_OP_TEXT, p, n);
  if (rv == HERALD_SEND_DROPPED) {
    c->ps->drops++;
    c->ps->slow_disconnects++;
    client_disconnect(c, PUSH_D_SLOW, "slow consumer");
    return;
  }
  if (rv >= 0) {
    c->ps->messages_out++;
    c->ps->bytes_out += n;
  }
}

/* Sends the disconnect push, then closes with the same code. */
static void client_disconnect(client *c, int code, const char *reason) {
  if (c->gone) {
    return;
  }
  if (c->ws) {
    push_buf b = {0};
    c->gone = 1;
    if (push_push_disconnect(&b, code, reason, code < 3500) == 0) {
      /* Best effort: a client over its cap does not get it. */
      herald_ws_send(c->ws, HERALD_OP_TEXT, b.p, b.len);
    }
    push_buf_free(&b);
    herald_ws_close(c->ws, (uint16_t)code, reason, strlen(reason));
  } else if (c->sse) {
    c->gone = 1;
    herald_http *h = c->sse;
    c->sse = NULL;
    herald_http_end(h);
    client_free(c);
    return;
  }
  push_log(PUSH_LOG_INFO, "ev=disconnect client=%s code=%d reason=\"%s\"",
           c->id, code, reason);
}

/* ---- delivery --------------------------------------------------------- */

static void pub_release(void *ctx) {
  push_pub_unref(ctx);
}

/* From the publication's making to its queueing on a connection, which
 * happens in the pass's flush: one clock read serves the whole flush. */
static void record_latency(push_server *ps, const push_pub *pub) {
  uint64_t now = ps->flush_us ? ps->flush_us : mono_us();
  double s = now > pub->born_us ? (double)(now - pub->born_us) / 1e6 : 0;
  int b = 0;
  while (b < LAT_BUCKETS && s > lat_bounds[b]) {
    b++;
  }
  ps->lat_bucket[b]++;
  ps->lat_count++;
  ps->lat_sum += s;
}

/* SSE: "id: epoch:offset" and the publication, one data line per line of
 * its JSON (published JSON may contain newlines between tokens). */
/* Returns 0, or -1 when the client was disconnected (and freed) for being
 * over its output cap. */
static int sse_send_pub(client *c, const char *channel, push_pub *pub) {
  push_buf b = {0};
  char head[96];
  int n = snprintf(head, sizeof(head),
                   "id: %s:%" PRIu64 "\ndata: ", c->sse_epoch, pub->offset);
  push_buf_raw(&b, head, (size_t)n);
  push_buf_raw(&b, "{\"channel\":", 11);
  push_buf_str(&b, channel, strlen(channel));
  push_buf_raw(&b, ",\"pub\":", 7);
  const char *j = pub->frame + pub->json_off;
  size_t start = 0;
  for (size_t i = 0; i < pub->json_len; i++) {
    if (j[i] == '\n' || j[i] == '\r') {
      push_buf_raw(&b, j + start, i - start);
      push_buf_raw(&b, "\ndata: ", 7);
      start = i + 1;
    }
  }
  push_buf_raw(&b, j + start, pub->json_len - start);
  push_buf_raw(&b, "}\n\n", 3);
  if (b.p && herald_http_write(c->sse, b.p, b.len) == HERALD_SEND_DROPPED) {
    c->ps->drops++;
    c->ps->slow_disconnects++;
    push_buf_free(&b);
    client_disconnect(c, PUSH_D_SLOW, "slow consumer");
    return -1;
  }
  c->ps->messages_out++;
  c->ps->bytes_out += b.len;
  push_buf_free(&b);
  return 0;
}

static void deliver(void *cl, push_pub *pub) {
  client *c = cl;
  push_server *ps = c->ps;
  if (c->gone) {
    push_pub_unref(pub);
    return;
  }
  if (c->sse) {
    /* The channel is the SSE client's only subscription. */
    record_latency(ps, pub);
    sse_send_pub(c, c->nsubs ? c->subs[0] : "", pub);
    push_pub_unref(pub);
    return;
  }
  size_t flen;
  const uint8_t *frame = push_pub_ws_frame(pub, &flen);
  size_t fbytes = pub->frame_len;
  record_latency(ps, pub);
  int rv = herald_ws_send_frame(c->ws, frame, flen, 0, pub_release, pub);
  if (rv == HERALD_SEND_DROPPED) {
    ps->drops++;
    ps->slow_disconnects++;
    push_log(PUSH_LOG_WARN, "ev=slow_consumer client=%s buffered=%zu", c->id,
             herald_ws_buffered(c->ws));
    client_disconnect(c, PUSH_D_SLOW, "slow consumer");
    return;
  }
  if (rv >= 0) {
    ps->messages_out++;
    ps->bytes_out += fbytes;
  }
}

static void presence_event(void *cl, const char *frame, size_t len) {
  client *c = cl;
  if (c->ws) {
    send_text(c, frame, len);
  }
}

/* ---- publishing ------------------------------------------------------- */

static int publish(push_server *ps, const char *channel, push_json data,
                   push_json b64, const char *cid, const char *user,
                   push_pos *pos) {
  int rv =
      push_hub_publish(ps->hub, channel, data, b64, cid, user, now_ms(), pos);
  if (rv == 0) {
    ps->publications++;
  }
  return rv;
}

/* ---- commands --------------------------------------------------------- */

static void reply_error(client *c, uint64_t id, int code, const char *msg,
                        int temporary) {
  push_buf b = {0};
  if (push_reply_error(&b, id, code, msg, temporary) == 0) {
    send_text(c, b.p, b.len);
  }
  push_buf_free(&b);
}

#define SCRATCH_KEEP (64 * 1024)

static void reply(client *c, uint64_t id, const push_buf *result) {
  push_buf *b = &c->ps->envelope;
  if (push_reply(b, id, result->p, result->len) == 0) {
    send_text(c, b->p, b->len);
  }
  push_buf_done(b, SCRATCH_KEEP);
}

/* Writes "epoch":...,"offset":N into b (no braces). */
static void put_pos(push_buf *b, const push_pos *pos) {
  push_buf_raw(b, "\"epoch\":", 8);
  push_buf_str(b, pos->epoch, strlen(pos->epoch));
  push_buf_raw(b, ",\"offset\":", 10);
  push_buf_u64(b, pos->offset);
}

static size_t pubs_size(const push_result *r) {
  size_t n = 0;
  for (size_t i = 0; i < r->npubs; i++) {
    n += r->pubs[i]->json_len + 1;
  }
  return n;
}

static void put_pubs(push_buf *b, const push_result *r) {
  push_buf_raw(b, ",\"publications\":[", 17);
  for (size_t i = 0; i < r->npubs; i++) {
    if (i) {
      push_buf_raw(b, ",", 1);
    }
    push_buf_raw(b, r->pubs[i]->frame + r->pubs[i]->json_off,
                 r->pubs[i]->json_len);
  }
  push_buf_raw(b, "]", 1);
}

/* The result of subscribe and history: {"epoch","offset"}, then
 * "recovered" when the request gave a position, then the publications. */
static void put_result(push_buf *b, const push_result *r, int with_recovered,
                       int with_pubs) {
  push_buf_raw(b, "{", 1);
  put_pos(b, &r->pos);
  if (with_recovered) {
    push_buf_raw(b,
                 r->recovered ? ",\"recovered\":true" : ",\"recovered\":false",
                 r->recovered ? 17 : 18);
  }
  if (with_pubs) {
    put_pubs(b, r);
  }
  push_buf_raw(b, "}", 1);
}

/* {"error":{"code":N,"message":"..."}} */
static void put_error(push_buf *b, int code, const char *msg) {
  push_buf_raw(b, "{\"error\":{\"code\":", 17);
  push_buf_u64(b, (uint64_t)code);
  push_buf_raw(b, ",\"message\":", 11);
  push_buf_str(b, msg, strlen(msg));
  push_buf_raw(b, "}}", 2);
}

/* ---- the engine: memory (the hub alone) or Redis ---------------------- */

static pending_op *op_new(push_server *ps, client *c, herald_http *h, int kind,
                          uint64_t id, const char *channel) {
  pending_op *op = calloc(1, sizeof(*op));
  if (op == NULL) {
    return NULL;
  }
  op->ps = ps;
  op->c = c;
  op->h = h;
  op->kind = kind;
  op->id = id;
  if (channel) {
    snprintf(op->channel, sizeof(op->channel), "%s", channel);
  }
  if (c) {
    op->next = c->ops;
    if (c->ops) {
      c->ops->prev = op;
    }
    c->ops = op;
  }
  return op;
}

static void op_free(pending_op *op) {
  if (op->c) {
    if (op->prev) {
      op->prev->next = op->next;
    } else {
      op->c->ops = op->next;
    }
    if (op->next) {
      op->next->prev = op->prev;
    }
  }
  free(op);
}

/* The subscribe of c to channel still waiting for the engine, or NULL. */
static pending_op *op_pending_sub(const client *c, const char *channel) {
  for (pending_op *op = c->ops; op; op = op->next) {
    if (op->kind == OP_SUBSCRIBE && !op->cancelled &&
        strcmp(op->channel, channel) == 0) {
      return op;
    }
  }
  return NULL;
}

static size_t npending_subs(const client *c) {
  size_t n = 0;
  for (pending_op *op = c->ops; op; op = op->next) {
    n += op->kind == OP_SUBSCRIBE && !op->cancelled;
  }
  return n;
}

static void engine_release(push_server *ps, const char *channel) {
  if (ps->redis) {
    push_redis_release(ps->redis, channel);
  }
}

/* {"user":...,"info":...}: a presence entry as stored in Redis, the same
 * shape the hub writes. NUL-terminated. */
static int presence_entry(push_buf *b, const client *c) {
  return push_buf_raw(b, "{\"user\":", 8) ||
         push_buf_str(b, c->user, strlen(c->user)) ||
         (c->info && (push_buf_raw(b, ",\"info\":", 8) ||
                      push_buf_raw(b, c->info, strlen(c->info)))) ||
         push_buf_raw(b, "}", 1) || push_buf_raw(b, "", 1);
}

static void engine_presence_add(push_server *ps, const client *c,
                                const char *channel, int announce) {
  if (!ps->cfg->engine_redis) {
    push_hub_presence_add(ps->hub, channel, c->id, c->user, c->info);
    return;
  }
  if (ps->redis == NULL) {
    return;
  }
  const push_ns *ns = push_hub_ns(ps->hub, channel);
  push_buf e = {0}, join = {0};
  push_json info = {c->info, c->info ? strlen(c->info) : 0};
  int want_join = announce && ns && ns->join_leave;
  if (presence_entry(&e, c) == 0 &&
      (!want_join ||
       push_push_join(&join, channel, c->id, c->user, info, 0) == 0)) {
    push_redis_presence_add(ps->redis, channel, c->id, e.p,
                            want_join ? &join : NULL);
  }
  push_buf_free(&e);
  push_buf_free(&join);
}

static void engine_presence_remove(push_server *ps, const client *c,
                                   const char *channel) {
  if (!ps->cfg->engine_redis) {
    push_hub_presence_remove(ps->hub, channel, c->id);
    return;
  }
  if (ps->redis == NULL) {
    return;
  }
  const push_ns *ns = push_hub_ns(ps->hub, channel);
  push_buf leave = {0};
  push_json none = {NULL, 0};
  int want = ns && ns->join_leave &&
             push_push_join(&leave, channel, c->id, c->user, none, 1) == 0;
  push_redis_presence_remove(ps->redis, channel, c->id, want ? &leave : NULL);
  push_buf_free(&leave);
}

static void op_synced(pending_op *op, int status);

static void on_synced(void *ud, const push_redis_reply *rep) {
  op_synced(ud, rep->status);
}

/* Runs op once the hub's copy of op->channel is current: at once with the
 * memory engine or a channel this node already follows, else when Redis
 * has answered. With Redis, a PUSH_REDIS_OK holds a reference on the
 * channel that the op's handler keeps or releases. */
static void op_sync(pending_op *op) {
  push_server *ps = op->ps;
  if (!ps->cfg->engine_redis) {
    op_synced(op, PUSH_REDIS_OK);
    return;
  }
  int rv = ps->redis ? push_redis_sync(ps->redis, op->channel, on_synced, op)
                     : PUSH_REDIS_DOWN;
  if (rv <= 0) {
    op_synced(op, rv);
  }
}

/* Verifies a JWT; on failure answers and disconnects. Returns 0 or -1. */
static int check_token(client *c, uint64_t id, push_json tok,
                       push_jwt_claims *claims) {
  char text[8192];
  long n = push_json_str(tok, text, sizeof(text));
  int rv = n < 0
               ? PUSH_JWT_MALFORMED
               : push_jwt_verify(text, (size_t)n, &c->ps->keys, now_ms() / 1000,
                                 c->ps->cfg->jwt_require_exp, claims);
  if (rv == PUSH_JWT_OK) {
    return 0;
  }
  c->ps->auth_failures++;
  if (rv == PUSH_JWT_EXPIRED) {
    reply_error(c, id, PUSH_E_TOKEN_EXPIRED, "token expired", 0);
    client_disconnect(c, PUSH_D_TOKEN_EXPIRED, "token expired");
  } else {
    reply_error(c, id, PUSH_E_UNAUTHORIZED,
                rv == PUSH_JWT_BAD_SIG  ? "invalid token signature"
                : rv == PUSH_JWT_NO_EXP ? "token has no exp"
                                        : "malformed token",
                0);
    client_disconnect(c, PUSH_D_INVALID_TOKEN, "invalid token");
  }
  return -1;
}

static void cmd_connect(client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  if (c->connected) {
    reply_error(c, cmd->id, PUSH_E_BAD_REQUEST, "already connected", 0);
    return;
  }
  if (cmd->token.n > 0) {
    push_jwt_claims cl;
    memset(&cl, 0, sizeof(cl));
    if (check_token(c, cmd->id, cmd->token, &cl) != 0) {
      return;
    }
    snprintf(c->user, sizeof(c->user), "%s", cl.sub);
    c->info = cl.info;
    cl.info = NULL;
    c->allowed = cl.channels;
    c->nallowed = cl.nchannels;
    cl.channels = NULL;
    cl.nchannels = 0;
    push_jwt_claims_free(&cl);
  } else if (!ps->cfg->anonymous) {
    ps->auth_failures++;
    reply_error(c, cmd->id, PUSH_E_UNAUTHORIZED, "a token is required", 0);
    client_disconnect(c, PUSH_D_INVALID_TOKEN, "token required");
    return;
  }
  if (c->info == NULL && cmd->name.n > 0) {
    /* A name the client gives itself is shown in presence as info.name;
     * it is never taken for the user id, which only a token can set. */
    char name[128];
    long n = push_json_str(cmd->name, name, sizeof(name));
    push_buf b = {0};
    if (n > 0 && push_buf_raw(&b, "{\"name\":", 8) == 0 &&
        push_buf_str(&b, name, (size_t)n) == 0 &&
        push_buf_raw(&b, "}", 1) == 0 && push_buf_raw(&b, "", 1) == 0) {
      c->info = b.p; /* NUL-terminated by the last append */
      b.p = NULL;
    }
    push_buf_free(&b);
  }
  c->connected = 1;
  ps->connects_total++;
  push_buf b = {0};
  push_buf_raw(&b, "{\"client\":", 10);
  push_buf_str(&b, c->id, strlen(c->id));
  push_buf_raw(&b, ",\"user\":", 8);
  push_buf_str(&b, c->user, strlen(c->user));
  push_buf_raw(&b, ",\"version\":\"" HERALD_VERSION_STRING "\",\"ping\":",
               sizeof(",\"version\":\"" HERALD_VERSION_STRING "\",\"ping\":") -
                   1);
  push_buf_u64(&b, ps->cfg->ping_interval_s);
  push_buf_raw(&b, "}", 1);
  reply(c, cmd->id, &b);
  push_buf_free(&b);
  push_log(PUSH_LOG_INFO, "ev=connect client=%s user=\"%s\"", c->id, c->user);
}

/* May this client subscribe to channel of namespace ns? */
static int may_subscribe(client *c, const push_ns *ns, const push_cmd *cmd) {
  for (size_t i = 0; i < c->nallowed; i++) {
    if (strcmp(c->allowed[i], cmd->channel) == 0) {
      return 1;
    }
  }
  if (!ns->private_channels) {
    return 1;
  }
  if (cmd->token.n == 0) {
    return 0;
  }
  push_jwt_claims cl;
  memset(&cl, 0, sizeof(cl));
  char text[8192];
  long n = push_json_str(cmd->token, text, sizeof(text));
  int ok = n >= 0 &&
           push_jwt_verify(text, (size_t)n, &c->ps->keys, now_ms() / 1000, 1,
                           &cl) == PUSH_JWT_OK &&
           strcmp(cl.sub, c->user) == 0 &&
           strcmp(cl.channel, cmd->channel) == 0;
  if (n >= 0 && ok) {
    push_jwt_claims_free(&cl);
  } else if (cl.info || cl.channels) {
    push_jwt_claims_free(&cl);
  }
  return ok;
}

#define ENGINE_DOWN "engine unavailable: try again later"

static void http_error(herald_http *h, int status, int code, const char *msg);

/* The answers to a request refused because Redis is unreachable (112,
 * temporary; HTTP 503). Each counts one in herald_engine_unavailable_total:
 * counting happens here and nowhere else. */
static void reply_engine_down(client *c, uint64_t id) {
  c->ps->engine_unavailable++;
  reply_error(c, id, PUSH_E_ENGINE, ENGINE_DOWN, 1);
}

static void http_engine_down(push_server *ps, herald_http *h) {
  ps->engine_unavailable++;
  http_error(h, 503, PUSH_E_ENGINE, ENGINE_DOWN);
}

/* ... to whoever op is for: its HTTP request, or its client if still
 * there. */
static void op_engine_down(pending_op *op) {
  if (op->h != NULL) {
    http_engine_down(op->ps, op->h);
  } else if (op->c != NULL && !op->c->gone) {
    reply_engine_down(op->c, op->id);
  }
}

static void cmd_subscribe(client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  const push_ns *ns = push_hub_ns(ps->hub, cmd->channel);
  if (ns == NULL) {
    reply_error(c, cmd->id, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace", 0);
    return;
  }
  if (client_subscribed(c, cmd->channel) ||
      op_pending_sub(c, cmd->channel) != NULL) {
    reply_error(c, cmd->id, PUSH_E_ALREADY_SUBSCRIBED, "already subscribed", 0);
    return;
  }
  if (c->nsubs + npending_subs(c) >= ps->cfg->max_channels) {
    reply_error(c, cmd->id, PUSH_E_LIMIT, "too many channels", 0);
    return;
  }
  if (!may_subscribe(c, ns, cmd)) {
    ps->auth_failures++;
    reply_error(c, cmd->id, PUSH_E_PERMISSION,
                "this channel needs a valid subscription token", 0);
    return;
  }
  pending_op *op = op_new(ps, c, NULL, OP_SUBSCRIBE, cmd->id, cmd->channel);
  if (op == NULL) {
    reply_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  op->since = cmd->since;
  op_sync(op);
}

/* The second half of subscribe, once the channel is current. */
static void subscribe_done(pending_op *op, int status) {
  push_server *ps = op->ps;
  client *c = op->c;
  const char *channel = op->channel;
  int ok = status == PUSH_REDIS_OK;
  if (c == NULL || c->gone || op->cancelled) {
    if (ok) {
      engine_release(ps, channel);
    }
    return;
  }
  if (!ok) {
    reply_engine_down(c, op->id);
    return;
  }
  const push_ns *ns = push_hub_ns(ps->hub, channel);
  char *name = NULL;
  if (c->nsubs == c->capsubs) {
    size_t ncap = c->capsubs ? c->capsubs * 2 : 4;
    char **n = realloc(c->subs, ncap * sizeof(char *));
    if (n == NULL) {
      goto nomem;
    }
    c->subs = n;
    c->capsubs = ncap;
  }
  name = strdup(channel);
  push_sub sub = {c, deliver, presence_event};
  push_result r;
  memset(&r, 0, sizeof(r));
  if (name == NULL || push_hub_subscribe(ps->hub, channel, &sub, &op->since,
                                         now_ms(), &r) < 0) {
    goto nomem;
  }
  c->subs[c->nsubs++] = name;
  if (r.recovered && pubs_size(&r) > ps->cfg->output_cap / 2) {
    /* More to replay than the client may have queued: say so rather than
     * drop it. The client reloads its state (docs/protocol.md). */
    push_log(PUSH_LOG_INFO,
             "ev=unrecovered client=%s channel=%s reason=too_large pubs=%zu",
             c->id, channel, r.npubs);
    r.recovered = 0;
  }
  push_buf b = {0};
  put_result(&b, &r, op->since.set, op->since.set && r.recovered);
  reply(c, op->id, &b);
  push_buf_free(&b);
  push_result_free(&r);
  if (ns && ns->presence && !c->gone) {
    engine_presence_add(ps, c, channel, 1);
  }
  push_log(PUSH_LOG_DEBUG, "ev=subscribe client=%s channel=%s", c->id, channel);
  return;
nomem:
  free(name);
  engine_release(ps, channel);
  reply_error(c, op->id, PUSH_E_INTERNAL, "out of memory", 1);
}

static void cmd_unsubscribe(client *c, const push_cmd *cmd) {
  pending_op *op = op_pending_sub(c, cmd->channel);
  if (op != NULL) {
    op->cancelled = 1; /* its completion lets the channel go */
  } else if (!client_subscribed(c, cmd->channel)) {
    reply_error(c, cmd->id, PUSH_E_NOT_SUBSCRIBED, "not subscribed", 0);
    return;
  } else {
    push_server *ps = c->ps;
    const push_ns *ns = push_hub_ns(ps->hub, cmd->channel);
    push_hub_unsubscribe(ps->hub, cmd->channel, c);
    if (ns && ns->presence) {
      engine_presence_remove(ps, c, cmd->channel);
    }
    engine_release(ps, cmd->channel);
    client_drop_sub(c, cmd->channel);
  }
  push_buf b = {0};
  push_buf_raw(&b, "{}", 2);
  reply(c, cmd->id, &b);
  push_buf_free(&b);
}

static void on_published(void *ud, const push_redis_reply *rep);

/* Publishes data or b64 to channel. Memory engine: done at once (returns 0
 * with *pos, or -1 out of memory). Redis: returns 1 and op gets the outcome
 * (on_published), or -2 when Redis is unreachable (op untouched). */
static int engine_publish(push_server *ps, const char *channel, push_json data,
                          push_json b64, const char *cid, const char *user,
                          push_pos *pos, pending_op *op) {
  if (!ps->cfg->engine_redis) {
    return publish(ps, channel, data, b64, cid, user, pos);
  }
  push_buf *t = &ps->result;
  int rv = -2;
  if (ps->redis != NULL && push_pub_tail(t, data, b64, cid, user) == 0 &&
      push_redis_publish(ps->redis, channel, t->p, t->len, on_published, op) ==
          1) {
    rv = 1;
  }
  push_buf_done(t, SCRATCH_KEEP);
  return rv;
}

static void reply_pos(client *c, uint64_t id, const push_pos *pos) {
  push_buf *b = &c->ps->result;
  push_buf_raw(b, "{", 1);
  put_pos(b, pos);
  push_buf_raw(b, "}", 1);
  reply(c, id, b);
  push_buf_done(b, SCRATCH_KEEP);
}

static void cmd_publish(client *c, const push_cmd *cmd) {
  const push_ns *ns = push_hub_ns(c->ps->hub, cmd->channel);
  if (ns == NULL) {
    reply_error(c, cmd->id, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace", 0);
    return;
  }
  if (!ns->publish) {
    reply_error(c, cmd->id, PUSH_E_PERMISSION,
                "clients may not publish in this namespace", 0);
    return;
  }
  push_pos pos;
  pending_op *op = NULL;
  if (c->ps->cfg->engine_redis &&
      (op = op_new(c->ps, c, NULL, OP_PUBLISH, cmd->id, cmd->channel)) ==
          NULL) {
    reply_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  int rv = engine_publish(c->ps, cmd->channel, cmd->data, cmd->b64, c->id,
                          c->user, &pos, op);
  if (rv == 0) {
    /* The hot command: its result goes through the scratch buffer too. */
    reply_pos(c, cmd->id, &pos);
  } else if (rv == -1) {
    reply_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
  } else if (rv == -2) {
    op_free(op);
    reply_engine_down(c, cmd->id);
  }
}

static void on_presence_reply(void *ud, const push_redis_reply *rep);

static void cmd_presence(client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  const push_ns *ns = push_hub_ns(ps->hub, cmd->channel);
  if (ns == NULL) {
    reply_error(c, cmd->id, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace", 0);
    return;
  }
  if (!ns->presence) {
    reply_error(c, cmd->id, PUSH_E_NOT_AVAILABLE,
                "presence is off in this namespace", 0);
    return;
  }
  if (ns->private_channels && !client_subscribed(c, cmd->channel)) {
    reply_error(c, cmd->id, PUSH_E_PERMISSION, "subscribe first", 0);
    return;
  }
  if (ps->cfg->engine_redis) {
    pending_op *op = op_new(ps, c, NULL, OP_PRESENCE, cmd->id, cmd->channel);
    if (op == NULL || ps->redis == NULL ||
        push_redis_presence_get(ps->redis, cmd->channel, on_presence_reply,
                                op) != 1) {
      if (op) {
        op_free(op);
      }
      reply_engine_down(c, cmd->id);
    }
    return;
  }
  push_buf b = {0};
  if (push_hub_presence_json(ps->hub, cmd->channel, &b) == 0) {
    reply(c, cmd->id, &b);
  }
  push_buf_free(&b);
}

static void cmd_history(client *c, const push_cmd *cmd) {
  const push_ns *ns = push_hub_ns(c->ps->hub, cmd->channel);
  if (ns == NULL) {
    reply_error(c, cmd->id, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace", 0);
    return;
  }
  if (ns->history_size == 0) {
    reply_error(c, cmd->id, PUSH_E_NOT_AVAILABLE,
                "history is off in this namespace", 0);
    return;
  }
  if (ns->private_channels && !client_subscribed(c, cmd->channel)) {
    reply_error(c, cmd->id, PUSH_E_PERMISSION, "subscribe first", 0);
    return;
  }
  pending_op *op = op_new(c->ps, c, NULL, OP_HISTORY, cmd->id, cmd->channel);
  if (op == NULL) {
    reply_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  op->since = cmd->since;
  op->limit = cmd->limit;
  op_sync(op);
}

static void history_done(pending_op *op, int status) {
  push_server *ps = op->ps;
  client *c = op->c;
  if (status == PUSH_REDIS_OK && (c == NULL || c->gone)) {
    engine_release(ps, op->channel);
    return;
  }
  if (c == NULL || c->gone) {
    return;
  }
  if (status != PUSH_REDIS_OK) {
    reply_engine_down(c, op->id);
    return;
  }
  push_result r;
  memset(&r, 0, sizeof(r));
  int rv = push_hub_history(ps->hub, op->channel, op->limit, &op->since,
                            now_ms(), &r);
  engine_release(ps, op->channel);
  if (rv != 0) {
    reply_error(c, op->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  if (pubs_size(&r) > ps->cfg->output_cap / 2) {
    push_result_free(&r);
    reply_error(c, op->id, PUSH_E_LIMIT,
                "history reply too large: ask for a smaller limit", 0);
    return;
  }
  push_buf b = {0};
  put_result(&b, &r, op->since.set, 1);
  reply(c, op->id, &b);
  push_buf_free(&b);
  push_result_free(&r);
}

static void dispatch(client *c, const push_cmd *cmd) {
  if (!c->connected && cmd->method != PUSH_CONNECT) {
    reply_error(c, cmd->id, PUSH_E_UNAUTHORIZED, "connect first", 0);
    client_disconnect(c, PUSH_D_BAD_REQUEST, "connect first");
    return;
  }
  switch (cmd->method) {
  case PUSH_CONNECT:
    cmd_connect(c, cmd);
    break;
  case PUSH_SUBSCRIBE:
    cmd_subscribe(c, cmd);
    break;
  case PUSH_UNSUBSCRIBE:
    cmd_unsubscribe(c, cmd);
    break;
  case PUSH_PUBLISH:
    cmd_publish(c, cmd);
    break;
  case PUSH_PRESENCE:
    cmd_presence(c, cmd);
    break;
  case PUSH_HISTORY:
    cmd_history(c, cmd);
    break;
  case PUSH_PING: {
    push_buf b = {0};
    push_buf_raw(&b, "{}", 2);
    reply(c, cmd->id, &b);
    push_buf_free(&b);
    break;
  }
  }
}

/* ---- WebSocket callbacks ---------------------------------------------- */

/* An Origin header, when present, must be allowed: listed, "*", or the same
 * host the request was sent to. */
static int origin_ok(push_server *ps, const herald_request *req) {
  if (req->origin.len == 0) {
    return 1; /* not a browser */
  }
  for (size_t i = 0; i < ps->cfg->norigins; i++) {
    const char *o = ps->cfg->origins[i];
    if (strcmp(o, "*") == 0 ||
        (strlen(o) == req->origin.len &&
         strncasecmp(o, req->origin.ptr, req->origin.len) == 0)) {
      return 1;
    }
  }
  /* Same origin: "scheme://" + Host. */
  const char *p = memchr(req->origin.ptr, ':', req->origin.len);
  if (p && (size_t)(p - req->origin.ptr) + 3 <= req->origin.len &&
      p[1] == '/' && p[2] == '/') {
    const char *host = p + 3;
    size_t hlen = req->origin.len - (size_t)(host - req->origin.ptr);
    return hlen == req->host.len && strncasecmp(host, req->host.ptr, hlen) == 0;
  }
  return 0;
}

static int ws_upgrade(herald_ws *ws, const herald_request *req,
                      herald_accept *acc, void *ud) {
  push_server *ps = ud;
  (void)ws;
  (void)acc;
  if (ps->stopping) {
    return 503;
  }
  if (!origin_ok(ps, req)) {
    push_log(PUSH_LOG_WARN, "ev=refused reason=origin origin=\"%.*s\"",
             (int)req->origin.len, req->origin.ptr);
    return 403;
  }
  return 0;
}

static void ws_open(herald_ws *ws, void *ud) {
  push_server *ps = ud;
  client *c = client_new(ps);
  if (c == NULL) {
    herald_ws_close(ws, HERALD_CLOSE_TRY_LATER, "out of memory", 13);
    return;
  }
  c->ws = ws;
  herald_ws_set_data(ws, c);
}

static void ws_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  push_server *ps = ud;
  client *c = herald_ws_data(ws);
  if (c == NULL || c->gone) {
    return;
  }
  ps->messages_in++;
  ps->bytes_in += len;
  if (op != HERALD_OP_TEXT) {
    reply_error(c, 0, PUSH_E_BAD_REQUEST, "commands are text frames", 0);
    client_disconnect(c, PUSH_D_BAD_REQUEST, "binary frame");
    return;
  }
  size_t pos = 0;
  for (;;) {
    push_cmd cmd;
    int err = 0;
    const char *msg = NULL;
    int rv = push_cmd_next((const char *)data, len, &pos, &cmd, &err, &msg);
    if (rv == 0 || c->gone) {
      break;
    }
    if (rv < 0) {
      reply_error(c, cmd.id, err, msg, 0);
      if (!c->connected) {
        client_disconnect(c, PUSH_D_BAD_REQUEST, msg);
        break;
      }
      continue;
    }
    dispatch(c, &cmd);
  }
  if (push_hub_pending_bytes(ps->hub) > pass_budget(ps) && c->ws && !c->gone) {
    /* This pass has queued a lot for subscribers: read no more from this
     * client until the runtime has written that out (the resume waits for
     * the flush). Without it one read of 256 KiB of publish commands, fanned
     * out to every subscriber before any write, can queue gigabytes. */
    herald_ws_pause_read(c->ws);
    herald_ws_resume_read(c->ws);
  }
}

static void ws_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  (void)ud;
  client *c = herald_ws_data(ws);
  if (c == NULL) {
    return;
  }
  push_log(PUSH_LOG_INFO, "ev=close client=%s code=%u%s%s", c->id, info->code,
           info->error ? " error=" : "", info->error ? info->error : "");
  c->ws = NULL;
  client_free(c);
}

/* ---- HTTP ------------------------------------------------------------- */

static void http_json(herald_http *h, int status, const char *body,
                      size_t len) {
  herald_header ct = {{"Content-Type", 12}, {"application/json", 16}};
  herald_http_respond(h, status, &ct, 1, body, len);
}

static void http_error(herald_http *h, int status, int code, const char *msg) {
  push_buf b = {0};
  put_error(&b, code, msg);
  if (b.p) {
    http_json(h, status, b.p, b.len);
  } else {
    herald_http_respond(h, 503, NULL, 0, NULL, 0);
  }
  push_buf_free(&b);
}

static void http_result(herald_http *h, const push_buf *result) {
  push_buf b = {0};
  push_buf_raw(&b, "{\"result\":", 10);
  push_buf_raw(&b, result->p, result->len);
  push_buf_raw(&b, "}", 1);
  if (b.p) {
    http_json(h, 200, b.p, b.len);
  } else {
    herald_http_respond(h, 503, NULL, 0, NULL, 0);
  }
  push_buf_free(&b);
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') {
    return ch - '0';
  }
  if (ch >= 'a' && ch <= 'f') {
    return ch - 'a' + 10;
  }
  if (ch >= 'A' && ch <= 'F') {
    return ch - 'A' + 10;
  }
  return -1;
}

/* Finds query parameter name and URL-decodes it into out. Returns 1 if
 * present and decodable, 0 otherwise. */
static int query_param(herald_str q, const char *name, char *out, size_t cap) {
  size_t nlen = strlen(name), i = 0;
  while (i < q.len) {
    size_t end = i;
    while (end < q.len && q.ptr[end] != '&') {
      end++;
    }
    if (end - i > nlen && memcmp(q.ptr + i, name, nlen) == 0 &&
        q.ptr[i + nlen] == '=') {
      size_t o = 0;
      for (size_t k = i + nlen + 1; k < end; k++) {
        char ch = q.ptr[k];
        if (ch == '+') {
          ch = ' ';
        } else if (ch == '%') {
          if (k + 2 >= end) {
            return 0;
          }
          int hi = hexval(q.ptr[k + 1]), lo = hexval(q.ptr[k + 2]);
          if (hi < 0 || lo < 0) {
            return 0;
          }
          ch = (char)(hi * 16 + lo);
          k += 2;
        }
        if (o + 1 >= cap) {
          return 0;
        }
        out[o++] = ch;
      }
      out[o] = 0;
      return 1;
    }
    i = end + 1;
  }
  return 0;
}

static int path_is(const herald_request *req, const char *p) {
  return req->path.len == strlen(p) &&
         memcmp(req->path.ptr, p, req->path.len) == 0;
}

static int method_is(const herald_request *req, const char *m) {
  return req->method.len == strlen(m) &&
         memcmp(req->method.ptr, m, req->method.len) == 0;
}

static void serve_metrics(push_server *ps, herald_http *h) {
  push_buf b = {0};
  char line[256];
  struct {
    const char *name, *type, *help;
    double value;
  } m[] = {
      {"herald_connections", "gauge", "Open WebSocket and SSE clients.",
       (double)ps->nclients},
      {"herald_subscriptions", "gauge", "Channel subscriptions.",
       (double)push_hub_nsubscriptions(ps->hub)},
      {"herald_channels", "gauge", "Channels with subscribers or history.",
       (double)push_hub_nchannels(ps->hub)},
      {"herald_connects_total", "counter", "Successful connect commands.",
       (double)ps->connects_total},
      {"herald_auth_failures_total", "counter", "Refused tokens.",
       (double)ps->auth_failures},
      {"herald_messages_in_total", "counter", "WebSocket messages received.",
       (double)ps->messages_in},
      {"herald_messages_out_total", "counter", "Messages sent to clients.",
       (double)ps->messages_out},
      {"herald_bytes_in_total", "counter", "Bytes of messages received.",
       (double)ps->bytes_in},
      {"herald_bytes_out_total", "counter", "Bytes of messages sent.",
       (double)ps->bytes_out},
      {"herald_publications_total", "counter", "Publications.",
       (double)ps->publications},
      {"herald_drops_total", "counter",
       "Messages not queued because a client was over its output cap.",
       (double)ps->drops},
      {"herald_slow_consumer_disconnects_total", "counter",
       "Clients cut off for being too slow.", (double)ps->slow_disconnects},
      {"herald_partial_message_bytes", "gauge",
       "Bytes all clients hold for messages still arriving.",
       (double)herald_budget_used(herald_server_budget(ps->srv))},
      {"herald_partial_message_refusals_total", "counter",
       "Clients closed with 1013 over the budget for partial messages.",
       (double)herald_budget_refused(herald_server_budget(ps->srv))},
  };
  for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
    int n = snprintf(line, sizeof(line),
                     "# HELP %s %s\n# TYPE %s %s\n%s %.0f\n", m[i].name,
                     m[i].help, m[i].name, m[i].type, m[i].name, m[i].value);
    push_buf_raw(&b, line, (size_t)n);
  }
  static const char hist[] =
      "# HELP herald_delivery_latency_seconds Time from a publish to the "
      "publication being queued for each subscriber.\n"
      "# TYPE herald_delivery_latency_seconds histogram\n";
  push_buf_raw(&b, hist, sizeof(hist) - 1);
  uint64_t cum = 0;
  for (int i = 0; i <= LAT_BUCKETS; i++) {
    cum += ps->lat_bucket[i];
    int n =
        i < LAT_BUCKETS
            ? snprintf(line, sizeof(line),
                       "herald_delivery_latency_seconds_bucket{le=\"%g\"} "
                       "%" PRIu64 "\n",
                       lat_bounds[i], cum)
            : snprintf(line, sizeof(line),
                       "herald_delivery_latency_seconds_bucket{le=\"+Inf\"} "
                       "%" PRIu64 "\n",
                       cum);
    push_buf_raw(&b, line, (size_t)n);
  }
  if (ps->cfg->engine_redis) {
    push_redis_stats st = {0};
    if (ps->redis) {
      push_redis_get_stats(ps->redis, &st);
    }
    struct {
      const char *name, *type, *help;
      double value;
    } r[] = {
        {"herald_engine_healthy", "gauge",
         "1 when every Redis shard is connected and ready.",
         (double)(ps->redis && push_redis_healthy(ps->redis))},
        {"herald_redis_shards", "gauge", "Configured Redis shards.",
         (double)st.shards},
        {"herald_redis_shards_up", "gauge", "Redis shards connected.",
         (double)st.shards_up},
        {"herald_redis_reconnects_total", "counter",
         "Times a Redis shard was lost and a reconnect scheduled.",
         (double)st.reconnects},
        {"herald_redis_errors_total", "counter", "Redis error replies.",
         (double)st.errors},
        {"herald_redis_resyncs_total", "counter",
         "Channels read again from Redis after a gap.", (double)st.resyncs},
        {"herald_redis_lost_total", "counter",
         "Resyncs that could not fill the gap (subscribers were told).",
         (double)st.lost},
        {"herald_redis_channels", "gauge",
         "Channels this node follows in Redis.", (double)st.channels},
        {"herald_engine_unavailable_total", "counter",
         "Requests refused because Redis was unreachable.",
         (double)ps->engine_unavailable},
    };
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
      int k = snprintf(line, sizeof(line),
                       "# HELP %s %s\n# TYPE %s %s\n%s %.0f\n", r[i].name,
                       r[i].help, r[i].name, r[i].type, r[i].name, r[i].value);
      push_buf_raw(&b, line, (size_t)k);
    }
  }
  int n = snprintf(line, sizeof(line),
                   "herald_delivery_latency_seconds_sum %.6f\n"
                   "herald_delivery_latency_seconds_count %" PRIu64 "\n",
                   ps->lat_sum, ps->lat_count);
  push_buf_raw(&b, line, (size_t)n);
  herald_header ct = {{"Content-Type", 12}, {"text/plain; version=0.0.4", 25}};
  herald_http_respond(h, 200, &ct, 1, b.p, b.len);
  push_buf_free(&b);
}

/* ---- SSE -------------------------------------------------------------- */

static void sse_gone(herald_http *h, void *ud) {
  client *c = ud;
  (void)h;
  if (c->sse == NULL) {
    return;
  }
  c->sse = NULL;
  c->gone = 1;
  herald_http_end(h);
  client_free(c);
}

static void serve_sse(push_server *ps, herald_http *h,
                      const herald_request *req) {
  char channel[PUSH_CHANNEL_MAX + 1], token[8192], last[64];
  if (!origin_ok(ps, req)) {
    http_error(h, 403, PUSH_E_PERMISSION, "origin not allowed");
    return;
  }
  if (!query_param(req->query, "channel", channel, sizeof(channel)) ||
      !push_channel_valid(channel, strlen(channel))) {
    http_error(h, 400, PUSH_E_BAD_REQUEST, "?channel= is missing or invalid");
    return;
  }
  const push_ns *ns = push_hub_ns(ps->hub, channel);
  if (ns == NULL) {
    http_error(h, 404, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace");
    return;
  }
  client *c = client_new(ps);
  if (c == NULL) {
    http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  if (query_param(req->query, "token", token, sizeof(token))) {
    push_jwt_claims cl;
    memset(&cl, 0, sizeof(cl));
    int rv = push_jwt_verify(token, strlen(token), &ps->keys, now_ms() / 1000,
                             ps->cfg->jwt_require_exp, &cl);
    if (rv != PUSH_JWT_OK) {
      ps->auth_failures++;
      client_free(c);
      http_error(h, 401,
                 rv == PUSH_JWT_EXPIRED ? PUSH_E_TOKEN_EXPIRED
                                        : PUSH_E_UNAUTHORIZED,
                 rv == PUSH_JWT_EXPIRED ? "token expired" : "invalid token");
      return;
    }
    snprintf(c->user, sizeof(c->user), "%s", cl.sub);
    c->allowed = cl.channels;
    c->nallowed = cl.nchannels;
    cl.channels = NULL;
    cl.nchannels = 0;
    push_jwt_claims_free(&cl);
  } else if (!ps->cfg->anonymous) {
    ps->auth_failures++;
    client_free(c);
    http_error(h, 401, PUSH_E_UNAUTHORIZED, "a token is required");
    return;
  }
  push_cmd cmd;
  memset(&cmd, 0, sizeof(cmd));
  snprintf(cmd.channel, sizeof(cmd.channel), "%s", channel);
  if (!may_subscribe(c, ns, &cmd)) {
    client_free(c);
    http_error(h, 403, PUSH_E_PERMISSION, "private channel");
    return;
  }
  /* Last-Event-ID: "epoch:offset" */
  herald_str lei;
  if (herald_header_find(req->headers, req->nheaders, "last-event-id", &lei) &&
      lei.len < sizeof(last)) {
    memcpy(last, lei.ptr, lei.len);
    last[lei.len] = 0;
    char *colon = strrchr(last, ':');
    if (colon && (size_t)(colon - last) <= PUSH_EPOCH_MAX) {
      *colon = 0;
      char *end;
      unsigned long long off = strtoull(colon + 1, &end, 10);
      if (*end == 0 && colon[1] != 0) {
        memcpy(cmd.since.epoch, last, (size_t)(colon - last) + 1);
        cmd.since.offset = off;
        cmd.since.set = 1;
      }
    }
  }
  pending_op *op = op_new(ps, c, h, OP_SSE, 0, channel);
  if (op == NULL) {
    client_free(c);
    http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  op->since = cmd.since;
  op_sync(op);
}

/* The second half of an SSE request, once the channel is current. */
static void sse_done(pending_op *op, int status) {
  push_server *ps = op->ps;
  client *c = op->c;
  herald_http *h = op->h;
  const char *channel = op->channel;
  int ok = status == PUSH_REDIS_OK;
  if (c == NULL || !ok || ps->stopping) {
    if (ok) {
      engine_release(ps, channel);
    }
    if (c != NULL) {
      client_free(c);
    }
    if (ok) {
      http_error(h, 503, PUSH_E_INTERNAL, "shutting down");
    } else {
      http_engine_down(ps, h);
    }
    return;
  }
  c->subs = malloc(sizeof(char *));
  char *name = strdup(channel);
  if (c->subs == NULL || name == NULL) {
    free(name);
    engine_release(ps, channel);
    client_free(c);
    http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  herald_header hdrs[] = {{{"Content-Type", 12}, {"text/event-stream", 17}},
                          {{"Cache-Control", 13}, {"no-cache", 8}},
                          {{"X-Accel-Buffering", 17}, {"no", 2}}};
  if (herald_http_stream(h, 200, hdrs, 3, sse_gone, c) != 0) {
    free(name);
    engine_release(ps, channel);
    client_free(c);
    http_error(h, 503, PUSH_E_INTERNAL, "cannot stream");
    return;
  }
  c->sse = h;
  c->connected = 1;
  push_sub sub = {c, deliver, presence_event};
  push_result r;
  memset(&r, 0, sizeof(r));
  if (push_hub_subscribe(ps->hub, channel, &sub, &op->since, now_ms(), &r) <
      0) {
    free(name);
    engine_release(ps, channel);
    client_disconnect(c, PUSH_D_SHUTDOWN, "out of memory");
    return;
  }
  c->subs[0] = name;
  c->nsubs = c->capsubs = 1;
  snprintf(c->sse_epoch, sizeof(c->sse_epoch), "%s", r.pos.epoch);
  /* A retry hint, then what was missed (or the news that it is gone). */
  herald_http_write(h, "retry: 2000\n\n", 13);
  if (op->since.set && !r.recovered) {
    char ev[96];
    int n = snprintf(ev, sizeof(ev),
                     "event: unrecovered\nid: %s:%" PRIu64 "\ndata: {}\n\n",
                     r.pos.epoch, r.pos.offset);
    herald_http_write(h, ev, (size_t)n);
  }
  push_log(PUSH_LOG_INFO, "ev=sse client=%s channel=%s", c->id, channel);
  for (size_t i = 0; i < r.npubs; i++) {
    if (sse_send_pub(c, channel, r.pubs[i]) != 0) {
      break; /* c is gone: over its output cap */
    }
  }
  push_result_free(&r);
}

/* ---- the HTTP API ----------------------------------------------------- */

static int api_key_ok(push_server *ps, const herald_request *req) {
  herald_str auth;
  if (ps->cfg->api_key == NULL ||
      !herald_header_find(req->headers, req->nheaders, "authorization",
                          &auth) ||
      auth.len < 7 || strncasecmp(auth.ptr, "apikey ", 7) != 0) {
    return 0;
  }
  size_t klen = strlen(ps->cfg->api_key);
  const char *k = auth.ptr + 7;
  size_t n = auth.len - 7;
  /* Constant time in the key's length. */
  unsigned diff = (unsigned)(n != klen);
  for (size_t i = 0; i < klen; i++) {
    diff |= (unsigned)(ps->cfg->api_key[i] ^ (i < n ? k[i] : 0));
  }
  return diff == 0;
}

/* One /api/publish or /api/broadcast request: a result per channel, sent
 * when the last one is known (with Redis they come back one by one). */
struct bcast {
  push_server *ps;
  herald_http *h;
  int broadcast;
  size_t n, left;
  struct bres {
    int code; /* 0: published */
    const char *err;
    push_pos pos;
  } * res;
};

static void bcast_finish(bcast *bc) {
  herald_http *h = bc->h;
  if (!bc->broadcast) {
    struct bres *r = &bc->res[0];
    if (r->code != 0) {
      http_error(h,
                 r->code == PUSH_E_ENGINE || r->code == PUSH_E_INTERNAL ? 503
                 : r->code == PUSH_E_UNKNOWN_NAMESPACE                  ? 404
                                                                        : 400,
                 r->code, r->err);
    } else {
      push_buf b = {0};
      push_buf_raw(&b, "{", 1);
      put_pos(&b, &r->pos);
      push_buf_raw(&b, "}", 1);
      http_result(h, &b);
      push_buf_free(&b);
    }
  } else {
    push_buf out = {0};
    push_buf_raw(&out, "{\"responses\":[", 14);
    for (size_t i = 0; i < bc->n; i++) {
      struct bres *r = &bc->res[i];
      if (i) {
        push_buf_raw(&out, ",", 1);
      }
      if (r->code != 0) {
        put_error(&out, r->code, r->err);
      } else {
        push_buf_raw(&out, "{", 1);
        put_pos(&out, &r->pos);
        push_buf_raw(&out, "}", 1);
      }
    }
    push_buf_raw(&out, "]}", 2);
    http_result(h, &out);
    push_buf_free(&out);
  }
  free(bc->res);
  free(bc);
}

static void bcast_set(bcast *bc, size_t i, int code, const char *err,
                      const push_pos *pos) {
  bc->res[i].code = code;
  bc->res[i].err = err;
  bc->ps->engine_unavailable += code == PUSH_E_ENGINE;
  if (pos) {
    bc->res[i].pos = *pos;
  }
  if (--bc->left == 0) {
    bcast_finish(bc);
  }
}

static void on_published(void *ud, const push_redis_reply *rep) {
  pending_op *op = ud;
  push_server *ps = op->ps;
  int ok = rep->status == PUSH_REDIS_OK;
  ps->publications += ok;
  if (op->kind == OP_API_PUBLISH) {
    bcast_set(op->bc, op->bc_index, ok ? 0 : PUSH_E_ENGINE,
              ok ? NULL : ENGINE_DOWN, &rep->pos);
  } else if (op->kind == OP_PUBLISH && !ok) {
    op_engine_down(op);
  } else if (op->kind == OP_PUBLISH && op->c != NULL && !op->c->gone) {
    reply_pos(op->c, op->id, &rep->pos);
  }
  op_free(op);
}

static void api_publish(push_server *ps, herald_http *h, push_json body,
                        int broadcast) {
  push_json data, b64, chv = {NULL, 0};
  int has_data = push_json_get(body, "data", &data);
  int has_b64 = push_json_get(body, "b64", &b64);
  if (has_data == has_b64) {
    http_error(h, 400, PUSH_E_BAD_REQUEST, "give exactly one of data or b64");
    return;
  }
  if (!has_data) {
    data.p = NULL;
    data.n = 0;
  }
  if (!has_b64) {
    b64.p = NULL;
    b64.n = 0;
  }
  push_json list;
  size_t n = 1;
  if (broadcast) {
    if (!push_json_get(body, "channels", &list) ||
        push_json_type_of(list) != PUSH_JSON_ARRAY) {
      http_error(h, 400, PUSH_E_BAD_REQUEST, "channels must be an array");
      return;
    }
    push_json v;
    size_t pos = 0;
    for (n = 0; push_json_next(list, &pos, NULL, &v); n++) {
    }
  } else if (!push_json_get(body, "channel", &chv)) {
    http_error(h, 400, PUSH_E_BAD_REQUEST, "channel is missing");
    return;
  }
  bcast *bc = calloc(1, sizeof(*bc));
  if (bc == NULL || (bc->res = calloc(n ? n : 1, sizeof(*bc->res))) == NULL) {
    free(bc);
    http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  bc->ps = ps;
  bc->h = h;
  bc->broadcast = broadcast;
  bc->n = n;
  /* One extra count held while the loop runs, so that results arriving
   * at once (memory engine, errors) cannot finish the request early. */
  bc->left = n + 1;
  size_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    push_json v = chv;
    if (broadcast) {
      push_json_next(list, &pos, NULL, &v);
    }
    char channel[PUSH_CHANNEL_MAX + 1];
    long len = push_json_str(v, channel, sizeof(channel));
    if (len < 0 || !push_channel_valid(channel, (size_t)len)) {
      bcast_set(bc, i, PUSH_E_BAD_REQUEST, "invalid channel name", NULL);
      continue;
    }
    if (push_hub_ns(ps->hub, channel) == NULL) {
      bcast_set(bc, i, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace", NULL);
      continue;
    }
    pending_op *op = NULL;
    if (ps->cfg->engine_redis) {
      op = op_new(ps, NULL, h, OP_API_PUBLISH, 0, channel);
      if (op == NULL) {
        bcast_set(bc, i, PUSH_E_INTERNAL, "out of memory", NULL);
        continue;
      }
      op->bc = bc;
      op->bc_index = i;
    }
    push_pos p;
    int rv = engine_publish(ps, channel, data, b64, NULL, NULL, &p, op);
    if (rv == 0) {
      bcast_set(bc, i, 0, NULL, &p);
    } else if (rv == -1) {
      bcast_set(bc, i, PUSH_E_INTERNAL, "out of memory", NULL);
    } else if (rv == -2) {
      op_free(op);
      bcast_set(bc, i, PUSH_E_ENGINE, ENGINE_DOWN, NULL);
    }
  }
  if (--bc->left == 0) {
    bcast_finish(bc);
  }
}

static void api_disconnect(push_server *ps, herald_http *h, push_json body) {
  char user[256] = "", cid[24] = "";
  push_json v;
  int has_user = push_json_get(body, "user", &v) &&
                 push_json_str(v, user, sizeof(user)) >= 0;
  int has_client = push_json_get(body, "client", &v) &&
                   push_json_str(v, cid, sizeof(cid)) >= 0;
  uint64_t code = PUSH_D_FORCED;
  if (push_json_get(body, "code", &v) &&
      (push_json_u64(v, &code) != 0 || code < 3000 || code > 4999)) {
    http_error(h, 400, PUSH_E_BAD_REQUEST, "code must be 3000-4999");
    return;
  }
  if (!has_user && !has_client) {
    http_error(h, 400, PUSH_E_BAD_REQUEST, "give user or client");
    return;
  }
  size_t n = 0;
  for (client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    if (c->gone || (has_user && (!c->connected || strcmp(c->user, user))) ||
        (has_client && strcmp(c->id, cid))) {
      continue;
    }
    n++;
    client_disconnect(c, (int)code, "disconnected by the server");
  }
  push_buf b = {0};
  push_buf_raw(&b, "{\"disconnected\":", 16);
  push_buf_u64(&b, n);
  push_buf_raw(&b, "}", 1);
  http_result(h, &b);
  push_buf_free(&b);
}

static void on_presence_reply(void *ud, const push_redis_reply *rep) {
  pending_op *op = ud;
  int ok = rep->status == PUSH_REDIS_OK;
  push_buf b = {(char *)rep->json, rep->len, rep->len};
  if (!ok) {
    op_engine_down(op);
  } else if (op->h != NULL) {
    http_result(op->h, &b);
  } else if (op->c != NULL && !op->c->gone) {
    reply(op->c, op->id, &b);
  }
  op_free(op);
}

static void on_nodes_reply(void *ud, const push_redis_reply *rep) {
  pending_op *op = ud;
  if (rep->status == PUSH_REDIS_OK) {
    push_buf b = {0};
    push_buf_raw(&b, "{\"nodes\":", 9);
    push_buf_raw(&b, rep->json, rep->len);
    push_buf_raw(&b, "}", 1);
    http_result(op->h, &b);
    push_buf_free(&b);
  } else {
    op_engine_down(op);
  }
  op_free(op);
}

/* This node's entry in /api/info (and in Redis' node list). */
static void node_json(void *ud, push_buf *b) {
  push_server *ps = ud;
  char tmp[320];
  int n =
      snprintf(tmp, sizeof(tmp),
               "{\"name\":\"%s\",\"version\":\"%s\","
               "\"connections\":%zu,\"subscriptions\":%zu,"
               "\"channels\":%zu,\"uptime\":%" PRId64 "}",
               ps->node, HERALD_VERSION_STRING, ps->nclients,
               push_hub_nsubscriptions(ps->hub), push_hub_nchannels(ps->hub),
               (now_ms() - ps->started_ms) / 1000);
  push_buf_raw(b, tmp, (size_t)n);
}

static void api_history_done(pending_op *op, int status) {
  push_server *ps = op->ps;
  herald_http *h = op->h;
  if (status != PUSH_REDIS_OK) {
    op_engine_down(op);
    return;
  }
  push_result r;
  memset(&r, 0, sizeof(r));
  push_pos none = {0};
  push_buf b = {0};
  if (push_hub_history(ps->hub, op->channel, op->limit, &none, now_ms(), &r) !=
      0) {
    http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
  } else {
    put_result(&b, &r, 0, 1);
    http_result(h, &b);
  }
  engine_release(ps, op->channel);
  push_result_free(&r);
  push_buf_free(&b);
}

/* Where an engine call continues once its channel is current. */
static void op_synced(pending_op *op, int status) {
  switch (op->kind) {
  case OP_SUBSCRIBE:
    subscribe_done(op, status);
    break;
  case OP_HISTORY:
    history_done(op, status);
    break;
  case OP_SSE:
    sse_done(op, status);
    break;
  case OP_API_HISTORY:
    api_history_done(op, status);
    break;
  default:
    break;
  }
  op_free(op);
}

static void api_get(push_server *ps, herald_http *h,
                    const herald_request *req) {
  char channel[PUSH_CHANNEL_MAX + 1], lim[32];
  push_buf b = {0};
  int redis = ps->cfg->engine_redis;
  if (path_is(req, "/api/channels")) {
    push_hub_channels_json(ps->hub, &b);
    http_result(h, &b);
  } else if (path_is(req, "/api/info")) {
    if (redis) {
      pending_op *op = op_new(ps, NULL, h, OP_API_INFO, 0, NULL);
      if (op == NULL || ps->redis == NULL ||
          push_redis_nodes(ps->redis, on_nodes_reply, op) != 1) {
        free(op);
        http_engine_down(ps, h);
      }
    } else {
      push_buf_raw(&b, "{\"nodes\":[", 10);
      node_json(ps, &b);
      push_buf_raw(&b, "]}", 2);
      http_result(h, &b);
    }
  } else if (path_is(req, "/api/presence") || path_is(req, "/api/history")) {
    uint64_t limit = 0;
    if (!query_param(req->query, "channel", channel, sizeof(channel)) ||
        !push_channel_valid(channel, strlen(channel))) {
      http_error(h, 400, PUSH_E_BAD_REQUEST, "?channel= is missing or invalid");
    } else if (push_hub_ns(ps->hub, channel) == NULL) {
      http_error(h, 404, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace");
    } else if (path_is(req, "/api/presence")) {
      if (!redis) {
        push_hub_presence_json(ps->hub, channel, &b);
        http_result(h, &b);
      } else {
        pending_op *op = op_new(ps, NULL, h, OP_API_PRESENCE, 0, channel);
        if (op == NULL || ps->redis == NULL ||
            push_redis_presence_get(ps->redis, channel, on_presence_reply,
                                    op) != 1) {
          free(op);
          http_engine_down(ps, h);
        }
      }
    } else if (query_param(req->query, "limit", lim, sizeof(lim)) &&
               cli_parse_uint(lim, 1u << 30, &limit) != 0) {
      http_error(h, 400, PUSH_E_BAD_REQUEST, "limit must be a number");
    } else {
      pending_op *op = op_new(ps, NULL, h, OP_API_HISTORY, 0, channel);
      if (op == NULL) {
        http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
      } else {
        op->limit = limit;
        op_sync(op);
      }
    }
  } else {
    http_error(h, 404, PUSH_E_BAD_REQUEST, "no such endpoint");
  }
  push_buf_free(&b);
}

static void on_http(herald_http *h, const herald_request *req,
                    const uint8_t *body, size_t len, void *ud) {
  push_server *ps = ud;
  if (req->path.len >= 5 && memcmp(req->path.ptr, "/api/", 5) == 0) {
    if (!api_key_ok(ps, req)) {
      http_error(h, 401, PUSH_E_UNAUTHORIZED,
                 ps->cfg->api_key ? "missing or wrong API key"
                                  : "the HTTP API needs api_key configured");
      return;
    }
    int post = path_is(req, "/api/publish") || path_is(req, "/api/broadcast") ||
               path_is(req, "/api/disconnect");
    if (post != method_is(req, "POST") || (!post && !method_is(req, "GET"))) {
      http_error(h, 405, PUSH_E_BAD_REQUEST, post ? "use POST" : "use GET");
      return;
    }
    if (!post) {
      api_get(ps, h, req);
      return;
    }
    push_json root;
    if (push_json_parse((const char *)body, len, &root) != 0 ||
        push_json_type_of(root) != PUSH_JSON_OBJECT) {
      http_error(h, 400, PUSH_E_BAD_REQUEST, "the body must be a JSON object");
      return;
    }
    if (path_is(req, "/api/disconnect")) {
      api_disconnect(ps, h, root);
    } else {
      api_publish(ps, h, root, path_is(req, "/api/broadcast"));
    }
    return;
  }
  if (!method_is(req, "GET") && !method_is(req, "HEAD")) {
    http_error(h, 405, PUSH_E_BAD_REQUEST, "use GET");
    return;
  }
  if (path_is(req, "/health")) {
    /* A node that cannot reach Redis is not healthy, even though its
     * clients stay connected: a load balancer should send new ones
     * elsewhere, and an operator should hear about it. */
    if (ps->cfg->engine_redis &&
        (ps->redis == NULL || !push_redis_healthy(ps->redis))) {
      static const char bad[] = "{\"status\":\"degraded\",\"engine\":\"redis\","
                                "\"error\":\"Redis unreachable\"}";
      http_json(h, 503, bad, sizeof(bad) - 1);
    } else {
      static const char ok[] = "{\"status\":\"ok\"}";
      http_json(h, 200, ok, sizeof(ok) - 1);
    }
  } else if (path_is(req, "/metrics")) {
    serve_metrics(ps, h);
  } else if (path_is(req, "/sse")) {
    serve_sse(ps, h, req);
  } else {
    const push_web_file *f = push_web_find(req->path.ptr, req->path.len);
    if (f == NULL) {
      http_error(h, 404, PUSH_E_BAD_REQUEST, "not found");
      return;
    }
    herald_header hdrs[] = {{{"Content-Type", 12}, {f->type, strlen(f->type)}},
                            {{"Cache-Control", 13}, {"no-cache", 8}}};
    herald_http_respond(h, 200, hdrs, 2, f->data, f->len);
  }
}

/* ---- timers: hub upkeep, SSE keepalive, the demo publisher ------------ */

/* Presence entries in Redis expire unless their node refreshes them: a
 * node that dies takes its clients' entries with it after presence_ttl. */
static void presence_refresh(push_server *ps) {
  for (client *c = ps->clients; c; c = c->next) {
    if (c->gone) {
      continue;
    }
    for (size_t i = 0; i < c->nsubs; i++) {
      const push_ns *ns = push_hub_ns(ps->hub, c->subs[i]);
      if (ns && ns->presence) {
        engine_presence_add(ps, c, c->subs[i], 0);
      }
    }
  }
}

static void on_tick(uv_timer_t *t) {
  push_server *ps = t->data;
  static unsigned ticks;
  int64_t now = now_ms();
  push_hub_tick(ps->hub, now);
  if (ps->redis) {
    push_redis_tick(ps->redis, now);
    uint32_t every = ps->cfg->redis.presence_ttl_s / 3;
    if (now - ps->presence_refresh_ms >= (int64_t)(every ? every : 1) * 1000) {
      ps->presence_refresh_ms = now;
      presence_refresh(ps);
    }
  }
  if (ps->cfg->sse_keepalive_s && ++ticks % ps->cfg->sse_keepalive_s == 0) {
    for (client *c = ps->clients, *next; c; c = next) {
      next = c->next;
      if (c->sse && !c->gone) {
        herald_http_write(c->sse, ": ping\n\n", 8);
      }
    }
  }
}

static void on_demo(uv_timer_t *t) {
  push_server *ps = t->data;
  static const char *sym[5] = {"HRLD", "WSKT", "UVLP", "ZLIB", "TLS3"};
  for (int i = 0; i < 5; i++) {
    uint32_t r;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r)) {
      r = (uint32_t)rand();
    }
    double step = ((double)(r % 2001) - 1000.0) / 1000.0 * 0.006;
    double old = ps->demo_price[i];
    double price = old * (1.0 + step);
    ps->demo_price[i] = price;
    char json[160];
    int n = snprintf(json, sizeof(json),
                     "{\"symbol\":\"%s\",\"price\":%.2f,\"change\":%.2f}",
                     sym[i], price, price - old);
    push_json data = {json, (size_t)n}, none = {NULL, 0};
    push_pos pos;
    pending_op *op = NULL;
    if (ps->cfg->engine_redis &&
        (op = op_new(ps, NULL, NULL, OP_DEMO, 0, "ticker:prices")) == NULL) {
      continue;
    }
    if (engine_publish(ps, "ticker:prices", data, none, NULL, NULL, &pos, op) ==
        -2) {
      op_free(op);
    }
  }
}

/* Before the runtime writes: the publications of this pass go to their
 * subscribers' queues, each subscriber's in a row. */
static void on_pass_end(herald_loop *loop, void *ud) {
  (void)loop;
  push_server *ps = ud;
  ps->flush_us = mono_us();
  push_hub_flush(ps->hub);
  ps->flush_us = 0;
}

static void lost_one(void *cl, void *ud) {
  (void)ud;
  client_disconnect(cl, PUSH_D_INSUFFICIENT, "insufficient state");
}

/* Redis no longer holds publications this node's subscribers of channel
 * missed (a long outage, or Redis lost its data): rather than leave a
 * silent gap, they are disconnected to reconnect and resubscribe, which
 * tells them "recovered": false. */
static void on_lost(void *ud, const char *channel) {
  push_server *ps = ud;
  push_log(PUSH_LOG_WARN, "ev=insufficient_state channel=%s subscribers=%zu",
           channel, push_hub_nsubscribers(ps->hub, channel));
  push_hub_each_subscriber(ps->hub, channel, lost_one, ps);
}

static void on_loop_start(herald_loop *loop, void *ud) {
  push_server *ps = ud;
  static const char *first;
  ps->loop = loop;
  uv_loop_t *uv = herald_loop_uv(loop);
  if (ps->cfg->engine_redis) {
    char err[256] = "";
    push_redis_events ev = {on_lost, node_json, ps};
    ps->redis = push_redis_new(uv, &ps->cfg->redis, ps->hub, ps->node, &ev, err,
                               sizeof(err));
    if (ps->redis == NULL) {
      fprintf(stderr, "herald: %s\n", err);
      ps->exit_code = 2;
      ps->stopping = 1;
      herald_server_stop(ps->srv);
      return;
    }
  }
  uv_timer_init(uv, &ps->tick);
  ps->tick.data = ps;
  uv_timer_start(&ps->tick, on_tick, 1000, 1000);
  uv_unref((uv_handle_t *)&ps->tick);
  herald_loop_on_pass(loop, on_pass_end, ps);
  if (ps->cfg->demo) {
    static const double start[5] = {123.45, 87.10, 42.00, 12.34, 256.00};
    memcpy(ps->demo_price, start, sizeof(start));
    uv_timer_init(uv, &ps->demo);
    ps->demo.data = ps;
    uv_timer_start(&ps->demo, on_demo, 500, 500);
    uv_unref((uv_handle_t *)&ps->demo);
  }
  ps->timers_started = 1;
  first = ps->cfg->listen[0];
  const char *colon = strrchr(first, ':');
  printf("listening on %.*s:%d\n", (int)(colon - first), first,
         herald_server_port(ps->srv));
  fflush(stdout);
  push_log(PUSH_LOG_INFO, "ev=start listen=%.*s:%d demo=%d anonymous=%d",
           (int)(colon - first), first, herald_server_port(ps->srv),
           ps->cfg->demo, ps->cfg->anonymous);
}

/* Graceful shutdown: tell every client to reconnect (3001), end SSE
 * streams, stop the timers, then let the runtime drain and stop. */
static void on_signal(uv_signal_t *s, int signum) {
  push_server *ps = s->data;
  if (ps->stopping) {
    return;
  }
  ps->stopping = 1;
  push_log(PUSH_LOG_INFO, "ev=shutdown signal=%d clients=%zu", signum,
           ps->nclients);
  if (ps->redis) {
    /* Our clients leave every channel's presence now, while Redis is
     * still there to hear it. */
    for (client *c = ps->clients; c; c = c->next) {
      for (size_t i = 0; i < c->nsubs; i++) {
        const push_ns *ns = push_hub_ns(ps->hub, c->subs[i]);
        if (ns && ns->presence) {
          engine_presence_remove(ps, c, c->subs[i]);
        }
      }
    }
  }
  for (client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    client_disconnect(c, PUSH_D_SHUTDOWN, "server shutting down");
  }
  if (ps->redis) {
    push_redis *r = ps->redis;
    ps->redis = NULL; /* from now on the engine is unavailable */
    push_redis_del(r);
  }
  if (ps->timers_started) {
    uv_timer_stop(&ps->tick);
    uv_timer_stop(&ps->demo);
    herald_loop_on_pass(ps->loop, NULL, NULL);
  }
  uv_signal_stop(&ps->sigint);
  uv_signal_stop(&ps->sigterm);
  uv_signal_stop(&ps->sighup);
  herald_server_stop(ps->srv);
}

/* SIGHUP: reload the TLS certificate for new connections. */
static void on_hup(uv_signal_t *s, int signum) {
  push_server *ps = s->data;
  (void)signum;
  if (ps->cfg->tls_cert == NULL) {
    push_log(PUSH_LOG_INFO, "ev=reload tls=off");
    return;
  }
  const char *why = NULL;
  int rv = herald_server_reload_tls(ps->srv, &why);
  if (rv == 0) {
    push_log(PUSH_LOG_INFO, "ev=reload tls=ok");
  } else {
    push_log(PUSH_LOG_ERROR, "ev=reload tls=failed error=\"%s\"", why);
  }
}

static void on_start_signals(herald_loop *loop, void *ud) {
  push_server *ps = ud;
  uv_loop_t *uv = herald_loop_uv(loop);
  uv_signal_init(uv, &ps->sigint);
  uv_signal_init(uv, &ps->sigterm);
  ps->sigint.data = ps->sigterm.data = ps;
  uv_signal_start(&ps->sigint, on_signal, SIGINT);
  uv_signal_start(&ps->sigterm, on_signal, SIGTERM);
  uv_signal_init(uv, &ps->sighup);
  ps->sighup.data = ps;
  uv_signal_start(&ps->sighup, on_hup, SIGHUP);
  uv_unref((uv_handle_t *)&ps->sigint);
  uv_unref((uv_handle_t *)&ps->sigterm);
  uv_unref((uv_handle_t *)&ps->sighup);
  on_loop_start(loop, ud);
}

/* ---- main ------------------------------------------------------------- */

int push_server_main(push_config *cfg) {
  push_server *ps = &g_server;
  memset(ps, 0, sizeof(*ps));
  ps->cfg = cfg;
  ps->started_ms = now_ms();
  push_log_level = cfg->log_level;
  ps->keys.hmac_secret = cfg->jwt_hmac_secret;
  ps->keys.rsa_pem = cfg->jwt_rsa_pem;
  ps->keys.ec_pem = cfg->jwt_ec_pem;
  if (cfg->node_name) {
    snprintf(ps->node, sizeof(ps->node), "%s", cfg->node_name);
  } else if (push_random_id(ps->node, 8) != 0) {
    /* 8 random [a-z0-9]: unique enough among a cluster's nodes. */
    fprintf(stderr, "herald: getrandom failed\n");
    return 1;
  }
  ps->hub = push_hub_new(cfg->ns, cfg->nns);
  if (ps->hub == NULL) {
    fprintf(stderr, "herald: out of memory\n");
    return 1;
  }
  herald_server_config sc;
  herald_server_config_init(&sc);
  sc.listen = (const char *const *)cfg->listen;
  sc.nlisten = cfg->nlisten;
  sc.threads = 1; /* the hub lives on one loop: see the top comment */
  sc.handle_signals = 0;
  sc.shutdown_grace_ms = cfg->shutdown_grace_s * 1000;
  sc.core.max_message_size = cfg->max_command_bytes;
  sc.core.max_frame_size = cfg->max_command_bytes;
  /* Pushes are referenced, never copied, however small: a subscriber's
   * queue holds entries pointing at the one encoded frame. */
  sc.core.copy_threshold = 0;
  sc.limits.ping_interval_ms = cfg->ping_interval_s * 1000;
  sc.limits.pong_timeout_ms = cfg->pong_timeout_s * 1000;
  sc.limits.send_hard_cap = cfg->output_cap;
  sc.limits.send_high_water = cfg->output_cap / 2;
  sc.limits.send_low_water = cfg->output_cap / 8;
  sc.limits.slow_policy = HERALD_SLOW_DROP; /* we answer with 3004 */
  sc.limits.max_http_body = cfg->max_http_body;
  sc.on_http = on_http;
  sc.http_user_data = ps;
  herald_tls_cert cert = {cfg->tls_cert, cfg->tls_key};
  if (cfg->tls_cert) {
    sc.tls.certs = &cert;
    sc.tls.ncerts = 1;
    const char *why;
    if (herald_tls_check(&sc.tls, &why) != 0) {
      fprintf(stderr, "herald: TLS (%s, %s): %s\n", cfg->tls_cert,
              cfg->tls_key ? cfg->tls_key : "no key", why);
      push_hub_del(ps->hub);
      return 2;
    }
  }
  int rv = herald_server_new(&ps->srv, &sc);
  if (rv != 0) {
    fprintf(stderr, "herald: %s\n",
            rv == HERALD_ERR_INVALID_ARG ? "invalid listen address"
                                         : herald_rt_strerror(rv));
    push_hub_del(ps->hub);
    return 2;
  }
  herald_ws_callbacks cb = {.on_upgrade = ws_upgrade,
                            .on_open = ws_open,
                            .on_message = ws_message,
                            .on_close = ws_close};
  herald_server_route(ps->srv, "*", &cb, ps);
  herald_server_on_loop_start(ps->srv, on_start_signals, ps);
  rv = herald_server_run(ps->srv);
  /* Clients still here (the grace period ran out) are gone by now. */
  while (ps->clients) {
    client_free(ps->clients);
  }
  herald_server_del(ps->srv);
  push_hub_del(ps->hub);
  push_buf_free(&ps->result);
  push_buf_free(&ps->envelope);
  if (rv != 0) {
    fprintf(stderr, "herald: cannot listen: %s\n", herald_rt_strerror(rv));
    return 1;
  }
  push_log(PUSH_LOG_INFO, "ev=stopped");
  return ps->exit_code;
}
