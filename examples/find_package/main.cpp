// 1. Minimal use of arnorm from a downstream project: one process per GPU,
//    bootstrap through NCCL, one all-reduce, check the result.
//
//    Run as: allreduce_example RANK WORLD NCCL_ID_FILE
//    (rank 0 writes the NCCL unique id to the file; the others read it).
#include <arnorm/arnorm.hpp>
#include <arnorm/arnorm_nccl.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s RANK WORLD NCCL_ID_FILE\n", argv[0]);
    return 2;
  }
  const int rank = std::atoi(argv[1]), world = std::atoi(argv[2]);
  ncclUniqueId id;
  if (rank == 0) {
    ncclGetUniqueId(&id);
    std::ofstream(argv[3], std::ios::binary).write(reinterpret_cast<char*>(&id), sizeof(id));
  } else {
    for (;;) {
      std::ifstream f(argv[3], std::ios::binary);
      if (f.read(reinterpret_cast<char*>(&id), sizeof(id))) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  try {
    arnormComm_t raw = nullptr;
    arnorm::check(arnormCommCreateFromNcclId(&raw, id, rank, world, /*device=*/rank, nullptr));
    arnorm::Communicator comm(raw);

    const size_t n = 7168;  // one token of a 7168-wide model, fp32 for a readable check
    std::vector<float> host(n, static_cast<float>(rank + 1));
    float* buf = nullptr;
    cudaSetDevice(rank);
    cudaMalloc(&buf, n * sizeof(float));
    cudaMemcpy(buf, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    comm.all_reduce(buf, buf, n, ARNORM_FLOAT32, /*stream=*/nullptr);  // in place
    cudaMemcpy(host.data(), buf, n * sizeof(float), cudaMemcpyDeviceToHost);
    comm.check_async();
    const float expect = world * (world + 1) / 2.0f;
    std::printf("rank %d: out[0] = %g (expected %g)\n", rank, host[0], expect);
    cudaFree(buf);
    return host[0] == expect ? 0 : 1;
  } catch (const arnorm::Error& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    return 1;
  }
}
