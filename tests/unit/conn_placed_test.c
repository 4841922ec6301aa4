/* conn_placed_test.c - reading a large payload straight into the message
 * buffer (herald_conn_recv_room, herald_conn_recv_placed): the room offered
 * is exactly the rest of the frame, bytes read there give the same message
 * and the same errors as through herald_conn_recv, and no room is offered
 * where the bytes could not stay where they are read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "wsfeed.h"

static const char request[] = "GET / HTTP/1.1\r\n"
                              "Host: h\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "\r\n";

static herald_conn *open_server(const herald_config *cfg) {
  herald_conn *c = NULL;
  CHECK_EQ(herald_conn_new(&c, cfg), 0);
  uint8_t buf[sizeof(request)];
  memcpy(buf, request, sizeof(buf));
  herald_event ev;
  CHECK_EQ(herald_conn_recv(c, buf, sizeof(request) - 1, &ev),
           (int)sizeof(request) - 1);
  CHECK_EQ(ev.type, HERALD_EV_REQUEST);
  CHECK_EQ(herald_conn_accept(c, NULL), 0);
  size_t n;
  free(drain(c, &n));
  return c;
}

/* Feeds wire[0..n) the way ws.c reads: through herald_conn_recv while no
 * room is offered, else at most `step` bytes copied into the room (as a
 * readv would put them) and handed over with herald_conn_recv_placed.
 * Records the message(s) delivered in *got (concatenated) and returns the
 * first error, or 0; *placed counts the bytes that went in place. */
static int feed_placed(herald_conn *c, const uint8_t *wire, size_t n,
                       size_t step, uint8_t *got, size_t *gotlen,
                       size_t *placed, int *messages) {
  uint8_t *buf = malloc(step + 64);
  size_t pos = 0, have = 0;
  *gotlen = *placed = 0;
  *messages = 0;
  while (pos < n || have > 0) {
    herald_event ev;
    size_t room = 0;
    uint8_t *at = have == 0 ? herald_conn_recv_room(c, &room) : NULL;
    if (at != NULL) {
      CHECK(room > 0);
      size_t take = n - pos < step ? n - pos : step;
      take = take < room ? take : room;
      if (take == 0) {
        break;
      }
      memcpy(at, wire + pos, take);
      pos += take;
      *placed += take;
      int rv = herald_conn_recv_placed(c, take, &ev);
      if (rv < 0) {
        free(buf);
        return rv;
      }
      CHECK_EQ(rv, (int)take);
      if (ev.type == HERALD_EV_BINARY || ev.type == HERALD_EV_TEXT) {
        memcpy(got + *gotlen, ev.data, ev.len);
        *gotlen += ev.len;
        (*messages)++;
      }
      continue;
    }
    size_t take = n - pos < step ? n - pos : step;
    memcpy(buf + have, wire + pos, take);
    have += take;
    pos += take;
    size_t off = 0;
    for (;;) {
      int rv = herald_conn_recv(c, buf + off, have - off, &ev);
      if (rv < 0) {
        free(buf);
        return rv;
      }
      off += (size_t)rv;
      if (ev.type == HERALD_EV_NONE) {
        break;
      }
      if (ev.type == HERALD_EV_BINARY || ev.type == HERALD_EV_TEXT) {
        memcpy(got + *gotlen, ev.data, ev.len);
        *gotlen += ev.len;
        (*messages)++;
      }
    }
    memmove(buf, buf + off, have - off);
    have -= off;
    if (take == 0 && off == 0) {
      break;
    }
  }
  free(buf);
  return 0;
}

static uint8_t *pattern(size_t n, unsigned seed) {
  uint8_t *p = malloc(n);
  for (size_t i = 0; i < n; i++) {
    p[i] = (uint8_t)('a' + (i * 7 + seed) % 26);
  }
  return p;
}

/* A 64 KiB binary frame and a 200 KiB text frame, then a short message:
 * most of each large payload goes in place, in every read size, and the
 * messages are the ones sent. */
