#include "gptq/pack/gptq_pack.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "gptq/core/error.h"

namespace gptq::pack {
namespace {

bool is_supported_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

void check_bits(int bits) {
  GPTQ_CHECK(is_supported_bits(bits), "gptq packing: bits must be one of 2, 3, 4, 8, got ", bits);
}

int64_t max_code(int bits) { return (int64_t{1} << bits) - 1; }

// Smallest count of values whose packing fills whole 32-bit words.
int64_t values_per_whole_words(int bits) { return bits == 3 ? 32 : 32 / bits; }

// v1 zero offset for 2/4/8 bits: a 1 in every field of a 32-bit word.
uint32_t ones_in_every_field(int bits) {
  uint32_t word = 0;
  for (int shift = 0; shift < 32; shift += bits) word |= uint32_t{1} << shift;
  return word;
}

std::string shape_str(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t dim = 0; dim < t.dim(); ++dim) {
    if (dim) out += ", ";
    out += std::to_string(t.size(dim));
  }
  return out + "]";
}

// CPU contiguous integer tensor (its own dtype, no widening copy of a large
// code matrix), with its range checked.
at::Tensor checked_integers(const at::Tensor& t, const char* what, int64_t lo, int64_t hi) {
  GPTQ_CHECK(t.defined(), "gptq packing: ", what, " is undefined");
  GPTQ_CHECK(!at::isFloatingType(t.scalar_type()) && !at::isComplexType(t.scalar_type()) &&
                 t.scalar_type() != at::kBool,
             "gptq packing: ", what, " must be an integer tensor, got ", t.scalar_type());
  at::Tensor values = t.to(at::kCPU).contiguous();
  if (values.numel() > 0) {
    const auto [min_tensor, max_tensor] = at::aminmax(values);
    const int64_t min_value = min_tensor.item<int64_t>();
    const int64_t max_value = max_tensor.item<int64_t>();
    GPTQ_CHECK(min_value >= lo && max_value <= hi, "gptq packing: ", what, " values must lie in [",
               lo, ", ", hi, "], found [", min_value, ", ", max_value, "]");
  }
  return values;
}

void check_packable_length(int64_t n, int bits, const char* what) {
  const int64_t unit = values_per_whole_words(bits);
  GPTQ_CHECK(n > 0 && n % unit == 0, "gptq packing: ", what, " (", n, ") must be a positive multiple of ",
             unit, " for ", bits, "-bit packing");
}

// Each row of `values` (uint8 [rows, n]) -> uint32 little-endian bit stream.
at::Tensor pack_rows_u8(const at::Tensor& values, int bits) {
  const int64_t n_rows = values.size(0);
  const int64_t n_values = values.size(1);
  const int64_t n_words = n_values * bits / 32;
  at::Tensor words = at::empty({n_rows, n_words}, at::kInt);
  const uint8_t* src = values.data_ptr<uint8_t>();
  auto* dst = reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>());
  at::parallel_for(0, n_rows, 16, [&](int64_t row_begin, int64_t row_end) {
    for (int64_t row_idx = row_begin; row_idx < row_end; ++row_idx) {
      const uint8_t* row_src = src + row_idx * n_values;
      uint32_t* row_dst = dst + row_idx * n_words;
      uint64_t pending = 0;  // bits not yet written, lowest first
      int n_pending = 0;
      for (int64_t value_idx = 0; value_idx < n_values; ++value_idx) {
        pending |= uint64_t{row_src[value_idx]} << n_pending;
        n_pending += bits;
        if (n_pending >= 32) {
          *row_dst++ = static_cast<uint32_t>(pending);
          pending >>= 32;
          n_pending -= 32;
        }
      }
    }
  });
  return words;
}

// Inverse of pack_rows_u8: uint32 [rows, n_words] -> uint8 [rows, n_words*32/bits].
at::Tensor unpack_rows_u32(const at::Tensor& words, int bits) {
  const int64_t n_rows = words.size(0);
  const int64_t n_words = words.size(1);
  const int64_t n_values = n_words * 32 / bits;
  at::Tensor values = at::empty({n_rows, n_values}, at::kByte);
  const auto* src = reinterpret_cast<const uint32_t*>(words.data_ptr<int32_t>());
  uint8_t* dst = values.data_ptr<uint8_t>();
  const uint64_t mask = static_cast<uint64_t>(max_code(bits));
  at::parallel_for(0, n_rows, 16, [&](int64_t row_begin, int64_t row_end) {
    for (int64_t row_idx = row_begin; row_idx < row_end; ++row_idx) {
      const uint32_t* row_src = src + row_idx * n_words;
      uint8_t* row_dst = dst + row_idx * n_values;
      uint64_t pending = 0;
      int n_pending = 0;
      int64_t word_idx = 0;
      for (int64_t value_idx = 0; value_idx < n_values; ++value_idx) {
        if (n_pending < bits) {
          pending |= uint64_t{row_src[word_idx++]} << n_pending;
          n_pending += 32;
        }
        row_dst[value_idx] = static_cast<uint8_t>(pending & mask);
        pending >>= bits;
        n_pending -= bits;
      }
    }
  });
  return values;
}

