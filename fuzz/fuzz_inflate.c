/* fuzz_inflate.c - libFuzzer target for the permessage-deflate receive path
 * (and, with one selector bit, a compress/decompress round trip).
 *
 * Byte 0 selects: bit 0 streaming delivery, bit 1 small limits (max message
 * 4 KiB, so the bomb checks fire often), bit 2 no context takeover for the
 * client's messages, bits 3-5 the client's window (8..15), bit 6 round-trip
 * mode, bit 7 chunked second run. In round-trip mode an odd input length
 * limits the client's compression budget to its zlib streams.
 *
 * Frame mode: the rest is a list of records [flags, len, len bytes]; each
 * becomes one masked client frame (flags: bits 0-1 opcode text, binary,
 * continuation or ping; bit 2 RSV1; bit 3 FIN clear), so the fuzzer writes
 * raw deflate data straight into compressed messages. The frames are fed to
 * a server that agreed permessage-deflate, once whole and once in small
 * reads; both runs must log the same events and the same error. Every
 * message must respect max_message_size, text must be valid UTF-8 (whole
 * mode), and the bytes the server allocates must stay within
 * max_message_size plus the zlib state, whatever the data inflates to.
 *
 * Round-trip mode: the rest is a message the client compresses and the
 * server must get back unchanged, sent whole, a third of it, and whole
 * again; bit 7 there puts the client's fast-engine threshold (igzip) at
 * half the input, so the engines take turns on one stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herald/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct counter {
  size_t live, peak;
} counter;

static void *c_malloc(size_t n, void *ud) {
  counter *k = ud;
  uint8_t *p = malloc(n + 16);
  if (p == NULL) {
    return NULL;
  }
  memcpy(p, &n, sizeof(n));
  k->live += n;
  k->peak = k->live > k->peak ? k->live : k->peak;
  return p + 16;
}

static void c_free(void *q, void *ud) {
  counter *k = ud;
  if (q != NULL) {
    size_t n;
    memcpy(&n, (uint8_t *)q - 16, sizeof(n));
    k->live -= n;
    free((uint8_t *)q - 16);
  }
}

static void *c_realloc(void *q, size_t n, void *ud) {
  counter *k = ud;
  if (q == NULL) {
    return c_malloc(n, ud);
  }
  size_t old;
  memcpy(&old, (uint8_t *)q - 16, sizeof(old));
  uint8_t *p = realloc((uint8_t *)q - 16, n + 16);
  if (p == NULL) {
    return NULL;
  }
  memcpy(p, &n, sizeof(n));
  k->live = k->live - old + n;
  k->peak = k->live > k->peak ? k->live : k->peak;
  return p + 16;
}

static void drain_into(herald_conn *c, uint8_t **buf, size_t *len) {
  struct iovec iov[16];
  int n;
  *len = 0;
  *buf = NULL;
  while ((n = herald_conn_output(c, iov, 16)) > 0) {
    size_t got = 0;
    for (int i = 0; i < n; i++) {
      *buf = realloc(*buf, *len + got + iov[i].iov_len + 1);
      memcpy(*buf + *len + got, iov[i].iov_base, iov[i].iov_len);
      got += iov[i].iov_len;
    }
    herald_conn_output_consumed(c, got);
    *len += got;
  }
}

static void open_pair(herald_conn *srv, herald_conn *cli) {
  herald_client_opts o = {.host = "fuzz.example"};
  if (herald_conn_client_start(cli, &o) != 0) {
    abort();
  }
  uint8_t *b;
  size_t n;
  herald_event ev;
  drain_into(cli, &b, &n);
  if (herald_conn_recv(srv, b, n, &ev) != (int)n ||
      ev.type != HERALD_EV_REQUEST || herald_conn_accept(srv, NULL) != 0) {
    abort();
  }
  free(b);
  drain_into(srv, &b, &n);
  if (herald_conn_recv(cli, b, n, &ev) != (int)n || ev.type != HERALD_EV_OPEN ||
      herald_conn_deflate(srv, NULL) != 1) {
    abort();
  }
  free(b);
}

/* FNV-1a over the events of a run: type, fin and payload bytes of whole
 * messages (chunks are hashed as one stream, so splits do not matter). */
