/* sse.c - Server-Sent Events (GET /sse?channel=A&channel=B...): up to
 * max_sse_channels channels on one stream, each resumed from its own
 * position. Event ids carry the position of every channel of the stream:
 * "epoch:offset" on a stream of one channel (the original form),
 * "A@epoch:offset;B@epoch:offset" on a stream of several. Publications
 * are "data:" lines naming their channel; comments keep the stream alive. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/server_int.h"

/* One channel of a stream. */
struct push_sse_chan {
  char name[PUSH_CHANNEL_MAX + 1];
  push_pos since; /* asked for: from Last-Event-ID (unset: live) */
  push_pos pos;   /* what the client holds: sent in every event id */
  int synced;     /* holds an engine reference that no subscription owns */
  int failed;     /* the engine could not sync it */
};

void push_sse_free(push_client *c) {
  for (size_t i = 0; i < c->nsse_chans; i++) {
    if (c->sse_chans[i].synced) {
      push_engine_release(c->ps->engine, c->sse_chans[i].name);
    }
  }
  free(c->sse_chans);
  c->sse_chans = NULL;
  c->nsse_chans = 0;
}

static struct push_sse_chan *find_chan(push_client *c, const char *name,
                                       size_t len) {
  for (size_t i = 0; i < c->nsse_chans; i++) {
    if (strlen(c->sse_chans[i].name) == len &&
        memcmp(c->sse_chans[i].name, name, len) == 0) {
      return &c->sse_chans[i];
    }
  }
  return NULL;
}

/* "id: ...\n": every channel's position (one channel: "epoch:offset"). */
static void put_id(push_buf *b, const push_client *c) {
  push_buf_raw(b, "id: ", 4);
  for (size_t i = 0; i < c->nsse_chans; i++) {
    const struct push_sse_chan *ch = &c->sse_chans[i];
    char pos[PUSH_EPOCH_MAX + 32];
    int n = snprintf(pos, sizeof(pos), "%s:%" PRIu64, ch->pos.epoch,
                     ch->pos.offset);
    if (c->nsse_chans > 1) {
      if (i > 0) {
        push_buf_raw(b, ";", 1);
      }
      push_buf_raw(b, ch->name, strlen(ch->name));
      push_buf_raw(b, "@", 1);
    }
    push_buf_raw(b, pos, (size_t)n);
  }
  push_buf_raw(b, "\n", 1);
}

/* Writes b on c's stream and frees it. Returns 0, or -1 when c was over
 * its output cap: then it is disconnected and freed. */
static int sse_write(push_client *c, push_buf *b, int counted) {
  if (b->p && herald_http_write(c->sse, b->p, b->len) == HERALD_SEND_DROPPED) {
    c->ps->drops++;
    c->ps->slow_disconnects++;
    push_log(PUSH_LOG_WARN, "ev=slow_consumer client=%s transport=sse", c->id);
    push_buf_free(b);
    push_client_disconnect(c, PUSH_D_SLOW, "slow consumer");
    return -1;
  }
  if (counted) {
    c->ps->messages_out++;
    c->ps->bytes_out += b->len;
  }
  push_buf_free(b);
  return 0;
}

/* The channel a publication's frame names: {"push":{"channel":"NAME",...
 * (channel names hold no character JSON escapes). */
static int pub_channel(const push_pub *pub, const char **name, size_t *len) {
  static const char head[] = "{\"push\":{\"channel\":\"";
  size_t hl = sizeof(head) - 1;
  if (pub->frame_len <= hl || memcmp(pub->frame, head, hl) != 0) {
    return -1;
  }
  const char *p = pub->frame + hl;
  const char *q = memchr(p, '"', pub->frame_len - hl);
  if (q == NULL) {
    return -1;
  }
  *name = p;
  *len = (size_t)(q - p);
  return 0;
}

