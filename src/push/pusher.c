/* pusher.c - the WebSocket side of Pusher Channels (protocol 7,
 * docs/pusher.md): /app/{key} on the server's port, the connection's life
 * (connection_established, pings, Pusher's close codes), subscribe and
 * unsubscribe with their authorization, client events, signin, and the
 * server's hooks into all of it (server_int.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "push/metrics.h"
#include "push/pusher_int.h"

#define ST(ps) ((pusher_state *)(ps)->pusher)

/* ---- sending ----------------------------------------------------------- */

pusher_sock *pusher_sock_of(push_client *c) {
  return c->pusher;
}

void pusher_send(pusher_sock *s, const char *p, size_t n) {
  push_client *c = s->c;
  if (c->ws == NULL || c->gone) {
    return;
  }
  int rv = herald_ws_send(c->ws, HERALD_OP_TEXT, p, n);
  if (rv == HERALD_SEND_DROPPED) {
    c->ps->drops++;
    c->ps->slow_disconnects++;
    pusher_error(s, PUSHER_E_OVER_CAPACITY, "slow consumer", 1);
  } else if (rv >= 0) {
    c->ps->messages_out++;
    c->ps->bytes_out += n;
  }
}

/* {"event":"pusher:error","data":{"code":C,"message":M}} */
static int put_error(push_buf *b, int code, const char *message) {
  return push_buf_raw(b,
                      "{\"event\":\"pusher:error\",\"data\":{\"code\":", 39) ||
         (code ? push_buf_u64(b, (uint64_t)code)
               : push_buf_raw(b, "null", 4)) ||
         push_buf_raw(b, ",\"message\":", 11) ||
         push_buf_str(b, message, strlen(message)) || push_buf_raw(b, "}}", 2);
}

static void close_ws(herald_ws *ws, int code, const char *message) {
  size_t n = strlen(message);
  herald_ws_close(ws, (uint16_t)code, message, n > 120 ? 120 : n);
}

void pusher_error(pusher_sock *s, int code, const char *message, int close) {
  push_client *c = s->c;
  if (c->gone || c->ws == NULL) {
    return;
  }
  push_buf b = {0};
  if (put_error(&b, code, message) == 0) {
    pusher_send(s, b.p, b.len);
  }
  push_buf_free(&b);
  if (close && !c->gone) {
    char esc[PUSH_LOG_VAL];
    push_log(PUSH_LOG_INFO,
             "ev=pusher_close app=%s socket=%s code=%d reason=\"%s\"",
             s->app->cfg->id, s->socket_id, code,
             push_log_esc(esc, sizeof(esc), message, strlen(message)));
    c->gone = 1;
    close_ws(c->ws, code, message);
  }
}

void pusher_subscription_error(pusher_sock *s, const char *channel,
                               const char *type, const char *error,
                               int status) {
  push_buf data = {0}, frame = {0};
  PUSHER_COUNT(s->app, subscriptions_refused);
  if (push_buf_raw(&data, "{\"type\":", 8) == 0 &&
      push_buf_str(&data, type, strlen(type)) == 0 &&
      push_buf_raw(&data, ",\"error\":", 9) == 0 &&
      push_buf_str(&data, error, strlen(error)) == 0 &&
      push_buf_raw(&data, ",\"status\":", 10) == 0 &&
      push_buf_u64(&data, (uint64_t)status) == 0 &&
      push_buf_raw(&data, "}", 1) == 0 &&
      pusher_put_event(&frame, "pusher:subscription_error", channel, data.p,
                       data.len, 1) == 0) {
    pusher_send(s, frame.p, frame.len);
  }
  push_buf_free(&data);
  push_buf_free(&frame);
}

/* ---- apps -------------------------------------------------------------- */

pusher_app *pusher_app_by_id(push_server *ps, const char *id) {
  pusher_state *st = ST(ps);
  for (size_t i = 0; st && i < st->napps; i++) {
    if (strcmp(st->apps[i].cfg->id, id) == 0) {
      return &st->apps[i];
    }
  }
  return NULL;
}

static pusher_app *app_by_key(push_server *ps, const char *key, size_t n) {
  pusher_state *st = ST(ps);
  for (size_t i = 0; st && i < st->napps; i++) {
    const char *k = st->apps[i].cfg->key;
    if (strlen(k) == n && memcmp(k, key, n) == 0) {
      return &st->apps[i];
    }
  }
  return NULL;
}

