/*
 * redis_shard.c - the life of a Redis engine shard (redis.c has the model):
 * resolving its server (a fixed address, the master Sentinel names, or a
 * Redis Cluster master), connecting its two connections, AUTH, the role
 * check (ROLE every second, READONLY), the pub/sub flavour, loading the
 * scripts, what the connections report (replies, pushes, errors, EOF), and
 * going down and back up with backoff.
 */
#include "push/log.h"
#include "push/redis.h"
#include "push/redis_int.h"
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* ---- resolving an address, then connecting ----------------------------- */

static void dial_resolve(rdial *d);

static void on_dialed(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  rdial *d = req->data;
  push_redis *r = d->r;
  d->busy = 0;
  r->open_handles--;
  if (r->closing || !d->want) {
    uv_freeaddrinfo(res);
    redis_maybe_free(r);
    return;
  }
  if (d->redo) { /* the address changed meanwhile */
    uv_freeaddrinfo(res);
    dial_resolve(d);
    return;
  }
  d->want = 0;
  if (status != 0 || res == NULL) {
    char why[400];
    snprintf(why, sizeof why, "cannot resolve %s: %s", d->host,
             uv_strerror(status));
    uv_freeaddrinfo(res);
    d->conn[0]->ev->failed(d->conn[0], why);
    return;
  }
  redis_conn_start(d->conn[0], res->ai_addr, res->ai_addrlen);
  if (d->conn[1] != NULL && d->conn[0]->state != REDIS_CONN_DOWN) {
    redis_conn_start(d->conn[1], res->ai_addr, res->ai_addrlen);
  }
  uv_freeaddrinfo(res);
}

static void dial_resolve(rdial *d) {
  push_redis *r = d->r;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  d->gai.data = d;
  d->busy = 1;
  d->redo = 0;
  r->open_handles++;
  if (uv_getaddrinfo(r->loop, &d->gai, on_dialed, d->host, d->port, &hints) !=
      0) {
    d->busy = 0;
    d->want = 0;
    r->open_handles--;
    d->conn[0]->ev->failed(d->conn[0], "cannot resolve");
  }
}

void redis_dial_init(rdial *d, push_redis *r, redis_conn *a, redis_conn *b) {
  memset(d, 0, sizeof *d);
  d->r = r;
  d->conn[0] = a;
  d->conn[1] = b;
}

void redis_dial_start(rdial *d, const char *host, const char *port) {
  snprintf(d->host, sizeof d->host, "%s", host);
  snprintf(d->port, sizeof d->port, "%s", port);
  d->want = 1;
  if (d->busy) {
    d->redo = 1;
    return;
  }
  dial_resolve(d);
}

void redis_dial_cancel(rdial *d) {
  d->want = 0;
  d->redo = 0;
}

void redis_dial_close(rdial *d) {
  redis_dial_cancel(d);
  if (d->busy) {
    uv_cancel((uv_req_t *)&d->gai);
  }
}

/* ---- a shard's life ----------------------------------------------------- */

static void shard_check_up(rshard *sh) {
  if (sh->up || sh->cmd.state != REDIS_CONN_UP ||
      sh->sub.state != REDIS_CONN_UP || sh->scripts_loaded < NSCRIPTS ||
      sh->replid[0] == 0 || !sh->role_ok || sh->r->closing) {
    return;
  }
  push_redis *r = sh->r;
  sh->up = 1;
  sh->backoff_ms = 0;
  /* Durable: every write this server acknowledges is on disk first
   * (appendfsync always), and the data it started with is its own
   * append-only file, not a replica's copy nor a snapshot. Only then may
   * a channel written by its predecessor keep its epoch. */
  sh->durable[0] = sh->loaded_durable && sh->fsync_always ? '1' : '0';
  sh->durable[1] = 0;
  push_log(PUSH_LOG_INFO,
           "ev=redis_up shard=%d addr=%s:%s pubsub=%s replid=%s durable=%s",
           sh->index, sh->host, sh->port, sh->sharded ? "sharded" : "classic",
           sh->replid, sh->durable[0] == '1' ? "yes" : "no");
  if (redis_nodes_shard(r) == sh) {
    redis_heartbeat(r); /* in the node list at once, not a tick later */
    redis_ext_shard_up(sh);
  }
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b], *next; ch; ch = next) {
      next = ch->next;
      if (ch->sh == sh) {
        redis_chan_shard_up(ch);
      }
    }
  }
}

