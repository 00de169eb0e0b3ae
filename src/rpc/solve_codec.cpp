#include "gptq/rpc/solve_codec.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>

#include "gptq/core/error.h"

namespace gptq::rpc {
namespace {

// Bounds no real job comes near; they keep a hostile request from asking
// for a 2^31-iteration damping loop.
constexpr int kMaxDampRetries = 1000;
constexpr int kMaxBlockSize = 1 << 16;

WireDType wire_dtype(c10::ScalarType type) {
  switch (type) {
    case at::kFloat: return WireDType::kFloat32;
    case at::kHalf: return WireDType::kFloat16;
    case at::kBFloat16: return WireDType::kBFloat16;
    case at::kByte: return WireDType::kUInt8;
    case at::kInt: return WireDType::kInt32;
    case at::kLong: return WireDType::kInt64;
    default: break;
  }
  throw UnsupportedError(std::string("dtype ") + c10::toString(type) + " cannot travel to a solve worker");
}

c10::ScalarType scalar_type(WireDType dtype) {
  switch (dtype) {
    case WireDType::kFloat32: return at::kFloat;
    case WireDType::kFloat16: return at::kHalf;
    case WireDType::kBFloat16: return at::kBFloat16;
    case WireDType::kUInt8: return at::kByte;
    case WireDType::kInt32: return at::kInt;
    case WireDType::kInt64: return at::kLong;
    default: break;
  }
  throw InputError("unknown wire dtype " + std::to_string(static_cast<int>(dtype)));
}

const WireTensor* find(const std::vector<WireTensor>& tensors, const std::string& name) {
  for (const auto& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

solver::GptqConfig config_of(const WireSettings& settings) {
  solver::GptqConfig config;
  config.quant = {settings.bits, settings.group_size, settings.sym, settings.mse, settings.min_zero};
  solver::validate(config.quant);
  GPTQ_CHECK(settings.grid.empty(), "grid '", settings.grid, "' is not solved by workers (min-max grid only)");
  GPTQ_CHECK(settings.block_size > 0 && settings.block_size <= kMaxBlockSize, "block_size ", settings.block_size,
             " is out of range");
  GPTQ_CHECK(std::isfinite(settings.damp_percent) && settings.damp_percent >= 0 &&
                 std::isfinite(settings.damp_increment) && settings.damp_increment >= 0,
             "damp_percent and damp_increment must be finite and non-negative");
  GPTQ_CHECK(settings.max_damp_retries >= 0 && settings.max_damp_retries <= kMaxDampRetries,
             "max_damp_retries ", settings.max_damp_retries, " is out of range");
  config.block_size = settings.block_size;
  config.damp_percent = settings.damp_percent;
  config.damp_increment = settings.damp_increment;
  config.max_damp_retries = settings.max_damp_retries;
  config.desc_act = settings.desc_act;
  config.static_groups = settings.static_groups;
  return config;
}

// The tensor `name` of `reply` as `type` [shape], or Error naming what is wrong.
at::Tensor expect(const WireReply& reply, const std::string& name, c10::ScalarType type,
                  const std::vector<int64_t>& shape) {
  const WireTensor* wire = find(reply.tensors, name);
  if (wire == nullptr) throw Error("worker reply lacks '" + name + "'");
  if (wire->dtype != wire_dtype(type) || wire->shape != shape) {
    throw Error("worker reply has '" + name + "' of the wrong dtype or shape");
  }
  return from_wire(*wire);
}

}  // namespace

WireTensor to_wire(const std::string& name, const at::Tensor& tensor) {
  WireTensor wire;
  wire.name = name;
  wire.dtype = wire_dtype(tensor.scalar_type());
  const at::Tensor host = tensor.to(at::kCPU).contiguous();
  wire.shape.assign(host.sizes().begin(), host.sizes().end());
  wire.bytes.assign(static_cast<const char*>(host.const_data_ptr()), host.nbytes());
  return wire;
}

at::Tensor from_wire(const WireTensor& wire) {
  const c10::ScalarType type = scalar_type(wire.dtype);
  at::Tensor tensor = at::empty(wire.shape, at::TensorOptions().dtype(type));
  GPTQ_CHECK(tensor.nbytes() == wire.bytes.size(), "tensor '", wire.name, "' has ", wire.bytes.size(),
             " bytes for ", tensor.nbytes(), " its shape needs");
  if (!wire.bytes.empty()) std::memcpy(tensor.data_ptr(), wire.bytes.data(), wire.bytes.size());
  return tensor;
}

WireRequest encode_request(const at::Tensor& W, const at::Tensor& H, const solver::GptqConfig& config,
                           solver::SolveMethod method) {
  GPTQ_ASSERT(!config.grid, "a named grid is solved locally");
  WireRequest request;
  auto& settings = request.settings;
  settings.bits = config.quant.bits;
  settings.group_size = config.quant.group_size;
  settings.sym = config.quant.sym;
  settings.mse = config.quant.mse;
  settings.min_zero = config.quant.min_zero;
  settings.desc_act = config.desc_act;
  settings.static_groups = config.static_groups;
  settings.damp_percent = config.damp_percent;
  settings.damp_increment = config.damp_increment;
  settings.max_damp_retries = config.max_damp_retries;
  settings.block_size = config.block_size;
  settings.method = solver::method_name(method);
  request.tensors.push_back(to_wire("W", W));
  if (H.defined()) request.tensors.push_back(to_wire("H", H));
  return request;
}

solver::QuantizedWeight solve_request(const WireRequest& request, const c10::Device& device) {
  const solver::GptqConfig config = config_of(request.settings);
  const std::string& method = request.settings.method;
  GPTQ_CHECK(method == "gptq" || method == "rtn", "unknown method '", method, "' (gptq or rtn)");
  for (const auto& tensor : request.tensors) {
    GPTQ_CHECK(tensor.name == "W" || tensor.name == "H", "unexpected tensor '", tensor.name, "'");
  }
  const WireTensor* w_wire = find(request.tensors, "W");
  const WireTensor* h_wire = find(request.tensors, "H");
  GPTQ_CHECK(w_wire != nullptr, "the request has no W");
  GPTQ_CHECK(request.tensors.size() == (h_wire ? 2u : 1u), "the request repeats a tensor");
  GPTQ_CHECK(w_wire->dtype == WireDType::kFloat32 || w_wire->dtype == WireDType::kFloat16 ||
                 w_wire->dtype == WireDType::kBFloat16,
             "W must be float32, float16 or bfloat16");
  GPTQ_CHECK(w_wire->shape.size() == 2 && w_wire->shape[0] > 0 && w_wire->shape[1] > 0,
             "W must be 2-D [rows, cols] with rows, cols > 0");
  const int64_t n_cols = w_wire->shape[1];
  at::Tensor W = from_wire(*w_wire);
  GPTQ_CHECK(at::isfinite(W).all().item<bool>(), "W has NaN or Inf entries");
  at::Tensor H;
  if (h_wire != nullptr) {
    GPTQ_CHECK(h_wire->dtype == WireDType::kFloat32, "H must be float32");
    GPTQ_CHECK(h_wire->shape == std::vector<int64_t>({n_cols, n_cols}), "H must be [", n_cols, ", ", n_cols,
               "] for W's ", n_cols, " columns");
    H = from_wire(*h_wire);
    GPTQ_CHECK(at::isfinite(H).all().item<bool>(), "H has NaN or Inf entries");
    H = H.to(device);
  }
  W = W.to(device);
  if (method == "gptq") {
    GPTQ_CHECK(H.defined(), "a GPTQ solve needs H");
    return solver::gptq_quantize(W, H, config);
  }
  return solver::rtn_quantize(W, config, H);
}

WireReply encode_reply(const solver::QuantizedWeight& solved) {
  WireReply reply;
  reply.loss = solved.loss;
  reply.damp_used = solved.damp_used;
  const std::pair<const char*, const at::Tensor*> fields[] = {
      {"codes", &solved.codes},         {"scales", &solved.scales},   {"zeros", &solved.zeros},
      {"grid_zeros", &solved.grid_zeros}, {"g_idx", &solved.g_idx},   {"dequantized", &solved.dequantized},
      {"row_loss", &solved.row_loss},   {"zero_raised", &solved.zero_raised}};
  for (const auto& [name, tensor] : fields) {
    if (tensor->defined()) reply.tensors.push_back(to_wire(name, *tensor));
  }
  return reply;
}

solver::QuantizedWeight decode_reply(const WireReply& reply, int64_t rows, int64_t cols,
                                     const solver::GptqConfig& config) {
  const int64_t group_size = config.quant.group_size;
  const int64_t n_groups = group_size < 0 ? 1 : (cols + group_size - 1) / group_size;
  solver::QuantizedWeight solved;
  solved.codes = expect(reply, "codes", at::kByte, {rows, cols});
  solved.scales = expect(reply, "scales", at::kFloat, {n_groups, rows});
  solved.zeros = expect(reply, "zeros", at::kInt, {n_groups, rows});
  solved.grid_zeros = expect(reply, "grid_zeros", at::kFloat, {n_groups, rows});
  solved.g_idx = expect(reply, "g_idx", at::kInt, {cols});
  solved.dequantized = expect(reply, "dequantized", at::kFloat, {rows, cols});
  solved.row_loss = expect(reply, "row_loss", at::kFloat, {rows});
  solved.zero_raised = expect(reply, "zero_raised", at::kLong, {rows});
  solved.loss = reply.loss;
  solved.damp_used = reply.damp_used;
  const int64_t max_code = (int64_t{1} << config.quant.bits) - 1;
  if (!std::isfinite(reply.loss) || !std::isfinite(reply.damp_used) ||
      solved.codes.max().item<int64_t>() > max_code || solved.g_idx.min().item<int64_t>() < 0 ||
      solved.g_idx.max().item<int64_t>() >= n_groups || !at::isfinite(solved.dequantized).all().item<bool>()) {
    throw Error("worker reply is out of range for the job (codes, groups or a non-finite value)");
  }
  return solved;
}

}  // namespace gptq::rpc
