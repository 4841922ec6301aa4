/*
 * handshake.c - the opening handshake (RFC 6455 section 4) of both roles,
 * and the plain HTTP answers a server gives instead.
 *
 * Reading: the request or response head is parsed where it lies in the
 * caller's buffer (http1.c), checked (RFC 6455 4.1, 4.2.1) and reported as
 * an event. Writing: every answer is measured, then written into one span of
 * the output queue. permessage-deflate is negotiated here (the grammar and
 * the policy are in deflate.c) and its per-connection state set up.
 *
 * No state transition happens here: conn.c checks that a call is allowed,
 * calls in here, and moves the connection on once this file has queued its
 * bytes (or reported its event).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/conn_int.h"
#include "core/deflate.h"
#include "core/http1.h"

static int hs_alloc(herald_conn *c) {
  if (c->hs != NULL) {
    return 0;
  }
  size_t n = sizeof(handshake) + c->cfg->max_headers * sizeof(herald_header);
  c->hs = herald__alloc(c, n);
  if (c->hs == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memset(c->hs, 0, n);
  return 0;
}

void herald__hs_free(herald_conn *c) {
  if (c->hs == NULL) {
    return;
  }
  if (c->hs->zcharge) { /* offered, not agreed (agreed, z holds it) */
    herald__budget_give(c->cfg->deflate.budget, c->hs->zcharge);
  }
  for (size_t i = 0; i < c->hs->noffered; i++) {
    herald__free(c, c->hs->offered[i]);
  }
  herald__free(c, c->hs->offered);
  herald__free(c, c->hs);
  c->hs = NULL;
  c->flags &= (uint16_t)~F_HS_STALE;
}

/* Records the agreed permessage-deflate parameters (the response's) and
 * derives each direction's window and context rule (RFC 7692 7.1). */
