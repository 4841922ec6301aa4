/* pusher_chan.c - Pusher channels on this node (pusher_int.h): one hub
 * subscription per channel shared by its sockets, delivery of events,
 * presence members, cache channels, and publishing.
 *
 * A channel exists on this node while a socket subscribes to it. The first
 * subscribe asks the engine to make the hub channel current (with Redis:
 * subscribe to it and load it), then subscribes the channel to the hub;
 * the sockets that asked meanwhile wait (SUBN_PENDING) and are answered
 * once it is live, or refused if the engine is unavailable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/pusher_int.h"

/* An engine call in flight for a channel: its sync, or the presence read
 * that answers a presence subscribe. ch becomes NULL when the channel is
 * gone first, sn when the subscription is. */
typedef struct pusher_call {
  pusher_chan *ch;
  pusher_subn *sn;
  uint64_t token;
  push_server *ps;
  char hub[PUSHER_HUB_MAX]; /* a sync: what to release if ch went */
  struct pusher_call *prev, *next;
} pusher_call;

/* ---- names ------------------------------------------------------------- */

static int prefixed(const char *s, size_t n, const char *p) {
  size_t pn = strlen(p);
  return n >= pn && memcmp(s, p, pn) == 0;
}

int pusher_channel_kind(const char *name, size_t n) {
  static const char user[] = "#server-to-user-";
  if (prefixed(name, n, user)) {
    return n > sizeof(user) - 1 && n - (sizeof(user) - 1) <= PUSHER_USER_ID_MAX
               ? PUSHER_K_USER
               : -1;
  }
  if (n == 0 || n > PUSHER_CHANNEL_MAX) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || strchr("_-=@,.;", c) != NULL) ||
        c == 0) {
      return -1;
    }
  }
  unsigned k = 0;
  if (prefixed(name, n, "private-encrypted-")) {
    k = PUSHER_K_PRIVATE | PUSHER_K_ENCRYPTED;
    k |= prefixed(name, n, "private-encrypted-cache-") ? PUSHER_K_CACHE : 0;
  } else if (prefixed(name, n, "private-")) {
    k = PUSHER_K_PRIVATE;
    k |= prefixed(name, n, "private-cache-") ? PUSHER_K_CACHE : 0;
  } else if (prefixed(name, n, "presence-")) {
    k = PUSHER_K_PRIVATE | PUSHER_K_PRESENCE;
    k |= prefixed(name, n, "presence-cache-") ? PUSHER_K_CACHE : 0;
  } else if (prefixed(name, n, "cache-")) {
    k = PUSHER_K_CACHE;
  }
  return (int)k;
}

int pusher_hub_name(const pusher_app *app, const char *name, unsigned kind,
                    char out[PUSHER_HUB_MAX]) {
  const char *suffix = kind & PUSHER_K_USER ? ";u"
                       : (kind & PUSHER_K_PRESENCE) && (kind & PUSHER_K_CACHE)
                           ? ";pc"
                       : kind & PUSHER_K_PRESENCE ? ";p"
                       : kind & PUSHER_K_CACHE    ? ";c"
                                                  : "";
  int n = snprintf(out, PUSHER_HUB_MAX, "pusher;%s%s:", app->cfg->id, suffix);
  size_t o = (size_t)n;
  if (kind & PUSHER_K_USER) {
    /* User ids are any string: what Redis keys and the hub's namespace
     * split could mistake (':' '{' '}', bytes outside ASCII) is escaped. */
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)name + 16; *p; p++) {
      int keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                 (*p >= '0' && *p <= '9') || strchr("_-=@,.;", *p) != NULL;
      if (o + (keep ? 1 : 3) >= PUSHER_HUB_MAX) {
        return -1;
      }
      if (keep) {
        out[o++] = (char)*p;
      } else {
        out[o++] = '%';
        out[o++] = hex[*p >> 4];
        out[o++] = hex[*p & 15];
      }
    }
    out[o] = 0;
    return 0;
  }
  size_t nl = strlen(name);
  if (o + nl >= PUSHER_HUB_MAX) {
    return -1;
  }
  memcpy(out + o, name, nl + 1);
  return 0;
}

