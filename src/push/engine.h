/* engine.h - where channels live: the one interface between the push server
 * and its engines.
 *
 * The server keeps every channel it serves in its hub (push.h): subscribers,
 * history, presence of its own clients. An engine decides where the truth
 * of a channel is and keeps the hub's copy current:
 *
 *   - the memory engine (engine.c): the hub is the truth; every call
 *     completes at once;
 *   - the Redis engine (engine_redis.c over redis.c): Redis is the truth and
 *     the hub holds a replica of the channels this node uses; calls that
 *     need Redis complete later, through a callback.
 *
 * The server never asks which engine it runs on: it calls these functions
 * and handles the three outcomes every call can have (done now, pending,
 * unavailable). Only push_engine_new() looks at the configuration.
 *
 * Every engine runs on the loop that created it; none of these functions
 * may be called from another thread. With several loops (`--threads N`)
 * each loop has its own hub and its own threads engine (engine_threads.c),
 * and the threads engines of a node talk to each other by messages.
 */
#ifndef HERALD_PUSH_ENGINE_H
#define HERALD_PUSH_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "herald/rt.h"
#include "push/push.h"

/* The outcome of a call: returned, or given to its callback. */
enum {
  PUSH_ENGINE_OK = 0,      /* done (returned: done now, no callback) */
  PUSH_ENGINE_PENDING = 1, /* returned: the callback will be called once */
  PUSH_ENGINE_DOWN = -1,   /* unavailable (Redis unreachable, shut down) */
  PUSH_ENGINE_ERROR = -2   /* refused (out of memory, an error reply) */
};

typedef struct push_engine_reply {
  int status;       /* PUSH_ENGINE_OK, _DOWN or _ERROR */
  push_pos pos;     /* publish: the new position */
  int duplicate;    /* publish: an idempotency_key seen within the window:
                       pos is the first publication's, nothing was made */
  int allowed;      /* user_add: 1 when under the limit (entry added) */
  const char *json; /* presence, nodes: a JSON text (valid during the call) */
  size_t len;
} push_engine_reply;

typedef void (*push_engine_cb)(void *ud, const push_engine_reply *rep);

/* What an engine tells the server. */
typedef struct push_engine_events {
  /* Channel subscribers missed publications that the engine no longer
   * holds: they must be told (the server disconnects them with 3010 so that
   * they resubscribe and learn "recovered": false). */
  void (*on_lost)(void *ud, const char *channel);
  /* Writes this node's entry for /api/info (a JSON object). */
  void (*node_json)(void *ud, push_buf *b);
  void *ud;
  /* channel became occupied (1: its first subscriber on any node) or
   * vacated (0: its last one left), decided once for the whole cluster
   * (push_engine_occupancy). May be NULL. */
  void (*on_occupancy)(void *ud, const char *channel, int occupied);
  /* A message another node broadcast with push_engine_control (the
   * memory engine has no other node). May be NULL. */
  void (*on_control)(void *ud, const char *msg, size_t len);
} push_engine_events;

/* A client as presence stores it. */
typedef struct push_member {
  const char *client; /* the client id, unique among the nodes */
  const char *user;
  const char *info; /* raw JSON, or NULL */
} push_member;

/* One publication to make: exactly one of data and b64 is set (the other
 * has p == NULL); client and user may be NULL (published by the API). */
typedef struct push_publication {
  push_json data, b64;
  const char *client, *user;
  /* An idempotency_key, or NULL/"": a publication to the same channel with
   * the same key within the engine's idempotency window publishes nothing
   * and answers the first one's position (reply.duplicate). */
  const char *idem;
} push_publication;

typedef struct push_engine push_engine;

/* An engine's own figures, for /metrics: with several loops each loop's
 * are taken on its own thread and combined (node.c): sums added, events
 * every loop sees for itself (a failover) as the most any loop saw, flags
 * ANDed (what holds on every loop). What each slot means is the engine's. */
#define PUSH_ENGINE_NFIG 8
typedef struct push_engine_figures {
  uint64_t sum[PUSH_ENGINE_NFIG]; /* counters and gauges: added */
  uint64_t max[PUSH_ENGINE_NFIG]; /* the most any loop saw */
  uint64_t all;                   /* bits: ANDed */
} push_engine_figures;

