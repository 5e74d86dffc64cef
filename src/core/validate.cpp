#include "core/validate.h"

#include <limits>

#include "core/dtype.h"
#include "core/status.h"

namespace arnorm {

arnormStatus_t validate_buffer(const char* op, const char* name, const void* ptr, size_t bytes,
                               size_t elem_size, int device, const MemoryInspector& mem) {
  if (ptr == nullptr) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: %s is NULL; pass a device buffer of %zu bytes",
                       op, name, bytes);
  }
  if (reinterpret_cast<uintptr_t>(ptr) % elem_size != 0) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: %s (%p) is not aligned to its element size (%zu bytes)", op, name, ptr,
                       elem_size);
  }
  const BufferFacts f = mem.inspect(ptr);
  if (!f.is_device) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: %s (%p) is not device memory (host or unknown pointer); allocate it "
                       "with cudaMalloc on device %d",
                       op, name, ptr, device);
  }
  if (f.device != device) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: %s (%p) lives on device %d but the communicator uses device %d", op, name,
                       ptr, f.device, device);
  }
  if (f.has_range) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    if (p < f.base || p - f.base > f.size) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: %s (%p) lies outside the allocation the driver reports",
                         op, name, ptr);
    }
    // The bytes from ptr to the end of its allocation; for mapped pieces
    // (MemoryInspector::is_mapped_piece), on through the pieces that follow
    // without a gap on the same device. A cudaMalloc allocation ends where
    // it ends, even where another one happens to start right after it.
    size_t left = f.size - (p - f.base);
    if (left < bytes && mem.is_mapped_piece(ptr)) {
      for (uintptr_t end = f.base + f.size; left < bytes;) {
        const void* at = reinterpret_cast<const void*>(end);
        const BufferFacts next = mem.inspect(at);
        if (!next.is_device || next.device != device || !next.has_range || next.base != end || next.size == 0 ||
            !mem.is_mapped_piece(at)) {
          break;
        }
        left += next.size;
        end += next.size;
      }
    }
    if (left < bytes) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "%s: %s (%p) has %zu bytes left in its allocation but the call needs %zu", op, name, ptr,
                         left, bytes);
    }
  }
  return ARNORM_SUCCESS;
}

arnormStatus_t validate_stream(const char* op, cudaStream_t stream, int device, const MemoryInspector& mem) {
  if (stream == nullptr) return ARNORM_SUCCESS;  // the legacy default stream of the comm's device
  int sdev = -1;
  if (!mem.stream_device(stream, &sdev)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: stream %p is not a valid CUDA stream", op,
                       static_cast<void*>(stream));
  }
  if (sdev != device) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: stream belongs to device %d but the communicator uses device %d", op, sdev,
                       device);
  }
  return ARNORM_SUCCESS;
}

arnormStatus_t validate_allreduce(const AllReduceCall& c, int device, const MemoryInspector& mem) {
  const char* op = "arnormAllReduce";
  if (!dtype_valid(c.dtype)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: dtype %d is not one of ARNORM_FLOAT32, ARNORM_FLOAT16, ARNORM_BFLOAT16", op,
                       static_cast<int>(c.dtype));
  }
  if (c.algo < ARNORM_ALGO_AUTO || c.algo > ARNORM_ALGO_NCCL) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: algorithm %d is not an arnormAlgorithm_t", op,
                       static_cast<int>(c.algo));
  }
  const size_t es = dtype_size(c.dtype);
  if (c.count > std::numeric_limits<size_t>::max() / es) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: count %zu overflows the byte size", op, c.count);
  }
  ARNORM_TRY(validate_stream(op, c.stream, device, mem));
  if (c.count == 0) return ARNORM_SUCCESS;  // a no-op; buffers may be NULL
  const size_t bytes = c.count * es;
  ARNORM_TRY(validate_buffer(op, "sendbuf", c.sendbuf, bytes, es, device, mem));
  ARNORM_TRY(validate_buffer(op, "recvbuf", c.recvbuf, bytes, es, device, mem));
  if (c.sendbuf != c.recvbuf && ranges_overlap(c.sendbuf, bytes, c.recvbuf, bytes)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: sendbuf and recvbuf overlap without being equal; pass the same pointer "
                       "for in place, or disjoint buffers",
                       op);
  }
  return ARNORM_SUCCESS;
}

