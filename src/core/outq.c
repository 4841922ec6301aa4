/*
 * outq.c - the output queue of a connection.
 *
 * Output is a queue of entries, each either a span of the connection's own
 * output buffer (headers, small or masked payloads, handshake text; many
 * small frames share one span) or a caller's payload referenced in place.
 * herald_conn_output() hands the queue out as iovecs and
 * herald_conn_output_consumed() takes back what was written, calling the
 * release callbacks of referenced payloads. A pong is queued at the first
 * frame boundary not yet written, ahead of queued data (RFC 6455 5.5.3 lets
 * it go between fragments; it must not go inside a frame). Every ping gets
 * its pong while fewer than cfg->max_pending_pongs wait unwritten; beyond
 * that one pong is held back, for the latest ping, until fewer wait.
 *
 * What goes into the queue is sender.c's and handshake.c's business; this
 * file only stores bytes and hands them out in order.
 */
#include <string.h>

#include "core/conn_int.h"
#include "core/mask.h"

/* The queue itself, allocated on first use. */
static int out_ensure(herald_conn *c) {
  if (c->o == NULL) {
    c->o = herald__alloc(c, sizeof(outq));
    if (c->o == NULL) {
      return HERALD_ERR_NOMEM;
    }
    memset(c->o, 0, sizeof(outq));
  }
  return 0;
}

/* Makes room for one more entry at the end of the pending range: slides
 * the pending entries down when at least half of the array is done ones
 * (as herald__out_reserve_bytes, so each entry moves O(1) times), else grows
 * it. */
int herald__out_reserve_entry(herald_conn *c) {
  if (out_ensure(c) != 0) {
    return HERALD_ERR_NOMEM;
  }
  outq *o = c->o;
  if (o->ohead + o->ocount < o->ocap) {
    return 0;
  }
  if (o->ohead > 0 && o->ohead >= o->ocap / 2) {
    memmove(o->ent, o->ent + o->ohead, o->ocount * sizeof(oentry));
    o->ohead = 0;
    return 0;
  }
  uint32_t ncap = o->ocap ? o->ocap * 2 : 8;
  oentry *n = herald__realloc(c, o->ent, ncap * sizeof(oentry));
  if (n == NULL) {
    return HERALD_ERR_NOMEM;
  }
  o->ent = n;
  o->ocap = ncap;
  return 0;
}

/* Makes room for n more bytes at the end of obuf. The bytes before the
 * first live inline byte were written already. When those dead bytes are
 * at least half of the buffer, the live ones slide down over them; when not,
 * the live bytes move to a new buffer at least twice their size. Either way
 * a byte is moved O(1) times on average, however slowly the socket drains
 * (sliding a large, mostly live buffer down a little at a time would make
 * a slow reader quadratic). */
int herald__out_reserve_bytes(herald_conn *c, size_t n) {
  if (out_ensure(c) != 0) {
    return HERALD_ERR_NOMEM;
  }
  outq *o = c->o;
  if (o->ocap_bytes - o->olen >= n) {
    return 0;
  }
  /* The lowest live inline byte. Not always the first entry's: a pong is
   * written at the end of obuf but queued ahead of frames written before it
   * (herald__out_insert_pong), so the offsets are not in queue order. */
  size_t lo = o->olen;
  for (uint32_t i = o->ohead; i < o->ohead + o->ocount; i++) {
    const oentry *e = &o->ent[i];
    size_t start = e->off + (i == o->ohead ? o->odone : 0);
    if (e->ext == NULL && start < lo) {
      lo = start;
    }
  }
  size_t live = o->olen - lo;
  if (live + n > SIZE_MAX / 4) {
    return HERALD_ERR_NOMEM;
  }
  uint8_t *dst = o->obuf;
  size_t ncap = o->ocap_bytes;
  if (live + n > ncap / 2) {
    ncap = ncap ? ncap : 256;
    while (ncap < 2 * (live + n)) {
      ncap *= 2;
    }
    dst = herald__alloc(c, ncap);
    if (dst == NULL) {
      return HERALD_ERR_NOMEM;
    }
  }
  if (live > 0) {
    memmove(dst, o->obuf + lo, live);
  }
  if (dst != o->obuf) {
    herald__free(c, o->obuf);
    o->obuf = dst;
    o->ocap_bytes = ncap;
  }
  o->olen = live;
  for (uint32_t i = o->ohead; i < o->ohead + o->ocount; i++) {
    if (o->ent[i].ext == NULL) {
      if (i == o->ohead && o->odone) {
        /* The written part of the head entry is gone: drop it. */
        o->ent[i].off += o->odone;
        o->ent[i].len -= o->odone;
        o->odone = 0;
      }
      o->ent[i].off -= lo;
    }
  }
  return 0;
}

