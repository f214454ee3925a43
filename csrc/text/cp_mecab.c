/* cp_mecab.c — MeCab wakati through dlopen("libmecab.so.2") (see cp_mecab.h).
 *
 * Only the stable C API of MeCab 0.99x is used: mecab_model_new / _new_tagger / _new_lattice, set_sentence2,
 * parse_lattice, get_bos_node, and the node fields next / surface / length / stat. The node layout is declared
 * here (so building needs no libmecab-dev); when <mecab.h> is available the layout is checked against it.
 */
#define _GNU_SOURCE
#include "text/cp_mecab.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define CP_MECAB_INSTALL "install MeCab and its UTF-8 IPA dictionary: `apt install libmecab2 mecab-ipadic-utf8`"

/* struct mecab_node_t of MeCab 0.996 (mecab.h), in order */
typedef struct cp_mecab_node {
    struct cp_mecab_node *prev, *next, *enext, *bnext;
    void *rpath, *lpath;
    const char *surface;
    const char *feature;
    unsigned int id;
    unsigned short length, rlength, rcAttr, lcAttr, posid;
    unsigned char char_type, stat, isbest;
    float alpha, beta, prob;
    short wcost;
    long cost;
} cp_mecab_node;

typedef struct cp_mecab_dicinfo {
    const char *filename;
    const char *charset;
    unsigned int size;
    int type;
    unsigned int lsize, rsize;
    unsigned short version;
    struct cp_mecab_dicinfo *next;
} cp_mecab_dicinfo;

#define CP_MECAB_BOS 2 /* MECAB_BOS_NODE */
#define CP_MECAB_EOS 3 /* MECAB_EOS_NODE */

#if defined(__has_include)
#if __has_include(<mecab.h>)
#include <mecab.h>
#include <stddef.h>
_Static_assert(sizeof(cp_mecab_node) == sizeof(mecab_node_t), "mecab_node_t layout");
_Static_assert(offsetof(cp_mecab_node, next) == offsetof(mecab_node_t, next), "mecab_node_t.next");
_Static_assert(offsetof(cp_mecab_node, surface) == offsetof(mecab_node_t, surface), "mecab_node_t.surface");
_Static_assert(offsetof(cp_mecab_node, length) == offsetof(mecab_node_t, length), "mecab_node_t.length");
_Static_assert(offsetof(cp_mecab_node, stat) == offsetof(mecab_node_t, stat), "mecab_node_t.stat");
_Static_assert(offsetof(cp_mecab_dicinfo, charset) == offsetof(mecab_dictionary_info_t, charset), "dicinfo");
_Static_assert(CP_MECAB_BOS == MECAB_BOS_NODE && CP_MECAB_EOS == MECAB_EOS_NODE, "node stat codes");
#endif
#endif

typedef struct {
    void *(*model_new)(int, char **);
    void *(*model_new_tagger)(void *);
    void *(*model_new_lattice)(void *);
    const cp_mecab_dicinfo *(*model_dictionary_info)(void *);
    void (*lattice_set_sentence2)(void *, const char *, size_t);
    int (*parse_lattice)(void *, void *);
    const cp_mecab_node *(*lattice_get_bos_node)(void *);
    const char *(*lattice_strerror)(void *);
    void (*lattice_destroy)(void *);
    const char *(*strerror)(void *);
    const char *(*version)(void);
} mecab_api;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_state;          /* 0 not tried, 1 loaded, <0 the failure code */
static char g_msg[1024];     /* the failure message, replayed on every later call */
static char g_dicdir[1024];  /* "" = mecabrc's */
static char g_version[64];
static mecab_api g_api;
static void *g_model, *g_tagger;
static pthread_key_t g_lattice_key;

