/* client_net.c - one WebSocket connection of `herald client`, on the
 * sans-I/O core over a socket of our own.
 *
 * Stages, each with one reason to fail that the user is told about:
 *
 *   RESOLVE    getaddrinfo of the host (or of the proxy)
 *   CONNECT    non-blocking connect to each address in turn
 *   PROXY      "CONNECT host:port" to an HTTP proxy and its 2xx answer
 *   TLS        the TLS handshake (wss://), certificate verified
 *   HANDSHAKE  the opening handshake: our GET, the server's 101
 *   OPEN       messages both ways
 *   LISTEN     (--listen) waiting for one connection, then its upgrade
 *
 * One timer covers everything up to OPEN (--connect-timeout); after a
 * close frame of ours, the same timer gives the peer CLOSE_GRACE_MS to
 * answer. Reads and writes go through one uv_poll on the socket; TLS runs
 * OpenSSL directly on the non-blocking descriptor.
 */
#include "app/client_net_int.h"

/* ---- small helpers ------------------------------------------------------ */

/* -v: one line on stderr, "* ..." like curl. */
void cn_vlog(const cnet *n, const char *fmt, ...) {
  if (!n->o->verbose) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  fputs("* ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* -v: an HTTP head, each line behind mark ("> " sent, "< " received). */
void cn_vhead(const cnet *n, const char *mark, const char *p, size_t len) {
  if (!n->o->verbose) {
    return;
  }
  while (len > 0) {
    const char *nl = memchr(p, '\n', len);
    size_t l = nl ? (size_t)(nl - p) : len;
    size_t shown = l > 0 && p[l - 1] == '\r' ? l - 1 : l;
    if (shown > 0 || nl == NULL) {
      fprintf(stderr, "%s%.*s\n", mark, (int)shown, p);
    }
    if (nl == NULL) {
      break;
    }
    len -= l + 1;
    p = nl + 1;
  }
  fflush(stderr);
}

/* ---- ending ------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  cnet *n = h->data;
  if (--n->handles == 0) {
    free(n);
  }
}

static void on_poll_closed(uv_handle_t *h) {
  cnet *n = h->data;
  free(h);
  if (--n->handles == 0) {
    free(n);
  }
}

/* Watches fd; *slot gets the new handle. Returns 0 or -1. */
int cn_poll_open(cnet *n, uv_poll_t **slot, int fd) {
  uv_poll_t *p = malloc(sizeof(*p));
  if (p == NULL || uv_poll_init(n->loop, p, fd) != 0) {
    free(p);
    return -1;
  }
  p->data = n;
  n->handles++;
  *slot = p;
  return 0;
}

void cn_poll_drop(uv_poll_t **slot) {
  if (*slot != NULL) {
    uv_close((uv_handle_t *)*slot, on_poll_closed);
    *slot = NULL;
  }
}

void cn_release(cnet *n) {
  if (n->handles == 0) {
    free(n);
  }
}

/* Ends the connection once: closes the socket, reports through on_close,
 * then closes every handle (n is freed after the last one). */
static void finish(cnet *n) {
  if (n->ended) {
    return;
  }
  n->ended = 1;
  n->state = N_DONE;
  cn_poll_drop(&n->poll);
  cn_poll_drop(&n->lpoll);
  if (n->ssl) {
    SSL_free(n->ssl);
    n->ssl = NULL;
  }
  if (n->ctx) {
    SSL_CTX_free(n->ctx);
    n->ctx = NULL;
  }
  if (n->fd >= 0) {
    close(n->fd);
    n->fd = -1;
  }
  if (n->lfd >= 0) {
    close(n->lfd);
    n->lfd = -1;
  }
  if (n->dns_pending) {
    uv_cancel((uv_req_t *)&n->dns);
  }
  uv_close((uv_handle_t *)&n->timer, on_handle_closed);
  uv_close((uv_handle_t *)&n->ping_timer, on_handle_closed);
  n->handles++; /* held until on_close returns */
  if (n->end.reason == NULL) {
    n->end.reason = n->reason;
  }
  n->cb.on_close(n, &n->end, n->ud);
  herald_conn_del(n->conn);
  n->conn = NULL;
  if (n->addrs) {
    freeaddrinfo(n->addrs);
    n->addrs = NULL;
  }
  free(n->host);
  free(n->hostport);
  free(n->path);
  free(n->auth);
  free(n->phost);
  free(n->pauth);
  free(n->ibuf);
  free(n->raw);
  free(n->tlsw);
  n->host = n->hostport = n->path = n->auth = n->phost = n->pauth = NULL;
  n->ibuf = NULL;
  n->raw = NULL;
  n->tlsw = NULL;
  n->handles--;
  cn_release(n);
}

/* Fails the connection with a sentence saying why. */
void cn_fail(cnet *n, const char *fmt, ...) {
  if (n->ended) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(n->error, sizeof(n->error), fmt, ap);
  va_end(ap);
  n->end.error = n->error;
  if (n->end.code == 0) {
    n->end.code = HERALD_CLOSE_ABNORMAL;
  }
  finish(n);
}

/* The OpenSSL error queue as text, and cleared. */
const char *cn_ssl_errors(char *buf, size_t len) {
  unsigned long e = ERR_get_error();
  if (e == 0) {
    snprintf(buf, len, "no detail from OpenSSL");
  } else {
    ERR_error_string_n(e, buf, len);
  }
  ERR_clear_error();
  return buf;
}

/* ---- socket events ------------------------------------------------------ */

void cn_poll_set(cnet *n, int events) {
  if (n->poll == NULL || n->poll_events == events) {
    return;
  }
  n->poll_events = events;
  uv_poll_start(n->poll, events, cn_on_poll);
}

static size_t out_pending(const cnet *n) {
  return (n->conn ? herald_conn_output_size(n->conn) : 0) + n->tlswlen +
         (n->rawlen - n->rawoff);
}

/* Writes what can be written. Returns 0, or -1 after failing n. */
int cn_flush(cnet *n) {
  int want_write = 0;
  while (n->rawoff < n->rawlen) {
    ssize_t w = write(n->fd, n->raw + n->rawoff, n->rawlen - n->rawoff);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want_write = 1;
      break;
    }
    if (w < 0) {
      cn_fail(n, "cannot write to %s: %s", n->target, strerror(errno));
      return -1;
    }
    n->rawoff += (size_t)w;
  }
  while (!want_write && n->conn && n->state >= N_HANDSHAKE) {
    if (n->ssl) {
      if (n->tlswlen == 0) {
        struct iovec iov[1];
        if (herald_conn_output(n->conn, iov, 1) == 0) {
          break;
        }
        size_t len = iov[0].iov_len < TLS_WCHUNK ? iov[0].iov_len : TLS_WCHUNK;
        memcpy(n->tlsw, iov[0].iov_base, len);
        n->tlswlen = len;
        herald_conn_output_consumed(n->conn, len);
      }
      ERR_clear_error();
      int r = SSL_write(n->ssl, n->tlsw, (int)n->tlswlen);
      if (r > 0) {
        n->tlswlen = 0;
        continue;
      }
      int e = SSL_get_error(n->ssl, r);
      if (e == SSL_ERROR_WANT_WRITE) {
        want_write = 1;
        break;
      }
      if (e == SSL_ERROR_WANT_READ) {
        break;
      }
      char eb[256];
      cn_fail(n, "TLS write to %s failed: %s", n->target,
              e == SSL_ERROR_SYSCALL ? strerror(errno)
                                     : cn_ssl_errors(eb, 256));
      return -1;
    }
    struct iovec iov[64];
    int cnt = herald_conn_output(n->conn, iov, 64);
    if (cnt == 0) {
      break;
    }
    ssize_t w = writev(n->fd, iov, cnt);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want_write = 1;
      break;
    }
    if (w < 0) {
      cn_fail(n, "cannot write to %s: %s", n->target, strerror(errno));
      return -1;
    }
    herald_conn_output_consumed(n->conn, (size_t)w);
  }
  if (n->state != N_CONNECT) {
    cn_poll_set(n, UV_READABLE | (want_write ? UV_WRITABLE : 0));
  }
  if (n->busy && out_pending(n) < LOW_WATER && n->state == N_OPEN) {
    n->busy = 0;
    if (n->cb.on_drain) {
      n->cb.on_drain(n, n->ud);
    }
  }
  return 0;
}