uint8_t *herald__out_append_slow(herald_conn *c, size_t n, int ends_frame) {
  if (herald__out_reserve_bytes(c, n) != 0 ||
      herald__out_reserve_entry(c) != 0) {
    return NULL;
  }
  outq *o = c->o;
  uint8_t *p = o->obuf + o->olen;
  oentry *last = o->ocount ? &o->ent[o->ohead + o->ocount - 1] : NULL;
  if (last && last->ext == NULL && last->ends_frame && !last->pong &&
      last->off + last->len == o->olen) {
    last->len += n;
    last->ends_frame = (uint8_t)ends_frame;
  } else {
    o->ent[o->ohead + o->ocount] =
        (oentry){NULL, o->olen, n, NULL, NULL, (uint8_t)ends_frame, 0, 0, 0};
    o->ocount++;
  }
  o->olen += n;
  o->ototal += n;
  return p;
}

int herald__out_append_ext(herald_conn *c, const uint8_t *p, size_t n,
                           herald_release_fn release, void *ctx) {
  int rv = herald__out_reserve_entry(c);
  if (rv != 0) {
    return rv;
  }
  c->o->ent[c->o->ohead + c->o->ocount] =
      (oentry){p, 0, n, release, ctx, 1, 0, 0, 0};
  c->o->ocount++;
  c->o->ototal += n;
  return 0;
}

void herald__out_truncate(herald_conn *c, size_t n) {
  outq *o = c->o;
  oentry *last = &o->ent[o->ohead + o->ocount - 1];
  last->len -= n;
  last->ends_frame = 1;
  o->olen -= n;
  o->ototal -= n;
  if (last->len == 0) {
    o->ocount--;
  }
}

/* Pongs queued and not yet wholly written. */
static uint32_t pongs_waiting(const herald_conn *c) {
  return c->o != NULL ? c->o->npongs : 0;
}

/* Queues a pong carrying p[0..len): right at the head when nothing of the
 * head frame went out, otherwise after the frame being written, and behind
 * the pongs already waiting there. Returns 0 or an error, nothing queued. */
static int queue_pong(herald_conn *c, const uint8_t *p, size_t len) {
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == HERALD_ROLE_CLIENT) {
    if (herald__random(c, key, 4) != 0) {
      return HERALD_ERR_INTERNAL;
    }
    mask = key;
  }
  size_t hlen = herald__frame_header(hdr, HERALD_OP_PONG, 1, 0, len, mask);
  int rv = herald__out_reserve_bytes(c, hlen + len);
  if (rv == 0) {
    rv = herald__out_reserve_entry(c);
  }
  if (rv != 0) {
    return rv;
  }
  outq *o = c->o;
  uint32_t k = o->ohead;
  if (o->ocount > 0 && (o->odone > 0 || (c->flags & F_HEAD_MID_FRAME))) {
    while (k < o->ohead + o->ocount && !o->ent[k].ends_frame) {
      k++;
    }
    k++; /* after the entry that ends the frame in progress */
  }
  while (k < o->ohead + o->ocount && o->ent[k].pong) {
    k++; /* pongs go out in the order of their pings */
  }
  uint8_t *dst = o->obuf + o->olen;
  memcpy(dst, hdr, hlen);
  if (mask) {
    herald__mask_copy(dst + hlen, p, len, key, 0);
  } else {
    memcpy(dst + hlen, p, len);
  }
  uint32_t end = o->ohead + o->ocount;
  memmove(&o->ent[k + 1], &o->ent[k], (end - k) * sizeof(oentry));
  o->ent[k] = (oentry){NULL, o->olen, hlen + len, NULL, NULL, 1, 1, 0, 0};
  o->ocount++;
  o->npongs++;
  o->olen += hlen + len;
  o->ototal += hlen + len;
  return 0;
}

int herald__out_pong(herald_conn *c, const uint8_t *p, size_t len) {
  if (!(c->flags & F_PONG_PENDING) &&
      pongs_waiting(c) < c->cfg->max_pending_pongs) {
    return queue_pong(c, p, len);
  }
  /* max_pending_pongs wait (or did when the held pong was taken): this
   * ping's payload replaces the held one, RFC 6455 5.5.3. The queue exists
   * (pongs wait in it), and herald_conn_trim() keeps it while one is held. */
  if (out_ensure(c) != 0) {
    return HERALD_ERR_NOMEM;
  }
  outq *o = c->o;
  if (o->pongbuf == NULL) {
    o->pongbuf = herald__alloc(c, 126);
    if (o->pongbuf == NULL) {
      return HERALD_ERR_NOMEM;
    }
  }
  o->pongbuf[0] = (uint8_t)len;
  memcpy(o->pongbuf + 1, p, len);
  c->flags |= F_PONG_PENDING;
  return 0;
}

