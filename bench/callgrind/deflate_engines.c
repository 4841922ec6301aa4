/*
 * deflate_engines.c - the compressing half of permessage-deflate with zlib
 * or Intel ISA-L's igzip, for callgrind (bench/callgrind/deflate_engines.sh).
 * Not part of the build: it measures whether igzip would be worth a
 * dependency (docs/performance.md, "permessage-deflate").
 *
 * COUNT messages of SIZE bytes go through one stream as herald's
 * deflate.c sends them: raw deflate, one sync flush per message, the
 * trailing 00 00 ff ff checked and stripped, context takeover (NOCTX 1:
 * the stream is reset after every message instead). Only measure() is
 * to be counted. Afterwards every message is inflated by zlib (raw, window
 * BITS, the tail fed back, the inflater reset between messages with
 * NOCTX) and compared with the original; a mismatch exits 1.
 *
 * usage: deflate_engines zlib|isal LEVEL SIZE COUNT [PAYLOAD|- [BITS [NOCTX]]]
 *   PAYLOAD: message i is SIZE bytes of the file from offset i * 102947
 *   (mod its length), as in core_drive.c; `-` or none: `abc...z` repeated.
 * Environment: MEM_LEVEL (zlib, default 8); TIME=R: also R rounds timed
 * with the thread's CPU clock, each on a reset stream, the median printed.
 * Build: cc -O2 -std=c17 deflate_engines.c -lisal -lz (Debian: libisal-dev).
 */
#define _POSIX_C_SOURCE 200809L
#include <isa-l/igzip_lib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
static int use_isal, noctx;
static z_stream zs;
static struct isal_zstream is;

static void reset(void) {
  if (use_isal) {
    isal_deflate_reset(&is);
  } else {
    deflateReset(&zs);
  }
}

/* One message: returns its compressed length without the tail. */
static size_t compress_one(const uint8_t *in, size_t len, uint8_t *out,
                           size_t cap) {
  size_t n;
  if (use_isal) {
    is.next_in = (uint8_t *)(uintptr_t)in;
    is.avail_in = (uint32_t)len;
    is.next_out = out;
    is.avail_out = (uint32_t)cap;
    is.flush = SYNC_FLUSH;
    /* done once the input is used and the flush block is written */
    do {
      if (isal_deflate(&is) != COMP_OK || is.avail_out == 0) {
        fprintf(stderr, "isal_deflate failed\n");
        exit(1);
      }
    } while (is.avail_in > 0 || is.internal_state.state != ZSTATE_NEW_HDR);
    n = cap - is.avail_out;
  } else {
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_SYNC_FLUSH) != Z_OK || zs.avail_in != 0 ||
        zs.avail_out == 0) {
      fprintf(stderr, "deflate failed\n");
      exit(1);
    }
    n = cap - zs.avail_out;
  }
  if (noctx) {
    reset();
  }
  if (n < 4 || memcmp(out + n - 4, tail, 4) != 0) {
    fprintf(stderr, "the flush did not end in 00 00 ff ff\n");
    exit(1);
  }
  return n - 4;
}

