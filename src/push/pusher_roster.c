/* pusher_roster.c - who is in a presence channel, as this node knows it
 * (pusher_int.h), and the string map it and the channel tables use.
 *
 * Why a replica: Pusher announces a member when the user's first
 * connection joins the channel and says goodbye when its last one leaves,
 * wherever in the cluster those connections are. The engine keeps one
 * presence entry per connection and tells every node of each join and
 * leave, in the order Redis ran them; this file turns that stream into
 * users. A node starts following a channel by asking for a snapshot; the
 * pushes that arrive while the snapshot is on its way may have happened
 * before it or after it, so they are logged and applied again on top of the
 * snapshot, in the order they came. Applying a join or leave twice, or one
 * that the snapshot already holds, changes nothing, so the result is the
 * channel's true state, and from then on the live pushes keep it so.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "push/pusher_int.h"

/* ---- the map ----------------------------------------------------------- */

struct pusher_map_slot {
  char *key; /* NULL: empty */
  void *value;
  uint32_t hash;
};

/* One key for the process, drawn once whichever loop (thread) needs it
 * first. */
static uint64_t map_key[2];
static pthread_once_t map_key_once = PTHREAD_ONCE_INIT;

static void map_key_init(void) {
  if (getrandom(map_key, sizeof(map_key), 0) != (ssize_t)sizeof(map_key)) {
    map_key[0] = (uint64_t)(uintptr_t)&map_key ^ 0x9e3779b97f4a7c15u;
    map_key[1] = (uint64_t)(uintptr_t)map_key_init;
  }
}

static uint32_t map_hash(const char *key) {
  pthread_once(&map_key_once, map_key_init);
  return push_hash_str(map_key, key, strlen(key));
}

static size_t map_find(const pusher_map *m, const char *key, uint32_t h) {
  if (m->cap == 0) {
    return SIZE_MAX;
  }
  size_t i = h & (m->cap - 1);
  while (m->slots[i].key != NULL) {
    if (m->slots[i].hash == h && strcmp(m->slots[i].key, key) == 0) {
      return i;
    }
    i = (i + 1) & (m->cap - 1);
  }
  return SIZE_MAX;
}

void *pusher_map_get(const pusher_map *m, const char *key) {
  size_t i = map_find(m, key, map_hash(key));
  return i == SIZE_MAX ? NULL : m->slots[i].value;
}

static int map_grow(pusher_map *m) {
  size_t ncap = m->cap ? m->cap * 2 : 8;
  struct pusher_map_slot *s = calloc(ncap, sizeof(*s));
  if (s == NULL) {
    return -1;
  }
  for (size_t i = 0; i < m->cap; i++) {
    if (m->slots[i].key != NULL) {
      size_t j = m->slots[i].hash & (ncap - 1);
      while (s[j].key != NULL) {
        j = (j + 1) & (ncap - 1);
      }
      s[j] = m->slots[i];
    }
  }
  free(m->slots);
  m->slots = s;
  m->cap = ncap;
  return 0;
}

int pusher_map_put(pusher_map *m, const char *key, void *value) {
  uint32_t h = map_hash(key);
  size_t i = map_find(m, key, h);
  if (i != SIZE_MAX) {
    m->slots[i].value = value;
    return 0;
  }
  if ((m->n + 1) * 2 > m->cap && map_grow(m) != 0) {
    return -1;
  }
  char *k = strdup(key);
  if (k == NULL) {
    return -1;
  }
  i = h & (m->cap - 1);
  while (m->slots[i].key != NULL) {
    i = (i + 1) & (m->cap - 1);
  }
  m->slots[i].key = k;
  m->slots[i].value = value;
  m->slots[i].hash = h;
  m->n++;
  return 0;
}

/* Backward-shift deletion keeps probe runs free of tombstones. */
void *pusher_map_del(pusher_map *m, const char *key) {
  size_t i = map_find(m, key, map_hash(key));
  if (i == SIZE_MAX) {
    return NULL;
  }
  void *v = m->slots[i].value;
  free(m->slots[i].key);
  size_t mask = m->cap - 1, j = i;
  for (;;) {
    m->slots[i].key = NULL;
    for (;;) {
      j = (j + 1) & mask;
      if (m->slots[j].key == NULL) {
        m->n--;
        return v;
      }
      size_t home = m->slots[j].hash & mask;
      /* j's entry may move to i when its home is not in (i, j]. */
      if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
        break;
      }
    }
    m->slots[i] = m->slots[j];
    i = j;
  }
}