struct pusher_node *push_pusher_node_new(const push_config *cfg, int nthreads,
                                         int *err) {
  const push_pusher_config *pc = &cfg->pusher;
  *err = 0;
  if (pc->napps == 0) {
    return NULL;
  }
  struct pusher_node *n = calloc(1, sizeof(*n));
  if (n == NULL || (n->conns = calloc(pc->napps, sizeof(*n->conns))) == NULL ||
      (n->counts = calloc(pc->napps * (size_t)nthreads, sizeof(*n->counts))) ==
          NULL) {
    push_pusher_node_del(n);
    *err = 1;
    return NULL;
  }
  n->napps = pc->napps;
  n->nthreads = nthreads;
  /* Socket ids must be unique in the cluster and look like Pusher's
   * ("123.456"): a random number per process, then the client's number,
   * which is unique among the node's loops. */
  uint32_t r = 0;
  if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
    r = (uint32_t)push_mono_us();
  }
  snprintf(n->sid_prefix, sizeof(n->sid_prefix), "%" PRIu32,
           100000000u + r % 900000000u);
  return n;
}

void push_pusher_node_del(struct pusher_node *n) {
  if (n != NULL) {
    free((void *)n->conns);
    free(n->counts);
    free(n);
  }
}

/* The number of a client id "<node>-<n>", or -1. */
static int64_t client_number(const char *id) {
  const char *dash = strrchr(id, '-');
  if (dash == NULL || dash[1] < '0' || dash[1] > '9') {
    return -1;
  }
  char *end;
  unsigned long long v = strtoull(dash + 1, &end, 10);
  return *end == 0 && v <= INT64_MAX ? (int64_t)v : -1;
}

int pusher_client_here(const push_server *ps, const char *client) {
  size_t nl = strlen(ps->node);
  if (strncmp(client, ps->node, nl) != 0 || client[nl] != '-') {
    return 0;
  }
  int64_t k = client_number(client);
  return k >= 0 && (ps->nthreads <= 1 || k % ps->nthreads == ps->thread);
}

int push_pusher_start(push_server *ps) {
  const push_pusher_config *pc = &ps->cfg->pusher;
  if (pc->napps == 0) {
    return 0;
  }
  pusher_state *st = calloc(1, sizeof(*st));
  if (st == NULL || ps->pusher_node == NULL ||
      (st->apps = calloc(pc->napps, sizeof(*st->apps))) == NULL) {
    free(st);
    return -1;
  }
  st->napps = pc->napps;
  st->node = ps->pusher_node;
  if (ps->nthreads > 1) {
    snprintf(st->loop_id, sizeof(st->loop_id), "%s.%d", ps->node, ps->thread);
  } else {
    snprintf(st->loop_id, sizeof(st->loop_id), "%s", ps->node);
  }
  for (size_t i = 0; i < pc->napps; i++) {
    pusher_app *a = &st->apps[i];
    a->cfg = &pc->apps[i];
    a->ps = ps;
    a->ok.app = a;
    a->conns = &st->node->conns[i];
    a->cnt = &st->node->counts[(size_t)ps->thread * st->napps + i];
    snprintf(a->dirhub, sizeof(a->dirhub), "pusher;%s;d:channels", a->cfg->id);
  }
  static const pusher_verdict refuse[] = {
      {NULL, PUSHER_E_APP_UNKNOWN, "no app with this key"},
      {NULL, PUSHER_E_PATH, "path not found: connect to /app/KEY"},
      {NULL, PUSHER_E_NO_PROTOCOL, "no protocol version supplied"},
      {NULL, PUSHER_E_VERSION_FORMAT, "invalid protocol version format"},
      {NULL, PUSHER_E_PROTOCOL, "unsupported protocol version (5-7 are)"},
  };
  memcpy(st->refuse, refuse, sizeof(refuse));
  ps->pusher = st;
  for (size_t i = 0; i < st->napps; i++) {
    pusher_dir_start(&st->apps[i]);
  }
  return pusher_hooks_start(ps, herald_loop_uv(ps->loop));
}

void push_pusher_stop(push_server *ps) {
  pusher_hooks_stop(ps);
}

void push_pusher_free(push_server *ps) {
  pusher_state *st = ST(ps);
  if (st == NULL) {
    return;
  }
  pusher_hooks_stop(ps);
  for (size_t i = 0; i < st->napps; i++) {
    pusher_chan_free_all(&st->apps[i]);
    pusher_dir_stop(&st->apps[i]);
    pusher_map_free(&st->apps[i].chans);
  }
  free(st->apps);
  free(st);
  ps->pusher = NULL;
}

int push_pusher_channel(const char *hub_channel) {
  return strncmp(hub_channel, "pusher;", 7) == 0;
}

/* ---- the connection ---------------------------------------------------- */

