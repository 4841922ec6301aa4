/*
 * hub_history.c - publications and the history of each channel's stream:
 * building a publication and its push frame once, the history ring with
 * its size and TTL bounds, recovery, history queries, and the streams an
 * engine feeds (push_hub_load, push_hub_append).
 *
 * Invariant of every stream: its history ring holds the publications with
 * offsets offset - rlen + 1 .. offset, oldest first, with no holes (publish
 * appends at the end, size and TTL drop from the front only). Recovery from
 * a position p of the same epoch is therefore possible exactly when
 * offset - p <= rlen, which is the whole recovery rule of docs/protocol.md.
 *
 * History is bounded per channel (history_size, history_ttl_s) and, with
 * push_hub_set_history_limit, in bytes across the whole hub: many channels
 * each within their own bounds must not add up to any amount of memory.
 * The cap evicts the hub's oldest entries first (see "The byte cap").
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herald/core.h"
#include "push/hub_int.h"

/* ------------------------------------------------------------------------ */
/* Publications                                                             */
/* ------------------------------------------------------------------------ */

/* Monotonic microseconds, for push_pub.born_us (delivery latency). */
static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

push_pub *push_pub_ref(push_pub *p) {
  return hub_pub_ref(p);
}

void push_pub_unref(push_pub *p) {
  hub_pub_unref(p);
}

void push_result_free(push_result *r) {
  for (size_t i = 0; i < r->npubs; i++) {
    hub_pub_unref(r->pubs[i]);
  }
  free(r->pubs);
  r->pubs = NULL;
  r->npubs = 0;
}

/* A publication is one allocation: the struct, its frame and a NUL, then
 * (aligned) its hub_hist. Its size is what the byte cap counts. */
static size_t hist_off(size_t frame_len) {
  size_t a = _Alignof(hub_hist);
  return (sizeof(push_pub) + frame_len + 1 + a - 1) / a * a;
}

static size_t pub_size(size_t frame_len) {
  return hist_off(frame_len) + sizeof(hub_hist);
}

static hub_hist *pub_hist(push_pub *p) {
  return (hub_hist *)((char *)p + hist_off(p->frame_len));
}

/* A publication of frame (with the pub object at json_off, json_len): one
 * block with one reference, or NULL when out of memory. */
static push_pub *pub_new(const char *frame, size_t frame_len, size_t json_off,
                         size_t json_len, uint64_t offset, int64_t time_ms) {
  if (frame_len >
      SIZE_MAX - sizeof(push_pub) - sizeof(hub_hist) - _Alignof(hub_hist) - 1) {
    return NULL;
  }
  push_pub *pub = malloc(pub_size(frame_len));
  if (pub == NULL) {
    return NULL;
  }
  pub->frame_len = frame_len;
  *pub_hist(pub) = (hub_hist){NULL, NULL, NULL};
  pub->refs = 1;
  pub->offset = offset;
  pub->time_ms = time_ms;
  pub->born_us = mono_us();
  pub->json_off = json_off;
  pub->json_len = json_len;
  /* A char array follows a uint8_t array with no padding: the header
   * written at the end of wshdr is contiguous with frame. */
  _Static_assert(offsetof(push_pub, frame) ==
                     offsetof(push_pub, wshdr) + PUSH_WSHDR_MAX,
                 "wshdr must end where frame begins");
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  size_t hlen = herald_frame_header(hdr, HERALD_OP_TEXT, 1, 0, frame_len, NULL);
  pub->wshdr_len = (uint8_t)hlen;
  memcpy(pub->wshdr + PUSH_WSHDR_MAX - hlen, hdr, hlen);
  memcpy(pub->frame, frame, frame_len);
  pub->frame[frame_len] = '\0';
  return pub;
}

push_pub *hub_pub_wrap(push_hub *hub, const hub_channel *ch, uint64_t offset,
                       int64_t now_ms) {
  push_buf *pb = &hub->scratch, *fb = &hub->scratch2;
  push_pub *pub = NULL;
  fb->len = 0;
  if (push_push_pub(fb, ch->name, pb->p, pb->len) != 0 || fb->len < pb->len) {
    goto done;
  }
  /* The publication is embedded byte for byte and is the push's last
   * member, so its last occurrence in the frame is it; searching (two or
   * so steps) keeps this file independent of proto.c's exact layout. */
  size_t off = fb->len - pb->len + 1;
  do {
    off--;
  } while (off > 0 && memcmp(fb->p + off, pb->p, pb->len) != 0);
  if (memcmp(fb->p + off, pb->p, pb->len) != 0) {
    goto done;
  }
  pub = pub_new(fb->p, fb->len, off, pb->len, offset, now_ms);
done:
  push_buf_done(pb, HUB_SCRATCH_KEEP);
  push_buf_done(fb, HUB_SCRATCH_KEEP);
  return pub;
}

