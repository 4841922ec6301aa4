/*
 * redis.c - the Redis engine (redis.h has the model): its shards,
 * presence, the node list and the engine's life cycle. The Lua scripts are
 * in redis_scripts.c. Channels
 * (publishing, each replica and its state machine) are in redis_chan.c;
 * one Redis connection is redis_conn.c.
 *
 * Shards (rshard). Each shard is one Redis master with two connections:
 * one for commands and scripts, one for pub/sub. Its server is a fixed
 * address, the master its sentinels name (redis_sentinel.c), or a master
 * of a Redis Cluster's slot map (redis_cluster.c). A shard is up when both
 * connections are connected and authenticated, ROLE said "master", and
 * the scripts are loaded. Any failure (an error, EOF, a health PING
 * unanswered for ping_timeout_ms, ROLE or READONLY saying the server is a
 * replica now) takes the whole shard down: both connections close, every
 * pending callback is called with PUSH_REDIS_DOWN, and a timer reconnects
 * with exponential backoff and jitter, asking the sentinels again or
 * reading the cluster's map again first. When the shard is up again,
 * every channel still in use is subscribed and resynchronized
 * (redis_chan.c).
 *
 * Channels are placed on configured shards by jump consistent hashing of
 * the channel name, so every node agrees and adding a shard moves only
 * 1/n of them; in a Redis Cluster, by the hash slot of the name.
 */
#include "push/redis.h"

#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "push/log.h"
#include "push/redis_int.h"

#define NODE_TTL_MS 10000 /* a node missing heartbeats this long is gone */

/* ------------------------------------------------------------------------ */
/* Shards                                                                   */
/* ------------------------------------------------------------------------ */

int64_t redis_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int redis_cmd(redis_conn *c, redis_reply_fn fn, push_redis_cb cb, void *ud,
              int argc, const char **argv, const size_t *lens) {
  return redis_conn_cmd(c, fn, (redis_any_fn)cb, ud, argc, argv, lens);
}

/* ------------------------------------------------------------------------ */
/* Keys and placement                                                       */
/* ------------------------------------------------------------------------ */

/* FNV-1a: the same on every node (placement must agree everywhere, so it
 * cannot be keyed; it only picks a shard, never a hash-table slot). */
static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* Jump consistent hash (Lamping and Veach, 2014). */
static int32_t jump_hash(uint64_t key, int32_t buckets) {
  int64_t b = -1, j = 0;
  while (j < buckets) {
    b = j;
    key = key * 2862933555777941757ULL + 1;
    j = (int64_t)((double)(b + 1) *
                  ((double)(1LL << 31) / (double)((key >> 33) + 1)));
  }
  return (int32_t)b;
}

/* A channel's shard: in a Redis Cluster, the master of its slot (its keys
 * and its sharded pub/sub channel share the hash tag {channel}); else
 * the configured shard jump hashing picks. */
rshard *redis_shard_of(push_redis *r, const char *channel) {
  size_t n = strlen(channel);
  if (r->cl != NULL) {
    return redis_cluster_owner(r, redis_cluster_slot(channel, n));
  }
  return &r->shards[jump_hash(fnv1a(channel, n), (int32_t)r->nshards)];
}

void redis_ckeys(const push_redis *r, const char *channel, ckeys *k) {
  int n = snprintf(k->ps, sizeof k->ps, "%s.{%s}", r->prefix, channel);
  k->len = n < 0 ? 0 : (size_t)n; /* fits: prefix <= 32, channel <= 255 */
  k->slen = k->len + 2;
  char *const dst[4] = {k->s, k->m, k->p, k->z};
  static const char suffix[4] = {'s', 'm', 'p', 'z'};
  for (int i = 0; i < 4; i++) {
    memcpy(dst[i], k->ps, k->len);
    dst[i][k->len] = '.';
    dst[i][k->len + 1] = suffix[i];
    dst[i][k->len + 2] = 0;
  }
}

/* TTL of a channel's meta hash (s; 0: none): kept at least a day past the
 * last publish, so that the epoch outlives the history; forever when the
 * history is kept forever. */
uint32_t redis_meta_ttl(const push_ns *ns) {
  uint32_t t = ns->history_ttl_s;
  return ns->history_size > 0 && t == 0 ? 0 : t > 86400 ? t : 86400;
}

