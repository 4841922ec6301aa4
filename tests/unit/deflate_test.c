/* deflate_test.c - permessage-deflate (RFC 7692): the RFC's examples,
 * negotiation in both roles, frame rules, inflate limits (a decompression
 * bomb with peak memory counted through herald_mem), corrupt data, round
 * trips for every parameter combination and window size, encode-once
 * broadcast, zlib and igzip continuing each other's stream, trimming, and a
 * failing-allocator sweep. Compressed inputs are
 * fed whole, one byte at a time and at every two-way split, in whole and
 * streaming delivery, and must give the same events. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "test.h"
#include "wsfeed.h"

/* ---- counting allocator ------------------------------------------------- */

/* Counts live bytes (and their peak), and fails the Nth allocation when
 * fail_at is set. Each block carries its size in a 16-byte prefix. */
typedef struct counter {
  size_t live, peak;
  long allocs;
  long fail_at; /* 0: never */
} counter;

static void *cnt_malloc(size_t n, void *ud) {
  counter *k = ud;
  if (k->fail_at && ++k->allocs == k->fail_at) {
    return NULL;
  }
  uint8_t *p = malloc(n + 16);
  if (p == NULL) {
    return NULL;
  }
  memcpy(p, &n, sizeof(n));
  k->live += n;
  if (k->live > k->peak) {
    k->peak = k->live;
  }
  return p + 16;
}

static void cnt_free(void *q, void *ud) {
  counter *k = ud;
  if (q == NULL) {
    return;
  }
  uint8_t *p = (uint8_t *)q - 16;
  size_t n;
  memcpy(&n, p, sizeof(n));
  k->live -= n;
  free(p);
}

static void *cnt_realloc(void *q, size_t n, void *ud) {
  counter *k = ud;
  if (q == NULL) {
    return cnt_malloc(n, ud);
  }
  if (k->fail_at && ++k->allocs == k->fail_at) {
    return NULL;
  }
  uint8_t *p = (uint8_t *)q - 16;
  size_t old;
  memcpy(&old, p, sizeof(old));
  uint8_t *np = realloc(p, n + 16);
  if (np == NULL) {
    return NULL;
  }
  memcpy(np, &n, sizeof(n));
  k->live = k->live - old + n;
  if (k->live > k->peak) {
    k->peak = k->live;
  }
  return np + 16;
}

/* ---- helpers ------------------------------------------------------------ */

static void dconfig(herald_config *cfg, herald_role role) {
  herald_config_init(cfg, role);
  cfg->deflate.enabled = 1;
  cfg->deflate.threshold = 0;
}

/* Raw deflate of p[0..n) with a sync flush, the 00 00 FF FF tail dropped,
 * into a malloc'd buffer. */
static uint8_t *zcomp(const void *p, size_t n, int bits, size_t *outlen) {
  z_stream z;
  memset(&z, 0, sizeof(z));
  CHECK_EQ(deflateInit2(&z, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  size_t cap = deflateBound(&z, n) + 64;
  uint8_t *out = malloc(cap);
  z.next_in = (Bytef *)(uintptr_t)p;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  CHECK_EQ(deflate(&z, Z_SYNC_FLUSH), Z_OK);
  *outlen = cap - z.avail_out - 4;
  deflateEnd(&z);
  return out;
}

/* Completes a handshake between fresh connections made from scfg/ccfg; the
 * server may add `extra` header lines to the request (client_start adds
 * its own offer when ccfg enables deflate). */
static void open_pair(const herald_config *scfg, const herald_config *ccfg,
                      herald_conn **srv, herald_conn **cli) {
  CHECK_EQ(herald_conn_new(srv, scfg), 0);
  CHECK_EQ(herald_conn_new(cli, ccfg), 0);
  herald_client_opts o = {.host = "example.com"};
  CHECK_EQ(herald_conn_client_start(*cli, &o), 0);
  feeder f = {0};
  size_t n;
  uint8_t *out = drain(*cli, &n);
  feed(*srv, out, n, 0, &f);
  free(out);
  CHECK(f.log.s && strstr(f.log.s, "REQUEST(ws=1)") != NULL);
  CHECK_EQ(herald_conn_accept(*srv, NULL), 0);
  out = drain(*srv, &n);
  feed(*cli, out, n, 0, &f);
  free(out);
  CHECK(f.log.s && strstr(f.log.s, "OPEN") != NULL);
  feeder_free(&f);
}

/* Feeds in[0..n) to c in two pieces cut at `cut` (the unconsumed tail kept
 * like a runtime would). */
static void feed_two(herald_conn *c, const uint8_t *in, size_t n, size_t cut,
                     feeder *f) {
  uint8_t *buf = malloc(n + 1);
  size_t have = 0, pos = 0;
  size_t parts[2] = {cut, n - cut};
  for (int k = 0; k < 2 && !f->err; k++) {
    memcpy(buf + have, in + pos, parts[k]);
    have += parts[k];
    pos += parts[k];
    size_t off = 0;
    for (;;) {
      herald_event ev;
      int rv = herald_conn_recv(c, buf + off, have - off, &ev);
      if (rv < 0) {
        f->err = rv;
        tlog_printf(&f->log, "ERR(%s) ", herald_err_name(rv));
        break;
      }
      off += (size_t)rv;
      if (ev.type == HERALD_EV_NONE) {
        break;
      }
      log_event(f, &ev);
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
  free(buf);
}

/*
 * Feeds in (frames as the peer of `role` sends them) to the `role` end of a
 * freshly opened pair with deflate agreed, whole, byte by byte and at every
 * split (inputs up to 400 bytes; three runs otherwise), in whole and
 * streaming delivery, and checks every run logs expect. Returns the number
 * of runs whose log differed.
 */
static void expect_deflate(herald_role role, const herald_config *base,
                           const uint8_t *in, size_t n, const char *expect) {
  for (int stream = 0; stream <= 1; stream++) {
    herald_config scfg, ccfg;
    dconfig(&scfg, HERALD_ROLE_SERVER);
    dconfig(&ccfg, HERALD_ROLE_CLIENT);
    herald_config *mine = role == HERALD_ROLE_SERVER ? &scfg : &ccfg;
    if (base) {
      herald_role r = mine->role;
      *mine = *base;
      mine->role = r;
    }
    mine->stream_messages = stream;
    size_t nsplits = n <= 400 ? n + 2 : 3;
    for (size_t s = 0; s < nsplits; s++) {
      herald_conn *srv, *cli;
      open_pair(&scfg, &ccfg, &srv, &cli);
      herald_conn *c = role == HERALD_ROLE_SERVER ? srv : cli;
      CHECK_EQ(herald_conn_deflate(c, NULL), 1);
      uint8_t *copy = malloc(n + 1);
      memcpy(copy, in, n);
      feeder f = {0};
      if (s == 0) {
        feed(c, copy, n, 0, &f);
      } else if (s == 1) {
        feed(c, copy, n, 1, &f);
      } else {
        feed_two(c, copy, n, s - 2 < n ? s - 2 : n / 2, &f);
      }
      const char *got = f.log.s ? f.log.s : "";
      if (strcmp(got, expect) != 0) {
        fprintf(stderr,
                "role=%d stream=%d split=%zu\n  got:    %s\n  expect: %s\n",
                role, stream, s, got, expect);
        CHECK(0);
      }
      CHECK(!f.bad_first);
      feeder_free(&f);
      free(copy);
      herald_conn_del(srv);
      herald_conn_del(cli);
    }
  }
}

/* The extension header value of a 101 (or "" if none). */
static void ext_of(const uint8_t *resp, size_t n, char *out, size_t cap) {
  out[0] = 0;
  const char *h = "Sec-WebSocket-Extensions: ";
  char *copy = malloc(n + 1);
  memcpy(copy, resp, n);
  copy[n] = 0;
  char *p = strstr(copy, h);
  if (p) {
    p += strlen(h);
    size_t len = strcspn(p, "\r");
    if (len >= cap) {
      len = cap - 1;
    }
    memcpy(out, p, len);
    out[len] = 0;
  }
  free(copy);
}

/* ---- RFC 7692 7.2.3 examples -------------------------------------------- */

static void test_rfc_examples(void) {
  /* 7.2.3.1: "Hello" compressed, one frame, and fragmented. */
  const uint8_t hello[] = {0xc1, 0x07, 0xf2, 0x48, 0xcd,
                           0xc9, 0xc9, 0x07, 0x00};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, hello, sizeof(hello),
                 "TEXT(48656c6c6f) ");
  const uint8_t frag[] = {0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80,
                          0x04, 0xc9, 0xc9, 0x07, 0x00};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, frag, sizeof(frag),
                 "TEXT(48656c6c6f) ");
  /* 7.2.3.2: the second "Hello" refers to the first through the shared
   * window. */
  const uint8_t shared[] = {0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
                            0x00, 0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, shared, sizeof(shared),
                 "TEXT(48656c6c6f) TEXT(48656c6c6f) ");
  /* 7.2.3.3: a block with no compression. */
  const uint8_t stored[] = {0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff,
                            0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, stored, sizeof(stored),
                 "TEXT(48656c6c6f) ");
  /* 7.2.3.4: a block with BFINAL set, then another message. */
  const uint8_t bfinal[] = {0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9,
                            0x07, 0x00, 0x00, 0xc1, 0x07, 0xf2, 0x48,
                            0xcd, 0xc9, 0xc9, 0x07, 0x00};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, bfinal, sizeof(bfinal),
                 "TEXT(48656c6c6f) TEXT(48656c6c6f) ");
  /* 7.2.3.5: two blocks in one message. */
  const uint8_t two[] = {0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00,
                         0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, two, sizeof(two),
                 "TEXT(48656c6c6f) ");
  /* 7.2.3.6: an empty message, compressed: a single 0x00. */
  const uint8_t empty[] = {0xc1, 0x01, 0x00};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, empty, sizeof(empty), "TEXT() ");
  /* An uncompressed message on a deflate connection, and a masked
   * compressed one to a server. */
  const uint8_t plain[] = {0x81, 0x02, 0x68, 0x69};
  expect_deflate(HERALD_ROLE_CLIENT, NULL, plain, sizeof(plain), "TEXT(6869) ");
  uint8_t m[32];
  size_t mn = mkframe(m, 1, 0x40, HERALD_OP_TEXT, hello + 2, 7, test_key);
  expect_deflate(HERALD_ROLE_SERVER, NULL, m, mn, "TEXT(48656c6c6f) ");
}