/* ---- the opening handshake --------------------------------------------- */

static int has_header(const client_opts *o, const char *name) {
  for (size_t i = 0; i < o->nheaders; i++) {
    if (o->headers[i].name.len == strlen(name) &&
        strncasecmp(o->headers[i].name.ptr, name, o->headers[i].name.len) ==
            0) {
      return 1;
    }
  }
  return 0;
}

void cn_start_handshake(cnet *n) {
  const client_opts *o = n->o;
  herald_header *hs = calloc(o->nheaders + 2, sizeof(*hs));
  if (hs == NULL) {
    cn_fail(n, "out of memory");
    return;
  }
  size_t nh = 0;
  for (size_t i = 0; i < o->nheaders; i++) {
    hs[nh++] = o->headers[i];
  }
  char ua[64];
  if (!has_header(o, "User-Agent")) {
    snprintf(ua, sizeof(ua), "herald-client/%s", HERALD_VERSION_STRING);
    const char *v = o->user_agent ? o->user_agent : ua;
    hs[nh++] = (herald_header){{"User-Agent", 10}, {v, strlen(v)}};
  }
  if (n->auth && !has_header(o, "Authorization")) {
    hs[nh++] =
        (herald_header){{"Authorization", 13}, {n->auth, strlen(n->auth)}};
  }
  herald_client_opts co = {
      .host = n->hostport,
      .path = n->path,
      .origin = o->origin,
      .subprotocols = o->protocols,
      .nsubprotocols = o->nprotocols,
      .headers = hs,
      .nheaders = nh,
  };
  int rv = herald_conn_client_start(n->conn, &co);
  free(hs);
  if (rv != 0) {
    n->end.usage = 1;
    cn_fail(n,
            "cannot build the handshake request: %s (check -H, --origin and "
            "--subprotocol)",
            herald_strerror(rv));
    return;
  }
  n->state = N_HANDSHAKE;
  if (o->verbose) {
    struct iovec iov[8];
    int cnt = herald_conn_output(n->conn, iov, 8);
    for (int i = 0; i < cnt; i++) {
      cn_vhead(n, "> ", iov[i].iov_base, iov[i].iov_len);
    }
  }
  cn_flush(n);
}