/* The same from an engine's form: {"offset":N then the tail as published
 * (push_pub_tail). */
static push_pub *pub_build_tail(push_hub *hub, const hub_channel *ch,
                                const push_ext_pub *e) {
  push_buf *pb = &hub->scratch;
  pb->len = 0;
  if (push_buf_raw(pb, "{\"offset\":", 10) != 0 ||
      push_buf_u64(pb, e->offset) != 0 ||
      push_buf_raw(pb, e->tail, e->tail_len) != 0) {
    push_buf_done(pb, HUB_SCRATCH_KEEP);
    return NULL;
  }
  return hub_pub_wrap(hub, ch, e->offset, e->time_ms);
}

/* ------------------------------------------------------------------------ */
/* The byte cap: every history entry on one list, oldest first              */
/* ------------------------------------------------------------------------ */

/*
 * Every history entry is also on the hub's history list, in the order it
 * was appended (publish, append and load add at the tail), so the list's
 * head is the oldest entry of the whole hub. Within one channel that order
 * is its ring's order, and rings only ever lose their front, so the head
 * of the list is always the front of its own channel's ring: evicting it
 * is hub_ring_drop_front, which keeps the ring free of holes and so makes
 * recovery across the evicted entry fail, as it must. The links live in the
 * publication's own allocation (hub_hist): no allocation per entry, O(1)
 * to add, to drop and to evict. A publication may outlive its place in
 * history (send queues hold references); the count follows the place.
 */
static void hist_link(push_hub *hub, hub_channel *ch, push_pub *pub) {
  hub_hist *h = pub_hist(pub);
  h->ch = ch;
  h->next = &hub->hist;
  h->prev = hub->hist.prev;
  h->prev->next = h;
  hub->hist.prev = h;
  hub->hist_bytes += pub_size(pub->frame_len);
}

static void hist_unlink(push_hub *hub, push_pub *pub) {
  hub_hist *h = pub_hist(pub);
  h->prev->next = h->next;
  h->next->prev = h->prev;
  *h = (hub_hist){NULL, NULL, NULL};
  hub->hist_bytes -= pub_size(pub->frame_len);
}

/* A publication that can never fit under the cap. It is not kept, and
 * neither is what precedes it in its channel (the ring would have a hole):
 * evicting everything older in the hub to make room for it would only wipe
 * all history for nothing. */
static int hist_too_big(const push_hub *hub, const push_pub *pub) {
  return hub->hist_max != 0 && pub_size(pub->frame_len) > hub->hist_max;
}

/* Evicts the oldest entries until the total is within the cap (the test of
 * an empty list only guards against a count gone wrong). */
static void hist_fit(push_hub *hub) {
  while (hub->hist_max != 0 && hub->hist_bytes > hub->hist_max &&
         hub->hist.next != &hub->hist) {
    hub_ring_drop_front(hub, hub->hist.next->ch);
    hub->hist_evictions++;
  }
}

void push_hub_set_history_limit(push_hub *hub, uint64_t max_bytes) {
  hub->hist_max = max_bytes;
  hist_fit(hub);
}

uint64_t push_hub_history_bytes(const push_hub *hub) {
  return hub->hist_bytes;
}

uint64_t push_hub_history_evictions(const push_hub *hub) {
  return hub->hist_evictions;
}

/* ------------------------------------------------------------------------ */
/* History ring                                                             */
/* ------------------------------------------------------------------------ */

void hub_ring_drop_front(push_hub *hub, hub_channel *ch) {
  push_pub *p = ch->ring[ch->rhead];
  hist_unlink(hub, p);
  hub_pub_unref(p);
  ch->rhead = (ch->rhead + 1) % ch->rcap;
  ch->rlen--;
}

/* The ring grows by doubling up to history_size instead of being allocated
 * at full size: most channels never fill a large history. */
