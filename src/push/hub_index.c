/*
 * hub_index.c - the lookups of the hub: an open-addressing index of
 * positions into a dense array, the keyed hash of channel names, and random
 * ids (epochs, node names).
 *
 * Three lookups need to be fast under load and under hostile input:
 * channels by name (every publish and subscribe), subscribers by client
 * pointer (every unsubscribe: 10,000 clients of one channel disconnecting
 * must not cost 10,000 linear scans) and presence entries by client id.
 * All three use the same shape: a dense array of entries, which is what
 * fan-out, JSON output and tick iterate in O(n) without gaps, plus a small
 * open-addressing index (hub_index) of positions into that array. Removal
 * swaps the last entry into the hole and renames it in the index, so it is
 * O(1) and the array stays dense. Open addressing with linear probing was
 * chosen over chaining because it needs no allocation per entry (one calloc
 * per resize), and backward-shift deletion keeps it free of tombstones, so
 * a long-lived hub with channels coming and going never degrades. The
 * index is kept at most half full. Lookups and inserts are inline in
 * hub_int.h; what is here changes the index's shape.
 *
 * Channel names come from clients, so they are hashed with SipHash-1-3
 * under a random key: without a key, anyone could choose names that all
 * land in one probe run and make every lookup linear.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "push/hub_int.h"

/* ------------------------------------------------------------------------ */
/* The index                                                                */
/* ------------------------------------------------------------------------ */

int hub_idx_reserve(hub_index *x, size_t n) {
  size_t cap = x->slot != NULL ? x->mask + 1 : 0;
  if (n <= cap / 2) {
    return 0;
  }
  if (n > UINT32_MAX / 4) {
    return -1; /* positions are 32-bit */
  }
  size_t ncap = cap != 0 ? cap : 2 * HUB_MIN_ENTRIES;
  while (ncap / 2 < n) {
    ncap *= 2;
  }
  hub_slot *s = calloc(ncap, sizeof *s);
  if (s == NULL) {
    return -1;
  }
  hub_index nx = {s, ncap - 1};
  for (size_t i = 0; i < cap; i++) {
    if (x->slot[i].pos != 0) {
      hub_idx_insert(&nx, x->slot[i].hash, x->slot[i].pos);
    }
  }
  free(x->slot);
  *x = nx;
  return 0;
}

/* Empties slot i. Backward shift: later members of the probe run that may
 * legally sit at the hole (their home is not between the hole and them)
 * move back into it, so lookups never meet a tombstone. */
void hub_idx_erase(hub_index *x, size_t i) {
  size_t j = i;
  for (;;) {
    j = (j + 1) & x->mask;
    if (x->slot[j].pos == 0) {
      break;
    }
    size_t home = x->slot[j].hash & x->mask;
    if (((j - home) & x->mask) >= ((j - i) & x->mask)) {
      x->slot[i] = x->slot[j];
      i = j;
    }
  }
  x->slot[i].pos = 0;
}

void hub_idx_remove_swap(hub_index *x, size_t slot, size_t at, size_t n,
                         uint32_t last_hash) {
  hub_idx_erase(x, slot);
  if (at != n - 1) {
    size_t j = hub_idx_slot_of(x, last_hash, (uint32_t)n);
    x->slot[j].pos = (uint32_t)(at + 1);
  }
}

/* ------------------------------------------------------------------------ */
/* Hashes                                                                   */
/* ------------------------------------------------------------------------ */

static uint64_t rotl64(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4]) {
  v[0] += v[1];
  v[1] = rotl64(v[1], 13);
  v[1] ^= v[0];
  v[0] = rotl64(v[0], 32);
  v[2] += v[3];
  v[3] = rotl64(v[3], 16);
  v[3] ^= v[2];
  v[0] += v[3];
  v[3] = rotl64(v[3], 21);
  v[3] ^= v[0];
  v[2] += v[1];
  v[1] = rotl64(v[1], 17);
  v[1] ^= v[2];
  v[2] = rotl64(v[2], 32);
}

/* SipHash-1-3 (one compression round, three finalization rounds: the
 * variant Rust and Python use for hash tables). */
uint32_t push_hash_str(const uint64_t key[2], const char *s, size_t n) {
  uint64_t v[4] = {
      0x736f6d6570736575ULL ^ key[0], 0x646f72616e646f6dULL ^ key[1],
      0x6c7967656e657261ULL ^ key[0], 0x7465646279746573ULL ^ key[1]};
  const unsigned char *p = (const unsigned char *)s;
  uint64_t last = (uint64_t)n << 56;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t m = 0;
    for (int i = 0; i < 8; i++) {
      m |= (uint64_t)p[i] << (8 * i);
    }
    v[3] ^= m;
    sip_round(v);
    v[0] ^= m;
  }
  for (size_t i = 0; i < n; i++) {
    last |= (uint64_t)p[i] << (8 * i);
  }
  v[3] ^= last;
  sip_round(v);
  v[0] ^= last;
  v[2] ^= 0xff;
  sip_round(v);
  sip_round(v);
  sip_round(v);
  uint64_t h = v[0] ^ v[1] ^ v[2] ^ v[3];
  return (uint32_t)(h ^ (h >> 32));
}

/* ------------------------------------------------------------------------ */
/* Randomness                                                               */
/* ------------------------------------------------------------------------ */

int hub_fill_random(void *out, size_t n) {
  unsigned char *p = out;
  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* n characters of [a-z0-9] and a NUL. Bytes >= 252 are rejected so that
 * each of the 36 characters is equally likely (252 = 7 * 36). */
int push_random_id(char *out, size_t n) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  size_t k = 0;
  while (k < n) {
    unsigned char rnd[32];
    if (hub_fill_random(rnd, sizeof rnd) != 0) {
      return -1;
    }
    for (size_t i = 0; i < sizeof rnd && k < n; i++) {
      if (rnd[i] < 252) {
        out[k++] = alphabet[rnd[i] % 36];
      }
    }
  }
  out[k] = '\0';
  return 0;
}
