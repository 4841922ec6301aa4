/* proxy.c - the application's backend in the loop (docs/backend.md): the
 * proxy requests that ask it (connect, refresh, subscribe, publish, rpc),
 * their answers, their limits and metrics; and the webhooks that tell it
 * what happened (connect, disconnect, channel occupied and vacated, join,
 * leave, publish).
 *
 * Requests and answers follow Centrifugo's proxy shapes, so that a backend
 * written for it ports with little change: every request carries the
 * client, transport, protocol and encoding, then the command's fields; the
 * answer is {"result": {...}}, {"error": {"code", "message"}} or
 * {"disconnect": {"code", "reason"}}. Anything else (a status other than
 * 200, a body that is not that JSON, a timeout, a refused connection, or
 * more requests in flight than proxy.max_in_flight) is "unavailable": the
 * client gets the temporary error 113 and nothing hangs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "push/server_int.h"

static const char *const kind_names[PUSH_PROXY_KINDS] = {
    "connect", "refresh", "subscribe", "publish", "rpc"};

/* Seconds: 1 ms to 5 s, then +Inf. */
static const double lat_bounds[PUSH_PROXY_LAT_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5};

/* ---- requests ----------------------------------------------------------- */

void push_proxy_body(push_buf *b, const push_client *c, int with_user) {
  push_buf_raw(b, "{\"client\":", 10);
  push_buf_str(b, c->id, strlen(c->id));
  if (c->sse) {
    push_buf_raw(b, ",\"transport\":\"sse\"", 18);
  } else {
    push_buf_raw(b, ",\"transport\":\"websocket\"", 24);
  }
  push_buf_raw(b, ",\"protocol\":\"json\",\"encoding\":\"json\"", 36);
  if (with_user) {
    push_buf_raw(b, ",\"user\":", 8);
    push_buf_str(b, c->user, strlen(c->user));
  }
}

typedef struct proxy_call {
  push_server *ps;
  push_op *op;
  push_proxy_fn fn;
  int kind;
  uint64_t started_us;
} proxy_call;

static void record(push_server *ps, int kind, uint64_t started_us) {
  push_proxy_stats *st = &ps->proxy[kind];
  double s = (double)(push_mono_us() - started_us) / 1e6;
  int b = 0;
  while (b < PUSH_PROXY_LAT_BUCKETS && s > lat_bounds[b]) {
    b++;
  }
  st->lat_bucket[b]++;
  st->lat_sum += s;
}

static void unavailable(push_proxy_answer *a, const char *why) {
  a->kind = PUSH_PROXY_UNAVAILABLE;
  a->code = PUSH_E_BACKEND;
  a->temporary = 1;
  snprintf(a->message, sizeof(a->message), "%s", why);
}

/* Reads the backend's answer into *a. */
static void parse_answer(const push_http_response *res, push_proxy_answer *a) {
  push_json root, v, f;
  uint64_t code;
  char why[96];
  memset(a, 0, sizeof(*a));
  if (res->outcome != PUSH_HTTP_OK) {
    snprintf(why, sizeof(why), "backend %s",
             push_http_outcome_name(res->outcome));
    unavailable(a, why);
    return;
  }
  if (res->status != 200) {
    snprintf(why, sizeof(why), "backend answered HTTP %d", res->status);
    unavailable(a, why);
    return;
  }
  if (push_json_parse(res->body, res->len, &root) != 0 ||
      push_json_type_of(root) != PUSH_JSON_OBJECT) {
    unavailable(a, "backend answered something that is not a JSON object");
    return;
  }
  if (push_json_get(root, "disconnect", &v) &&
      push_json_type_of(v) == PUSH_JSON_OBJECT) {
    if (!push_json_get(v, "code", &f) || push_json_u64(f, &code) != 0 ||
        code < 3000 || code > 4999) {
      unavailable(a, "backend's disconnect code is not 3000-4999");
      return;
    }
    a->kind = PUSH_PROXY_DISCONNECT;
    a->code = (int)code;
    snprintf(a->message, sizeof(a->message), "disconnected by the backend");
    if (push_json_get(v, "reason", &f) &&
        push_json_str(f, a->message, 64) < 0) {
      snprintf(a->message, sizeof(a->message), "disconnected by the backend");
    }
    return;
  }
  if (push_json_get(root, "error", &v) &&
      push_json_type_of(v) == PUSH_JSON_OBJECT) {
    if (!push_json_get(v, "code", &f) || push_json_u64(f, &code) != 0 ||
        code < 100 || code > 1999) {
      unavailable(a, "backend's error code is not 100-1999");
      return;
    }
    a->kind = PUSH_PROXY_ERROR;
    a->code = (int)code;
    snprintf(a->message, sizeof(a->message), "refused by the backend");
    if (push_json_get(v, "message", &f) &&
        push_json_str(f, a->message, sizeof(a->message)) < 0) {
      snprintf(a->message, sizeof(a->message), "refused by the backend");
    }
    a->temporary = push_json_get(v, "temporary", &f) &&
                   push_json_type_of(f) == PUSH_JSON_TRUE;
    return;
  }
  if (push_json_get(root, "result", &v) &&
      push_json_type_of(v) == PUSH_JSON_OBJECT) {
    a->kind = PUSH_PROXY_RESULT;
    a->result = v;
    return;
  }
  unavailable(a, "backend's answer has no result, error or disconnect");
}

