/* err.c - error names, messages and close codes, all generated from the one
 * HERALD_ERRORS table in herald/core.h so that they cannot drift apart. */
#include "herald/core.h"

HERALD_API const char *herald_strerror(int err) {
  switch (err) {
  case HERALD_OK:
    return "success";
#define HERALD_ERR_MSG_(name, value, code, msg)                                \
  case value:                                                                  \
    return msg;
    HERALD_ERRORS(HERALD_ERR_MSG_)
#undef HERALD_ERR_MSG_
  default:
    return "unknown error";
  }
}

HERALD_API const char *herald_err_name(int err) {
  switch (err) {
  case HERALD_OK:
    return "HERALD_OK";
#define HERALD_ERR_NAME_(name, value, code, msg)                               \
  case value:                                                                  \
    return "HERALD_ERR_" #name;
    HERALD_ERRORS(HERALD_ERR_NAME_)
#undef HERALD_ERR_NAME_
  default:
    return "UNKNOWN";
  }
}

HERALD_API int herald_err_is_fatal(int err) {
  return err <= -1500 && err > -1600;
}

HERALD_API uint16_t herald_err_close_code(int err) {
  switch (err) {
#define HERALD_ERR_CODE_(name, value, code, msg)                               \
  case value:                                                                  \
    return code;
    HERALD_ERRORS(HERALD_ERR_CODE_)
#undef HERALD_ERR_CODE_
  default:
    return 0;
  }
}
