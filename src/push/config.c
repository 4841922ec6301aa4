/* config.c - `herald serve` configuration: defaults, the JSON file, and the
 * single settings (the setters of config.h) through which the command line of
 * src/app/serve.c applies its flags over both. Every key is documented in
 * docs/config.md. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push/config.h"
#include "push/config_int.h"

void push_cfg_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static void ns_free_urls(push_ns *ns) {
  free((char *)ns->subscribe_proxy_url);
  free((char *)ns->publish_proxy_url);
  ns->subscribe_proxy_url = ns->publish_proxy_url = NULL;
}

static int add_ns(push_config *c, const push_ns *ns) {
  for (size_t i = 0; i < c->nns; i++) {
    if (strcmp(c->ns[i].name, ns->name) == 0) {
      ns_free_urls(&c->ns[i]);
      c->ns[i] = *ns; /* a later definition replaces an earlier one */
      return 0;
    }
  }
  push_ns *n = realloc(c->ns, (c->nns + 1) * sizeof(*n));
  if (n == NULL) {
    return -1;
  }
  c->ns = n;
  c->ns[c->nns++] = *ns;
  return 0;
}

int push_config_defaults(push_config *c) {
  memset(c, 0, sizeof(*c));
  c->listen[0] = strdup("127.0.0.1:8080");
  c->nlisten = 1;
  c->anonymous = 1;
  c->jwt_require_exp = 1;
  c->max_channels = 128;
  c->max_channels_total = 100000;
  c->max_history_bytes = (uint64_t)256 << 20;
  c->rate_commands = (push_rate){1000, 2000};
  c->rate_publishes = (push_rate){500, 1000};
  c->rate_subscribes = (push_rate){100, 200};
  c->rate_connections = (push_rate){200, 1000};
  c->max_command_bytes = 64 * 1024;
  c->output_cap = 4u << 20;
  c->ping_interval_s = 25;
  c->pong_timeout_s = 10;
  c->max_http_body = 1u << 20;
  c->sse_keepalive_s = 15;
  c->max_sse_channels = 32;
  c->shutdown_grace_s = 5;
  c->threads = 0; /* one loop per CPU this process may run on */
  c->log_level = PUSH_LOG_INFO;
  c->redis.sharded = 1;
  c->redis.presence_ttl_s = 30;
  c->redis.ping_timeout_ms = 3000;
  c->backend.timeout_ms = 3000;
  c->backend.max_in_flight = 1000;
  c->backend.max_response = 1u << 20;
  c->backend.webhooks_events =
      PUSH_WH_CONNECT | PUSH_WH_DISCONNECT | PUSH_WH_OCCUPIED | PUSH_WH_VACATED;
  c->backend.webhooks_max_queue = 10000;
  c->backend.webhooks_max_queue_bytes = (size_t)64 << 20;
  c->backend.webhooks_batch = 100;
  c->backend.webhooks_timeout_ms = 5000;
  c->refresh_ahead_s = 30;
  c->idempotency_window_s = 300;
  c->idempotency_max_keys = 100000;
  /* The default namespace: history for recovery, presence; publishing is
   * for the backend (HTTP API) unless the configuration allows clients. */
  push_ns def = {
      .name = "", .presence = 1, .history_size = 100, .history_ttl_s = 300};
  if (c->listen[0] == NULL || add_ns(c, &def) != 0) {
    return -1;
  }
  return 0;
}

