/* push_jwt_test.c - JWT verification with tokens made here with OpenSSL:
 * an HMAC secret, and an RSA 2048 and an EC P-256 key generated at start.
 * Valid tokens of each algorithm, then every way to be refused: expired,
 * not yet valid (nbf), forged signature or payload, wrong key, "none", an
 * algorithm with no key configured (including the HMAC-with-the-RSA-public-
 * key confusion), malformed base64url and JSON, and each claim rule. Plus
 * the HS256 and ES256 examples of RFC 7515 appendix A.1 and A.3. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "push/push.h"
#include "test.h"

#define NOW 1700000000

static const char secret[] = "a secret of at least thirty-two bytes, for HS256";
static EVP_PKEY *rsa_key, *rsa_key2, *ec_key, *ec_key2;
static char *rsa_pem, *rsa_pem2, *ec_pem, *ec_pem2, *rsa1024_pem, *p384_pem;

/* ------------------------------------------------------------------------ */
/* Making tokens                                                             */
/* ------------------------------------------------------------------------ */

static char *pem_of(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *data, *out;
  long n;
  if (bio == NULL || PEM_write_bio_PUBKEY(bio, key) != 1) {
    abort();
  }
  n = BIO_get_mem_data(bio, &data);
  out = malloc((size_t)n + 1);
  if (out == NULL) {
    abort();
  }
  memcpy(out, data, (size_t)n);
  out[n] = '\0';
  BIO_free(bio);
  return out;
}

/* RFC 4648 section 5, without padding (RFC 7515 section 2). */
static size_t b64url(char *out, const unsigned char *in, size_t n) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0;
  uint32_t acc = 0;
  unsigned bits = 0;
  for (size_t i = 0; i < n; i++) {
    acc = acc << 8 | in[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out[o++] = abc[acc >> bits & 63];
    }
  }
  if (bits > 0) {
    out[o++] = abc[acc << (6 - bits) & 63];
  }
  out[o] = '\0';
  return o;
}

enum alg { HS, RS, ES };

/* Signs msg: HMAC-SHA-256 with the secret, or SHA-256 with RSA PKCS#1 v1.5
 * or ECDSA, the latter converted from DER to the raw r || s of RFC 7518
 * section 3.4. Returns the signature length. */
static size_t sign(enum alg alg, EVP_PKEY *key, const char *hmac_key,
                   const char *msg, unsigned char *sig) {
  size_t len = 512;
  if (alg == HS) {
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hmac_key,
                  strlen(hmac_key), (const unsigned char *)msg, strlen(msg),
                  sig, 32, &len) == NULL) {
      abort();
    }
    return len;
  }
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char der[512];
  if (md == NULL ||
      EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
      EVP_DigestSign(md, alg == ES ? der : sig, &len,
                     (const unsigned char *)msg, strlen(msg)) != 1) {
    abort();
  }
  EVP_MD_CTX_free(md);
  if (alg == ES) {
    const unsigned char *p = der;
    const BIGNUM *r, *s;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (es == NULL) {
      abort();
    }
    ECDSA_SIG_get0(es, &r, &s);
    if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32) {
      abort();
    }
    ECDSA_SIG_free(es);
    len = 64;
  }
  return len;
}

/* header.payload.signature, in a static buffer (one token at a time). */
static char *token_with(enum alg alg, EVP_PKEY *key, const char *hmac_key,
                        const char *header, const char *payload) {
  static char tok[8192];
  unsigned char sig[512];
  size_t n = b64url(tok, (const unsigned char *)header, strlen(header));
  tok[n++] = '.';
  n += b64url(tok + n, (const unsigned char *)payload, strlen(payload));
  size_t siglen = sign(alg, key, hmac_key, tok, sig);
  tok[n++] = '.';
  b64url(tok + n, sig, siglen);
  return tok;
}

static const char *const headers[] = {"{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                                      "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
                                      "{\"alg\":\"ES256\"}"};

static char *token(enum alg alg, const char *payload) {
  EVP_PKEY *key = alg == RS ? rsa_key : alg == ES ? ec_key : NULL;
  return token_with(alg, key, secret, headers[alg], payload);
}

static push_jwt_keys all_keys(void) {
  push_jwt_keys k = {secret, rsa_pem, ec_pem};
  return k;
}

