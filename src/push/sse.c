/* sse.c - Server-Sent Events (GET /sse?channel=...): one channel per
 * stream, resumed from Last-Event-ID ("epoch:offset"), publications as
 * "data:" lines, keepalive comments. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/server_int.h"

int push_sse_send_pub(push_client *c, const char *channel, push_pub *pub) {
  push_buf b = {0};
  char head[96];
  int n = snprintf(head, sizeof(head),
                   "id: %s:%" PRIu64 "\ndata: ", c->sse_epoch, pub->offset);
  push_buf_raw(&b, head, (size_t)n);
  push_buf_raw(&b, "{\"channel\":", 11);
  push_buf_str(&b, channel, strlen(channel));
  push_buf_raw(&b, ",\"pub\":", 7);
  /* One data line per line of the JSON (published JSON may hold newlines
   * between tokens). */
  const char *j = pub->frame + pub->json_off;
  size_t start = 0;
  for (size_t i = 0; i < pub->json_len; i++) {
    if (j[i] == '\n' || j[i] == '\r') {
      push_buf_raw(&b, j + start, i - start);
      push_buf_raw(&b, "\ndata: ", 7);
      start = i + 1;
    }
  }
  push_buf_raw(&b, j + start, pub->json_len - start);
  push_buf_raw(&b, "}\n\n", 3);
  if (b.p && herald_http_write(c->sse, b.p, b.len) == HERALD_SEND_DROPPED) {
    c->ps->drops++;
    c->ps->slow_disconnects++;
    push_log(PUSH_LOG_WARN, "ev=slow_consumer client=%s transport=sse", c->id);
    push_buf_free(&b);
    push_client_disconnect(c, PUSH_D_SLOW, "slow consumer");
    return -1;
  }
  c->ps->messages_out++;
  c->ps->bytes_out += b.len;
  push_buf_free(&b);
  return 0;
}

static void sse_gone(herald_http *h, void *ud) {
  push_client *c = ud;
  if (c->sse == NULL) {
    return;
  }
  c->sse = NULL;
  c->gone = 1;
  herald_http_end(h);
  push_client_free(c);
}

/* Parses Last-Event-ID, "epoch:offset", into *since. Returns 1 when there
 * is none, 0 when it was read, -1 when it is there but is not one the
 * server sent (the stream then starts live and says "unrecovered"). */
static int last_event_id(const herald_request *req, push_pos *since) {
  herald_str lei;
  char last[64];
  if (!herald_header_find(req->headers, req->nheaders, "last-event-id", &lei)) {
    return 1;
  }
  if (lei.len >= sizeof(last)) {
    return -1;
  }
  memcpy(last, lei.ptr, lei.len);
  last[lei.len] = 0;
  char *colon = strrchr(last, ':');
  if (colon == NULL || colon == last ||
      (size_t)(colon - last) > PUSH_EPOCH_MAX || colon[1] < '0' ||
      colon[1] > '9' || memchr(last, 0, lei.len) != NULL) {
    return -1;
  }
  *colon = 0;
  char *end;
  unsigned long long off = strtoull(colon + 1, &end, 10);
  if (*end != 0) {
    return -1;
  }
  memcpy(since->epoch, last, (size_t)(colon - last) + 1);
  since->offset = off;
  since->set = 1;
  return 0;
}

static void sse_done(push_op *op, int status);

