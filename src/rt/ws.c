/*
 * ws.c - a connection on a loop: bytes from the socket into the core, the
 * core's events into callbacks, the core's output into one writev, and the
 * end of the connection in the right order.
 *
 * A connection ends in three steps:
 *   1. the protocol finishes: the close handshake completed, the connection
 *      failed (the core queued its close frame or HTTP refusal), or the
 *      request was answered with "Connection: close";
 *   2. once its output is flushed we shut down our side (FIN) and keep
 *      reading and discarding until the peer's FIN, so that a peer still
 *      sending does not make the kernel reset the connection and destroy the
 *      close frame we just sent (the "lingering close" of HTTP servers),
 *      bounded by close_timeout_ms;
 *   3. finish: the descriptor is closed, on_close runs, and the memory is
 *      freed at the end of the loop pass.
 * An error on the socket, or a timeout, jumps straight to step 3.
 *
 * What the application sends is queued in the core by ws_send.c.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rt/internal.h"
#include "rt/tls.h"

#define MAX_IOV 64

static void ws_finish(herald_ws *ws);
static void ws_arm_open_timers(herald_ws *ws);
static void ws_ready(herald_ws *ws, uint32_t events);
static void ws_timer(herald_ws *ws, uint64_t now);
static void ws_resume(herald_ws *ws);
static void ws_free(herald_ws *ws);

/* How the loop reaches its connections (loop_conn_ops). */
static const loop_conn_ops ws_loop_ops = {
    .ready = ws_ready,
    .timer = ws_timer,
    .flush = herald__ws_flush,
    .resume = ws_resume,
    .free = ws_free,
};

ws_cold *herald__ws_cold(herald_ws *ws) {
  if (ws->cold == NULL) {
    ws->cold = calloc(1, sizeof(ws_cold));
  }
  return ws->cold;
}

/* Frees the cold part if it holds nothing: an open server connection with
 * no input split across reads, no pending pause and no ending yet. */
static void ws_trim_cold(herald_ws *ws) {
  ws_cold *k = ws->cold;
  if (k == NULL || k->cli || k->tail_len || k->http || k->body ||
      k->subprotocol || k->close_reason || k->error ||
      (ws->flags & WS_RESUME)) {
    return;
  }
  free(k->tail);
  free(k);
  ws->cold = NULL;
}

herald_ws *herald__ws_new(herald_loop *loop, int fd, const herald_config *core,
                          const herald_rt_limits *limits) {
  herald_ws *ws = calloc(1, sizeof(*ws));
  if (ws == NULL) {
    return NULL;
  }
  if (herald__ws_cold(ws) == NULL) {
    free(ws);
    return NULL;
  }
  if (herald_conn_new(&ws->conn, core) != 0) {
    free(ws->cold);
    free(ws);
    return NULL;
  }
  ws->io.kind = IO_WS;
  ws->io.fd = fd;
  ws->loop = loop;
  ws->limits = limits;
  loop->conn_ops = &ws_loop_ops;
  ws->next = loop->all;
  if (loop->all) {
    loop->all->prev = ws;
  }
  loop->all = ws;
  herald__loop_ref(loop, 1);
  return ws;
}

void herald__ws_start(herald_ws *ws) {
  if (herald__epoll_add(ws->loop, &ws->io, EPOLLIN | EPOLLRDHUP) == 0) {
    ws->flags |= WS_IN_EPOLL;
    ws->io.events = 1;
  }
  uint64_t now = herald__now(ws->loop);
  ws->last_rx = (uint32_t)now;
  if (ws->limits->handshake_timeout_ms) {
    herald__wheel_set(ws, now + ws->limits->handshake_timeout_ms);
  }
}

/* Puts the connection on its loop's resume list: ws_resume() runs at the
 * end of the pass (loop.c, flush_dirty). */
static void ws_mark_resume(herald_ws *ws) {
  if (!(ws->flags & WS_RESUME)) {
    ws_cold *k = herald__ws_cold(ws);
    if (k == NULL) {
      herald__ws_abort(ws, "out of memory");
      return;
    }
    ws->flags |= WS_RESUME;
    k->resume_next = ws->loop->resume;
    ws->loop->resume = ws;
  }
}

/* Frees a finished connection (reaped by the loop). */
static void ws_free(herald_ws *ws) {
  herald__tls_free(ws);
  herald_conn_del(ws->conn);
  if (ws->cold && ws->cold->owner && ws->cold->owner->free) {
    ws->cold->owner->free(ws);
  }
  if (ws->cold) {
    free(ws->cold->tail);
    free(ws->cold->body);
    free(ws->cold->subprotocol);
    free(ws->cold->close_reason);
    free(ws->cold);
  }
  free(ws);
}

/* Registers the events the connection waits for now. */
static void ws_update_events(herald_ws *ws) {
  if (!(ws->flags & WS_IN_EPOLL)) {
    return;
  }
  uint8_t want =
      (uint8_t)((ws->flags & WS_READ_PAUSED ? 0 : 1) |
                (ws->flags & (WS_WANT_WRITE | WS_CONNECTING) ? 2 : 0));
  if (want == ws->io.events) {
    return; /* the common case costs no syscall */
  }
  uint32_t ev =
      EPOLLRDHUP | (want & 1 ? EPOLLIN : 0) | (want & 2 ? EPOLLOUT : 0);
  if (herald__epoll_mod(ws->loop, &ws->io, ev) == 0) {
    ws->io.events = want;
  }
}

