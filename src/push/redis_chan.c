/*
 * redis_chan.c - the Redis engine's channels: each channel a node follows,
 * its replica in the hub kept current from Redis, and publishing to them
 * (redis.h has the model).
 *
 * A channel is used by a node while it has local references (subscribers,
 * reads in flight). Its state machine:
 *
 *   IDLE --sync--> SUBSCRIBING --confirmed--> LOADING --loaded--> LIVE
 *     ^                                          ^                  |
 *     |                                          +---- a gap -------+
 *     +------------- shard down (from any state) ------------------+
 *
 * LOADING reads the channel's epoch, offset and history in one script and
 * loads them into the hub. Messages that arrive meanwhile are buffered and
 * applied after it, skipping what the load already had. When the hub's
 * replica has subscribers (a resync after a gap or a reconnect), what they
 * missed is delivered from the loaded history first; if the history no
 * longer holds it, or the epoch changed, on_lost tells the server.
 *
 * In a Redis Cluster a channel can move to another shard (a failover, a
 * slot migrated): redis_chan_move takes it back to IDLE and subscribes it
 * where it lives now. A reply or message that still comes from the old
 * shard is recognized by its connection and ignored.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/log.h"
#include "push/redis_int.h"

#define CHANNEL_LINGER_MS                                                      \
  5000                       /* an unused channel stays subscribed this long */
#define MSG_BUFFER_MAX 10000 /* messages buffered while a channel loads */

rchan *redis_chan_find(push_redis *r, const char *name, size_t n) {
  if (r->nbuckets == 0) {
    return NULL;
  }
  uint32_t h = push_hash_str(r->hkey, name, n);
  for (rchan *ch = r->buckets[h & (r->nbuckets - 1)]; ch; ch = ch->next) {
    if (ch->hash == h && strncmp(ch->name, name, n) == 0 && ch->name[n] == 0) {
      return ch;
    }
  }
  return NULL;
}

static int chan_grow(push_redis *r) {
  size_t nb = r->nbuckets ? r->nbuckets * 2 : 64;
  rchan **b = calloc(nb, sizeof *b);
  if (b == NULL) {
    return -1;
  }
  for (size_t i = 0; i < r->nbuckets; i++) {
    for (rchan *ch = r->buckets[i], *next; ch; ch = next) {
      next = ch->next;
      ch->next = b[ch->hash & (nb - 1)];
      b[ch->hash & (nb - 1)] = ch;
    }
  }
  free(r->buckets);
  r->buckets = b;
  r->nbuckets = nb;
  return 0;
}

static rchan *chan_get(push_redis *r, const char *name) {
  size_t n = strlen(name);
  rchan *ch = redis_chan_find(r, name, n);
  if (ch != NULL) {
    return ch;
  }
  const push_ns *ns = push_hub_ns(r->hub, name);
  rshard *sh = redis_shard_of(r, name);
  if (ns == NULL || sh == NULL ||
      (r->nchans + 1 > r->nbuckets && chan_grow(r) != 0)) {
    return NULL;
  }
  ch = calloc(1, sizeof *ch + n + 1);
  if (ch == NULL) {
    return NULL;
  }
  memcpy(ch->name, name, n + 1);
  ch->hash = push_hash_str(r->hkey, name, n);
  ch->sh = sh;
  ch->slot = redis_cluster_slot(name, n);
  ch->ns = ns;
  ch->wtail = &ch->waiters;
  ch->idle_since = redis_wall_ms();
  size_t b = ch->hash & (r->nbuckets - 1);
  ch->next = r->buckets[b];
  r->buckets[b] = ch;
  r->nchans++;
  return ch;
}

static void chan_clear_buffer(rchan *ch) {
  for (size_t i = 0; i < ch->nbuf; i++) {
    free(ch->buf[i].copy);
  }
  ch->nbuf = 0;
  ch->covered = 0;
  ch->overflow = 0;
}