static int pmd_agree(herald_conn *c, const herald__pmd *r) {
  int server = c->role == HERALD_ROLE_SERVER;
  int sbits = r->smwb ? r->smwb : 15, cbits = r->cmwb >= 8 ? r->cmwb : 15;
  c->z = herald__alloc(c, sizeof(zstate));
  if (c->z == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memset(c->z, 0, sizeof(zstate));
  c->z->pmd = *r;
  c->z->rx_reset = server ? r->cnct : r->snct;
  c->z->tx_reset = server ? r->snct : r->cnct;
  c->z->rx_bits = (uint8_t)(server ? cbits : sbits);
  if (server) {
    c->z->tx_bits = (uint8_t)sbits; /* >= 9: herald__pmd_accept saw to it */
  } else {
    int mine = c->cfg->deflate.client_max_window_bits;
    int bits = cbits < mine ? cbits : mine;
    /* zlib cannot compress within 8 bits: send uncompressed instead. */
    c->z->tx_bits = (uint8_t)(bits < 9 ? 0 : bits);
  }
  return 0;
}

/* What a connection draws on cfg->deflate.budget for its zlib streams:
 * the decompressor, and the compressor when it compresses (a window of 9
 * bits or more; below, it sends uncompressed). */
static uint64_t pmd_charge(const herald_deflate_config *dc, int tx_bits) {
  uint64_t n = herald__zstream_charge(0, 15, 0);
  if (tx_bits >= 9) {
    n += herald__zstream_charge(1, tx_bits, dc->mem_level);
  }
  return n;
}

HERALD_API int herald_conn_deflate(const herald_conn *c,
                                   herald_deflate_params *out) {
  if (c->z == NULL) {
    if (out) {
      memset(out, 0, sizeof(*out));
    }
    return 0;
  }
  if (out) {
    out->server_no_context_takeover = c->z->pmd.snct;
    out->client_no_context_takeover = c->z->pmd.cnct;
    out->server_max_window_bits = c->z->pmd.smwb ? c->z->pmd.smwb : 15;
    out->client_max_window_bits = c->z->pmd.cmwb >= 8 ? c->z->pmd.cmwb : 15;
  }
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Reading heads                                                             */
/* ------------------------------------------------------------------------ */

int herald__hs_read_request(herald_conn *c, uint8_t *in, size_t inlen,
                            herald_event *ev) {
  const char *why = NULL;
  int rv = hs_alloc(c);
  if (rv != 0) {
    return herald__fail(c, rv, "out of memory");
  }
  handshake *hs = c->hs;
  /* RFC 9112 2.2: ignore empty lines before a request line (a client may
   * send a stray CRLF after a request body). A few are enough. */
  if (hs->last_len == 0 && inlen > 0 && (in[0] == '\r' || in[0] == '\n')) {
    size_t skip = 0;
    while (skip < inlen && skip < 4 && (in[skip] == '\r' || in[skip] == '\n')) {
      skip++;
    }
    if (skip == 4) {
      return herald__fail(c, HERALD_ERR_HTTP,
                          "empty lines before the request line");
    }
    return (int)skip;
  }
  memset(&hs->req, 0, sizeof(hs->req));
  rv = herald__http_parse_request((const char *)in, inlen, hs->last_len,
                                  c->cfg->max_head_bytes, &hs->req, hs->headers,
                                  c->cfg->max_headers, &why);
  if (rv == 0) {
    hs->last_len = inlen;
    return 0;
  }
  if (rv < 0) {
    return herald__fail(c, rv, why);
  }
  int verdict = herald__hs_check_request(&hs->req, &why);
  if (verdict > 1) {
    return herald__refuse(c, verdict, why);
  }
  if (verdict == 0) {
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host; the upgrade
     * check above enforces this for WebSocket requests. */
    size_t nhost = 0;
    for (size_t i = 0; i < hs->req.nheaders; i++) {
      const herald_str *name = &hs->headers[i].name;
      nhost += name->len == 4 && strncasecmp(name->ptr, "host", 4) == 0;
    }
    if (nhost > 1 || (nhost == 0 && hs->req.version_minor >= 1)) {
      return herald__fail(c, HERALD_ERR_HTTP,
                          "missing or repeated Host header (RFC 9112 3.2)");
    }
  }
  hs->last_len = 0;
  ev->type = HERALD_EV_REQUEST;
  ev->request = &hs->req;
  return rv;
}

int herald__hs_read_response(herald_conn *c, uint8_t *in, size_t inlen,
                             herald_event *ev) {
  const char *why = NULL;
  handshake *hs = c->hs;
  memset(&hs->resp, 0, sizeof(hs->resp));
  int rv = herald__http_parse_response((const char *)in, inlen, hs->last_len,
                                       c->cfg->max_head_bytes, &hs->resp,
                                       hs->headers, c->cfg->max_headers, &why);
  if (rv == 0) {
    hs->last_len = inlen;
    return 0;
  }
  if (rv < 0) {
    return herald__fail(c, rv, why);
  }
  const herald_deflate_config *dc = &c->cfg->deflate;
  if (herald__hs_check_response(&hs->resp, hs->key,
                                (const char *const *)hs->offered, hs->noffered,
                                hs->pmd_offered, &why) != 0) {
    return herald__fail(c, HERALD_ERR_HANDSHAKE, why);
  }
  if (hs->pmd_offered) {
    herald__pmd agreed;
    int pmd = herald__pmd_check_response(dc, hs->resp.headers,
                                         hs->resp.nheaders, &agreed, &why);
    if (pmd < 0) {
      return herald__fail(c, HERALD_ERR_EXTENSION, why);
    }
    if (pmd && pmd_agree(c, &agreed) != 0) {
      return herald__fail(c, HERALD_ERR_NOMEM, "out of memory");
    }
    if (pmd) { /* the offer's draw now covers the streams */
      c->z->charge = hs->zcharge;
      hs->zcharge = 0;
    }
  }
  ev->type = HERALD_EV_OPEN;
  ev->response = &hs->resp;
  return rv;
}

/* ------------------------------------------------------------------------ */
/* Writing heads                                                             */
/* ------------------------------------------------------------------------ */

/* A header value or token we put on the wire must not smuggle a line. */
static int safe_text(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '\r' || ch == '\n' || ch == 0) {
      return 0;
    }
  }
  return 1;
}

/* RFC 9110 5.6.2 token characters. */
static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch));
}

static int is_token(const char *s, size_t n) {
  if (n == 0) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (!is_tchar((unsigned char)s[i])) {
      return 0;
    }
  }
  return 1;
}

static int headers_safe(const herald_header *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!is_token(h[i].name.ptr, h[i].name.len) ||
        !safe_text(h[i].value.ptr, h[i].value.len)) {
      return 0;
    }
  }
  return 1;
}