/* Verifies with an exact-size copy, so that ASan sees reads past the end. */
static int verify(const char *tok, const push_jwt_keys *keys, int require_exp,
                  push_jwt_claims *c) {
  size_t n = strlen(tok);
  char *copy = malloc(n ? n : 1);
  int rv;
  if (copy == NULL) {
    abort();
  }
  memcpy(copy, tok, n);
  rv = push_jwt_verify(copy, n, keys, NOW, require_exp, c);
  free(copy);
  return rv;
}

static int check(const char *tok, const push_jwt_keys *keys, int require_exp) {
  push_jwt_claims c;
  int rv = verify(tok, keys, require_exp, &c);
  push_jwt_claims_free(&c);
  return rv;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static void test_valid(void) {
  push_jwt_keys keys = all_keys();
  for (int a = HS; a <= ES; a++) {
    push_jwt_claims c;
    const char *tok =
        token((enum alg)a, "{\"sub\":\"ann\",\"exp\":1700000001,\"channel\":"
                           "\"chat:lobby\",\"info\":{\"name\": \"Ann\"},"
                           "\"channels\":[\"a\",\"b\\u00e9\"],\"iat\":1}");
    CHECK_EQ(verify(tok, &keys, 1, &c), PUSH_JWT_OK);
    CHECK(strcmp(c.sub, "ann") == 0);
    CHECK(c.exp == 1700000001);
    CHECK(strcmp(c.channel, "chat:lobby") == 0);
    CHECK(c.info != NULL && strcmp(c.info, "{\"name\": \"Ann\"}") == 0);
    CHECK_EQ(c.nchannels, 2);
    CHECK(c.channels != NULL && strcmp(c.channels[0], "a") == 0 &&
          strcmp(c.channels[1], "b\xc3\xa9") == 0);
    push_jwt_claims_free(&c);
    CHECK(c.info == NULL && c.channels == NULL && c.nchannels == 0);

    /* Only the key for the token's algorithm is needed. */
    push_jwt_keys one = {a == HS ? secret : NULL, a == RS ? rsa_pem : NULL,
                         a == ES ? ec_pem : NULL};
    CHECK_EQ(check(tok, &one, 1), PUSH_JWT_OK);
  }
  /* Minimal claims. */
  push_jwt_claims c;
  CHECK_EQ(verify(token(HS, "{\"sub\":\"\"}"), &keys, 0, &c), PUSH_JWT_OK);
  CHECK(c.sub[0] == '\0' && c.exp == 0 && c.channel[0] == '\0' &&
        c.info == NULL && c.channels == NULL);
  push_jwt_claims_free(&c);
  CHECK_EQ(verify(token(HS, "{\"sub\":\"x\",\"channels\":[],\"info\":null}"),
                  &keys, 0, &c),
           PUSH_JWT_OK);
  CHECK(c.channels == NULL && c.nchannels == 0);
  CHECK(c.info != NULL && strcmp(c.info, "null") == 0);
  push_jwt_claims_free(&c);
}

static void test_exp(void) {
  push_jwt_keys keys = all_keys();
  push_jwt_claims c;
  /* RFC 7519 section 4.1.4: not on or after exp. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":1700000000}"), &keys, 1),
           PUSH_JWT_EXPIRED);
  CHECK_EQ(check(token(RS, "{\"sub\":\"a\",\"exp\":1699999999}"), &keys, 1),
           PUSH_JWT_EXPIRED);
  CHECK_EQ(check(token(ES, "{\"sub\":\"a\",\"exp\":0}"), &keys, 0),
           PUSH_JWT_EXPIRED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":-5}"), &keys, 0),
           PUSH_JWT_EXPIRED);
  /* Expired tokens are refused even when exp is optional. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":1}"), &keys, 0),
           PUSH_JWT_EXPIRED);
  /* NumericDate may have a fraction or an exponent. */
  CHECK_EQ(
      verify(token(HS, "{\"sub\":\"a\",\"exp\":1700000000.5}"), &keys, 1, &c),
      PUSH_JWT_EXPIRED);
  CHECK_EQ(
      verify(token(HS, "{\"sub\":\"a\",\"exp\":1700000001.5}"), &keys, 1, &c),
      PUSH_JWT_OK);
  CHECK(c.exp == 1700000001);
  push_jwt_claims_free(&c);
  CHECK_EQ(verify(token(HS, "{\"sub\":\"a\",\"exp\":1.8e9}"), &keys, 1, &c),
           PUSH_JWT_OK);
  CHECK(c.exp == 1800000000);
  push_jwt_claims_free(&c);
  CHECK_EQ(verify(token(HS, "{\"sub\":\"a\",\"exp\":1e300}"), &keys, 1, &c),
           PUSH_JWT_OK);
  CHECK(c.exp == INT64_MAX);
  push_jwt_claims_free(&c);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":-1e300}"), &keys, 1),
           PUSH_JWT_EXPIRED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":-0.5}"), &keys, 1),
           PUSH_JWT_EXPIRED);
  /* No exp. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\"}"), &keys, 1), PUSH_JWT_NO_EXP);
  CHECK_EQ(check(token(ES, "{\"sub\":\"a\"}"), &keys, 1), PUSH_JWT_NO_EXP);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\"}"), &keys, 0), PUSH_JWT_OK);
  /* exp of the wrong type. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":\"1800000000\"}"), &keys, 1),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":null}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":1"
                           "0000000000000000000000000000000000000000000000000"
                           "000000000000000.0}"),
                 &keys, 1),
           PUSH_JWT_MALFORMED); /* longer than any sensible date */
}