void redis_chan_free(push_redis *r, rchan *ch) {
  rchan **pp = &r->buckets[ch->hash & (r->nbuckets - 1)];
  while (*pp != ch) {
    pp = &(*pp)->next;
  }
  *pp = ch->next;
  r->nchans--;
  chan_clear_buffer(ch);
  free(ch->buf);
  free(ch);
}

/* Calls and removes every waiter with status. A PUSH_REDIS_OK keeps the
 * waiter's reference; any other drops it. */
static void chan_wake(rchan *ch, int status) {
  waiter *w = ch->waiters;
  ch->waiters = NULL;
  ch->wtail = &ch->waiters;
  while (w != NULL) {
    waiter *next = w->next;
    if (status != PUSH_REDIS_OK) {
      ch->refs--;
    }
    push_redis_reply rep = {.status = status};
    w->cb(w->ud, &rep);
    free(w);
    w = next;
  }
}

static void chan_subscribe(rchan *ch);
static void chan_load(rchan *ch);

void redis_chan_shard_up(rchan *ch) {
  if (ch->refs > 0 || ch->waiters != NULL) {
    chan_subscribe(ch);
  }
}

void redis_chan_shard_down(rchan *ch) {
  ch->state = CH_IDLE;
  ch->reload = 0;
  chan_clear_buffer(ch);
  chan_wake(ch, PUSH_REDIS_DOWN);
}

/* A reply to one of the channel's commands that it no longer waits for:
 * the shard went down (the reply is NULL) or the channel moved to
 * another shard since. */
static int chan_stale(const rchan *ch, const redis_conn *c,
                      const redisReply *reply, rchan_state want) {
  return reply == NULL || conn_shard(c) != ch->sh || ch->state != want;
}

/* A command of the channel's failed: the channel goes back to IDLE and
 * its waiters are answered; a transient error (a failover, a migrating
 * slot) as unavailable, so that clients retry, and the channel is
 * subscribed again by the next tick when it still has users. A MOVED
 * first moves it, in which case it is subscribing where it lives now. */
static void chan_failed(rchan *ch, const char *op, const redisReply *reply) {
  rshard *was = ch->sh;
  push_log(redis_error_transient(reply) ? PUSH_LOG_WARN : PUSH_LOG_ERROR,
           "ev=redis_error op=%s channel=%s error=\"%s\"", op, ch->name,
           reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
  was->r->st.errors++;
  if (reply->type == REDIS_REPLY_ERROR && was->kind == SH_CLUSTER &&
      redis_cluster_moved(was, reply) && ch->sh != was) {
    return;
  }
  ch->state = CH_IDLE;
  chan_wake(ch,
            redis_error_transient(reply) ? PUSH_REDIS_DOWN : PUSH_REDIS_ERROR);
}

static void on_subscribed(redis_conn *c, redisReply *reply,
                          const redis_pending *p) {
  rchan *ch = p->ud;
  ch->inflight--;
  if (chan_stale(ch, c, reply, CH_SUBSCRIBING)) {
    return; /* the shard went down: it resubscribes when up */
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    chan_failed(ch, "subscribe", reply);
    return;
  }
  chan_load(ch);
}

static void chan_subscribe(rchan *ch) {
  rshard *sh = ch->sh;
  ckeys k;
  redis_ckeys(sh->r, ch->name, &k);
  const char *argv[2] = {sh->sharded ? "SSUBSCRIBE" : "SUBSCRIBE", k.ps};
  size_t lens[2] = {strlen(argv[0]), k.len};
  ch->state = CH_SUBSCRIBING;
  chan_clear_buffer(ch);
  if (redis_cmd(&sh->sub, on_subscribed, NULL, ch, 2, argv, lens) != 0) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_DOWN);
    return;
  }
  ch->inflight++;
}

/* Parses "<offset>-0" stream IDs. */
static int parse_u64(const char *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  size_t i = 0;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
    if (v > (UINT64_MAX - 9) / 10) {
      return -1;
    }
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (i == 0) {
    return -1;
  }
  *out = v;
  return (int)i;
}