// The v1 "minus one" on packed zero words (see the header).
at::Tensor pack_zeros_v1(const at::Tensor& zeros_i64, int bits) {
  if (bits == 3) {
    at::Tensor shifted = ((zeros_i64 - 1) & max_code(bits)).to(at::kByte);
    return pack_rows_u8(shifted, bits);
  }
  at::Tensor words = pack_rows_u8(zeros_i64.to(at::kByte), bits);
  auto* data = reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>());
  const uint32_t offset = ones_in_every_field(bits);
  for (int64_t idx = 0, n = words.numel(); idx < n; ++idx) data[idx] -= offset;  // mod 2^32
  return words;
}

at::Tensor unpack_zeros_v1(const at::Tensor& qzeros, int bits) {
  if (bits == 3) {
    at::Tensor fields = unpack_rows_u32(qzeros, bits).to(at::kInt);
    return (fields + 1) & static_cast<int32_t>(max_code(bits));
  }
  at::Tensor words = qzeros.clone();
  auto* data = reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>());
  const uint32_t offset = ones_in_every_field(bits);
  for (int64_t idx = 0, n = words.numel(); idx < n; ++idx) data[idx] += offset;
  return unpack_rows_u32(words, bits).to(at::kInt);
}

at::Tensor cpu_int32(const at::Tensor& t, const char* what) {
  GPTQ_CHECK(t.defined(), "gptq unpacking: ", what, " is undefined");
  GPTQ_CHECK(t.scalar_type() == at::kInt, "gptq unpacking: ", what, " must be int32, got ",
             t.scalar_type());
  return t.to(at::kCPU).contiguous();
}

}  // namespace

at::Tensor pack_rows(const at::Tensor& values, int bits) {
  check_bits(bits);
  GPTQ_CHECK(values.dim() == 2, "gptq packing: values must be 2-D, got ", shape_str(values));
  check_packable_length(values.size(1), bits, "row length");
  at::Tensor checked = checked_integers(values, "values", 0, max_code(bits));
  return pack_rows_u8(checked.to(at::kByte), bits);
}

at::Tensor unpack_rows(const at::Tensor& words, int bits) {
  check_bits(bits);
  GPTQ_CHECK(words.dim() == 2, "gptq unpacking: words must be 2-D, got ", shape_str(words));
  GPTQ_CHECK(words.size(1) * 32 % bits == 0, "gptq unpacking: ", words.size(1),
             " words per row do not hold whole ", bits, "-bit values");
  return unpack_rows_u32(cpu_int32(words, "words"), bits);
}

at::Tensor sequential_g_idx(int64_t in_features, int64_t group_size) {
  GPTQ_CHECK(in_features > 0, "gptq packing: in_features must be positive, got ", in_features);
  GPTQ_CHECK(group_size == -1 || group_size > 0, "gptq packing: group_size must be -1 or > 0, got ",
             group_size);
  at::Tensor columns = at::arange(in_features, at::kInt);
  return group_size == -1 ? at::zeros_like(columns) : at::div(columns, group_size, "floor");
}

