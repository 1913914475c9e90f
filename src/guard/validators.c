/* guard validators: checksum, calendar, number-plan and gazetteer checks that turn pattern matches
 * into findings. Patterns are deliberately loose (they run at GB/s over all text); everything
 * precise lives here, where it only runs on the few spans that matched. */
#include "guard/validators.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small helpers ------------------------------------------------------------------------------- */

static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static inline bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
static inline bool is_alpha(char c) { return is_upper(c) || is_lower(c); }
static inline bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
static inline char to_lower(char c) { return is_upper(c) ? (char)(c + 32) : c; }
static inline char to_upper(char c)
{
    return is_lower(c) ? (char)(c - 32) : c;
}
/* Collects the digits of p, allowing only the given separator characters between them.
 * Returns the digit count, or -1 on any other character or when more than cap digits. */
static int collect_digits(const char *p, size_t len, const char *seps, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (is_digit(p[i])) {
            if (n >= cap) return -1;
            out[n++] = p[i];
        } else if (!strchr(seps, p[i]) || p[i] == '\0') {
            return -1;
        }
    }
    return (int)n;
}

static bool all_same(const char *d, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (d[i] != d[0]) return false;
    return true;
}

static bool has_prefix_ci(const char *p, size_t len, const char *z)
{
    size_t n = strlen(z);
    if (len < n) return false;
    for (size_t i = 0; i < n; i++)
        if (to_lower(p[i]) != to_lower(z[i])) return false;
    return true;
}

static bool contains_ci(const char *p, size_t len, const char *z)
{
    size_t n = strlen(z);
    for (size_t i = 0; i + n <= len; i++)
        if (has_prefix_ci(p + i, len - i, z)) return true;
    return false;
}

/* ---- email ------------------------------------------------------------------------------------------ */

static bool email_atext(char c)
{
    return is_alnum(c) || (c && strchr("!#$%&'*+/=?^_`{|}~-", c));
}

bool wd_email_ok(const char *p, size_t len)
{
    const char *at = NULL;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '@') {
            if (at) return false;
            at = p + i;
        }
    }
    if (!at) return false;
    size_t llen = (size_t)(at - p), dlen = len - llen - 1;
    if (llen < 1 || llen > 64 || dlen < 4 || dlen > 253) return false;
    /* local part: dot-atoms, no leading/trailing/double dots */
    if (p[0] == '.' || p[llen - 1] == '.') return false;
    for (size_t i = 0; i < llen; i++) {
        if (p[i] == '.') {
            if (p[i + 1] == '.') return false;
        } else if (!email_atext(p[i])) {
            return false;
        }
    }
    /* domain: LDH labels, at least two, TLD alphabetic >= 2 (or an IDN xn-- label) */
    const char *d = at + 1;
    size_t labels = 0, lstart = 0;
    for (size_t i = 0; i <= dlen; i++) {
        if (i == dlen || d[i] == '.') {
            size_t ll = i - lstart;
            if (ll < 1 || ll > 63) return false;
            if (d[lstart] == '-' || d[i - 1] == '-') return false;
            labels++;
            if (i == dlen) {
                const char *t = d + lstart;
                if (ll >= 5 && has_prefix_ci(t, ll, "xn--")) break;
                if (ll < 2) return false;
                for (size_t k = 0; k < ll; k++)
                    if (!is_alpha(t[k])) return false;
            }
            lstart = i + 1;
        } else if (!is_alnum(d[i]) && d[i] != '-') {
            return false;
        }
    }
    return labels >= 2;
}

/* ---- payment cards ------------------------------------------------------------------------------------ */

static bool luhn_digits(const char *d, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v = (unsigned)(d[n - 1 - i] - '0');
        if (i & 1) {
            v *= 2;
            if (v > 9) v -= 9;
        }
        sum += v;
    }
    return sum % 10 == 0;
}

bool wd_luhn_ok(const char *p, size_t len)
{
    char d[32];
    int n = collect_digits(p, len, " -", d, sizeof d);
    return n >= 2 && luhn_digits(d, (size_t)n);
}

static unsigned prefix_num(const char *d, int k)
{
    unsigned v = 0;
    for (int i = 0; i < k; i++) v = v * 10 + (unsigned)(d[i] - '0');
    return v;
}

static const char *card_issuer_digits(const char *d, int n)
{
    unsigned p1 = prefix_num(d, 1), p2 = prefix_num(d, 2), p3 = prefix_num(d, 3), p4 = prefix_num(d, 4),
             p6 = n >= 6 ? prefix_num(d, 6) : 0;
    if (p1 == 4 && (n == 13 || n == 16 || n == 19)) return "visa";
    if (((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) && n == 16) return "mastercard";
    if ((p2 == 34 || p2 == 37) && n == 15) return "amex";
    if ((p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65 || (p6 >= 622126 && p6 <= 622925)) && n >= 16 &&
        n <= 19)
        return "discover";
    if (p4 >= 3528 && p4 <= 3589 && n >= 16 && n <= 19) return "jcb";
    if (((p3 >= 300 && p3 <= 305) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39) && n >= 14 && n <= 19)
        return "diners";
    if (p2 == 62 && n >= 16 && n <= 19) return "unionpay";
    if ((p2 == 50 || (p2 >= 56 && p2 <= 58) || p4 == 6304 || p4 == 6759 || p6 == 676770 || p6 == 676774 ||
         p2 == 67) &&
        n >= 12 && n <= 19)
        return "maestro";
    return NULL;
}

const char *wd_card_issuer(const char *p, size_t len)
{
    char d[32];
    int n = collect_digits(p, len, " -", d, sizeof d);
    if (n < 12 || n > 19) return NULL;
    return card_issuer_digits(d, n);
}

bool wd_card_ok(const char *p, size_t len)
{
    char d[32];
    int n = collect_digits(p, len, " -", d, sizeof d);
    if (n < 12 || n > 19) return false;
    /* one separator style only: "4111 1111-1111 1111" is not how anyone writes a card */
    bool sp = memchr(p, ' ', len) != NULL, da = memchr(p, '-', len) != NULL;
    if (sp && da) return false;
    return card_issuer_digits(d, n) != NULL && luhn_digits(d, (size_t)n);
}

/* ---- IBAN -------------------------------------------------------------------------------------------- */

/* Every country in the SWIFT IBAN registry (release 2024) with its total IBAN length. */
static const struct {
    char cc[3];
    unsigned char len;
} iban_countries[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22}, {"BH", 22},
    {"BI", 27}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24}, {"DE", 22}, {"DJ", 27},
    {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18}, {"FK", 18}, {"FO", 18}, {"FR", 27},
    {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27}, {"GT", 28}, {"HN", 28}, {"HR", 21}, {"HU", 28},
    {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28},
    {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22},
    {"MK", 19}, {"MN", 20}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18}, {"NO", 15}, {"OM", 23},
    {"PK", 24}, {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33}, {"SA", 24},
    {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"SO", 23}, {"ST", 25}, {"SV", 28},
    {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

static int iban_country_len(char a, char b)
{
    for (size_t i = 0; i < WD_ARRAY_LEN(iban_countries); i++)
        if (iban_countries[i].cc[0] == a && iban_countries[i].cc[1] == b) return iban_countries[i].len;
    return -1;
}

bool wd_iban_ok(const char *p, size_t len)
{
    char s[40];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == ' ') {
            /* the print format groups by four: a space may follow only a complete group */
            if (n == 0 || n % 4 != 0 || (i + 1 < len && p[i + 1] == ' ')) return false;
            continue;
        }
        if (!is_alnum(p[i]) || n >= sizeof s) return false;
        s[n++] = to_upper(p[i]);
    }
    if (n < 15 || !is_upper(s[0]) || !is_upper(s[1]) || !is_digit(s[2]) || !is_digit(s[3])) return false;
    if (iban_country_len(s[0], s[1]) != (int)n) return false;
    unsigned check = (unsigned)((s[2] - '0') * 10 + (s[3] - '0'));
    if (check < 2 || check > 98) return false;
    unsigned rem = 0;
    for (size_t k = 0; k < n; k++) {
        char c = s[(k + 4) % n];
        if (is_digit(c)) {
            rem = (rem * 10 + (unsigned)(c - '0')) % 97;
        } else {
            unsigned v = (unsigned)(c - 'A' + 10);
            rem = (rem * 100 + v) % 97;
        }
    }
    return rem == 1;
}

