/* api.c - the HTTP API (the /api/ endpoints of docs/protocol.md): the API
 * key, publish and broadcast, disconnect, and the reads (channels, info,
 * presence, history). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "push/server_int.h"

static int api_key_ok(push_server *ps, const herald_request *req) {
  herald_str auth;
  if (ps->cfg->api_key == NULL ||
      !herald_header_find(req->headers, req->nheaders, "authorization",
                          &auth) ||
      auth.len < 7 || strncasecmp(auth.ptr, "apikey ", 7) != 0) {
    return 0;
  }
  size_t klen = strlen(ps->cfg->api_key);
  const char *k = auth.ptr + 7;
  size_t n = auth.len - 7;
  /* Constant time in the key's length. */
  unsigned diff = (unsigned)(n != klen);
  for (size_t i = 0; i < klen; i++) {
    diff |= (unsigned)(ps->cfg->api_key[i] ^ (i < n ? k[i] : 0));
  }
  return diff == 0;
}

/* ---- publish and broadcast -------------------------------------------- */

/* One /api/publish or /api/broadcast request: a result per channel, sent
 * when the last one is known (with Redis they come back one by one). */
struct push_bcast {
  push_server *ps;
  herald_http *h;
  int broadcast;
  size_t n, left;
  struct bres {
    int code; /* 0: published */
    const char *err;
    push_pos pos;
  } * res;
};

static void put_bres(push_buf *b, const struct bres *r) {
  if (r->code != 0) {
    push_put_error(b, r->code, r->err);
  } else {
    push_buf_raw(b, "{", 1);
    push_put_pos(b, &r->pos);
    push_buf_raw(b, "}", 1);
  }
}

static void bcast_finish(push_bcast *bc) {
  herald_http *h = bc->h;
  push_buf out = {0};
  if (!bc->broadcast && bc->res[0].code != 0) {
    int code = bc->res[0].code;
    push_http_error(h,
                    code == PUSH_E_ENGINE || code == PUSH_E_INTERNAL ||
                            code == PUSH_E_LIMIT
                        ? 503
                    : code == PUSH_E_UNKNOWN_NAMESPACE ? 404
                                                       : 400,
                    code, bc->res[0].err);
  } else if (!bc->broadcast) {
    put_bres(&out, &bc->res[0]);
    push_http_result(h, &out);
  } else {
    push_buf_raw(&out, "{\"responses\":[", 14);
    for (size_t i = 0; i < bc->n; i++) {
      if (i) {
        push_buf_raw(&out, ",", 1);
      }
      put_bres(&out, &bc->res[i]);
    }
    push_buf_raw(&out, "]}", 2);
    push_http_result(h, &out);
  }
  push_buf_free(&out);
  free(bc->res);
  free(bc);
}

static void bcast_set(push_bcast *bc, size_t i, int code, const char *err,
                      const push_pos *pos) {
  bc->res[i].code = code;
  bc->res[i].err = err;
  bc->ps->engine_unavailable += code == PUSH_E_ENGINE;
  if (pos) {
    bc->res[i].pos = *pos;
  }
  if (--bc->left == 0) {
    bcast_finish(bc);
  }
}

static void on_published(void *ud, const push_engine_reply *rep) {
  push_op *op = ud;
  int ok = rep->status == PUSH_ENGINE_OK;
  push_publish_done(op, rep);
  bcast_set(op->bc, op->bc_index, ok ? 0 : PUSH_E_ENGINE,
            ok ? NULL : PUSH_ENGINE_DOWN_MSG, &rep->pos);
  push_op_free(op);
}