/* Remembers the last publication applied to the replica: its offset and
 * Redis' time for it, which tell it apart from another publication that
 * Redis might later hold at the same offset (chan_rolled_back). */
static void chan_seen(rchan *ch, const push_ext_pub *e) {
  ch->seen_off = e->offset;
  ch->seen_ms = e->time_ms;
}

/* Did Redis go back under this node's feet while the epoch stayed the
 * same? Its offset is behind the replica's, or the publication it holds at
 * the replica's offset is not the one this node applied. Either proves
 * that positions were, or will be, handed out twice. */
static int chan_rolled_back(const rchan *ch, const push_pos *cur,
                            uint64_t offset, const push_ext_pub *e, size_t ne) {
  if (offset < cur->offset) {
    return 1;
  }
  if (ch->seen_off == 0 || ch->seen_off != cur->offset) {
    return 0; /* nothing to compare with */
  }
  for (size_t i = 0; i < ne; i++) {
    if (e[i].offset == cur->offset) {
      return e[i].time_ms != ch->seen_ms;
    }
  }
  return 0;
}

static void on_fenced(redis_conn *c, redisReply *reply,
                      const redis_pending *p) {
  rchan *ch = p->ud;
  push_redis *r = conn_shard(c)->r;
  ch->inflight--;
  if (chan_stale(ch, c, reply, CH_LOADING)) {
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    push_log(PUSH_LOG_ERROR, "ev=redis_error op=fence channel=%s error=\"%s\"",
             ch->name, reply->str);
    /* The subscribers here cannot be kept current: let them recover. */
    if (r->ev.on_lost) {
      r->ev.on_lost(r->ev.ud, ch->name);
    }
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_ERROR);
    return;
  }
  chan_load(ch); /* now in a new epoch: the subscribers are told */
}

/* Gives the channel a new epoch in Redis, unless another node did first,
 * then loads it again. */
static void chan_fence(rchan *ch, const push_pos *cur, uint64_t offset) {
  rshard *sh = ch->sh;
  push_redis *r = sh->r;
  ckeys k;
  redis_ckeys(r, ch->name, &k);
  char epoch[PUSH_EPOCH_MAX + 1];
  redis_next_epoch(r, epoch);
  r->st.rollbacks++;
  push_log(PUSH_LOG_WARN,
           "ev=redis_rollback channel=%s had=%s:%" PRIu64 " now=%s:%" PRIu64
           " new_epoch=%s",
           ch->name, cur->epoch, cur->offset, cur->epoch, offset, epoch);
  const char *argv[] = {"EVALSHA", sh->sha[S_FENCE], "1",
                        k.m,       cur->epoch,       epoch};
  size_t lens[] = {7, 40, 1, k.slen, strlen(cur->epoch), 16};
  if (redis_cmd(&sh->cmd, on_fenced, NULL, ch, 6, argv, lens) != 0) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_DOWN);
    return;
  }
  ch->inflight++;
}

/* Applies the buffered messages after a load, in order. Returns 1 when one
 * did not follow (another load is needed), else 0. */
static int chan_apply_buffer(push_redis *r, rchan *ch) {
  /* What arrived before the load was sent is in its answer: drop it. A
   * message of an epoch the load replaced (published before a fence)
   * would otherwise never fit, and each load would ask for another. */
  size_t i = ch->covered < ch->nbuf ? ch->covered : ch->nbuf;
  ch->covered = 0;
  int gap = 0;
  for (; i < ch->nbuf; i++) {
    push_pos pos;
    if (push_hub_pos(r->hub, ch->name, &pos) != 0) {
      break;
    }
    rmsg *m = &ch->buf[i];
    if (strcmp(m->epoch, pos.epoch) == 0 && m->e.offset <= pos.offset) {
      continue; /* the load had it */
    }
    int rv = push_hub_append(r->hub, ch->name, m->epoch, &m->e);
    if (rv == 1) {
      gap = 1;
      break;
    }
    if (rv == 0) {
      chan_seen(ch, &m->e);
    }
  }
  /* Keep what could not be applied for after the next load. */
  for (size_t k = 0; k < i; k++) {
    free(ch->buf[k].copy);
  }
  if (i > 0) {
    memmove(ch->buf, ch->buf + i, (ch->nbuf - i) * sizeof *ch->buf);
    ch->nbuf -= i;
  }
  return gap || ch->overflow;
}

