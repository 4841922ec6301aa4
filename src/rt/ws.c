/*
 * ws.c - the life of a connection on a loop: made and started, bytes from
 * the socket into the core, the core's events into callbacks, the core's
 * output into one writev, its timers, reading paused and resumed, and its
 * end in the right order.
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
 * What the application sends is queued in the core by ws_send.c; what the
 * core makes of the input (events into callbacks) is ws_event.c's; a
 * request that is not an upgrade is ws_http.c's.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rt/internal.h"
#include "rt/tls.h"

#define MAX_IOV 64

static void ws_finish(herald_ws *ws);
static void ws_ready(herald_ws *ws, uint32_t events);
static void ws_recv(herald_ws *ws, uint8_t *data, long res);
static void ws_recv_placed(herald_ws *ws, size_t n);
static void ws_feed(herald_ws *ws, uint8_t *data, size_t n);
static void ws_timer(herald_ws *ws, uint64_t now);
static void ws_resume(herald_ws *ws);
static void ws_free(herald_ws *ws);
static void ws_write_failed(herald_ws *ws);

/* How the loop reaches its connections (loop_conn_ops). */
static const loop_conn_ops ws_loop_ops = {
    .ready = ws_ready,
    .recv = ws_recv,
    .recv_placed = ws_recv_placed,
    .write_failed = ws_write_failed,
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
                          const ws_endpoint *ep) {
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
  ws->ep = ep;
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
  if (ws->ep->limits->handshake_timeout_ms) {
    herald__wheel_set(ws, now + ws->ep->limits->handshake_timeout_ms);
  }
}

void herald__ws_mark_resume(herald_ws *ws) {
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
    herald__ws_http_gone(ws);
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
  if (ws->ep->cb.on_close &&
      ((ws->flags & WS_OPEN) || (ws->flags & WS_CLIENT))) {
    herald_close_info info = {0};
    info.code = ws->close_code ? ws->close_code : HERALD_CLOSE_ABNORMAL;
    info.reason = k && k->close_reason ? k->close_reason : "";
    info.reasonlen = k ? k->close_reason_len : 0;
    info.remote = (ws->flags & WS_CLOSE_REMOTE) != 0;
    info.error = k ? k->error : NULL;
    ws->ep->cb.on_close(ws, &info, ws->ep->ud);
  }
  if (k && k->owner && k->owner->finished) {
    /* A client's endpoint lives in its connect state, and its core config
     * too: both go at the reap, after the core connection. No callback runs
     * after on_close: every path to one stops at WS_DEAD. */
    k->owner->finished(ws);
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
  herald__ws_update_events(ws);
  uint32_t grace = ws->ep->limits->close_timeout_ms;
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
  } else if (ws->loop->ur && herald__uring_send(ws) == 0) {
    /* Sent through the ring with the next submit (or after the send in
     * flight): the kernel waits for room itself, no POLLOUT needed. */
    ws->flags &= (uint16_t)~WS_WANT_WRITE;
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
       * process with SIGPIPE. One span (a reply, a burst of small frames
       * merged) goes with send(), which the kernel takes without copying
       * in a message header and an iovec array. */
      ssize_t n;
      if (cnt == 1) {
        n = herald__sys_send(ws->io.fd, iov[0].iov_base, iov[0].iov_len);
      } else {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        n = herald__sys_sendmsg(ws->io.fd, &msg);
      }
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
  herald__ws_update_events(ws);
  if ((ws->flags & WS_TRIM) && herald_conn_output_size(ws->conn) == 0) {
    /* The handshake is written: a connection that now sits idle keeps no
     * buffers. Busy ones allocate again on their next message. */
    ws->flags &= (uint16_t)~WS_TRIM;
    herald_conn_trim(ws->conn);
    ws_trim_cold(ws);
  }
  if ((ws->flags & WS_BACKPRESSURE) &&
      herald_conn_output_size(ws->conn) <= ws->ep->limits->send_low_water) {
    ws->flags &= (uint16_t)~WS_BACKPRESSURE;
    if (ws->ep->cb.on_drain && (ws->flags & WS_OPEN)) {
      ws->ep->cb.on_drain(ws, ws->ep->ud);
    }
  }
  if (!(ws->flags & WS_DEAD) && herald_conn_done(ws->conn) &&
      (ws->tls == NULL || herald__tls_pending(ws) == 0) &&
      !(ws->io.armed & IO_SENDING)) {
    ws_shutdown_write(ws);
  }
}

static void ws_write_failed(herald_ws *ws) {
  herald__ws_abort(ws, "write failed");
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
void herald__ws_arm_timers(herald_ws *ws) {
  const herald_rt_limits *l = ws->ep->limits;
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
  const herald_rt_limits *l = ws->ep->limits;
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
  herald__ws_arm_timers(ws);
}

/* ---- reading ------------------------------------------------------------ */

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
 * ciphertext or the connection pauses. Returns 0, 1 at close_notify or the
 * peer's FIN (EOF), or -1 after aborting. Also continues a resumed
 * connection: plaintext kept by the pause goes first, and records that
 * arrived meanwhile are still in TLS's read buffer or the socket.
 * Plaintext goes in the first half of the loop's read buffer (the last
 * TLS_RECORD bytes of the second are herald__tls_flush's), record after
 * record while a whole one fits, and is processed in one call.
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
    size_t fill = have, n = 0;
    const char *why = NULL;
    int r;
    do {
      r = herald__tls_decrypt(ws, buf + fill, cap - fill, &n, &why);
      fill += n;
    } while (r == 0 && n > 0 && cap - fill >= HERALD_TLS_RECORD_MAX);
    if (r < 0) {
      herald__ws_abort(ws, why);
      return -1;
    }
    if (fill == have) {
      if (have) {
        k->tail_len = have; /* still in k->tail */
      }
      return r; /* 0: TLS needs more ciphertext; 1: EOF */
    }
    herald__ws_process(ws, buf, fill);
    if (ws->flags & (WS_DEAD | WS_READ_PAUSED)) {
      return 0;
    }
    if (r == 1 || n == 0) {
      return r; /* EOF after the last records; or TLS needs more */
    }
  }
}