/* ---- received bytes ----------------------------------------------------- */

static void on_event(cnet *n, herald_event *ev, const uint8_t *at);

/* What a refused or broken handshake looked like: the status line and the
 * start of the body, for the error message. */
static void handshake_failed(cnet *n, int rv, const uint8_t *at, size_t len) {
  const char *p = (const char *)at;
  if (len > 0 && (at[0] == 0x15 || at[0] == 0x16)) {
    cn_fail(n,
            "%s answered in TLS: it is a TLS port, use wss:// rather than "
            "ws://",
            n->target);
    return;
  }
  if (len >= 12 && strncmp(p, "HTTP/1.", 7) == 0) {
    size_t ll = strcspn(p, "\r\n");
    if (ll > len) {
      ll = len;
    }
    int status = atoi(p + 9);
    const char *body = memmem(at, len, "\r\n\r\n", 4);
    char excerpt[200] = "";
    if (body != NULL) {
      body += 4;
      size_t bl = len - (size_t)(body - p);
      size_t k = 0;
      for (size_t i = 0; i < bl && k + 1 < sizeof(excerpt); i++) {
        unsigned char c = (unsigned char)body[i];
        excerpt[k++] = c == '\n' || c == '\r' ? ' ' : c < 0x20 ? '?' : c;
      }
      while (k > 0 && excerpt[k - 1] == ' ') {
        k--;
      }
      excerpt[k] = 0;
    }
    cn_vhead(n, "< ", p, body ? (size_t)(body - p) : len); /* the head */
    if (status != 101) {
      cn_fail(n, "%s refused the WebSocket handshake: %.*s%s%s%s", n->target,
              (int)(ll > 9 ? ll - 9 : 0), p + 9, excerpt[0] ? " (\"" : "",
              excerpt, excerpt[0] ? "\")" : "");
      return;
    }
    cn_fail(n, "%s answered 101 but broke the handshake: %s", n->target,
            herald_conn_error_reason(n->conn)[0]
                ? herald_conn_error_reason(n->conn)
                : herald_strerror(rv));
    return;
  }
  cn_fail(n, "%s did not answer the WebSocket handshake in HTTP: %s", n->target,
          herald_conn_error_reason(n->conn)[0]
              ? herald_conn_error_reason(n->conn)
              : herald_strerror(rv));
}

