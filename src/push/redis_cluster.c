/*
 * redis_cluster.c - Redis Cluster (redis.cluster; docs/scaling.md, "Redis
 * Cluster"): the slot map, MOVED and ASK.
 *
 * A cluster's masters are the engine's shards. A channel's keys and its
 * sharded pub/sub channel share the hash tag {channel} (redis_ckeys), so
 * all of them live in one hash slot, on the master that serves it: the
 * publish and load scripts stay atomic, and SSUBSCRIBE goes to the same
 * master that SPUBLISHes. The node list's two keys share the tag
 * {prefix.nodes}.
 *
 * The map (slot -> master) comes from CLUSTER SLOTS, asked on a short-lived
 * connection of its own to one node after another (masters in use first,
 * then the seed nodes) until one answers. It is read at start, every few
 * seconds, and soon after anything that suggests it changed: a shard
 * failing (a master killed: its replica takes over its slots), ROLE saying
 * a master is now a replica, CLUSTERDOWN, a MOVED. While it is incomplete
 * or one of its masters is down, it is read every half second, so a
 * failover is followed within about that much of the cluster's own.
 *
 * Applying a map starts the masters that are new to it, moves each channel
 * whose slot changed hands (redis_chan_move: it resubscribes and reloads
 * there, and the epoch check tells its subscribers what a promoted replica
 * lacks), and retires the masters that serve no slot any more (counted as
 * failovers).
 *
 * MOVED (the slot lives elsewhere now) updates the slot's entry at once;
 * ASK (the slot is being migrated and this key is already there) does not.
 * Either way a command that is not a channel's own (a publish, presence,
 * the node list) is sent on to the master named, after ASKING for ASK,
 * with the new server's identity in the scripts that carry it. A channel's
 * own commands (subscribe, load) are not: the channel moves, or fails and
 * is retried by the next tick.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/log.h"
#include "push/redis_int.h"

#define NO_OWNER 0xff
#define REFRESH_MIN_MS 200  /* between two reads of the map */
#define REFRESH_FAST_MS 500 /* while it is incomplete or a master down */
#define REFRESH_TICKS 5     /* otherwise, every this many ticks */
#define MAX_CANDIDATES (REDIS_CLUSTER_MAX_MASTERS + PUSH_REDIS_MAX_SEEDS)
/* Redirects one command may follow: two masters that each think the
 * other has the slot (a migration's last step, half done) must not bounce
 * it forever. */
#define MAX_HOPS 3

struct rcluster {
  push_redis *r;
  uint8_t owner[REDIS_NSLOTS]; /* index into r->shards, or NO_OWNER */
  int complete;                /* no NO_OWNER left */
  size_t nseeds;
  char seed_host[PUSH_REDIS_MAX_SEEDS][256];
  char seed_port[PUSH_REDIS_MAX_SEEDS][16];
  /* Reading the map. */
  redis_conn conn;
  rdial dial;
  uv_timer_t timer;
  int timer_init;
  int busy;  /* a read is under way */
  int again; /* and another was asked for meanwhile */
  uint64_t last_ms;
  unsigned ticks;
  size_t ncand, tried;
  char cand_host[MAX_CANDIDATES][256];
  char cand_port[MAX_CANDIDATES][16];
  char why[300];
};

/* ------------------------------------------------------------------------ */
/* Hash slots                                                               */
/* ------------------------------------------------------------------------ */

/* CRC16-CCITT (XMODEM), as Redis Cluster's keyHashSlot: a nibble at a
 * time. */
static const uint16_t crc16_nibble[16] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef};

uint16_t redis_cluster_slot(const char *tag, size_t n) {
  uint16_t crc = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t b = (uint8_t)tag[i];
    crc = (uint16_t)((crc << 4) ^ crc16_nibble[(crc >> 12) ^ (b >> 4)]);
    crc = (uint16_t)((crc << 4) ^ crc16_nibble[(crc >> 12) ^ (b & 0x0f)]);
  }
  return crc & (REDIS_NSLOTS - 1);
}

rshard *redis_cluster_owner(const push_redis *r, uint16_t slot) {
  uint8_t i = r->cl->owner[slot];
  return i == NO_OWNER ? NULL : &r->shards[i];
}

int redis_cluster_complete(const push_redis *r) {
  return r->cl->complete;
}

/* The shard entry of master host:port, taking a free one for a master
 * not seen yet (not started: the caller does). NULL when all are taken. */