/* An epoch for a channel that turns out to be new: this node's random
 * 8 characters, then a counter, so that no two candidates are alike across
 * nodes and restarts, without a syscall per publish. */
void redis_next_epoch(push_redis *r, char out[PUSH_EPOCH_MAX + 1]) {
  uint64_t n = ++r->epoch_seq;
  memcpy(out, r->epoch_base, 8);
  for (int i = 15; i >= 8; i--) {
    out[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[n % 36];
    n /= 36;
  }
  out[16] = 0;
}

/* ------------------------------------------------------------------------ */
/* The API                                                                  */
/* ------------------------------------------------------------------------ */

int push_redis_healthy(const push_redis *r) {
  if (r->cl != NULL && !redis_cluster_complete(r)) {
    return 0;
  }
  for (size_t i = 0; i < r->nshards; i++) {
    if (r->shards[i].in_use && !r->shards[i].up) {
      return 0;
    }
  }
  return 1;
}

void redis_on_ignored(redis_conn *c, redisReply *reply,
                      const redis_pending *p) {
  (void)c;
  (void)p;
  if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
    push_log(PUSH_LOG_WARN, "ev=redis_error error=\"%s\"", reply->str);
  }
}

/* Runs a presence script with the channel's keys, its pub/sub channel and
 * publish command, then nargs more arguments. */
static int presence_script(push_redis *r, const char *channel, int script,
                           redis_reply_fn fn, push_redis_cb cb, void *ud,
                           int nargs, const char **args, const size_t *lens) {
  rshard *sh = redis_shard_of(r, channel);
  if (sh == NULL || !sh->up) {
    return PUSH_REDIS_DOWN;
  }
  ckeys k;
  redis_ckeys(r, channel, &k);
  const char *pubcmd = sh->sharded ? "SPUBLISH" : "PUBLISH";
  const char *argv[12] = {"EVALSHA", sh->sha[script], "2", k.p, k.z,
                          k.ps,      pubcmd};
  size_t al[12] = {7, 40, 1, k.slen, k.slen, k.len, strlen(pubcmd)};
  for (int i = 0; i < nargs && i < 5; i++) {
    argv[7 + i] = args[i];
    al[7 + i] = lens[i];
  }
  return redis_cmd(&sh->cmd, fn, cb, ud, 7 + nargs, argv, al) == 0
             ? 1
             : PUSH_REDIS_DOWN;
}

int push_redis_presence_add(push_redis *r, const char *channel,
                            const char *client, const char *entry_json,
                            const push_buf *join) {
  char ttl[24];
  snprintf(ttl, sizeof ttl, "%" PRIu64, (uint64_t)r->cfg.presence_ttl_s * 1000);
  const char *args[] = {client, entry_json, ttl, join ? join->p : ""};
  size_t lens[] = {strlen(client), strlen(entry_json), strlen(ttl),
                   join ? join->len : 0};
  return presence_script(r, channel, S_PADD, redis_on_ignored, NULL, NULL, 4,
                         args, lens) == 1
             ? 0
             : PUSH_REDIS_DOWN;
}

int push_redis_presence_remove(push_redis *r, const char *channel,
                               const char *client, const push_buf *leave) {
  const char *args[] = {client, leave ? leave->p : ""};
  size_t lens[] = {strlen(client), leave ? leave->len : 0};
  return presence_script(r, channel, S_PREMOVE, redis_on_ignored, NULL, NULL, 2,
                         args, lens) == 1
             ? 0
             : PUSH_REDIS_DOWN;
}

/* Answers p->cb with a JSON text made from an array reply: write() turns
 * the reply into JSON in b, returning 0 or -1. */
static void answer_json(redis_conn *c, redisReply *reply,
                        const redis_pending *p,
                        int (*write)(push_buf *b, const redisReply *a)) {
  push_redis *r = conn_shard(c)->r;
  push_redis_reply rep = {.status = PUSH_REDIS_DOWN};
  push_buf *b = &r->scratch;
  b->len = 0;
  if (reply != NULL) {
    rep.status = PUSH_REDIS_ERROR;
    if (reply->type == REDIS_REPLY_ARRAY && write(b, reply) == 0) {
      rep.status = PUSH_REDIS_OK;
      rep.json = b->p;
      rep.len = b->len;
    }
  }
  pending_cb(p)(p->ud, &rep);
  push_buf_done(b, 1 << 16);
}

