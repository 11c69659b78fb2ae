// TRM's custom ops: bindings, argument checks and the CPU implementation (OpenMP over rows).
// The CUDA kernels live in trm_ops_cuda.cu and are called here when built WITH_CUDA.
//
// - stablemax / softmax cross-entropy over [N, V] logits (float32 or bfloat16), labels [N]
//   (int32 or int64): forward gives the per-row loss in float32 (0 where ignored) and keeps
//   nothing; backward recomputes the row sums from the logits. float32 arithmetic.
// - gather_rows(table [R, D] float32, ids [B]) -> [B, D], with a bounds check on ids.
// - sparse_sign_sgd_(table, ids, grads, lr, wd): in place; repeated ids are summed per column in
//   ascending order of the values, in float32, which is the order ops.py's reference uses, so
//   the result is bitwise the reference's and does not depend on the order of (id, grad) pairs.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#ifdef WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include "trm_ops_cuda.h"
#endif

namespace {

enum Kind { kStablemax = 0, kSoftmax = 1 };

inline float smax(float x) { return x >= 0.f ? x + 1.f : 1.f / (1.f - x); }
inline float dsmax(float x) {
    if (x >= 0.f) return 1.f;
    float s = 1.f / (1.f - x);
    return s * s;
}

int kind_of(const std::string& kind) {
    if (kind == "stablemax") return kStablemax;
    if (kind == "softmax") return kSoftmax;
    TORCH_CHECK(false, "trm_ops: unknown cross-entropy kind '", kind, "'");
}

void check_ce_args(const at::Tensor& logits, const at::Tensor& labels) {
    TORCH_CHECK(logits.dim() == 2, "trm_ops: logits must be [N, V], got ", logits.sizes());
    TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16,
                "trm_ops: logits must be float32 or bfloat16, got ", logits.scalar_type());
    TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0),
                "trm_ops: labels must be [N] with N = ", logits.size(0), ", got ", labels.sizes());
    TORCH_CHECK(labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt,
                "trm_ops: labels must be int32 or int64, got ", labels.scalar_type());
    TORCH_CHECK(logits.is_contiguous() && labels.is_contiguous(), "trm_ops: inputs must be contiguous");
    TORCH_CHECK(logits.device() == labels.device(), "trm_ops: logits and labels on different devices");
    TORCH_CHECK(logits.size(1) > 0, "trm_ops: logits need at least one class");
}

template <typename T, typename L>
void ce_forward_cpu(int kind, const T* x, const L* labels, int64_t n, int64_t v, int64_t ignore,
                    float* loss, int64_t* bad_row) {
    int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
    for (int64_t r = 0; r < n; ++r) {
        const int64_t y = static_cast<int64_t>(labels[r]);
        if (y == ignore) { loss[r] = 0.f; continue; }
        if (y < 0 || y >= v) { bad = std::max(bad, r); loss[r] = 0.f; continue; }
        const T* row = x + r * v;
        if (kind == kStablemax) {
            float sy = smax(static_cast<float>(row[y])), rest = 0.f;
            for (int64_t j = 0; j < v; ++j)
                if (j != y) rest += smax(static_cast<float>(row[j]));
            loss[r] = std::log1p(rest / sy);  // -log(s_y / (s_y + rest)), exact near 0
        } else {
            float m = -INFINITY;
            for (int64_t j = 0; j < v; ++j) m = std::max(m, static_cast<float>(row[j]));
            float xy = static_cast<float>(row[y]), rest = 0.f;
            for (int64_t j = 0; j < v; ++j)
                if (j != y) rest += std::exp(static_cast<float>(row[j]) - m);
            // as log_softmax does it: loss = -((x_y - m) - log(sum)), 0 when x_y dominates in float32
            loss[r] = -((xy - m) - std::log(std::exp(xy - m) + rest));
        }
    }
    *bad_row = bad;
}

