/*
 * redis_sentinel.c - shards whose master Redis Sentinel names
 * (redis.sentinel; docs/scaling.md, "Redis Sentinel").
 *
 * Such a shard does not know its server beforehand. Before each connect it
 * asks its sentinels, one after the other until one answers, for the
 * master's address (SENTINEL get-master-addr-by-name), and redis.c
 * connects there; ROLE must then say "master" before the shard comes up.
 * Any failure of the shard (an error, EOF, a PING unanswered, a READONLY
 * reply, ROLE saying replica) takes it down, and its reconnect, after the
 * usual backoff, asks the sentinels again. The sentinel that answered is
 * asked first the next time, as the Sentinel client guidelines suggest.
 *
 * Besides, one connection to one sentinel stays subscribed to
 * +switch-master. When the sentinels announce another master for this
 * shard's name, the shard goes there at once instead of waiting for a
 * failure or for its backoff. Losing that connection only loses the
 * shortcut: the next tick opens it again, to the next sentinel.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/log.h"
#include "push/redis_int.h"

struct rsentinel {
  rshard *sh;
  char *master_name;
  char *password; /* the sentinels' own, or NULL */
  size_t n;
  char host[PUSH_REDIS_MAX_SENTINELS][256];
  char port[PUSH_REDIS_MAX_SENTINELS][16];
  redis_conn ask;   /* asks one sentinel for the master */
  redis_conn watch; /* subscribed to +switch-master on one sentinel */
  rdial ask_dial, watch_dial;
  size_t ask_idx;   /* the sentinel being asked, or to ask first */
  size_t asked;     /* sentinels asked in this round */
  size_t watch_idx; /* the sentinel watched, or to watch next */
  int watch_wait;   /* ticks to wait before watching again */
  char why[300];    /* what went wrong with the last sentinel asked */
};

static void ask_next(rsentinel *s);

static rsentinel *sentinel_of(const redis_conn *c) {
  return conn_shard(c)->sn;
}

static void set_tls_name(rsentinel *s, redis_conn *c, size_t i) {
  push_redis *r = s->sh->r;
  c->tls_name = r->cfg.tls_server_name ? r->cfg.tls_server_name : s->host[i];
}

/* ---- asking for the master --------------------------------------------- */

static void on_master_addr(redis_conn *c, redisReply *reply,
                           const redis_pending *p);

static void ask_ready(redis_conn *c) {
  rsentinel *s = sentinel_of(c);
  redis_send_auth(s->sh->r, c, NULL, s->password);
  const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->master_name};
  size_t lens[3] = {8, 23, strlen(s->master_name)};
  redis_cmd(c, on_master_addr, NULL, NULL, 3, argv, lens);
}

/* This sentinel could not say: the next one is asked. */
static void ask_failed(redis_conn *c, const char *why) {
  rsentinel *s = sentinel_of(c);
  snprintf(s->why, sizeof s->why, "%s:%s: %s", s->host[s->ask_idx],
           s->port[s->ask_idx], why);
  push_log(PUSH_LOG_WARN,
           "ev=sentinel_error shard=%d master_name=%s sentinel=%s:%s "
           "error=\"%s\"",
           s->sh->index, s->master_name, s->host[s->ask_idx],
           s->port[s->ask_idx], why);
  redis_conn_close(&s->ask);
  s->ask_idx = (s->ask_idx + 1) % s->n;
  ask_next(s);
}