/* RFC 7519 section 4.1.5: not before nbf, with no leeway (as for exp). */
static void test_nbf(void) {
  push_jwt_keys keys = all_keys();
  push_jwt_claims c;
  /* In the future: refused, whatever the algorithm and whether exp is
   * required; one second ahead is enough. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":1700000001}"), &keys, 0),
           PUSH_JWT_NOT_YET);
  CHECK_EQ(check(token(RS, "{\"sub\":\"a\",\"nbf\":1700003600,"
                           "\"exp\":1800000000}"),
                 &keys, 1),
           PUSH_JWT_NOT_YET);
  CHECK_EQ(check(token(ES, "{\"sub\":\"a\",\"exp\":1800000000,"
                           "\"nbf\":1.8e9}"),
                 &keys, 1),
           PUSH_JWT_NOT_YET);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":1e300}"), &keys, 0),
           PUSH_JWT_NOT_YET);
  /* A fraction counts against the token: now is whole seconds. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":1700000000.5}"), &keys, 0),
           PUSH_JWT_NOT_YET);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":1699999999.5}"), &keys, 0),
           PUSH_JWT_OK);
  /* Now or in the past: accepted, with the claims filled. */
  CHECK_EQ(verify(token(HS, "{\"sub\":\"ann\",\"nbf\":1700000000,"
                            "\"exp\":1700000060}"),
                  &keys, 1, &c),
           PUSH_JWT_OK);
  CHECK(strcmp(c.sub, "ann") == 0 && c.exp == 1700000060);
  push_jwt_claims_free(&c);
  CHECK_EQ(check(token(RS, "{\"sub\":\"a\",\"nbf\":1600000000}"), &keys, 0),
           PUSH_JWT_OK);
  CHECK_EQ(check(token(ES, "{\"sub\":\"a\",\"nbf\":0}"), &keys, 0),
           PUSH_JWT_OK);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":-1e300}"), &keys, 0),
           PUSH_JWT_OK);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":-0.5}"), &keys, 0),
           PUSH_JWT_OK);
  /* Not a NumericDate: malformed. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":\"1600000000\"}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":null}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":[1]}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  /* With exp as well: a token valid only after it expires is never valid,
   * and says so rather than "expired"; a missing exp that is required is
   * reported first; an expired token with a past nbf is expired. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":1700000100,"
                           "\"exp\":1600000000}"),
                 &keys, 1),
           PUSH_JWT_NOT_YET);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":1700000100}"), &keys, 1),
           PUSH_JWT_NO_EXP);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"nbf\":1600000000,"
                           "\"exp\":1700000000}"),
                 &keys, 1),
           PUSH_JWT_EXPIRED);
  /* A forged token is refused for its signature before its claims are
   * read, nbf or not. */
  CHECK_EQ(check(token_with(HS, NULL, "another secret", headers[HS],
                            "{\"sub\":\"a\",\"nbf\":1800000000}"),
                 &keys, 0),
           PUSH_JWT_BAD_SIG);
}

/* Changes the character at i of a token to another base64url character.
 * Used away from the last character of a part, so the encoding stays
 * canonical and only the decoded bytes change. */
static void flip(char *tok, size_t i) {
  tok[i] = tok[i] == 'A' ? 'B' : 'A';
}