template <typename T, typename L>
void ce_backward_cpu(int kind, const float* go, const T* x, const L* labels, int64_t n, int64_t v,
                     int64_t ignore, T* grad) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
        const int64_t y = static_cast<int64_t>(labels[r]);
        const T* row = x + r * v;
        T* g_row = grad + r * v;
        if (y == ignore || y < 0 || y >= v) {
            for (int64_t j = 0; j < v; ++j) g_row[j] = static_cast<T>(0.f);
            continue;
        }
        const float g = go[r];
        if (kind == kStablemax) {
            float xy = static_cast<float>(row[y]), sy = smax(xy), rest = 0.f;
            for (int64_t j = 0; j < v; ++j)
                if (j != y) rest += smax(static_cast<float>(row[j]));
            const float gs = g / (sy + rest);
            for (int64_t j = 0; j < v; ++j)
                if (j != y) g_row[j] = static_cast<T>(gs * dsmax(static_cast<float>(row[j])));
            // d/dx_y = s'(x_y) (1/S - 1/s_y) = -s'(x_y) rest / (S s_y): no cancellation
            g_row[y] = static_cast<T>(-gs * dsmax(xy) * (rest / sy));
        } else {
            float m = -INFINITY;
            for (int64_t j = 0; j < v; ++j) m = std::max(m, static_cast<float>(row[j]));
            float ey = std::exp(static_cast<float>(row[y]) - m), rest = 0.f;
            for (int64_t j = 0; j < v; ++j)
                if (j != y) rest += std::exp(static_cast<float>(row[j]) - m);
            const float gs = g / (ey + rest);
            for (int64_t j = 0; j < v; ++j)
                if (j != y) g_row[j] = static_cast<T>(gs * std::exp(static_cast<float>(row[j]) - m));
            g_row[y] = static_cast<T>(-gs * rest);  // p_y - 1 = -rest / sum
        }
    }
}

template <typename F>
void dispatch_ce(const at::Tensor& logits, const at::Tensor& labels, F&& f) {
    const bool bf16 = logits.scalar_type() == at::kBFloat16;
    const bool i64 = labels.scalar_type() == at::kLong;
    if (bf16 && i64) f(logits.data_ptr<at::BFloat16>(), labels.data_ptr<int64_t>());
    else if (bf16) f(logits.data_ptr<at::BFloat16>(), labels.data_ptr<int32_t>());
    else if (i64) f(logits.data_ptr<float>(), labels.data_ptr<int64_t>());
    else f(logits.data_ptr<float>(), labels.data_ptr<int32_t>());
}