/* [ip, port], or nil when this sentinel does not monitor the name. */
static void on_master_addr(redis_conn *c, redisReply *reply,
                           const redis_pending *p) {
  (void)p;
  if (reply == NULL) {
    return;
  }
  rsentinel *s = sentinel_of(c);
  rshard *sh = s->sh;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_STRING ||
      reply->element[0]->len == 0 ||
      reply->element[0]->len >= sizeof sh->host ||
      reply->element[1]->len == 0 ||
      reply->element[1]->len >= sizeof sh->port) {
    ask_failed(c, reply->type == REDIS_REPLY_ERROR ? reply->str
                  : reply->type == REDIS_REPLY_NIL
                      ? "does not monitor this master_name"
                      : "bad reply to SENTINEL get-master-addr-by-name");
    return;
  }
  char host[256], port[16];
  memcpy(host, reply->element[0]->str, reply->element[0]->len);
  host[reply->element[0]->len] = 0;
  memcpy(port, reply->element[1]->str, reply->element[1]->len);
  port[reply->element[1]->len] = 0;
  if (sh->host[0] != 0 &&
      (strcmp(host, sh->host) != 0 || strcmp(port, sh->port) != 0)) {
    sh->r->st.failovers++;
    push_log(PUSH_LOG_WARN,
             "ev=redis_failover shard=%d master_name=%s from=%s:%s to=%s:%s",
             sh->index, s->master_name, sh->host, sh->port, host, port);
  }
  memcpy(sh->host, host, sizeof host);
  memcpy(sh->port, port, sizeof port);
  redis_conn_close(&s->ask); /* this sentinel is asked first next time */
  redis_shard_dial(sh);
}

static void ask_next(rsentinel *s) {
  if (s->asked == s->n) {
    char why[400];
    snprintf(why, sizeof why, "no sentinel named master \"%s\" (last: %s)",
             s->master_name, s->why);
    redis_shard_down(s->sh, why); /* asks again after the backoff */
    return;
  }
  s->asked++;
  set_tls_name(s, &s->ask, s->ask_idx);
  redis_dial_start(&s->ask_dial, s->host[s->ask_idx], s->port[s->ask_idx]);
}

void redis_sentinel_resolve(rshard *sh) {
  rsentinel *s = sh->sn;
  redis_dial_cancel(&s->ask_dial);
  redis_conn_close(&s->ask);
  s->asked = 0;
  s->why[0] = 0;
  ask_next(s);
}

void redis_sentinel_stop(rshard *sh) {
  redis_dial_cancel(&sh->sn->ask_dial);
  redis_conn_close(&sh->sn->ask);
}

/* ---- following +switch-master ------------------------------------------ */

static void on_watch_subscribed(redis_conn *c, redisReply *reply,
                                const redis_pending *p) {
  (void)p;
  if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
    char why[300];
    snprintf(why, sizeof why, "SUBSCRIBE +switch-master: %s", reply->str);
    c->ev->failed(c, why);
  }
}

static void watch_ready(redis_conn *c) {
  rsentinel *s = sentinel_of(c);
  redis_send_auth(s->sh->r, c, NULL, s->password);
  const char *argv[2] = {"SUBSCRIBE", "+switch-master"};
  size_t lens[2] = {9, 14};
  redis_cmd(c, on_watch_subscribed, NULL, NULL, 2, argv, lens);
}

static void watch_failed(redis_conn *c, const char *why) {
  rsentinel *s = sentinel_of(c);
  push_log(PUSH_LOG_WARN,
           "ev=sentinel_watch_down shard=%d sentinel=%s:%s error=\"%s\"",
           s->sh->index, s->host[s->watch_idx], s->port[s->watch_idx], why);
  redis_conn_close(&s->watch);
  s->watch_idx = (s->watch_idx + 1) % s->n;
  s->watch_wait = 1;
}

/* "+switch-master": "<name> <old ip> <old port> <new ip> <new port>". */
static void watch_message(redis_conn *c, const char *channel, size_t clen,
                          const char *msg, size_t len) {
  rsentinel *s = sentinel_of(c);
  rshard *sh = s->sh;
  char text[600], name[256], oh[256], op[16], nh[256], np[16];
  if (clen != 14 || memcmp(channel, "+switch-master", 14) != 0 ||
      len >= sizeof text) {
    return;
  }
  memcpy(text, msg, len);
  text[len] = 0;
  if (sscanf(text, "%255s %255s %15s %255s %15s", name, oh, op, nh, np) != 5 ||
      strcmp(name, s->master_name) != 0) {
    return;
  }
  push_log(PUSH_LOG_WARN,
           "ev=sentinel_switch_master shard=%d master_name=%s from=%s:%s "
           "to=%s:%s",
           sh->index, name, oh, op, nh, np);
  if (sh->up && strcmp(nh, sh->host) == 0 && strcmp(np, sh->port) == 0) {
    return; /* there already */
  }
  redis_shard_reconnect_now(sh, "sentinel: +switch-master");
}