static void on_retry(uv_timer_t *t) {
  redis_shard_connect(t->data);
}

/* Closes a shard's connections; its calls fail with PUSH_REDIS_DOWN. */
void redis_shard_close(rshard *sh, const char *why) {
  push_redis *r = sh->r;
  int was_up = sh->up;
  sh->active = 0;
  sh->up = 0;
  sh->scripts_loaded = 0;
  sh->role_ok = 0;
  if (!r->closing) {
    push_log(was_up ? PUSH_LOG_ERROR : PUSH_LOG_WARN,
             "ev=redis_down shard=%d addr=%s:%s error=\"%s\"", sh->index,
             sh->host, sh->port, why);
  }
  redis_dial_cancel(&sh->dial);
  if (sh->sn != NULL) {
    redis_sentinel_stop(sh);
  }
  redis_conn_close(&sh->cmd);
  redis_conn_close(&sh->sub);
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b], *next; ch; ch = next) {
      next = ch->next;
      if (ch->sh == sh) {
        redis_chan_shard_down(ch);
      }
    }
  }
  if (sh->kind == SH_CLUSTER && sh->in_use && !r->closing) {
    redis_cluster_refresh(r); /* a failover, perhaps */
  }
}

void redis_shard_down(rshard *sh, const char *why) {
  push_redis *r = sh->r;
  if (!sh->active) {
    return;
  }
  redis_shard_close(sh, why);
  if (r->closing) {
    return;
  }
  /* Exponential backoff with +-25% jitter, so that nodes do not reconnect
   * in lockstep after a Redis restart. */
  uint32_t b = sh->backoff_ms ? sh->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (b > BACKOFF_MAX_MS) {
    b = BACKOFF_MAX_MS;
  }
  sh->backoff_ms = b;
  uint32_t rnd = 0;
  if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) {
    rnd = (uint32_t)rand();
  }
  uint64_t delay = b * 3 / 4 + rnd % (b / 2 + 1);
  uv_timer_start(&sh->retry, on_retry, delay, 0);
  r->st.reconnects++;
}

/* Sentinel announced another master: go there now, whatever the backoff
 * had planned. */
void redis_shard_reconnect_now(rshard *sh, const char *why) {
  push_redis *r = sh->r;
  if (r->closing || !sh->in_use) {
    return;
  }
  if (sh->active) {
    redis_shard_close(sh, why);
    r->st.reconnects++;
  }
  sh->backoff_ms = 0;
  uv_timer_start(&sh->retry, on_retry, 0, 0);
}

void redis_shard_retire(rshard *sh) {
  sh->in_use = 0;
  if (sh->active) {
    redis_shard_close(sh, "no longer a master of the cluster's slot map");
  }
  uv_timer_stop(&sh->retry);
  sh->nslots = 0;
  sh->backoff_ms = 0;
}

void redis_shard_dial(rshard *sh) {
  redis_dial_start(&sh->dial, sh->host, sh->port);
}

void redis_shard_connect(rshard *sh) {
  push_redis *r = sh->r;
  if (r->closing || !sh->in_use) {
    return;
  }
  sh->active = 1;
  if (sh->kind == SH_SENTINEL) {
    redis_sentinel_resolve(sh); /* then redis_shard_dial */
  } else {
    redis_shard_dial(sh);
  }
}

