/* engine.c - the engine interface's one choice (push_engine_new) and the
 * memory engine: a single node whose hub is the whole truth, so that every
 * call completes at once. Besides the hub it keeps two small tables: the
 * connections per user (user_connection_limit) and the idempotency keys
 * seen within the window (at most idem_max, the oldest forgotten first). */
#include "push/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "push/config.h"

/* A string-keyed chained table: user -> connections, or channel and
 * idempotency key -> the first publication's position. */
typedef struct mentry {
  struct mentry *next;  /* hash chain */
  struct mentry *older; /* idempotency keys: the FIFO of expiry */
  uint32_t hash;
  uint64_t count;     /* users: connections */
  int64_t expires_ms; /* keys: when forgotten */
  push_pos pos;
  char key[];
} mentry;

typedef struct mtable {
  mentry **b;
  size_t nb, n;
} mtable;

typedef struct mem_engine {
  push_engine base;
  uint64_t hkey[2];
  mtable users, keys;
  mentry *oldest, *newest; /* keys in the order they were made */
} mem_engine;

static mem_engine *me_of(push_engine *e) {
  return (mem_engine *)e;
}

static mentry **mt_find(mem_engine *m, mtable *t, const char *key,
                        uint32_t *hash) {
  *hash = push_hash_str(m->hkey, key, strlen(key));
  if (t->nb == 0) {
    return NULL;
  }
  mentry **pp = &t->b[*hash & (t->nb - 1)];
  while (*pp && ((*pp)->hash != *hash || strcmp((*pp)->key, key) != 0)) {
    pp = &(*pp)->next;
  }
  return pp;
}