arnormStatus_t validate_add_rmsnorm(const arnormAddRmsNormArgs_t* a, cudaStream_t stream, int device,
                                    const MemoryInspector& mem) {
  const char* op = "arnormAllReduceAddRmsNorm";
  if (a == nullptr) return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: args is NULL", op);
  if (a->struct_size != sizeof(arnormAddRmsNormArgs_t)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: args->struct_size is %zu, expected %zu; start from ARNORM_ADD_RMSNORM_ARGS_INIT", op,
                       a->struct_size, sizeof(arnormAddRmsNormArgs_t));
  }
  const bool no_dtype = a->dtype == ARNORM_DTYPE_UNSET, no_weight_dtype = a->weight_dtype == ARNORM_DTYPE_UNSET;
  if (no_dtype || no_weight_dtype) {
    const char* what = no_dtype && no_weight_dtype ? "dtype and weight_dtype are" : no_dtype ? "dtype is" : "weight_dtype is";
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: %s not set; ARNORM_ADD_RMSNORM_ARGS_INIT leaves dtype (the activations') and "
                       "weight_dtype (gamma's, which may differ) to the caller",
                       op, what);
  }
  if (!dtype_valid(a->dtype) || !dtype_valid(a->weight_dtype)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: dtype %d / weight_dtype %d: each must be ARNORM_FLOAT32, ARNORM_FLOAT16 or "
                       "ARNORM_BFLOAT16",
                       op, static_cast<int>(a->dtype), static_cast<int>(a->weight_dtype));
  }
  if (a->algo < ARNORM_ALGO_AUTO || a->algo > ARNORM_ALGO_NCCL) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: algorithm %d is not an arnormAlgorithm_t", op,
                       static_cast<int>(a->algo));
  }
  if (a->hidden == 0) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: hidden is 0; a row needs at least one element", op);
  }
  if (a->epsilon == ARNORM_EPSILON_UNSET) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "%s: epsilon is not set; ARNORM_ADD_RMSNORM_ARGS_INIT leaves it to the caller: pass the "
                       "model's RMSNorm epsilon (often 1e-5 or 1e-6)",
                       op);
  }
  if (!(a->epsilon >= 0.f) || a->epsilon > 1e30f) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: epsilon %g must be a finite value >= 0", op,
                       static_cast<double>(a->epsilon));
  }
  const size_t es = dtype_size(a->dtype), ws = dtype_size(a->weight_dtype);
  if (a->hidden > std::numeric_limits<size_t>::max() / es / (a->tokens ? a->tokens : 1)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: tokens x hidden overflows the byte size", op);
  }
  ARNORM_TRY(validate_stream(op, stream, device, mem));
  if (a->tokens == 0) return ARNORM_SUCCESS;  // a no-op
  const size_t bytes = a->tokens * a->hidden * es, wbytes = a->hidden * ws;
  ARNORM_TRY(validate_buffer(op, "input", a->input, bytes, es, device, mem));
  ARNORM_TRY(validate_buffer(op, "out", a->out, bytes, es, device, mem));
  ARNORM_TRY(validate_buffer(op, "weight", a->weight, wbytes, ws, device, mem));
  if (a->residual) ARNORM_TRY(validate_buffer(op, "residual", a->residual, bytes, es, device, mem));
  if (a->residual_out) ARNORM_TRY(validate_buffer(op, "residual_out", a->residual_out, bytes, es, device, mem));
  struct Named {
    const char* name;
    const void* ptr;
    size_t bytes;
  };
  const Named inputs[] = {{"input", a->input, bytes}, {"weight", a->weight, wbytes}, {"residual", a->residual, bytes}};
  for (const Named& x : inputs) {
    if (x.ptr && ranges_overlap(a->out, bytes, x.ptr, x.bytes)) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "%s: out overlaps %s; out must be a buffer of its own (the op reads %s after writing out)",
                         op, x.name, x.name);
    }
  }
  if (a->residual_out) {
    if (ranges_overlap(a->out, bytes, a->residual_out, bytes)) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: out overlaps residual_out", op);
    }
    if (ranges_overlap(a->residual_out, bytes, a->input, bytes) ||
        ranges_overlap(a->residual_out, bytes, a->weight, wbytes)) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "%s: residual_out overlaps input or weight; only residual may be updated in place", op);
    }
    if (a->residual && a->residual != a->residual_out && ranges_overlap(a->residual_out, bytes, a->residual, bytes)) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "%s: residual_out overlaps residual without being equal; pass the same pointer to "
                         "update in place, or disjoint buffers",
                         op);
    }
  }
  return ARNORM_SUCCESS;
}

}  // namespace arnorm
