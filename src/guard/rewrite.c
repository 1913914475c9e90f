#include "guard/rewrite.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const action_names[] = {"allow", "flag", "mask", "redact", "hash", "pseudonymize", "block"};

const char *wd_action_name(wd_action_t a)
{
    return (unsigned)a < WD_ARRAY_LEN(action_names) ? action_names[a] : "?";
}

int wd_action_parse(const char *s, size_t len, wd_action_t *out)
{
    for (size_t i = 0; i < WD_ARRAY_LEN(action_names); i++)
        if (strlen(action_names[i]) == len && memcmp(action_names[i], s, len) == 0) {
            *out = (wd_action_t)i;
            return WD_OK;
        }
    return WD_EINVAL;
}

/* ---- vault ------------------------------------------------------------------------------------------ */

void wd_vault_init(wd_vault_t *v) { memset(v, 0, sizeof *v); }

void wd_vault_free(wd_vault_t *v)
{
    for (size_t i = 0; i < v->n; i++) {
        sodium_memzero(v->e[i].value, v->e[i].vlen);
        free(v->e[i].value);
        free(v->e[i].type);
    }
    free(v->e);
    memset(v, 0, sizeof *v);
}

const wd_vault_entry_t *wd_vault_put(wd_vault_t *v, const char *type, const char *value, size_t len)
{
    size_t same_type = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (strcmp(v->e[i].type, type) != 0) continue;
        same_type++;
        if (v->e[i].vlen == len && memcmp(v->e[i].value, value, len) == 0) return &v->e[i];
    }
    size_t max = v->max_entries ? v->max_entries : 4096, tlen = strlen(type);
    if (v->n == max || tlen > 32) return NULL;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        wd_vault_entry_t *e = realloc(v->e, cap * sizeof *e);
        if (!e) return NULL;
        v->e = e;
        v->cap = cap;
    }
    wd_vault_entry_t *e = &v->e[v->n];
    memset(e, 0, sizeof *e);
    e->type = strdup(type);
    e->value = malloc(len ? len : 1);
    if (!e->type || !e->value) {
        free(e->type);
        free(e->value);
        return NULL;
    }
    memcpy(e->value, value, len);
    e->vlen = len;
    /* "<TYPE_N>", without snprintf (called for every value pseudonymized) */
    char digits[20];
    size_t nd = 0;
    for (size_t k = same_type + 1; k; k /= 10)
        digits[nd++] = (char)('0' + k % 10);
    char *o = e->ph;
    *o++ = '<';
    memcpy(o, type, tlen);
    o += tlen;
    *o++ = '_';
    while (nd)
        *o++ = digits[--nd];
    *o++ = '>';
    *o = 0;
    e->phlen = (size_t)(o - e->ph);
    v->n++;
    return e;
}

size_t wd_vault_max_placeholder(const wd_vault_t *v)
{
    size_t m = 0;
    for (size_t i = 0; i < v->n; i++) m = WD_MAX(m, v->e[i].phlen);
    return m;
}

static bool ph_char(char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

int wd_vault_restore(const wd_vault_t *v, const char *text, size_t len, wd_buf_t *out)
{
    if (!len) return WD_OK;
    size_t i = 0, copied = 0;
    while (i < len) {
        const char *lt = v->n ? memchr(text + i, '<', len - i) : NULL;
        if (!lt) break;
        i = (size_t)(lt - text);
        const wd_vault_entry_t *hit = NULL;
        for (size_t k = 0; k < v->n && !hit; k++)
            if (v->e[k].phlen <= len - i && memcmp(text + i, v->e[k].ph, v->e[k].phlen) == 0) hit = &v->e[k];
        if (!hit) {
            i++;
            continue;
        }
        int rc = wd_buf_append(out, text + copied, i - copied);
        if (!rc) rc = wd_buf_append(out, hit->value, hit->vlen);
        if (rc) return rc;
        i += hit->phlen;
        copied = i;
    }
    return wd_buf_append(out, text + copied, len - copied);
}

void wd_restorer_init(wd_restorer_t *r, const wd_vault_t *v)
{
    r->vault = v;
    wd_buf_init(&r->held, 0);
}

void wd_restorer_free(wd_restorer_t *r)
{
    if (r->held.data) sodium_memzero(r->held.data, r->held.cap);
    wd_buf_free(&r->held);
}

int wd_restorer_feed(wd_restorer_t *r, const char *p, size_t len, wd_buf_t *out)
{
    if (!r->vault->n) return wd_buf_append(out, p, len);
    int rc = wd_buf_append(&r->held, p, len);
    if (rc) return rc;
    /* hold back from the last '<' that may still grow into a placeholder */
    const char *t = r->held.data;
    size_t n = r->held.len, keep_from = n, maxph = wd_vault_max_placeholder(r->vault);
    for (size_t i = n; i-- > 0 && n - i < maxph;) {
        if (t[i] == '<') {
            bool possible = true;
            for (size_t j = i + 1; j < n && possible; j++) possible = ph_char(t[j]);
            if (possible) keep_from = i;
            break;
        }
        if (!ph_char(t[i])) break;
    }
    rc = wd_vault_restore(r->vault, t, keep_from, out);
    if (rc) return rc;
    wd_buf_consume(&r->held, keep_from);
    return WD_OK;
}

int wd_restorer_flush(wd_restorer_t *r, wd_buf_t *out)
{
    int rc = wd_vault_restore(r->vault, r->held.data, r->held.len, out);
    wd_buf_reset(&r->held);
    return rc;
}

/* ---- rewriting ----------------------------------------------------------------------------------- */

void wd_guard_tally_init(wd_guard_tally_t *t)
{
    t->n = 0;
    t->blocked_rule = -1;
}

void wd_guard_tally_add(wd_guard_tally_t *t, uint16_t rule, wd_action_t a)
{
    if (!t) return;
    if (a == WD_ACT_BLOCK && t->blocked_rule < 0) t->blocked_rule = rule;
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].rule == rule && t->v[i].action == a) {
            t->v[i].count++;
            return;
        }
    if (t->n < WD_ARRAY_LEN(t->v)) {
        t->v[t->n].rule = rule;
        t->v[t->n].action = a;
        t->v[t->n].count = 1;
        t->n++;
    }
}

