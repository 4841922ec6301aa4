/*
 * core_drive.c - a deterministic echo through the protocol core, for
 * callgrind (bench/callgrind/run.sh). A client and a server connection are
 * paired in memory; COUNT messages of SIZE bytes (each in FRAGS frames) are
 * prepared first, then measure() hands them to the receiving side in reads
 * of CHUNK bytes (bytes of an incomplete unit are presented again, as the
 * runtime does) and echoes every message or chunk with herald_conn_send(),
 * writing the output out after every read. Only measure() is counted.
 *
 * usage: core_drive SIZE COUNT CHUNK FRAGS [DEFLATE [STREAM [CLIENT [BUDGET]]]]
 *   DEFLATE 1: permessage-deflate agreed; STREAM 1: streaming delivery;
 *   CLIENT 1: the client receives and echoes (server frames, masked sends);
 *   BUDGET 1: both draw on a shared herald_budget (as a herald_server's
 *   connections do).
 * Environment: CORE_DRIVE_PAYLOAD=FILE: message i is SIZE bytes of FILE from
 * offset i * 102947 (mod its length) instead of `abc...z` repeated;
 * CORE_DRIVE_LEVEL, CORE_DRIVE_MEM_LEVEL and CORE_DRIVE_FAST_MIN set
 * deflate.level, deflate.mem_level and deflate.fast_min_size (0: zlib
 * only) of both sides. "out" is the bytes the measured side
 * wrote, so out / (SIZE * COUNT) is its compression ratio.
 * CORE_DRIVE_PLACED=1: read as the runtime does on epoll, the rest of a
 * large frame straight into the message buffer (herald_conn_recv_room and
 * herald_conn_recv_placed); the copy into that room stands for the
 * kernel's and is not counted (kernel_copy), as the copy into the read
 * buffer is not in the plain mode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/core.h"

static uint8_t *wire;
static size_t wlen, wcap, outbytes;

static void take_output(herald_conn *c, int keep) {
  struct iovec iov[64];
  int n;
  while ((n = herald_conn_output(c, iov, 64)) > 0) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
      if (keep) {
        if (wlen + iov[i].iov_len > wcap) {
          wcap = (wlen + iov[i].iov_len) * 2;
          wire = realloc(wire, wcap);
        }
        memcpy(wire + wlen, iov[i].iov_base, iov[i].iov_len);
        wlen += iov[i].iov_len;
      }
      total += iov[i].iov_len;
    }
    herald_conn_output_consumed(c, total);
  }
}

static int placed_mode;

/* The kernel's copy into the room of a placed read: not counted (run.sh
 * toggles collection off inside it). */
__attribute__((noinline)) void kernel_copy(uint8_t *to, const uint8_t *from,
                                           size_t n) {
  memcpy(to, from, n);
}

static void echo(herald_conn *s, const herald_event *ev, long *msgs) {
  herald_conn_send(
      s, ev->type == HERALD_EV_TEXT ? HERALD_OP_TEXT : HERALD_OP_BINARY,
      ev->data, ev->len, ev->fin ? 0 : HERALD_SEND_MORE, NULL, NULL);
  (*msgs)++;
}

/* The measured part: the server reads buf in chunks of `chunk` bytes (as a
 * socket would hand them) and echoes each message. */
