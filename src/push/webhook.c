/* webhook.c - the webhook sender (webhook.h has the contract).
 *
 * The queue is a ring of events (each a malloc'd copy of its JSON). The
 * first `inflight` of them form the batch being sent: they stay at the head
 * until the receiver acknowledges them (2xx) or the batch is given up, so a
 * retry sends exactly the same events in the same body, and events added
 * meanwhile wait behind it.
 *
 * Sending is started by a zero-delay timer armed when the first event of a
 * loop pass arrives: everything added during that pass goes in one request
 * (up to max_batch). After an answer the next batch leaves at once; after
 * a failure, when the retry timer fires.
 */
#include "push/webhook.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "push/log.h"

typedef struct wevent {
  char *json;
  size_t len;
} wevent;

struct push_webhook {
  push_webhook_config cfg; /* strings are ours (copied) */
  char **headers;          /* signature and extra headers, for the request */
  size_t nheaders;
  push_http_client *http;
  uv_timer_t kick, retry;
  unsigned open_handles;
  int closing;
  int sending;       /* a request is in flight */
  int kick_armed;    /* the zero-delay timer will send */
  int retry_armed;   /* waiting for the backoff */
  uint32_t attempts; /* of the batch at the head */
  uint32_t backoff_ms;
  wevent *q;
  size_t qhead, qlen, qcap;
  size_t inflight; /* events at the head in the batch being sent */
  push_webhook_stats st;
  int64_t last_drop_log_ms;
  uint64_t drops_unlogged;
  push_buf body;
};

void push_webhook_config_init(push_webhook_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->name = "webhooks";
  cfg->signature_header = "X-Herald-Signature";
  cfg->max_queue = 10000;
  cfg->max_queue_bytes = (size_t)64 << 20;
  cfg->max_batch = 100;
  cfg->timeout_ms = 5000;
  cfg->backoff_min_ms = 100;
  cfg->backoff_max_ms = 30000;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- bodies ----------------------------------------------------------- */

static int put_events(push_buf *out, const char *const *events,
                      const size_t *lens, size_t n) {
  int rc = push_buf_raw(out, "\"events\":[", 10);
  for (size_t i = 0; i < n && rc == 0; i++) {
    rc = (i ? push_buf_raw(out, ",", 1) : 0) ||
         push_buf_raw(out, events[i], lens[i]);
  }
  return rc || push_buf_raw(out, "]}", 2) ? -1 : 0;
}

int push_webhook_body_herald(push_buf *out, const char *const *events,
                             const size_t *lens, size_t n, int64_t now_ms,
                             void *ud) {
  (void)now_ms, (void)ud;
  return push_buf_raw(out, "{", 1) || put_events(out, events, lens, n) ? -1 : 0;
}

int push_webhook_body_pusher(push_buf *out, const char *const *events,
                             const size_t *lens, size_t n, int64_t now_ms,
                             void *ud) {
  (void)ud;
  return push_buf_raw(out, "{\"time_ms\":", 11) ||
                 push_buf_u64(out, (uint64_t)now_ms) ||
                 push_buf_raw(out, ",", 1) || put_events(out, events, lens, n)
             ? -1
             : 0;
}

int push_webhook_sign(const char *key, const char *p, size_t n, char out[65]) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t maclen = 0;
  static const char hex[] = "0123456789abcdef";
  if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, strlen(key),
                (const unsigned char *)p, n, mac, sizeof(mac),
                &maclen) == NULL ||
      maclen != 32) {
    return -1;
  }
  for (size_t i = 0; i < 32; i++) {
    out[2 * i] = hex[mac[i] >> 4];
    out[2 * i + 1] = hex[mac[i] & 15];
  }
  out[64] = 0;
  return 0;
}

/* ---- the queue -------------------------------------------------------- */

static wevent *at(push_webhook *w, size_t i) {
  return &w->q[(w->qhead + i) % w->qcap];
}

static void pop_head(push_webhook *w, size_t n) {
  for (size_t i = 0; i < n; i++) {
    wevent *e = at(w, 0);
    w->st.queued_bytes -= e->len;
    free(e->json);
    w->qhead = (w->qhead + 1) % w->qcap;
    w->qlen--;
  }
  w->st.queued = w->qlen;
}

static int grow(push_webhook *w) {
  size_t cap = w->qcap ? w->qcap * 2 : 64;
  wevent *q = malloc(cap * sizeof(*q));
  if (q == NULL) {
    return -1;
  }
  for (size_t i = 0; i < w->qlen; i++) {
    q[i] = *at(w, i);
  }
  free(w->q);
  w->q = q;
  w->qcap = cap;
  w->qhead = 0;
  return 0;
}

/* ---- sending ---------------------------------------------------------- */

static void send_batch(push_webhook *w);
static void maybe_free(push_webhook *w);

static void on_retry(uv_timer_t *t) {
  push_webhook *w = t->data;
  w->retry_armed = 0;
  send_batch(w);
}

static void on_kick(uv_timer_t *t) {
  push_webhook *w = t->data;
  w->kick_armed = 0;
  send_batch(w);
}

