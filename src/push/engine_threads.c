/* engine_threads.c - the threads engine: one node on several loops.
 *
 * Every loop (thread) of `herald serve --threads N` has its own hub, its
 * own clients and one of these engines. Each channel has one owner loop,
 * chosen by a hash of its name; the owner's hub is the truth of the
 * channel (epoch, offsets, history, idempotency keys, presence), kept by a
 * memory engine of its own (the inner engine). Every other loop that uses
 * the channel holds a replica in its hub, the way a node does under the
 * Redis engine:
 *
 *   - sync on a loop that does not own the channel sends FOLLOW to the
 *     owner. The owner subscribes a relay (one push_sub per channel it
 *     owns with followers), then answers LOADED with its position and
 *     history; the follower loads them (push_hub_load) and the sync
 *     completes. From then on the owner's flush hands each publication to
 *     the relay, which sends PUB to every follower, in offset order; join
 *     and leave pushes follow the same way (FRAME), in order with them.
 *   - publish, presence, connections per user and occupancy go to the
 *     owner of the channel (or of the user) as messages; replies come back
 *     as messages and complete the call's callback.
 *
 * Messages between two loops travel in one direction in one FIFO
 * (mailbox), so what the owner sends a follower arrives in the order sent:
 * a LOADED is followed by exactly the publications after it. Each loop
 * collects what it sends in an outbox per destination and hands the
 * outboxes over once per loop pass (push_engine_pass, after the hub's
 * flush): one mutex and at most one wake-up per destination per pass,
 * never per publication or per delivery. A follower encodes each
 * publication once for all of its subscribers (push_hub_append).
 */
#include "push/engine.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herald/rt.h"
#include "push/log.h"

enum {
  M_FOLLOW,     /* -> owner: s0 channel */
  M_UNFOLLOW,   /* -> owner: s0 channel */
  M_LOADED,     /* owner ->: s0 channel, epoch, offset, s1 history */
  M_PUB,        /* owner ->: s0 channel, epoch, offset, time, s1 tail */
  M_FRAME,      /* owner ->: s0 channel, s1 a join/leave push */
  M_PUBLISH,    /* -> owner: s0 channel, s1 data, s2 b64, s3 client, s4
                   user, s5 idem; token */
  M_PUBLISHED,  /* owner ->: token, status, epoch, offset, flag duplicate */
  M_PRES_ADD,   /* -> owner: s0 channel, s1 client, s2 user, s3 info; flag
                   announce */
  M_PRES_DEL,   /* -> owner: s0 channel, s1 client, s2 user */
  M_PRES_GET,   /* -> owner: s0 channel; token */
  M_JSON,       /* owner ->: token, status, s0 json */
  M_USER_ADD,   /* -> owner: s0 user, s1 client; limit, token */
  M_USER_ADDED, /* owner ->: token, status, flag allowed */
  M_USER_DEL,   /* -> owner: s0 user, s1 client */
  M_OCCUPANCY,  /* -> owner: s0 channel; flag occupied */
  M_SYNC,       /* -> owner: s0 channel; token */
  M_CURRENT     /* owner ->: s0 channel, epoch, offset; token */
};

#define NSTR 6
#define NO_STR UINT32_MAX /* a string that is NULL */

/* One message between two loops: fixed fields and up to NSTR byte strings
 * packed in data (each NUL-terminated, so they read as C strings). */
typedef struct tmsg {
  struct tmsg *next;
  int kind, from, status, flag;
  uint32_t token, limit;
  uint64_t offset;
  int64_t time_ms;
  char epoch[PUSH_EPOCH_MAX + 1];
  uint32_t off[NSTR], len[NSTR];
  char data[];
} tmsg;

typedef struct tlist {
  tmsg *head, *tail;
} tlist;

/* A loop's incoming FIFO: the only structure two threads touch. */
typedef struct mailbox {
  pthread_mutex_t mu;
  tlist in;
  int woken; /* a wake-up is posted and not yet run */
  herald_loop *loop;
  struct thr_engine *engine;
} mailbox;

struct push_threads {
  int n;
  uint64_t hkey[2]; /* channel and user placement (not secret-dependent
                       for correctness: any fixed function works) */
  pthread_barrier_t ready;
  mailbox box[];
};

/* A channel this loop follows (owned by another loop). */
enum { F_IDLE, F_LOADING, F_LIVE };

typedef struct waiter {
  struct waiter *next;
  push_engine_cb cb;
  void *ud;
} waiter;

/* One entry of a string-keyed table: followed channels, relayed channels
 * (the owner's side, with a bitmask of followers), occupancy counts. */
typedef struct tentry {
  struct tentry *next;
  uint32_t hash;
  int state;         /* followed: F_* */
  int had_replica;   /* followed: loading again over a replica in use */
  uint32_t refs;     /* followed: syncs held; occupancy: loops occupied */
  int64_t idle_ms;   /* followed: when refs dropped to 0 */
  waiter *waiters;   /* followed: syncs waiting for LOADED */
  uint64_t *follows; /* relayed: bit per loop */
  struct thr_engine *engine;
  char key[];
} tentry;

typedef struct ttable {
  tentry **b;
  size_t nb, n;
} ttable;

/* A call waiting for the owner's reply. */
typedef struct pending {
  push_engine_cb cb;
  void *ud;
  uint32_t next_free;
  int used;
} pending;

