/* wsfeed.h - helpers for driving herald_conn in tests: build frames, feed
 * input in any chunk size the way a runtime would (keeping unconsumed bytes),
 * log events as text so that runs with different splits can be compared, and
 * connect a client and a server connection back to back. */
#ifndef HERALD_WSFEED_H
#define HERALD_WSFEED_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/core.h"

/* Builds one frame into out; returns its length. key NULL: unmasked. */
static size_t mkframe(uint8_t *out, int fin, unsigned rsv, unsigned op,
                      const void *payload, size_t len, const uint8_t *key) {
  size_t h = herald_frame_header(out, (herald_opcode)op, fin, rsv, len, key);
  const uint8_t *p = payload;
  for (size_t i = 0; i < len; i++) {
    out[h + i] = (uint8_t)(p[i] ^ (key ? key[i & 3] : 0));
  }
  return h + len;
}

static const uint8_t test_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A growable byte log. */
typedef struct tlog {
  char *s;
  size_t len, cap;
} tlog;

static void tlog_put(tlog *l, const char *p, size_t n) {
  if (l->len + n + 1 > l->cap) {
    size_t ncap = l->cap ? l->cap * 2 : 1024;
    while (ncap < l->len + n + 1) {
      ncap *= 2;
    }
    l->s = realloc(l->s, ncap);
    l->cap = ncap;
  }
  memcpy(l->s + l->len, p, n);
  l->len += n;
  l->s[l->len] = 0;
}

static void tlog_printf(tlog *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void tlog_printf(tlog *l, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  tlog_put(l, tmp, (size_t)n);
}

/* Describes payloads compactly: short ones verbatim (hex), long ones by
 * length and a checksum. */
static void tlog_data(tlog *l, const uint8_t *p, size_t n) {
  if (n <= 32) {
    for (size_t i = 0; i < n; i++) {
      tlog_printf(l, "%02x", p[i]);
    }
  } else {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
      h = (h ^ p[i]) * 16777619u;
    }
    tlog_printf(l, "len=%zu,fnv=%08x", n, h);
  }
}

/* State of one feeding run: data chunks of a streamed message are
 * reassembled here so that logs do not depend on how input was split. */
typedef struct feeder {
  tlog log;
  tlog msg;
  int in_msg;
  int err;
  int bad_first; /* a chunk had the wrong `first` flag */
  uint8_t *keep; /* input holding a pending request's spans */
} feeder;

static void log_event(feeder *f, const herald_event *ev) {
  switch (ev->type) {
  case HERALD_EV_TEXT:
  case HERALD_EV_BINARY:
    if (ev->first != !f->in_msg) {
      f->bad_first = 1;
    }
    f->in_msg = 1;
    tlog_put(&f->msg, (const char *)ev->data, ev->len);
    if (ev->fin) {
      tlog_printf(&f->log, "%s(", ev->type == HERALD_EV_TEXT ? "TEXT" : "BIN");
      tlog_data(&f->log, (const uint8_t *)f->msg.s, f->msg.len);
      tlog_printf(&f->log, ") ");
      f->msg.len = 0;
      f->in_msg = 0;
    }
    break;
  case HERALD_EV_PING:
  case HERALD_EV_PONG:
    tlog_printf(&f->log, "%s(", ev->type == HERALD_EV_PING ? "PING" : "PONG");
    tlog_data(&f->log, ev->data, ev->len);
    tlog_printf(&f->log, ") ");
    break;
  case HERALD_EV_CLOSE:
    tlog_printf(&f->log, "CLOSE(%u,", ev->code);
    tlog_data(&f->log, ev->data, ev->len);
    tlog_printf(&f->log, ") ");
    break;
  case HERALD_EV_REQUEST:
    tlog_printf(&f->log, "REQUEST(ws=%d) ", ev->request->websocket);
    break;
  case HERALD_EV_OPEN:
    tlog_printf(&f->log, "OPEN ");
    break;
  case HERALD_EV_NONE:
    break;
  }
}

/* Feeds in[0..n) to c in chunks of `chunk` bytes (0: whole), keeping the
 * unconsumed tail like a runtime's read buffer. Logs events and the error
 * ("ERR(name)") into f->log. Stops at the first error. */
static void feed(herald_conn *c, const uint8_t *in, size_t n, size_t chunk,
                 feeder *f) {
  uint8_t *buf = malloc(n + 1);
  size_t have = 0, pos = 0;
  if (chunk == 0) {
    chunk = n ? n : 1;
  }
  f->err = 0;
  while (pos < n || have > 0) {
    size_t take = n - pos < chunk ? n - pos : chunk;
    memcpy(buf + have, in + pos, take);
    have += take;
    pos += take;
    size_t off = 0;
    for (;;) {
      herald_event ev;
      int rv = herald_conn_recv(c, buf + off, have - off, &ev);
      if (rv < 0) {
        f->err = rv;
        tlog_printf(&f->log, "ERR(%s) ", herald_err_name(rv));
        free(buf);
        return;
      }
      off += (size_t)rv;
      if (ev.type == HERALD_EV_NONE) {
        break;
      }
      log_event(f, &ev);
      if (ev.type == HERALD_EV_REQUEST) {
        /* The request's spans point into buf: keep it until the test has
         * accepted or refused (feeder_free releases it). */
        free(f->keep);
        f->keep = buf;
        return;
      }
    }
    memmove(buf, buf + off, have - off);
    have -= off;
    if (take == 0) {
      break; /* no progress possible: the tail is incomplete */
    }
  }
  free(buf);
}

static void feeder_free(feeder *f) {
  free(f->log.s);
  free(f->msg.s);
  free(f->keep);
  memset(f, 0, sizeof(*f));
}

/* Copies all pending output of c into a malloc'd buffer and consumes it. */
static uint8_t *drain(herald_conn *c, size_t *len) {
  size_t cap = herald_conn_output_size(c) + 1;
  uint8_t *out = malloc(cap);
  size_t n = 0;
  for (;;) {
    struct iovec iov[16];
    int cnt = herald_conn_output(c, iov, 16);
    if (cnt == 0) {
      break;
    }
    size_t got = 0;
    for (int i = 0; i < cnt; i++) {
      if (n + got + iov[i].iov_len > cap) {
        cap = (n + got + iov[i].iov_len) * 2;
        out = realloc(out, cap);
      }
      memcpy(out + n + got, iov[i].iov_base, iov[i].iov_len);
      got += iov[i].iov_len;
    }
    herald_conn_output_consumed(c, got);
    n += got;
  }
  *len = n;
  return out;
}

#endif