/* Publishes to the i-th channel of bc. */
static void publish_one(push_bcast *bc, size_t i, push_json v,
                        const push_publication *p) {
  push_server *ps = bc->ps;
  char channel[PUSH_CHANNEL_MAX + 1];
  long len = push_json_str(v, channel, sizeof(channel));
  if (len < 0 || !push_channel_valid(channel, (size_t)len)) {
    bcast_set(bc, i, PUSH_E_BAD_REQUEST, "invalid channel name", NULL);
    return;
  }
  if (push_hub_ns(ps->hub, channel) == NULL) {
    bcast_set(bc, i, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace", NULL);
    return;
  }
  if (!push_channel_room(ps, channel)) {
    bcast_set(bc, i, PUSH_E_LIMIT, "too many channels on this node", NULL);
    return;
  }
  push_op *op = push_op_new(ps, NULL, bc->h, 0, NULL);
  if (op == NULL) {
    bcast_set(bc, i, PUSH_E_INTERNAL, "out of memory", NULL);
    return;
  }
  op->bc = bc;
  op->bc_index = i;
  push_pos pos;
  int rv = push_publish(ps, channel, p, &pos, op, on_published);
  if (rv == PUSH_ENGINE_PENDING) {
    return;
  }
  push_op_free(op);
  if (rv == PUSH_ENGINE_OK) {
    bcast_set(bc, i, 0, NULL, &pos);
  } else if (rv == PUSH_ENGINE_DOWN) {
    bcast_set(bc, i, PUSH_E_ENGINE, PUSH_ENGINE_DOWN_MSG, NULL);
  } else {
    bcast_set(bc, i, PUSH_E_INTERNAL, "out of memory", NULL);
  }
}

static void api_publish(push_server *ps, herald_http *h, push_json body,
                        int broadcast) {
  push_publication p = {{NULL, 0}, {NULL, 0}, NULL, NULL, NULL};
  push_json chv = {NULL, 0}, list = {NULL, 0}, iv;
  char idem[PUSH_IDEM_MAX + 1] = "";
  if (push_json_get(body, "idempotency_key", &iv) &&
      push_json_type_of(iv) != PUSH_JSON_NULL) {
    long n = push_json_str(iv, idem, sizeof(idem));
    int ok = n > 0;
    for (long i = 0; ok && i < n; i++) {
      ok = idem[i] > 0x20 && idem[i] < 0x7f;
    }
    if (!ok) {
      push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                      "idempotency_key must be a string of 1 to 64 "
                      "printable ASCII characters");
      return;
    }
    p.idem = idem;
  }
  const char *bad = push_publish_decode(body, &p.data, &p.b64);
  if (bad != NULL) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST, bad);
    return;
  }
  size_t n = 1;
  if (broadcast) {
    if (!push_json_get(body, "channels", &list) ||
        push_json_type_of(list) != PUSH_JSON_ARRAY) {
      push_http_error(h, 400, PUSH_E_BAD_REQUEST, "channels must be an array");
      return;
    }
    push_json v;
    size_t pos = 0;
    for (n = 0; push_json_next(list, &pos, NULL, &v); n++) {
    }
  } else if (!push_json_get(body, "channel", &chv)) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST, "channel is missing");
    return;
  }
  push_bcast *bc = calloc(1, sizeof(*bc));
  if (bc == NULL || (bc->res = calloc(n ? n : 1, sizeof(*bc->res))) == NULL) {
    free(bc);
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  bc->ps = ps;
  bc->h = h;
  bc->broadcast = broadcast;
  bc->n = n;
  /* One extra count held while the loop runs, so that results arriving
   * at once (memory engine, errors) cannot finish the request early. */
  bc->left = n + 1;
  size_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    push_json v = chv;
    if (broadcast) {
      push_json_next(list, &pos, NULL, &v);
    }
    publish_one(bc, i, v, &p);
  }
  if (--bc->left == 0) {
    bcast_finish(bc);
  }
}

/* ---- disconnect, subscribe, unsubscribe: on every node ---------------- */

/* What the API asks of a user's (or a client's) connections, applied here
 * and, through the engine, on every other node: {"op", "user" or
 * "client", "code" or "channel", "node"}. Returns how many connections of
 * this node it touched. */
