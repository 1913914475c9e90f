/* yamltree: one YAML document -> a small tree of plain nodes, each with its 1-based line:column.
 *
 * Shared by the config loader and the guard's rule loader so both refuse the same things the same
 * way: anchors, aliases, tags, %TAG directives, several documents and deep nesting. Errors are
 * written as "FILE:LINE:COL: message" into the caller's buffer. */
#ifndef WD_YAMLTREE_H
#define WD_YAMLTREE_H

#include "core/core.h"

typedef enum { WD_YNODE_SCALAR, WD_YNODE_SEQ, WD_YNODE_MAP } wd_ynode_kind_t;

typedef struct wd_ynode {
    wd_ynode_kind_t kind;
    unsigned line, col; /* 1-based */
    /* scalar: NUL-terminated copy (may contain NULs written as escapes; len is authoritative) */
    char *s;
    size_t len;
    bool plain; /* plain (unquoted) style: only those can be numbers or null */
    /* sequence: items[i]; mapping: items[2i] key, items[2i+1] value */
    struct wd_ynode **items;
    size_t n, cap;
} wd_ynode_t;

/* Words used in messages, so each kind of file names itself. */
typedef struct {
    const char *doc;      /* "config" -> "warden configs", "a config file" */
    const char *empty;    /* message for a file without any node, e.g. "empty configuration file" */
    unsigned max_depth;   /* nesting bound (at most WD_YAML_MAX_DEPTH) */
} wd_yaml_opts_t;

#define WD_YAML_MAX_DEPTH 32

/* Parses buf (UTF-8, not NUL-terminated) into *out. Returns WD_OK, or WD_EINVAL / WD_ENOMEM with
 * "file:line:col: message" in err. */
int wd_yaml_parse(const char *file, const char *buf, size_t len, const wd_yaml_opts_t *opts, wd_ynode_t **out,
                  char *err, size_t errlen);
void wd_ynode_free(wd_ynode_t *n);
const char *wd_ynode_kind_name(const wd_ynode_t *n); /* "a scalar", "a sequence", "a mapping" */
bool wd_ynode_is_null(const wd_ynode_t *n);          /* unquoted "", ~, null, Null, NULL */
const wd_ynode_t *wd_ynode_get(const wd_ynode_t *map, const char *key); /* NULL if absent or not a map */

#endif
