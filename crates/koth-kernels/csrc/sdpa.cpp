// Fused scaled-dot-product attention through cuDNN's graph API (cudnn-frontend, header-only),
// forward for scoring and training and backward for training. libcudnn is opened at run time
// (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING), so nothing links it at build time and a host without
// it gets a clear error instead of a loader failure.
//
// Layout: q [B, T, Hq, D], k and v [B, T, Hkv, D], o and do/dq [B, T, Hq, D], all contiguous
// (the projections' output, reshaped): cuDNN takes the (b, h, s, d) view through strides, so no
// transpose is ever materialised. stats is [B, Hq, T] f32 (the row log-sum-exp), written by the
// training forward and read by the backward.
#include <cudnn_frontend.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

namespace fe = cudnn_frontend;

namespace cudnn_frontend {
void *cudnn_dlhandle = nullptr;
}

namespace {

std::mutex g_mutex;
std::string g_error;

int fail(std::string message) {
    g_error = std::move(message);
    return 1;
}

bool load_cudnn() {
    if (fe::cudnn_dlhandle != nullptr) return true;
    const char *names[] = {"libcudnn.so.9", "libcudnn.so"};
    std::string tried;
    for (const char *name : names) {
        void *handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
        if (handle != nullptr) {
            fe::cudnn_dlhandle = handle;
            return true;
        }
        const char *why = dlerror();
        tried += std::string(name) + " (" + (why ? why : "unknown") + ") ";
    }
    fail("cuDNN is not loadable: tried " + tried +
         "; put the directory of libcudnn.so.9 (for example PyTorch's nvidia/cudnn/lib) on LD_LIBRARY_PATH");
    return false;
}

enum Uid : int64_t { Q = 1, K, V, O, STATS, DO, DQ, DK, DV };

enum Mode : int { INFER = 0, TRAIN_FWD = 1, BWD = 2 };

using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, float>;

struct Plan {
    std::shared_ptr<fe::graph::Graph> graph;
    int64_t workspace_bytes = 0;
    void *workspace = nullptr;
};

std::map<int, cudnnHandle_t> g_handles;
std::map<Key, std::unique_ptr<Plan>> g_plans;

fe::DataType_t io_type(int dtype) {
    return dtype == 2 ? fe::DataType_t::HALF : fe::DataType_t::BFLOAT16;
}

// The (b, h, s, d) view of a contiguous [B, T, H, D] buffer.
std::shared_ptr<fe::graph::Tensor_attributes> bthd(fe::graph::Graph &g, const char *name, int64_t uid,
                                                   int64_t b, int64_t h, int64_t t, int64_t d) {
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_name(name)
                        .set_uid(uid)
                        .set_dim({b, h, t, d})
                        .set_stride({t * h * d, d, h * d, 1}));
}

int build(Plan &plan, cudnnHandle_t handle, cudaStream_t stream, int mode, int dtype, int64_t b, int64_t hq, int64_t hkv, int64_t t,
          int64_t d, float scale, int deterministic) {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(io_type(dtype))
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto q = bthd(*g, "Q", Q, b, hq, t, d);
    auto k = bthd(*g, "K", K, b, hkv, t, d);
    auto v = bthd(*g, "V", V, b, hkv, t, d);
    if (mode != BWD) {
        auto opts = fe::graph::SDPA_attributes()
                        .set_name("koth_sdpa_fwd")
                        .set_generate_stats(mode == TRAIN_FWD)
                        .set_causal_mask(true)
                        .set_attn_scale(scale);
        auto [o, stats] = g->sdpa(q, k, v, opts);
        o->set_output(true).set_uid(O).set_dim({b, hq, t, d}).set_stride({t * hq * d, d, hq * d, 1});
        if (mode == TRAIN_FWD) {
            stats->set_output(true).set_uid(STATS).set_data_type(fe::DataType_t::FLOAT);
        }
    } else {
        auto o = bthd(*g, "O", O, b, hq, t, d);
        auto dout = bthd(*g, "dO", DO, b, hq, t, d);
        auto stats = g->tensor(fe::graph::Tensor_attributes()
                                   .set_name("Stats")
                                   .set_uid(STATS)
                                   .set_dim({b, hq, t, 1})
                                   .set_stride({hq * t, t, 1, 1})
                                   .set_data_type(fe::DataType_t::FLOAT));
        auto opts = fe::graph::SDPA_backward_attributes()
                        .set_name("koth_sdpa_bwd")
                        .set_causal_mask(true)
                        .set_attn_scale(scale)
                        .set_deterministic_algorithm(deterministic != 0);
        auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dout, stats, opts);
        dq->set_output(true).set_uid(DQ).set_dim({b, hq, t, d}).set_stride({t * hq * d, d, hq * d, 1});
        dk->set_output(true).set_uid(DK).set_dim({b, hkv, t, d}).set_stride({t * hkv * d, d, hkv * d, 1});
        dv->set_output(true).set_uid(DV).set_dim({b, hkv, t, d}).set_stride({t * hkv * d, d, hkv * d, 1});
    }
    auto step = [](const char *what, fe::error_t status) -> int {
        if (status.is_bad()) return fail(std::string("cuDNN SDPA ") + what + ": " + status.get_message());
        return 0;
    };
    if (step("validate", g->validate())) return 1;
    if (step("build_operation_graph", g->build_operation_graph(handle))) return 1;
    if (step("create_execution_plans", g->create_execution_plans({fe::HeurMode_t::A}))) return 1;
    if (step("check_support", g->check_support(handle))) return 1;
    if (step("build_plans", g->build_plans(fe::BuildPlanPolicy_t::HEURISTICS_CHOICE))) return 1;
    int64_t ws = 0;
    if (step("get_workspace_size", g->get_workspace_size(ws))) return 1;
    if (ws > 0) {
        // From the stream-ordered pool, like every other koth allocation, so peak-memory
        // measurements see it; kept for the plan's lifetime.
        cudaError_t e = cudaMallocAsync(&plan.workspace, static_cast<size_t>(ws), stream);
        if (e != cudaSuccess) return fail(std::string("cuDNN SDPA workspace: ") + cudaGetErrorString(e));
    }
    plan.graph = g;
    plan.workspace_bytes = ws;
    return 0;
}

