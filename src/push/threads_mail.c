/* threads_mail.c - the threads engine's plumbing: messages between loops,
 * the outboxes handed over once per pass, the mailboxes (the one structure
 * two threads touch, under its mutex), string-keyed tables, placement,
 * calls waiting for a reply, and the node's shared part. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "push/threads_int.h"

/* ---- messages ------------------------------------------------------------ */

/* The class of a message of need bytes, or -1 when it is too large. */
static int class_of(size_t need) {
  size_t size = THR_CLASS_MIN;
  for (int c = 0; c < THR_NCLASS; c++, size <<= 1) {
    if (need <= size) {
      return c;
    }
  }
  return -1;
}

static size_t class_size(int cls) {
  return (size_t)THR_CLASS_MIN << cls;
}

tmsg *thr_msg_new(thr_engine *te, int kind, const char *const *s,
                  const size_t *n, int count) {
  size_t total = 0;
  for (int i = 0; i < count; i++) {
    total += s[i] ? n[i] + 1 : 0;
  }
  int cls = class_of(sizeof(tmsg) + total);
  tmsg *m;
  if (cls >= 0 && te->pool[cls] != NULL) {
    m = te->pool[cls];
    te->pool[cls] = m->next;
    te->pool_bytes -= class_size(cls);
  } else {
    m = malloc(cls >= 0 ? class_size(cls) : sizeof(*m) + total);
    if (m == NULL) {
      return NULL;
    }
  }
  /* Only the fixed part is cleared: the strings are written below. */
  memset(m, 0, sizeof(*m));
  m->kind = kind;
  m->cls = cls;
  size_t o = 0;
  for (int i = 0; i < NSTR; i++) {
    if (i >= count || s[i] == NULL) {
      m->off[i] = 0;
      m->len[i] = NO_STR;
      continue;
    }
    memcpy(m->data + o, s[i], n[i]);
    m->data[o + n[i]] = 0;
    m->off[i] = (uint32_t)o;
    m->len[i] = (uint32_t)n[i];
    o += n[i] + 1;
  }
  return m;
}

/* A message with C strings (NULL allowed). */
tmsg *thr_msg_strs(thr_engine *te, int kind, const char *a, const char *b,
                   const char *c, const char *d) {
  const char *s[4] = {a, b, c, d};
  size_t n[4];
  for (int i = 0; i < 4; i++) {
    n[i] = s[i] ? strlen(s[i]) : 0;
  }
  return thr_msg_new(te, kind, s, n, 4);
}

void thr_msg_free(thr_engine *te, tmsg *m) {
  if (m->cls >= 0 && te->pool_bytes + class_size(m->cls) <= THR_POOL_BYTES) {
    m->next = te->pool[m->cls];
    te->pool[m->cls] = m;
    te->pool_bytes += class_size(m->cls);
  } else {
    free(m);
  }
}

/* Appends m, whose next is NULL, at the tail of l. */
static void tlist_append(tlist *l, tmsg *m) {
  if (l->tail) {
    l->tail->next = m;
  } else {
    l->head = m;
  }
  l->tail = m;
}

/* A message from another loop, handled: kept to go back to its sender, or
 * freed. */
static void msg_done(thr_engine *te, tmsg *m) {
  int from = m->from;
  if (m->cls < 0 || from < 0 || from >= te->t->n || from == te->self ||
      te->back_bytes[from] + class_size(m->cls) > THR_POOL_BYTES) {
    free(m);
    return;
  }
  m->next = NULL;
  tlist_append(&te->back[from], m);
  te->back_bytes[from] += class_size(m->cls);
}

/* Messages of this loop's that another loop handled: into the pool. */
static void take_back(thr_engine *te, tmsg *m) {
  while (m) {
    tmsg *next = m->next;
    thr_msg_free(te, m);
    m = next;
  }
}

void thr_send(thr_engine *te, int dst, tmsg *m) {
  if (m == NULL) {
    return; /* out of memory: the call was best effort, or fails below */
  }
  m->from = te->self;
  tlist_append(&te->out[dst], m);
  te->sent++;
}

void thr_list_free(tlist *l) {
  for (tmsg *m = l->head, *next; m; m = next) {
    next = m->next;
    free(m);
  }
  l->head = l->tail = NULL;
}