at::Tensor ce_forward(const std::string& kind_name, const at::Tensor& logits, const at::Tensor& labels,
                      int64_t ignore_index) {
    const int kind = kind_of(kind_name);
    check_ce_args(logits, labels);
    const int64_t n = logits.size(0), v = logits.size(1);
    auto loss = at::empty({n}, logits.options().dtype(at::kFloat));
#ifdef WITH_CUDA
    if (logits.is_cuda()) {
        const c10::cuda::CUDAGuard guard(logits.device());
        trm_cuda::ce_forward(kind, logits.data_ptr(), logits.scalar_type() == at::kBFloat16, labels.data_ptr(),
                             labels.scalar_type() == at::kLong, n, v, ignore_index, loss.data_ptr<float>(),
                             nullptr, c10::cuda::getCurrentCUDAStream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return loss;
    }
#endif
    TORCH_CHECK(logits.device().is_cpu(), "trm_ops: built without CUDA, got a tensor on ", logits.device());
    int64_t bad = -1;
    dispatch_ce(logits, labels, [&](auto* x, auto* y) {
        ce_forward_cpu(kind, x, y, n, v, ignore_index, loss.data_ptr<float>(), &bad);
    });
    TORCH_CHECK(bad < 0, "trm_ops: label ", labels[bad].item<int64_t>(), " at row ", bad,
                " is outside [0, ", v, ") and is not ignore_index ", ignore_index);
    return loss;
}

at::Tensor ce_backward(const std::string& kind_name, const at::Tensor& grad_loss, const at::Tensor& logits,
                       const at::Tensor& labels, int64_t ignore_index) {
    const int kind = kind_of(kind_name);
    check_ce_args(logits, labels);
    const int64_t n = logits.size(0), v = logits.size(1);
    auto go = grad_loss.to(at::kFloat).contiguous();
    TORCH_CHECK(go.dim() == 1 && go.size(0) == n, "trm_ops: grad_loss must be [N]");
    auto grad = at::empty_like(logits);
#ifdef WITH_CUDA
    if (logits.is_cuda()) {
        const c10::cuda::CUDAGuard guard(logits.device());
        trm_cuda::ce_backward(kind, go.data_ptr<float>(), logits.data_ptr(), logits.scalar_type() == at::kBFloat16,
                              labels.data_ptr(), labels.scalar_type() == at::kLong, n, v, ignore_index,
                              grad.data_ptr(), c10::cuda::getCurrentCUDAStream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return grad;
    }
#endif
    TORCH_CHECK(logits.device().is_cpu(), "trm_ops: built without CUDA, got a tensor on ", logits.device());
    dispatch_ce(logits, labels, [&](auto* x, auto* y) {
        using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
        ce_backward_cpu(kind, go.data_ptr<float>(), x, y, n, v, ignore_index, grad.data_ptr<T>());
    });
    return grad;
}

std::vector<int64_t> ids_to_vector(const at::Tensor& ids) {
    auto cpu = ids.to(at::kCPU, at::kLong).contiguous();
    const int64_t* p = cpu.data_ptr<int64_t>();
    return std::vector<int64_t>(p, p + cpu.numel());
}

void check_table_ids(const at::Tensor& table, const at::Tensor& ids) {
    TORCH_CHECK(table.dim() == 2, "trm_ops: table must be [rows, D], got ", table.sizes());
    TORCH_CHECK(table.scalar_type() == at::kFloat, "trm_ops: table must be float32, got ", table.scalar_type());
    TORCH_CHECK(table.is_contiguous(), "trm_ops: table must be contiguous");
    TORCH_CHECK(ids.dim() == 1, "trm_ops: ids must be [B], got ", ids.sizes());
    TORCH_CHECK(ids.scalar_type() == at::kLong || ids.scalar_type() == at::kInt,
                "trm_ops: ids must be int32 or int64, got ", ids.scalar_type());
    TORCH_CHECK(ids.device() == table.device(), "trm_ops: table and ids on different devices");
}

template <typename L>
int64_t first_bad_id(const L* ids, int64_t b, int64_t rows) {
    for (int64_t k = 0; k < b; ++k)
        if (ids[k] < 0 || static_cast<int64_t>(ids[k]) >= rows) return k;
    return -1;
}

at::Tensor gather_rows(const at::Tensor& table, const at::Tensor& ids_in) {
    check_table_ids(table, ids_in);
    auto ids = ids_in.contiguous();
    const int64_t rows = table.size(0), d = table.size(1), b = ids.size(0);
    auto out = at::empty({b, d}, table.options());
#ifdef WITH_CUDA
    if (table.is_cuda()) {
        const c10::cuda::CUDAGuard guard(table.device());
        auto bad = at::zeros({1}, table.options().dtype(at::kInt));
        trm_cuda::gather_rows(table.data_ptr<float>(), rows, d, ids.data_ptr(), ids.scalar_type() == at::kLong, b,
                              out.data_ptr<float>(), bad.data_ptr<int>(), c10::cuda::getCurrentCUDAStream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        TORCH_CHECK(bad.item<int>() == 0, "trm_ops.gather_rows: an id is outside [0, ", rows, ")");
        return out;
    }
#endif
    TORCH_CHECK(table.device().is_cpu(), "trm_ops: built without CUDA, got a tensor on ", table.device());
    auto run = [&](auto* idp) {
        int64_t k = first_bad_id(idp, b, rows);
        TORCH_CHECK(k < 0, "trm_ops.gather_rows: id ", static_cast<int64_t>(k >= 0 ? idp[k] : 0),
                    " at position ", k, " is outside the table's rows [0, ", rows, ")");
        const float* src = table.data_ptr<float>();
        float* dst = out.data_ptr<float>();
#pragma omp parallel for schedule(static) if (b * d > 32768)
        for (int64_t i = 0; i < b; ++i)
            std::copy(src + static_cast<int64_t>(idp[i]) * d, src + (static_cast<int64_t>(idp[i]) + 1) * d, dst + i * d);
    };
    if (ids.scalar_type() == at::kLong) run(ids.data_ptr<int64_t>());
    else run(ids.data_ptr<int32_t>());
    return out;
}

void sparse_sign_sgd_(at::Tensor table, const at::Tensor& ids_in, const at::Tensor& grads_in, double lr,
                      double weight_decay) {
    check_table_ids(table, ids_in);
    const int64_t rows = table.size(0), d = table.size(1), b = ids_in.size(0);
    TORCH_CHECK(grads_in.dim() == 2 && grads_in.size(0) == b && grads_in.size(1) == d,
                "trm_ops.sparse_sign_sgd_: grads must be [", b, ", ", d, "], got ", grads_in.sizes());
    TORCH_CHECK(grads_in.device() == table.device(), "trm_ops: table and grads on different devices");
    auto grads = grads_in.to(at::kFloat).contiguous();
    // the same float32 roundings as the reference's w.mul_(1 - lr * wd).sub_(sign * lr)
    const float decay = static_cast<float>(1.0 - lr * weight_decay), flr = static_cast<float>(lr);
    if (b == 0) return;
#ifdef WITH_CUDA
    if (table.is_cuda()) {
        const c10::cuda::CUDAGuard guard(table.device());
        auto ids = ids_in.to(at::kLong);
        // canonical order (by id, then by value within each column), as in the reference
        auto order = grads.argsort(/*stable=*/true, /*dim=*/0);
        order = order.gather(0, ids.index({order}).argsort(/*stable=*/true, /*dim=*/0));
        auto sorted_grads = grads.gather(0, order).contiguous();
        auto sorted_ids = std::get<0>(ids.sort());
        auto uc = at::unique_consecutive(sorted_ids, false, true);
        auto uids = std::get<0>(uc).contiguous();
        auto counts = std::get<2>(uc);
        auto offsets = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)}).contiguous();
        TORCH_CHECK(uids.min().item<int64_t>() >= 0 && uids.max().item<int64_t>() < rows,
                    "trm_ops.sparse_sign_sgd_: an id is outside [0, ", rows, ")");
        trm_cuda::sign_sgd_segments(table.data_ptr<float>(), d, uids.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(),
                                    uids.size(0), sorted_grads.data_ptr<float>(), decay, flr,
                                    c10::cuda::getCurrentCUDAStream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
    }
#endif
    TORCH_CHECK(table.device().is_cpu(), "trm_ops: built without CUDA, got a tensor on ", table.device());
    std::vector<int64_t> ids = ids_to_vector(ids_in);
    for (int64_t k = 0; k < b; ++k)
        TORCH_CHECK(ids[k] >= 0 && ids[k] < rows, "trm_ops.sparse_sign_sgd_: id ", ids[k], " at position ", k,
                    " is outside the table's rows [0, ", rows, ")");
    // positions sorted by id; then groups of equal ids
    std::vector<int64_t> pos(b);
    std::iota(pos.begin(), pos.end(), 0);
    std::stable_sort(pos.begin(), pos.end(), [&](int64_t a, int64_t c) { return ids[a] < ids[c]; });
    std::vector<int64_t> starts;
    for (int64_t k = 0; k < b; ++k)
        if (k == 0 || ids[pos[k]] != ids[pos[k - 1]]) starts.push_back(k);
    starts.push_back(b);
    const int64_t groups = static_cast<int64_t>(starts.size()) - 1;
    const float* g = grads.data_ptr<float>();
    float* w = table.data_ptr<float>();
#pragma omp parallel if (groups * d > 16384)
    {
        std::vector<float> vals;
#pragma omp for schedule(static)
        for (int64_t u = 0; u < groups; ++u) {
            const int64_t lo = starts[u], hi = starts[u + 1];
            float* wrow = w + ids[pos[lo]] * d;
            for (int64_t c = 0; c < d; ++c) {
                float sum;
                if (hi - lo == 1) {
                    sum = g[pos[lo] * d + c];
                } else {
                    vals.clear();
                    for (int64_t k = lo; k < hi; ++k) vals.push_back(g[pos[k] * d + c]);
                    std::sort(vals.begin(), vals.end());
                    sum = 0.f;
                    for (float x : vals) sum += x;
                }
                const float sign = sum > 0.f ? 1.f : (sum < 0.f ? -1.f : 0.f);
                wrow[c] = wrow[c] * decay - sign * flr;
            }
        }
    }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "TRM custom ops: fused cross-entropy, row gather, sparse sign-SGD";
    m.def("ce_forward", &ce_forward, "per-row cross-entropy loss (float32)", py::arg("kind"), py::arg("logits"),
          py::arg("labels"), py::arg("ignore_index"));
    m.def("ce_backward", &ce_backward, "d(sum grad_loss * loss)/d logits", py::arg("kind"), py::arg("grad_loss"),
          py::arg("logits"), py::arg("labels"), py::arg("ignore_index"));
    m.def("gather_rows", &gather_rows, "table[ids]", py::arg("table"), py::arg("ids"));
    m.def("sparse_sign_sgd_", &sparse_sign_sgd_, "in-place sparse sign-SGD step", py::arg("table"), py::arg("ids"),
          py::arg("grads"), py::arg("lr"), py::arg("weight_decay"));
#ifdef WITH_CUDA
    m.attr("with_cuda") = true;
#else
    m.attr("with_cuda") = false;
#endif
}
