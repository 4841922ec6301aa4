/* pusher_dir.c - the directory of an app's occupied channels, across the
 * cluster (pusher_int.h): which channels have subscribers on some node,
 * how many, and the one node that says so first or last (it sends the
 * channel_occupied and channel_vacated webhooks).
 *
 * It is made of the engine's presence, so it needs nothing the engine
 * does not already offer: the directory is a hub channel of the app's
 * ";d" namespace, and each node keeps one presence entry in it per channel
 * it has subscribers of, "<node>/<channel>", whose user is the channel and
 * whose info is {"n": subscriptions on that node}. A node of several
 * loops (--threads) does so per loop, as "<node>.<loop>/<channel>" (node
 * names have no '.'): each loop is then one more "node" of the directory. The
 * entries expire with their node (Redis' presence TTL), and a read of the
 * directory's presence is a read of every occupied channel of the app.
 *
 * Every node follows the directory with a roster (pusher_roster.c) whose
 * "users" are channels: a channel appears when its first entry does and
 * goes with its last one, and the node whose entry made that happen sends
 * the webhook, so each transition is announced once in the cluster, in the
 * order Redis ran them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/pusher_int.h"

/* An engine call for the directory; app becomes NULL when it stops. */
typedef struct dir_call {
  pusher_app *app;
  push_server *ps;
  char hub[PUSHER_APP_ID_MAX + 24];
  uint64_t token;
  int snapshot; /* 0: the sync */
} dir_call;

static dir_call *call_new(pusher_app *app, int snapshot) {
  dir_call *c = calloc(1, sizeof(*c));
  if (c != NULL) {
    c->app = app;
    c->ps = app->ps;
    c->snapshot = snapshot;
    snprintf(c->hub, sizeof(c->hub), "%s", app->dirhub);
  }
  return c;
}

static void dir_deliver(void *cl, push_pub *pub) {
  (void)cl;
  push_pub_unref(pub); /* nothing is published in the directory */
}

static void dir_changed(const pusher_change *chg, void *ud) {
  pusher_app *app = ud;
  const char *me = app->ps->pusher->loop_id;
  size_t nl = strlen(me);
  if (chg->client == NULL || strncmp(chg->client, me, nl) != 0 ||
      chg->client[nl] != '/') {
    return; /* a snapshot's correction, or another loop's to announce */
  }
  pusher_hook_channel(app, chg->added, chg->user);
}

static void dir_presence_event(void *cl, const char *frame, size_t len) {
  pusher_app *app = cl;
  pusher_join j;
  if (pusher_parse_join(frame, len, &j) == 0) {
    pusher_roster_event(&app->dir, j.leave, j.client, j.user, j.info,
                        dir_changed, app);
    free(j.info);
  }
}

/* This loop's entries, for the channels it has subscribers of. */
static void add_entries(pusher_app *app) {
  size_t pos = 0;
  const char *k;
  void *v;
  while (pusher_map_next(&app->chans, &pos, &k, &v)) {
    pusher_dir_update(v);
  }
}

static void on_snapshot(void *ud, const push_engine_reply *rep) {
  dir_call *c = ud;
  pusher_app *app = c->app;
  uint64_t token = c->token;
  free(c);
  if (app == NULL) {
    return;
  }
  int ok = rep->status == PUSH_ENGINE_OK;
  app->dir_calls--;
  pusher_roster_end(&app->dir, token, ok ? rep->json : NULL, ok ? rep->len : 0,
                    dir_changed, app);
  if (app->dir_state == 2 && ok) {
    /* Everyone's channels are known: now this loop's, whose joins come
     * after the read and change the directory (channel_occupied). */
    app->dir_state = 1;
    app->dir_snapshot_ms = push_now_ms();
    add_entries(app);
  }
}

/* Reads the whole directory again: a node that died took its entries
 * with it (they expired) without a leave push. */
static void snapshot(pusher_app *app) {
  dir_call *c = call_new(app, 1);
  if (c == NULL) {
    return;
  }
  c->token = pusher_roster_begin(&app->dir);
  app->dir_calls++;
  push_buf b = {0};
  int rv = push_engine_presence_get(app->ps->engine, app->dirhub, &b,
                                    on_snapshot, c);
  if (rv != PUSH_ENGINE_PENDING) {
    push_engine_reply rep = {.status = rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK
                                                            : PUSH_ENGINE_DOWN,
                             .json = b.p,
                             .len = b.len};
    on_snapshot(c, &rep);
  }
  push_buf_free(&b);
}