/* ---- publishing -------------------------------------------------------- */

static void ignore_done(void *ud, const push_engine_reply *rep) {
  push_server *ps = ud;
  if (ps != NULL && rep->status == PUSH_ENGINE_OK) {
    ps->publications++;
  }
}

int pusher_publish(push_server *ps, const char *hub, const char *skip,
                   const char *event, size_t len, push_engine_cb on_done,
                   void *ud) {
  push_buf *b = &ps->result;
  b->len = 0;
  int rv = PUSH_ENGINE_ERROR;
  if (push_buf_raw(b, "[", 1) == 0 &&
      push_buf_str(b, skip, strlen(skip)) == 0 &&
      push_buf_raw(b, ",", 1) == 0 &&
      push_buf_raw(b, len ? event : "0", len ? len : 1) == 0 &&
      push_buf_raw(b, "]", 1) == 0) {
    push_publication p = {.data = {b->p, b->len}};
    push_pos pos;
    rv = push_engine_publish(ps->engine, hub, &p, &pos,
                             on_done ? on_done : ignore_done, ud);
    ps->publications += rv == PUSH_ENGINE_OK;
  }
  push_buf_done(b, PUSH_SCRATCH_KEEP);
  return rv;
}

/* ---- delivery ---------------------------------------------------------- */

static void pub_release(void *ctx) {
  push_pub_unref(ctx);
}

static void chan_deliver(void *cl, push_pub *pub) {
  pusher_chan *ch = cl;
  push_server *ps = ch->app->ps;
  const char *skip;
  size_t skiplen, len;
  const char *ev = pusher_pub_event(pub, &skip, &skiplen, &len);
  if (ev != NULL && skiplen == 2 && memcmp(skip, "!t", 2) == 0) {
    /* terminate_connections: every socket of this user on this node. */
    for (size_t i = ch->nsubs; i-- > 0;) {
      if (i < ch->nsubs) {
        pusher_error(ch->subs[i]->s, PUSHER_E_UNAUTHORIZED,
                     "connection terminated by the server", 1);
      }
    }
    push_pub_unref(pub);
    return;
  }
  if (ev == NULL) {
    push_pub_unref(pub);
    return;
  }
  push_record_latency(ps, pub);
  for (size_t i = 0; i < ch->nsubs; i++) {
    pusher_subn *sn = ch->subs[i];
    push_client *c = sn->s->c;
    if (sn->state != SUBN_ON || c->gone || c->ws == NULL ||
        (skiplen != 0 && strlen(sn->s->socket_id) == skiplen &&
         memcmp(sn->s->socket_id, skip, skiplen) == 0)) {
      continue;
    }
    int rv = herald_ws_send_ref(c->ws, HERALD_OP_TEXT, ev, len, pub_release,
                                push_pub_ref(pub));
    if (rv == HERALD_SEND_DROPPED) {
      ps->drops++;
      ps->slow_disconnects++;
      pusher_error(sn->s, PUSHER_E_OVER_CAPACITY, "slow consumer", 1);
    } else if (rv >= 0) {
      ps->messages_out++;
      ps->bytes_out += len;
    }
  }
  push_pub_unref(pub);
}

/* Sends frame to the channel's live sockets, but not to the user's own. */
static void chan_broadcast(pusher_chan *ch, const push_buf *frame,
                           const char *not_user) {
  for (size_t i = 0; i < ch->nsubs; i++) {
    pusher_subn *sn = ch->subs[i];
    if (sn->state == SUBN_ON && (not_user == NULL || sn->user == NULL ||
                                 strcmp(sn->user, not_user) != 0)) {
      pusher_send(sn->s, frame->p, frame->len);
    }
  }
}