/* What our own compressor puts on the wire matches the RFC's bytes. */
static void test_rfc_send(void) {
  herald_config scfg, ccfg;
  dconfig(&scfg, HERALD_ROLE_SERVER);
  dconfig(&ccfg, HERALD_ROLE_CLIENT);
  scfg.deflate.level = 6;
  herald_conn *srv, *cli;
  open_pair(&scfg, &ccfg, &srv, &cli);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "Hello", 5, 0, NULL, NULL), 0);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "Hello", 5, 0, NULL, NULL), 0);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "", 0, 0, NULL, NULL), 0);
  size_t n;
  uint8_t *out = drain(srv, &n);
  const uint8_t want[] = {0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9,
                          0x07, 0x00, 0xc1, 0x05, 0xf2, 0x00, 0x11,
                          0x00, 0x00, 0xc1, 0x01, 0x00};
  CHECK_EQ(n, sizeof(want));
  CHECK_MEM(out, want, sizeof(want));
  feeder f = {0};
  feed(cli, out, n, 0, &f);
  CHECK(f.log.s &&
        strcmp(f.log.s, "TEXT(48656c6c6f) TEXT(48656c6c6f) TEXT() ") == 0);
  free(out);
  /* Opting out, and the threshold. */
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_BINARY, "Hello", 5,
                            HERALD_SEND_NO_COMPRESS, NULL, NULL),
           0);
  out = drain(srv, &n);
  CHECK_EQ(out[0], 0x82);
  free(out);
  feeder_free(&f);
  herald_conn_del(srv);
  herald_conn_del(cli);
  scfg.deflate.threshold = 6;
  open_pair(&scfg, &ccfg, &srv, &cli);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "Hello", 5, 0, NULL, NULL), 0);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "Hello!", 6, 0, NULL, NULL),
           0);
  out = drain(srv, &n);
  CHECK_EQ(out[0], 0x81);
  CHECK_EQ(out[7], 0xc1);
  free(out);
  /* Fragments go out uncompressed. */
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "Hello", 5, HERALD_SEND_MORE,
                            NULL, NULL),
           0);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "Hello!", 6, 0, NULL, NULL),
           0);
  out = drain(srv, &n);
  CHECK_EQ(out[0], 0x01);
  CHECK_EQ(out[7], 0x80);
  free(out);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "x", 1, 8, NULL, NULL),
           HERALD_ERR_INVALID_ARG);
  herald_conn_del(srv);
  herald_conn_del(cli);
}

/* ---- negotiation: server ------------------------------------------------ */

/* Runs a request with the given extra header lines against a server with
 * policy cfg and returns the extension it answered ("" if none) in out. */
static void server_answer(const herald_config *cfg, const char *lines,
                          char *out, size_t cap, herald_deflate_params *p) {
  char req[2048];
  int n = snprintf(req, sizeof(req),
                   "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s\r\n",
                   lines);
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, cfg), 0);
  herald_event ev;
  CHECK_EQ(herald_conn_recv(c, (uint8_t *)req, (size_t)n, &ev), n);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  CHECK_EQ(herald_conn_accept(c, NULL), 0);
  size_t len;
  uint8_t *resp = drain(c, &len);
  ext_of(resp, len, out, cap);
  int on = herald_conn_deflate(c, p);
  CHECK_EQ(on, out[0] != 0);
  free(resp);
  herald_conn_del(c);
}

typedef struct neg_case {
  const char *lines;  /* request header lines */
  const char *answer; /* expected Sec-WebSocket-Extensions, "" none */
} neg_case;

#define PMD "permessage-deflate"
#define EXT "Sec-WebSocket-Extensions: "

static void check_server_cases(const herald_config *cfg, const neg_case *tc,
                               size_t n) {
  for (size_t i = 0; i < n; i++) {
    char got[256];
    herald_deflate_params p;
    server_answer(cfg, tc[i].lines, got, sizeof(got), &p);
    if (strcmp(got, tc[i].answer) != 0) {
      fprintf(stderr, "offer %s\n  got:    '%s'\n  expect: '%s'\n", tc[i].lines,
              got, tc[i].answer);
      CHECK(0);
    }
  }
}

