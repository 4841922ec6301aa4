/* jwt.c - JSON Web Token verification (RFC 7519) for the JWS compact
 * serialization (RFC 7515 section 7.1) with HS256, RS256 and ES256 (RFC 7518
 * section 3), on OpenSSL 3's EVP interfaces.
 *
 * The order of the steps follows RFC 7515 section 5.2: split the token,
 * decode its three parts, read the header, choose the algorithm, check the
 * signature, and only then read the claims, so that nothing in an
 * unauthenticated payload is interpreted. The algorithm named by the header
 * is used only when the configuration holds a key of that family (RFC 8725
 * section 3.1): "none", and a header that names HS256 to have an RSA
 * public key used as an HMAC secret, are both refused. */
#include "push/push.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <stdlib.h>
#include <string.h>

#include "herald/core.h"

/* ------------------------------------------------------------------------ */
/* base64url                                                                 */
/* ------------------------------------------------------------------------ */

/* Decodes base64url without padding (RFC 7515 section 2, RFC 4648 section
 * 5) into out, which has room for n bytes. Padding, the '+' and '/' of
 * plain base64, whitespace and a length of 4k+1 are refused, and so are
 * nonzero bits left over after the last byte (RFC 4648 section 3.5): each
 * token then has exactly one spelling. Returns the decoded length or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out) {
  uint32_t acc = 0;
  unsigned bits = 0;
  size_t o = 0;
  if (n % 4 == 1) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    int v = herald_base64_value((unsigned char)in[i], '-', '_');
    if (v < 0) {
      return -1;
    }
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) {
    return -1;
  }
  return (long)o;
}

/* ------------------------------------------------------------------------ */
/* Signatures                                                                */
/* ------------------------------------------------------------------------ */

/* HS256 (RFC 7518 section 3.2): HMAC-SHA-256 of the signing input, compared
 * in constant time so that the time taken does not tell a forger how many
 * leading bytes of a guess were right. */
static int verify_hs256(const char *secret, const unsigned char *msg,
                        size_t msglen, const unsigned char *sig,
                        size_t siglen) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t maclen = 0;
  size_t keylen = strlen(secret);
  /* An empty secret is no secret: anyone can compute the MAC. */
  if (keylen == 0 || siglen != 32) {
    return 0;
  }
  if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, keylen, msg, msglen,
                mac, sizeof mac, &maclen) == NULL ||
      maclen != 32) {
    return 0;
  }
  return CRYPTO_memcmp(mac, sig, 32) == 0;
}

/* ES256 signatures are the 32-byte big-endian r and s side by side (RFC
 * 7518 section 3.4); OpenSSL verifies the DER ECDSA-Sig-Value of RFC 3279
 * section 2.2.3. Returns the DER length with *der to OPENSSL_free, or 0. */
static size_t es256_to_der(const unsigned char *sig, unsigned char **der) {
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, 32, NULL);
  BIGNUM *s = BN_bin2bn(sig + 32, 32, NULL);
  int len = 0;
  if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return 0;
  }
  *der = NULL;
  len = i2d_ECDSA_SIG(es, der);
  ECDSA_SIG_free(es); /* frees r and s too, now that it owns them */
  return len > 0 ? (size_t)len : 0;
}

/* RS256 (RFC 7518 section 3.3: RSASSA-PKCS1-v1_5 with SHA-256, keys of
 * 2048 bits or more) and ES256 (section 3.4: ECDSA on P-256 with SHA-256)
 * with a public key given as PEM text. The key's type is checked against
 * the algorithm, so a key configured for one cannot serve the other. */
static int verify_pkey(const char *pem, int ec, const unsigned char *msg,
                       size_t msglen, const unsigned char *sig, size_t siglen) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  EVP_PKEY *key = NULL;
  EVP_MD_CTX *md = NULL;
  EVP_PKEY_CTX *pctx = NULL;
  unsigned char *der = NULL;
  char group[32];
  size_t grouplen = 0;
  int ok = 0;

  if (bio == NULL) {
    goto out;
  }
  key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  if (key == NULL) {
    goto out;
  }
  if (ec) {
    if (!EVP_PKEY_is_a(key, "EC") ||
        EVP_PKEY_get_group_name(key, group, sizeof group, &grouplen) != 1 ||
        strcmp(group, "prime256v1") != 0 || siglen != 64) {
      goto out;
    }
    siglen = es256_to_der(sig, &der);
    if (siglen == 0) {
      goto out;
    }
    sig = der;
  } else if (!EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_get_bits(key) < 2048 ||
             siglen != (size_t)EVP_PKEY_get_size(key)) {
    goto out;
  }
  md = EVP_MD_CTX_new();
  if (md == NULL ||
      EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key) != 1) {
    goto out;
  }
  if (!ec && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
    goto out;
  }
  ok = EVP_DigestVerify(md, sig, siglen, msg, msglen) == 1;

out:
  OPENSSL_free(der);
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(key);
  BIO_free(bio);
  return ok;
}

/* Checks the signature with the key the header's algorithm calls for.
 * Returns PUSH_JWT_OK, PUSH_JWT_MALFORMED or PUSH_JWT_BAD_SIG. */