static void test_forged(void) {
  push_jwt_keys keys = all_keys();
  static const char payload[] = "{\"sub\":\"ann\",\"exp\":1800000000}";
  for (int a = HS; a <= ES; a++) {
    char tok[8192];
    strcpy(tok, token((enum alg)a, payload));
    CHECK_EQ(check(tok, &keys, 1), PUSH_JWT_OK);
    char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
    /* A byte of the signature. */
    char t[8192];
    strcpy(t, tok);
    flip(t, (size_t)(dot2 - tok) + 3);
    CHECK_EQ(check(t, &keys, 1), PUSH_JWT_BAD_SIG);
    /* A byte of the payload. */
    strcpy(t, tok);
    flip(t, (size_t)(dot1 - tok) + 5);
    CHECK_EQ(check(t, &keys, 1), PUSH_JWT_BAD_SIG);
    /* A byte of the header. */
    strcpy(t, tok);
    flip(t, 10);
    int rv = check(t, &keys, 1);
    CHECK(rv == PUSH_JWT_BAD_SIG || rv == PUSH_JWT_MALFORMED);
    /* Another payload with this signature. */
    strcpy(t, token((enum alg)a, "{\"sub\":\"root\",\"exp\":1800000000}"));
    strcpy(strrchr(t, '.'), dot2);
    CHECK_EQ(check(t, &keys, 1), PUSH_JWT_BAD_SIG);
    /* The signature cut short (four characters, three bytes, from its
     * start, so that its end stays canonical), or missing. */
    strcpy(t, tok);
    memmove(t + (dot2 - tok) + 1, t + (dot2 - tok) + 5,
            strlen(t + (dot2 - tok) + 5) + 1);
    CHECK_EQ(check(t, &keys, 1), PUSH_JWT_BAD_SIG);
    strcpy(t, tok);
    strrchr(t, '.')[1] = '\0';
    CHECK_EQ(check(t, &keys, 1), PUSH_JWT_BAD_SIG);
  }
}

static void test_wrong_key(void) {
  static const char payload[] = "{\"sub\":\"ann\",\"exp\":1800000000}";
  push_jwt_keys keys = all_keys();
  CHECK_EQ(check(token_with(HS, NULL, "another secret, also long enough....",
                            headers[HS], payload),
                 &keys, 1),
           PUSH_JWT_BAD_SIG);
  CHECK_EQ(
      check(token_with(RS, rsa_key2, NULL, headers[RS], payload), &keys, 1),
      PUSH_JWT_BAD_SIG);
  CHECK_EQ(check(token_with(ES, ec_key2, NULL, headers[ES], payload), &keys, 1),
           PUSH_JWT_BAD_SIG);
  /* The right token, the wrong configuration. */
  push_jwt_keys other = {"not the secret", rsa_pem2, ec_pem2};
  for (int a = HS; a <= ES; a++) {
    CHECK_EQ(check(token((enum alg)a, payload), &other, 1), PUSH_JWT_BAD_SIG);
  }
  /* A key of the wrong type for the algorithm. */
  push_jwt_keys swapped = {NULL, ec_pem, rsa_pem};
  CHECK_EQ(check(token(RS, payload), &swapped, 1), PUSH_JWT_BAD_SIG);
  CHECK_EQ(check(token(ES, payload), &swapped, 1), PUSH_JWT_BAD_SIG);
  /* RFC 7518 section 3.3: RSA keys under 2048 bits are refused. */
  push_jwt_keys small = {NULL, rsa1024_pem, p384_pem};
  CHECK_EQ(check(token(RS, payload), &small, 1), PUSH_JWT_BAD_SIG);
  /* ES256 is P-256 only (section 3.4). */
  CHECK_EQ(check(token(ES, payload), &small, 1), PUSH_JWT_BAD_SIG);
  /* Garbage PEM text. */
  push_jwt_keys junk = {"", "-----BEGIN PUBLIC KEY-----\nAAAA\n", "x"};
  for (int a = HS; a <= ES; a++) {
    CHECK_EQ(check(token((enum alg)a, payload), &junk, 1), PUSH_JWT_BAD_SIG);
  }
  CHECK_EQ(check(token(HS, payload), NULL, 1), PUSH_JWT_BAD_SIG);
}

