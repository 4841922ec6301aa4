/* commands.c - the WebSocket side of `herald serve`: the upgrade check, and
 * each command of docs/protocol.md (connect, subscribe, unsubscribe,
 * publish, presence, history, ping, rpc) from a client's frame to its
 * reply. connect is in connect.c, refresh and sub_refresh in
 * credentials.c. */
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

/* ---- subscribe and unsubscribe ---------------------------------------- */

/* May c subscribe to channel? Its claims, or a subscription token (whose
 * exp goes to *exp; 0 when none was needed). */
int push_may_subscribe_exp(push_client *c, const push_ns *ns,
                           const char *channel, push_json token, int64_t *exp) {
  *exp = 0;
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
  if (ok) {
    *exp = cl.exp;
  }
  push_jwt_claims_free(&cl);
  return ok;
}

int push_may_subscribe(push_client *c, const push_ns *ns, const char *channel,
                       push_json token) {
  int64_t exp;
  return push_may_subscribe_exp(c, ns, channel, token, &exp);
}

static void subscribe_done(push_op *op, int status);

/* The backend's answer to a subscribe: {} (or "expire_at"), then the
 * subscription goes on as if no backend were asked. */
static void subscribe_proxied(push_op *op, const push_proxy_answer *a) {
  push_client *c = op->c;
  if (c == NULL || c->gone || op->cancelled) {
    push_op_free(op); /* unsubscribed meanwhile: that was answered */
    return;
  }
  if (a->kind != PUSH_PROXY_RESULT) {
    uint64_t id = op->id;
    push_op_free(op);
    push_proxy_reply(c, id, a);
    return;
  }
  push_json v;
  uint64_t exp = 0;
  if (push_json_get(a->result, "expire_at", &v) &&
      push_json_u64(v, &exp) != 0) {
    exp = 0;
  }
  op->limit = exp; /* carried to subscribe_done as the sub's exp */
  op->synced = subscribe_done;
  push_op_sync(op);
}

/* Starts the subscription op for c (a command's, or the server's). */
static void subscribe_start(push_op *op, int64_t exp) {
  op->synced = subscribe_done;
  op->subscribe = 1;
  op->limit = (uint64_t)exp;
  push_op_sync(op);
}

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
  int64_t exp = 0;
  if (ns->subscribe_proxy_url == NULL &&
      !push_may_subscribe_exp(c, ns, cmd->channel, cmd->token, &exp)) {
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
  op->since = cmd->since;
  if (ns->subscribe_proxy_url != NULL) {
    /* The backend decides: it gets the channel, and the token if any. */
    op->subscribe = 1; /* a second subscribe is refused meanwhile */
    push_buf b = {0};
    push_proxy_body(&b, c, 1);
    push_buf_raw(&b, ",\"channel\":", 11);
    push_buf_str(&b, cmd->channel, strlen(cmd->channel));
    if (cmd->token.n) {
      push_buf_raw(&b, ",\"token\":", 9);
      push_buf_raw(&b, cmd->token.p, cmd->token.n);
    }
    push_buf_raw(&b, "}", 1);
    push_proxy_call(ps, PUSH_PROXY_SUBSCRIBE, ns->subscribe_proxy_url, op, &b,
                    subscribe_proxied);
    push_buf_free(&b);
    return;
  }
  subscribe_start(op, exp);
}

int push_server_subscribe(push_client *c, const char *channel) {
  push_server *ps = c->ps;
  const char *why = NULL;
  if (!push_channel_valid(channel, strlen(channel)) ||
      push_hub_ns(ps->hub, channel) == NULL) {
    why = "unknown namespace";
  } else if (push_client_subscribed(c, channel) ||
             push_op_pending_sub(c, channel) != NULL) {
    why = "already subscribed";
  } else if (c->nsubs + push_op_npending_subs(c) >= ps->cfg->max_channels) {
    why = "max_channels";
  } else if (!push_channel_room(ps, channel)) {
    why = "max_channels_total";
  }
  push_op *op = why ? NULL : push_op_new(ps, c, NULL, 0, channel);
  if (op == NULL) {
    char esc[PUSH_LOG_VAL];
    push_log(PUSH_LOG_WARN,
             "ev=server_subscribe_refused client=%s channel=\"%s\" why=%s",
             c->id, push_log_esc(esc, sizeof(esc), channel, strlen(channel)),
             why ? why : "out of memory");
    return -1;
  }
  op->server_side = 1;
  subscribe_start(op, 0);
  return 0;
}

