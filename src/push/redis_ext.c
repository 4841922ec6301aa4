/*
 * redis_ext.c - what the server needs of the cluster besides channels
 * (redis.h): channel occupancy decided once for all nodes, control
 * messages between nodes (the API's disconnect, subscribe and unsubscribe
 * of a user's connections everywhere), and the connections of each user
 * counted across the nodes (user_connection_limit).
 *
 * Occupancy. Each channel has a sorted set prefix.{C}.o of the nodes that
 * have subscribers to it, scored by when the entry expires. A node adds
 * itself when its first local subscriber comes and removes itself when its
 * last one leaves, in one script that also says whether the set went from
 * empty to one (occupied) or from one to empty (vacated): exactly one node
 * sees each change, and only that node sends the webhook. Entries are
 * refreshed every presence_ttl / 3 while the node has subscribers (it said
 * occupied and not yet vacated: with several loops, the owner loop of the
 * channel says it for the node's loops), so a
 * node that dies drops out after presence_ttl (without a vacated event:
 * nobody was there to see the last one leave).
 *
 * Control. Every node SUBSCRIBEs (classic pub/sub, on the subscriber
 * connection of the shard that keeps the node list: shard 0, or in a Redis
 * Cluster the master of that slot) to prefix.ctl; a message published
 * there reaches every node, the sender's too (a Redis Cluster forwards
 * classic pub/sub messages to all its nodes).
 *
 * Users. A sorted set prefix.u.{user} of client ids scored by expiry, on
 * the shard the user's name hashes to; adding checks the count and adds in
 * one script, and entries are refreshed like presence entries.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/log.h"
#include "push/redis_int.h"

#define CTL_SUFFIX ".ctl"

static size_t ctl_key(const push_redis *r, char *out, size_t cap) {
  int n = snprintf(out, cap, "%s" CTL_SUFFIX, r->prefix);
  return n < 0 ? 0 : (size_t)n;
}

/* ---- control messages --------------------------------------------------- */

void redis_ext_shard_up(rshard *sh) {
  char key[96];
  size_t kl = ctl_key(sh->r, key, sizeof key);
  const char *argv[2] = {"SUBSCRIBE", key};
  size_t lens[2] = {9, kl};
  redis_cmd(&sh->sub, redis_on_ignored, NULL, NULL, 2, argv, lens);
}

int redis_ext_message(rshard *sh, const char *key, size_t klen, const char *msg,
                      size_t len) {
  push_redis *r = sh->r;
  char ctl[96];
  size_t cl = ctl_key(r, ctl, sizeof ctl);
  /* From whichever shard it came: after a failover the node may be
   * subscribed on two; control messages are idempotent. */
  if (klen != cl || memcmp(key, ctl, cl) != 0) {
    return 0;
  }
  if (r->ev.on_control != NULL) {
    r->ev.on_control(r->ev.ud, msg, len);
  }
  return 1;
}

int push_redis_control(push_redis *r, const char *msg, size_t len) {
  rshard *sh = redis_nodes_shard(r);
  if (sh == NULL || !sh->up) {
    return PUSH_REDIS_DOWN;
  }
  char key[96];
  size_t kl = ctl_key(r, key, sizeof key);
  const char *argv[3] = {"PUBLISH", key, msg};
  size_t lens[3] = {7, kl, len};
  return redis_cmd(&sh->cmd, redis_on_ignored, NULL, NULL, 3, argv, lens) == 0
             ? 0
             : PUSH_REDIS_DOWN;
}

/* ---- occupancy ------------------------------------------------------------
 */

typedef struct occ_call {
  push_redis *r;
  int occupied;
  char channel[];
} occ_call;

static void on_occupancy(redis_conn *c, redisReply *reply,
                         const redis_pending *p) {
  occ_call *oc = p->ud;
  (void)c;
  if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
      reply->integer == 1 && oc->r->ev.on_occupancy != NULL &&
      !oc->r->closing) {
    oc->r->ev.on_occupancy(oc->r->ev.ud, oc->channel, oc->occupied);
  } else if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
    push_log(PUSH_LOG_WARN, "ev=redis_error op=occupancy error=\"%s\"",
             reply->str);
  }
  free(oc);
}

/* Runs the occupancy script for channel; with want_reply, the answer is
 * announced. Returns 0 or -1. */
static int occupancy_cmd(push_redis *r, const char *channel, int occupied,
                         int want_reply) {
  rshard *sh = redis_shard_of(r, channel);
  if (sh == NULL || !sh->up) {
    return -1;
  }
  ckeys k;
  redis_ckeys(r, channel, &k);
  char okey[KEY_MAX + 4], ttl[24];
  int ol = snprintf(okey, sizeof okey, "%s.o", k.ps);
  snprintf(ttl, sizeof ttl, "%" PRIu64, (uint64_t)r->cfg.presence_ttl_s * 1000);
  const char *argv[] = {"EVALSHA", sh->sha[S_OCCUPANCY], "1", okey,
                        r->node,   occupied ? "1" : "0", ttl};
  size_t lens[] = {7, 40, 1, (size_t)ol, strlen(r->node), 1, strlen(ttl)};
  if (!want_reply) {
    return redis_cmd(&sh->cmd, redis_on_ignored, NULL, NULL, 7, argv, lens);
  }
  size_t n = strlen(channel);
  occ_call *oc = malloc(sizeof(*oc) + n + 1);
  if (oc == NULL) {
    return -1;
  }
  oc->r = r;
  oc->occupied = occupied;
  memcpy(oc->channel, channel, n + 1);
  if (redis_cmd(&sh->cmd, on_occupancy, NULL, oc, 7, argv, lens) != 0) {
    free(oc);
    return -1;
  }
  return 0;
}