int herald__out_flush_pong(herald_conn *c, int force) {
  if (!(c->flags & F_PONG_PENDING) ||
      (!force && pongs_waiting(c) >= c->cfg->max_pending_pongs)) {
    return 0;
  }
  /* The held payload is a block of its own: queueing it moves only the
   * queue's entries and buffer. */
  int rv = queue_pong(c, c->o->pongbuf + 1, c->o->pongbuf[0]);
  if (rv != 0) {
    return rv;
  }
  c->flags &= (uint16_t)~F_PONG_PENDING;
  herald__free(c, c->o->pongbuf);
  c->o->pongbuf = NULL;
  return 0;
}

void herald__out_del(herald_conn *c) {
  outq *o = c->o;
  if (o == NULL) {
    return;
  }
  for (uint32_t i = o->ohead; i < o->ohead + o->ocount; i++) {
    if (o->ent[i].release) {
      o->ent[i].release(o->ent[i].ctx);
    } else if (o->ent[i].owned) {
      herald__free(c, o->ent[i].ctx);
    }
  }
  c->flags &= (uint16_t)~F_PONG_PENDING;
  herald__free(c, o->pongbuf);
  herald__free(c, o->ent);
  herald__free(c, o->obuf);
  herald__free(c, o);
  c->o = NULL;
}

HERALD_API int herald_conn_output(herald_conn *c, struct iovec *iov,
                                  int iovcnt) {
  if (c->flags & F_PONG_PENDING) {
    /* Queued once fewer than max_pending_pongs wait. On NOMEM the pong stays
     * held and the data still goes out. */
    (void)herald__out_flush_pong(c, 0);
  }
  outq *o = c->o;
  if (o == NULL) {
    return 0;
  }
  int n = 0;
  for (uint32_t i = o->ohead; i < o->ohead + o->ocount && n < iovcnt; i++) {
    const oentry *e = &o->ent[i];
    size_t skip = i == o->ohead ? o->odone : 0;
    const uint8_t *base = e->ext ? e->ext : o->obuf + e->off;
    iov[n].iov_base = (void *)(base + skip);
    iov[n].iov_len = e->len - skip;
    n++;
  }
  return n;
}

HERALD_API int herald_conn_output_own(herald_conn *c) {
  if (!(c->flags & F_BORROWED) || c->o == NULL) {
    c->flags &= (uint16_t)~F_BORROWED;
    return 0;
  }
  for (uint32_t i = c->o->ohead; i < c->o->ohead + c->o->ocount; i++) {
    if (!c->o->ent[i].borrowed) {
      continue;
    }
    /* A borrowed entry is external, so reserving (which moves only inline
     * bytes, and odone only for an inline head) leaves it and odone be. */
    size_t skip = i == c->o->ohead ? c->o->odone : 0;
    size_t n = c->o->ent[i].len - skip;
    if (herald__out_reserve_bytes(c, n) != 0) {
      return HERALD_ERR_NOMEM;
    }
    outq *o = c->o;
    oentry *e = &o->ent[i];
    memcpy(o->obuf + o->olen, e->ext + skip, n);
    e->ext = NULL;
    e->off = o->olen;
    e->len = n;
    e->borrowed = 0;
    if (skip) {
      o->odone = 0;
    }
    o->olen += n;
  }
  c->flags &= (uint16_t)~F_BORROWED;
  return 0;
}

HERALD_API int herald_conn_output_consumed(herald_conn *c, size_t n) {
  outq *o = c->o;
  if (o == NULL) {
    return n == 0 ? 0 : HERALD_ERR_INVALID_ARG; /* nothing was pending */
  }
  if (n > o->ototal) {
    return HERALD_ERR_INVALID_ARG;
  }
  o->ototal -= n;
  while (n > 0) {
    oentry *e = &o->ent[o->ohead];
    size_t left = e->len - o->odone;
    if (n < left) {
      o->odone += n;
      break;
    }
    n -= left;
    o->odone = 0;
    if (e->ends_frame) {
      c->flags &= (uint16_t)~F_HEAD_MID_FRAME;
    } else {
      c->flags |= F_HEAD_MID_FRAME;
    }
    if (e->release) {
      e->release(e->ctx);
    } else if (e->owned) {
      herald__free(c, e->ctx);
    }
    o->npongs -= e->pong;
    o->ohead++;
    o->ocount--;
  }
  if (o->ocount == 0) {
    o->ohead = 0;
    o->olen = 0;
    o->odone = 0;
    /* Keep small buffers for the next burst; return big ones. */
    if (o->ocap_bytes > 16384) {
      herald__free(c, o->obuf);
      o->obuf = NULL;
      o->ocap_bytes = 0;
    }
  }
  return 0;
}

HERALD_API size_t herald_conn_output_size(const herald_conn *c) {
  const outq *o = c->o;
  if (o == NULL) {
    return 0;
  }
  if (c->flags & F_PONG_PENDING) {
    return o->ototal + 2 + (c->role == HERALD_ROLE_CLIENT ? 4 : 0) +
           o->pongbuf[0];
  }
  return o->ototal;
}