static void member_changed(const pusher_change *chg, void *ud) {
  pusher_chan *ch = ud;
  push_buf data = {0}, frame = {0};
  int rv = push_buf_raw(&data, "{\"user_id\":", 11) ||
           push_buf_str(&data, chg->user, strlen(chg->user));
  if (chg->added) {
    rv = rv || push_buf_raw(&data, ",\"user_info\":", 13) ||
         (chg->info ? push_buf_raw(&data, chg->info, strlen(chg->info))
                    : push_buf_raw(&data, "null", 4));
  }
  rv = rv || push_buf_raw(&data, "}", 1) ||
       pusher_put_event(&frame,
                        chg->added ? "pusher_internal:member_added"
                                   : "pusher_internal:member_removed",
                        ch->name, data.p, data.len, 0);
  if (rv == 0) {
    chan_broadcast(ch, &frame, chg->user);
  }
  push_buf_free(&data);
  push_buf_free(&frame);
  /* The node, and in it the loop, whose connection made the change
   * tells the webhook: every loop that follows the channel sees it. */
  if (chg->client != NULL && pusher_client_here(ch->app->ps, chg->client)) {
    pusher_hook_member(ch->app, chg->added, ch->name, chg->user);
  }
}

/* A join or leave push of the hub channel (this node's or another's). */
static void chan_presence_event(void *cl, const char *frame, size_t len) {
  pusher_chan *ch = cl;
  pusher_join j;
  if ((ch->kind & PUSHER_K_PRESENCE) &&
      pusher_parse_join(frame, len, &j) == 0) {
    pusher_roster_event(&ch->roster, j.leave, j.client, j.user, j.info,
                        member_changed, ch);
    free(j.info);
  }
}

/* ---- subscriptions ----------------------------------------------------- */

static void call_unlink(pusher_call *call) {
  if (call->ch != NULL) {
    if (call->prev) {
      call->prev->next = call->next;
    } else {
      call->ch->calls = call->next;
    }
    if (call->next) {
      call->next->prev = call->prev;
    }
  }
  free(call);
}

static pusher_call *call_new(pusher_chan *ch, pusher_subn *sn) {
  pusher_call *call = calloc(1, sizeof(*call));
  if (call == NULL) {
    return NULL;
  }
  call->ch = ch;
  call->sn = sn;
  call->ps = ch->app->ps;
  snprintf(call->hub, sizeof(call->hub), "%s", ch->hub);
  call->next = ch->calls;
  if (ch->calls) {
    ch->calls->prev = call;
  }
  ch->calls = call;
  return call;
}

pusher_chan *pusher_chan_find(pusher_app *app, const char *name) {
  return pusher_map_get(&app->chans, name);
}

pusher_subn *pusher_sock_find(pusher_sock *s, const char *name) {
  for (size_t i = 0; i < s->nsubs; i++) {
    if (strcmp(s->subs[i]->ch->name, name) == 0) {
      return s->subs[i];
    }
  }
  return NULL;
}

static void chan_free(pusher_chan *ch) {
  pusher_app *app = ch->app;
  push_server *ps = app->ps;
  pusher_map_del(&app->chans, ch->name);
  atomic_store_explicit(&app->cnt->channels, app->chans.n,
                        memory_order_relaxed);
  if (ch->state == PCH_LIVE) {
    push_hub_unsubscribe(ps->hub, ch->hub, ch);
    push_engine_release(ps->engine, ch->hub);
  }
  for (pusher_call *c = ch->calls; c; c = c->next) {
    c->ch = NULL;
  }
  pusher_roster_free(&ch->roster);
  free(ch->subs);
  free(ch);
}

static void subn_free(pusher_subn *sn) {
  free(sn->user);
  free(sn->info);
  free(sn);
}

/* Takes sn out of its socket and channel; frees the channel when it was
 * the last. Presence leaves and occupancy are the caller's. */
static void subn_remove(pusher_subn *sn) {
  pusher_sock *s = sn->s;
  pusher_chan *ch = sn->ch;
  for (size_t i = 0; i < s->nsubs; i++) {
    if (s->subs[i] == sn) {
      s->subs[i] = s->subs[--s->nsubs];
      break;
    }
  }
  ch->subs[sn->at] = ch->subs[--ch->nsubs];
  ch->subs[sn->at]->at = sn->at;
  for (pusher_call *c = ch->calls; c; c = c->next) {
    if (c->sn == sn) {
      c->sn = NULL;
    }
  }
  subn_free(sn);
  if (ch->nsubs == 0) {
    if (ch->state == PCH_LIVE && (ch->kind & PUSHER_K_PRESENCE)) {
      /* The leave push of this node's last member is still on its way
       * back (with Redis): the roster waits for it, so that this node,
       * whose member it was, can send member_removed. */
      ch->linger_ms = push_now_ms() + PUSHER_LINGER_MS;
    } else {
      chan_free(ch);
    }
  }
}