int push_pusher_upgrade(push_server *ps, herald_ws *ws,
                        const herald_request *req) {
  if (req->path.len < 5 || memcmp(req->path.ptr, "/app/", 5) != 0) {
    return 0;
  }
  pusher_state *st = ST(ps);
  const pusher_verdict *v;
  const char *key = req->path.ptr + 5;
  size_t klen = req->path.len - 5;
  char proto[16];
  if (st == NULL) {
    static const pusher_verdict none = {NULL, PUSHER_E_APP_UNKNOWN,
                                        "no Pusher apps are configured"};
    v = &none;
  } else if (klen == 0 || memchr(key, '/', klen) != NULL) {
    v = &st->refuse[1];
  } else if (app_by_key(ps, key, klen) == NULL) {
    v = &st->refuse[0];
  } else if (!push_query_param(req->query, "protocol", proto, sizeof(proto))) {
    v = &st->refuse[2];
    PUSHER_COUNT(app_by_key(ps, key, klen), refused);
  } else {
    char *end;
    long p = strtol(proto, &end, 10);
    pusher_app *app = app_by_key(ps, key, klen);
    v = &app->ok;
    if (*end != 0 || end == proto) {
      v = &st->refuse[3];
    } else if (p < 5 || p > 7) {
      v = &st->refuse[4];
    }
    if (v != &app->ok) {
      PUSHER_COUNT(app, refused);
    }
  }
  herald_ws_set_data(ws, (void *)v);
  return 1;
}

void push_pusher_open(push_server *ps, herald_ws *ws) {
  const pusher_verdict *v = herald_ws_data(ws);
  herald_ws_set_data(ws, NULL);
  pusher_app *app = v->app;
  int code = v->code;
  const char *msg = v->message;
  /* The node's count is taken first and given back on a refusal, so that
   * loops admitting connections at once never pass the quota together. */
  if (app != NULL && code == 0) {
    uint64_t before = atomic_fetch_add(app->conns, 1);
    if (app->cfg->max_connections &&
        before + app->cluster_conns >= app->cfg->max_connections) {
      atomic_fetch_sub(app->conns, 1);
      code = PUSHER_E_OVER_QUOTA;
      msg = "the app is over its connection quota";
    }
  }
  if (app == NULL || code != 0) {
    if (app) {
      PUSHER_COUNT(app, refused);
    }
    push_buf b = {0};
    if (put_error(&b, code, msg) == 0) {
      herald_ws_send(ws, HERALD_OP_TEXT, b.p, b.len);
    }
    push_buf_free(&b);
    push_log(PUSH_LOG_INFO, "ev=pusher_refused code=%d reason=\"%s\"", code,
             msg);
    close_ws(ws, code, msg);
    return;
  }
  push_client *c = push_client_new(ps);
  pusher_sock *s = c ? calloc(1, sizeof(*s)) : NULL;
  if (s == NULL) {
    if (c) {
      push_client_free(c);
    }
    atomic_fetch_sub(app->conns, 1);
    close_ws(ws, PUSHER_E_OVER_CAPACITY, "out of memory");
    return;
  }
  c->ws = ws;
  c->pusher = s;
  herald_ws_set_data(ws, c);
  s->c = c;
  s->app = app;
  s->opened_ms = push_now_ms();
  /* The prefix has 9 digits; the number at most 19: 29 bytes. */
  snprintf(s->socket_id, sizeof(s->socket_id), "%.9s.%" PRId64,
           ST(ps)->node->sid_prefix, client_number(c->id));
  PUSHER_COUNT(app, connects);
  char data[96];
  snprintf(data, sizeof(data), "{\"socket_id\":\"%s\",\"activity_timeout\":%u}",
           s->socket_id, (unsigned)app->cfg->activity_timeout);
  push_buf b = {0};
  if (pusher_put_event(&b, "pusher:connection_established", NULL, data,
                       strlen(data), 0) == 0) {
    pusher_send(s, b.p, b.len);
  }
  push_buf_free(&b);
  push_log(PUSH_LOG_INFO, "ev=pusher_connect app=%s socket=%s client=%s",
           app->cfg->id, s->socket_id, c->id);
}

void push_pusher_leave_all(push_client *c) {
  pusher_sock *s = c->pusher;
  while (s->nsubs > 0) {
    pusher_chan_unsubscribe(s->subs[s->nsubs - 1]);
  }
}

void push_pusher_closed(push_client *c) {
  pusher_sock *s = c->pusher;
  push_pusher_leave_all(c);
  atomic_fetch_sub(s->app->conns, 1);
  free(s->subs);
  free(s->user);
  free(s->user_info);
  free(s);
  c->pusher = NULL;
}

void push_pusher_disconnect(push_client *c, int code, const char *reason) {
  int pcode = code == PUSH_D_SLOW           ? PUSHER_E_OVER_CAPACITY
              : code == PUSH_D_FORCED       ? PUSHER_E_UNAUTHORIZED
              : code >= 4000 && code < 4500 ? code
                                            : PUSHER_E_RECONNECT;
  pusher_error(c->pusher, pcode, reason, 1);
}

/* ---- subscribe --------------------------------------------------------- */

/* A string member of an object, unescaped into out. Returns its length or
 * -1 (absent, not a string, too long). */
static long get_str(push_json o, const char *key, char *out, size_t cap) {
  push_json v;
  if (!push_json_get(o, key, &v) || push_json_type_of(v) != PUSH_JSON_STRING) {
    return -1;
  }
  return push_json_str(v, out, cap);
}