int pusher_map_next(const pusher_map *m, size_t *pos, const char **key,
                    void **value) {
  while (*pos < m->cap) {
    size_t i = (*pos)++;
    if (m->slots[i].key != NULL) {
      *key = m->slots[i].key;
      *value = m->slots[i].value;
      return 1;
    }
  }
  return 0;
}

void pusher_map_free(pusher_map *m) {
  for (size_t i = 0; i < m->cap; i++) {
    free(m->slots[i].key);
  }
  free(m->slots);
  memset(m, 0, sizeof(*m));
}

/* ---- the roster -------------------------------------------------------- */

typedef struct roster_entry {
  char *user;
  char *info; /* raw JSON or NULL */
} roster_entry;

typedef struct roster_user {
  uint32_t conns;
  char *info; /* the user_info of its first entry, or NULL */
} roster_user;

struct roster_log {
  int leave;
  char *client, *user, *info;
};

static char *dup_or_null(const char *s) {
  return s != NULL ? strdup(s) : NULL;
}

static void entry_free(roster_entry *e) {
  free(e->user);
  free(e->info);
  free(e);
}

static void user_free(roster_user *u) {
  free(u->info);
  free(u);
}

static void maps_free(pusher_map *entries, pusher_map *users) {
  size_t pos = 0;
  const char *k;
  void *v;
  while (pusher_map_next(entries, &pos, &k, &v)) {
    entry_free(v);
  }
  pos = 0;
  while (pusher_map_next(users, &pos, &k, &v)) {
    user_free(v);
  }
  pusher_map_free(entries);
  pusher_map_free(users);
}

/* Applies one join or leave to a pair of maps. Returns 1 when the user
 * appeared (join) or went (leave), 0 when nothing changed for users, -1
 * when out of memory. */
static int apply(pusher_map *entries, pusher_map *users, int leave,
                 const char *client, const char *user, const char *info) {
  roster_entry *e = pusher_map_get(entries, client);
  if (leave) {
    if (e == NULL) {
      return 0;
    }
    pusher_map_del(entries, client);
    roster_user *u = pusher_map_get(users, e->user);
    int gone = 0;
    if (u != NULL && --u->conns == 0) {
      pusher_map_del(users, e->user);
      user_free(u);
      gone = 1;
    }
    entry_free(e);
    return gone;
  }
  if (e != NULL) {
    return 0; /* already there: a refresh, or a push applied again */
  }
  e = calloc(1, sizeof(*e));
  if (e == NULL || (e->user = strdup(user)) == NULL ||
      (info != NULL && (e->info = strdup(info)) == NULL)) {
    if (e) {
      entry_free(e);
    }
    return -1;
  }
  roster_user *u = pusher_map_get(users, user);
  int fresh = u == NULL;
  if (fresh) {
    u = calloc(1, sizeof(*u));
    if (u == NULL || (info != NULL && (u->info = strdup(info)) == NULL) ||
        pusher_map_put(users, user, u) != 0) {
      if (u) {
        user_free(u);
      }
      entry_free(e);
      return -1;
    }
  }
  if (pusher_map_put(entries, client, e) != 0) {
    if (fresh) {
      pusher_map_del(users, user);
      user_free(u);
    }
    entry_free(e);
    return -1;
  }
  u->conns++;
  return fresh;
}

/* apply(), telling fn when a user appeared or went. */
static int apply_told(pusher_map *entries, pusher_map *users, int leave,
                      const char *client, const char *user, const char *info,
                      pusher_change_fn fn, void *ud) {
  roster_entry *e = leave ? pusher_map_get(entries, client) : NULL;
  char *gone_user = NULL;
  if (leave && e != NULL && (gone_user = strdup(e->user)) == NULL) {
    return -1;
  }
  int rv = apply(entries, users, leave, client, user ? user : "", info);
  if (rv == 1 && fn != NULL) {
    pusher_change ch = {!leave, leave ? gone_user : user, leave ? NULL : info,
                        client};
    fn(&ch, ud);
  }
  free(gone_user);
  return rv < 0 ? -1 : 0;
}