void thr_hand_over(thr_engine *te) {
  for (int d = 0; d < te->t->n; d++) {
    tlist *l = &te->out[d];
    if (l->head == NULL) {
      continue;
    }
    mailbox *mb = &te->t->box[d];
    pthread_mutex_lock(&mb->mu);
    if (mb->in.tail) {
      mb->in.tail->next = l->head;
    } else {
      mb->in.head = l->head;
    }
    mb->in.tail = l->tail;
    int wake = !mb->woken;
    mb->woken = 1;
    tmsg *back = mb->back[te->self].head;
    mb->back[te->self].head = mb->back[te->self].tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    l->head = l->tail = NULL;
    take_back(te, back);
    if (wake && herald_loop_post(mb->loop, thr_on_wake, mb) != 0) {
      /* The loop is gone or out of memory: its mailbox is freed with the
       * node (push_threads_del). */
      pthread_mutex_lock(&mb->mu);
      mb->woken = 0;
      pthread_mutex_unlock(&mb->mu);
    }
  }
}

/* ---- tables ---------------------------------------------------------------
 */

static tentry **tt_find_hashed(ttable *t, const char *key, uint32_t hash) {
  if (t->nb == 0) {
    return NULL;
  }
  tentry **pp = &t->b[hash & (t->nb - 1)];
  while (*pp && ((*pp)->hash != hash || strcmp((*pp)->key, key) != 0)) {
    pp = &(*pp)->next;
  }
  return pp;
}

static tentry **tt_find(thr_engine *te, ttable *t, const char *key,
                        uint32_t *hash) {
  *hash = thr_hash(te, key);
  return tt_find_hashed(t, key, *hash);
}

uint32_t thr_hash(const thr_engine *te, const char *key) {
  return push_hash_str(te->t->hkey, key, strlen(key));
}

tentry *thr_tt_get(thr_engine *te, ttable *t, const char *key) {
  uint32_t h;
  tentry **pp = tt_find(te, t, key, &h);
  return pp ? *pp : NULL;
}

tentry *thr_tt_get_hashed(ttable *t, const char *key, uint32_t hash) {
  tentry **pp = tt_find_hashed(t, key, hash);
  return pp ? *pp : NULL;
}

tentry *thr_tt_add(thr_engine *te, ttable *t, const char *key) {
  uint32_t hash;
  tentry **pp = tt_find(te, t, key, &hash);
  if (pp && *pp) {
    return *pp;
  }
  if (t->n + 1 > t->nb) {
    size_t nb = t->nb ? t->nb * 2 : 64;
    tentry **b = calloc(nb, sizeof(*b));
    if (b == NULL) {
      return NULL;
    }
    for (size_t i = 0; i < t->nb; i++) {
      for (tentry *x = t->b[i], *next; x; x = next) {
        next = x->next;
        x->next = b[x->hash & (nb - 1)];
        b[x->hash & (nb - 1)] = x;
      }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
  }
  size_t n = strlen(key);
  tentry *x = calloc(1, sizeof(*x) + n + 1);
  if (x == NULL) {
    return NULL;
  }
  memcpy(x->key, key, n + 1);
  x->keylen = n;
  x->hash = hash;
  x->engine = te;
  x->next = t->b[hash & (t->nb - 1)];
  t->b[hash & (t->nb - 1)] = x;
  t->n++;
  return x;
}

void thr_tt_remove(thr_engine *te, ttable *t, tentry *x) {
  uint32_t h;
  tentry **pp = tt_find(te, t, x->key, &h);
  while (pp && *pp && *pp != x) {
    pp = &(*pp)->next;
  }
  if (pp && *pp == x) {
    *pp = x->next;
    t->n--;
  }
  free(x->follows);
  free(x);
}

void thr_tt_free(ttable *t) {
  for (size_t i = 0; i < t->nb; i++) {
    for (tentry *x = t->b[i], *next; x; x = next) {
      next = x->next;
      for (waiter *w = x->waiters, *wn; w; w = wn) {
        wn = w->next;
        free(w);
      }
      free(x->follows);
      free(x);
    }
  }
  free(t->b);
  memset(t, 0, sizeof(*t));
}

/* ---- placement and pending calls ------------------------------------------
 */

int thr_owner_of(const thr_engine *te, const char *key) {
  /* FNV-1a: every loop must agree, and it only picks a loop. */
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
    h = (h ^ *p) * 16777619u;
  }
  return (int)(h % (uint32_t)te->t->n);
}