static void feed(cnet *n) {
  size_t off = 0;
  n->dropped = 0;
  while (!n->ended && off < n->ilen) {
    herald_event ev;
    int r = herald_conn_recv(n->conn, n->ibuf + off, n->ilen - off, &ev);
    if (r < 0) {
      if (n->state == N_HANDSHAKE) {
        handshake_failed(n, r, n->ibuf + off, n->ilen - off);
        return;
      }
      /* The core queued the close frame that answers the error. */
      snprintf(n->error, sizeof(n->error), "%s: %s", herald_strerror(r),
               herald_conn_error_reason(n->conn));
      n->end.error = n->error;
      n->end.code = herald_err_close_code(r) ? herald_err_close_code(r)
                                             : HERALD_CLOSE_ABNORMAL;
      n->close_sent = 1;
      cn_flush(n);
      finish(n);
      return;
    }
    const uint8_t *at = n->ibuf + off;
    off += (size_t)r;
    if (ev.type == HERALD_EV_NONE) {
      break;
    }
    on_event(n, &ev, at);
    if (n->dropped) {
      n->dropped = 0; /* listen_reset() emptied ibuf under us */
      return;
    }
  }
  if (n->ended) {
    return;
  }
  memmove(n->ibuf, n->ibuf + off, n->ilen - off);
  n->ilen -= off;
}

static void after_input(cnet *n) {
  if (n->ended) {
    return;
  }
  if (cn_flush(n) != 0) {
    return;
  }
  if (n->conn && herald_conn_done(n->conn)) {
    finish(n); /* the close handshake is complete */
  }
}

/* --listen: the peer that came is done with (it left, or it was not a
 * WebSocket client); wait for the next one on a fresh connection. */
static void listen_reset(cnet *n) {
  cn_poll_drop(&n->poll);
  close(n->fd);
  n->fd = -1;
  herald_conn_del(n->conn);
  n->conn = NULL;
  n->ilen = 0;
  n->dropped = 1;
  if (herald_conn_new(&n->conn, &n->cfg) != 0) {
    cn_fail(n, "out of memory");
    return;
  }
  uv_poll_start(n->lpoll, UV_READABLE, cn_on_poll);
}

static void on_eof(cnet *n) {
  herald_event ev;
  if (n->state == N_PROXY) {
    cn_fail(n,
            "the proxy %s:%d closed the connection without answering "
            "CONNECT",
            n->phost, n->pport);
    return;
  }
  if (n->state == N_LISTEN) {
    cn_vlog(n, "%s left before its handshake; waiting for another", n->peer);
    listen_reset(n);
    return;
  }
  if (n->state == N_HANDSHAKE) {
    if (n->ilen > 0) {
      handshake_failed(n, HERALD_ERR_HTTP, n->ibuf, n->ilen);
    } else {
      cn_fail(n,
              "%s closed the connection without answering the WebSocket "
              "handshake%s",
              n->target,
              n->tls ? ""
                     : " (if it is a TLS port, use wss:// rather than ws://)");
    }
    return;
  }
  if (herald_conn_recv_eof(n->conn, &ev) == 1) {
    n->end.code = HERALD_CLOSE_ABNORMAL;
    n->end.error = "the peer closed the TCP connection without a close frame";
  }
  finish(n);
}