/* HGETALL pairs -> {"clients":{id:entry,...}} */
static int write_presence(push_buf *b, const redisReply *a) {
  int rc = push_buf_raw(b, "{\"clients\":{", 12);
  int first = 1;
  for (size_t i = 0; i + 1 < a->elements && rc == 0; i += 2) {
    const redisReply *k = a->element[i], *v = a->element[i + 1];
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
      continue;
    }
    rc = (first ? 0 : push_buf_raw(b, ",", 1)) ||
         push_buf_str(b, k->str, k->len) || push_buf_raw(b, ":", 1) ||
         push_buf_raw(b, v->str, v->len);
    first = 0;
  }
  return rc || push_buf_raw(b, "}}", 2);
}

/* node entries -> [entry,...] */
static int write_nodes(push_buf *b, const redisReply *a) {
  int rc = push_buf_raw(b, "[", 1);
  int first = 1;
  for (size_t i = 0; i < a->elements && rc == 0; i++) {
    const redisReply *v = a->element[i];
    if (v->type != REDIS_REPLY_STRING) {
      continue;
    }
    rc = (first ? 0 : push_buf_raw(b, ",", 1)) ||
         push_buf_raw(b, v->str, v->len);
    first = 0;
  }
  return rc || push_buf_raw(b, "]", 1);
}

static void on_presence(redis_conn *c, redisReply *reply,
                        const redis_pending *p) {
  answer_json(c, reply, p, write_presence);
}

static void on_nodes(redis_conn *c, redisReply *reply, const redis_pending *p) {
  answer_json(c, reply, p, write_nodes);
}

int push_redis_presence_get(push_redis *r, const char *channel,
                            push_redis_cb cb, void *ud) {
  return presence_script(r, channel, S_PGET, on_presence, cb, ud, 0, NULL,
                         NULL);
}

/* The node list's keys. In a Redis Cluster both need one slot, so the
 * name is their hash tag ({herald.nodes}: no channel's keys begin with a
 * brace). */
static void node_keys(const push_redis *r, char h[96], size_t *hl, char z[96],
                      size_t *zl) {
  const char *fmt = r->cl ? "{%s.nodes}" : "%s.nodes";
  const char *fmtz = r->cl ? "{%s.nodes}.z" : "%s.nodes.z";
  *hl = (size_t)snprintf(h, 96, fmt, r->prefix);
  *zl = (size_t)snprintf(z, 96, fmtz, r->prefix);
}

/* The shard that keeps the node list: the first one, or in a Redis
 * Cluster the master of its slot (NULL when the map does not say). */
rshard *redis_nodes_shard(push_redis *r) {
  if (r->cl == NULL) {
    return &r->shards[0];
  }
  char tag[80];
  int n = snprintf(tag, sizeof tag, "%s.nodes", r->prefix);
  return redis_cluster_owner(r, redis_cluster_slot(tag, (size_t)n));
}

int push_redis_nodes(push_redis *r, push_redis_cb cb, void *ud) {
  rshard *sh = redis_nodes_shard(r);
  if (sh == NULL || !sh->up) {
    return PUSH_REDIS_DOWN;
  }
  char hkey[96], zkey[96];
  size_t hl, zl;
  node_keys(r, hkey, &hl, zkey, &zl);
  const char *argv[] = {"EVALSHA", sh->sha[S_NODES], "2", hkey, zkey};
  size_t lens[] = {7, 40, 1, hl, zl};
  return redis_cmd(&sh->cmd, on_nodes, cb, ud, 5, argv, lens) == 0
             ? 1
             : PUSH_REDIS_DOWN;
}

void redis_heartbeat(push_redis *r) {
  rshard *sh = redis_nodes_shard(r);
  if (sh == NULL || !sh->up || r->ev.node_json == NULL || r->cfg.secondary) {
    return;
  }
  push_buf b = {0};
  r->ev.node_json(r->ev.ud, &b);
  if (b.p == NULL) {
    return;
  }
  char hkey[96], zkey[96], ttl[24];
  size_t hl, zl;
  node_keys(r, hkey, &hl, zkey, &zl);
  snprintf(ttl, sizeof ttl, "%d", NODE_TTL_MS);
  const char *argv[] = {"EVALSHA", sh->sha[S_BEAT], "2", hkey,
                        zkey,      r->node,         b.p, ttl};
  size_t lens[] = {7, 40, 1, hl, zl, strlen(r->node), b.len, strlen(ttl)};
  redis_cmd(&sh->cmd, redis_on_ignored, NULL, NULL, 8, argv, lens);
  push_buf_free(&b);
}

