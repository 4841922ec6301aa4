/* connect.c - the connect command: the connection token checked (or the
 * anonymous and proxied ways in), the connect proxy asked, the per-user
 * connection limit counted, the token's server-side subscriptions made,
 * and the connect reply (docs/protocol.md, docs/backend.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "push/server_int.h"

/* Verifies a JWT; on failure answers and disconnects. Returns 0 or -1. */
int push_check_token(push_client *c, uint64_t id, push_json tok,
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

/* The end of a connect, once the user is known: the connection limit,
 * then the reply, the webhook and the server-side subscriptions. subs:
 * channels to subscribe (the token's "subs", the connect proxy's
 * "channels"); taken and freed. */
static void connect_done(push_client *c, uint64_t id, char **subs,
                         size_t nsubs);

static void free_list(char **l, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(l[i]);
  }
  free(l);
}

/* What waits for the engine to count the user's connections. */
typedef struct connect_wait {
  char **subs;
  size_t nsubs;
  char user[256], id[32]; /* to uncount it if the client left meanwhile */
} connect_wait;

static void connect_reply(push_client *c, uint64_t id, char **subs,
                          size_t nsubs);

static void on_user_counted(void *ud, const push_engine_reply *rep) {
  push_op *op = ud;
  push_client *c = op->c;
  connect_wait *w = (connect_wait *)(void *)op->data;
  op->data = NULL;
  if ((c == NULL || c->gone) && rep->status == PUSH_ENGINE_OK && rep->allowed &&
      w) {
    push_engine_user_remove(op->ps->engine, w->user, w->id);
  } else if (c != NULL && !c->gone) {
    c->connecting = 0;
    if (rep->status != PUSH_ENGINE_OK) {
      push_client_engine_down(c, op->id);
      push_client_disconnect(c, PUSH_D_BACKEND, "engine unavailable");
    } else if (!rep->allowed) {
      c->ps->user_limit_refusals++;
      push_client_error(c, op->id, PUSH_E_LIMIT,
                        "too many connections for this user", 0);
      push_client_disconnect(c, PUSH_D_CONNECTION_LIMIT, "connection limit");
    } else {
      c->counted = 1; /* client_gone uncounts it */
      connect_reply(c, op->id, w ? w->subs : NULL, w ? w->nsubs : 0);
      if (w) {
        w->subs = NULL;
        w->nsubs = 0;
      }
    }
  }
  if (w) {
    free_list(w->subs, w->nsubs);
    free(w);
  }
  push_op_free(op);
}

static void connect_done(push_client *c, uint64_t id, char **subs,
                         size_t nsubs) {
  push_server *ps = c->ps;
  uint32_t limit = ps->cfg->user_connection_limit;
  if (limit == 0 || c->user[0] == 0) {
    connect_reply(c, id, subs, nsubs);
    return;
  }
  push_op *op = push_op_new(ps, c, NULL, id, NULL);
  connect_wait *w = op ? calloc(1, sizeof(*w)) : NULL;
  if (w == NULL) {
    push_op_free(op);
    free_list(subs, nsubs);
    push_client_error(c, id, PUSH_E_INTERNAL, "out of memory", 1);
    push_client_disconnect(c, PUSH_D_BACKEND, "out of memory");
    return;
  }
  w->subs = subs;
  w->nsubs = nsubs;
  snprintf(w->user, sizeof(w->user), "%s", c->user);
  snprintf(w->id, sizeof(w->id), "%s", c->id);
  op->data = (char *)w; /* freed by on_user_counted, never as a string */
  int allowed = 0;
  c->connecting = 1;
  int rv = push_engine_user_add(ps->engine, c->user, c->id, limit, &allowed,
                                on_user_counted, op);
  if (rv == PUSH_ENGINE_PENDING) {
    return;
  }
  push_engine_reply rep = {.status = rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK
                                                          : PUSH_ENGINE_DOWN,
                           .allowed = allowed};
  on_user_counted(op, &rep);
}