/* The namespaces the demo page uses. */
static int add_demo(push_config *c) {
  push_ns chat = {.name = "chat",
                  .publish = 1,
                  .presence = 1,
                  .join_leave = 1,
                  .history_size = 100,
                  .history_ttl_s = 3600};
  push_ns ticker = {.name = "ticker", .history_size = 50, .history_ttl_s = 600};
  /* For `herald bench --mode fanout` against `make run`: clients publish,
   * and one machine opens its thousand connections at once. */
  push_ns bench = {
      .name = "bench", .publish = 1, .history_size = 100, .history_ttl_s = 60};
  if (c->rate_connections.per_s == 200 && c->rate_connections.burst == 1000) {
    c->rate_connections.per_s = 0; /* the default: not one the user set */
  }
  return add_ns(c, &chat) || add_ns(c, &ticker) || add_ns(c, &bench) ? -1 : 0;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return NULL;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *n = realloc(buf, cap);
      if (n == NULL) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = n;
    }
    size_t r = fread(buf + len, 1, 4096, f);
    len += r;
    if (r < 4096) {
      break;
    }
    if (len > (16u << 20)) { /* a config or key file is small */
      free(buf);
      fclose(f);
      errno = EFBIG;
      return NULL;
    }
  }
  fclose(f);
  buf[len] = 0;
  return buf;
}

int push_cfg_bool(push_json v, int *out) {
  push_json_type t = push_json_type_of(v);
  if (t != PUSH_JSON_TRUE && t != PUSH_JSON_FALSE) {
    return -1;
  }
  *out = t == PUSH_JSON_TRUE;
  return 0;
}

int push_cfg_u32(push_json v, uint32_t *out) {
  uint64_t x;
  if (push_json_u64(v, &x) != 0 || x > UINT32_MAX) {
    return -1;
  }
  *out = (uint32_t)x;
  return 0;
}

static int json_size(push_json v, size_t *out) {
  uint64_t x;
  if (push_json_u64(v, &x) != 0) {
    return -1;
  }
  *out = (size_t)x;
  return 0;
}

char *push_cfg_strdup(push_json v) {
  char tmp[4096];
  long n = push_json_str(v, tmp, sizeof(tmp));
  return n < 0 ? NULL : strdup(tmp);
}

static int parse_level(const char *s) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, names[i]) == 0) {
      return i;
    }
  }
  return -1;
}

/* Reads a PEM key file named by a string value. */
static int load_pem(push_json v, char **out, char *err, size_t errlen) {
  char *path = push_cfg_strdup(v);
  if (path == NULL) {
    push_cfg_err(err, errlen, "a key file must be a string");
    return -1;
  }
  char *pem = read_file(path);
  if (pem == NULL) {
    push_cfg_err(err, errlen, "cannot read key file %s: %s", path,
                 strerror(errno));
    free(path);
    return -1;
  }
  free(path);
  free(*out);
  *out = pem;
  return 0;
}

/* A URL the backend is reached at: http:// or https://, no spaces. */
static int url_ok(const char *u) {
  return (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0) &&
         strlen(u) > 8 && strpbrk(u, " \t\r\n") == NULL;
}

/* A header name: an RFC 9110 token. */
static int header_name_ok(const char *h) {
  size_t n = strlen(h);
  return n > 0 && n < 64 &&
         strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789!#$%&'*+-.^_`|~") == n;
}

static const struct {
  const char *name;
  unsigned bit;
} webhook_events[] = {{"connect", PUSH_WH_CONNECT},
                      {"disconnect", PUSH_WH_DISCONNECT},
                      {"channel_occupied", PUSH_WH_OCCUPIED},
                      {"channel_vacated", PUSH_WH_VACATED},
                      {"join", PUSH_WH_JOIN},
                      {"leave", PUSH_WH_LEAVE},
                      {"publish", PUSH_WH_PUBLISH}};