static rshard *master_entry(push_redis *r, const char *host, const char *port,
                            int *fresh) {
  rshard *free_one = NULL;
  *fresh = 0;
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    if (sh->in_use && strcmp(sh->host, host) == 0 &&
        strcmp(sh->port, port) == 0) {
      return sh;
    }
    if (!sh->in_use && !sh->dial.busy && free_one == NULL) {
      free_one = sh;
    }
  }
  if (free_one == NULL) {
    push_log(PUSH_LOG_ERROR,
             "ev=redis_cluster_error error=\"more than %d masters\"",
             REDIS_CLUSTER_MAX_MASTERS);
    return NULL;
  }
  snprintf(free_one->host, sizeof free_one->host, "%s", host);
  snprintf(free_one->port, sizeof free_one->port, "%s", port);
  free_one->in_use = 1;
  free_one->nslots = 0;
  *fresh = 1;
  return free_one;
}

/* Every channel in slot (or in any slot, slot < 0) follows the map. */
static void move_channels(push_redis *r, int slot) {
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b], *next; ch; ch = next) {
      next = ch->next;
      if (slot >= 0 && ch->slot != (uint16_t)slot) {
        continue;
      }
      rshard *to = redis_cluster_owner(r, ch->slot);
      if (to != NULL && to != ch->sh) {
        redis_chan_move(ch, to);
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Reading the map                                                          */
/* ------------------------------------------------------------------------ */

static void refresh_start(rcluster *cl);

static void on_refresh_timer(uv_timer_t *t) {
  refresh_start(t->data);
}

static void schedule(rcluster *cl, uint64_t delay_ms) {
  if (!cl->r->closing && cl->timer_init) {
    uv_timer_start(&cl->timer, on_refresh_timer, delay_ms, 0);
  }
}

void redis_cluster_refresh(push_redis *r) {
  rcluster *cl = r->cl;
  if (r->closing || !cl->timer_init) {
    return;
  }
  if (cl->busy) {
    cl->again = 1;
    return;
  }
  uint64_t now = uv_now(r->loop);
  uint64_t due = cl->last_ms + REFRESH_MIN_MS;
  uint64_t delay = due > now ? due - now : 0;
  /* Sooner than a read already planned, never later. */
  if (uv_is_active((uv_handle_t *)&cl->timer) &&
      uv_timer_get_due_in(&cl->timer) <= delay) {
    return;
  }
  schedule(cl, delay);
}

static int all_up(const push_redis *r) {
  for (size_t i = 0; i < r->nshards; i++) {
    if (r->shards[i].in_use && !r->shards[i].up) {
      return 0;
    }
  }
  return 1;
}

static void refresh_done(rcluster *cl) {
  redis_conn_close(&cl->conn);
  cl->busy = 0;
  if (cl->again) {
    cl->again = 0;
    redis_cluster_refresh(cl->r);
  } else if (!cl->complete || !all_up(cl->r)) {
    schedule(cl, REFRESH_FAST_MS);
  }
}

static void add_candidate(rcluster *cl, const char *host, const char *port) {
  for (size_t i = 0; i < cl->ncand; i++) {
    if (strcmp(cl->cand_host[i], host) == 0 &&
        strcmp(cl->cand_port[i], port) == 0) {
      return;
    }
  }
  if (cl->ncand < MAX_CANDIDATES) {
    snprintf(cl->cand_host[cl->ncand], 256, "%s", host);
    snprintf(cl->cand_port[cl->ncand], 16, "%s", port);
    cl->ncand++;
  }
}

static void try_next(rcluster *cl) {
  push_redis *r = cl->r;
  redis_conn_close(&cl->conn);
  redis_dial_cancel(&cl->dial);
  if (cl->tried == cl->ncand) {
    push_log(PUSH_LOG_WARN,
             "ev=redis_cluster_error error=\"no node gave the slot map "
             "(last: %s)\"",
             cl->why);
    cl->busy = 0;
    schedule(cl, 1000);
    return;
  }
  size_t i = cl->tried++;
  cl->conn.tls_name =
      r->cfg.tls_server_name ? r->cfg.tls_server_name : cl->cand_host[i];
  redis_dial_start(&cl->dial, cl->cand_host[i], cl->cand_port[i]);
}

/* Masters that answer first: they know the map best. Then the others,
 * then the seeds. */
static void refresh_start(rcluster *cl) {
  push_redis *r = cl->r;
  if (r->closing || cl->busy) {
    return;
  }
  cl->busy = 1;
  cl->again = 0;
  cl->last_ms = uv_now(r->loop);
  cl->ncand = cl->tried = 0;
  cl->why[0] = 0;
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < r->nshards; i++) {
      rshard *sh = &r->shards[i];
      if (sh->in_use && (sh->up != 0) == (pass == 0)) {
        add_candidate(cl, sh->host, sh->port);
      }
    }
  }
  for (size_t i = 0; i < cl->nseeds; i++) {
    add_candidate(cl, cl->seed_host[i], cl->seed_port[i]);
  }
  try_next(cl);
}