typedef struct thr_engine {
  push_engine base;
  push_threads *t;
  int self;
  push_engine *inner; /* the memory engine of the channels this loop owns */
  int down;
  ttable followed, relayed, occupied;
  tlist *out; /* per destination */
  pending *calls;
  uint32_t ncalls, free_call;
  push_buf scratch;
  uint64_t sent, received, resyncs;
} thr_engine;

static thr_engine *te_of(push_engine *e) {
  return (thr_engine *)e;
}

/* Followed channels no subscriber has used for this long are let go. */
#define IDLE_UNFOLLOW_MS 5000

/* ---- messages ------------------------------------------------------------ */

static tmsg *msg_new(int kind, const char *const *s, const size_t *n,
                     int count) {
  size_t total = 0;
  for (int i = 0; i < count; i++) {
    total += s[i] ? n[i] + 1 : 0;
  }
  tmsg *m = calloc(1, sizeof(*m) + total);
  if (m == NULL) {
    return NULL;
  }
  m->kind = kind;
  size_t o = 0;
  for (int i = 0; i < NSTR; i++) {
    if (i >= count || s[i] == NULL) {
      m->off[i] = 0;
      m->len[i] = NO_STR;
      continue;
    }
    memcpy(m->data + o, s[i], n[i]);
    m->data[o + n[i]] = 0;
    m->off[i] = (uint32_t)o;
    m->len[i] = (uint32_t)n[i];
    o += n[i] + 1;
  }
  return m;
}

/* A message with C strings (NULL allowed). */
static tmsg *msg_strs(int kind, const char *a, const char *b, const char *c,
                      const char *d) {
  const char *s[4] = {a, b, c, d};
  size_t n[4];
  for (int i = 0; i < 4; i++) {
    n[i] = s[i] ? strlen(s[i]) : 0;
  }
  return msg_new(kind, s, n, 4);
}

static const char *mstr(const tmsg *m, int i) {
  return m->len[i] == NO_STR ? NULL : m->data + m->off[i];
}

static size_t mlen(const tmsg *m, int i) {
  return m->len[i] == NO_STR ? 0 : m->len[i];
}

static void send_to(thr_engine *te, int dst, tmsg *m) {
  if (m == NULL) {
    return; /* out of memory: the call was best effort, or fails below */
  }
  m->from = te->self;
  tlist *l = &te->out[dst];
  if (l->tail) {
    l->tail->next = m;
  } else {
    l->head = m;
  }
  l->tail = m;
  te->sent++;
}

static void list_free(tlist *l) {
  for (tmsg *m = l->head, *next; m; m = next) {
    next = m->next;
    free(m);
  }
  l->head = l->tail = NULL;
}

static void on_wake(void *arg);

/* Hands every outbox to its destination: once per loop pass. */
static void thr_pass(push_engine *e) {
  thr_engine *te = te_of(e);
  e->relays = te->relayed.n;
  e->replicas = te->followed.n;
  for (int d = 0; d < te->t->n; d++) {
    tlist *l = &te->out[d];
    if (l->head == NULL) {
      continue;
    }
    mailbox *mb = &te->t->box[d];
    pthread_mutex_lock(&mb->mu);
    if (mb->in.tail) {
      mb->in.tail->next = l->head;
    } else {
      mb->in.head = l->head;
    }
    mb->in.tail = l->tail;
    int wake = !mb->woken;
    mb->woken = 1;
    pthread_mutex_unlock(&mb->mu);
    l->head = l->tail = NULL;
    if (wake && herald_loop_post(mb->loop, on_wake, mb) != 0) {
      /* The loop is gone or out of memory: its mailbox is freed with the
       * node (push_threads_del). */
      pthread_mutex_lock(&mb->mu);
      mb->woken = 0;
      pthread_mutex_unlock(&mb->mu);
    }
  }
}

/* ---- tables ---------------------------------------------------------------
 */

static tentry **tt_find(thr_engine *te, ttable *t, const char *key,
                        uint32_t *hash) {
  *hash = push_hash_str(te->t->hkey, key, strlen(key));
  if (t->nb == 0) {
    return NULL;
  }
  tentry **pp = &t->b[*hash & (t->nb - 1)];
  while (*pp && ((*pp)->hash != *hash || strcmp((*pp)->key, key) != 0)) {
    pp = &(*pp)->next;
  }
  return pp;
}

static tentry *tt_get(thr_engine *te, ttable *t, const char *key) {
  uint32_t h;
  tentry **pp = tt_find(te, t, key, &h);
  return pp ? *pp : NULL;
}