/* A growing text written into the output queue in two passes: first every
 * piece is measured, then copied, so the text is one span. */
typedef struct text {
  uint8_t *p; /* NULL while measuring */
  size_t len;
} text;

static void text_put(text *t, const char *s, size_t n) {
  if (t->p) {
    memcpy(t->p + t->len, s, n);
  }
  t->len += n;
}
static void text_puts(text *t, const char *s) {
  text_put(t, s, strlen(s));
}
static void text_headers(text *t, const herald_header *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    text_put(t, h[i].name.ptr, h[i].name.len);
    text_put(t, ": ", 2);
    text_put(t, h[i].value.ptr, h[i].value.len);
    text_put(t, "\r\n", 2);
  }
}

/* Runs build(t, arg) once to measure and once to write into the output, in
 * one span with extra more bytes at its end for the caller to fill. Returns
 * the span and sets *len (may be NULL) to the text's length, or returns NULL
 * (out of memory) with nothing queued. */
typedef void (*text_fn)(text *t, const void *arg);
static uint8_t *text_queue(herald_conn *c, text_fn build, const void *arg,
                           size_t extra, size_t *len) {
  text t = {NULL, 0};
  build(&t, arg);
  t.p = herald__out_append(c, t.len + extra, 1);
  if (t.p == NULL) {
    return NULL;
  }
  t.len = 0;
  build(&t, arg);
  if (len) {
    *len = t.len;
  }
  return t.p;
}

typedef struct refusal {
  const char *head; /* status line and fixed headers */
  size_t headlen;
  const herald_header *h;
  size_t nheaders;
  const char *reason;
} refusal;

static void build_refusal(text *t, const void *arg) {
  const refusal *r = arg;
  text_put(t, r->head, r->headlen);
  text_headers(t, r->h, r->nheaders);
  text_put(t, "\r\n", 2);
  if (r->reason) {
    text_puts(t, r->reason);
  }
  text_put(t, "\n", 1);
}

int herald__queue_http(herald_conn *c, int status, const char *reason,
                       const char *extra, const herald_header *h,
                       size_t nheaders) {
  size_t rlen = reason ? strlen(reason) : 0;
  char head[256];
  int hn = snprintf(head, sizeof(head),
                    "HTTP/1.1 %d %s\r\nConnection: close\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: %zu\r\n%s",
                    status, herald__http_status_text(status), rlen + 1,
                    extra ? extra : "");
  if (hn < 0 || (size_t)hn >= sizeof(head)) {
    return HERALD_ERR_INTERNAL;
  }
  refusal r = {head, (size_t)hn, h, nheaders, reason};
  return text_queue(c, build_refusal, &r, 0, NULL) ? 0 : HERALD_ERR_NOMEM;
}

int herald__hs_reject(herald_conn *c, int status, const char *reason,
                      const herald_header *h, size_t nheaders) {
  if (status < 400 || status > 599 || !headers_safe(h, nheaders) ||
      (reason && !safe_text(reason, strlen(reason)))) {
    return HERALD_ERR_INVALID_ARG;
  }
  return herald__queue_http(c, status, reason, NULL, h, nheaders);
}

/* ---- server: 101 -------------------------------------------------------- */

typedef struct answer101 {
  const char *accept; /* 28 characters */
  const herald_accept *opts;
  const char *ext;
  size_t extlen;
} answer101;