static void on_answer(void *ud, const push_http_response *res) {
  proxy_call *pc = ud;
  push_server *ps = pc->ps;
  push_proxy_answer a;
  ps->proxy_in_flight--;
  record(ps, pc->kind, pc->started_us);
  parse_answer(res, &a);
  if (a.kind == PUSH_PROXY_UNAVAILABLE) {
    ps->proxy[pc->kind].unavailable++;
    push_log(PUSH_LOG_WARN, "ev=proxy_unavailable kind=%s error=\"%s\"",
             kind_names[pc->kind], a.message);
  } else if (a.kind != PUSH_PROXY_RESULT) {
    ps->proxy[pc->kind].refused++;
  }
  pc->fn(pc->op, &a);
  free(pc);
}

void push_proxy_call(push_server *ps, int kind, const char *url, push_op *op,
                     const push_buf *body, push_proxy_fn fn) {
  push_proxy_answer a;
  const push_backend_config *bc = &ps->cfg->backend;
  push_client *c = op->c;
  ps->proxy[kind].requests++;
  op->proxy_kind = kind;
  if (ps->proxy_in_flight >= bc->max_in_flight || ps->http == NULL ||
      body->p == NULL) {
    memset(&a, 0, sizeof(a));
    ps->proxy[kind].unavailable++;
    if (ps->proxy_in_flight >= bc->max_in_flight) {
      ps->proxy_overloaded++;
      unavailable(&a, "too many backend requests in flight");
    } else {
      unavailable(&a, "out of memory");
    }
    fn(op, &a);
    return;
  }
  proxy_call *pc = calloc(1, sizeof(*pc));
  /* The forwarded headers, then the ones every request has. */
  size_t nh = c ? c->nfwd : 0;
  const char **h = calloc(nh + 1, sizeof(char *));
  if (pc == NULL || h == NULL) {
    free(pc);
    free(h);
    memset(&a, 0, sizeof(a));
    ps->proxy[kind].unavailable++;
    unavailable(&a, "out of memory");
    fn(op, &a);
    return;
  }
  for (size_t i = 0; i < nh; i++) {
    h[i] = c->fwd[i];
  }
  pc->ps = ps;
  pc->op = op;
  pc->fn = fn;
  pc->kind = kind;
  pc->started_us = push_mono_us();
  push_http_request req = {
      url, h, nh, body->p, body->len, bc->timeout_ms, bc->max_response};
  int rv = push_http_post(ps->http, &req, on_answer, pc);
  free(h);
  if (rv != 0) {
    free(pc);
    memset(&a, 0, sizeof(a));
    ps->proxy[kind].unavailable++;
    unavailable(&a, "out of memory");
    fn(op, &a);
    return;
  }
  ps->proxy_in_flight++;
}

