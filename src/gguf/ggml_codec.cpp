// Packing and unpacking of ggml blocks (layouts: gguf/ggml_codec.h), one row
// per task.
#include "gptq/gguf/ggml_codec.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <array>
#include <atomic>
#include <cstring>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_grid.h"
#include "kquant_fit.h"

namespace gptq::gguf {
namespace {

constexpr int64_t kSuperBlock = detail::kSuperBlock;

uint16_t half_bits(float value) { return c10::Half(value).x; }

float half_value(const uint8_t* bytes) {
  uint16_t bits;
  std::memcpy(&bits, bytes, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

void put_half(uint8_t* out, float value) {
  const uint16_t bits = half_bits(value);
  std::memcpy(out, &bits, 2);
}

// ---- encoders: one block from its codes and the grid's floats ----

// Q4_0 / Q4_1 nibbles: value i in qs[i % 16], high nibble for i >= 16.
void pack_nibbles_32(const uint8_t* q, uint8_t* qs) {
  for (int idx = 0; idx < 16; ++idx) qs[idx] = static_cast<uint8_t>(q[idx] | (q[idx + 16] << 4));
}

// The 12 bytes holding eight 6-bit scales and mins of Q4_K/Q5_K.
void pack_scales_mins(const uint8_t* sc, const uint8_t* m, uint8_t* out) {
  for (int group = 0; group < 4; ++group) {
    out[group] = static_cast<uint8_t>(sc[group] | ((sc[group + 4] >> 4) << 6));
    out[group + 4] = static_cast<uint8_t>(m[group] | ((m[group + 4] >> 4) << 6));
    out[group + 8] = static_cast<uint8_t>((sc[group + 4] & 0xF) | ((m[group + 4] & 0xF) << 4));
  }
}

void unpack_scales_mins(const uint8_t* in, uint8_t* sc, uint8_t* m) {
  for (int group = 0; group < 8; ++group) {
    if (group < 4) {
      sc[group] = in[group] & 63;
      m[group] = in[group + 4] & 63;
    } else {
      sc[group] = static_cast<uint8_t>((in[group + 4] & 0xF) | ((in[group - 4] >> 6) << 4));
      m[group] = static_cast<uint8_t>((in[group + 4] >> 4) | ((in[group] >> 6) << 4));
    }
  }
}

// Q4_K/Q5_K super-block: false when the floats are not d * sc products.
bool encode_k_min_block(GgmlType type, const uint8_t* q, const float* scale, const float* zero,
                        uint8_t* out) {
  float d = 0, dmin = 0;
  std::array<uint8_t, 8> sc{}, m{};
  if (!detail::split_unsigned_scales(scale, 8, d, sc.data()) ||
      !detail::split_unsigned_scales(zero, 8, dmin, m.data())) {
    return false;
  }
  put_half(out, d);
  put_half(out + 2, dmin);
  pack_scales_mins(sc.data(), m.data(), out + 4);
  uint8_t* qs = out + 16;
  if (type == GgmlType::kQ5_K) {
    uint8_t* qh = out + 16;
    qs = out + 48;
    std::memset(qh, 0, 32);
    for (int chunk = 0; chunk < 4; ++chunk) {
      for (int half = 0; half < 2; ++half) {
        for (int l = 0; l < 32; ++l) {
          qh[l] |= static_cast<uint8_t>((q[64 * chunk + 32 * half + l] >> 4) << (2 * chunk + half));
        }
      }
    }
  }
  for (int chunk = 0; chunk < 4; ++chunk) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * chunk + l] =
          static_cast<uint8_t>((q[64 * chunk + l] & 0xF) | ((q[64 * chunk + 32 + l] & 0xF) << 4));
    }
  }
  return true;
}

bool encode_q6_k_block(const uint8_t* q, const float* scale, uint8_t* out) {
  float d = 0;
  std::array<int8_t, 16> sc{};
  if (!detail::split_q6_k_scales(scale, d, sc.data())) return false;
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  for (int half = 0; half < 2; ++half) {
    const uint8_t* qq = q + 128 * half;
    for (int l = 0; l < 32; ++l) {
      ql[64 * half + l] = static_cast<uint8_t>((qq[l] & 0xF) | ((qq[l + 64] & 0xF) << 4));
      ql[64 * half + 32 + l] = static_cast<uint8_t>((qq[l + 32] & 0xF) | ((qq[l + 96] & 0xF) << 4));
      qh[32 * half + l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) |
                                               ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
    }
  }
  std::memcpy(out + 192, sc.data(), 16);
  put_half(out + 208, d);
  return true;
}

// ---- decoders: one block to floats, ggml's arithmetic ----

void decode_block(GgmlType type, const uint8_t* in, float* y) {
  switch (type) {
    case GgmlType::kQ4_0: {
      const float d = half_value(in);
      for (int idx = 0; idx < 16; ++idx) {
        y[idx] = static_cast<float>((in[2 + idx] & 0xF) - 8) * d;
        y[idx + 16] = static_cast<float>((in[2 + idx] >> 4) - 8) * d;
      }
      return;
    }
    case GgmlType::kQ4_1: {
      const float d = half_value(in), m = half_value(in + 2);
      for (int idx = 0; idx < 16; ++idx) {
        y[idx] = static_cast<float>(in[4 + idx] & 0xF) * d + m;
        y[idx + 16] = static_cast<float>(in[4 + idx] >> 4) * d + m;
      }
      return;
    }
    case GgmlType::kQ8_0: {
      const float d = half_value(in);
      for (int idx = 0; idx < 32; ++idx) y[idx] = static_cast<float>(static_cast<int8_t>(in[2 + idx])) * d;
      return;
    }
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K: {
      const float d = half_value(in), dmin = half_value(in + 2);
      std::array<uint8_t, 8> sc{}, m{};
      unpack_scales_mins(in + 4, sc.data(), m.data());
      const bool five_bits = type == GgmlType::kQ5_K;
      const uint8_t* qh = in + 16;
      const uint8_t* qs = five_bits ? in + 48 : in + 16;
      for (int chunk = 0; chunk < 4; ++chunk) {
        for (int half = 0; half < 2; ++half) {
          const int group = 2 * chunk + half;
          const float step = d * sc[group], offset = dmin * m[group];
          for (int l = 0; l < 32; ++l) {
            int q = (qs[32 * chunk + l] >> (4 * half)) & 0xF;
            if (five_bits) q |= ((qh[l] >> group) & 1) << 4;
            y[64 * chunk + 32 * half + l] = step * static_cast<float>(q) - offset;
          }
        }
      }
      return;
    }
    case GgmlType::kQ6_K: {
      const float d = half_value(in + 208);
      const int8_t* sc = reinterpret_cast<const int8_t*>(in + 192);
      for (int half = 0; half < 2; ++half) {
        const uint8_t* ql = in + 64 * half;
        const uint8_t* qh = in + 128 + 32 * half;
        for (int part = 0; part < 4; ++part) {
          for (int l = 0; l < 32; ++l) {
            const int low = (ql[32 * (part % 2) + l] >> (4 * (part / 2))) & 0xF;
            const int q = (low | (((qh[l] >> (2 * part)) & 3) << 4)) - 32;
            const int value_idx = 128 * half + 32 * part + l;
            y[value_idx] = d * static_cast<float>(sc[value_idx / 16]) * static_cast<float>(q);
          }
        }
      }
      return;
    }
    default: break;
  }
  GPTQ_ASSERT(false, "no block decoder for ", type_info(type).name);
}

void check_constant(const at::Tensor& zeros, float expected, std::string_view name) {
  GPTQ_ASSERT(zeros.eq(expected).all().item<bool>(), name, " zero points must all be ", expected);
}

void check_half_exact(const at::Tensor& values, std::string_view what) {
  GPTQ_ASSERT(values.to(at::kHalf).to(at::kFloat).eq(values).all().item<bool>(), what,
              " must be fp16 values");
}

}  // namespace