/* ---- US SSN / ITIN ----------------------------------------------------------------------------------------- */

/* ddd-dd-dddd, ddd dd dddd or ddddddddd with one consistent separator. */
static bool ssn_shape(const char *p, size_t len, char d[9])
{
    if (len == 9) {
        for (size_t i = 0; i < 9; i++) {
            if (!is_digit(p[i])) return false;
            d[i] = p[i];
        }
        return true;
    }
    if (len != 11) return false;
    char sep = p[3];
    if ((sep != '-' && sep != ' ' && sep != '.') || p[6] != sep) return false;
    size_t k = 0;
    for (size_t i = 0; i < 11; i++) {
        if (i == 3 || i == 6) continue;
        if (!is_digit(p[i])) return false;
        d[k++] = p[i];
    }
    return true;
}

bool wd_us_ssn_ok(const char *p, size_t len)
{
    char d[9];
    if (!ssn_shape(p, len, d)) return false;
    unsigned area = prefix_num(d, 3), group = prefix_num(d + 3, 2), serial = prefix_num(d + 5, 4);
    if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0) return false;
    if (all_same(d, 9)) return false;
    /* numbers published in advertising or used as examples (SSA list), and the sequential one */
    static const char *const fake[] = {"078051120", "219099999", "123456789", "987654320", "987654321",
                                       "987654322", "987654323", "987654324", "987654325", "987654326",
                                       "987654327", "987654328", "987654329"};
    for (size_t i = 0; i < WD_ARRAY_LEN(fake); i++)
        if (memcmp(d, fake[i], 9) == 0) return false;
    return true;
}

bool wd_us_itin_ok(const char *p, size_t len)
{
    char d[9];
    if (!ssn_shape(p, len, d)) return false;
    if (d[0] != '9') return false;
    unsigned g = prefix_num(d + 3, 2);
    return (g >= 50 && g <= 65) || (g >= 70 && g <= 88) || (g >= 90 && g <= 92) || (g >= 94 && g <= 99);
}

/* ---- UK ------------------------------------------------------------------------------------------------- */

bool wd_uk_nino_ok(const char *p, size_t len)
{
    char s[9];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == ' ' || p[i] == '-') continue;
        if (n >= sizeof s) return false;
        s[n++] = to_upper(p[i]);
    }
    if (n != 9) return false;
    char a = s[0], b = s[1];
    if (!is_upper(a) || !is_upper(b)) return false;
    if (strchr("DFIQUV", a) || strchr("DFIOQUV", b)) return false;
    static const char *const bad[] = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"};
    for (size_t i = 0; i < WD_ARRAY_LEN(bad); i++)
        if (a == bad[i][0] && b == bad[i][1]) return false;
    for (int i = 2; i < 8; i++)
        if (!is_digit(s[i])) return false;
    return s[8] >= 'A' && s[8] <= 'D';
}

bool wd_nhs_number_ok(const char *p, size_t len)
{
    char d[10];
    if (collect_digits(p, len, " -", d, sizeof d) != 10) return false;
    if (all_same(d, 10)) return false;
    unsigned sum = 0;
    for (int i = 0; i < 9; i++) sum += (unsigned)(d[i] - '0') * (unsigned)(10 - i);
    unsigned check = 11 - sum % 11;
    if (check == 11) check = 0;
    if (check == 10) return false;
    return check == (unsigned)(d[9] - '0');
}

/* ---- ABA routing ------------------------------------------------------------------------------------------ */

bool wd_aba_routing_ok(const char *p, size_t len)
{
    char d[9];
    if (collect_digits(p, len, "", d, sizeof d) != 9) return false;
    if (all_same(d, 9)) return false;
    /* Federal Reserve prefixes: 00-12 banks, 21-32 thrifts, 61-72 electronic, 80 traveller's cheques */
    unsigned pre = prefix_num(d, 2);
    if (!(pre <= 12 || (pre >= 21 && pre <= 32) || (pre >= 61 && pre <= 72) || pre == 80)) return false;
    unsigned v[9];
    for (int i = 0; i < 9; i++) v[i] = (unsigned)(d[i] - '0');
    unsigned sum = 3 * (v[0] + v[3] + v[6]) + 7 * (v[1] + v[4] + v[7]) + (v[2] + v[5] + v[8]);
    return sum % 10 == 0;
}

bool wd_npi_ok(const char *p, size_t len)
{
    /* Luhn over the card-issuer prefix 80840 followed by the ten NPI digits */
    char d[16] = "80840";
    if (collect_digits(p, len, "", d + 5, 11) != 10) return false;
    if (d[5] != '1' && d[5] != '2') return false;
    return luhn_digits(d, 15);
}

bool wd_dea_number_ok(const char *p, size_t len)
{
    if (len != 9 || !is_upper(p[0]) || !(is_upper(p[1]) || p[1] == '9')) return false;
    unsigned v[7];
    for (int i = 0; i < 7; i++) {
        if (!is_digit(p[2 + i])) return false;
        v[i] = (unsigned)(p[2 + i] - '0');
    }
    unsigned sum = v[0] + v[2] + v[4] + 2 * (v[1] + v[3] + v[5]);
    return sum % 10 == v[6];
}

/* ---- network addresses ------------------------------------------------------------------------------------ */

bool wd_ipv4_ok(const char *p, size_t len)
{
    int octets = 0;
    size_t i = 0;
    while (octets < 4) {
        size_t st = i;
        unsigned v = 0;
        while (i < len && is_digit(p[i]) && i - st < 3) v = v * 10 + (unsigned)(p[i++] - '0');
        size_t nd = i - st;
        if (nd == 0 || v > 255) return false;
        if (nd > 1 && p[st] == '0') return false; /* 010 is octal to inet_aton, decimal to a human */
        octets++;
        if (octets < 4) {
            if (i >= len || p[i] != '.') return false;
            i++;
        }
    }
    return i == len;
}

bool wd_ipv6_ok(const char *p, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (len < 2 || len >= sizeof buf) return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    size_t colons = 0;
    for (size_t i = 0; i < len; i++) colons += p[i] == ':';
    /* "12:30:45" and "a::b" style text are too short to be an address anyone redacts */
    if (colons < 2 || len < 3) return false;
    /* "::1", "::cafe", "std::abs": a single group is more often code than an address worth hiding */
    size_t groups = 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] != ':' && (i == 0 || p[i - 1] == ':')) groups++;
    if (groups < 2) return false;
    struct in6_addr a;
    if (inet_pton(AF_INET6, buf, &a) != 1) return false;
    static const unsigned char zero[16];
    return memcmp(&a, zero, 16) != 0; /* "::" alone */
}