/* ---- ending ------------------------------------------------------------- */

void herald__ws_record_error(herald_ws *ws, const char *error) {
  ws_cold *k = herald__ws_cold(ws);
  if (k && k->error == NULL) {
    k->error = error;
  }
}

/* Step 3: close the descriptor, tell the application, free later. */
static void ws_finish(herald_ws *ws) {
  if (ws->flags & WS_DEAD) {
    return;
  }
  herald_loop *loop = ws->loop;
  ws->flags |= WS_DEAD;
  herald__wheel_remove(ws);
  if (ws->flags & WS_IN_EPOLL) {
    herald__epoll_del(loop, &ws->io);
    ws->flags &= (uint16_t)~WS_IN_EPOLL;
  }
  if (ws->io.fd >= 0) {
    close(ws->io.fd);
    ws->io.fd = -1;
  }
  ws_cold *k = ws->cold;
  if (k && k->http) {
    herald_http *h = k->http;
    h->ws = NULL; /* a late herald_http_respond() is discarded */
    k->http = NULL;
    if (h->streaming && h->on_gone) {
      h->on_gone(h, h->gone_ud);
    }
  }
  /* Unlink from the loop's list before the callback, so a shutdown that
   * walks the list never meets a finished connection. */
  if (ws->prev) {
    ws->prev->next = ws->next;
  } else {
    loop->all = ws->next;
  }
  if (ws->next) {
    ws->next->prev = ws->prev;
  }
  herald__loop_ref(loop, -1);
  /* on_close goes to connections the application knows about: opened ones,
   * and clients (whose failure to connect must be reported). */
  if (ws->cb && ws->cb->on_close &&
      ((ws->flags & WS_OPEN) || (ws->flags & WS_CLIENT))) {
    herald_close_info info = {0};
    info.code = ws->close_code ? ws->close_code : HERALD_CLOSE_ABNORMAL;
    info.reason = k && k->close_reason ? k->close_reason : "";
    info.reasonlen = k ? k->close_reason_len : 0;
    info.remote = (ws->flags & WS_CLOSE_REMOTE) != 0;
    info.error = k ? k->error : NULL;
    ws->cb->on_close(ws, &info, ws->ud);
  }
  if (k && k->owner && k->owner->finished) {
    /* A client's callbacks live in its connect state, and its core config
     * too: both go at the reap, after the core connection. */
    k->owner->finished(ws);
    ws->cb = NULL;
  }
  ws->next = loop->reap;
  ws->prev = NULL;
  loop->reap = ws;
  if (loop->nconns == 0 && loop->on_idle) {
    loop->on_idle(loop);
  }
}

void herald__ws_abort(herald_ws *ws, const char *error) {
  herald__ws_record_error(ws, error);
  ws_finish(ws);
}

/* Step 2: the protocol is done and flushed; send FIN and wait for the
 * peer's, discarding what it still sends. */
static void ws_shutdown_write(herald_ws *ws) {
  if (ws->flags & WS_SHUTDOWN) {
    return;
  }
  ws->flags |= WS_SHUTDOWN;
  ws->flags &= (uint16_t)~WS_READ_PAUSED;
  if (ws->io.fd < 0 || shutdown(ws->io.fd, SHUT_WR) != 0) {
    ws_finish(ws);
    return;
  }
  ws_update_events(ws);
  uint32_t grace = ws->limits->close_timeout_ms;
  herald__wheel_set(ws, herald__now(ws->loop) + (grace ? grace : 1000));
}

/* ---- writing ------------------------------------------------------------ */

