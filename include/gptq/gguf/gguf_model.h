#pragma once
// How a Hugging Face model becomes a GGUF file, as llama.cpp's
// convert_hf_to_gguf.py writes it and llama-quantize types it, for
// LlamaForCausalLM, MistralForCausalLM (GGUF architecture "llama"),
// Qwen2ForCausalLM ("qwen2") and Qwen3ForCausalLM ("qwen3").
//
// GgufModelPlan lists every tensor of the file in the converter's order (the
// checkpoint's shards in order, each shard's tensors by name; Llama-3 RoPE's
// generated rope_freqs first) with its GGUF name (token_embd, blk.N.attn_q,
// ..., output_norm, output), its ggml type and the row permutation the
// converter applies to Llama/Mistral Q and K weights (LlamaModel.permute: its
// rope works on interleaved pairs, HF's on halves). Types follow
// llama-quantize's llama_tensor_get_type for the file types below on dense
// models: 1-D tensors (norms, biases) F32; output.weight (or a tied
// token_embd) Q6_K, or Q8_0 for q8_0 and rows that are not whole blocks of
// the file type; attn_v / ffn_down of the layers use_more_bits() picks Q6_K in
// the _M mixes; attn_v of the first 4 layers and ffn_down of the first 1/8
// Q5_K in q4_k (Q4_K_S); attn_v Q5_K where the mix says Q4_K in models
// llama.cpp sizes as 70B (llama: 80 layers with GQA; qwen2: 80 layers); every
// other 2-D tensor the file type's. Not applied: the imatrix-only rule (ffn_down
// of the first 1/8 Q4_1 in q4_0 when llama-quantize is given an imatrix) and the
// 8-expert and Falcon rules (no such family here).
// llama-quantize counts attn_v and ffn_down tensors in layer-number order
// (llama_model_loader's weights_map), not in file order; so do we. A K-quant
// tensor whose rows are not whole 256-value super-blocks falls back as
// llama-quantize does (Q6_K -> Q8_0; Q4_K -> Q5_0 and Q5_K -> Q5_1 are types
// gptq-quant does not write: UnsupportedError naming the tensor).
//
// write_gguf_metadata writes the keys the converter writes for these
// families (general.*, <arch>.block_count, context_length, embedding_length,
// feed_forward_length, attention.head_count(_kv), rope.freq_base, rope
// scaling (linear; yarn with ext/attn factor and betas only where config.json
// gives them; llama3's factors are the rope_freqs tensor),
// attention.layer_norm_rms_epsilon, attention.key_length/value_length when
// config.json gives head_dim, llama's vocab_size and rope.dimension_count,
// general.file_type, general.quantization_version) and the tokenizer
// (gguf/gguf_vocab.h). general.name is the model directory's name;
// general.size_label is not written.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gptq/gguf/ggml_type.h"
#include "gptq/io/safetensors.h"
#include "gptq/model/config.h"

namespace gptq::gguf {

class GgufFileWriter;

// general.file_type values (llama.cpp's llama_ftype) of the types we write.
enum class GgufFileType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 7, kQ4_K_S = 14, kQ4_K_M = 15,
  kQ5_K_S = 16, kQ5_K_M = 17, kQ6_K = 18, kBF16 = 32,
};

// "q4_0", "q4_1", "q8_0", "q4_k" (= q4_k_s), "q5_k" (= q5_k_s), "q6_k",
// "q4_k_m", "q5_k_m", "f16", "bf16", "f32", any case; InputError listing them.
GgufFileType parse_gguf_file_type(const std::string& name);
std::string gguf_file_type_name(GgufFileType type);
// The type of a 2-D tensor no rule singles out.
GgmlType default_tensor_type(GgufFileType type);

// "llama" / "qwen2" / "qwen3"; UnsupportedError naming config.json otherwise.
std::string gguf_architecture(const model::ModelConfig& config);

struct GgufTensorPlan {
  std::string hf_name;             // empty for a tensor the converter generates (rope_freqs)
  std::string name;                // GGUF name, "blk.3.attn_v.weight"
  std::vector<int64_t> shape;      // PyTorch order, [out, in] for a linear
  GgmlType type = GgmlType::kF32;
  int64_t permute_heads = 0;       // > 0: rows permuted as LlamaModel.permute with this many heads
};

struct GgufModelPlan {
  std::string architecture;
  GgufFileType file_type = GgufFileType::kF32;
  std::vector<GgufTensorPlan> tensors;
  at::Tensor rope_freqs;  // float32 [head_dim / 2] for Llama-3 RoPE, else undefined

  // The entry of HF tensor `hf_name`, or null when the file does not hold it.
  const GgufTensorPlan* find(const std::string& hf_name) const;
};

// One source tensor: HF name and PyTorch shape.
struct SourceTensor {
  std::string name;
  std::vector<int64_t> shape;
};
// The tensors of `checkpoint` in the converter's order.
std::vector<SourceTensor> source_tensors(const io::Checkpoint& checkpoint);

// UnsupportedError for a family without a mapping or a tensor the converter
// would not know. `tensors` in the converter's order (source_tensors).
GgufModelPlan plan_gguf_model(const model::ModelConfig& config, const std::vector<SourceTensor>& tensors,
                              GgufFileType file_type);
// The plan of a full-precision checkpoint's own tensors.
GgufModelPlan plan_gguf_model(const model::ModelConfig& config, const io::Checkpoint& checkpoint,
                              GgufFileType file_type);

// The rows of a tensor the caller holds already encoded as plan.type's
// blocks (uint8 [rows, row_bytes], HF row order), or an undefined tensor to
// have write_gguf_model read it from the checkpoint and round it to nearest
// on its type (cast for F32/F16/BF16).
using EncodedRows = std::function<at::Tensor(const GgufTensorPlan& tensor)>;

// The whole file: metadata, then every tensor of `plan` (rope-permuted where
// the plan says); temporary name, rename. Returns its size in bytes.
uint64_t write_gguf_model(const std::filesystem::path& output, const model::ModelConfig& config,
                          const GgufModelPlan& plan, const io::Checkpoint& checkpoint, const EncodedRows& encoded);

// The rows of a Q or K weight (float [rows, cols], or encoded blocks [rows,
// row_bytes]: a permutation of whole rows) in llama.cpp's order.
at::Tensor permute_rows_for_rope(const at::Tensor& rows, int64_t n_heads);

// Every metadata key of the file (model and tokenizer) into `writer`.
void write_gguf_metadata(GgufFileWriter& writer, const model::ModelConfig& config, const GgufModelPlan& plan);

}  // namespace gptq::gguf