static void test_alg(void) {
  static const char payload[] = "{\"sub\":\"ann\",\"exp\":1800000000}";
  push_jwt_keys keys = all_keys();
  char t[8192];
  /* "none", with an empty signature and with some signature. */
  size_t n = b64url(t, (const unsigned char *)"{\"alg\":\"none\"}", 14);
  t[n++] = '.';
  n += b64url(t + n, (const unsigned char *)payload, strlen(payload));
  t[n++] = '.';
  t[n] = '\0';
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_BAD_SIG);
  strcpy(t + n, "AAAA");
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_BAD_SIG);
  CHECK_EQ(check(token_with(HS, NULL, secret, "{\"alg\":\"None\"}", payload),
                 &keys, 1),
           PUSH_JWT_BAD_SIG);
  /* Other algorithms, even well-formed ones. */
  static const char *const others[] = {
      "{\"alg\":\"HS512\"}",      "{\"alg\":\"hs256\"}",
      "{\"alg\":\"PS256\"}",      "{\"alg\":\"\"}",
      "{\"alg\":\"HS256HS256\"}", "{\"alg\":\"HS256\\u0000\"}",
  };
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
    CHECK_EQ(check(token_with(HS, NULL, secret, others[i], payload), &keys, 1),
             PUSH_JWT_BAD_SIG);
  }
  /* The name may be escaped: it is compared unescaped. */
  CHECK_EQ(check(token_with(HS, NULL, secret, "{\"alg\":\"HS\\u0032\\u00356\"}",
                            payload),
                 &keys, 1),
           PUSH_JWT_OK);
  /* An algorithm with no key configured. */
  push_jwt_keys rsa_only = {NULL, rsa_pem, NULL};
  CHECK_EQ(check(token(HS, payload), &rsa_only, 1), PUSH_JWT_BAD_SIG);
  CHECK_EQ(check(token(ES, payload), &rsa_only, 1), PUSH_JWT_BAD_SIG);
  push_jwt_keys hmac_only = {secret, NULL, NULL};
  CHECK_EQ(check(token(RS, payload), &hmac_only, 1), PUSH_JWT_BAD_SIG);
  CHECK_EQ(check(token(ES, payload), &hmac_only, 1), PUSH_JWT_BAD_SIG);
  /* The classic confusion (RFC 8725 section 2.1): HS256 signed with the RSA
   * public key's PEM text as the secret, sent to a server holding that key
   * for RS256 only. */
  CHECK_EQ(
      check(token_with(HS, NULL, rsa_pem, headers[HS], payload), &rsa_only, 1),
      PUSH_JWT_BAD_SIG);
  /* "crit" names extensions that must be understood: we know none. */
  CHECK_EQ(check(token_with(HS, NULL, secret,
                            "{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":"
                            "false}",
                            payload),
                 &keys, 1),
           PUSH_JWT_BAD_SIG);
  /* A header without alg, with a non-string alg, or not an object. */
  static const char *const bad[] = {
      "{}",          "{\"typ\":\"JWT\"}", "{\"alg\":256}", "{\"alg\":null}",
      "[\"HS256\"]", "\"HS256\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_EQ(check(token_with(HS, NULL, secret, bad[i], payload), &keys, 1),
             PUSH_JWT_MALFORMED);
  }
  /* An empty HMAC secret makes a MAC anyone can compute. */
  push_jwt_keys empty = {"", NULL, NULL};
  CHECK_EQ(check(token_with(HS, NULL, "", headers[HS], payload), &empty, 1),
           PUSH_JWT_BAD_SIG);
}