GptqTensors pack_gptq(const at::Tensor& codes, const at::Tensor& zeros, const at::Tensor& scales,
                      const at::Tensor& g_idx, int bits, ZeroEncoding encoding) {
  check_bits(bits);
  GPTQ_CHECK(codes.defined() && zeros.defined() && scales.defined() && g_idx.defined(),
             "gptq packing: codes, zeros, scales and g_idx must all be given");
  GPTQ_CHECK(codes.dim() == 2, "gptq packing: codes must be [out, in], got ", shape_str(codes));
  const int64_t out_features = codes.size(0);
  const int64_t in_features = codes.size(1);
  GPTQ_CHECK(zeros.dim() == 2 && zeros.size(1) == out_features && zeros.size(0) > 0,
             "gptq packing: zeros must be [n_groups, ", out_features, "], got ", shape_str(zeros));
  const int64_t n_groups = zeros.size(0);
  GPTQ_CHECK(scales.dim() == 2 && scales.size(0) == n_groups && scales.size(1) == out_features,
             "gptq packing: scales must be [", n_groups, ", ", out_features, "] like zeros, got ",
             shape_str(scales));
  GPTQ_CHECK(at::isFloatingType(scales.scalar_type()), "gptq packing: scales must be floating, got ",
             scales.scalar_type());
  GPTQ_CHECK(g_idx.dim() == 1 && g_idx.size(0) == in_features, "gptq packing: g_idx must be [",
             in_features, "], got ", shape_str(g_idx));
  check_packable_length(in_features, bits, "in_features");
  check_packable_length(out_features, bits, "out_features");

  at::Tensor codes_u8 = checked_integers(codes, "codes", 0, max_code(bits)).to(at::kByte);
  at::Tensor zeros_i64 = checked_integers(zeros, "zeros", 0, max_code(bits)).to(at::kLong);
  at::Tensor groups = checked_integers(g_idx, "g_idx", 0, n_groups - 1);

  GptqTensors packed;
  packed.qweight = pack_rows_u8(codes_u8, bits).t().contiguous();
  packed.qzeros = encoding == ZeroEncoding::kMinusOne ? pack_zeros_v1(zeros_i64, bits)
                                                      : pack_rows_u8(zeros_i64.to(at::kByte), bits);
  packed.scales = scales.to(at::kCPU, at::kHalf).contiguous();
  packed.g_idx = groups.to(at::kInt);
  return packed;
}

UnpackedGptq unpack_gptq(const GptqTensors& packed, int bits, ZeroEncoding encoding) {
  check_bits(bits);
  at::Tensor qweight = cpu_int32(packed.qweight, "qweight");
  at::Tensor qzeros = cpu_int32(packed.qzeros, "qzeros");
  at::Tensor g_idx = cpu_int32(packed.g_idx, "g_idx");
  GPTQ_CHECK(packed.scales.defined() && packed.scales.dim() == 2,
             "gptq unpacking: scales must be [n_groups, out]");
  GPTQ_CHECK(packed.scales.scalar_type() == at::kHalf, "gptq unpacking: scales must be float16, got ",
             packed.scales.scalar_type());
  GPTQ_CHECK(qweight.dim() == 2 && qzeros.dim() == 2 && g_idx.dim() == 1,
             "gptq unpacking: expected qweight [in*bits/32, out], qzeros [n_groups, out*bits/32], "
             "g_idx [in], got ",
             shape_str(qweight), ", ", shape_str(qzeros), ", ", shape_str(g_idx));
  const int64_t n_groups = packed.scales.size(0);
  const int64_t out_features = packed.scales.size(1);
  const int64_t in_features = g_idx.size(0);
  GPTQ_CHECK(qweight.size(0) * 32 == in_features * bits && qweight.size(1) == out_features,
             "gptq unpacking: qweight ", shape_str(qweight), " does not match in_features ",
             in_features, ", out_features ", out_features, " at ", bits, " bits");
  GPTQ_CHECK(qzeros.size(0) == n_groups && qzeros.size(1) * 32 == out_features * bits,
             "gptq unpacking: qzeros ", shape_str(qzeros), " does not match scales ",
             shape_str(packed.scales), " at ", bits, " bits");
  check_packable_length(in_features, bits, "in_features");
  check_packable_length(out_features, bits, "out_features");
  checked_integers(g_idx, "g_idx", 0, n_groups - 1);

  UnpackedGptq unpacked;
  unpacked.codes = unpack_rows_u32(qweight.t().contiguous(), bits);
  unpacked.zeros = encoding == ZeroEncoding::kMinusOne ? unpack_zeros_v1(qzeros, bits)
                                                       : unpack_rows_u32(qzeros, bits).to(at::kInt);
  unpacked.scales = packed.scales.to(at::kCPU, at::kFloat).contiguous();
  unpacked.g_idx = g_idx;
  return unpacked;
}

at::Tensor dequantize_gptq(const GptqTensors& packed, int bits, ZeroEncoding encoding) {
  UnpackedGptq unpacked = unpack_gptq(packed, bits, encoding);
  at::Tensor group_of_column = unpacked.g_idx.to(at::kLong);
  // [in, out] gathers, transposed once at the end to [out, in].
  at::Tensor zero_per_weight = unpacked.zeros.index_select(0, group_of_column).to(at::kFloat);
  at::Tensor scale_per_weight = unpacked.scales.index_select(0, group_of_column);
  at::Tensor codes = unpacked.codes.t().to(at::kFloat);
  return ((codes - zero_per_weight) * scale_per_weight).t().contiguous();
}

}  // namespace gptq::pack
