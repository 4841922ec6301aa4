/* config_redis.c - the "redis" key of `herald serve`'s configuration
 * (docs/config.md, docs/scaling.md): fixed addresses, shards, Sentinel and
 * Redis Cluster, credentials, TLS and the engine's timings, checked so
 * that every error names the key and what is wrong with it. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/config.h"
#include "push/config_int.h"

int push_config_add_redis(push_config *c, const char *a, char *err,
                          size_t errlen) {
  if (c->redis.naddrs == PUSH_REDIS_MAX_SHARDS) {
    push_cfg_err(err, errlen, "at most %d Redis addresses",
                 PUSH_REDIS_MAX_SHARDS);
    return -1;
  }
  if ((c->redis.addrs[c->redis.naddrs] = strdup(a)) == NULL) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  c->redis.naddrs++;
  return 0;
}

static void sentinel_free(push_redis_sentinel *s) {
  if (s == NULL) {
    return;
  }
  free(s->master_name);
  for (size_t i = 0; i < s->naddrs; i++) {
    free(s->addrs[i]);
  }
  free(s->password);
  free(s);
}

void push_config_clear_redis(push_config *c) {
  for (size_t i = 0; i < c->redis.naddrs; i++) {
    free(c->redis.addrs[i]);
    sentinel_free(c->redis.sentinel[i]);
    c->redis.addrs[i] = NULL;
    c->redis.sentinel[i] = NULL;
  }
  c->redis.naddrs = 0;
  for (size_t i = 0; i < c->redis.ncluster; i++) {
    free(c->redis.cluster[i]);
    c->redis.cluster[i] = NULL;
  }
  c->redis.ncluster = 0;
}

/* A JSON array of "host:port" strings into out[0..max), *n of them.
 * Returns 0, or -1 with a message in err. */
static int load_addr_list(push_json v, char **out, size_t max, size_t *n,
                          const char *what, char *err, size_t errlen) {
  size_t pos = 0;
  push_json a;
  char tmp[300];
  if (push_json_type_of(v) != PUSH_JSON_ARRAY) {
    push_cfg_err(err, errlen, "redis: %s is an array of \"host:port\"", what);
    return -1;
  }
  while (push_json_next(v, &pos, NULL, &a)) {
    if (*n == max) {
      push_cfg_err(err, errlen, "redis: at most %zu %s", max, what);
      return -1;
    }
    if (push_json_str(a, tmp, sizeof(tmp)) <= 0) {
      push_cfg_err(err, errlen, "redis: %s is an array of \"host:port\"", what);
      return -1;
    }
    if ((out[*n] = strdup(tmp)) == NULL) {
      push_cfg_err(err, errlen, "out of memory");
      return -1;
    }
    (*n)++;
  }
  if (*n == 0) {
    push_cfg_err(err, errlen, "redis: %s is empty", what);
    return -1;
  }
  return 0;
}

/* {"master_name": ..., "addresses": [...], "password": ...}: a shard
 * whose master Redis Sentinel names. Adds it to c's shards. */
