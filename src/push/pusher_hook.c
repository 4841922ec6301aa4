/* pusher_hook.c - Pusher's webhooks (docs/pusher.md): channel_occupied,
 * channel_vacated, member_added, member_removed, client_event and
 * cache_miss, sent to each app's webhooks.url through the shared webhook
 * sender (webhook.h): batched as {"time_ms":T,"events":[...]}, signed with
 * the app's secret in X-Pusher-Signature (HMAC-SHA256 of the body, hex),
 * with the app's key in X-Pusher-Key, and retried while the receiver is
 * down.
 *
 * Each event is sent by one node: the one whose connection caused it
 * (client_event, cache_miss) or whose presence entry made the change
 * (occupied and vacated from the directory, pusher_dir.c; members from the
 * channel's roster, pusher_chan.c), so a cluster announces it once. With
 * several loops (--threads) it is the one loop of that node, which sends
 * it through its own sender (each loop has one per app).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/pusher_int.h"
#include "push/webhook.h"

int pusher_hooks_start(push_server *ps, uv_loop_t *uv) {
  pusher_state *st = ps->pusher;
  for (size_t i = 0; i < st->napps; i++) {
    pusher_app *app = &st->apps[i];
    if (app->cfg->webhook_url == NULL) {
      continue;
    }
    char err[256] = "";
    if (st->http == NULL &&
        (st->http = push_http_client_new(uv, err, sizeof(err))) == NULL) {
      push_log(PUSH_LOG_ERROR, "ev=pusher_webhooks_off error=\"%s\"", err);
      return -1;
    }
    char keyline[PUSHER_KEY_MAX + 16];
    snprintf(keyline, sizeof(keyline), "X-Pusher-Key: %s", app->cfg->key);
    const char *headers[] = {keyline};
    push_webhook_config wc;
    push_webhook_config_init(&wc);
    wc.name = "pusher";
    wc.url = app->cfg->webhook_url;
    wc.secret = app->cfg->secret;
    wc.signature_header = "X-Pusher-Signature";
    wc.headers = headers;
    wc.nheaders = 1;
    wc.body = push_webhook_body_pusher;
    app->hook = push_webhook_new(uv, st->http, &wc, err, sizeof(err));
    if (app->hook == NULL) {
      push_log(PUSH_LOG_ERROR, "ev=pusher_webhooks_off app=%s error=\"%s\"",
               app->cfg->id, err);
      return -1;
    }
  }
  return 0;
}

void pusher_hooks_stop(push_server *ps) {
  pusher_state *st = ps->pusher;
  if (st == NULL) {
    return;
  }
  for (size_t i = 0; i < st->napps; i++) {
    push_webhook_del(st->apps[i].hook);
    st->apps[i].hook = NULL;
  }
  push_http_client_del(st->http);
  st->http = NULL;
}

/* Starts {"name":NAME,"channel":CHANNEL into b; returns 0 when the app
 * sends this kind of event. */
static int begin(pusher_app *app, unsigned kind, push_buf *b, const char *name,
                 const char *channel) {
  if (app->hook == NULL || !(app->cfg->hooks & kind)) {
    return -1;
  }
  return push_buf_raw(b, "{\"name\":", 8) ||
                 push_buf_str(b, name, strlen(name)) ||
                 push_buf_raw(b, ",\"channel\":", 11) ||
                 push_buf_str(b, channel, strlen(channel))
             ? -1
             : 0;
}

static void hook_send(pusher_app *app, push_buf *b, int ok) {
  if (ok && push_buf_raw(b, "}", 1) == 0 &&
      push_webhook_add(app->hook, b->p, b->len) == 0) {
    PUSHER_COUNT(app, webhooks);
  }
  push_buf_free(b);
}

void pusher_hook_channel(pusher_app *app, int occupied, const char *channel) {
  push_buf b = {0};
  int ok = begin(app,
                 occupied ? PUSHER_HOOK_CHANNEL_OCCUPIED
                          : PUSHER_HOOK_CHANNEL_VACATED,
                 &b, occupied ? "channel_occupied" : "channel_vacated",
                 channel) == 0;
  hook_send(app, &b, ok);
}