/* The operations of one engine. Each returns what its wrapper below says. */
typedef struct push_engine_vt {
  const char *name; /* "memory", "redis": for /health and the log */
  int (*sync)(push_engine *e, const char *channel, push_engine_cb cb, void *ud);
  void (*release)(push_engine *e, const char *channel);
  int (*publish)(push_engine *e, const char *channel, const push_publication *p,
                 push_pos *pos, push_engine_cb cb, void *ud);
  void (*presence_add)(push_engine *e, const char *channel,
                       const push_member *m, int announce);
  void (*presence_remove)(push_engine *e, const char *channel,
                          const push_member *m);
  int (*presence_get)(push_engine *e, const char *channel, push_buf *out,
                      push_engine_cb cb, void *ud);
  int (*nodes)(push_engine *e, push_buf *out, push_engine_cb cb, void *ud);
  void (*tick)(push_engine *e, int64_t now_ms);
  int (*healthy)(const push_engine *e, const char **why);
  /* f: the figures to write (a node's, combined), or NULL: e's own. */
  int (*metrics)(const push_engine *e, const push_engine_figures *f,
                 push_buf *out);
  /* Optional (NULL: none): e's figures, for push_engine_metrics. */
  void (*figures)(const push_engine *e, push_engine_figures *f);
  /* Optional (NULL: nothing to say): the engine's state as a JSON object,
   * for /health and /api/info. */
  int (*describe)(const push_engine *e, push_buf *out);
  void (*shutdown)(push_engine *e);
  void (*del)(push_engine *e);
  void (*occupancy)(push_engine *e, const char *channel, int occupied);
  int (*control)(push_engine *e, const char *msg, size_t len);
  /* OK: counted now; ERROR: refused now (limit reached); PENDING; DOWN. */
  int (*user_add)(push_engine *e, const char *user, const char *client,
                  uint32_t limit, push_engine_cb cb, void *ud);
  void (*user_remove)(push_engine *e, const char *user, const char *client);
  void (*user_refresh)(push_engine *e, const char *user, const char *client);
  /* Optional (NULL: nothing to do): called once per loop pass, after the
   * hub's flush (the threads engine hands its messages over there). */
  void (*pass)(push_engine *e);
} push_engine_vt;

/* The part every engine shares; an engine's own struct starts with it. */
struct push_engine {
  const push_engine_vt *vt;
  push_hub *hub;
  push_engine_events ev;
  /* Presence entries expire unless refreshed this often (push_engine
   * presence_add with announce 0 for each entry); 0: they never expire. */
  uint32_t presence_refresh_ms;
  /* Idempotent publishing (push_publication.idem): keys are remembered
   * this long; the memory engine keeps at most idem_max of them (the
   * oldest are forgotten first, counted in idem_evicted). */
  uint32_t idem_window_s;
  uint32_t idem_max;
  uint64_t idem_evicted;
  /* The threads engine: subscriptions of its relays in the hub, and
   * channels in the hub that are replicas (for node-wide counts). */
  size_t relays, replicas;
  /* 1 when the engine's store is shared by every loop and node (Redis):
   * a threads engine over it sends only a channel's replica business to
   * the channel's owner loop and makes every other call (publish,
   * presence, users, control, nodes) on its own loop's engine. */
  int shared;
};

struct push_config;

/*
 * Creates the engine the configuration names (cfg->engine_redis), on loop,
 * keeping hub current. node: this node's name, unique among the nodes.
 * Returns NULL with a message in err (bad Redis address, TLS setup, out of
 * memory). hub, cfg and ev's ud must outlive the engine.
 */
push_engine *push_engine_new(const struct push_config *cfg, uv_loop_t *loop,
                             push_hub *hub, const char *node,
                             const push_engine_events *ev, char *err,
                             size_t errlen);

/* The two engines' constructors (push_engine_new calls them; tests may
 * too). The Redis engine copies cfg and starts connecting. */
push_engine *push_engine_memory_new(push_hub *hub,
                                    const push_engine_events *ev);
struct push_redis_config;
push_engine *push_engine_redis_new(const struct push_redis_config *cfg,
                                   uv_loop_t *loop, push_hub *hub,
                                   const char *node,
                                   const push_engine_events *ev, char *err,
                                   size_t errlen);

/*
 * Makes the hub's copy of channel current and keeps it so, holding one
 * reference that push_engine_release drops. Returns PUSH_ENGINE_OK when it
 * already is (reference taken, cb not called), PUSH_ENGINE_PENDING when cb
 * will be called once (the reference is kept only if it gets
 * PUSH_ENGINE_OK), or PUSH_ENGINE_DOWN (no reference).
 */
static inline int push_engine_sync(push_engine *e, const char *channel,
                                   push_engine_cb cb, void *ud) {
  return e->vt->sync(e, channel, cb, ud);
}

static inline void push_engine_release(push_engine *e, const char *channel) {
  e->vt->release(e, channel);
}