/* One range of CLUSTER SLOTS: [start, end, [ip, port, id, ...], replicas
 * ...]. An empty ip means the node asked. */
typedef struct slot_range {
  uint16_t start, end;
  char host[256], port[16];
} slot_range;

static int parse_range(const redisReply *e, const char *asked, slot_range *o) {
  if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
      e->element[0]->type != REDIS_REPLY_INTEGER ||
      e->element[1]->type != REDIS_REPLY_INTEGER ||
      e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2) {
    return -1;
  }
  long long a = e->element[0]->integer, b = e->element[1]->integer;
  const redisReply *ip = e->element[2]->element[0];
  const redisReply *port = e->element[2]->element[1];
  if (a < 0 || b < a || b >= REDIS_NSLOTS || ip->type != REDIS_REPLY_STRING ||
      ip->len >= sizeof o->host || port->type != REDIS_REPLY_INTEGER ||
      port->integer <= 0 || port->integer > 65535) {
    return -1;
  }
  o->start = (uint16_t)a;
  o->end = (uint16_t)b;
  if (ip->len == 0 || (ip->len == 1 && ip->str[0] == '?')) {
    snprintf(o->host, sizeof o->host, "%s", asked);
  } else {
    memcpy(o->host, ip->str, ip->len);
    o->host[ip->len] = 0;
  }
  snprintf(o->port, sizeof o->port, "%lld", port->integer);
  return 0;
}

/* Applies a map read from the cluster: see the top of the file. */
static void apply_map(rcluster *cl, const slot_range *rg, size_t n) {
  push_redis *r = cl->r;
  uint8_t fresh[REDIS_CLUSTER_MAX_MASTERS] = {0};
  size_t before[REDIS_CLUSTER_MAX_MASTERS];
  for (size_t i = 0; i < r->nshards; i++) {
    before[i] = r->shards[i].in_use ? r->shards[i].nslots : 0;
  }
  /* Ranges the map does not mention keep their master. */
  for (size_t k = 0; k < n; k++) {
    int is_new;
    rshard *sh = master_entry(r, rg[k].host, rg[k].port, &is_new);
    if (sh == NULL) {
      continue;
    }
    fresh[sh->index] |= (uint8_t)is_new;
    memset(&cl->owner[rg[k].start], sh->index, rg[k].end - rg[k].start + 1u);
  }
  for (size_t i = 0; i < r->nshards; i++) {
    r->shards[i].nslots = 0;
  }
  cl->complete = 1;
  for (size_t s = 0; s < REDIS_NSLOTS; s++) {
    if (cl->owner[s] == NO_OWNER) {
      cl->complete = 0;
    } else {
      r->shards[cl->owner[s]].nslots++;
    }
  }
  move_channels(r, -1);
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    if (!sh->in_use || sh->nslots > 0) {
      continue;
    }
    if (before[i] > 0) {
      r->st.failovers++;
      push_log(PUSH_LOG_WARN,
               "ev=redis_failover shard=%d from=%s:%s slots=%zu (another "
               "master serves them now)",
               sh->index, sh->host, sh->port, before[i]);
    }
    redis_shard_retire(sh);
  }
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    if (fresh[i] && sh->in_use) {
      push_log(PUSH_LOG_INFO,
               "ev=redis_cluster_master shard=%d addr=%s:%s slots=%zu",
               sh->index, sh->host, sh->port, sh->nslots);
      redis_shard_start(sh);
    }
  }
}

static void on_slots(redis_conn *c, redisReply *reply, const redis_pending *p) {
  rcluster *cl = c->owner;
  (void)p;
  if (reply == NULL) {
    return;
  }
  const char *asked = cl->cand_host[cl->tried - 1];
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
    snprintf(cl->why, sizeof cl->why, "%s:%s: %s", asked,
             cl->cand_port[cl->tried - 1],
             reply->type == REDIS_REPLY_ERROR ? reply->str
                                              : "no slots in CLUSTER SLOTS");
    try_next(cl);
    return;
  }
  slot_range *rg = calloc(reply->elements, sizeof *rg);
  size_t n = 0;
  for (size_t i = 0; rg != NULL && i < reply->elements; i++) {
    if (parse_range(reply->element[i], asked, &rg[n]) == 0) {
      n++;
    }
  }
  if (rg == NULL || n == 0) {
    snprintf(cl->why, sizeof cl->why, "%s: bad CLUSTER SLOTS reply", asked);
    free(rg);
    try_next(cl);
    return;
  }
  apply_map(cl, rg, n);
  free(rg);
  refresh_done(cl);
}