static void on_readable(cnet *n) {
  int fd = n->fd;
  /* The loop stops when the socket changes under it (--listen drops a
   * peer that was not a WebSocket client). */
  /* Bytes OpenSSL already took off the socket do not wake the poll again:
   * read those in any case. */
  for (int round = 0; (round < 16 || (n->ssl && SSL_pending(n->ssl) > 0)) &&
                      !n->ended && n->fd == fd && fd >= 0;
       round++) {
    if (n->icap - n->ilen < READ_CHUNK) {
      size_t cap = n->icap ? n->icap * 2 : 2 * READ_CHUNK;
      while (cap - n->ilen < READ_CHUNK) {
        cap *= 2;
      }
      uint8_t *b = realloc(n->ibuf, cap);
      if (b == NULL) {
        cn_fail(n, "out of memory");
        return;
      }
      n->ibuf = b;
      n->icap = cap;
    }
    ssize_t r;
    if (n->ssl) {
      ERR_clear_error();
      int k = SSL_read(n->ssl, n->ibuf + n->ilen, READ_CHUNK);
      if (k > 0) {
        r = k;
      } else {
        int e = SSL_get_error(n->ssl, k);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
          break;
        }
        if (e == SSL_ERROR_ZERO_RETURN ||
            (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
          on_eof(n); /* close_notify, or a TCP close without one */
          return;
        }
        char eb[256];
        cn_fail(n, "TLS read from %s failed: %s", n->target,
                cn_ssl_errors(eb, sizeof(eb)));
        return;
      }
    } else {
      r = read(n->fd, n->ibuf + n->ilen, READ_CHUNK);
      if (r < 0 && errno == EINTR) {
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      }
      if (r < 0) {
        if (errno == ECONNRESET && n->state == N_HANDSHAKE && !n->tls) {
          cn_fail(n,
                  "%s reset the connection during the WebSocket handshake "
                  "(if it is a TLS port, use wss:// rather than ws://)",
                  n->target);
        } else {
          cn_fail(n, "reading from %s: %s", n->target, strerror(errno));
        }
        return;
      }
      if (r == 0) {
        on_eof(n);
        return;
      }
    }
    n->ilen += (size_t)r;
    if (n->state == N_PROXY) {
      if (cn_proxy_answer(n) == 1) {
        continue; /* more of the proxy's head to come */
      }
      if (n->ended || n->state == N_TLS) {
        return; /* cn_tls_step() watches the socket now */
      }
    }
    if (n->conn && n->state >= N_HANDSHAKE && n->state != N_DONE) {
      feed(n);
    }
  }
  after_input(n);
}

/* ---- events of the core ------------------------------------------------- */

static void ping_due(uv_timer_t *t);

static void opened(cnet *n) {
  n->state = N_OPEN;
  uv_timer_stop(&n->timer);
  n->deflate = herald_conn_deflate(n->conn, NULL);
  n->end.opened = 1;
  if (n->lpoll != NULL) {
    /* --listen takes one connection. */
    cn_poll_drop(&n->lpoll);
    close(n->lfd);
    n->lfd = -1;
  }
  if (n->o->ping_ms) {
    uv_timer_start(&n->ping_timer, ping_due, n->o->ping_ms, n->o->ping_ms);
  }
  n->cb.on_open(n, n->ud);
}