static void on_loaded(redis_conn *c, redisReply *reply,
                      const redis_pending *p) {
  rchan *ch = p->ud;
  push_redis *r = conn_shard(c)->r;
  ch->inflight--;
  if (chan_stale(ch, c, reply, CH_LOADING)) {
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_INTEGER ||
      reply->element[2]->type != REDIS_REPLY_ARRAY ||
      reply->element[0]->len > PUSH_EPOCH_MAX) {
    chan_failed(ch, "load", reply);
    return;
  }
  char epoch[PUSH_EPOCH_MAX + 1];
  memcpy(epoch, reply->element[0]->str, reply->element[0]->len);
  epoch[reply->element[0]->len] = 0;
  uint64_t offset = (uint64_t)reply->element[1]->integer;
  redisReply *items = reply->element[2];
  size_t n = items->elements;
  push_ext_pub *e = n ? calloc(n, sizeof *e) : NULL;
  size_t ne = 0;
  /* XREVRANGE is newest first; the hub wants oldest first. */
  for (size_t i = n; i-- > 0;) {
    redisReply *it = items->element[i];
    if (it->type != REDIS_REPLY_ARRAY || it->elements != 2 ||
        it->element[0]->type != REDIS_REPLY_STRING ||
        it->element[1]->type != REDIS_REPLY_ARRAY) {
      continue;
    }
    push_ext_pub x = {0};
    if (parse_u64(it->element[0]->str, it->element[0]->len, &x.offset) < 0) {
      continue;
    }
    redisReply *f = it->element[1];
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
      redisReply *fk = f->element[k], *fv = f->element[k + 1];
      if (fk->type != REDIS_REPLY_STRING || fv->type != REDIS_REPLY_STRING) {
        continue;
      }
      if (fk->len == 1 && fk->str[0] == 't') {
        uint64_t t;
        if (parse_u64(fv->str, fv->len, &t) > 0) {
          x.time_ms = (int64_t)t;
        }
      } else if (fk->len == 1 && fk->str[0] == 'p') {
        x.tail = fv->str;
        x.tail_len = fv->len;
      }
    }
    if (x.tail != NULL && e != NULL) {
      e[ne++] = x;
    }
  }
  if (n > 0 && e == NULL) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_ERROR);
    return;
  }
  push_pos cur;
  int have = push_hub_pos(r->hub, ch->name, &cur) == 0;
  if (have && strcmp(cur.epoch, epoch) == 0 &&
      chan_rolled_back(ch, &cur, offset, e, ne)) {
    free(e);
    chan_fence(ch, &cur, offset);
    return;
  }
  /* A resync: subscribers here hold a position; deliver what they missed
   * from the loaded history, or tell them it is gone. */
  if (have && push_hub_nsubscribers(r->hub, ch->name) > 0 &&
      !(strcmp(cur.epoch, epoch) == 0 && cur.offset == offset)) {
    int lost = strcmp(cur.epoch, epoch) != 0;
    size_t k = 0;
    while (!lost && k < ne && e[k].offset <= cur.offset) {
      k++;
    }
    if (!lost && (k == ne || e[k].offset != cur.offset + 1 ||
                  e[ne - 1].offset != offset)) {
      lost = 1;
    }
    r->st.resyncs++;
    if (!lost) {
      for (; k < ne; k++) {
        if (push_hub_append(r->hub, ch->name, epoch, &e[k]) != 0) {
          lost = 1;
          break;
        }
      }
    }
    if (lost) {
      r->st.lost++;
      push_log(PUSH_LOG_WARN,
               "ev=redis_gap channel=%s had=%s:%" PRIu64 " now=%s:%" PRIu64,
               ch->name, cur.epoch, cur.offset, epoch, offset);
      if (r->ev.on_lost) {
        r->ev.on_lost(r->ev.ud, ch->name);
      }
    }
  }
  int rv =
      push_hub_load(r->hub, ch->name, epoch, offset, e, ne, redis_wall_ms());
  ch->seen_off = 0;
  if (rv == 0 && ne > 0 && e[ne - 1].offset == offset) {
    chan_seen(ch, &e[ne - 1]);
  }
  free(e);
  if (rv != 0) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_ERROR);
    return;
  }
  if (chan_apply_buffer(r, ch)) {
    ch->overflow = 0;
    chan_load(ch); /* still a gap: read again */
    return;
  }
  ch->state = CH_LIVE;
  chan_wake(ch, PUSH_REDIS_OK);
}