static void test_negotiate_server(void) {
  herald_config cfg;
  dconfig(&cfg, HERALD_ROLE_SERVER);
  static const neg_case basic[] = {
      {"", ""},
      {EXT PMD "\r\n", PMD},
      {EXT "PerMessage-Deflate\r\n", PMD},
      {EXT PMD "; client_max_window_bits\r\n", PMD},
      {EXT PMD "; client_max_window_bits=10\r\n",
       PMD "; client_max_window_bits=10"},
      {EXT PMD "; client_max_window_bits=\"12\"\r\n",
       PMD "; client_max_window_bits=12"},
      {EXT PMD "; server_max_window_bits=10\r\n",
       PMD "; server_max_window_bits=10"},
      {EXT PMD "; server_max_window_bits=15\r\n",
       PMD "; server_max_window_bits=15"},
      {EXT PMD "; server_no_context_takeover\r\n",
       PMD "; server_no_context_takeover"},
      {EXT PMD "; client_no_context_takeover\r\n",
       PMD "; client_no_context_takeover"},
      {EXT PMD ";server_no_context_takeover;client_no_context_takeover;"
               "server_max_window_bits=9;client_max_window_bits=9\r\n",
       PMD "; server_no_context_takeover; client_no_context_takeover; "
           "server_max_window_bits=9; client_max_window_bits=9"},
      /* zlib cannot compress with 8 bits: that offer is declined. */
      {EXT PMD "; server_max_window_bits=8\r\n", ""},
      {EXT PMD "; server_max_window_bits=8, " PMD "\r\n", PMD},
      {EXT PMD "; client_max_window_bits=8\r\n",
       PMD "; client_max_window_bits=8"},
      /* Invalid forms decline the offer. */
      {EXT PMD "; server_max_window_bits\r\n", ""},
      {EXT PMD "; server_max_window_bits=7\r\n", ""},
      {EXT PMD "; server_max_window_bits=16\r\n", ""},
      {EXT PMD "; server_max_window_bits=010\r\n", ""},
      {EXT PMD "; server_max_window_bits=1a\r\n", ""},
      {EXT PMD "; client_max_window_bits=0\r\n", ""},
      {EXT PMD "; client_max_window_bits=\"\"\r\n", ""},
      {EXT PMD "; server_no_context_takeover=1\r\n", ""},
      {EXT PMD "; client_no_context_takeover=\"x\"\r\n", ""},
      {EXT PMD "; server_no_context_takeover; server_no_context_takeover\r\n",
       ""},
      {EXT PMD "; client_max_window_bits; client_max_window_bits=10\r\n", ""},
      {EXT PMD "; x-unknown\r\n", ""},
      {EXT PMD "; server_max_window_bits=\"10\r\n", ""},
      {EXT PMD " junk\r\n", ""},
      /* Several offers: the first acceptable one wins. */
      {EXT PMD "; x-unknown, " PMD "; client_max_window_bits=11, " PMD "\r\n",
       PMD "; client_max_window_bits=11"},
      {EXT "x-webkit-deflate-frame, " PMD "; server_no_context_takeover\r\n",
       PMD "; server_no_context_takeover"},
      {EXT "foo; bar=\"a,b;c\", " PMD "\r\n", PMD},
      {EXT ", ," PMD " ,\r\n", PMD},
      /* Several header lines. */
      {EXT "foo\r\n" EXT PMD "; server_max_window_bits=12\r\n",
       PMD "; server_max_window_bits=12"},
      {EXT PMD "; bogus\r\n" EXT "x\r\n" EXT PMD
               "; client_no_context_takeover\r\n",
       PMD "; client_no_context_takeover"},
      {EXT "x-foo\r\n", ""},
  };
  check_server_cases(&cfg, basic, sizeof(basic) / sizeof(basic[0]));

  /* Policy: our own limits and context rules. */
  herald_config pol;
  dconfig(&pol, HERALD_ROLE_SERVER);
  pol.deflate.server_no_context_takeover = 1;
  pol.deflate.client_no_context_takeover = 1;
  pol.deflate.server_max_window_bits = 10;
  static const neg_case policy[] = {
      {EXT PMD "\r\n", PMD "; server_no_context_takeover; "
                           "client_no_context_takeover; "
                           "server_max_window_bits=10"},
      {EXT PMD "; server_max_window_bits=12\r\n",
       PMD "; server_no_context_takeover; client_no_context_takeover; "
           "server_max_window_bits=10"},
      {EXT PMD "; server_max_window_bits=9\r\n",
       PMD "; server_no_context_takeover; client_no_context_takeover; "
           "server_max_window_bits=9"},
  };
  check_server_cases(&pol, policy, sizeof(policy) / sizeof(policy[0]));

  herald_config cw;
  dconfig(&cw, HERALD_ROLE_SERVER);
  cw.deflate.client_max_window_bits = 10;
  cw.deflate.server_max_window_bits = 8; /* acts as 9 */
  static const neg_case cwin[] = {
      /* The client must let us limit its window. */
      {EXT PMD "\r\n", ""},
      {EXT PMD ", " PMD "; client_max_window_bits\r\n",
       PMD "; server_max_window_bits=9; client_max_window_bits=10"},
      {EXT PMD "; client_max_window_bits=12\r\n",
       PMD "; server_max_window_bits=9; client_max_window_bits=10"},
      {EXT PMD "; client_max_window_bits=9\r\n",
       PMD "; server_max_window_bits=9; client_max_window_bits=9"},
  };
  check_server_cases(&cw, cwin, sizeof(cwin) / sizeof(cwin[0]));

  /* Disabled: never answered; per connection: opts->no_deflate. */
  herald_config off;
  herald_config_init(&off, HERALD_ROLE_SERVER);
  static const neg_case none[] = {{EXT PMD "\r\n", ""}};
  check_server_cases(&off, none, 1);
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg), 0);
  char req[] = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n" EXT PMD "\r\n\r\n";
  herald_event ev;
  CHECK_EQ(herald_conn_recv(c, (uint8_t *)req, sizeof(req) - 1, &ev),
           (int)sizeof(req) - 1);
  herald_accept a = {.no_deflate = 1};
  CHECK_EQ(herald_conn_accept(c, &a), 0);
  size_t len;
  uint8_t *resp = drain(c, &len);
  char got[128];
  ext_of(resp, len, got, sizeof(got));
  CHECK_EQ(got[0], 0);
  CHECK_EQ(herald_conn_deflate(c, NULL), 0);
  /* RSV1 on a connection without deflate. */
  uint8_t fr[16];
  size_t fn = mkframe(fr, 1, 0x40, HERALD_OP_TEXT, "x", 1, test_key);
  feeder f = {0};
  feed(c, fr, fn, 0, &f);
  CHECK_EQ(f.err, HERALD_ERR_PROTO);
  feeder_free(&f);
  free(resp);
  herald_conn_del(c);

  /* Invalid policies are refused at creation. */
  herald_config bad;
  dconfig(&bad, HERALD_ROLE_SERVER);
  bad.deflate.server_max_window_bits = 7;
  CHECK_EQ(herald_conn_new(&c, &bad), HERALD_ERR_INVALID_ARG);
  dconfig(&bad, HERALD_ROLE_SERVER);
  bad.deflate.level = 10;
  CHECK_EQ(herald_conn_new(&c, &bad), HERALD_ERR_INVALID_ARG);
  dconfig(&bad, HERALD_ROLE_SERVER);
  bad.deflate.mem_level = 0;
  CHECK_EQ(herald_conn_new(&c, &bad), HERALD_ERR_INVALID_ARG);
}

/* ---- negotiation: client ------------------------------------------------ */

/* Feeds a 101 with the given extension lines to a client made from cfg;
 * returns the error (0: OPEN) and fills the agreed parameters. */
static int client_gets(const herald_config *cfg, const char *lines, char *offer,
                       size_t cap, herald_deflate_params *p) {
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, cfg), 0);
  herald_client_opts o = {.host = "h"};
  CHECK_EQ(herald_conn_client_start(c, &o), 0);
  size_t n;
  uint8_t *req = drain(c, &n);
  if (offer) {
    ext_of(req, n, offer, cap);
  }
  /* The key is in the request: compute the matching accept. */
  char *copy = malloc(n + 1);
  memcpy(copy, req, n);
  copy[n] = 0;
  char *k = strstr(copy, "Sec-WebSocket-Key: ") + 19;
  char acc[29];
  herald_accept_key(k, 24, acc);
  char resp[1024];
  int rn = snprintf(resp, sizeof(resp),
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
                    acc, lines);
  herald_event ev;
  int rv = herald_conn_recv(c, (uint8_t *)resp, (size_t)rn, &ev);
  int err = rv < 0 ? rv : 0;
  if (rv >= 0) {
    CHECK_EQ(ev.type, HERALD_EV_OPEN);
  } else {
    CHECK(strlen(herald_conn_error_reason(c)) > 0);
  }
  herald_conn_deflate(c, p);
  free(copy);
  free(req);
  herald_conn_del(c);
  return err;
}

static void test_negotiate_client(void) {
  herald_config cfg;
  dconfig(&cfg, HERALD_ROLE_CLIENT);
  char offer[256];
  herald_deflate_params p;
  CHECK_EQ(client_gets(&cfg, "", offer, sizeof(offer), &p), 0);
  CHECK(strcmp(offer, PMD "; client_max_window_bits") == 0);
  CHECK_EQ(p.server_max_window_bits, 0);
  CHECK_EQ(client_gets(&cfg, EXT PMD "\r\n", NULL, 0, &p), 0);
  CHECK_EQ(p.server_max_window_bits, 15);
  CHECK_EQ(p.client_max_window_bits, 15);
  CHECK_EQ(client_gets(&cfg,
                       EXT PMD "; server_no_context_takeover; "
                               "client_no_context_takeover; "
                               "server_max_window_bits=9; "
                               "client_max_window_bits=\"8\"\r\n",
                       NULL, 0, &p),
           0);
  CHECK_EQ(p.server_no_context_takeover, 1);
  CHECK_EQ(p.client_no_context_takeover, 1);
  CHECK_EQ(p.server_max_window_bits, 9);
  CHECK_EQ(p.client_max_window_bits, 8);
  static const char *const bad[] = {
      EXT "x-foo\r\n",
      EXT PMD ", " PMD "\r\n",
      EXT PMD "\r\n" EXT PMD "\r\n",
      EXT PMD "; client_max_window_bits\r\n", /* needs a value */
      EXT PMD "; server_max_window_bits=16\r\n",
      EXT PMD "; server_max_window_bits\r\n",
      EXT PMD "; server_no_context_takeover=1\r\n",
      EXT PMD "; server_no_context_takeover; server_no_context_takeover\r\n",
      EXT PMD "; mystery\r\n",
      EXT PMD "; server_max_window_bits=\"9\r\n",
      EXT PMD " ; =\r\n",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rv = client_gets(&cfg, bad[i], NULL, 0, &p);
    if (rv != HERALD_ERR_EXTENSION) {
      fprintf(stderr, "response %s: %d\n", bad[i], rv);
      CHECK(0);
    }
  }
  /* An extension without our offer is refused by the handshake check. */
  herald_config plain;
  herald_config_init(&plain, HERALD_ROLE_CLIENT);
  CHECK_EQ(client_gets(&plain, EXT PMD "\r\n", offer, sizeof(offer), &p),
           HERALD_ERR_HANDSHAKE);
  CHECK_EQ(offer[0], 0);

  /* Everything offered, and a larger server window than offered refused. */
  herald_config all;
  dconfig(&all, HERALD_ROLE_CLIENT);
  all.deflate.server_no_context_takeover = 1;
  all.deflate.client_no_context_takeover = 1;
  all.deflate.server_max_window_bits = 10;
  all.deflate.client_max_window_bits = 11;
  CHECK_EQ(client_gets(&all, EXT PMD "; server_max_window_bits=10\r\n", offer,
                       sizeof(offer), &p),
           0);
  CHECK(strcmp(offer, PMD "; server_no_context_takeover; "
                          "client_no_context_takeover; "
                          "server_max_window_bits=10; "
                          "client_max_window_bits=11") == 0);
  CHECK_EQ(
      client_gets(&all, EXT PMD "; server_max_window_bits=11\r\n", NULL, 0, &p),
      HERALD_ERR_EXTENSION);
  CHECK_EQ(client_gets(&all, EXT PMD "\r\n", NULL, 0, &p),
           HERALD_ERR_EXTENSION);
}

