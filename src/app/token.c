/* token.c - `herald token`: mints an HS256 JWT for local use and tests,
 * the tokens `herald serve` verifies (docs/protocol.md, Authentication):
 * a connection token (sub, exp, info, channels, subs) or, with --channel,
 * a subscription token. Production backends mint their own with their
 * JWT library; this one exists so that nobody pastes secrets into a web
 * page to try the server. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/cli.h"
#include "push/push.h"

static void token_usage(FILE *out) {
  fprintf(out,
          "usage: herald token --secret S --sub USER [options]\n"
          "\n"
          "Prints an HS256 JWT signed with S (jwt.hmac_secret of the "
          "server).\n"
          "\n"
          "  --secret S        the HMAC key (or the HERALD_JWT_SECRET "
          "environment variable)\n"
          "  --sub USER        the user id (claim sub)\n"
          "  --exp DURATION    lifetime: N, Ns, Nm, Nh or Nd (default 1h); "
          "0: no exp\n"
          "  --channels A,B    channels the user may subscribe to without a "
          "subscription\n"
          "                    token (claim channels)\n"
          "  --subs A,B        channels the server subscribes the connection "
          "to (claim subs)\n"
          "  --info JSON       shown in presence (claim info)\n"
          "  --channel C       a subscription token for channel C instead\n"
          "  --help            this text\n"
          "\n"
          "Exit codes: 0, 1 if signing failed, 2 on a usage error.\n");
}

/* Base64url without padding (RFC 7515 section 2). */
static void b64url(push_buf *out, const unsigned char *p, size_t n) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16;
    v |= i + 1 < n ? (unsigned)p[i + 1] << 8 : 0;
    v |= i + 2 < n ? p[i + 2] : 0;
    char q[4] = {a[(v >> 18) & 63], a[(v >> 12) & 63], a[(v >> 6) & 63],
                 a[v & 63]};
    push_buf_raw(out, q, n - i >= 3 ? 4 : n - i == 2 ? 3 : 2);
  }
}

/* "1h" -> 3600. Returns 0 or -1. */
static int parse_duration(const char *s, uint64_t *out) {
  size_t n = strlen(s);
  uint64_t mult = 1, v;
  char num[32];
  if (n == 0 || n >= sizeof(num)) {
    return -1;
  }
  memcpy(num, s, n + 1);
  switch (num[n - 1]) {
  case 's':
    num[--n] = 0;
    break;
  case 'm':
    mult = 60;
    num[--n] = 0;
    break;
  case 'h':
    mult = 3600;
    num[--n] = 0;
    break;
  case 'd':
    mult = 86400;
    num[--n] = 0;
    break;
  default:
    break;
  }
  if (cli_parse_uint(num, 10ull * 365 * 86400, &v) != 0) {
    return -1;
  }
  *out = v * mult;
  return 0;
}

/* "a,b" -> ["a","b"]; each a valid channel name. Returns 0 or -1. */
static int put_list(push_buf *b, const char *claim, const char *list) {
  push_buf_raw(b, ",\"", 2);
  push_buf_raw(b, claim, strlen(claim));
  push_buf_raw(b, "\":[", 3);
  const char *p = list;
  int first = 1;
  while (*p) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (!push_channel_valid(p, n)) {
      fprintf(stderr, "herald token: --%s: \"%.*s\" is not a channel name\n",
              claim, (int)n, p);
      return -1;
    }
    if (!first) {
      push_buf_raw(b, ",", 1);
    }
    push_buf_str(b, p, n);
    first = 0;
    p += n + (end != NULL);
  }
  push_buf_raw(b, "]", 1);
  return 0;
}

int herald_cmd_token(int argc, char **argv) {
  const char *secret = getenv("HERALD_JWT_SECRET"), *sub = NULL;
  const char *exp_s = "1h", *channels = NULL, *subs = NULL, *info = NULL;
  const char *channel = NULL, *v;
  for (int i = 1; i < argc;) {
    int rv;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      token_usage(stdout);
      return 0;
    }
    const char **slot = NULL;
    static const char *const names[] = {"--secret",   "--sub",  "--exp",
                                        "--channels", "--subs", "--info",
                                        "--channel"};
    const char **slots[] = {&secret, &sub,  &exp_s,  &channels,
                            &subs,   &info, &channel};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
      if ((rv = cli_option(argc, argv, &i, names[k], &v)) != 0) {
        if (rv < 0) {
          return 2;
        }
        slot = slots[k];
        break;
      }
    }
    if (slot == NULL) {
      fprintf(stderr, "herald token: unknown option %s\n", argv[i]);
      token_usage(stderr);
      return 2;
    }
    *slot = v;
  }
  uint64_t exp_in;
  if (secret == NULL || secret[0] == 0 || sub == NULL) {
    fprintf(stderr, "herald token: --secret and --sub are required\n");
    token_usage(stderr);
    return 2;
  }
  if (parse_duration(exp_s, &exp_in) != 0) {
    fprintf(stderr, "herald token: --exp: N, Ns, Nm, Nh or Nd\n");
    return 2;
  }
  if (info != NULL) {
    push_json j;
    if (push_json_parse(info, strlen(info), &j) != 0) {
      fprintf(stderr, "herald token: --info is not valid JSON\n");
      return 2;
    }
  }
  if (channel != NULL && !push_channel_valid(channel, strlen(channel))) {
    fprintf(stderr, "herald token: --channel: not a channel name\n");
    return 2;
  }
  push_buf claims = {0}, out = {0};
  push_buf_raw(&claims, "{\"sub\":", 7);
  push_buf_str(&claims, sub, strlen(sub));
  if (exp_in > 0) {
    push_buf_raw(&claims, ",\"exp\":", 7);
    push_buf_u64(&claims, (uint64_t)time(NULL) + exp_in);
  }
  if (channel != NULL) {
    push_buf_raw(&claims, ",\"channel\":", 11);
    push_buf_str(&claims, channel, strlen(channel));
  }
  if (info != NULL) {
    push_buf_raw(&claims, ",\"info\":", 8);
    push_buf_raw(&claims, info, strlen(info));
  }
  int rc = 0;
  if ((channels && put_list(&claims, "channels", channels) != 0) ||
      (subs && put_list(&claims, "subs", subs) != 0)) {
    rc = 2;
    goto out;
  }
  push_buf_raw(&claims, "}", 1);
  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  b64url(&out, (const unsigned char *)header, sizeof(header) - 1);
  push_buf_raw(&out, ".", 1);
  b64url(&out, (const unsigned char *)claims.p, claims.len);
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t maclen = 0;
  if (out.p == NULL || EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret,
                                 strlen(secret), (const unsigned char *)out.p,
                                 out.len, mac, sizeof(mac), &maclen) == NULL) {
    fprintf(stderr, "herald token: signing failed\n");
    rc = 1;
    goto out;
  }
  push_buf_raw(&out, ".", 1);
  b64url(&out, mac, maclen);
  printf("%.*s\n", (int)out.len, out.p);
out:
  push_buf_free(&claims);
  push_buf_free(&out);
  return rc;
}