static bool cont(unsigned char c) { return (c & 0xC0) == 0x80; }

static size_t utf8_chars(const char *p, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += !cont((unsigned char)p[i]);
    return n;
}

static int replace(const wd_rule_t *r, wd_action_t a, const char *p, size_t len, const wd_rewrite_opts_t *o,
                   wd_buf_t *out)
{
    if (a == WD_ACT_PSEUDO && o->vault) {
        const wd_vault_entry_t *e = wd_vault_put(o->vault, r->type, p, len);
        if (e) return wd_buf_append(out, e->ph, e->phlen);
        a = WD_ACT_REDACT; /* vault full: never leak, degrade to redaction */
    }
    if (a == WD_ACT_HASH && o->hash_key) {
        /* 64 bits: tags are join keys in prepared data sets, and at 32 bits two of ~65k distinct values
         * already share one with even odds (birthday bound); at 64 bits that takes ~4 billion */
        uint8_t h[WD_REWRITE_HASH_BYTES];
        char hex[2 * sizeof h + 1];
        crypto_generichash(h, sizeof h, (const uint8_t *)p, len, o->hash_key, 32);
        sodium_bin2hex(hex, sizeof hex, h, sizeof h);
        return wd_buf_printf(out, "[%s:%s]", r->type, hex);
    }
    if (a == WD_ACT_MASK) {
        /* every character but the last four becomes '*' (characters, not bytes) */
        size_t chars = utf8_chars(p, len), keep = WD_MIN(chars, (size_t)4), stars = chars - keep, seen = 0, i = 0;
        int rc = WD_OK;
        for (size_t s = 0; s < stars && !rc; s++) rc = wd_buf_append(out, "*", 1);
        for (; i < len && seen < stars; i++) seen += !cont((unsigned char)p[i]) ? 1 : 0;
        while (i < len && cont((unsigned char)p[i])) i++;
        return rc ? rc : wd_buf_append(out, p + i, len - i);
    }
    return wd_buf_printf(out, "[%s]", r->type);
}

/* ---- allow-lists --------------------------------------------------------------------------------- */

struct wd_guard_allow {
    char **v; /* compared forms, kept sorted; a domain entry (*@example.com) as DOMAIN_MARK + "example.com" */
    size_t n, cap;
};

#define DOMAIN_MARK '\x01' /* configured values hold no control characters */

/* Where the domain of an address starts in p[0..len) (one '@', something on each side, nothing that an
 * address cannot hold: no space, ':', '/' or '\\'), or 0 when p is no address. */
static size_t address_domain(const char *p, size_t len)
{
    const char *at = memchr(p, '@', len);
    if (!at || at == p || at + 1 == p + len || memchr(at + 1, '@', (size_t)(p + len - at - 1))) return 0;
    for (size_t i = 0; i < len; i++)
        if (strchr(" :/\\", p[i]) || (unsigned char)p[i] < 0x20) return 0;
    return (size_t)(at + 1 - p);
}