void herald__ws_flush(herald_ws *ws) {
  if ((ws->flags & (WS_DEAD | WS_CONNECTING)) || ws->io.fd < 0) {
    return;
  }
  ws->flags &= (uint16_t)~WS_NEEDS_FLUSH;
  if (ws->tls) {
    const char *why = NULL;
    if (herald__tls_flush(ws, &why) < 0) {
      herald__ws_abort(ws, why);
      return;
    }
  } else {
    struct iovec iov[MAX_IOV];
    for (;;) {
      int cnt = herald_conn_output(ws->conn, iov, MAX_IOV);
      if (cnt <= 0) {
        ws->flags &= (uint16_t)~WS_WANT_WRITE;
        break;
      }
      size_t want = 0;
      for (int i = 0; i < cnt; i++) {
        want += iov[i].iov_len;
      }
      /* sendmsg rather than writev: the same single syscall, plus
       * MSG_NOSIGNAL so a peer that reset the connection cannot kill the
       * process with SIGPIPE. */
      struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
      ssize_t n = sendmsg(ws->io.fd, &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          ws->flags |= WS_WANT_WRITE;
          break;
        }
        herald__ws_abort(ws, "write failed");
        return;
      }
      herald_conn_output_consumed(ws->conn, (size_t)n);
      if ((size_t)n < want) {
        ws->flags |= WS_WANT_WRITE;
        break;
      }
      if (cnt < MAX_IOV) {
        ws->flags &= (uint16_t)~WS_WANT_WRITE;
        break;
      }
    }
  }
  ws_update_events(ws);
  if ((ws->flags & WS_TRIM) && herald_conn_output_size(ws->conn) == 0) {
    /* The handshake is written: a connection that now sits idle keeps no
     * buffers. Busy ones allocate again on their next message. */
    ws->flags &= (uint16_t)~WS_TRIM;
    herald_conn_trim(ws->conn);
    ws_trim_cold(ws);
  }
  if ((ws->flags & WS_BACKPRESSURE) &&
      herald_conn_output_size(ws->conn) <= ws->limits->send_low_water) {
    ws->flags &= (uint16_t)~WS_BACKPRESSURE;
    if (ws->cb && ws->cb->on_drain && (ws->flags & WS_OPEN)) {
      ws->cb->on_drain(ws, ws->ud);
    }
  }
  if (!(ws->flags & WS_DEAD) && herald_conn_done(ws->conn) &&
      (ws->tls == NULL || herald__tls_pending(ws) == 0)) {
    ws_shutdown_write(ws);
  }
}

/* ---- timers ------------------------------------------------------------- */

/* last_rx and ping_sent_at keep loop time mod 2^32 ms: this is the latest
 * instant at or before now with those low bits, exact for anything less
 * than 49 days ago (a deadline further than that has passed long since, and
 * was acted on). */
static uint64_t ws_when(herald_ws *ws, uint32_t t) {
  uint64_t now = herald__now(ws->loop);
  return now - (uint32_t)((uint32_t)now - t);
}

/* Re-arms the wheel for an open connection: the earliest of the idle
 * deadline, the next ping, and the pong deadline. */
static void ws_arm_open_timers(herald_ws *ws) {
  const herald_rt_limits *l = ws->limits;
  uint64_t d = 0;
  if (l->idle_timeout_ms) {
    d = ws_when(ws, ws->last_rx) + l->idle_timeout_ms;
  }
  if (l->ping_interval_ms) {
    uint64_t p = (ws->flags & WS_PING_SENT)
                     ? ws_when(ws, ws->ping_sent_at) + l->pong_timeout_ms
                     : ws_when(ws, ws->ping_sent_at) + l->ping_interval_ms;
    if (d == 0 || p < d) {
      d = p;
    }
  }
  herald__wheel_set(ws, d);
}

static void ws_timer(herald_ws *ws, uint64_t now) {
  if (ws->flags & WS_DEAD) {
    return;
  }
  if (ws->flags & WS_SHUTDOWN) {
    ws_finish(ws); /* the peer never sent its FIN */
    return;
  }
  herald_state st = herald_conn_state(ws->conn);
  if (st == HERALD_STATE_CONNECTING) {
    herald__ws_abort(ws, (ws->flags & WS_CLIENT) ? "connect timeout"
                                                 : "handshake timeout");
    return;
  }
  if (st != HERALD_STATE_OPEN) {
    /* CLOSING or CLOSED with output stuck: the close grace is over. */
    herald__ws_abort(ws, "close handshake timeout");
    return;
  }
  const herald_rt_limits *l = ws->limits;
  if (l->idle_timeout_ms &&
      now >= ws_when(ws, ws->last_rx) + l->idle_timeout_ms) {
    herald_ws_close(ws, HERALD_CLOSE_GOING_AWAY, "idle timeout", 12);
    return;
  }
  if (l->ping_interval_ms) {
    if (ws->flags & WS_PING_SENT) {
      if (now >= ws_when(ws, ws->ping_sent_at) + l->pong_timeout_ms) {
        herald__ws_abort(ws, "pong timeout");
        return;
      }
    } else if (now >= ws_when(ws, ws->ping_sent_at) + l->ping_interval_ms) {
      if (now >= ws_when(ws, ws->last_rx) + l->ping_interval_ms &&
          herald_conn_output_size(ws->conn) == 0) {
        /* Quiet for a whole interval: give back the buffers, and the zlib
         * streams that hold no context (no context takeover). */
        herald_conn_trim(ws->conn);
      }
      if (herald_conn_ping(ws->conn, "", 0) == 0) {
        ws->flags |= WS_PING_SENT;
        ws->ping_sent_at = (uint32_t)now;
        herald__mark_dirty(ws);
      }
    }
  }
  ws_arm_open_timers(ws);
}

/* ---- reading ------------------------------------------------------------ */

/* Keeps buf[0..len) for the next read. */
static int ws_keep_tail(herald_ws *ws, const uint8_t *buf, size_t len) {
  ws_cold *k = ws->cold;
  if (len == 0) {
    if (k) {
      if (k->tail_cap > 4096) {
        free(k->tail);
        k->tail = NULL;
        k->tail_cap = 0;
      }
      k->tail_len = 0;
    }
    return 0;
  }
  if ((k = herald__ws_cold(ws)) == NULL) {
    return -1;
  }
  if (len > k->tail_cap) {
    uint8_t *t = realloc(k->tail, len);
    if (t == NULL) {
      return -1;
    }
    k->tail = t;
    k->tail_cap = len;
  }
  memmove(k->tail, buf, len);
  k->tail_len = len;
  return 0;
}