static void ws_read(herald_ws *ws) {
  uint8_t *buf = ws->loop->rbuf;
  if (ws->flags & WS_SHUTDOWN) {
    /* Lingering: discard until the peer's FIN. */
    for (;;) {
      ssize_t n = herald__sys_read(ws->io.fd, buf, READ_BUFFER_SIZE);
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
      const char *why = NULL;
      int r = herald__tls_read(ws, &why);
      if (r == 2) { /* handshake done: read and decrypt */
        r = ws_tls_drain(ws);
      }
      if (herald__tls_round_end(ws) != 0 && r >= 0) {
        r = -1;
        why = "out of memory";
      }
      if (r < 0) {
        if (!(ws->flags & WS_DEAD)) {
          herald__ws_abort(ws, why);
        }
        return;
      }
      size_t got = herald__tls_received(ws);
      if (got) {
        ws->last_rx = (uint32_t)herald__now(ws->loop);
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
    /* The rest of a large frame being reassembled goes straight into the
     * message buffer, what follows it into the read buffer: one readv, no
     * copy of the payload (with input kept from before, the core wants
     * that first: the plain way). */
    size_t direct = 0;
    uint8_t *place = have == 0 && ws->io.big_input
                         ? herald_conn_recv_room(ws->conn, &direct)
                         : NULL;
    struct iovec iov[2] = {{place, direct},
                           {buf + have, READ_BUFFER_SIZE - have}};
    ssize_t n;
    do {
      n = place != NULL
              ? herald__sys_readv(ws->io.fd, iov, 2)
              : herald__sys_read(ws->io.fd, iov[1].iov_base, iov[1].iov_len);
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
    /* Small reads (requests, short messages) do not pay for asking. */
    ws->io.big_input = (size_t)n >= READ_PLACE_HINT;
    size_t placed = (size_t)n < direct ? (size_t)n : direct;
    if (placed) {
      herald__ws_process_placed(ws, placed);
    }
    if ((size_t)n > placed) {
      herald__ws_process(ws, buf, have + (size_t)n - placed);
    }
    if (!(ws->flags & WS_DEAD)) {
      herald__ws_flush(ws);
    }
    ws->loop->reading = NULL;
    /* Before the buffer is read into again: copy what is left of payloads
     * the core borrowed from it. */
    if (!(ws->flags & WS_DEAD) && herald_conn_output_own(ws->conn) != 0) {
      herald__ws_abort(ws, "out of memory");
    }
    if (!ws_read_again(ws, (size_t)n, direct + READ_BUFFER_SIZE - have,
                       &total)) {
      return;
    }
  }
}

/* Processes input in[0..len) read by the caller, which stays valid until
 * the call returns, then writes what it made: the round of ws_read after
 * its read. */
static void ws_take_input(herald_ws *ws, uint8_t *in, size_t len) {
  herald_loop *loop = ws->loop;
  loop->reading = ws;
  herald__ws_process(ws, in, len);
  if (!(ws->flags & WS_DEAD)) {
    herald__ws_flush(ws);
  }
  loop->reading = NULL;
  if (!(ws->flags & WS_DEAD) && herald_conn_output_own(ws->conn) != 0) {
    herald__ws_abort(ws, "out of memory");
  }
}

/* Adds data[0..len) after the input kept for later (reading is paused). */
static int ws_append_tail(herald_ws *ws, const uint8_t *data, size_t len) {
  ws_cold *k = herald__ws_cold(ws);
  if (k == NULL) {
    return -1;
  }
  if (k->tail_len + len > k->tail_cap) {
    uint8_t *t = realloc(k->tail, k->tail_len + len);
    if (t == NULL) {
      return -1;
    }
    k->tail = t;
    k->tail_cap = k->tail_len + len;
  }
  memcpy(k->tail + k->tail_len, data, len);
  k->tail_len += len;
  return 0;
}

/* io_uring (loop_conn_ops.recv): a receive of a plain connection completed
 * with res bytes at data, the peer's FIN (0), or an error. The bytes are
 * processed where they lie unless input is kept from before; then they
 * join it in the read buffer. Bytes that arrive after reading was paused
 * (before the receive's cancel took effect) are kept for the resume. */
static void ws_recv(herald_ws *ws, uint8_t *data, long res) {
  if (res <= 0) {
    if (res == 0 && !(ws->flags & WS_SHUTDOWN)) {
      ws_on_eof(ws);
    } else if (res == 0) {
      ws_finish(ws); /* the FIN the lingering close waited for */
    } else {
      herald__ws_abort(ws, (ws->flags & WS_SHUTDOWN) ? NULL : "read failed");
    }
    return;
  }
  size_t n = (size_t)res;
  if (ws->flags & WS_SHUTDOWN) {
    return; /* lingering: discarded */
  }
  if (ws->flags & WS_READ_PAUSED) {
    if (ws_append_tail(ws, data, n) != 0) {
      herald__ws_abort(ws, "out of memory");
    }
    return;
  }
  ws->last_rx = (uint32_t)herald__now(ws->loop);
  ws_feed(ws, data, n);
}

/* io_uring (loop_conn_ops.recv_placed): n bytes of a large frame were
 * received straight into the room herald_conn_recv_room() gave (uring.c
 * asks for it when a receive ends mid-frame): processed where they lie, as
 * ws_read does after its readv. Processed even if reading was paused since
 * the receive was armed (the core must hear of them before any other input
 * call); only a lingering close discards them. */
static void ws_recv_placed(herald_ws *ws, size_t n) {
  if (ws->flags & WS_SHUTDOWN) {
    return;
  }
  herald_loop *loop = ws->loop;
  ws->last_rx = (uint32_t)herald__now(loop);
  loop->reading = ws;
  herald__ws_process_placed(ws, n);
  if (!(ws->flags & WS_DEAD)) {
    herald__ws_flush(ws);
  }
  loop->reading = NULL;
  if (!(ws->flags & WS_DEAD) && herald_conn_output_own(ws->conn) != 0) {
    herald__ws_abort(ws, "out of memory");
  }
}

/* Processes data[0..n), which is not the read buffer's and stays valid
 * until the call returns: where it lies when no input is kept from before,
 * else joined to that input in the read buffer, a buffer's worth at a time.
 * What a pause leaves unprocessed is kept. */
static void ws_feed(herald_ws *ws, uint8_t *data, size_t n) {
  herald_loop *loop = ws->loop;
  while (n > 0 && !(ws->flags & (WS_DEAD | WS_READ_PAUSED))) {
    if (ws->cold == NULL || ws->cold->tail_len == 0) {
      loop->rin = data;
      loop->rin_len = n;
      ws_take_input(ws, data, n);
      loop->rin = loop->rbuf;
      loop->rin_len = READ_BUFFER_SIZE;
      return;
    }
    uint8_t *buf = loop->rbuf;
    size_t have = ws_copy_tail(ws, buf);
    size_t take = READ_BUFFER_SIZE - have < n ? READ_BUFFER_SIZE - have : n;
    if (take == 0) {
      herald__ws_abort(ws, "input not consumed");
      return;
    }
    memcpy(buf + have, data, take);
    data += take;
    n -= take;
    ws_take_input(ws, buf, have + take);
  }
  if (n > 0 && !(ws->flags & WS_DEAD) && ws_append_tail(ws, data, n) != 0) {
    herald__ws_abort(ws, "out of memory");
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

/* Continues a connection whose reading was paused (an HTTP answer given
 * later, herald_ws_resume_read): process the input kept meanwhile, then
 * what TLS still holds decrypted or not; the socket is read again when
 * epoll says so. */
static void ws_resume(herald_ws *ws) {
  ws->flags &= (uint16_t)~WS_READ_PAUSED;
  herald__ws_update_events(ws);
  if (ws->cold && ws->cold->tail_len && !ws->tls) {
    /* The kept input, taken out of the cold part: with io_uring it may be
     * more than the read buffer holds. */
    ws_cold *k = ws->cold;
    uint8_t *kept = k->tail;
    size_t n = k->tail_len;
    k->tail = NULL;
    k->tail_len = k->tail_cap = 0;
    ws_feed(ws, kept, n);
    free(kept);
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

HERALD_API void herald_ws_pause_read(herald_ws *ws) {
  /* An HTTP exchange uses the same flag for its own pause (cold->http). */
  if ((ws->flags & (WS_DEAD | WS_SHUTDOWN | WS_READ_PAUSED)) ||
      (ws->cold && ws->cold->http)) {
    return;
  }
  ws->flags |= WS_READ_PAUSED;
  herald__ws_update_events(ws);
}

HERALD_API void herald_ws_resume_read(herald_ws *ws) {
  if ((ws->flags & WS_DEAD) || !(ws->flags & WS_READ_PAUSED) ||
      (ws->cold && ws->cold->http)) {
    return;
  }
  herald__ws_mark_resume(ws);
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
