/* client_opts.c - the command line of `herald client`: every option, its
 * default and its check, and the usage text. */
#include "app/cli.h"
#include "app/client.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

void client_usage(FILE *out) {
  fprintf(
      out,
      "usage: herald client [options] URL\n"
      "       herald client [options] --listen [ADDR:]PORT\n"
      "\n"
      "A WebSocket client. On a terminal, lines are edited (libedit, with "
      "history)\nand sent; messages received are shown behind \"< \". In a "
      "pipe, stdin is cut\ninto messages and messages received go to stdout "
      "unchanged; at the end of\nstdin the client waits for replies, then "
      "closes with 1000.\n"
      "\n"
      "Input:\n"
      "  --binary              send binary messages (default: text)\n"
      "  --whole               all of stdin is one message (default with "
      "--binary)\n"
      "  --lines               each line is a message (default for text)\n"
      "  --chunk SIZE          stdin in messages of SIZE bytes (K/M "
      "suffixes)\n"
      "  --length-prefixed     each message is a 4-byte big-endian length, "
      "then\n"
      "                        its bytes\n"
      "  -x, --execute MSG     send MSG instead of reading stdin "
      "(repeatable)\n"
      "  -1, --one             send one message, print the first reply, "
      "close\n"
      "  --linger SECS         at the end of stdin, close once SECS pass "
      "without a\n"
      "                        message (default 1; 0: at once)\n"
      "  --no-close            at the end of stdin, wait for the server to "
      "close\n"
      "Output:\n"
      "  --binary-output raw|hex|base64  how binary messages are written "
      "(raw in a\n"
      "                        pipe, hex on a terminal)\n"
      "  --timestamps          put the time of arrival before each "
      "message\n"
      "  --pretty              indent text messages that are JSON\n"
      "  -q, --quiet           do not print received messages\n"
      "  -v, --verbose         show the connection's steps and the "
      "handshake's\n"
      "                        request and response heads on stderr\n"
      "Connection:\n"
      "  -H, --header 'Name: value'  extra request header (repeatable)\n"
      "  --subprotocol P       offer subprotocol P (repeatable, in order)\n"
      "  --origin O            send Origin: O\n"
      "  --user-agent UA       send User-Agent: UA (default "
      "herald-client/VERSION)\n"
      "  --deflate             offer permessage-deflate (RFC 7692)\n"
      "  --proxy URL           tunnel through the HTTP proxy URL "
      "(http://[user:pw@]host:port)\n"
      "                        with CONNECT; default: $https_proxy for "
      "wss://,\n"
      "                        $http_proxy for ws://, unless $no_proxy "
      "names the host\n"
      "  --no-proxy            ignore the proxy variables\n"
      "  --ca FILE             wss://: trust the CA certificates in FILE "
      "(PEM)\n"
      "  --server-name NAME    wss://: verify and send SNI for NAME\n"
      "  -k, --insecure        wss://: do not verify the server's "
      "certificate\n"
      "  --cert FILE           wss://: client certificate chain (PEM)\n"
      "  --key FILE            wss://: its private key (default: in "
      "--cert's file)\n"
      "  --connect-timeout SECS  DNS, TCP, proxy, TLS and handshake "
      "(default 10)\n"
      "  --ping-interval SECS  send a ping every SECS seconds; no pong "
      "before the\n"
      "                        next one drops the connection\n"
      "  --max-message SIZE    largest message sent or accepted (default "
      "64M)\n"
      "  --reconnect[=SECS]    when the connection fails or is lost, connect "
      "again\n"
      "                        after SECS (default 1), doubling up to 30\n"
      "  --listen [ADDR:]PORT  accept one WebSocket connection instead "
      "(ADDR\n"
      "                        defaults to 127.0.0.1; PORT 0 picks one)\n"
      "  --echo                send every message back (no stdin, no "
      "output)\n"
      "  --no-history          interactive: do not read or write "
      "~/.herald_history\n"
      "  --help                this text\n"
      "\n"
      "URL is ws://[user:password@]host[:port]/path?query or wss://...; "
      "user and\npassword become an Authorization: Basic header.\n"
      "\n"
      "Interactive commands: /ping [text] (prints the round-trip time), "
      "/close\n[code [reason]], /quit, /help; a line starting with // sends "
      "one /.\n"
      "SIGINT or SIGTERM closes with 1001 (a second one kills the "
      "client).\n"
      "\n"
      "exit codes:\n"
      "  0  the connection closed normally: 1000, 1001 or 1005, or with the "
      "code\n     we closed with\n"
      "  1  could not connect, or the handshake failed\n"
      "  2  usage error (options or URL)\n"
      "  3  the connection was lost without a close handshake (1006)\n"
      "  4  the peer closed with another code (printed on stderr)\n");
}

