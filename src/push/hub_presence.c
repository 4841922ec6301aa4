/*
 * hub_presence.c - presence: who is in a channel (one entry per client id,
 * with its user and info), the join and leave pushes that tell the
 * channel's subscribers, and the presence JSON of a channel.
 *
 * Entries live in a dense array with an index by client id (hub_index.c).
 * A join or leave push goes out after the channel's pending publications
 * (hub_channel_flush first), so every subscriber sees publications and
 * presence events in the order they happened.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "push/hub_int.h"

static int pres_eq(const void *entries, size_t at, const void *key) {
  return strcmp(((hub_presence *const *)entries)[at]->client, key) == 0;
}

/* Sends a join or leave push to every subscriber, after the publications
 * still pending (so each sees them in the order they happened). The frame
 * is the caller's own buffer, not the hub's scratch: a callback may cause
 * another join or leave (a client dropped on the spot) while this one
 * runs. */
static void presence_broadcast(push_hub *hub, hub_channel *ch,
                               const push_buf *frame) {
  hub_channel_flush(hub, ch);
  size_t n = ch->nsubs;
  hub_channel_enter(hub, ch);
  for (size_t i = 0; i < n; i++) {
    push_sub s = ch->subs[i].s;
    if (s.client != NULL && s.presence_event != NULL) {
      s.presence_event(s.client, frame->p, frame->len);
    }
  }
  hub_channel_leave(hub, ch);
}

void push_hub_broadcast_raw(push_hub *hub, const char *channel,
                            const char *frame, size_t len) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  if (ch != NULL) {
    push_buf b = {(char *)frame, len, len};
    presence_broadcast(hub, ch, &b);
  }
}

static push_json info_json(const char *info) {
  push_json j = {info, info != NULL ? strlen(info) : 0};
  return j;
}

/*
 * Adding a client that is already present replaces its user and info
 * without a second join push: the others already know it is there. The
 * join push is encoded before anything changes, so running out of memory
 * leaves neither a silent entry nor a push for an absent one.
 */
int push_hub_presence_add(push_hub *hub, const char *channel,
                          const char *client, const char *user,
                          const char *info) {
  hub_channel *ch = hub_channel_get(hub, channel, 1);
  if (ch == NULL) {
    return -1;
  }
  if (user == NULL) {
    user = "";
  }
  size_t cn = strlen(client), un = strlen(user);
  size_t in = info != NULL ? strlen(info) : 0;
  if (cn > SIZE_MAX / 4 || un > SIZE_MAX / 4 || in > SIZE_MAX / 4) {
    return -1;
  }
  hub_presence *e = malloc(sizeof *e + cn + un + in + 3);
  if (e == NULL) {
    return -1;
  }
  e->hash = push_hash_str(hub->key, client, cn);
  memcpy(e->client, client, cn + 1);
  char *u = e->client + cn + 1;
  memcpy(u, user, un + 1);
  e->user = u;
  e->info = NULL;
  if (info != NULL) {
    char *i = u + un + 1;
    memcpy(i, info, in + 1);
    e->info = i;
  }
  size_t slot = hub_idx_find(&ch->presidx, e->hash, pres_eq, ch->pres, client);
  if (slot != HUB_IDX_NONE) {
    size_t at = ch->presidx.slot[slot].pos - 1;
    free(ch->pres[at]);
    ch->pres[at] = e;
    return 0;
  }
  int announce = ch->ns->join_leave && ch->nsubs > ch->ndead;
  push_buf frame = {0};
  if (hub_idx_reserve(&ch->presidx, ch->npres + 1) != 0 ||
      hub_dense_reserve((void **)&ch->pres, &ch->cappres, ch->npres + 1,
                        sizeof *ch->pres) != 0 ||
      (announce && push_push_join(&frame, ch->name, client, user,
                                  info_json(info), 0) != 0)) {
    push_buf_free(&frame);
    free(e);
    return -1;
  }
  ch->pres[ch->npres++] = e;
  hub_idx_insert(&ch->presidx, e->hash, (uint32_t)ch->npres);
  if (announce) {
    presence_broadcast(hub, ch, &frame);
    push_buf_free(&frame);
  }
  return 0;
}

/* A leave push that cannot be encoded (out of memory) is not sent: the
 * entry is removed all the same, since the client is gone. */
void push_hub_presence_remove(push_hub *hub, const char *channel,
                              const char *client) {
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  if (ch == NULL) {
    return;
  }
  uint32_t hash = push_hash_str(hub->key, client, strlen(client));
  size_t slot = hub_idx_find(&ch->presidx, hash, pres_eq, ch->pres, client);
  if (slot == HUB_IDX_NONE) {
    return;
  }
  size_t at = ch->presidx.slot[slot].pos - 1;
  hub_presence *e = ch->pres[at];
  hub_idx_remove_swap(&ch->presidx, slot, at, ch->npres,
                      ch->pres[ch->npres - 1]->hash);
  ch->pres[at] = ch->pres[--ch->npres];
  if (ch->ns->join_leave && ch->nsubs > ch->ndead) {
    push_json none = {NULL, 0};
    push_buf frame = {0};
    if (push_push_join(&frame, ch->name, e->client, e->user, none, 1) == 0) {
      presence_broadcast(hub, ch, &frame);
    }
    push_buf_free(&frame);
  }
  free(e);
}

/* The JSON writers leave b as it was when they run out of memory. */
int push_hub_presence_json(push_hub *hub, const char *channel, push_buf *b) {
  size_t len0 = b->len;
  hub_channel *ch = hub_channel_get(hub, channel, 0);
  size_t n = ch != NULL ? ch->npres : 0;
  int rc = push_buf_raw(b, "{\"clients\":{", 12);
  for (size_t i = 0; i < n && rc == 0; i++) {
    const hub_presence *e = ch->pres[i];
    rc = (i > 0 ? push_buf_raw(b, ",", 1) : 0) ||
         push_buf_str(b, e->client, strlen(e->client)) ||
         push_buf_raw(b, ":{\"user\":", 9) ||
         push_buf_str(b, e->user, strlen(e->user));
    if (rc == 0 && e->info != NULL) {
      rc = push_buf_raw(b, ",\"info\":", 8) ||
           push_buf_raw(b, e->info, strlen(e->info));
    }
    if (rc == 0) {
      rc = push_buf_raw(b, "}", 1);
    }
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
