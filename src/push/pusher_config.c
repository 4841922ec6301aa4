/* pusher_config.c - the "pusher" key of the configuration: apps, their
 * options and limits, and the hub namespaces they live in
 * (pusher_config.h). */
#include "push/pusher_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void err_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err_set(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const struct {
  const char *name;
  unsigned bit;
} hook_names[] = {
    {"channel_occupied", PUSHER_HOOK_CHANNEL_OCCUPIED},
    {"channel_vacated", PUSHER_HOOK_CHANNEL_VACATED},
    {"member_added", PUSHER_HOOK_MEMBER_ADDED},
    {"member_removed", PUSHER_HOOK_MEMBER_REMOVED},
    {"client_event", PUSHER_HOOK_CLIENT_EVENT},
    {"cache_miss", PUSHER_HOOK_CACHE_MISS},
};

static int id_valid(const char *s) {
  size_t n = strlen(s);
  return n > 0 &&
         strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789-_") == n;
}

/* A key is sent in URLs (/app/KEY, ?auth_key=KEY) and headers: printable
 * ASCII without the characters that would need escaping there. */
static int key_valid(const char *s) {
  size_t n = strlen(s);
  return n > 0 &&
         strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789-_.~") == n;
}

static int get_u32(push_json v, uint32_t *out) {
  uint64_t x;
  if (push_json_u64(v, &x) != 0 || x > UINT32_MAX) {
    return -1;
  }
  *out = (uint32_t)x;
  return 0;
}

static int get_bool(push_json v, int *out) {
  push_json_type t = push_json_type_of(v);
  if (t != PUSH_JSON_TRUE && t != PUSH_JSON_FALSE) {
    return -1;
  }
  *out = t == PUSH_JSON_TRUE;
  return 0;
}

static int load_hooks(push_pusher_app *a, push_json o, char *err,
                      size_t errlen) {
  if (push_json_type_of(o) != PUSH_JSON_OBJECT) {
    err_set(err, errlen, "pusher app \"%s\": webhooks is an object", a->id);
    return -1;
  }
  size_t pos = 0;
  push_json key, v;
  a->hooks = PUSHER_HOOK_ALL;
  while (push_json_next(o, &pos, &key, &v)) {
    char k[32] = "";
    push_json_str(key, k, sizeof(k));
    if (strcmp(k, "url") == 0) {
      char url[2048];
      if (push_json_str(v, url, sizeof(url)) <= 0 ||
          (strncmp(url, "http://", 7) != 0 &&
           strncmp(url, "https://", 8) != 0)) {
        err_set(err, errlen, "pusher app \"%s\": webhooks.url must be http(s)",
                a->id);
        return -1;
      }
      free(a->webhook_url);
      if ((a->webhook_url = strdup(url)) == NULL) {
        err_set(err, errlen, "out of memory");
        return -1;
      }
    } else if (strcmp(k, "events") == 0) {
      if (push_json_type_of(v) != PUSH_JSON_ARRAY) {
        err_set(err, errlen, "pusher app \"%s\": webhooks.events is an array",
                a->id);
        return -1;
      }
      a->hooks = 0;
      size_t p2 = 0;
      push_json e;
      while (push_json_next(v, &p2, NULL, &e)) {
        char name[32] = "";
        size_t i = 0, n = sizeof(hook_names) / sizeof(hook_names[0]);
        push_json_str(e, name, sizeof(name));
        while (i < n && strcmp(hook_names[i].name, name) != 0) {
          i++;
        }
        if (i == n) {
          err_set(err, errlen,
                  "pusher app \"%s\": unknown webhook event \"%s\"", a->id,
                  name);
          return -1;
        }
        a->hooks |= hook_names[i].bit;
      }
    } else {
      err_set(err, errlen, "pusher app \"%s\": webhooks: unknown key \"%s\"",
              a->id, k);
      return -1;
    }
  }
  if (a->webhook_url == NULL) {
    err_set(err, errlen, "pusher app \"%s\": webhooks needs a url", a->id);
    return -1;
  }
  return 0;
}

