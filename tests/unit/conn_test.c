/* conn_test.c - the connection state machine: frames, messages, control
 * frames, close, handshake glue and the output queue. Every input is fed
 * whole, one byte at a time and at every two-way split, in whole-message and
 * streaming mode, and must give the same events. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "wsfeed.h"

/* ---- helpers --------------------------------------------------------- */

static void noop_release(void *ctx) {
  (void)ctx;
}

static herald_config cfg_server, cfg_client;

static void configs(void) {
  herald_config_init(&cfg_server, HERALD_ROLE_SERVER);
  herald_config_init(&cfg_client, HERALD_ROLE_CLIENT);
}

static const char sample_request[] =
    "GET /chat?room=1 HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

/* A server connection that has accepted the sample request, with the 101
 * response already drained. */
static herald_conn *open_server(const herald_config *cfg) {
  herald_conn *c = NULL;
  if (herald_conn_new(&c, cfg) != 0) {
    return NULL;
  }
  herald_event ev;
  uint8_t buf[sizeof(sample_request)];
  memcpy(buf, sample_request, sizeof(buf));
  int rv = herald_conn_recv(c, buf, sizeof(sample_request) - 1, &ev);
  CHECK_EQ(rv, sizeof(sample_request) - 1);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  CHECK_EQ(herald_conn_accept(c, NULL), 0);
  size_t n;
  free(drain(c, &n));
  return c;
}

/* Moves all output of `from` into `to`, logging events of `to`. */
static void pump(herald_conn *from, herald_conn *to, feeder *f) {
  size_t n;
  uint8_t *out = drain(from, &n);
  feed(to, out, n, 0, f);
  free(out);
}

/* A client and a server connection after a completed handshake. */
static void open_pair(herald_conn **srv, herald_conn **cli) {
  CHECK_EQ(herald_conn_new(srv, &cfg_server), 0);
  CHECK_EQ(herald_conn_new(cli, &cfg_client), 0);
  const char *protos[] = {"chat", "superchat"};
  herald_client_opts o = {.host = "example.com:8080",
                          .path = "/ws",
                          .origin = "http://example.com",
                          .subprotocols = protos,
                          .nsubprotocols = 2};
  CHECK_EQ(herald_conn_client_start(*cli, &o), 0);
  feeder f = {0};
  pump(*cli, *srv, &f);
  CHECK(strstr(f.log.s, "REQUEST(ws=1)") != NULL);
  herald_accept a = {.subprotocol = "superchat"};
  CHECK_EQ(herald_conn_accept(*srv, &a), 0);
  pump(*srv, *cli, &f);
  CHECK(strstr(f.log.s, "OPEN") != NULL);
  CHECK_EQ(herald_conn_state(*srv), HERALD_STATE_OPEN);
  CHECK_EQ(herald_conn_state(*cli), HERALD_STATE_OPEN);
  feeder_free(&f);
}

/*
 * Feeds `in` to fresh connections of the given role, whole, one byte at a
 * time and at every two-way split (for inputs up to 300 bytes), in both
 * delivery modes, and checks every run logs `expect`. Returns the output the
 * whole-input run produced (caller frees) when out is not NULL.
 */
static void expect_events(herald_role role, const uint8_t *in, size_t n,
                          const char *expect) {
  for (int stream = 0; stream <= 1; stream++) {
    herald_config cfg;
    herald_config_init(&cfg, role);
    cfg.stream_messages = stream;
    cfg.max_message_size = cfg.max_frame_size = 1 << 20;
    size_t nsplits = n <= 300 ? n + 2 : 3;
    for (size_t s = 0; s < nsplits; s++) {
      herald_conn *c;
      if (role == HERALD_ROLE_SERVER) {
        c = open_server(&cfg);
      } else {
        /* A client that skips its handshake: feed a valid response. */
        herald_conn *srv, *cli;
        herald_config scfg = cfg_server;
        CHECK_EQ(herald_conn_new(&srv, &scfg), 0);
        CHECK_EQ(herald_conn_new(&cli, &cfg), 0);
        herald_client_opts o = {.host = "h"};
        CHECK_EQ(herald_conn_client_start(cli, &o), 0);
        feeder f0 = {0};
        pump(cli, srv, &f0);
        CHECK_EQ(herald_conn_accept(srv, NULL), 0);
        pump(srv, cli, &f0);
        feeder_free(&f0);
        herald_conn_del(srv);
        c = cli;
      }
      uint8_t *copy = malloc(n + 1);
      memcpy(copy, in, n);
      feeder f = {0};
      if (s == 0) {
        feed(c, copy, n, 0, &f); /* whole */
      } else if (s == 1) {
        feed(c, copy, n, 1, &f); /* byte at a time */
      } else {
        /* two pieces: [0, s-2) and the rest */
        size_t cut = s - 2;
        feeder_free(&f);
        uint8_t *buf = malloc(n + 1);
        size_t have = 0;
        size_t parts[2] = {cut, n - cut};
        size_t pos = 0;
        for (int k = 0; k < 2 && !f.err; k++) {
          memcpy(buf + have, copy + pos, parts[k]);
          have += parts[k];
          pos += parts[k];
          size_t off = 0;
          for (;;) {
            herald_event ev;
            int rv = herald_conn_recv(c, buf + off, have - off, &ev);
            if (rv < 0) {
              f.err = rv;
              tlog_printf(&f.log, "ERR(%s) ", herald_err_name(rv));
              break;
            }
            off += (size_t)rv;
            if (ev.type == HERALD_EV_NONE) {
              break;
            }
            log_event(&f, &ev);
          }
          memmove(buf, buf + off, have - off);
          have -= off;
        }
        free(buf);
      }
      const char *got = f.log.s ? f.log.s : "";
      if (strcmp(got, expect) != 0) {
        fprintf(stderr,
                "role=%d stream=%d split=%zu\n  got:    %s\n"
                "  expect: %s\n",
                role, stream, s, got, expect);
        CHECK(0);
      }
      CHECK(!f.bad_first);
      feeder_free(&f);
      free(copy);
      herald_conn_del(c);
    }
  }
}

/* Builds a masked client frame into buf at *n. */
static void cframe(uint8_t *buf, size_t *n, int fin, unsigned rsv, unsigned op,
                   const void *p, size_t len) {
  *n += mkframe(buf + *n, fin, rsv, op, p, len, test_key);
}

/* Feeds in to an open server and returns the close code it sent back
 * (0 if none), checking the returned error is err. */
static unsigned server_close_code(const uint8_t *in, size_t n, int err) {
  herald_conn *c = open_server(&cfg_server);
  uint8_t *copy = malloc(n + 1);
  memcpy(copy, in, n);
  feeder f = {0};
  feed(c, copy, n, 0, &f);
  CHECK_EQ(f.err, err);
  size_t olen;
  uint8_t *out = drain(c, &olen);
  unsigned code = 0;
  /* The last frame of the output is the close: 0x88, len, code. */
  for (size_t i = 0; i + 3 < olen + 0; i++) {
    if (out[i] == 0x88 && out[i + 1] >= 2 && out[i + 1] <= 125 &&
        i + 2 + out[i + 1] == olen) {
      code = (unsigned)(out[i + 2] << 8 | out[i + 3]);
    }
  }
  if (err != 0) {
    CHECK_EQ(herald_conn_state(c), HERALD_STATE_CLOSED);
    CHECK(herald_conn_done(c));
    /* Sticky: the same error again, whatever comes next. */
    herald_event ev;
    uint8_t more[2] = {0x81, 0x80};
    CHECK_EQ(herald_conn_recv(c, more, 2, &ev), err);
  }
  free(out);
  free(copy);
  feeder_free(&f);
  herald_conn_del(c);
  return code;
}

static char *refusal(const char *req, int *err);

/* ---- RFC 6455 5.7 examples ---------------------------------------------- */

static void test_rfc_examples_client(void) {
  /* A single-frame unmasked text message "Hello". */
  const uint8_t hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
  expect_events(HERALD_ROLE_CLIENT, hello, sizeof(hello), "TEXT(48656c6c6f) ");
  /* A fragmented unmasked text message: "Hel" then "lo". */
  const uint8_t frag[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
  expect_events(HERALD_ROLE_CLIENT, frag, sizeof(frag), "TEXT(48656c6c6f) ");
  /* Unmasked ping "Hello". */
  const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
  expect_events(HERALD_ROLE_CLIENT, ping, sizeof(ping), "PING(48656c6c6f) ");
  /* 256 bytes binary in a single unmasked frame (16-bit length). */
  uint8_t b256[4 + 256] = {0x82, 0x7e, 0x01, 0x00};
  for (int i = 0; i < 256; i++) {
    b256[4 + i] = (uint8_t)i;
  }
  tlog expect = {0};
  tlog_printf(&expect, "BIN(");
  tlog_data(&expect, b256 + 4, 256);
  tlog_printf(&expect, ") ");
  expect_events(HERALD_ROLE_CLIENT, b256, sizeof(b256), expect.s);
  free(expect.s);
  /* 64 KiB binary in a single unmasked frame (64-bit length). */
  size_t big = 65536;
  uint8_t *b64 = malloc(10 + big);
  const uint8_t h64[10] = {0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0};
  memcpy(b64, h64, 10);
  memset(b64 + 10, 0xab, big);
  tlog e2 = {0};
  tlog_printf(&e2, "BIN(");
  tlog_data(&e2, b64 + 10, big);
  tlog_printf(&e2, ") ");
  expect_events(HERALD_ROLE_CLIENT, b64, 10 + big, e2.s);
  free(e2.s);
  free(b64);
}

static void test_rfc_examples_server(void) {
  /* A single-frame masked text message "Hello" (RFC 6455 5.7). */
  const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                            0x7f, 0x9f, 0x4d, 0x51, 0x58};
  expect_events(HERALD_ROLE_SERVER, masked, sizeof(masked),
                "TEXT(48656c6c6f) ");
  /* The masked pong of the example, as a server receives it. */
  const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                          0x7f, 0x9f, 0x4d, 0x51, 0x58};
  expect_events(HERALD_ROLE_SERVER, pong, sizeof(pong), "PONG(48656c6c6f) ");
}