void push_proxy_reply(push_client *c, uint64_t id, const push_proxy_answer *a) {
  if (c == NULL || c->gone) {
    return;
  }
  switch (a->kind) {
  case PUSH_PROXY_ERROR:
    push_client_error(c, id, a->code, a->message, a->temporary);
    break;
  case PUSH_PROXY_DISCONNECT:
    push_client_disconnect(c, a->code, a->message);
    break;
  default:
    push_client_error(c, id, PUSH_E_BACKEND,
                      "backend unavailable: try again later", 1);
    break;
  }
}

void push_proxy_metrics(push_server *ps, push_buf *b) {
  char line[320];
  static const char head[] =
      "# HELP herald_proxy_requests_total Requests to the backend, by "
      "kind.\n# TYPE herald_proxy_requests_total counter\n";
  static const char head2[] =
      "# HELP herald_proxy_unavailable_total Requests the backend did not "
      "answer usably (timeout, refused, not 200, garbage, over "
      "max_in_flight): the client got 113.\n"
      "# TYPE herald_proxy_unavailable_total counter\n";
  static const char head3[] =
      "# HELP herald_proxy_refused_total Requests the backend answered with "
      "an error or a disconnect.\n# TYPE herald_proxy_refused_total "
      "counter\n";
  static const char head4[] =
      "# HELP herald_proxy_latency_seconds Time the backend took to "
      "answer.\n# TYPE herald_proxy_latency_seconds histogram\n";
  const char *heads[3] = {head, head2, head3};
  for (int m = 0; m < 3; m++) {
    push_buf_raw(b, heads[m], strlen(heads[m]));
    for (int k = 0; k < PUSH_PROXY_KINDS; k++) {
      const push_proxy_stats *st = &ps->proxy[k];
      uint64_t v = m == 0   ? st->requests
                   : m == 1 ? st->unavailable
                            : st->refused;
      int n = snprintf(line, sizeof(line), "%s{kind=\"%s\"} %" PRIu64 "\n",
                       m == 0   ? "herald_proxy_requests_total"
                       : m == 1 ? "herald_proxy_unavailable_total"
                                : "herald_proxy_refused_total",
                       kind_names[k], v);
      push_buf_raw(b, line, (size_t)n);
    }
  }
  push_buf_raw(b, head4, sizeof(head4) - 1);
  for (int k = 0; k < PUSH_PROXY_KINDS; k++) {
    const push_proxy_stats *st = &ps->proxy[k];
    uint64_t cum = 0;
    for (int i = 0; i <= PUSH_PROXY_LAT_BUCKETS; i++) {
      cum += st->lat_bucket[i];
      char le[16];
      if (i < PUSH_PROXY_LAT_BUCKETS) {
        snprintf(le, sizeof(le), "%g", lat_bounds[i]);
      } else {
        snprintf(le, sizeof(le), "+Inf");
      }
      int n = snprintf(line, sizeof(line),
                       "herald_proxy_latency_seconds_bucket{kind=\"%s\","
                       "le=\"%s\"} %" PRIu64 "\n",
                       kind_names[k], le, cum);
      push_buf_raw(b, line, (size_t)n);
    }
    int n = snprintf(line, sizeof(line),
                     "herald_proxy_latency_seconds_sum{kind=\"%s\"} %.6f\n"
                     "herald_proxy_latency_seconds_count{kind=\"%s\"} "
                     "%" PRIu64 "\n",
                     kind_names[k], st->lat_sum, kind_names[k], cum);
    push_buf_raw(b, line, (size_t)n);
  }
  char tmp[512];
  int n = snprintf(tmp, sizeof(tmp),
                   "# HELP herald_proxy_in_flight Requests to the backend "
                   "waiting for an answer (proxy.max_in_flight).\n"
                   "# TYPE herald_proxy_in_flight gauge\n"
                   "herald_proxy_in_flight %zu\n"
                   "# HELP herald_proxy_overloaded_total Requests not made: "
                   "proxy.max_in_flight were in flight.\n"
                   "# TYPE herald_proxy_overloaded_total counter\n"
                   "herald_proxy_overloaded_total %" PRIu64 "\n",
                   ps->proxy_in_flight, ps->proxy_overloaded);
  push_buf_raw(b, tmp, (size_t)n);
  if (ps->webhook != NULL) {
    push_webhook_stats ws;
    push_webhook_get_stats(ps->webhook, &ws);
    n = snprintf(tmp, sizeof(tmp),
                 "# TYPE herald_webhook_events_sent_total counter\n"
                 "herald_webhook_events_sent_total %" PRIu64 "\n"
                 "# TYPE herald_webhook_requests_total counter\n"
                 "herald_webhook_requests_total %" PRIu64 "\n"
                 "# TYPE herald_webhook_failed_requests_total counter\n"
                 "herald_webhook_failed_requests_total %" PRIu64 "\n"
                 "# TYPE herald_webhook_retries_total counter\n"
                 "herald_webhook_retries_total %" PRIu64 "\n",
                 ws.sent_events, ws.requests, ws.failed, ws.retries);
    push_buf_raw(b, tmp, (size_t)n);
    n = snprintf(tmp, sizeof(tmp),
                 "# HELP herald_webhook_events_dropped_total Events not "
                 "queued: webhooks.max_queue or max_queue_bytes reached.\n"
                 "# TYPE herald_webhook_events_dropped_total counter\n"
                 "herald_webhook_events_dropped_total %" PRIu64 "\n"
                 "# TYPE herald_webhook_events_failed_total counter\n"
                 "herald_webhook_events_failed_total %" PRIu64 "\n"
                 "# TYPE herald_webhook_queue gauge\n"
                 "herald_webhook_queue %zu\n"
                 "# TYPE herald_webhook_queue_bytes gauge\n"
                 "herald_webhook_queue_bytes %zu\n",
                 ws.dropped, ws.failed_events, ws.queued, ws.queued_bytes);
    push_buf_raw(b, tmp, (size_t)n);
  }
}