static void log_clear(pusher_roster *r) {
  for (size_t i = 0; i < r->nlog; i++) {
    free(r->log[i].client);
    free(r->log[i].user);
    free(r->log[i].info);
  }
  r->nlog = 0;
  r->logbase = r->seq;
}

/* The pushes kept while snapshots are in flight: bounded, since a node
 * asks for one per presence subscribe and they come back within a Redis
 * round trip. Past it the log is dropped and the roster marked not ready;
 * the next snapshot makes it whole again. */
#define ROSTER_LOG_MAX 100000

int pusher_roster_event(pusher_roster *r, int leave, const char *client,
                        const char *user, const char *info, pusher_change_fn fn,
                        void *ud) {
  r->seq++;
  if (r->inflight > 0) {
    if (r->nlog == ROSTER_LOG_MAX) {
      log_clear(r);
      r->ready = 0;
    } else {
      if (r->nlog == r->caplog) {
        size_t ncap = r->caplog ? r->caplog * 2 : 16;
        struct roster_log *n = realloc(r->log, ncap * sizeof(*n));
        if (n == NULL) {
          r->ready = 0;
          return -1;
        }
        r->log = n;
        r->caplog = ncap;
      }
      struct roster_log *l = &r->log[r->nlog];
      l->leave = leave;
      l->client = strdup(client);
      l->user = dup_or_null(user);
      l->info = dup_or_null(info);
      if (l->client == NULL || (user && l->user == NULL) ||
          (info && l->info == NULL)) {
        free(l->client);
        free(l->user);
        free(l->info);
        r->ready = 0;
        return -1;
      }
      r->nlog++;
    }
  }
  if (!r->ready) {
    /* Nothing is known before the first snapshot: the push waits in the
     * log (when one is asked for) and counts when it is replayed. */
    return 0;
  }
  return apply_told(&r->entries, &r->users, leave, client, user, info, fn, ud);
}

uint64_t pusher_roster_begin(pusher_roster *r) {
  if (r->inflight++ == 0) {
    log_clear(r);
  }
  return r->seq;
}

/* Reads {"clients":{id:{"user":U,"info":I},...}} into the maps. */
static int load_snapshot(pusher_map *entries, pusher_map *users,
                         const char *json, size_t len) {
  push_json root, clients, k, v, f;
  if (push_json_parse(json, len, &root) != 0 ||
      !push_json_get(root, "clients", &clients)) {
    return -1;
  }
  size_t pos = 0;
  while (push_json_next(clients, &pos, &k, &v)) {
    char client[256], user[PUSHER_USER_ID_MAX * 6 + 1];
    if (push_json_str(k, client, sizeof(client)) < 0 ||
        !push_json_get(v, "user", &f) ||
        push_json_str(f, user, sizeof(user)) < 0) {
      continue;
    }
    char *info = NULL;
    if (push_json_get(v, "info", &f) &&
        push_json_type_of(f) != PUSH_JSON_NULL) {
      if ((info = malloc(f.n + 1)) == NULL) {
        return -1;
      }
      memcpy(info, f.p, f.n);
      info[f.n] = 0;
    }
    int rv = apply(entries, users, 0, client, user, info);
    free(info);
    if (rv < 0) {
      return -1;
    }
  }
  return 0;
}

int pusher_roster_end(pusher_roster *r, uint64_t token, const char *json,
                      size_t len, pusher_change_fn fn, void *ud) {
  int rv = 0;
  if (r->inflight > 0) {
    r->inflight--;
  }
  if (json == NULL) {
    goto out;
  }
  pusher_map entries = {0}, users = {0};
  if (load_snapshot(&entries, &users, json, len) != 0) {
    maps_free(&entries, &users);
    rv = -1;
    goto out;
  }
  /* Pushes logged since this snapshot was asked for, again. The first
   * snapshot tells fn of the changes they make (nothing was known, so
   * they were not applied as they came); a later one was followed live,
   * and only tells what differs from then. */
  int first = !r->ready;
  if (token >= r->logbase) {
    for (size_t i = (size_t)(token - r->logbase); i < r->nlog; i++) {
      const struct roster_log *l = &r->log[i];
      if (apply_told(&entries, &users, l->leave, l->client, l->user, l->info,
                     first ? fn : NULL, ud) < 0) {
        maps_free(&entries, &users);
        rv = -1;
        goto out;
      }
    }
  }
  /* What differs from what the subscribers were told. */
  if (fn != NULL && !first) {
    size_t pos = 0;
    const char *k;
    void *v;
    while (pusher_map_next(&r->users, &pos, &k, &v)) {
      if (pusher_map_get(&users, k) == NULL) {
        pusher_change ch = {0, k, NULL, NULL};
        fn(&ch, ud);
      }
    }
    pos = 0;
    while (pusher_map_next(&users, &pos, &k, &v)) {
      if (pusher_map_get(&r->users, k) == NULL) {
        pusher_change ch = {1, k, ((roster_user *)v)->info, NULL};
        fn(&ch, ud);
      }
    }
  }
  maps_free(&r->entries, &r->users);
  r->entries = entries;
  r->users = users;
  r->ready = 1;
out:
  if (r->inflight == 0) {
    log_clear(r);
  }
  return rv;
}