/* The client answers the example ping with a masked pong of "Hello". */
static void test_auto_pong(void) {
  herald_conn *srv, *cli;
  open_pair(&srv, &cli);
  CHECK_EQ(herald_conn_ping(srv, "Hello", 5), 0);
  feeder f = {0};
  pump(srv, cli, &f);
  CHECK(strcmp(f.log.s, "PING(48656c6c6f) ") == 0);
  size_t n;
  uint8_t *out = drain(cli, &n);
  CHECK_EQ(n, 11);
  CHECK_EQ(out[0], 0x8a);
  CHECK_EQ(out[1], 0x85);
  for (int i = 0; i < 5; i++) {
    CHECK_EQ(out[6 + i] ^ out[2 + (i & 3)], "Hello"[i]);
  }
  feeder f2 = {0};
  feed(srv, out, n, 0, &f2);
  CHECK(strcmp(f2.log.s, "PONG(48656c6c6f) ") == 0);
  free(out);
  feeder_free(&f);
  feeder_free(&f2);
  herald_conn_del(srv);
  herald_conn_del(cli);
}

/* Checks that out[0..n) is exactly one unmasked pong per payload "p<i>" for
 * each i in ids[0..count), in that order. */
static void check_pongs(const uint8_t *out, size_t n, const int *ids,
                        int count) {
  size_t pos = 0;
  for (int i = 0; i < count; i++) {
    char p[8];
    int len = snprintf(p, sizeof(p), "p%d", ids[i]);
    CHECK(pos + 2 + (size_t)len <= n);
    CHECK_EQ(out[pos], 0x8a);
    CHECK_EQ(out[pos + 1], len);
    CHECK_MEM(out + pos + 2, p, (size_t)len);
    pos += 2 + (size_t)len;
  }
  CHECK_EQ(pos, n);
}

/* Pings p0..p<count-1> as a client sends them. */
static size_t ping_burst(uint8_t *in, int first, int count) {
  size_t n = 0;
  for (int i = first; i < first + count; i++) {
    char p[8];
    int len = snprintf(p, sizeof(p), "p%d", i);
    cframe(in, &n, 1, 0, HERALD_OP_PING, p, (size_t)len);
  }
  return n;
}

/* Several pings before the output is taken: every one is answered, in order
 * (Autobahn 2.10, and 2.11 when fed one byte at a time). */
static void test_pong_every_ping(void) {
  for (size_t chunk = 0; chunk <= 1; chunk++) {
    herald_conn *c = open_server(&cfg_server);
    uint8_t in[512];
    size_t n = ping_burst(in, 0, 10);
    feeder f = {0};
    feed(c, in, n, chunk, &f);
    CHECK_EQ(f.err, 0);
    size_t olen;
    uint8_t *out = drain(c, &olen);
    int ids[10];
    for (int i = 0; i < 10; i++) {
      ids[i] = i;
    }
    check_pongs(out, olen, ids, 10);
    free(out);
    feeder_free(&f);
    herald_conn_del(c);
  }
}

/* The client answers every ping too, each pong masked with its own key. */
static void test_pong_every_ping_client(void) {
  for (size_t chunk = 0; chunk <= 1; chunk++) {
    herald_conn *srv, *cli;
    open_pair(&srv, &cli);
    for (int i = 0; i < 10; i++) {
      char p[8];
      int len = snprintf(p, sizeof(p), "p%d", i);
      CHECK_EQ(herald_conn_ping(srv, p, (size_t)len), 0);
    }
    size_t n;
    uint8_t *pings = drain(srv, &n);
    feeder f = {0};
    feed(cli, pings, n, chunk, &f);
    CHECK_EQ(f.err, 0);
    uint8_t *pongs = drain(cli, &n);
    feeder f2 = {0};
    feed(srv, pongs, n, chunk, &f2);
    CHECK_EQ(f2.err, 0);
    CHECK(strcmp(f2.log.s, "PONG(7030) PONG(7031) PONG(7032) PONG(7033) "
                           "PONG(7034) PONG(7035) PONG(7036) PONG(7037) "
                           "PONG(7038) PONG(7039) ") == 0);
    free(pings);
    free(pongs);
    feeder_free(&f);
    feeder_free(&f2);
    herald_conn_del(srv);
    herald_conn_del(cli);
  }
}

/* max_pending_pongs (64 by default) pongs wait unwritten; later pings share
 * one held pong, for the latest of them, queued once fewer wait. Whole and
 * one byte at a time. */
static void test_pong_limit(void) {
  CHECK_EQ(cfg_server.max_pending_pongs, 64);
  for (size_t chunk = 0; chunk <= 1; chunk++) {
    herald_conn *c = open_server(&cfg_server);
    static uint8_t in[100 * 16];
    size_t n = ping_burst(in, 0, 100);
    feeder f = {0};
    feed(c, in, n, chunk, &f);
    CHECK_EQ(f.err, 0);
    int ids[65];
    size_t want = 0;
    for (int i = 0; i < 64; i++) {
      ids[i] = i;
      want += i < 10 ? 4 : 5;
    }
    ids[64] = 99;
    want += 5;
    CHECK_EQ(herald_conn_output_size(c), want);
    size_t olen;
    uint8_t *out = drain(c, &olen);
    check_pongs(out, olen, ids, 65);
    free(out);
    /* With none waiting, the next ping is answered at once again. */
    n = ping_burst(in, 100, 1);
    feed(c, in, n, chunk, &f);
    out = drain(c, &olen);
    check_pongs(out, olen, (int[]){100}, 1);
    free(out);
    feeder_free(&f);
    herald_conn_del(c);
  }
  /* A pong held while fewer wait again (nothing asked for output) is still
   * replaced by a later ping: pongs never go out of order. */
  herald_config cfg = cfg_server;
  cfg.max_pending_pongs = 2;
  herald_conn *c = open_server(&cfg);
  uint8_t in[64];
  size_t n = ping_burst(in, 0, 3);
  feeder f = {0};
  feed(c, in, n, 0, &f);
  struct iovec iov[1];
  CHECK_EQ(herald_conn_output(c, iov, 1), 1);
  CHECK_EQ(herald_conn_output_consumed(c, 4), 0); /* the pong of p0 */
  n = ping_burst(in, 3, 1);
  feed(c, in, n, 0, &f);
  size_t olen;
  uint8_t *out = drain(c, &olen);
  check_pongs(out, olen, (int[]){1, 3}, 2);
  free(out);
  feeder_free(&f);
  herald_conn_del(c);
  /* The held pong lives in the output queue: trimming the connection once
   * every queued entry is written keeps the queue, and the pong. */
  cfg.max_pending_pongs = 1;
  c = open_server(&cfg);
  n = ping_burst(in, 0, 2);
  feeder f2 = {0};
  feed(c, in, n, 0, &f2);
  CHECK_EQ(f2.err, 0);
  CHECK_EQ(herald_conn_output(c, iov, 1), 1);
  CHECK_EQ(herald_conn_output_consumed(c, 4), 0); /* the pong of p0 */
  CHECK_EQ(herald_conn_output_size(c), 4);        /* p1's, held */
  herald_conn_trim(c);
  CHECK_EQ(herald_conn_output_size(c), 4);
  out = drain(c, &olen);
  check_pongs(out, olen, (int[]){1}, 1);
  free(out);
  CHECK_EQ(herald_conn_output_size(c), 0);
  herald_conn_trim(c); /* nothing held now: the queue goes */
  CHECK_EQ(herald_conn_output_size(c), 0);
  feeder_free(&f2);
  herald_conn_del(c);
  /* 0 is refused. */
  cfg.max_pending_pongs = 0;
  CHECK_EQ(herald_conn_new(&c, &cfg), HERALD_ERR_INVALID_ARG);
}

/* A pong goes ahead of queued data, but never into the middle of a frame. */
static void test_pong_priority(void) {
  herald_config cfg = cfg_server;
  herald_conn *c = open_server(&cfg);
  static uint8_t big[4096];
  memset(big, 'x', sizeof(big));
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, big, sizeof(big), 0,
                            noop_release, NULL),
           0);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "after", 5, 0, NULL, NULL), 0);
  /* Write part of the first frame, then a ping arrives. */
  struct iovec iov[8];
  CHECK(herald_conn_output(c, iov, 8) >= 2);
  CHECK_EQ(herald_conn_output_consumed(c, 100), 0);
  uint8_t in[16];
  size_t n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_PING, "hi", 2);
  feeder f = {0};
  feed(c, in, n, 0, &f);
  size_t olen;
  uint8_t *out = drain(c, &olen);
  /* Remaining: rest of big frame, then pong, then "after". */
  size_t rest = 4 + sizeof(big) - 100;
  CHECK_EQ(olen, rest + 4 + 7);
  CHECK_EQ(out[rest], 0x8a);
  CHECK_EQ(out[rest + 1], 2);
  CHECK_EQ(out[rest + 4], 0x81);
  free(out);
  feeder_free(&f);
  herald_conn_del(c);
}

/* ---- messages ----------------------------------------------------------- */