static int check_signature(push_json header, const push_jwt_keys *keys,
                           const unsigned char *msg, size_t msglen,
                           const unsigned char *sig, size_t siglen) {
  push_json v, crit;
  char alg[8];
  long len;
  int ok = 0;
  /* RFC 7515 section 4.1.1: "alg" must be present, and is a string. */
  if (push_json_type_of(header) != PUSH_JSON_OBJECT ||
      !push_json_get(header, "alg", &v) ||
      push_json_type_of(v) != PUSH_JSON_STRING) {
    return PUSH_JWT_MALFORMED;
  }
  /* Section 4.1.11: extensions listed in "crit" must be understood, and we
   * understand none. A name too long for alg[] is none of ours, and one
   * with a NUL inside ("HS256\u0000") is not "HS256". */
  if (push_json_get(header, "crit", &crit) || keys == NULL ||
      (len = push_json_str(v, alg, sizeof alg)) < 0 ||
      strlen(alg) != (size_t)len) {
    return PUSH_JWT_BAD_SIG;
  }
  if (strcmp(alg, "HS256") == 0 && keys->hmac_secret != NULL) {
    ok = verify_hs256(keys->hmac_secret, msg, msglen, sig, siglen);
  } else if (strcmp(alg, "RS256") == 0 && keys->rsa_pem != NULL) {
    ok = verify_pkey(keys->rsa_pem, 0, msg, msglen, sig, siglen);
  } else if (strcmp(alg, "ES256") == 0 && keys->ec_pem != NULL) {
    ok = verify_pkey(keys->ec_pem, 1, msg, msglen, sig, siglen);
  }
  /* A refused token (or a bad key) leaves reasons on this thread's error
   * queue; they are of no use to the caller and would mislead the next
   * TLS call on this thread, which reads that queue. */
  ERR_clear_error();
  return ok ? PUSH_JWT_OK : PUSH_JWT_BAD_SIG;
}

/* ------------------------------------------------------------------------ */
/* Claims                                                                    */
/* ------------------------------------------------------------------------ */

/* A string claim into a C string of cap bytes: one that does not fit, or
 * that holds a NUL (which would make two users look alike), is refused. */
static int claim_string(push_json v, char *out, size_t cap) {
  long len = push_json_str(v, out, cap);
  return len >= 0 && strlen(out) == (size_t)len ? 0 : -1;
}

/* A NumericDate (RFC 7519 section 2): seconds, possibly with a fraction or
 * an exponent, read to whole seconds and clamped to int64_t: rounded down,
 * or with up != 0 rounded up. */
static int numeric_date(push_json v, int up, int64_t *out) {
  uint64_t u;
  char tmp[64];
  double d;
  if (push_json_type_of(v) != PUSH_JSON_NUMBER) {
    return -1;
  }
  if (push_json_u64(v, &u) == 0) {
    *out = (int64_t)u;
    return 0;
  }
  if (v.n >= sizeof tmp) {
    return -1;
  }
  memcpy(tmp, v.p, v.n);
  tmp[v.n] = '\0';
  d = strtod(tmp, NULL);
  if (d >= 9.2e18) {
    *out = INT64_MAX;
  } else if (d <= -9.2e18) {
    *out = INT64_MIN;
  } else {
    int64_t t = (int64_t)d; /* toward zero, then floor or ceiling */
    *out = up ? ((double)t < d ? t + 1 : t) : ((double)t > d ? t - 1 : t);
  }
  return 0;
}

/* An array of strings into *out (malloc'd, *n of them). */
static int claim_list(push_json v, char ***out, size_t *n) {
  push_json e;
  size_t pos = 0, count = 0;
  if (push_json_type_of(v) != PUSH_JSON_ARRAY) {
    return -1;
  }
  while (push_json_next(v, &pos, NULL, &e)) {
    if (push_json_type_of(e) != PUSH_JSON_STRING) {
      return -1;
    }
    count++;
  }
  if (count == 0) {
    return 0;
  }
  *out = calloc(count, sizeof **out);
  if (*out == NULL) {
    return -1;
  }
  pos = 0;
  while (push_json_next(v, &pos, NULL, &e)) {
    /* Unescaping never lengthens a string: its raw length minus the
     * quotes, plus the NUL, is enough. */
    char *s = malloc(e.n - 1);
    (*out)[*n] = s;
    if (s == NULL) {
      return -1;
    }
    (*n)++;
    if (claim_string(e, s, e.n - 1) != 0) {
      return -1;
    }
  }
  return 0;
}