void push_redis_occupancy(push_redis *r, const char *channel, int occupied) {
  r->occupancy_on = 1;
  rchan *ch = redis_chan_find(r, channel, strlen(channel));
  if (ch != NULL) {
    ch->occupied = occupied;
  }
  if (occupancy_cmd(r, channel, occupied, 1) != 0) {
    push_log(PUSH_LOG_WARN,
             "ev=occupancy_lost channel=%s occupied=%d error=\"Redis "
             "unavailable\"",
             channel, occupied);
  }
}

void redis_ext_tick(push_redis *r, int64_t now_ms) {
  uint64_t every = (uint64_t)r->cfg.presence_ttl_s * 1000 / 3;
  if (!r->occupancy_on ||
      (uint64_t)(now_ms - r->occupancy_refreshed_ms) < every) {
    return;
  }
  r->occupancy_refreshed_ms = now_ms;
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b]; ch; ch = ch->next) {
      /* What the node said, not the hub's subscribers: with several loops
       * the channel's subscribers may all be on other loops, and a relay
       * to them is no subscriber of the node's. */
      if (ch->occupied) {
        occupancy_cmd(r, ch->name, 1, 0);
      }
    }
  }
}

/* ---- connections per user ----------------------------------------------- */

static void on_user(redis_conn *c, redisReply *reply, const redis_pending *p) {
  (void)c;
  push_redis_reply rep = {.status = PUSH_REDIS_DOWN};
  if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
    rep.status = PUSH_REDIS_OK;
    rep.allowed = reply->integer == 1;
  } else if (reply != NULL) {
    rep.status = PUSH_REDIS_ERROR;
    push_log(PUSH_LOG_ERROR, "ev=redis_error op=user_add error=\"%s\"",
             reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
  }
  pending_cb(p)(p->ud, &rep);
}

/* prefix.u.{user} on the shard the user's name hashes to; in a Redis
 * Cluster, the master of the key's slot, found as Redis finds it (the hash
 * tag ends at the first '}', and a user name may hold one). NULL when the
 * slot's owner is not known. */
static rshard *user_key(push_redis *r, const char *user, char *out, size_t cap,
                        size_t *len) {
  int n = snprintf(out, cap, "%s.u.{%s}", r->prefix, user);
  *len = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
  if (r->cl == NULL) {
    return redis_shard_of(r, user);
  }
  const char *open = memchr(out, '{', *len);
  const char *tag = out;
  size_t tl = *len;
  if (open != NULL) {
    const char *close = memchr(open + 1, '}', *len - (size_t)(open + 1 - out));
    if (close != NULL && close > open + 1) {
      tag = open + 1;
      tl = (size_t)(close - tag);
    }
  }
  return redis_cluster_owner(r, redis_cluster_slot(tag, tl));
}

static int user_cmd(push_redis *r, const char *user, const char *client,
                    uint32_t limit, int refresh, redis_reply_fn fn,
                    push_redis_cb cb, void *ud) {
  char key[400], lim[24], ttl[24];
  size_t kl;
  rshard *sh = user_key(r, user, key, sizeof key, &kl);
  if (sh == NULL || !sh->up) {
    return PUSH_REDIS_DOWN;
  }
  snprintf(lim, sizeof lim, "%" PRIu32, limit);
  snprintf(ttl, sizeof ttl, "%" PRIu64, (uint64_t)r->cfg.presence_ttl_s * 1000);
  const char *argv[] = {"EVALSHA", sh->sha[S_USER],    "1", key, client, lim,
                        ttl,       refresh ? "1" : "0"};
  size_t lens[] = {7, 40, 1, kl, strlen(client), strlen(lim), strlen(ttl), 1};
  return redis_cmd(&sh->cmd, fn, cb, ud, 8, argv, lens) == 0 ? 1
                                                             : PUSH_REDIS_DOWN;
}

int push_redis_user_add(push_redis *r, const char *user, const char *client,
                        uint32_t limit, push_redis_cb cb, void *ud) {
  return user_cmd(r, user, client, limit, 0, on_user, cb, ud);
}

void push_redis_user_refresh(push_redis *r, const char *user,
                             const char *client) {
  user_cmd(r, user, client, 0, 1, redis_on_ignored, NULL, NULL);
}

void push_redis_user_remove(push_redis *r, const char *user,
                            const char *client) {
  char key[400];
  size_t kl;
  rshard *sh = user_key(r, user, key, sizeof key, &kl);
  if (sh == NULL || !sh->up) {
    return; /* the entry expires */
  }
  const char *argv[] = {"ZREM", key, client};
  size_t lens[] = {4, kl, strlen(client)};
  redis_cmd(&sh->cmd, redis_on_ignored, NULL, NULL, 3, argv, lens);
}
