/* cp_batch.h — the one way a `*_batch` function reports failures.
 *
 * Every batch function of csrc/ (cp_normalize_batch, cp_clip_clean_batch, cp_segment_batch, cp_bpe_encode_batch,
 * cp_wordpiece_encode_batch, cp_cache_lookup_batch, and the index's row batches cp_index_add / cp_index_search)
 * takes a `cp_batch_status *status` (may be NULL) and returns an int:
 *   CP_OK                  every item succeeded; status = {CP_BATCH_NO_INDEX, CP_OK}.
 *   a CP_ERR_* code        status = {the lowest failing item's index, that item's code}: whichever thread ran the
 *                          items, the lowest index wins, and its message is recorded on the CALLING thread
 *                          (cp_last_error) — worker threads' own last-error slots are not what the caller reads.
 *                          A failure that belongs to no item (a bad argument, memory for the batch itself) has
 *                          index CP_BATCH_NO_INDEX.
 * What happens to the items' outputs on failure is each function's contract (normalize frees them all, ...).
 *
 * cp_batch_errors collects failures from worker threads: note() from any thread (a mutex, taken only on failure),
 * then finish() on the calling thread once the workers are joined.
 */
#ifndef CP_BATCH_H
#define CP_BATCH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CP_BATCH_NO_INDEX SIZE_MAX

typedef struct {
    size_t index; /* the lowest failing item, CP_BATCH_NO_INDEX when none (or none in particular) */
    int code;     /* CP_OK or that item's CP_ERR_* code */
} cp_batch_status;

/** status = {CP_BATCH_NO_INDEX, CP_OK} (NULL safe). */
void cp_batch_status_clear(cp_batch_status *status);

/** Record a failure on the calling thread: status (NULL safe) = {index, code}, the message formatted as cp_fail
 *  does. Returns code. */
int cp_batch_fail(cp_batch_status *status, size_t index, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/** The failures of one batch call, from any number of worker threads. */
typedef struct {
    pthread_mutex_t mu;
    size_t index; /* lowest failing item so far, CP_BATCH_NO_INDEX if none */
    int code;
    char msg[1024]; /* that item's message, copied from the worker's last error */
} cp_batch_errors;

void cp_batch_errors_init(cp_batch_errors *e);
/** Item `index` failed with `code` on this thread: keeps it (and this thread's cp_last_error) if it is the lowest
 *  failing index so far. Thread-safe. */
void cp_batch_errors_note(cp_batch_errors *e, size_t index, int code);
/** Lock-free check for workers that stop early: 1 once some item below `index` has failed. */
int cp_batch_errors_below(cp_batch_errors *e, size_t index);
/** After the workers are done, on the calling thread: sets *status (NULL safe), records the kept message as this
 *  thread's last error, destroys the mutex, and returns CP_OK or the kept code. */
int cp_batch_errors_finish(cp_batch_errors *e, cp_batch_status *status);

#ifdef __cplusplus
}
#endif
#endif /* CP_BATCH_H */