/* The compared form of p (see rewrite.h) in out (at least len bytes); its length, 0 if empty. */
static size_t allow_form(const char *p, size_t len, char *out)
{
    bool number = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= '0' && c <= '9')
            number = true;
        else if (!strchr(" -./()+", c) || !c) {
            number = false;
            break;
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (number && !(c >= '0' && c <= '9')) continue;
        out[n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    return n;
}

/* The index where form (n bytes, NUL-terminated) is or would go. */
static size_t allow_find(const wd_guard_allow_t *a, const char *form, bool *found)
{
    size_t lo = 0, hi = a->n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(a->v[mid], form);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

wd_guard_allow_t *wd_guard_allow_new(void)
{
    return calloc(1, sizeof(wd_guard_allow_t));
}

int wd_guard_allow_add(wd_guard_allow_t *a, const char *p, size_t len)
{
    char form[WD_ALLOW_MAX_LEN + 1];
    if (len > WD_ALLOW_MAX_LEN) return WD_EINVAL;
    size_t n, k = 0;
    if (len > 2 && p[0] == '*' && p[1] == '@') { /* every address of a domain: as "x@domain" would be */
        char probe[WD_ALLOW_MAX_LEN + 1] = "x";
        memcpy(probe + 1, p + 1, len - 1);
        if (address_domain(probe, len) != 2) return WD_EINVAL;
        form[0] = DOMAIN_MARK;
        n = 1 + allow_form(p + 2, len - 2, form + 1);
        k = 1;
    } else {
        n = allow_form(p, len, form);
    }
    while (k < n && !wd_is_alnum((unsigned char)form[k]) && (unsigned char)form[k] < 0x80)
        k++;
    if (k == n || memchr(form, 0, n)) return WD_EINVAL; /* no letter or digit: it would allow punctuation */
    form[n] = 0;
    bool found;
    size_t at = allow_find(a, form, &found);
    if (found) return WD_EEXIST;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        char **v = realloc(a->v, cap * sizeof *v);
        if (!v) return WD_ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    char *copy = strdup(form);
    if (!copy) return WD_ENOMEM;
    memmove(a->v + at + 1, a->v + at, (a->n - at) * sizeof *a->v);
    a->v[at] = copy;
    a->n++;
    return WD_OK;
}

size_t wd_guard_allow_count(const wd_guard_allow_t *a)
{
    return a ? a->n : 0;
}

bool wd_guard_allow_has(const wd_guard_allow_t *a, const char *p, size_t len)
{
    char form[WD_ALLOW_MAX_LEN + 1];
    if (!a || !a->n || len > WD_ALLOW_MAX_LEN) return false;
    size_t n = allow_form(p, len, form);
    if (!n || memchr(form, 0, n)) return false;
    form[n] = 0;
    bool found;
    allow_find(a, form, &found);
    size_t d = found ? 0 : address_domain(p, len);
    if (d) { /* an address: is its domain listed (*@domain)? */
        form[0] = DOMAIN_MARK;
        n = 1 + allow_form(p + d, len - d, form + 1);
        form[n] = 0;
        allow_find(a, form, &found);
    }
    sodium_memzero(form, sizeof form);
    return found;
}

void wd_guard_allow_free(wd_guard_allow_t *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    free(a);
}

int wd_guard_rewrite(const wd_guard_db_t *db, const char *text, size_t len, const wd_findings_t *f,
                     const wd_rewrite_opts_t *o, wd_guard_tally_t *t, wd_buf_t *out)
{
    size_t copied = 0;
    for (size_t i = 0; i < f->n; i++) {
        size_t s = f->v[i].start, e = f->v[i].end;
        if (e > len || s >= e) continue; /* defensive: out of range */
        /* widen to character boundaries so a multi-byte character is never split; a finding whose
         * start the previous (widened) span already covered is still replaced from there on */
        if (s < copied) s = copied;
        while (s > copied && cont((unsigned char)text[s])) s--;
        while (e < len && cont((unsigned char)text[e])) e++;
        if (s >= e) continue;
        const wd_rule_t *r = wd_guard_db_rule(db, f->v[i].rule);
        wd_action_t a = o->action ? o->action(o->ud, r) : WD_ACT_REDACT;
        if (a != WD_ACT_ALLOW &&
            wd_guard_allow_has(o->allow, text + f->v[i].start, f->v[i].end - f->v[i].start))
            a = WD_ACT_ALLOW;
        wd_guard_tally_add(t, f->v[i].rule, a);
        if (a == WD_ACT_ALLOW || a == WD_ACT_FLAG || a == WD_ACT_BLOCK) continue;
        int rc = wd_buf_append(out, text + copied, s - copied);
        if (!rc) rc = replace(r, a, text + s, e - s, o, out);
        if (rc) return rc;
        copied = e;
    }
    return wd_buf_append(out, text + copied, len - copied);
}
