#pragma once
// GPTQ checkpoint packing, v1 ("quant_method": "gptq", "checkpoint_format": "gptq")
// and v2 ("checkpoint_format": "gptq_v2", the same but zeros stored as they are):
// the four tensors a GPTQ checkpoint stores per quantized linear, byte for byte
// as AutoGPTQ / GPTQModel write them and GPTQModel / vLLM / ExLlama read them.
//
// Per linear `<name>` with out_features = O, in_features = I, G groups, b bits:
//   <name>.qweight  int32   [I*b/32, O]  codes, packed along the input dim
//   <name>.qzeros   int32   [G, O*b/32]  zero points minus one, packed along out
//   <name>.scales   float16 [G, O]
//   <name>.g_idx    int32   [I]          group of each input column (original order)
//   dequantized W[o, i] = (code[o, i] - zero[g_idx[i], o]) * scales[g_idx[i], o]
//
// Bit packing (every bit width, 2/3/4/8): the codes along the packed dimension
// form one little-endian bit stream, code k in stream bits [k*b, (k+1)*b),
// cut into 32-bit words (word w = stream bits [32w, 32w+32), stored as int32
// with the same bits). For b = 2/4/8 that is "32/b codes per word, code j of
// a word at bit b*j". For b = 3 every 32 codes fill exactly 3 words and two
// codes straddle a word boundary:
//   word 0: codes 0..9 at bits 0,3,..,27; bits 30-31 = low 2 bits of code 10
//   word 1: bit 0 = bit 2 of code 10; codes 11..20 at bits 1,4,..,28;
//           bit 31 = low bit of code 21
//   word 2: bits 0-1 = bits 1-2 of code 21; codes 22..31 at bits 2,5,..,29
// qweight: the stream runs down the input dimension of each output column,
//   i.e. qweight[w, o] holds codes of inputs [32w/b, 32(w+1)/b) of output o.
//   Rows stay in the original input order even with act-order (desc_act); the
//   permutation lives only in g_idx.
// qzeros: the stream runs along the output dimension of each group row.
//
// The v1 "zero minus one": what is stored is the packing of (zero - 1).
//   b = 2/4/8: GPTQModel (convert_gptq_v2_to_v1_format) subtracts the constant
//     word 0x55555555 / 0x11111111 / 0x01010101 from each packed 32-bit word
//     (mod 2^32), so a zero of 0 borrows from its neighbour field; readers add
//     the constant back, which restores it exactly. We do the same.
//   b = 3: each 3-bit field holds (zero - 1) mod 8 (GPTQModel's logical shift,
//     since fields straddle words).
//   With sym=True (zero = 2^(b-1)) no zero is 0 and every v1 reader agrees;
//   an asymmetric zero of 0 round-trips through GPTQModel but not through
//   per-field readers (AutoGPTQ, vLLM), a limitation of the v1 format itself,
//   which is why the v1 output format has the solver keep zeros >= 1
//   (pack/format.h). v2 (ZeroEncoding::kExact) stores the zero itself.
//
// Shape requirements (InputError otherwise): b in {2, 3, 4, 8}; for b = 3,
// I and O multiples of 32 (whole 3-word blocks); for b = 2/4/8, I and O
// multiples of 32/b. GPTQModel's own packer and most fast kernels want I and O
// multiples of 32 for every b (and I a multiple of group_size); the format
// itself does not.
//
// All functions take CPU or device tensors and work on CPU copies; results
// are CPU tensors. They throw gptq::InputError on a bad shape, dtype, bit
// width or out-of-range code/zero/group index.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace gptq::pack {

// How qzeros holds the zero points: v1's "zero minus one" or v2's zero as is.
enum class ZeroEncoding { kMinusOne, kExact };

// Exactly what a GPTQ checkpoint stores per linear (see the layout above).
struct GptqTensors {
  at::Tensor qweight;  // int32 [in*bits/32, out]
  at::Tensor qzeros;   // int32 [n_groups, out*bits/32], stored zero minus one (v1)
  at::Tensor scales;   // float16 [n_groups, out]
  at::Tensor g_idx;    // int32 [in]
};

// The logical content of GptqTensors, as the solver produces it.
struct UnpackedGptq {
  at::Tensor codes;   // uint8 [out, in], each in [0, 2^bits - 1]
  at::Tensor zeros;   // int32 [n_groups, out], the true zero point in [0, 2^bits - 1]
  at::Tensor scales;  // float32 [n_groups, out] (the stored fp16 values, widened)
  at::Tensor g_idx;   // int32 [in], each in [0, n_groups)
};

// Packs solver output. codes: any integer dtype [out, in] with values in
// [0, maxq]; zeros: integer [n_groups, out] in [0, maxq]; scales: floating
// [n_groups, out] (rounded to float16); g_idx: integer [in] in [0, n_groups).
GptqTensors pack_gptq(const at::Tensor& codes, const at::Tensor& zeros, const at::Tensor& scales,
                      const at::Tensor& g_idx, int bits,
                      ZeroEncoding encoding = ZeroEncoding::kMinusOne);

// Inverse of pack_gptq: exact for codes and zeros; scales come back as the
// float16 values widened to float32. Checks the tensors' dtypes and shapes
// against each other and `bits`.
UnpackedGptq unpack_gptq(const GptqTensors& packed, int bits,
                         ZeroEncoding encoding = ZeroEncoding::kMinusOne);

// float32 [out, in] = (code - zero[g_idx]) * scale[g_idx], computed in float32
// from the stored float16 scales.
at::Tensor dequantize_gptq(const GptqTensors& packed, int bits,
                           ZeroEncoding encoding = ZeroEncoding::kMinusOne);

// The packed bit stream on its own (exposed for tests and other formats):
// packs each row of `values` (integer [rows, n], values in [0, 2^bits - 1],
// n*bits a multiple of 32) into int32 [rows, n*bits/32], and back.
at::Tensor pack_rows(const at::Tensor& values, int bits);
at::Tensor unpack_rows(const at::Tensor& words, int bits);  // -> uint8 [rows, n]

// The default (no act-order) group index: g_idx[i] = i / group_size, or all
// zeros for group_size = -1.
at::Tensor sequential_g_idx(int64_t in_features, int64_t group_size);

}  // namespace gptq::pack
