/* cp_persist.c — XXH64, the atomic file writer and the checked reader (see cp_persist.h). */
#define _GNU_SOURCE
#include "base/cp_persist.h"

#include "base/cp_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- XXH64 ------------------------------------------------------------------------------------------ */

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only (x86-64, aarch64) */
    return v;
}
static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t xround(uint64_t acc, uint64_t in) {
    acc += in * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}
static inline uint64_t xmerge(uint64_t acc, uint64_t v) {
    acc ^= xround(0, v);
    return acc * P1 + P4;
}

static uint64_t xtail(uint64_t h, const uint8_t *p, size_t n) {
    while (n >= 8) {
        h ^= xround(0, rd64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8, n -= 8;
    }
    if (n >= 4) {
        h ^= (uint64_t)rd32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4, n -= 4;
    }
    while (n > 0) {
        h ^= (*p) * P5;
        h = rotl64(h, 11) * P1;
        p++, n--;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

uint64_t cp_hash64(const void *data, size_t n, uint64_t seed) {
    const uint8_t *p = (const uint8_t *)data;
    size_t len = n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = xround(v1, rd64(p));
            v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16));
            v4 = xround(v4, rd64(p + 24));
            p += 32, n -= 32;
        } while (n >= 32);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xmerge(h, v1), h = xmerge(h, v2), h = xmerge(h, v3), h = xmerge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    return xtail(h, p, n);
}

void cp_hash64_init(cp_hash64_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->v[0] = seed + P1 + P2, s->v[1] = seed + P2, s->v[2] = seed, s->v[3] = seed - P1;
}

static inline void xstripe(uint64_t *v, const uint8_t *p) {
    v[0] = xround(v[0], rd64(p));
    v[1] = xround(v[1], rd64(p + 8));
    v[2] = xround(v[2], rd64(p + 16));
    v[3] = xround(v[3], rd64(p + 24));
}

void cp_hash64_update(cp_hash64_state *s, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    s->total += n;
    if (s->buffered) {
        size_t take = 32 - s->buffered;
        if (take > n) take = n;
        memcpy(s->buf + s->buffered, p, take);
        s->buffered += (uint32_t)take, p += take, n -= take;
        if (s->buffered < 32) return;
        xstripe(s->v, s->buf);
        s->buffered = 0;
    }
    while (n >= 32) {
        xstripe(s->v, p);
        p += 32, n -= 32;
    }
    if (n) {
        memcpy(s->buf, p, n);
        s->buffered = (uint32_t)n;
    }
}

uint64_t cp_hash64_digest(const cp_hash64_state *s) {
    uint64_t h;
    if (s->total >= 32) {
        const uint64_t *v = s->v;
        h = rotl64(v[0], 1) + rotl64(v[1], 7) + rotl64(v[2], 12) + rotl64(v[3], 18);
        h = xmerge(h, v[0]), h = xmerge(h, v[1]), h = xmerge(h, v[2]), h = xmerge(h, v[3]);
    } else {
        h = s->seed + P5;
    }
    h += s->total;
    return xtail(h, s->buf, s->buffered);
}

/* ---- the atomic writer ------------------------------------------------------------------------------ */

static atomic_uint cp_tmp_counter;

int cp_writer_open(cp_file_writer *w, const char *path) {
    memset(w, 0, sizeof *w);
    size_t n = strlen(path);
    w->path = malloc(n + 1);
    w->tmp_path = malloc(n + 64);
    if (!w->path || !w->tmp_path) {
        free(w->path), free(w->tmp_path);
        memset(w, 0, sizeof *w);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    memcpy(w->path, path, n + 1);
    snprintf(w->tmp_path, n + 64, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&cp_tmp_counter, 1u));
    int fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || (w->f = fdopen(fd, "wb")) == NULL) {
        int e = errno;
        if (fd >= 0) close(fd);
        free(w->path), free(w->tmp_path);
        memset(w, 0, sizeof *w);
        CP_FAIL(CP_ERR_IO, "cannot create a temporary file next to '%s': %s", path, strerror(e));
    }
    cp_hash64_init(&w->h, 0);
    return CP_OK;
}

int cp_writer_write(cp_file_writer *w, const void *data, size_t n) {
    if (w->failed) return CP_ERR_IO;
    if (n == 0) return CP_OK;
    cp_hash64_update(&w->h, data, n);
    if (fwrite(data, 1, n, w->f) != n) {
        w->failed = 1;
        CP_FAIL(CP_ERR_IO, "writing '%s' failed: %s", w->tmp_path, strerror(errno));
    }
    return CP_OK;
}