/* call_new for a subscription that waits on the engine; when out of
 * memory the subscription is refused (ServerError) and removed, and NULL
 * is returned. */
static pusher_call *call_for(pusher_subn *sn) {
  pusher_call *call = call_new(sn->ch, sn);
  if (call == NULL) {
    pusher_subscription_error(sn->s, sn->ch->name, "ServerError",
                              "out of memory", 503);
    subn_remove(sn);
  }
  return call;
}

void pusher_chan_tick(pusher_app *app, int64_t now_ms) {
  pusher_chan *gone[64];
  size_t n = 0, pos = 0;
  const char *k;
  void *v;
  while (n < 64 && pusher_map_next(&app->chans, &pos, &k, &v)) {
    pusher_chan *ch = v;
    if (ch->nsubs == 0 && ch->linger_ms != 0 && now_ms >= ch->linger_ms) {
      gone[n++] = ch;
    }
  }
  for (size_t i = 0; i < n; i++) {
    chan_free(gone[i]);
  }
}

void pusher_chan_free_all(pusher_app *app) {
  size_t pos = 0;
  const char *k;
  void *v;
  while (pusher_map_next(&app->chans, &pos, &k, &v)) {
    chan_free(v); /* takes it out of the map: start again */
    pos = 0;
  }
}

static push_member subn_member(const pusher_subn *sn) {
  push_member m = {sn->s->c->id, sn->user, sn->info};
  return m;
}

static void send_succeeded(pusher_subn *sn, const push_buf *data) {
  push_buf frame = {0};
  if (pusher_put_event(&frame, "pusher_internal:subscription_succeeded",
                       sn->ch->name, data ? data->p : "{}",
                       data ? data->len : 2, 0) == 0) {
    pusher_send(sn->s, frame.p, frame.len);
  }
  push_buf_free(&frame);
}

/* The last event of a cache channel, or pusher:cache_miss. */
static void send_cache(pusher_subn *sn) {
  pusher_chan *ch = sn->ch;
  push_server *ps = ch->app->ps;
  push_result r;
  push_pos none = {0};
  memset(&r, 0, sizeof(r));
  if (push_hub_history(ps->hub, ch->hub, 1, &none, push_now_ms(), &r) == 0 &&
      r.npubs > 0) {
    const char *skip;
    size_t skiplen, len;
    const char *ev =
        pusher_pub_event(r.pubs[r.npubs - 1], &skip, &skiplen, &len);
    if (ev != NULL && len > 0) {
      pusher_send(sn->s, ev, len);
      push_result_free(&r);
      return;
    }
  }
  push_result_free(&r);
  push_buf frame = {0};
  if (pusher_put_event(&frame, "pusher:cache_miss", ch->name, NULL, 0, 0) ==
      0) {
    pusher_send(sn->s, frame.p, frame.len);
  }
  push_buf_free(&frame);
  pusher_hook_cache_miss(ch->app, ch->name);
}

/* sn is on: it is answered, and the channel may become occupied. */
static void subn_on(pusher_subn *sn, const push_buf *data) {
  pusher_chan *ch = sn->ch;
  sn->state = SUBN_ON;
  ch->non++;
  pusher_dir_update(ch);
  send_succeeded(sn, data);
  if (ch->kind & PUSHER_K_CACHE) {
    send_cache(sn);
  }
}

/* The presence read for a subscribe came back (json NULL: it failed).
 * Returns 1 when the subscription was refused and removed (its channel
 * may then be gone too). */