static void build_101(text *t, const void *arg) {
  const answer101 *a = arg;
  text_puts(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
  text_put(t, a->accept, 28);
  text_put(t, "\r\n", 2);
  if (a->extlen > 0) {
    text_puts(t, "Sec-WebSocket-Extensions: ");
    text_put(t, a->ext, a->extlen);
    text_put(t, "\r\n", 2);
  }
  if (a->opts && a->opts->subprotocol) {
    text_puts(t, "Sec-WebSocket-Protocol: ");
    text_puts(t, a->opts->subprotocol);
    text_put(t, "\r\n", 2);
  }
  if (a->opts) {
    text_headers(t, a->opts->headers, a->opts->nheaders);
  }
  text_put(t, "\r\n", 2);
}

int herald__hs_accept(herald_conn *c, const herald_accept *opts) {
  const herald_request *req = &c->hs->req;
  if (opts && opts->subprotocol) {
    /* RFC 6455 4.2.2: the chosen subprotocol must be one the client sent. */
    size_t pos = 0, want = strlen(opts->subprotocol);
    herald_str tok;
    int found = 0;
    while (!found && herald_list_next(req->protocols, &pos, &tok)) {
      found = tok.len == want && memcmp(tok.ptr, opts->subprotocol, want) == 0;
    }
    if (!found) {
      return HERALD_ERR_INVALID_ARG;
    }
  }
  if (opts && !headers_safe(opts->headers, opts->nheaders)) {
    return HERALD_ERR_INVALID_ARG;
  }
  char accept[29];
  herald_accept_key(req->key.ptr, req->key.len, accept);
  /* RFC 7692 5: the first acceptable permessage-deflate offer, if any. */
  char ext[HERALD__PMD_TEXT_MAX];
  answer101 a = {accept, opts, ext, 0};
  herald__pmd agreed;
  const herald_deflate_config *dc = &c->cfg->deflate;
  int pmd = dc->enabled && !(opts && opts->no_deflate) &&
            herald__pmd_accept(dc, req->headers, req->nheaders, &agreed, ext,
                               &a.extlen);
  if (pmd && pmd_agree(c, &agreed) != 0) {
    return HERALD_ERR_NOMEM;
  }
  if (pmd && dc->budget != NULL) {
    /* Over the budget for compression state: answer without the
     * extension (RFC 7692 5: a server may decline every offer). */
    uint64_t charge = pmd_charge(dc, c->z->tx_bits);
    if (herald__budget_take(dc->budget, charge)) {
      c->z->charge = charge;
    } else {
      herald__z_free(c);
      a.extlen = 0;
    }
  }
  if (text_queue(c, build_101, &a, 0, NULL) == NULL) {
    herald__z_free(c);
    return HERALD_ERR_NOMEM;
  }
  return 0;
}

/* ---- server: plain HTTP responses --------------------------------------- */

typedef struct response {
  int status;
  const herald_header *h;
  size_t nheaders;
  size_t bodylen;
  int keep_alive;
} response;

static void build_response(text *t, const void *arg) {
  const response *r = arg;
  char line[96];
  int len = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", r->status,
                     herald__http_status_text(r->status));
  text_put(t, line, (size_t)len);
  text_headers(t, r->h, r->nheaders);
  len = snprintf(line, sizeof(line), "Content-Length: %zu\r\n%s\r\n",
                 r->bodylen, r->keep_alive ? "" : "Connection: close\r\n");
  text_put(t, line, (size_t)len);
}

int herald__hs_respond(herald_conn *c, int status, const herald_header *h,
                       size_t nheaders, const void *body, size_t bodylen,
                       int keep_alive) {
  if (status < 100 || status > 599 || status == 101 ||
      !headers_safe(h, nheaders) || (body == NULL && bodylen > 0)) {
    return HERALD_ERR_INVALID_ARG;
  }
  response r = {status, h, nheaders, bodylen, keep_alive};
  size_t headlen;
  uint8_t *p = text_queue(c, build_response, &r, bodylen, &headlen);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  if (bodylen > 0) {
    memcpy(p + headlen, body, bodylen);
  }
  return 0;
}

/* A streamed body (Server-Sent Events): no Content-Length, so the end of the
 * body is the end of the connection. */
static void build_stream_head(text *t, const void *arg) {
  const response *r = arg;
  char line[96];
  int len = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", r->status,
                     herald__http_status_text(r->status));
  text_put(t, line, (size_t)len);
  text_headers(t, r->h, r->nheaders);
  text_puts(t, "Connection: close\r\n\r\n");
}

int herald__hs_stream_head(herald_conn *c, int status, const herald_header *h,
                           size_t nheaders) {
  if (status < 200 || status > 599 || !headers_safe(h, nheaders)) {
    return HERALD_ERR_INVALID_ARG;
  }
  response r = {status, h, nheaders, 0, 0};
  return text_queue(c, build_stream_head, &r, 0, NULL) ? 0 : HERALD_ERR_NOMEM;
}

/* ---- client: the request ------------------------------------------------ */

typedef struct request {
  const herald_client_opts *o;
  const char *key; /* 24 characters */
  const char *ext; /* our permessage-deflate offer, or NULL */
} request;