static void test_malformed(void) {
  static const char payload[] = "{\"sub\":\"ann\",\"exp\":1800000000}";
  push_jwt_keys keys = all_keys();
  char tok[8192], t[8300];
  strcpy(tok, token(HS, payload));
  size_t d1 = (size_t)(strchr(tok, '.') - tok);
  size_t d2 = (size_t)(strrchr(tok, '.') - tok);
  CHECK_EQ(check(tok, &keys, 1), PUSH_JWT_OK);

  CHECK_EQ(check("", &keys, 1), PUSH_JWT_MALFORMED);
  CHECK_EQ(check(".", &keys, 1), PUSH_JWT_MALFORMED);
  CHECK_EQ(check("..", &keys, 1), PUSH_JWT_MALFORMED);
  CHECK_EQ(check("abc", &keys, 1), PUSH_JWT_MALFORMED);
  /* Two parts; four parts. */
  snprintf(t, sizeof t, "%.*s", (int)d2, tok);
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  snprintf(t, sizeof t, "%s.", tok);
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  snprintf(t, sizeof t, "%s.AAAA", tok);
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  /* Padding, in each part (RFC 7515 section 2: base64url without it). */
  snprintf(t, sizeof t, "%.*s=%s", (int)d1, tok, tok + d1);
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  snprintf(t, sizeof t, "%.*s=%s", (int)d2, tok, tok + d2);
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  snprintf(t, sizeof t, "%s=", tok);
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  /* The 32-byte signature is 43 characters; padded it would be 44. */
  CHECK_EQ(strlen(tok) - d2 - 1, 43);
  /* Characters of plain base64, whitespace, anything else. */
  static const char subst[] = {'+', '/', ' ', '\n', '=', '*', '\0', '.'};
  for (size_t i = 0; i < sizeof subst; i++) {
    size_t n = strlen(tok);
    memcpy(t, tok, n);
    t[5] = subst[i];
    push_jwt_claims c;
    CHECK_EQ(push_jwt_verify(t, n, &keys, NOW, 1, &c), PUSH_JWT_MALFORMED);
    memcpy(t, tok, n);
    t[d2 + 5] = subst[i];
    CHECK_EQ(push_jwt_verify(t, n, &keys, NOW, 1, &c), PUSH_JWT_MALFORMED);
  }
  /* A part of length 4k+1 decodes to no whole number of bytes. */
  snprintf(t, sizeof t, "%sAA", tok);
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  /* Nonzero leftover bits: 43 characters carry 258 bits for 256. */
  strcpy(t, tok);
  t[strlen(t) - 1] = t[strlen(t) - 1] == 'A' ? 'B' : 'A';
  {
    int rv = check(t, &keys, 1);
    /* 'B' leaves a nonzero bit; 'A' is the canonical zero (the MAC then
     * differs): either way refused. */
    CHECK(rv == PUSH_JWT_MALFORMED || rv == PUSH_JWT_BAD_SIG);
  }
  strcpy(t, tok);
  t[strlen(t) - 1] = '_'; /* 63: low bits set */
  CHECK_EQ(check(t, &keys, 1), PUSH_JWT_MALFORMED);
  /* The header is no JSON. */
  CHECK_EQ(check(token_with(HS, NULL, secret, "{\"alg\":\"HS256\"", payload),
                 &keys, 1),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token_with(HS, NULL, secret, "", payload), &keys, 1),
           PUSH_JWT_MALFORMED);
  /* A signed payload that is no JSON object. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\","), &keys, 0), PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "[\"sub\"]"), &keys, 0), PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, ""), &keys, 0), PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(RS, "\"sub\""), &keys, 0), PUSH_JWT_MALFORMED);
}

static void test_claims(void) {
  push_jwt_keys keys = all_keys();
  char payload[600], name[300];
  /* sub: required, a string, at most 255 bytes, no NUL. */
  CHECK_EQ(check(token(HS, "{\"exp\":1800000000}"), &keys, 1),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"exp\":1800000000}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(ES, "{}"), &keys, 0), PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":42}"), &keys, 0), PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":null}"), &keys, 0), PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\\u0000b\"}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  memset(name, 'u', 255);
  name[255] = '\0';
  snprintf(payload, sizeof payload, "{\"sub\":\"%s\"}", name);
  push_jwt_claims c;
  CHECK_EQ(verify(token(HS, payload), &keys, 0, &c), PUSH_JWT_OK);
  CHECK_EQ(strlen(c.sub), 255);
  push_jwt_claims_free(&c);
  name[255] = 'u';
  name[256] = '\0';
  snprintf(payload, sizeof payload, "{\"sub\":\"%s\"}", name);
  CHECK_EQ(check(token(HS, payload), &keys, 0), PUSH_JWT_MALFORMED);
  /* Escapes are undone. */
  CHECK_EQ(verify(token(HS, "{\"sub\":\"\\u0061nn\"}"), &keys, 0, &c),
           PUSH_JWT_OK);
  CHECK(strcmp(c.sub, "ann") == 0);
  push_jwt_claims_free(&c);
  /* RFC 7519 section 4: claim names must be unique, and a parser must
   * reject repeats or take the last. They are rejected, however spelled,
   * in the payload and in the header, even with a valid signature. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"ann\",\"sub\":\"bob\"}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(
      check(token(HS, "{\"sub\":\"ann\",\"s\\u0075b\":\"bob\"}"), &keys, 0),
      PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"exp\":1800000000,"
                           "\"exp\":1600000000}"),
                 &keys, 1),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(
      check(token(RS, "{\"sub\":\"a\",\"info\":{\"x\":1,\"x\":2}}"), &keys, 0),
      PUSH_JWT_MALFORMED);
  CHECK_EQ(
      check(token_with(HS, NULL, secret, "{\"alg\":\"HS256\",\"alg\":\"none\"}",
                       "{\"sub\":\"a\"}"),
            &keys, 0),
      PUSH_JWT_MALFORMED);
  /* channel: a string that fits. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"channel\":1}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  snprintf(payload, sizeof payload, "{\"sub\":\"a\",\"channel\":\"%s\"}", name);
  CHECK_EQ(check(token(HS, payload), &keys, 0), PUSH_JWT_MALFORMED);
  /* channels: an array of strings. */
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"channels\":\"c\"}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"channels\":[\"c\",1]}"), &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(check(token(HS, "{\"sub\":\"a\",\"channels\":[\"c\",\"\\u0000\"]}"),
                 &keys, 0),
           PUSH_JWT_MALFORMED);
  CHECK_EQ(verify(token(HS, "{\"sub\":\"a\",\"channels\":[\"\",\"x\\/y\"]}"),
                  &keys, 0, &c),
           PUSH_JWT_OK);
  CHECK(c.nchannels == 2 && strcmp(c.channels[0], "") == 0 &&
        strcmp(c.channels[1], "x/y") == 0);
  push_jwt_claims_free(&c);
  /* info: any JSON, copied as written. */
  CHECK_EQ(verify(token(HS, "{\"sub\":\"a\",\"info\":[1, {\"k\": \"v\"}]}"),
                  &keys, 0, &c),
           PUSH_JWT_OK);
  CHECK(c.info != NULL && strcmp(c.info, "[1, {\"k\": \"v\"}]") == 0);
  push_jwt_claims_free(&c);
  /* Claims on a failure are left empty (and freeing them is harmless). */
  CHECK_EQ(verify(token(HS, "{\"sub\":\"a\",\"info\":{},\"channels\":[\"c\"],"
                            "\"exp\":5}"),
                  &keys, 0, &c),
           PUSH_JWT_EXPIRED);
  CHECK(c.info == NULL && c.channels == NULL && c.sub[0] == '\0');
  push_jwt_claims_free(&c);
}

