/* fuzz_conn.h - shared body of the connection fuzzers. The first input byte
 * picks the delivery mode, the read size and the limits; the rest is fed to
 * an open connection the way a runtime would (unconsumed bytes are kept and
 * presented again), with sends, pings and output drains interleaved. The
 * checks below are the core's promises: counts stay within the input,
 * errors are sticky, event data lies in the input or is sized sanely, a
 * shared budget is never passed and gets every byte back, and memory stays
 * bounded (ASan and the RSS limit watch the rest). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herald/core.h"

static void fuzz_drain(herald_conn *c) {
  struct iovec iov[8];
  int n;
  while ((n = herald_conn_output(c, iov, 8)) > 0) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
      total += iov[i].iov_len;
    }
    /* Partial writes too: consume a little less than offered. */
    size_t take = total > 3 ? total - 3 : total;
    if (herald_conn_output_consumed(c, take) != 0) {
      abort();
    }
  }
}

/* Completes a handshake between a fresh client and server. */
static void fuzz_open(herald_conn *srv, herald_conn *cli) {
  herald_client_opts o = {.host = "fuzz.example"};
  if (herald_conn_client_start(cli, &o) != 0) {
    abort();
  }
  struct iovec iov[4];
  int n = herald_conn_output(cli, iov, 4);
  if (n != 1) {
    abort();
  }
  uint8_t req[1024];
  size_t rlen = iov[0].iov_len;
  memcpy(req, iov[0].iov_base, rlen);
  herald_conn_output_consumed(cli, rlen);
  herald_event ev;
  if (herald_conn_recv(srv, req, rlen, &ev) != (int)rlen ||
      ev.type != HERALD_EV_REQUEST || herald_conn_accept(srv, NULL) != 0) {
    abort();
  }
  n = herald_conn_output(srv, iov, 4);
  uint8_t resp[1024];
  size_t plen = iov[0].iov_len;
  memcpy(resp, iov[0].iov_base, plen);
  herald_conn_output_consumed(srv, plen);
  if (herald_conn_recv(cli, resp, plen, &ev) != (int)plen ||
      ev.type != HERALD_EV_OPEN) {
    abort();
  }
}