static void chan_load(rchan *ch) {
  rshard *sh = ch->sh;
  ckeys k;
  redis_ckeys(sh->r, ch->name, &k);
  char count[24], mttl[24], epoch[PUSH_EPOCH_MAX + 1];
  snprintf(count, sizeof count, "%" PRIu32, ch->ns->history_size);
  snprintf(mttl, sizeof mttl, "%" PRIu32, redis_meta_ttl(ch->ns));
  redis_next_epoch(sh->r, epoch);
  const char *argv[] = {"EVALSHA",  sh->sha[S_LOAD], "2",   k.s,
                        k.m,        count,           epoch, mttl,
                        sh->replid, sh->durable};
  size_t lens[] = {7,      40,           1,
                   k.slen, k.slen,       strlen(count),
                   16,     strlen(mttl), strlen(sh->replid),
                   1};
  ch->state = CH_LOADING;
  ch->covered = ch->nbuf;
  if (redis_cmd(&sh->cmd, on_loaded, NULL, ch, 10, argv, lens) != 0) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_DOWN);
    return;
  }
  ch->inflight++;
}

/* The channel of a pub/sub key ("prefix.{channel}"), or NULL. */
static rchan *chan_of_key(push_redis *r, const char *key, size_t klen) {
  size_t pl = strlen(r->prefix);
  if (klen < pl + 3 || memcmp(key, r->prefix, pl) != 0 || key[pl] != '.' ||
      key[pl + 1] != '{' || key[klen - 1] != '}') {
    return NULL;
  }
  return redis_chan_find(r, key + pl + 2, klen - pl - 3);
}