static void test_fragmented_with_control(void) {
  uint8_t in[256];
  size_t n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_TEXT, "frag", 4);
  cframe(in, &n, 1, 0, HERALD_OP_PING, "x", 1);
  cframe(in, &n, 0, 0, HERALD_OP_CONT, "", 0);
  cframe(in, &n, 1, 0, HERALD_OP_PONG, "", 0);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "ment", 4);
  cframe(in, &n, 1, 0, HERALD_OP_BINARY, "\x00\xff", 2);
  cframe(in, &n, 1, 0, HERALD_OP_TEXT, "", 0);
  expect_events(HERALD_ROLE_SERVER, in, n,
                "PING(78) PONG() TEXT(667261676d656e74) BIN(00ff) TEXT() ");
}

static void test_utf8_across_fragments(void) {
  /* "κόσμε" split inside a character, across three fragments. */
  const char *k = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
  uint8_t in[128];
  size_t n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_TEXT, k, 1);
  cframe(in, &n, 0, 0, HERALD_OP_CONT, k + 1, 3);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, k + 4, 7);
  expect_events(HERALD_ROLE_SERVER, in, n, "TEXT(cebae1bdb9cf83cebcceb5) ");
}

static void test_streaming_large(void) {
  /* 1 MiB in 4 fragments, streamed: every chunk arrives, nothing buffered. */
  size_t total = 1 << 20, part = total / 4;
  uint8_t *payload = malloc(total);
  for (size_t i = 0; i < total; i++) {
    payload[i] = (uint8_t)('a' + i % 26);
  }
  uint8_t *in = malloc(total + 64);
  size_t n = 0;
  for (int i = 0; i < 4; i++) {
    cframe(in, &n, i == 3, 0, i ? HERALD_OP_CONT : HERALD_OP_TEXT,
           payload + part * (size_t)i, part);
  }
  herald_config cfg = cfg_server;
  cfg.stream_messages = 1;
  herald_conn *c = open_server(&cfg);
  size_t got = 0, events = 0, firsts = 0, fins = 0, ok = 1;
  /* Feed in 4 KiB reads; each chunk must be in order. */
  size_t pos = 0, have = 0;
  uint8_t buf[8192];
  while (pos < n) {
    size_t take = n - pos < 4096 ? n - pos : 4096;
    memcpy(buf + have, in + pos, take);
    have += take;
    pos += take;
    size_t off = 0;
    for (;;) {
      herald_event ev;
      int rv = herald_conn_recv(c, buf + off, have - off, &ev);
      CHECK(rv >= 0);
      if (rv < 0) {
        break;
      }
      off += (size_t)rv;
      if (ev.type == HERALD_EV_NONE) {
        break;
      }
      events++;
      firsts += (size_t)ev.first;
      fins += (size_t)ev.fin;
      if (memcmp(ev.data, payload + got, ev.len) != 0) {
        ok = 0;
      }
      got += ev.len;
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
  CHECK(ok);
  CHECK_EQ(got, total);
  CHECK(events > 4);
  CHECK_EQ(firsts, 1);
  CHECK_EQ(fins, 1);
  free(payload);
  free(in);
  herald_conn_del(c);
}

/* Whole mode: an unfragmented message in one buffer is delivered in place. */
static void test_zero_copy_delivery(void) {
  herald_conn *c = open_server(&cfg_server);
  uint8_t in[64];
  size_t n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_BINARY, "abcdef", 6);
  herald_event ev;
  CHECK_EQ(herald_conn_recv(c, in, n, &ev), (int)n);
  CHECK_EQ(ev.type, HERALD_EV_BINARY);
  CHECK(ev.data == in + 6);
  CHECK_MEM(ev.data, "abcdef", 6);
  herald_conn_del(c);
}

/* ---- protocol errors: each answered by its close code ------------------- */

static void test_protocol_errors(void) {
  uint8_t in[512];
  size_t n;
  uint8_t big[200];
  memset(big, 'a', sizeof(big));

#define EXPECT_CLOSE(err, code) CHECK_EQ(server_close_code(in, n, err), code)

  n = 0; /* RSV1 without an extension */
  cframe(in, &n, 1, 0x40, HERALD_OP_TEXT, "x", 1);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  n = 0; /* RSV3 on a ping */
  cframe(in, &n, 1, 0x10, HERALD_OP_PING, "", 0);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  for (unsigned op = 3; op <= 15; op++) {
    if (op >= 8 && op <= 10) {
      continue;
    }
    n = 0; /* reserved opcodes */
    cframe(in, &n, 1, 0, op, "", 0);
    EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  }
  n = 0; /* fragmented ping */
  cframe(in, &n, 0, 0, HERALD_OP_PING, "", 0);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  n = 0; /* ping of 126 bytes */
  cframe(in, &n, 1, 0, HERALD_OP_PING, big, 126);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  n = 0; /* continuation with nothing to continue */
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "x", 1);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  n = 0; /* a new message inside a fragmented one */
  cframe(in, &n, 0, 0, HERALD_OP_TEXT, "x", 1);
  cframe(in, &n, 1, 0, HERALD_OP_TEXT, "y", 1);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  n = 0; /* unmasked frame to a server */
  n += mkframe(in, 1, 0, HERALD_OP_TEXT, "x", 1, NULL);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  /* non-minimal 16-bit length */
  const uint8_t nm16[] = {0x82, 0xfe, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0};
  memcpy(in, nm16, sizeof(nm16));
  n = sizeof(nm16);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  /* 64-bit length with the top bit set */
  const uint8_t top[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
  memcpy(in, top, sizeof(top));
  n = sizeof(top);
  EXPECT_CLOSE(HERALD_ERR_PROTO, 1002);
  /* invalid UTF-8 in a text frame: 1007 */
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_TEXT, "\xc0\xaf", 2);
  EXPECT_CLOSE(HERALD_ERR_BAD_UTF8, 1007);
  /* text ending inside a sequence */
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_TEXT, "a\xe2\x82", 3);
  EXPECT_CLOSE(HERALD_ERR_BAD_UTF8, 1007);
  /* close with a 1-byte payload */
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_CLOSE, "\x03", 1);
  EXPECT_CLOSE(HERALD_ERR_BAD_CLOSE, 1002);
  /* close reason that is not UTF-8 */
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_CLOSE, "\x03\xe8\xff", 3);
  EXPECT_CLOSE(HERALD_ERR_BAD_UTF8, 1007);
#undef EXPECT_CLOSE
}

/* A client fails a masked frame from the server. */
static void test_client_rejects_masked(void) {
  uint8_t in[32];
  size_t n = mkframe(in, 1, 0, HERALD_OP_TEXT, "x", 1, test_key);
  expect_events(HERALD_ROLE_CLIENT, in, n, "ERR(HERALD_ERR_PROTO) ");
}

/* Fail fast: the invalid byte fails the connection before the frame ends. */
static void test_utf8_fail_fast(void) {
  herald_conn *c = open_server(&cfg_server);
  /* A text frame announcing 100 bytes; only the first 8 arrive, and byte 6
   * is invalid (F4 90 is above U+10FFFF). */
  uint8_t payload[100];
  memset(payload, 'a', sizeof(payload));
  payload[5] = 0xf4;
  payload[6] = 0x90;
  uint8_t in[128];
  size_t n = mkframe(in, 1, 0, HERALD_OP_TEXT, payload, 100, test_key);
  herald_event ev;
  int rv = herald_conn_recv(c, in, 8 + 8, &ev); /* header 6 + 10 bytes */
  CHECK_EQ(rv, HERALD_ERR_BAD_UTF8);
  (void)n;
  herald_conn_del(c);
}

static void test_limits(void) {
  herald_config cfg = cfg_server;
  cfg.max_frame_size = 100;
  cfg.max_message_size = 150;
  cfg.max_fragments = 3;
  uint8_t in[1024], p[200];
  memset(p, 'z', sizeof(p));
  size_t n;
  feeder f = {0};
  herald_conn *c;

  /* Exactly at the frame limit: fine. One over: 1009, before the payload. */
  c = open_server(&cfg);
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_BINARY, p, 100);
  feed(c, in, n, 0, &f);
  CHECK_EQ(f.err, 0);
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_BINARY, p, 101);
  herald_event ev;
  CHECK_EQ(herald_conn_recv(c, in, 8, &ev), HERALD_ERR_TOO_BIG);
  size_t olen;
  uint8_t *out = drain(c, &olen);
  CHECK(olen >= 4 && out[0] == 0x88 && (out[2] << 8 | out[3]) == 1009);
  free(out);
  herald_conn_del(c);
  feeder_free(&f);

  /* Message limit across fragments: 100 + 50 ok, 100 + 51 is 1009. */
  c = open_server(&cfg);
  n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, p, 100);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, p, 50);
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, p, 100);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, p, 51);
  feed(c, in, n, 0, &f);
  CHECK_EQ(f.err, HERALD_ERR_TOO_BIG);
  CHECK(strncmp(f.log.s, "BIN(len=150", 11) == 0);
  herald_conn_del(c);
  feeder_free(&f);

  /* Fragment count: 3 fine, 4 is 1008. */
  c = open_server(&cfg);
  n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_TEXT, "a", 1);
  cframe(in, &n, 0, 0, HERALD_OP_CONT, "b", 1);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "c", 1);
  cframe(in, &n, 0, 0, HERALD_OP_TEXT, "a", 1);
  cframe(in, &n, 0, 0, HERALD_OP_CONT, "", 0);
  cframe(in, &n, 0, 0, HERALD_OP_CONT, "", 0);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "", 0);
  feed(c, in, n, 0, &f);
  CHECK(strcmp(f.log.s, "TEXT(616263) ERR(HERALD_ERR_POLICY) ") == 0);
  out = drain(c, &olen);
  CHECK(olen >= 4 && (out[2] << 8 | out[3]) == 1008);
  free(out);
  herald_conn_del(c);
  feeder_free(&f);
}