__attribute__((noinline)) long measure(herald_conn *s, uint8_t *buf, size_t len,
                                       size_t chunk) {
  long msgs = 0;
  size_t off = 0, have = 0;
  while (off < len) {
    size_t n = len - off < chunk ? len - off : chunk;
    size_t skip = 0, room = 0;
    uint8_t *at =
        placed_mode && have == 0 ? herald_conn_recv_room(s, &room) : NULL;
    if (at != NULL) {
      herald_event ev;
      skip = n < room ? n : room;
      kernel_copy(at, buf + off, skip);
      if (herald_conn_recv_placed(s, skip, &ev) < 0) {
        fprintf(stderr, "server recv placed failed\n");
        exit(1);
      }
      if (ev.type == HERALD_EV_TEXT || ev.type == HERALD_EV_BINARY) {
        echo(s, &ev, &msgs);
      }
    }
    /* unconsumed bytes (have) stay in front: as the runtime keeps them */
    uint8_t *p = buf + off + skip - have;
    size_t plen = have + n - skip;
    size_t used = 0;
    for (; plen > 0;) {
      herald_event ev;
      int r = herald_conn_recv(s, p + used, plen - used, &ev);
      if (r < 0) {
        fprintf(stderr, "server recv: %s\n", herald_strerror(r));
        exit(1);
      }
      used += (size_t)r;
      if (ev.type == HERALD_EV_TEXT || ev.type == HERALD_EV_BINARY) {
        echo(s, &ev, &msgs);
      } else if (ev.type == HERALD_EV_NONE) {
        break;
      }
    }
    have = plen - used;
    off += n;
    struct iovec iov[64];
    int cnt;
    while ((cnt = herald_conn_output(s, iov, 64)) > 0) {
      size_t total = 0;
      for (int i = 0; i < cnt; i++) {
        total += iov[i].iov_len;
      }
      herald_conn_output_consumed(s, total);
      outbytes += total;
    }
  }
  return msgs;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: core_drive SIZE COUNT CHUNK FRAGS [DEFLATE "
                    "[STREAM [CLIENT [BUDGET]]]]\n");
    return 2;
  }
  size_t size = strtoul(argv[1], NULL, 0);
  long count = strtol(argv[2], NULL, 0);
  size_t chunk = strtoul(argv[3], NULL, 0);
  int frags = atoi(argv[4]);
  int deflate = argc > 5 && atoi(argv[5]);
  int stream = argc > 6 && atoi(argv[6]);
  int client = argc > 7 && atoi(argv[7]); /* measure the client side */
  /* a shared budget for unfinished messages (no limit: it only counts) */
  herald_budget *budget = NULL;
  if (argc > 8 && atoi(argv[8])) {
    herald_budget_new(&budget, 0, NULL);
  }
  herald_config scfg, ccfg;
  herald_config_init(&scfg, HERALD_ROLE_SERVER);
  herald_config_init(&ccfg, HERALD_ROLE_CLIENT);
  scfg.deflate.enabled = ccfg.deflate.enabled = deflate;
  if (getenv("CORE_DRIVE_LEVEL")) {
    scfg.deflate.level = ccfg.deflate.level = atoi(getenv("CORE_DRIVE_LEVEL"));
  }
  if (getenv("CORE_DRIVE_MEM_LEVEL")) {
    scfg.deflate.mem_level = ccfg.deflate.mem_level =
        atoi(getenv("CORE_DRIVE_MEM_LEVEL"));
  }
  if (getenv("CORE_DRIVE_FAST_MIN")) {
    scfg.deflate.fast_min_size = ccfg.deflate.fast_min_size =
        (size_t)atol(getenv("CORE_DRIVE_FAST_MIN"));
  }
  scfg.stream_messages = stream;
  scfg.budget = ccfg.budget = budget;
  herald_conn *s, *c;
  herald_conn_new(&s, &scfg);
  herald_conn_new(&c, &ccfg);
  herald_client_opts o = {.host = "x"};
  herald_conn_client_start(c, &o);
  wlen = 0;
  take_output(c, 1);
  herald_event ev;
  if (herald_conn_recv(s, wire, wlen, &ev) <= 0 ||
      ev.type != HERALD_EV_REQUEST || herald_conn_accept(s, NULL) != 0) {
    fprintf(stderr, "server handshake\n");
    return 1;
  }
  wlen = 0;
  take_output(s, 1);
  if (herald_conn_recv(c, wire, wlen, &ev) <= 0 || ev.type != HERALD_EV_OPEN) {
    fprintf(stderr, "client handshake\n");
    return 1;
  }
  uint8_t *msg = malloc(size + 1);
  for (size_t i = 0; i < size; i++) {
    msg[i] = (uint8_t)('a' + i % 26);
  }
  uint8_t *corpus = NULL;
  size_t clen = 0;
  const char *payload = getenv("CORE_DRIVE_PAYLOAD");
  if (payload != NULL) {
    FILE *f = fopen(payload, "rb");
    corpus = malloc((size_t)1 << 26);
    clen = f && corpus ? fread(corpus, 1, (size_t)1 << 26, f) : 0;
    if (f) {
      fclose(f);
    }
    if (clen <= size) {
      fprintf(stderr, "%s: shorter than SIZE\n", payload);
      return 1;
    }
  }
  herald_conn *from = client ? s : c, *to = client ? c : s;
  if (client) {
    herald_conn_set_streaming(c, stream);
  }
  wlen = 0;
  for (long i = 0; i < count; i++) {
    size_t per = size / (size_t)frags, off = 0;
    if (corpus != NULL) {
      memcpy(msg, corpus + (size_t)i * 102947 % (clen - size), size);
    }
    for (int f = 0; f < frags; f++) {
      size_t n = f == frags - 1 ? size - off : per;
      herald_conn_send(from, HERALD_OP_TEXT, msg + off, n,
                       f == frags - 1 ? 0 : HERALD_SEND_MORE, NULL, NULL);
      off += n;
    }
    take_output(from, 1);
  }
  uint8_t *buf = malloc(wlen);
  memcpy(buf, wire, wlen);
  outbytes = 0;
  const char *pm = getenv("CORE_DRIVE_PLACED");
  placed_mode = pm != NULL && strcmp(pm, "1") == 0;
  long msgs = measure(to, buf, wlen, chunk);
  printf("messages %ld (%ld expected), wire %zu, out %zu\n", msgs,
         count * frags, wlen, outbytes);
  herald_conn_del(s);
  herald_conn_del(c);
  herald_budget_del(budget);
  free(corpus);
  return 0;
}
