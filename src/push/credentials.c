/* credentials.c - credentials that end while the connection is open: the
 * refresh and sub_refresh commands (a new token on the same connection),
 * the refresh pushes sent ahead of exp, the connect proxy's refresh_url,
 * and the end of connections (3006) and subscriptions whose credentials
 * expired (docs/protocol.md, docs/backend.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/server_int.h"

/* {"expires":true,"ttl":N} */
static void reply_ttl(push_client *c, uint64_t id, int64_t exp) {
  push_buf b = {0};
  int64_t ttl = exp - push_now_ms() / 1000;
  if (exp == 0) {
    push_buf_raw(&b, "{\"expires\":false}", 17);
  } else {
    push_buf_raw(&b, "{\"expires\":true,\"ttl\":", 22);
    push_buf_u64(&b, ttl > 0 ? (uint64_t)ttl : 0);
    push_buf_raw(&b, "}", 1);
  }
  push_client_reply(c, id, &b);
  push_buf_free(&b);
}

/* A new connection token for the same user: the connection lives on until
 * its exp. A token for another user, or a bad one, ends the connection as
 * at connect. */
void push_cmd_refresh(push_client *c, const push_cmd *cmd) {
  push_jwt_claims cl;
  memset(&cl, 0, sizeof(cl));
  if (push_check_token(c, cmd->id, cmd->token, &cl) != 0) {
    return;
  }
  if (strcmp(cl.sub, c->user) != 0) {
    push_jwt_claims_free(&cl);
    c->ps->auth_failures++;
    push_client_error(c, cmd->id, PUSH_E_UNAUTHORIZED,
                      "the token is for another user", 0);
    push_client_disconnect(c, PUSH_D_INVALID_TOKEN, "invalid token");
    return;
  }
  c->exp = cl.exp;
  c->exp_by_proxy = 0;
  c->refresh_sent = 0;
  push_jwt_claims_free(&cl);
  c->ps->refreshes++;
  reply_ttl(c, cmd->id, c->exp);
}

void push_cmd_sub_refresh(push_client *c, const push_cmd *cmd) {
  push_server *ps = c->ps;
  const push_ns *ns = push_hub_ns(ps->hub, cmd->channel);
  int64_t exp = 0;
  if (!push_client_subscribed(c, cmd->channel) || ns == NULL) {
    push_client_error(c, cmd->id, PUSH_E_NOT_SUBSCRIBED, "not subscribed", 0);
    return;
  }
  /* A private channel needs a valid subscription token; others take any
   * valid one, so a subscription's exp can be extended wherever it came
   * from. */
  push_ns strict = *ns;
  strict.private_channels = 1;
  size_t nallowed = c->nallowed;
  c->nallowed = 0; /* the claim does not stand in for the token here */
  int ok = push_may_subscribe_exp(c, &strict, cmd->channel, cmd->token, &exp);
  c->nallowed = nallowed;
  if (!ok) {
    ps->auth_failures++;
    push_client_error(c, cmd->id, PUSH_E_PERMISSION,
                      "invalid or expired subscription token", 0);
    return;
  }
  push_client_set_sub_exp(c, cmd->channel, exp);
  ps->refreshes++;
  reply_ttl(c, cmd->id, exp);
}

/* The backend's answer to a refresh: {"expire_at": N} extends the
 * connection, {"expired": true} ends it (3006). */
static void refresh_proxied(push_op *op, const push_proxy_answer *a) {
  push_client *c = op->c;
  push_op_free(op);
  if (c == NULL || c->gone) {
    return;
  }
  c->refreshing = 0;
  push_json v;
  uint64_t exp = 0;
  if (a->kind == PUSH_PROXY_DISCONNECT) {
    push_client_disconnect(c, a->code, a->message);
  } else if (a->kind != PUSH_PROXY_RESULT) {
    /* Unavailable or refused: asked again next second, until exp. */
  } else if (push_json_get(a->result, "expired", &v) &&
             push_json_type_of(v) == PUSH_JSON_TRUE) {
    c->ps->tokens_expired++;
    push_client_disconnect(c, PUSH_D_TOKEN_EXPIRED, "token expired");
  } else if (push_json_get(a->result, "expire_at", &v) &&
             push_json_u64(v, &exp) == 0) {
    c->exp = (int64_t)exp;
    c->ps->refreshes++;
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
  }
}

static void ask_refresh(push_client *c) {
  push_server *ps = c->ps;
  push_op *op = push_op_new(ps, c, NULL, 0, NULL);
  if (op == NULL) {
    return;
  }
  c->refreshing = 1;
  push_buf b = {0};
  push_proxy_body(&b, c, 1);
  push_buf_raw(&b, "}", 1);
  push_proxy_call(ps, PUSH_PROXY_REFRESH, ps->cfg->backend.refresh_url, op, &b,
                  refresh_proxied);
  push_buf_free(&b);
}

/* {"push":{"refresh":{"ttl":N}}} or {"push":{"channel":C,"sub_refresh":
 * {"ttl":N}}}: ask the client for a new token before exp. */
static void push_refresh(push_client *c, const char *channel, int64_t ttl) {
  push_buf b = {0};
  push_buf_raw(&b, "{\"push\":{", 9);
  if (channel) {
    push_buf_raw(&b, "\"channel\":", 10);
    push_buf_str(&b, channel, strlen(channel));
    push_buf_raw(&b, ",\"sub_refresh\":{\"ttl\":", 22);
  } else {
    push_buf_raw(&b, "\"refresh\":{\"ttl\":", 17);
  }
  push_buf_u64(&b, ttl > 0 ? (uint64_t)ttl : 0);
  push_buf_raw(&b, "}}}", 3);
  if (b.p) {
    push_send_text(c, b.p, b.len);
  }
  push_buf_free(&b);
  c->ps->refresh_pushes++;
}

void push_credentials_tick(push_server *ps, int64_t now_ms) {
  int64_t now = now_ms / 1000;
  int64_t ahead = ps->cfg->refresh_ahead_s;
  const char *refresh_url = ps->cfg->backend.refresh_url;
  for (push_client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    if (c->gone) {
      continue;
    }
    if (c->exp != 0 && c->exp <= now) {
      /* A connection whose credentials expire is told then (3006:
       * reconnect with new ones), not left open on them. */
      ps->tokens_expired++;
      push_client_disconnect(c, PUSH_D_TOKEN_EXPIRED, "token expired");
      continue;
    }
    if (c->exp != 0 && c->exp - now <= ahead) {
      if (c->exp_by_proxy && refresh_url && !c->refreshing) {
        ask_refresh(c);
      } else if (!c->exp_by_proxy && !c->refresh_sent && c->ws) {
        c->refresh_sent = 1;
        push_refresh(c, NULL, c->exp - now);
      }
    }
    for (size_t i = 0; c->nsub_exp > 0 && i < c->nsubs && !c->gone; i++) {
      struct push_sub_exp *x = &c->sub_exp[i];
      if (x->exp == 0) {
        continue;
      }
      if (x->exp <= now) {
        char channel[PUSH_CHANNEL_MAX + 1];
        snprintf(channel, sizeof(channel), "%s", c->subs[i]);
        ps->sub_expired++;
        push_server_unsubscribe(c, channel, "subscription expired");
        i--; /* the last subscription took this place */
      } else if (x->exp - now <= ahead && !x->warned) {
        x->warned = 1;
        push_refresh(c, c->subs[i], x->exp - now);
      }
    }
  }
}
