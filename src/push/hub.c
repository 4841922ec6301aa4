/*
 * hub.c - the hub and its channels: the channel table, subscribers,
 * publishing and the batched flush, and tick.
 *
 * The hub is single-threaded and owns no clients: a subscriber is a
 * push_sub (an opaque client pointer and its callbacks), copied in on
 * subscribe. Everything else (channels, history, presence) the hub owns and
 * push_hub_del frees. The rest of it lives beside this file (hub_int.h has
 * the map): the lookups in hub_index.c, history and recovery in
 * hub_history.c, presence in hub_presence.c.
 *
 * The callbacks (deliver, presence_event) run inside hub calls, and a
 * server may well drop a slow client from inside deliver, unsubscribing it
 * and removing its presence there and then. So while a channel is handing
 * out a publication or a join/leave push, unsubscribing only clears the
 * entry (a tombstone the loop skips) and the array is compacted when the
 * loop ends: swapping entries under a running loop would make it skip a
 * subscriber, which would then miss a publication silently. Subscribing,
 * presence changes and history reads are fine from a callback; publishing
 * to the channel being delivered is refused (it would reorder the stream
 * for the subscribers not yet reached), tick does nothing, and
 * push_hub_del must not be called.
 *
 * Publications are handed out in batches. Publishing appends to the
 * history and to the channel's pending list, and push_hub_flush (the
 * server calls it once per loop pass, before the runtime writes) walks each
 * channel with pending publications once: every subscriber gets all of
 * its publications in a row. Delivering one publication at a time would
 * visit every subscriber's client, connection and output queue once per
 * publication; with 10,000 subscribers those are cache misses, and at
 * high rates they were most of the server's own CPU (docs/performance.md).
 * Each subscriber keeps the offset it joined after, so one that subscribes
 * between a publish and the flush (its subscribe result already carries
 * that position) is not given the publication a second time. The pending
 * offsets of a channel are consecutive: a load, which moves the position,
 * flushes first, and so does a join or leave push, which keeps the order in
 * which a subscriber sees publications and presence events.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "push/hub_int.h"

/* A pending list that grew past this many entries (one huge burst) is
 * freed after its flush rather than kept for the next pass. */
#define HUB_PEND_KEEP 64

/* ------------------------------------------------------------------------ */
/* Channels                                                                 */
/* ------------------------------------------------------------------------ */

static const push_ns *ns_find(const push_hub *hub, const char *name, size_t n) {
  for (size_t i = 0; i < hub->nns; i++) {
    const push_ns *ns = &hub->ns[i];
    if (strnlen(ns->name, sizeof ns->name) == n &&
        memcmp(ns->name, name, n) == 0) {
      return ns;
    }
  }
  return NULL;
}

const push_ns *push_hub_ns(push_hub *hub, const char *channel) {
  const char *colon = strchr(channel, ':');
  return ns_find(hub, channel, colon != NULL ? (size_t)(colon - channel) : 0);
}

typedef struct name_key {
  const char *name;
  size_t n;
} name_key;

static int channel_eq(const void *entries, size_t at, const void *key) {
  const hub_channel *ch = ((hub_channel *const *)entries)[at];
  const name_key *k = key;
  return ch->namelen == k->n && memcmp(ch->name, k->name, k->n) == 0;
}

/* Returns the position of channel name in hub->chans, or HUB_IDX_NONE; *slot
 * gets its index slot. */
static size_t channel_find(const push_hub *hub, const char *name, uint32_t hash,
                           size_t *slot) {
  name_key k = {name, strlen(name)};
  size_t s = hub_idx_find(&hub->chidx, hash, channel_eq, hub->chans, &k);
  if (slot != NULL) {
    *slot = s;
  }
  return s != HUB_IDX_NONE ? hub->chidx.slot[s].pos - 1 : HUB_IDX_NONE;
}

static void channel_free(push_hub *hub, hub_channel *ch) {
  for (size_t i = 0; i < ch->npend; i++) {
    hub_pub_unref(ch->pend[i]);
  }
  free(ch->pend);
  while (ch->rlen > 0) {
    hub_ring_drop_front(hub, ch);
  }
  free(ch->ring);
  for (size_t i = 0; i < ch->npres; i++) {
    free(ch->pres[i]);
  }
  free(ch->pres);
  free(ch->presidx.slot);
  free(ch->subs);
  free(ch->subidx.slot);
  free(ch);
}

/* The channel, created if create is set and its namespace is configured.
 * NULL if absent, unconfigured or out of memory. */
hub_channel *hub_channel_get(push_hub *hub, const char *name, int create) {
  return hub_channel_get_hashed(hub, name, push_hub_hash(hub, name), create);
}

uint32_t push_hub_hash(const push_hub *hub, const char *channel) {
  return push_hash_str(hub->key, channel, strlen(channel));
}