bool wd_mac_ok(const char *p, size_t len)
{
    unsigned char b[6];
    if (len == 17) {
        char sep = p[2];
        if (sep != ':' && sep != '-') return false;
        for (int i = 0; i < 6; i++) {
            int h = wd_hex_digit(p[i * 3]), l = wd_hex_digit(p[i * 3 + 1]);
            if (h < 0 || l < 0) return false;
            if (i < 5 && p[i * 3 + 2] != sep) return false;
            b[i] = (unsigned char)(h * 16 + l);
        }
    } else if (len == 14) { /* Cisco dotted: 0011.2233.4455 */
        for (int i = 0; i < 3; i++) {
            const char *g = p + i * 5;
            if (i < 2 && g[4] != '.') return false;
            for (int k = 0; k < 4; k += 2) {
                int h = wd_hex_digit(g[k]), l = wd_hex_digit(g[k + 1]);
                if (h < 0 || l < 0) return false;
                b[i * 2 + k / 2] = (unsigned char)(h * 16 + l);
            }
        }
    } else {
        return false;
    }
    bool mixed_case = false;
    bool up = false, lo = false;
    for (size_t i = 0; i < len; i++) {
        up |= p[i] >= 'A' && p[i] <= 'F';
        lo |= p[i] >= 'a' && p[i] <= 'f';
    }
    mixed_case = up && lo;
    if (mixed_case) return false;
    unsigned or_ = 0, and_ = 0xff;
    for (int i = 0; i < 6; i++) {
        or_ |= b[i];
        and_ &= b[i];
    }
    return or_ != 0 && and_ != 0xff;
}

/* ---- dates of birth ---------------------------------------------------------------------------------------- */

static int current_year(void)
{
    time_t t = time(NULL);
    struct tm tm;
    if (!gmtime_r(&t, &tm)) return 2100;
    return tm.tm_year + 1900;
}

static bool real_date(int y, int m, int d)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1900 || y > current_year() || m < 1 || m > 12 || d < 1) return false;
    if (d > mdays[m - 1]) return false;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return false;
    return true;
}

static int month_name(const char *p, size_t len)
{
    static const char *const names[12] = {"january", "february", "march",     "april",   "may",      "june",
                                          "july",    "august",   "september", "october", "november", "december"};
    if (len < 3) return 0;
    for (int m = 0; m < 12; m++) {
        size_t nl = strlen(names[m]);
        if (len == nl && has_prefix_ci(p, len, names[m])) return m + 1;
        /* three-letter abbreviation, optionally with a dot; "Sept" too */
        if ((len == 3 || (len == 4 && p[3] == '.')) && to_lower(p[0]) == names[m][0] &&
            to_lower(p[1]) == names[m][1] && to_lower(p[2]) == names[m][2])
            return m + 1;
        if (m == 8 && (len == 4 || (len == 5 && p[4] == '.')) && has_prefix_ci(p, 4, "sept")) return 9;
    }
    return 0;
}

/* Splits a date into tokens: numbers and words; separators are / - . , space. */
typedef struct {
    const char *p;
    size_t len;
    bool num;
} dtok_t;

bool wd_date_of_birth_ok(const char *p, size_t len)
{
    dtok_t t[4];
    int nt = 0;
    char seps[4] = {0};
    int nseps = 0;
    size_t i = 0;
    while (i < len) {
        if (strchr("/-., ", p[i]) && p[i]) {
            if (nt > 0 && nseps < nt && nseps < 4) seps[nseps++] = p[i];
            i++;
            continue;
        }
        size_t st = i;
        bool num = is_digit(p[i]);
        while (i < len && (num ? is_digit(p[i]) : is_alpha(p[i]))) i++;
        if (i == st) return false;
        if (!num && i - st == 2 && has_prefix_ci(p + st, 2, "of")) continue; /* 12th of March 1985 */
        if (nt == 4) return false;
        t[nt++] = (dtok_t){p + st, i - st, num};
    }
    int y = -1, m = -1, d = -1;
    if (nt == 3 && t[0].num && t[1].num && t[2].num) {
        int a = (int)prefix_num(t[0].p, (int)WD_MIN(t[0].len, 4)), b = (int)prefix_num(t[1].p, (int)WD_MIN(t[1].len, 4)),
            c = (int)prefix_num(t[2].p, (int)WD_MIN(t[2].len, 4));
        if (t[0].len > 4 || t[1].len > 2 || t[2].len > 4) return false;
        /* separators must agree: 12/03-1985 is not a date format */
        if (seps[0] != seps[1]) return false;
        if (t[0].len == 4) { /* ISO order */
            return t[2].len <= 2 && real_date(a, b, c);
        }
        if (t[2].len != 4 || t[0].len > 2) return false;
        /* US month/day or day/month: accept when either reading is a real date */
        return real_date(c, a, b) || real_date(c, b, a);
    }
    /* 12 March 1985 | March 12, 1985 | March 12th 1985 */
    for (int k = 0; k < nt; k++) {
        if (!t[k].num) {
            size_t wl = t[k].len;
            int mn = month_name(t[k].p, wl);
            if (mn) {
                if (m != -1) return false;
                m = mn;
            } else if (k > 0 && t[k - 1].num && t[k - 1].len <= 2 && t[k - 1].p + t[k - 1].len == t[k].p && wl == 2 &&
                       (has_prefix_ci(t[k].p, 2, "st") || has_prefix_ci(t[k].p, 2, "nd") ||
                        has_prefix_ci(t[k].p, 2, "rd") || has_prefix_ci(t[k].p, 2, "th"))) {
                continue; /* ordinal suffix */
            } else {
                return false;
            }
        } else if (t[k].len == 4) {
            if (y != -1) return false;
            y = (int)prefix_num(t[k].p, 4);
        } else if (t[k].len <= 2) {
            if (d != -1) return false;
            d = (int)prefix_num(t[k].p, (int)t[k].len);
        } else {
            return false;
        }
    }
    return real_date(y, m, d);
}

/* ---- crypto wallets ------------------------------------------------------------------------------------------ */

static bool sha256d(const unsigned char *in, size_t len, unsigned char out[32])
{
    unsigned char h1[32];
    unsigned int ol = 0;
    if (!EVP_Digest(in, len, h1, &ol, EVP_sha256(), NULL) || ol != 32) return false;
    if (!EVP_Digest(h1, 32, out, &ol, EVP_sha256(), NULL) || ol != 32) return false;
    return true;
}

bool wd_btc_base58check_ok(const char *p, size_t len)
{
    static const char alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    if (len < 26 || len > 35) return false;
    unsigned char b[25] = {0};
    size_t ones = 0;
    bool lead = true;
    for (size_t i = 0; i < len; i++) {
        const char *q = p[i] ? strchr(alphabet, p[i]) : NULL;
        if (!q) return false;
        unsigned carry = (unsigned)(q - alphabet);
        if (lead && carry == 0) ones++;
        else lead = false;
        for (int k = 24; k >= 0; k--) {
            carry += 58u * b[k];
            b[k] = (unsigned char)(carry & 0xff);
            carry >>= 8;
        }
        if (carry) return false; /* more than 25 bytes */
    }
    size_t zeros = 0;
    while (zeros < 25 && b[zeros] == 0) zeros++;
    if (zeros != ones) return false; /* not the canonical encoding of a 25-byte payload */
    /* P2PKH / P2SH on mainnet and testnet */
    if (b[0] != 0x00 && b[0] != 0x05 && b[0] != 0x6f && b[0] != 0xc4) return false;
    unsigned char h[32];
    if (!sha256d(b, 21, h)) return false;
    return memcmp(h, b + 21, 4) == 0;
}

