/* commands.c - the WebSocket side of `herald serve`: the upgrade check, and
 * each command of docs/protocol.md (connect, subscribe, unsubscribe,
 * publish, presence, history, ping) from a client's frame to its reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "push/server_int.h"

/* Bytes of pushes one loop pass may queue (push_hub_pending_bytes) before
 * the client whose commands caused them is paused until they are flushed
 * and written (ws_message): 16 KiB per client, so that each subscriber's
 * write carries many pushes (one syscall for many frames is what makes
 * fan-out fast), within 8..256 MiB. */
#define PASS_FANOUT_PER_CLIENT (16u << 10)
#define PASS_FANOUT_MIN ((uint64_t)8 << 20)
#define PASS_FANOUT_MAX ((uint64_t)256 << 20)

static uint64_t pass_budget(const push_server *ps) {
  uint64_t b = (uint64_t)ps->nclients * PASS_FANOUT_PER_CLIENT;
  return b < PASS_FANOUT_MIN   ? PASS_FANOUT_MIN
         : b > PASS_FANOUT_MAX ? PASS_FANOUT_MAX
                               : b;
}

/* Takes a token from bucket b at rate r; over the rate, answers 110
 * (temporary: the client may retry later) and returns 0. */
static int within_rate(push_client *c, uint64_t id, push_bucket *b,
                       const push_rate *r, uint64_t *counter) {
  if (push_bucket_take(b, r, (int64_t)(push_mono_us() / 1000))) {
    return 1;
  }
  (*counter)++;
  push_client_error(c, id, PUSH_E_TOO_MANY, "too many requests: slow down", 1);
  return 0;
}

/* Room for channel on this node (max_channels_total), else answers 106. */
static int channel_room(push_client *c, uint64_t id, const char *channel) {
  if (push_channel_room(c->ps, channel)) {
    return 1;
  }
  push_client_error(c, id, PUSH_E_LIMIT, "too many channels on this node", 1);
  return 0;
}

static void reply_empty(push_client *c, uint64_t id) {
  static const push_buf empty = {(char *)"{}", 2, 2};
  push_client_reply(c, id, &empty);
}

/* ---- connect ---------------------------------------------------------- */

/* Verifies a JWT; on failure answers and disconnects. Returns 0 or -1. */
static int check_token(push_client *c, uint64_t id, push_json tok,
                       push_jwt_claims *claims) {
  char text[8192];
  long n = push_json_str(tok, text, sizeof(text));
  int rv = n < 0 ? PUSH_JWT_MALFORMED
                 : push_jwt_verify(text, (size_t)n, &c->ps->keys,
                                   push_now_ms() / 1000,
                                   c->ps->cfg->jwt_require_exp, claims);
  if (rv == PUSH_JWT_OK) {
    return 0;
  }
  c->ps->auth_failures++;
  if (rv == PUSH_JWT_EXPIRED) {
    push_client_error(c, id, PUSH_E_TOKEN_EXPIRED, "token expired", 0);
    push_client_disconnect(c, PUSH_D_TOKEN_EXPIRED, "token expired");
  } else {
    push_client_error(c, id, PUSH_E_UNAUTHORIZED,
                      rv == PUSH_JWT_BAD_SIG   ? "invalid token signature"
                      : rv == PUSH_JWT_NO_EXP  ? "token has no exp"
                      : rv == PUSH_JWT_NOT_YET ? "token not valid yet (nbf)"
                                               : "malformed token",
                      0);
    push_client_disconnect(c, PUSH_D_INVALID_TOKEN, "invalid token");
  }
  return -1;
}

