/* cli.c - option parsing helpers shared by the subcommands. */
#include "app/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_uint(const char *s, uint64_t max, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9') {
    return -1;
  }
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != 0 || v > max) {
    return -1;
  }
  *out = v;
  return 0;
}

int cli_parse_size(const char *s, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9') {
    return -1;
  }
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0) {
    return -1;
  }
  unsigned shift = 0;
  if (*end == 'K' || *end == 'k') {
    shift = 10;
  } else if (*end == 'M' || *end == 'm') {
    shift = 20;
  } else if (*end == 'G' || *end == 'g') {
    shift = 30;
  }
  if (shift) {
    end++;
    if (*end == 'i' || *end == 'I') {
      end++;
    }
    if (*end == 'B' || *end == 'b') {
      end++;
    }
  }
  if (*end != 0 || (shift && v > (UINT64_MAX >> shift))) {
    return -1;
  }
  *out = (uint64_t)v << shift;
  return 0;
}

int cli_option(int argc, char **argv, int *i, const char *name,
               const char **value) {
  const char *arg = argv[*i];
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) {
    return 0;
  }
  if (arg[n] == '=') {
    *value = arg + n + 1;
    (*i)++;
    return 1;
  }
  if (arg[n] != 0) {
    return 0;
  }
  if (*i + 1 >= argc) {
    fprintf(stderr, "herald: %s needs a value\n", name);
    return -1;
  }
  *value = argv[*i + 1];
  *i += 2;
  return 1;
}