static uint32_t bech32_polymod(const unsigned char *v, size_t n)
{
    static const uint32_t gen[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
    uint32_t chk = 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t top = chk >> 25;
        chk = ((chk & 0x1ffffff) << 5) ^ v[i];
        for (int k = 0; k < 5; k++)
            if ((top >> k) & 1) chk ^= gen[k];
    }
    return chk;
}

bool wd_bech32_ok(const char *p, size_t len)
{
    static const char charset[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    if (len < 14 || len > 90) return false;
    bool up = false, lo = false;
    for (size_t i = 0; i < len; i++) {
        up |= is_upper(p[i]);
        lo |= is_lower(p[i]);
    }
    if (up && lo) return false;
    /* segwit addresses: hrp bc (mainnet) or tb (testnet), separator '1' */
    if (!(has_prefix_ci(p, len, "bc1") || has_prefix_ci(p, len, "tb1"))) return false;
    size_t hrp = 2, nd = len - 3;
    if (nd < 7) return false;
    unsigned char v[5 + 90];
    size_t n = 0;
    for (size_t i = 0; i < hrp; i++) v[n++] = (unsigned char)(to_lower(p[i]) >> 5);
    v[n++] = 0;
    for (size_t i = 0; i < hrp; i++) v[n++] = (unsigned char)(to_lower(p[i]) & 31);
    size_t data0 = n;
    for (size_t i = 3; i < len; i++) {
        char c = to_lower(p[i]);
        const char *q = c ? strchr(charset, c) : NULL;
        if (!q) return false;
        v[n++] = (unsigned char)(q - charset);
    }
    uint32_t pm = bech32_polymod(v, n);
    unsigned witver = v[data0];
    if (witver > 16) return false;
    /* BIP-350: version 0 uses bech32 (constant 1), versions 1..16 bech32m */
    if (witver == 0 ? pm != 1 : pm != 0x2bc830a3) return false;
    /* witness program: 5-bit groups (without version and 6 checksum groups) to bytes, no padding */
    size_t ngroups = nd - 1 - 6;
    unsigned acc = 0, bits = 0;
    size_t plen = 0;
    for (size_t i = 0; i < ngroups; i++) {
        acc = (acc << 5) | v[data0 + 1 + i];
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            plen++;
        }
    }
    if (bits >= 5 || (acc & ((1u << bits) - 1)) != 0) return false;
    if (plen < 2 || plen > 40) return false;
    if (witver == 0 && plen != 20 && plen != 32) return false;
    return true;
}

/* Keccak-f[1600] with the original (pre-SHA3) 0x01 padding: Ethereum's hash. */
static void keccak_f(uint64_t st[25])
{
    static const uint64_t rc[24] = {
        0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
        0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
        0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
        0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
        0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
        0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL};
    static const int rotc[24] = {1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 2, 14, 27, 41, 56, 8, 25, 43, 62, 18, 39, 61, 20, 44};
    static const int piln[24] = {10, 7, 11, 17, 18, 3, 5, 16, 8, 21, 24, 4, 15, 23, 19, 13, 12, 2, 20, 14, 22, 9, 6, 1};
    uint64_t bc[5];
    for (int r = 0; r < 24; r++) {
        for (int i = 0; i < 5; i++) bc[i] = st[i] ^ st[i + 5] ^ st[i + 10] ^ st[i + 15] ^ st[i + 20];
        for (int i = 0; i < 5; i++) {
            uint64_t t = bc[(i + 4) % 5] ^ ((bc[(i + 1) % 5] << 1) | (bc[(i + 1) % 5] >> 63));
            for (int j = 0; j < 25; j += 5) st[j + i] ^= t;
        }
        uint64_t t = st[1];
        for (int i = 0; i < 24; i++) {
            int j = piln[i];
            uint64_t tmp = st[j];
            st[j] = (t << rotc[i]) | (t >> (64 - rotc[i]));
            t = tmp;
        }
        for (int j = 0; j < 25; j += 5) {
            for (int i = 0; i < 5; i++) bc[i] = st[j + i];
            for (int i = 0; i < 5; i++) st[j + i] ^= (~bc[(i + 1) % 5]) & bc[(i + 2) % 5];
        }
        st[0] ^= rc[r];
    }
}

void wd_keccak256(const void *data, size_t len, unsigned char out[32])
{
    enum { RATE = 136 };
    uint64_t st[25] = {0};
    const unsigned char *in = data;
    unsigned char block[RATE];
    for (;;) {
        size_t take = len < RATE ? len : RATE;
        memset(block, 0, RATE);
        memcpy(block, in, take);
        bool last = take < RATE;
        if (last) {
            block[take] ^= 0x01;
            block[RATE - 1] ^= 0x80;
        }
        for (int i = 0; i < RATE / 8; i++) {
            uint64_t lane = 0;
            for (int k = 7; k >= 0; k--) lane = (lane << 8) | block[i * 8 + k];
            st[i] ^= lane;
        }
        keccak_f(st);
        in += take;
        len -= take;
        if (last) break;
    }
    for (int i = 0; i < 32; i++) out[i] = (unsigned char)(st[i / 8] >> (8 * (i % 8)));
}

int wd_eth_address_check(const char *p, size_t len)
{
    if (len != 42 || p[0] != '0' || (p[1] != 'x' && p[1] != 'X')) return 0;
    const char *h = p + 2;
    bool up = false, lo = false, nonzero = false;
    for (int i = 0; i < 40; i++) {
        int v = wd_hex_digit(h[i]);
        if (v < 0) return 0;
        nonzero |= v != 0;
        up |= h[i] >= 'A' && h[i] <= 'F';
        lo |= h[i] >= 'a' && h[i] <= 'f';
    }
    if (!nonzero) return 0; /* the zero address is a burn sink, not anyone's */
    if (!(up && lo)) return 2;
    char low[40];
    for (int i = 0; i < 40; i++) low[i] = to_lower(h[i]);
    unsigned char hash[32];
    wd_keccak256(low, 40, hash);
    for (int i = 0; i < 40; i++) {
        if (!is_alpha(h[i])) continue;
        int nib = (i & 1) ? hash[i / 2] & 0x0f : hash[i / 2] >> 4;
        bool want_upper = nib >= 8;
        if (want_upper != is_upper(h[i])) return 0;
    }
    return 1;
}

/* ---- secrets --------------------------------------------------------------------------------------------- */

double wd_shannon_entropy(const char *p, size_t len)
{
    if (len == 0) return 0.0;
    unsigned cnt[256] = {0};
    for (size_t i = 0; i < len; i++) cnt[(unsigned char)p[i]]++;
    double h = 0.0;
    for (int c = 0; c < 256; c++) {
        if (!cnt[c]) continue;
        double q = (double)cnt[c] / (double)len;
        h -= q * log2(q);
    }
    return h;
}

/* For `name = value` spans, isolates the value: after the first '=' or ':' (a ':=' too), without
 * whitespace, quotes and trailing punctuation. */
