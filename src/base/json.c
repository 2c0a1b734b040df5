/* base/json.c: the JSON string decoder (json.h). One pass over the string's bytes; the flags only
 * choose when UTF-8 and the closing quote are checked and which escapes are refused, so that each
 * caller keeps the errors it always gave. */
#include "base/json.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static int hex_digit(unsigned c) {
    return c >= '0' && c <= '9' ? (int)c - '0' : c >= 'a' && c <= 'f' ? (int)c - 'a' + 10 : c >= 'A' && c <= 'F' ? (int)c - 'A' + 10 : -1;
}

/* Four hex digits at s[*i] into *v: 0, or -1 with *i at the first byte that is not one. */
static int read_hex4(const unsigned char *s, size_t n, size_t *i, unsigned *v) {
    *v = 0;
    for (int k = 0; k < 4; k++, (*i)++) {
        int d = *i < n ? hex_digit(s[*i]) : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (unsigned)d;
    }
    return 0;
}

static void put_utf8(char *b, size_t *k, unsigned cp) {
    if (cp < 0x80) {
        b[(*k)++] = (char)cp;
    } else if (cp < 0x800) {
        b[(*k)++] = (char)(0xC0 | cp >> 6);
        b[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        b[(*k)++] = (char)(0xE0 | cp >> 12);
        b[(*k)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        b[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        b[(*k)++] = (char)(0xF0 | cp >> 18);
        b[(*k)++] = (char)(0x80 | (cp >> 12 & 0x3F));
        b[(*k)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        b[(*k)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static JsonStrStatus refuse(JsonStr *r, char *buf, JsonStrStatus status, size_t at, unsigned code) {
    free(buf);
    r->status = status;
    r->at = at;
    r->code = code;
    return status;
}

JsonStrStatus json_string_decode(const unsigned char *s, size_t n, size_t pos, int flags, char **out, JsonStr *r) {
    static const char escaped[] = "\"\\/bfnrt", decoded[] = "\"\\/\b\f\n\r\t";
    *out = NULL;
    memset(r, 0, sizeof *r);
    if (pos >= n || s[pos] != '"') return refuse(r, NULL, JSON_STR_NO_QUOTE, pos, 0);
    /* The closing quote, as JSON reads it ('\' always takes the next byte): decoding never
     * lengthens (\uXXXX gives at most 3 bytes, a pair of them 4), so this sizes the copy. */
    size_t start = pos + 1, end = start;
    while (end < n && s[end] != '"') end += s[end] == '\\' ? 2 : 1;
    if (end > n) end = n;
    if (end == n && (flags & JSON_STR_END_FIRST)) return refuse(r, NULL, JSON_STR_UNCLOSED, start, 0);
    char *b = xmalloc(end - start + 1);
    size_t i = start, k = 0;
    for (;;) {
        if (i >= n) return refuse(r, b, JSON_STR_UNCLOSED, n, 0);
        unsigned c = s[i];
        if (c == '"') break;
        if (c < 0x20) return refuse(r, b, JSON_STR_RAW_CONTROL, i, c);
        if (c >= 0x80 && !(flags & JSON_STR_UTF8_LAST)) {
            size_t len = utf8_seq(s + i, n - i);
            if (!len) return refuse(r, b, JSON_STR_BAD_UTF8, i, c);
            memcpy(b + k, s + i, len);
            k += len;
            i += len;
            continue;
        }
        if (c != '\\') {
            b[k++] = (char)c;
            i++;
            continue;
        }
        size_t escape = i++;
        unsigned e = i < n ? s[i] : 0;
        const char *simple = e ? strchr(escaped, (int)e) : NULL;
        if (simple) {
            unsigned d = (unsigned char)decoded[simple - escaped];
            if (d < 0x20 && (flags & JSON_STR_NO_CONTROL_ESCAPES)) return refuse(r, b, JSON_STR_CONTROL_ESCAPE, i, d);
            b[k++] = (char)d;
            i++;
            continue;
        }
        if (e != 'u') return refuse(r, b, JSON_STR_BAD_ESCAPE, i, e);
        i++;
        unsigned cp, lo = 0;
        if (read_hex4(s, n, &i, &cp)) {
            r->escape = escape;
            return refuse(r, b, JSON_STR_BAD_HEX, i, 0);
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) return refuse(r, b, JSON_STR_LONE_LOW, i, cp);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i + 1 < n && s[i] == '\\' && s[i + 1] == 'u') {
                r->escape = i;
                i += 2;
                if (read_hex4(s, n, &i, &lo)) return refuse(r, b, JSON_STR_BAD_HEX, i, 0);
            }
            if (lo < 0xDC00 || lo > 0xDFFF) return refuse(r, b, JSON_STR_LONE_HIGH, i, cp);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0 || ((flags & JSON_STR_NO_CONTROL_ESCAPES) && (cp < 0x20 || cp == 0x7F)))
            return refuse(r, b, JSON_STR_CONTROL_ESCAPE, i, cp);
        put_utf8(b, &k, cp);
    }
    b[k] = 0;
    /* Escapes give whole UTF-8 sequences, so checking the result checks the raw bytes. */
    if ((flags & JSON_STR_UTF8_LAST) && !utf8_valid(b)) return refuse(r, b, JSON_STR_BAD_UTF8, start, 0);
    r->status = JSON_STR_OK;
    r->at = i + 1;
    *out = b;
    return JSON_STR_OK;
}