static void cmd_connect(push_client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  if (c->connected) {
    push_client_error(c, cmd->id, PUSH_E_BAD_REQUEST, "already connected", 0);
    return;
  }
  if (cmd->token.n > 0) {
    push_jwt_claims cl;
    memset(&cl, 0, sizeof(cl));
    if (check_token(c, cmd->id, cmd->token, &cl) != 0) {
      return;
    }
    push_client_take_claims(c, &cl);
  } else if (!ps->cfg->anonymous) {
    ps->auth_failures++;
    push_client_error(c, cmd->id, PUSH_E_UNAUTHORIZED, "a token is required",
                      0);
    push_client_disconnect(c, PUSH_D_INVALID_TOKEN, "token required");
    return;
  }
  if (c->info == NULL && cmd->name.n > 0) {
    /* A name the client gives itself is shown in presence as info.name;
     * it is never taken for the user id, which only a token can set. */
    char name[128];
    long n = push_json_str(cmd->name, name, sizeof(name));
    push_buf b = {0};
    if (n > 0 && push_buf_raw(&b, "{\"name\":", 8) == 0 &&
        push_buf_str(&b, name, (size_t)n) == 0 &&
        push_buf_raw(&b, "}", 1) == 0 && push_buf_raw(&b, "", 1) == 0) {
      c->info = b.p; /* NUL-terminated by the last append */
      b.p = NULL;
    }
    push_buf_free(&b);
  }
  c->connected = 1;
  ps->connects_total++;
  push_buf b = {0};
  push_buf_raw(&b, "{\"client\":", 10);
  push_buf_str(&b, c->id, strlen(c->id));
  push_buf_raw(&b, ",\"user\":", 8);
  push_buf_str(&b, c->user, strlen(c->user));
  push_buf_raw(&b, ",\"version\":\"" HERALD_VERSION_STRING "\",\"ping\":",
               sizeof(",\"version\":\"" HERALD_VERSION_STRING "\",\"ping\":") -
                   1);
  push_buf_u64(&b, ps->cfg->ping_interval_s);
  push_buf_raw(&b, "}", 1);
  push_client_reply(c, cmd->id, &b);
  push_buf_free(&b);
  char esc[PUSH_LOG_VAL];
  push_log(PUSH_LOG_INFO, "ev=connect client=%s user=\"%s\"", c->id,
           push_log_esc(esc, sizeof(esc), c->user, strlen(c->user)));
}

/* ---- subscribe and unsubscribe ---------------------------------------- */

int push_may_subscribe(push_client *c, const push_ns *ns, const char *channel,
                       push_json token) {
  for (size_t i = 0; i < c->nallowed; i++) {
    if (strcmp(c->allowed[i], channel) == 0) {
      return 1;
    }
  }
  if (!ns->private_channels) {
    return 1;
  }
  if (token.n == 0) {
    return 0;
  }
  push_jwt_claims cl;
  memset(&cl, 0, sizeof(cl));
  char text[8192];
  long n = push_json_str(token, text, sizeof(text));
  int ok = n >= 0 &&
           push_jwt_verify(text, (size_t)n, &c->ps->keys, push_now_ms() / 1000,
                           1, &cl) == PUSH_JWT_OK &&
           strcmp(cl.sub, c->user) == 0 && strcmp(cl.channel, channel) == 0;
  if (n >= 0 && ok) {
    push_jwt_claims_free(&cl);
  } else if (cl.info || cl.channels) {
    push_jwt_claims_free(&cl);
  }
  return ok;
}

static void subscribe_done(push_op *op, int status);