static void on_request(cnet *n, herald_event *ev, const uint8_t *at) {
  const herald_request *req = ev->request;
  cn_vhead(n, "< ", (const char *)at, req->head_len);
  if (!req->websocket) {
    cn_vlog(n, "not a WebSocket upgrade: answering 426, waiting for another");
    herald_header up = {{"Upgrade", 7}, {"websocket", 9}};
    herald_conn_reject(n->conn, 426, "this port speaks WebSocket only", &up, 1);
    cn_flush(n);
    listen_reset(n);
    return;
  }
  /* The first subprotocol of ours (in our order) that the client offers. */
  const char *proto = NULL;
  for (size_t i = 0; i < n->o->nprotocols && proto == NULL; i++) {
    size_t pos = 0;
    herald_str tok;
    while (herald_list_next(req->protocols, &pos, &tok)) {
      if (tok.len == strlen(n->o->protocols[i]) &&
          memcmp(tok.ptr, n->o->protocols[i], tok.len) == 0) {
        proto = n->o->protocols[i];
        break;
      }
    }
  }
  herald_accept acc = {.subprotocol = proto};
  int rv = herald_conn_accept(n->conn, &acc);
  if (rv != 0) {
    cn_fail(n, "cannot accept the upgrade: %s", herald_strerror(rv));
    return;
  }
  if (proto) {
    snprintf(n->subprotocol, sizeof(n->subprotocol), "%s", proto);
  }
  if (n->o->verbose) {
    struct iovec iov[8];
    int cnt = herald_conn_output(n->conn, iov, 8);
    for (int i = 0; i < cnt; i++) {
      cn_vhead(n, "> ", iov[i].iov_base, iov[i].iov_len);
    }
  }
  opened(n);
}

static void on_event(cnet *n, herald_event *ev, const uint8_t *at) {
  switch (ev->type) {
  case HERALD_EV_OPEN:
    cn_vhead(n, "< ", (const char *)at, ev->response->head_len);
    if (ev->response->protocol.len > 0) {
      snprintf(n->subprotocol, sizeof(n->subprotocol), "%.*s",
               (int)ev->response->protocol.len, ev->response->protocol.ptr);
    }
    opened(n);
    break;
  case HERALD_EV_REQUEST:
    on_request(n, ev, at);
    break;
  case HERALD_EV_TEXT:
  case HERALD_EV_BINARY:
    n->cb.on_message(
        n, ev->type == HERALD_EV_TEXT ? HERALD_OP_TEXT : HERALD_OP_BINARY,
        ev->data, ev->len, n->ud);
    break;
  case HERALD_EV_PING:
    break; /* the core queued the pong */
  case HERALD_EV_PONG:
    n->ping_pending = 0;
    if (n->cb.on_pong) {
      n->cb.on_pong(n, ev->data, ev->len, n->ud);
    }
    break;
  case HERALD_EV_CLOSE:
    n->end.code = ev->code;
    n->end.remote = ev->code != HERALD_CLOSE_ABNORMAL;
    snprintf(
        n->reason, sizeof(n->reason), "%.*s",
        (int)(ev->len < sizeof(n->reason) ? ev->len : sizeof(n->reason) - 1),
        (const char *)ev->data);
    /* Our answer (if we had not closed first) is queued; once it is
     * written the connection is done (after_input). */
    break;
  default:
    break;
  }
}

/* ---- timers ------------------------------------------------------------- */

const char *cn_stage(const cnet *n) {
  switch (n->state) {
  case N_RESOLVE:
    return "resolving the host name";
  case N_CONNECT:
    return "connecting";
  case N_PROXY:
    return "waiting for the proxy to answer CONNECT";
  case N_TLS:
    return "in the TLS handshake (is it a TLS port?)";
  case N_HANDSHAKE:
    return "waiting for the answer to the WebSocket handshake";
  default:
    return "closing";
  }
}

static void on_timer(uv_timer_t *t) {
  cnet *n = t->data;
  if (n->state == N_OPEN) {
    /* Our close frame got no answer in time. */
    n->end.error = "the peer did not answer our close frame";
    if (!n->end.remote) {
      n->end.code = HERALD_CLOSE_ABNORMAL;
    }
    finish(n);
    return;
  }
  cn_fail(n, "timed out after %.1f s %s (%s)", n->o->connect_ms / 1000.0,
          cn_stage(n), n->target);
}