/* {"push":{"channel":C,"<what>":{...}}} of a server-side subscription. */
static void push_sub_event(push_client *c, const char *channel,
                           const char *what, const push_buf *body) {
  push_buf b = {0};
  push_buf_raw(&b, "{\"push\":{\"channel\":", 19);
  push_buf_str(&b, channel, strlen(channel));
  push_buf_raw(&b, ",\"", 2);
  push_buf_raw(&b, what, strlen(what));
  push_buf_raw(&b, "\":", 2);
  push_buf_raw(&b, body->p, body->len);
  push_buf_raw(&b, "}}", 2);
  if (b.p) {
    push_send_text(c, b.p, b.len);
  }
  push_buf_free(&b);
}

/* The second half of subscribe, once the channel is current. */
static void subscribe_done(push_op *op, int status) {
  push_server *ps = op->ps;
  push_client *c = op->c;
  const char *channel = op->channel;
  int ok = status == PUSH_ENGINE_OK;
  if (c == NULL || c->gone || op->cancelled) {
    if (ok && c != NULL && !c->gone && !op->server_side) {
      /* Unsubscribed while the engine was making the channel current
       * (the unsubscribe was answered then): the subscribe still gets
       * its one reply, the position it would have started from. */
      push_pos pos;
      memset(&pos, 0, sizeof(pos));
      push_hub_pos(ps->hub, channel, &pos);
      push_client_reply_pos(c, op->id, &pos);
    } else if (!ok && c != NULL && !c->gone && !op->server_side) {
      push_client_engine_down(c, op->id);
    }
    if (ok) {
      push_engine_release(ps->engine, channel);
    }
    return;
  }
  if (!ok) {
    if (!op->server_side) {
      push_client_engine_down(c, op->id);
    }
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
  push_client_set_sub_exp(c, channel, (int64_t)op->limit);
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
  if (op->server_side) {
    push_sub_event(c, channel, "subscribe", &b);
  } else {
    push_client_reply(c, op->id, &b);
  }
  push_buf_free(&b);
  push_result_free(&r);
  if (ns && ns->presence && !c->gone) {
    push_member m = push_client_member(c);
    push_engine_presence_add(ps->engine, channel, &m, 1);
  }
  push_client_joined(c, channel);
  push_log(PUSH_LOG_DEBUG, "ev=subscribe client=%s channel=%s", c->id, channel);
  return;
nomem:
  push_engine_release(ps->engine, channel);
  if (!op->server_side) {
    push_client_error(c, op->id, PUSH_E_INTERNAL, "out of memory", 1);
  }
}

/* Ends c's subscription to channel (it is subscribed). */
static void unsubscribe_now(push_client *c, const char *channel) {
  push_server *ps = c->ps;
  const push_ns *ns = push_hub_ns(ps->hub, channel);
  push_hub_unsubscribe(ps->hub, channel, c);
  if (ns && ns->presence) {
    push_member m = push_client_member(c);
    push_engine_presence_remove(ps->engine, channel, &m);
  }
  push_client_left(c, channel);
  push_engine_release(ps->engine, channel);
  push_client_drop_sub(c, channel);
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
    unsubscribe_now(c, cmd->channel);
  }
  reply_empty(c, cmd->id);
}

int push_server_unsubscribe(push_client *c, const char *channel,
                            const char *reason) {
  push_op *op = push_op_pending_sub(c, channel);
  if (op != NULL) {
    op->cancelled = 1;
    return 1;
  }
  if (!push_client_subscribed(c, channel)) {
    return 0;
  }
  unsubscribe_now(c, channel);
  push_buf b = {0};
  push_buf_raw(&b, "{\"reason\":", 10);
  push_buf_str(&b, reason, strlen(reason));
  push_buf_raw(&b, "}", 1);
  push_sub_event(c, channel, "unsubscribe", &b);
  push_buf_free(&b);
  return 1;
}

/* ---- publish ---------------------------------------------------------- */

static void on_published(void *ud, const push_engine_reply *rep) {
  push_op *op = ud;
  push_publish_done(op, rep);
  if (rep->status != PUSH_ENGINE_OK) {
    push_op_engine_down(op);
  } else if (op->c != NULL && !op->c->gone) {
    push_client_reply_pos(op->c, op->id, &rep->pos);
  }
  push_op_free(op);
}

