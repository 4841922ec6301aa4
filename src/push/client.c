/* client.c - the server's clients (WebSocket and SSE alike): their
 * lifecycle, subscriptions, replies and delivery, and the engine calls in
 * flight on their behalf (push_op). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push/server_int.h"

/* ---- time ------------------------------------------------------------- */

int64_t push_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t push_mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- clients ---------------------------------------------------------- */

push_client *push_client_new(push_server *ps) {
  push_client *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  c->ps = ps;
  /* Ids must be unique among the nodes of a cluster: the node's name
   * leads. The number is unique among the node's loops: it is this loop's
   * index modulo their count. */
  snprintf(c->id, sizeof(c->id), "%s-%" PRIu64, ps->node,
           ++ps->next_id * (uint64_t)ps->nthreads + (uint64_t)ps->thread);
  c->next = ps->clients;
  if (ps->clients) {
    ps->clients->prev = c;
  }
  ps->clients = c;
  ps->nclients++;
  return c;
}

void push_client_take_claims(push_client *c, push_jwt_claims *cl) {
  snprintf(c->user, sizeof(c->user), "%s", cl->sub);
  c->exp = cl->exp;
  free(c->info);
  c->info = cl->info;
  cl->info = NULL;
  c->allowed = cl->channels;
  c->nallowed = cl->nchannels;
  cl->channels = NULL;
  cl->nchannels = 0;
  push_jwt_claims_free(cl);
}

int push_client_subscribed(const push_client *c, const char *channel) {
  for (size_t i = 0; i < c->nsubs; i++) {
    if (strcmp(c->subs[i], channel) == 0) {
      return 1;
    }
  }
  return 0;
}

int push_client_add_sub(push_client *c, const char *channel) {
  if (c->nsubs == c->capsubs) {
    size_t ncap = c->capsubs ? c->capsubs * 2 : 4;
    char **n = realloc(c->subs, ncap * sizeof(char *));
    if (n == NULL) {
      return -1;
    }
    c->subs = n;
    struct push_sub_exp *x = realloc(c->sub_exp, ncap * sizeof(*x));
    if (x == NULL) {
      return -1;
    }
    c->sub_exp = x;
    c->capsubs = ncap;
  }
  c->sub_exp[c->nsubs].exp = 0;
  c->sub_exp[c->nsubs].warned = 0;
  char *name = strdup(channel);
  if (name == NULL) {
    return -1;
  }
  c->subs[c->nsubs++] = name;
  return 0;
}

void push_client_drop_sub(push_client *c, const char *channel) {
  for (size_t i = 0; i < c->nsubs; i++) {
    if (strcmp(c->subs[i], channel) == 0) {
      free(c->subs[i]);
      c->nsub_exp -= c->sub_exp[i].exp != 0;
      c->subs[i] = c->subs[--c->nsubs];
      c->sub_exp[i] = c->sub_exp[c->nsubs];
      return;
    }
  }
}

push_member push_client_member(const push_client *c) {
  push_member m = {c->id, c->user, c->info};
  return m;
}

void push_client_presence_leave(push_client *c) {
  if (c->pusher != NULL) {
    push_pusher_leave_all(c);
    return;
  }
  push_member m = push_client_member(c);
  for (size_t i = 0; i < c->nsubs; i++) {
    const push_ns *ns = push_hub_ns(c->ps->hub, c->subs[i]);
    if (ns && ns->presence) {
      push_engine_presence_remove(c->ps->engine, c->subs[i], &m);
    }
  }
}

void push_client_set_sub_exp(push_client *c, const char *channel, int64_t exp) {
  for (size_t i = 0; i < c->nsubs; i++) {
    if (strcmp(c->subs[i], channel) == 0) {
      c->nsub_exp += (exp != 0) - (c->sub_exp[i].exp != 0);
      c->sub_exp[i].exp = exp;
      c->sub_exp[i].warned = 0;
      return;
    }
  }
}

/* The disconnect webhook, and the client's place among its user's
 * connections. */
static void client_gone(push_client *c) {
  push_server *ps = c->ps;
  if (!c->connected) {
    return;
  }
  if (c->counted && ps->engine) {
    push_engine_user_remove(ps->engine, c->user, c->id);
  }
  if (c->announced && push_hook_on(ps, PUSH_WH_DISCONNECT)) {
    push_buf b = {0};
    push_hook_begin(ps, &b, "disconnect");
    push_buf_raw(&b, ",\"client\":", 10);
    push_buf_str(&b, c->id, strlen(c->id));
    push_buf_raw(&b, ",\"user\":", 8);
    push_buf_str(&b, c->user, strlen(c->user));
    push_buf_raw(&b, ",\"code\":", 8);
    push_buf_u64(&b, (uint64_t)(c->close_code ? c->close_code : 3000));
    push_buf_raw(&b, ",\"reason\":", 10);
    const char *why = c->close_reason[0] ? c->close_reason : "closed";
    push_buf_str(&b, why, strlen(why));
    push_hook_send(ps, &b);
    push_buf_free(&b);
  }
}