static int load_sentinel(push_config *c, push_json o, char *err,
                         size_t errlen) {
  if (push_json_type_of(o) != PUSH_JSON_OBJECT) {
    push_cfg_err(err, errlen, "redis: a sentinel is an object");
    return -1;
  }
  if (c->redis.naddrs == PUSH_REDIS_MAX_SHARDS) {
    push_cfg_err(err, errlen, "at most %d Redis shards", PUSH_REDIS_MAX_SHARDS);
    return -1;
  }
  push_redis_sentinel *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  size_t pos = 0;
  push_json key, v;
  while (push_json_next(o, &pos, &key, &v)) {
    char k[64];
    push_json_str(key, k, sizeof(k));
    char **slot = NULL;
    if (strcmp(k, "master_name") == 0) {
      slot = &s->master_name;
    } else if (strcmp(k, "password") == 0) {
      slot = &s->password;
    } else if (strcmp(k, "addresses") == 0) {
      if (load_addr_list(v, s->addrs, PUSH_REDIS_MAX_SENTINELS, &s->naddrs,
                         "sentinel addresses", err, errlen) != 0) {
        goto fail;
      }
    } else {
      push_cfg_err(err, errlen, "redis.sentinel: unknown key \"%s\"", k);
      goto fail;
    }
    if (slot != NULL) {
      free(*slot);
      if ((*slot = push_cfg_strdup(v)) == NULL || **slot == 0) {
        push_cfg_err(err, errlen, "redis.sentinel: bad value for \"%s\"", k);
        goto fail;
      }
    }
  }
  if (s->master_name == NULL || s->naddrs == 0) {
    push_cfg_err(
        err, errlen,
        "redis.sentinel needs master_name and addresses (the sentinels)");
    goto fail;
  }
  c->redis.sentinel[c->redis.naddrs++] = s;
  return 0;
fail:
  sentinel_free(s);
  return -1;
}

/* "shards": [{"address": "host:port"} or {"sentinel": {...}}, ...]. */
static int load_shards(push_config *c, push_json arr, char *err,
                       size_t errlen) {
  size_t pos = 0;
  push_json sh;
  if (push_json_type_of(arr) != PUSH_JSON_ARRAY) {
    push_cfg_err(err, errlen, "redis.shards is an array of objects");
    return -1;
  }
  while (push_json_next(arr, &pos, NULL, &sh)) {
    push_json v;
    char tmp[300];
    size_t p2 = 0;
    push_json key;
    int n = 0;
    if (push_json_type_of(sh) != PUSH_JSON_OBJECT) {
      push_cfg_err(err, errlen, "redis.shards is an array of objects");
      return -1;
    }
    while (push_json_next(sh, &p2, &key, &v)) {
      char k[64];
      push_json_str(key, k, sizeof(k));
      n++;
      if (strcmp(k, "address") == 0) {
        if (push_json_str(v, tmp, sizeof(tmp)) <= 0) {
          push_cfg_err(err, errlen, "redis.shards: bad value for \"address\"");
          return -1;
        }
        if (push_config_add_redis(c, tmp, err, errlen) != 0) {
          return -1;
        }
      } else if (strcmp(k, "sentinel") == 0) {
        if (load_sentinel(c, v, err, errlen) != 0) {
          return -1;
        }
      } else {
        push_cfg_err(err, errlen, "redis.shards: unknown key \"%s\"", k);
        return -1;
      }
    }
    if (n != 1) {
      push_cfg_err(err, errlen,
                   "redis.shards: each shard is {\"address\": ...} or "
                   "{\"sentinel\": {...}}");
      return -1;
    }
  }
  if (c->redis.naddrs == 0) {
    push_cfg_err(err, errlen, "redis.shards is empty");
    return -1;
  }
  return 0;
}

/* "cluster": {"addresses": [seed nodes]}. */
static int load_cluster(push_config *c, push_json o, char *err, size_t errlen) {
  size_t pos = 0;
  push_json key, v;
  if (push_json_type_of(o) != PUSH_JSON_OBJECT) {
    push_cfg_err(err, errlen, "redis.cluster is an object");
    return -1;
  }
  while (push_json_next(o, &pos, &key, &v)) {
    char k[64];
    push_json_str(key, k, sizeof(k));
    if (strcmp(k, "addresses") != 0) {
      push_cfg_err(err, errlen, "redis.cluster: unknown key \"%s\"", k);
      return -1;
    }
    if (load_addr_list(v, c->redis.cluster, PUSH_REDIS_MAX_SEEDS,
                       &c->redis.ncluster, "cluster addresses", err,
                       errlen) != 0) {
      return -1;
    }
  }
  if (c->redis.ncluster == 0) {
    push_cfg_err(err, errlen, "redis.cluster needs addresses (seed nodes)");
    return -1;
  }
  return 0;
}