static void ping_due(uv_timer_t *t) {
  cnet *n = t->data;
  if (n->ping_pending) {
    cn_fail(n, "no pong within %.1f s: the connection is dead",
            n->o->ping_ms / 1000.0);
    return;
  }
  if (herald_conn_ping(n->conn, "", 0) == 0) {
    n->ping_pending = 1;
    cn_flush(n);
  }
}

void cn_on_poll(uv_poll_t *p, int status, int events) {
  cnet *n = p->data;
  if (p == n->lpoll) {
    cn_on_accept(n);
    return;
  }
  if (status < 0 && n->state != N_CONNECT) {
    /* libuv reports EPOLLERR (a reset, mostly) as UV_EBADF and stops the
     * handle: read, and let read() name the error. */
    n->poll_events = 0;
    events = UV_READABLE;
    if (n->state == N_TLS) {
      cn_tls_step(n);
      return;
    }
  }
  switch (n->state) {
  case N_CONNECT:
    cn_on_connect_ready(n);
    return;
  case N_TLS:
    cn_tls_step(n);
    return;
  default:
    break;
  }
  if (events & UV_WRITABLE) {
    if (cn_flush(n) != 0) {
      return;
    }
  }
  if (events & (UV_READABLE | UV_DISCONNECT)) {
    on_readable(n);
  } else {
    after_input(n);
  }
}

/* ---- the API of this file ---------------------------------------------- */

int cnet_start(uv_loop_t *loop, const client_opts *o, const cnet_callbacks *cb,
               void *ud, cnet **pn) {
  cnet *n = calloc(1, sizeof(*n));
  if (n == NULL) {
    fprintf(stderr, "herald client: out of memory\n");
    return -1;
  }
  n->loop = loop;
  n->o = o;
  n->cb = *cb;
  n->ud = ud;
  n->fd = n->lfd = -1;
  herald_config_init(&n->cfg,
                     o->listen ? HERALD_ROLE_SERVER : HERALD_ROLE_CLIENT);
  n->cfg.max_message_size = o->max_message;
  n->cfg.max_frame_size = o->max_message;
  n->cfg.max_fragments = 1u << 20;
  n->cfg.deflate.enabled = o->deflate;
  if (herald_conn_new(&n->conn, &n->cfg) != 0) {
    free(n);
    fprintf(stderr, "herald client: out of memory\n");
    return -1;
  }
  uv_timer_init(loop, &n->timer);
  uv_timer_init(loop, &n->ping_timer);
  n->timer.data = n->ping_timer.data = n;
  n->handles = 2;
  *pn = n;

  if (o->listen) {
    snprintf(n->target, sizeof(n->target), "the peer");
    if (cn_start_listen(n, o->listen) != 0) {
      n->end.usage = 1;
      n->end.error = n->error;
      finish(n);
      return 0;
    }
    return 0;
  }

  char err[512];
  if (cn_parse_url(o->url, 0, &n->tls, &n->host, &n->hostport, &n->port,
                   &n->path, &n->auth, err, sizeof(err)) != 0) {
    snprintf(n->error, sizeof(n->error), "%s", err);
    n->end.error = n->error;
    n->end.usage = 1;
    finish(n);
    return 0;
  }
  int is6 = strchr(n->host, ':') != NULL;
  snprintf(n->target, sizeof(n->target), "%s%s%s:%d", is6 ? "[" : "", n->host,
           is6 ? "]" : "", n->port);

  /* The proxy: --proxy, else https_proxy (wss://) or http_proxy (ws://),
   * unless --no-proxy or NO_PROXY names the host. */
  const char *proxy = o->proxy;
  if (proxy == NULL && !o->no_proxy && !cn_no_proxy_for(n->host)) {
    const char *names[2][2] = {{"http_proxy", "HTTP_PROXY"},
                               {"https_proxy", "HTTPS_PROXY"}};
    for (int i = 0; i < 2 && (proxy == NULL || *proxy == 0); i++) {
      proxy = getenv(names[n->tls][i]);
    }
    if (proxy != NULL && *proxy == 0) {
      proxy = NULL;
    }
  }
  if (proxy != NULL && !o->no_proxy) {
    int ptls;
    char *php = NULL;
    if (cn_parse_url(proxy, 1, &ptls, &n->phost, &php, &n->pport, NULL,
                     &n->pauth, err, sizeof(err)) != 0) {
      free(php);
      snprintf(n->error, sizeof(n->error), "%s%s", err,
               o->proxy ? "" : " (from the environment)");
      n->end.error = n->error;
      n->end.usage = 1;
      finish(n);
      return 0;
    }
    free(php);
    cn_vlog(n, "through the HTTP proxy %s:%d", n->phost, n->pport);
  }

  if (o->connect_ms) {
    uv_timer_start(&n->timer, on_timer, o->connect_ms, 0);
  }
  const char *name = n->phost ? n->phost : n->host;
  char portstr[8];
  snprintf(portstr, sizeof(portstr), "%d", n->phost ? n->pport : n->port);
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo numeric = hints, *res = NULL;
  numeric.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  n->state = N_RESOLVE;
  if (getaddrinfo(name, portstr, &numeric, &res) == 0) {
    n->addrs = n->next_addr = res;
    cn_try_next_address(n);
    return 0;
  }
  cn_vlog(n, "resolving %s", name);
  n->dns.data = n;
  int rv = uv_getaddrinfo(loop, &n->dns, cn_on_dns, name, portstr, &hints);
  if (rv != 0) {
    cn_fail(n, "cannot resolve %s: %s", name, uv_strerror(rv));
    return 0;
  }
  n->dns_pending = 1;
  n->handles++;
  return 0;
}