/* "proxy" and "webhooks" (docs/config.md, docs/backend.md). */
static int load_backend(push_config *c, const char *what, push_json o,
                        char *err, size_t errlen) {
  push_backend_config *b = &c->backend;
  int webhooks = strcmp(what, "webhooks") == 0;
  if (push_json_type_of(o) != PUSH_JSON_OBJECT) {
    push_cfg_err(err, errlen, "\"%s\" is an object", what);
    return -1;
  }
  size_t pos = 0;
  push_json key, v;
  while (push_json_next(o, &pos, &key, &v)) {
    char k[64] = "";
    int bad = 0;
    char **url = NULL;
    push_json_str(key, k, sizeof(k));
    if (!webhooks && strcmp(k, "connect_url") == 0) {
      url = &b->connect_url;
    } else if (!webhooks && strcmp(k, "refresh_url") == 0) {
      url = &b->refresh_url;
    } else if (!webhooks && strcmp(k, "rpc_url") == 0) {
      url = &b->rpc_url;
    } else if (!webhooks && strcmp(k, "connect_always") == 0) {
      bad = push_cfg_bool(v, &b->connect_always);
    } else if (!webhooks && strcmp(k, "timeout_ms") == 0) {
      bad = push_cfg_u32(v, &b->timeout_ms) || b->timeout_ms == 0;
    } else if (!webhooks && strcmp(k, "max_in_flight") == 0) {
      bad = push_cfg_u32(v, &b->max_in_flight) || b->max_in_flight == 0;
    } else if (!webhooks && strcmp(k, "max_response_bytes") == 0) {
      bad = json_size(v, &b->max_response) || b->max_response < 64;
    } else if (!webhooks && strcmp(k, "headers") == 0) {
      size_t p2 = 0;
      push_json h;
      char tmp[64];
      bad = push_json_type_of(v) != PUSH_JSON_ARRAY;
      while (!bad && push_json_next(v, &p2, NULL, &h)) {
        char **n = realloc(b->headers, (b->nheaders + 1) * sizeof(char *));
        bad = n == NULL || push_json_str(h, tmp, sizeof(tmp)) < 0 ||
              !header_name_ok(tmp);
        if (n != NULL) {
          b->headers = n;
        }
        if (!bad) {
          bad = (b->headers[b->nheaders] = strdup(tmp)) == NULL;
          b->nheaders += !bad;
        }
      }
    } else if (webhooks && strcmp(k, "url") == 0) {
      url = &b->webhooks_url;
    } else if (webhooks && strcmp(k, "secret") == 0) {
      free(b->webhooks_secret);
      bad = (b->webhooks_secret = push_cfg_strdup(v)) == NULL ||
            b->webhooks_secret[0] == 0;
    } else if (webhooks && strcmp(k, "events") == 0) {
      size_t p2 = 0;
      push_json e;
      char tmp[32];
      b->webhooks_events = 0;
      bad = push_json_type_of(v) != PUSH_JSON_ARRAY;
      while (!bad && push_json_next(v, &p2, NULL, &e)) {
        unsigned bit = 0;
        if (push_json_str(e, tmp, sizeof(tmp)) >= 0) {
          for (size_t i = 0;
               i < sizeof(webhook_events) / sizeof(webhook_events[0]); i++) {
            if (strcmp(tmp, webhook_events[i].name) == 0) {
              bit = webhook_events[i].bit;
            }
          }
        }
        if (bit == 0) {
          push_cfg_err(err, errlen,
                       "webhooks.events: unknown event (connect, disconnect, "
                       "channel_occupied, channel_vacated, join, leave, "
                       "publish)");
          return -1;
        }
        b->webhooks_events |= bit;
      }
    } else if (webhooks && strcmp(k, "max_queue") == 0) {
      bad = json_size(v, &b->webhooks_max_queue) || b->webhooks_max_queue == 0;
    } else if (webhooks && strcmp(k, "max_queue_bytes") == 0) {
      bad = json_size(v, &b->webhooks_max_queue_bytes) ||
            b->webhooks_max_queue_bytes < 1024;
    } else if (webhooks && strcmp(k, "batch_size") == 0) {
      bad = json_size(v, &b->webhooks_batch) || b->webhooks_batch == 0;
    } else if (webhooks && strcmp(k, "timeout_ms") == 0) {
      bad = push_cfg_u32(v, &b->webhooks_timeout_ms) ||
            b->webhooks_timeout_ms == 0;
    } else {
      push_cfg_err(err, errlen, "%s: unknown key \"%s\"", what, k);
      return -1;
    }
    if (url != NULL) {
      free(*url);
      bad = (*url = push_cfg_strdup(v)) == NULL || !url_ok(*url);
    }
    if (bad) {
      push_cfg_err(err, errlen, "%s: bad value for \"%s\"%s", what, k,
                   url ? " (an http:// or https:// URL)" : "");
      return -1;
    }
  }
  return 0;
}