static size_t control_apply(push_server *ps, push_json msg) {
  char op[16] = "", user[256] = "", cid[32] = "",
       channel[PUSH_CHANNEL_MAX + 1] = "";
  uint64_t code = PUSH_D_FORCED;
  push_json v;
  if (push_json_get(msg, "op", &v)) {
    push_json_str(v, op, sizeof(op));
  }
  int has_user = push_json_get(msg, "user", &v) &&
                 push_json_str(v, user, sizeof(user)) >= 0;
  int has_client = push_json_get(msg, "client", &v) &&
                   push_json_str(v, cid, sizeof(cid)) >= 0;
  if (push_json_get(msg, "code", &v)) {
    push_json_u64(v, &code);
  }
  if (push_json_get(msg, "channel", &v)) {
    push_json_str(v, channel, sizeof(channel));
  }
  int disconnect = strcmp(op, "disconnect") == 0;
  int subscribe = strcmp(op, "subscribe") == 0;
  size_t n = 0;
  for (push_client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    if (c->gone || !c->connected || (has_user && strcmp(c->user, user)) ||
        (has_client && strcmp(c->id, cid)) || (!has_user && !has_client)) {
      continue;
    }
    if (disconnect) {
      n++;
      push_client_disconnect(c, (int)code, "disconnected by the server");
    } else if (c->ws && subscribe) {
      n += push_server_subscribe(c, channel) == 0;
    } else if (c->ws) {
      n += (size_t)push_server_unsubscribe(c, channel,
                                           "unsubscribed by the "
                                           "server");
    }
  }
  return n;
}

void push_on_control(void *ud, const char *msg, size_t len) {
  push_server *ps = ud;
  push_json root, v;
  char node[16] = "";
  if (push_json_parse(msg, len, &root) != 0 ||
      push_json_type_of(root) != PUSH_JSON_OBJECT) {
    return;
  }
  if (push_json_get(root, "node", &v) &&
      push_json_str(v, node, sizeof(node)) >= 0 &&
      strcmp(node, ps->node) == 0) {
    return; /* ours: applied when it was asked */
  }
  control_apply(ps, root);
}

/* A control message applied on every loop of this node (node.c), and the
 * answer: how many of the node's connections it touched. */
typedef struct control_ctx {
  push_buf m;
  int disconnect;
} control_ctx;

static uint64_t control_each(push_server *ps, const void *arg) {
  const control_ctx *cx = arg;
  push_json root;
  if (push_json_parse(cx->m.p, cx->m.len, &root) != 0) {
    return 0;
  }
  return control_apply(ps, root);
}

static void control_done(push_server *ps, herald_http *h, uint64_t n,
                         void *arg) {
  control_ctx *cx = arg;
  (void)ps;
  push_buf b = {0};
  push_buf_raw(&b, cx->disconnect ? "{\"disconnected\":" : "{\"connections\":",
               cx->disconnect ? 16 : 15);
  push_buf_u64(&b, n);
  push_buf_raw(&b, "}", 1);
  push_http_result(h, &b);
  push_buf_free(&b);
  push_buf_free(&cx->m);
  free(cx);
}

/* POST /api/disconnect {"user"|"client", "code"?}, /api/subscribe and
 * /api/unsubscribe {"user"|"client", "channel"}. */
