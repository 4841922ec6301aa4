/* engine_redis.c - the Redis engine behind the engine interface: adapts
 * redis.c (several nodes over Redis shards) to push_engine_vt, and writes
 * its presence entries, join/leave pushes, metrics and state (the server
 * each shard uses now). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/engine.h"
#include "push/metrics.h"
#include "push/redis.h"

typedef struct redis_engine {
  push_engine base;
  push_redis *r; /* NULL once shut down: every call is then DOWN */
  push_buf tail; /* a publication's tail, reused */
} redis_engine;

static redis_engine *re_of(push_engine *e) {
  return (redis_engine *)e;
}

static const redis_engine *re_const(const push_engine *e) {
  return (const redis_engine *)e;
}

static int re_sync(push_engine *e, const char *channel, push_engine_cb cb,
                   void *ud) {
  push_redis *r = re_of(e)->r;
  return r ? push_redis_sync(r, channel, cb, ud) : PUSH_ENGINE_DOWN;
}

static void re_release(push_engine *e, const char *channel) {
  push_redis *r = re_of(e)->r;
  if (r) {
    push_redis_release(r, channel);
  }
}

#define TAIL_KEEP (64 * 1024)

static int re_publish(push_engine *e, const char *channel,
                      const push_publication *p, push_pos *pos,
                      push_engine_cb cb, void *ud) {
  redis_engine *re = re_of(e);
  (void)pos;
  if (re->r == NULL) {
    return PUSH_ENGINE_DOWN;
  }
  push_buf *t = &re->tail;
  int rv = PUSH_ENGINE_ERROR;
  if (push_pub_tail(t, p->data, p->b64, p->client, p->user) == 0) {
    int sent = p->idem && p->idem[0]
                   ? push_redis_publish_idem(re->r, channel, t->p, t->len,
                                             p->idem, e->idem_window_s, cb, ud)
                   : push_redis_publish(re->r, channel, t->p, t->len, cb, ud);
    rv = sent == 1 ? PUSH_ENGINE_PENDING : PUSH_ENGINE_DOWN;
  }
  push_buf_done(t, TAIL_KEEP);
  return rv;
}

/* {"user":...,"info":...}: a presence entry as stored in Redis, the shape
 * the hub writes. NUL-terminated. */
static int presence_entry(push_buf *b, const push_member *m) {
  return push_buf_raw(b, "{\"user\":", 8) ||
         push_buf_str(b, m->user, strlen(m->user)) ||
         (m->info && (push_buf_raw(b, ",\"info\":", 8) ||
                      push_buf_raw(b, m->info, strlen(m->info)))) ||
         push_buf_raw(b, "}", 1) || push_buf_raw(b, "", 1);
}

static void re_presence_add(push_engine *e, const char *channel,
                            const push_member *m, int announce) {
  push_redis *r = re_of(e)->r;
  if (r == NULL) {
    return;
  }
  const push_ns *ns = push_hub_ns(e->hub, channel);
  push_buf entry = {0}, join = {0};
  push_json info = {m->info, m->info ? strlen(m->info) : 0};
  int want_join = announce && ns && ns->join_leave;
  if (presence_entry(&entry, m) == 0 &&
      (!want_join ||
       push_push_join(&join, channel, m->client, m->user, info, 0) == 0)) {
    push_redis_presence_add(r, channel, m->client, entry.p,
                            want_join ? &join : NULL);
  }
  push_buf_free(&entry);
  push_buf_free(&join);
}

static void re_presence_remove(push_engine *e, const char *channel,
                               const push_member *m) {
  push_redis *r = re_of(e)->r;
  if (r == NULL) {
    return;
  }
  const push_ns *ns = push_hub_ns(e->hub, channel);
  push_buf leave = {0};
  push_json none = {NULL, 0};
  int want = ns && ns->join_leave &&
             push_push_join(&leave, channel, m->client, m->user, none, 1) == 0;
  push_redis_presence_remove(r, channel, m->client, want ? &leave : NULL);
  push_buf_free(&leave);
}

static int re_presence_get(push_engine *e, const char *channel, push_buf *out,
                           push_engine_cb cb, void *ud) {
  push_redis *r = re_of(e)->r;
  (void)out;
  return r && push_redis_presence_get(r, channel, cb, ud) == 1
             ? PUSH_ENGINE_PENDING
             : PUSH_ENGINE_DOWN;
}

static int re_nodes(push_engine *e, push_buf *out, push_engine_cb cb,
                    void *ud) {
  push_redis *r = re_of(e)->r;
  (void)out;
  return r && push_redis_nodes(r, cb, ud) == 1 ? PUSH_ENGINE_PENDING
                                               : PUSH_ENGINE_DOWN;
}