static int load_namespace(push_config *c, push_json o, char *err,
                          size_t errlen) {
  push_ns ns = {0};
  push_json v;
  if (push_json_type_of(o) != PUSH_JSON_OBJECT ||
      !push_json_get(o, "name", &v) ||
      push_json_str(v, ns.name, sizeof(ns.name)) < 0 ||
      strchr(ns.name, ':') != NULL) {
    push_cfg_err(err, errlen, "each namespace needs a \"name\" without ':'");
    return -1;
  }
  size_t pos = 0;
  push_json key;
  while (push_json_next(o, &pos, &key, &v)) {
    char k[64];
    if (push_json_str(key, k, sizeof(k)) < 0) {
      continue;
    }
    int bad = 0;
    if (strcmp(k, "name") == 0) {
      continue;
    } else if (strcmp(k, "publish") == 0) {
      bad = push_cfg_bool(v, &ns.publish);
    } else if (strcmp(k, "presence") == 0) {
      bad = push_cfg_bool(v, &ns.presence);
    } else if (strcmp(k, "join_leave") == 0) {
      bad = push_cfg_bool(v, &ns.join_leave);
    } else if (strcmp(k, "private") == 0) {
      bad = push_cfg_bool(v, &ns.private_channels);
    } else if (strcmp(k, "history_size") == 0) {
      bad = push_cfg_u32(v, &ns.history_size);
    } else if (strcmp(k, "history_ttl") == 0) {
      bad = push_cfg_u32(v, &ns.history_ttl_s);
    } else if (strcmp(k, "subscribe_proxy_url") == 0 ||
               strcmp(k, "publish_proxy_url") == 0) {
      const char **slot =
          k[0] == 's' ? &ns.subscribe_proxy_url : &ns.publish_proxy_url;
      free((char *)*slot);
      *slot = push_cfg_strdup(v);
      bad = *slot == NULL || !url_ok(*slot);
    } else {
      ns_free_urls(&ns);
      push_cfg_err(err, errlen, "namespace \"%s\": unknown key \"%s\"", ns.name,
                   k);
      return -1;
    }
    if (bad) {
      ns_free_urls(&ns);
      push_cfg_err(err, errlen, "namespace \"%s\": bad value for \"%s\"",
                   ns.name, k);
      return -1;
    }
  }
  if (ns.join_leave && !ns.presence) {
    ns_free_urls(&ns);
    push_cfg_err(err, errlen, "namespace \"%s\": join_leave needs presence",
                 ns.name);
    return -1;
  }
  if (add_ns(c, &ns) != 0) {
    ns_free_urls(&ns);
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

void push_config_clear_listen(push_config *c) {
  for (size_t i = 0; i < c->nlisten; i++) {
    free(c->listen[i]);
  }
  c->nlisten = 0;
}

int push_config_add_listen(push_config *c, const char *addr, char *err,
                           size_t errlen) {
  if (c->nlisten == 8) {
    push_cfg_err(err, errlen, "at most 8 listen addresses");
    return -1;
  }
  if ((c->listen[c->nlisten] = strdup(addr)) == NULL) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  c->nlisten++;
  return 0;
}

int push_config_set_string(char **field, const char *value, char *err,
                           size_t errlen) {
  char *copy = strdup(value);
  if (copy == NULL) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  free(*field);
  *field = copy;
  return 0;
}

static int set_listen(push_config *c, push_json arr, char *err, size_t errlen) {
  push_config_clear_listen(c);
  size_t pos = 0;
  push_json v;
  while (push_json_next(arr, &pos, NULL, &v)) {
    if (c->nlisten == 8) {
      push_cfg_err(err, errlen, "at most 8 listen addresses");
      return -1;
    }
    if ((c->listen[c->nlisten] = push_cfg_strdup(v)) == NULL) {
      push_cfg_err(err, errlen, "listen addresses are strings");
      return -1;
    }
    c->nlisten++;
  }
  return 0;
}

static int load_rate_limits(push_config *c, push_json v, char *err,
                            size_t errlen) {
  static const struct {
    const char *name;
    size_t off;
  } kinds[] = {{"commands", offsetof(push_config, rate_commands)},
               {"publishes", offsetof(push_config, rate_publishes)},
               {"subscribes", offsetof(push_config, rate_subscribes)},
               {"connections_per_ip", offsetof(push_config, rate_connections)}};
  if (push_json_type_of(v) != PUSH_JSON_OBJECT) {
    push_cfg_err(err, errlen, "\"rate_limits\" must be an object");
    return -1;
  }
  size_t pos = 0;
  push_json key, val;
  while (push_json_next(v, &pos, &key, &val)) {
    char k[64] = "";
    push_json_str(key, k, sizeof(k));
    push_rate *r = NULL;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
      if (strcmp(k, kinds[i].name) == 0) {
        r = (push_rate *)(void *)((char *)c + kinds[i].off);
      }
    }
    if (r == NULL) {
      push_cfg_err(err, errlen, "rate_limits: unknown key \"%s\"", k);
      return -1;
    }
    push_json f;
    if (push_json_type_of(val) != PUSH_JSON_OBJECT ||
        (push_json_get(val, "per_s", &f) && push_cfg_u32(f, &r->per_s)) ||
        (push_json_get(val, "burst", &f) && push_cfg_u32(f, &r->burst))) {
      push_cfg_err(err, errlen,
                   "rate_limits.%s: give {\"per_s\": N, \"burst\": N} with "
                   "whole numbers",
                   k);
      return -1;
    }
    if (r->burst < r->per_s) {
      r->burst = r->per_s;
    }
  }
  return 0;
}

static int node_name_valid(const char *n) {
  size_t len = strlen(n);
  return len > 0 && len <= 12 &&
         strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789_") == len;
}

static int add_origin(push_config *c, const char *o) {
  char **n = realloc(c->origins, (c->norigins + 1) * sizeof(char *));
  if (n == NULL) {
    return -1;
  }
  c->origins = n;
  if ((c->origins[c->norigins] = strdup(o)) == NULL) {
    return -1;
  }
  c->norigins++;
  return 0;
}

int push_config_add_origin(push_config *c, const char *origin, char *err,
                           size_t errlen) {
  if (add_origin(c, origin) != 0) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

int push_config_set_node_name(push_config *c, const char *name, char *err,
                              size_t errlen) {
  char *copy;
  if (!node_name_valid(name)) {
    push_cfg_err(err, errlen, "node name: 1-12 letters, digits or underscores");
    return -1;
  }
  if ((copy = strdup(name)) == NULL) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  free(c->node_name);
  c->node_name = copy;
  return 0;
}

int push_config_set_log_level(push_config *c, const char *name, char *err,
                              size_t errlen) {
  int level = parse_level(name);
  if (level < 0) {
    push_cfg_err(err, errlen, "log level: debug, info, warn or error");
    return -1;
  }
  c->log_level = level;
  return 0;
}

int push_config_load(push_config *c, const char *path, char *err,
                     size_t errlen) {
  char *text = read_file(path);
  if (text == NULL) {
    push_cfg_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  push_json root;
  push_json_error jerr;
  int rv = -1;
  if (push_json_parse_ex(text, strlen(text), &root, &jerr) != 0) {
    char name[64] = "";
    size_t line = 1, col = 1;
    for (size_t k = 0; k < jerr.offset; k++) {
      line += text[k] == '\n';
      col = text[k] == '\n' ? 1 : col + 1;
    }
    if (jerr.fault == PUSH_JSON_DUPLICATE) {
      push_json_str(jerr.name, name, sizeof(name));
      push_cfg_err(err, errlen,
                   "%s:%zu:%zu: key \"%s\" appears twice in one object", path,
                   line, col, name);
    } else if (jerr.fault == PUSH_JSON_NOMEM) {
      push_cfg_err(err, errlen, "%s: out of memory", path);
    } else {
      push_cfg_err(err, errlen, "%s:%zu:%zu: not valid JSON here", path, line,
                   col);
    }
    goto out;
  }
  if (push_json_type_of(root) != PUSH_JSON_OBJECT) {
    push_cfg_err(err, errlen, "%s: not a JSON object", path);
    goto out;
  }
  size_t pos = 0;
  push_json key, v;
  while (push_json_next(root, &pos, &key, &v)) {
    char k[64];
    int bad = 0;
    if (push_json_str(key, k, sizeof(k)) < 0) {
      push_cfg_err(err, errlen, "%s: key too long", path);
      goto out;
    }
    if (strcmp(k, "listen") == 0) {
      if (push_json_type_of(v) != PUSH_JSON_ARRAY ||
          set_listen(c, v, err, errlen) != 0) {
        if (!err[0]) {
          push_cfg_err(err, errlen, "\"listen\" is an array of strings");
        }
        goto out;
      }
    } else if (strcmp(k, "anonymous") == 0) {
      bad = push_cfg_bool(v, &c->anonymous);
    } else if (strcmp(k, "allowed_origins") == 0) {
      size_t p2 = 0;
      push_json o;
      char tmp[512];
      while (push_json_next(v, &p2, NULL, &o)) {
        if (push_json_str(o, tmp, sizeof(tmp)) < 0 || add_origin(c, tmp)) {
          bad = 1;
          break;
        }
      }
    } else if (strcmp(k, "api_key") == 0) {
      free(c->api_key);
      bad = (c->api_key = push_cfg_strdup(v)) == NULL;
    } else if (strcmp(k, "jwt") == 0) {
      size_t p2 = 0;
      push_json jk, jv;
      while (!bad && push_json_next(v, &p2, &jk, &jv)) {
        char name[64];
        push_json_str(jk, name, sizeof(name));
        if (strcmp(name, "hmac_secret") == 0) {
          free(c->jwt_hmac_secret);
          bad = (c->jwt_hmac_secret = push_cfg_strdup(jv)) == NULL;
        } else if (strcmp(name, "rsa_public_key_file") == 0) {
          if (load_pem(jv, &c->jwt_rsa_pem, err, errlen) != 0) {
            goto out;
          }
        } else if (strcmp(name, "ec_public_key_file") == 0) {
          if (load_pem(jv, &c->jwt_ec_pem, err, errlen) != 0) {
            goto out;
          }
        } else if (strcmp(name, "require_exp") == 0) {
          bad = push_cfg_bool(jv, &c->jwt_require_exp);
        } else {
          push_cfg_err(err, errlen, "jwt: unknown key \"%s\"", name);
          goto out;
        }
        if (bad) {
          push_cfg_err(err, errlen, "%s: bad value for \"jwt.%s\"", path, name);
          goto out;
        }
      }
    } else if (strcmp(k, "namespaces") == 0) {
      size_t p2 = 0;
      push_json o;
      while (push_json_next(v, &p2, NULL, &o)) {
        if (load_namespace(c, o, err, errlen) != 0) {
          goto out;
        }
      }
    } else if (strcmp(k, "max_channels") == 0) {
      bad = push_cfg_u32(v, &c->max_channels);
    } else if (strcmp(k, "max_history_bytes") == 0) {
      size_t bytes = 0;
      bad = json_size(v, &bytes);
      c->max_history_bytes = bytes;
    } else if (strcmp(k, "max_channels_total") == 0) {
      bad = push_cfg_u32(v, &c->max_channels_total);
    } else if (strcmp(k, "rate_limits") == 0) {
      if (load_rate_limits(c, v, err, errlen) != 0) {
        goto out;
      }
    } else if (strcmp(k, "max_command_bytes") == 0) {
      bad = json_size(v, &c->max_command_bytes);
    } else if (strcmp(k, "client_output_cap") == 0) {
      bad = json_size(v, &c->output_cap);
    } else if (strcmp(k, "ping_interval") == 0) {
      bad = push_cfg_u32(v, &c->ping_interval_s);
    } else if (strcmp(k, "pong_timeout") == 0) {
      bad = push_cfg_u32(v, &c->pong_timeout_s);
    } else if (strcmp(k, "max_http_body") == 0) {
      bad = json_size(v, &c->max_http_body);
    } else if (strcmp(k, "sse_keepalive") == 0) {
      bad = push_cfg_u32(v, &c->sse_keepalive_s);
    } else if (strcmp(k, "max_sse_channels") == 0) {
      bad = push_cfg_u32(v, &c->max_sse_channels) || c->max_sse_channels == 0 ||
            c->max_sse_channels > PUSH_SSE_CHANNELS_MAX;
    } else if (strcmp(k, "shutdown_grace") == 0) {
      bad = push_cfg_u32(v, &c->shutdown_grace_s);
    } else if (strcmp(k, "threads") == 0) {
      bad =
          push_cfg_u32(v, &c->threads) || c->threads > PUSH_CONFIG_THREADS_MAX;
    } else if (strcmp(k, "log_level") == 0) {
      char lvl[16];
      bad = push_json_str(v, lvl, sizeof(lvl)) < 0 ||
            (c->log_level = parse_level(lvl)) < 0;
    } else if (strcmp(k, "demo") == 0) {
      bad = push_cfg_bool(v, &c->demo);
    } else if (strcmp(k, "tls_cert") == 0) {
      free(c->tls_cert);
      bad = (c->tls_cert = push_cfg_strdup(v)) == NULL;
    } else if (strcmp(k, "tls_key") == 0) {
      free(c->tls_key);
      bad = (c->tls_key = push_cfg_strdup(v)) == NULL;
    } else if (strcmp(k, "engine") == 0) {
      char e[16];
      bad = push_json_str(v, e, sizeof(e)) < 0 ||
            (strcmp(e, "redis") != 0 && strcmp(e, "memory") != 0);
      c->engine_redis = !bad && strcmp(e, "redis") == 0;
    } else if (strcmp(k, "redis") == 0) {
      if (push_cfg_load_redis(c, v, err, errlen) != 0) {
        goto out;
      }
    } else if (strcmp(k, "pusher") == 0) {
      if (push_pusher_config_load(&c->pusher, v, err, errlen) != 0) {
        goto out;
      }
    } else if (strcmp(k, "proxy") == 0 || strcmp(k, "webhooks") == 0) {
      if (load_backend(c, k, v, err, errlen) != 0) {
        goto out;
      }
    } else if (strcmp(k, "refresh_ahead") == 0) {
      bad = push_cfg_u32(v, &c->refresh_ahead_s);
    } else if (strcmp(k, "user_connection_limit") == 0) {
      bad = push_cfg_u32(v, &c->user_connection_limit);
    } else if (strcmp(k, "idempotency_window") == 0) {
      bad = push_cfg_u32(v, &c->idempotency_window_s) ||
            c->idempotency_window_s == 0 || c->idempotency_window_s > 86400;
    } else if (strcmp(k, "idempotency_max_keys") == 0) {
      bad = push_cfg_u32(v, &c->idempotency_max_keys) ||
            c->idempotency_max_keys == 0;
    } else if (strcmp(k, "static_dir") == 0) {
      free(c->static_dir);
      bad = (c->static_dir = push_cfg_strdup(v)) == NULL;
    } else if (strcmp(k, "node_name") == 0) {
      free(c->node_name);
      bad = (c->node_name = push_cfg_strdup(v)) == NULL ||
            !node_name_valid(c->node_name);
    } else {
      push_cfg_err(err, errlen, "%s: unknown key \"%s\"", path, k);
      goto out;
    }
    if (bad) {
      push_cfg_err(err, errlen, "%s: bad value for \"%s\"", path, k);
      goto out;
    }
  }
  rv = 0;
out:
  free(text);
  return rv;
}

int push_config_set_threads(push_config *c, const char *value, char *err,
                            size_t errlen) {
  char *end;
  unsigned long n = strtoul(value, &end, 10);
  if (value[0] < '0' || value[0] > '9' || *end != 0 ||
      n > PUSH_CONFIG_THREADS_MAX) {
    push_cfg_err(err, errlen, "--threads takes 0..256 (0: one per core)");
    return -1;
  }
  c->threads = (uint32_t)n;
  return 0;
}

int push_config_finish(push_config *c, char *err, size_t errlen) {
  if (c->demo && add_demo(c) != 0) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  if (push_pusher_namespaces(&c->pusher, &c->ns, &c->nns) != 0) {
    push_cfg_err(err, errlen, "out of memory");
    return -1;
  }
  if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
    push_cfg_err(err, errlen, "--tls-cert and --tls-key go together");
    return -1;
  }
  if (c->engine_redis && c->redis.naddrs == 0 && c->redis.ncluster == 0) {
    push_cfg_err(err, errlen,
                 "the redis engine needs an address (--redis HOST:PORT, "
                 "redis.addresses, redis.sentinel, redis.shards or "
                 "redis.cluster)");
    return -1;
  }
  if (c->backend.webhooks_secret && !c->backend.webhooks_url) {
    push_cfg_err(err, errlen, "webhooks.secret without webhooks.url");
    return -1;
  }
  if (!c->anonymous && !c->jwt_hmac_secret && !c->jwt_rsa_pem &&
      !c->jwt_ec_pem && !c->backend.connect_url) {
    push_cfg_err(err, errlen,
                 "tokens are required but no JWT key is configured");
    return -1;
  }
  return 0;
}

void push_config_free(push_config *c) {
  for (size_t i = 0; i < c->nlisten; i++) {
    free(c->listen[i]);
  }
  for (size_t i = 0; i < c->norigins; i++) {
    free(c->origins[i]);
  }
  free(c->origins);
  free(c->api_key);
  free(c->jwt_hmac_secret);
  free(c->jwt_rsa_pem);
  free(c->jwt_ec_pem);
  for (size_t i = 0; i < c->nns; i++) {
    ns_free_urls(&c->ns[i]);
  }
  free(c->ns);
  push_backend_config *b = &c->backend;
  free(b->connect_url);
  free(b->refresh_url);
  free(b->rpc_url);
  for (size_t i = 0; i < b->nheaders; i++) {
    free(b->headers[i]);
  }
  free(b->headers);
  free(b->webhooks_url);
  free(b->webhooks_secret);
  free(c->tls_cert);
  free(c->tls_key);
  push_config_clear_redis(c);
  free(c->redis.user);
  free(c->redis.password);
  free(c->redis.prefix);
  free(c->redis.tls_ca);
  free(c->redis.tls_server_name);
  free(c->node_name);
  free(c->static_dir);
  push_pusher_config_free(&c->pusher);
  memset(c, 0, sizeof(*c));
}