/* Copies the input kept from an earlier read to buf; returns its length.
 * It stays kept until processing replaces it (ws_keep_tail). */
static size_t ws_copy_tail(herald_ws *ws, uint8_t *buf) {
  ws_cold *k = ws->cold;
  if (k == NULL || k->tail_len == 0) {
    return 0;
  }
  memcpy(buf, k->tail, k->tail_len);
  return k->tail_len;
}

static void ws_on_eof(herald_ws *ws) {
  herald_event ev;
  if (herald_conn_recv_eof(ws->conn, &ev) == 1 && ws->close_code == 0) {
    ws->close_code = HERALD_CLOSE_ABNORMAL;
  }
  ws_finish(ws);
}

/* After a read of got bytes into room: whether to read again in this pass
 * (the read filled the room, the connection still reads, and *total, the
 * pass's bytes so far, stays under READ_PASS_MAX). */
static int ws_read_again(herald_ws *ws, size_t got, size_t room,
                         size_t *total) {
  *total += got;
  return !(ws->flags & (WS_DEAD | WS_READ_PAUSED | WS_SHUTDOWN)) &&
         got == room && *total < READ_PASS_MAX;
}

/*
 * Decrypts what TLS holds and processes it, until TLS needs more
 * ciphertext or the connection pauses. Returns 0, 1 at close_notify (EOF),
 * or -1 after aborting. Also continues a resumed connection: plaintext kept
 * by the pause goes first, and records that arrived meanwhile are still in
 * TLS's read buffer. Plaintext goes in the first half of the loop's read
 * buffer (ciphertext is read into the second).
 */
static int ws_tls_drain(herald_ws *ws) {
  uint8_t *buf = ws->loop->rbuf;
  size_t cap = READ_BUFFER_SIZE / 2;
  if (!herald__tls_established(ws)) {
    return 0;
  }
  ws_cold *k = ws->cold;
  if (k && k->tail_len) {
    size_t n = k->tail_len;
    memcpy(buf, k->tail, n);
    k->tail_len = 0;
    herald__ws_process(ws, buf, n);
    if (ws->flags & (WS_DEAD | WS_READ_PAUSED)) {
      return 0;
    }
  }
  for (;;) {
    k = ws->cold; /* processing may have allocated it */
    size_t have = k ? k->tail_len : 0;
    if (have) {
      memcpy(buf, k->tail, have);
      k->tail_len = 0;
    }
    size_t n = 0;
    const char *why = NULL;
    int r = herald__tls_decrypt(ws, buf + have, cap - have, &n, &why);
    if (r != 0 || n == 0) {
      if (have) {
        k->tail_len = have; /* still in k->tail */
      }
      if (r < 0) {
        herald__ws_abort(ws, why);
        return -1;
      }
      return r; /* 0: TLS needs more ciphertext; 1: close_notify */
    }
    herald__ws_process(ws, buf, have + n);
    if (ws->flags & (WS_DEAD | WS_READ_PAUSED)) {
      return 0;
    }
  }
}

static void ws_read(herald_ws *ws) {
  uint8_t *buf = ws->loop->rbuf;
  if (ws->flags & WS_SHUTDOWN) {
    /* Lingering: discard until the peer's FIN. */
    for (;;) {
      ssize_t n = read(ws->io.fd, buf, READ_BUFFER_SIZE);
      if (n > 0) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      ws_finish(ws);
      return;
    }
  }
  if (ws->tls) {
    /* As below: read on while reads fill the buffer, up to READ_PASS_MAX. */
    size_t total = 0;
    for (;;) {
      size_t got = 0;
      const char *why = NULL;
      int r = herald__tls_read(ws, &got, &why);
      if (r < 0) {
        herald__ws_abort(ws, why);
        return;
      }
      if (r == 2) { /* ciphertext in, handshake done: decrypt */
        ws->last_rx = (uint32_t)herald__now(ws->loop);
        r = ws_tls_drain(ws);
      }
      if (r == 1) {
        ws_on_eof(ws);
        return;
      }
      if (r != 0 || (ws->flags & WS_DEAD)) {
        return;
      }
      herald__ws_flush(ws);
      if (!ws_read_again(ws, got, HERALD_TLS_READ_MAX, &total)) {
        return;
      }
    }
  }
  /* A connection whose reads fill the buffer (a publisher, a bulk sender)
   * reads on within the pass, up to READ_PASS_MAX bytes: what its input
   * makes for other connections is then written once per pass in larger
   * batches, instead of one read's worth per pass. Each round writes this
   * connection's own output and takes over what the core borrowed from the
   * buffer before reading into it again. */
  size_t total = 0;
  for (;;) {
    size_t have = ws_copy_tail(ws, buf);
    ssize_t n;
    do {
      n = read(ws->io.fd, buf + have, READ_BUFFER_SIZE - have);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return;
      }
      herald__ws_abort(ws, "read failed");
      return;
    }
    if (n == 0) {
      ws_on_eof(ws);
      return;
    }
    ws->last_rx = (uint32_t)herald__now(ws->loop);
    ws->loop->reading = ws;
    herald__ws_process(ws, buf, have + (size_t)n);
    if (!(ws->flags & WS_DEAD)) {
      herald__ws_flush(ws);
    }
    ws->loop->reading = NULL;
    /* Before the buffer is read into again: copy what is left of payloads
     * the core borrowed from it. */
    if (!(ws->flags & WS_DEAD) && herald_conn_output_own(ws->conn) != 0) {
      herald__ws_abort(ws, "out of memory");
    }
    if (!ws_read_again(ws, (size_t)n, READ_BUFFER_SIZE - have, &total)) {
      return;
    }
  }
}