static void connect_reply(push_client *c, uint64_t id, char **subs,
                          size_t nsubs) {
  push_server *ps = c->ps;
  c->connected = 1;
  c->connecting = 0;
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
  if (c->exp) {
    int64_t ttl = c->exp - push_now_ms() / 1000;
    push_buf_raw(&b, ",\"expires\":true,\"ttl\":", 22);
    push_buf_u64(&b, ttl > 0 ? (uint64_t)ttl : 0);
  }
  push_buf_raw(&b, "}", 1);
  push_client_reply(c, id, &b);
  push_buf_free(&b);
  char esc[PUSH_LOG_VAL];
  push_log(PUSH_LOG_INFO, "ev=connect client=%s user=\"%s\"", c->id,
           push_log_esc(esc, sizeof(esc), c->user, strlen(c->user)));
  if (push_hook_on(ps, PUSH_WH_CONNECT)) {
    c->announced = 1;
    push_buf h = {0};
    push_hook_begin(ps, &h, "connect");
    push_buf_raw(&h, ",\"client\":", 10);
    push_buf_str(&h, c->id, strlen(c->id));
    push_buf_raw(&h, ",\"user\":", 8);
    push_buf_str(&h, c->user, strlen(c->user));
    push_buf_raw(
        &h, c->sse ? ",\"transport\":\"sse\"" : ",\"transport\":\"websocket\"",
        c->sse ? 18 : 24);
    push_hook_send(ps, &h);
    push_buf_free(&h);
  }
  for (size_t i = 0; i < nsubs && !c->gone; i++) {
    push_server_subscribe(c, subs[i]);
  }
  free_list(subs, nsubs);
}

/* A name the client gives itself is shown in presence as info.name; it is
 * never taken for the user id, which only a token or the backend sets. */
static void take_name(push_client *c, push_json name) {
  if (c->info != NULL || name.n == 0) {
    return;
  }
  char text[128];
  long n = push_json_str(name, text, sizeof(text));
  push_buf b = {0};
  if (n > 0 && push_buf_raw(&b, "{\"name\":", 8) == 0 &&
      push_buf_str(&b, text, (size_t)n) == 0 && push_buf_raw(&b, "}", 1) == 0 &&
      push_buf_raw(&b, "", 1) == 0) {
    c->info = b.p; /* NUL-terminated by the last append */
    b.p = NULL;
  }
  push_buf_free(&b);
}

/* Reads an array of channel names (the connect proxy's "channels"). */
static int read_channels(push_json v, char ***out, size_t *n) {
  size_t pos = 0, count = 0;
  push_json e;
  *out = NULL;
  *n = 0;
  if (push_json_type_of(v) != PUSH_JSON_ARRAY) {
    return -1;
  }
  while (push_json_next(v, &pos, NULL, &e)) {
    count++;
  }
  if (count == 0) {
    return 0;
  }
  if ((*out = calloc(count, sizeof(char *))) == NULL) {
    return -1;
  }
  pos = 0;
  while (push_json_next(v, &pos, NULL, &e)) {
    char name[PUSH_CHANNEL_MAX + 1];
    long len = push_json_str(e, name, sizeof(name));
    if (len < 0 || !push_channel_valid(name, (size_t)len) ||
        ((*out)[*n] = strdup(name)) == NULL) {
      free_list(*out, *n);
      *out = NULL;
      *n = 0;
      return -1;
    }
    (*n)++;
  }
  return 0;
}

/* The backend's answer to a connect: {"user", "expire_at"?, "info"?,
 * "channels"?}. */
