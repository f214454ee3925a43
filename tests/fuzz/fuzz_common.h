/* fuzz_common.h — helpers shared by the libFuzzer targets in tests/fuzz (never part of the product).
 *
 * Targets get their data (bundled vocabularies, tiny valid models) through environment variables set by
 * tests/fuzz/run.py; files a target writes go to a private temporary folder removed at exit. A target reports a
 * broken invariant with fuzz_die(), which aborts so that libFuzzer records the input as a crash. */
#ifndef CP_FUZZ_COMMON_H
#define CP_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/cp_common.h"

static char fuzz_tmpdir[256];

__attribute__((noreturn, format(printf, 1, 2))) static void fuzz_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FUZZ INVARIANT BROKEN: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static void fuzz_rm_tmpdir(void) {
    if (!fuzz_tmpdir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_tmpdir);
    if (system(cmd) != 0) { /* best effort */
    }
}

/** The private temporary folder (created on first use). */
static const char *fuzz_dir(void) {
    if (!fuzz_tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(fuzz_tmpdir, sizeof fuzz_tmpdir, "%s/cpfuzz.XXXXXX", base && base[0] ? base : "/tmp");
        if (!mkdtemp(fuzz_tmpdir)) fuzz_die("mkdtemp failed");
        atexit(fuzz_rm_tmpdir);
    }
    return fuzz_tmpdir;
}

/** Write data to <tmpdir>/<name>; returns the path (static buffer per call site is not used: caller's buffer). */
static void fuzz_write(const char *name, const void *data, size_t n, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", fuzz_dir(), name);
    char *slash = strrchr(path, '/');
    if (slash && slash != path) { /* make the folder */
        *slash = '\0';
        mkdir(path, 0700);
        *slash = '/';
    }
    FILE *f = fopen(path, "wb");
    if (!f) fuzz_die("cannot write %s", path);
    if (n && fwrite(data, 1, n, f) != n) fuzz_die("short write %s", path);
    fclose(f);
}

/** Read a whole file named by an environment variable (NUL-terminated); exits with a message when unset. */
static char *fuzz_read_env_file(const char *var, size_t *len) {
    const char *p = getenv(var);
    if (!p || !p[0]) {
        fprintf(stderr, "%s is not set (run the fuzzers through tests/fuzz/run.py)\n", var);
        exit(2);
    }
    FILE *f = fopen(p, "rb");
    if (!f) {
        fprintf(stderr, "%s=%s cannot be read\n", var, p);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) exit(2);
    buf[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

static const char *fuzz_env(const char *var) {
    const char *p = getenv(var);
    if (!p || !p[0]) {
        fprintf(stderr, "%s is not set (run the fuzzers through tests/fuzz/run.py)\n", var);
        exit(2);
    }
    return p;
}

/** Every status a core function returns must be CP_OK or one of the documented error codes, with a message. */
static void fuzz_check_status(int rc, const char *what) {
    if (rc == CP_OK) return;
    if (rc < CP_ERR_INTERNAL || rc > CP_ERR_NOMEM) fuzz_die("%s: unknown status %d", what, rc);
    if (rc == CP_ERR_INTERNAL) fuzz_die("%s: internal error: %s", what, cp_last_error());
    if (rc != CP_ERR_NOMEM && cp_last_error()[0] == '\0') fuzz_die("%s: status %d without a message", what, rc);
    cp_clear_error();
}

/** A copy of data[0:n) in its own allocation, so ASan sees any read past the end. */
static char *fuzz_dup(const uint8_t *data, size_t n) {
    char *p = malloc(n ? n : 1);
    if (!p) fuzz_die("malloc");
    if (n) memcpy(p, data, n);
    return p;
}

#endif
