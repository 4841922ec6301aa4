/* limits.c - token buckets, and the table of them per client IP
 * (limits.h). */
#include "push/limits.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "push/push.h"

/* Refills b for the time since its last use, capped at the burst. */
static void refill(push_bucket *b, const push_rate *r, int64_t now_ms) {
  uint64_t cap = (uint64_t)r->burst * 1000;
  if (b->last_ms == 0) {
    b->mtokens = cap;
  } else if (now_ms > b->last_ms) {
    uint64_t add = (uint64_t)(now_ms - b->last_ms) * r->per_s;
    b->mtokens = add >= cap || b->mtokens + add >= cap ? cap : b->mtokens + add;
  }
  b->last_ms = now_ms;
}

int push_bucket_take(push_bucket *b, const push_rate *r, int64_t now_ms) {
  if (r->per_s == 0) {
    return 1;
  }
  refill(b, r, now_ms);
  if (b->mtokens < 1000) {
    return 0;
  }
  b->mtokens -= 1000;
  return 1;
}

/* ---- per IP ----------------------------------------------------------- */

typedef struct ip_entry {
  struct ip_entry *next;
  push_bucket b;
  char ip[46]; /* INET6_ADDRSTRLEN */
} ip_entry;

struct push_ip_table {
  ip_entry **buckets;
  size_t nbuckets, n;
  uint64_t key[2]; /* peers choose their addresses: a keyed hash */
};

push_ip_table *push_ip_table_new(void) {
  push_ip_table *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    return NULL;
  }
  t->nbuckets = 1024;
  t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
  if (t->buckets == NULL ||
      getrandom(t->key, sizeof(t->key), 0) != sizeof(t->key)) {
    free(t->buckets);
    free(t);
    return NULL;
  }
  return t;
}

void push_ip_table_del(push_ip_table *t) {
  if (t == NULL) {
    return;
  }
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (ip_entry *e = t->buckets[i], *next; e; e = next) {
      next = e->next;
      free(e);
    }
  }
  free(t->buckets);
  free(t);
}

static int grow(push_ip_table *t) {
  size_t n = t->nbuckets * 2;
  ip_entry **b = calloc(n, sizeof(*b));
  if (b == NULL) {
    return -1;
  }
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (ip_entry *e = t->buckets[i], *next; e; e = next) {
      next = e->next;
      size_t h = push_hash_str(t->key, e->ip, strlen(e->ip)) & (n - 1);
      e->next = b[h];
      b[h] = e;
    }
  }
  free(t->buckets);
  t->buckets = b;
  t->nbuckets = n;
  return 0;
}

int push_ip_take(push_ip_table *t, const char *ip, const push_rate *r,
                 int64_t now_ms) {
  if (r->per_s == 0) {
    return 1;
  }
  size_t len = strlen(ip);
  if (len >= sizeof(((ip_entry *)0)->ip)) {
    len = sizeof(((ip_entry *)0)->ip) - 1;
  }
  size_t h = push_hash_str(t->key, ip, len) & (t->nbuckets - 1);
  ip_entry *e = t->buckets[h];
  while (e && (strlen(e->ip) != len || memcmp(e->ip, ip, len) != 0)) {
    e = e->next;
  }
  if (e == NULL) {
    if (t->n >= PUSH_IP_TABLE_MAX) {
      return -1;
    }
    if (t->n >= t->nbuckets && grow(t) == 0) {
      h = push_hash_str(t->key, ip, len) & (t->nbuckets - 1);
    }
    if ((e = calloc(1, sizeof(*e))) == NULL) {
      return -1;
    }
    memcpy(e->ip, ip, len);
    e->next = t->buckets[h];
    t->buckets[h] = e;
    t->n++;
  }
  return push_bucket_take(&e->b, r, now_ms);
}

void push_ip_table_sweep(push_ip_table *t, const push_rate *r, int64_t now_ms) {
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (ip_entry **pp = &t->buckets[i]; *pp;) {
      ip_entry *e = *pp;
      refill(&e->b, r, now_ms);
      if (e->b.mtokens >= (uint64_t)r->burst * 1000) {
        *pp = e->next;
        free(e);
        t->n--;
      } else {
        pp = &e->next;
      }
    }
  }
}

size_t push_ip_table_size(const push_ip_table *t) {
  return t->n;
}
