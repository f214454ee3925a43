/* cp_lowp.h — reduced-precision weights for the encoder engine: bfloat16 (CP_WT_BF16) and int8 (CP_WT_S8).
 *
 * A loaded float32 model is converted once (cp_lowp_convert): every block matrix (fused QKV, attention output, FFN
 * in / out) and the output projection become bf16 or int8; embeddings, biases, LayerNorm gains and the residual
 * stream stay float32. The GEMMs run in oneDNN (matmul primitive over weights pre-packed at load in the blocked
 * layout the library picks for this CPU: AMX, AVX-512 BF16 / VNNI, AVX2 VNNI, ...), found at build time
 * (CP_WITH_DNNL); oneDNN's own ISA cap (ONEDNN_MAX_CPU_ISA) applies.
 *
 *   bf16: W rounded to bf16 (nearest even); x rounded to bf16 per call; products accumulated in float32.
 *   int8: W per output row n: scale_w[n] = max|W[n,:]| / 127, q = round(W / scale_w) in [-127, 127];
 *         x per row m (dynamic): scale_x[m] = max|x[m,:]| / 127; accumulated in int32; y = acc * scale_x * scale_w.
 *
 * Where oneDNN is absent or only has a reference kernel for a type on this CPU (bf16 below AVX-512), a portable
 * path computes the same weights: tiles of W are widened to float32 and multiplied with sgemm (activations stay
 * float32 there: int8 is then weight-only). Results are correct either way; which path runs is reported
 * (cp_lowp_path).
 *
 * Thread safety: conversion runs before the model is shared (at load); the matmul kernels are reentrant (per-thread
 * scratch, a locked primitive cache).
 */
#ifndef CP_LOWP_H
#define CP_LOWP_H

#include <stddef.h>
#include <stdint.h>

#include "model/cp_encoder.h"

#ifdef __cplusplus
extern "C" {
#endif

/** 1 when this build has the oneDNN low-precision GEMMs, else 0. */
int cp_lowp_have_library(void);

/** "oneDNN 2.6.3 (omp)" or "none"; static string. */
const char *cp_lowp_library(void);

/** The CPU ISA the library dispatches to on this machine (after ONEDNN_MAX_CPU_ISA): "avx512_core_amx",
 *  "avx512_core_bf16", "avx512_core_vnni", "avx2_vnni", "avx512_core", "avx2", ..., or "none" without the library. */
const char *cp_lowp_cpu_isa(void);

/** The kernel that runs a matmul of weight type t with shape (n, k) at M rows: oneDNN's implementation name
 *  ("brg:avx512_core_amx", "brg:avx512_core_bf16", ...) or "sgemm-dequant" for the portable path; CP_WT_F32 gives
 *  "sgemm". Static or interned string. */
const char *cp_lowp_path(cp_wtype t, int64_t n, int64_t k);

/** Convert every block matrix and the projection of a float32 model to type t (CP_WT_BF16 or CP_WT_S8; CP_WT_F32 is
 *  a no-op). The converted memory is owned by the model (freed by cp_encoder_free). Errors: CP_ERR_INVALID_ARG (a
 *  type other than F32/BF16/S8, or a model already converted), CP_ERR_NOMEM, CP_ERR_INTERNAL (oneDNN failure). */
int cp_lowp_convert(cp_encoder_model *m, cp_wtype t);

/** dtype="auto": times one layer's matmuls of `m` (float32) at a single prompt's token count (16 rows) and at a
 *  batch's (256), for float32 and bf16, and returns in *out CP_WT_BF16 when bf16 is at least 10% faster at both
 *  sizes, else CP_WT_F32. int8 is never picked (it changes results beyond rounding; it is an explicit choice). The
 *  choice is remembered per (width, ffn) for the life of the process (the report then ends in "(remembered)").
 *  *report (may be NULL) points at a static per-thread text of the timings. Thread-safe (one probe at a time). */
int cp_lowp_pick(const cp_encoder_model *m, cp_wtype *out, const char **report);

/** "float32" | "bfloat16" | "int8" for F32/BF16/S8 ("q4" for CP_WT_Q4). Parse: the same names (also "fp32", "bf16",
 *  "s8"); CP_ERR_INVALID_ARG otherwise. */
const char *cp_lowp_type_name(cp_wtype t);
int cp_lowp_type_parse(const char *s, cp_wtype *out);

#ifdef __cplusplus
}
#endif
#endif /* CP_LOWP_H */