size_t pusher_roster_nusers(const pusher_roster *r) {
  return r->users.n;
}

int pusher_roster_has_user(const pusher_roster *r, const char *user) {
  return pusher_map_get(&r->users, user) != NULL;
}

int pusher_roster_json(const pusher_roster *r, push_buf *b, const char *me,
                       const char *my_info) {
  size_t len0 = b->len, pos = 0;
  const char *k;
  void *v;
  int extra = me != NULL && pusher_map_get(&r->users, me) == NULL;
  int rv = push_buf_raw(b, "{\"presence\":{\"ids\":[", 20);
  if (extra) {
    rv = rv || push_buf_str(b, me, strlen(me)) ||
         (r->users.n ? push_buf_raw(b, ",", 1) : 0);
  }
  for (int first = 1; rv == 0 && pusher_map_next(&r->users, &pos, &k, &v);
       first = 0) {
    rv = (first ? 0 : push_buf_raw(b, ",", 1)) || push_buf_str(b, k, strlen(k));
  }
  rv = rv || push_buf_raw(b, "],\"hash\":{", 10);
  if (extra) {
    rv = rv || push_buf_str(b, me, strlen(me)) || push_buf_raw(b, ":", 1) ||
         (my_info ? push_buf_raw(b, my_info, strlen(my_info))
                  : push_buf_raw(b, "null", 4)) ||
         (r->users.n ? push_buf_raw(b, ",", 1) : 0);
  }
  pos = 0;
  for (int first = 1; rv == 0 && pusher_map_next(&r->users, &pos, &k, &v);
       first = 0) {
    const roster_user *u = v;
    rv = (first ? 0 : push_buf_raw(b, ",", 1)) ||
         push_buf_str(b, k, strlen(k)) || push_buf_raw(b, ":", 1) ||
         (u->info ? push_buf_raw(b, u->info, strlen(u->info))
                  : push_buf_raw(b, "null", 4));
  }
  rv = rv || push_buf_raw(b, "},\"count\":", 10) ||
       push_buf_u64(b, r->users.n + (size_t)extra) || push_buf_raw(b, "}}", 2);
  if (rv) {
    b->len = len0;
    return -1;
  }
  return 0;
}

void pusher_roster_free(pusher_roster *r) {
  log_clear(r);
  free(r->log);
  maps_free(&r->entries, &r->users);
  memset(r, 0, sizeof(*r));
}

int pusher_presence_users(const char *json, size_t len, push_buf *out,
                          size_t *count) {
  pusher_map entries = {0}, users = {0};
  int rv = load_snapshot(&entries, &users, json, len);
  if (rv == 0 && out != NULL) {
    size_t pos = 0;
    const char *k;
    void *v;
    rv = push_buf_raw(out, "{\"users\":[", 10);
    for (int first = 1; rv == 0 && pusher_map_next(&users, &pos, &k, &v);
         first = 0) {
      rv = (first ? 0 : push_buf_raw(out, ",", 1)) ||
           push_buf_raw(out, "{\"id\":", 6) ||
           push_buf_str(out, k, strlen(k)) || push_buf_raw(out, "}", 1);
    }
    rv = rv || push_buf_raw(out, "]}", 2);
  }
  if (count != NULL) {
    *count = users.n;
  }
  maps_free(&entries, &users);
  return rv ? -1 : 0;
}
