// CUDA kernels of the TRM ops: stablemax / softmax cross-entropy forward and backward, row
// gather, and the segment sum + step of sparse sign-SGD. Raw pointers, no torch headers.
#include "trm_ops_cuda.h"

#include <cstdint>

namespace trm_cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float bf16_to_float(uint16_t bits) {
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

__device__ __forceinline__ uint16_t float_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return static_cast<uint16_t>(u >> 16);
}

__device__ __forceinline__ float load_logit(const void* p, int bf16, int64_t i) {
    return bf16 ? bf16_to_float(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store_logit(void* p, int bf16, int64_t i, float v) {
    if (bf16) static_cast<uint16_t*>(p)[i] = float_to_bf16(v);
    else static_cast<float*>(p)[i] = v;
}

__device__ __forceinline__ int64_t load_index(const void* p, int i64, int64_t i) {
    return i64 ? static_cast<const int64_t*>(p)[i] : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

// stablemax s(x) and its derivative
__device__ __forceinline__ float smax(float x) { return x >= 0.f ? x + 1.f : 1.f / (1.f - x); }
__device__ __forceinline__ float dsmax(float x) {
    if (x >= 0.f) return 1.f;
    float s = 1.f / (1.f - x);
    return s * s;
}

// One thread per row: V is small for TRM (a dozen classes), so the row lives in registers/L1.
__global__ void ce_forward_kernel(int kind, const void* logits, int lbf16, const void* labels, int li64,
                                  int64_t n, int64_t v, int64_t ignore_index, float* loss, int* bad) {
    int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (r >= n) return;
    int64_t y = load_index(labels, li64, r);
    if (y == ignore_index) { loss[r] = 0.f; return; }
    if (y < 0 || y >= v) {  // no sync to report it: flag it (if asked) and poison the loss
        if (bad) *bad = 1;
        loss[r] = NAN;
        return;
    }
    const int64_t base = r * v;
    if (kind == 0) {
        float sy = smax(load_logit(logits, lbf16, base + y)), rest = 0.f;
        for (int64_t j = 0; j < v; ++j)
            if (j != y) rest += smax(load_logit(logits, lbf16, base + j));
        loss[r] = log1pf(rest / sy);  // -log(s_y / (s_y + rest)), no cancellation near 0
    } else {
        float m = -INFINITY;
        for (int64_t j = 0; j < v; ++j) m = fmaxf(m, load_logit(logits, lbf16, base + j));
        float xy = load_logit(logits, lbf16, base + y), rest = 0.f;
        for (int64_t j = 0; j < v; ++j)
            if (j != y) rest += expf(load_logit(logits, lbf16, base + j) - m);
        // as log_softmax does it: loss = -((x_y - m) - log(sum)), 0 when x_y dominates in float32
        loss[r] = -((xy - m) - logf(expf(xy - m) + rest));
    }
}

__global__ void ce_backward_kernel(int kind, const float* go, const void* logits, int lbf16,
                                   const void* labels, int li64, int64_t n, int64_t v,
                                   int64_t ignore_index, void* grad) {
    int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (r >= n) return;
    int64_t y = load_index(labels, li64, r);
    const int64_t base = r * v;
    if (y == ignore_index || y < 0 || y >= v) {
        for (int64_t j = 0; j < v; ++j) store_logit(grad, lbf16, base + j, 0.f);
        return;
    }
    const float g = go[r];
    if (kind == 0) {
        float xy = load_logit(logits, lbf16, base + y), sy = smax(xy), rest = 0.f;
        for (int64_t j = 0; j < v; ++j)
            if (j != y) rest += smax(load_logit(logits, lbf16, base + j));
        float S = sy + rest, gs = g / S;
        for (int64_t j = 0; j < v; ++j) {
            if (j == y) continue;
            store_logit(grad, lbf16, base + j, gs * dsmax(load_logit(logits, lbf16, base + j)));
        }
        // d/dx_y = s'(x_y) (1/S - 1/s_y) = -s'(x_y) rest / (S s_y)
        store_logit(grad, lbf16, base + y, -gs * dsmax(xy) * (rest / sy));
    } else {
        float m = -INFINITY;
        for (int64_t j = 0; j < v; ++j) m = fmaxf(m, load_logit(logits, lbf16, base + j));
        float ey = expf(load_logit(logits, lbf16, base + y) - m), rest = 0.f;
        for (int64_t j = 0; j < v; ++j)
            if (j != y) rest += expf(load_logit(logits, lbf16, base + j) - m);
        float gs = g / (ey + rest);
        for (int64_t j = 0; j < v; ++j) {
            if (j == y) continue;
            store_logit(grad, lbf16, base + j, gs * expf(load_logit(logits, lbf16, base + j) - m));
        }
        store_logit(grad, lbf16, base + y, -gs * rest);  // p_y - 1 = -rest / sum
    }
}

__global__ void gather_rows_kernel(const float* table, int64_t rows, int64_t d, const void* ids,
                                   int i64, int64_t b, float* out, int* bad) {
    int64_t total = b * d;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t k = i / d, c = i - k * d;
        int64_t id = load_index(ids, i64, k);
        if (id < 0 || id >= rows) {
            if (bad) *bad = 1;
            out[i] = NAN;
            continue;
        }
        out[i] = table[id * d + c];
    }
}

// One thread per (distinct id, column): sums its segment in the given order, then steps.
__global__ void sign_sgd_kernel(float* table, int64_t d, const int64_t* uids, const int64_t* offsets,
                                int64_t u, const float* sg, float decay, float lr) {
    int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (i >= u * d) return;
    int64_t k = i / d, c = i - k * d;
    float sum = 0.f;
    for (int64_t r = offsets[k]; r < offsets[k + 1]; ++r) sum = __fadd_rn(sum, sg[r * d + c]);
    float sign = sum > 0.f ? 1.f : (sum < 0.f ? -1.f : 0.f);
    float* w = table + uids[k] * d + c;
    *w = __fsub_rn(__fmul_rn(*w, decay), __fmul_rn(sign, lr));  // no FMA: match the CPU rounding
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

void ce_forward(int kind, const void* logits, int logits_bf16, const void* labels, int labels_i64,
                int64_t n, int64_t v, int64_t ignore_index, float* loss, int* bad_label,
                cudaStream_t stream) {
    if (n == 0) return;
    ce_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(kind, logits, logits_bf16, labels,
                                                              labels_i64, n, v, ignore_index, loss, bad_label);
}

void ce_backward(int kind, const float* grad_loss, const void* logits, int logits_bf16,
                 const void* labels, int labels_i64, int64_t n, int64_t v, int64_t ignore_index,
                 void* grad_logits, cudaStream_t stream) {
    if (n == 0) return;
    ce_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(kind, grad_loss, logits, logits_bf16,
                                                               labels, labels_i64, n, v, ignore_index,
                                                               grad_logits);
}

void gather_rows(const float* table, int64_t rows, int64_t d, const void* ids, int ids_i64,
                 int64_t b, float* out, int* bad_id, cudaStream_t stream) {
    if (b * d == 0) return;
    int64_t nb = (b * d + kThreads - 1) / kThreads;
    unsigned grid = static_cast<unsigned>(nb < 65535 ? nb : 65535);
    gather_rows_kernel<<<grid, kThreads, 0, stream>>>(table, rows, d, ids, ids_i64, b, out, bad_id);
}

void sign_sgd_segments(float* table, int64_t d, const int64_t* uids, const int64_t* offsets,
                       int64_t u, const float* sorted_grads, float decay, float lr,
                       cudaStream_t stream) {
    if (u * d == 0) return;
    sign_sgd_kernel<<<blocks_for(u * d), kThreads, 0, stream>>>(table, d, uids, offsets, u,
                                                                sorted_grads, decay, lr);
}

}  // namespace trm_cuda