static void build_request(text *t, const void *arg) {
  const request *r = arg;
  const herald_client_opts *o = r->o;
  text_puts(t, "GET ");
  text_puts(t, o->path ? o->path : "/");
  text_puts(t, " HTTP/1.1\r\nHost: ");
  text_puts(t, o->host);
  text_puts(t, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: ");
  text_put(t, r->key, 24);
  text_puts(t, "\r\nSec-WebSocket-Version: 13\r\n");
  if (o->origin) {
    text_puts(t, "Origin: ");
    text_puts(t, o->origin);
    text_put(t, "\r\n", 2);
  }
  if (o->nsubprotocols > 0) {
    text_puts(t, "Sec-WebSocket-Protocol: ");
    for (size_t i = 0; i < o->nsubprotocols; i++) {
      if (i > 0) {
        text_put(t, ", ", 2);
      }
      text_puts(t, o->subprotocols[i]);
    }
    text_put(t, "\r\n", 2);
  }
  if (r->ext) {
    text_puts(t, "Sec-WebSocket-Extensions: ");
    text_puts(t, r->ext);
    text_put(t, "\r\n", 2);
  }
  text_headers(t, o->headers, o->nheaders);
  text_put(t, "\r\n", 2);
}

int herald__hs_request(herald_conn *c, const herald_client_opts *o) {
  if (o == NULL || o->host == NULL || o->host[0] == 0 ||
      !safe_text(o->host, strlen(o->host)) ||
      (o->path && (o->path[0] == 0 || strchr(o->path, ' ') ||
                   !safe_text(o->path, strlen(o->path)))) ||
      (o->origin && !safe_text(o->origin, strlen(o->origin))) ||
      !headers_safe(o->headers, o->nheaders)) {
    return HERALD_ERR_INVALID_ARG;
  }
  for (size_t i = 0; i < o->nsubprotocols; i++) {
    const char *s = o->subprotocols[i];
    if (s == NULL || !is_token(s, strlen(s))) {
      return HERALD_ERR_INVALID_ARG;
    }
  }
  int rv = hs_alloc(c);
  if (rv != 0) {
    return rv;
  }
  handshake *hs = c->hs;
  if (o->nsubprotocols > 0) {
    hs->offered = herald__alloc(c, o->nsubprotocols * sizeof(char *));
    if (hs->offered == NULL) {
      herald__hs_free(c);
      return HERALD_ERR_NOMEM;
    }
    for (size_t i = 0; i < o->nsubprotocols; i++) {
      size_t n = strlen(o->subprotocols[i]) + 1;
      hs->offered[i] = herald__alloc(c, n);
      if (hs->offered[i] == NULL) {
        herald__hs_free(c);
        return HERALD_ERR_NOMEM;
      }
      memcpy(hs->offered[i], o->subprotocols[i], n);
      hs->noffered++;
    }
  }
  /* RFC 6455 4.1: a nonce of 16 random bytes, base64-encoded. */
  uint8_t nonce[16];
  if (herald__random(c, nonce, sizeof(nonce)) != 0) {
    herald__hs_free(c);
    return HERALD_ERR_INTERNAL;
  }
  herald_base64_encode(hs->key, HERALD_BASE64_ENCODED_LEN(sizeof(nonce)), nonce,
                       sizeof(nonce));
  hs->key[24] = 0;
  char ext[HERALD__PMD_TEXT_MAX + 1];
  const herald_deflate_config *dc = &c->cfg->deflate;
  hs->pmd_offered = (uint8_t)(dc->enabled != 0);
  if (hs->pmd_offered && dc->budget != NULL) {
    /* The most the answer can make us hold: our compressor at the window
     * we offer (the answer may only narrow it). Over the budget: no
     * offer. */
    uint64_t charge = pmd_charge(dc, dc->client_max_window_bits);
    if (herald__budget_take(dc->budget, charge)) {
      hs->zcharge = charge;
    } else {
      hs->pmd_offered = 0;
    }
  }
  if (hs->pmd_offered) {
    ext[herald__pmd_offer(dc, ext)] = 0;
  }
  request r = {o, hs->key, hs->pmd_offered ? ext : NULL};
  if (text_queue(c, build_request, &r, 0, NULL) == NULL) {
    herald__hs_free(c);
    return HERALD_ERR_NOMEM;
  }
  return 0;
}