static void ws_ready(herald_ws *ws, uint32_t events) {
  if (ws->flags & WS_CONNECTING) {
    ws_cold *k = ws->cold; /* a client's: never trimmed */
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && k && k->owner &&
        k->owner->connected) {
      k->owner->connected(ws);
    }
    return;
  }
  if ((events & EPOLLOUT) && (ws->flags & WS_WANT_WRITE)) {
    herald__ws_flush(ws);
    if (ws->flags & WS_DEAD) {
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
    if (ws->flags & WS_READ_PAUSED) {
      return;
    }
    ws_read(ws);
  }
}

/* ---- plain HTTP --------------------------------------------------------- */

/* Returns 1 if the request wants the connection closed after the answer. */
static int wants_close(const herald_request *req) {
  herald_str v;
  if (herald_header_find(req->headers, req->nheaders, "connection", &v)) {
    size_t pos = 0;
    herald_str tok;
    while (herald_list_next(v, &pos, &tok)) {
      if (tok.len == 5 && strncasecmp(tok.ptr, "close", 5) == 0) {
        return 1;
      }
      if (tok.len == 10 && strncasecmp(tok.ptr, "keep-alive", 10) == 0) {
        return 0;
      }
    }
  }
  return req->version_minor == 0;
}

/* The plain-HTTP handler of the connection's owner (a server's); 0 when
 * there is none. */
static int ws_http_handler(herald_ws *ws, herald_http_fn *fn, void **ud) {
  ws_cold *k = ws->cold;
  return k && k->owner && k->owner->http && k->owner->http(ws, fn, ud);
}

/* Calls the handler (ws_on_http_request made sure there is one). */
static void ws_call_http(herald_ws *ws, const herald_request *req,
                         const uint8_t *body, size_t bodylen) {
  herald_http_fn fn = NULL;
  void *ud = NULL;
  (void)ws_http_handler(ws, &fn, &ud);
  herald_http *h = calloc(1, sizeof(*h));
  if (h == NULL) {
    herald_conn_respond(ws->conn, 503, NULL, 0, NULL, 0, 0);
    return;
  }
  h->ws = ws;
  h->keep_alive = !wants_close(req);
  ws->cold->http = h;
  h->in_call = 1;
  fn(h, req, body, bodylen, ud);
  h->in_call = 0;
  if (h->ended) {
    free(h); /* herald_http_end() ran inside the handler */
    return;
  }
  if (h->streaming) {
    return; /* h lives until herald_http_end() */
  }
  if (h->responded) {
    free(h);
  } else if (ws->cold && ws->cold->http == h) {
    h->responded = -1; /* answered later: herald_http_respond frees it */
    ws->flags |= WS_READ_PAUSED;
    ws_update_events(ws);
  } else {
    /* The connection died inside the handler. */
    h->responded = -1;
  }
}

/* A plain request arrived; its body (Content-Length bytes) follows at
 * buf[0..avail). Returns the body bytes consumed, or -1 to stop processing
 * (the rest of the input stays for later). */
static long ws_on_http_request(herald_ws *ws, const herald_request *req,
                               uint8_t *buf, size_t avail) {
  herald_http_fn fn = NULL;
  void *ud = NULL;
  if (!ws_http_handler(ws, &fn, &ud)) {
    static const char msg[] = "this endpoint speaks WebSocket only\n";
    herald_header h = {{"Upgrade", 7}, {"websocket", 9}};
    herald_conn_respond(ws->conn, 426, &h, 1, msg, sizeof(msg) - 1, 0);
    return -1;
  }
  /* The head parser has already refused every framing but one valid
   * Content-Length (RFC 9112 6.3: repeated or invalid Content-Length,
   * Transfer-Encoding), so the body is exactly content_length bytes, or
   * none when it is absent. The check below only guards that contract. */
  uint64_t clen = 0;
  if (req->content_length.len > 0 &&
      herald_http_content_length(req->content_length, &clen) != 0) {
    static const char msg[] = "invalid Content-Length\n";
    herald_conn_respond(ws->conn, 400, NULL, 0, msg, sizeof(msg) - 1, 0);
    return -1;
  }
  if (clen > ws->limits->max_http_body) {
    static const char msg[] = "request body too large\n";
    herald_conn_respond(ws->conn, 413, NULL, 0, msg, sizeof(msg) - 1, 0);
    return -1;
  }
  if (clen <= avail) {
    ws_call_http(ws, req, buf, (size_t)clen);
    return (long)clen;
  }
  /* The body spans reads: keep head and body together in one buffer, and
   * parse the head again from there once the body is complete. */
  size_t head = req->head_len;
  ws_cold *k = ws->cold;
  k->body = malloc(head + (size_t)clen);
  if (k->body == NULL) {
    herald_conn_respond(ws->conn, 503, NULL, 0, NULL, 0, 0);
    return -1;
  }
  memcpy(k->body, buf - head, head + avail);
  k->body_len = head + avail;
  k->body_need = head + (size_t)clen;
  return (long)avail;
}