static void on_synced(void *ud, const push_engine_reply *rep) {
  dir_call *c = ud;
  pusher_app *app = c->app;
  if (app == NULL) {
    if (rep->status == PUSH_ENGINE_OK) {
      push_engine_release(c->ps->engine, c->hub);
    }
    free(c);
    return;
  }
  free(c);
  app->dir_calls--;
  if (rep->status != PUSH_ENGINE_OK) {
    app->dir_state = 0; /* the tick tries again */
    return;
  }
  push_server *ps = app->ps;
  push_sub sub = {app, dir_deliver, dir_presence_event};
  push_result r;
  memset(&r, 0, sizeof(r));
  if (push_hub_subscribe(ps->hub, app->dirhub, &sub, NULL, push_now_ms(), &r) <
      0) {
    push_engine_release(ps->engine, app->dirhub);
    app->dir_state = 0;
    return;
  }
  push_result_free(&r);
  /* Everyone's channels, then this loop's: its entries are written once
   * the read is answered (on_snapshot), so their joins come after it and
   * this loop sees them change the directory (channel_occupied). Waiting
   * for the answer keeps that order even when the read and the writes
   * take different connections (over Redis with several loops the read
   * is the channel's owner loop's: engine_threads.c). */
  app->dir_state = 2;
  snapshot(app);
}

void pusher_dir_start(pusher_app *app) {
  if (app->dir_state != 0 || app->dir_calls > 0) {
    return;
  }
  dir_call *c = call_new(app, 0);
  if (c == NULL) {
    return;
  }
  app->dir_calls++;
  int rv = push_engine_sync(app->ps->engine, app->dirhub, on_synced, c);
  if (rv != PUSH_ENGINE_PENDING) {
    push_engine_reply rep = {.status = rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK
                                                            : PUSH_ENGINE_DOWN,
                             .json = NULL,
                             .len = 0};
    on_synced(c, &rep);
  }
}

void pusher_dir_tick(pusher_app *app, int64_t now_ms) {
  if (app->dir_state == 0) {
    pusher_dir_start(app);
  } else if (app->dir_state == 2 && app->dir_calls == 0) {
    snapshot(app); /* the first read failed: again */
  } else if (app->dir_state == 1 && now_ms - app->dir_snapshot_ms >= 30000) {
    app->dir_snapshot_ms = now_ms;
    snapshot(app);
  }
}

void pusher_dir_stop(pusher_app *app) {
  /* Calls in flight find their app gone: on_synced and on_snapshot only
   * free them (and let a sync's reference go). */
  app->dir_calls = 0;
  if (app->dir_state >= 1) {
    push_hub_unsubscribe(app->ps->hub, app->dirhub, app);
    push_engine_release(app->ps->engine, app->dirhub);
  }
  app->dir_state = -1;
  pusher_roster_free(&app->dir);
}

static void entry_key(const pusher_chan *ch, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", ch->app->ps->pusher->loop_id, ch->name);
}

void pusher_dir_update(pusher_chan *ch) {
  pusher_app *app = ch->app;
  if (app->dir_state != 1 || (ch->kind & PUSHER_K_USER)) {
    return;
  }
  char key[PUSHER_HUB_MAX], info[32];
  entry_key(ch, key, sizeof(key));
  snprintf(info, sizeof(info), "{\"n\":%zu}", ch->non);
  push_member m = {key, ch->name, info};
  if (ch->non == 0) {
    push_engine_presence_remove(app->ps->engine, app->dirhub, &m);
  } else {
    push_engine_presence_add(app->ps->engine, app->dirhub, &m, 1);
  }
}

void pusher_dir_refresh(pusher_chan *ch) {
  pusher_app *app = ch->app;
  if (app->dir_state != 1 || (ch->kind & PUSHER_K_USER) || ch->non == 0) {
    return;
  }
  char key[PUSHER_HUB_MAX], info[32];
  entry_key(ch, key, sizeof(key));
  snprintf(info, sizeof(info), "{\"n\":%zu}", ch->non);
  push_member m = {key, ch->name, info};
  push_engine_presence_add(app->ps->engine, app->dirhub, &m, 0);
}

int pusher_dir_counts(const char *json, size_t len, pusher_map *counts) {
  push_json root, clients, k, v, f, n;
  if (push_json_parse(json, len, &root) != 0 ||
      !push_json_get(root, "clients", &clients)) {
    return -1;
  }
  size_t pos = 0;
  while (push_json_next(clients, &pos, &k, &v)) {
    char channel[PUSHER_HUB_MAX];
    uint64_t subs = 0;
    if (!push_json_get(v, "user", &f) ||
        push_json_str(f, channel, sizeof(channel)) <= 0) {
      continue;
    }
    if (push_json_get(v, "info", &f) && push_json_get(f, "n", &n)) {
      push_json_u64(n, &subs);
    }
    uintptr_t have = (uintptr_t)pusher_map_get(counts, channel);
    if (pusher_map_put(counts, channel, (void *)(have + (uintptr_t)subs)) !=
        0) {
      return -1;
    }
  }
  return 0;
}
