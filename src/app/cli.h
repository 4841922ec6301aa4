/* cli.h - the subcommands of the herald program and the small helpers they
 * share for parsing options. */
#ifndef HERALD_CLI_H
#define HERALD_CLI_H

#include <stddef.h>
#include <stdint.h>

int herald_cmd_serve(int argc, char **argv);
int herald_cmd_echo(int argc, char **argv);
int herald_cmd_client(int argc, char **argv);
int herald_cmd_bench(int argc, char **argv);
/* `herald token`: mints an HS256 JWT (token.c). */
int herald_cmd_token(int argc, char **argv);
/* `herald bench --mode fanout` (fanout.c). */
int herald_bench_fanout(int argc, char **argv);

/* Parses a byte size with an optional K, M or G suffix (powers of 1024).
 * Returns 0 and sets *out, or -1. */
int cli_parse_size(const char *s, uint64_t *out);

/* Parses a non-negative integer no larger than max. Returns 0 or -1. */
int cli_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* If argv[*i] is `--name` (with its value in the next argument) or
 * `--name=value`, sets *value, advances *i past it and returns 1. Returns 0
 * when argv[*i] is another option, and -1 (after printing an error) when the
 * value is missing. */
int cli_option(int argc, char **argv, int *i, const char *name,
               const char **value);

#endif