hub_channel *hub_channel_get_hashed(push_hub *hub, const char *name,
                                    uint32_t hash, int create) {
  size_t n = strlen(name);
  size_t at = channel_find(hub, name, hash, NULL);
  if (at != HUB_IDX_NONE) {
    return hub->chans[at];
  }
  const push_ns *ns;
  if (!create || (ns = push_hub_ns(hub, name)) == NULL) {
    return NULL;
  }
  if (hub_idx_reserve(&hub->chidx, hub->nchans + 1) != 0 ||
      hub_dense_reserve((void **)&hub->chans, &hub->capchans, hub->nchans + 1,
                        sizeof *hub->chans) != 0 ||
      n > SIZE_MAX - sizeof(hub_channel) - 1) {
    return NULL;
  }
  hub_channel *ch = calloc(1, sizeof *ch + n + 1);
  if (ch == NULL) {
    return NULL;
  }
  if (push_random_id(ch->epoch, PUSH_EPOCH_MAX) != 0) {
    free(ch);
    return NULL;
  }
  ch->ns = ns;
  ch->hash = hash;
  ch->namelen = n;
  memcpy(ch->name, name, n + 1);
  hub->chans[hub->nchans++] = ch;
  hub_idx_insert(&hub->chidx, hash, (uint32_t)hub->nchans);
  return ch;
}

static void channel_forget(push_hub *hub, size_t at) {
  hub_channel *ch = hub->chans[at];
  size_t slot = hub_idx_slot_of(&hub->chidx, ch->hash, (uint32_t)(at + 1));
  hub_channel *last = hub->chans[hub->nchans - 1];
  hub_idx_remove_swap(&hub->chidx, slot, at, hub->nchans, last->hash);
  hub->chans[at] = last;
  hub->nchans--;
  channel_free(hub, ch);
}

/* Removes the tombstones left by unsubscribes during callbacks. Walking
 * backwards keeps every entry after i alive, so the last entry moved into a
 * hole is always a live one, present in the index. */
void hub_subs_compact(hub_channel *ch) {
  for (size_t i = ch->nsubs; i-- > 0 && ch->ndead > 0;) {
    if (ch->subs[i].s.client != NULL) {
      continue;
    }
    size_t last = ch->nsubs - 1;
    if (i != last) {
      ch->subs[i] = ch->subs[last];
      size_t j =
          hub_idx_slot_of(&ch->subidx, hub_hash_ptr(ch->subs[i].s.client),
                          (uint32_t)(last + 1));
      ch->subidx.slot[j].pos = (uint32_t)(i + 1);
    }
    ch->nsubs--;
    ch->ndead--;
  }
}

/* ------------------------------------------------------------------------ */
/* Hub                                                                      */
/* ------------------------------------------------------------------------ */

push_hub *push_hub_new(const push_ns *ns, size_t nns) {
  push_hub *hub = calloc(1, sizeof *hub);
  if (hub == NULL) {
    return NULL;
  }
  if (nns > 0) {
    hub->ns = malloc(nns * sizeof *hub->ns);
    if (hub->ns == NULL) {
      free(hub);
      return NULL;
    }
    memcpy(hub->ns, ns, nns * sizeof *hub->ns);
  }
  hub->nns = nns;
  hub->hist.prev = hub->hist.next = &hub->hist;
  if (hub_fill_random(hub->key, sizeof hub->key) != 0) {
    free(hub->ns);
    free(hub);
    return NULL;
  }
  return hub;
}

void push_hub_del(push_hub *hub) {
  if (hub == NULL) {
    return;
  }
  for (size_t i = 0; i < hub->nchans; i++) {
    channel_free(hub, hub->chans[i]);
  }
  free(hub->chans);
  free(hub->chidx.slot);
  free(hub->dirty);
  push_buf_free(&hub->scratch);
  push_buf_free(&hub->scratch2);
  free(hub->ns);
  free(hub);
}

/* ------------------------------------------------------------------------ */
/* Publishing and the batched flush                                         */
/* ------------------------------------------------------------------------ */

/* Makes room for one more pending publication of ch, so that publishing
 * cannot fail after the history has changed. A channel with no live
 * subscriber queues nothing and needs none. */
int hub_queue_reserve(push_hub *hub, hub_channel *ch) {
  if (ch->nsubs == ch->ndead) {
    return 0;
  }
  if (hub_dense_reserve((void **)&ch->pend, &ch->cappend, ch->npend + 1,
                        sizeof *ch->pend) != 0) {
    return -1;
  }
  if (!ch->queued &&
      hub_dense_reserve((void **)&hub->dirty, &hub->capdirty, hub->ndirty + 1,
                        sizeof *hub->dirty) != 0) {
    return -1;
  }
  return 0;
}