at::Tensor encode_rows(GgmlType type, const at::Tensor& codes_in, const at::Tensor& scales_in,
                       const at::Tensor& zeros_in) {
  const GgmlTypeInfo& info = type_info(type);
  GPTQ_CHECK(info.quantized, "encode_rows needs a quantized type, got ", info.name);
  GPTQ_CHECK(codes_in.defined() && codes_in.dim() == 2 && codes_in.scalar_type() == at::kByte,
             "codes must be uint8 [rows, cols]");
  const int64_t n_rows = codes_in.size(0), n_cols = codes_in.size(1);
  const int64_t bytes_per_row = row_bytes(type, n_cols);
  const int64_t group_size = ggml_group_size(type), n_groups = n_cols / group_size;
  for (const at::Tensor* param : {&scales_in, &zeros_in}) {
    GPTQ_CHECK(param->defined() && param->dim() == 2 && param->size(0) == n_groups &&
                   param->size(1) == n_rows && param->scalar_type() == at::kFloat,
               "scales and zeros must be float32 [", n_groups, ", ", n_rows, "]");
  }
  const at::Tensor codes = codes_in.cpu().contiguous();
  const at::Tensor scales = scales_in.cpu().t().contiguous();  // [rows, groups]
  const at::Tensor zeros = zeros_in.cpu().t().contiguous();
  const int max_code = (1 << make_ggml_grid(type)->bits()) - 1;
  GPTQ_ASSERT(n_rows == 0 || codes.max().item<int>() <= max_code, "codes above ", max_code);
  switch (type) {
    case GgmlType::kQ4_0: check_constant(zeros, 8, info.name); check_half_exact(scales, "q4_0 d"); break;
    case GgmlType::kQ8_0: check_constant(zeros, 128, info.name); check_half_exact(scales, "q8_0 d"); break;
    case GgmlType::kQ4_1: check_half_exact(scales, "q4_1 d"); check_half_exact(zeros, "q4_1 m"); break;
    case GgmlType::kQ6_K: check_constant(zeros, 32, info.name); break;
    default: break;
  }

  at::Tensor bytes = at::zeros({n_rows, bytes_per_row}, at::kByte);
  const uint8_t* q_all = codes.data_ptr<uint8_t>();
  const float* scale_all = scales.data_ptr<float>();
  const float* zero_all = zeros.data_ptr<float>();
  uint8_t* out_all = bytes.data_ptr<uint8_t>();
  std::atomic<bool> all_split{true};
  at::parallel_for(0, n_rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const uint8_t* q = q_all + row * n_cols;
      const float* scale = scale_all + row * n_groups;
      const float* zero = zero_all + row * n_groups;
      uint8_t* out = out_all + row * bytes_per_row;
      for (int64_t block = 0; block < n_cols / info.block_size; ++block) {
        const int64_t first = block * info.block_size;  // first value of the block
        const int64_t group = first / group_size;
        uint8_t* block_out = out + block * info.type_size;
        switch (type) {
          case GgmlType::kQ4_0:
            put_half(block_out, scale[group]);
            pack_nibbles_32(q + first, block_out + 2);
            break;
          case GgmlType::kQ4_1:
            put_half(block_out, scale[group]);
            put_half(block_out + 2, zero[group]);
            pack_nibbles_32(q + first, block_out + 4);
            break;
          case GgmlType::kQ8_0:
            put_half(block_out, scale[group]);
            for (int idx = 0; idx < 32; ++idx) {
              block_out[2 + idx] = static_cast<uint8_t>(static_cast<int>(q[first + idx]) - 128);
            }
            break;
          case GgmlType::kQ4_K:
          case GgmlType::kQ5_K:
            if (!encode_k_min_block(type, q + first, scale + group, zero + group, block_out)) {
              all_split = false;
            }
            break;
          case GgmlType::kQ6_K:
            if (!encode_q6_k_block(q + first, scale + group, block_out)) all_split = false;
            break;
          default: break;
        }
      }
    }
  });
  GPTQ_ASSERT(all_split.load(), info.name,
              " scales/zeros are not fp16 x integer products of one super-block (not from its grid)");
  return bytes;
}

