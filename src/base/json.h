/* base/json.h: the one JSON string decoder (escapes, \u surrogate pairs, UTF-8) that the label map
 * reader and the safetensors header parser share. It says what is wrong and where as a status and
 * a byte offset; each caller words its own message (a line and column, or a byte of the header),
 * and the flags keep the rules each caller has: the order in which problems are found and which
 * escapes are refused. */
#ifndef CNN_JSON_H
#define CNN_JSON_H

#include <stddef.h>

typedef enum {
    JSON_STR_OK = 0,
    JSON_STR_NO_QUOTE,       /* no '"' at the position: at = the position */
    JSON_STR_UNCLOSED,       /* no closing '"': at = the end of the input (with JSON_STR_END_FIRST,
                              * the byte after the opening quote) */
    JSON_STR_RAW_CONTROL,    /* a byte below 0x20 that is not escaped: at = it, code = its value */
    JSON_STR_BAD_UTF8,       /* bytes that are not UTF-8: at = the first byte of the bad sequence
                              * (with JSON_STR_UTF8_LAST, the byte after the opening quote) */
    JSON_STR_BAD_ESCAPE,     /* '\' and a byte JSON has no escape for: at = that byte (the end of
                              * the input when there is none; code = 0 then), code = the byte */
    JSON_STR_BAD_HEX,        /* \u without four hex digits: at = the first byte that is not one (or
                              * the end of the input), escape = the '\' of that \u */
    JSON_STR_LONE_LOW,       /* \uDC00-\uDFFF with no high surrogate before it: at = after its
                              * digits, code = it */
    JSON_STR_LONE_HIGH,      /* \uD800-\uDBFF not followed by a \u of a low one: at = after its
                              * digits, or after the \u escape that followed it; code = it */
    JSON_STR_CONTROL_ESCAPE, /* an escape that gives a control character: \u0000 always (the result
                              * is a C string), the others with JSON_STR_NO_CONTROL_ESCAPES; at =
                              * the letter of \b \f \n \r \t, after the digits of \u; code = it */
} JsonStrStatus;

/* Flags: the caller's rules. */
enum {
    /* Look for the closing quote first: a string with none is JSON_STR_UNCLOSED, whatever comes
     * before the end (the safetensors header, whose strings are sized by that scan). Otherwise
     * problems are found in the order of the bytes. */
    JSON_STR_END_FIRST = 1,
    /* Check UTF-8 once the rest of the string is decoded (the label map reader). Otherwise a bad
     * sequence is found where it starts. */
    JSON_STR_UTF8_LAST = 2,
    /* Refuse escapes of C0 controls and DEL (\b \f \n \r \t, \u0001-\u001F, \u007F), not only
     * \u0000 (the label map's names may not hold them). */
    JSON_STR_NO_CONTROL_ESCAPES = 4,
};

typedef struct {
    JsonStrStatus status;
    size_t at;      /* where the problem is (see the statuses), or past the closing quote when OK */
    size_t escape;  /* JSON_STR_BAD_HEX: the offset of the '\' of the \u escape */
    unsigned code;  /* the byte, escape letter or code point concerned, as said above */
} JsonStr;

/* Decode the JSON string whose opening quote is s[pos] (n bytes of input) into *out, a malloc'd,
 * NUL-terminated UTF-8 copy (the caller frees it). Returns r->status; *out is NULL unless OK. */
JsonStrStatus json_string_decode(const unsigned char *s, size_t n, size_t pos, int flags, char **out, JsonStr *r);

#endif