/* ---- the shared budget for unfinished messages -------------------------- */

/* Connections share a 64 KiB budget. A message buffer is drawn on at its
 * full size while a message is in it; the connection whose buffer would take
 * the total past the limit fails with 1013 and the others go on untouched.
 * Delivery, failure, the end of the transport and deletion give the bytes
 * back; messages delivered in place or streamed never draw. */
static void test_budget(void) {
  herald_budget *b;
  CHECK_EQ(herald_budget_new(&b, 65536, NULL), 0);
  herald_config cfg = cfg_server;
  cfg.budget = b;
  static uint8_t p[40000], in[41000];
  memset(p, 'a', sizeof(p));
  size_t n = 0, olen;
  feeder fa = {0}, fz = {0}, fy = {0};

  /* A: 40,000 bytes of an unfinished message: its 64 KiB buffer is drawn. */
  herald_conn *a = open_server(&cfg);
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, p, sizeof(p));
  feed(a, in, n, 0, &fa);
  CHECK_EQ(fa.err, 0);
  CHECK_EQ(herald_budget_used(b), 65536);

  /* Z: the first 50 bytes of a message would draw 256 more: 1013. */
  herald_conn *z = open_server(&cfg);
  n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_TEXT, p, 50);
  feed(z, in, n, 0, &fz);
  CHECK_EQ(fz.err, HERALD_ERR_BUSY);
  CHECK_EQ(herald_err_close_code(HERALD_ERR_BUSY), 1013);
  uint8_t *out = drain(z, &olen);
  CHECK(olen >= 4 && out[0] == 0x88 && (out[2] << 8 | out[3]) == 1013);
  free(out);
  CHECK(strstr(herald_conn_error_reason(z), "budget") != NULL);
  CHECK_EQ(herald_budget_used(b), 65536);
  CHECK_EQ(herald_budget_refused(b), 1);

  /* Y: whole messages in one read, and streamed ones, need no buffer. */
  herald_conn *y = open_server(&cfg);
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_TEXT, "hi", 2);
  feed(y, in, n, 0, &fy);
  herald_conn_set_streaming(y, 1);
  n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, p, 30000);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, p, 10);
  feed(y, in, n, 0, &fy);
  CHECK_EQ(fy.err, 0);
  CHECK(strncmp(fy.log.s, "TEXT(6869) BIN(len=30010,", 25) == 0);
  CHECK_EQ(herald_budget_used(b), 65536);

  /* A ends its message: delivered whole, its bytes given back. */
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "z", 1);
  feed(a, in, n, 0, &fa);
  CHECK_EQ(fa.err, 0);
  CHECK(strncmp(fa.log.s, "BIN(len=40001,", 14) == 0);
  CHECK_EQ(herald_budget_used(b), 0);

  /* The buffer A keeps is drawn on again once a message is in it. A
   * protocol error gives it back; so do the transport's end and deletion. */
  n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, p, 10);
  cframe(in, &n, 1, 0, 3, "", 0); /* reserved opcode */
  feed(a, in, n, 0, &fa);
  CHECK_EQ(fa.err, HERALD_ERR_PROTO);
  CHECK_EQ(herald_budget_used(b), 0);
  herald_conn *x = open_server(&cfg);
  n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, p, 1000);
  feeder fx = {0};
  feed(x, in, n, 0, &fx);
  CHECK_EQ(herald_budget_used(b), 1024);
  herald_event ev;
  CHECK_EQ(herald_conn_recv_eof(x, &ev), 1);
  CHECK_EQ(herald_budget_used(b), 0);
  herald_conn *w = open_server(&cfg);
  feed(w, in, n, 0, &fx);
  CHECK_EQ(herald_budget_used(b), 1024);
  herald_conn_del(w);
  CHECK_EQ(herald_budget_used(b), 0);
  CHECK_EQ(herald_budget_refused(b), 1);

  feeder_free(&fa);
  feeder_free(&fz);
  feeder_free(&fy);
  feeder_free(&fx);
  herald_conn_del(a);
  herald_conn_del(z);
  herald_conn_del(y);
  herald_conn_del(x);
  herald_budget_del(b);
}

/* ---- close -------------------------------------------------------------- */

static void test_close_codes(void) {
  /* Every code from 0 to 5000 and a few beyond, as the peer's close. */
  for (uint32_t code = 0; code <= 5000; code++) {
    int valid = (code >= 1000 && code <= 1003) ||
                (code >= 1007 && code <= 1014) ||
                (code >= 3000 && code <= 4999);
    CHECK_EQ(herald_close_code_valid(code), valid);
  }
  CHECK(!herald_close_code_valid(65535));
  const uint32_t sample[] = {0,    999,  1000, 1001, 1002, 1003, 1004, 1005,
                             1006, 1007, 1011, 1012, 1014, 1015, 1016, 2000,
                             2999, 3000, 3999, 4000, 4999, 5000, 65535};
  for (size_t i = 0; i < sizeof(sample) / sizeof(sample[0]); i++) {
    uint32_t code = sample[i];
    uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    uint8_t in[16];
    size_t n = 0;
    cframe(in, &n, 1, 0, HERALD_OP_CLOSE, body, 2);
    if (herald_close_code_valid(code)) {
      /* Echoed back. */
      CHECK_EQ(server_close_code(in, n, 0), code);
    } else {
      CHECK_EQ(server_close_code(in, n, HERALD_ERR_BAD_CLOSE), 1002);
    }
  }
}

static void test_close_handshake_server_first(void) {
  herald_conn *srv, *cli;
  open_pair(&srv, &cli);
  CHECK_EQ(herald_conn_close(srv, 1000, "bye", 3), 0);
  CHECK_EQ(herald_conn_state(srv), HERALD_STATE_CLOSING);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_TEXT, "x", 1, 0, NULL, NULL),
           HERALD_ERR_CLOSED);
  CHECK_EQ(herald_conn_close(srv, 1000, NULL, 0), HERALD_ERR_CLOSED);
  feeder f = {0};
  pump(srv, cli, &f);
  CHECK(strcmp(f.log.s, "CLOSE(1000,627965) ") == 0);
  CHECK_EQ(herald_conn_state(cli), HERALD_STATE_CLOSED);
  CHECK(!herald_conn_done(cli)); /* its echo is still to be written */
  feeder f2 = {0};
  pump(cli, srv, &f2);
  CHECK(herald_conn_done(cli));
  CHECK(strcmp(f2.log.s, "CLOSE(1000,) ") == 0);
  CHECK_EQ(herald_conn_state(srv), HERALD_STATE_CLOSED);
  CHECK(herald_conn_done(srv));
  /* Nothing may be sent after close, and later input is ignored. */
  CHECK_EQ(herald_conn_ping(srv, "", 0), HERALD_ERR_CLOSED);
  CHECK_EQ(herald_conn_send(cli, HERALD_OP_BINARY, "x", 1, 0, NULL, NULL),
           HERALD_ERR_CLOSED);
  CHECK_EQ(herald_conn_output_size(srv), 0);
  herald_event ev;
  uint8_t junk[3] = {1, 2, 3};
  CHECK_EQ(herald_conn_recv(srv, junk, 3, &ev), 3);
  CHECK_EQ(ev.type, HERALD_EV_NONE);
  herald_event eof;
  CHECK_EQ(herald_conn_recv_eof(srv, &eof), 0);
  feeder_free(&f);
  feeder_free(&f2);
  herald_conn_del(srv);
  herald_conn_del(cli);
}

static void test_close_handshake_client_first(void) {
  herald_conn *srv, *cli;
  open_pair(&srv, &cli);
  CHECK_EQ(herald_conn_send(cli, HERALD_OP_TEXT, "last", 4, 0, NULL, NULL), 0);
  CHECK_EQ(herald_conn_close(cli, 0, NULL, 0), 0); /* no status code */
  feeder f = {0};
  pump(cli, srv, &f);
  CHECK(strcmp(f.log.s, "TEXT(6c617374) CLOSE(1005,) ") == 0);
  CHECK_EQ(herald_conn_state(srv), HERALD_STATE_CLOSED);
  feeder f2 = {0};
  pump(srv, cli, &f2);
  CHECK(strcmp(f2.log.s, "CLOSE(1005,) ") == 0);
  CHECK(herald_conn_done(srv) && herald_conn_done(cli));
  feeder_free(&f);
  feeder_free(&f2);
  herald_conn_del(srv);
  herald_conn_del(cli);
}

static void test_close_args(void) {
  herald_conn *c = open_server(&cfg_server);
  CHECK_EQ(herald_conn_close(c, 1005, NULL, 0), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_close(c, 1006, NULL, 0), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_close(c, 999, NULL, 0), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_close(c, 0, "x", 1), HERALD_ERR_INVALID_ARG);
  char r[124];
  memset(r, 'r', sizeof(r));
  CHECK_EQ(herald_conn_close(c, 1000, r, 124), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_close(c, 1000, "\xff", 1), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_state(c), HERALD_STATE_OPEN);
  CHECK_EQ(herald_conn_close(c, 4000, r, 123), 0);
  herald_conn_del(c);
}

static void test_eof(void) {
  herald_conn *c = open_server(&cfg_server);
  herald_event ev;
  CHECK_EQ(herald_conn_recv_eof(c, &ev), 1);
  CHECK_EQ(ev.type, HERALD_EV_CLOSE);
  CHECK_EQ(ev.code, 1006);
  CHECK_EQ(herald_conn_state(c), HERALD_STATE_CLOSED);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "x", 1, 0, NULL, NULL),
           HERALD_ERR_CLOSED);
  herald_conn_del(c);
}

/* Switching to streaming mid-message keeps that message whole; the next one
 * streams. Switching between messages applies at once. */