/* ---- what the connections tell their shard ----------------------------- */

static void on_conn_failed(redis_conn *c, const char *why) {
  redis_shard_down(conn_shard(c), why);
}

static void on_conn_message(redis_conn *c, const char *channel, size_t clen,
                            const char *msg, size_t len) {
  if (redis_ext_message(conn_shard(c), channel, clen, msg, len)) {
    return;
  }
  redis_chan_message(conn_shard(c), channel, clen, msg, len);
}

static void on_conn_unsubscribed(redis_conn *c, const char *channel,
                                 size_t clen) {
  redis_chan_unsubscribed(conn_shard(c), channel, clen);
}

static void on_conn_handle_closed(redis_conn *c) {
  redis_maybe_free(conn_shard(c)->r);
}

static void on_setup_reply(redis_conn *c, redisReply *reply,
                           const redis_pending *p);
static void on_script_loaded(redis_conn *c, redisReply *reply,
                             const redis_pending *p);
static void on_info(redis_conn *c, redisReply *reply, const redis_pending *p);
static void on_fsync_config(redis_conn *c, redisReply *reply,
                            const redis_pending *p);
static void on_role(redis_conn *c, redisReply *reply, const redis_pending *p);

/* Errors that say "not now, or not here": a cluster that is failing over
 * or migrating a slot, a server loading its data or just demoted. */
int redis_error_transient(const redisReply *reply) {
  static const char *const prefixes[] = {"MOVED ",      "ASK ",     "TRYAGAIN",
                                         "CLUSTERDOWN", "LOADING ", "READONLY",
                                         "MASTERDOWN"};
  if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
    return 0;
  }
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    size_t n = strlen(prefixes[i]);
    if (reply->len >= n && memcmp(reply->str, prefixes[i], n) == 0) {
      return 1;
    }
  }
  return 0;
}

static void on_conn_error_reply(redis_conn *c, const redisReply *reply,
                                const redis_pending *p) {
  rshard *sh = conn_shard(c);
  if (p->fn == on_setup_reply || p->fn == on_script_loaded ||
      p->fn == on_info || p->fn == on_fsync_config || p->fn == on_role) {
    return; /* setup: these decide for themselves */
  }
  sh->r->st.errors++;
  if (c->state != REDIS_CONN_UP) {
    return;
  }
  if (reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0) {
    /* SCRIPT FLUSH, or a failover to a server that never loaded them:
     * every script call would fail from now on. Reconnecting loads them
     * again; the calls that failed were answered with an error. */
    redis_shard_down(sh, "NOSCRIPT: Redis lost the scripts, reconnecting");
  } else if (reply->len >= 8 && memcmp(reply->str, "READONLY", 8) == 0) {
    /* The master this shard wrote to is a replica now: nothing may be
     * written there. Its sentinels (or the cluster) name the new one. */
    redis_shard_down(sh, "READONLY: the server is a replica now");
  } else if (sh->kind == SH_CLUSTER &&
             ((reply->len >= 6 && memcmp(reply->str, "MOVED ", 6) == 0) ||
              (reply->len >= 11 &&
               memcmp(reply->str, "CLUSTERDOWN", 11) == 0))) {
    if (!redis_cluster_moved(sh, reply)) {
      redis_cluster_refresh(sh->r);
    }
  }
}

/* ---- connection setup: AUTH, the role, the pub/sub flavour, scripts ---- */

void redis_send_auth(push_redis *r, redis_conn *c, const char *user,
                     const char *password) {
  if (password == NULL) {
    return;
  }
  const char *argv[3] = {"AUTH", user, password};
  size_t lens[3] = {4, user ? strlen(user) : 0, strlen(password)};
  if (user == NULL) {
    argv[1] = password;
    lens[1] = lens[2];
  }
  (void)r;
  redis_cmd(c, on_setup_reply, NULL, NULL, user ? 3 : 2, argv, lens);
}