static void test_messages_in_place(void) {
  herald_config cfg;
  herald_config_init(&cfg, HERALD_ROLE_SERVER);
  size_t a = 65536, b = 200 << 10;
  uint8_t *pa = pattern(a, 1), *pb = pattern(b, 2);
  uint8_t *wire = malloc(a + b + 64);
  size_t n = 0;
  n += mkframe(wire + n, 1, 0, HERALD_OP_BINARY, pa, a, test_key);
  n += mkframe(wire + n, 1, 0, HERALD_OP_TEXT, pb, b, test_key);
  n += mkframe(wire + n, 1, 0, HERALD_OP_TEXT, "end", 3, test_key);
  uint8_t *got = malloc(a + b + 3);
  size_t steps[] = {1000, 4096, 65536, 70000, 256 << 10};
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    herald_conn *c = open_server(&cfg);
    size_t gotlen, placed;
    int msgs;
    CHECK_EQ(feed_placed(c, wire, n, steps[i], got, &gotlen, &placed, &msgs),
             0);
    CHECK_EQ(msgs, 3);
    CHECK_EQ(gotlen, a + b + 3);
    CHECK_MEM(got, pa, a);
    CHECK_MEM(got + a, pb, b);
    CHECK_MEM(got + a + b, "end", 3);
    if (steps[i] < a) {
      /* All but the first read of each frame lands in place. */
      CHECK(placed >= a + b - 2 * steps[i]);
    }
    herald_conn_del(c);
  }
  free(pa);
  free(pb);
  free(wire);
  free(got);
}

/* A fragmented message: each frame's rest goes in place, the message is
 * whole at the end. */
static void test_fragments_in_place(void) {
  herald_config cfg;
  herald_config_init(&cfg, HERALD_ROLE_SERVER);
  size_t part = 40000;
  uint8_t *p = pattern(3 * part, 3);
  uint8_t *wire = malloc(3 * part + 64);
  size_t n = 0;
  for (int i = 0; i < 3; i++) {
    n += mkframe(wire + n, i == 2, 0, i ? HERALD_OP_CONT : HERALD_OP_BINARY,
                 p + part * (size_t)i, part, test_key);
  }
  uint8_t *got = malloc(3 * part);
  herald_conn *c = open_server(&cfg);
  size_t gotlen, placed;
  int msgs;
  CHECK_EQ(feed_placed(c, wire, n, 3000, got, &gotlen, &placed, &msgs), 0);
  CHECK_EQ(msgs, 1);
  CHECK_EQ(gotlen, 3 * part);
  CHECK_MEM(got, p, 3 * part);
  CHECK(placed > 2 * part);
  herald_conn_del(c);
  free(p);
  free(wire);
  free(got);
}

/* Invalid UTF-8 read in place fails the connection as it would otherwise:
 * close 1007, and the error sticks. */
static void test_utf8_error_in_place(void) {
  herald_config cfg;
  herald_config_init(&cfg, HERALD_ROLE_SERVER);
  size_t len = 100000;
  uint8_t *p = pattern(len, 4);
  p[90000] = 0xff;
  uint8_t *wire = malloc(len + 16);
  size_t n = mkframe(wire, 1, 0, HERALD_OP_TEXT, p, len, test_key);
  uint8_t *got = malloc(len);
  herald_conn *c = open_server(&cfg);
  size_t gotlen, placed;
  int msgs;
  CHECK_EQ(feed_placed(c, wire, n, 8192, got, &gotlen, &placed, &msgs),
           HERALD_ERR_BAD_UTF8);
  CHECK(placed > 0);
  CHECK_EQ(msgs, 0);
  CHECK_EQ(herald_conn_state(c), HERALD_STATE_CLOSED);
  size_t room = 1;
  CHECK(herald_conn_recv_room(c, &room) == NULL);
  CHECK_EQ(room, 0);
  size_t olen;
  uint8_t *out = drain(c, &olen);
  CHECK(olen >= 4);
  CHECK_EQ(out[0], 0x88);
  CHECK_EQ(out[2] << 8 | out[3], 1007);
  /* The same bytes through herald_conn_recv: the same error and answer. */
  herald_conn *plain = open_server(&cfg);
  feeder f = {0};
  feed(plain, wire, n, 8192, &f);
  CHECK_EQ(f.err, HERALD_ERR_BAD_UTF8);
  size_t plen;
  uint8_t *pout = drain(plain, &plen);
  CHECK_EQ(plen, olen);
  CHECK_MEM(pout, out, olen);
  free(pout);
  free(out);
  feeder_free(&f);
  herald_conn_del(plain);
  herald_conn_del(c);
  free(p);
  free(wire);
  free(got);
}