/* The next send: at once (a zero-delay timer, so that the events of this
 * loop pass join the batch), unless one is in flight or a retry waits. */
static void schedule(push_webhook *w) {
  if (w->closing || w->sending || w->retry_armed || w->kick_armed ||
      w->qlen == 0) {
    return;
  }
  w->kick_armed = 1;
  uv_timer_start(&w->kick, on_kick, 0, 0);
}

static void give_up(push_webhook *w, const char *why) {
  char esc[PUSH_LOG_VAL];
  push_log(PUSH_LOG_ERROR,
           "ev=webhook_dropped sender=%s events=%zu attempts=%" PRIu32
           " error=\"%s\"",
           w->cfg.name, w->inflight, w->attempts,
           push_log_esc(esc, sizeof(esc), why, strlen(why)));
  w->st.failed_events += w->inflight;
  pop_head(w, w->inflight);
  w->inflight = 0;
  w->attempts = 0;
  w->backoff_ms = 0;
}

static void retry_later(push_webhook *w, const char *why) {
  if (w->cfg.max_attempts != 0 && w->attempts >= w->cfg.max_attempts) {
    give_up(w, why);
    return;
  }
  uint32_t b = w->backoff_ms ? w->backoff_ms * 2 : w->cfg.backoff_min_ms;
  if (b > w->cfg.backoff_max_ms) {
    b = w->cfg.backoff_max_ms;
  }
  if (b == 0) {
    b = 1;
  }
  w->backoff_ms = b;
  uint32_t rnd = 0;
  if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd)) {
    rnd = (uint32_t)rand();
  }
  /* +-25% jitter, so that many nodes do not retry in lockstep. */
  uint64_t delay = (uint64_t)b * 3 / 4 + rnd % (b / 2 + 1);
  char esc[PUSH_LOG_VAL];
  push_log(PUSH_LOG_WARN,
           "ev=webhook_retry sender=%s events=%zu attempt=%" PRIu32
           " delay_ms=%" PRIu64 " error=\"%s\"",
           w->cfg.name, w->inflight, w->attempts, delay,
           push_log_esc(esc, sizeof(esc), why, strlen(why)));
  w->retry_armed = 1;
  uv_timer_start(&w->retry, on_retry, delay, 0);
}

static void on_answer(void *ud, const push_http_response *res) {
  push_webhook *w = ud;
  w->sending = 0;
  if (w->closing) {
    maybe_free(w);
    return;
  }
  char why[128];
  if (res->outcome == PUSH_HTTP_OK && res->status >= 200 && res->status < 300) {
    w->st.sent_events += w->inflight;
    pop_head(w, w->inflight);
    w->inflight = 0;
    w->attempts = 0;
    w->backoff_ms = 0;
    schedule(w);
    return;
  }
  w->st.failed++;
  if (res->outcome != PUSH_HTTP_OK) {
    snprintf(why, sizeof(why), "%s: %s", push_http_outcome_name(res->outcome),
             res->why);
    retry_later(w, why);
  } else if (res->status >= 500 || res->status == 408 || res->status == 429) {
    snprintf(why, sizeof(why), "HTTP %d", res->status);
    retry_later(w, why);
  } else {
    snprintf(why, sizeof(why), "HTTP %d: refused for good", res->status);
    give_up(w, why);
  }
  schedule(w);
}

static void send_batch(push_webhook *w) {
  if (w->closing || w->sending || w->qlen == 0) {
    return;
  }
  if (w->inflight == 0) {
    w->inflight = w->qlen < w->cfg.max_batch ? w->qlen : w->cfg.max_batch;
  }
  size_t n = w->inflight;
  const char **ev = malloc(n * sizeof(*ev));
  size_t *lens = malloc(n * sizeof(*lens));
  push_buf *b = &w->body;
  b->len = 0;
  char sig[65];
  char *sighdr = NULL;
  int ok = ev != NULL && lens != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    ev[i] = at(w, i)->json;
    lens[i] = at(w, i)->len;
  }
  ok = ok && w->cfg.body(b, ev, lens, n, wall_ms(), w->cfg.body_ud) == 0;
  if (ok && w->cfg.secret != NULL) {
    size_t hl = strlen(w->cfg.signature_header) + 2 + 64 + 1;
    ok = push_webhook_sign(w->cfg.secret, b->p, b->len, sig) == 0 &&
         (sighdr = malloc(hl)) != NULL;
    if (ok) {
      snprintf(sighdr, hl, "%s: %s", w->cfg.signature_header, sig);
      w->headers[w->nheaders] = sighdr;
    }
  }
  push_http_request req = {w->cfg.url,
                           (const char *const *)w->headers,
                           w->nheaders + (sighdr != NULL),
                           b->p,
                           b->len,
                           w->cfg.timeout_ms,
                           64 * 1024};
  ok = ok && push_http_post(w->http, &req, on_answer, w) == 0;
  free(sighdr);
  free(ev);
  free(lens);
  push_buf_done(b, 1 << 20);
  if (!ok) {
    /* Out of memory: try again later, like a receiver that is down. */
    w->st.failed++;
    w->attempts++;
    retry_later(w, "out of memory");
    return;
  }
  w->st.requests++;
  w->st.retries += w->attempts > 0;
  w->attempts++;
  w->sending = 1;
}