static void api_control(push_server *ps, herald_http *h, push_json body,
                        const char *op) {
  char user[256] = "", cid[32] = "", channel[PUSH_CHANNEL_MAX + 1] = "";
  push_json v;
  int disconnect = strcmp(op, "disconnect") == 0;
  long ulen = -1, clen = -1;
  if (push_json_get(body, "user", &v)) {
    ulen = push_json_str(v, user, sizeof(user));
    if (ulen < 0) {
      push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                      "user must be a string of at most 255 bytes");
      return;
    }
  }
  if (push_json_get(body, "client", &v)) {
    clen = push_json_str(v, cid, sizeof(cid));
    if (clen < 0) {
      push_http_error(h, 400, PUSH_E_BAD_REQUEST, "client must be a client id");
      return;
    }
  }
  uint64_t code = PUSH_D_FORCED;
  if (disconnect && push_json_get(body, "code", &v) &&
      (push_json_u64(v, &code) != 0 || code < 3000 || code > 4999)) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST, "code must be 3000-4999");
    return;
  }
  if (ulen < 0 && clen < 0) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST, "give user or client");
    return;
  }
  if (!disconnect) {
    long n = push_json_get(body, "channel", &v)
                 ? push_json_str(v, channel, sizeof(channel))
                 : -1;
    if (n < 0 || !push_channel_valid(channel, (size_t)n)) {
      push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                      "channel is missing or invalid");
      return;
    }
    if (push_hub_ns(ps->hub, channel) == NULL) {
      push_http_error(h, 404, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace");
      return;
    }
  }
  push_buf m = {0};
  push_buf_raw(&m, "{\"op\":", 6);
  push_buf_str(&m, op, strlen(op));
  push_buf_raw(&m, ",\"node\":", 8);
  push_buf_str(&m, ps->node, strlen(ps->node));
  if (ulen >= 0) {
    push_buf_raw(&m, ",\"user\":", 8);
    push_buf_str(&m, user, (size_t)ulen);
  }
  if (clen >= 0) {
    push_buf_raw(&m, ",\"client\":", 10);
    push_buf_str(&m, cid, (size_t)clen);
  }
  if (disconnect) {
    push_buf_raw(&m, ",\"code\":", 8);
    push_buf_u64(&m, code);
  } else {
    push_buf_raw(&m, ",\"channel\":", 11);
    push_buf_str(&m, channel, strlen(channel));
  }
  push_buf_raw(&m, "}", 1);
  push_json root;
  if (m.p == NULL || push_json_parse(m.p, m.len, &root) != 0) {
    push_buf_free(&m);
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  /* The other nodes first: a node that cannot reach them says so rather
   * than act on its own connections only. */
  if (push_engine_control(ps->engine, m.p, m.len) != PUSH_ENGINE_OK) {
    push_buf_free(&m);
    push_http_engine_down(ps, h);
    return;
  }
  control_ctx *cx = malloc(sizeof(*cx));
  if (cx == NULL) {
    push_buf_free(&m);
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  cx->m = m;
  cx->disconnect = disconnect;
  push_node_each(ps, h, control_each, cx, control_done);
}

/* ---- reads ------------------------------------------------------------ */

/* The answer of an engine read: {"result": <prefix><json><suffix>}. */
static void answer_read(push_op *op, const push_engine_reply *rep,
                        const char *prefix, const char *suffix) {
  if (rep->status != PUSH_ENGINE_OK) {
    push_op_engine_down(op);
  } else {
    push_buf b = {0};
    push_buf_raw(&b, prefix, strlen(prefix));
    push_buf_raw(&b, rep->json, rep->len);
    push_buf_raw(&b, suffix, strlen(suffix));
    push_http_result(op->h, &b);
    push_buf_free(&b);
  }
  push_op_free(op);
}

static void on_presence(void *ud, const push_engine_reply *rep) {
  answer_read(ud, rep, "", "");
}

static void on_nodes(void *ud, const push_engine_reply *rep) {
  answer_read(ud, rep, "{\"nodes\":", "}");
}

/* Starts a read (rv of the engine call for op): done now (b holds the
 * JSON), pending, or failed. */
static void read_started(push_op *op, int rv, const push_buf *b,
                         push_engine_cb cb) {
  if (rv == PUSH_ENGINE_PENDING) {
    return;
  }
  push_engine_reply rep = {.status = rv, .json = b->p, .len = b->len};
  if (rv == PUSH_ENGINE_ERROR) {
    push_http_error(op->h, 503, PUSH_E_INTERNAL, "out of memory");
    push_op_free(op);
    return;
  }
  cb(op, &rep);
}

static void api_history_done(push_op *op, int status) {
  push_server *ps = op->ps;
  herald_http *h = op->h;
  if (status != PUSH_ENGINE_OK) {
    push_op_engine_down(op);
    return;
  }
  push_result r;
  memset(&r, 0, sizeof(r));
  push_pos none = {0};
  push_buf b = {0};
  if (push_hub_history(ps->hub, op->channel, op->limit, &none, push_now_ms(),
                       &r) != 0) {
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
  } else {
    push_put_result(&b, &r, 0, 1);
    push_http_result(h, &b);
  }
  push_engine_release(ps->engine, op->channel);
  push_result_free(&r);
  push_buf_free(&b);
}

/* Parses a decimal number no larger than max. Returns 0 or -1. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (*s == 0) {
    return -1;
  }
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10) {
      return -1;
    }
    v = v * 10 + (uint64_t)(*s - '0');
  }
  *out = v;
  return 0;
}

/* GET /api/channels: each loop lists the channels its clients use, as
 * "name\tcount\n" lines (its relays left out); the asking loop adds them
 * up per channel. */
static void channels_fill(push_server *ps, push_buf *out) {
  push_buf b = {0};
  push_json root, chans, k, v, n;
  size_t pos = 0;
  if (push_hub_channels_json(ps->hub, &b) == 0 &&
      push_json_parse(b.p, b.len, &root) == 0 &&
      push_json_get(root, "channels", &chans)) {
    while (push_json_next(chans, &pos, &k, &v) == 1) {
      char name[PUSH_CHANNEL_MAX + 1];
      uint64_t count = 0;
      long len = push_json_str(k, name, sizeof(name));
      if (len < 0 || !push_json_get(v, "subscribers", &n) ||
          push_json_u64(n, &count) != 0) {
        continue;
      }
      count -= count > 0 && push_engine_relayed(ps->engine, name);
      if (count > 0) {
        push_buf_raw(out, name, (size_t)len + 1); /* with its NUL */
        push_buf_raw(out, (const char *)&count, sizeof(count));
      }
    }
  }
  push_buf_free(&b);
}

typedef struct chan_count {
  const char *name;
  uint64_t count;
} chan_count;

static int chan_cmp(const void *a, const void *b) {
  return strcmp(((const chan_count *)a)->name, ((const chan_count *)b)->name);
}

static void channels_collected(push_server *ps, herald_http *h, push_buf *outs,
                               int nouts) {
  (void)ps;
  size_t n = 0, cap = 0;
  chan_count *all = NULL;
  for (int i = 0; i < nouts; i++) {
    for (size_t o = 0; o < outs[i].len;) {
      const char *name = outs[i].p + o;
      o += strlen(name) + 1;
      if (n == cap) {
        cap = cap ? cap * 2 : 64;
        chan_count *a = realloc(all, cap * sizeof(*a));
        if (a == NULL) {
          free(all);
          push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
          return;
        }
        all = a;
      }
      all[n].name = name;
      memcpy(&all[n].count, outs[i].p + o, sizeof(uint64_t));
      o += sizeof(uint64_t);
      n++;
    }
  }
  if (n > 0) {
    qsort(all, n, sizeof(*all), chan_cmp);
  }
  push_buf b = {0};
  push_buf_raw(&b, "{\"channels\":{", 13);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    uint64_t sum = 0;
    while (j < n && strcmp(all[j].name, all[i].name) == 0) {
      sum += all[j++].count;
    }
    if (i > 0) {
      push_buf_raw(&b, ",", 1);
    }
    push_buf_str(&b, all[i].name, strlen(all[i].name));
    push_buf_raw(&b, ":{\"subscribers\":", 16);
    push_buf_u64(&b, sum);
    push_buf_raw(&b, "}", 1);
    i = j;
  }
  push_buf_raw(&b, "}}", 2);
  free(all);
  push_http_result(h, &b);
  push_buf_free(&b);
}