static void on_setup_reply(redis_conn *c, redisReply *reply,
                           const redis_pending *p) {
  (void)p;
  if (reply == NULL) {
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    char why[300];
    snprintf(why, sizeof why, "%s", reply->str);
    c->ev->failed(c, why);
  }
}

/* ROLE, on every connection and then every second: a shard writes only
 * to a master. A replica (an address that points at one, a master that
 * was demoted, a sentinel's answer gone stale) takes the shard down, and
 * its reconnect asks again who the master is. */
static void on_role(redis_conn *c, redisReply *reply, const redis_pending *p) {
  (void)p;
  if (reply == NULL) {
    return;
  }
  rshard *sh = conn_shard(c);
  const redisReply *e0 = reply->type == REDIS_REPLY_ARRAY &&
                                 reply->elements > 0 &&
                                 reply->element[0]->type == REDIS_REPLY_STRING
                             ? reply->element[0]
                             : NULL;
  if (e0 != NULL && e0->len == 6 && memcmp(e0->str, "master", 6) == 0) {
    sh->role_ok = 1;
    shard_check_up(sh);
    return;
  }
  char why[200];
  snprintf(why, sizeof why, "ROLE: %.*s, not a master", e0 ? (int)e0->len : 3,
           e0 ? e0->str : "???");
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(why, sizeof why, "ROLE: %s", reply->str);
  }
  redis_shard_down(sh, why);
}

void redis_send_role(rshard *sh) {
  const char *argv[1] = {"ROLE"};
  size_t lens[1] = {4};
  redis_cmd(&sh->cmd, on_role, NULL, NULL, 1, argv, lens);
}

static void on_script_loaded(redis_conn *c, redisReply *reply,
                             const redis_pending *p) {
  rshard *sh = conn_shard(c);
  size_t i = (size_t)(uintptr_t)p->ud;
  if (reply == NULL) {
    return;
  }
  if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
    redis_shard_down(sh, reply->type == REDIS_REPLY_ERROR
                             ? reply->str
                             : "SCRIPT LOAD failed");
    return;
  }
  memcpy(sh->sha[i], reply->str, 40);
  sh->sha[i][40] = 0;
  sh->scripts_loaded++;
  shard_check_up(sh);
}

/* COMMAND INFO SPUBLISH: an array holding nil when Redis predates 7. */
static void on_command_info(redis_conn *c, redisReply *reply,
                            const redis_pending *p) {
  (void)p;
  if (reply == NULL) {
    return;
  }
  rshard *sh = conn_shard(c);
  int has = reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
            reply->element[0]->type == REDIS_REPLY_ARRAY;
  sh->sharded = sh->r->cfg.sharded && has;
}

/* The value of "key:" in an INFO text (*n bytes), or NULL. */
static const char *info_field(const redisReply *info, const char *key,
                              size_t *n) {
  size_t kl = strlen(key);
  const char *p = info->str, *end = info->str + info->len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *le = eol ? eol : end;
    if ((size_t)(le - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == ':') {
      const char *v = p + kl + 1;
      *n = (size_t)(le - v) - (le > v && le[-1] == '\r');
      return v;
    }
    p = eol ? eol + 1 : end;
  }
  return NULL;
}

static int info_is(const redisReply *info, const char *key, const char *want) {
  size_t n;
  const char *v = info_field(info, key, &n);
  return v != NULL && n == strlen(want) && memcmp(v, want, n) == 0;
}

/* INFO: the server's replication ID, which changes whenever its data may
 * have gone back (a restart, a replica promoted, a resync from another
 * master), and how it got the data it started with. */