/* ---- frame rules -------------------------------------------------------- */

/* Feeds frames to the server end of a deflate pair; returns the error and
 * the close code the server queued. */
static int server_fails(const uint8_t *in, size_t n, unsigned *code) {
  herald_config scfg, ccfg;
  dconfig(&scfg, HERALD_ROLE_SERVER);
  dconfig(&ccfg, HERALD_ROLE_CLIENT);
  herald_conn *srv, *cli;
  open_pair(&scfg, &ccfg, &srv, &cli);
  uint8_t *copy = malloc(n + 1);
  memcpy(copy, in, n);
  feeder f = {0};
  feed(srv, copy, n, 0, &f);
  size_t olen;
  uint8_t *out = drain(srv, &olen);
  *code = 0;
  if (olen >= 4 && out[0] == 0x88) {
    *code = (unsigned)(out[2] << 8 | out[3]);
  }
  free(out);
  free(copy);
  int err = f.err;
  feeder_free(&f);
  herald_conn_del(srv);
  herald_conn_del(cli);
  return err;
}

static void test_frame_rules(void) {
  uint8_t b[64];
  size_t n;
  unsigned code;
  /* RSV1 on control frames. */
  n = mkframe(b, 1, 0x40, HERALD_OP_PING, "x", 1, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_PROTO);
  CHECK_EQ(code, 1002);
  n = mkframe(b, 1, 0x40, HERALD_OP_CLOSE, "\x03\xe8", 2, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_PROTO);
  /* RSV1 on a continuation frame. */
  n = mkframe(b, 0, 0x40, HERALD_OP_TEXT, "\xf2\x48", 2, test_key);
  n += mkframe(b + n, 1, 0x40, HERALD_OP_CONT, "\xcd\xc9\xc9\x07\x00", 5,
               test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_PROTO);
  CHECK_EQ(code, 1002);
  /* RSV2, RSV3 still fail. */
  n = mkframe(b, 1, 0x60, HERALD_OP_TEXT, "x", 1, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_PROTO);
  n = mkframe(b, 1, 0x10, HERALD_OP_BINARY, "x", 1, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_PROTO);
  /* Corrupt data: 1007. */
  n = mkframe(b, 1, 0x40, HERALD_OP_BINARY, "\xff\xff\xff\xff", 4, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_INFLATE);
  CHECK_EQ(code, 1007);
  /* A distance beyond what was ever seen. */
  n = mkframe(b, 1, 0x40, HERALD_OP_TEXT, "\xf2\x00\x11\x00\x00", 5, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_INFLATE);
  /* Invalid UTF-8 after inflating: 1007 as well. */
  size_t zl;
  uint8_t *z = zcomp("ok\xc0\xafok", 7, 15, &zl);
  n = mkframe(b, 1, 0x40, HERALD_OP_TEXT, z, zl, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_BAD_UTF8);
  CHECK_EQ(code, 1007);
  free(z);
  /* Text ending inside a sequence. */
  z = zcomp("ok\xe2\x82", 4, 15, &zl);
  n = mkframe(b, 1, 0x40, HERALD_OP_TEXT, z, zl, test_key);
  CHECK_EQ(server_fails(b, n, &code), HERALD_ERR_BAD_UTF8);
  free(z);
  /* Invalid data after a valid message keeps the first message. */
  uint8_t two[64];
  z = zcomp("Hello", 5, 15, &zl);
  size_t tn = mkframe(two, 1, 0x40, HERALD_OP_TEXT, z, zl, test_key);
  tn += mkframe(two + tn, 1, 0x40, HERALD_OP_TEXT, "\x07", 1, test_key);
  free(z);
  expect_deflate(HERALD_ROLE_SERVER, NULL, two, tn,
                 "TEXT(48656c6c6f) ERR(HERALD_ERR_INFLATE) ");
}

/* UTF-8 is checked on the inflated bytes as they come out: a bad byte early
 * in a long text fails before the rest is inflated. */
static void test_utf8_fail_fast(void) {
  size_t big = 1 << 20;
  uint8_t *t = malloc(big);
  memset(t, 'a', big);
  t[100] = 0xff;
  size_t zl;
  uint8_t *z = zcomp(t, big, 15, &zl);
  uint8_t *fr = malloc(zl + 16);
  size_t n = mkframe(fr, 1, 0x40, HERALD_OP_TEXT, z, zl, test_key);
  for (int stream = 0; stream <= 1; stream++) {
    counter k = {0};
    herald_mem mem = {cnt_malloc, cnt_realloc, cnt_free, &k};
    herald_config scfg, ccfg;
    dconfig(&scfg, HERALD_ROLE_SERVER);
    dconfig(&ccfg, HERALD_ROLE_CLIENT);
    scfg.mem = &mem;
    scfg.stream_messages = stream;
    herald_conn *srv, *cli;
    open_pair(&scfg, &ccfg, &srv, &cli);
    feeder f = {0};
    feed(srv, fr, n, 0, &f);
    CHECK_EQ(f.err, HERALD_ERR_BAD_UTF8);
    /* The message buffer never grew towards 1 MiB. */
    CHECK(k.peak < 256 * 1024);
    feeder_free(&f);
    herald_conn_del(srv);
    herald_conn_del(cli);
  }
  free(fr);
  free(z);
  free(t);
}

/* ---- limits ------------------------------------------------------------- */

/* 100 MiB of zeros compress to about 100 KiB. With max_message_size 1 MiB
 * the server answers 1009, and its allocations never pass ~1 MiB plus the
 * zlib state, in either delivery mode and at any read size. */