at::Tensor decode_rows(GgmlType type, const at::Tensor& bytes_in, int64_t n_cols) {
  const GgmlTypeInfo& info = type_info(type);
  const int64_t bytes_per_row = row_bytes(type, n_cols);
  GPTQ_CHECK(bytes_in.defined() && bytes_in.dim() == 2 && bytes_in.scalar_type() == at::kByte &&
                 bytes_in.size(1) == bytes_per_row,
             "a ", info.name, " tensor of ", n_cols, " columns must be uint8 [rows, ", bytes_per_row,
             "]");
  const at::Tensor bytes = bytes_in.cpu().contiguous();
  const int64_t n_rows = bytes.size(0);
  if (!info.quantized) {
    const c10::ScalarType dtype = type == GgmlType::kF32   ? at::kFloat
                                  : type == GgmlType::kF16 ? at::kHalf
                                                           : at::kBFloat16;
    return bytes.view(dtype).reshape({n_rows, n_cols}).to(at::kFloat).clone();
  }
  at::Tensor values = at::empty({n_rows, n_cols}, at::kFloat);
  const uint8_t* in_all = bytes.data_ptr<uint8_t>();
  float* out_all = values.data_ptr<float>();
  const int64_t n_blocks = n_cols / info.block_size;
  at::parallel_for(0, n_rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t block = 0; block < n_blocks; ++block) {
        decode_block(type, in_all + row * bytes_per_row + block * info.type_size,
                     out_all + row * n_cols + block * info.block_size);
      }
    }
  });
  return values;
}

}  // namespace gptq::gguf