/* Reads channel_data (a JSON text in a string): user_id (a string or a
 * number) and user_info. Returns NULL, or why it is refused. */
static const char *read_channel_data(const pusher_app *app, const char *cd,
                                     size_t n, char *user, size_t ucap,
                                     char **info) {
  push_json root, v;
  if (push_json_parse(cd, n, &root) != 0 ||
      push_json_type_of(root) != PUSH_JSON_OBJECT) {
    return "channel_data must be a JSON object";
  }
  if (!push_json_get(root, "user_id", &v)) {
    return "channel_data has no user_id";
  }
  if (push_json_type_of(v) == PUSH_JSON_NUMBER) {
    if (v.n >= ucap) {
      return "user_id is too long";
    }
    memcpy(user, v.p, v.n);
    user[v.n] = 0;
  } else if (push_json_type_of(v) != PUSH_JSON_STRING ||
             push_json_str(v, user, ucap) <= 0) {
    return "user_id must be a non-empty string of at most 128 bytes";
  }
  *info = NULL;
  if (push_json_get(root, "user_info", &v) &&
      push_json_type_of(v) != PUSH_JSON_NULL) {
    if (v.n > app->cfg->max_user_info_bytes) {
      return "user_info is too large";
    }
    if ((*info = strndup(v.p, v.n)) == NULL) {
      return "out of memory";
    }
  }
  return NULL;
}

static void ev_subscribe(pusher_sock *s, push_json data) {
  const pusher_app *app = s->app;
  char channel[PUSHER_CHANNEL_MAX + 64];
  long n = get_str(data, "channel", channel, sizeof(channel));
  int kind = n > 0 ? pusher_channel_kind(channel, (size_t)n) : -1;
  if (kind < 0) {
    pusher_subscription_error(s, n > 0 ? channel : "", "InvalidChannel",
                              "invalid channel name (at most 164 of "
                              "A-Z a-z 0-9 _ - = @ , . ;)",
                              400);
    return;
  }
  pusher_subn *have = pusher_sock_find(s, channel);
  if (have != NULL && have->state != SUBN_INTERNAL) {
    pusher_error(s, 0, "existing subscription to this channel", 0);
    return;
  }
  if (have == NULL && s->nsubs >= app->cfg->max_channels) {
    pusher_subscription_error(s, channel, "LimitReached",
                              "too many channels on this connection", 403);
    return;
  }
  if (kind & PUSHER_K_USER) {
    if (s->user == NULL || strcmp(s->user, channel + 16) != 0) {
      pusher_subscription_error(s, channel, "AuthError",
                                "sign in as this user first", 401);
      return;
    }
    pusher_chan_subscribe(s, channel, (unsigned)kind, NULL, NULL, 0);
    return;
  }
  char user[PUSHER_USER_ID_MAX + 1] = "";
  char *info = NULL;
  if (kind & PUSHER_K_PRIVATE) {
    char auth[PUSHER_KEY_MAX + 80];
    long alen = get_str(data, "auth", auth, sizeof(auth));
    push_json cdv;
    int has_cd = push_json_get(data, "channel_data", &cdv) &&
                 push_json_type_of(cdv) == PUSH_JSON_STRING;
    char *cd = NULL;
    long cdlen = 0;
    if (has_cd) {
      size_t cap = cdv.n + 1;
      cd = malloc(cap);
      cdlen = cd ? push_json_str(cdv, cd, cap) : -1;
    }
    /* socket_id:channel[:channel_data] */
    push_buf text = {0};
    int built = push_buf_raw(&text, s->socket_id, strlen(s->socket_id)) == 0 &&
                push_buf_raw(&text, ":", 1) == 0 &&
                push_buf_raw(&text, channel, (size_t)n) == 0 &&
                (!has_cd || (cdlen >= 0 && push_buf_raw(&text, ":", 1) == 0 &&
                             push_buf_raw(&text, cd, (size_t)cdlen) == 0));
    int ok = built && alen > 0 &&
             pusher_auth_ok(app->cfg, auth, (size_t)alen, text.p, text.len);
    push_buf_free(&text);
    if (!ok) {
      free(cd);
      s->c->ps->auth_failures++;
      pusher_subscription_error(
          s, channel, "AuthError",
          alen <= 0 ? "this channel needs an auth signature"
                    : "invalid signature: expected HMAC-SHA256 of "
                      "socket_id:channel[:channel_data] under the app's secret",
          401);
      return;
    }
    if (kind & PUSHER_K_PRESENCE) {
      const char *why = NULL;
      if (has_cd) {
        why = read_channel_data(app, cd, (size_t)cdlen, user, sizeof(user),
                                &info);
      } else if (s->user != NULL) {
        snprintf(user, sizeof(user), "%s", s->user);
        info = s->user_info ? strdup(s->user_info) : NULL;
      } else {
        why = "presence channels need channel_data (or a signed-in user)";
      }
      if (why != NULL) {
        free(cd);
        pusher_subscription_error(s, channel, "InvalidChannelData", why, 400);
        return;
      }
    }
    free(cd);
  }
  pusher_chan_subscribe(s, channel, (unsigned)kind,
                        kind & PUSHER_K_PRESENCE ? user : NULL, info, 0);
  free(info);
}