static void test_bomb(void) {
  z_stream z;
  memset(&z, 0, sizeof(z));
  CHECK_EQ(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
  size_t cap = 1 << 20, zl = 0;
  uint8_t *zbuf = malloc(cap);
  uint8_t *zeros = calloc(1, 1 << 20);
  for (int i = 0; i < 100; i++) {
    z.next_in = zeros;
    z.avail_in = 1 << 20;
    do {
      z.next_out = zbuf + zl;
      z.avail_out = (uInt)(cap - zl);
      CHECK(deflate(&z, i == 99 ? Z_SYNC_FLUSH : Z_NO_FLUSH) != Z_STREAM_ERROR);
      zl = cap - z.avail_out;
    } while (z.avail_in > 0);
  }
  deflateEnd(&z);
  free(zeros);
  CHECK(zl < 200 * 1024);
  uint8_t *fr = malloc(zl + 16);
  size_t n = mkframe(fr, 1, 0x40, HERALD_OP_BINARY, zbuf, zl - 4, test_key);
  static const size_t chunks[] = {0, 1000, 65536};
  for (int stream = 0; stream <= 1; stream++) {
    for (size_t ci = 0; ci < 3; ci++) {
      counter k = {0};
      herald_mem mem = {cnt_malloc, cnt_realloc, cnt_free, &k};
      herald_config scfg, ccfg;
      dconfig(&scfg, HERALD_ROLE_SERVER);
      dconfig(&ccfg, HERALD_ROLE_CLIENT);
      scfg.mem = &mem;
      scfg.stream_messages = stream;
      scfg.max_message_size = 1 << 20;
      herald_conn *srv, *cli;
      open_pair(&scfg, &ccfg, &srv, &cli);
      size_t base = k.live;
      uint8_t *copy = malloc(n);
      memcpy(copy, fr, n);
      feeder f = {0};
      feed(srv, copy, n, chunks[ci], &f);
      CHECK_EQ(f.err, HERALD_ERR_TOO_BIG);
      size_t olen;
      uint8_t *out = drain(srv, &olen);
      CHECK(olen >= 4 && out[0] == 0x88 && out[2] == 0x03 && out[3] == 0xf1);
      size_t peak = k.peak - base;
      if (peak > (1 << 20) + 128 * 1024) {
        fprintf(stderr, "bomb: stream=%d chunk=%zu peak %zu bytes\n", stream,
                chunks[ci], peak);
        CHECK(0);
      }
      free(out);
      free(copy);
      feeder_free(&f);
      herald_conn_del(srv);
      herald_conn_del(cli);
      CHECK_EQ(k.live, 0);
    }
  }
  free(fr);
  free(zbuf);
}

/*
 * The hardening finding: a compressed message left unfinished pins its
 * inflated buffer. 16 MiB of zeros compress to about 16 KiB; sent as the
 * first frame of a message that never ends, they hold 16 MiB for as long as
 * the connection lives. With a 1 MiB budget the connection fails with 1013
 * once its buffer would pass 1 MiB, and holds nothing after; a second
 * connection on the same budget is not touched.
 */
static void test_budget_unfinished(void) {
  size_t big = 16u << 20, zl;
  uint8_t *zeros = calloc(1, big);
  uint8_t *z = zcomp(zeros, big, 15, &zl);
  free(zeros);
  CHECK(zl < 64 * 1024);
  uint8_t *fr = malloc(zl + 16);
  size_t n = mkframe(fr, 0, 0x40, HERALD_OP_BINARY, z, zl, test_key);
  herald_budget *b;
  CHECK_EQ(herald_budget_new(&b, 1u << 20, NULL), 0);
  for (int budget = 0; budget <= 1; budget++) {
    counter k = {0};
    herald_mem mem = {cnt_malloc, cnt_realloc, cnt_free, &k};
    herald_config scfg, ccfg;
    dconfig(&scfg, HERALD_ROLE_SERVER);
    dconfig(&ccfg, HERALD_ROLE_CLIENT);
    scfg.mem = &mem;
    scfg.max_message_size = big;
    scfg.budget = budget ? b : NULL;
    herald_conn *srv, *cli, *srv2, *cli2;
    open_pair(&scfg, &ccfg, &srv, &cli);
    open_pair(&scfg, &ccfg, &srv2, &cli2);
    size_t base = k.live;
    uint8_t *copy = malloc(n);
    memcpy(copy, fr, n);
    feeder f = {0};
    feed(srv, copy, n, 4096, &f);
    if (!budget) {
      /* The finding: the unfinished message holds all 16 MiB. */
      CHECK_EQ(f.err, 0);
      CHECK(k.live - base >= big);
    } else {
      CHECK_EQ(f.err, HERALD_ERR_BUSY);
      size_t olen;
      uint8_t *out = drain(srv, &olen);
      CHECK(olen >= 4 && out[0] == 0x88 && (out[2] << 8 | out[3]) == 1013);
      free(out);
      CHECK(k.peak - base <= (1u << 20) + 128 * 1024);
      CHECK(k.live - base <= 128 * 1024); /* the buffer went back */
      CHECK_EQ(herald_budget_used(b), 0);
      CHECK_EQ(herald_budget_refused(b), 1);
    }
    /* The other connection is untouched: a compressed message goes through
     * (and gives back what it drew). */
    CHECK_EQ(herald_conn_send(cli2, HERALD_OP_TEXT, "hello hello hello", 17, 0,
                              NULL, NULL),
             0);
    size_t m;
    uint8_t *msg = drain(cli2, &m);
    feeder f2 = {0};
    feed(srv2, msg, m, 0, &f2);
    CHECK_EQ(f2.err, 0);
    CHECK(strcmp(f2.log.s, "TEXT(68656c6c6f2068656c6c6f2068656c6c6f) ") == 0);
    CHECK_EQ(herald_budget_used(b), 0);
    free(msg);
    free(copy);
    feeder_free(&f);
    feeder_free(&f2);
    herald_conn_del(srv);
    herald_conn_del(cli);
    herald_conn_del(srv2);
    herald_conn_del(cli2);
    CHECK_EQ(k.live, 0);
  }
  herald_budget_del(b);
  free(fr);
  free(z);
}

/* max_frame_size applies to the compressed frame; max_message_size to the
 * inflated message, exactly. */
static void test_limits(void) {
  uint8_t msg[3000];
  memset(msg, 'z', sizeof(msg));
  size_t zl;
  uint8_t *z = zcomp(msg, sizeof(msg), 15, &zl);
  uint8_t fr[4096];
  size_t n = mkframe(fr, 1, 0x40, HERALD_OP_BINARY, z, zl, test_key);
  herald_config base;
  dconfig(&base, HERALD_ROLE_SERVER);
  base.max_frame_size = zl; /* exactly fits */
  base.max_message_size = 3000;
  tlog e = {0};
  tlog_printf(&e, "BIN(");
  tlog_data(&e, msg, sizeof(msg));
  tlog_printf(&e, ") ");
  expect_deflate(HERALD_ROLE_SERVER, &base, fr, n, e.s);
  free(e.s);
  base.max_message_size = 2999;
  expect_deflate(HERALD_ROLE_SERVER, &base, fr, n, "ERR(HERALD_ERR_TOO_BIG) ");
  base.max_message_size = 1 << 20;
  base.max_frame_size = zl - 1;
  expect_deflate(HERALD_ROLE_SERVER, &base, fr, n, "ERR(HERALD_ERR_TOO_BIG) ");
  free(z);
}

/* ---- round trips -------------------------------------------------------- */

static uint8_t *sample(size_t n, unsigned seed, int text) {
  uint8_t *p = malloc(n + 1);
  static const char *words[] = {"alpha ",
                                "beta ",
                                "gamma ",
                                "delta ",
                                "{\"id\":",
                                "\"x\"}, ",
                                "\xc3\xa9t\xc3\xa9 "};
  size_t i = 0;
  unsigned s = seed * 2654435761u + 1;
  while (i < n) {
    s = s * 1103515245u + 12345u;
    const char *w = words[(s >> 16) % 7];
    size_t wl = strlen(w);
    if (i + wl > n) {
      memset(p + i, text ? 'q' : (int)(s >> 24), n - i);
      break;
    }
    memcpy(p + i, w, wl);
    i += wl;
  }
  if (!text && n > 8) {
    p[n / 2] = (uint8_t)(s >> 8); /* some noise */
  }
  return p;
}

/* Sends msgs from `from` to `to` and checks every one arrives intact.
 * Returns the wire bytes used. */
static size_t trip(herald_conn *from, herald_conn *to, int stream,
                   const size_t *sizes, size_t nsizes, unsigned seed) {
  herald_conn_set_streaming(to, stream);
  size_t wire = 0;
  for (size_t i = 0; i < nsizes; i++) {
    int text = (i & 1) == 0;
    uint8_t *m = sample(sizes[i], seed + (unsigned)i, text);
    CHECK_EQ(herald_conn_send(from, text ? HERALD_OP_TEXT : HERALD_OP_BINARY, m,
                              sizes[i], 0, NULL, NULL),
             0);
    size_t n;
    uint8_t *out = drain(from, &n);
    wire += n;
    feeder f = {0};
    /* Odd read sizes, so compressed frames split anywhere. */
    feed(to, out, n, 0 == (i % 3) ? 0 : 997 + i, &f);
    tlog e = {0};
    tlog_printf(&e, "%s(", text ? "TEXT" : "BIN");
    tlog_data(&e, m, sizes[i]);
    tlog_printf(&e, ") ");
    if (f.log.s == NULL || strcmp(f.log.s, e.s) != 0) {
      fprintf(stderr, "trip %zu (%zu bytes): got %s want %s\n", i, sizes[i],
              f.log.s ? f.log.s : "", e.s);
      CHECK(0);
    }
    CHECK(!f.bad_first);
    free(e.s);
    feeder_free(&f);
    free(out);
    free(m);
  }
  return wire;
}

static void test_round_trips(void) {
  static const size_t sizes[] = {0, 10, 100, 100, 5000, 70000, 300000, 64, 100};
  size_t total = 0;
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    total += sizes[i];
  }
  for (int combo = 0; combo < 16; combo++) {
    for (int bits = 8; bits <= 15; bits++) {
      herald_config scfg, ccfg;
      dconfig(&scfg, HERALD_ROLE_SERVER);
      dconfig(&ccfg, HERALD_ROLE_CLIENT);
      /* combo: bit 0/1 the client asks for no context takeover (server's,
       * its own), bit 2/3 the server insists on them. */
      ccfg.deflate.server_no_context_takeover = combo & 1;
      ccfg.deflate.client_no_context_takeover = (combo >> 1) & 1;
      scfg.deflate.server_no_context_takeover = (combo >> 2) & 1;
      scfg.deflate.client_no_context_takeover = (combo >> 3) & 1;
      /* Window sizes: the client limits the server's (>= 9: an offer of 8
       * is declined, tested in negotiation), the server the client's. */
      ccfg.deflate.server_max_window_bits = bits < 9 ? 9 : bits;
      ccfg.deflate.client_max_window_bits = bits;
      scfg.deflate.client_max_window_bits = bits;
      herald_conn *srv, *cli;
      open_pair(&scfg, &ccfg, &srv, &cli);
      herald_deflate_params ps, pc;
      CHECK_EQ(herald_conn_deflate(srv, &ps), 1);
      CHECK_EQ(herald_conn_deflate(cli, &pc), 1);
      CHECK_MEM(&ps, &pc, sizeof(ps));
      CHECK_EQ(ps.client_max_window_bits, bits);
      CHECK_EQ(ps.server_max_window_bits, bits < 9 ? 9 : bits);
      CHECK_EQ(ps.server_no_context_takeover, (combo & 1) || (combo >> 2 & 1));
      CHECK_EQ(ps.client_no_context_takeover,
               (combo >> 1 & 1) || (combo >> 3 & 1));
      int stream = (combo + bits) & 1;
      int before = test_failed_checks_;
      size_t down = trip(srv, cli, stream, sizes, 9, (unsigned)bits);
      size_t up = trip(cli, srv, !stream, sizes, 9, (unsigned)combo);
      if (test_failed_checks_ != before) {
        fprintf(stderr, "round trip failed: combo=%d bits=%d\n", combo, bits);
      }
      CHECK(down < total / 2); /* it did compress */
      if (bits == 8) {
        CHECK(up > total); /* an 8-bit client window: sent plain */
      } else {
        CHECK(up < total / 2);
      }
      herald_conn_del(srv);
      herald_conn_del(cli);
    }
  }
}