/* A message from pub/sub: "p<offset> <epoch> <ms> <tail>" or "j<push>". */
void redis_chan_message(rshard *sh, const char *key, size_t klen,
                        const char *msg, size_t len) {
  push_redis *r = sh->r;
  rchan *ch = chan_of_key(r, key, klen);
  if (ch == NULL || ch->sh != sh || len < 1) {
    return; /* not followed, or from where it lived before it moved */
  }
  if (msg[0] == 'j') {
    if (ch->state == CH_LIVE) {
      push_hub_broadcast_raw(r->hub, ch->name, msg + 1, len - 1);
    }
    return;
  }
  if (msg[0] != 'p') {
    return;
  }
  rmsg m;
  memset(&m, 0, sizeof m);
  const char *p = msg + 1, *end = msg + len;
  int k = parse_u64(p, (size_t)(end - p), &m.e.offset);
  if (k < 0 || p + k >= end || p[k] != ' ') {
    return;
  }
  p += k + 1;
  const char *sp = memchr(p, ' ', (size_t)(end - p));
  if (sp == NULL || sp - p > PUSH_EPOCH_MAX) {
    return;
  }
  memcpy(m.epoch, p, (size_t)(sp - p));
  p = sp + 1;
  uint64_t t;
  k = parse_u64(p, (size_t)(end - p), &t);
  if (k < 0 || p + k >= end || p[k] != ' ') {
    return;
  }
  m.e.time_ms = (int64_t)t;
  m.e.tail = p + k + 1;
  m.e.tail_len = (size_t)(end - m.e.tail);
  if (ch->state == CH_LIVE) {
    int rv = push_hub_append(r->hub, ch->name, m.epoch, &m.e);
    if (rv == 0) {
      chan_seen(ch, &m.e);
    }
    if (rv != 1) {
      return;
    }
    push_pos pos;
    if (push_hub_pos(r->hub, ch->name, &pos) == 0 &&
        strcmp(pos.epoch, m.epoch) == 0 && m.e.offset <= pos.offset) {
      return; /* seen already */
    }
    /* A gap: keep this one and read what is missing. */
    chan_load(ch);
    if (ch->state != CH_LOADING) {
      return;
    }
  }
  if (ch->state != CH_LOADING && ch->state != CH_SUBSCRIBING) {
    return;
  }
  if (ch->nbuf >= MSG_BUFFER_MAX) {
    ch->overflow = 1; /* the next load reads them from the stream */
    return;
  }
  if (ch->nbuf == ch->capbuf) {
    size_t nc = ch->capbuf ? ch->capbuf * 2 : 8;
    rmsg *nb = realloc(ch->buf, nc * sizeof *nb);
    if (nb == NULL) {
      ch->overflow = 1;
      return;
    }
    ch->buf = nb;
    ch->capbuf = nc;
  }
  m.copy = malloc(m.e.tail_len ? m.e.tail_len : 1);
  if (m.copy == NULL) {
    ch->overflow = 1;
    return;
  }
  memcpy(m.copy, m.e.tail, m.e.tail_len);
  m.e.tail = m.copy;
  ch->buf[ch->nbuf++] = m;
}

/* The server ended a subscription. Unsubscribes we sent ourselves are
 * answered this way too, for channels that are gone, IDLE or, when one
 * was subscribed again straight after, still SUBSCRIBING (its
 * confirmation comes after this answer). Any other: the server dropped
 * it (Redis 7.2 and later do when a slot leaves them), so the channel
 * follows its slot: the map is read again and the channel subscribed
 * where it lives, resynchronizing. */
void redis_chan_unsubscribed(rshard *sh, const char *key, size_t klen) {
  push_redis *r = sh->r;
  rchan *ch = chan_of_key(r, key, klen);
  if (ch == NULL || ch->sh != sh ||
      (ch->state != CH_LOADING && ch->state != CH_LIVE)) {
    return;
  }
  push_log(PUSH_LOG_WARN,
           "ev=redis_unsubscribed channel=%s addr=%s:%s (the slot moved?)",
           ch->name, sh->host, sh->port);
  if (sh->kind == SH_CLUSTER) {
    redis_cluster_refresh(r);
  }
  ch->state = CH_IDLE;
  ch->reload = 0;
  chan_clear_buffer(ch);
  if (ch->refs > 0 || ch->waiters != NULL) {
    chan_subscribe(ch);
  }
}

void redis_chan_move(rchan *ch, rshard *to) {
  rshard *from = ch->sh;
  if (from == to) {
    return;
  }
  push_log(PUSH_LOG_INFO, "ev=redis_moved channel=%s from=%s:%s to=%s:%s",
           ch->name, from->host, from->port, to->host, to->port);
  if (ch->state != CH_IDLE && from->up) {
    ckeys k;
    redis_ckeys(from->r, ch->name, &k);
    const char *argv[2] = {from->sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE",
                           k.ps};
    size_t lens[2] = {strlen(argv[0]), k.len};
    redis_cmd(&from->sub, NULL, NULL, NULL, 2, argv, lens);
  }
  ch->state = CH_IDLE;
  ch->reload = 0;
  chan_clear_buffer(ch);
  ch->sh = to;
  if (ch->refs == 0 && ch->waiters == NULL) {
    return;
  }
  if (to->up) {
    chan_subscribe(ch); /* the waiters wait on */
  } else {
    chan_wake(ch, PUSH_REDIS_DOWN); /* shard_up subscribes it */
  }
}