__attribute__((noinline)) size_t measure(uint8_t **msgs, size_t size,
                                         long count, uint8_t *out, size_t cap,
                                         size_t *lens) {
  size_t total = 0;
  for (long i = 0; i < count; i++) {
    lens[i] = compress_one(msgs[i], size, out + total, cap);
    total += lens[i];
  }
  return total;
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int verify(uint8_t **msgs, size_t size, long count, const uint8_t *out,
                  const size_t *lens, int bits) {
  z_stream iz;
  memset(&iz, 0, sizeof(iz));
  if (inflateInit2(&iz, -bits) != Z_OK) {
    return -1;
  }
  uint8_t *in = malloc(size + size / 8 + 1024);
  uint8_t *back = malloc(size + 1);
  int bad = in == NULL || back == NULL;
  size_t off = 0;
  for (long i = 0; i < count && !bad; i++) {
    memcpy(in, out + off, lens[i]);
    memcpy(in + lens[i], tail, 4);
    off += lens[i];
    iz.next_in = in;
    iz.avail_in = (uInt)(lens[i] + 4);
    iz.next_out = back;
    iz.avail_out = (uInt)(size + 1);
    int rv = inflate(&iz, Z_SYNC_FLUSH);
    bad = (rv != Z_OK && rv != Z_BUF_ERROR) || iz.avail_in != 0 ||
          size + 1 - iz.avail_out != size || memcmp(back, msgs[i], size) != 0;
    if (bad) {
      fprintf(stderr, "message %ld does not inflate back (zlib %d)\n", i, rv);
    }
    if (noctx) {
      inflateReset(&iz);
    }
  }
  inflateEnd(&iz);
  free(in);
  free(back);
  return bad ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: deflate_engines zlib|isal LEVEL SIZE COUNT "
                    "[PAYLOAD|- [BITS [NOCTX]]]\n");
    return 2;
  }
  use_isal = strcmp(argv[1], "isal") == 0;
  int level = atoi(argv[2]);
  size_t size = strtoul(argv[3], NULL, 0);
  long count = strtol(argv[4], NULL, 0);
  const char *payload = argc > 5 && strcmp(argv[5], "-") != 0 ? argv[5] : NULL;
  int bits = argc > 6 ? atoi(argv[6]) : 15;
  noctx = argc > 7 && atoi(argv[7]);
  if ((!use_isal && strcmp(argv[1], "zlib") != 0) || size == 0 || count <= 0 ||
      bits < 9 || bits > 15) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  uint8_t *corpus = NULL;
  size_t clen = 0;
  if (payload != NULL) {
    FILE *f = fopen(payload, "rb");
    corpus = malloc((size_t)1 << 26);
    clen =
        f != NULL && corpus != NULL ? fread(corpus, 1, (size_t)1 << 26, f) : 0;
    if (f != NULL) {
      fclose(f);
    }
    if (clen <= size) {
      fprintf(stderr, "%s: shorter than SIZE\n", payload);
      return 1;
    }
  }
  uint8_t **msgs = malloc(sizeof(*msgs) * (size_t)count);
  for (long i = 0; i < count; i++) {
    msgs[i] = malloc(size);
    if (corpus != NULL) {
      memcpy(msgs[i], corpus + (size_t)i * 102947 % (clen - size), size);
    } else {
      for (size_t j = 0; j < size; j++) {
        msgs[i][j] = (uint8_t)('a' + j % 26);
      }
    }
  }
  size_t cap = size + size / 8 + 1024;
  uint8_t *out = malloc(cap * (size_t)(count + 1));
  size_t *lens = malloc(sizeof(*lens) * (size_t)count);
  size_t state_bytes;
  if (use_isal) {
    /* the level buffer sizes igzip_lib.h suggests (ISAL_DEF_LVLx_DEFAULT) */
    static const uint32_t level_buf[] = {
        ISAL_DEF_LVL0_DEFAULT, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT,
        ISAL_DEF_LVL3_DEFAULT};
    if (level < ISAL_DEF_MIN_LEVEL || level > ISAL_DEF_MAX_LEVEL) {
      fprintf(stderr, "ISA-L levels are 0..3\n");
      return 2;
    }
    /* igzip picks its code for this CPU on the first call: do that here,
     * outside measure(), on a stream of its own */
    struct isal_zstream warm;
    uint8_t tmp[256];
    isal_deflate_init(&warm);
    warm.next_in = (uint8_t *)(uintptr_t) "warm up";
    warm.avail_in = 7;
    warm.next_out = tmp;
    warm.avail_out = sizeof(tmp);
    warm.flush = SYNC_FLUSH;
    isal_deflate(&warm);
    isal_deflate_init(&is);
    is.level = (uint32_t)level;
    is.hist_bits = (uint16_t)bits;
    is.level_buf_size = level_buf[level];
    is.level_buf = is.level_buf_size > 0 ? malloc(is.level_buf_size) : NULL;
    state_bytes = sizeof(is) + is.level_buf_size;
  } else {
    int mem_level = getenv("MEM_LEVEL") ? atoi(getenv("MEM_LEVEL")) : 8;
    if (deflateInit2(&zs, level, Z_DEFLATED, -bits, mem_level,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      fprintf(stderr, "deflateInit2 failed\n");
      return 1;
    }
    /* zlib's own figure (zconf.h): window, hash and pending buffers, plus
     * its internal state of about 5.8 KB */
    state_bytes = ((size_t)1 << (bits + 2)) + ((size_t)1 << (mem_level + 9)) +
                  sizeof(z_stream) + 5712;
  }
  const char *rounds_env = getenv("TIME");
  int rounds = rounds_env != NULL ? atoi(rounds_env) : 0;
  if (rounds > 0) {
    double *ns = malloc(sizeof(*ns) * (size_t)rounds);
    for (int r = 0; r < rounds; r++) {
      reset();
      double t0 = now_ns();
      measure(msgs, size, count, out, cap, lens);
      ns[r] = (now_ns() - t0) / (double)count;
    }
    qsort(ns, (size_t)rounds, sizeof(*ns), cmp_double);
    printf("cpu ns/msg: median %.0f, min %.0f, max %.0f (%d rounds)\n",
           ns[rounds / 2], ns[0], ns[rounds - 1], rounds);
    free(ns);
    reset();
  }
  size_t total = measure(msgs, size, count, out, cap, lens);
  if (verify(msgs, size, count, out, lens, bits) != 0) {
    return 1;
  }
  printf("%s level %d, %zu B x %ld, window %d%s: out/in %.4f, all inflate "
         "back, compressor state %zu bytes\n",
         argv[1], level, size, count, bits,
         noctx ? ", no context takeover" : "",
         (double)total / ((double)size * (double)count), state_bytes);
  if (use_isal) {
    free(is.level_buf);
  } else {
    deflateEnd(&zs);
  }
  for (long i = 0; i < count; i++) {
    free(msgs[i]);
  }
  free(msgs);
  free(corpus);
  free(out);
  free(lens);
  return 0;
}