static void on_info(redis_conn *c, redisReply *reply, const redis_pending *p) {
  (void)p;
  if (reply == NULL) {
    return;
  }
  rshard *sh = conn_shard(c);
  char why[300];
  if (reply->type != REDIS_REPLY_STRING) {
    snprintf(why, sizeof why,
             "INFO: %s (needed to notice a Redis that lost data)",
             reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
    redis_shard_down(sh, why);
    return;
  }
  size_t n = 0;
  const char *id = info_field(reply, "master_replid", &n);
  if (id == NULL) {
    id = info_field(reply, "run_id", &n); /* Redis before 4.0 */
  }
  if (id == NULL || n == 0 || n >= sizeof sh->replid) {
    redis_shard_down(sh, "INFO: no master_replid nor run_id");
    return;
  }
  memcpy(sh->replid, id, n);
  sh->replid[n] = 0;
  /* A second replication ID means the server continues another's
   * history: a promoted replica, or a snapshot it was restored from. */
  const char *id2 = info_field(reply, "master_replid2", &n);
  int own = id2 != NULL && n > 0;
  for (size_t i = 0; own && i < n; i++) {
    own = id2[i] == '0';
  }
  sh->loaded_durable = own && info_is(reply, "role", "master") &&
                       info_is(reply, "aof_enabled", "1");
}

/* CONFIG GET appendfsync: ["appendfsync", value]. Refused (a managed
 * Redis, an ACL): taken for "not always". */
static void on_fsync_config(redis_conn *c, redisReply *reply,
                            const redis_pending *p) {
  (void)p;
  if (reply == NULL) {
    return;
  }
  const redisReply *v = reply->type == REDIS_REPLY_ARRAY &&
                                reply->elements == 2 &&
                                reply->element[1]->type == REDIS_REPLY_STRING
                            ? reply->element[1]
                            : NULL;
  conn_shard(c)->fsync_always =
      v != NULL && v->len == 6 && memcmp(v->str, "always", 6) == 0;
}

static void on_conn_ready(redis_conn *c) {
  rshard *sh = conn_shard(c);
  push_redis *r = sh->r;
  redis_send_auth(r, c, r->cfg.user, r->cfg.password);
  if (!c->pubsub) {
    sh->role_ok = 0;
    redis_send_role(sh);
    const char *ci[3] = {"COMMAND", "INFO", "SPUBLISH"};
    size_t cl[3] = {7, 4, 8};
    redis_cmd(c, on_command_info, NULL, NULL, 3, ci, cl);
    /* Answered before the scripts are loaded, so known when the shard
     * comes up. */
    sh->replid[0] = 0;
    sh->loaded_durable = sh->fsync_always = 0;
    const char *info[1] = {"INFO"};
    size_t il[1] = {4};
    redis_cmd(c, on_info, NULL, NULL, 1, info, il);
    const char *cg[3] = {"CONFIG", "GET", "appendfsync"};
    size_t gl[3] = {6, 3, 11};
    redis_cmd(c, on_fsync_config, NULL, NULL, 3, cg, gl);
    for (size_t i = 0; i < NSCRIPTS; i++) {
      const char *argv[3] = {"SCRIPT", "LOAD", redis_scripts[i]};
      size_t lens[3] = {6, 4, strlen(redis_scripts[i])};
      redis_cmd(c, on_script_loaded, NULL, (void *)(uintptr_t)i, 3, argv, lens);
    }
  }
  shard_check_up(sh);
}

const redis_conn_events redis_shard_conn_events = {
    .ready = on_conn_ready,
    .failed = on_conn_failed,
    .message = on_conn_message,
    .unsubscribed = on_conn_unsubscribed,
    .error_reply = on_conn_error_reply,
    .handle_closed = on_conn_handle_closed,
};

/* A cluster master's command connection also follows MOVED and ASK. */
const redis_conn_events redis_shard_cluster_events = {
    .ready = on_conn_ready,
    .failed = on_conn_failed,
    .message = on_conn_message,
    .unsubscribed = on_conn_unsubscribed,
    .error_reply = on_conn_error_reply,
    .redirect = redis_cluster_redirect,
    .handle_closed = on_conn_handle_closed,
};