int push_sse_send_pub(push_client *c, push_pub *pub) {
  const char *name;
  size_t nlen;
  struct push_sse_chan *ch = NULL;
  if (pub_channel(pub, &name, &nlen) == 0) {
    ch = find_chan(c, name, nlen);
  }
  if (ch == NULL) {
    return 0; /* not one of this stream's channels: cannot happen */
  }
  ch->pos.offset = pub->offset;
  push_buf b = {0};
  put_id(&b, c);
  push_buf_raw(&b, "data: {\"channel\":", 17);
  push_buf_str(&b, ch->name, strlen(ch->name));
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
  return sse_write(c, &b, 1);
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

/* ---- Last-Event-ID ------------------------------------------------------ */

/* s[0..n) as "epoch:offset" into *p. Returns 0, or -1 when it cannot be a
 * position this server sent. */
static int parse_pos(const char *s, size_t n, push_pos *p) {
  const char *colon = NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == ':') {
      colon = s + i;
    }
  }
  if (colon == NULL || colon == s || (size_t)(colon - s) > PUSH_EPOCH_MAX) {
    return -1;
  }
  for (const char *e = s; e < colon; e++) {
    if (*e <= ' ' || *e >= 0x7f || *e == '@' || *e == ';') {
      return -1;
    }
  }
  const char *d = colon + 1;
  size_t nd = (size_t)(s + n - d);
  if (nd == 0 || nd > 20) {
    return -1;
  }
  char digits[24];
  for (size_t i = 0; i < nd; i++) {
    if (d[i] < '0' || d[i] > '9') {
      return -1;
    }
    digits[i] = d[i];
  }
  digits[nd] = 0;
  errno = 0;
  unsigned long long off = strtoull(digits, NULL, 10);
  if (errno == ERANGE) {
    return -1;
  }
  memcpy(p->epoch, s, (size_t)(colon - s));
  p->epoch[colon - s] = 0;
  p->offset = off;
  p->set = 1;
  return 0;
}

/*
 * Sets each channel's since from id (Last-Event-ID, or the last_event_id
 * query parameter): items "NAME@epoch:offset" separated by ';', or one
 * "epoch:offset" for a stream of one channel. A channel whose item is
 * malformed or given twice starts "unrecovered" (a position that cannot
 * be one of ours: resume from nothing, and say so); an item of a channel
 * not on the stream is ignored; a channel without an item starts live,
 * unless the id held an item that names no channel (garbage, or an
 * "epoch:offset" on a stream of several channels): then no channel can be
 * vouched for and each starts unrecovered.
 */
static void apply_last_event_id(push_client *c, const char *id, size_t n) {
  size_t nch = c->nsse_chans;
  unsigned char seen[PUSH_SSE_CHANNELS_MAX] = {0};
  unsigned char bad[PUSH_SSE_CHANNELS_MAX] = {0};
  int garbage = 0;
  size_t i = 0;
  while (i < n) {
    size_t end = i;
    while (end < n && id[end] != ';') {
      end++;
    }
    const char *item = id + i;
    size_t len = end - i;
    i = end + 1;
    if (len == 0) {
      continue;
    }
    const char *at = NULL;
    for (size_t k = 0; k < len; k++) {
      if (item[k] == '@') {
        at = item + k;
      }
    }
    struct push_sse_chan *ch = NULL;
    push_pos pos;
    memset(&pos, 0, sizeof(pos));
    int ok;
    if (at != NULL) {
      ch = find_chan(c, item, (size_t)(at - item));
      ok = parse_pos(at + 1, (size_t)(item + len - at - 1), &pos) == 0;
    } else if (nch == 1 && len == n) {
      ch = &c->sse_chans[0];
      ok = parse_pos(item, len, &pos) == 0;
    } else {
      garbage = 1;
      continue;
    }
    if (ch == NULL) {
      continue; /* a channel this stream no longer has */
    }
    size_t k = (size_t)(ch - c->sse_chans);
    if (seen[k] || !ok) {
      bad[k] = 1;
    }
    seen[k] = 1;
    if (ok) {
      ch->since = pos;
    }
  }
  for (size_t k = 0; k < nch; k++) {
    push_pos *since = &c->sse_chans[k].since;
    if (bad[k] || (!seen[k] && garbage)) {
      snprintf(since->epoch, sizeof(since->epoch), "?");
      since->offset = 0;
      since->set = 1;
    } else if (!seen[k]) {
      since->set = 0;
    }
  }
}