/*
 * Publishes p to channel (its namespace must exist: push_hub_ns). Returns
 * PUSH_ENGINE_OK with the position in *pos (cb not called),
 * PUSH_ENGINE_PENDING (cb gets the position or the failure),
 * PUSH_ENGINE_DOWN, or PUSH_ENGINE_ERROR (out of memory). The publication's
 * bytes are copied before the call returns. A duplicate (p->idem seen
 * within the window) is PUSH_ENGINE_OK with pos->set == 2, or a reply with
 * duplicate set: the first publication's position, nothing published.
 */
static inline int push_engine_publish(push_engine *e, const char *channel,
                                      const push_publication *p, push_pos *pos,
                                      push_engine_cb cb, void *ud) {
  return e->vt->publish(e, channel, p, pos, cb, ud);
}

/* Presence of m in channel. announce: send the join push to the channel's
 * subscribers (on every node) if the entry is new and the namespace has
 * join_leave; 0 when only refreshing. Best effort: an unavailable engine
 * drops the call (the entry is refreshed later or expires). */
static inline void push_engine_presence_add(push_engine *e, const char *channel,
                                            const push_member *m,
                                            int announce) {
  e->vt->presence_add(e, channel, m, announce);
}

/* Removes m's entry; the leave push goes out if the namespace has
 * join_leave and the entry was there. Best effort, as above. */
static inline void push_engine_presence_remove(push_engine *e,
                                               const char *channel,
                                               const push_member *m) {
  e->vt->presence_remove(e, channel, m);
}

/* Writes {"clients":{...}} of channel: into out with PUSH_ENGINE_OK, or to
 * cb (rep->json) with PUSH_ENGINE_PENDING; or PUSH_ENGINE_DOWN / _ERROR. */
static inline int push_engine_presence_get(push_engine *e, const char *channel,
                                           push_buf *out, push_engine_cb cb,
                                           void *ud) {
  return e->vt->presence_get(e, channel, out, cb, ud);
}

/* Writes the live nodes' entries as a JSON array, like presence_get. */
static inline int push_engine_nodes(push_engine *e, push_buf *out,
                                    push_engine_cb cb, void *ud) {
  return e->vt->nodes(e, out, cb, ud);
}

/* Call about once a second: heartbeats, health checks, idle channels. */
static inline void push_engine_tick(push_engine *e, int64_t now_ms) {
  e->vt->tick(e, now_ms);
}

/* 1 when the engine can serve every channel; else 0 and *why says what is
 * wrong (a static string). */
static inline int push_engine_healthy(const push_engine *e, const char **why) {
  return e->vt->healthy(e, why);
}

/* Appends the engine's own Prometheus metrics to out: from f (a node's
 * figures, combined over its loops by push_engine_figures_add) or, when
 * NULL, e's own. Returns 0 or -1. */
static inline int push_engine_metrics(const push_engine *e,
                                      const push_engine_figures *f,
                                      push_buf *out) {
  return e->vt->metrics(e, f, out);
}

/* e's own figures into f (zeros and all bits set for an engine without). */
static inline void push_engine_figures_get(const push_engine *e,
                                           push_engine_figures *f) {
  memset(f, 0, sizeof(*f));
  f->all = UINT64_MAX;
  if (e != NULL && e->vt->figures != NULL) {
    e->vt->figures(e, f);
  }
}

/* Adds another loop's figures to f. */
static inline void push_engine_figures_add(push_engine_figures *f,
                                           const push_engine_figures *g) {
  for (int i = 0; i < PUSH_ENGINE_NFIG; i++) {
    f->sum[i] += g->sum[i];
    f->max[i] = g->max[i] > f->max[i] ? g->max[i] : f->max[i];
  }
  f->all &= g->all;
}

/* Appends ,"NAME":{...} to a JSON object being written, NAME being the
 * engine's (vt->name) and {...} its state (Redis: the server each shard
 * uses now, failovers seen); nothing for an engine without one. Returns
 * 0 or -1 (out of memory). */
static inline int push_engine_describe(const push_engine *e, push_buf *out) {
  if (e == NULL || e->vt->describe == NULL) {
    return 0;
  }
  return push_buf_raw(out, ",\"", 2) ||
                 push_buf_raw(out, e->vt->name, strlen(e->vt->name)) ||
                 push_buf_raw(out, "\":", 2) || e->vt->describe(e, out)
             ? -1
             : 0;
}

/* Stops serving: from now on calls that need the engine's store return
 * PUSH_ENGINE_DOWN; pending callbacks are called with PUSH_ENGINE_DOWN
 * before this returns. Presence to be removed must be removed before. */
