// The edge-data forms of the CUDA graph queries CAPTURE ORDER makes
// (comm/communicator.h), under one name for every toolkit arnorm builds
// with: CUDA 12.3-12.9 call them cudaStreamGetCaptureInfo_v3,
// cudaGraphNodeGetDependencies_v2 and cudaStreamUpdateCaptureDependencies_v2;
// CUDA 13 gave the plain names those signatures. Edge data is always asked
// for: without it CUDA refuses a query that meets a programmatic edge
// (cudaErrorLossyQuery), and every PDL launch under capture makes one.
#pragma once

#include <cuda_runtime_api.h>

#include <vector>

namespace arnorm {

inline cudaError_t capture_info(cudaStream_t stream, cudaStreamCaptureStatus* status, unsigned long long* id,
                                const cudaGraphNode_t** deps, size_t* num_deps) {
  const cudaGraphEdgeData* edges = nullptr;
#if CUDART_VERSION >= 13000
  return cudaStreamGetCaptureInfo(stream, status, id, nullptr, deps, &edges, num_deps);
#else
  return cudaStreamGetCaptureInfo_v3(stream, status, id, nullptr, deps, &edges, num_deps);
#endif
}

// All of `node`'s dependencies. CUDA fills at most the entries it is given
// and reports how many it filled, so a full buffer is asked again, larger.
inline cudaError_t node_dependencies(cudaGraphNode_t node, std::vector<cudaGraphNode_t>* out) {
  std::vector<cudaGraphEdgeData> edges;
  for (size_t capacity = 8;; capacity *= 4) {
    out->assign(capacity, nullptr);
    edges.assign(capacity, cudaGraphEdgeData{});
    size_t count = capacity;
#if CUDART_VERSION >= 13000
    const cudaError_t e = cudaGraphNodeGetDependencies(node, out->data(), edges.data(), &count);
#else
    const cudaError_t e = cudaGraphNodeGetDependencies_v2(node, out->data(), edges.data(), &count);
#endif
    if (e != cudaSuccess) return e;
    if (count < capacity) {
      out->resize(count);
      return cudaSuccess;
    }
  }
}

// Adds `nodes` to the stream's capture dependencies, as full edges.
inline cudaError_t add_capture_dependencies(cudaStream_t stream, std::vector<cudaGraphNode_t>& nodes) {
#if CUDART_VERSION >= 13000
  return cudaStreamUpdateCaptureDependencies(stream, nodes.data(), nullptr, nodes.size(),
                                             cudaStreamAddCaptureDependencies);
#else
  return cudaStreamUpdateCaptureDependencies_v2(stream, nodes.data(), nullptr, nodes.size(),
                                                cudaStreamAddCaptureDependencies);
#endif
}

}  // namespace arnorm