/* RFC 7515 appendix A.1: the HS256 example. Its payload has no "sub", so a
 * correct signature check ends in PUSH_JWT_MALFORMED at the claims, while a
 * wrong one ends in PUSH_JWT_BAD_SIG. Its exp is 1300819380. */
static const char a1_token[] =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvb"
    "S9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

static void test_rfc7515_a1(void) {
  /* The JWK "k" of A.1, base64url-decoded. */
  static const char a1_key_b64[] =
      "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgU"
      "uTwjAzZr1Z9CAow";
  static const unsigned char a1_key[64] = {
      0x03, 0x23, 0x35, 0x4b, 0x2b, 0x0f, 0xa5, 0xbc, 0x83, 0x7e, 0x06,
      0x65, 0x77, 0x7b, 0xa6, 0x8f, 0x5a, 0xb3, 0x28, 0xe6, 0xf0, 0x54,
      0xc9, 0x28, 0xa9, 0x0f, 0x84, 0xb2, 0xd2, 0x50, 0x2e, 0xbf, 0xd3,
      0xfb, 0x5a, 0x92, 0xd2, 0x06, 0x47, 0xef, 0x96, 0x8a, 0xb4, 0xc3,
      0x77, 0x62, 0x3d, 0x22, 0x3d, 0x2e, 0x21, 0x72, 0x05, 0x2e, 0x4f,
      0x08, 0xc0, 0xcd, 0x9a, 0xf5, 0x67, 0xd0, 0x80, 0xa3};
  char key[65], enc[100];
  push_jwt_claims c;
  memcpy(key, a1_key, 64);
  key[64] = '\0'; /* the key has no NUL byte, so it passes as a C string */
  b64url(enc, a1_key, 64);
  CHECK(strcmp(enc, a1_key_b64) == 0);
  push_jwt_keys keys = {key, NULL, NULL};
  CHECK_EQ(
      push_jwt_verify(a1_token, sizeof a1_token - 1, &keys, 1300819379, 0, &c),
      PUSH_JWT_MALFORMED);
  push_jwt_claims_free(&c);
  char t[sizeof a1_token];
  memcpy(t, a1_token, sizeof t);
  flip(t, sizeof t - 10); /* a byte of the signature */
  CHECK_EQ(push_jwt_verify(t, sizeof t - 1, &keys, 1300819379, 0, &c),
           PUSH_JWT_BAD_SIG);
  key[0] ^= 1;
  CHECK_EQ(
      push_jwt_verify(a1_token, sizeof a1_token - 1, &keys, 1300819379, 0, &c),
      PUSH_JWT_BAD_SIG);
  /* With sub added and signed with the same key, exp decides. */
  key[0] ^= 1;
  const char *tok = token_with(HS, NULL, key,
                               "{\"typ\":\"JWT\",\r\n \"alg\":"
                               "\"HS256\"}",
                               "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n"
                               " \"sub\":\"joe\"}");
  CHECK_EQ(push_jwt_verify(tok, strlen(tok), &keys, 1300819379, 1, &c),
           PUSH_JWT_OK);
  CHECK(c.exp == 1300819380);
  push_jwt_claims_free(&c);
  CHECK_EQ(push_jwt_verify(tok, strlen(tok), &keys, 1300819380, 1, &c),
           PUSH_JWT_EXPIRED);
}