/* ---- the request ----------------------------------------------------------
 */

static void sse_synced(push_op *op, int status);
static void sse_start(push_client *c, herald_http *h);

/* Reads the channel= parameters into c->sse_chans. Returns 0, or -1 after
 * answering the request (400 or 503). */
static int read_channels(push_server *ps, herald_http *h,
                         const herald_request *req, push_client *c) {
  size_t max = ps->cfg->max_sse_channels;
  size_t n = 0, from = 0;
  char name[PUSH_CHANNEL_MAX + 1], msg[PUSH_CHANNEL_MAX + 128];
  int rv;
  while ((rv = push_query_next(req->query, "channel", &from, name,
                               sizeof(name))) != 0) {
    n++;
    if (rv < 0 || !push_channel_valid(name, strlen(name))) {
      snprintf(msg, sizeof(msg),
               "channel %zu: not a valid channel name (1-255 of letters, "
               "digits and _-.:@/=,)",
               n);
      push_http_error(h, 400, PUSH_E_BAD_REQUEST, msg);
      return -1;
    }
  }
  if (n == 0) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                    "?channel= is missing (give one or more)");
    return -1;
  }
  if (n > max) {
    snprintf(msg, sizeof(msg),
             "too many channels: %zu given, at most %zu on one stream "
             "(max_sse_channels)",
             n, max);
    push_http_error(h, 400, PUSH_E_LIMIT, msg);
    return -1;
  }
  c->sse_chans = calloc(n, sizeof(*c->sse_chans));
  if (c->sse_chans == NULL) {
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return -1;
  }
  from = 0;
  for (size_t i = 0; i < n; i++) {
    push_query_next(req->query, "channel", &from, name, sizeof(name));
    if (find_chan(c, name, strlen(name)) != NULL) {
      snprintf(msg, sizeof(msg), "channel %s given twice", name);
      push_http_error(h, 400, PUSH_E_BAD_REQUEST, msg);
      return -1;
    }
    snprintf(c->sse_chans[i].name, sizeof(c->sse_chans[i].name), "%s", name);
    c->nsse_chans = i + 1;
  }
  return 0;
}

/* The stream's position to resume from: the Last-Event-ID header, else
 * the last_event_id query parameter (a client that opens a new stream,
 * which browsers send no Last-Event-ID for). Returns 0, or -1 after
 * answering 400. */
static int read_last_event_id(herald_http *h, const herald_request *req,
                              push_client *c) {
  herald_str lei;
  if (herald_header_find(req->headers, req->nheaders, "last-event-id", &lei)) {
    if (lei.len == 0) {
      return 0;
    }
    char *id = malloc(lei.len);
    if (id == NULL) {
      push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
      return -1;
    }
    memcpy(id, lei.ptr, lei.len);
    apply_last_event_id(c, id, lei.len);
    free(id);
    return 0;
  }
  size_t from = 0;
  char *id = malloc(req->query.len + 1);
  if (id == NULL) {
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return -1;
  }
  int rv = push_query_next(req->query, "last_event_id", &from, id,
                           req->query.len + 1);
  if (rv < 0) {
    free(id);
    push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                    "?last_event_id= is badly encoded or holds %00");
    return -1;
  }
  if (rv > 0 && id[0] != 0) {
    apply_last_event_id(c, id, strlen(id));
  }
  free(id);
  return 0;
}