void push_redis_tick(push_redis *r, int64_t now_ms) {
  if (r->closing) {
    return;
  }
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    if (!sh->in_use) {
      continue;
    }
    redis_conn_ping(&sh->cmd, now_ms, r->cfg.ping_timeout_ms);
    if (sh->cmd.state != REDIS_CONN_DOWN) {
      redis_conn_ping(&sh->sub, now_ms, r->cfg.ping_timeout_ms);
    }
    if (sh->up) {
      redis_send_role(sh); /* still the master? */
    }
    if (sh->sn != NULL) {
      redis_sentinel_tick(sh, now_ms);
    }
  }
  if (r->cl != NULL) {
    redis_cluster_tick(r, now_ms);
  }
  redis_heartbeat(r);
  redis_ext_tick(r, now_ms);
  /* Channels nobody here uses any more: unsubscribe after a linger. */
  redis_chan_reap(r, now_ms);
}

void push_redis_get_stats(const push_redis *r, push_redis_stats *s) {
  *s = r->st;
  s->shards = s->shards_up = 0;
  for (size_t i = 0; i < r->nshards; i++) {
    s->shards += r->shards[i].in_use != 0;
    s->shards_up += r->shards[i].in_use && r->shards[i].up;
  }
  s->channels = r->nchans;
  s->mode = r->cl ? "cluster" : "shards";
}