int redis_chan_reply_fn(redis_reply_fn fn) {
  return fn == on_subscribed || fn == on_loaded || fn == on_fenced;
}

/* ---- the API ---- */
int push_redis_sync(push_redis *r, const char *channel, push_redis_cb cb,
                    void *ud) {
  rchan *ch = chan_get(r, channel);
  if (ch == NULL) {
    return PUSH_REDIS_DOWN;
  }
  push_pos pos;
  if (ch->state == CH_LIVE && push_hub_pos(r->hub, channel, &pos) == 0) {
    ch->refs++;
    return 0;
  }
  if (!ch->sh->up) {
    if (ch->refs == 0 && ch->waiters == NULL && ch->inflight == 0) {
      redis_chan_free(r, ch);
    }
    return PUSH_REDIS_DOWN;
  }
  waiter *w = malloc(sizeof *w);
  if (w == NULL) {
    return PUSH_REDIS_DOWN;
  }
  w->cb = cb;
  w->ud = ud;
  w->next = NULL;
  *ch->wtail = w;
  ch->wtail = &w->next;
  ch->refs++;
  if (ch->state == CH_LIVE) {
    chan_load(ch); /* the hub forgot the channel: load it again */
  } else if (ch->state == CH_IDLE) {
    chan_subscribe(ch);
  }
  return 1;
}

void push_redis_release(push_redis *r, const char *channel) {
  rchan *ch = redis_chan_find(r, channel, strlen(channel));
  if (ch != NULL && ch->refs > 0 && --ch->refs == 0) {
    ch->idle_since = redis_wall_ms();
  }
}

void redis_chan_reap(push_redis *r, int64_t now_ms) {
  /* A client that resubscribes within the linger does not make us load
   * the channel again. */
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b], *next; ch; ch = next) {
      next = ch->next;
      if (ch->refs > 0 && ch->state == CH_IDLE && ch->waiters == NULL &&
          ch->sh->up) {
        /* An error (a failover's CLUSTERDOWN, a migrating slot) left a
         * channel with subscribers behind: follow it again, repairing
         * what they missed. */
        chan_subscribe(ch);
        continue;
      }
      if (ch->refs > 0 || ch->waiters != NULL || ch->inflight > 0 ||
          now_ms - ch->idle_since < CHANNEL_LINGER_MS) {
        continue;
      }
      if (ch->state != CH_IDLE && ch->sh->up) {
        ckeys k;
        redis_ckeys(r, ch->name, &k);
        const char *argv[2] = {ch->sh->sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE",
                               k.ps};
        size_t lens[2] = {strlen(argv[0]), k.len};
        redis_cmd(&ch->sh->sub, NULL, NULL, NULL, 2, argv, lens);
      }
      push_hub_drop_history(r->hub, ch->name);
      redis_chan_free(r, ch);
    }
  }
}

/* ---- publishing ---- */