void push_client_free(push_client *c) {
  push_server *ps = c->ps;
  push_member m = push_client_member(c);
  client_gone(c);
  for (size_t i = 0; i < c->nsubs; i++) {
    const push_ns *ns = push_hub_ns(ps->hub, c->subs[i]);
    push_hub_unsubscribe(ps->hub, c->subs[i], c);
    if (ns && ns->presence) {
      push_engine_presence_remove(ps->engine, c->subs[i], &m);
    }
    if (c->connected || c->sse) {
      push_client_left(c, c->subs[i]);
    }
    push_engine_release(ps->engine, c->subs[i]);
    free(c->subs[i]);
  }
  free(c->subs);
  free(c->sub_exp);
  push_sse_free(c);
  for (size_t i = 0; i < c->nfwd; i++) {
    free(c->fwd[i]);
  }
  free(c->fwd);
  for (push_op *op = c->ops; op; op = op->next) {
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

void push_client_disconnect(push_client *c, int code, const char *reason) {
  if (c->gone) {
    return;
  }
  c->close_code = code;
  snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
  char esc[PUSH_LOG_VAL];
  push_log(PUSH_LOG_INFO, "ev=disconnect client=%s code=%d reason=\"%s\"",
           c->id, code, push_log_esc(esc, sizeof(esc), reason, strlen(reason)));
  if (c->pusher != NULL) {
    push_pusher_disconnect(c, code, reason);
  } else if (c->ws) {
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
    push_client_free(c);
  }
}

/* ---- replies ---------------------------------------------------------- */

void push_send_text(push_client *c, const char *p, size_t n) {
  if (c->ws == NULL || c->gone) {
    return;
  }
  int rv = herald_ws_send(c->ws, HERALD_OP_TEXT, p, n);
  if (rv == HERALD_SEND_DROPPED) {
    c->ps->drops++;
    c->ps->slow_disconnects++;
    push_client_disconnect(c, PUSH_D_SLOW, "slow consumer");
    return;
  }
  if (rv >= 0) {
    c->ps->messages_out++;
    c->ps->bytes_out += n;
  }
}

void push_client_error(push_client *c, uint64_t id, int code, const char *msg,
                       int temporary) {
  push_buf b = {0};
  if (push_reply_error(&b, id, code, msg, temporary) == 0) {
    push_send_text(c, b.p, b.len);
  }
  push_buf_free(&b);
}

void push_client_reply(push_client *c, uint64_t id, const push_buf *result) {
  push_buf *b = &c->ps->envelope;
  if (push_reply(b, id, result->p, result->len) == 0) {
    push_send_text(c, b->p, b->len);
  }
  push_buf_done(b, PUSH_SCRATCH_KEEP);
}

void push_client_reply_pos(push_client *c, uint64_t id, const push_pos *pos) {
  push_buf *b = &c->ps->result;
  push_buf_raw(b, "{", 1);
  push_put_pos(b, pos);
  push_buf_raw(b, "}", 1);
  push_client_reply(c, id, b);
  push_buf_done(b, PUSH_SCRATCH_KEEP);
}

void push_client_engine_down(push_client *c, uint64_t id) {
  c->ps->engine_unavailable++;
  push_client_error(c, id, PUSH_E_ENGINE, PUSH_ENGINE_DOWN_MSG, 1);
}

void push_put_pos(push_buf *b, const push_pos *pos) {
  push_buf_raw(b, "\"epoch\":", 8);
  push_buf_str(b, pos->epoch, strlen(pos->epoch));
  push_buf_raw(b, ",\"offset\":", 10);
  push_buf_u64(b, pos->offset);
}

size_t push_result_bytes(const push_result *r) {
  size_t n = 0;
  for (size_t i = 0; i < r->npubs; i++) {
    n += r->pubs[i]->json_len + 1;
  }
  return n;
}

void push_put_result(push_buf *b, const push_result *r, int with_recovered,
                     int with_pubs) {
  push_buf_raw(b, "{", 1);
  push_put_pos(b, &r->pos);
  if (with_recovered) {
    push_buf_raw(b,
                 r->recovered ? ",\"recovered\":true" : ",\"recovered\":false",
                 r->recovered ? 17 : 18);
  }
  if (with_pubs) {
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
  push_buf_raw(b, "}", 1);
}

void push_put_error(push_buf *b, int code, const char *msg) {
  push_buf_raw(b, "{\"error\":{\"code\":", 17);
  push_buf_u64(b, (uint64_t)code);
  push_buf_raw(b, ",\"message\":", 11);
  push_buf_str(b, msg, strlen(msg));
  push_buf_raw(b, "}}", 2);
}

/* ---- delivery --------------------------------------------------------- */

static void pub_release(void *ctx) {
  push_pub_unref(ctx);
}

static void deliver(void *cl, push_pub *pub) {
  push_client *c = cl;
  push_server *ps = c->ps;
  if (c->gone) {
    push_pub_unref(pub);
    return;
  }
  push_record_latency(ps, pub);
  if (c->sse) {
    push_sse_send_pub(c, pub);
    push_pub_unref(pub);
    return;
  }
  size_t flen;
  const uint8_t *frame = push_pub_ws_frame(pub, &flen);
  size_t fbytes = pub->frame_len;
  int rv = herald_ws_send_frame(c->ws, frame, flen, 0, pub_release, pub);
  if (rv == HERALD_SEND_DROPPED) {
    ps->drops++;
    ps->slow_disconnects++;
    push_log(PUSH_LOG_WARN, "ev=slow_consumer client=%s buffered=%zu", c->id,
             herald_ws_buffered(c->ws));
    push_client_disconnect(c, PUSH_D_SLOW, "slow consumer");
    return;
  }
  if (rv >= 0) {
    ps->messages_out++;
    ps->bytes_out += fbytes;
  }
}

static void presence_event(void *cl, const char *frame, size_t len) {
  push_client *c = cl;
  if (c->ws) {
    push_send_text(c, frame, len);
  }
}

push_sub push_client_sub(push_client *c) {
  push_sub sub = {c, deliver, presence_event};
  return sub;
}

/* ---- engine calls in flight ------------------------------------------- */

/* Recycled calls kept at most: enough for a burst of publishes in flight
 * to Redis, little memory when idle. */
#define FREE_OPS_MAX 256

push_op *push_op_new(push_server *ps, push_client *c, herald_http *h,
                     uint64_t id, const char *channel) {
  push_op *op = ps->free_ops;
  if (op != NULL) {
    ps->free_ops = op->next;
    ps->nfree_ops--;
  } else if ((op = malloc(sizeof(*op))) == NULL) {
    return NULL;
  }
  /* Every field but the channel's bytes: a publish (the hot call) needs
   * no channel copy. */
  op->ps = ps;
  op->c = c;
  op->h = h;
  op->synced = NULL;
  op->subscribe = op->cancelled = 0;
  op->id = id;
  op->since.set = 0;
  op->since.epoch[0] = 0;
  op->since.offset = 0;
  op->limit = 0;
  op->bc = NULL;
  op->bc_index = 0;
  op->prev = op->next = NULL;
  op->server_side = 0;
  op->proxied = NULL;
  op->proxy_kind = 0;
  op->proxy_started_us = 0;
  op->data = op->hook = NULL;
  op->data_len = op->hook_len = 0;
  op->data_b64 = 0;
  op->idem[0] = 0;
  op->channel[0] = 0;
  if (channel) {
    size_t n = strlen(channel);
    n = n < sizeof(op->channel) - 1 ? n : sizeof(op->channel) - 1;
    memcpy(op->channel, channel, n);
    op->channel[n] = 0;
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

void push_op_free(push_op *op) {
  if (op == NULL) {
    return;
  }
  free(op->data);
  free(op->hook);
  op->data = op->hook = NULL;
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
  push_server *ps = op->ps;
  if (ps->nfree_ops < FREE_OPS_MAX && !ps->stopping) {
    op->next = ps->free_ops;
    ps->free_ops = op;
    ps->nfree_ops++;
  } else {
    free(op);
  }
}

push_op *push_op_pending_sub(const push_client *c, const char *channel) {
  for (push_op *op = c->ops; op; op = op->next) {
    if (op->subscribe && !op->cancelled && strcmp(op->channel, channel) == 0) {
      return op;
    }
  }
  return NULL;
}

size_t push_op_npending_subs(const push_client *c) {
  size_t n = 0;
  for (push_op *op = c->ops; op; op = op->next) {
    n += op->subscribe && !op->cancelled;
  }
  return n;
}

void push_op_engine_down(push_op *op) {
  if (op->h != NULL) {
    push_http_engine_down(op->ps, op->h);
  } else if (op->c != NULL && !op->c->gone) {
    push_client_engine_down(op->c, op->id);
  }
}

static void op_synced(push_op *op, int status) {
  op->synced(op, status);
  push_op_free(op);
}

static void on_synced(void *ud, const push_engine_reply *rep) {
  op_synced(ud, rep->status);
}

void push_op_sync(push_op *op) {
  int rv = push_engine_sync(op->ps->engine, op->channel, on_synced, op);
  if (rv != PUSH_ENGINE_PENDING) {
    op_synced(op, rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK : PUSH_ENGINE_DOWN);
  }
}

/* The publish webhook's event up to its position: {"event":"publish",
 * ..., "channel", "data" or "b64", "client", "user". */
static void hook_publish_begin(push_server *ps, push_buf *b,
                               const char *channel, const push_publication *p) {
  push_hook_begin(ps, b, "publish");
  push_buf_raw(b, ",\"channel\":", 11);
  push_buf_str(b, channel, strlen(channel));
  if (p->b64.n) {
    push_buf_raw(b, ",\"b64\":", 7);
    push_buf_raw(b, p->b64.p, p->b64.n);
  } else {
    push_buf_raw(b, ",\"data\":", 8);
    push_buf_raw(b, p->data.p, p->data.n);
  }
  if (p->client) {
    push_buf_raw(b, ",\"client\":", 10);
    push_buf_str(b, p->client, strlen(p->client));
    push_buf_raw(b, ",\"user\":", 8);
    push_buf_str(b, p->user, strlen(p->user));
  }
}

static void hook_publish_end(push_server *ps, push_buf *b,
                             const push_pos *pos) {
  push_buf_raw(b, ",\"epoch\":", 9);
  push_buf_str(b, pos->epoch, strlen(pos->epoch));
  push_buf_raw(b, ",\"offset\":", 10);
  push_buf_u64(b, pos->offset);
  push_hook_send(ps, b);
}

int push_publish(push_server *ps, const char *channel,
                 const push_publication *p, push_pos *pos, push_op *op,
                 push_engine_cb on_done) {
  int hook = push_hook_on(ps, PUSH_WH_PUBLISH);
  push_buf b = {0};
  if (hook) {
    hook_publish_begin(ps, &b, channel, p);
  }
  pos->set = 0;
  int rv = push_engine_publish(ps->engine, channel, p, pos, on_done, op);
  if (rv == PUSH_ENGINE_OK && pos->set == 2) {
    ps->idempotent_hits++;
  } else if (rv == PUSH_ENGINE_OK) {
    ps->publications++;
    if (hook) {
      hook_publish_end(ps, &b, pos);
    }
  } else if (rv == PUSH_ENGINE_PENDING && hook && b.p) {
    op->hook = b.p; /* ends when the engine answers (push_publish_done) */
    op->hook_len = b.len;
    b.p = NULL;
  }
  push_buf_free(&b);
  return rv;
}

void push_publish_done(push_op *op, const push_engine_reply *rep) {
  push_server *ps = op->ps;
  if (rep->status == PUSH_ENGINE_OK && rep->duplicate) {
    ps->idempotent_hits++;
  } else if (rep->status == PUSH_ENGINE_OK) {
    ps->publications++;
    if (op->hook) {
      push_buf b = {op->hook, op->hook_len, op->hook_len};
      op->hook = NULL;
      hook_publish_end(ps, &b, &rep->pos);
      push_buf_free(&b);
    }
  }
}

int push_channel_room(push_server *ps, const char *channel) {
  push_pos pos;
  uint32_t cap = ps->cfg->max_channels_total;
  /* With several loops the node's channels are each loop's own ones (a
   * replica counts at its owner), the others' as of their last pass. */
  if (cap == 0 ||
      (ps->nthreads > 1 ? push_server_held(ps) + push_server_held_elsewhere(ps)
                        : push_hub_nchannels(ps->hub)) < cap ||
      push_hub_pos(ps->hub, channel, &pos) == 0) {
    return 1;
  }
  ps->channel_limit_refusals++;
  return 0;
}

const char *push_peer_ip(const char *peer) {
  static _Thread_local char ip[64];
  const char *colon = strrchr(peer, ':');
  size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
  if (n >= 2 && peer[0] == '[' && peer[n - 1] == ']') {
    peer++;
    n -= 2;
  }
  if (n >= sizeof(ip)) {
    n = sizeof(ip) - 1;
  }
  memcpy(ip, peer, n);
  ip[n] = 0;
  return ip;
}