static mentry *mt_add(mtable *t, const char *key, uint32_t hash) {
  if (t->n + 1 > t->nb) {
    size_t nb = t->nb ? t->nb * 2 : 64;
    mentry **b = calloc(nb, sizeof(*b));
    if (b == NULL) {
      return NULL;
    }
    for (size_t i = 0; i < t->nb; i++) {
      for (mentry *e = t->b[i], *next; e; e = next) {
        next = e->next;
        e->next = b[e->hash & (nb - 1)];
        b[e->hash & (nb - 1)] = e;
      }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
  }
  size_t n = strlen(key);
  mentry *e = calloc(1, sizeof(*e) + n + 1);
  if (e == NULL) {
    return NULL;
  }
  memcpy(e->key, key, n + 1);
  e->hash = hash;
  e->next = t->b[hash & (t->nb - 1)];
  t->b[hash & (t->nb - 1)] = e;
  t->n++;
  return e;
}

static void mt_unlink(mtable *t, mentry **pp) {
  *pp = (*pp)->next;
  t->n--;
}

static void mt_free(mtable *t) {
  for (size_t i = 0; i < t->nb; i++) {
    for (mentry *e = t->b[i], *next; e; e = next) {
      next = e->next;
      free(e);
    }
  }
  free(t->b);
  memset(t, 0, sizeof(*t));
}

static int mem_sync(push_engine *e, const char *channel, push_engine_cb cb,
                    void *ud) {
  (void)e, (void)channel, (void)cb, (void)ud;
  return PUSH_ENGINE_OK;
}

static void mem_release(push_engine *e, const char *channel) {
  (void)e, (void)channel;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Forgets the oldest key (expired, or to make room). */
static void forget_oldest(mem_engine *m) {
  mentry *e = m->oldest;
  uint32_t h;
  mentry **pp = mt_find(m, &m->keys, e->key, &h);
  if (pp != NULL && *pp == e) {
    mt_unlink(&m->keys, pp);
  }
  m->oldest = e->older;
  if (m->oldest == NULL) {
    m->newest = NULL;
  }
  free(e);
}

static void forget_expired(mem_engine *m, int64_t now) {
  while (m->oldest && m->oldest->expires_ms <= now) {
    forget_oldest(m);
  }
}

/* The key of an idempotent publication: channel, a newline (no channel
 * has one), the idempotency key. */
static int idem_key(char *out, size_t cap, const char *channel,
                    const char *idem) {
  int n = snprintf(out, cap, "%s\n%s", channel, idem);
  return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int mem_publish(push_engine *e, const char *channel,
                       const push_publication *p, push_pos *pos,
                       push_engine_cb cb, void *ud) {
  mem_engine *m = me_of(e);
  int64_t now = wall_ms();
  char key[PUSH_CHANNEL_MAX + PUSH_IDEM_MAX + 2];
  mentry **pp = NULL;
  uint32_t h = 0;
  (void)cb, (void)ud;
  if (p->idem && p->idem[0]) {
    forget_expired(m, now);
    if (idem_key(key, sizeof(key), channel, p->idem) != 0) {
      return PUSH_ENGINE_ERROR;
    }
    pp = mt_find(m, &m->keys, key, &h);
    if (pp && *pp) {
      *pos = (*pp)->pos;
      pos->set = 2; /* a duplicate: see push_engine_reply.duplicate */
      return PUSH_ENGINE_OK;
    }
  }
  if (push_hub_publish(e->hub, channel, p->data, p->b64, p->client, p->user,
                       now, pos) != 0) {
    return PUSH_ENGINE_ERROR;
  }
  if (p->idem && p->idem[0]) {
    while (m->keys.n >= e->idem_max && m->oldest) {
      forget_oldest(m);
      e->idem_evicted++;
    }
    mentry *k = mt_add(&m->keys, key, h);
    if (k != NULL) {
      k->pos = *pos;
      k->expires_ms = now + (int64_t)e->idem_window_s * 1000;
      if (m->newest) {
        m->newest->older = k;
      } else {
        m->oldest = k;
      }
      m->newest = k;
    }
  }
  return PUSH_ENGINE_OK;
}

/* The hub sends join and leave pushes itself, for new entries only, so a
 * refresh (announce 0) never reaches it: memory entries do not expire. */
static void mem_presence_add(push_engine *e, const char *channel,
                             const push_member *m, int announce) {
  (void)announce;
  push_hub_presence_add(e->hub, channel, m->client, m->user, m->info);
}

static void mem_presence_remove(push_engine *e, const char *channel,
                                const push_member *m) {
  push_hub_presence_remove(e->hub, channel, m->client);
}

static int mem_presence_get(push_engine *e, const char *channel, push_buf *out,
                            push_engine_cb cb, void *ud) {
  (void)cb, (void)ud;
  return push_hub_presence_json(e->hub, channel, out) == 0 ? PUSH_ENGINE_OK
                                                           : PUSH_ENGINE_ERROR;
}

static int mem_nodes(push_engine *e, push_buf *out, push_engine_cb cb,
                     void *ud) {
  (void)cb, (void)ud;
  if (push_buf_raw(out, "[", 1) != 0) {
    return PUSH_ENGINE_ERROR;
  }
  e->ev.node_json(e->ev.ud, out);
  return push_buf_raw(out, "]", 1) == 0 ? PUSH_ENGINE_OK : PUSH_ENGINE_ERROR;
}

static void mem_tick(push_engine *e, int64_t now_ms) {
  forget_expired(me_of(e), now_ms);
}

/* One node: the cluster's state of a channel is this node's. */
static void mem_occupancy(push_engine *e, const char *channel, int occupied) {
  if (e->ev.on_occupancy) {
    e->ev.on_occupancy(e->ev.ud, channel, occupied);
  }
}

static int mem_control(push_engine *e, const char *msg, size_t len) {
  (void)e, (void)msg, (void)len;
  return PUSH_ENGINE_OK; /* there is no other node */
}

static int mem_user_add(push_engine *e, const char *user, const char *client,
                        uint32_t limit, push_engine_cb cb, void *ud) {
  mem_engine *m = me_of(e);
  uint32_t h;
  (void)client, (void)cb, (void)ud;
  mentry **pp = mt_find(m, &m->users, user, &h);
  mentry *u = pp ? *pp : NULL;
  if (u != NULL && u->count >= limit) {
    return PUSH_ENGINE_ERROR;
  }
  if (u == NULL && (u = mt_add(&m->users, user, h)) == NULL) {
    return PUSH_ENGINE_DOWN;
  }
  u->count++;
  return PUSH_ENGINE_OK;
}

static void mem_user_remove(push_engine *e, const char *user,
                            const char *client) {
  mem_engine *m = me_of(e);
  uint32_t h;
  (void)client;
  mentry **pp = mt_find(m, &m->users, user, &h);
  if (pp && *pp && --(*pp)->count == 0) {
    mentry *u = *pp;
    mt_unlink(&m->users, pp);
    free(u);
  }
}

static void mem_user_refresh(push_engine *e, const char *user,
                             const char *client) {
  (void)e, (void)user, (void)client; /* memory entries do not expire */
}

static int mem_healthy(const push_engine *e, const char **why) {
  (void)e;
  *why = NULL;
  return 1;
}

static int mem_metrics(const push_engine *e, const push_engine_figures *f,
                       push_buf *out) {
  (void)e, (void)f, (void)out;
  return 0;
}

static void mem_shutdown(push_engine *e) {
  (void)e;
}

static void mem_del(push_engine *e) {
  mem_engine *m = me_of(e);
  mt_free(&m->users);
  mt_free(&m->keys); /* frees every key: they are all in this table */
  free(m);
}

static const push_engine_vt memory_vt = {
    .name = "memory",
    .sync = mem_sync,
    .release = mem_release,
    .publish = mem_publish,
    .presence_add = mem_presence_add,
    .presence_remove = mem_presence_remove,
    .presence_get = mem_presence_get,
    .nodes = mem_nodes,
    .tick = mem_tick,
    .healthy = mem_healthy,
    .metrics = mem_metrics,
    .shutdown = mem_shutdown,
    .del = mem_del,
    .occupancy = mem_occupancy,
    .control = mem_control,
    .user_add = mem_user_add,
    .user_remove = mem_user_remove,
    .user_refresh = mem_user_refresh,
};

push_engine *push_engine_memory_new(push_hub *hub,
                                    const push_engine_events *ev) {
  mem_engine *m = calloc(1, sizeof(*m));
  if (m == NULL) {
    return NULL;
  }
  if (getrandom(m->hkey, sizeof(m->hkey), 0) != sizeof(m->hkey)) {
    free(m);
    return NULL;
  }
  push_engine *e = &m->base;
  e->vt = &memory_vt;
  e->idem_window_s = 300;
  e->idem_max = 100000;
  e->hub = hub;
  e->ev = *ev;
  return e;
}

push_engine *push_engine_new(const push_config *cfg, uv_loop_t *loop,
                             push_hub *hub, const char *node,
                             const push_engine_events *ev, char *err,
                             size_t errlen) {
  push_engine *e =
      cfg->engine_redis
          ? push_engine_redis_new(&cfg->redis, loop, hub, node, ev, err, errlen)
          : push_engine_memory_new(hub, ev);
  if (e == NULL) {
    if (!cfg->engine_redis) {
      snprintf(err, errlen, "out of memory");
    }
    return NULL;
  }
  e->idem_window_s = cfg->idempotency_window_s;
  e->idem_max = cfg->idempotency_max_keys;
  return e;
}

void push_engine_del(push_engine *e) {
  if (e != NULL) {
    e->vt->del(e);
  }
}