static void app_defaults(push_pusher_app *a) {
  memset(a, 0, sizeof(*a));
  a->activity_timeout = 120;
  a->max_event_bytes = 10240;
  a->max_presence_members = 100;
  a->max_user_info_bytes = 1024;
  a->client_events_per_s = 10;
  a->max_channels = 100;
}

static int load_app(push_pusher_app *a, push_json o, char *err, size_t errlen) {
  app_defaults(a);
  if (push_json_type_of(o) != PUSH_JSON_OBJECT) {
    err_set(err, errlen, "pusher.apps: each app is an object");
    return -1;
  }
  push_json v;
  if (push_json_get(o, "id", &v)) {
    uint64_t num;
    if (push_json_type_of(v) == PUSH_JSON_NUMBER &&
        push_json_u64(v, &num) == 0) {
      snprintf(a->id, sizeof(a->id), "%llu", (unsigned long long)num);
    } else if (push_json_str(v, a->id, sizeof(a->id)) < 0) {
      a->id[0] = 0;
    }
  }
  if (!id_valid(a->id)) {
    err_set(err, errlen,
            "pusher.apps: each app needs an \"id\" of 1-32 letters, digits, "
            "'-' or '_'");
    return -1;
  }
  size_t pos = 0;
  push_json key;
  while (push_json_next(o, &pos, &key, &v)) {
    char k[32] = "";
    int bad = 0;
    push_json_str(key, k, sizeof(k));
    if (strcmp(k, "id") == 0) {
      continue;
    } else if (strcmp(k, "key") == 0) {
      bad = push_json_str(v, a->key, sizeof(a->key)) < 0 || !key_valid(a->key);
    } else if (strcmp(k, "secret") == 0) {
      bad = push_json_str(v, a->secret, sizeof(a->secret)) <= 0;
    } else if (strcmp(k, "enable_client_messages") == 0) {
      bad = get_bool(v, &a->client_messages);
    } else if (strcmp(k, "max_connections") == 0) {
      bad = get_u32(v, &a->max_connections);
    } else if (strcmp(k, "activity_timeout") == 0) {
      bad = get_u32(v, &a->activity_timeout) || a->activity_timeout == 0;
    } else if (strcmp(k, "max_event_bytes") == 0) {
      uint32_t x = 0;
      bad = get_u32(v, &x) || x == 0;
      a->max_event_bytes = x;
    } else if (strcmp(k, "max_presence_members") == 0) {
      bad =
          get_u32(v, &a->max_presence_members) || a->max_presence_members == 0;
    } else if (strcmp(k, "max_user_info_bytes") == 0) {
      uint32_t x = 0;
      bad = get_u32(v, &x) || x == 0;
      a->max_user_info_bytes = x;
    } else if (strcmp(k, "client_events_per_s") == 0) {
      bad = get_u32(v, &a->client_events_per_s);
    } else if (strcmp(k, "max_channels") == 0) {
      bad = get_u32(v, &a->max_channels) || a->max_channels == 0;
    } else if (strcmp(k, "user_authentication_timeout") == 0) {
      bad = get_u32(v, &a->user_auth_timeout) || a->user_auth_timeout > 3600;
    } else if (strcmp(k, "webhooks") == 0) {
      if (load_hooks(a, v, err, errlen) != 0) {
        return -1;
      }
    } else {
      err_set(err, errlen, "pusher app \"%s\": unknown key \"%s\"", a->id, k);
      return -1;
    }
    if (bad) {
      err_set(err, errlen, "pusher app \"%s\": bad value for \"%s\"", a->id, k);
      return -1;
    }
  }
  if (a->key[0] == 0 || a->secret[0] == 0) {
    err_set(err, errlen,
            "pusher app \"%s\": needs a \"key\" (letters, digits, - _ . ~) "
            "and a \"secret\"",
            a->id);
    return -1;
  }
  if (strcasestr(a->secret, "change-me") != NULL) {
    err_set(err, errlen,
            "pusher app \"%s\": the secret is still the placeholder \"%s\": "
            "set a secret of your own",
            a->id, a->secret);
    return -1;
  }
  return 0;
}

