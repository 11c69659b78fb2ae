// Launchers of the CUDA kernels in trm_ops_cuda.cu. Raw pointers only, no torch headers, so that
// the .cu compiles with plain nvcc; trm_ops.cpp calls these under WITH_CUDA.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace trm_cuda {

// logits [n, v] (float32 if logits_bf16 == 0, else bfloat16 bits), labels [n] (int64 if
// labels_i64 else int32); loss [n] float32, 0 where the label is ignore_index.
// kind: 0 = stablemax, 1 = softmax. A label outside [0, v) gives a NaN loss and, when bad_label
// is not null, sets the device int *bad_label to 1.
void ce_forward(int kind, const void* logits, int logits_bf16, const void* labels, int labels_i64,
                int64_t n, int64_t v, int64_t ignore_index, float* loss, int* bad_label,
                cudaStream_t stream);
// grad_logits [n, v] in the dtype of logits; grad_loss [n] float32.
void ce_backward(int kind, const float* grad_loss, const void* logits, int logits_bf16,
                 const void* labels, int labels_i64, int64_t n, int64_t v, int64_t ignore_index,
                 void* grad_logits, cudaStream_t stream);

// out[b, :] = table[ids[b], :] for float32 rows of width d; an id outside [0, rows) gives
// a NaN row and sets *bad_id to 1 when bad_id is not null.
void gather_rows(const float* table, int64_t rows, int64_t d, const void* ids, int ids_i64,
                 int64_t b, float* out, int* bad_id, cudaStream_t stream);

// Sign-SGD on the u distinct rows uids[u] of table [*, d]: group k owns rows
// offsets[k] .. offsets[k+1]-1 of sorted_grads [b, d] (sorted canonically by the caller), summed
// one after another in float32; then w = w * decay - lr * sign(sum).
void sign_sgd_segments(float* table, int64_t d, const int64_t* uids, const int64_t* offsets,
                       int64_t u, const float* sorted_grads, float decay, float lr,
                       cudaStream_t stream);

}  // namespace trm_cuda