int cnet_send(cnet *n, herald_opcode op, const void *data, size_t len) {
  if (n->ended || n->state != N_OPEN) {
    return HERALD_ERR_BAD_STATE;
  }
  int rv = herald_conn_send(n->conn, op, len ? data : "", len, 0, NULL, NULL);
  if (rv == 0) {
    cn_flush(n);
  }
  return rv;
}

int cnet_ping(cnet *n, const void *data, size_t len) {
  if (n->ended || n->state != N_OPEN) {
    return HERALD_ERR_BAD_STATE;
  }
  int rv = herald_conn_ping(n->conn, len ? data : "", len);
  if (rv == 0) {
    cn_flush(n);
  }
  return rv;
}

void cnet_close(cnet *n, uint16_t code, const char *reason) {
  if (n->ended) {
    return;
  }
  if (n->state != N_OPEN) {
    n->end.error = "closed before the connection opened";
    finish(n);
    return;
  }
  if (n->close_sent) {
    return;
  }
  n->close_sent = 1;
  const char *r = reason ? reason : "";
  int rv = herald_conn_close(n->conn, code, r, strlen(r));
  if (rv == HERALD_ERR_CLOSED) {
    return;
  }
  uv_timer_stop(&n->ping_timer);
  uv_timer_start(&n->timer, on_timer, CLOSE_GRACE_MS, 0);
  after_input(n);
}

void cnet_abort(cnet *n, const char *why) {
  if (n->ended) {
    return;
  }
  n->end.error = why;
  n->end.code = HERALD_CLOSE_ABNORMAL;
  finish(n);
}

int cnet_busy(const cnet *n) {
  if (out_pending(n) > HIGH_WATER) {
    ((cnet *)n)->busy = 1;
    return 1;
  }
  return 0;
}

const char *cnet_subprotocol(const cnet *n) {
  return n->subprotocol;
}

int cnet_deflate(const cnet *n) {
  return n->deflate;
}

const char *cnet_peer(const cnet *n) {
  return n->target;
}