static void assignment_value(const char *p, size_t len, const char **vp, size_t *vl)
{
    size_t i = 0;
    /* connection strings (Server=...;Password=x): the value is the password's, not the first one */
    for (size_t k = len; k-- > 0;) {
        if (has_prefix_ci(p + k, len - k, "password") || has_prefix_ci(p + k, len - k, "pwd")) {
            i = k;
            break;
        }
    }
    size_t from = i;
    while (i < len && p[i] != '=' && p[i] != ':') i++;
    if (i < len) {
        i++;
        while (i < len && (p[i] == '=' || p[i] == ':' || p[i] == '>')) i++; /* := => == */
    } else {
        /* "fastly token abc...": no operator, the value is the last word */
        i = len;
        while (i > from && p[i - 1] != ' ' && p[i - 1] != '\t' && p[i - 1] != '\n') i--;
    }
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '"' || p[i] == '\'' || p[i] == '`')) i++;
    size_t e = len;
    while (e > i && strchr(" \t\"'`,;", p[e - 1]) && p[e - 1]) e--;
    *vp = p + i;
    *vl = e - i;
}

static bool looks_like_placeholder(const char *v, size_t n)
{
    static const char *const marks[] = {"xxxx", "****", "....", "<", ">", "${", "{{", "your", "example", "placeholder",
                                        "changeme", "change_me", "redacted", "dummy", "sample", "secret_here",
                                        "token_here", "key_here", "insert", "replace", "abcdef", "123456", "todo",
                                        "fixme", "0000", "1111", "test"};
    for (size_t i = 0; i < WD_ARRAY_LEN(marks); i++)
        if (contains_ci(v, n, marks[i])) return true;
    return false;
}

bool wd_high_entropy_secret_ok(const char *p, size_t len)
{
    const char *v;
    size_t n;
    assignment_value(p, len, &v, &n);
    if (n < 16 || n > 512) return false;
    bool digit = false, letter = false, up = false, lo = false;
    for (size_t i = 0; i < n; i++) {
        digit |= is_digit(v[i]);
        letter |= is_alpha(v[i]);
        up |= is_upper(v[i]);
        lo |= is_lower(v[i]);
        if ((unsigned char)v[i] <= ' ' || (unsigned char)v[i] >= 0x7f) return false;
    }
    /* random tokens mix letters and digits; identifiers (getAuthToken, process.env.X) do not */
    if (!digit || !letter) return false;
    if (looks_like_placeholder(v, n)) return false;
    double need = 0.8 * log2((double)n);
    if (need > 3.5) need = 3.5;
    WD_UNUSED(up);
    WD_UNUSED(lo);
    return wd_shannon_entropy(v, n) >= need;
}

static int b64url_val(char c)
{
    if (is_upper(c)) return c - 'A';
    if (is_lower(c)) return c - 'a' + 26;
    if (is_digit(c)) return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Decodes base64url (no padding) into out; returns the length or -1. */
static long b64url_decode(const char *p, size_t len, unsigned char *out, size_t cap)
{
    unsigned acc = 0, bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val(p[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap) return -1;
            out[n++] = (unsigned char)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    if (len % 4 == 1) return -1;
    return (long)n;
}

bool wd_jwt_ok(const char *p, size_t len)
{
    const char *d1 = memchr(p, '.', len);
    if (!d1) return false;
    const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - p));
    if (!d2) return false;
    if (memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - p))) return false;
    size_t hl = (size_t)(d1 - p), pl = (size_t)(d2 - d1 - 1), sl = len - (size_t)(d2 + 1 - p);
    if (hl < 10 || pl < 4) return false;
    unsigned char hdr[512], pay[8];
    long hn = b64url_decode(p, hl, hdr, sizeof hdr);
    if (hn < 2) return false;
    /* only the start of the payload matters: it must open a JSON object */
    long pn = b64url_decode(d1 + 1, pl - pl % 4 > 8 ? 8 : pl - pl % 4, pay, sizeof pay);
    if (pn < 1) return false;
    for (size_t i = 0; i < pl; i++)
        if (b64url_val(d1[1 + i]) < 0) return false;
    for (size_t i = 0; i < sl; i++)
        if (b64url_val(d2[1 + i]) < 0) return false;
    size_t i = 0;
    while (i < (size_t)hn && (hdr[i] == ' ' || hdr[i] == '\n' || hdr[i] == '\r' || hdr[i] == '\t')) i++;
    if (i >= (size_t)hn || hdr[i] != '{' || hdr[hn - 1] != '}') return false;
    long k = 0;
    while (k < pn && (pay[k] == ' ' || pay[k] == '\n' || pay[k] == '\r' || pay[k] == '\t')) k++;
    if (k >= pn || pay[k] != '{') return false;
    return contains_ci((const char *)hdr, (size_t)hn, "\"alg\"");
}

bool wd_url_credentials_ok(const char *p, size_t len)
{
    size_t i = 0;
    if (len < 8 || !is_alpha(p[0])) return false;
    while (i < len && (is_alnum(p[i]) || p[i] == '+' || p[i] == '.' || p[i] == '-')) i++;
    if (i + 3 > len || memcmp(p + i, "://", 3) != 0) return false;
    i += 3;
    size_t auth = i;
    size_t end = auth;
    while (end < len && p[end] != '/' && p[end] != '?' && p[end] != '#') end++;
    /* the userinfo ends at the last '@' of the authority (passwords may contain '@' unencoded) */
    size_t at = SIZE_MAX;
    for (size_t k = auth; k < end; k++)
        if (p[k] == '@') at = k;
    if (at == SIZE_MAX || at + 1 >= end) return false; /* no host */
    const char *colon = memchr(p + auth, ':', at - auth);
    if (!colon) return false;
    const char *pw = colon + 1;
    size_t pwl = (size_t)(p + at - pw);
    if (pwl == 0) return false;
    /* documentation placeholders are not credentials */
    static const char *const fake[] = {"password", "pass", "passwd", "pwd", "secret", "changeme", "xxx", "****",
                                       "<password>", "[password]", "{password}", "your_password", "yourpassword",
                                       "mypassword", "p@ssw0rd", "pass123", "password123", "...", "user",
                                       "redacted"};
    for (size_t k = 0; k < WD_ARRAY_LEN(fake); k++)
        if (pwl == strlen(fake[k]) && has_prefix_ci(pw, pwl, fake[k])) return false;
    if (pw[0] == '$' || pw[0] == '<' || pw[0] == '{' || pw[0] == '%' || pw[0] == '*') return false;
    if (all_same(pw, pwl) && pwl > 1 && !is_alnum(pw[0])) return false;
    return true;
}

/* ---- phone numbers ---------------------------------------------------------------------------------------- */

