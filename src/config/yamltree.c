/* yamltree: libyaml events -> wd_ynode_t tree (see yamltree.h). */
#include "config/yamltree.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <yaml.h>

void wd_ynode_free(wd_ynode_t *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n; i++)
        wd_ynode_free(n->items[i]);
    free(n->items);
    free(n->s);
    free(n);
}

const char *wd_ynode_kind_name(const wd_ynode_t *n)
{
    switch (n->kind) {
    case WD_YNODE_SEQ: return "a sequence";
    case WD_YNODE_MAP: return "a mapping";
    default: return "a scalar";
    }
}

/* YAML 1.1/1.2 core-schema spellings of null, only when unquoted. */
bool wd_ynode_is_null(const wd_ynode_t *n)
{
    if (n->kind != WD_YNODE_SCALAR || !n->plain) return false;
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    for (size_t i = 0; i < WD_ARRAY_LEN(nulls); i++)
        if (n->len == strlen(nulls[i]) && memcmp(n->s, nulls[i], n->len) == 0) return true;
    return false;
}

const wd_ynode_t *wd_ynode_get(const wd_ynode_t *map, const char *key)
{
    if (!map || map->kind != WD_YNODE_MAP) return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const wd_ynode_t *k = map->items[i];
        if (k->kind == WD_YNODE_SCALAR && k->len == klen && memcmp(k->s, key, klen) == 0) return map->items[i + 1];
    }
    return NULL;
}

typedef struct {
    const char *file;
    const wd_yaml_opts_t *o;
    char *err;
    size_t errlen;
} yctx_t;

__attribute__((format(printf, 5, 6))) static int fail_at(yctx_t *c, int code, unsigned line, unsigned col,
                                                         const char *fmt, ...)
{
    if (!c->err || !c->errlen) return code;
    int n = snprintf(c->err, c->errlen, "%s:%u:%u: ", c->file, line, col);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int node_append(wd_ynode_t *parent, wd_ynode_t *child)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        wd_ynode_t **items = realloc(parent->items, cap * sizeof *items);
        if (!items) return WD_ENOMEM;
        parent->items = items;
        parent->cap = cap;
    }
    parent->items[parent->n++] = child;
    return WD_OK;
}

static int yaml_fail(yctx_t *c, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR) return fail_at(c, WD_ENOMEM, 1, 1, "out of memory while parsing");
    const yaml_mark_t *m = &p->problem_mark;
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->context)
        return fail_at(c, WD_EINVAL, (unsigned)m->line + 1, (unsigned)m->column + 1, "YAML syntax error: %s %s",
                       problem, p->context);
    return fail_at(c, WD_EINVAL, (unsigned)m->line + 1, (unsigned)m->column + 1, "YAML syntax error: %s", problem);
}

/* Anchors, aliases and tags are refused outright rather than resolved. Aliases make a small file
 * expand into a huge tree ("billion laughs"), and both aliases and tags make what a key means depend
 * on something written elsewhere (a merge key, a custom type), which is exactly the ambiguity a
 * security gateway's configuration must not have. Plain files are easier to review and diff. */
static int check_node_event(yctx_t *c, const yaml_event_t *ev, unsigned line, unsigned col)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return fail_at(c, WD_EINVAL, line, col,
                       "YAML aliases (*name) are not allowed in warden %ss; write the value out", c->o->doc);
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        break;
    default: break;
    }
    if (anchor) return fail_at(c, WD_EINVAL, line, col, "YAML anchors (&name) are not allowed in warden %ss", c->o->doc);
    if (tag) return fail_at(c, WD_EINVAL, line, col, "YAML tags (!tag) are not allowed in warden %ss", c->o->doc);
    return WD_OK;
}

int wd_yaml_parse(const char *file, const char *buf, size_t len, const wd_yaml_opts_t *opts, wd_ynode_t **out,
                  char *err, size_t errlen)
{
    yctx_t c = {.file = file ? file : "<input>", .o = opts, .err = err, .errlen = errlen};
    yaml_parser_t parser;
    yaml_event_t ev;
    wd_ynode_t *root = NULL;
    wd_ynode_t *stack[WD_YAML_MAX_DEPTH];
    unsigned max_depth = opts->max_depth && opts->max_depth < WD_YAML_MAX_DEPTH ? opts->max_depth : WD_YAML_MAX_DEPTH;
    size_t depth = 0;
    int rc = WD_OK;
    bool done = false, have_doc = false;

    *out = NULL;
    if (!yaml_parser_initialize(&parser)) return fail_at(&c, WD_ENOMEM, 1, 1, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)(buf ? buf : ""), buf ? len : 0);
    /* libyaml would happily guess an encoding; these files are UTF-8 */
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);

    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = yaml_fail(&c, &parser);
            break;
        }
        unsigned line = (unsigned)ev.start_mark.line + 1, col = (unsigned)ev.start_mark.column + 1;
        if ((rc = check_node_event(&c, &ev, line, col))) {
            yaml_event_delete(&ev);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_START_EVENT: break;
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_DOCUMENT_START_EVENT:
            if (have_doc) {
                rc = fail_at(&c, WD_EINVAL, line, col, "only one YAML document is allowed in a %s file", opts->doc);
                break;
            }
            have_doc = true;
            if (ev.data.document_start.tag_directives.start != ev.data.document_start.tag_directives.end)
                rc = fail_at(&c, WD_EINVAL, line, col, "YAML %%TAG directives are not allowed in warden %ss",
                             opts->doc);
            break;
        case YAML_DOCUMENT_END_EVENT: break;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            wd_ynode_t *n = calloc(1, sizeof *n);
            if (!n) {
                rc = fail_at(&c, WD_ENOMEM, line, col, "out of memory");
                break;
            }
            n->line = line;
            n->col = col;
            if (ev.type == YAML_SCALAR_EVENT) {
                n->kind = WD_YNODE_SCALAR;
                n->len = ev.data.scalar.length;
                n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
                n->s = malloc(n->len + 1);
                if (!n->s) {
                    free(n);
                    rc = fail_at(&c, WD_ENOMEM, line, col, "out of memory");
                    break;
                }
                memcpy(n->s, ev.data.scalar.value, n->len);
                n->s[n->len] = '\0';
            } else {
                n->kind = ev.type == YAML_SEQUENCE_START_EVENT ? WD_YNODE_SEQ : WD_YNODE_MAP;
            }
            if (depth == 0) {
                /* only one root per document; a second document was refused above */
                root = n;
            } else if (node_append(stack[depth - 1], n)) {
                wd_ynode_free(n);
                rc = fail_at(&c, WD_ENOMEM, line, col, "out of memory");
                break;
            }
            if (n->kind != WD_YNODE_SCALAR) {
                if (depth == max_depth) {
                    rc = fail_at(&c, WD_EINVAL, line, col, "nesting deeper than %u levels", max_depth);
                    break;
                }
                stack[depth++] = n;
            }
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth) depth--;
            break;
        default: break;
        }
        yaml_event_delete(&ev);
        if (rc) break;
    }
    yaml_parser_delete(&parser);
    if (rc) {
        wd_ynode_free(root);
        return rc;
    }
    if (!root) return fail_at(&c, WD_EINVAL, 1, 1, "%s", opts->empty);
    *out = root;
    return WD_OK;
}