/* No room where bytes could not stay where read: between frames, before a
 * frame's payload has a buffer, streamed and compressed messages. A wrong
 * count is refused with nothing changed. */
static void test_no_room(void) {
  herald_config cfg;
  herald_config_init(&cfg, HERALD_ROLE_SERVER);
  herald_conn *c = open_server(&cfg);
  size_t room = 5;
  herald_event ev;
  CHECK(herald_conn_recv_room(c, &room) == NULL); /* RD_HEAD */
  CHECK_EQ(room, 0);
  CHECK_EQ(herald_conn_recv_placed(c, 1, &ev), HERALD_ERR_INVALID_ARG);
  /* The header alone: no buffer yet. */
  size_t len = 70000;
  uint8_t *p = pattern(len, 5);
  uint8_t *wire = malloc(len + 16);
  size_t n = mkframe(wire, 1, 0, HERALD_OP_BINARY, p, len, test_key);
  CHECK_EQ(herald_conn_recv(c, wire, 14, &ev), 14);
  CHECK(herald_conn_recv_room(c, &room) == NULL);
  /* A first chunk: the buffer now holds the whole frame's room. */
  CHECK_EQ(herald_conn_recv(c, wire + 14, 100, &ev), 100);
  uint8_t *at = herald_conn_recv_room(c, &room);
  CHECK(at != NULL);
  CHECK_EQ(room, len - 100);
  CHECK_EQ(herald_conn_recv_placed(c, 0, &ev), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_recv_placed(c, room + 1, &ev), HERALD_ERR_INVALID_ARG);
  CHECK_EQ(herald_conn_state(c), HERALD_STATE_OPEN);
  /* The rest through the plain path still works after the refusals. */
  CHECK_EQ(herald_conn_recv(c, wire + 114, n - 114, &ev), (int)(n - 114));
  CHECK_EQ(ev.type, HERALD_EV_BINARY);
  CHECK_EQ(ev.len, len);
  CHECK_MEM(ev.data, p, len);
  herald_conn_del(c);

  /* Streamed: the chunks are delivered where they are read. */
  herald_config scfg = cfg;
  scfg.stream_messages = 1;
  c = open_server(&scfg);
  CHECK_EQ(herald_conn_recv(c, wire, 114, &ev), 114);
  CHECK(herald_conn_recv_room(c, &room) == NULL);
  herald_conn_del(c);
  free(p);
  free(wire);
}

/* With a budget, a message read in place counts against it until it is
 * delivered, as one read through herald_conn_recv does. */
static void test_budget_in_place(void) {
  herald_config cfg;
  herald_config_init(&cfg, HERALD_ROLE_SERVER);
  herald_budget *b;
  CHECK_EQ(herald_budget_new(&b, 1 << 20, NULL), 0);
  cfg.budget = b;
  size_t len = 300000;
  uint8_t *p = pattern(len, 6);
  uint8_t *wire = malloc(len + 16);
  size_t n = mkframe(wire, 1, 0, HERALD_OP_BINARY, p, len, test_key);
  herald_conn *c = open_server(&cfg);
  herald_event ev;
  CHECK_EQ(herald_conn_recv(c, wire, 1000, &ev), 1000);
  CHECK(herald_budget_used(b) >= len);
  size_t room;
  uint8_t *at = herald_conn_recv_room(c, &room);
  CHECK(at != NULL);
  CHECK_EQ(room, n - 1000);
  memcpy(at, wire + 1000, room);
  CHECK_EQ(herald_conn_recv_placed(c, room, &ev), (int)room);
  CHECK_EQ(ev.type, HERALD_EV_BINARY);
  CHECK_MEM(ev.data, p, len);
  CHECK_EQ(herald_budget_used(b), 0);
  herald_conn_del(c);
  herald_budget_del(b);
  free(p);
  free(wire);
}

int main(void) {
  RUN(test_messages_in_place);
  RUN(test_fragments_in_place);
  RUN(test_utf8_error_in_place);
  RUN(test_no_room);
  RUN(test_budget_in_place);
  return TEST_REPORT();
}