static inline void push_engine_shutdown(push_engine *e) {
  e->vt->shutdown(e);
}

/* This node's first subscriber of channel came (occupied 1) or its last
 * one left (0). The engine calls ev.on_occupancy when that changes the
 * channel's state in the whole cluster, once for the cluster: the memory
 * engine at once; the Redis engine when Redis has counted the nodes that
 * have subscribers (best effort: unavailable, nothing is announced). */
static inline void push_engine_occupancy(push_engine *e, const char *channel,
                                         int occupied) {
  e->vt->occupancy(e, channel, occupied);
}

/* Sends msg (at most 64 KiB) to every other node's ev.on_control. Returns
 * PUSH_ENGINE_OK (sent, or no other node can exist) or PUSH_ENGINE_DOWN. */
static inline int push_engine_control(push_engine *e, const char *msg,
                                      size_t len) {
  return e->vt->control(e, msg, len);
}

/* Counts client as one of user's connections, cluster-wide, if user has
 * fewer than limit: the reply's allowed says whether it did. Returns
 * PUSH_ENGINE_OK (decided now: *allowed set), PUSH_ENGINE_PENDING (cb gets
 * status and allowed), or PUSH_ENGINE_DOWN. */
static inline int push_engine_user_add(push_engine *e, const char *user,
                                       const char *client, uint32_t limit,
                                       int *allowed, push_engine_cb cb,
                                       void *ud) {
  int rv = e->vt->user_add(e, user, client, limit, cb, ud);
  if (rv == PUSH_ENGINE_OK) {
    *allowed = 1;
  } else if (rv == PUSH_ENGINE_ERROR) {
    *allowed = 0;
    rv = PUSH_ENGINE_OK;
  }
  return rv;
}

/* The connection is gone (best effort, like presence). */
static inline void push_engine_user_remove(push_engine *e, const char *user,
                                           const char *client) {
  e->vt->user_remove(e, user, client);
}

/* Keeps a live connection counted (entries expire like presence entries,
 * so a node that dies frees its users' places). */
static inline void push_engine_user_refresh(push_engine *e, const char *user,
                                            const char *client) {
  e->vt->user_refresh(e, user, client);
}

/* Once per loop pass, after push_hub_flush: an engine that batches work
 * per pass (the threads engine) does it now. */
static inline void push_engine_pass(push_engine *e) {
  if (e->vt->pass != NULL) {
    e->vt->pass(e);
  }
}

/* ---- one node on several loops (engine_threads.c) ---- */

/* What the loops of one node share: a mailbox per loop. */
typedef struct push_threads push_threads;

#define PUSH_THREADS_MAX 256

/* For n loops (1..PUSH_THREADS_MAX). Returns NULL when out of memory or n
 * is out of range. Free it with push_threads_del once every loop's engine
 * is freed and no loop runs. */
push_threads *push_threads_new(int n);
void push_threads_del(push_threads *t);

/* Waits until all n loops have called it: each loop calls it once, after
 * push_engine_threads_new, before it serves anyone (messages may then go
 * to any loop). */
void push_threads_wait(push_threads *t);

/*
 * The engine of loop self (0..n-1) of t, running on loop. inner: the
 * engine of this loop's hub (taken: freed with this engine), made with
 * the events push_engine_threads_events gave; it holds the channels (and
 * with the memory engine the users) this loop owns. Each channel is owned
 * by one loop (a hash of its name); other loops keep replicas their hubs
 * follow. Over the memory engine they send publications, presence,
 * occupancy and connections per user to the owner; over a shared engine
 * (Redis: inner->shared) only occupancy goes to the owner, and the rest
 * is asked of their own inner engine. Returns NULL when out of memory
 * (inner is not taken then).
 */
push_engine *push_engine_threads_new(push_threads *t, int self,
                                     herald_loop *loop, push_engine *inner,
                                     const push_engine_events *ev);

/* The events the inner engine of loop self must be made with (before
 * push_engine_threads_new): ev's, through the threads engine, which
 * forwards what the owner of a channel learns (on_lost) to the loops that
 * follow it. ev is the server's; the result's ud is t's. */
void push_engine_threads_events(push_threads *t, int self,
                                push_engine_events *ev);

/* 1 when e is a threads engine whose relay is one of channel's hub
 * subscribers (it is no client: node-wide counts leave it out), else 0. */
int push_engine_relayed(push_engine *e, const char *channel);

/* Frees the engine (after push_engine_shutdown, or without it for an engine
 * never started). NULL is allowed. */
void push_engine_del(push_engine *e);

#endif
