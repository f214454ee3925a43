/* cp_json.h — a small strict JSON parser (RFC 8259) for safetensors headers and config.json files.
 *
 * The whole document is parsed into a tree of cp_json nodes owned by the root; cp_json_free(root) frees it.
 * Strict: no comments, no trailing commas, no NaN/Infinity, no control characters in strings, nesting depth
 * limited to CP_JSON_MAX_DEPTH, invalid UTF-8 rejected. Errors are CP_ERR_MODEL_FORMAT with the byte offset.
 */
#ifndef CP_JSON_H
#define CP_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CP_JSON_MAX_DEPTH 64

typedef enum { CP_JSON_NULL, CP_JSON_BOOL, CP_JSON_NUMBER, CP_JSON_STRING, CP_JSON_ARRAY, CP_JSON_OBJECT } cp_json_type;

typedef struct cp_json cp_json;
struct cp_json {
    cp_json_type type;
    int boolean;        /* CP_JSON_BOOL */
    double number;      /* CP_JSON_NUMBER */
    int is_integer;     /* number written without fraction/exponent and fits int64 */
    int64_t integer;    /* valid when is_integer */
    char *string;       /* CP_JSON_STRING: NUL-terminated UTF-8 (may contain NUL; see length) */
    size_t length;      /* string length in bytes */
    size_t count;       /* ARRAY / OBJECT: number of items */
    cp_json *items;     /* ARRAY / OBJECT: items[count] */
    char **keys;        /* OBJECT: keys[count], NUL-terminated */
};

/** Parse `n` bytes of JSON into a new tree (*out; free with cp_json_free). `what` names the source in errors. */
int cp_json_parse(const char *text, size_t n, const char *what, cp_json **out);

/** Read and parse a JSON file. CP_ERR_IO when it cannot be read, CP_ERR_MODEL_FORMAT when it is not JSON. */
int cp_json_parse_file(const char *path, cp_json **out);

/** Free a tree returned by cp_json_parse (NULL safe). */
void cp_json_free(cp_json *root);

/** Member `key` of an object (first match), or NULL if absent or `obj` is not an object. */
const cp_json *cp_json_get(const cp_json *obj, const char *key);

/** Integer member: CP_OK and *out when present and integral; `def` when absent; CP_ERR_MODEL_FORMAT otherwise. */
int cp_json_get_int(const cp_json *obj, const char *key, int64_t def, int64_t *out);
/** Number member (integer or real); `def` when absent or null. */
int cp_json_get_number(const cp_json *obj, const char *key, double def, double *out);
/** String member (borrowed pointer, NULL when absent or null). */
int cp_json_get_string(const cp_json *obj, const char *key, const char **out);

#ifdef __cplusplus
}
#endif
#endif /* CP_JSON_H */