static void ev_unsubscribe(pusher_sock *s, push_json data) {
  char channel[PUSHER_CHANNEL_MAX + 64];
  if (get_str(data, "channel", channel, sizeof(channel)) <= 0) {
    pusher_error(s, 0, "pusher:unsubscribe needs a channel", 0);
    return;
  }
  pusher_subn *sn = pusher_sock_find(s, channel);
  if (sn == NULL) {
    return; /* Pusher ignores it too */
  }
  if (sn->ch->kind & PUSHER_K_USER) {
    /* Still signed in: keep the user channel for terminate_connections. */
    if (sn->state == SUBN_ON) {
      sn->ch->non--; /* user channels are not in the directory */
    }
    sn->state = SUBN_INTERNAL;
    return;
  }
  pusher_chan_unsubscribe(sn);
}

/* ---- signin ------------------------------------------------------------ */

static void ev_signin(pusher_sock *s, push_json data) {
  char auth[PUSHER_KEY_MAX + 80];
  push_json udv, v;
  long alen = get_str(data, "auth", auth, sizeof(auth));
  if (!push_json_get(data, "user_data", &udv) ||
      push_json_type_of(udv) != PUSH_JSON_STRING || alen <= 0) {
    pusher_error(s, PUSHER_E_UNAUTHORIZED,
                 "pusher:signin needs auth and user_data", 1);
    return;
  }
  size_t cap = udv.n + 1;
  char *ud = malloc(cap);
  long udlen = ud ? push_json_str(udv, ud, cap) : -1;
  push_buf text = {0};
  int ok = udlen >= 0 &&
           push_buf_raw(&text, s->socket_id, strlen(s->socket_id)) == 0 &&
           push_buf_raw(&text, "::user::", 8) == 0 &&
           push_buf_raw(&text, ud, (size_t)udlen) == 0 &&
           pusher_auth_ok(s->app->cfg, auth, (size_t)alen, text.p, text.len);
  push_buf_free(&text);
  char user[PUSHER_USER_ID_MAX + 1];
  push_json root;
  const char *why = NULL;
  if (!ok) {
    why = "signin refused: invalid signature";
  } else if (push_json_parse(ud, (size_t)udlen, &root) != 0 ||
             push_json_type_of(root) != PUSH_JSON_OBJECT ||
             get_str(root, "id", user, sizeof(user)) <= 0) {
    why = "user_data must be a JSON object with a string id";
  } else if (s->user != NULL && strcmp(s->user, user) != 0) {
    why = "already signed in as another user";
  }
  if (why != NULL) {
    free(ud);
    s->c->ps->auth_failures++;
    pusher_error(s, PUSHER_E_UNAUTHORIZED, why, 1);
    return;
  }
  char *info = NULL;
  if (push_json_get(root, "user_info", &v) &&
      push_json_type_of(v) != PUSH_JSON_NULL) {
    info = strndup(v.p, v.n);
  }
  int fresh = s->user == NULL;
  if (fresh) {
    s->user = strdup(user);
    free(s->user_info);
    s->user_info = info;
  } else {
    free(info);
  }
  push_buf d = {0}, frame = {0};
  if (push_buf_raw(&d, "{\"user_data\":", 13) == 0 &&
      push_buf_str(&d, ud, (size_t)udlen) == 0 &&
      push_buf_raw(&d, "}", 1) == 0 &&
      pusher_put_event(&frame, "pusher:signin_success", NULL, d.p, d.len, 0) ==
          0) {
    pusher_send(s, frame.p, frame.len);
  }
  push_buf_free(&d);
  push_buf_free(&frame);
  free(ud);
  if (fresh && s->user != NULL) {
    /* The user's channel: events to the user, and terminate_connections. */
    char name[16 + PUSHER_USER_ID_MAX + 1];
    snprintf(name, sizeof(name), "#server-to-user-%s", s->user);
    pusher_chan_subscribe(s, name, PUSHER_K_USER, NULL, NULL, 1);
  }
  char esc[PUSH_LOG_VAL];
  push_log(PUSH_LOG_INFO, "ev=pusher_signin app=%s socket=%s user=\"%s\"",
           s->app->cfg->id, s->socket_id,
           push_log_esc(esc, sizeof(esc), user, strlen(user)));
}

/* ---- client events ----------------------------------------------------- */