static void lattice_free(void *lat) {
    if (lat) g_api.lattice_destroy(lat);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int load_locked(void) {
    void *h = dlopen("libmecab.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libmecab.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return cp_fail(CP_ERR_DEPENDENCY, "Japanese segmentation needs MeCab, which was not found (%s): " CP_MECAB_INSTALL,
                       e ? e : "libmecab.so.2");
    }
#define SYM(field, name)                                                                                   \
    do {                                                                                                   \
        *(void **)&g_api.field = dlsym(h, name);                                                           \
        if (!g_api.field)                                                                                  \
            return cp_fail(CP_ERR_DEPENDENCY, "libmecab has no symbol %s (MeCab >= 0.996 needed): " CP_MECAB_INSTALL, \
                           name);                                                                          \
    } while (0)
    SYM(model_new, "mecab_model_new");
    SYM(model_new_tagger, "mecab_model_new_tagger");
    SYM(model_new_lattice, "mecab_model_new_lattice");
    SYM(model_dictionary_info, "mecab_model_dictionary_info");
    SYM(lattice_set_sentence2, "mecab_lattice_set_sentence2");
    SYM(parse_lattice, "mecab_parse_lattice");
    SYM(lattice_get_bos_node, "mecab_lattice_get_bos_node");
    SYM(lattice_strerror, "mecab_lattice_strerror");
    SYM(lattice_destroy, "mecab_lattice_destroy");
    SYM(strerror, "mecab_strerror");
    SYM(version, "mecab_version");
#undef SYM
    snprintf(g_version, sizeof g_version, "%s", g_api.version());

    /* dictionary: $MECAB_DICDIR, Debian's ipadic-utf8, or mecabrc's default */
    const char *dicdir = getenv("MECAB_DICDIR");
    if (!dicdir || !dicdir[0]) dicdir = file_exists("/var/lib/mecab/dic/ipadic-utf8/sys.dic") ? "/var/lib/mecab/dic/ipadic-utf8" : "";
    snprintf(g_dicdir, sizeof g_dicdir, "%s", dicdir);
    /* MeCab refuses to start without an rc file; with an explicit dictionary an empty one will do */
    const char *rc = getenv("MECABRC");
    int have_rc = (rc && file_exists(rc)) || file_exists("/etc/mecabrc") || file_exists("/usr/local/etc/mecabrc");
    char *argv[6];
    int argc = 0;
    argv[argc++] = (char *)"mecab";
    if (!have_rc && dicdir[0]) argv[argc++] = (char *)"-r", argv[argc++] = (char *)"/dev/null";
    if (dicdir[0]) argv[argc++] = (char *)"-d", argv[argc++] = g_dicdir;
    argv[argc] = NULL;
    g_model = g_api.model_new(argc, argv);
    if (!g_model) {
        const char *e = g_api.strerror(NULL);
        return cp_fail(CP_ERR_DEPENDENCY, "MeCab could not load a dictionary%s%s (%s): " CP_MECAB_INSTALL " or set MECAB_DICDIR",
                       dicdir[0] ? " from " : " (mecabrc default)", dicdir, e ? e : "unknown error");
    }
    const cp_mecab_dicinfo *di = g_api.model_dictionary_info(g_model);
    if (di && di->charset && strcasecmp(di->charset, "utf-8") != 0 && strcasecmp(di->charset, "utf8") != 0)
        return cp_fail(CP_ERR_DEPENDENCY, "the MeCab dictionary %s is %s, not UTF-8: " CP_MECAB_INSTALL " or set MECAB_DICDIR",
                       di->filename ? di->filename : "?", di->charset);
    g_tagger = g_api.model_new_tagger(g_model);
    if (!g_tagger) return cp_fail(CP_ERR_DEPENDENCY, "MeCab could not create a tagger: %s", g_api.strerror(NULL));
    if (pthread_key_create(&g_lattice_key, lattice_free) != 0)
        return cp_fail(CP_ERR_INTERNAL, "pthread_key_create failed");
    return CP_OK;
}

int cp_mecab_load(void) {
    pthread_mutex_lock(&g_mu);
    if (g_state == 0) {
        int rc = load_locked();
        if (rc == CP_OK) {
            g_state = 1;
        } else {
            g_state = rc;
            snprintf(g_msg, sizeof g_msg, "%s", cp_last_error());
        }
    }
    int st = g_state;
    pthread_mutex_unlock(&g_mu);
    if (st == 1) return CP_OK;
    return cp_fail(st, "%s", g_msg);
}

const char *cp_mecab_version(void) { return g_version; }
const char *cp_mecab_dicdir(void) { return g_dicdir; }

int cp_mecab_cut(const char *text, size_t len, cp_spans *out) {
    CP_CHECK(cp_mecab_load());
    if (len == 0) return CP_OK;
    void *lat = pthread_getspecific(g_lattice_key);
    if (!lat) {
        lat = g_api.model_new_lattice(g_model);
        if (!lat) return cp_fail(CP_ERR_NOMEM, "MeCab could not create a lattice");
        pthread_setspecific(g_lattice_key, lat);
    }
    /* MeCab reads its sentence up to a NUL (strlen in unknown-word lookup) even when given the length: hand it a
     * NUL-terminated copy, since our text is a (start, len) slice that need not be followed by a NUL */
    char *sentence = malloc(len + 1);
    if (!sentence) return cp_fail(CP_ERR_NOMEM, "out of memory for a %zu-byte text", len);
    memcpy(sentence, text, len);
    sentence[len] = '\0';
    int rc = CP_OK;
    g_api.lattice_set_sentence2(lat, sentence, len);
    if (!g_api.parse_lattice(g_tagger, lat)) {
        const char *e = g_api.lattice_strerror(lat);
        rc = cp_fail(CP_ERR_INTERNAL, "MeCab failed to parse a %zu-byte text: %s", len, e ? e : "?");
    }
    for (const cp_mecab_node *nd = rc == CP_OK ? g_api.lattice_get_bos_node(lat) : NULL; nd && rc == CP_OK;
         nd = nd->next) {
        if (nd->stat == CP_MECAB_BOS || nd->stat == CP_MECAB_EOS || nd->length == 0) continue;
        if (nd->surface < sentence || (size_t)(nd->surface - sentence) + nd->length > len)
            rc = cp_fail(CP_ERR_INTERNAL, "MeCab returned a surface outside the input text");
        else
            rc = cp_spans_push(out, (size_t)(nd->surface - sentence), nd->length);
    }
    /* let the lattice drop its reference to the copy */
    g_api.lattice_set_sentence2(lat, "", 0);
    free(sentence);
    return rc;
}