void push_sse(push_server *ps, herald_http *h, const herald_request *req) {
  char channel[PUSH_CHANNEL_MAX + 1], token[8192];
  if (!push_origin_ok(ps, req)) {
    push_http_error(h, 403, PUSH_E_PERMISSION, "origin not allowed");
    return;
  }
  if (!push_query_param(req->query, "channel", channel, sizeof(channel)) ||
      !push_channel_valid(channel, strlen(channel))) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                    "?channel= is missing or invalid");
    return;
  }
  const push_ns *ns = push_hub_ns(ps->hub, channel);
  if (ns == NULL) {
    push_http_error(h, 404, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace");
    return;
  }
  if (!push_channel_room(ps, channel)) {
    push_http_error(h, 503, PUSH_E_LIMIT, "too many channels on this node");
    return;
  }
  push_client *c = push_client_new(ps);
  if (c == NULL) {
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  if (push_query_param(req->query, "token", token, sizeof(token))) {
    push_jwt_claims cl;
    memset(&cl, 0, sizeof(cl));
    int rv =
        push_jwt_verify(token, strlen(token), &ps->keys, push_now_ms() / 1000,
                        ps->cfg->jwt_require_exp, &cl);
    if (rv != PUSH_JWT_OK) {
      ps->auth_failures++;
      push_client_free(c);
      push_http_error(
          h, 401,
          rv == PUSH_JWT_EXPIRED ? PUSH_E_TOKEN_EXPIRED : PUSH_E_UNAUTHORIZED,
          rv == PUSH_JWT_EXPIRED ? "token expired" : "invalid token");
      return;
    }
    push_client_take_claims(c, &cl);
  } else if (!ps->cfg->anonymous) {
    ps->auth_failures++;
    push_client_free(c);
    push_http_error(h, 401, PUSH_E_UNAUTHORIZED, "a token is required");
    return;
  }
  push_json none = {NULL, 0};
  if (!push_may_subscribe(c, ns, channel, none)) {
    push_client_free(c);
    push_http_error(h, 403, PUSH_E_PERMISSION, "private channel");
    return;
  }
  push_op *op = push_op_new(ps, c, h, 0, channel);
  if (op == NULL) {
    push_client_free(c);
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  op->synced = sse_done;
  int lei = last_event_id(req, &op->since);
  if (lei < 0) {
    /* A position that cannot be one of ours: resume from nothing, and say
     * so (an "unrecovered" event) instead of starting silently. */
    snprintf(op->since.epoch, sizeof(op->since.epoch), "?");
    op->since.offset = 0;
    op->since.set = 1;
  }
  push_op_sync(op);
}

/* The second half of an SSE request, once the channel is current. */
static void sse_done(push_op *op, int status) {
  push_server *ps = op->ps;
  push_client *c = op->c;
  herald_http *h = op->h;
  const char *channel = op->channel;
  int ok = status == PUSH_ENGINE_OK;
  if (c == NULL || !ok || ps->stopping) {
    if (ok) {
      push_engine_release(ps->engine, channel);
    }
    if (c != NULL) {
      push_client_free(c);
    }
    if (ok) {
      push_http_error(h, 503, PUSH_E_INTERNAL, "shutting down");
    } else {
      push_http_engine_down(ps, h);
    }
    return;
  }
  herald_header hdrs[] = {{{"Content-Type", 12}, {"text/event-stream", 17}},
                          {{"Cache-Control", 13}, {"no-cache", 8}},
                          {{"X-Accel-Buffering", 17}, {"no", 2}}};
  if (push_client_add_sub(c, channel) != 0 ||
      herald_http_stream(h, 200, hdrs, 3, sse_gone, c) != 0) {
    push_engine_release(ps->engine, channel);
    push_client_drop_sub(c, channel);
    push_client_free(c);
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  c->sse = h;
  c->connected = 1;
  push_sub sub = push_client_sub(c);
  push_result r;
  memset(&r, 0, sizeof(r));
  if (push_hub_subscribe(ps->hub, channel, &sub, &op->since, push_now_ms(),
                         &r) < 0) {
    /* Not subscribed: it must not be left for push_client_free. */
    push_client_drop_sub(c, channel);
    push_engine_release(ps->engine, channel);
    push_client_disconnect(c, PUSH_D_SHUTDOWN, "out of memory");
    return;
  }
  snprintf(c->sse_epoch, sizeof(c->sse_epoch), "%s", r.pos.epoch);
  push_client_joined(c, channel);
  /* A retry hint, then what was missed (or the news that it is gone). */
  herald_http_write(h, "retry: 2000\n\n", 13);
  if (op->since.set && !r.recovered) {
    char ev[96];
    int n = snprintf(ev, sizeof(ev),
                     "event: unrecovered\nid: %s:%" PRIu64 "\ndata: {}\n\n",
                     r.pos.epoch, r.pos.offset);
    herald_http_write(h, ev, (size_t)n);
  }
  push_log(PUSH_LOG_INFO, "ev=sse client=%s channel=%s", c->id, channel);
  for (size_t i = 0; i < r.npubs; i++) {
    if (push_sse_send_pub(c, channel, r.pubs[i]) != 0) {
      break; /* c is gone: over its output cap */
    }
  }
  push_result_free(&r);
}

void push_sse_keepalive(push_server *ps) {
  for (push_client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    if (c->sse && !c->gone) {
      herald_http_write(c->sse, ": ping\n\n", 8);
    }
  }
}