static void connect_proxied(push_op *op, const push_proxy_answer *a) {
  push_client *c = op->c;
  uint64_t id = op->id;
  push_op_free(op);
  if (c == NULL || c->gone) {
    return;
  }
  c->connecting = 0;
  if (a->kind != PUSH_PROXY_RESULT) {
    c->ps->auth_failures += a->kind == PUSH_PROXY_ERROR;
    push_proxy_reply(c, id, a);
    if (!c->gone) {
      int temp = a->kind == PUSH_PROXY_UNAVAILABLE || a->temporary;
      push_client_disconnect(c, temp ? PUSH_D_BACKEND : PUSH_D_INVALID_TOKEN,
                             temp ? "backend unavailable" : "refused");
    }
    return;
  }
  push_json v;
  uint64_t exp = 0;
  char **subs = NULL;
  size_t nsubs = 0;
  const char *bad = NULL;
  if (push_json_get(a->result, "user", &v) &&
      push_json_str(v, c->user, sizeof(c->user)) < 0) {
    bad = "user";
  } else if (push_json_get(a->result, "expire_at", &v) &&
             push_json_u64(v, &exp) != 0) {
    bad = "expire_at";
  } else if (push_json_get(a->result, "channels", &v) &&
             read_channels(v, &subs, &nsubs) != 0) {
    bad = "channels";
  }
  if (bad != NULL) {
    c->user[0] = 0;
    push_log(PUSH_LOG_WARN,
             "ev=proxy_unavailable kind=connect error=\"bad %s\"", bad);
    c->ps->proxy[PUSH_PROXY_CONNECT].unavailable++;
    push_client_error(c, id, PUSH_E_BACKEND, "backend gave a bad answer", 1);
    push_client_disconnect(c, PUSH_D_BACKEND, "backend unavailable");
    return;
  }
  if (push_json_get(a->result, "info", &v) &&
      push_json_type_of(v) != PUSH_JSON_NULL) {
    char *info = malloc(v.n + 1);
    if (info != NULL) {
      memcpy(info, v.p, v.n);
      info[v.n] = 0;
      free(c->info);
      c->info = info;
    }
  }
  if (exp != 0 && (int64_t)exp <= push_now_ms() / 1000) {
    free_list(subs, nsubs);
    push_client_error(c, id, PUSH_E_TOKEN_EXPIRED, "credentials expired", 0);
    push_client_disconnect(c, PUSH_D_TOKEN_EXPIRED, "token expired");
    return;
  }
  c->exp = (int64_t)exp;
  c->exp_by_proxy = exp != 0;
  connect_done(c, id, subs, nsubs);
}

void push_cmd_connect(push_client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  const push_backend_config *bc = &ps->cfg->backend;
  if (c->connected || c->connecting) {
    push_client_error(c, cmd->id, PUSH_E_BAD_REQUEST, "already connected", 0);
    return;
  }
  if (bc->connect_url && (cmd->token.n == 0 || bc->connect_always)) {
    push_op *op = push_op_new(ps, c, NULL, cmd->id, NULL);
    if (op == NULL) {
      push_client_error(c, cmd->id, PUSH_E_INTERNAL, "out of memory", 1);
      return;
    }
    take_name(c, cmd->name);
    push_buf b = {0};
    push_proxy_body(&b, c, 0);
    if (cmd->name.n) {
      push_buf_raw(&b, ",\"name\":", 8);
      push_buf_raw(&b, cmd->name.p, cmd->name.n);
    }
    if (cmd->token.n) {
      push_buf_raw(&b, ",\"token\":", 9);
      push_buf_raw(&b, cmd->token.p, cmd->token.n);
    }
    if (cmd->data.n) {
      push_buf_raw(&b, ",\"data\":", 8);
      push_buf_raw(&b, cmd->data.p, cmd->data.n);
    }
    push_buf_raw(&b, "}", 1);
    c->connecting = 1;
    push_proxy_call(ps, PUSH_PROXY_CONNECT, bc->connect_url, op, &b,
                    connect_proxied);
    push_buf_free(&b);
    return;
  }
  char **subs = NULL;
  size_t nsubs = 0;
  if (cmd->token.n > 0) {
    push_jwt_claims cl;
    memset(&cl, 0, sizeof(cl));
    if (push_check_token(c, cmd->id, cmd->token, &cl) != 0) {
      return;
    }
    subs = cl.subs;
    nsubs = cl.nsubs;
    cl.subs = NULL;
    cl.nsubs = 0;
    push_client_take_claims(c, &cl);
  } else if (!ps->cfg->anonymous) {
    ps->auth_failures++;
    push_client_error(c, cmd->id, PUSH_E_UNAUTHORIZED, "a token is required",
                      0);
    push_client_disconnect(c, PUSH_D_INVALID_TOKEN, "token required");
    return;
  }
  take_name(c, cmd->name);
  connect_done(c, cmd->id, subs, nsubs);
}
