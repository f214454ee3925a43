/* cp_persist.h — what the cache and the index share for files: an atomic file writer (temp file + fsync + rename,
 * so a crash never leaves a half-written file under the final name) and a checked reader, both hashing what they
 * pass with XXH64 (base/cp_hash.h).
 *
 * File layout used by both: fourcc (4 bytes) | version u32 | body ... | XXH64(everything before it) u64, all
 * little-endian. A short or corrupt file is CP_ERR_INDEX_STATE; a file that cannot be opened is CP_ERR_IO.
 */
#ifndef CP_PERSIST_H
#define CP_PERSIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/cp_hash.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An atomic writer. open: creates "<path>.tmp.<pid>.<n>" next to `path`; write: appends and hashes;
 *  commit: appends the checksum, flushes, fsyncs, closes and renames onto `path` (then fsyncs the folder);
 *  abort: closes and unlinks the temp file. After commit or abort the writer is finished (abort is safe then). */
typedef struct {
    FILE *f;
    char *tmp_path;
    char *path;
    cp_hash64_state h;
    int failed;
} cp_file_writer;

int cp_writer_open(cp_file_writer *w, const char *path);
int cp_writer_write(cp_file_writer *w, const void *data, size_t n);
int cp_writer_commit(cp_file_writer *w);
void cp_writer_abort(cp_file_writer *w);

/** A checked reader: read fails with CP_ERR_INDEX_STATE ("truncated") when fewer bytes remain than asked for
 *  (the trailing 8-byte checksum is never handed out as body); finish verifies the checksum and that nothing
 *  is left. `what` names the kind of file in messages. */
typedef struct {
    FILE *f;
    uint64_t size;    /* file size */
    uint64_t pos;     /* body bytes consumed */
    cp_hash64_state h;
    const char *what;
    const char *path;
} cp_file_reader;

int cp_reader_open(cp_file_reader *r, const char *path, const char *what);
int cp_reader_read(cp_file_reader *r, void *dst, size_t n);
/** Bytes of body left (before the checksum). */
uint64_t cp_reader_left(const cp_file_reader *r);
int cp_reader_finish(cp_file_reader *r);
void cp_reader_close(cp_file_reader *r);

#ifdef __cplusplus
}
#endif
#endif /* CP_PERSIST_H */