void push_sse(push_server *ps, herald_http *h, const herald_request *req) {
  char token[8192], msg[PUSH_CHANNEL_MAX + 64];
  if (!push_origin_ok(ps, req)) {
    push_http_error(h, 403, PUSH_E_PERMISSION, "origin not allowed");
    return;
  }
  push_client *c = push_client_new(ps);
  if (c == NULL) {
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  if (read_channels(ps, h, req, c) != 0) {
    push_client_free(c);
    return;
  }
  for (size_t i = 0; i < c->nsse_chans; i++) {
    const char *channel = c->sse_chans[i].name;
    if (push_hub_ns(ps->hub, channel) == NULL) {
      snprintf(msg, sizeof(msg), "unknown namespace: %s", channel);
      push_client_free(c);
      push_http_error(h, 404, PUSH_E_UNKNOWN_NAMESPACE, msg);
      return;
    }
    if (!push_channel_room(ps, channel)) {
      push_client_free(c);
      push_http_error(h, 503, PUSH_E_LIMIT, "too many channels on this node");
      return;
    }
  }
  int tok =
      push_query_next(req->query, "token", &(size_t){0}, token, sizeof(token));
  if (tok > 0) {
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
  } else if (tok < 0 || !ps->cfg->anonymous) {
    ps->auth_failures++;
    push_client_free(c);
    push_http_error(h, 401, PUSH_E_UNAUTHORIZED,
                    tok < 0 ? "invalid token" : "a token is required");
    return;
  }
  push_json none = {NULL, 0};
  for (size_t i = 0; i < c->nsse_chans; i++) {
    const char *channel = c->sse_chans[i].name;
    if (!push_may_subscribe(c, push_hub_ns(ps->hub, channel), channel, none)) {
      snprintf(msg, sizeof(msg), "private channel: %s", channel);
      push_client_free(c);
      push_http_error(h, 403, PUSH_E_PERMISSION, msg);
      return;
    }
  }
  if (read_last_event_id(h, req, c) != 0) {
    push_client_free(c);
    return;
  }
  /* Every channel made current (with Redis, maybe later), then the stream
   * starts: sse_synced counts them down. */
  size_t n = c->nsse_chans;
  c->sse_pending = n;
  for (size_t i = 0; i < n; i++) {
    push_op *op = push_op_new(ps, c, h, 0, c->sse_chans[i].name);
    if (op == NULL) {
      c->sse_chans[i].failed = 1;
      if (--c->sse_pending == 0) {
        sse_start(c, h);
      }
      continue;
    }
    op->synced = sse_synced;
    push_op_sync(op);
  }
}

/* One channel is current (or the engine failed it). */
static void sse_synced(push_op *op, int status) {
  push_client *c = op->c;
  int ok = status == PUSH_ENGINE_OK;
  if (c == NULL) {
    /* Freed with the server, after its loop ended: the request goes with
     * the connection. */
    if (ok) {
      push_engine_release(op->ps->engine, op->channel);
    }
    return;
  }
  struct push_sse_chan *ch = find_chan(c, op->channel, strlen(op->channel));
  if (ch == NULL) {
    if (ok) {
      push_engine_release(op->ps->engine, op->channel);
    }
    return;
  }
  ch->synced = ok;
  ch->failed = !ok;
  if (--c->sse_pending == 0) {
    sse_start(c, op->h);
  }
}

/* "event: unrecovered": ch's position is gone; the stream goes on from
 * its present. */
static int send_unrecovered(push_client *c, struct push_sse_chan *ch) {
  push_buf b = {0};
  push_buf_raw(&b, "event: unrecovered\n", 19);
  put_id(&b, c);
  push_buf_raw(&b, "data: {\"channel\":", 17);
  push_buf_str(&b, ch->name, strlen(ch->name));
  push_buf_raw(&b, ",\"epoch\":", 9);
  push_buf_str(&b, ch->pos.epoch, strlen(ch->pos.epoch));
  push_buf_raw(&b, ",\"offset\":", 10);
  push_buf_u64(&b, ch->pos.offset);
  push_buf_raw(&b, "}\n\n", 3);
  return sse_write(c, &b, 0);
}

/* The second half of an SSE request, once every channel is current. */
static void sse_start(push_client *c, herald_http *h) {
  push_server *ps = c->ps;
  size_t n = c->nsse_chans;
  int failed = 0;
  for (size_t i = 0; i < n; i++) {
    failed |= c->sse_chans[i].failed;
  }
  if (failed || ps->stopping) {
    push_client_free(c); /* releases the channels that were synced */
    if (failed) {
      push_http_engine_down(ps, h);
    } else {
      push_http_error(h, 503, PUSH_E_INTERNAL, "shutting down");
    }
    return;
  }
  herald_header hdrs[] = {{{"Content-Type", 12}, {"text/event-stream", 17}},
                          {{"Cache-Control", 13}, {"no-cache", 8}},
                          {{"X-Accel-Buffering", 17}, {"no", 2}}};
  push_result *r = calloc(n, sizeof(*r));
  if (r == NULL || herald_http_stream(h, 200, hdrs, 3, sse_gone, c) != 0) {
    free(r);
    push_client_free(c);
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  c->sse = h;
  c->connected = 1;
  /* Subscribe to every channel in this pass: each history read and its
   * subscription happen together. */
  push_sub sub = push_client_sub(c);
  int64_t now = push_now_ms();
  for (size_t i = 0; i < n; i++) {
    struct push_sse_chan *ch = &c->sse_chans[i];
    if (push_client_add_sub(c, ch->name) != 0) {
      goto oom;
    }
    if (push_hub_subscribe(ps->hub, ch->name, &sub, &ch->since, now, &r[i]) <
        0) {
      /* Not subscribed: it must not be left for push_client_free. */
      push_client_drop_sub(c, ch->name);
      goto oom;
    }
    ch->synced = 0; /* the subscription owns the engine reference now */
    push_client_joined(c, ch->name);
    /* What the client holds until this channel's events go out. */
    ch->pos = ch->since.set ? ch->since : r[i].pos;
  }
  push_log(PUSH_LOG_INFO, "ev=sse client=%s channel=%s channels=%zu", c->id,
           c->sse_chans[0].name, n);
  /* A retry hint; then the channels whose position is gone are told so;
   * then what the others missed, channel by channel. Every event's id holds
   * only what was sent before it, so a stream cut anywhere resumes without
   * a gap. */
  herald_http_write(h, "retry: 2000\n\n", 13);
  for (size_t i = 0; i < n; i++) {
    struct push_sse_chan *ch = &c->sse_chans[i];
    if (ch->since.set && !r[i].recovered) {
      ch->pos = r[i].pos;
      if (send_unrecovered(c, ch) != 0) {
        goto gone;
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < r[i].npubs; k++) {
      if (push_sse_send_pub(c, r[i].pubs[k]) != 0) {
        goto gone;
      }
    }
    c->sse_chans[i].pos = r[i].pos;
  }
  for (size_t i = 0; i < n; i++) {
    push_result_free(&r[i]);
  }
  free(r);
  return;
oom:
  for (size_t i = 0; i < n; i++) {
    push_result_free(&r[i]);
  }
  free(r);
  /* Subscribed channels go with the client; the others' references too
   * (push_sse_free). */
  push_client_disconnect(c, PUSH_D_SHUTDOWN, "out of memory");
  return;
gone:
  /* c is freed: over its output cap. */
  for (size_t i = 0; i < n; i++) {
    push_result_free(&r[i]);
  }
  free(r);
}

void push_sse_keepalive(push_server *ps) {
  for (push_client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    if (c->sse && !c->gone) {
      herald_http_write(c->sse, ": ping\n\n", 8);
    }
  }
}