/* A client event refused: 4301, counted; the connection stays. */
static void refuse_client_event(pusher_sock *s, const char *why, int close) {
  PUSHER_COUNT(s->app, client_events_refused);
  pusher_error(s, PUSHER_E_CLIENT_EVENT, why, close);
}

static void ev_client(pusher_sock *s, const char *event, push_json root) {
  pusher_app *app = s->app;
  push_server *ps = app->ps;
  char channel[PUSHER_CHANNEL_MAX + 64];
  push_json data;
  if (!app->cfg->client_messages) {
    refuse_client_event(s,
                        "client events are not enabled for this app "
                        "(enable_client_messages)",
                        0);
    return;
  }
  if (get_str(root, "channel", channel, sizeof(channel)) <= 0) {
    refuse_client_event(s, "a client event needs a channel", 0);
    return;
  }
  pusher_subn *sn = pusher_sock_find(s, channel);
  if (sn == NULL || sn->state != SUBN_ON) {
    refuse_client_event(s, "client events need a subscription to the channel",
                        0);
    return;
  }
  unsigned k = sn->ch->kind;
  if (!(k & PUSHER_K_PRIVATE) || (k & PUSHER_K_ENCRYPTED)) {
    refuse_client_event(
        s, "client events are for private and presence channels", 0);
    return;
  }
  if (strlen(event) > PUSHER_EVENT_MAX) {
    refuse_client_event(s, "event name too long", 0);
    return;
  }
  if (!push_json_get(root, "data", &data)) {
    data.p = "null";
    data.n = 4;
  }
  if (data.n > app->cfg->max_event_bytes) {
    refuse_client_event(s, "event data too large", 0);
    return;
  }
  push_rate rate = {app->cfg->client_events_per_s,
                    app->cfg->client_events_per_s};
  if (!push_bucket_take(&s->rl_events, &rate,
                        (int64_t)(push_mono_us() / 1000))) {
    refuse_client_event(s, "client event rejected: over the rate limit", 0);
    return;
  }
  push_buf ev = {0};
  int rv = push_buf_raw(&ev, "{\"event\":", 9) ||
           push_buf_str(&ev, event, strlen(event)) ||
           push_buf_raw(&ev, ",\"channel\":", 11) ||
           push_buf_str(&ev, channel, strlen(channel)) ||
           push_buf_raw(&ev, ",\"data\":", 8) ||
           push_buf_raw(&ev, data.p, data.n);
  if ((k & PUSHER_K_PRESENCE) && sn->user) {
    rv = rv || push_buf_raw(&ev, ",\"user_id\":", 11) ||
         push_buf_str(&ev, sn->user, strlen(sn->user));
  }
  rv = rv || push_buf_raw(&ev, "}", 1);
  if (rv == 0) {
    int prv =
        pusher_publish(ps, sn->ch->hub, s->socket_id, ev.p, ev.len, NULL, ps);
    if (prv == PUSH_ENGINE_DOWN) {
      ps->engine_unavailable++;
      pusher_error(s, PUSHER_E_SERVER, PUSH_ENGINE_DOWN_MSG, 0);
    } else if (prv == PUSH_ENGINE_ERROR) {
      pusher_error(s, PUSHER_E_SERVER, "out of memory", 0);
    } else {
      PUSHER_COUNT(app, client_events);
      pusher_hook_client_event(app, channel, event, data.p, data.n,
                               s->socket_id,
                               (k & PUSHER_K_PRESENCE) ? sn->user : NULL);
    }
  }
  push_buf_free(&ev);
}

/* ---- messages ---------------------------------------------------------- */

/* Subscribes count against rate_limits.subscribes, as herald's do. */
static int within_sub_rate(push_client *c) {
  if (push_bucket_take(&c->rl_sub, &c->ps->cfg->rate_subscribes,
                       (int64_t)(push_mono_us() / 1000))) {
    return 1;
  }
  c->ps->limited_subscribes++;
  pusher_error(c->pusher, PUSHER_E_CLIENT_EVENT,
               "too many subscribes: slow down", 0);
  return 0;
}