static void map_ready(redis_conn *c) {
  rcluster *cl = c->owner;
  push_redis *r = cl->r;
  /* The password is the data nodes' own, like every shard's. */
  redis_send_auth(r, c, r->cfg.user, r->cfg.password);
  const char *argv[2] = {"CLUSTER", "SLOTS"};
  size_t lens[2] = {7, 5};
  redis_cmd(c, on_slots, NULL, NULL, 2, argv, lens);
}

static void map_failed(redis_conn *c, const char *why) {
  rcluster *cl = c->owner;
  size_t i = cl->tried ? cl->tried - 1 : 0;
  snprintf(cl->why, sizeof cl->why, "%s:%s: %s", cl->cand_host[i],
           cl->cand_port[i], why);
  try_next(cl);
}

static void map_handle_closed(redis_conn *c) {
  rcluster *cl = c->owner;
  redis_maybe_free(cl->r);
}

static const redis_conn_events map_events = {
    .ready = map_ready,
    .failed = map_failed,
    .handle_closed = map_handle_closed,
};

void redis_cluster_tick(push_redis *r, int64_t now_ms) {
  rcluster *cl = r->cl;
  if (cl->busy) {
    /* A node that does not answer (a host gone) is given up on. */
    redis_conn_ping(&cl->conn, now_ms, r->cfg.ping_timeout_ms);
    return;
  }
  if (++cl->ticks >= REFRESH_TICKS) {
    cl->ticks = 0;
    redis_cluster_refresh(r);
  }
}

/* ------------------------------------------------------------------------ */
/* MOVED and ASK                                                            */
/* ------------------------------------------------------------------------ */

/* "MOVED <slot> <host>:<port>" or "ASK ...": the slot and the master. */
static int parse_redirect(const redisReply *reply, int *ask, uint16_t *slot,
                          char host[256], char port[16]) {
  char text[400], addr[300];
  unsigned long s;
  if (reply->type != REDIS_REPLY_ERROR || reply->len >= sizeof text) {
    return -1;
  }
  memcpy(text, reply->str, reply->len);
  text[reply->len] = 0;
  if (sscanf(text, "MOVED %lu %299s", &s, addr) == 2) {
    *ask = 0;
  } else if (sscanf(text, "ASK %lu %299s", &s, addr) == 2) {
    *ask = 1;
  } else {
    return -1;
  }
  if (s >= REDIS_NSLOTS || redis_split_addr(addr, host, 256, port, 16) != 0) {
    return -1;
  }
  *slot = (uint16_t)s;
  return 0;
}

int redis_cluster_moved(rshard *sh, const redisReply *reply) {
  push_redis *r = sh->r;
  rcluster *cl = r->cl;
  char host[256], port[16];
  uint16_t slot;
  int ask, is_new;
  if (cl == NULL || parse_redirect(reply, &ask, &slot, host, port) != 0 ||
      ask) {
    return 0;
  }
  rshard *to = master_entry(r, host, port, &is_new);
  if (to == NULL) {
    return 0;
  }
  if (cl->owner[slot] != to->index) {
    if (cl->owner[slot] != NO_OWNER) {
      r->shards[cl->owner[slot]].nslots--;
    }
    cl->owner[slot] = (uint8_t)to->index;
    to->nslots++;
    push_log(PUSH_LOG_INFO, "ev=redis_moved_slot slot=%u to=%s:%s", slot, host,
             port);
    move_channels(r, slot);
  }
  if (is_new) {
    redis_shard_start(to);
  }
  redis_cluster_refresh(r); /* the slot rarely moves alone */
  return 1;
}

/* Our own RESP command, "*N\r\n" then N "$len\r\n<bytes>\r\n", back into
 * its arguments (pointing into raw). Returns N, or -1. */
static int resp_args(const char *raw, size_t len, const char **argv,
                     size_t *lens, int max) {
  const char *p = raw, *end = raw + len;
  char *e;
  if (len < 4 || *p != '*') {
    return -1;
  }
  long n = strtol(p + 1, &e, 10);
  if (n <= 0 || n > max || e + 2 > end || e[0] != '\r') {
    return -1;
  }
  p = e + 2;
  for (long i = 0; i < n; i++) {
    if (p >= end || *p != '$') {
      return -1;
    }
    long l = strtol(p + 1, &e, 10);
    if (l < 0 || e + 2 > end || e[0] != '\r' ||
        (size_t)(end - (e + 2)) < (size_t)l + 2) {
      return -1;
    }
    argv[i] = e + 2;
    lens[i] = (size_t)l;
    p = e + 2 + l + 2;
  }
  return (int)n;
}

