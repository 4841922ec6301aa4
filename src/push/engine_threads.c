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
 *   - a sync on a loop that follows the channel already is one round trip
 *     (SYNC, answered CURRENT after the owner's flush): the replica may be
 *     live yet behind what a client saw on another loop, and a recovering
 *     subscribe must not get a gap.
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
 * never per publication or per delivery. A PUB carries the push as the
 * owner's hub encoded it; a follower copies it once for all of its
 * subscribers (push_hub_append_frame) rather than encoding it again.
 *
 * Over Redis (inner->shared) each loop's inner engine is a Redis engine
 * with its own connections. The owner's hub is then a replica of Redis:
 * FOLLOW and SYNC are answered once the owner's Redis engine has synced
 * the channel, and a gap it cannot fill is forwarded to the followers
 * (LOST) so that their subscribers are told too. Everything else Redis
 * decides for the whole cluster (publishing, presence, users, control,
 * the node list) is asked of the loop's own Redis engine, but for reads
 * of a channel's presence, which the owner makes so that they stay in
 * order with the join and leave pushes it relays; only the first loop
 * keeps the node's entry in the node list.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push/log.h"
#include "push/threads_int.h"

/* ---- the interface ----------------------------------------------------------
 */

static int thr_sync(push_engine *e, const char *channel, push_engine_cb cb,
                    void *ud) {
  thr_engine *te = te_of(e);
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  int owner = thr_owner_of(te, channel);
  if (owner == te->self) {
    return push_engine_sync(te->inner, channel, cb, ud);
  }
  tentry *x = thr_tt_add(te, &te->followed, channel);
  if (x == NULL) {
    return PUSH_ENGINE_DOWN;
  }
  push_pos pos;
  if (x->state == F_LIVE && push_hub_pos(e->hub, channel, &pos) == 0) {
    /* Live, but maybe behind what the client saw on another loop: one
     * round trip to the owner makes it current (follower_current). The
     * entry counts as used now, so thr_tick keeps it meanwhile. */
    x->idle_ms = thr_wall_ms();
    uint32_t k = thr_call_add(te, cb, ud);
    tmsg *m =
        k == UINT32_MAX ? NULL : thr_msg_strs(te, M_SYNC, channel, 0, 0, 0);
    if (m == NULL) {
      if (k != UINT32_MAX) {
        thr_call_take(te, k, &cb, &ud);
      }
      return PUSH_ENGINE_DOWN;
    }
    m->token = k;
    thr_send(te, owner, m);
    return PUSH_ENGINE_PENDING;
  }
  waiter *w = malloc(sizeof(*w));
  if (w == NULL) {
    return PUSH_ENGINE_DOWN;
  }
  w->cb = cb;
  w->ud = ud;
  w->next = NULL;
  thr_follower_add_waiter(x, w);
  if (x->state != F_LOADING) {
    thr_follower_resync(te, x);
  }
  return PUSH_ENGINE_PENDING;
}

static void thr_release(push_engine *e, const char *channel) {
  thr_engine *te = te_of(e);
  if (thr_owner_of(te, channel) == te->self) {
    push_engine_release(te->inner, channel);
    return;
  }
  tentry *x = thr_tt_get(te, &te->followed, channel);
  if (x != NULL && x->refs > 0 && --x->refs == 0) {
    x->idle_ms = thr_wall_ms();
  }
}

static int thr_publish(push_engine *e, const char *channel,
                       const push_publication *p, push_pos *pos,
                       push_engine_cb cb, void *ud) {
  thr_engine *te = te_of(e);
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  int owner = thr_owner_of(te, channel);
  if (owner == te->self || te->inner->shared) {
    return push_engine_publish(te->inner, channel, p, pos, cb, ud);
  }
  uint32_t k = thr_call_add(te, cb, ud);
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
  tmsg *m = thr_msg_new(te, M_PUBLISH, s, n, 6);
  if (m == NULL) {
    void *u;
    push_engine_cb c;
    thr_call_take(te, k, &c, &u);
    return PUSH_ENGINE_ERROR;
  }
  m->token = k;
  thr_send(te, owner, m);
  return PUSH_ENGINE_PENDING;
}

static void thr_presence_add(push_engine *e, const char *channel,
                             const push_member *m, int announce) {
  thr_engine *te = te_of(e);
  int owner = thr_owner_of(te, channel);
  if (owner == te->self || te->inner->shared) {
    push_engine_presence_add(te->inner, channel, m, announce);
    return;
  }
  tmsg *x = thr_msg_strs(te, M_PRES_ADD, channel, m->client, m->user, m->info);
  if (x) {
    x->flag = announce;
  }
  thr_send(te, owner, x);
}

static void thr_presence_remove(push_engine *e, const char *channel,
                                const push_member *m) {
  thr_engine *te = te_of(e);
  int owner = thr_owner_of(te, channel);
  if (owner == te->self || te->inner->shared) {
    push_engine_presence_remove(te->inner, channel, m);
    return;
  }
  thr_send(te, owner,
           thr_msg_strs(te, M_PRES_DEL, channel, m->client, m->user, NULL));
}

static int thr_presence_get(push_engine *e, const char *channel, push_buf *out,
                            push_engine_cb cb, void *ud) {
  thr_engine *te = te_of(e);
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  /* Over Redis too the owner reads it (owner_presence_get says why). */
  int owner = thr_owner_of(te, channel);
  if (owner == te->self) {
    return push_engine_presence_get(te->inner, channel, out, cb, ud);
  }
  uint32_t k = thr_call_add(te, cb, ud);
  if (k == UINT32_MAX) {
    return PUSH_ENGINE_ERROR;
  }
  tmsg *m = thr_msg_strs(te, M_PRES_GET, channel, 0, 0, 0);
  if (m == NULL) {
    void *u;
    push_engine_cb c;
    thr_call_take(te, k, &c, &u);
    return PUSH_ENGINE_ERROR;
  }
  m->token = k;
  thr_send(te, owner, m);
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
      if (x->refs > 0 && x->state == F_IDLE && x->waiters == NULL &&
          !te->down) {
        /* The owner could not load it (its Redis was unavailable): the
         * subscribers here are followed again, their gap repaired. */
        thr_follower_resync(te, x);
        continue;
      }
      if (x->refs == 0 && x->waiters == NULL &&
          now_ms - x->idle_ms >= IDLE_UNFOLLOW_MS) {
        if (x->state != F_IDLE) {
          thr_send(te, thr_owner_of(te, x->key),
                   thr_msg_strs(te, M_UNFOLLOW, x->key, 0, 0, 0));
        }
        push_hub_drop_history(e->hub, x->key);
        thr_tt_remove(te, &te->followed, x);
      }
    }
  }
}