/* Parses seconds with up to three decimals ("2", "0.5") into ms. */
static int parse_seconds(const char *s, uint32_t *ms) {
  uint64_t whole = 0, frac = 0;
  const char *dot = strchr(s, '.');
  char buf[32];
  if (dot == NULL) {
    if (cli_parse_uint(s, 4000000, &whole) != 0) {
      return -1;
    }
    *ms = (uint32_t)(whole * 1000);
    return 0;
  }
  size_t wl = (size_t)(dot - s), fl = strlen(dot + 1);
  if (wl == 0 || wl >= sizeof(buf) || fl == 0 || fl > 3) {
    return -1;
  }
  memcpy(buf, s, wl);
  buf[wl] = 0;
  if (cli_parse_uint(buf, 4000000, &whole) != 0 ||
      cli_parse_uint(dot + 1, 999, &frac) != 0) {
    return -1;
  }
  for (size_t i = fl; i < 3; i++) {
    frac *= 10;
  }
  *ms = (uint32_t)(whole * 1000 + frac);
  return 0;
}

/* Splits "Name: value" into a header that borrows from arg. */
static int parse_header(const char *arg, herald_header *h) {
  const char *colon = strchr(arg, ':');
  if (colon == NULL || colon == arg) {
    return -1;
  }
  const char *v = colon + 1;
  while (*v == ' ' || *v == '\t') {
    v++;
  }
  size_t vlen = strlen(v);
  while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) {
    vlen--;
  }
  h->name = (herald_str){arg, (size_t)(colon - arg)};
  h->value = (herald_str){v, vlen};
  return 0;
}

/* A string option: -S/--long (value in the next argument or after '='). */
static int str_opt(int argc, char **argv, int *i, const char *shortname,
                   const char *longname, const char **v) {
  int r = 0;
  if (shortname) {
    r = cli_option(argc, argv, i, shortname, v);
  }
  if (r == 0) {
    r = cli_option(argc, argv, i, longname, v);
  }
  return r;
}