static int snapshot_done(pusher_call *call, const char *json, size_t len) {
  pusher_chan *ch = call->ch;
  pusher_subn *sn = call->sn;
  uint64_t token = call->token;
  call_unlink(call);
  if (ch == NULL) {
    return 0;
  }
  pusher_roster_end(&ch->roster, token, json, len, member_changed, ch);
  if (sn == NULL || sn->state != SUBN_PENDING) {
    return 0;
  }
  if (json != NULL && ch->roster.ready &&
      !pusher_roster_has_user(&ch->roster, sn->user) &&
      pusher_roster_nusers(&ch->roster) >= ch->app->cfg->max_presence_members) {
    pusher_subscription_error(sn->s, ch->name, "LimitReached",
                              "the presence channel is full", 403);
    subn_remove(sn);
    return 1;
  }
  push_buf data = {0};
  if (json == NULL || !ch->roster.ready ||
      pusher_roster_json(&ch->roster, &data, sn->user, sn->info) != 0) {
    push_buf_free(&data);
    pusher_subscription_error(sn->s, ch->name, "ServerError",
                              "the presence list is unavailable: try again",
                              503);
    subn_remove(sn);
    return 1;
  }
  /* The member joins after the read: its join push comes after the
   * snapshot, so this node sees it change the roster (member_added to the
   * others, and the webhook). */
  push_member m = subn_member(sn);
  push_engine_presence_add(ch->app->ps->engine, ch->hub, &m, 1);
  subn_on(sn, &data);
  push_buf_free(&data);
  return 0;
}

static void on_snapshot(void *ud, const push_engine_reply *rep) {
  int ok = rep->status == PUSH_ENGINE_OK;
  snapshot_done(ud, ok ? rep->json : NULL, ok ? rep->len : 0);
}

/* A presence subscription: the member joins, then the list is read (after
 * the join, so it holds this member). Returns 1 when sn was refused and
 * removed. */
static int presence_activate(pusher_subn *sn) {
  pusher_chan *ch = sn->ch;
  push_server *ps = ch->app->ps;
  if (ch->roster.ready && !pusher_roster_has_user(&ch->roster, sn->user) &&
      pusher_roster_nusers(&ch->roster) >= ch->app->cfg->max_presence_members) {
    pusher_subscription_error(sn->s, ch->name, "LimitReached",
                              "the presence channel is full", 403);
    subn_remove(sn);
    return 1;
  }
  /* The list is read first; the member joins once it is known
   * (snapshot_done), and the answer adds the member itself. */
  pusher_call *call = call_for(sn);
  if (call == NULL) {
    return 1;
  }
  call->token = pusher_roster_begin(&ch->roster);
  push_buf b = {0};
  int rv = push_engine_presence_get(ps->engine, ch->hub, &b, on_snapshot, call);
  int removed = 0;
  if (rv != PUSH_ENGINE_PENDING) {
    removed = snapshot_done(call, rv == PUSH_ENGINE_OK ? b.p : NULL,
                            rv == PUSH_ENGINE_OK ? b.len : 0);
  }
  push_buf_free(&b);
  return removed;
}

/* Returns 1 when sn was refused and removed. */
static int activate_now(pusher_subn *sn) {
  if (sn->ch->kind & PUSHER_K_PRESENCE) {
    return presence_activate(sn);
  }
  subn_on(sn, NULL);
  return 0;
}

/* The sync for a cache subscription is done (status): the subscription
 * goes on with the hub's copy as it is (a failed sync leaves it as good
 * as the engine could make it). Returns 1 when sn was refused and
 * removed. */
static int cache_synced(pusher_call *call, int status) {
  pusher_chan *ch = call->ch;
  pusher_subn *sn = call->sn;
  push_server *ps = call->ps;
  char hub[PUSHER_HUB_MAX];
  memcpy(hub, call->hub, sizeof(hub));
  call_unlink(call);
  int removed = 0;
  if (ch != NULL && sn != NULL && sn->state == SUBN_PENDING) {
    sn->cache_current = 1;
    removed = activate_now(sn);
  }
  if (status == PUSH_ENGINE_OK) {
    push_engine_release(ps->engine, hub);
  }
  return removed;
}

static void on_cache_synced(void *ud, const push_engine_reply *rep) {
  cache_synced(ud, rep->status);
}

