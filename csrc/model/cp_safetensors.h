/* cp_safetensors.h — read-only, memory-mapped safetensors files (one file or a sharded HF set).
 *
 * Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[b,e]}, ...,
 * "__metadata__": {...}}, then the data block. On open every entry is checked: known dtype, non-negative shape
 * without overflow, b <= e <= data size, e - b == numel * dtype size. Tensors are never copied on open; the file
 * is mapped PROT_READ and pages are only touched when a tensor is read, so tensors a model does not use (the
 * vision tower of a CLIPModel) are never read from disk.
 */
#ifndef CP_SAFETENSORS_H
#define CP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CP_DT_F64, CP_DT_F32, CP_DT_F16, CP_DT_BF16, CP_DT_I64, CP_DT_I32, CP_DT_I16, CP_DT_I8, CP_DT_U8, CP_DT_BOOL,
    CP_DT_F8_E4M3, CP_DT_F8_E5M2, CP_DT_U16, CP_DT_U32, CP_DT_U64
} cp_dtype;

#define CP_ST_MAX_DIMS 8

typedef struct {
    const char *name;             /* tensor name (owned by the file) */
    cp_dtype dtype;
    int ndim;
    int64_t shape[CP_ST_MAX_DIMS];
    int64_t numel;
    const void *data;             /* inside the read-only mapping */
    size_t nbytes;
    const char *file;             /* path of the file that holds it */
} cp_st_tensor;

typedef struct cp_st_set cp_st_set;

/** Open one .safetensors file, or a directory's model.safetensors / sharded model.safetensors.index.json set.
 *  `path` may be a file path; for a directory pass the directory (the caller decides the file names through
 *  cp_st_open_files when it needs others). *out is freed with cp_st_close. */
int cp_st_open(const char *path, cp_st_set **out);

/** Open an explicit list of files as one set (names must be unique across the files). */
int cp_st_open_files(const char *const *paths, int nfiles, cp_st_set **out);

void cp_st_close(cp_st_set *s);

/** Tensor by name, or NULL when absent. */
const cp_st_tensor *cp_st_find(const cp_st_set *s, const char *name);

/** Number of tensors and the i-th one (in file order). */
size_t cp_st_count(const cp_st_set *s);
const cp_st_tensor *cp_st_at(const cp_st_set *s, size_t i);

/** Name of a dtype ("F32", ...). */
const char *cp_dtype_name(cp_dtype dt);

/** Convert a floating tensor (F32/F16/BF16/F64) to float32 into dst[numel]. Other dtypes: CP_ERR_MODEL_FORMAT. */
int cp_st_to_f32(const cp_st_tensor *t, float *dst);

/* half-precision conversions: cp_common.h */

#ifdef __cplusplus
}
#endif
#endif /* CP_SAFETENSORS_H */