/* A message larger than one streaming chunk, in every split. */
/* A budget for compression state (herald_deflate_config.budget): a server
 * over it answers without the extension, a client over it does not offer
 * it; igzip's state is drawn when a large message first needs it and,
 * refused, the message goes through zlib. Everything drawn comes back. */
static void test_budget_deflate(void) {
  static const size_t big[] = {20000, 30000}, small[] = {100};
  herald_budget *probe;
  CHECK_EQ(herald_budget_new(&probe, 0, NULL), 0);
  herald_config scfg, ccfg;
  dconfig(&scfg, HERALD_ROLE_SERVER);
  dconfig(&ccfg, HERALD_ROLE_CLIENT);
  scfg.deflate.budget = probe;
  herald_conn *srv, *cli;
  open_pair(&scfg, &ccfg, &srv, &cli);
  CHECK_EQ(herald_conn_deflate(srv, NULL), 1);
  uint64_t base = herald_budget_used(probe); /* zlib's two streams */
  CHECK(base > (1u << 17));
  trip(srv, cli, 0, big, 2, 1);
  uint64_t with_fast = herald_budget_used(probe);
  CHECK_EQ(with_fast > base, herald_deflate_fast_available());
  herald_conn_del(srv);
  herald_conn_del(cli);
  CHECK_EQ(herald_budget_used(probe), 0);
  CHECK_EQ(herald_budget_refused(probe), 0);
  herald_budget_del(probe);

  /* Room for one connection's zlib streams and nothing more. */
  herald_budget *b;
  CHECK_EQ(herald_budget_new(&b, base, NULL), 0);
  scfg.deflate.budget = b;
  herald_conn *s1, *c1, *s2, *c2, *s3, *c3;
  open_pair(&scfg, &ccfg, &s1, &c1);
  CHECK_EQ(herald_conn_deflate(s1, NULL), 1);
  CHECK_EQ(herald_budget_used(b), base);
  open_pair(&scfg, &ccfg, &s2, &c2); /* opens, uncompressed */
  CHECK_EQ(herald_conn_deflate(s2, NULL), 0);
  CHECK_EQ(herald_conn_deflate(c2, NULL), 0);
  CHECK_EQ(herald_budget_refused(b), 1);
  trip(s2, c2, 0, small, 1, 2);
  trip(c2, s2, 0, small, 1, 3);
  /* igzip refused: the large messages go through zlib, intact. */
  trip(s1, c1, 0, big, 2, 4);
  trip(c1, s1, 0, big, 2, 5);
  CHECK_EQ(herald_budget_used(b), base);
  CHECK_EQ(herald_budget_refused(b),
           1 + (uint64_t)herald_deflate_fast_available());
  herald_conn_del(s1);
  herald_conn_del(c1);
  CHECK_EQ(herald_budget_used(b), 0);
  open_pair(&scfg, &ccfg, &s3, &c3); /* the room is back */
  CHECK_EQ(herald_conn_deflate(s3, NULL), 1);
  herald_conn_del(s3);
  herald_conn_del(c3);
  herald_conn_del(s2);
  herald_conn_del(c2);
  CHECK_EQ(herald_budget_used(b), 0);
  herald_budget_del(b);

  /* Client: over the budget it does not offer, so a server that answers
   * with the extension anyway is refused (RFC 6455 4.1); within it, what
   * an answer without the extension leaves unused comes back at once. */
  herald_budget *cb;
  CHECK_EQ(herald_budget_new(&cb, 1000, NULL), 0);
  herald_config cc;
  dconfig(&cc, HERALD_ROLE_CLIENT);
  cc.deflate.budget = cb;
  char offer[256];
  herald_deflate_params p;
  CHECK_EQ(client_gets(&cc, "", offer, sizeof(offer), &p), 0);
  CHECK_EQ(offer[0], 0);
  CHECK(client_gets(&cc, EXT PMD "\r\n", NULL, 0, &p) < 0);
  CHECK_EQ(herald_budget_refused(cb), 2);
  CHECK_EQ(herald_budget_used(cb), 0);
  herald_budget_del(cb);
  CHECK_EQ(herald_budget_new(&cb, 0, NULL), 0);
  cc.deflate.budget = cb;
  CHECK_EQ(client_gets(&cc, "", offer, sizeof(offer), &p), 0);
  CHECK(strstr(offer, PMD) != NULL);
  CHECK_EQ(client_gets(&cc, EXT PMD "\r\n", NULL, 0, &p), 0);
  CHECK_EQ(herald_budget_used(cb), 0);
  CHECK_EQ(herald_budget_refused(cb), 0);
  /* Held while the connection lives. */
  herald_config sc;
  dconfig(&sc, HERALD_ROLE_SERVER);
  open_pair(&sc, &cc, &srv, &cli);
  CHECK_EQ(herald_conn_deflate(cli, NULL), 1);
  CHECK(herald_budget_used(cb) > 0);
  herald_conn_del(cli);
  CHECK_EQ(herald_budget_used(cb), 0);
  herald_conn_del(srv);
  herald_budget_del(cb);
}

static void test_stream_split(void) {
  size_t n = 40000;
  uint8_t *m = malloc(n);
  for (size_t i = 0; i < n; i++) {
    m[i] = (uint8_t)("the quick brown fox "[i % 20]);
  }
  m[n / 3] = 'X';
  m[n - 1] = 'x';
  size_t zl;
  uint8_t *z = zcomp(m, n, 15, &zl);
  CHECK(zl <= 400);
  uint8_t fr[512];
  size_t fn = mkframe(fr, 1, 0x40, HERALD_OP_TEXT, z, zl, NULL);
  tlog e = {0};
  tlog_printf(&e, "TEXT(");
  tlog_data(&e, m, n);
  tlog_printf(&e, ") PING() ");
  fn += mkframe(fr + fn, 1, 0, HERALD_OP_PING, "", 0, NULL);
  expect_deflate(HERALD_ROLE_CLIENT, NULL, fr, fn, e.s);
  /* The same message in three fragments. */
  uint8_t fr3[600];
  size_t a = zl / 3, b = zl / 3;
  size_t n3 = mkframe(fr3, 0, 0x40, HERALD_OP_TEXT, z, a, NULL);
  n3 += mkframe(fr3 + n3, 0, 0, HERALD_OP_CONT, z + a, b, NULL);
  n3 += mkframe(fr3 + n3, 1, 0, HERALD_OP_CONT, z + a + b, zl - a - b, NULL);
  n3 += mkframe(fr3 + n3, 1, 0, HERALD_OP_PING, "", 0, NULL);
  expect_deflate(HERALD_ROLE_CLIENT, NULL, fr3, n3, e.s);
  free(e.s);
  free(z);
  free(m);
}

/* ---- broadcast ---------------------------------------------------------- */

static int released;
static void count_release(void *ctx) {
  (void)ctx;
  released++;
}