/* RFC 7515 appendix A.3: the ES256 example, with the public key of its JWK
 * (x, y) written as a SubjectPublicKeyInfo PEM. The signature is the raw
 * r || s of the RFC, so this checks the conversion to DER. */
static void test_rfc7515_a3(void) {
  static const char pem[] =
      "-----BEGIN PUBLIC KEY-----\n"
      "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV7\n"
      "6e8Tus9uPHvRVEXH8UTNG72bfocs3+257rn0s2ldbqkLJK2KRiMohYjlrQ==\n"
      "-----END PUBLIC KEY-----\n";
  static const char a3_token[] =
      "eyJhbGciOiJFUzI1NiJ9"
      ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxl"
      "LmNvbS9pc19yb290Ijp0cnVlfQ"
      ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQ"
      "xfKTUJqPP3-Kg6NU1Q";
  push_jwt_keys keys = {NULL, NULL, pem};
  push_jwt_claims c;
  CHECK_EQ(
      push_jwt_verify(a3_token, sizeof a3_token - 1, &keys, 1300819379, 0, &c),
      PUSH_JWT_MALFORMED); /* signature good; no "sub" */
  char t[sizeof a3_token];
  memcpy(t, a3_token, sizeof t);
  flip(t, sizeof t - 20);
  CHECK_EQ(push_jwt_verify(t, sizeof t - 1, &keys, 1300819379, 0, &c),
           PUSH_JWT_BAD_SIG);
  /* The A.1 token is HS256: no key for it here. */
  CHECK_EQ(
      push_jwt_verify(a1_token, sizeof a1_token - 1, &keys, 1300819379, 0, &c),
      PUSH_JWT_BAD_SIG);
}

static void test_big_token(void) {
  /* A large info claim: the decoding buffers follow the token's size. */
  size_t n = 6000;
  char *payload = malloc(n + 64);
  if (payload == NULL) {
    abort();
  }
  size_t k = (size_t)sprintf(payload, "{\"sub\":\"a\",\"info\":\"");
  memset(payload + k, 'i', n - k);
  strcpy(payload + n, "\"}");
  push_jwt_keys keys = all_keys();
  push_jwt_claims c;
  CHECK_EQ(verify(token(ES, payload), &keys, 0, &c), PUSH_JWT_OK);
  CHECK(c.info != NULL && strlen(c.info) == n - k + 2);
  push_jwt_claims_free(&c);
  free(payload);
}

int main(void) {
  rsa_key = EVP_RSA_gen(2048);
  rsa_key2 = EVP_RSA_gen(2048);
  EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
  ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  ec_key2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  if (rsa_key == NULL || rsa_key2 == NULL || rsa1024 == NULL ||
      ec_key == NULL || ec_key2 == NULL || p384 == NULL) {
    fprintf(stderr, "key generation failed\n");
    return 1;
  }
  rsa_pem = pem_of(rsa_key);
  rsa_pem2 = pem_of(rsa_key2);
  rsa1024_pem = pem_of(rsa1024);
  ec_pem = pem_of(ec_key);
  ec_pem2 = pem_of(ec_key2);
  p384_pem = pem_of(p384);

  RUN(test_valid);
  RUN(test_exp);
  RUN(test_nbf);
  RUN(test_forged);
  RUN(test_wrong_key);
  RUN(test_alg);
  RUN(test_malformed);
  RUN(test_claims);
  RUN(test_rfc7515_a1);
  RUN(test_rfc7515_a3);
  RUN(test_big_token);

  free(rsa_pem);
  free(rsa_pem2);
  free(rsa1024_pem);
  free(ec_pem);
  free(ec_pem2);
  free(p384_pem);
  EVP_PKEY_free(rsa_key);
  EVP_PKEY_free(rsa_key2);
  EVP_PKEY_free(rsa1024);
  EVP_PKEY_free(ec_key);
  EVP_PKEY_free(ec_key2);
  EVP_PKEY_free(p384);
  return TEST_REPORT();
}