/* ---- forwarded headers --------------------------------------------------- */

static void free_lines(char **l, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(l[i]);
  }
  free(l);
}

void push_proxy_capture(push_server *ps, const herald_request *req) {
  const push_backend_config *bc = &ps->cfg->backend;
  free_lines(ps->upgrade_fwd, ps->nupgrade_fwd);
  ps->upgrade_fwd = NULL;
  ps->nupgrade_fwd = 0;
  if (bc->nheaders == 0) {
    return;
  }
  ps->upgrade_fwd = calloc(bc->nheaders, sizeof(char *));
  if (ps->upgrade_fwd == NULL) {
    return;
  }
  for (size_t i = 0; i < bc->nheaders; i++) {
    herald_str v;
    if (!herald_header_find(req->headers, req->nheaders, bc->headers[i], &v) ||
        v.len > 8192 || memchr(v.ptr, '\r', v.len) != NULL ||
        memchr(v.ptr, '\n', v.len) != NULL) {
      continue;
    }
    size_t n = strlen(bc->headers[i]) + 2 + v.len + 1;
    char *line = malloc(n);
    if (line == NULL) {
      continue;
    }
    snprintf(line, n, "%s: %.*s", bc->headers[i], (int)v.len, v.ptr);
    ps->upgrade_fwd[ps->nupgrade_fwd++] = line;
  }
}

void push_proxy_adopt(push_server *ps, push_client *c) {
  c->fwd = ps->upgrade_fwd;
  c->nfwd = ps->nupgrade_fwd;
  ps->upgrade_fwd = NULL;
  ps->nupgrade_fwd = 0;
}

/* ---- webhooks ------------------------------------------------------------ */