/* Sends the command on to the master a MOVED or ASK names. raw is only
 * used before anything that can call back into the server (moving
 * channels wakes their waiters, who may send commands on c and so move
 * c's buffer). */
int redis_cluster_redirect(redis_conn *c, const redisReply *reply,
                           const redis_pending *p, const char *raw,
                           size_t len) {
  rshard *sh = conn_shard(c);
  push_redis *r = sh->r;
  char host[256], port[16];
  uint16_t slot;
  int ask, is_new, resent = 0;
  if (parse_redirect(reply, &ask, &slot, host, port) != 0) {
    return 0;
  }
  /* A channel's own commands are not resent: the channel follows its
   * slot on its own (or fails, and the next tick retries). */
  rshard *to =
      redis_chan_reply_fn(p->fn) ? NULL : master_entry(r, host, port, &is_new);
  if (to != NULL && is_new) {
    redis_shard_start(to); /* for next time: this command fails */
  }
  const char *argv[16];
  size_t lens[16];
  int argc = to != NULL ? resp_args(raw, len, argv, lens, 16) : -1;
  if (to != NULL && to != sh && to->up && argc >= 2 && p->hops < MAX_HOPS) {
    /* The publish and load scripts end with the server's identity: the
     * epoch check must compare the channel with the server that runs
     * it. */
    if (argc >= 4 && lens[0] == 7 && memcmp(argv[0], "EVALSHA", 7) == 0 &&
        lens[1] == 40 &&
        (memcmp(argv[1], sh->sha[S_PUBLISH], 40) == 0 ||
         memcmp(argv[1], sh->sha[S_LOAD], 40) == 0)) {
      argv[argc - 2] = to->replid;
      lens[argc - 2] = strlen(to->replid);
      argv[argc - 1] = to->durable;
      lens[argc - 1] = 1;
    }
    const char *asking[1] = {"ASKING"};
    size_t al[1] = {6};
    if ((!ask || redis_cmd(&to->cmd, redis_on_ignored, NULL, NULL, 1, asking,
                           al) == 0) &&
        redis_conn_cmd_again(&to->cmd, p, argc, argv, lens) == 0) {
      r->st.redirects++;
      resent = 1;
    }
  }
  if (!ask) {
    redis_cluster_moved(sh, reply); /* may call back: raw is done with */
  }
  return resent;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

int redis_cluster_new(push_redis *r, char *const *seeds, size_t nseeds,
                      char *err, size_t errlen) {
  rcluster *cl = calloc(1, sizeof *cl);
  if (cl == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  cl->r = r;
  memset(cl->owner, NO_OWNER, sizeof cl->owner);
  for (size_t i = 0; i < nseeds; i++) {
    if (redis_split_addr(seeds[i], cl->seed_host[i], sizeof cl->seed_host[i],
                         cl->seed_port[i], sizeof cl->seed_port[i]) != 0) {
      snprintf(err, errlen, "redis.cluster: bad address \"%s\" (host:port)",
               seeds[i]);
      free(cl);
      return -1;
    }
  }
  cl->nseeds = nseeds;
  redis_conn_init(&cl->conn, &map_events, cl, r->loop, &r->open_handles, 0);
  cl->conn.ssl_ctx = r->ssl_ctx;
  cl->conn.tls_verify = !r->cfg.tls_insecure;
  redis_dial_init(&cl->dial, r, &cl->conn, NULL);
  r->cl = cl;
  return 0;
}

void redis_cluster_start(push_redis *r) {
  rcluster *cl = r->cl;
  uv_timer_init(r->loop, &cl->timer);
  cl->timer.data = cl;
  cl->timer_init = 1;
  r->open_handles++;
  refresh_start(cl);
}

static void on_timer_closed(uv_handle_t *h) {
  rcluster *cl = h->data;
  cl->r->open_handles--;
  redis_maybe_free(cl->r);
}

void redis_cluster_close(push_redis *r) {
  rcluster *cl = r->cl;
  redis_dial_close(&cl->dial);
  redis_conn_close(&cl->conn);
  if (cl->timer_init) {
    uv_timer_stop(&cl->timer);
    uv_close((uv_handle_t *)&cl->timer, on_timer_closed);
  }
}

void redis_cluster_free(push_redis *r) {
  redis_conn_free(&r->cl->conn);
  free(r->cl);
  r->cl = NULL;
}