static tentry *tt_add(thr_engine *te, ttable *t, const char *key) {
  uint32_t hash;
  tentry **pp = tt_find(te, t, key, &hash);
  if (pp && *pp) {
    return *pp;
  }
  if (t->n + 1 > t->nb) {
    size_t nb = t->nb ? t->nb * 2 : 64;
    tentry **b = calloc(nb, sizeof(*b));
    if (b == NULL) {
      return NULL;
    }
    for (size_t i = 0; i < t->nb; i++) {
      for (tentry *x = t->b[i], *next; x; x = next) {
        next = x->next;
        x->next = b[x->hash & (nb - 1)];
        b[x->hash & (nb - 1)] = x;
      }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
  }
  size_t n = strlen(key);
  tentry *x = calloc(1, sizeof(*x) + n + 1);
  if (x == NULL) {
    return NULL;
  }
  memcpy(x->key, key, n + 1);
  x->hash = hash;
  x->engine = te;
  x->next = t->b[hash & (t->nb - 1)];
  t->b[hash & (t->nb - 1)] = x;
  t->n++;
  return x;
}

static void tt_remove(thr_engine *te, ttable *t, tentry *x) {
  uint32_t h;
  tentry **pp = tt_find(te, t, x->key, &h);
  while (pp && *pp && *pp != x) {
    pp = &(*pp)->next;
  }
  if (pp && *pp == x) {
    *pp = x->next;
    t->n--;
  }
  free(x->follows);
  free(x);
}

static void tt_free(ttable *t) {
  for (size_t i = 0; i < t->nb; i++) {
    for (tentry *x = t->b[i], *next; x; x = next) {
      next = x->next;
      for (waiter *w = x->waiters, *wn; w; w = wn) {
        wn = w->next;
        free(w);
      }
      free(x->follows);
      free(x);
    }
  }
  free(t->b);
  memset(t, 0, sizeof(*t));
}

/* ---- placement and pending calls ------------------------------------------
 */

static int owner_of(const thr_engine *te, const char *key) {
  /* FNV-1a: every loop must agree, and it only picks a loop. */
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
    h = (h ^ *p) * 16777619u;
  }
  return (int)(h % (uint32_t)te->t->n);
}

/* Keeps cb for the reply; returns its token, or UINT32_MAX. */
static uint32_t call_add(thr_engine *te, push_engine_cb cb, void *ud) {
  if (te->free_call == UINT32_MAX) {
    uint32_t n = te->ncalls ? te->ncalls * 2 : 64;
    pending *c = realloc(te->calls, n * sizeof(*c));
    if (c == NULL) {
      return UINT32_MAX;
    }
    for (uint32_t i = te->ncalls; i < n; i++) {
      c[i].used = 0;
      c[i].next_free = i + 1 < n ? i + 1 : UINT32_MAX;
    }
    te->calls = c;
    te->free_call = te->ncalls;
    te->ncalls = n;
  }
  uint32_t k = te->free_call;
  te->free_call = te->calls[k].next_free;
  te->calls[k].cb = cb;
  te->calls[k].ud = ud;
  te->calls[k].used = 1;
  return k;
}