/* Reads the claims of a payload whose signature was checked. */
static int read_claims(push_json payload, int64_t now, int require_exp,
                       push_jwt_claims *c) {
  push_json v;
  if (push_json_type_of(payload) != PUSH_JSON_OBJECT) {
    return PUSH_JWT_MALFORMED;
  }
  /* "sub" names the user: a token without one identifies nobody. */
  if (!push_json_get(payload, "sub", &v) ||
      claim_string(v, c->sub, sizeof c->sub) != 0) {
    return PUSH_JWT_MALFORMED;
  }
  if (push_json_get(payload, "exp", &v) && numeric_date(v, 0, &c->exp) != 0) {
    return PUSH_JWT_MALFORMED;
  }
  /* nbf is rounded up and exp down: a fraction counts against the token,
   * since now is whole seconds and the real time may be up to a second
   * later. */
  int64_t nbf = 0;
  int has_nbf = push_json_get(payload, "nbf", &v);
  if (has_nbf && numeric_date(v, 1, &nbf) != 0) {
    return PUSH_JWT_MALFORMED;
  }
  if (push_json_get(payload, "channel", &v) &&
      claim_string(v, c->channel, sizeof c->channel) != 0) {
    return PUSH_JWT_MALFORMED;
  }
  if (push_json_get(payload, "info", &v)) {
    c->info = malloc(v.n + 1);
    if (c->info == NULL) {
      return PUSH_JWT_MALFORMED;
    }
    memcpy(c->info, v.p, v.n);
    c->info[v.n] = '\0';
  }
  if (push_json_get(payload, "channels", &v) &&
      claim_list(v, &c->channels, &c->nchannels) != 0) {
    return PUSH_JWT_MALFORMED;
  }
  if (push_json_get(payload, "subs", &v) &&
      claim_list(v, &c->subs, &c->nsubs) != 0) {
    return PUSH_JWT_MALFORMED;
  }
  int has_exp = push_json_get(payload, "exp", &v);
  if (!has_exp && require_exp) {
    return PUSH_JWT_NO_EXP;
  }
  /* RFC 7519 section 4.1.5: the token must not be accepted before its
   * not-before time. Checked before exp: a token whose nbf is after its
   * exp is never valid, and "expired" would invite a retry with it. There
   * is no leeway for clock skew, as for exp. */
  if (has_nbf && now < nbf) {
    return PUSH_JWT_NOT_YET;
  }
  /* RFC 7519 section 4.1.4: the token must not be accepted on or after
   * the expiration time. */
  return has_exp && c->exp <= now ? PUSH_JWT_EXPIRED : PUSH_JWT_OK;
}

/* ------------------------------------------------------------------------ */
/* Verification                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Out of memory has no code of its own in push.h and is reported as
 * PUSH_JWT_MALFORMED, which refuses the token: failing closed. *claims is
 * zeroed first, whatever the outcome, so that push_jwt_claims_free on it is
 * always safe; it holds claims only on PUSH_JWT_OK.
 */
int push_jwt_verify(const char *token, size_t n, const push_jwt_keys *keys,
                    int64_t now, int require_exp, push_jwt_claims *claims) {
  const char *dot1, *dot2;
  unsigned char *buf = NULL;
  long hlen, plen, slen;
  push_json header, payload;
  int rv = PUSH_JWT_MALFORMED;

  memset(claims, 0, sizeof *claims);
  /* RFC 7515 section 7.1: BASE64URL(header) '.' BASE64URL(payload) '.'
   * BASE64URL(signature), and nothing more. */
  dot1 = n > 0 ? memchr(token, '.', n) : NULL;
  if (dot1 == NULL) {
    return PUSH_JWT_MALFORMED;
  }
  dot2 = memchr(dot1 + 1, '.', n - (size_t)(dot1 + 1 - token));
  if (dot2 == NULL ||
      memchr(dot2 + 1, '.', n - (size_t)(dot2 + 1 - token)) != NULL) {
    return PUSH_JWT_MALFORMED;
  }
  /* Decoded parts are shorter than their encodings, so the three fit in n
   * bytes, side by side. */
  buf = malloc(n);
  if (buf == NULL) {
    return PUSH_JWT_MALFORMED;
  }
  hlen = b64url_decode(token, (size_t)(dot1 - token), buf);
  plen = hlen < 0
             ? -1
             : b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf + hlen);
  slen = plen < 0 ? -1
                  : b64url_decode(dot2 + 1, n - (size_t)(dot2 + 1 - token),
                                  buf + hlen + plen);
  if (slen < 0 ||
      push_json_parse((const char *)buf, (size_t)hlen, &header) != 0) {
    goto out;
  }
  /* The signing input is the text of the first two parts with the dot
   * between them (section 5.1 step 8). */
  rv = check_signature(header, keys, (const unsigned char *)token,
                       (size_t)(dot2 - token), buf + hlen + plen, (size_t)slen);
  if (rv != PUSH_JWT_OK) {
    goto out;
  }
  if (push_json_parse((const char *)buf + hlen, (size_t)plen, &payload) != 0) {
    rv = PUSH_JWT_MALFORMED;
    goto out;
  }
  rv = read_claims(payload, now, require_exp, claims);

out:
  free(buf);
  if (rv != PUSH_JWT_OK) {
    push_jwt_claims_free(claims);
  }
  return rv;
}

void push_jwt_claims_free(push_jwt_claims *claims) {
  free(claims->info);
  for (size_t i = 0; i < claims->nchannels; i++) {
    free(claims->channels[i]);
  }
  free(claims->channels);
  for (size_t i = 0; i < claims->nsubs; i++) {
    free(claims->subs[i]);
  }
  free(claims->subs);
  memset(claims, 0, sizeof *claims);
}