static void test_streaming_switch(void) {
  herald_conn *c = open_server(&cfg_server);
  uint8_t in[64];
  size_t n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_TEXT, "abc", 3);
  feeder f = {0};
  feed(c, in, n, 0, &f);
  herald_conn_set_streaming(c, 1);
  n = 0;
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "def", 3);
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, "x", 1);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "y", 1);
  herald_event ev;
  int events = 0, chunks = 0;
  size_t off = 0;
  for (;;) {
    int rv = herald_conn_recv(c, in + off, n - off, &ev);
    CHECK(rv >= 0);
    if (rv < 0 || ev.type == HERALD_EV_NONE) {
      break;
    }
    off += (size_t)rv;
    events++;
    if (ev.type == HERALD_EV_TEXT) {
      CHECK_EQ(ev.len, 6);
      CHECK_MEM(ev.data, "abcdef", 6);
    } else {
      chunks++;
      CHECK_EQ(ev.len, 1);
    }
  }
  CHECK_EQ(events, 3);
  CHECK_EQ(chunks, 2);
  /* Off again, between messages: whole delivery at once. */
  herald_conn_set_streaming(c, 0);
  n = 0;
  cframe(in, &n, 0, 0, HERALD_OP_BINARY, "p", 1);
  cframe(in, &n, 1, 0, HERALD_OP_CONT, "q", 1);
  feeder f2 = {0};
  feed(c, in, n, 0, &f2);
  CHECK(strcmp(f2.log.s, "BIN(7071) ") == 0);
  feeder_free(&f);
  feeder_free(&f2);
  herald_conn_del(c);
}

/* EOF reports 1006 only for a connection that was open. */
static void test_eof_states(void) {
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg_server), 0);
  herald_event ev;
  CHECK_EQ(herald_conn_recv_eof(c, &ev), 0); /* during the handshake */
  herald_conn_del(c);
  int err;
  char *out = refusal("GET / HTTP/1.1\r\n\r\n", &err);
  free(out);
  c = open_server(&cfg_server);
  CHECK_EQ(herald_conn_recv_eof(c, &ev), 1);
  CHECK_EQ(herald_conn_recv_eof(c, &ev), 0); /* once */
  herald_conn_del(c);
}

/* ---- sending ------------------------------------------------------------ */

static int release_count;
static void count_release(void *ctx) {
  (void)ctx;
  release_count++;
}

static void test_send_states_and_args(void) {
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg_server), 0);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "x", 1, 0, NULL, NULL),
           HERALD_ERR_BAD_STATE);
  CHECK_EQ(herald_conn_close(c, 1000, NULL, 0), HERALD_ERR_BAD_STATE);
  herald_conn_del(c);
  c = open_server(&cfg_server);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_PING, "x", 1, 0, NULL, NULL),
           HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, NULL, 1, 0, NULL, NULL),
           HERALD_ERR_INVALID_ARG);
  uint8_t p[126] = {0};
  CHECK_EQ(herald_conn_ping(c, p, 126), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_pong(c, p, 125), 0);
  /* Fragmented send: the type must not change mid-message. */
  CHECK_EQ(
      herald_conn_send(c, HERALD_OP_TEXT, "a", 1, HERALD_SEND_MORE, NULL, NULL),
      0);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, "b", 1, 0, NULL, NULL),
           HERALD_ERR_BAD_STATE);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "b", 1, 0, NULL, NULL), 0);
  size_t n;
  uint8_t *out = drain(c, &n);
  const uint8_t want[] = {0x8a, 125};
  CHECK_MEM(out, want, 2);
  const uint8_t frames[] = {0x01, 1, 'a', 0x80, 1, 'b'};
  CHECK_EQ(n, 127 + sizeof(frames));
  CHECK_MEM(out + 127, frames, sizeof(frames));
  free(out);
  herald_conn_del(c);
}

/* Large payloads are referenced, small ones copied; releases happen once,
 * after the bytes are consumed, or at delete. */
static void test_send_zero_copy(void) {
  herald_conn *c = open_server(&cfg_server);
  static uint8_t big[5000];
  memset(big, 'b', sizeof(big));
  release_count = 0;
  CHECK_EQ(
      herald_conn_send(c, HERALD_OP_BINARY, "tiny", 4, 0, count_release, NULL),
      0);
  CHECK_EQ(release_count, 1); /* copied: released at once */
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, big, sizeof(big), 0,
                            count_release, NULL),
           0);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "t2", 2, 0, NULL, NULL), 0);
  struct iovec iov[8];
  int cnt = herald_conn_output(c, iov, 8);
  /* [tiny frame + big's header] [big payload, in place] [t2 frame] */
  CHECK_EQ(cnt, 3);
  CHECK(iov[1].iov_base == big);
  CHECK_EQ(iov[0].iov_len, 6 + 4);
  CHECK_EQ(herald_conn_output_size(c), 6 + 4 + 5000 + 4);
  CHECK_EQ(herald_conn_output_consumed(c, 6 + 4 + 4999), 0);
  CHECK_EQ(release_count, 1);
  CHECK_EQ(herald_conn_output_consumed(c, 1), 0);
  CHECK_EQ(release_count, 2);
  CHECK_EQ(herald_conn_output_consumed(c, 5), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, big, sizeof(big), 0,
                            count_release, NULL),
           0);
  herald_conn_del(c);
  CHECK_EQ(release_count, 3);
}

static int fail_at, alloc_count;
static void *fm_malloc(size_t n, void *ud);
static void *fm_realloc(void *p, size_t n, void *ud);
static void fm_free(void *p, void *ud);
static size_t drain_part(herald_conn *c, size_t want, uint8_t *out);

/* HERALD_SEND_BORROW: referenced until herald_conn_output_own(), which
 * copies the unwritten rest, so the caller may then overwrite its buffer;
 * small payloads, a release, or no own() needed are the ordinary paths. */
static void test_send_borrow(void) {
  herald_conn *c = open_server(&cfg_server);
  uint8_t buf[6000], want[2 * (4 + 6000) + 4 + 2];
  for (size_t i = 0; i < sizeof(buf); i++) {
    buf[i] = (uint8_t)(i * 7);
  }
  /* Expected wire: two 6000-byte frames of buf, then a small one. */
  size_t w = 0;
  for (int k = 0; k < 2; k++) {
    w += herald_frame_header(want + w, HERALD_OP_BINARY, 1, 0, 6000, NULL);
    memcpy(want + w, buf, 6000);
    w += 6000;
  }
  w += herald_frame_header(want + w, HERALD_OP_TEXT, 1, 0, 2, NULL);
  memcpy(want + w, "ok", 2);
  w += 2;
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, buf, 6000, HERALD_SEND_BORROW,
                            NULL, NULL),
           0);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, buf, 6000, HERALD_SEND_BORROW,
                            NULL, NULL),
           0);
  CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "ok", 2, HERALD_SEND_BORROW,
                            NULL, NULL),
           0);
  struct iovec iov[8];
  int cnt = herald_conn_output(c, iov, 8);
  CHECK(cnt >= 3);
  CHECK(iov[1].iov_base == buf); /* referenced, not copied */
  /* A partial write: the first frame and part of the second. */
  uint8_t got[sizeof(want)];
  size_t took = drain_part(c, 4 + 6000 + 4 + 1000, got);
  CHECK_EQ(took, 4 + 6000 + 4 + 1000);
  CHECK_EQ(herald_conn_output_own(c), 0);
  memset(buf, 0xEE, sizeof(buf));         /* the caller reuses its buffer */
  CHECK_EQ(herald_conn_output_own(c), 0); /* nothing borrowed now: no-op */
  while (herald_conn_output_size(c) > 0) {
    took += drain_part(c, 777, got + took);
  }
  CHECK_EQ(took, w);
  CHECK(memcmp(got, want, w) == 0);
  herald_conn_del(c);

  /* Out of memory while owning: an error, and the bytes stay referenced. */
  herald_config cfg = cfg_server;
  herald_mem fm = {fm_malloc, fm_realloc, fm_free, NULL};
  cfg.mem = &fm;
  fail_at = 0;
  c = open_server(&cfg);
  for (size_t i = 0; i < sizeof(buf); i++) {
    buf[i] = (uint8_t)(i * 7);
  }
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, buf, 6000, HERALD_SEND_BORROW,
                            NULL, NULL),
           0);
  fail_at = alloc_count + 1;
  CHECK_EQ(herald_conn_output_own(c), HERALD_ERR_NOMEM);
  fail_at = 0;
  took = 0;
  while (herald_conn_output_size(c) > 0) {
    took += drain_part(c, 1000, got + took);
  }
  CHECK_EQ(took, 4 + 6000);
  CHECK(memcmp(got, want, took) == 0);
  /* BORROW with a release is an ordinary reference. */
  release_count = 0;
  CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, buf, 6000, HERALD_SEND_BORROW,
                            count_release, NULL),
           0);
  CHECK_EQ(herald_conn_output_own(c), 0);
  cnt = herald_conn_output(c, iov, 8);
  CHECK(cnt == 2 && iov[1].iov_base == buf);
  herald_conn_del(c);
  CHECK_EQ(release_count, 1);
}