/* Keeps cb for the reply; returns its token, or UINT32_MAX. */
uint32_t thr_call_add(thr_engine *te, push_engine_cb cb, void *ud) {
  if (te->free_call == UINT32_MAX) {
    uint32_t n = te->ncalls ? te->ncalls * 2 : 64;
    pending *c = realloc(te->calls, n * sizeof(*c));
    if (c == NULL) {
      return UINT32_MAX;
    }
    for (uint32_t i = te->ncalls; i < n; i++) {
      c[i].used = 0;
      c[i].next_free = i + 1 < n ? i + 1 : UINT32_MAX;
    }
    te->calls = c;
    te->free_call = te->ncalls;
    te->ncalls = n;
  }
  uint32_t k = te->free_call;
  te->free_call = te->calls[k].next_free;
  te->calls[k].cb = cb;
  te->calls[k].ud = ud;
  te->calls[k].used = 1;
  return k;
}

/* Takes the call of token (its callback runs once). */
int thr_call_take(thr_engine *te, uint32_t k, push_engine_cb *cb, void **ud) {
  if (k >= te->ncalls || !te->calls[k].used) {
    return -1;
  }
  *cb = te->calls[k].cb;
  *ud = te->calls[k].ud;
  te->calls[k].used = 0;
  te->calls[k].next_free = te->free_call;
  te->free_call = k;
  return 0;
}

int64_t thr_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* On the loop's thread: everything the mailbox holds, in order. */
void thr_on_wake(void *arg) {
  mailbox *mb = arg;
  pthread_mutex_lock(&mb->mu);
  tmsg *m = mb->in.head;
  mb->in.head = mb->in.tail = NULL;
  mb->woken = 0;
  /* What the last wake-up handled goes where its senders take it back. */
  thr_engine *te = mb->engine;
  for (int i = 0; te != NULL && i < te->t->n; i++) {
    tlist *l = &te->back[i];
    if (l->head == NULL) {
      continue;
    }
    if (mb->back[i].tail) {
      mb->back[i].tail->next = l->head;
    } else {
      mb->back[i].head = l->head;
    }
    mb->back[i].tail = l->tail;
    l->head = l->tail = NULL;
    te->back_bytes[i] = 0;
  }
  pthread_mutex_unlock(&mb->mu);
  while (m) {
    tmsg *next = m->next;
    if (te != NULL) {
      thr_handle(te, m);
      msg_done(te, m);
    } else {
      free(m);
    }
    m = next;
  }
}

/* ---- the node
 * ----------------------------------------------------------------- */

push_threads *push_threads_new(int n) {
  if (n < 1 || n > PUSH_THREADS_MAX) {
    return NULL;
  }
  push_threads *t = calloc(1, sizeof(*t) + (size_t)n * sizeof(mailbox));
  if (t == NULL) {
    return NULL;
  }
  t->n = n;
  t->backs = calloc((size_t)n * (size_t)n, sizeof(tlist));
  /* A random key, so that no client can choose channel names that pile
   * up in one bucket of the loops' tables. */
  if (t->backs == NULL ||
      getrandom(t->hkey, sizeof(t->hkey), 0) != (ssize_t)sizeof(t->hkey) ||
      pthread_barrier_init(&t->ready, NULL, (unsigned)n) != 0) {
    free(t->backs);
    free(t);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    pthread_mutex_init(&t->box[i].mu, NULL);
    t->box[i].back = t->backs + (size_t)i * (size_t)n;
  }
  return t;
}

void push_threads_del(push_threads *t) {
  if (t == NULL) {
    return;
  }
  for (int i = 0; i < t->n; i++) {
    thr_list_free(&t->box[i].in);
    for (int j = 0; j < t->n; j++) {
      thr_list_free(&t->box[i].back[j]);
    }
    pthread_mutex_destroy(&t->box[i].mu);
  }
  free(t->backs);
  pthread_barrier_destroy(&t->ready);
  free(t);
}

void push_threads_wait(push_threads *t) {
  pthread_barrier_wait(&t->ready);
}
