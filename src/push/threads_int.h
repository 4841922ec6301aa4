/* threads_int.h - what the threads engine's files share (engine_threads.c:
 * the engine interface; threads_chan.c: the owner's and the followers'
 * sides of a channel; threads_mail.c: messages, mailboxes, tables). The
 * design is explained at the top of engine_threads.c. Private to them. */
#ifndef HERALD_PUSH_THREADS_INT_H
#define HERALD_PUSH_THREADS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "herald/rt.h"
#include "push/engine.h"

enum {
  M_FOLLOW,     /* -> owner: s0 channel */
  M_UNFOLLOW,   /* -> owner: s0 channel */
  M_LOADED,     /* owner ->: s0 channel, epoch, offset, s1 history */
  M_PUB,        /* owner ->: s0 channel (thr_hash: hash), epoch, offset,
                   time, s1 the owner's frame with the pub at json_off,
                   json_len */
  M_FRAME,      /* owner ->: s0 channel, s1 a join/leave push */
  M_PUBLISH,    /* -> owner: s0 channel, s1 data, s2 b64, s3 client, s4
                   user, s5 idem; token */
  M_PUBLISHED,  /* owner ->: token, status, epoch, offset, flag duplicate */
  M_PRES_ADD,   /* -> owner: s0 channel, s1 client, s2 user, s3 info; flag
                   announce */
  M_PRES_DEL,   /* -> owner: s0 channel, s1 client, s2 user */
  M_PRES_GET,   /* -> owner: s0 channel; token */
  M_JSON,       /* owner ->: token, status, s0 json */
  M_USER_ADD,   /* -> owner: s0 user, s1 client; limit, token */
  M_USER_ADDED, /* owner ->: token, status, flag allowed */
  M_USER_DEL,   /* -> owner: s0 user, s1 client */
  M_OCCUPANCY,  /* -> owner: s0 channel; flag occupied */
  M_SYNC,       /* -> owner: s0 channel; token */
  M_CURRENT,    /* owner ->: s0 channel, epoch, offset; token */
  M_LOST        /* owner ->: s0 channel (its inner engine lost a gap) */
};

#define NSTR 6
#define NO_STR UINT32_MAX /* a string that is NULL */

/* One message between two loops: fixed fields and up to NSTR byte strings
 * packed in data (each NUL-terminated, so they read as C strings). */
typedef struct tmsg {
  struct tmsg *next;
  int kind, from, status, flag;
  int cls; /* its size class (THR_CLASS_MIN << cls bytes), or -1: larger,
              freed by its receiver */
  uint32_t token, limit;
  uint64_t offset;
  int64_t time_ms;
  uint32_t json_off, json_len; /* M_PUB */
  uint32_t hash;               /* M_PUB: thr_hash of the channel */
  char epoch[PUSH_EPOCH_MAX + 1];
  uint32_t off[NSTR], len[NSTR];
  char data[];
} tmsg;

typedef struct tlist {
  tmsg *head, *tail;
} tlist;

/* Messages are recycled to the loop that made them instead of being freed
 * by the loop that received them (memory freed by another thread than the
 * one that allocated it is the dear case of malloc): a message of up to
 * THR_CLASS_MIN << (THR_NCLASS - 1) bytes is allocated at the size of its
 * class; its receiver, once it has handled it, keeps it on a list for its
 * sender (thr_engine.back), puts that list in its own mailbox at its next
 * wake-up (mailbox.back), and the sender takes it back the next time it
 * hands messages to that loop, under the mutex it takes anyway. A loop
 * keeps at most THR_POOL_BYTES of messages for reuse, and at most
 * THR_POOL_BYTES per sender waiting to go back: beyond, they are freed. */
#define THR_CLASS_MIN 256
#define THR_NCLASS 5
#define THR_POOL_BYTES (256 * 1024)

/* A loop's incoming FIFO: the only structure two threads touch. */
typedef struct mailbox {
  pthread_mutex_t mu;
  tlist in;
  tlist *back;     /* per sender: its messages this loop handled, for it to
                      take back (thr_hand_over) */
  int woken;       /* a wake-up is posted and not yet run */
  atomic_int sick; /* the loop's inner engine is not healthy (its pass) */
  herald_loop *loop;
  struct thr_engine *engine;
} mailbox;

struct push_threads {
  int n;
  uint64_t hkey[2]; /* SipHash key of the loops' channel and user tables,
                       random per process (push_threads_new) */
  pthread_barrier_t ready;
  tlist *backs; /* the mailboxes' back lists, n by n */
  mailbox box[];
};

/* A channel this loop follows (owned by another loop). */
enum { F_IDLE, F_LOADING, F_LIVE };

typedef struct waiter {
  struct waiter *next;
  push_engine_cb cb;
  void *ud;
} waiter;

/* One entry of a string-keyed table: followed channels, relayed channels
 * (the owner's side, with a bitmask of followers), occupancy counts. */