/* The body is complete in cold->body: replay the head, call the handler. */
static void ws_body_complete(herald_ws *ws) {
  herald_event ev;
  ws_cold *k = ws->cold;
  uint8_t *body = k->body;
  size_t total = k->body_need;
  k->body = NULL;
  k->body_len = k->body_need = 0;
  if (herald_conn_reset(ws->conn) == 0 &&
      herald_conn_recv(ws->conn, body, total, &ev) > 0 &&
      ev.type == HERALD_EV_REQUEST) {
    size_t head = ev.request->head_len;
    ws_call_http(ws, ev.request, body + head, total - head);
  }
  free(body);
}

/* ---- events ------------------------------------------------------------- */

static void ws_on_upgrade(herald_ws *ws, const herald_request *req) {
  void *ud = NULL;
  ws_cold *k = ws->cold;
  const herald_ws_callbacks *cb = k && k->owner && k->owner->route
                                      ? k->owner->route(ws, req->path, &ud)
                                      : NULL;
  if (cb == NULL) {
    herald_conn_reject(ws->conn, 404, "no WebSocket endpoint at this path",
                       NULL, 0);
    return;
  }
  ws->cb = cb;
  ws->ud = ud;
  herald_accept acc = {0};
  int status = cb->on_upgrade ? cb->on_upgrade(ws, req, &acc, ud) : 0;
  if (status != 0) {
    if (status < 400 || status > 599) {
      status = 403;
    }
    herald_conn_reject(ws->conn, status, NULL, NULL, 0);
    return;
  }
  if (herald_conn_accept(ws->conn, &acc) != 0) {
    herald_conn_reject(ws->conn, 500, "could not accept", NULL, 0);
    return;
  }
  if (acc.subprotocol) {
    ws->cold->subprotocol = strdup(acc.subprotocol);
  }
  if (cb->on_chunk) {
    herald_conn_set_streaming(ws->conn, 1);
  }
  ws->flags |= WS_OPEN | WS_TRIM;
  ws->ping_sent_at = (uint32_t)herald__now(ws->loop);
  ws_arm_open_timers(ws);
  if (cb->on_open) {
    cb->on_open(ws, ud);
  }
}

static void ws_on_ping(herald_ws *ws, const herald_event *ev) {
  uint16_t sec = (uint16_t)(herald__now(ws->loop) / 1000);
  if (sec != ws->ping_window) {
    ws->ping_window = sec;
    ws->pings_in_window = 0;
  }
  if (ws->pings_in_window < UINT16_MAX) {
    ws->pings_in_window++;
  }
  if (ws->limits->max_pings_per_sec &&
      ws->pings_in_window > ws->limits->max_pings_per_sec) {
    herald__ws_record_error(ws, "ping flood");
    herald_ws_close(ws, HERALD_CLOSE_POLICY, "ping flood", 10);
    return;
  }
  if (ws->cb->on_ping) {
    ws->cb->on_ping(ws, ev->data, ev->len, ws->ud);
  }
}

static void ws_on_close_frame(herald_ws *ws, const herald_event *ev) {
  ws->close_code = ev->code;
  ws->flags |= WS_CLOSE_REMOTE;
  if (ev->len > 0) {
    ws_cold *k = herald__ws_cold(ws);
    /* Out of memory, on_close reports no reason. */
    if (k && k->close_reason == NULL && (k->close_reason = malloc(ev->len))) {
      memcpy(k->close_reason, ev->data, ev->len);
      k->close_reason_len = ev->len;
    }
  }
}