void push_pusher_message(push_client *c, herald_opcode op, const uint8_t *msg,
                         size_t len) {
  pusher_sock *s = c->pusher;
  push_server *ps = c->ps;
  if (op != HERALD_OP_TEXT) {
    pusher_error(s, 0, "messages are JSON text frames", 0);
    return;
  }
  if (!push_bucket_take(&c->rl_cmd, &ps->cfg->rate_commands,
                        (int64_t)(push_mono_us() / 1000))) {
    ps->limited_commands++;
    pusher_error(s, PUSHER_E_CLIENT_EVENT, "too many messages: slow down", 0);
    return;
  }
  push_json root, v, data;
  push_json_error jerr;
  char event[PUSHER_EVENT_MAX + 64];
  if (push_json_parse_ex((const char *)msg, len, &root, &jerr) != 0 ||
      push_json_type_of(root) != PUSH_JSON_OBJECT) {
    pusher_error(s, 0,
                 jerr.fault == PUSH_JSON_DUPLICATE
                     ? "invalid message: duplicate key in JSON object"
                     : "invalid message: not a JSON object",
                 0);
    return;
  }
  if (get_str(root, "event", event, sizeof(event)) <= 0) {
    pusher_error(s, 0, "invalid message: no event name", 0);
    return;
  }
  if (strncmp(event, "client-", 7) == 0) {
    ev_client(s, event, root);
    return;
  }
  /* pusher:* events carry an object, or the same as a JSON text. */
  char *text = NULL;
  data.p = "{}";
  data.n = 2;
  if (push_json_get(root, "data", &v)) {
    if (push_json_type_of(v) == PUSH_JSON_STRING) {
      text = malloc(v.n + 1);
      long n = text ? push_json_str(v, text, v.n + 1) : -1;
      if (n < 0 || push_json_parse(text, (size_t)n, &data) != 0) {
        data.p = "{}";
        data.n = 2;
      }
    } else {
      data = v;
    }
  }
  if (strcmp(event, "pusher:ping") == 0) {
    static const char pong[] = "{\"event\":\"pusher:pong\",\"data\":{}}";
    pusher_send(s, pong, sizeof(pong) - 1);
  } else if (strcmp(event, "pusher:pong") == 0) {
    /* an answer to our ping: nothing to do */
  } else if (strcmp(event, "pusher:subscribe") == 0) {
    if (within_sub_rate(c)) {
      ev_subscribe(s, data);
    }
  } else if (strcmp(event, "pusher:unsubscribe") == 0) {
    ev_unsubscribe(s, data);
  } else if (strcmp(event, "pusher:signin") == 0) {
    ev_signin(s, data);
  } else {
    char esc[PUSH_LOG_VAL];
    push_log(PUSH_LOG_DEBUG, "ev=pusher_unknown socket=%s event=\"%s\"",
             s->socket_id,
             push_log_esc(esc, sizeof(esc), event, strlen(event)));
    pusher_error(s, 0, "unknown event", 0);
  }
  free(text);
}

/* ---- the server's hooks ------------------------------------------------ */

void push_pusher_api(push_server *ps, herald_http *h, const herald_request *req,
                     const uint8_t *body, size_t len) {
  if (ST(ps) == NULL) {
    herald_header ct = {{"Content-Type", 12}, {"text/plain", 10}};
    static const char msg[] = "no Pusher apps are configured";
    herald_http_respond(h, 404, &ct, 1, msg, sizeof(msg) - 1);
    return;
  }
  pusher_api(ps, h, req, body, len);
}

/* Other nodes' connections per app, from the node list (each node's entry
 * carries its counts: push_pusher_node_json). */
static void on_nodes(void *ud, const push_engine_reply *rep) {
  push_server *ps = ud;
  pusher_state *st = ST(ps);
  push_json root, node, v, apps;
  if (st == NULL || rep->status != PUSH_ENGINE_OK ||
      push_json_parse(rep->json, rep->len, &root) != 0) {
    return;
  }
  for (size_t i = 0; i < st->napps; i++) {
    st->apps[i].cluster_conns = 0;
  }
  size_t pos = 0;
  while (push_json_next(root, &pos, NULL, &node)) {
    char name[32];
    if (!push_json_get(node, "name", &v) ||
        push_json_str(v, name, sizeof(name)) < 0 ||
        strcmp(name, ps->node) == 0 || !push_json_get(node, "pusher", &apps)) {
      continue;
    }
    for (size_t i = 0; i < st->napps; i++) {
      uint64_t n;
      if (push_json_get(apps, st->apps[i].cfg->id, &v) &&
          push_json_u64(v, &n) == 0) {
        st->apps[i].cluster_conns += n;
      }
    }
  }
}

/* Apps with user_authentication_timeout: a connection that has not signed
 * in by then is closed with 4009, as Pusher does. */
static void signin_deadlines(push_server *ps, int64_t now_ms) {
  for (push_client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    pusher_sock *s = c->pusher;
    if (s == NULL || c->gone || s->user != NULL ||
        s->app->cfg->user_auth_timeout == 0 ||
        now_ms - s->opened_ms <
            (int64_t)s->app->cfg->user_auth_timeout * 1000) {
      continue;
    }
    PUSHER_COUNT(s->app, signin_timeouts);
    pusher_error(s, PUSHER_E_UNAUTHORIZED,
                 "user authentication timeout: no pusher:signin in time", 1);
  }
}