static void re_tick(push_engine *e, int64_t now_ms) {
  push_redis *r = re_of(e)->r;
  if (r) {
    push_redis_tick(r, now_ms);
  }
}

static int re_healthy(const push_engine *e, const char **why) {
  const push_redis *r = re_const(e)->r;
  if (r && push_redis_healthy(r)) {
    *why = NULL;
    return 1;
  }
  *why = "Redis unreachable";
  return 0;
}

/* The engine's figures (push_engine_figures): this loop's connections'. */
enum {
  F_ERRORS,
  F_RESYNCS,
  F_LOST,
  F_ROLLBACKS,
  F_CHANNELS,
  F_REDIRECTS,
  F_RECONNECTS = 0, /* in max: every loop's connections see the event */
  F_FAILOVERS = 1
};

static void re_figures(const push_engine *e, push_engine_figures *f) {
  const push_redis *r = re_const(e)->r;
  push_redis_stats st = {0};
  if (r) {
    push_redis_get_stats(r, &st);
  }
  f->sum[F_ERRORS] = st.errors;
  f->sum[F_RESYNCS] = st.resyncs;
  f->sum[F_LOST] = st.lost;
  f->sum[F_ROLLBACKS] = st.rollbacks;
  f->sum[F_CHANNELS] = st.channels;
  f->sum[F_REDIRECTS] = st.redirects;
  f->max[F_RECONNECTS] = st.reconnects;
  f->max[F_FAILOVERS] = st.failovers;
  /* Bit i: the i-th shard is up (past 64, none is claimed up). */
  push_redis_shard_info si;
  f->all = 0;
  for (size_t i = 0; r && i < 64 && push_redis_get_shard(r, i, &si) == 0; i++) {
    f->all |= (uint64_t)(si.up != 0) << i;
  }
}

/* f: the node's figures; the shards themselves are this loop's. */
static int re_metrics(const push_engine *e, const push_engine_figures *f,
                      push_buf *out) {
  const push_redis *r = re_const(e)->r;
  push_redis_stats st = {0};
  push_engine_figures own;
  if (r) {
    push_redis_get_stats(r, &st);
  }
  if (f == NULL) {
    re_figures(e, &own);
    f = &own;
  }
  st.errors = f->sum[F_ERRORS];
  st.resyncs = f->sum[F_RESYNCS];
  st.lost = f->sum[F_LOST];
  st.rollbacks = f->sum[F_ROLLBACKS];
  st.channels = f->sum[F_CHANNELS];
  st.redirects = f->sum[F_REDIRECTS];
  st.reconnects = f->max[F_RECONNECTS];
  st.failovers = f->max[F_FAILOVERS];
  st.shards_up = 0;
  for (size_t i = 0; i < st.shards && i < 64; i++) {
    st.shards_up += (f->all >> i) & 1;
  }
  const push_metric m[] = {
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
      {"herald_redis_rollbacks_total", "counter",
       "Channels given a new epoch because Redis went back within one "
       "(a restart from an older snapshot, a lagging replica, a restore).",
       (double)st.rollbacks},
      {"herald_redis_channels", "gauge", "Channels this node follows in Redis.",
       (double)st.channels},
      {"herald_redis_failovers_total", "counter",
       "Times a shard's master moved to another server (Sentinel named "
       "another, a Redis Cluster master lost its slots to another).",
       (double)st.failovers},
      {"herald_redis_redirects_total", "counter",
       "Commands a Redis Cluster answered with MOVED or ASK, sent on to the "
       "master it named.",
       (double)st.redirects},
  };
  if (push_metrics_write(out, m, sizeof(m) / sizeof(m[0])) != 0) {
    return -1;
  }
  /* One line per shard, labelled with the server it uses now. */
  static const char head[] =
      "# HELP herald_redis_shard_up 1 when the shard is connected to its "
      "master and ready; address: the server it uses now.\n"
      "# TYPE herald_redis_shard_up gauge\n";
  int rc = push_buf_raw(out, head, sizeof(head) - 1);
  push_redis_shard_info si;
  for (size_t i = 0; r && rc == 0 && push_redis_get_shard(r, i, &si) == 0;
       i++) {
    char line[512];
    int n = snprintf(line, sizeof(line),
                     "herald_redis_shard_up{shard=\"%zu\",address=\"%s\"} %d\n",
                     i, si.address, i < 64 && (f->all >> i & 1));
    rc = n < 0 || (size_t)n >= sizeof(line) ||
         push_buf_raw(out, line, (size_t)n);
  }
  return rc ? -1 : 0;
}