bool wd_phone_ok(const char *p, size_t len)
{
    /* strip an extension: x123, ext 123, ext. 123 */
    size_t body = len;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == 'x' || p[i] == 'X' || p[i] == 'e' || p[i] == 'E' || p[i] == '#') {
            body = i;
            break;
        }
    }
    while (body > 0 && (p[body - 1] == ' ' || p[body - 1] == ',')) body--;
    char d[20];
    int n = 0;
    bool plus = false;
    int groups = 0, glen[8] = {0};
    bool in_group = false;
    int open = 0;
    for (size_t i = 0; i < body; i++) {
        char c = p[i];
        if (is_digit(c)) {
            if (n >= 17) return false;
            d[n++] = c;
            if (!in_group) {
                if (groups >= 8) return false;
                groups++;
                in_group = true;
            }
            glen[groups - 1]++;
        } else {
            in_group = false;
            if (c == '+') {
                if (i != 0) return false;
                plus = true;
            } else if (c == '(') {
                if (open) return false;
                open = 1;
            } else if (c == ')') {
                if (open != 1) return false;
                open = 2;
            } else if (c != ' ' && c != '-' && c != '.' && c != '/') {
                return false;
            }
        }
    }
    if (open == 1) return false;
    if (n < 7 || n > 15) return false;
    if (all_same(d, (size_t)n)) return false;
    /* NANP: +1 / 1- / 001 prefix, or ten digits grouped 3-3-4 */
    const char *nanp = NULL;
    if (plus && d[0] == '1' && n == 11) nanp = d + 1;
    else if (!plus && n == 13 && d[0] == '0' && d[1] == '0' && d[2] == '1' && groups >= 4 && glen[0] == 3)
        nanp = d + 3;
    else if (!plus && n == 11 && d[0] == '1' && glen[0] == 1) nanp = d + 1;
    else if (!plus && n == 10 && groups == 3 && glen[0] == 3 && glen[1] == 3 && glen[2] == 4) nanp = d;
    else if (!plus && n == 10 && groups == 1) nanp = d;
    if (plus && d[0] == '0') return false; /* country codes never start with 0 */
    if (plus && d[0] == '1' && n != 11) return false;
    if (nanp) {
        /* area code and exchange: NXX, not N11, not 555-01xx fiction numbers */
        if (nanp[0] < '2' || nanp[3] < '2') return false;
        if (nanp[1] == '1' && nanp[2] == '1') return false;
        if (nanp[4] == '1' && nanp[5] == '1') return false;
        if (nanp[3] == '5' && nanp[4] == '5' && nanp[5] == '5' && nanp[6] == '0' && nanp[7] == '1') return false;
    }
    return true;
}

/* ---- person names (gazetteer) ------------------------------------------------------------------------------ */

enum { NAME_GIVEN = 1, NAME_SURNAME = 2, NAME_COMMON_WORD = 4, NAME_PLACE = 8 };

typedef struct gazetteer {
    char *blob;         /* the file, names NUL-terminated in place */
    uint32_t *slots;    /* open addressing: offset+1 into blob, 0 = empty */
    unsigned char *flags;
    size_t nslots;
    struct gazetteer *retired;
} gazetteer_t;

static pthread_mutex_t gz_mu = PTHREAD_MUTEX_INITIALIZER;
static char *gz_dir;
static _Atomic(gazetteer_t *) gz_cur;
static gazetteer_t *gz_retired;
static bool gz_failed; /* a load failed for gz_dir: do not retry on every span */
static char gz_err[256];

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#define RSQUO "\xE2\x80\x99" /* U+2019, the apostrophe word processors type */

/* Lower-cases ASCII, Latin-1 and Latin Extended-A letters (the scripts the name patterns match) and
 * reads U+2019 as an apostrophe; other bytes are copied. Returns the output length or 0 when out is
 * too small. */
static size_t fold_name(const char *p, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x80 || (c == 0xe2 && i + 2 < len && !memcmp(p + i, RSQUO, 3))) {
            if (n + 1 > cap) return 0;
            out[n++] = c < 0x80 ? to_lower((char)c) : '\''; /* O’Hara is o'hara */
            i += c < 0x80 ? 1 : 3;
            continue;
        }
        if ((c & 0xe0) == 0xc0 && i + 1 < len && ((unsigned char)p[i + 1] & 0xc0) == 0x80) {
            unsigned cp = ((c & 0x1fu) << 6) | ((unsigned char)p[i + 1] & 0x3fu);
            if (cp >= 0xc0 && cp <= 0xde && cp != 0xd7) cp += 0x20;
            else if ((cp >= 0x100 && cp <= 0x137) || (cp >= 0x14a && cp <= 0x177)) cp |= 1u;
            else if (((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17e)) && (cp & 1u)) cp += 1;
            else if (cp == 0x178) cp = 0xff;
            if (n + 2 > cap) return 0;
            out[n++] = (char)(0xc0 | (cp >> 6));
            out[n++] = (char)(0x80 | (cp & 0x3f));
            i += 2;
            continue;
        }
        if (n + 1 > cap) return 0;
        out[n++] = (char)c;
        i++;
    }
    return n;
}

static void gz_free(gazetteer_t *g)
{
    while (g) {
        gazetteer_t *next = g->retired;
        free(g->blob);
        free(g->slots);
        free(g->flags);
        free(g);
        g = next;
    }
}

static int gz_load(const char *dir, gazetteer_t **out, char *err, size_t errlen)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/data/names.tsv", dir) >= sizeof path)
        return wd_errf(err, errlen, WD_EINVAL, "gazetteer path too long");
    char *blob;
    size_t n;
    int rc = wd_read_file(path, 16u << 20, &blob, &n, err, errlen);
    if (rc) return rc;
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) lines += blob[i] == '\n';
    gazetteer_t *g = calloc(1, sizeof *g);
    size_t nslots = 64;
    while (nslots < (lines + 1) * 2) nslots <<= 1;
    if (g) {
        g->slots = calloc(nslots, sizeof *g->slots);
        g->flags = calloc(nslots, 1);
    }
    if (!g || !g->slots || !g->flags) {
        if (g) {
            free(g->slots);
            free(g->flags);
        }
        free(g);
        free(blob);
        return WD_ENOMEM;
    }
    g->blob = blob;
    g->nslots = nslots;
    unsigned lineno = 0;
    for (size_t i = 0; i < n;) {
        lineno++;
        char *line = blob + i;
        char *nl = memchr(line, '\n', n - i);
        size_t ll = nl ? (size_t)(nl - line) : n - i;
        i += ll + (nl ? 1 : 0);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll == 0 || line[0] == '#') continue;
        char *tab = memchr(line, '\t', ll);
        if (!tab || tab == line) {
            gz_free(g);
            return wd_errf(err, errlen, WD_EINVAL, "%s:%u: expected name<TAB>flags", path, lineno);
        }
        unsigned char fl = 0;
        for (char *q = tab + 1; q < line + ll; q++) {
            if (*q == 'g') fl |= NAME_GIVEN;
            else if (*q == 's') fl |= NAME_SURNAME;
            else if (*q == 'w') fl |= NAME_COMMON_WORD;
            else if (*q == 'p') fl |= NAME_PLACE;
            else {
                char bad = *q;
                gz_free(g);
                return wd_errf(err, errlen, WD_EINVAL, "%s:%u: unknown flag '%c' (g, s, w, p)", path, lineno, bad);
            }
        }
        size_t nlen = (size_t)(tab - line);
        *tab = '\0';
        /* names are stored folded so lookups need no second normalisation */
        char tmp[128];
        size_t fl_len = fold_name(line, nlen, tmp, sizeof tmp);
        if (fl_len != nlen || memcmp(tmp, line, nlen) != 0) {
            gz_free(g);
            return wd_errf(err, errlen, WD_EINVAL, "%s:%u: name must be lower-case", path, lineno);
        }
        size_t h = (size_t)fnv1a(line, nlen) & (nslots - 1);
        for (;;) {
            uint32_t s = g->slots[h];
            if (s == 0) {
                g->slots[h] = (uint32_t)(line - blob) + 1;
                g->flags[h] = fl;
                break;
            }
            if (strcmp(blob + s - 1, line) == 0) {
                g->flags[h] |= fl;
                break;
            }
            h = (h + 1) & (nslots - 1);
        }
    }
    *out = g;
    return WD_OK;
}

