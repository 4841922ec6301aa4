/* hub_int.h - what the hub's files share: its data structures and the
 * helpers more than one of them calls. Private to src/push/hub*.c.
 *
 * The hub (push.h) is split by responsibility:
 *   hub.c           the hub, its channels and subscribers, publishing and
 *                   the batched flush, tick
 *   hub_index.c     the open-addressing index every lookup uses, the keyed
 *                   hash of channel names, random ids
 *   hub_history.c   publications, the history ring (size, TTL), the byte
 *                   cap across channels, recovery, history queries,
 *                   streams fed by an engine
 *   hub_presence.c  presence entries, join and leave pushes
 *
 * Names declared here start with hub_ (they are global symbols of the push
 * library); what one file keeps to itself is static and unprefixed. The
 * helpers on the per-message path (lookups, reservations that almost never
 * allocate, references, encoding a publication) are static inline here,
 * so the split adds no work per message or per delivery.
 */
#ifndef HERALD_PUSH_HUB_INT_H
#define HERALD_PUSH_HUB_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "push/push.h"

/* Initial capacities; arrays then double. */
#define HUB_MIN_ENTRIES 4
#define HUB_MIN_RING 8

#define HUB_IDX_NONE SIZE_MAX

/* Scratch buffers that grew past this are released after use, so one huge
 * publication does not pin its size in the hub forever. */
#define HUB_SCRATCH_KEEP (64 * 1024)

/* ------------------------------------------------------------------------ */
/* The index: linear probing over positions of a dense array (hub_index.c)  */
/* ------------------------------------------------------------------------ */

/* pos is the entry's position in its dense array plus one (0: empty slot);
 * hash is kept so that resizing and backward shifts never need the entry. */
typedef struct hub_slot {
  uint32_t pos;
  uint32_t hash;
} hub_slot;

typedef struct hub_index {
  hub_slot *slot; /* mask + 1 slots, or NULL before the first entry */
  size_t mask;
} hub_index;

static inline void hub_idx_insert(hub_index *x, uint32_t hash, uint32_t pos) {
  size_t i = hash & x->mask;
  while (x->slot[i].pos != 0) {
    i = (i + 1) & x->mask;
  }
  x->slot[i].pos = pos;
  x->slot[i].hash = hash;
}

/* The slot holding pos, which must be present. */
static inline size_t hub_idx_slot_of(const hub_index *x, uint32_t hash,
                                     uint32_t pos) {
  size_t i = hash & x->mask;
  while (x->slot[i].pos != pos) {
    i = (i + 1) & x->mask;
  }
  return i;
}

/* Finds the slot whose entry eq() accepts, or HUB_IDX_NONE. */
static inline size_t hub_idx_find(const hub_index *x, uint32_t hash,
                                  int (*eq)(const void *entries, size_t at,
                                            const void *key),
                                  const void *entries, const void *key) {
  if (x->slot == NULL) {
    return HUB_IDX_NONE;
  }
  size_t i = hash & x->mask;
  while (x->slot[i].pos != 0) {
    if (x->slot[i].hash == hash && eq(entries, x->slot[i].pos - 1, key)) {
      return i;
    }
    i = (i + 1) & x->mask;
  }
  return HUB_IDX_NONE;
}

/* Makes room for n entries at a load of at most one half. On failure the
 * index is unchanged. */
int hub_idx_reserve(hub_index *x, size_t n);

/* Empties slot i, keeping the probe runs free of tombstones. */
void hub_idx_erase(hub_index *x, size_t i);

/* The index half of removing entry `at` from a dense array of n entries
 * whose last entry (hash last_hash) then moves into `at`. The caller moves
 * the entry itself. */
void hub_idx_remove_swap(hub_index *x, size_t slot, size_t at, size_t n,
                         uint32_t last_hash);

/* Grows a dense array of elem-sized entries to hold n, doubling. */
static inline int hub_dense_reserve(void **arr, size_t *cap, size_t n,
                                    size_t elem) {
  if (n <= *cap) {
    return 0;
  }
  size_t ncap = *cap != 0 ? *cap * 2 : HUB_MIN_ENTRIES;
  while (ncap < n) {
    ncap *= 2;
  }
  if (ncap > SIZE_MAX / elem) {
    return -1;
  }
  void *p = realloc(*arr, ncap * elem);
  if (p == NULL) {
    return -1;
  }
  *arr = p;
  *cap = ncap;
  return 0;
}

/* Client pointers are not chosen by peers: a bit mixer (the MurmurHash3
 * finalizer) is enough to spread their aligned, clustered values. */