void pusher_hook_member(pusher_app *app, int added, const char *channel,
                        const char *user) {
  push_buf b = {0};
  int ok =
      begin(app, added ? PUSHER_HOOK_MEMBER_ADDED : PUSHER_HOOK_MEMBER_REMOVED,
            &b, added ? "member_added" : "member_removed", channel) == 0 &&
      push_buf_raw(&b, ",\"user_id\":", 11) == 0 &&
      push_buf_str(&b, user, strlen(user)) == 0;
  hook_send(app, &b, ok);
}

void pusher_hook_client_event(pusher_app *app, const char *channel,
                              const char *event, const char *data, size_t dlen,
                              const char *socket_id, const char *user) {
  push_buf b = {0};
  /* data as a string, the way it travels in Pusher events. */
  int ok =
      begin(app, PUSHER_HOOK_CLIENT_EVENT, &b, "client_event", channel) == 0 &&
      push_buf_raw(&b, ",\"event\":", 9) == 0 &&
      push_buf_str(&b, event, strlen(event)) == 0 &&
      push_buf_raw(&b, ",\"data\":", 8) == 0 &&
      push_buf_str(&b, data, dlen) == 0 &&
      push_buf_raw(&b, ",\"socket_id\":", 13) == 0 &&
      push_buf_str(&b, socket_id, strlen(socket_id)) == 0;
  if (ok && user != NULL) {
    ok = push_buf_raw(&b, ",\"user_id\":", 11) == 0 &&
         push_buf_str(&b, user, strlen(user)) == 0;
  }
  hook_send(app, &b, ok);
}

void pusher_hook_cache_miss(pusher_app *app, const char *channel) {
  push_buf b = {0};
  int ok = begin(app, PUSHER_HOOK_CACHE_MISS, &b, "cache_miss", channel) == 0;
  hook_send(app, &b, ok);
}

void pusher_hooks_tick(push_server *ps) {
  pusher_state *st = ps->pusher;
  for (size_t i = 0; st != NULL && i < st->napps; i++) {
    const pusher_app *app = &st->apps[i];
    push_webhook_stats ws = {0};
    if (app->hook != NULL) {
      push_webhook_get_stats(app->hook, &ws);
    }
    atomic_store_explicit(&app->cnt->hook_sent, ws.sent_events,
                          memory_order_relaxed);
    atomic_store_explicit(&app->cnt->hook_dropped, ws.dropped,
                          memory_order_relaxed);
    atomic_store_explicit(&app->cnt->hook_failed, ws.failed_events,
                          memory_order_relaxed);
  }
}

/* Summed over the node's loops: the others' sender figures are as of
 * their last tick (at most a second old). */
void pusher_hooks_metrics(push_server *ps, push_buf *out) {
  pusher_state *st = ps->pusher;
  pusher_hooks_tick(ps);
  static const char head[] =
      "# HELP herald_pusher_webhook_events_total Pusher webhook events, per "
      "app and outcome (queued, sent, dropped: the queue was full, failed: "
      "given up).\n# TYPE herald_pusher_webhook_events_total counter\n";
  push_buf_raw(out, head, sizeof(head) - 1);
  for (size_t i = 0; i < st->napps; i++) {
    const pusher_app *app = &st->apps[i];
    const struct {
      const char *outcome;
      uint64_t n;
    } rows[] = {
        {"queued", pusher_node_sum(st, i, offsetof(pusher_counts, webhooks))},
        {"sent", pusher_node_sum(st, i, offsetof(pusher_counts, hook_sent))},
        {"dropped",
         pusher_node_sum(st, i, offsetof(pusher_counts, hook_dropped))},
        {"failed",
         pusher_node_sum(st, i, offsetof(pusher_counts, hook_failed))}};
    for (size_t k = 0; k < sizeof(rows) / sizeof(rows[0]); k++) {
      char line[160];
      int n = snprintf(line, sizeof(line),
                       "herald_pusher_webhook_events_total{app=\"%s\","
                       "outcome=\"%s\"} %llu\n",
                       app->cfg->id, rows[k].outcome,
                       (unsigned long long)rows[k].n);
      if (n > 0 && (size_t)n < sizeof(line)) {
        push_buf_raw(out, line, (size_t)n);
      }
    }
  }
}