/* Many small frames make few iovecs: one per run of copied frames. */
static void test_output_merging(void) {
  herald_conn *c = open_server(&cfg_server);
  for (int i = 0; i < 100; i++) {
    CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "0123456789abcdef", 16, 0,
                              NULL, NULL),
             0);
  }
  struct iovec iov[4];
  CHECK_EQ(herald_conn_output(c, iov, 4), 1);
  CHECK_EQ(iov[0].iov_len, 100 * 18);
  /* Partial writes interleaved with more sends keep the byte order. */
  CHECK_EQ(herald_conn_output_consumed(c, 17), 0);
  for (int i = 0; i < 1000; i++) {
    CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, "0123456789abcdef", 16, 0,
                              NULL, NULL),
             0);
    if (i % 7 == 0) {
      herald_conn_output_consumed(c, 5);
    }
  }
  size_t n;
  uint8_t *out = drain(c, &n);
  size_t total = 1100 * 18 - 17 - 5 * 143;
  CHECK_EQ(n, total);
  /* Every frame boundary lines up: the stream ends with whole frames. */
  CHECK_MEM(out + n - 18,
            "\x81\x10"
            "0123456789abcdef",
            18);
  free(out);
  herald_conn_trim(c);
  herald_conn_del(c);
}

/* A slow reader: frames copied and referenced, with distinct bytes, queued
 * while the output drains a few odd-sized bytes at a time. The bytes come
 * out exactly in order, and the queue's buffers stay within a small factor
 * of what is pending (compaction moves each byte O(1) times). */
static size_t mem_live, mem_peak;
static void *count_malloc(size_t n, void *ud) {
  (void)ud;
  size_t *p = malloc(n + 16);
  if (p == NULL) {
    return NULL;
  }
  p[0] = n;
  mem_live += n;
  if (mem_live > mem_peak) {
    mem_peak = mem_live;
  }
  return (uint8_t *)p + 16;
}
static void count_free(void *q, void *ud) {
  (void)ud;
  if (q) {
    size_t *p = (size_t *)((uint8_t *)q - 16);
    mem_live -= p[0];
    free(p);
  }
}
static void *count_realloc(void *q, size_t n, void *ud) {
  void *r = count_malloc(n, ud);
  if (r && q) {
    size_t old = ((size_t *)((uint8_t *)q - 16))[0];
    memcpy(r, q, old < n ? old : n);
    count_free(q, ud);
  }
  return r;
}

/* A slow reader: takes up to want bytes of the pending output into out
 * (as a partial write would) and returns how many. */
static size_t drain_part(herald_conn *c, size_t want, uint8_t *out) {
  struct iovec iov[4];
  int cnt = herald_conn_output(c, iov, 4);
  size_t took = 0;
  for (int k = 0; k < cnt && took < want; k++) {
    size_t m = iov[k].iov_len < want - took ? iov[k].iov_len : want - took;
    memcpy(out + took, iov[k].iov_base, m);
    took += m;
  }
  CHECK_EQ(herald_conn_output_consumed(c, took), 0);
  return took;
}

static void test_output_slow_reader(void) {
  herald_config cfg = cfg_server;
  herald_mem mem = {count_malloc, count_realloc, count_free, NULL};
  cfg.mem = &mem;
  mem_live = mem_peak = 0;
  herald_conn *c = open_server(&cfg);
  size_t base = mem_live;
  enum { N = 6000 };
  static uint8_t big[3][2000];
  uint8_t *expect = malloc((size_t)N * 2100), *got = malloc((size_t)N * 2100);
  size_t elen = 0, glen = 0, pending_peak = 0;
  for (int k = 0; k < 3; k++) {
    memset(big[k], 'A' + k, sizeof big[k]);
  }
  release_count = 0;
  for (int i = 0; i < N; i++) {
    char small[32];
    const uint8_t *p;
    size_t n;
    if (i % 5 == 4) {
      p = big[i % 3]; /* referenced: 2000 >= copy_threshold */
      n = sizeof big[0];
      CHECK_EQ(
          herald_conn_send(c, HERALD_OP_BINARY, p, n, 0, count_release, NULL),
          0);
    } else {
      n = (size_t)snprintf(small, sizeof small, "msg %d", i);
      p = (const uint8_t *)small;
      CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, p, n, 0, NULL, NULL), 0);
    }
    elen += herald_frame_header(expect + elen,
                                i % 5 == 4 ? HERALD_OP_BINARY : HERALD_OP_TEXT,
                                1, 0, n, NULL);
    memcpy(expect + elen, p, n);
    elen += n;
    /* Drain a little less than was queued: the backlog grows. */
    glen += drain_part(c, (size_t)(i % 11) * 37 + 3, got + glen);
    if (herald_conn_output_size(c) > pending_peak) {
      pending_peak = herald_conn_output_size(c);
    }
  }
  size_t n;
  uint8_t *rest = drain(c, &n);
  memcpy(got + glen, rest, n);
  glen += n;
  free(rest);
  CHECK_EQ(glen, elen);
  CHECK(memcmp(got, expect, elen) == 0);
  CHECK_EQ(release_count, N / 5);
  /* Inline bytes are a fraction of what is pending (the big payloads are
   * referenced); the buffers may be up to 4x their live bytes. */
  CHECK(mem_peak - base < 4 * pending_peak + 65536);
  free(expect);
  free(got);
  herald_conn_del(c);
  CHECK_EQ(mem_live, 0);
}

/* Sending back the message just delivered (an echo) takes its buffer over:
 * no copy, the payload's iovec is the delivered bytes, the buffer is freed
 * once written or when the connection goes, and the next message, which
 * arrives while the echo is still queued, gets a buffer of its own. A short
 * message, a reply from elsewhere and a second send of the same bytes are
 * copied as before. */
static void test_send_echo_adopts(void) {
  herald_config cfg = cfg_server;
  herald_mem mem = {count_malloc, count_realloc, count_free, NULL};
  cfg.mem = &mem;
  for (int del_early = 0; del_early <= 1; del_early++) {
    mem_live = mem_peak = 0;
    herald_conn *c = open_server(&cfg);
    enum { N = 5000 };
    static uint8_t msg[2][N], in[2 * (N + 32)];
    size_t n = 0;
    for (int k = 0; k < 2; k++) {
      memset(msg[k], 'a' + k, N);
      /* Two fragments, so the message is reassembled in the buffer. */
      cframe(in, &n, 0, 0, HERALD_OP_BINARY, msg[k], N / 2);
      cframe(in, &n, 1, 0, HERALD_OP_CONT, msg[k] + N / 2, N - N / 2);
    }
    herald_event ev;
    size_t off = 0;
    const uint8_t *first = NULL;
    for (int k = 0; k < 2; k++) {
      do {
        int rv = herald_conn_recv(c, in + off, n - off, &ev);
        CHECK(rv >= 0);
        off += (size_t)rv;
      } while (ev.type == HERALD_EV_NONE);
      CHECK_EQ(ev.type, HERALD_EV_BINARY);
      CHECK_EQ(ev.len, N);
      CHECK_MEM(ev.data, msg[k], N);
      size_t before = mem_live;
      CHECK_EQ(
          herald_conn_send(c, HERALD_OP_BINARY, ev.data, ev.len, 0, NULL, NULL),
          0);
      CHECK(mem_live - before < 64); /* the header only: no copy */
      if (k == 0) {
        first = ev.data;
        /* Sent again, the same bytes are copied. */
        CHECK_EQ(herald_conn_send(c, HERALD_OP_BINARY, ev.data, ev.len, 0, NULL,
                                  NULL),
                 0);
        CHECK(mem_live - before > N);
      }
    }
    if (del_early) {
      herald_conn_del(c); /* both buffers still queued */
      CHECK_EQ(mem_live, 0);
      continue;
    }
    struct iovec iov[8];
    int cnt = herald_conn_output(c, iov, 8);
    CHECK(cnt >= 3);
    CHECK(iov[1].iov_base == first);
    size_t olen;
    uint8_t *out = drain(c, &olen);
    uint8_t want[3 * (N + 4)];
    size_t w = 0;
    for (int k = 0; k < 3; k++) {
      w += herald_frame_header(want + w, HERALD_OP_BINARY, 1, 0, N, NULL);
      memcpy(want + w, msg[k == 2], N);
      w += N;
    }
    CHECK_EQ(olen, w);
    CHECK_MEM(out, want, w);
    free(out);
    herald_conn_trim(c);
    herald_conn_del(c);
    CHECK_EQ(mem_live, 0);
  }
}

/* Pings arrive while a slow reader leaves the head frame half written:
 * each pong goes out between frames, ahead of frames queued before it, so
 * the output buffer's offsets are out of queue order when it compacts. The
 * stream must still be every data frame in order plus one pong per ping. */