int hub_ring_grow(hub_channel *ch) {
  size_t max = ch->ns->history_size;
  size_t ncap = ch->rcap != 0 ? ch->rcap * 2 : HUB_MIN_RING;
  if (ncap > max) {
    ncap = max;
  }
  push_pub **r = malloc(ncap * sizeof *r);
  if (r == NULL) {
    return -1;
  }
  for (size_t k = 0; k < ch->rlen; k++) {
    r[k] = hub_ring_at(ch, k);
  }
  free(ch->ring);
  ch->ring = r;
  ch->rcap = ncap;
  ch->rhead = 0;
  return 0;
}

void hub_ring_push(push_hub *hub, hub_channel *ch, push_pub *pub) {
  if (ch->ns->history_size == 0) {
    return;
  }
  if (hist_too_big(hub, pub)) {
    while (ch->rlen > 0) {
      hub_ring_drop_front(hub, ch);
      hub->hist_evictions++;
    }
    return;
  }
  if (ch->rlen == ch->ns->history_size) {
    hub_ring_drop_front(hub, ch);
  }
  ch->ring[(ch->rhead + ch->rlen) % ch->rcap] = hub_pub_ref(pub);
  ch->rlen++;
  hist_link(hub, ch, pub);
  hist_fit(hub);
}

/* The invariant at the top is the whole rule. */
int hub_ring_since(const hub_channel *ch, const push_pos *since, size_t *k,
                   size_t *n) {
  *k = 0;
  *n = 0;
  if (since == NULL || !since->set ||
      strncmp(since->epoch, ch->epoch, sizeof ch->epoch) != 0 ||
      since->offset > ch->offset) {
    return 0;
  }
  uint64_t missed = ch->offset - since->offset;
  if (missed > ch->rlen) {
    return 0; /* a gap: some of them were dropped or never kept */
  }
  *k = ch->rlen - (size_t)missed;
  *n = (size_t)missed;
  return 1;
}

int hub_result_fill(const hub_channel *ch, size_t k, size_t n, push_result *r) {
  if (n == 0) {
    return 0;
  }
  r->pubs = malloc(n * sizeof *r->pubs);
  if (r->pubs == NULL) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    r->pubs[i] = hub_pub_ref(hub_ring_at(ch, k + i));
  }
  r->npubs = n;
  return 0;
}

/*
 * History creates the channel when it does not exist yet: the answer must
 * carry an epoch, and a client that subscribes with that position right
 * after must find the same epoch (tick forgets the channel again if nothing
 * else keeps it). With since, the pubs are the oldest `limit` after it, so
 * a client can page forward; when since cannot be honoured there are none,
 * as in subscribe.
 */