void push_pusher_tick(push_server *ps, int64_t now_ms) {
  pusher_state *st = ST(ps);
  if (st == NULL) {
    return;
  }
  for (size_t i = 0; i < st->napps; i++) {
    if (st->apps[i].cfg->user_auth_timeout != 0) {
      signin_deadlines(ps, now_ms);
      break;
    }
  }
  for (size_t i = 0; i < st->napps; i++) {
    pusher_dir_tick(&st->apps[i], now_ms);
    pusher_chan_tick(&st->apps[i], now_ms);
  }
  pusher_hooks_tick(ps);
  uint32_t every = ps->engine->presence_refresh_ms;
  if (every && now_ms - st->last_refresh >= (int64_t)every) {
    st->last_refresh = now_ms;
    for (size_t i = 0; i < st->napps; i++) {
      pusher_chan_refresh(&st->apps[i]);
    }
  }
  int quota = 0;
  for (size_t i = 0; i < st->napps; i++) {
    quota |= st->apps[i].cfg->max_connections != 0;
  }
  if (quota) {
    push_buf b = {0};
    int rv = push_engine_nodes(ps->engine, &b, on_nodes, ps);
    if (rv == PUSH_ENGINE_OK) {
      push_engine_reply rep = {
          .status = PUSH_ENGINE_OK, .json = b.p, .len = b.len};
      on_nodes(ps, &rep);
    }
    push_buf_free(&b);
  }
}

/* The node's counts (all its loops'), whichever loop writes the entry: the
 * node list must hold one entry per node, under ps->node, which on_nodes
 * skips (its own loops are counted in pusher_node, exactly). */
void push_pusher_node_json(push_server *ps, push_buf *b) {
  pusher_state *st = ST(ps);
  if (st == NULL) {
    return;
  }
  push_buf_raw(b, ",\"pusher\":{", 11);
  for (size_t i = 0; i < st->napps; i++) {
    push_buf_raw(b, i ? "," : "", i ? 1 : 0);
    push_buf_str(b, st->apps[i].cfg->id, strlen(st->apps[i].cfg->id));
    push_buf_raw(b, ":", 1);
    push_buf_u64(b, atomic_load(st->apps[i].conns));
  }
  push_buf_raw(b, "}", 1);
}

uint64_t pusher_node_sum(const pusher_state *st, size_t i, size_t off) {
  uint64_t v = 0;
  for (int t = 0; t < st->node->nthreads; t++) {
    const char *base =
        (const char *)&st->node->counts[(size_t)t * st->napps + i];
    v += atomic_load_explicit((const _Atomic uint64_t *)(base + off),
                              memory_order_relaxed);
  }
  return v;
}

void push_pusher_metrics(push_server *ps, push_buf *b) {
  pusher_state *st = ST(ps);
  if (st == NULL) {
    return;
  }
  /* size_t 0: the node's connections, not a sum of counts. */
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } m[] = {
      {"herald_pusher_connections", "gauge",
       "Pusher connections on this node, per app.", 0},
      {"herald_pusher_connects_total", "counter",
       "Pusher connections established, per app.",
       offsetof(pusher_counts, connects)},
      {"herald_pusher_refused_total", "counter",
       "Pusher connections refused after the handshake (4001-4008, 4004), "
       "per app.",
       offsetof(pusher_counts, refused)},
      {"herald_pusher_api_events_total", "counter",
       "Events triggered through the HTTP API (one per channel), per app.",
       offsetof(pusher_counts, api_events)},
      {"herald_pusher_client_events_total", "counter",
       "Client events relayed, per app.",
       offsetof(pusher_counts, client_events)},
      {"herald_pusher_client_events_refused_total", "counter",
       "Client events refused with 4301 (not enabled, not subscribed, not "
       "a private or presence channel, too large, over the rate), per app.",
       offsetof(pusher_counts, client_events_refused)},
      {"herald_pusher_subscriptions_refused_total", "counter",
       "Subscriptions refused with pusher:subscription_error, per app.",
       offsetof(pusher_counts, subscriptions_refused)},
      {"herald_pusher_channels", "gauge",
       "Pusher channels with subscribers on this node, per app (with "
       "several loops: once per loop that has subscribers).",
       offsetof(pusher_counts, channels)},
      {"herald_pusher_signin_timeouts_total", "counter",
       "Connections closed with 4009 for not signing in within "
       "user_authentication_timeout, per app.",
       offsetof(pusher_counts, signin_timeouts)},
  };
  pusher_hooks_metrics(ps, b);
  char line[512];
  for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
    int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n",
                     m[k].name, m[k].help, m[k].name, m[k].type);
    if (n < 0 || (size_t)n >= sizeof(line)) {
      continue;
    }
    push_buf_raw(b, line, (size_t)n);
    for (size_t i = 0; i < st->napps; i++) {
      uint64_t v = k == 0 ? atomic_load(st->apps[i].conns)
                          : pusher_node_sum(st, i, m[k].off);
      n = snprintf(line, sizeof(line), "%s{app=\"%s\"} %" PRIu64 "\n",
                   m[k].name, st->apps[i].cfg->id, v);
      if (n > 0 && (size_t)n < sizeof(line)) {
        push_buf_raw(b, line, (size_t)n);
      }
    }
  }
}