/* Takes the call of token (its callback runs once). */
static int call_take(thr_engine *te, uint32_t k, push_engine_cb *cb,
                     void **ud) {
  if (k >= te->ncalls || !te->calls[k].used) {
    return -1;
  }
  *cb = te->calls[k].cb;
  *ud = te->calls[k].ud;
  te->calls[k].used = 0;
  te->calls[k].next_free = te->free_call;
  te->free_call = k;
  return 0;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the owner's side: relays -------------------------------------------- */

static void relay_deliver(void *client, push_pub *pub) {
  tentry *x = client;
  thr_engine *te = x->engine;
  push_pos pos;
  if (push_hub_pos(te->base.hub, x->key, &pos) == 0) {
    /* The pub object is {"offset":N,...}: followers get what follows N. */
    const char *json = pub->frame + pub->json_off;
    size_t i = 10;
    while (i < pub->json_len && json[i] >= '0' && json[i] <= '9') {
      i++;
    }
    const char *s[2] = {x->key, json + i};
    size_t n[2] = {strlen(x->key), pub->json_len - i};
    for (int d = 0; d < te->t->n; d++) {
      if (x->follows[d / 64] >> (d % 64) & 1) {
        tmsg *m = msg_new(M_PUB, s, n, 2);
        if (m) {
          memcpy(m->epoch, pos.epoch, sizeof(m->epoch));
          m->offset = pub->offset;
          m->time_ms = pub->time_ms;
        }
        send_to(te, d, m);
      }
    }
  }
  push_pub_unref(pub);
}

static void relay_frame(void *client, const char *frame, size_t len) {
  tentry *x = client;
  thr_engine *te = x->engine;
  const char *s[2] = {x->key, frame};
  size_t n[2] = {strlen(x->key), len};
  for (int d = 0; d < te->t->n; d++) {
    if (x->follows[d / 64] >> (d % 64) & 1) {
      send_to(te, d, msg_new(M_FRAME, s, n, 2));
    }
  }
}

/* History as records of offset, time, tail length and tail. */
static int put_history(push_buf *b, const push_result *r) {
  for (size_t i = 0; i < r->npubs; i++) {
    const push_pub *p = r->pubs[i];
    const char *json = p->frame + p->json_off;
    size_t k = 10;
    while (k < p->json_len && json[k] >= '0' && json[k] <= '9') {
      k++;
    }
    uint32_t tl = (uint32_t)(p->json_len - k);
    if (push_buf_raw(b, (const char *)&p->offset, sizeof(p->offset)) ||
        push_buf_raw(b, (const char *)&p->time_ms, sizeof(p->time_ms)) ||
        push_buf_raw(b, (const char *)&tl, sizeof(tl)) ||
        push_buf_raw(b, json + k, tl)) {
      return -1;
    }
  }
  return 0;
}

static void owner_follow(thr_engine *te, const tmsg *in) {
  push_hub *hub = te->base.hub;
  const char *channel = mstr(in, 0);
  int64_t now = wall_ms();
  tentry *x = tt_get(te, &te->relayed, channel);
  if (x == NULL) {
    x = tt_add(te, &te->relayed, channel);
    if (x == NULL) {
      return; /* the follower's sync waits; see thr_tick */
    }
    x->follows = calloc(((size_t)te->t->n + 63) / 64, sizeof(uint64_t));
    push_sub relay = {x, relay_deliver, relay_frame};
    push_result r;
    memset(&r, 0, sizeof(r));
    if (x->follows == NULL ||
        push_hub_subscribe(hub, channel, &relay, NULL, now, &r) < 0) {
      tt_remove(te, &te->relayed, x);
      return;
    }
    push_result_free(&r);
  }
  x->follows[in->from / 64] |= (uint64_t)1 << (in->from % 64);
  push_result r;
  memset(&r, 0, sizeof(r));
  push_buf *b = &te->scratch;
  b->len = 0;
  if (push_hub_history(hub, channel, 0, NULL, now, &r) != 0 ||
      put_history(b, &r) != 0) {
    push_result_free(&r);
    return;
  }
  const char *s[2] = {channel, b->p ? b->p : ""};
  size_t n[2] = {strlen(channel), b->len};
  tmsg *m = msg_new(M_LOADED, s, n, 2);
  if (m) {
    memcpy(m->epoch, r.pos.epoch, sizeof(m->epoch));
    m->offset = r.pos.offset;
    m->limit = (uint32_t)r.npubs;
  }
  push_result_free(&r);
  send_to(te, in->from, m);
}

/* A follower asks whether its replica is current: everything the channel
 * has now must reach it before the answer. The hub's flush hands what
 * this pass published to the relay first, so the PUB messages precede the
 * CURRENT in the follower's FIFO. */
static void owner_sync(thr_engine *te, const tmsg *in) {
  const char *channel = mstr(in, 0);
  tentry *x = tt_get(te, &te->relayed, channel);
  if (x == NULL || !(x->follows[in->from / 64] >> (in->from % 64) & 1)) {
    owner_follow(te, in); /* the follower lost it: LOADED answers */
  } else {
    push_hub_flush(te->base.hub);
  }
  push_pos pos;
  memset(&pos, 0, sizeof(pos));
  push_hub_pos(te->base.hub, channel, &pos);
  tmsg *m = msg_strs(M_CURRENT, channel, 0, 0, 0);
  if (m) {
    m->token = in->token;
    memcpy(m->epoch, pos.epoch, sizeof(m->epoch));
    m->offset = pos.offset;
  }
  send_to(te, in->from, m);
}

static void owner_unfollow(thr_engine *te, const tmsg *in) {
  tentry *x = tt_get(te, &te->relayed, mstr(in, 0));
  if (x == NULL) {
    return;
  }
  x->follows[in->from / 64] &= ~((uint64_t)1 << (in->from % 64));
  for (int i = 0; i < (te->t->n + 63) / 64; i++) {
    if (x->follows[i]) {
      return;
    }
  }
  push_hub_unsubscribe(te->base.hub, x->key, x);
  tt_remove(te, &te->relayed, x);
}

static void owner_publish(thr_engine *te, const tmsg *in) {
  push_publication p = {{mstr(in, 1), mlen(in, 1)},
                        {mstr(in, 2), mlen(in, 2)},
                        mstr(in, 3),
                        mstr(in, 4),
                        mstr(in, 5)};
  push_pos pos;
  memset(&pos, 0, sizeof(pos));
  int rv = te->down ? PUSH_ENGINE_DOWN
                    : push_engine_publish(te->inner, mstr(in, 0), &p, &pos,
                                          NULL, NULL);
  tmsg *m = msg_new(M_PUBLISHED, NULL, NULL, 0);
  if (m) {
    m->token = in->token;
    m->status = rv;
    m->flag = pos.set == 2;
    memcpy(m->epoch, pos.epoch, sizeof(m->epoch));
    m->offset = pos.offset;
  }
  send_to(te, in->from, m);
}

static void owner_presence_get(thr_engine *te, const tmsg *in) {
  push_buf *b = &te->scratch;
  b->len = 0;
  int rv = push_engine_presence_get(te->inner, mstr(in, 0), b, NULL, NULL);
  const char *s[1] = {b->p ? b->p : ""};
  size_t n[1] = {rv == PUSH_ENGINE_OK ? b->len : 0};
  tmsg *m = msg_new(M_JSON, s, n, 1);
  if (m) {
    m->token = in->token;
    m->status = rv;
  }
  send_to(te, in->from, m);
}

static void owner_user_add(thr_engine *te, const tmsg *in) {
  int allowed = 0;
  int rv = push_engine_user_add(te->inner, mstr(in, 0), mstr(in, 1), in->limit,
                                &allowed, NULL, NULL);
  tmsg *m = msg_new(M_USER_ADDED, NULL, NULL, 0);
  if (m) {
    m->token = in->token;
    m->status = rv;
    m->flag = allowed;
  }
  send_to(te, in->from, m);
}

/* Occupancy is counted per loop at the channel's owner: the node's word
 * (the inner engine's on_occupancy) comes when the first loop gets a
 * subscriber and when the last one loses its last. */
static void owner_occupancy(thr_engine *te, const char *channel, int occupied) {
  tentry *x = tt_add(te, &te->occupied, channel);
  if (x == NULL) {
    return;
  }
  if (occupied) {
    if (x->refs++ == 0) {
      push_engine_occupancy(te->inner, channel, 1);
    }
  } else if (x->refs > 0 && --x->refs == 0) {
    push_engine_occupancy(te->inner, channel, 0);
  }
  if (x->refs == 0) {
    tt_remove(te, &te->occupied, x);
  }
}

/* ---- the follower's side ---------------------------------------------------
 */

static void wake_waiters(tentry *x, int status) {
  waiter *w = x->waiters;
  x->waiters = NULL;
  push_engine_reply rep;
  memset(&rep, 0, sizeof(rep));
  rep.status = status;
  while (w) {
    waiter *next = w->next;
    if (status == PUSH_ENGINE_OK) {
      x->refs++;
    }
    w->cb(w->ud, &rep);
    free(w);
    w = next;
  }
}

/* Loads what the owner sent. A channel live already (a resync) first gets
 * the publications it lacks, in order; if the owner no longer has them
 * (another epoch, or they left its history), the subscribers are told
 * through on_lost. */
static void follower_loaded(thr_engine *te, const tmsg *in) {
  push_hub *hub = te->base.hub;
  const char *channel = mstr(in, 0);
  tentry *x = tt_get(te, &te->followed, channel);
  if (x == NULL || x->state == F_IDLE) {
    return; /* let go meanwhile: UNFOLLOW is on its way */
  }
  size_t n = in->limit;
  push_ext_pub *e = n ? calloc(n, sizeof(*e)) : NULL;
  const char *p = mstr(in, 1);
  for (size_t i = 0; i < n && e; i++) {
    uint32_t tl;
    memcpy(&e[i].offset, p, 8);
    memcpy(&e[i].time_ms, p + 8, 8);
    memcpy(&tl, p + 16, 4);
    e[i].tail = p + 20;
    e[i].tail_len = tl;
    p += 20 + tl;
  }
  if (n && e == NULL) {
    wake_waiters(x, PUSH_ENGINE_DOWN);
    return;
  }
  push_pos pos;
  int lost = 0;
  if (x->had_replica && push_hub_pos(hub, channel, &pos) == 0) {
    if (strcmp(pos.epoch, in->epoch) != 0) {
      lost = pos.offset > 0;
    } else {
      for (size_t i = 0; i < n; i++) {
        if (e[i].offset > pos.offset &&
            push_hub_append(hub, channel, in->epoch, &e[i]) != 0) {
          lost = 1;
          break;
        }
        if (e[i].offset > pos.offset) {
          pos.offset = e[i].offset;
        }
      }
      lost = lost || pos.offset < in->offset;
    }
  }
  push_hub_flush(hub);
  if (lost && te->base.ev.on_lost) {
    te->base.ev.on_lost(te->base.ev.ud, channel);
  }
  if (push_hub_load(hub, channel, in->epoch, in->offset, e, n, wall_ms()) !=
      0) {
    free(e);
    x->state = F_IDLE;
    wake_waiters(x, PUSH_ENGINE_DOWN);
    return;
  }
  free(e);
  x->state = F_LIVE;
  x->had_replica = 0;
  wake_waiters(x, PUSH_ENGINE_OK);
}

/* Asks the owner for the channel again (a publication that did not follow:
 * the replica was forgotten or missed one). */
static void follower_resync(thr_engine *te, tentry *x) {
  te->resyncs++;
  push_log(PUSH_LOG_DEBUG, "ev=thread_resync thread=%d channel=%s state=%d",
           te->self, x->key, x->state);
  if (x->state == F_LIVE) {
    x->had_replica = 1;
  }
  x->state = F_LOADING;
  send_to(te, owner_of(te, x->key), msg_strs(M_FOLLOW, x->key, 0, 0, 0));
}

static void follower_pub(thr_engine *te, const tmsg *in) {
  push_hub *hub = te->base.hub;
  const char *channel = mstr(in, 0);
  tentry *x = tt_get(te, &te->followed, channel);
  if (x == NULL || x->state != F_LIVE) {
    return; /* a LOADED will bring it */
  }
  push_pos pos;
  if (push_hub_pos(hub, channel, &pos) == 0 &&
      strcmp(pos.epoch, in->epoch) == 0 && in->offset <= pos.offset) {
    return; /* the load had it already */
  }
  push_ext_pub e = {in->offset, in->time_ms, mstr(in, 1), mlen(in, 1)};
  if (push_hub_append(hub, channel, in->epoch, &e) != 0) {
    follower_resync(te, x);
  }
}

static void follower_add_waiter(tentry *x, waiter *w) {
  waiter **pp = &x->waiters;
  while (*pp) {
    pp = &(*pp)->next;
  }
  *pp = w;
}

/* The owner's answer to a sync: the replica is current if it is live and
 * at the owner's position (the PUBs before the answer are applied);
 * otherwise the sync waits for the LOADED a resync brings. */
static void follower_current(thr_engine *te, const tmsg *in) {
  push_engine_cb cb;
  void *ud;
  if (call_take(te, in->token, &cb, &ud) != 0) {
    return;
  }
  push_engine_reply rep;
  memset(&rep, 0, sizeof(rep));
  const char *channel = mstr(in, 0);
  tentry *x = tt_get(te, &te->followed, channel);
  push_pos pos;
  if (x != NULL && x->state == F_LIVE &&
      push_hub_pos(te->base.hub, channel, &pos) == 0 &&
      strcmp(pos.epoch, in->epoch) == 0 && pos.offset >= in->offset) {
    x->refs++;
    rep.status = PUSH_ENGINE_OK;
    cb(ud, &rep);
    return;
  }
  waiter *w = x ? malloc(sizeof(*w)) : NULL;
  if (w == NULL) {
    rep.status = PUSH_ENGINE_DOWN;
    cb(ud, &rep);
    return;
  }
  w->cb = cb;
  w->ud = ud;
  w->next = NULL;
  follower_add_waiter(x, w);
  if (x->state != F_LOADING) {
    follower_resync(te, x);
  }
}

static void follower_frame(thr_engine *te, const tmsg *in) {
  tentry *x = tt_get(te, &te->followed, mstr(in, 0));
  if (x != NULL && x->state == F_LIVE) {
    push_hub_broadcast_raw(te->base.hub, mstr(in, 0), mstr(in, 1), mlen(in, 1));
  }
}

static void reply_call(thr_engine *te, const tmsg *in) {
  push_engine_cb cb;
  void *ud;
  if (call_take(te, in->token, &cb, &ud) != 0) {
    return;
  }
  push_engine_reply rep;
  memset(&rep, 0, sizeof(rep));
  rep.status = in->status;
  switch (in->kind) {
  case M_PUBLISHED:
    if (in->status == PUSH_ENGINE_OK) {
      memcpy(rep.pos.epoch, in->epoch, sizeof(rep.pos.epoch));
      rep.pos.offset = in->offset;
      rep.pos.set = 1;
      rep.duplicate = in->flag;
    }
    break;
  case M_JSON:
    rep.json = mstr(in, 0);
    rep.len = mlen(in, 0);
    break;
  case M_USER_ADDED:
    /* ERROR from the owner's user_add wrapper is folded into allowed. */
    rep.allowed = in->flag;
    break;
  }
  cb(ud, &rep);
}

static void handle(thr_engine *te, tmsg *m) {
  push_member mem = {mstr(m, 1), mstr(m, 2), mstr(m, 3)};
  te->received++;
  switch (m->kind) {
  case M_FOLLOW:
    owner_follow(te, m);
    break;
  case M_UNFOLLOW:
    owner_unfollow(te, m);
    break;
  case M_LOADED:
    follower_loaded(te, m);
    break;
  case M_PUB:
    follower_pub(te, m);
    break;
  case M_FRAME:
    follower_frame(te, m);
    break;
  case M_PUBLISH:
    owner_publish(te, m);
    break;
  case M_PRES_ADD:
    push_engine_presence_add(te->inner, mstr(m, 0), &mem, m->flag);
    break;
  case M_PRES_DEL:
    push_engine_presence_remove(te->inner, mstr(m, 0), &mem);
    break;
  case M_PRES_GET:
    owner_presence_get(te, m);
    break;
  case M_USER_ADD:
    owner_user_add(te, m);
    break;
  case M_USER_DEL:
    push_engine_user_remove(te->inner, mstr(m, 0), mstr(m, 1));
    break;
  case M_OCCUPANCY:
    owner_occupancy(te, mstr(m, 0), m->flag);
    break;
  case M_SYNC:
    owner_sync(te, m);
    break;
  case M_CURRENT:
    follower_current(te, m);
    break;

  default:
    reply_call(te, m);
  }
}

/* On the loop's thread: everything the mailbox holds, in order. */
static void on_wake(void *arg) {
  mailbox *mb = arg;
  pthread_mutex_lock(&mb->mu);
  tmsg *m = mb->in.head;
  mb->in.head = mb->in.tail = NULL;
  mb->woken = 0;
  pthread_mutex_unlock(&mb->mu);
  thr_engine *te = mb->engine;
  while (m) {
    tmsg *next = m->next;
    if (te != NULL) {
      handle(te, m);
    }
    free(m);
    m = next;
  }
}

/* ---- the interface ----------------------------------------------------------
 */

static int thr_sync(push_engine *e, const char *channel, push_engine_cb cb,
                    void *ud) {
  thr_engine *te = te_of(e);
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  int owner = owner_of(te, channel);
  if (owner == te->self) {
    return push_engine_sync(te->inner, channel, cb, ud);
  }
  tentry *x = tt_add(te, &te->followed, channel);
  if (x == NULL) {
    return PUSH_ENGINE_DOWN;
  }
  push_pos pos;
  if (x->state == F_LIVE && push_hub_pos(e->hub, channel, &pos) == 0) {
    /* Live, but maybe behind what the client saw on another loop: one
     * round trip to the owner makes it current (follower_current). */
    uint32_t k = call_add(te, cb, ud);
    tmsg *m = k == UINT32_MAX ? NULL : msg_strs(M_SYNC, channel, 0, 0, 0);
    if (m == NULL) {
      if (k != UINT32_MAX) {
        call_take(te, k, &cb, &ud);
      }
      return PUSH_ENGINE_DOWN;
    }
    m->token = k;
    send_to(te, owner, m);
    return PUSH_ENGINE_PENDING;
  }
  waiter *w = malloc(sizeof(*w));
  if (w == NULL) {
    return PUSH_ENGINE_DOWN;
  }
  w->cb = cb;
  w->ud = ud;
  w->next = NULL;
  follower_add_waiter(x, w);
  if (x->state != F_LOADING) {
    follower_resync(te, x);
  }
  return PUSH_ENGINE_PENDING;
}

static void thr_release(push_engine *e, const char *channel) {
  thr_engine *te = te_of(e);
  if (owner_of(te, channel) == te->self) {
    push_engine_release(te->inner, channel);
    return;
  }
  tentry *x = tt_get(te, &te->followed, channel);
  if (x != NULL && x->refs > 0 && --x->refs == 0) {
    x->idle_ms = wall_ms();
  }
}

static int thr_publish(push_engine *e, const char *channel,
                       const push_publication *p, push_pos *pos,
                       push_engine_cb cb, void *ud) {
  thr_engine *te = te_of(e);
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  int owner = owner_of(te, channel);
  if (owner == te->self) {
    return push_engine_publish(te->inner, channel, p, pos, cb, ud);
  }
  uint32_t k = call_add(te, cb, ud);
  if (k == UINT32_MAX) {
    return PUSH_ENGINE_ERROR;
  }
  const char *s[6] = {channel,   p->data.p, p->b64.p,
                      p->client, p->user,   p->idem};
  size_t n[6] = {strlen(channel),
                 p->data.n,
                 p->b64.n,
                 p->client ? strlen(p->client) : 0,
                 p->user ? strlen(p->user) : 0,
                 p->idem ? strlen(p->idem) : 0};
  tmsg *m = msg_new(M_PUBLISH, s, n, 6);
  if (m == NULL) {
    void *u;
    push_engine_cb c;
    call_take(te, k, &c, &u);
    return PUSH_ENGINE_ERROR;
  }
  m->token = k;
  send_to(te, owner, m);
  return PUSH_ENGINE_PENDING;
}

static void thr_presence_add(push_engine *e, const char *channel,
                             const push_member *m, int announce) {
  thr_engine *te = te_of(e);
  int owner = owner_of(te, channel);
  if (owner == te->self) {
    push_engine_presence_add(te->inner, channel, m, announce);
    return;
  }
  tmsg *x = msg_strs(M_PRES_ADD, channel, m->client, m->user, m->info);
  if (x) {
    x->flag = announce;
  }
  send_to(te, owner, x);
}

static void thr_presence_remove(push_engine *e, const char *channel,
                                const push_member *m) {
  thr_engine *te = te_of(e);
  int owner = owner_of(te, channel);
  if (owner == te->self) {
    push_engine_presence_remove(te->inner, channel, m);
    return;
  }
  send_to(te, owner, msg_strs(M_PRES_DEL, channel, m->client, m->user, NULL));
}

static int thr_presence_get(push_engine *e, const char *channel, push_buf *out,
                            push_engine_cb cb, void *ud) {
  thr_engine *te = te_of(e);
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  int owner = owner_of(te, channel);
  if (owner == te->self) {
    return push_engine_presence_get(te->inner, channel, out, cb, ud);
  }
  uint32_t k = call_add(te, cb, ud);
  if (k == UINT32_MAX) {
    return PUSH_ENGINE_ERROR;
  }
  tmsg *m = msg_strs(M_PRES_GET, channel, 0, 0, 0);
  if (m == NULL) {
    void *u;
    push_engine_cb c;
    call_take(te, k, &c, &u);
    return PUSH_ENGINE_ERROR;
  }
  m->token = k;
  send_to(te, owner, m);
  return PUSH_ENGINE_PENDING;
}

static int thr_nodes(push_engine *e, push_buf *out, push_engine_cb cb,
                     void *ud) {
  return push_engine_nodes(te_of(e)->inner, out, cb, ud);
}

static void thr_tick(push_engine *e, int64_t now_ms) {
  thr_engine *te = te_of(e);
  push_engine_tick(te->inner, now_ms);
  /* Let go of channels no one here has used for a while. */
  for (size_t i = 0; i < te->followed.nb; i++) {
    for (tentry *x = te->followed.b[i], *next; x; x = next) {
      next = x->next;
      if (x->refs == 0 && x->waiters == NULL &&
          now_ms - x->idle_ms >= IDLE_UNFOLLOW_MS) {
        if (x->state != F_IDLE) {
          send_to(te, owner_of(te, x->key),
                  msg_strs(M_UNFOLLOW, x->key, 0, 0, 0));
        }
        push_hub_drop_history(e->hub, x->key);
        tt_remove(te, &te->followed, x);
      }
    }
  }
}

static int thr_healthy(const push_engine *e, const char **why) {
  (void)e;
  *why = NULL;
  return 1;
}

/* Nothing of its own: /metrics sums the loops' figures (node.c). */
static int thr_metrics(const push_engine *e, push_buf *out) {
  (void)e, (void)out;
  return 0;
}

static void thr_shutdown(push_engine *e) {
  thr_engine *te = te_of(e);
  te->down = 1;
  for (size_t i = 0; i < te->followed.nb; i++) {
    for (tentry *x = te->followed.b[i]; x; x = x->next) {
      wake_waiters(x, PUSH_ENGINE_DOWN);
    }
  }
  push_engine_reply rep;
  memset(&rep, 0, sizeof(rep));
  rep.status = PUSH_ENGINE_DOWN;
  for (uint32_t k = 0; k < te->ncalls; k++) {
    push_engine_cb cb;
    void *ud;
    if (te->calls[k].used && call_take(te, k, &cb, &ud) == 0) {
      cb(ud, &rep);
    }
  }
  push_engine_shutdown(te->inner);
}

static void thr_del(push_engine *e) {
  thr_engine *te = te_of(e);
  mailbox *mb = &te->t->box[te->self];
  pthread_mutex_lock(&mb->mu);
  mb->engine = NULL;
  pthread_mutex_unlock(&mb->mu);
  push_engine_del(te->inner);
  tt_free(&te->followed);
  tt_free(&te->relayed);
  tt_free(&te->occupied);
  for (int d = 0; d < te->t->n; d++) {
    list_free(&te->out[d]);
  }
  free(te->out);
  free(te->calls);
  push_buf_free(&te->scratch);
  free(te);
}

static void thr_occupancy(push_engine *e, const char *channel, int occupied) {
  thr_engine *te = te_of(e);
  int owner = owner_of(te, channel);
  if (owner == te->self) {
    owner_occupancy(te, channel, occupied);
    return;
  }
  tmsg *m = msg_strs(M_OCCUPANCY, channel, 0, 0, 0);
  if (m) {
    m->flag = occupied;
  }
  send_to(te, owner, m);
}

/* The node's other loops get the API's control messages from the server
 * itself (push_node_each), with a count of what they touched. */
static int thr_control(push_engine *e, const char *msg, size_t len) {
  return push_engine_control(te_of(e)->inner, msg, len);
}

static int thr_user_add(push_engine *e, const char *user, const char *client,
                        uint32_t limit, push_engine_cb cb, void *ud) {
  thr_engine *te = te_of(e);
  int owner = owner_of(te, user);
  if (owner == te->self) {
    return te->inner->vt->user_add(te->inner, user, client, limit, cb, ud);
  }
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  uint32_t k = call_add(te, cb, ud);
  tmsg *m = k == UINT32_MAX ? NULL : msg_strs(M_USER_ADD, user, client, 0, 0);
  if (m == NULL) {
    void *u;
    push_engine_cb c;
    if (k != UINT32_MAX) {
      call_take(te, k, &c, &u);
    }
    return PUSH_ENGINE_DOWN;
  }
  m->token = k;
  m->limit = limit;
  send_to(te, owner, m);
  return PUSH_ENGINE_PENDING;
}

static void thr_user_remove(push_engine *e, const char *user,
                            const char *client) {
  thr_engine *te = te_of(e);
  int owner = owner_of(te, user);
  if (owner == te->self) {
    push_engine_user_remove(te->inner, user, client);
    return;
  }
  send_to(te, owner, msg_strs(M_USER_DEL, user, client, 0, 0));
}

static void thr_user_refresh(push_engine *e, const char *user,
                             const char *client) {
  (void)e, (void)user, (void)client; /* memory entries do not expire */
}

static const push_engine_vt threads_vt = {
    .name = "memory",
    .sync = thr_sync,
    .release = thr_release,
    .publish = thr_publish,
    .presence_add = thr_presence_add,
    .presence_remove = thr_presence_remove,
    .presence_get = thr_presence_get,
    .nodes = thr_nodes,
    .tick = thr_tick,
    .healthy = thr_healthy,
    .metrics = thr_metrics,
    .shutdown = thr_shutdown,
    .del = thr_del,
    .occupancy = thr_occupancy,
    .control = thr_control,
    .user_add = thr_user_add,
    .user_remove = thr_user_remove,
    .user_refresh = thr_user_refresh,
    .pass = thr_pass,
};

int push_engine_relayed(push_engine *e, const char *channel) {
  if (e == NULL || e->vt != &threads_vt) {
    return 0;
  }
  thr_engine *te = te_of(e);
  return tt_get(te, &te->relayed, channel) != NULL;
}

/* ---- the node
 * ----------------------------------------------------------------- */

push_threads *push_threads_new(int n) {
  if (n < 1 || n > PUSH_THREADS_MAX) {
    return NULL;
  }
  push_threads *t = calloc(1, sizeof(*t) + (size_t)n * sizeof(mailbox));
  if (t == NULL) {
    return NULL;
  }
  t->n = n;
  if (pthread_barrier_init(&t->ready, NULL, (unsigned)n) != 0) {
    free(t);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    pthread_mutex_init(&t->box[i].mu, NULL);
  }
  return t;
}

void push_threads_del(push_threads *t) {
  if (t == NULL) {
    return;
  }
  for (int i = 0; i < t->n; i++) {
    list_free(&t->box[i].in);
    pthread_mutex_destroy(&t->box[i].mu);
  }
  pthread_barrier_destroy(&t->ready);
  free(t);
}

void push_threads_wait(push_threads *t) {
  pthread_barrier_wait(&t->ready);
}

push_engine *push_engine_threads_new(push_threads *t, int self,
                                     herald_loop *loop, push_engine *inner,
                                     const push_engine_events *ev) {
  thr_engine *te = calloc(1, sizeof(*te));
  if (te == NULL || (te->out = calloc((size_t)t->n, sizeof(tlist))) == NULL) {
    free(te);
    return NULL;
  }
  te->t = t;
  te->self = self;
  te->inner = inner;
  te->free_call = UINT32_MAX;
  push_engine *e = &te->base;
  e->vt = &threads_vt;
  e->hub = inner->hub;
  e->ev = *ev;
  e->presence_refresh_ms = inner->presence_refresh_ms;
  e->idem_window_s = inner->idem_window_s;
  e->idem_max = inner->idem_max;
  mailbox *mb = &t->box[self];
  pthread_mutex_lock(&mb->mu);
  mb->loop = loop;
  mb->engine = te;
  pthread_mutex_unlock(&mb->mu);
  return e;
}