typedef struct tentry {
  struct tentry *next;
  uint32_t hash;
  int state;         /* followed: F_* */
  int had_replica;   /* followed: loading again over a replica in use */
  uint32_t refs;     /* followed: syncs held; occupancy: loops occupied */
  int64_t idle_ms;   /* followed: when refs dropped to 0 */
  waiter *waiters;   /* followed: syncs waiting for LOADED */
  uint64_t *follows; /* relayed: bit per loop */
  struct thr_engine *engine;
  /* relayed: the channel's epoch (constant while the relay keeps it in
   * the hub); followed: the replica's position as last loaded or
   * appended, so that a PUB costs one hub lookup */
  char epoch[PUSH_EPOCH_MAX + 1];
  uint64_t offset;
  uint32_t hub_hash; /* followed: push_hub_hash of the key, once loaded */
  size_t keylen;
  char key[];
} tentry;

typedef struct ttable {
  tentry **b;
  size_t nb, n;
} ttable;

/* A call waiting for the owner's reply. */
typedef struct pending {
  push_engine_cb cb;
  void *ud;
  uint32_t next_free;
  int used;
} pending;

typedef struct thr_engine {
  push_engine base;
  push_engine_vt vt; /* thr_vt, named after the inner engine */
  push_threads *t;
  int self;
  push_engine *inner; /* the memory engine of the channels this loop owns */
  int down;
  ttable followed, relayed, occupied;
  tlist *out;  /* per destination */
  tlist *back; /* per sender: its messages handled since the last wake-up */
  size_t *back_bytes;
  tmsg *pool[THR_NCLASS]; /* messages made here, back for reuse */
  size_t pool_bytes;
  pending *calls;
  uint32_t ncalls, free_call;
  push_buf scratch;
  uint64_t sent, received, resyncs;
} thr_engine;

static inline thr_engine *te_of(push_engine *e) {
  return (thr_engine *)e;
}

/* Followed channels no subscriber has used for this long are let go. */
#define IDLE_UNFOLLOW_MS 5000

static inline const char *mstr(const tmsg *m, int i) {
  return m->len[i] == NO_STR ? NULL : m->data + m->off[i];
}

static inline size_t mlen(const tmsg *m, int i) {
  return m->len[i] == NO_STR ? 0 : m->len[i];
}

/* ---- threads_mail.c ---- */

/* A message of kind with count strings s[i] of n[i] bytes (NULL: none),
 * made by te's loop (from its pool when it can), to be sent by te or given
 * back with thr_msg_free. Returns NULL when out of memory. */
tmsg *thr_msg_new(thr_engine *te, int kind, const char *const *s,
                  const size_t *n, int count);
/* The same with up to four C strings (NULL allowed). */
tmsg *thr_msg_strs(thr_engine *te, int kind, const char *a, const char *b,
                   const char *c, const char *d);
/* A message te made and did not send: back to its pool, or freed. */
void thr_msg_free(thr_engine *te, tmsg *m);
/* Queues m (taken; NULL: nothing) in the outbox to loop dst. */
void thr_send(thr_engine *te, int dst, tmsg *m);
void thr_list_free(tlist *l);
/* Hands every outbox to its loop's mailbox: once per loop pass. */
void thr_hand_over(thr_engine *te);
/* herald_loop_post's function: a mailbox's messages, in order. */
void thr_on_wake(void *arg);

tentry *thr_tt_get(thr_engine *te, ttable *t, const char *key);
/* The same for a key whose thr_hash is known (every loop's is the same:
 * an M_PUB carries its channel's). */
tentry *thr_tt_get_hashed(ttable *t, const char *key, uint32_t hash);
uint32_t thr_hash(const thr_engine *te, const char *key);
/* The entry of key, made if missing. NULL when out of memory. */
tentry *thr_tt_add(thr_engine *te, ttable *t, const char *key);
void thr_tt_remove(thr_engine *te, ttable *t, tentry *x);
void thr_tt_free(ttable *t);

/* The loop that owns a channel (or a user): the same on every loop. */
int thr_owner_of(const thr_engine *te, const char *key);
/* Keeps cb for a reply: its token, or UINT32_MAX when out of memory. */
uint32_t thr_call_add(thr_engine *te, push_engine_cb cb, void *ud);
/* Takes the call of token k. Returns 0, or -1 when there is none. */
int thr_call_take(thr_engine *te, uint32_t k, push_engine_cb *cb, void **ud);
int64_t thr_wall_ms(void);

/* ---- threads_chan.c ---- */

/* One message that arrived, on its loop. */
void thr_handle(thr_engine *te, tmsg *m);
void thr_owner_occupancy(thr_engine *te, const char *channel, int occupied);
void thr_wake_waiters(tentry *x, int status);
void thr_follower_add_waiter(tentry *x, waiter *w);
/* Asks the owner for channel x again (LOADED answers). */
void thr_follower_resync(thr_engine *te, tentry *x);
/* The owner's answers to FOLLOW, SYNC and UNFOLLOW, once its hub is
 * current. */
void thr_owner_follow(thr_engine *te, const tmsg *in);
void thr_owner_sync(thr_engine *te, const tmsg *in);
void thr_owner_unfollow(thr_engine *te, const tmsg *in);

/* ---- engine_threads.c, for threads_chan.c ---- */

/* FOLLOW, SYNC or UNFOLLOW over a shared inner engine (Redis): answered
 * once the inner engine made the owner's hub current, in the order they
 * came. */
void thr_owner_shared(thr_engine *te, const tmsg *in);
/* LOST: the owner's inner engine could not fill a gap of channel. */
void thr_follower_lost(thr_engine *te, const tmsg *in);

/* ---- engine_threads.c ---- */
extern const push_engine_vt thr_vt;

#endif