static void test_output_pongs_slow_reader(void) {
  herald_conn *c = open_server(&cfg_server);
  enum { N = 4000 };
  static uint8_t big[1500];
  memset(big, 'B', sizeof big);
  uint8_t *expect = malloc((size_t)N * 1600), *got = malloc((size_t)N * 1800);
  size_t elen = 0, glen = 0;
  int pings = 0;
  feeder f = {0};
  for (int i = 0; i < N; i++) {
    char small[64];
    const uint8_t *p = big;
    size_t n = sizeof big;
    if (i % 7 == 3) {
      CHECK_EQ(
          herald_conn_send(c, HERALD_OP_BINARY, p, n, 0, noop_release, NULL),
          0);
    } else {
      n = (size_t)snprintf(small, sizeof small, "message %d", i);
      p = (const uint8_t *)small;
      CHECK_EQ(herald_conn_send(c, HERALD_OP_TEXT, p, n, 0, NULL, NULL), 0);
    }
    elen += herald_frame_header(expect + elen,
                                i % 7 == 3 ? HERALD_OP_BINARY : HERALD_OP_TEXT,
                                1, 0, n, NULL);
    memcpy(expect + elen, p, n);
    elen += n;
    if (i % 3 != 0) {
      char ping[125];
      size_t plen = (size_t)snprintf(ping, sizeof ping, "%d", pings);
      memset(ping + plen, '.', (size_t)(i % 90));
      plen += (size_t)(i % 90);
      uint8_t in[140];
      size_t inlen = 0;
      cframe(in, &inlen, 1, 0, HERALD_OP_PING, ping, plen);
      feed(c, in, inlen, 0, &f);
      pings++;
    }
    glen += drain_part(c, (size_t)(i % 13) * 29 + 5, got + glen);
  }
  size_t n;
  uint8_t *rest = drain(c, &n);
  memcpy(got + glen, rest, n);
  glen += n;
  free(rest);
  /* Split the stream into pongs and data frames. */
  uint8_t *data = malloc(glen);
  size_t dlen = 0, pos = 0;
  int pongs = 0;
  while (pos < glen) {
    CHECK(glen - pos >= 2);
    size_t len = got[pos + 1] & 0x7f, hl = 2;
    if (len == 126) {
      len = (size_t)got[pos + 2] << 8 | got[pos + 3];
      hl = 4;
    }
    CHECK(pos + hl + len <= glen);
    if (got[pos] == 0x8a) {
      char want_id[16];
      int wl = snprintf(want_id, sizeof want_id, "%d", pongs);
      CHECK(len >= (size_t)wl && memcmp(got + pos + hl, want_id, wl) == 0);
      pongs++;
    } else {
      memcpy(data + dlen, got + pos, hl + len);
      dlen += hl + len;
    }
    pos += hl + len;
  }
  CHECK_EQ(pongs, pings);
  CHECK_EQ(dlen, elen);
  CHECK(memcmp(data, expect, elen) == 0);
  free(data);
  free(expect);
  free(got);
  feeder_free(&f);
  herald_conn_del(c);
}

/* ---- handshake glue ----------------------------------------------------- */