void cp_writer_abort(cp_file_writer *w) {
    if (w->f) fclose(w->f);
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->tmp_path), free(w->path);
    memset(w, 0, sizeof *w);
}

int cp_writer_commit(cp_file_writer *w) {
    uint64_t sum = cp_hash64_digest(&w->h);
    int rc = CP_OK;
    if (w->failed) rc = CP_ERR_IO;
    if (rc == CP_OK && (fwrite(&sum, 1, 8, w->f) != 8 || fflush(w->f) != 0))
        rc = cp_fail(CP_ERR_IO, "writing '%s' failed: %s", w->tmp_path, strerror(errno));
    if (rc == CP_OK && fsync(fileno(w->f)) != 0)
        rc = cp_fail(CP_ERR_IO, "fsync of '%s' failed: %s", w->tmp_path, strerror(errno));
    if (rc != CP_OK) {
        cp_writer_abort(w);
        return rc;
    }
    int crc = fclose(w->f);
    w->f = NULL;
    if (crc != 0) {
        rc = cp_fail(CP_ERR_IO, "closing '%s' failed: %s", w->tmp_path, strerror(errno));
        cp_writer_abort(w);
        return rc;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        rc = cp_fail(CP_ERR_IO, "renaming '%s' to '%s' failed: %s", w->tmp_path, w->path, strerror(errno));
        cp_writer_abort(w);
        return rc;
    }
    /* make the rename itself durable */
    char *slash = strrchr(w->path, '/');
    const char *dir = ".";
    if (slash) {
        if (slash == w->path) dir = "/";
        else {
            *slash = '\0';
            dir = w->path;
        }
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(w->tmp_path), free(w->path);
    memset(w, 0, sizeof *w);
    return CP_OK;
}

/* ---- the checked reader ----------------------------------------------------------------------------- */

int cp_reader_open(cp_file_reader *r, const char *path, const char *what) {
    memset(r, 0, sizeof *r);
    r->what = what, r->path = path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) CP_FAIL(CP_ERR_IO, "cannot open %s file '%s': %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        CP_FAIL(CP_ERR_IO, "'%s' is not a regular file", path);
    }
    r->f = fdopen(fd, "rb");
    if (!r->f) {
        close(fd);
        CP_FAIL(CP_ERR_IO, "cannot open %s file '%s': %s", what, path, strerror(errno));
    }
    r->size = (uint64_t)st.st_size;
    cp_hash64_init(&r->h, 0);
    if (r->size < 16) {
        cp_reader_close(r);
        CP_FAIL(CP_ERR_INDEX_STATE, "%s file '%s' is truncated (%llu bytes)", what, path,
                (unsigned long long)st.st_size);
    }
    return CP_OK;
}

uint64_t cp_reader_left(const cp_file_reader *r) { return r->size - 8 - r->pos; }

int cp_reader_read(cp_file_reader *r, void *dst, size_t n) {
    if ((uint64_t)n > cp_reader_left(r))
        CP_FAIL(CP_ERR_INDEX_STATE, "%s file '%s' is truncated or corrupt (needs %zu more bytes at offset %llu)",
                r->what, r->path, n, (unsigned long long)r->pos);
    if (n && fread(dst, 1, n, r->f) != n)
        CP_FAIL(CP_ERR_IO, "reading %s file '%s' failed at offset %llu", r->what, r->path, (unsigned long long)r->pos);
    cp_hash64_update(&r->h, dst, n);
    r->pos += n;
    return CP_OK;
}

int cp_reader_finish(cp_file_reader *r) {
    if (cp_reader_left(r) != 0)
        CP_FAIL(CP_ERR_INDEX_STATE, "%s file '%s' is corrupt (%llu unexpected trailing bytes)", r->what, r->path,
                (unsigned long long)cp_reader_left(r));
    uint64_t stored;
    if (fread(&stored, 1, 8, r->f) != 8) CP_FAIL(CP_ERR_IO, "reading %s file '%s' failed", r->what, r->path);
    if (stored != cp_hash64_digest(&r->h))
        CP_FAIL(CP_ERR_INDEX_STATE, "%s file '%s' is corrupt (checksum mismatch)", r->what, r->path);
    return CP_OK;
}

void cp_reader_close(cp_file_reader *r) {
    if (r->f) fclose(r->f);
    r->f = NULL;
}