/* GET /api/info, once view sums the node's loops (node.c): the nodes'
 * entries, this one's from view (push_node_json). */
static void api_info(push_server *ps, const push_server *view, herald_http *h) {
  push_buf b = {0};
  push_op *op = push_op_new(ps, NULL, h, 0, NULL);
  if (op == NULL) {
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  ps->view = view;
  int rv = push_engine_nodes(ps->engine, &b, on_nodes, op);
  ps->view = NULL;
  read_started(op, rv, &b, on_nodes);
  push_buf_free(&b);
}

static void api_get(push_server *ps, herald_http *h,
                    const herald_request *req) {
  char channel[PUSH_CHANNEL_MAX + 1], lim[32];
  push_buf b = {0};
  uint64_t limit = 0;
  int info = push_path_is(req, "/api/info");
  int presence = push_path_is(req, "/api/presence");
  if (push_path_is(req, "/api/channels")) {
    push_node_collect(ps, h, channels_fill, channels_collected);
  } else if (!info && !presence && !push_path_is(req, "/api/history")) {
    push_http_error(h, 404, PUSH_E_BAD_REQUEST, "no such endpoint");
  } else if (!info && (!push_query_param(req->query, "channel", channel,
                                         sizeof(channel)) ||
                       !push_channel_valid(channel, strlen(channel)))) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                    "?channel= is missing or invalid");
  } else if (!info && push_hub_ns(ps->hub, channel) == NULL) {
    push_http_error(h, 404, PUSH_E_UNKNOWN_NAMESPACE, "unknown namespace");
  } else if (!info && !presence &&
             push_query_param(req->query, "limit", lim, sizeof(lim)) &&
             parse_uint(lim, 1u << 30, &limit) != 0) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST, "limit must be a number");
  } else {
    push_op *op = push_op_new(ps, NULL, h, 0, info ? NULL : channel);
    if (op == NULL) {
      push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    } else if (info) {
      push_op_free(op);
      push_node_answer(ps, h, api_info);
    } else if (presence) {
      read_started(
          op,
          push_engine_presence_get(ps->engine, channel, &b, on_presence, op),
          &b, on_presence);
    } else {
      op->synced = api_history_done;
      op->limit = limit;
      push_op_sync(op);
    }
  }
  push_buf_free(&b);
}

