/* cp_persist.c — the atomic file writer and the checked reader (see cp_persist.h). */
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
