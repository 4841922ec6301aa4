/* threads_chan.c - a channel across loops: the owner's side (relays that
 * forward its publications and join/leave pushes to the loops following
 * it, and the calls it answers) and the follower's (loading, applying in
 * order, resyncing, waiting syncs). engine_threads.c says why. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push/log.h"
#include "push/threads_int.h"

/* ---- the owner's side: relays -------------------------------------------- */

static void relay_deliver(void *client, push_pub *pub) {
  tentry *x = client;
  thr_engine *te = x->engine;
  /* The push as this hub encoded it: a follower's hub would encode the
   * same bytes for the same channel, so it takes a copy instead. */
  const char *s[2] = {x->key, pub->frame};
  size_t n[2] = {x->keylen, pub->frame_len};
  /* (Frames are bounded far below 4 GiB by the message size limits; a
   * follower that missed one would resync at the next.) */
  if (pub->frame_len < UINT32_MAX) {
    for (int d = 0; d < te->t->n; d++) {
      if (x->follows[d / 64] >> (d % 64) & 1) {
        tmsg *m = thr_msg_new(te, M_PUB, s, n, 2);
        if (m) {
          memcpy(m->epoch, x->epoch, sizeof(m->epoch));
          m->offset = pub->offset;
          m->time_ms = pub->time_ms;
          m->json_off = (uint32_t)pub->json_off;
          m->json_len = (uint32_t)pub->json_len;
          m->hash = x->hash;
        }
        thr_send(te, d, m);
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
      thr_send(te, d, thr_msg_new(te, M_FRAME, s, n, 2));
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

void thr_owner_follow(thr_engine *te, const tmsg *in) {
  push_hub *hub = te->base.hub;
  const char *channel = mstr(in, 0);
  int64_t now = thr_wall_ms();
  tentry *x = thr_tt_get(te, &te->relayed, channel);
  if (x == NULL) {
    x = thr_tt_add(te, &te->relayed, channel);
    if (x == NULL) {
      return; /* the follower's sync waits; see thr_tick */
    }
    x->follows = calloc(((size_t)te->t->n + 63) / 64, sizeof(uint64_t));
    push_sub relay = {x, relay_deliver, relay_frame};
    push_result r;
    memset(&r, 0, sizeof(r));
    if (x->follows == NULL ||
        push_hub_subscribe(hub, channel, &relay, NULL, now, &r) < 0) {
      thr_tt_remove(te, &te->relayed, x);
      return;
    }
    memcpy(x->epoch, r.pos.epoch, sizeof(x->epoch));
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
  tmsg *m = thr_msg_new(te, M_LOADED, s, n, 2);
  if (m) {
    memcpy(m->epoch, r.pos.epoch, sizeof(m->epoch));
    m->offset = r.pos.offset;
    m->limit = (uint32_t)r.npubs;
  }
  push_result_free(&r);
  thr_send(te, in->from, m);
}

/* A follower asks whether its replica is current: everything the channel
 * has now must reach it before the answer. The hub's flush hands what
 * this pass published to the relay first, so the PUB messages precede the
 * CURRENT in the follower's FIFO. */
void thr_owner_sync(thr_engine *te, const tmsg *in) {
  const char *channel = mstr(in, 0);
  tentry *x = thr_tt_get(te, &te->relayed, channel);
  if (x == NULL || !(x->follows[in->from / 64] >> (in->from % 64) & 1)) {
    thr_owner_follow(te, in); /* the follower lost it: LOADED answers */
  } else {
    push_hub_flush(te->base.hub);
  }
  push_pos pos;
  memset(&pos, 0, sizeof(pos));
  push_hub_pos(te->base.hub, channel, &pos);
  tmsg *m = thr_msg_strs(te, M_CURRENT, channel, 0, 0, 0);
  if (m) {
    m->token = in->token;
    memcpy(m->epoch, pos.epoch, sizeof(m->epoch));
    m->offset = pos.offset;
  }
  thr_send(te, in->from, m);
}

void thr_owner_unfollow(thr_engine *te, const tmsg *in) {
  tentry *x = thr_tt_get(te, &te->relayed, mstr(in, 0));
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
  thr_tt_remove(te, &te->relayed, x);
}

/* PUBLISH and USER_ADD come only over a memory inner engine, which
 * answers at once (hence no callbacks here): over a shared one (Redis)
 * thr_publish and thr_user_add ask the calling loop's own engine and never
 * send them. PRES_GET comes over both (owner_presence_get). */
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
  tmsg *m = thr_msg_new(te, M_PUBLISHED, NULL, NULL, 0);
  if (m) {
    m->token = in->token;
    m->status = rv;
    m->flag = pos.set == 2;
    memcpy(m->epoch, pos.epoch, sizeof(m->epoch));
    m->offset = pos.offset;
  }
  thr_send(te, in->from, m);
}

/* The answer to a PRES_GET: json (len bytes) with PUSH_ENGINE_OK, or
 * another status. */
static void presence_reply(thr_engine *te, int to, uint32_t token, int status,
                           const char *json, size_t len) {
  const char *s[1] = {json != NULL ? json : ""};
  size_t n[1] = {status == PUSH_ENGINE_OK && json != NULL ? len : 0};
  tmsg *m = thr_msg_new(te, M_JSON, s, n, 1);
  if (m) {
    m->token = token;
    m->status = status;
  }
  thr_send(te, to, m);
}

/* A PRES_GET a shared inner engine answers later (owns nothing but te's
 * address, which outlives the inner engine's calls: thr_del deletes the
 * inner engine first). */
typedef struct pres_call {
  thr_engine *te;
  int from;
  uint32_t token;
} pres_call;

static void presence_got(void *ud, const push_engine_reply *rep) {
  pres_call *c = ud;
  presence_reply(c->te, c->from, c->token, rep->status, rep->json, rep->len);
  free(c);
}

/* Another loop's read of a channel's presence. Over Redis too it is read
 * here, at the owner, whose Redis subscription brings the channel's join
 * and leave pushes: the answer then follows, in the mailbox, every push
 * relayed before the read and precedes every one after it, which is what
 * a roster's snapshot needs (pusher_roster.c). A read on the follower's
 * own Redis connection could overtake pushes still on their way through
 * the owner, and a roster would miss or repeat a change. */
static void owner_presence_get(thr_engine *te, const tmsg *in) {
  push_buf *b = &te->scratch;
  b->len = 0;
  pres_call *c = NULL;
  int rv = PUSH_ENGINE_DOWN;
  if (!te->down && (!te->inner->shared || (c = malloc(sizeof(*c))) != NULL)) {
    if (c != NULL) {
      c->te = te;
      c->from = in->from;
      c->token = in->token;
    }
    rv = push_engine_presence_get(te->inner, mstr(in, 0), b,
                                  c ? presence_got : NULL, c);
  }
  if (rv == PUSH_ENGINE_PENDING) {
    return; /* presence_got answers */
  }
  free(c);
  presence_reply(te, in->from, in->token, rv, b->p, b->len);
}

static void owner_user_add(thr_engine *te, const tmsg *in) {
  int allowed = 0;
  int rv = push_engine_user_add(te->inner, mstr(in, 0), mstr(in, 1), in->limit,
                                &allowed, NULL, NULL);
  tmsg *m = thr_msg_new(te, M_USER_ADDED, NULL, NULL, 0);
  if (m) {
    m->token = in->token;
    m->status = rv;
    m->flag = allowed;
  }
  thr_send(te, in->from, m);
}

/* Occupancy is counted per loop at the channel's owner: the node's word
 * (the inner engine's on_occupancy) comes when the first loop gets a
 * subscriber and when the last one loses its last. */
void thr_owner_occupancy(thr_engine *te, const char *channel, int occupied) {
  tentry *x = thr_tt_add(te, &te->occupied, channel);
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
    thr_tt_remove(te, &te->occupied, x);
  }
}

/* ---- the follower's side ---------------------------------------------------
 */

void thr_wake_waiters(tentry *x, int status) {
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
  tentry *x = thr_tt_get(te, &te->followed, channel);
  if (x == NULL || x->state == F_IDLE) {
    return; /* let go meanwhile: UNFOLLOW is on its way */
  }
  if (in->status != PUSH_ENGINE_OK) {
    /* The owner's inner engine is unavailable: the syncs fail, and a
     * replica in use is asked for again by thr_tick. */
    x->state = F_IDLE;
    thr_wake_waiters(x, in->status);
    return;
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
    thr_wake_waiters(x, PUSH_ENGINE_DOWN);
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
  if (push_hub_load(hub, channel, in->epoch, in->offset, e, n, thr_wall_ms()) !=
      0) {
    free(e);
    x->state = F_IDLE;
    thr_wake_waiters(x, PUSH_ENGINE_DOWN);
    return;
  }
  free(e);
  memcpy(x->epoch, in->epoch, sizeof(x->epoch));
  x->offset = in->offset;
  x->hub_hash = push_hub_hash(hub, channel);
  x->state = F_LIVE;
  x->had_replica = 0;
  thr_wake_waiters(x, PUSH_ENGINE_OK);
}

/* Asks the owner for the channel again (a publication that did not follow:
 * the replica was forgotten or missed one). */
void thr_follower_resync(thr_engine *te, tentry *x) {
  te->resyncs++;
  push_log(PUSH_LOG_DEBUG, "ev=thread_resync thread=%d channel=%s state=%d",
           te->self, x->key, x->state);
  if (x->state == F_LIVE) {
    x->had_replica = 1;
  }
  x->state = F_LOADING;
  thr_send(te, thr_owner_of(te, x->key),
           thr_msg_strs(te, M_FOLLOW, x->key, 0, 0, 0));
}

static void follower_pub(thr_engine *te, const tmsg *in) {
  push_hub *hub = te->base.hub;
  const char *channel = mstr(in, 0);
  tentry *x = thr_tt_get_hashed(&te->followed, channel, in->hash);
  if (x == NULL || x->state != F_LIVE) {
    return; /* a LOADED will bring it */
  }
  if (in->offset <= x->offset && strcmp(x->epoch, in->epoch) == 0) {
    return; /* the load had it already */
  }
  push_ext_frame f = {in->offset,  in->time_ms,  mstr(in, 1),
                      mlen(in, 1), in->json_off, in->json_len};
  if (push_hub_append_frame_hashed(hub, channel, x->hub_hash, in->epoch, &f) !=
      0) {
    thr_follower_resync(te, x);
    return;
  }
  x->offset = in->offset;
}

void thr_follower_add_waiter(tentry *x, waiter *w) {
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
  if (thr_call_take(te, in->token, &cb, &ud) != 0) {
    return;
  }
  push_engine_reply rep;
  memset(&rep, 0, sizeof(rep));
  if (in->status != PUSH_ENGINE_OK) {
    rep.status = in->status; /* the owner's inner engine is unavailable */
    cb(ud, &rep);
    return;
  }
  const char *channel = mstr(in, 0);
  tentry *x = thr_tt_get(te, &te->followed, channel);
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
  thr_follower_add_waiter(x, w);
  if (x->state != F_LOADING) {
    thr_follower_resync(te, x);
  }
}

static void follower_frame(thr_engine *te, const tmsg *in) {
  tentry *x = thr_tt_get(te, &te->followed, mstr(in, 0));
  if (x != NULL && x->state == F_LIVE) {
    push_hub_broadcast_raw(te->base.hub, mstr(in, 0), mstr(in, 1), mlen(in, 1));
  }
}

static void reply_call(thr_engine *te, const tmsg *in) {
  push_engine_cb cb;
  void *ud;
  if (thr_call_take(te, in->token, &cb, &ud) != 0) {
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

void thr_handle(thr_engine *te, tmsg *m) {
  push_member mem = {mstr(m, 1), mstr(m, 2), mstr(m, 3)};
  te->received++;
  if (te->inner->shared &&
      (m->kind == M_FOLLOW || m->kind == M_SYNC || m->kind == M_UNFOLLOW)) {
    thr_owner_shared(te, m);
    return;
  }
  switch (m->kind) {
  case M_FOLLOW:
    thr_owner_follow(te, m);
    break;
  case M_UNFOLLOW:
    thr_owner_unfollow(te, m);
    break;
  case M_LOST:
    thr_follower_lost(te, m);
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
    thr_owner_occupancy(te, mstr(m, 0), m->flag);
    break;
  case M_SYNC:
    thr_owner_sync(te, m);
    break;
  case M_CURRENT:
    follower_current(te, m);
    break;

  default:
    reply_call(te, m);
  }
}