void redis_sentinel_tick(rshard *sh, int64_t now_ms) {
  rsentinel *s = sh->sn;
  push_redis *r = sh->r;
  if (s->watch.state != REDIS_CONN_DOWN) {
    redis_conn_ping(&s->watch, now_ms, r->cfg.ping_timeout_ms);
    return;
  }
  if (s->watch_dial.busy || s->watch_dial.want) {
    return;
  }
  if (s->watch_wait > 0) {
    s->watch_wait--;
    return;
  }
  set_tls_name(s, &s->watch, s->watch_idx);
  redis_dial_start(&s->watch_dial, s->host[s->watch_idx],
                   s->port[s->watch_idx]);
}

/* ---- life cycle --------------------------------------------------------- */

static void on_handle_closed(redis_conn *c) {
  redis_maybe_free(conn_shard(c)->r);
}

static const redis_conn_events ask_events = {
    .ready = ask_ready,
    .failed = ask_failed,
    .handle_closed = on_handle_closed,
};

static const redis_conn_events watch_events = {
    .ready = watch_ready,
    .failed = watch_failed,
    .message = watch_message,
    .handle_closed = on_handle_closed,
};

int redis_sentinel_new(rshard *sh, const push_redis_sentinel *cfg, char *err,
                       size_t errlen) {
  push_redis *r = sh->r;
  rsentinel *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->sh = sh;
  s->n = cfg->naddrs;
  for (size_t i = 0; i < cfg->naddrs; i++) {
    if (redis_split_addr(cfg->addrs[i], s->host[i], sizeof s->host[i],
                         s->port[i], sizeof s->port[i]) != 0) {
      snprintf(err, errlen, "redis.sentinel: bad address \"%s\" (host:port)",
               cfg->addrs[i]);
      free(s);
      return -1;
    }
  }
  s->master_name = strdup(cfg->master_name);
  s->password = cfg->password ? strdup(cfg->password) : NULL;
  if (s->master_name == NULL || (cfg->password && s->password == NULL) ||
      s->n == 0) {
    snprintf(err, errlen, "redis.sentinel: out of memory or no address");
    free(s->master_name);
    free(s->password);
    free(s);
    return -1;
  }
  redis_conn *conns[2] = {&s->ask, &s->watch};
  const redis_conn_events *evs[2] = {&ask_events, &watch_events};
  for (int k = 0; k < 2; k++) {
    redis_conn_init(conns[k], evs[k], sh, r->loop, &r->open_handles, k);
    conns[k]->ssl_ctx = r->ssl_ctx;
    conns[k]->tls_verify = !r->cfg.tls_insecure;
    set_tls_name(s, conns[k], 0);
  }
  redis_dial_init(&s->ask_dial, r, &s->ask, NULL);
  redis_dial_init(&s->watch_dial, r, &s->watch, NULL);
  sh->sn = s;
  return 0;
}

const char *redis_sentinel_master_name(const rshard *sh) {
  return sh->sn ? sh->sn->master_name : NULL;
}

void redis_sentinel_close(rshard *sh) {
  rsentinel *s = sh->sn;
  redis_dial_close(&s->ask_dial);
  redis_dial_close(&s->watch_dial);
  redis_conn_close(&s->ask);
  redis_conn_close(&s->watch);
}

void redis_sentinel_free(rshard *sh) {
  rsentinel *s = sh->sn;
  redis_conn_free(&s->ask);
  redis_conn_free(&s->watch);
  free(s->master_name);
  free(s->password);
  free(s);
  sh->sn = NULL;
}