/* Appends pub (whose offset is the channel's next, with room reserved by
 * hub_ring_reserve and hub_queue_reserve) to the history and, when the channel
 * has subscribers, to its pending list for push_hub_flush. Takes the caller's
 * reference. */
void hub_append_queue(push_hub *hub, hub_channel *ch, push_pub *pub) {
  ch->offset++;
  hub_ring_push(hub, ch, pub);
  size_t live = ch->nsubs - ch->ndead;
  if (live == 0) {
    hub_pub_unref(pub);
    return;
  }
  ch->pend[ch->npend++] = pub;
  uint64_t bytes = (uint64_t)live * (pub->wshdr_len + pub->frame_len);
  ch->pend_bytes += bytes;
  hub->pend_bytes += bytes;
  if (!ch->queued) {
    ch->queued = 1;
    hub->dirty[hub->ndirty++] = ch;
  }
}

/* Hands ch's pending publications to its subscribers: each subscriber all
 * of its own in a row, in offset order, skipping those at or before the
 * offset it subscribed after. A callback may unsubscribe anyone (a
 * tombstone: its remaining publications are not delivered) or subscribe
 * someone new (past n: it starts after the current offset, so none of these
 * are its); the entry is read again after each call because a subscribe
 * may move the array. Callbacks cannot add to the pending list: publishing
 * to a busy channel is refused. Does nothing on a busy channel (a join or
 * leave caused by one of its own callbacks): its flush is under way. */
void hub_channel_flush(push_hub *hub, hub_channel *ch) {
  size_t np = ch->npend;
  if (np == 0 || ch->busy) {
    return;
  }
  push_pub **pend = ch->pend;
  uint64_t first = pend[0]->offset;
  size_t n = ch->nsubs;
  hub_channel_enter(hub, ch);
  for (size_t i = 0; i < n; i++) {
    uint64_t after = ch->subs[i].after;
    for (size_t k = after >= first ? (size_t)(after - first + 1) : 0; k < np;
         k++) {
      const push_sub *s = &ch->subs[i].s;
      if (s->client == NULL || s->deliver == NULL) {
        break;
      }
      s->deliver(s->client, hub_pub_ref(pend[k]));
    }
  }
  hub_channel_leave(hub, ch);
  for (size_t k = 0; k < np; k++) {
    hub_pub_unref(pend[k]);
  }
  ch->npend = 0;
  hub->pend_bytes -= ch->pend_bytes;
  ch->pend_bytes = 0;
  if (ch->cappend > HUB_PEND_KEEP) {
    free(ch->pend);
    ch->pend = NULL;
    ch->cappend = 0;
  }
}

void push_hub_flush(push_hub *hub) {
  if (hub->busy) {
    return; /* from a callback: the flush running will get there */
  }
  /* By index: a callback may publish to another channel, which appends to
   * (and may move) the list, and is then flushed in this same walk. */
  for (size_t i = 0; i < hub->ndirty; i++) {
    hub_channel *ch = hub->dirty[i];
    ch->queued = 0;
    hub_channel_flush(hub, ch);
  }
  hub->ndirty = 0;
}

uint64_t push_hub_pending_bytes(const push_hub *hub) {
  return hub->pend_bytes;
}