static inline uint32_t hub_hash_ptr(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (uint32_t)x;
}

/* Fills out with n bytes from getrandom(2). Returns 0 or -1. */
int hub_fill_random(void *out, size_t n);

/* ------------------------------------------------------------------------ */
/* Data                                                                     */
/* ------------------------------------------------------------------------ */

/* One allocation: the client id, then user and info strings after it. */
typedef struct hub_presence {
  uint32_t hash;
  const char *user;
  const char *info; /* raw JSON, or NULL */
  char client[];
} hub_presence;

/* A subscription: the caller's push_sub and the offset it starts after
 * (the channel's position when it subscribed). */
typedef struct hub_sub {
  push_sub s;
  uint64_t after;
} hub_sub;

typedef struct hub_channel {
  const push_ns *ns; /* points into the hub's copy */
  uint32_t hash;
  char epoch[PUSH_EPOCH_MAX + 1];
  uint64_t offset; /* last offset published, 0 if none */

  /* Publications not yet handed to the subscribers (push_hub_flush), with
   * the offsets offset - npend + 1 .. offset; each holds a reference. */
  push_pub **pend;
  size_t npend, cappend;
  uint64_t pend_bytes; /* frame bytes they make for the live subscribers */
  int queued;          /* on the hub's dirty list */

  hub_sub *subs; /* s.client == NULL: a tombstone, see hub.c */
  size_t nsubs, capsubs;
  size_t ndead;  /* tombstones in subs */
  unsigned busy; /* loops over subs running */
  hub_index subidx;

  hub_presence **pres;
  size_t npres, cappres;
  hub_index presidx;

  push_pub **ring; /* history: rlen entries from rhead, oldest first */
  size_t rcap, rhead, rlen;

  size_t namelen;
  char name[];
} hub_channel;

/* A publication's place in the hub's history list, oldest first across all
 * channels (the byte cap evicts from its head: hub_history.c). Every
 * publication the hub builds carries one after its frame, in the same
 * allocation; it is linked exactly while the publication is in ch's
 * history ring. */
typedef struct hub_hist {
  struct hub_hist *prev, *next;
  hub_channel *ch;
} hub_hist;

struct push_hub {
  push_ns *ns;
  size_t nns;
  uint64_t key[2]; /* SipHash key */

  hub_channel **chans;
  size_t nchans, capchans;
  hub_index chidx;

  size_t nsubscriptions;
  push_buf scratch, scratch2; /* encoding space reused by every publish */
  unsigned busy;              /* callbacks running */

  hub_channel **dirty; /* channels with pending publications */
  size_t ndirty, capdirty;
  uint64_t pend_bytes; /* the sum of their pend_bytes */

  hub_hist hist;           /* the history list's head: hist.next is oldest */
  uint64_t hist_bytes;     /* allocation size of the publications on it */
  uint64_t hist_max;       /* the cap on hist_bytes; 0: none */
  uint64_t hist_evictions; /* entries the cap dropped */
};

/* ------------------------------------------------------------------------ */
/* Channels (hub.c)                                                         */
/* ------------------------------------------------------------------------ */

/* The channel, created if create is set and its namespace is configured.
 * NULL if absent, unconfigured or out of memory. */
hub_channel *hub_channel_get(push_hub *hub, const char *name, int create);
/* The same with hash = push_hub_hash(hub, name). */
hub_channel *hub_channel_get_hashed(push_hub *hub, const char *name,
                                    uint32_t hash, int create);

/* Hands ch's pending publications to its subscribers (see hub.c). Does
 * nothing on a busy channel. */
void hub_channel_flush(push_hub *hub, hub_channel *ch);

/* Makes room for one more pending publication of ch, so that publishing
 * cannot fail after the history has changed. Returns 0 or -1. */
int hub_queue_reserve(push_hub *hub, hub_channel *ch);

/* Appends pub (the channel's next offset, with room reserved by
 * hub_ring_reserve and hub_queue_reserve) to the history and to the
 * pending list. Takes the caller's reference. */
void hub_append_queue(push_hub *hub, hub_channel *ch, push_pub *pub);

/* Removes the tombstones left by unsubscribes during callbacks. */
void hub_subs_compact(hub_channel *ch);

/* Around every loop over ch->subs that runs callbacks: while it runs,
 * unsubscribing leaves tombstones, compacted when the last loop ends. */
static inline void hub_channel_enter(push_hub *hub, hub_channel *ch) {
  hub->busy++;
  ch->busy++;
}