/* ---- life cycle ------------------------------------------------------- */

static char *dup_str(const char *s) {
  return s ? strdup(s) : NULL;
}

push_webhook *push_webhook_new(uv_loop_t *loop, push_http_client *http,
                               const push_webhook_config *cfg, char *err,
                               size_t errlen) {
  if (cfg->url == NULL || (strncmp(cfg->url, "http://", 7) != 0 &&
                           strncmp(cfg->url, "https://", 8) != 0)) {
    snprintf(err, errlen, "%s: the url must start with http:// or https://",
             cfg->name ? cfg->name : "webhooks");
    return NULL;
  }
  push_webhook *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  w->cfg = *cfg;
  w->cfg.name = dup_str(cfg->name ? cfg->name : "webhooks");
  w->cfg.url = dup_str(cfg->url);
  w->cfg.secret = dup_str(cfg->secret);
  w->cfg.signature_header = dup_str(
      cfg->signature_header ? cfg->signature_header : "X-Herald-Signature");
  w->cfg.headers = NULL;
  if (w->cfg.body == NULL) {
    w->cfg.body = push_webhook_body_herald;
  }
  if (w->cfg.max_batch == 0) {
    w->cfg.max_batch = 1;
  }
  w->headers = calloc(cfg->nheaders + 1, sizeof(char *));
  int ok = w->cfg.name && w->cfg.url && w->cfg.signature_header &&
           (cfg->secret == NULL || w->cfg.secret) && w->headers;
  for (size_t i = 0; ok && i < cfg->nheaders; i++) {
    ok = (w->headers[i] = strdup(cfg->headers[i])) != NULL;
    w->nheaders += ok;
  }
  if (!ok) {
    snprintf(err, errlen, "out of memory");
    w->closing = 1;
    w->open_handles = 0;
    maybe_free(w);
    return NULL;
  }
  w->http = http;
  uv_timer_init(loop, &w->kick);
  uv_timer_init(loop, &w->retry);
  w->kick.data = w->retry.data = w;
  w->open_handles = 2;
  return w;
}

static void maybe_free(push_webhook *w) {
  if (!w->closing || w->open_handles > 0 || w->sending) {
    return;
  }
  while (w->qlen > 0) {
    pop_head(w, 1);
  }
  free(w->q);
  for (size_t i = 0; i < w->nheaders; i++) {
    free(w->headers[i]);
  }
  free(w->headers);
  free((char *)w->cfg.name);
  free((char *)w->cfg.url);
  free((char *)w->cfg.secret);
  free((char *)w->cfg.signature_header);
  push_buf_free(&w->body);
  free(w);
}

static void on_closed(uv_handle_t *h) {
  push_webhook *w = h->data;
  w->open_handles--;
  maybe_free(w);
}

void push_webhook_del(push_webhook *w) {
  if (w == NULL) {
    return;
  }
  if (w->qlen > 0) {
    push_log(PUSH_LOG_WARN, "ev=webhook_unsent sender=%s events=%zu",
             w->cfg.name, w->qlen);
  }
  w->st.dropped += w->qlen;
  w->closing = 1;
  uv_timer_stop(&w->kick);
  uv_timer_stop(&w->retry);
  uv_close((uv_handle_t *)&w->kick, on_closed);
  uv_close((uv_handle_t *)&w->retry, on_closed);
}

int push_webhook_add(push_webhook *w, const char *json, size_t len) {
  if (w->closing) {
    return -1;
  }
  char *copy = NULL;
  if (w->qlen >= w->cfg.max_queue ||
      len > w->cfg.max_queue_bytes - w->st.queued_bytes ||
      (w->qlen == w->qcap && grow(w) != 0) ||
      (copy = malloc(len ? len : 1)) == NULL) {
    w->st.dropped++;
    w->drops_unlogged++;
    int64_t now = wall_ms();
    if (now - w->last_drop_log_ms >= 1000) {
      push_log(PUSH_LOG_WARN,
               "ev=webhook_queue_full sender=%s dropped=%" PRIu64
               " queued=%zu queued_bytes=%zu",
               w->cfg.name, w->drops_unlogged, w->qlen, w->st.queued_bytes);
      w->last_drop_log_ms = now;
      w->drops_unlogged = 0;
    }
    return -1;
  }
  memcpy(copy, json, len);
  wevent *e = &w->q[(w->qhead + w->qlen) % w->qcap];
  e->json = copy;
  e->len = len;
  w->qlen++;
  w->st.queued = w->qlen;
  w->st.queued_bytes += len;
  schedule(w);
  return 0;
}

void push_webhook_get_stats(const push_webhook *w, push_webhook_stats *st) {
  *st = w->st;
}