int push_redis_get_shard(const push_redis *r, size_t i,
                         push_redis_shard_info *out) {
  for (size_t k = 0; k < r->nshards; k++) {
    const rshard *sh = &r->shards[k];
    if (!sh->in_use || i-- > 0) {
      continue;
    }
    memset(out, 0, sizeof *out);
    out->kind = sh->kind == SH_SENTINEL  ? "sentinel"
                : sh->kind == SH_CLUSTER ? "cluster"
                                         : "address";
    out->master_name = redis_sentinel_master_name(sh);
    if (sh->host[0] != 0) {
      snprintf(out->address, sizeof out->address,
               strchr(sh->host, ':') ? "[%s]:%s" : "%s:%s", sh->host, sh->port);
    }
    out->up = sh->up;
    out->slots = sh->nslots;
    return 0;
  }
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

int redis_split_addr(const char *a, char *host, size_t hcap, char *port,
                     size_t pcap) {
  const char *colon = strrchr(a, ':');
  const char *h = a;
  size_t hl;
  if (a[0] == '[') {
    const char *rb = strchr(a, ']');
    if (rb == NULL || rb[1] != ':') {
      return -1;
    }
    h = a + 1;
    hl = (size_t)(rb - h);
    colon = rb + 1;
  } else if (colon == NULL) {
    hl = strlen(a);
  } else {
    hl = (size_t)(colon - a);
  }
  const char *p = colon ? colon + 1 : "6379";
  if (hl == 0 || hl >= hcap || strlen(p) == 0 || strlen(p) >= pcap ||
      strspn(p, "0123456789") != strlen(p) || atoi(p) <= 0 || atoi(p) > 65535) {
    return -1;
  }
  memcpy(host, h, hl);
  host[hl] = 0;
  snprintf(port, pcap, "%s", p);
  return 0;
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

/* Sets up shard entry i (connections, timer); its address comes later for
 * sentinel and cluster shards. */
static void shard_init(push_redis *r, size_t i, rshard_kind kind) {
  rshard *sh = &r->shards[i];
  sh->r = r;
  sh->index = (int)i;
  sh->kind = kind;
  sh->in_use = kind != SH_CLUSTER;
  sh->sharded = r->cfg.sharded;
  redis_conn *conns[2] = {&sh->cmd, &sh->sub};
  for (int k = 0; k < 2; k++) {
    redis_conn_init(conns[k],
                    kind == SH_CLUSTER && k == 0 ? &redis_shard_cluster_events
                                                 : &redis_shard_conn_events,
                    sh, r->loop, &r->open_handles, k);
    conns[k]->keep = kind == SH_CLUSTER && k == 0;
    conns[k]->ssl_ctx = r->ssl_ctx;
    conns[k]->tls_name =
        r->cfg.tls_server_name ? r->cfg.tls_server_name : sh->host;
    conns[k]->tls_verify = !r->cfg.tls_insecure;
  }
  redis_dial_init(&sh->dial, r, &sh->cmd, &sh->sub);
  uv_timer_init(r->loop, &sh->retry);
  sh->retry.data = sh;
  r->open_handles++;
}

/* Starts connecting shard sh (a cluster master of the map). */
void redis_shard_start(rshard *sh) {
  sh->in_use = 1;
  sh->backoff_ms = 0;
  redis_shard_connect(sh);
}

static void free_cfg_copy(push_redis *r) {
  free(r->cfg.user);
  free(r->cfg.password);
  free(r->cfg.tls_ca);
  free(r->cfg.tls_server_name);
}

push_redis *push_redis_new(uv_loop_t *loop, const push_redis_config *cfg,
                           push_hub *hub, const char *node,
                           const push_redis_events *ev, char *err,
                           size_t errlen) {
  if ((cfg->ncluster == 0) ==
          (cfg->naddrs == 0 || cfg->naddrs > PUSH_REDIS_MAX_SHARDS) ||
      cfg->ncluster > PUSH_REDIS_MAX_SEEDS) {
    snprintf(err, errlen,
             "redis: give 1 to %d shards, or a cluster's seed nodes",
             PUSH_REDIS_MAX_SHARDS);
    return NULL;
  }
  push_redis *r = calloc(1, sizeof *r);
  if (r == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  r->loop = loop;
  r->hub = hub;
  r->ev = *ev;
  r->cfg = *cfg;
  memset(r->cfg.addrs, 0, sizeof r->cfg.addrs);
  memset(r->cfg.sentinel, 0, sizeof r->cfg.sentinel);
  memset(r->cfg.cluster, 0, sizeof r->cfg.cluster);
  r->cfg.user = dup_or_null(cfg->user);
  r->cfg.password = dup_or_null(cfg->password);
  r->cfg.tls_ca = dup_or_null(cfg->tls_ca);
  r->cfg.tls_server_name = dup_or_null(cfg->tls_server_name);
  r->cfg.prefix = NULL;
  if (r->cfg.presence_ttl_s == 0) {
    r->cfg.presence_ttl_s = 30;
  }
  if (r->cfg.ping_timeout_ms == 0) {
    r->cfg.ping_timeout_ms = 3000;
  }
  snprintf(r->node, sizeof r->node, "%s", node);
  snprintf(r->prefix, sizeof r->prefix, "%s",
           cfg->prefix ? cfg->prefix : "herald");
  if (getrandom(r->hkey, sizeof r->hkey, 0) != sizeof r->hkey ||
      push_random_id(r->epoch_base, 8) != 0) {
    snprintf(err, errlen, "getrandom failed");
    goto fail;
  }
  if (cfg->tls) {
    r->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (r->ssl_ctx == NULL) {
      snprintf(err, errlen, "redis TLS: cannot create a context");
      goto fail;
    }
    SSL_CTX_set_min_proto_version(r->ssl_ctx, TLS1_2_VERSION);
    if (!cfg->tls_insecure) {
      SSL_CTX_set_verify(r->ssl_ctx, SSL_VERIFY_PEER, NULL);
      int ok = cfg->tls_ca ? SSL_CTX_load_verify_locations(r->ssl_ctx,
                                                           cfg->tls_ca, NULL)
                           : SSL_CTX_set_default_verify_paths(r->ssl_ctx);
      if (ok != 1) {
        snprintf(err, errlen, "redis TLS: cannot load CA %s",
                 cfg->tls_ca ? cfg->tls_ca : "(system)");
        goto fail;
      }
    }
  }
  /* Check every address before anything starts. */
  char host[256], port[16];
  for (size_t i = 0; i < cfg->naddrs; i++) {
    if (cfg->sentinel[i] == NULL &&
        (cfg->addrs[i] == NULL ||
         redis_split_addr(cfg->addrs[i], host, sizeof host, port,
                          sizeof port) != 0)) {
      snprintf(err, errlen, "redis: bad address \"%s\" (host:port)",
               cfg->addrs[i] ? cfg->addrs[i] : "");
      goto fail;
    }
  }
  size_t n = cfg->ncluster ? REDIS_CLUSTER_MAX_MASTERS : cfg->naddrs;
  r->shards = calloc(n, sizeof *r->shards);
  if (r->shards == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (cfg->ncluster > 0 &&
      redis_cluster_new(r, cfg->cluster, cfg->ncluster, err, errlen) != 0) {
    goto fail;
  }
  /* From here on every handle opened is closed by push_redis_del. */
  r->nshards = n;
  for (size_t i = 0; i < n; i++) {
    rshard_kind kind = cfg->ncluster      ? SH_CLUSTER
                       : cfg->sentinel[i] ? SH_SENTINEL
                                          : SH_ADDRESS;
    shard_init(r, i, kind);
    rshard *sh = &r->shards[i];
    if (kind == SH_ADDRESS) {
      redis_split_addr(cfg->addrs[i], sh->host, sizeof sh->host, sh->port,
                       sizeof sh->port);
    } else if (kind == SH_SENTINEL &&
               redis_sentinel_new(sh, cfg->sentinel[i], err, errlen) != 0) {
      push_redis_del(r);
      return NULL;
    }
  }
  if (r->cl != NULL) {
    redis_cluster_start(r);
  }
  for (size_t i = 0; i < r->nshards; i++) {
    redis_shard_connect(&r->shards[i]); /* cluster: none in use yet */
  }
  return r;
fail:
  if (r->ssl_ctx) {
    SSL_CTX_free(r->ssl_ctx);
  }
  if (r->cl != NULL) {
    redis_cluster_free(r);
  }
  free(r->shards);
  free_cfg_copy(r);
  free(r);
  return NULL;
}

static void on_timer_closed(uv_handle_t *h) {
  rshard *sh = h->data;
  push_redis *r = sh->r;
  r->open_handles--;
  redis_maybe_free(r);
}

void redis_maybe_free(push_redis *r) {
  if (!r->closing || r->open_handles > 0) {
    return;
  }
  for (size_t i = 0; i < r->nshards; i++) {
    redis_conn_free(&r->shards[i].cmd);
    redis_conn_free(&r->shards[i].sub);
    if (r->shards[i].sn != NULL) {
      redis_sentinel_free(&r->shards[i]);
    }
  }
  if (r->cl != NULL) {
    redis_cluster_free(r);
  }
  for (size_t b = 0; b < r->nbuckets; b++) {
    while (r->buckets[b] != NULL) {
      redis_chan_free(r, r->buckets[b]);
    }
  }
  free(r->buckets);
  free(r->shards);
  if (r->ssl_ctx) {
    SSL_CTX_free(r->ssl_ctx);
  }
  push_buf_free(&r->scratch);
  free_cfg_copy(r);
  free(r);
}

void push_redis_del(push_redis *r) {
  if (r == NULL) {
    return;
  }
  /* Leave the node list at once (best effort: a write that does not make
   * it expires with the redis_heartbeat TTL). */
  rshard *s0 = redis_nodes_shard(r);
  if (s0 != NULL && s0->up && redis_conn_unsent(&s0->cmd) == 0 &&
      !r->cfg.secondary) {
    char hkey[96], zkey[96];
    size_t hl, zl;
    node_keys(r, hkey, &hl, zkey, &zl);
    const char *a1[] = {"HDEL", hkey, r->node}, *a2[] = {"ZREM", zkey, r->node};
    size_t l1[] = {4, hl, strlen(r->node)};
    size_t l2[] = {4, zl, strlen(r->node)};
    redis_cmd(&s0->cmd, redis_on_ignored, NULL, NULL, 3, a1, l1);
    redis_cmd(&s0->cmd, redis_on_ignored, NULL, NULL, 3, a2, l2);
    redis_conn_flush(&s0->cmd);
  }
  r->closing = 1;
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    if (sh->r == NULL) {
      continue; /* never set up (a failed push_redis_new) */
    }
    if (sh->active) {
      redis_shard_close(sh, "closing");
    }
    uv_timer_stop(&sh->retry);
    uv_close((uv_handle_t *)&sh->retry, on_timer_closed);
    redis_dial_close(&sh->dial);
    if (sh->sn != NULL) {
      redis_sentinel_close(sh);
    }
  }
  if (r->cl != NULL) {
    redis_cluster_close(r);
  }
  redis_maybe_free(r);
}