static inline void hub_channel_leave(push_hub *hub, hub_channel *ch) {
  hub->busy--;
  if (--ch->busy == 0 && ch->ndead > 0) {
    hub_subs_compact(ch);
  }
}

static inline void hub_channel_pos(const hub_channel *ch, push_pos *pos) {
  memcpy(pos->epoch, ch->epoch, sizeof pos->epoch);
  pos->offset = ch->offset;
  pos->set = 1;
}

/* ------------------------------------------------------------------------ */
/* Publications and history (hub_history.c)                                 */
/* ------------------------------------------------------------------------ */

/* push_pub_ref and push_pub_unref, inline for the hub's own loops: fan-out
 * takes one reference per subscriber and publication. */
static inline push_pub *hub_pub_ref(push_pub *p) {
  p->refs++;
  return p;
}

static inline void hub_pub_unref(push_pub *p) {
  if (p != NULL && --p->refs == 0) {
    free(p);
  }
}

/* Wraps the publication encoded in hub->scratch into its push and one
 * refcounted block (see hub_history.c for its layout). Returns it with one
 * reference (the caller's), or NULL when out of memory. Leaves both
 * scratch buffers empty. */
push_pub *hub_pub_wrap(push_hub *hub, const hub_channel *ch, uint64_t offset,
                       int64_t now_ms);

/* Encodes the publication, then the push around it, and copies the push
 * into one refcounted block: the scratch buffers make that the only
 * allocation of a publish in the steady state. Returns it with one
 * reference (the caller's), or NULL when out of memory. */
static inline push_pub *hub_pub_build(push_hub *hub, const hub_channel *ch,
                                      uint64_t offset, push_json data,
                                      push_json b64, const char *client,
                                      const char *user, int64_t now_ms) {
  hub->scratch.len = 0;
  if (push_pub_encode(&hub->scratch, offset, data, b64, client, user) != 0) {
    push_buf_done(&hub->scratch, HUB_SCRATCH_KEEP);
    return NULL;
  }
  return hub_pub_wrap(hub, ch, offset, now_ms);
}

static inline push_pub *hub_ring_at(const hub_channel *ch, size_t k) {
  return ch->ring[(ch->rhead + k) % ch->rcap];
}

/* Drops the oldest entry of ch's history, which must have one, and takes it
 * off the hub's history list. Every removal from a ring goes through here:
 * that is what keeps hist_bytes exact. */
void hub_ring_drop_front(push_hub *hub, hub_channel *ch);

/* Drops publications older than the namespace's TTL. Only the front can
 * be old (times grow with offsets), and dropping from the front keeps the
 * ring free of holes. */
static inline void hub_ring_prune(push_hub *hub, hub_channel *ch,
                                  int64_t now_ms) {
  if (ch->ns->history_ttl_s == 0) {
    return;
  }
  int64_t ttl_ms = (int64_t)ch->ns->history_ttl_s * 1000;
  while (ch->rlen > 0 && now_ms - hub_ring_at(ch, 0)->time_ms >= ttl_ms) {
    hub_ring_drop_front(hub, ch);
  }
}

/* Grows a full ring (see hub_ring_reserve). Returns 0 or -1. */
int hub_ring_grow(hub_channel *ch);

/* Makes room to append one publication without allocating afterwards, so
 * that publish fails before it changes anything. Returns 0 or -1. */
static inline int hub_ring_reserve(hub_channel *ch) {
  size_t max = ch->ns->history_size;
  if (max == 0 || ch->rlen < ch->rcap || ch->rcap >= max) {
    return 0;
  }
  return hub_ring_grow(ch);
}

/* Appends a new reference to pub (the channel's newest offset, room
 * reserved by hub_ring_reserve), unless the namespace keeps no history.
 * Then applies the byte cap, which may evict the oldest entries of any
 * channel, this one included; a publication larger than the whole cap is
 * not kept, and takes the channel's older entries with it. */
void hub_ring_push(push_hub *hub, hub_channel *ch, push_pub *pub);

/* Which part of the ring answers a request from since: sets *k (first ring
 * index) and *n. Returns 1 if since was given and can be honoured, else 0
 * with *n = 0. */
int hub_ring_since(const hub_channel *ch, const push_pos *since, size_t *k,
                   size_t *n);

/* Fills r->pubs with references to ring entries k..k+n-1. Returns 0 or
 * -1. */
int hub_result_fill(const hub_channel *ch, size_t k, size_t n, push_result *r);

#endif
