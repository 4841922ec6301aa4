/* client_url.c - the URL of `herald client` and of its proxy: scheme,
 * host, port, path and userinfo (RFC 3986), the Basic credentials made of
 * it (RFC 7617), and NO_PROXY. Every error names the part that is wrong. */
#include "app/client_net_int.h"

static char *dupn(const char *p, size_t n) {
  char *s = malloc(n + 1);
  if (s) {
    memcpy(s, p, n);
    s[n] = 0;
  }
  return s;
}

static int hexval(int c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* "Basic base64(user:password)" from the percent-encoded userinfo of a URL
 * (RFC 3986 3.2.1, RFC 7617). NULL when out of memory. */
static char *basic_auth(const char *ui, size_t n) {
  char *plain = malloc(n + 1);
  size_t k = 0;
  if (plain == NULL) {
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    int h, l;
    if (ui[i] == '%' && i + 2 < n && (h = hexval(ui[i + 1])) >= 0 &&
        (l = hexval(ui[i + 2])) >= 0) {
      plain[k++] = (char)(h * 16 + l);
      i += 2;
    } else {
      plain[k++] = ui[i];
    }
  }
  char *out = malloc(6 + 4 * (k / 3 + 1) + 1);
  if (out) {
    memcpy(out, "Basic ", 6);
    client_base64((const uint8_t *)plain, k, out + 6);
  }
  free(plain);
  return out;
}

/* ---- URLs --------------------------------------------------------------- */

/* Splits a ws:// or wss:// URL (or, for the proxy, an http:// one) into
 * its parts. On failure writes a sentence naming the wrong part into err
 * and returns -1. */
int cn_parse_url(const char *url, int proxy, int *tls, char **host,
                 char **hostport, int *port, char **path, char **auth,
                 char *err, size_t errlen) {
  const char *what = proxy ? "proxy URL" : "URL";
  for (const char *p = url; *p; p++) {
    if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
      snprintf(err, errlen,
               "the %s '%s' holds a space or control character (at byte "
               "%zu); percent-encode it",
               what, url, (size_t)(p - url));
      return -1;
    }
  }
  const char *sep = strstr(url, "://");
  if (sep == NULL) {
    if (proxy) {
      sep = NULL; /* "host:port" alone is how proxies are often given */
    } else {
      snprintf(err, errlen,
               "'%s' has no scheme: write ws://%s (or wss:// for TLS)", url,
               url);
      return -1;
    }
  }
  const char *h = url;
  *tls = 0;
  if (sep != NULL) {
    size_t sl = (size_t)(sep - url);
    h = sep + 3;
    if (!proxy && sl == 2 && strncasecmp(url, "ws", 2) == 0) {
      *tls = 0;
    } else if (!proxy && sl == 3 && strncasecmp(url, "wss", 3) == 0) {
      *tls = 1;
    } else if (!proxy && (sl == 4 || sl == 5) &&
               strncasecmp(url, "https", sl) == 0) {
      snprintf(err, errlen,
               "'%.*s://' is not a WebSocket scheme: use %s:// for this URL",
               (int)sl, url, sl == 5 ? "wss" : "ws");
      return -1;
    } else if (proxy && sl == 4 && strncasecmp(url, "http", 4) == 0) {
      *tls = 0;
    } else if (proxy) {
      snprintf(err, errlen,
               "the proxy URL '%s' must be http://host:port (an HTTP proxy "
               "that takes CONNECT)",
               url);
      return -1;
    } else {
      snprintf(err, errlen,
               "unknown scheme '%.*s://' in '%s': use ws:// or wss://", (int)sl,
               url, url);
      return -1;
    }
  }
  const char *end = h + strcspn(h, "/?#");
  const char *at = memchr(h, '@', (size_t)(end - h));
  *auth = NULL;
  if (at != NULL) {
    /* user:password@host: the last '@' ends the userinfo. */
    const char *a2;
    while ((a2 = memchr(at + 1, '@', (size_t)(end - at - 1))) != NULL) {
      at = a2;
    }
    *auth = basic_auth(h, (size_t)(at - h));
    if (*auth == NULL) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    h = at + 1;
  }
  const char *hend, *colon = NULL;
  if (*h == '[') {
    hend = memchr(h, ']', (size_t)(end - h));
    if (hend == NULL) {
      snprintf(err, errlen, "the host of '%s' opens '[' without a ']'", url);
      return -1;
    }
    if (hend + 1 < end && hend[1] != ':') {
      snprintf(err, errlen, "unexpected '%c' after ']' in the host of '%s'",
               hend[1], url);
      return -1;
    }
    colon = hend + 1 < end ? hend + 1 : NULL;
    *host = dupn(h + 1, (size_t)(hend - h - 1));
  } else {
    colon = memchr(h, ':', (size_t)(end - h));
    hend = colon ? colon : end;
    *host = dupn(h, (size_t)(hend - h));
  }
  if (*host == NULL || (*host)[0] == 0) {
    snprintf(err, errlen, "the %s '%s' has no host", what, url);
    return -1;
  }
  *port = proxy ? 80 : *tls ? 443 : 80;
  if (colon != NULL) {
    const char *ps = colon + 1;
    long p = 0;
    int ok = ps < end && end - ps <= 5;
    for (const char *q = ps; ok && q < end; q++) {
      ok = *q >= '0' && *q <= '9';
      p = p * 10 + (*q - '0');
    }
    if (!ok || p < 1 || p > 65535) {
      snprintf(err, errlen,
               "the port '%.*s' in '%s' is not a number from 1 to 65535",
               (int)(end - ps), ps, url);
      return -1;
    }
    *port = (int)p;
  }
  *hostport = dupn(h, (size_t)(end - h));
  if (path != NULL) {
    const char *frag = strchr(end, '#'); /* never sent (RFC 6455 3) */
    size_t plen = frag ? (size_t)(frag - end) : strlen(end);
    if (plen == 0 || end[0] != '/') {
      *path = malloc(plen + 2);
      if (*path) {
        (*path)[0] = '/';
        memcpy(*path + 1, end, plen);
        (*path)[plen + 1] = 0;
      }
    } else {
      *path = dupn(end, plen);
    }
  }
  if (*hostport == NULL || (path != NULL && *path == NULL)) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* Whether host matches NO_PROXY: "*", or a comma list of names, each
 * matching itself and its subdomains (".example.com" or "example.com"). */
int cn_no_proxy_for(const char *host) {
  const char *np = getenv("no_proxy");
  if (np == NULL || *np == 0) {
    np = getenv("NO_PROXY");
  }
  if (np == NULL) {
    return 0;
  }
  size_t hl = strlen(host);
  while (*np) {
    size_t l = strcspn(np, ",");
    const char *e = np;
    size_t el = l;
    while (el > 0 && (*e == ' ' || *e == '.')) {
      e++;
      el--;
    }
    while (el > 0 && e[el - 1] == ' ') {
      el--;
    }
    if (el == 1 && *e == '*') {
      return 1;
    }
    if (el > 0 && el <= hl && strncasecmp(host + hl - el, e, el) == 0 &&
        (el == hl || host[hl - el - 1] == '.')) {
      return 1;
    }
    np += l + (np[l] == ',' ? 1 : 0);
  }
  return 0;
}