/* The node is healthy when every loop's inner engine is: this one's now,
 * the others' as of their last pass. */
static int thr_healthy(const push_engine *e, const char **why) {
  const thr_engine *te = (const thr_engine *)e;
  if (!push_engine_healthy(te->inner, why)) {
    return 0;
  }
  for (int i = 0; i < te->t->n; i++) {
    if (atomic_load_explicit(&te->t->box[i].sick, memory_order_relaxed)) {
      *why = "Redis unreachable from one of the node's loops";
      return 0;
    }
  }
  *why = NULL;
  return 1;
}

/* The memory engine has none; a shared engine's (Redis) are this loop's
 * connections'. */
static int thr_metrics(const push_engine *e, const push_engine_figures *f,
                       push_buf *out) {
  return push_engine_metrics(((const thr_engine *)e)->inner, f, out);
}

static void thr_figures(const push_engine *e, push_engine_figures *f) {
  push_engine_figures_get(((const thr_engine *)e)->inner, f);
}

static int thr_describe(const push_engine *e, push_buf *out) {
  const push_engine *in = ((const thr_engine *)e)->inner;
  return in->vt->describe(in, out);
}

static void thr_shutdown(push_engine *e) {
  thr_engine *te = te_of(e);
  te->down = 1;
  for (size_t i = 0; i < te->followed.nb; i++) {
    for (tentry *x = te->followed.b[i]; x; x = x->next) {
      thr_wake_waiters(x, PUSH_ENGINE_DOWN);
    }
  }
  push_engine_reply rep;
  memset(&rep, 0, sizeof(rep));
  rep.status = PUSH_ENGINE_DOWN;
  for (uint32_t k = 0; k < te->ncalls; k++) {
    push_engine_cb cb;
    void *ud;
    if (te->calls[k].used && thr_call_take(te, k, &cb, &ud) == 0) {
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
  thr_tt_free(&te->followed);
  thr_tt_free(&te->relayed);
  thr_tt_free(&te->occupied);
  for (int d = 0; d < te->t->n; d++) {
    thr_list_free(&te->out[d]);
    thr_list_free(&te->back[d]);
  }
  for (int c = 0; c < THR_NCLASS; c++) {
    for (tmsg *m = te->pool[c], *next; m; m = next) {
      next = m->next;
      free(m);
    }
  }
  free(te->out);
  free(te->back);
  free(te->back_bytes);
  free(te->calls);
  push_buf_free(&te->scratch);
  free(te);
}

static void thr_occupancy(push_engine *e, const char *channel, int occupied) {
  thr_engine *te = te_of(e);
  int owner = thr_owner_of(te, channel);
  if (owner == te->self) {
    thr_owner_occupancy(te, channel, occupied);
    return;
  }
  tmsg *m = thr_msg_strs(te, M_OCCUPANCY, channel, 0, 0, 0);
  if (m) {
    m->flag = occupied;
  }
  thr_send(te, owner, m);
}

/* The node's other loops get the API's control messages from the server
 * itself (push_node_each), with a count of what they touched. */
static int thr_control(push_engine *e, const char *msg, size_t len) {
  return push_engine_control(te_of(e)->inner, msg, len);
}

static int thr_user_add(push_engine *e, const char *user, const char *client,
                        uint32_t limit, push_engine_cb cb, void *ud) {
  thr_engine *te = te_of(e);
  int owner = thr_owner_of(te, user);
  if (owner == te->self || te->inner->shared) {
    return te->inner->vt->user_add(te->inner, user, client, limit, cb, ud);
  }
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  uint32_t k = thr_call_add(te, cb, ud);
  tmsg *m =
      k == UINT32_MAX ? NULL : thr_msg_strs(te, M_USER_ADD, user, client, 0, 0);
  if (m == NULL) {
    void *u;
    push_engine_cb c;
    if (k != UINT32_MAX) {
      thr_call_take(te, k, &c, &u);
    }
    return PUSH_ENGINE_DOWN;
  }
  m->token = k;
  m->limit = limit;
  thr_send(te, owner, m);
  return PUSH_ENGINE_PENDING;
}

static void thr_user_remove(push_engine *e, const char *user,
                            const char *client) {
  thr_engine *te = te_of(e);
  int owner = thr_owner_of(te, user);
  if (owner == te->self || te->inner->shared) {
    push_engine_user_remove(te->inner, user, client);
    return;
  }
  thr_send(te, owner, thr_msg_strs(te, M_USER_DEL, user, client, 0, 0));
}

/* Memory entries do not expire; a shared engine's (Redis) do, and any
 * loop may refresh them. */
static void thr_user_refresh(push_engine *e, const char *user,
                             const char *client) {
  thr_engine *te = te_of(e);
  if (te->inner->shared) {
    push_engine_user_refresh(te->inner, user, client);
  }
}

/* Once per pass: the counts node.c reads, then the hand-over. */
static void thr_pass(push_engine *e) {
  thr_engine *te = te_of(e);
  e->relays = te->relayed.n;
  e->replicas = te->followed.n;
  if (te->inner->shared) {
    const char *why;
    atomic_store_explicit(&te->t->box[te->self].sick,
                          !push_engine_healthy(te->inner, &why),
                          memory_order_relaxed);
  }
  thr_hand_over(te);
}

/* ---- over a shared inner engine (Redis) -----------------------------------
 *
 * The owner's hub is then a replica too, current only once its inner
 * engine has synced the channel. A relay holds one reference on the
 * channel in the inner engine (so that it stays followed in Redis while
 * other loops follow it here); FOLLOW, SYNC and UNFOLLOW are answered
 * once the inner engine's sync completes. The inner engine answers the
 * syncs of one channel in the order they were made, so a follower's
 * messages about a channel are still handled in the order it sent them.
 */

typedef struct held {
  thr_engine *te;
  int kind, from;
  uint32_t token;
  char channel[];
} held;

static void held_done(void *ud, const push_engine_reply *rep) {
  held *h = ud;
  thr_engine *te = h->te;
  tmsg *m = thr_msg_strs(te, h->kind, h->channel, 0, 0, 0);
  if (m == NULL) {
    if (rep->status == PUSH_ENGINE_OK) {
      push_engine_release(te->inner, h->channel);
    }
    free(h);
    return; /* out of memory: the follower's sync waits (thr_tick) */
  }
  m->from = h->from;
  m->token = h->token;
  int had = thr_tt_get(te, &te->relayed, h->channel) != NULL;
  if (h->kind == M_UNFOLLOW) {
    thr_owner_unfollow(te, m);
  } else if (rep->status != PUSH_ENGINE_OK || te->down) {
    /* The follower's sync fails; it asks again while it is in use. */
    tmsg *a = thr_msg_strs(te, h->kind == M_FOLLOW ? M_LOADED : M_CURRENT,
                           h->channel, "", 0, 0);
    if (a) {
      a->token = h->token;
      a->status = te->down ? PUSH_ENGINE_DOWN : rep->status;
    }
    thr_send(te, h->from, a);
  } else if (h->kind == M_FOLLOW) {
    thr_owner_follow(te, m);
  } else {
    thr_owner_sync(te, m);
  }
  thr_msg_free(te, m);
  int has = thr_tt_get(te, &te->relayed, h->channel) != NULL;
  /* The reference this sync took is the relay's if it made one; and a
   * relay that is gone leaves its own. */
  if (rep->status == PUSH_ENGINE_OK && (had || !has)) {
    push_engine_release(te->inner, h->channel);
  }
  if (had && !has) {
    push_engine_release(te->inner, h->channel);
  }
  free(h);
}

void thr_owner_shared(thr_engine *te, const tmsg *in) {
  const char *channel = mstr(in, 0);
  size_t n = strlen(channel);
  held *h = malloc(sizeof(*h) + n + 1);
  if (h == NULL) {
    return; /* the follower's sync waits (thr_tick) */
  }
  h->te = te;
  h->kind = in->kind;
  h->from = in->from;
  h->token = in->token;
  memcpy(h->channel, channel, n + 1);
  push_engine_reply rep;
  memset(&rep, 0, sizeof(rep));
  rep.status = te->down ? PUSH_ENGINE_DOWN
                        : push_engine_sync(te->inner, channel, held_done, h);
  if (rep.status != PUSH_ENGINE_PENDING) {
    held_done(h, &rep);
  }
}

/* The owner's inner engine could not fill a gap of a channel (Redis lost
 * publications, or went back: a new epoch). The loops following it are
 * told, and load it again: their subscribers learn it as this loop's do
 * (on_lost). The relay goes first, so that the server's on_lost sees only
 * clients; the followers' FOLLOW makes a new one. */
static void thr_ev_lost(void *ud, const char *channel) {
  mailbox *mb = ud;
  thr_engine *te = mb->engine;
  if (te == NULL) {
    return;
  }
  tentry *x = thr_tt_get(te, &te->relayed, channel);
  if (x != NULL) {
    for (int d = 0; d < te->t->n; d++) {
      if (x->follows[d / 64] >> (d % 64) & 1) {
        thr_send(te, d, thr_msg_strs(te, M_LOST, channel, 0, 0, 0));
      }
    }
    push_hub_unsubscribe(te->base.hub, x->key, x);
    thr_tt_remove(te, &te->relayed, x);
    push_engine_release(te->inner, channel);
    push_log(PUSH_LOG_DEBUG, "ev=thread_lost thread=%d channel=%s", te->self,
             channel);
  }
  if (te->base.ev.on_lost) {
    te->base.ev.on_lost(te->base.ev.ud, channel);
  }
}

void thr_follower_lost(thr_engine *te, const tmsg *in) {
  tentry *x = thr_tt_get(te, &te->followed, mstr(in, 0));
  if (x != NULL && x->state == F_LIVE) {
    thr_follower_resync(te, x); /* the LOADED tells what is lost */
  }
}

static void thr_ev_node_json(void *ud, push_buf *b) {
  thr_engine *te = ((mailbox *)ud)->engine;
  if (te != NULL && te->base.ev.node_json) {
    te->base.ev.node_json(te->base.ev.ud, b);
  }
}

static void thr_ev_occupancy(void *ud, const char *channel, int occupied) {
  thr_engine *te = ((mailbox *)ud)->engine;
  if (te != NULL && te->base.ev.on_occupancy) {
    te->base.ev.on_occupancy(te->base.ev.ud, channel, occupied);
  }
}

static void thr_ev_control(void *ud, const char *msg, size_t len) {
  thr_engine *te = ((mailbox *)ud)->engine;
  if (te != NULL && te->base.ev.on_control) {
    te->base.ev.on_control(te->base.ev.ud, msg, len);
  }
}

void push_engine_threads_events(push_threads *t, int self,
                                push_engine_events *ev) {
  ev->on_lost = thr_ev_lost;
  ev->node_json = thr_ev_node_json;
  ev->on_occupancy = ev->on_occupancy ? thr_ev_occupancy : NULL;
  ev->on_control = ev->on_control ? thr_ev_control : NULL;
  ev->ud = &t->box[self];
}

const push_engine_vt thr_vt = {
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
    .figures = thr_figures,
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
  if (e == NULL || e->vt->sync != thr_vt.sync) {
    return 0;
  }
  thr_engine *te = te_of(e);
  return thr_tt_get(te, &te->relayed, channel) != NULL;
}

push_engine *push_engine_threads_new(push_threads *t, int self,
                                     herald_loop *loop, push_engine *inner,
                                     const push_engine_events *ev) {
  thr_engine *te = calloc(1, sizeof(*te));
  if (te == NULL || (te->out = calloc((size_t)t->n, sizeof(tlist))) == NULL ||
      (te->back = calloc((size_t)t->n, sizeof(tlist))) == NULL ||
      (te->back_bytes = calloc((size_t)t->n, sizeof(size_t))) == NULL) {
    if (te != NULL) {
      free(te->out);
      free(te->back);
    }
    free(te);
    return NULL;
  }
  te->t = t;
  te->self = self;
  te->inner = inner;
  te->free_call = UINT32_MAX;
  push_engine *e = &te->base;
  te->vt = thr_vt;
  te->vt.name = inner->vt->name;
  te->vt.describe = inner->vt->describe ? thr_describe : NULL;
  e->vt = &te->vt;
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