static void ws_dispatch(herald_ws *ws, const herald_event *ev) {
  switch (ev->type) {
  case HERALD_EV_OPEN:
    ws->flags |= WS_OPEN | WS_TRIM;
    ws->ping_sent_at = (uint32_t)herald__now(ws->loop);
    if (herald_conn_state(ws->conn) == HERALD_STATE_OPEN) {
      ws_arm_open_timers(ws);
    }
    if (ev->response->protocol.len) {
      ws->cold->subprotocol =
          strndup(ev->response->protocol.ptr, ev->response->protocol.len);
    }
    if (ws->cb->on_chunk) {
      herald_conn_set_streaming(ws->conn, 1);
    }
    if (ws->cb->on_open) {
      ws->cb->on_open(ws, ws->ud);
    }
    break;
  case HERALD_EV_TEXT:
  case HERALD_EV_BINARY: {
    herald_opcode op =
        ev->type == HERALD_EV_TEXT ? HERALD_OP_TEXT : HERALD_OP_BINARY;
    if (ws->cb->on_chunk) {
      ws->cb->on_chunk(ws, op, ev->data, ev->len, ev->first, ev->fin, ws->ud);
    } else if (ws->cb->on_message) {
      ws->cb->on_message(ws, op, ev->data, ev->len, ws->ud);
    }
    break;
  }
  case HERALD_EV_PING:
    ws_on_ping(ws, ev);
    break;
  case HERALD_EV_PONG:
    if (ws->flags & WS_PING_SENT) {
      ws->flags &= (uint16_t)~WS_PING_SENT;
      ws->ping_sent_at = (uint32_t)herald__now(ws->loop);
      ws_arm_open_timers(ws);
    }
    if (ws->cb->on_pong) {
      ws->cb->on_pong(ws, ev->data, ev->len, ws->ud);
    }
    break;
  case HERALD_EV_CLOSE:
    ws_on_close_frame(ws, ev);
    break;
  default:
    break;
  }
}

/* Feeds buf[0..len) to the core and delivers the events. What the core
 * leaves unconsumed is kept as the tail for the next read. */
void herald__ws_process(herald_ws *ws, uint8_t *buf, size_t len) {
  size_t off = 0;
  while (!(ws->flags & (WS_DEAD | WS_READ_PAUSED))) {
    ws_cold *k = ws->cold;
    if (k && k->body) {
      size_t take = k->body_need - k->body_len;
      if (take > len - off) {
        take = len - off;
      }
      memcpy(k->body + k->body_len, buf + off, take);
      k->body_len += take;
      off += take;
      if (k->body_len < k->body_need) {
        break;
      }
      ws_body_complete(ws);
      continue;
    }
    herald_event ev;
    int rv = herald_conn_recv(ws->conn, buf + off, len - off, &ev);
    if (rv < 0) {
      /* The core queued the answer (close frame or HTTP error); flushing
       * it ends the connection. */
      herald__ws_record_error(ws, herald_conn_error_reason(ws->conn));
      if (ws->close_code == 0) {
        uint16_t code = herald_err_close_code(rv);
        ws->close_code = code ? code : HERALD_CLOSE_ABNORMAL;
      }
      if (herald_conn_output_size(ws->conn) == 0) {
        herald__ws_abort(ws, herald_conn_error_reason(ws->conn));
      } else {
        uint32_t grace = ws->limits->close_timeout_ms;
        herald__wheel_set(ws, herald__now(ws->loop) + (grace ? grace : 1000));
      }
      off = len;
      break;
    }
    off += (size_t)rv;
    if (ev.type == HERALD_EV_NONE) {
      break;
    }
    if (ev.type == HERALD_EV_REQUEST) {
      if (ev.request->websocket) {
        ws_on_upgrade(ws, ev.request);
      } else {
        long used = ws_on_http_request(ws, ev.request, buf + off, len - off);
        if (used < 0) {
          off = len; /* refused with Connection: close */
          break;
        }
        off += (size_t)used;
        if (!(ws->flags & WS_READ_PAUSED) && !ws->cold->body &&
            herald_conn_state(ws->conn) == HERALD_STATE_CONNECTING &&
            ws->limits->handshake_timeout_ms) {
          /* Keep-alive: the next request has the same deadline. */
          herald__wheel_set(ws, herald__now(ws->loop) +
                                    ws->limits->handshake_timeout_ms);
        }
      }
      continue;
    }
    ws_dispatch(ws, &ev);
  }
  if (!(ws->flags & WS_DEAD) && ws_keep_tail(ws, buf + off, len - off) != 0) {
    herald__ws_abort(ws, "out of memory");
  }
}

/* Continues a connection whose reading was paused (an HTTP answer given
 * later, herald_ws_resume_read): process the input kept meanwhile, then
 * what TLS still holds decrypted or not; the socket is read again when
 * epoll says so. */
static void ws_resume(herald_ws *ws) {
  ws->flags &= (uint16_t)~WS_READ_PAUSED;
  ws_update_events(ws);
  if (ws->cold && ws->cold->tail_len && !ws->tls) {
    uint8_t *buf = ws->loop->rbuf;
    size_t n = ws_copy_tail(ws, buf);
    ws->cold->tail_len = 0;
    herald__ws_process(ws, buf, n);
  } else if (ws->tls) {
    /* The drain starts with the kept plaintext, then decrypts the rest. */
    int r = ws_tls_drain(ws);
    if (r < 0) {
      return;
    }
    if (r == 1 && !(ws->flags & WS_DEAD)) {
      ws_on_eof(ws);
      return;
    }
  }
  if (!(ws->flags & WS_DEAD)) {
    herald__ws_flush(ws);
  }
}