void wd_validators_set_data_dir(const char *dir)
{
    pthread_mutex_lock(&gz_mu);
    if (!gz_dir || !dir || strcmp(gz_dir, dir) != 0) {
        free(gz_dir);
        gz_dir = dir ? strdup(dir) : NULL;
        gz_failed = false;
        /* tables already handed to running scans stay alive until cleanup */
        gazetteer_t *old = atomic_exchange(&gz_cur, NULL);
        if (old) {
            old->retired = gz_retired;
            gz_retired = old;
        }
    }
    pthread_mutex_unlock(&gz_mu);
}

static gazetteer_t *gz_get(void)
{
    gazetteer_t *g = atomic_load_explicit(&gz_cur, memory_order_acquire);
    if (g) return g;
    pthread_mutex_lock(&gz_mu);
    g = atomic_load_explicit(&gz_cur, memory_order_acquire);
    if (!g && !gz_failed) {
        const char *dir = gz_dir;
        if (!dir) dir = getenv("WARDEN_RULES_DIR");
        if (!dir) dir = "rules";
        if (gz_load(dir, &g, gz_err, sizeof gz_err) == WD_OK) atomic_store_explicit(&gz_cur, g, memory_order_release);
        else {
            g = NULL;
            gz_failed = true;
        }
    }
    pthread_mutex_unlock(&gz_mu);
    return g;
}

int wd_validators_load_data(char *err, size_t errlen)
{
    if (gz_get()) return WD_OK;
    pthread_mutex_lock(&gz_mu);
    int rc = wd_errf(err, errlen, WD_EIO, "person-name gazetteer: %s", gz_err[0] ? gz_err : "not loaded");
    pthread_mutex_unlock(&gz_mu);
    return rc;
}

void wd_validators_cleanup(void)
{
    pthread_mutex_lock(&gz_mu);
    gz_free(atomic_exchange(&gz_cur, NULL));
    gz_free(gz_retired);
    gz_retired = NULL;
    free(gz_dir);
    gz_dir = NULL;
    gz_failed = false;
    gz_err[0] = '\0';
    pthread_mutex_unlock(&gz_mu);
}

static unsigned gz_lookup(const gazetteer_t *g, const char *p, size_t len)
{
    char key[128];
    size_t n = fold_name(p, len, key, sizeof key - 1);
    if (n == 0) return 0;
    key[n] = '\0';
    size_t h = (size_t)fnv1a(key, n) & (g->nslots - 1);
    for (;;) {
        uint32_t s = g->slots[h];
        if (s == 0) return 0;
        if (strcmp(g->blob + s - 1, key) == 0) return g->flags[h];
        h = (h + 1) & (g->nslots - 1);
    }
}

/* Capitalised words that start sentences or name things other than people. Looked up in a hash set
 * built once: the name rules call this for every capitalised word of a text, so a scan over the list
 * (170 strcmp) was the most expensive step of scanning prose. */
static const char *const stop_words[] = {
        "a",        "an",      "the",      "this",     "that",     "these",   "those",   "i",        "we",
        "you",      "he",      "she",      "it",       "they",     "my",      "your",    "our",      "his",
        "her",      "their",   "in",       "on",       "at",       "to",      "for",     "from",     "with",
        "by",       "of",      "and",      "or",       "but",      "if",      "when",    "while",    "where",
        "what",     "who",     "why",      "how",      "which",    "is",      "are",     "was",      "were",
        "be",       "do",      "does",     "did",      "can",      "could",   "will",    "would",    "should",
        "may",      "might",   "must",     "please",   "thanks",   "thank",   "hello",   "hi",       "hey",
        "dear",     "yes",     "no",       "not",      "all",      "any",     "some",    "each",     "every",
        "monday",   "tuesday", "wednesday", "thursday", "friday",  "saturday", "sunday", "january",  "february",
        "march",    "april",   "june",     "july",     "august",   "september", "october", "november", "december",
        "street",   "st",      "road",     "avenue",   "ave",      "lane",    "drive",   "inc",      "ltd",
        "llc",      "corp",    "company",  "university", "college", "school",  "hospital", "bank",    "county",
        "city",     "north",   "south",    "east",     "west",     "new",     "old",     "saint",    "mount",
        "lake",     "river",   "park",     "god",      "lord",     "jesus",   "christ",  "english",  "french",
        "german",   "spanish", "chinese",  "american", "british",  "european", "africa", "america",  "europe",
        "asia",     "as",      "so",       "also",     "after",    "before",  "about",   "then",     "there",
        "here",     "just",    "only",     "once",     "how",      "let",     "make",    "write",    "tell",
        "give",     "create",  "explain",  "describe", "imagine",  "consider", "provide", "generate", "act",
    };

#define STOP_SLOTS 512 /* power of two, > 2 x the list */
static const char *stop_set[STOP_SLOTS];
static uint8_t stop_len[STOP_SLOTS];
static pthread_once_t stop_once = PTHREAD_ONCE_INIT;

static void stop_init(void)
{
    for (size_t i = 0; i < WD_ARRAY_LEN(stop_words); i++) {
        size_t n = strlen(stop_words[i]);
        size_t h = (size_t)fnv1a(stop_words[i], n) & (STOP_SLOTS - 1);
        while (stop_set[h] && !(stop_len[h] == n && memcmp(stop_set[h], stop_words[i], n) == 0))
            h = (h + 1) & (STOP_SLOTS - 1);
        stop_set[h] = stop_words[i];
        stop_len[h] = (uint8_t)n;
    }
}

static bool stop_word(const char *p, size_t len)
{
    char key[16];
    if (len == 0 || len >= sizeof key) return false;
    for (size_t i = 0; i < len; i++) key[i] = to_lower(p[i]);
    pthread_once(&stop_once, stop_init);
    size_t h = (size_t)fnv1a(key, len) & (STOP_SLOTS - 1);
    for (; stop_set[h]; h = (h + 1) & (STOP_SLOTS - 1))
        if (stop_len[h] == len && memcmp(stop_set[h], key, len) == 0) return true;
    return false;
}

static bool title_word(const char *p, size_t len)
{
    static const struct {
        char s[6];
        uint8_t n;
    } t[] = {{"mr", 2},   {"mrs", 3},  {"ms", 2},   {"miss", 4},  {"mx", 2},   {"dr", 2},   {"prof", 4},
             {"sir", 3},  {"dame", 4}, {"madam", 5}, {"mme", 3},  {"mlle", 4}, {"herr", 4}, {"frau", 4}};
    size_t l = len;
    if (l && p[l - 1] == '.') l--;
    if (l < 2 || l > 5) return false;
    char key[8];
    for (size_t i = 0; i < l; i++) key[i] = to_lower(p[i]);
    for (size_t i = 0; i < WD_ARRAY_LEN(t); i++)
        if (t[i].n == l && memcmp(t[i].s, key, l) == 0) return true;
    return false;
}

/* The gazetteer's flags for a word. A word joined by '-' or an apostrophe that the gazetteer lacks as a
 * whole (Smith-Jones, Anna-Maria) gets the name flags of its parts, unless a part is only an English word
 * or a place (Coca-Cola: that part's flags) or empty (a word). */
static unsigned word_flags(const gazetteer_t *g, const char *p, size_t len)
{
    unsigned f = gz_lookup(g, p, len);
    if (f || !(memchr(p, '-', len) || memchr(p, '\'', len) || memmem(p, len, RSQUO, 3))) return f;
    const unsigned name = NAME_GIVEN | NAME_SURNAME;
    unsigned all = 0;
    for (size_t i = 0, st = 0; i <= len; i++) {
        size_t sep = i == len || p[i] == '-' || p[i] == '\''    ? 1
                     : i + 3 <= len && !memcmp(p + i, RSQUO, 3) ? 3
                                                                : 0;
        if (!sep) continue;
        if (i == st) return NAME_COMMON_WORD;
        unsigned pf = gz_lookup(g, p + st, i - st);
        if (pf && !(pf & name)) return pf;
        all |= pf & name;
        i += sep - 1;
        st = i + 1;
    }
    return all;
}