Plan *plan_for(cudnnHandle_t handle, cudaStream_t stream, int device, int mode, int dtype, int64_t b, int64_t hq, int64_t hkv,
               int64_t t, int64_t d, float scale, int deterministic) {
    Key key{device, mode * 10 + dtype, b, hq, hkv, t, d, deterministic, 0, scale};
    auto it = g_plans.find(key);
    if (it != g_plans.end()) return it->second.get();
    auto plan = std::make_unique<Plan>();
    if (build(*plan, handle, stream, mode, dtype, b, hq, hkv, t, d, scale, deterministic) != 0) return nullptr;
    Plan *raw = plan.get();
    g_plans.emplace(key, std::move(plan));
    return raw;
}

cudnnHandle_t handle_for(int device) {
    auto it = g_handles.find(device);
    if (it != g_handles.end()) return it->second;
    cudnnHandle_t handle = nullptr;
    auto status = fe::detail::create_handle(&handle);
    if (status != CUDNN_STATUS_SUCCESS) {
        fail(std::string("cudnnCreate failed: ") + fe::detail::get_error_string(status));
        return nullptr;
    }
    g_handles.emplace(device, handle);
    return handle;
}

int run(int mode, int dtype, int64_t b, int64_t hq, int64_t hkv, int64_t t, int64_t d, float scale,
        int deterministic, std::map<int64_t, void *> ptrs, void *stream) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (dtype != 1 && dtype != 2) return fail("cuDNN SDPA needs bf16 or f16 tensors");
    if (hkv <= 0 || hq % hkv != 0) return fail("cuDNN SDPA: query heads must be a multiple of kv heads");
    if (d % 8 != 0 || d > 256) return fail("cuDNN SDPA: head_dim must be a multiple of 8 and at most 256");
    try {
        if (!load_cudnn()) return 1;
        int device = 0;
        if (cudaGetDevice(&device) != cudaSuccess) return fail("cudaGetDevice failed");
        cudnnHandle_t handle = handle_for(device);
        if (handle == nullptr) return 1;
        auto status = fe::detail::set_stream(handle, static_cast<cudaStream_t>(stream));
        if (status != CUDNN_STATUS_SUCCESS) {
            return fail(std::string("cudnnSetStream failed: ") + fe::detail::get_error_string(status));
        }
        Plan *plan = plan_for(handle, static_cast<cudaStream_t>(stream), device, mode, dtype, b, hq, hkv, t, d, scale, deterministic);
        if (plan == nullptr) return 1;
        std::unordered_map<int64_t, void *> pack(ptrs.begin(), ptrs.end());
        auto e = plan->graph->execute(handle, pack, plan->workspace);
        if (e.is_bad()) return fail(std::string("cuDNN SDPA execute: ") + e.get_message());
    } catch (const std::exception &ex) {
        return fail(std::string("cuDNN SDPA: ") + ex.what());
    }
    return 0;
}

}  // namespace

extern "C" {

const char *koth_sdpa_last_error() { return g_error.c_str(); }

// Forward. `stats` may be null (scoring); when given, the row log-sum-exp is written for the
// backward.
int koth_sdpa_fwd(int dtype, int64_t b, int64_t hq, int64_t hkv, int64_t t, int64_t d, float scale,
                  const void *q, const void *k, const void *v, void *o, float *stats, void *stream) {
    std::map<int64_t, void *> ptrs{{Q, const_cast<void *>(q)},
                                   {K, const_cast<void *>(k)},
                                   {V, const_cast<void *>(v)},
                                   {O, o}};
    if (stats != nullptr) ptrs[STATS] = stats;
    return run(stats != nullptr ? TRAIN_FWD : INFER, dtype, b, hq, hkv, t, d, scale, 0, ptrs, stream);
}

int koth_sdpa_bwd(int dtype, int64_t b, int64_t hq, int64_t hkv, int64_t t, int64_t d, float scale,
                  int deterministic, const void *q, const void *k, const void *v, const void *o,
                  const void *dout, const float *stats, void *dq, void *dk, void *dv, void *stream) {
    std::map<int64_t, void *> ptrs{{Q, const_cast<void *>(q)},   {K, const_cast<void *>(k)},
                                   {V, const_cast<void *>(v)},   {O, const_cast<void *>(o)},
                                   {DO, const_cast<void *>(dout)}, {STATS, const_cast<float *>(stats)},
                                   {DQ, dq},                     {DK, dk},
                                   {DV, dv}};
    return run(BWD, dtype, b, hq, hkv, t, d, scale, deterministic, ptrs, stream);
}
}