static int fuzz_conn_run(herald_role role, const uint8_t *data, size_t size) {
  if (size < 1) {
    return 0;
  }
  uint8_t sel = data[0];
  data++;
  size--;
  herald_config scfg, ccfg;
  herald_config_init(&scfg, HERALD_ROLE_SERVER);
  herald_config_init(&ccfg, HERALD_ROLE_CLIENT);
  herald_config *cfg = role == HERALD_ROLE_SERVER ? &scfg : &ccfg;
  cfg->stream_messages = sel & 1;
  if (sel & 2) {
    cfg->max_frame_size = 64;
    cfg->max_message_size = 200;
    cfg->max_fragments = 4;
  } else {
    cfg->max_frame_size = cfg->max_message_size = 1 << 20;
  }
  static const size_t chunks[] = {1, 2, 3, 7, 16, 64, 1000, 1 << 20};
  size_t chunk = chunks[(sel >> 2) & 7];
  int sends = (sel >> 5) & 1;
  /* Echoes borrow the input buffer (HERALD_SEND_BORROW): part of the output
   * is written, the rest owned, and the buffer is then overwritten. */
  int borrow = (sel >> 6) & 1;
  /* A budget for unfinished messages, small enough to be hit. */
  herald_budget *budget = NULL;
  const uint64_t budget_limit = 300;
  if (sel & 0x80) {
    if (herald_budget_new(&budget, budget_limit, NULL) != 0) {
      abort();
    }
    cfg->budget = budget;
  }

  herald_conn *srv, *cli;
  if (herald_conn_new(&srv, &scfg) != 0 || herald_conn_new(&cli, &ccfg)) {
    abort();
  }
  fuzz_open(srv, cli);
  herald_conn *c = role == HERALD_ROLE_SERVER ? srv : cli;

  uint8_t *buf = malloc(size + 1);
  size_t have = 0, pos = 0;
  int err = 0;
  while (pos < size && err == 0) {
    size_t take = size - pos < chunk ? size - pos : chunk;
    /* Every other read goes in place when the core offers room (the rest
     * of a large frame, as ws.c reads it): the same checks hold. */
    size_t room = 0;
    uint8_t *at = have == 0 && ((pos / chunk) & 1)
                      ? herald_conn_recv_room(c, &room)
                      : NULL;
    if (at != NULL) {
      size_t t = take < room ? take : room;
      memcpy(at, data + pos, t);
      pos += t;
      herald_event ev;
      int rv = herald_conn_recv_placed(c, t, &ev);
      if (rv < 0) {
        err = rv;
        if (herald_conn_recv(c, buf, 0, &ev) != err ||
            herald_conn_state(c) != HERALD_STATE_CLOSED) {
          abort();
        }
        break;
      }
      if ((size_t)rv != t ||
          (budget && herald_budget_used(budget) > budget_limit) ||
          ((ev.type == HERALD_EV_TEXT || ev.type == HERALD_EV_BINARY) &&
           ev.len > cfg->max_message_size) ||
          (ev.type == HERALD_EV_TEXT && !herald_utf8_valid(ev.data, ev.len))) {
        abort();
      }
      fuzz_drain(c);
      continue;
    }
    memcpy(buf + have, data + pos, take);
    have += take;
    pos += take;
    size_t off = 0;
    for (;;) {
      herald_event ev;
      int rv = herald_conn_recv(c, buf + off, have - off, &ev);
      if (rv < 0) {
        err = rv;
        /* Sticky: the same error again. */
        if (herald_conn_recv(c, buf, have, &ev) != err ||
            herald_conn_state(c) != HERALD_STATE_CLOSED) {
          abort();
        }
        break;
      }
      if ((size_t)rv > have - off ||
          (budget && herald_budget_used(budget) > budget_limit)) {
        abort();
      }
      off += (size_t)rv;
      if (ev.type == HERALD_EV_NONE) {
        break;
      }
      if ((ev.type == HERALD_EV_TEXT || ev.type == HERALD_EV_BINARY) &&
          ev.len > cfg->max_message_size) {
        abort();
      }
      if (ev.type == HERALD_EV_TEXT && ev.fin && !cfg->stream_messages &&
          !herald_utf8_valid(ev.data, ev.len)) {
        abort();
      }
      if (sends && ev.type == HERALD_EV_TEXT) {
        /* Only what lies in buf, which stays until the own() below (a
         * reassembled message lives in the core's buffer). */
        int in_buf = (uintptr_t)ev.data >= (uintptr_t)buf &&
                     (uintptr_t)ev.data + ev.len <= (uintptr_t)(buf + have);
        unsigned fl = (ev.fin ? 0 : HERALD_SEND_MORE) |
                      (borrow && in_buf ? HERALD_SEND_BORROW : 0);
        (void)herald_conn_send(c, HERALD_OP_TEXT, ev.data, ev.len, fl, NULL,
                               NULL);
      }
    }
    if (borrow) {
      struct iovec iov[2];
      int n = herald_conn_output(c, iov, 2);
      if (n > 0 && herald_conn_output_consumed(c, iov[0].iov_len / 2) != 0) {
        abort();
      }
      if (herald_conn_output_own(c) != 0) {
        abort();
      }
      memset(buf, 0xA5, off); /* the borrowed bytes are gone */
    }
    memmove(buf, buf + off, have - off);
    have -= off;
    /* Nothing incomplete may stay longer than a head or a control frame. */
    if (err == 0 && have > 14 + 125) {
      abort();
    }
    if (sends) {
      (void)herald_conn_ping(c, "f", 1);
    }
    fuzz_drain(c);
  }
  herald_event ev;
  herald_conn_recv_eof(c, &ev);
  fuzz_drain(c);
  free(buf);
  herald_conn_del(srv);
  herald_conn_del(cli);
  if (budget && herald_budget_used(budget) != 0) {
    abort();
  }
  herald_budget_del(budget);
  return 0;
}