/* {"mode":..., "failovers":N, "shards":[{"address":..., "up":..., ...}]} */
static int re_describe(const push_engine *e, push_buf *out) {
  const push_redis *r = re_const(e)->r;
  push_redis_stats st = {0};
  if (r == NULL) {
    return push_buf_raw(out, "null", 4);
  }
  push_redis_get_stats(r, &st);
  int rc = push_buf_raw(out, "{\"mode\":", 8) ||
           push_buf_str(out, st.mode, strlen(st.mode)) ||
           push_buf_raw(out, ",\"failovers\":", 13) ||
           push_buf_u64(out, st.failovers) ||
           push_buf_raw(out, ",\"shards\":[", 11);
  push_redis_shard_info si;
  for (size_t i = 0; rc == 0 && push_redis_get_shard(r, i, &si) == 0; i++) {
    rc = (i > 0 && push_buf_raw(out, ",", 1)) ||
         push_buf_raw(out, "{\"kind\":", 8) ||
         push_buf_str(out, si.kind, strlen(si.kind)) ||
         push_buf_raw(out, ",\"address\":", 11) ||
         push_buf_str(out, si.address, strlen(si.address)) ||
         push_buf_raw(out, si.up ? ",\"up\":true" : ",\"up\":false",
                      si.up ? 10 : 11);
    if (rc == 0 && si.master_name != NULL) {
      rc = push_buf_raw(out, ",\"master_name\":", 15) ||
           push_buf_str(out, si.master_name, strlen(si.master_name));
    }
    if (rc == 0 && strcmp(si.kind, "cluster") == 0) {
      rc = push_buf_raw(out, ",\"slots\":", 9) || push_buf_u64(out, si.slots);
    }
    rc = rc || push_buf_raw(out, "}", 1);
  }
  return rc || push_buf_raw(out, "]}", 2) ? -1 : 0;
}

static void re_shutdown(push_engine *e) {
  redis_engine *re = re_of(e);
  push_redis *r = re->r;
  re->r = NULL; /* from now on the engine is unavailable */
  push_redis_del(r);
}

static void re_del(push_engine *e) {
  redis_engine *re = re_of(e);
  push_redis_del(re->r);
  push_buf_free(&re->tail);
  free(re);
}

static void re_occupancy(push_engine *e, const char *channel, int occupied) {
  push_redis *r = re_of(e)->r;
  if (r) {
    push_redis_occupancy(r, channel, occupied);
  }
}

static int re_control(push_engine *e, const char *msg, size_t len) {
  push_redis *r = re_of(e)->r;
  return r && push_redis_control(r, msg, len) == 0 ? PUSH_ENGINE_OK
                                                   : PUSH_ENGINE_DOWN;
}

static int re_user_add(push_engine *e, const char *user, const char *client,
                       uint32_t limit, push_engine_cb cb, void *ud) {
  push_redis *r = re_of(e)->r;
  return r && push_redis_user_add(r, user, client, limit, cb, ud) == 1
             ? PUSH_ENGINE_PENDING
             : PUSH_ENGINE_DOWN;
}

static void re_user_remove(push_engine *e, const char *user,
                           const char *client) {
  push_redis *r = re_of(e)->r;
  if (r) {
    push_redis_user_remove(r, user, client);
  }
}

static void re_user_refresh(push_engine *e, const char *user,
                            const char *client) {
  push_redis *r = re_of(e)->r;
  if (r) {
    push_redis_user_refresh(r, user, client);
  }
}

static const push_engine_vt redis_vt = {
    .name = "redis",
    .sync = re_sync,
    .release = re_release,
    .publish = re_publish,
    .presence_add = re_presence_add,
    .presence_remove = re_presence_remove,
    .presence_get = re_presence_get,
    .nodes = re_nodes,
    .tick = re_tick,
    .healthy = re_healthy,
    .metrics = re_metrics,
    .figures = re_figures,
    .describe = re_describe,
    .shutdown = re_shutdown,
    .del = re_del,
    .occupancy = re_occupancy,
    .control = re_control,
    .user_add = re_user_add,
    .user_remove = re_user_remove,
    .user_refresh = re_user_refresh,
};

push_engine *push_engine_redis_new(const push_redis_config *cfg,
                                   uv_loop_t *loop, push_hub *hub,
                                   const char *node,
                                   const push_engine_events *ev, char *err,
                                   size_t errlen) {
  redis_engine *re = calloc(1, sizeof(*re));
  if (re == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  re->base.vt = &redis_vt;
  re->base.shared = 1;
  re->base.hub = hub;
  re->base.ev = *ev;
  /* Refreshed three times per TTL, so that one lost refresh never lets a
   * live client's entry expire. */
  uint32_t every = cfg->presence_ttl_s / 3;
  re->base.presence_refresh_ms = (every ? every : 1) * 1000;
  re->r = push_redis_new(loop, cfg, hub, node, ev, err, errlen);
  if (re->r == NULL) {
    free(re);
    return NULL;
  }
  return &re->base;
}