/* Returns -1 to go on, or the exit code (0 after --help, 2 on errors). */
int client_parse_args(int argc, char **argv, client_opts *o, int *in_set) {
  for (int i = 1; i < argc;) {
    const char *v;
    int r;
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      client_usage(stdout);
      return 0;
    }
    struct {
      const char *s, *l;
      int *flag;
    } flags[] = {
        {NULL, "--binary", &o->binary},
        {NULL, "--echo", &o->echo},
        {"-q", "--quiet", &o->quiet},
        {NULL, "--deflate", &o->deflate},
        {"-k", "--insecure", &o->insecure},
        {"-v", "--verbose", &o->verbose},
        {"-1", "--one", &o->one},
        {NULL, "--no-close", &o->no_close},
        {NULL, "--timestamps", &o->timestamps},
        {NULL, "--pretty", &o->pretty},
        {NULL, "--no-proxy", &o->no_proxy},
        {NULL, "--no-history", &o->no_history},
    };
    int matched = 0;
    for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
      if ((flags[k].s && strcmp(a, flags[k].s) == 0) ||
          strcmp(a, flags[k].l) == 0) {
        *flags[k].flag = 1;
        matched = 1;
        break;
      }
    }
    if (matched) {
      i++;
      continue;
    }
    if (strcmp(a, "--whole") == 0 || strcmp(a, "--lines") == 0 ||
        strcmp(a, "--length-prefixed") == 0) {
      o->in_mode = a[2] == 'w'                  ? CIN_WHOLE
                   : a[2] == 'l' && a[3] == 'i' ? CIN_LINES
                                                : CIN_PREFIX;
      *in_set = 1;
      i++;
      continue;
    }
    if (strcmp(a, "--reconnect") == 0) {
      o->reconnect_ms = 1000;
      i++;
      continue;
    }
    if (strncmp(a, "--reconnect=", 12) == 0) {
      if (parse_seconds(a + 12, &o->reconnect_ms) != 0 ||
          o->reconnect_ms == 0) {
        fprintf(stderr, "herald client: --reconnect=SECS takes seconds above "
                        "0\n");
        return CLIENT_EXIT_USAGE;
      }
      i++;
      continue;
    }
    if ((r = str_opt(argc, argv, &i, "-H", "--header", &v)) != 0) {
      if (r < 0) {
        return CLIENT_EXIT_USAGE;
      }
      if (parse_header(v, &o->headers[o->nheaders]) != 0) {
        fprintf(stderr, "herald client: -H takes 'Name: value', not '%s'\n", v);
        return CLIENT_EXIT_USAGE;
      }
      o->nheaders++;
      continue;
    }
    if ((r = str_opt(argc, argv, &i, "-x", "--execute", &v)) != 0) {
      if (r < 0) {
        return CLIENT_EXIT_USAGE;
      }
      o->execute[o->nexecute++] = v;
      continue;
    }
    if ((r = str_opt(argc, argv, &i, NULL, "--subprotocol", &v)) != 0) {
      if (r < 0) {
        return CLIENT_EXIT_USAGE;
      }
      o->protocols[o->nprotocols++] = v;
      continue;
    }
    struct {
      const char *name;
      const char **slot;
    } strs[] = {
        {"--ca", &o->ca_file},
        {"--server-name", &o->server_name},
        {"--origin", &o->origin},
        {"--cert", &o->cert_file},
        {"--key", &o->key_file},
        {"--proxy", &o->proxy},
        {"--user-agent", &o->user_agent},
        {"--listen", &o->listen},
    };
    matched = 0;
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]) && !matched; k++) {
      if ((r = cli_option(argc, argv, &i, strs[k].name, &v)) != 0) {
        if (r < 0) {
          return CLIENT_EXIT_USAGE;
        }
        *strs[k].slot = v;
        matched = 1;
      }
    }
    if (matched) {
      continue;
    }
    struct {
      const char *name;
      uint32_t *slot;
    } secs[] = {
        {"--ping-interval", &o->ping_ms},
        {"--connect-timeout", &o->connect_ms},
        {"--linger", &o->linger_ms},
    };
    for (size_t k = 0; k < sizeof(secs) / sizeof(secs[0]) && !matched; k++) {
      if ((r = cli_option(argc, argv, &i, secs[k].name, &v)) != 0) {
        if (r < 0 || parse_seconds(v, secs[k].slot) != 0) {
          fprintf(stderr, "herald client: %s takes seconds (2, 0.5)\n",
                  secs[k].name);
          return CLIENT_EXIT_USAGE;
        }
        matched = 1;
      }
    }
    if (matched) {
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--max-message", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &o->max_message) != 0 ||
          o->max_message == 0 || o->max_message > (1ull << 31)) {
        fprintf(stderr, "herald client: --max-message takes a size up to 2G "
                        "(64M)\n");
        return CLIENT_EXIT_USAGE;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--chunk", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &o->chunk) != 0 || o->chunk == 0) {
        fprintf(stderr, "herald client: --chunk takes a size above 0 (4K)\n");
        return CLIENT_EXIT_USAGE;
      }
      o->in_mode = CIN_CHUNKS;
      *in_set = 1;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--binary-output", &v)) != 0) {
      if (r < 0) {
        return CLIENT_EXIT_USAGE;
      }
      if (strcmp(v, "raw") == 0) {
        o->bin_out = COUT_RAW;
      } else if (strcmp(v, "hex") == 0) {
        o->bin_out = COUT_HEX;
      } else if (strcmp(v, "base64") == 0) {
        o->bin_out = COUT_BASE64;
      } else {
        fprintf(stderr, "herald client: --binary-output takes raw, hex or "
                        "base64\n");
        return CLIENT_EXIT_USAGE;
      }
      o->bin_out_set = 1;
      continue;
    }
    if (a[0] == '-' && a[1] != 0) {
      fprintf(stderr,
              "herald client: unknown option '%s' (--help lists "
              "them)\n",
              a);
      return CLIENT_EXIT_USAGE;
    }
    if (o->url != NULL) {
      fprintf(stderr, "herald client: more than one URL ('%s' and '%s')\n",
              o->url, a);
      return CLIENT_EXIT_USAGE;
    }
    o->url = a;
    i++;
  }
  if (o->url == NULL && o->listen == NULL) {
    fprintf(stderr, "herald client: missing URL (ws://host:port/path), or "
                    "--listen PORT\n");
    return CLIENT_EXIT_USAGE;
  }
  if (o->url != NULL && o->listen != NULL) {
    fprintf(stderr, "herald client: give a URL or --listen, not both\n");
    return CLIENT_EXIT_USAGE;
  }
  if (o->in_mode == CIN_CHUNKS && o->chunk > o->max_message) {
    fprintf(stderr, "herald client: --chunk is larger than --max-message\n");
    return CLIENT_EXIT_USAGE;
  }
  return -1;
}