/* The "redis" object (docs/config.md). */
int push_cfg_load_redis(push_config *c, push_json o, char *err, size_t errlen) {
  if (push_json_type_of(o) != PUSH_JSON_OBJECT) {
    push_cfg_err(err, errlen, "\"redis\" is an object");
    return -1;
  }
  push_redis_config *r = &c->redis;
  size_t pos = 0;
  push_json key, v;
  int topologies = 0; /* addresses, sentinel, shards, cluster: one only */
  while (push_json_next(o, &pos, &key, &v)) {
    char k[64];
    int bad = 0;
    push_json_str(key, k, sizeof(k));
    char **slot = NULL;
    int topo = strcmp(k, "addresses") == 0 || strcmp(k, "sentinel") == 0 ||
               strcmp(k, "shards") == 0 || strcmp(k, "cluster") == 0;
    if (topo && topologies++ > 0) {
      push_cfg_err(
          err, errlen,
          "redis: give one of addresses, sentinel, shards and cluster");
      return -1;
    }
    if (topo) {
      push_config_clear_redis(c);
    }
    if (strcmp(k, "sentinel") == 0) {
      if (load_sentinel(c, v, err, errlen) != 0) {
        return -1;
      }
    } else if (strcmp(k, "shards") == 0) {
      if (load_shards(c, v, err, errlen) != 0) {
        return -1;
      }
    } else if (strcmp(k, "cluster") == 0) {
      if (load_cluster(c, v, err, errlen) != 0) {
        return -1;
      }
    } else if (strcmp(k, "addresses") == 0) {
      size_t p2 = 0;
      push_json a;
      char tmp[300];
      bad = push_json_type_of(v) != PUSH_JSON_ARRAY;
      while (!bad && push_json_next(v, &p2, NULL, &a)) {
        if (push_json_str(a, tmp, sizeof(tmp)) < 0) {
          bad = 1;
        } else if (push_config_add_redis(c, tmp, err, errlen) != 0) {
          return -1;
        }
      }
    } else if (strcmp(k, "user") == 0) {
      slot = &r->user;
    } else if (strcmp(k, "password") == 0) {
      slot = &r->password;
    } else if (strcmp(k, "prefix") == 0) {
      slot = &r->prefix;
    } else if (strcmp(k, "tls") == 0) {
      bad = push_cfg_bool(v, &r->tls);
    } else if (strcmp(k, "tls_ca") == 0) {
      slot = &r->tls_ca;
    } else if (strcmp(k, "tls_server_name") == 0) {
      slot = &r->tls_server_name;
    } else if (strcmp(k, "tls_insecure") == 0) {
      bad = push_cfg_bool(v, &r->tls_insecure);
    } else if (strcmp(k, "sharded_pubsub") == 0) {
      bad = push_cfg_bool(v, &r->sharded);
    } else if (strcmp(k, "presence_ttl") == 0) {
      bad = push_cfg_u32(v, &r->presence_ttl_s) || r->presence_ttl_s < 3;
    } else if (strcmp(k, "ping_timeout_ms") == 0) {
      bad = push_cfg_u32(v, &r->ping_timeout_ms) || r->ping_timeout_ms < 100;
    } else {
      push_cfg_err(err, errlen, "redis: unknown key \"%s\"", k);
      return -1;
    }
    if (slot != NULL) {
      free(*slot);
      bad = (*slot = push_cfg_strdup(v)) == NULL;
    }
    if (bad) {
      push_cfg_err(err, errlen, "redis: bad value for \"%s\"", k);
      return -1;
    }
  }
  if (r->prefix && (strlen(r->prefix) == 0 || strlen(r->prefix) > 32 ||
                    strpbrk(r->prefix, "{} ") != NULL)) {
    push_cfg_err(err, errlen,
                 "redis: prefix must be 1-32 characters, no braces");
    return -1;
  }
  return 0;
}

/* "rate_limits": {"commands": {"per_s": N, "burst": N}, ...}. A burst
 * below the rate would refuse what the rate allows: it is raised to it. */