/* Returns 1 when sn was refused and removed. */
static int activate(pusher_subn *sn) {
  if (sn->state == SUBN_INTERNAL) {
    return 0;
  }
  pusher_chan *ch = sn->ch;
  if ((ch->kind & PUSHER_K_CACHE) && !sn->cache_current) {
    /* A channel followed for a while may be a replica a hop behind a
     * publication acknowledged elsewhere (another loop or node): one
     * sync makes it current before its last event is read. */
    pusher_call *call = call_for(sn);
    if (call == NULL) {
      return 1;
    }
    int rv =
        push_engine_sync(ch->app->ps->engine, ch->hub, on_cache_synced, call);
    if (rv != PUSH_ENGINE_PENDING) {
      return cache_synced(call, rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK
                                                     : PUSH_ENGINE_DOWN);
    }
    return 0;
  }
  return activate_now(sn);
}

static void chan_live(pusher_chan *ch) {
  push_server *ps = ch->app->ps;
  push_sub sub = {ch, chan_deliver, chan_presence_event};
  push_result r;
  memset(&r, 0, sizeof(r));
  if (push_hub_subscribe(ps->hub, ch->hub, &sub, NULL, push_now_ms(), &r) < 0) {
    push_engine_release(ps->engine, ch->hub);
    while (ch->nsubs > 0) {
      pusher_subn *sn = ch->subs[ch->nsubs - 1];
      if (sn->state != SUBN_INTERNAL) {
        pusher_subscription_error(sn->s, ch->name, "ServerError",
                                  "out of memory", 503);
      }
      ch->state = PCH_SYNCING; /* nothing to release any more */
      subn_remove(sn);         /* frees ch with the last one */
    }
    return;
  }
  push_result_free(&r);
  ch->state = PCH_LIVE;
  /* Activating may remove subscriptions (a full presence channel): walk
   * from the end, which removals do not disturb. */
  for (size_t i = ch->nsubs; i-- > 0;) {
    if (i < ch->nsubs && ch->subs[i]->state == SUBN_PENDING) {
      ch->subs[i]->cache_current = 1; /* synced just now */
      int last = ch->nsubs == 1;
      if (activate(ch->subs[i]) && last) {
        return; /* the channel went with it */
      }
    }
  }
}

static void on_synced(void *ud, const push_engine_reply *rep) {
  pusher_call *call = ud;
  pusher_chan *ch = call->ch;
  if (ch == NULL) {
    /* The channel went while the engine worked: let its copy go. */
    if (rep->status == PUSH_ENGINE_OK) {
      push_engine_release(call->ps->engine, call->hub);
    }
    call_unlink(call);
    return;
  }
  call_unlink(call);
  if (rep->status == PUSH_ENGINE_OK) {
    chan_live(ch);
    return;
  }
  push_server *ps = ch->app->ps;
  ps->engine_unavailable++;
  while (ch->nsubs > 0) {
    pusher_subn *sn = ch->subs[ch->nsubs - 1];
    if (sn->state != SUBN_INTERNAL) {
      pusher_subscription_error(sn->s, ch->name, "ServerError",
                                PUSH_ENGINE_DOWN_MSG, 503);
    }
    subn_remove(sn);
  }
}