static void cmd_subscribe(push_client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  const push_ns *ns = push_hub_ns(ps->hub, cmd->channel);
  if (ns == NULL) {
    push_client_error(c, cmd->id, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace",
                      0);
    return;
  }
  if (push_client_subscribed(c, cmd->channel) ||
      push_op_pending_sub(c, cmd->channel) != NULL) {
    push_client_error(c, cmd->id, PUSH_E_ALREADY_SUBSCRIBED,
                      "already subscribed", 0);
    return;
  }
  if (!within_rate(c, cmd->id, &c->rl_sub, &ps->cfg->rate_subscribes,
                   &ps->limited_subscribes)) {
    return;
  }
  if (c->nsubs + push_op_npending_subs(c) >= ps->cfg->max_channels) {
    push_client_error(c, cmd->id, PUSH_E_LIMIT, "too many channels", 0);
    return;
  }
  if (!push_may_subscribe(c, ns, cmd->channel, cmd->token)) {
    ps->auth_failures++;
    push_client_error(c, cmd->id, PUSH_E_PERMISSION,
                      "this channel needs a valid subscription token", 0);
    return;
  }
  if (!channel_room(c, cmd->id, cmd->channel)) {
    return;
  }
  push_op *op = push_op_new(ps, c, NULL, cmd->id, cmd->channel);
  if (op == NULL) {
    push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  op->synced = subscribe_done;
  op->subscribe = 1;
  op->since = cmd->since;
  push_op_sync(op);
}

/* The second half of subscribe, once the channel is current. */
static void subscribe_done(push_op *op, int status) {
  push_server *ps = op->ps;
  push_client *c = op->c;
  const char *channel = op->channel;
  int ok = status == PUSH_ENGINE_OK;
  if (c == NULL || c->gone || op->cancelled) {
    if (ok) {
      push_engine_release(ps->engine, channel);
    }
    return;
  }
  if (!ok) {
    push_client_engine_down(c, op->id);
    return;
  }
  const push_ns *ns = push_hub_ns(ps->hub, channel);
  push_sub sub = push_client_sub(c);
  push_result r;
  memset(&r, 0, sizeof(r));
  if (push_client_add_sub(c, channel) != 0) {
    goto nomem;
  }
  if (push_hub_subscribe(ps->hub, channel, &sub, &op->since, push_now_ms(),
                         &r) < 0) {
    push_client_drop_sub(c, channel);
    goto nomem;
  }
  if (r.recovered && push_result_bytes(&r) > ps->cfg->output_cap / 2) {
    /* More to replay than the client may have queued: say so rather than
     * drop it. The client reloads its state (docs/protocol.md). */
    push_log(PUSH_LOG_INFO,
             "ev=unrecovered client=%s channel=%s reason=too_large pubs=%zu",
             c->id, channel, r.npubs);
    r.recovered = 0;
  }
  push_buf b = {0};
  push_put_result(&b, &r, op->since.set, op->since.set && r.recovered);
  push_client_reply(c, op->id, &b);
  push_buf_free(&b);
  push_result_free(&r);
  if (ns && ns->presence && !c->gone) {
    push_member m = push_client_member(c);
    push_engine_presence_add(ps->engine, channel, &m, 1);
  }
  push_log(PUSH_LOG_DEBUG, "ev=subscribe client=%s channel=%s", c->id, channel);
  return;
nomem:
  push_engine_release(ps->engine, channel);
  push_client_error(c, op->id, PUSH_E_INTERNAL, "out of memory", 1);
}

static void cmd_unsubscribe(push_client *c, const push_cmd *cmd) {
  if (!within_rate(c, cmd->id, &c->rl_sub, &c->ps->cfg->rate_subscribes,
                   &c->ps->limited_subscribes)) {
    return;
  }
  push_op *op = push_op_pending_sub(c, cmd->channel);
  if (op != NULL) {
    op->cancelled = 1; /* its completion lets the channel go */
  } else if (!push_client_subscribed(c, cmd->channel)) {
    push_client_error(c, cmd->id, PUSH_E_NOT_SUBSCRIBED, "not subscribed", 0);
    return;
  } else {
    push_server *ps = c->ps;
    const push_ns *ns = push_hub_ns(ps->hub, cmd->channel);
    push_hub_unsubscribe(ps->hub, cmd->channel, c);
    if (ns && ns->presence) {
      push_member m = push_client_member(c);
      push_engine_presence_remove(ps->engine, cmd->channel, &m);
    }
    push_engine_release(ps->engine, cmd->channel);
    push_client_drop_sub(c, cmd->channel);
  }
  reply_empty(c, cmd->id);
}

/* ---- publish ---------------------------------------------------------- */

static void on_published(void *ud, const push_engine_reply *rep) {
  push_op *op = ud;
  if (rep->status != PUSH_ENGINE_OK) {
    push_op_engine_down(op);
  } else {
    op->ps->publications++;
    if (op->c != NULL && !op->c->gone) {
      push_client_reply_pos(op->c, op->id, &rep->pos);
    }
  }
  push_op_free(op);
}

static void cmd_publish(push_client *c, const push_cmd *cmd) {
  const push_ns *ns = push_hub_ns(c->ps->hub, cmd->channel);
  if (ns == NULL) {
    push_client_error(c, cmd->id, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace",
                      0);
    return;
  }
  if (!ns->publish) {
    push_client_error(c, cmd->id, PUSH_E_PERMISSION,
                      "clients may not publish in this namespace", 0);
    return;
  }
  if (!within_rate(c, cmd->id, &c->rl_pub, &c->ps->cfg->rate_publishes,
                   &c->ps->limited_publishes) ||
      !channel_room(c, cmd->id, cmd->channel)) {
    return;
  }
  push_op *op = push_op_new(c->ps, c, NULL, cmd->id, NULL);
  if (op == NULL) {
    push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  push_publication p = {cmd->data, cmd->b64, c->id, c->user};
  push_pos pos;
  int rv = push_publish(c->ps, cmd->channel, &p, &pos, op, on_published);
  if (rv == PUSH_ENGINE_PENDING) {
    return;
  }
  push_op_free(op);
  if (rv == PUSH_ENGINE_OK) {
    /* The hot command: its result goes through the scratch buffer too. */
    push_client_reply_pos(c, cmd->id, &pos);
  } else if (rv == PUSH_ENGINE_DOWN) {
    push_client_engine_down(c, cmd->id);
  } else {
    push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
  }
}

/* ---- presence and history --------------------------------------------- */

/* The namespace of a read (presence, history) if it allows one: else
 * answers and returns NULL. */
static const push_ns *readable_ns(push_client *c, const push_cmd *cmd,
                                  int history) {
  const push_ns *ns = push_hub_ns(c->ps->hub, cmd->channel);
  if (ns == NULL) {
    push_client_error(c, cmd->id, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace",
                      0);
  } else if (history ? ns->history_size == 0 : !ns->presence) {
    push_client_error(c, cmd->id, PUSH_E_NOT_AVAILABLE,
                      history ? "history is off in this namespace"
                              : "presence is off in this namespace",
                      0);
  } else if (ns->private_channels && !push_client_subscribed(c, cmd->channel)) {
    push_client_error(c, cmd->id, PUSH_E_PERMISSION, "subscribe first", 0);
  } else {
    return ns;
  }
  return NULL;
}

static void on_presence(void *ud, const push_engine_reply *rep) {
  push_op *op = ud;
  push_buf b = {(char *)rep->json, rep->len, rep->len};
  if (rep->status != PUSH_ENGINE_OK) {
    push_op_engine_down(op);
  } else if (op->c != NULL && !op->c->gone) {
    push_client_reply(op->c, op->id, &b);
  }
  push_op_free(op);
}

static void cmd_presence(push_client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  if (readable_ns(c, cmd, 0) == NULL) {
    return;
  }
  push_op *op = push_op_new(ps, c, NULL, cmd->id, cmd->channel);
  if (op == NULL) {
    push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  push_buf b = {0};
  int rv =
      push_engine_presence_get(ps->engine, cmd->channel, &b, on_presence, op);
  if (rv != PUSH_ENGINE_PENDING) {
    push_op_free(op);
    if (rv == PUSH_ENGINE_OK) {
      push_client_reply(c, cmd->id, &b);
    } else if (rv == PUSH_ENGINE_DOWN) {
      push_client_engine_down(c, cmd->id);
    } else {
      push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    }
  }
  push_buf_free(&b);
}

static void history_done(push_op *op, int status) {
  push_server *ps = op->ps;
  push_client *c = op->c;
  if (c == NULL || c->gone) {
    if (status == PUSH_ENGINE_OK) {
      push_engine_release(ps->engine, op->channel);
    }
    return;
  }
  if (status != PUSH_ENGINE_OK) {
    push_client_engine_down(c, op->id);
    return;
  }
  push_result r;
  memset(&r, 0, sizeof(r));
  int rv = push_hub_history(ps->hub, op->channel, op->limit, &op->since,
                            push_now_ms(), &r);
  push_engine_release(ps->engine, op->channel);
  if (rv != 0) {
    push_client_error(c, op->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  if (push_result_bytes(&r) > ps->cfg->output_cap / 2) {
    push_result_free(&r);
    push_client_error(c, op->id, PUSH_E_LIMIT,
                      "history reply too large: ask for a smaller limit", 0);
    return;
  }
  push_buf b = {0};
  push_put_result(&b, &r, op->since.set, 1);
  push_client_reply(c, op->id, &b);
  push_buf_free(&b);
  push_result_free(&r);
}

static void cmd_history(push_client *c, const push_cmd *cmd) {
  if (readable_ns(c, cmd, 1) == NULL) {
    return;
  }
  push_op *op = push_op_new(c->ps, c, NULL, cmd->id, cmd->channel);
  if (op == NULL) {
    push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  op->synced = history_done;
  op->since = cmd->since;
  op->limit = cmd->limit;
  push_op_sync(op);
}

static void cmd_ping(push_client *c, const push_cmd *cmd) {
  reply_empty(c, cmd->id);
}

/* ---- dispatch --------------------------------------------------------- */

static void dispatch(push_client *c, const push_cmd *cmd) {
  static void (*const handlers[])(push_client *, const push_cmd *) = {
      [PUSH_CONNECT] = cmd_connect,
      [PUSH_SUBSCRIBE] = cmd_subscribe,
      [PUSH_UNSUBSCRIBE] = cmd_unsubscribe,
      [PUSH_PUBLISH] = cmd_publish,
      [PUSH_PRESENCE] = cmd_presence,
      [PUSH_HISTORY] = cmd_history,
      [PUSH_PING] = cmd_ping,
  };
  if (!c->connected && cmd->method != PUSH_CONNECT) {
    push_client_error(c, cmd->id, PUSH_E_UNAUTHORIZED, "connect first", 0);
    push_client_disconnect(c, PUSH_D_BAD_REQUEST, "connect first");
    return;
  }
  if ((size_t)cmd->method < sizeof(handlers) / sizeof(handlers[0]) &&
      handlers[cmd->method] != NULL) {
    handlers[cmd->method](c, cmd);
  }
}

/* ---- WebSocket callbacks ---------------------------------------------- */

int push_origin_ok(const push_server *ps, const herald_request *req) {
  if (req->origin.len == 0) {
    return 1; /* not a browser */
  }
  for (size_t i = 0; i < ps->cfg->norigins; i++) {
    const char *o = ps->cfg->origins[i];
    if (strcmp(o, "*") == 0 ||
        (strlen(o) == req->origin.len &&
         strncasecmp(o, req->origin.ptr, req->origin.len) == 0)) {
      return 1;
    }
  }
  /* Same origin: "scheme://" + Host. */
  const char *p = memchr(req->origin.ptr, ':', req->origin.len);
  if (p && (size_t)(p - req->origin.ptr) + 3 <= req->origin.len &&
      p[1] == '/' && p[2] == '/') {
    const char *host = p + 3;
    size_t hlen = req->origin.len - (size_t)(host - req->origin.ptr);
    return hlen == req->host.len && strncasecmp(host, req->host.ptr, hlen) == 0;
  }
  return 0;
}

static int ws_upgrade(herald_ws *ws, const herald_request *req,
                      herald_accept *acc, void *ud) {
  push_server *ps = ud;
  (void)acc;
  if (ps->stopping) {
    return 503;
  }
  int ip = push_ip_take(ps->ips, push_peer_ip(herald_ws_peer(ws)),
                        &ps->cfg->rate_connections,
                        (int64_t)(push_mono_us() / 1000));
  if (ip <= 0) {
    ps->limited_connections++;
    push_log(PUSH_LOG_WARN, "ev=refused reason=connection_rate peer=%s",
             herald_ws_peer(ws));
    return ip == 0 ? 429 : 503;
  }
  if (!push_origin_ok(ps, req)) {
    char esc[PUSH_LOG_VAL];
    push_log(PUSH_LOG_WARN, "ev=refused reason=origin origin=\"%s\"",
             push_log_esc(esc, sizeof(esc), req->origin.ptr, req->origin.len));
    return 403;
  }
  /* A Pusher path keeps its verdict on ws: Pusher refuses after the
   * handshake, with its own codes (pusher.c). */
  push_pusher_upgrade(ps, ws, req);
  return 0;
}

static void ws_open(herald_ws *ws, void *ud) {
  push_server *ps = ud;
  if (herald_ws_data(ws) != NULL) {
    push_pusher_open(ps, ws);
    return;
  }
  push_client *c = push_client_new(ps);
  if (c == NULL) {
    herald_ws_close(ws, HERALD_CLOSE_TRY_LATER, "out of memory", 13);
    return;
  }
  c->ws = ws;
  herald_ws_set_data(ws, c);
}

static void ws_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  push_server *ps = ud;
  push_client *c = herald_ws_data(ws);
  if (c == NULL || c->gone) {
    return;
  }
  ps->messages_in++;
  ps->bytes_in += len;
  if (c->pusher != NULL) {
    push_pusher_message(c, op, data, len);
    return;
  }
  if (op != HERALD_OP_TEXT) {
    push_client_error(c, 0, PUSH_E_BAD_REQUEST, "commands are text frames", 0);
    push_client_disconnect(c, PUSH_D_BAD_REQUEST, "binary frame");
    return;
  }
  size_t pos = 0;
  for (;;) {
    push_cmd cmd;
    int err = 0;
    const char *msg = NULL;
    int rv = push_cmd_next((const char *)data, len, &pos, &cmd, &err, &msg);
    if (rv == 0 || c->gone) {
      break;
    }
    if (rv < 0) {
      push_client_error(c, cmd.id, err, msg, 0);
      if (!c->connected) {
        push_client_disconnect(c, PUSH_D_BAD_REQUEST, msg);
        break;
      }
      continue;
    }
    if (within_rate(c, cmd.id, &c->rl_cmd, &ps->cfg->rate_commands,
                    &ps->limited_commands)) {
      dispatch(c, &cmd);
    }
  }
  if (push_hub_pending_bytes(ps->hub) > pass_budget(ps) && c->ws && !c->gone) {
    /* This pass has queued a lot for subscribers: read no more from this
     * client until the runtime has written that out (the resume waits for
     * the flush). Without it one read of 256 KiB of publish commands, fanned
     * out to every subscriber before any write, can queue gigabytes. */
    herald_ws_pause_read(c->ws);
    herald_ws_resume_read(c->ws);
  }
}

static void ws_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  (void)ud;
  push_client *c = herald_ws_data(ws);
  if (c == NULL) {
    return;
  }
  push_log(PUSH_LOG_INFO, "ev=close client=%s code=%u%s%s", c->id, info->code,
           info->error ? " error=" : "", info->error ? info->error : "");
  c->ws = NULL;
  if (c->pusher != NULL) {
    push_pusher_closed(c);
  }
  push_client_free(c);
}

void push_ws_callbacks(herald_ws_callbacks *cb) {
  memset(cb, 0, sizeof(*cb));
  cb->on_upgrade = ws_upgrade;
  cb->on_open = ws_open;
  cb->on_message = ws_message;
  cb->on_close = ws_close;
}