/* Publishes for c (the command's, or the backend's replacement data). */
static void publish_now(push_client *c, push_op *op, const char *channel,
                        push_publication *p) {
  push_pos pos;
  uint64_t id = op->id;
  p->idem = op->idem[0] ? op->idem : NULL;
  int rv = push_publish(c->ps, channel, p, &pos, op, on_published);
  if (rv == PUSH_ENGINE_PENDING) {
    return;
  }
  push_op_free(op);
  if (rv == PUSH_ENGINE_OK) {
    /* The hot command: its result goes through the scratch buffer too. */
    push_client_reply_pos(c, id, &pos);
  } else if (rv == PUSH_ENGINE_DOWN) {
    push_client_engine_down(c, id);
  } else {
    push_client_error(c, id, PUSH_E_INTERNAL, "out of memory", 1);
  }
}

/* The backend's answer to a publish: {} publishes the data as sent;
 * {"data": X} publishes X instead. */
static void publish_proxied(push_op *op, const push_proxy_answer *a) {
  push_client *c = op->c;
  if (c == NULL || c->gone) {
    push_op_free(op);
    return;
  }
  if (a->kind != PUSH_PROXY_RESULT) {
    uint64_t id = op->id;
    push_op_free(op);
    push_proxy_reply(c, id, a);
    return;
  }
  push_publication p = {{NULL, 0}, {NULL, 0}, c->id, c->user, NULL};
  push_json v;
  char channel[PUSH_CHANNEL_MAX + 1];
  snprintf(channel, sizeof(channel), "%s", op->channel);
  if (push_json_get(a->result, "data", &v) ||
      (push_json_get(a->result, "b64", &v) &&
       push_json_type_of(v) != PUSH_JSON_NULL)) {
    /* The backend replaces the publication, JSON or binary, under the same
     * rules as a client's: one of the two, b64 valid base64. */
    const char *bad = push_publish_decode(a->result, &p.data, &p.b64);
    if (bad != NULL) {
      uint64_t id = op->id;
      push_op_free(op);
      c->ps->proxy[PUSH_PROXY_PUBLISH].unavailable++;
      push_log(PUSH_LOG_WARN,
               "ev=proxy_unavailable kind=publish error=\"the result is not "
               "a publication: %s\"",
               bad);
      push_client_error(c, id, PUSH_E_BACKEND,
                        "backend unavailable: its result is not a publication",
                        1);
      return;
    }
  } else if (op->data_b64) {
    p.b64 = (push_json){op->data, op->data_len};
  } else {
    p.data = (push_json){op->data, op->data_len};
  }
  op->channel[0] = 0; /* the op is a publish's now: no channel copy */
  publish_now(c, op, channel, &p);
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
  int proxied = ns->publish_proxy_url != NULL;
  push_op *op =
      push_op_new(c->ps, c, NULL, cmd->id, proxied ? cmd->channel : NULL);
  if (op == NULL) {
    push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  memcpy(op->idem, cmd->idem, sizeof(op->idem));
  if (proxied) {
    /* The command's bytes go with the frame: keep the data. */
    push_json d = cmd->b64.n ? cmd->b64 : cmd->data;
    op->data = malloc(d.n ? d.n : 1);
    if (op->data == NULL) {
      push_op_free(op);
      push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
      return;
    }
    memcpy(op->data, d.p, d.n);
    op->data_len = d.n;
    op->data_b64 = cmd->b64.n != 0;
    push_buf b = {0};
    push_proxy_body(&b, c, 1);
    push_buf_raw(&b, ",\"channel\":", 11);
    push_buf_str(&b, cmd->channel, strlen(cmd->channel));
    push_buf_raw(&b, op->data_b64 ? ",\"b64data\":" : ",\"data\":",
                 op->data_b64 ? 11 : 8);
    push_buf_raw(&b, d.p, d.n);
    push_buf_raw(&b, "}", 1);
    push_proxy_call(c->ps, PUSH_PROXY_PUBLISH, ns->publish_proxy_url, op, &b,
                    publish_proxied);
    push_buf_free(&b);
    return;
  }
  push_publication p = {cmd->data, cmd->b64, c->id, c->user, NULL};
  publish_now(c, op, cmd->channel, &p);
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

/* ---- rpc -------------------------------------------------------------- */

static void rpc_proxied(push_op *op, const push_proxy_answer *a) {
  push_client *c = op->c;
  uint64_t id = op->id;
  push_op_free(op);
  if (c == NULL || c->gone) {
    return;
  }
  if (a->kind != PUSH_PROXY_RESULT) {
    push_proxy_reply(c, id, a);
    return;
  }
  push_json v;
  push_buf b = {0};
  push_buf_raw(&b, "{\"data\":", 8);
  if (push_json_get(a->result, "data", &v)) {
    push_buf_raw(&b, v.p, v.n);
  } else {
    push_buf_raw(&b, "null", 4);
  }
  push_buf_raw(&b, "}", 1);
  push_client_reply(c, id, &b);
  push_buf_free(&b);
}

static void cmd_rpc(push_client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  if (ps->cfg->backend.rpc_url == NULL) {
    push_client_error(c, cmd->id, PUSH_E_NOT_AVAILABLE,
                      "rpc is not configured (proxy.rpc_url)", 0);
    return;
  }
  push_op *op = push_op_new(ps, c, NULL, cmd->id, NULL);
  if (op == NULL) {
    push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
    return;
  }
  push_buf b = {0};
  push_proxy_body(&b, c, 1);
  push_buf_raw(&b, ",\"method\":", 10);
  push_buf_raw(&b, cmd->rpc.p, cmd->rpc.n);
  push_buf_raw(&b, ",\"data\":", 8);
  if (cmd->data.n) {
    push_buf_raw(&b, cmd->data.p, cmd->data.n);
  } else {
    push_buf_raw(&b, "null", 4);
  }
  push_buf_raw(&b, "}", 1);
  push_proxy_call(ps, PUSH_PROXY_RPC, ps->cfg->backend.rpc_url, op, &b,
                  rpc_proxied);
  push_buf_free(&b);
}

/* ---- dispatch --------------------------------------------------------- */

static void dispatch(push_client *c, const push_cmd *cmd) {
  static void (*const handlers[])(push_client *, const push_cmd *) = {
      [PUSH_CONNECT] = push_cmd_connect,
      [PUSH_SUBSCRIBE] = cmd_subscribe,
      [PUSH_UNSUBSCRIBE] = cmd_unsubscribe,
      [PUSH_PUBLISH] = cmd_publish,
      [PUSH_PRESENCE] = cmd_presence,
      [PUSH_HISTORY] = cmd_history,
      [PUSH_PING] = cmd_ping,
      [PUSH_REFRESH] = push_cmd_refresh,
      [PUSH_SUB_REFRESH] = push_cmd_sub_refresh,
      [PUSH_RPC] = cmd_rpc,
  };
  if (c->connecting && cmd->method != PUSH_CONNECT) {
    push_client_error(c, cmd->id, PUSH_E_UNAUTHORIZED,
                      "wait for the connect reply", 0);
    return;
  }
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
  push_server *ps = push_server_here();
  (void)acc, (void)ud;
  if (ps->stopping) {
    return 503;
  }
  int ip = push_server_ip_take(ps, push_peer_ip(herald_ws_peer(ws)));
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
  /* Headers for the backend (proxy.headers): ws_open, which the runtime
   * calls next, gives them to the new client. */
  push_proxy_capture(ps, req);
  /* A Pusher path keeps its verdict on ws: Pusher refuses after the
   * handshake, with its own codes (pusher.c). */
  push_pusher_upgrade(ps, ws, req);
  return 0;
}

static void ws_open(herald_ws *ws, void *ud) {
  push_server *ps = push_server_here();
  (void)ud;
  if (herald_ws_data(ws) != NULL) {
    push_pusher_open(ps, ws);
    return;
  }
  push_client *c = push_client_new(ps);
  if (c == NULL) {
    herald_ws_close(ws, HERALD_CLOSE_TRY_LATER, "out of memory", 13);
    return;
  }
  push_proxy_adopt(ps, c);
  c->ws = ws;
  herald_ws_set_data(ws, c);
}

static void ws_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  push_server *ps = push_server_here();
  (void)ud;
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
  if (c->close_code == 0) {
    /* The peer closed (or the connection failed): its code. */
    c->close_code = info->code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s",
             info->error ? info->error : "closed by the client");
  }
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