int push_backend_start(push_server *ps, uv_loop_t *uv, char *err,
                       size_t errlen) {
  const push_backend_config *bc = &ps->cfg->backend;
  int any_proxy = bc->connect_url || bc->refresh_url || bc->rpc_url;
  for (size_t i = 0; i < ps->cfg->nns; i++) {
    any_proxy |= ps->cfg->ns[i].subscribe_proxy_url != NULL ||
                 ps->cfg->ns[i].publish_proxy_url != NULL;
  }
  if (!any_proxy && bc->webhooks_url == NULL) {
    return 0;
  }
  ps->http = push_http_client_new(uv, err, errlen);
  if (ps->http == NULL) {
    return -1;
  }
  if (bc->webhooks_url != NULL) {
    push_webhook_config wc;
    push_webhook_config_init(&wc);
    wc.url = bc->webhooks_url;
    wc.secret = bc->webhooks_secret;
    wc.max_queue = bc->webhooks_max_queue;
    wc.max_queue_bytes = bc->webhooks_max_queue_bytes;
    wc.max_batch = bc->webhooks_batch;
    wc.timeout_ms = bc->webhooks_timeout_ms;
    ps->webhook = push_webhook_new(uv, ps->http, &wc, err, errlen);
    if (ps->webhook == NULL) {
      push_http_client_del(ps->http);
      ps->http = NULL;
      return -1;
    }
  }
  return 0;
}

void push_backend_stop(push_server *ps) {
  push_webhook_del(ps->webhook);
  ps->webhook = NULL;
  push_http_client_del(ps->http); /* calls back what is in flight */
  ps->http = NULL;
  free_lines(ps->upgrade_fwd, ps->nupgrade_fwd);
  ps->upgrade_fwd = NULL;
  ps->nupgrade_fwd = 0;
}

int push_hook_on(const push_server *ps, unsigned event) {
  return ps->webhook != NULL && (ps->cfg->backend.webhooks_events & event);
}

void push_hook_begin(push_server *ps, push_buf *b, const char *name) {
  push_buf_raw(b, "{\"event\":", 9);
  push_buf_str(b, name, strlen(name));
  push_buf_raw(b, ",\"time_ms\":", 11);
  push_buf_u64(b, (uint64_t)push_now_ms());
  push_buf_raw(b, ",\"node\":", 8);
  push_buf_str(b, ps->node, strlen(ps->node));
}

void push_hook_send(push_server *ps, push_buf *b) {
  if (ps->webhook != NULL && push_buf_raw(b, "}", 1) == 0) {
    push_webhook_add(ps->webhook, b->p, b->len);
  }
}

static void hook_client(push_client *c, const char *event,
                        const char *channel) {
  push_server *ps = c->ps;
  push_buf b = {0};
  push_hook_begin(ps, &b, event);
  push_buf_raw(&b, ",\"channel\":", 11);
  push_buf_str(&b, channel, strlen(channel));
  push_buf_raw(&b, ",\"client\":", 10);
  push_buf_str(&b, c->id, strlen(c->id));
  push_buf_raw(&b, ",\"user\":", 8);
  push_buf_str(&b, c->user, strlen(c->user));
  push_hook_send(ps, &b);
  push_buf_free(&b);
}

void push_client_joined(push_client *c, const char *channel) {
  push_server *ps = c->ps;
  if (push_hook_on(ps, PUSH_WH_OCCUPIED | PUSH_WH_VACATED) &&
      push_hub_nsubscribers(ps->hub, channel) == 1) {
    push_engine_occupancy(ps->engine, channel, 1);
  }
  if (push_hook_on(ps, PUSH_WH_JOIN)) {
    hook_client(c, "join", channel);
  }
}

void push_client_left(push_client *c, const char *channel) {
  push_server *ps = c->ps;
  if (push_hook_on(ps, PUSH_WH_LEAVE)) {
    hook_client(c, "leave", channel);
  }
  if (push_hook_on(ps, PUSH_WH_OCCUPIED | PUSH_WH_VACATED) &&
      push_hub_nsubscribers(ps->hub, channel) == 0) {
    push_engine_occupancy(ps->engine, channel, 0);
  }
}

void push_on_occupancy(void *ud, const char *channel, int occupied) {
  push_server *ps = ud;
  if (!push_hook_on(ps, occupied ? PUSH_WH_OCCUPIED : PUSH_WH_VACATED)) {
    return;
  }
  push_buf b = {0};
  push_hook_begin(ps, &b, occupied ? "channel_occupied" : "channel_vacated");
  push_buf_raw(&b, ",\"channel\":", 11);
  push_buf_str(&b, channel, strlen(channel));
  push_hook_send(ps, &b);
  push_buf_free(&b);
}