static void on_published(redis_conn *c, redisReply *reply,
                         const redis_pending *p) {
  (void)c;
  push_redis_reply rep = {.status = PUSH_REDIS_DOWN};
  if (reply != NULL) {
    rep.status = PUSH_REDIS_ERROR;
    if (reply->type == REDIS_REPLY_ARRAY &&
        (reply->elements == 2 || reply->elements == 3) &&
        reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[1]->type == REDIS_REPLY_STRING &&
        reply->element[1]->len <= PUSH_EPOCH_MAX) {
      rep.status = PUSH_REDIS_OK;
      /* An idempotent publish says whether it was a duplicate. */
      rep.duplicate = reply->elements == 3 &&
                      reply->element[2]->type == REDIS_REPLY_INTEGER &&
                      reply->element[2]->integer == 1;
      rep.pos.offset = (uint64_t)reply->element[0]->integer;
      memcpy(rep.pos.epoch, reply->element[1]->str, reply->element[1]->len);
      rep.pos.epoch[reply->element[1]->len] = 0;
      rep.pos.set = 1;
    } else {
      push_log(PUSH_LOG_ERROR, "ev=redis_error op=publish error=\"%s\"",
               reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
    }
  }
  pending_cb(p)(p->ud, &rep);
}

/* Publishes; with idem, through the idempotent script. */
static int publish(push_redis *r, const char *channel, const char *tail,
                   size_t len, const char *idem, uint32_t window_s,
                   push_redis_cb cb, void *ud) {
  rshard *sh = redis_shard_of(r, channel);
  const push_ns *ns = push_hub_ns(r->hub, channel);
  if (sh == NULL || !sh->up || ns == NULL) {
    return PUSH_REDIS_DOWN;
  }
  ckeys k;
  redis_ckeys(r, channel, &k);
  char size[24], ttl[24], mttl[24], epoch[PUSH_EPOCH_MAX + 1];
  snprintf(size, sizeof size, "%" PRIu32, ns->history_size);
  snprintf(ttl, sizeof ttl, "%" PRIu32, ns->history_ttl_s);
  snprintf(mttl, sizeof mttl, "%" PRIu32, redis_meta_ttl(ns));
  redis_next_epoch(r, epoch);
  const char *pubcmd = sh->sharded ? "SPUBLISH" : "PUBLISH";
  const char *argv[] = {"EVALSHA",  sh->sha[S_PUBLISH],
                        "2",        k.s,
                        k.m,        k.ps,
                        tail,       size,
                        ttl,        epoch,
                        mttl,       pubcmd,
                        sh->replid, sh->durable};
  size_t lens[] = {7,
                   40,
                   1,
                   k.slen,
                   k.slen,
                   k.len,
                   len,
                   strlen(size),
                   strlen(ttl),
                   16,
                   strlen(mttl),
                   strlen(pubcmd),
                   strlen(sh->replid),
                   1};
  if (idem == NULL) {
    return redis_cmd(&sh->cmd, on_published, cb, ud, 14, argv, lens) == 0
               ? 1
               : PUSH_REDIS_DOWN;
  }
  /* The key shares the channel's hash tag, so it lives beside it. */
  char ikey[KEY_MAX + PUSH_IDEM_MAX + 4], win[24];
  int il = snprintf(ikey, sizeof ikey, "%s.i.%s", k.ps, idem);
  snprintf(win, sizeof win, "%" PRIu64, (uint64_t)window_s * 1000);
  const char *iargv[16];
  size_t ilens[16];
  iargv[0] = "EVALSHA";
  ilens[0] = 7;
  iargv[1] = sh->sha[S_PUBLISH_IDEM];
  ilens[1] = 40;
  iargv[2] = "3";
  ilens[2] = 1;
  iargv[3] = k.s;
  ilens[3] = k.slen;
  iargv[4] = k.m;
  ilens[4] = k.slen;
  iargv[5] = ikey;
  ilens[5] = (size_t)il;
  for (int i = 5; i < 14; i++) {
    iargv[i + 1] = argv[i];
    ilens[i + 1] = lens[i];
  }
  iargv[15] = win;
  ilens[15] = strlen(win);
  return redis_cmd(&sh->cmd, on_published, cb, ud, 16, iargv, ilens) == 0
             ? 1
             : PUSH_REDIS_DOWN;
}

int push_redis_publish(push_redis *r, const char *channel, const char *tail,
                       size_t len, push_redis_cb cb, void *ud) {
  return publish(r, channel, tail, len, NULL, 0, cb, ud);
}

int push_redis_publish_idem(push_redis *r, const char *channel,
                            const char *tail, size_t len, const char *idem,
                            uint32_t window_s, push_redis_cb cb, void *ud) {
  return publish(r, channel, tail, len, idem, window_s, cb, ud);
}