bool wd_person_name_ok(const char *p, size_t len, float *score)
{
    /* words separated by spaces; hyphenated parts (Smith-Jones) are checked as a whole and per part */
    struct {
        const char *p;
        size_t len;
    } w[4];
    size_t nw = 0;
    for (size_t i = 0; i < len;) {
        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n')) i++;
        if (i >= len) break;
        size_t st = i;
        while (i < len && p[i] != ' ' && p[i] != '\t' && p[i] != '\n') i++;
        if (nw == 4) return false;
        w[nw].p = p + st;
        w[nw].len = i - st;
        nw++;
    }
    if (nw == 0) return false;
    size_t first = 0;
    bool titled = title_word(w[0].p, w[0].len);
    if (titled) {
        first = 1;
        if (nw == 1) return false;
    }
    for (size_t k = first; k < nw; k++)
        if (stop_word(w[k].p, w[k].len)) return false;
    if (titled) {
        /* "Mr Fukunaga": a title before a capitalised word is a name whatever the gazetteer says */
        if (score && *score < 0.85f) *score = 0.85f;
        return true;
    }
    gazetteer_t *g = gz_get();
    if (!g) return false;
    unsigned f0 = word_flags(g, w[0].p, w[0].len);
    unsigned fl = word_flags(g, w[nw - 1].p, w[nw - 1].len);
    const unsigned name = NAME_GIVEN | NAME_SURNAME, doubt = NAME_COMMON_WORD | NAME_PLACE;
    if (nw == 1) {
        /* one word: only an unambiguous given name ("Megan", not "Will", "Grace" or "Paris") */
        return (f0 & NAME_GIVEN) && !(f0 & doubt);
    }
    /* a word that is only an English word or a place ("Sydney Opera", "Princess Royal") is no name */
    if (((f0 & doubt) && !(f0 & name)) || ((fl & doubt) && !(fl & name))) return false;
    bool given = (f0 & NAME_GIVEN) != 0, last_named = (fl & name) != 0;
    if (given && last_named) {
        if (score) *score += 0.1f;
        return true;
    }
    if (given && !(f0 & doubt)) return true;                                 /* Megan Zyxwv */
    if ((fl & NAME_SURNAME) && !(fl & doubt) && !(f0 & doubt)) return true; /* Qwert Payne */
    return false;
}

/* One capitalised word beside a cue that names a person. After a cue that may also come before other words
 * ("says Eklund", "patient Foley"): a given name or surname by the gazetteer and never an English word or
 * a place. After a cue that says outright that a name follows ("my name is Grace", "call me Duqyaha"):
 * any word that is neither only an English word nor only a place. Joined words by their parts
 * (word_flags). */
bool wd_person_word_ok(const char *p, size_t len, wd_person_word_t how)
{
    gazetteer_t *g = gz_get();
    if (!g) return false;
    unsigned f = word_flags(g, p, len), name = f & (NAME_GIVEN | NAME_SURNAME);
    if (how == WD_PERSON_NAMED && name) return true; /* "my name is Will" */
    if (stop_word(p, len) || (f & (NAME_COMMON_WORD | NAME_PLACE))) return false;
    return how != WD_PERSON_KNOWN || name;
}

/* ---- the table ------------------------------------------------------------------------------------------- */

static bool v_email(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_email_ok(p, len); }
static bool v_luhn(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_luhn_ok(p, len); }
static bool v_card(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_card_ok(p, len); }
static bool v_iban(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_iban_ok(p, len); }
static bool v_ssn(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_us_ssn_ok(p, len); }
static bool v_itin(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_us_itin_ok(p, len); }
static bool v_nino(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_uk_nino_ok(p, len); }
static bool v_nhs(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_nhs_number_ok(p, len); }
static bool v_aba(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_aba_routing_ok(p, len); }
static bool v_npi(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_npi_ok(p, len); }
static bool v_dea(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_dea_number_ok(p, len); }
static bool v_ipv4(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_ipv4_ok(p, len); }
static bool v_ipv6(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_ipv6_ok(p, len); }
static bool v_mac(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_mac_ok(p, len); }
static bool v_dob(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_date_of_birth_ok(p, len); }
static bool v_btc(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_btc_base58check_ok(p, len); }
static bool v_bech32(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_bech32_ok(p, len); }
static bool v_entropy(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_high_entropy_secret_ok(p, len); }
static bool v_jwt(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_jwt_ok(p, len); }
static bool v_urlcred(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_url_credentials_ok(p, len); }
static bool v_phone(const char *p, size_t len, float *s) { WD_UNUSED(s); return wd_phone_ok(p, len); }
static bool v_person(const char *p, size_t len, float *s) { return wd_person_name_ok(p, len, s); }
static bool v_person_word(const char *p, size_t len, float *s)
{
    WD_UNUSED(s);
    return wd_person_word_ok(p, len, WD_PERSON_KNOWN);
}
static bool v_person_named(const char *p, size_t len, float *s)
{
    WD_UNUSED(s);
    return wd_person_word_ok(p, len, WD_PERSON_NAMED);
}
static bool v_person_like(const char *p, size_t len, float *s)
{
    WD_UNUSED(s);
    return wd_person_word_ok(p, len, WD_PERSON_LIKE);
}

static bool v_eth(const char *p, size_t len, float *s)
{
    int r = wd_eth_address_check(p, len);
    /* single-case addresses carry no checksum: still an address, but less certain than a verified one */
    if (r == 2 && s) *s -= 0.1f;
    return r != 0;
}

static const struct {
    const char *name;
    wd_validator_fn fn;
} validators[] = {
    {"email", v_email},
    {"luhn", v_luhn},
    {"credit_card", v_card},
    {"iban", v_iban},
    {"us_ssn", v_ssn},
    {"us_itin", v_itin},
    {"uk_nino", v_nino},
    {"nhs_number", v_nhs},
    {"aba_routing", v_aba},
    {"npi", v_npi},
    {"dea_number", v_dea},
    {"ipv4", v_ipv4},
    {"ipv6", v_ipv6},
    {"mac", v_mac},
    {"date_of_birth", v_dob},
    {"btc_base58check", v_btc},
    {"bech32", v_bech32},
    {"eth_address", v_eth},
    {"entropy", v_entropy},
    {"jwt", v_jwt},
    {"url_credentials", v_urlcred},
    {"phone", v_phone},
    {"person_name", v_person},
    {"person_word", v_person_word},
    {"person_named", v_person_named},
    {"person_like", v_person_like},
};

size_t wd_validator_count(void) { return WD_ARRAY_LEN(validators); }

int wd_validator_find(const char *name)
{
    if (!name) return -1;
    for (size_t i = 0; i < WD_ARRAY_LEN(validators); i++)
        if (strcmp(validators[i].name, name) == 0) return (int)i;
    return -1;
}

wd_validator_fn wd_validator_get(int index)
{
    if (index < 0 || (size_t)index >= WD_ARRAY_LEN(validators)) return NULL;
    return validators[index].fn;
}

const char *wd_validator_name(int index)
{
    if (index < 0 || (size_t)index >= WD_ARRAY_LEN(validators)) return NULL;
    return validators[index].name;
}
