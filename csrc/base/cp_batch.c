/* cp_batch.c — batch failure reporting (see cp_batch.h). */
#include "base/cp_batch.h"

#include <stdarg.h>
#include <stdio.h>

#include "base/cp_common.h"

void cp_batch_status_clear(cp_batch_status *status) {
    if (status) status->index = CP_BATCH_NO_INDEX, status->code = CP_OK;
}

int cp_batch_fail(cp_batch_status *status, size_t index, int code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status) status->index = index, status->code = code;
    return cp_fail(code, "%s", msg);
}

void cp_batch_errors_init(cp_batch_errors *e) {
    pthread_mutex_init(&e->mu, NULL);
    __atomic_store_n(&e->index, CP_BATCH_NO_INDEX, __ATOMIC_RELAXED);
    e->code = CP_OK;
    e->msg[0] = '\0';
}

void cp_batch_errors_note(cp_batch_errors *e, size_t index, int code) {
    pthread_mutex_lock(&e->mu);
    if (index < e->index) {
        e->code = code;
        snprintf(e->msg, sizeof e->msg, "%s", cp_last_error());
        __atomic_store_n(&e->index, index, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&e->mu);
}

int cp_batch_errors_below(cp_batch_errors *e, size_t index) {
    return __atomic_load_n(&e->index, __ATOMIC_RELAXED) < index;
}

int cp_batch_errors_finish(cp_batch_errors *e, cp_batch_status *status) {
    pthread_mutex_destroy(&e->mu);
    if (e->index == CP_BATCH_NO_INDEX) {
        cp_batch_status_clear(status);
        return CP_OK;
    }
    if (status) status->index = e->index, status->code = e->code;
    return cp_fail(e->code, "%s", e->msg[0] ? e->msg : cp_status_name(e->code));
}