int push_hub_publish(push_hub *hub, const char *channel, push_json data,
                     push_json b64, const char *client, const char *user,
                     int64_t now_ms, push_pos *pos) {
  hub_channel *ch = hub_channel_get(hub, channel, 1);
  if (ch == NULL || ch->busy) {
    return -1;
  }
  if (client != NULL && user == NULL) {
    user = "";
  }
  hub_ring_prune(hub, ch, now_ms);
  push_pub *pub =
      hub_pub_build(hub, ch, ch->offset + 1, data, b64, client, user, now_ms);
  if (pub == NULL) {
    return -1;
  }
  if (hub_ring_reserve(ch) != 0 || hub_queue_reserve(hub, ch) != 0) {
    hub_pub_unref(pub);
    return -1;
  }
  if (pos != NULL) {
    memcpy(pos->epoch, ch->epoch, sizeof pos->epoch);
    pos->offset = ch->offset + 1;
    pos->set = 1;
  }
  hub_append_queue(hub, ch, pub);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Subscribers                                                              */
/* ------------------------------------------------------------------------ */

static int sub_eq(const void *entries, size_t at, const void *key) {
  return ((const hub_sub *)entries)[at].s.client == key;
}

int push_hub_subscribe(push_hub *hub, const char *channel, const push_sub *sub,
                       const push_pos *since, int64_t now_ms, push_result *r) {
  memset(r, 0, sizeof *r);
  hub_channel *ch = hub_channel_get(hub, channel, 1);
  if (ch == NULL) {
    return -1;
  }
  hub_ring_prune(hub, ch, now_ms);
  hub_channel_pos(ch, &r->pos);
  uint32_t hash = hub_hash_ptr(sub->client);
  if (hub_idx_find(&ch->subidx, hash, sub_eq, ch->subs, sub->client) !=
      HUB_IDX_NONE) {
    return 1;
  }
  /* Everything that can fail happens before anything changes. */
  size_t k, n;
  int recovered = hub_ring_since(ch, since, &k, &n);
  if (hub_idx_reserve(&ch->subidx, ch->nsubs + 1) != 0 ||
      hub_dense_reserve((void **)&ch->subs, &ch->capsubs, ch->nsubs + 1,
                        sizeof *ch->subs) != 0 ||
      hub_result_fill(ch, k, n, r) != 0) {
    return -1;
  }
  r->recovered = recovered;
  ch->subs[ch->nsubs++] = (hub_sub){*sub, ch->offset};
  hub_idx_insert(&ch->subidx, hash, (uint32_t)ch->nsubs);
  hub->nsubscriptions++;
  return 0;
}

int push_hub_unsubscribe(push_hub *hub, const char *channel, void *client) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  if (ch == NULL) {
    return 1;
  }
  size_t slot =
      hub_idx_find(&ch->subidx, hub_hash_ptr(client), sub_eq, ch->subs, client);
  if (slot == HUB_IDX_NONE) {
    return 1;
  }
  size_t at = ch->subidx.slot[slot].pos - 1;
  if (ch->busy) {
    hub_idx_erase(&ch->subidx, slot);
    memset(&ch->subs[at], 0, sizeof ch->subs[at]);
    ch->ndead++;
  } else {
    /* The last entry is live: tombstones exist only while busy. */
    hub_idx_remove_swap(&ch->subidx, slot, at, ch->nsubs,
                        hub_hash_ptr(ch->subs[ch->nsubs - 1].s.client));
    ch->subs[at] = ch->subs[--ch->nsubs];
  }
  hub->nsubscriptions--;
  return 0;
}

size_t push_hub_nsubscribers(push_hub *hub, const char *channel) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  return ch != NULL ? ch->nsubs - ch->ndead : 0;
}

void push_hub_each_subscriber(push_hub *hub, const char *channel,
                              void (*fn)(void *client, void *ud), void *ud) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  if (ch == NULL) {
    return;
  }
  size_t n = ch->nsubs;
  hub_channel_enter(hub, ch);
  for (size_t i = 0; i < n; i++) {
    if (ch->subs[i].s.client != NULL) {
      fn(ch->subs[i].s.client, ud);
    }
  }
  hub_channel_leave(hub, ch);
}

/* ------------------------------------------------------------------------ */
/* Listing, tick, counts                                                    */
/* ------------------------------------------------------------------------ */

/* Lists the channels that have subscribers (the "active" channels): ones
 * kept only by history or presence are not interesting to an operator
 * asking where the clients are. */
int push_hub_channels_json(push_hub *hub, push_buf *b) {
  size_t len0 = b->len;
  int rc = push_buf_raw(b, "{\"channels\":{", 13);
  int first = 1;
  for (size_t i = 0; i < hub->nchans && rc == 0; i++) {
    const hub_channel *ch = hub->chans[i];
    size_t live = ch->nsubs - ch->ndead;
    if (live == 0) {
      continue;
    }
    rc = (!first ? push_buf_raw(b, ",", 1) : 0) ||
         push_buf_str(b, ch->name, ch->namelen) ||
         push_buf_raw(b, ":{\"subscribers\":", 16) || push_buf_u64(b, live) ||
         push_buf_raw(b, "}", 1);
    first = 0;
  }
  if (rc == 0) {
    rc = push_buf_raw(b, "}}", 2);
  }
  if (rc != 0) {
    b->len = len0;
    return -1;
  }
  return 0;
}

/* Walks backwards so that the swap of channel_forget only moves channels
 * already visited. From inside a callback it does nothing: the channel
 * being delivered must not go away under its loop. */
void push_hub_tick(push_hub *hub, int64_t now_ms) {
  if (hub->busy) {
    return;
  }
  push_hub_flush(hub); /* the dirty list must not hold a forgotten channel */
  for (size_t i = hub->nchans; i-- > 0;) {
    hub_channel *ch = hub->chans[i];
    hub_ring_prune(hub, ch, now_ms);
    if (ch->nsubs == 0 && ch->npres == 0 && ch->rlen == 0) {
      channel_forget(hub, i);
    }
  }
}

size_t push_hub_nchannels(const push_hub *hub) {
  return hub->nchans;
}

size_t push_hub_nsubscriptions(const push_hub *hub) {
  return hub->nsubscriptions;
}