static void test_broadcast(void) {
  size_t n = 5000;
  uint8_t *m = sample(n, 3, 1);
  uint8_t *frame;
  size_t flen;
  int comp;
  CHECK_EQ(herald_frame_prepare(HERALD_OP_TEXT, m, n, 15, 3, NULL, &frame,
                                &flen, &comp),
           0);
  CHECK_EQ(comp, 15);
  CHECK_EQ(frame[0], 0xc1);
  CHECK(flen < n / 2);
  uint8_t *plain;
  size_t plen;
  int pcomp;
  CHECK_EQ(herald_frame_prepare(HERALD_OP_TEXT, m, n, 0, 3, NULL, &plain, &plen,
                                &pcomp),
           0);
  CHECK_EQ(pcomp, 0);
  CHECK_EQ(plen, n + 4);
  tlog e = {0};
  tlog_printf(&e, "TEXT(");
  tlog_data(&e, m, n);
  tlog_printf(&e, ") ");

  /* Three recipients with server_no_context_takeover get the same bytes. */
  herald_config scfg, ccfg;
  dconfig(&scfg, HERALD_ROLE_SERVER);
  dconfig(&ccfg, HERALD_ROLE_CLIENT);
  scfg.deflate.server_no_context_takeover = 1;
  released = 0;
  for (int i = 0; i < 3; i++) {
    herald_conn *srv, *cli;
    open_pair(&scfg, &ccfg, &srv, &cli);
    /* Interleaved with the connection's own compressed sends. */
    CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, m, n, 0, NULL, NULL), 0);
    CHECK_EQ(
        herald_conn_send_frame(srv, frame, flen, comp, count_release, NULL), 0);
    CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, m, n, 0, NULL, NULL), 0);
    size_t on;
    uint8_t *out = drain(srv, &on);
    feeder f = {0};
    feed(cli, out, on, 0, &f);
    tlog e3 = {0};
    tlog_printf(&e3, "%s%s%s", e.s, e.s, e.s);
    CHECK(f.log.s && strcmp(f.log.s, e3.s) == 0);
    free(e3.s);
    free(out);
    feeder_free(&f);
    herald_conn_del(srv);
    herald_conn_del(cli);
  }
  CHECK_EQ(released, 3);

  /* Refused where the compressed frame does not fit; the plain one goes. */
  herald_conn *srv, *cli;
  dconfig(&scfg, HERALD_ROLE_SERVER); /* context takeover */
  open_pair(&scfg, &ccfg, &srv, &cli);
  CHECK_EQ(herald_conn_send_frame(srv, frame, flen, comp, NULL, NULL),
           HERALD_ERR_BAD_STATE);
  CHECK_EQ(herald_conn_send_frame(srv, plain, plen, 0, NULL, NULL), 0);
  CHECK_EQ(herald_conn_send_frame(cli, plain, plen, 0, NULL, NULL),
           HERALD_ERR_BAD_STATE);
  CHECK_EQ(herald_conn_send_frame(srv, frame, flen, 0, NULL, NULL),
           HERALD_ERR_INVALID_ARG); /* RSV1 disagrees */
  CHECK_EQ(herald_conn_send_frame(srv, frame, flen - 1, comp, NULL, NULL),
           HERALD_ERR_INVALID_ARG);
  herald_conn_del(srv);
  herald_conn_del(cli);
  scfg.deflate.server_no_context_takeover = 1;
  ccfg.deflate.server_max_window_bits = 12; /* smaller than the frame's */
  open_pair(&scfg, &ccfg, &srv, &cli);
  CHECK_EQ(herald_conn_send_frame(srv, frame, flen, comp, NULL, NULL),
           HERALD_ERR_BAD_STATE);
  herald_conn_del(srv);
  herald_conn_del(cli);
  herald_config off;
  herald_config_init(&off, HERALD_ROLE_SERVER);
  herald_config coff;
  herald_config_init(&coff, HERALD_ROLE_CLIENT);
  open_pair(&off, &coff, &srv, &cli);
  CHECK_EQ(herald_conn_send_frame(srv, frame, flen, comp, NULL, NULL),
           HERALD_ERR_BAD_STATE);
  CHECK_EQ(herald_conn_send_frame(srv, plain, plen, 0, NULL, NULL), 0);
  herald_conn_del(srv);
  herald_conn_del(cli);
  /* Incompressible input comes back plain. */
  uint8_t noise[64];
  for (int i = 0; i < 64; i++) {
    noise[i] = (uint8_t)(i * 97 + 13);
  }
  uint8_t *nf;
  size_t nfl;
  int nc = -1;
  CHECK_EQ(herald_frame_prepare(HERALD_OP_BINARY, noise, 64, 15, 9, NULL, &nf,
                                &nfl, &nc),
           0);
  CHECK_EQ(nc, 0);
  CHECK_EQ(nf[0], 0x82);
  herald_frame_free(NULL, nf);
  CHECK_EQ(herald_frame_prepare(HERALD_OP_CLOSE, noise, 4, 15, 9, NULL, &nf,
                                &nfl, &nc),
           HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_frame_prepare(HERALD_OP_TEXT, noise, 4, 8, 9, NULL, &nf, &nfl,
                                &nc),
           HERALD_ERR_INVALID_ARG);
  herald_frame_free(NULL, frame);
  herald_frame_free(NULL, plain);
  free(e.s);
  free(m);
}

/* ---- two engines, one stream -------------------------------------------- */

/* Reads the unmasked server frames in w[0..n): one message per frame (our
 * sender does not fragment compressed messages). Inflates each with its own
 * zlib call on a raw inflater limited to the agreed window (2^bits), so a
 * reference to history further back than that, or to history the engine
 * did not really share with the peer, fails; checks the result is want[i]. */
static void inflate_independently(z_stream *zi, const uint8_t *w, size_t n,
                                  const uint8_t *want, size_t wantlen,
                                  int *compressed) {
  CHECK(n >= 2);
  size_t len = w[1] & 0x7f, h = 2;
  if (len == 126) {
    len = (size_t)w[2] << 8 | w[3];
    h = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) {
      len = len << 8 | w[2 + i];
    }
    h = 10;
  }
  CHECK_EQ(h + len, n);
  CHECK(w[0] & 0x80); /* FIN */
  *compressed = (w[0] & 0x40) != 0;
  if (!*compressed) {
    CHECK_EQ(len, wantlen);
    CHECK_MEM(w + h, want, wantlen);
    return;
  }
  uint8_t *in = malloc(len + 4), *out = malloc(wantlen + 64);
  memcpy(in, w + h, len);
  memcpy(in + len, "\x00\x00\xff\xff", 4);
  zi->next_in = in;
  zi->avail_in = (uInt)(len + 4);
  zi->next_out = out;
  zi->avail_out = (uInt)(wantlen + 64);
  int rv = inflate(zi, Z_SYNC_FLUSH);
  CHECK(rv == Z_OK || rv == Z_BUF_ERROR);
  if (rv != Z_OK && rv != Z_BUF_ERROR && zi->msg) {
    fprintf(stderr, "zlib: %s\n", zi->msg);
  }
  CHECK_EQ(zi->avail_in, 0);
  CHECK_EQ(wantlen + 64 - zi->avail_out, wantlen);
  CHECK_MEM(out, want, wantlen);
  free(in);
  free(out);
}

/* Sends sizes[] from a server whose fast engine starts at fast_min and
 * checks every message with the herald client and with a zlib inflater of
 * the agreed window. noise: every third message is random bytes (which do
 * not compress: sent plain without context takeover). Returns the bytes on
 * the wire. */
static size_t engine_run(int bits, int nct, size_t fast_min,
                         const size_t *sizes, size_t nsizes, int noise) {
  herald_config scfg, ccfg;
  dconfig(&scfg, HERALD_ROLE_SERVER);
  dconfig(&ccfg, HERALD_ROLE_CLIENT);
  scfg.deflate.fast_min_size = fast_min;
  ccfg.deflate.server_max_window_bits = bits;
  ccfg.deflate.server_no_context_takeover = nct;
  herald_conn *srv, *cli;
  open_pair(&scfg, &ccfg, &srv, &cli);
  z_stream zi;
  memset(&zi, 0, sizeof(zi));
  CHECK_EQ(inflateInit2(&zi, -bits), Z_OK);
  size_t wire = 0;
  for (size_t i = 0; i < nsizes; i++) {
    int text = !noise || i % 3 != 0;
    uint8_t *m = sample(sizes[i], (unsigned)(i % 3), 1);
    for (size_t j = 0; !text && j < sizes[i]; j++) {
      m[j] = (uint8_t)(rand() >> 7);
    }
    CHECK_EQ(herald_conn_send(srv, text ? HERALD_OP_TEXT : HERALD_OP_BINARY, m,
                              sizes[i], 0, NULL, NULL),
             0);
    size_t n;
    uint8_t *out = drain(srv, &n);
    int compressed;
    inflate_independently(&zi, out, n, m, sizes[i], &compressed);
    CHECK(compressed || nct);
    wire += n;
    feeder f = {0};
    feed(cli, out, n, 0 == (i % 2) ? 0 : 1500, &f);
    tlog e = {0};
    tlog_printf(&e, text ? "TEXT(" : "BIN(");
    tlog_data(&e, m, sizes[i]);
    tlog_printf(&e, ") ");
    CHECK(f.log.s != NULL && strcmp(f.log.s, e.s) == 0);
    free(e.s);
    feeder_free(&f);
    free(out);
    free(m);
  }
  inflateEnd(&zi);
  herald_conn_del(srv);
  herald_conn_del(cli);
  return wire;
}

/* zlib and igzip hand the window to each other in every order (small and
 * large messages mixed, both sides of fast_min, runs of each), with every
 * window size and with and without context takeover; the result is
 * checked by herald's inflater and by zlib limited to the agreed window. */