typedef struct run {
  uint64_t h;  /* complete events */
  uint64_t mh; /* the message in progress: folded in at its end, since how
                  much of a failing message came out first depends on the
                  split */
  int err;
  size_t events;
} run;

static void hash_into(uint64_t *h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) {
    *h = (*h ^ b[i]) * 1099511628211u;
  }
}

static void hash(run *r, const void *p, size_t n) {
  hash_into(&r->h, p, n);
}

static void feed(const herald_config *scfg, const herald_config *ccfg,
                 const uint8_t *in, size_t n, size_t chunk, run *r,
                 const counter *k) {
  herald_conn *srv, *cli;
  if (herald_conn_new(&srv, scfg) != 0 || herald_conn_new(&cli, ccfg) != 0) {
    abort();
  }
  open_pair(srv, cli);
  size_t base = k->live;
  uint8_t *buf = malloc(n + 1);
  size_t have = 0, pos = 0;
  r->h = 14695981039346656037u;
  r->err = 0;
  while (pos < n && r->err == 0) {
    size_t take = n - pos < chunk ? n - pos : chunk;
    memcpy(buf + have, in + pos, take);
    have += take;
    pos += take;
    size_t off = 0;
    for (;;) {
      herald_event ev;
      int rv = herald_conn_recv(srv, buf + off, have - off, &ev);
      if (rv < 0) {
        r->err = rv;
        break;
      }
      off += (size_t)rv;
      if (ev.type == HERALD_EV_NONE) {
        break;
      }
      if (ev.type == HERALD_EV_TEXT || ev.type == HERALD_EV_BINARY) {
        if (ev.len > scfg->max_message_size) {
          abort();
        }
        if (!scfg->stream_messages && ev.type == HERALD_EV_TEXT &&
            !herald_utf8_valid(ev.data, ev.len)) {
          abort();
        }
        if (ev.first) {
          r->mh = 14695981039346656037u;
        }
        hash_into(&r->mh, ev.data, ev.len);
        if (ev.fin) {
          uint8_t t = (uint8_t)ev.type;
          hash(r, &r->mh, sizeof(r->mh));
          hash(r, &t, 1);
          r->events++;
        }
      } else {
        uint8_t t = (uint8_t)ev.type;
        hash(r, &t, 1);
        r->events++;
      }
    }
    memmove(buf, buf + off, have - off);
    have -= off;
    /* A bomb never makes the server hold much more than one message. */
    if (k->peak - base > scfg->max_message_size + (640u << 10)) {
      abort();
    }
  }
  free(buf);
  herald_conn_del(srv);
  herald_conn_del(cli);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) {
    return 0;
  }
  uint8_t sel = data[0];
  data++;
  size--;
  counter k = {0};
  herald_mem mem = {c_malloc, c_realloc, c_free, &k};
  herald_config scfg, ccfg;
  herald_config_init(&scfg, HERALD_ROLE_SERVER);
  herald_config_init(&ccfg, HERALD_ROLE_CLIENT);
  scfg.mem = &mem;
  scfg.deflate.enabled = ccfg.deflate.enabled = 1;
  scfg.deflate.threshold = ccfg.deflate.threshold = 0;
  scfg.stream_messages = sel & 1;
  scfg.max_message_size = (sel & 2) ? 4096 : 1 << 20;
  scfg.max_frame_size = 1 << 20;
  ccfg.deflate.client_no_context_takeover = (sel >> 2) & 1;
  ccfg.deflate.client_max_window_bits = 8 + ((sel >> 3) & 7);
  if ((sel & 0xc0) == 0xc0) {
    ccfg.deflate.fast_min_size = size / 2 > 0 ? size / 2 : 1;
  }

  if (sel & 0x40) {
    /* Round trip: what the client compresses, the server restores. The
     * client draws its compression state on a budget; with an odd input
     * length that budget has room for its zlib streams only (measured on a
     * first pair), so igzip is refused and zlib takes every message. */
    herald_budget *zb;
    uint64_t limit = 0;
    herald_conn *srv, *cli;
    if (size & 1) {
      if (herald_budget_new(&zb, 0, NULL) != 0) {
        abort();
      }
      ccfg.deflate.budget = zb;
      if (herald_conn_new(&srv, &scfg) != 0 || herald_conn_new(&cli, &ccfg)) {
        abort();
      }
      open_pair(srv, cli);
      limit = herald_budget_used(zb);
      herald_conn_del(srv);
      herald_conn_del(cli);
      herald_budget_del(zb);
    }
    if (herald_budget_new(&zb, limit, NULL) != 0) {
      abort();
    }
    ccfg.deflate.budget = zb;
    if (herald_conn_new(&srv, &scfg) != 0 || herald_conn_new(&cli, &ccfg)) {
      abort();
    }
    open_pair(srv, cli);
    /* The whole input, a third of it, the whole again: with bit 7 the
     * client's fast engine (igzip, where built) takes the whole ones and
     * zlib the third, so each continues the other's window. */
    for (int rep = 0; rep < 3; rep++) {
      size_t len = rep == 1 ? size / 3 : size;
      if (herald_conn_send(cli, HERALD_OP_BINARY, data, len, 0, NULL, NULL) !=
          0) {
        abort();
      }
      uint8_t *b;
      size_t n;
      drain_into(cli, &b, &n);
      size_t off = 0, got = 0;
      int done = 0;
      while (!done) {
        herald_event ev;
        int rv = herald_conn_recv(srv, b + off, n - off, &ev);
        if (rv < 0) {
          if (len <= scfg.max_message_size) {
            abort();
          }
          break;
        }
        off += (size_t)rv;
        if (ev.type == HERALD_EV_NONE) {
          abort();
        }
        if (got + ev.len > len || memcmp(data + got, ev.data, ev.len) != 0) {
          abort();
        }
        got += ev.len;
        done = ev.fin;
      }
      if (done && got != len) {
        abort();
      }
      free(b);
      if (!done) {
        break;
      }
      if (limit != 0 && herald_budget_used(zb) != limit) {
        abort(); /* igzip drew nothing past the limit */
      }
    }
    herald_conn_del(srv);
    herald_conn_del(cli);
    if (herald_budget_used(zb) != 0) {
      abort(); /* every byte drawn came back */
    }
    herald_budget_del(zb);
    return 0;
  }

  /* Frame mode: records become masked client frames. */
  static const uint8_t ops[4] = {HERALD_OP_TEXT, HERALD_OP_BINARY,
                                 HERALD_OP_CONT, HERALD_OP_PING};
  static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
  uint8_t *frames = malloc(size * 4 + 64); /* 2 record bytes: <= 8 */
  size_t flen = 0, pos = 0;
  while (pos + 2 <= size) {
    uint8_t fl = data[pos], len = data[pos + 1];
    pos += 2;
    if (len > size - pos) {
      len = (uint8_t)(size - pos);
    }
    uint8_t op = ops[fl & 3];
    unsigned rsv = (fl & 4) ? 0x40 : 0;
    int fin = op == HERALD_OP_PING || !(fl & 8);
    flen += herald_frame_header(frames + flen, (herald_opcode)op, fin, rsv, len,
                                key);
    for (size_t i = 0; i < len; i++) {
      frames[flen + i] = data[pos + i] ^ key[i & 3];
    }
    flen += len;
    pos += len;
  }
  /* A budget without a limit counts what unfinished messages hold: every
   * byte of it must come back. */
  herald_budget *budget;
  if (herald_budget_new(&budget, 0, NULL) != 0) {
    abort();
  }
  scfg.budget = budget;
  run whole = {0}, split = {0};
  feed(&scfg, &ccfg, frames, flen, flen ? flen : 1, &whole, &k);
  feed(&scfg, &ccfg, frames, flen, (sel & 0x80) ? 7 : 1, &split, &k);
  if (whole.h != split.h || whole.err != split.err ||
      whole.events != split.events || herald_budget_used(budget) != 0) {
    abort();
  }
  herald_budget_del(budget);
  if (k.live != 0) {
    abort();
  }
  free(frames);
  return 0;
}