void push_api(push_server *ps, herald_http *h, const herald_request *req,
              const uint8_t *body, size_t len) {
  if (!api_key_ok(ps, req)) {
    push_http_error(h, 401, PUSH_E_UNAUTHORIZED,
                    ps->cfg->api_key ? "missing or wrong API key"
                                     : "the HTTP API needs api_key configured");
    return;
  }
  int post = push_path_is(req, "/api/publish") ||
             push_path_is(req, "/api/broadcast") ||
             push_path_is(req, "/api/disconnect") ||
             push_path_is(req, "/api/subscribe") ||
             push_path_is(req, "/api/unsubscribe");
  if (post != push_method_is(req, "POST") ||
      (!post && !push_method_is(req, "GET"))) {
    push_http_error(h, 405, PUSH_E_BAD_REQUEST, post ? "use POST" : "use GET");
    return;
  }
  if (!post) {
    api_get(ps, h, req);
    return;
  }
  push_json root;
  push_json_error jerr;
  if (push_json_parse_ex((const char *)body, len, &root, &jerr) != 0) {
    push_http_error(
        h, jerr.fault == PUSH_JSON_NOMEM ? 503 : 400,
        jerr.fault == PUSH_JSON_NOMEM ? PUSH_E_INTERNAL : PUSH_E_BAD_REQUEST,
        jerr.fault == PUSH_JSON_DUPLICATE ? "duplicate key in JSON object"
        : jerr.fault == PUSH_JSON_NOMEM   ? "out of memory"
                                          : "the body is not JSON");
    return;
  }
  if (push_json_type_of(root) != PUSH_JSON_OBJECT) {
    push_http_error(h, 400, PUSH_E_BAD_REQUEST,
                    "the body must be a JSON object");
    return;
  }
  if (push_path_is(req, "/api/disconnect")) {
    api_control(ps, h, root, "disconnect");
  } else if (push_path_is(req, "/api/subscribe")) {
    api_control(ps, h, root, "subscribe");
  } else if (push_path_is(req, "/api/unsubscribe")) {
    api_control(ps, h, root, "unsubscribe");
  } else {
    api_publish(ps, h, root, push_path_is(req, "/api/broadcast"));
  }
}