int push_hub_history(push_hub *hub, const char *channel, uint64_t limit,
                     const push_pos *since, int64_t now_ms, push_result *r) {
  memset(r, 0, sizeof *r);
  hub_channel *ch = hub_channel_get(hub, channel, 1);
  if (ch == NULL) {
    return -1;
  }
  hub_ring_prune(hub, ch, now_ms);
  hub_channel_pos(ch, &r->pos);
  size_t k, n;
  if (since != NULL && since->set) {
    r->recovered = hub_ring_since(ch, since, &k, &n);
    if (limit != 0 && n > limit) {
      n = (size_t)limit;
    }
  } else {
    n = limit != 0 && limit < ch->rlen ? (size_t)limit : ch->rlen;
    k = ch->rlen - n;
  }
  if (hub_result_fill(ch, k, n, r) != 0) {
    r->recovered = 0;
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Streams fed by an engine (redis.c)                                       */
/* ------------------------------------------------------------------------ */

/*
 * The engine owns offsets and epochs; the hub is then a replica of each
 * active channel's stream: load sets the position and history from the
 * engine's copy, append adds the publications that follow, in order.
 * Subscribers stay through a load: the engine delivers what they missed
 * with append first, or disconnects them when it cannot.
 */
int push_hub_load(push_hub *hub, const char *channel, const char *epoch,
                  uint64_t offset, const push_ext_pub *e, size_t n,
                  int64_t now_ms) {
  hub_channel *ch = hub_channel_get(hub, channel, 1);
  if (ch == NULL || ch->busy) {
    return -1;
  }
  /* What is pending belongs to the old position: out with it first. */
  hub_channel_flush(hub, ch);
  /* Only the entries that end exactly at offset, with no hole, can serve
   * recovery (the ring invariant at the top). */
  size_t first = n;
  while (first > 0 && e[first - 1].offset == offset - (n - first)) {
    first--;
  }
  size_t keep = n - first;
  if (keep > ch->ns->history_size) {
    first += keep - ch->ns->history_size;
    keep = ch->ns->history_size;
  }
  push_pub **ring = NULL;
  size_t cap = 0;
  if (keep > 0) {
    cap = keep < HUB_MIN_RING ? HUB_MIN_RING : keep;
    if (cap > ch->ns->history_size) {
      cap = ch->ns->history_size;
    }
    ring = calloc(cap, sizeof *ring);
    if (ring == NULL) {
      return -1;
    }
    /* An entry too big for the cap (hist_too_big) is not kept, and neither
     * is anything before it: kept starts again after it. */
    size_t kept = 0;
    for (size_t i = 0; i < keep; i++) {
      push_pub *p = pub_build_tail(hub, ch, &e[first + i]);
      if (p == NULL || hist_too_big(hub, p)) {
        while (kept > 0) {
          hub_pub_unref(ring[--kept]);
        }
        if (p == NULL) {
          free(ring);
          return -1;
        }
        hub_pub_unref(p);
        continue;
      }
      ring[kept++] = p;
    }
    keep = kept;
  }
  while (ch->rlen > 0) {
    hub_ring_drop_front(hub, ch);
  }
  free(ch->ring);
  ch->ring = ring;
  ch->rcap = cap;
  ch->rhead = 0;
  ch->rlen = keep;
  for (size_t i = 0; i < keep; i++) {
    hist_link(hub, ch, ring[i]);
  }
  snprintf(ch->epoch, sizeof ch->epoch, "%s", epoch);
  ch->offset = offset;
  hub_ring_prune(hub, ch, now_ms);
  hist_fit(hub);
  return 0;
}

/* Whether a publication at epoch:offset follows ch's position: 0 yes, 1
 * no (a gap or another epoch). */
static int follows(const hub_channel *ch, const char *epoch, uint64_t offset) {
  return strncmp(epoch, ch->epoch, sizeof ch->epoch) == 0 &&
                 offset == ch->offset + 1
             ? 0
             : 1;
}

/* Queues pub (taken; NULL: out of memory) as ch's next publication.
 * Returns 0, or -1 when out of memory. */
static int append_pub(push_hub *hub, hub_channel *ch, push_pub *pub) {
  if (pub == NULL || hub_ring_reserve(ch) != 0 ||
      hub_queue_reserve(hub, ch) != 0) {
    hub_pub_unref(pub);
    return -1;
  }
  hub_append_queue(hub, ch, pub);
  return 0;
}

int push_hub_append(push_hub *hub, const char *channel, const char *epoch,
                    const push_ext_pub *e) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  if (ch == NULL || ch->busy) {
    return -1;
  }
  if (follows(ch, epoch, e->offset) != 0) {
    return 1;
  }
  hub_ring_prune(hub, ch, e->time_ms);
  return append_pub(hub, ch, pub_build_tail(hub, ch, e));
}

int push_hub_append_frame(push_hub *hub, const char *channel, const char *epoch,
                          const push_ext_frame *f) {
  return push_hub_append_frame_hashed(hub, channel, push_hub_hash(hub, channel),
                                      epoch, f);
}

int push_hub_append_frame_hashed(push_hub *hub, const char *channel,
                                 uint32_t hash, const char *epoch,
                                 const push_ext_frame *f) {
  hub_channel *ch = hub_channel_get_hashed(hub, channel, hash, 0);
  if (ch == NULL || ch->busy || f->json_off > f->frame_len ||
      f->json_len > f->frame_len - f->json_off) {
    return -1;
  }
  if (follows(ch, epoch, f->offset) != 0) {
    return 1;
  }
  hub_ring_prune(hub, ch, f->time_ms);
  return append_pub(hub, ch,
                    pub_new(f->frame, f->frame_len, f->json_off, f->json_len,
                            f->offset, f->time_ms));
}

int push_hub_pos(push_hub *hub, const char *channel, push_pos *pos) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  if (ch == NULL) {
    return -1;
  }
  hub_channel_pos(ch, pos);
  return 0;
}

void push_hub_drop_history(push_hub *hub, const char *channel) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  if (ch == NULL || ch->busy) {
    return;
  }
  while (ch->rlen > 0) {
    hub_ring_drop_front(hub, ch);
  }
}