static void test_server_handshake(void) {
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg_server), 0);
  uint8_t buf[sizeof(sample_request)];
  memcpy(buf, sample_request, sizeof(buf));
  herald_event ev;
  /* Incomplete heads are left unconsumed. */
  CHECK_EQ(herald_conn_recv(c, buf, 50, &ev), 0);
  CHECK_EQ(ev.type, HERALD_EV_NONE);
  size_t len = sizeof(sample_request) - 1;
  CHECK_EQ(herald_conn_recv(c, buf, len, &ev), (int)len);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  const herald_request *r = ev.request;
  CHECK(r->websocket);
  CHECK_STR(r->path, "/chat");
  CHECK_STR(r->query, "room=1");
  CHECK_STR(r->origin, "http://example.com");
  CHECK_STR(r->host, "server.example.com");
  /* Until the application decides, input is refused. */
  CHECK_EQ(herald_conn_recv(c, buf, 1, &ev), HERALD_ERR_BAD_STATE);
  herald_accept bad = {.subprotocol = "other"};
  CHECK_EQ(herald_conn_accept(c, &bad), HERALD_ERR_INVALID_ARG);
  herald_header evil = {{"X-A", 3}, {"a\r\nb", 4}};
  herald_accept bad2 = {.headers = &evil, .nheaders = 1};
  CHECK_EQ(herald_conn_accept(c, &bad2), HERALD_ERR_INVALID_ARG);
  herald_header extra = {{"X-Server", 8}, {"herald", 6}};
  herald_accept a = {.subprotocol = "chat", .headers = &extra, .nheaders = 1};
  CHECK_EQ(herald_conn_accept(c, &a), 0);
  CHECK_EQ(herald_conn_state(c), HERALD_STATE_OPEN);
  size_t n;
  char *out = (char *)drain(c, &n);
  out[n] = 0;
  CHECK(strncmp(out, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
  CHECK(strstr(out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  CHECK(strstr(out, "Sec-WebSocket-Protocol: chat\r\n"));
  CHECK(strstr(out, "X-Server: herald\r\n"));
  CHECK(n >= 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
  free(out);
  CHECK_EQ(herald_conn_accept(c, NULL), HERALD_ERR_BAD_STATE);
  herald_conn_del(c);
}

static char *refusal(const char *req, int *err) {
  herald_conn *c;
  herald_config cfg = cfg_server;
  cfg.max_head_bytes = 1024;
  cfg.max_headers = 8;
  herald_conn_new(&c, &cfg);
  size_t len = strlen(req);
  uint8_t *buf = malloc(len + 1);
  memcpy(buf, req, len);
  herald_event ev;
  *err = herald_conn_recv(c, buf, len, &ev);
  size_t n;
  char *out = (char *)drain(c, &n);
  out[n] = 0;
  if (*err < 0) {
    CHECK(herald_conn_done(c));
    CHECK(strlen(herald_conn_error_reason(c)) > 0);
  }
  free(buf);
  herald_conn_del(c);
  return out;
}

static void test_handshake_refusals(void) {
  int err;
  char *out;
  out = refusal("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: "
                "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
                &err);
  CHECK_EQ(err, HERALD_ERR_HANDSHAKE);
  CHECK(strncmp(out, "HTTP/1.1 426 ", 13) == 0);
  CHECK(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
  free(out);
  out = refusal("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: short\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n",
                &err);
  CHECK_EQ(err, HERALD_ERR_HANDSHAKE);
  CHECK(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
  free(out);
  out = refusal("GET / HTTP/1.1\nHost: a\n\n", &err);
  CHECK_EQ(err, HERALD_ERR_HTTP);
  CHECK(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
  free(out);
  /* Too many headers: 431. */
  out = refusal("GET / HTTP/1.1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\n"
                "A: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\n\r\n",
                &err);
  CHECK_EQ(err, HERALD_ERR_HEAD_TOO_BIG);
  CHECK(strncmp(out, "HTTP/1.1 431 ", 13) == 0);
  free(out);
  /* A head that never ends within max_head_bytes: 431. */
  char big[1100];
  memset(big, 'a', sizeof(big));
  memcpy(big, "GET /", 5);
  big[sizeof(big) - 1] = 0;
  out = refusal(big, &err);
  CHECK_EQ(err, HERALD_ERR_HEAD_TOO_BIG);
  CHECK(strncmp(out, "HTTP/1.1 431 ", 13) == 0);
  free(out);
}

/* Plain HTTP answered by the core: keep-alive, then close. */
static void test_respond(void) {
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg_server), 0);
  const char *req = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                    "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  size_t len = strlen(req);
  uint8_t *buf = malloc(len);
  memcpy(buf, req, len);
  herald_event ev;
  int rv = herald_conn_recv(c, buf, len, &ev);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  CHECK_EQ(herald_conn_respond(c, 101, NULL, 0, NULL, 0, 1),
           HERALD_ERR_INVALID_ARG);
  herald_header ct = {{"Content-Type", 12}, {"text/plain", 10}};
  CHECK_EQ(herald_conn_respond(c, 200, &ct, 1, "ok", 2, 1), 0);
  CHECK_EQ(herald_conn_state(c), HERALD_STATE_CONNECTING);
  size_t n;
  char *out = (char *)drain(c, &n);
  out[n] = 0;
  CHECK(strcmp(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    "Content-Length: 2\r\n\r\nok") == 0);
  free(out);
  rv = herald_conn_recv(c, buf + rv, len - (size_t)rv, &ev);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  CHECK_STR(ev.request->path, "/b");
  CHECK_EQ(herald_conn_respond(c, 503, NULL, 0, NULL, 0, 0), 0);
  CHECK_EQ(herald_conn_respond(c, 503, NULL, 0, NULL, 0, 0),
           HERALD_ERR_BAD_STATE);
  out = (char *)drain(c, &n);
  out[n] = 0;
  CHECK(strstr(out, "Connection: close\r\n") != NULL);
  CHECK(herald_conn_done(c));
  free(out);
  free(buf);
  herald_conn_del(c);
}

/* RFC 9112: empty lines before a request are skipped (a few); a plain
 * HTTP/1.1 request needs exactly one Host. */
static void test_plain_http_checks(void) {
  int err;
  char *out = refusal("GET / HTTP/1.1\r\nX: y\r\n\r\n", &err);
  CHECK_EQ(err, HERALD_ERR_HTTP);
  CHECK(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
  CHECK(strstr(out, "Host") != NULL);
  free(out);
  out = refusal("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &err);
  CHECK_EQ(err, HERALD_ERR_HTTP);
  free(out);
  out = refusal("\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &err);
  CHECK_EQ(err, HERALD_ERR_HTTP);
  free(out);
  /* HTTP/1.0 without Host is fine; one leading CRLF is skipped. */
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg_server), 0);
  const char *req = "\r\nGET /x HTTP/1.0\r\n\r\n";
  feeder f = {0};
  feed(c, (const uint8_t *)req, strlen(req), 1, &f);
  CHECK(f.log.s && strcmp(f.log.s, "REQUEST(ws=0) ") == 0);
  feeder_free(&f);
  herald_conn_del(c);
}

/* A plain HTTP request is handed over; reset waits for the next one, and
 * reject answers with a status. */
static void test_plain_http(void) {
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg_server), 0);
  const char *req = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
                    "POST /api/publish HTTP/1.1\r\nHost: a\r\n"
                    "Content-Length: 2\r\n\r\n{}";
  size_t len = strlen(req);
  uint8_t *buf = malloc(len);
  memcpy(buf, req, len);
  herald_event ev;
  int rv = herald_conn_recv(c, buf, len, &ev);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  CHECK(!ev.request->websocket);
  CHECK_STR(ev.request->path, "/health");
  CHECK_EQ(herald_conn_accept(c, NULL), HERALD_ERR_BAD_STATE);
  CHECK_EQ(herald_conn_reset(c), 0);
  size_t off = (size_t)rv;
  rv = herald_conn_recv(c, buf + off, len - off, &ev);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  CHECK_STR(ev.request->method, "POST");
  CHECK_STR(ev.request->content_length, "2");
  CHECK_EQ(herald_conn_reject(c, 200, NULL, NULL, 0), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_reject(c, 404, "no such endpoint", NULL, 0), 0);
  CHECK_EQ(herald_conn_state(c), HERALD_STATE_CLOSED);
  size_t n;
  char *out = (char *)drain(c, &n);
  out[n] = 0;
  CHECK(strncmp(out, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
  CHECK(strstr(out, "\r\n\r\nno such endpoint\n") != NULL);
  free(out);
  free(buf);
  herald_conn_del(c);
}

static void test_client_handshake_failures(void) {
  const char *responses[] = {
      "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
      ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n"),
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
      "garbage\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(responses) / sizeof(responses[0]); i++) {
    herald_conn *c;
    CHECK_EQ(herald_conn_new(&c, &cfg_client), 0);
    herald_client_opts o = {.host = "h", .path = "/"};
    CHECK_EQ(herald_conn_client_start(c, &o), 0);
    CHECK_EQ(herald_conn_client_start(c, &o), HERALD_ERR_BAD_STATE);
    size_t n;
    free(drain(c, &n));
    size_t len = strlen(responses[i]);
    uint8_t *buf = malloc(len);
    memcpy(buf, responses[i], len);
    herald_event ev;
    int rv = herald_conn_recv(c, buf, len, &ev);
    CHECK(rv == HERALD_ERR_HANDSHAKE || rv == HERALD_ERR_HTTP);
    CHECK(strlen(herald_conn_error_reason(c)) > 0);
    CHECK_EQ(herald_conn_state(c), HERALD_STATE_CLOSED);
    CHECK(herald_conn_done(c));
    free(buf);
    herald_conn_del(c);
  }
  herald_conn *c;
  CHECK_EQ(herald_conn_new(&c, &cfg_client), 0);
  herald_client_opts bad = {.host = "h\r\nX: y"};
  CHECK_EQ(herald_conn_client_start(c, &bad), HERALD_ERR_INVALID_ARG);
  const char *p[] = {"bad token"};
  herald_client_opts bad2 = {
      .host = "h", .subprotocols = p, .nsubprotocols = 1};
  CHECK_EQ(herald_conn_client_start(c, &bad2), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_client_start(c, NULL), HERALD_ERR_INVALID_ARG);
  herald_conn_del(c);
}

/* A full conversation between our client and our server. */
static void test_pair_conversation(void) {
  herald_conn *srv, *cli;
  open_pair(&srv, &cli);
  static uint8_t big[70000];
  for (size_t i = 0; i < sizeof(big); i++) {
    big[i] = (uint8_t)(i * 7);
  }
  CHECK_EQ(
      herald_conn_send(cli, HERALD_OP_BINARY, big, sizeof(big), 0, NULL, NULL),
      0);
  CHECK_EQ(herald_conn_send(cli, HERALD_OP_TEXT, "h\xc3\xa9", 3, 0, NULL, NULL),
           0);
  feeder f = {0};
  pump(cli, srv, &f);
  tlog want = {0};
  tlog_printf(&want, "BIN(");
  tlog_data(&want, big, sizeof(big));
  tlog_printf(&want, ") TEXT(68c3a9) ");
  CHECK(strcmp(f.log.s, want.s) == 0);
  CHECK_EQ(herald_conn_send(srv, HERALD_OP_BINARY, big, sizeof(big), 0,
                            count_release, NULL),
           0);
  feeder f2 = {0};
  pump(srv, cli, &f2);
  CHECK(strcmp(f2.log.s, want.s + 0) != 0); /* only the binary went back */
  CHECK(strncmp(f2.log.s, want.s, strlen("BIN(len=70000")) == 0);
  free(want.s);
  feeder_free(&f);
  feeder_free(&f2);
  herald_conn_del(srv);
  herald_conn_del(cli);
}

/* ---- failing allocator -------------------------------------------------- */

static void *fm_malloc(size_t n, void *ud) {
  (void)ud;
  return ++alloc_count == fail_at ? NULL : malloc(n);
}
static void *fm_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return ++alloc_count == fail_at ? NULL : realloc(p, n);
}
static void fm_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

/* Runs a whole conversation failing the 1st, 2nd, ... allocation: each run
 * must end in a clean error, never a crash or a leak (ASan checks). */
static void test_failmalloc(void) {
  herald_mem fm = {fm_malloc, fm_realloc, fm_free, NULL};
  int completed = 0;
  for (fail_at = 1; fail_at < 60 && !completed; fail_at++) {
    alloc_count = 0;
    herald_config scfg = cfg_server, ccfg = cfg_client;
    scfg.mem = &fm;
    ccfg.mem = &fm;
    herald_conn *srv = NULL, *cli = NULL;
    if (herald_conn_new(&srv, &scfg) != 0 ||
        herald_conn_new(&cli, &ccfg) != 0) {
      herald_conn_del(srv);
      continue;
    }
    herald_client_opts o = {.host = "h"};
    int ok = herald_conn_client_start(cli, &o) == 0;
    feeder f = {0};
    if (ok) {
      pump(cli, srv, &f);
      ok = f.err == 0 && herald_conn_accept(srv, NULL) == 0;
    }
    if (ok) {
      pump(srv, cli, &f);
      ok = f.err == 0 &&
           herald_conn_send(cli, HERALD_OP_TEXT, "a", 1, HERALD_SEND_MORE, NULL,
                            NULL) == 0 &&
           herald_conn_send(cli, HERALD_OP_TEXT, "b", 1, 0, NULL, NULL) == 0 &&
           herald_conn_ping(cli, "p", 1) == 0;
    }
    if (ok) {
      pump(cli, srv, &f);
      ok = f.err == 0 && herald_conn_close(srv, 1000, "", 0) == 0;
    }
    if (ok) {
      pump(srv, cli, &f);
      pump(cli, srv, &f);
      completed = f.err == 0 && herald_conn_done(srv) && herald_conn_done(cli);
    }
    feeder_free(&f);
    herald_conn_del(srv);
    herald_conn_del(cli);
  }
  CHECK(completed); /* eventually every allocation succeeds */
}

/* ---- standalone helpers ------------------------------------------------- */

static void test_errors_table(void) {
  CHECK_EQ(herald_err_close_code(HERALD_ERR_PROTO), 1002);
  CHECK_EQ(herald_err_close_code(HERALD_ERR_BAD_UTF8), 1007);
  CHECK_EQ(herald_err_close_code(HERALD_ERR_POLICY), 1008);
  CHECK_EQ(herald_err_close_code(HERALD_ERR_TOO_BIG), 1009);
  CHECK_EQ(herald_err_close_code(HERALD_ERR_BUSY), 1013);
  CHECK_EQ(herald_err_close_code(HERALD_ERR_INVALID_ARG), 0);
  CHECK(herald_err_is_fatal(HERALD_ERR_NOMEM));
  CHECK(!herald_err_is_fatal(HERALD_ERR_PROTO));
  CHECK(strcmp(herald_err_name(HERALD_ERR_CLOSED), "HERALD_ERR_CLOSED") == 0);
  CHECK(strcmp(herald_strerror(12345), "unknown error") == 0);
  CHECK(strcmp(herald_strerror(0), "success") == 0);
}

static void test_frame_header(void) {
  uint8_t h[HERALD_MAX_FRAME_HEADER];
  CHECK_EQ(herald_frame_header(h, HERALD_OP_TEXT, 1, 0, 125, NULL), 2);
  CHECK_EQ(herald_frame_header(h, HERALD_OP_TEXT, 1, 0, 126, NULL), 4);
  CHECK_EQ(herald_frame_header(h, HERALD_OP_TEXT, 1, 0, 65535, NULL), 4);
  CHECK_EQ(herald_frame_header(h, HERALD_OP_TEXT, 1, 0, 65536, NULL), 10);
  CHECK_EQ(herald_frame_header(h, HERALD_OP_BINARY, 0, 0x40, 65536, test_key),
           14);
  CHECK_EQ(h[0], 0x42);
  CHECK_EQ(h[1], 0xff);
  CHECK_EQ(h[7], 1);
  CHECK_MEM(h + 10, test_key, 4);
}

int main(void) {
  configs();
  RUN(test_errors_table);
  RUN(test_frame_header);
  RUN(test_rfc_examples_client);
  RUN(test_rfc_examples_server);
  RUN(test_auto_pong);
  RUN(test_pong_every_ping);
  RUN(test_pong_every_ping_client);
  RUN(test_pong_limit);
  RUN(test_pong_priority);
  RUN(test_fragmented_with_control);
  RUN(test_utf8_across_fragments);
  RUN(test_streaming_large);
  RUN(test_zero_copy_delivery);
  RUN(test_protocol_errors);
  RUN(test_client_rejects_masked);
  RUN(test_utf8_fail_fast);
  RUN(test_limits);
  RUN(test_budget);
  RUN(test_close_codes);
  RUN(test_close_handshake_server_first);
  RUN(test_close_handshake_client_first);
  RUN(test_close_args);
  RUN(test_eof);
  RUN(test_eof_states);
  RUN(test_streaming_switch);
  RUN(test_send_states_and_args);
  RUN(test_send_zero_copy);
  RUN(test_send_borrow);
  RUN(test_output_merging);
  RUN(test_output_slow_reader);
  RUN(test_output_pongs_slow_reader);
  RUN(test_send_echo_adopts);
  RUN(test_server_handshake);
  RUN(test_handshake_refusals);
  RUN(test_plain_http);
  RUN(test_plain_http_checks);
  RUN(test_respond);
  RUN(test_client_handshake_failures);
  RUN(test_pair_conversation);
  RUN(test_failmalloc);
  return TEST_REPORT();
}