void pusher_chan_subscribe(pusher_sock *s, const char *name, unsigned kind,
                           const char *user, const char *info, int internal) {
  pusher_app *app = s->app;
  push_server *ps = app->ps;
  pusher_subn *sn = pusher_sock_find(s, name);
  if (sn != NULL) {
    if (sn->state == SUBN_INTERNAL && !internal) {
      /* The user channel joined at signin: now the client wants it. */
      sn->state = SUBN_PENDING;
      if (sn->ch->state == PCH_LIVE) {
        activate(sn);
      }
    }
    return;
  }
  pusher_chan *ch = pusher_chan_find(app, name);
  int fresh = ch == NULL;
  if (fresh) {
    char hub[PUSHER_HUB_MAX];
    if (pusher_hub_name(app, name, kind, hub) != 0) {
      pusher_subscription_error(s, name, "InvalidChannel",
                                "the channel name is too long", 400);
      return;
    }
    if (!push_channel_room(ps, hub)) {
      pusher_subscription_error(s, name, "LimitReached",
                                "too many channels on this node", 503);
      return;
    }
    ch = calloc(1, sizeof(*ch));
    if (ch == NULL || pusher_map_put(&app->chans, name, ch) != 0) {
      free(ch);
      pusher_subscription_error(s, name, "ServerError", "out of memory", 503);
      return;
    }
    atomic_store_explicit(&app->cnt->channels, app->chans.n,
                          memory_order_relaxed);
    ch->app = app;
    ch->kind = kind;
    ch->state = PCH_SYNCING;
    snprintf(ch->hub, sizeof(ch->hub), "%s", hub);
    snprintf(ch->name, sizeof(ch->name), "%s", name);
  }
  sn = calloc(1, sizeof(*sn));
  int bad = sn == NULL || (user && (sn->user = strdup(user)) == NULL) ||
            (info && (sn->info = strdup(info)) == NULL);
  if (!bad && ch->nsubs == ch->capsubs) {
    size_t ncap = ch->capsubs ? ch->capsubs * 2 : 4;
    pusher_subn **n = realloc(ch->subs, ncap * sizeof(*n));
    bad = n == NULL;
    if (n) {
      ch->subs = n;
      ch->capsubs = ncap;
    }
  }
  if (!bad && s->nsubs == s->capsubs) {
    size_t ncap = s->capsubs ? s->capsubs * 2 : 4;
    pusher_subn **n = realloc(s->subs, ncap * sizeof(*n));
    bad = n == NULL;
    if (n) {
      s->subs = n;
      s->capsubs = ncap;
    }
  }
  if (bad) {
    if (sn) {
      subn_free(sn);
    }
    if (fresh) {
      chan_free(ch);
    }
    pusher_subscription_error(s, name, "ServerError", "out of memory", 503);
    return;
  }
  sn->s = s;
  sn->ch = ch;
  ch->linger_ms = 0;
  sn->state = internal ? SUBN_INTERNAL : SUBN_PENDING;
  sn->at = ch->nsubs;
  ch->subs[ch->nsubs++] = sn;
  s->subs[s->nsubs++] = sn;
  if (!fresh) {
    if (ch->state == PCH_LIVE) {
      activate(sn);
    }
    return;
  }
  pusher_call *call = call_new(ch, NULL);
  if (call == NULL) {
    pusher_subscription_error(s, name, "ServerError", "out of memory", 503);
    subn_remove(sn);
    return;
  }
  int rv = push_engine_sync(ps->engine, ch->hub, on_synced, call);
  if (rv != PUSH_ENGINE_PENDING) {
    push_engine_reply rep = {.status = rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK
                                                            : PUSH_ENGINE_DOWN,
                             .json = NULL,
                             .len = 0};
    on_synced(call, &rep);
  }
}

void pusher_chan_unsubscribe(pusher_subn *sn) {
  pusher_chan *ch = sn->ch;
  push_server *ps = ch->app->ps;
  if (sn->state == SUBN_ON) {
    ch->non--;
    pusher_dir_update(ch);
  }
  if ((ch->kind & PUSHER_K_PRESENCE) && sn->state != SUBN_INTERNAL &&
      ch->state == PCH_LIVE) {
    push_member m = subn_member(sn);
    push_engine_presence_remove(ps->engine, ch->hub, &m);
  }
  subn_remove(sn);
}

void pusher_chan_refresh(pusher_app *app) {
  push_server *ps = app->ps;
  size_t pos = 0;
  const char *k;
  void *v;
  while (pusher_map_next(&app->chans, &pos, &k, &v)) {
    pusher_chan *ch = v;
    pusher_dir_refresh(ch);
    if (!(ch->kind & PUSHER_K_PRESENCE) || ch->state != PCH_LIVE) {
      continue;
    }
    for (size_t i = 0; i < ch->nsubs; i++) {
      if (ch->subs[i]->state == SUBN_ON) {
        push_member m = subn_member(ch->subs[i]);
        push_engine_presence_add(ps->engine, ch->hub, &m, 0);
      }
    }
  }
}