HERALD_API int herald_http_respond(herald_http *h, int status,
                                   const herald_header *headers,
                                   size_t nheaders, const void *body,
                                   size_t bodylen) {
  if (h->responded > 0) {
    return HERALD_ERR_BAD_STATE;
  }
  int later = h->responded < 0;
  herald_ws *ws = h->ws;
  if (ws == NULL) {
    free(h);
    return 0;
  }
  int rv = herald_conn_respond(ws->conn, status, headers, nheaders, body,
                               bodylen, h->keep_alive);
  if (rv != 0) {
    return rv;
  }
  ws->cold->http = NULL;
  herald__mark_dirty(ws);
  if (later) {
    free(h);
    ws_mark_resume(ws);
  } else {
    h->responded = 1;
  }
  return 0;
}

HERALD_API void herald_ws_pause_read(herald_ws *ws) {
  /* An HTTP exchange uses the same flag for its own pause (cold->http). */
  if ((ws->flags & (WS_DEAD | WS_SHUTDOWN | WS_READ_PAUSED)) ||
      (ws->cold && ws->cold->http)) {
    return;
  }
  ws->flags |= WS_READ_PAUSED;
  ws_update_events(ws);
}

HERALD_API void herald_ws_resume_read(herald_ws *ws) {
  if ((ws->flags & WS_DEAD) || !(ws->flags & WS_READ_PAUSED) ||
      (ws->cold && ws->cold->http)) {
    return;
  }
  ws_mark_resume(ws);
}

HERALD_API void herald_ws_set_data(herald_ws *ws, void *data) {
  ws->data = data;
}

HERALD_API void *herald_ws_data(const herald_ws *ws) {
  return ws->data;
}

HERALD_API herald_loop *herald_ws_loop(const herald_ws *ws) {
  return ws->loop;
}

HERALD_API const char *herald_ws_subprotocol(const herald_ws *ws) {
  return ws->cold && ws->cold->subprotocol ? ws->cold->subprotocol : "";
}

/* Formatted on demand: an idle connection does not carry 48 bytes of text
 * for a call most applications never make. */
HERALD_API const char *herald_ws_peer(const herald_ws *ws) {
  static _Thread_local char text[64];
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  char ip[INET6_ADDRSTRLEN] = "?";
  text[0] = 0;
  if (ws->io.fd < 0 || getpeername(ws->io.fd, (struct sockaddr *)&ss, &len)) {
    return text;
  }
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, sizeof(ip));
    snprintf(text, sizeof(text), "%s:%d", ip, ntohs(a->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, ip, sizeof(ip));
    snprintf(text, sizeof(text), "[%s]:%d", ip, ntohs(a->sin6_port));
  }
  return text;
}

/* ---- streamed HTTP responses -------------------------------------------- */

HERALD_API int herald_http_stream(herald_http *h, int status,
                                  const herald_header *headers, size_t nheaders,
                                  void (*on_gone)(herald_http *h, void *ud),
                                  void *ud) {
  if (h->responded > 0 || h->streaming) {
    return HERALD_ERR_BAD_STATE;
  }
  herald_ws *ws = h->ws;
  if (ws == NULL) {
    return HERALD_ERR_CLOSED;
  }
  int rv = herald_conn_stream_start(ws->conn, status, headers, nheaders);
  if (rv != 0) {
    return rv;
  }
  int later = h->responded < 0;
  h->streaming = 1;
  h->responded = 1;
  h->on_gone = on_gone;
  h->gone_ud = ud;
  /* The stream has no deadline of its own: the handshake timer must not cut
   * it. Keepalive is the application's (SSE comments). */
  herald__wheel_set(ws, 0);
  if (later) {
    ws_mark_resume(ws);
  }
  herald__mark_dirty(ws);
  return 0;
}

HERALD_API int herald_http_write(herald_http *h, const void *data, size_t len) {
  if (!h->streaming) {
    return HERALD_ERR_BAD_STATE;
  }
  herald_ws *ws = h->ws;
  if (ws == NULL || (ws->flags & WS_DEAD)) {
    return HERALD_ERR_CLOSED;
  }
  size_t buffered = herald_ws_buffered(ws);
  if (buffered + len > ws->limits->send_hard_cap) {
    return HERALD_SEND_DROPPED;
  }
  int rv = herald_conn_stream_write(ws->conn, data, len);
  if (rv != 0) {
    return rv;
  }
  herald__mark_dirty(ws);
  return buffered + len > ws->limits->send_high_water ? HERALD_SEND_BACKPRESSURE
                                                      : HERALD_SEND_OK;
}

HERALD_API void herald_http_end(herald_http *h) {
  herald_ws *ws = h->ws;
  if (ws != NULL && h->streaming) {
    ws->cold->http = NULL;
    if (herald_conn_stream_end(ws->conn) == 0) {
      herald__mark_dirty(ws);
      uint32_t grace = ws->limits->close_timeout_ms;
      herald__wheel_set(ws, herald__now(ws->loop) + (grace ? grace : 1000));
    }
  } else if (ws != NULL) {
    ws->cold->http = NULL;
  }
  h->ws = NULL;
  if (h->in_call) {
    h->ended = 1; /* freed when the handler returns */
    return;
  }
  free(h);
}
