#pragma once
// Shared pieces of the rpc tests: a small solve job, a local solve of it as
// the worker would run it, and byte-exact comparison of two results.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "gptq/rpc/solve_codec.h"
#include "gptq/solver/gptq.h"
#include "testing/free_port.h"

namespace gptq::rpc::testing {

struct Job {
  at::Tensor W;  // float32 [rows, cols]
  at::Tensor H;  // float32 [cols, cols], 2/n X^T X
  solver::GptqConfig config;
};

inline Job make_job(int64_t rows, int64_t cols, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  Job job;
  job.W = at::randn({rows, cols}, generator, at::kFloat);
  const int64_t n_samples = 4 * cols;
  const at::Tensor X = at::randn({n_samples, cols}, generator, at::kFloat);
  job.H = X.t().matmul(X) * (2.0 / static_cast<double>(n_samples));
  job.config.quant = {4, 16, false, false, 0};
  job.config.block_size = 8;
  job.config.desc_act = true;
  return job;
}

inline solver::QuantizedWeight solve_locally(const Job& job) { return solver::gptq_quantize(job.W, job.H, job.config); }

inline void expect_identical(const solver::QuantizedWeight& a, const solver::QuantizedWeight& b) {
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.damp_used, b.damp_used);
  const std::pair<const char*, std::pair<const at::Tensor*, const at::Tensor*>> fields[] = {
      {"codes", {&a.codes, &b.codes}},         {"scales", {&a.scales, &b.scales}},
      {"zeros", {&a.zeros, &b.zeros}},         {"grid_zeros", {&a.grid_zeros, &b.grid_zeros}},
      {"g_idx", {&a.g_idx, &b.g_idx}},         {"dequantized", {&a.dequantized, &b.dequantized}},
      {"row_loss", {&a.row_loss, &b.row_loss}}, {"zero_raised", {&a.zero_raised, &b.zero_raised}}};
  for (const auto& [name, pair] : fields) {
    SCOPED_TRACE(name);
    ASSERT_EQ(pair.first->defined(), pair.second->defined());
    if (!pair.first->defined()) continue;
    ASSERT_EQ(pair.first->scalar_type(), pair.second->scalar_type());
    ASSERT_EQ(pair.first->sizes(), pair.second->sizes());
    const at::Tensor x = pair.first->contiguous();
    const at::Tensor y = pair.second->contiguous();
    EXPECT_EQ(0, std::memcmp(x.const_data_ptr(), y.const_data_ptr(), x.nbytes()));
  }
}

// A loopback port nothing listens on.
inline int unused_port() { return ::gptq::testing::free_port(); }

inline std::string loopback(int port) { return "127.0.0.1:" + std::to_string(port); }

}  // namespace gptq::rpc::testing
