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
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    tmsg *m = k == UINT32_MAX ? NULL : thr_msg_strs(M_SYNC, channel, 0, 0, 0);
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
  if (owner == te->self) {
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
  tmsg *m = thr_msg_new(M_PUBLISH, s, n, 6);
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
  if (owner == te->self) {
    push_engine_presence_add(te->inner, channel, m, announce);
    return;
  }
  tmsg *x = thr_msg_strs(M_PRES_ADD, channel, m->client, m->user, m->info);
  if (x) {
    x->flag = announce;
  }
  thr_send(te, owner, x);
}

static void thr_presence_remove(push_engine *e, const char *channel,
                                const push_member *m) {
  thr_engine *te = te_of(e);
  int owner = thr_owner_of(te, channel);
  if (owner == te->self) {
    push_engine_presence_remove(te->inner, channel, m);
    return;
  }
  thr_send(te, owner,
           thr_msg_strs(M_PRES_DEL, channel, m->client, m->user, NULL));
}

static int thr_presence_get(push_engine *e, const char *channel, push_buf *out,
                            push_engine_cb cb, void *ud) {
  thr_engine *te = te_of(e);
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  int owner = thr_owner_of(te, channel);
  if (owner == te->self) {
    return push_engine_presence_get(te->inner, channel, out, cb, ud);
  }
  uint32_t k = thr_call_add(te, cb, ud);
  if (k == UINT32_MAX) {
    return PUSH_ENGINE_ERROR;
  }
  tmsg *m = thr_msg_strs(M_PRES_GET, channel, 0, 0, 0);
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
      if (x->refs == 0 && x->waiters == NULL &&
          now_ms - x->idle_ms >= IDLE_UNFOLLOW_MS) {
        if (x->state != F_IDLE) {
          thr_send(te, thr_owner_of(te, x->key),
                   thr_msg_strs(M_UNFOLLOW, x->key, 0, 0, 0));
        }
        push_hub_drop_history(e->hub, x->key);
        thr_tt_remove(te, &te->followed, x);
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
  }
  free(te->out);
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
  tmsg *m = thr_msg_strs(M_OCCUPANCY, channel, 0, 0, 0);
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
  if (owner == te->self) {
    return te->inner->vt->user_add(te->inner, user, client, limit, cb, ud);
  }
  if (te->down) {
    return PUSH_ENGINE_DOWN;
  }
  uint32_t k = thr_call_add(te, cb, ud);
  tmsg *m =
      k == UINT32_MAX ? NULL : thr_msg_strs(M_USER_ADD, user, client, 0, 0);
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
  if (owner == te->self) {
    push_engine_user_remove(te->inner, user, client);
    return;
  }
  thr_send(te, owner, thr_msg_strs(M_USER_DEL, user, client, 0, 0));
}

static void thr_user_refresh(push_engine *e, const char *user,
                             const char *client) {
  (void)e, (void)user, (void)client; /* memory entries do not expire */
}

/* Once per pass: the counts node.c reads, then the hand-over. */
static void thr_pass(push_engine *e) {
  thr_engine *te = te_of(e);
  e->relays = te->relayed.n;
  e->replicas = te->followed.n;
  thr_hand_over(te);
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
  if (e == NULL || e->vt != &thr_vt) {
    return 0;
  }
  thr_engine *te = te_of(e);
  return thr_tt_get(te, &te->relayed, channel) != NULL;
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
  e->vt = &thr_vt;
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