static void test_engines(void) {
  static const size_t sizes[] = {300,   5000, 200,   20000, 20000, 100,
                                 70000, 50,   3000,  999,   1000,  40000,
                                 64,    1000, 33000, 33000, 10,    2000,
                                 3000,  3000, 3000,  1500,  100,   7000};
  size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
  printf("fast engine (ISA-L igzip) available: %d\n",
         herald_deflate_fast_available());
  for (int bits = 9; bits <= 15; bits++) {
    for (int nct = 0; nct <= 1; nct++) {
      int before = test_failed_checks_;
      size_t zlib_only = engine_run(bits, nct, 0, sizes, nsizes, 0);
      size_t mixed = engine_run(bits, nct, 1000, sizes, nsizes, 0);
      size_t fast_all = engine_run(bits, nct, 1, sizes, nsizes, 0);
      engine_run(bits, nct, 1000, sizes, nsizes, 1);
      if (test_failed_checks_ != before) {
        fprintf(stderr, "engines: bits=%d no_context_takeover=%d\n", bits, nct);
      }
      if (herald_deflate_fast_available()) {
        /* The engines' outputs differ: the fast one was really used. */
        CHECK(mixed != zlib_only);
        CHECK(fast_all != zlib_only);
      } else {
        CHECK_EQ(mixed, zlib_only);
        CHECK_EQ(fast_all, zlib_only);
      }
    }
  }
}

/* ---- memory ------------------------------------------------------------- */

/* Live bytes of a server connection after one compressed message each way,
 * for the window/memLevel combinations, with and without context takeover;
 * and what herald_conn_trim() leaves. Printed for docs/performance.md. */
static void test_memory(void) {
  static const int windows[] = {9, 10, 12, 15};
  static const int mems[] = {1, 4, 8, 9};
  size_t n = 20000;
  uint8_t *m = sample(n, 11, 1);
  for (size_t wi = 0; wi < 4; wi++) {
    for (size_t mi = 0; mi < 4; mi++) {
      for (int nct = 0; nct <= 1; nct++) {
        counter k = {0};
        herald_mem mem = {cnt_malloc, cnt_realloc, cnt_free, &k};
        herald_config scfg, ccfg;
        dconfig(&scfg, HERALD_ROLE_SERVER);
        dconfig(&ccfg, HERALD_ROLE_CLIENT);
        scfg.mem = &mem;
        scfg.deflate.server_max_window_bits = windows[wi];
        scfg.deflate.client_max_window_bits = windows[wi];
        scfg.deflate.mem_level = mems[mi];
        scfg.deflate.server_no_context_takeover = nct;
        scfg.deflate.client_no_context_takeover = nct;
        herald_budget *b; /* what the server draws for its streams */
        CHECK_EQ(herald_budget_new(&b, 0, NULL), 0);
        scfg.deflate.budget = b;
        herald_conn *srv, *cli;
        open_pair(&scfg, &ccfg, &srv, &cli);
        herald_conn_trim(srv);
        size_t idle0 = k.live;
        uint64_t base = herald_budget_used(b);
        CHECK_EQ(herald_conn_send(cli, HERALD_OP_TEXT, m, n, 0, NULL, NULL), 0);
        size_t on;
        uint8_t *out = drain(cli, &on);
        feeder f = {0};
        feed(srv, out, on, 0, &f);
        free(out);
        feeder_free(&f);
        CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, m, n, 0, NULL, NULL), 0);
        out = drain(srv, &on);
        free(out);
        herald_event ev;
        uint8_t none[1];
        herald_conn_recv(srv, none, 0, &ev); /* releases the delivered msg */
        herald_conn_trim(srv);
        size_t after = k.live;
        if (getenv("HERALD_MEMORY_REPORT")) {
          printf("memory: window=%d mem_level=%d no_context_takeover=%d "
                 "idle=%zu after_trim=%zu peak=%zu drawn=%llu (zlib %llu)\n",
                 windows[wi], mems[mi], nct, idle0, after, k.peak,
                 (unsigned long long)herald_budget_used(b),
                 (unsigned long long)base);
        }
        if (nct) {
          CHECK_EQ(after, idle0); /* trim releases both streams */
          CHECK_EQ(herald_budget_used(b), base); /* and igzip's draw */
        } else {
          CHECK(after > idle0 + (1u << windows[wi]));
          /* What the streams hold is drawn, and not much more. */
          CHECK(after - idle0 <= herald_budget_used(b));
          CHECK(herald_budget_used(b) - (after - idle0) < 4096);
        }
        herald_conn_del(srv);
        herald_conn_del(cli);
        CHECK_EQ(k.live, 0);
        CHECK_EQ(herald_budget_used(b), 0);
        herald_budget_del(b);
      }
    }
  }
  free(m);
}

/* ---- failing allocator -------------------------------------------------- */

/* One conversation with compression both ways; returns 0 if it ran to the
 * end, -1 if an allocation failure stopped it (which must be clean). */
static int conversation(const herald_mem *mem, int stream, herald_budget *b) {
  herald_config scfg, ccfg;
  dconfig(&scfg, HERALD_ROLE_SERVER);
  dconfig(&ccfg, HERALD_ROLE_CLIENT);
  scfg.mem = ccfg.mem = mem;
  scfg.deflate.budget = ccfg.deflate.budget = b;
  scfg.stream_messages = ccfg.stream_messages = stream;
  ccfg.deflate.client_no_context_takeover = 1;
  herald_conn *srv = NULL, *cli = NULL;
  int ok = -1;
  uint8_t *m = sample(30000, 5, 1);
  if (herald_conn_new(&srv, &scfg) != 0 || herald_conn_new(&cli, &ccfg) != 0) {
    goto out;
  }
  herald_client_opts o = {.host = "h"};
  if (herald_conn_client_start(cli, &o) != 0) {
    goto out;
  }
  feeder f = {0};
  size_t n;
  uint8_t *buf = drain(cli, &n);
  feed(srv, buf, n, 0, &f);
  free(buf);
  if (f.err || herald_conn_accept(srv, NULL) != 0) {
    feeder_free(&f);
    goto out;
  }
  buf = drain(srv, &n);
  feed(cli, buf, n, 0, &f);
  free(buf);
  for (int i = 0; i < 3 && !f.err; i++) {
    if (herald_conn_send(cli, HERALD_OP_TEXT, m, 30000, 0, NULL, NULL) != 0 ||
        herald_conn_send(srv, HERALD_OP_BINARY, m, 30000, 0, NULL, NULL) != 0) {
      break;
    }
    buf = drain(cli, &n);
    feed(srv, buf, n, 1000, &f);
    free(buf);
    if (f.err) {
      break;
    }
    buf = drain(srv, &n);
    feed(cli, buf, n, 0, &f);
    free(buf);
    herald_conn_trim(srv);
    if (i == 2 && !f.err) {
      ok = 0;
    }
  }
  feeder_free(&f);
out:
  free(m);
  herald_conn_del(srv);
  herald_conn_del(cli);
  return ok;
}

static void test_failmalloc(void) {
  /* Both sides draw their compression state on b: whatever allocation
   * fails, every byte drawn comes back. */
  herald_budget *b;
  CHECK_EQ(herald_budget_new(&b, 0, NULL), 0);
  for (int stream = 0; stream <= 1; stream++) {
    counter k = {0};
    herald_mem mem = {cnt_malloc, cnt_realloc, cnt_free, &k};
    k.fail_at = 0;
    CHECK_EQ(conversation(&mem, stream, b), 0);
    CHECK_EQ(k.live, 0);
    CHECK_EQ(herald_budget_used(b), 0);
    /* Count the allocations of a clean run, then fail each in turn. */
    counter probe = {0};
    probe.fail_at = -1; /* count, never fail */
    herald_mem pm = {cnt_malloc, cnt_realloc, cnt_free, &probe};
    conversation(&pm, stream, b);
    long total = probe.allocs;
    CHECK(total > 10);
    for (long i = 1; i <= total; i++) {
      counter kk = {0};
      kk.fail_at = i;
      herald_mem fm = {cnt_malloc, cnt_realloc, cnt_free, &kk};
      (void)conversation(&fm, stream, b);
      if (kk.live != 0 || herald_budget_used(b) != 0) {
        fprintf(stderr,
                "failmalloc: leak of %zu bytes (%llu drawn) failing #%ld\n",
                kk.live, (unsigned long long)herald_budget_used(b), i);
        CHECK(0);
      }
    }
  }
  herald_budget_del(b);
}

int main(void) {
  RUN(test_rfc_examples);
  RUN(test_rfc_send);
  RUN(test_negotiate_server);
  RUN(test_negotiate_client);
  RUN(test_frame_rules);
  RUN(test_utf8_fail_fast);
  RUN(test_bomb);
  RUN(test_budget_unfinished);
  RUN(test_budget_deflate);
  RUN(test_limits);
  RUN(test_round_trips);
  RUN(test_stream_split);
  RUN(test_broadcast);
  RUN(test_engines);
  RUN(test_memory);
  RUN(test_failmalloc);
  return TEST_REPORT();
}