static void app_free(push_pusher_app *a) {
  free(a->webhook_url);
  a->webhook_url = NULL;
}

int push_pusher_config_load(push_pusher_config *pc, push_json v, char *err,
                            size_t errlen) {
  if (push_json_type_of(v) != PUSH_JSON_OBJECT) {
    err_set(err, errlen, "\"pusher\" is an object: {\"apps\": [...]}");
    return -1;
  }
  size_t pos = 0;
  push_json key, val;
  while (push_json_next(v, &pos, &key, &val)) {
    char k[32] = "";
    push_json_str(key, k, sizeof(k));
    if (strcmp(k, "apps") != 0) {
      err_set(err, errlen, "pusher: unknown key \"%s\"", k);
      return -1;
    }
    if (push_json_type_of(val) != PUSH_JSON_ARRAY) {
      err_set(err, errlen, "pusher.apps is an array of apps");
      return -1;
    }
    push_pusher_config_free(pc);
    size_t p2 = 0;
    push_json o;
    while (push_json_next(val, &p2, NULL, &o)) {
      if (pc->napps == PUSHER_MAX_APPS) {
        err_set(err, errlen, "pusher.apps: at most %d apps", PUSHER_MAX_APPS);
        return -1;
      }
      push_pusher_app *n =
          realloc(pc->apps, (pc->napps + 1) * sizeof(*pc->apps));
      if (n == NULL) {
        err_set(err, errlen, "out of memory");
        return -1;
      }
      pc->apps = n;
      push_pusher_app *a = &pc->apps[pc->napps];
      if (load_app(a, o, err, errlen) != 0) {
        app_free(a);
        return -1;
      }
      for (size_t i = 0; i < pc->napps; i++) {
        if (strcmp(pc->apps[i].id, a->id) == 0 ||
            strcmp(pc->apps[i].key, a->key) == 0) {
          err_set(err, errlen, "pusher app \"%s\": id or key used twice",
                  a->id);
          app_free(a);
          return -1;
        }
      }
      pc->napps++;
    }
  }
  return 0;
}

int push_pusher_namespaces(const push_pusher_config *pc, push_ns **ns,
                           size_t *nns) {
  static const struct {
    const char *suffix;
    int presence;
    uint32_t history_size, history_ttl_s;
  } kinds[] = {
      {"", 0, 0, 0},      /* public, private, private-encrypted */
      {";c", 0, 1, 1800}, /* cache-: the last event, 30 minutes */
      {";p", 1, 0, 0},    /* presence- */
      {";pc", 1, 1, 1800}, {";u", 0, 0, 0}, /* #server-to-user-<id> */
      {";d", 1, 0, 0}, /* the directory of occupied channels */
  };
  size_t nk = sizeof(kinds) / sizeof(kinds[0]);
  if (pc->napps == 0) {
    return 0;
  }
  push_ns *n = realloc(*ns, (*nns + pc->napps * nk) * sizeof(*n));
  if (n == NULL) {
    return -1;
  }
  *ns = n;
  for (size_t i = 0; i < pc->napps; i++) {
    for (size_t k = 0; k < nk; k++) {
      push_ns *x = &n[(*nns)++];
      memset(x, 0, sizeof(*x));
      snprintf(x->name, sizeof(x->name), "pusher;%s%s", pc->apps[i].id,
               kinds[k].suffix);
      x->presence = x->join_leave = kinds[k].presence;
      x->history_size = kinds[k].history_size;
      x->history_ttl_s = kinds[k].history_ttl_s;
    }
  }
  return 0;
}

void push_pusher_config_free(push_pusher_config *pc) {
  for (size_t i = 0; i < pc->napps; i++) {
    app_free(&pc->apps[i]);
  }
  free(pc->apps);
  pc->apps = NULL;
  pc->napps = 0;
}
