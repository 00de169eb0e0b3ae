// Decoder block forward: RMSNorm, RoPE, GQA causal attention, SwiGLU MLP or a
// sparse MoE MLP (routed experts, optional shared expert).
// Numerics follow transformers' Llama family (sdpa attention) op for op.
#include "gptq/model/forward.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>

#include "gptq/core/error.h"
#include "gptq/model/activation_file.h"
#include "gptq/model/mla.h"
#include "gptq/model/moe.h"

namespace gptq::model {
namespace {

// Rows [start, start + count) of a [B, ...] tensor, as a view.
at::Tensor rows(const at::Tensor& t, int64_t start, int64_t count) { return t.narrow(0, start, count); }

at::Tensor linear(const BlockWeights& weights, const std::string& name, const at::Tensor& x) {
  const at::Tensor* bias = weights.find(name + ".bias");
  return at::linear(x, weights.at(name + ".weight"), bias ? *bias : at::Tensor());
}

// The block's state while it runs over chunks of rows. Two drivers share the
// per-row pieces: forward_rows (one chunk through the whole block) and
// forward_observed (stage by stage over all rows, the observer between stages).
class BlockRun {
 public:
  BlockRun(const ModelConfig& config, const LayerSpec& layer, BlockWeights& weights,
           const RotaryCache& rope, int64_t rows_per_chunk)
      : config_(config), layer_(layer), weights_(weights), rope_(rope),
        rows_per_chunk_(rows_per_chunk) {}

  at::Tensor forward_rows(const at::Tensor& x) {
    at::Tensor h = x + attention_output(attention_rows(attention_input(x)));
    if (layer_.is_moe()) {
      h.add_(moe_rows(mlp_input(h)));
    } else {
      h.add_(mlp_output(mlp_hidden(mlp_input(h))));
    }
    return h;
  }

  // Tensors of hidden size (x, a norm's output, the attention output, the
  // residual h) exist for all rows; those of intermediate size for one chunk,
  // except the MLP activation when it fits options.max_held_bytes.
  at::Tensor forward_observed(const at::Tensor& x, GroupObserver& observer,
                              const BlockOptions& options, BlockStats& stats) {
    const int64_t n_rows = x.size(0);
    const int64_t n_tokens = x.size(1);
    offload_dir_ = x.device().is_cpu() ? options.offload_dir : std::filesystem::path();
    stats.rows_per_chunk = rows_per_chunk_;
    stats.sparse_mlp = false;
    stats.n_chunks = (n_rows + rows_per_chunk_ - 1) / rows_per_chunk_;
    stats.mlp_hidden_bytes =
        n_rows * n_tokens * layer_.intermediate_size * static_cast<int64_t>(x.element_size());
    auto chunks_of = [](const at::Tensor& t) {
      return [&t](int64_t start, int64_t count) { return rows(t, start, count); };
    };

    at::Tensor normed = map_chunks(n_rows, [&](int64_t start, int64_t count) {
      return attention_input(rows(x, start, count));
    });
    observe_site(InputSite::kAttentionInput, observer, n_rows, chunks_of(normed));
    // MLA's latents, from the (by now final) input projections, one chunk at a time.
    observe_site(InputSite::kQueryLatent, observer, n_rows, [&](int64_t start, int64_t count) {
      return mla_query_latent(config_, layer_, weights_, rows(normed, start, count));
    });
    observe_site(InputSite::kKvLatent, observer, n_rows, [&](int64_t start, int64_t count) {
      return mla_kv_latent(config_, layer_, weights_, rows(normed, start, count));
    });
    at::Tensor attended = map_chunks(n_rows, [&](int64_t start, int64_t count) {
      return attention_rows(rows(normed, start, count));
    });
    normed.reset();
    observe_site(InputSite::kAttentionOutput, observer, n_rows, chunks_of(attended));
    at::Tensor h = all_rows(x.sizes(), x.options());
    for_chunks(n_rows, [&](int64_t start, int64_t count) {
      at::Tensor out = rows(h, start, count);
      at::add_out(out, rows(x, start, count), attention_output(rows(attended, start, count)));
    });
    attended.reset();
    normed = map_chunks(n_rows, [&](int64_t start, int64_t count) {
      return mlp_input(rows(h, start, count));
    });
    if (layer_.is_moe()) {
      moe_observed(normed, h, observer, options, stats);
      return h;
    }
    observe_site(InputSite::kMlpInput, observer, n_rows, chunks_of(normed));

    // The activation feeds down_proj's Hessian and then the output: held, or
    // recomputed from the (by then final) gate/up weights.
    const bool observes_activation = !layer_.groups_at(InputSite::kMlpHidden).empty();
    at::Tensor held;
    if (observes_activation && options.max_held_bytes > 0 &&
        stats.mlp_hidden_bytes <= options.max_held_bytes) {
      held = all_rows({n_rows, n_tokens, layer_.intermediate_size}, x.options());
    }
    stats.mlp_recomputed = observes_activation && !held.defined();
    observe_site(InputSite::kMlpHidden, observer, n_rows, [&](int64_t start, int64_t count) {
      return mlp_hidden(rows(normed, start, count), held.defined() ? rows(held, start, count) : at::Tensor());
    });
    if (held.defined()) normed.reset();
    for_chunks(n_rows, [&](int64_t start, int64_t count) {
      at::Tensor act = held.defined() ? rows(held, start, count) : mlp_hidden(rows(normed, start, count));
      rows(h, start, count).add_(mlp_output(act));
    });
    return h;
  }

 private:
  at::Tensor norm(const NormSpec& spec, const at::Tensor& x) {
    return apply_norm(spec.kind, x, weights_.at(spec.name + ".weight"), spec.eps.value_or(config_.rms_norm_eps));
  }
  at::Tensor attention_input(const at::Tensor& x) { return norm(layer_.input_norm, x); }
  at::Tensor mlp_input(const at::Tensor& h) { return norm(layer_.post_attention_norm, h); }
  // o_proj(attended), then Gemma's post-attention norm (before the residual add).
  at::Tensor attention_output(const at::Tensor& attended) {
    at::Tensor out = linear(weights_, layer_.attention.o_proj, attended);
    return layer_.attention_output_norm.present() ? norm(layer_.attention_output_norm, out) : out;
  }
  // down_proj(act), then Gemma's post-feedforward norm.
  at::Tensor mlp_output(const at::Tensor& act) {
    at::Tensor out = linear(weights_, layer_.mlp.down_proj, act);
    return layer_.mlp_output_norm.present() ? norm(layer_.mlp_output_norm, out) : out;
  }
  // act(gate(normed)) * up(normed), computed in `out` when given (a slice of
  // the held activation); gate's own output is dropped before up's exists, so
  // a chunk peaks at two [rows, T, inter] tensors. A fused gate_up linear
  // (Phi-3) makes both halves at once: [rows, T, 2 inter].
  at::Tensor mlp_hidden(const at::Tensor& normed, at::Tensor out = {}) {
    const MlpSpec& mlp = layer_.mlp;
    GPTQ_ASSERT(mlp.kind == MlpKind::kDenseGated);
    if (!mlp.gate_up_proj.empty()) {
      const int64_t width = layer_.intermediate_size;
      const at::Tensor fused = linear(weights_, mlp.gate_up_proj, normed);
      at::Tensor gate = fused.narrow(-1, 0, width);
      at::Tensor gated = out.defined() ? out.copy_(gate) : gate.clone();
      return activate_(mlp.activation, gated).mul_(fused.narrow(-1, width, width));
    }
    at::Tensor gate = linear(weights_, mlp.gate_proj, normed);
    if (out.defined()) gate = out.copy_(gate);
    at::Tensor& gated = activate_(mlp.activation, gate);
    return gated.mul_(linear(weights_, mlp.up_proj, normed));
  }

  // A tensor for all rows: in RAM, or in a file under --offload-activations.
  at::Tensor all_rows(at::IntArrayRef sizes, const at::TensorOptions& options) const {
    if (offload_dir_.empty()) return at::empty(sizes, options);
    return file_backed_empty(offload_dir_, sizes, options.dtype().toScalarType());
  }

  template <class Fn>
  void for_chunks(int64_t n_rows, Fn&& fn) {
    for (int64_t start = 0; start < n_rows; start += rows_per_chunk_) {
      fn(start, std::min(rows_per_chunk_, n_rows - start));
      if (!offload_dir_.empty()) write_back_activation_files();
    }
  }

  // fn(start, count) -> [count, T, C] written into one [n_rows, T, C] tensor
  // (preallocated rather than concatenated, so the parts and the whole never coexist).
  template <class Fn>
  at::Tensor map_chunks(int64_t n_rows, Fn&& fn) {
    at::Tensor out;
    for_chunks(n_rows, [&](int64_t start, int64_t count) {
      at::Tensor part = fn(start, count);
      if (!out.defined()) out = all_rows({n_rows, part.size(1), part.size(2)}, part.options());
      rows(out, start, count).copy_(part);
    });
    return out;
  }

  // Feeds every group reading from `site` the chunks input(start, count)
  // (every token: a dense layer's groups), then finishes those groups;
  // nothing when no group reads from `site`.
  template <class Fn>
  void observe_site(InputSite site, GroupObserver& observer, int64_t n_rows, Fn&& input) {
    const std::vector<int> at_site = layer_.groups_at(site);
    if (at_site.empty()) return;
    for_chunks(n_rows, [&](int64_t start, int64_t count) {
      GroupInput chunk;
      chunk.x = input(start, count);
      chunk.row_start = start;
      for (int group_idx : at_site) observer.observe(group_idx, chunk);
    });
    finish_groups(at_site, observer);
  }

  // finish_group for each of `group_indices`, in order, checking that the
  // observer kept every weight's shape.
  // The routed experts' groups among them are finished together
  // (GroupObserver::finish_independent_groups), after the others.
  void finish_groups(const std::vector<int>& group_indices, GroupObserver& observer) {
    std::map<std::string, std::vector<int64_t>> shapes;
    std::vector<int> experts;
    std::vector<std::vector<std::string>> expert_names;
    for (int group_idx : group_indices) {
      const LinearGroup& group = layer_.groups[group_idx];
      for (const auto& name : group.linears) shapes[name] = weights_.at(name + ".weight").sizes().vec();
      if (group.expert >= 0) {
        experts.push_back(group_idx);
        expert_names.push_back(group.linears);
      } else {
        observer.finish_group(group_idx, group.linears, weights_);
      }
    }
    if (!experts.empty()) observer.finish_independent_groups(experts, expert_names, experts_label(experts), weights_);
    for (const auto& [name, shape] : shapes) {
      GPTQ_CHECK(weights_.at(name + ".weight").sizes().vec() == shape, "observer replaced '", name,
                 ".weight' with a tensor of another shape");
    }
  }

  // "mlp.experts.0-7 gate_proj/up_proj" for expert groups of consecutive experts.
  std::string experts_label(const std::vector<int>& group_indices) const {
    const LinearGroup& first = layer_.groups[group_indices.front()];
    const LinearGroup& last = layer_.groups[group_indices.back()];
    std::string roles;
    const std::string prefix = layer_.expert_linear(first.expert, "");
    for (const auto& name : first.linears) roles += (roles.empty() ? "" : "/") + name.substr(prefix.size());
    return layer_.moe.experts + std::to_string(first.expert) + "-" + std::to_string(last.expert) + " " + roles;
  }

  // ---- sparse MLP -------------------------------------------------------

  // Sum over routed experts (+ the shared expert) for normed [rows, T, H].
  at::Tensor moe_rows(const at::Tensor& normed) {
    const at::Tensor x = normed.reshape({-1, normed.size(-1)});
    const ExpertRouting routing = route_tokens(layer_, weights_, x);
    return moe_output(x, routing, std::max<int64_t>(1, x.size(0))).view(normed.sizes());
  }

  // The sparse MLP's output [n, H] for x [n, H] routed as `routing`, experts
  // run on spans of at most `token_step` of their tokens; the routed sum in
  // fp32 (see moe.h), then the shared expert.
  at::Tensor moe_output(const at::Tensor& x, const ExpertRouting& routing, int64_t token_step) {
    at::Tensor sum = at::zeros(x.sizes(), x.options().dtype(at::kFloat));
    for (int expert = 0; expert < layer_.n_experts; ++expert) {
      const at::Tensor tokens = routing.expert_tokens(expert);
      const at::Tensor weights = routing.expert_weights(expert);
      for_spans(routing.count(expert), token_step, [&](int64_t start, int64_t count) {
        const at::Tensor span = tokens.narrow(0, start, count);
        const at::Tensor y = expert_output(expert, x.index_select(0, span));
        sum.index_add_(0, span, scale_by_routing(y, weights.narrow(0, start, count)));
      });
    }
    at::Tensor out = sum.to(x.scalar_type());
    sum.reset();
    if (layer_.shared_intermediate_size > 0) {
      for_spans(x.size(0), token_step, [&](int64_t start, int64_t count) {
        out.narrow(0, start, count).add_(shared_output(x.narrow(0, start, count)));
      });
    }
    return out;
  }

  at::Tensor expert_hidden(int expert, const at::Tensor& x) {
    return gated_hidden(weights_, layer_.expert_linear(expert, layer_.moe.gate),
                        layer_.expert_linear(expert, layer_.moe.up), x, layer_.mlp.activation);
  }
  at::Tensor expert_output(int expert, const at::Tensor& x) {
    return linear(weights_, layer_.expert_linear(expert, layer_.moe.down), expert_hidden(expert, x));
  }
  at::Tensor shared_hidden(const at::Tensor& x) {
    return gated_hidden(weights_, layer_.shared_linear(layer_.moe.gate), layer_.shared_linear(layer_.moe.up), x,
                        layer_.mlp.activation);
  }
  // sigmoid(shared_expert_gate(x)) * shared_expert(x), or ungated (DeepSeek-V3), x [n, H].
  at::Tensor shared_output(const at::Tensor& x) {
    at::Tensor y = linear(weights_, layer_.shared_linear(layer_.moe.down), shared_hidden(x));
    if (layer_.moe.shared_gate.empty()) return y;
    return y.mul_(at::sigmoid(linear(weights_, layer_.moe.shared_gate, x)));
  }

  // Calls fn(start, count) over [0, n) in steps of `step`.
  template <class Fn>
  static void for_spans(int64_t n, int64_t step, Fn&& fn) {
    for (int64_t start = 0; start < n; start += step) fn(start, std::min(step, n - start));
  }

  // The sparse MLP with an observer: every gate/up group (shared, then each
  // expert on its tokens) is observed and finished, then every down group on
  // the activations of the quantized gate/up, then the output is computed
  // with the quantized experts and added to h. Expert activations exist for
  // one chunk of tokens at a time (recomputed for the output, never held).
  void moe_observed(const at::Tensor& normed, at::Tensor& h, GroupObserver& observer,
                    const BlockOptions& options, BlockStats& stats) {
    const int64_t n_rows = normed.size(0);
    const int64_t hidden = normed.size(2);
    const at::Tensor x = normed.reshape({-1, hidden});
    const int64_t n_tokens = x.size(0);
    const int64_t token_step = std::max<int64_t>(1, rows_per_chunk_ * normed.size(1));
    const ExpertRouting routing = route_tokens(layer_, weights_, x);
    // Routed tokens per expert and the token total, over every process of a
    // data-parallel run (BlockOptions::sum_over_processes), else this one's.
    const int64_t n_experts = static_cast<int64_t>(routing.offsets.size()) - 1;
    at::Tensor counts = at::empty({n_experts + 1}, at::kLong);
    for (int64_t expert = 0; expert < n_experts; ++expert) counts[expert] = routing.count(static_cast<int>(expert));
    counts[n_experts] = n_tokens;
    if (options.sum_over_processes) options.sum_over_processes(counts);
    const int64_t* total_counts = counts.data_ptr<int64_t>();
    stats.mlp_recomputed = true;
    stats.sparse_mlp = true;
    stats.mlp_hidden_bytes = routing.top_k * n_tokens * layer_.expert_intermediate_size *
                             static_cast<int64_t>(x.element_size());

    // Feeds group g: every token (dense rows, or all tokens for an expert's
    // Hessian) or the expert's routed tokens; input(tokens_x) maps the group's
    // block input [n, H] to the group's input.
    auto feed = [&](int group_idx, InputSite site, auto&& input) {
      const LinearGroup& group = layer_.groups[group_idx];
      if (group.expert < 0) {
        for_chunks(n_rows, [&](int64_t start, int64_t count) {
          GroupInput chunk;
          const at::Tensor rows_x = rows(normed, start, count);
          chunk.x = input(rows_x.reshape({-1, hidden})).view({count, normed.size(1), -1});
          chunk.row_start = start;
          observer.observe(group_idx, chunk);
        });
        return;
      }
      const int expert = group.expert;
      const int64_t in_features = site == InputSite::kMlpInput ? hidden : layer_.expert_intermediate_size;
      GroupRouting info;
      info.routed_tokens = total_counts[expert];
      info.too_few_routed = options.moe_calibration == MoeCalibration::kRouted &&
                            info.routed_tokens < options.min_expert_tokens_per_input * in_features;
      info.all_tokens = options.moe_calibration == MoeCalibration::kAll || info.too_few_routed;
      info.fed_tokens = info.all_tokens ? total_counts[n_experts] : info.routed_tokens;
      observer.route_group(group_idx, info);
      const at::Tensor tokens =
          info.all_tokens ? at::arange(n_tokens, x.options().dtype(at::kLong)) : routing.expert_tokens(expert);
      for_spans(tokens.size(0), token_step, [&](int64_t start, int64_t count) {
        GroupInput chunk;
        chunk.token_index = tokens.narrow(0, start, count);
        // Every token: a view of x, not a gathered copy.
        chunk.x = input(info.all_tokens ? x.narrow(0, start, count) : x.index_select(0, chunk.token_index));
        observer.observe(group_idx, chunk);
      });
    };

    const std::vector<int> inputs = layer_.groups_at(InputSite::kMlpInput);
    for (int group_idx : inputs) feed(group_idx, InputSite::kMlpInput, [](const at::Tensor& t) { return t; });
    finish_groups(inputs, observer);

    const std::vector<int> hiddens = layer_.groups_at(InputSite::kMlpHidden);
    for (int group_idx : hiddens) {
      const int expert = layer_.groups[group_idx].expert;
      feed(group_idx, InputSite::kMlpHidden, [&](const at::Tensor& t) {
        return expert < 0 ? shared_hidden(t) : expert_hidden(expert, t);
      });
    }
    finish_groups(hiddens, observer);

    at::Tensor out = moe_output(x, routing, token_step);
    h.add_(out.view(h.sizes()));
  }

  // q, k and v projections of x [B, T, H]: three linears, or views of one
  // fused [q | k | v] output (Phi-3).
  std::array<at::Tensor, 3> qkv_projections(const at::Tensor& x) {
    const AttentionSpec& attention = layer_.attention;
    if (attention.qkv_proj.empty()) {
      return {linear(weights_, attention.q_proj, x), linear(weights_, attention.k_proj, x),
              linear(weights_, attention.v_proj, x)};
    }
    const int64_t q_width = config_.n_heads * config_.head_dim;
    const int64_t kv_width = config_.n_kv_heads * config_.head_dim;
    const at::Tensor fused = linear(weights_, attention.qkv_proj, x);
    return {fused.narrow(-1, 0, q_width), fused.narrow(-1, q_width, kv_width),
            fused.narrow(-1, q_width + kv_width, kv_width)};
  }

  // projection [B, T, heads * head_dim] -> (optional norm, optional clamp) -> [B, heads, T, head_dim].
  at::Tensor project_heads(at::Tensor out, int64_t n_heads, const NormSpec* head_norm) {
    const AttentionSpec& attention = layer_.attention;
    const int64_t n_rows = out.size(0);
    const int64_t n_tokens = out.size(1);
    if (head_norm != nullptr && attention.qk_norm == QkNorm::kWholeProjection) out = norm(*head_norm, out);
    // In place: `out` is this projection's own tensor (or its view of the fused one).
    if (layer_.clip_qkv > 0) out.clamp_(-layer_.clip_qkv, layer_.clip_qkv);
    out = out.reshape({n_rows, n_tokens, n_heads, config_.head_dim});
    if (head_norm != nullptr && attention.qk_norm == QkNorm::kPerHead) out = norm(*head_norm, out);
    return out.transpose(1, 2);
  }

  // normed [B, T, H] -> attention output [B, T, n_heads * head_dim].
  at::Tensor attention_rows(const at::Tensor& x) {
    const int64_t n_rows = x.size(0);
    const int64_t n_tokens = x.size(1);
    GPTQ_CHECK(n_tokens <= rope_.max_positions(), "sequence of ", n_tokens,
               " tokens is longer than the rotary cache (", rope_.max_positions(), ")");
    const AttentionSpec& attention = layer_.attention;
    at::Tensor cos = rope_.cos(layer_.rope_table).narrow(0, 0, n_tokens);
    at::Tensor sin = rope_.sin(layer_.rope_table).narrow(0, 0, n_tokens);
    if (attention.kind == AttentionKind::kMla) return mla_attention(config_, layer_, weights_, x, cos, sin);
    const bool qk_norm = attention.qk_norm != QkNorm::kNone;
    auto [q_lin, k_lin, v_lin] = qkv_projections(x);
    at::Tensor q = project_heads(std::move(q_lin), config_.n_heads, qk_norm ? &attention.q_norm : nullptr);
    at::Tensor k = project_heads(std::move(k_lin), config_.n_kv_heads, qk_norm ? &attention.k_norm : nullptr);
    at::Tensor v = project_heads(std::move(v_lin), config_.n_kv_heads, nullptr);
    q = apply_rotary(q, cos, sin);
    k = apply_rotary(k, cos, sin);

    const double scale = layer_.attention_scale > 0 ? layer_.attention_scale
                                                    : std::pow(static_cast<double>(config_.head_dim), -0.5);
    const int64_t n_rep = config_.n_heads / config_.n_kv_heads;
    const int64_t window = layer_.sliding_window;
    at::Tensor out;
    if (layer_.attention_softcap > 0) {
      out = softcapped_attention(q, k, v, scale, window);
    } else if (window == 0 || n_tokens <= window) {
      out = at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true, scale,
                                             /*enable_gqa=*/n_rep > 1);
    } else {
      // Sliding window (as transformers' mask): key j visible from query i iff i - window < j <= i.
      at::Tensor positions = at::arange(n_tokens, at::TensorOptions().device(x.device()).dtype(at::kLong));
      at::Tensor offset = positions.unsqueeze(1) - positions.unsqueeze(0);
      at::Tensor mask = offset.ge(0).logical_and(offset.lt(window));
      auto repeat = [&](const at::Tensor& t) {
        return t.unsqueeze(2).expand({n_rows, config_.n_kv_heads, n_rep, n_tokens, config_.head_dim})
            .reshape({n_rows, config_.n_heads, n_tokens, config_.head_dim});
      };
      out = at::scaled_dot_product_attention(q, repeat(k), repeat(v), mask, 0.0, false, scale);
    }
    return out.transpose(1, 2).reshape({n_rows, n_tokens, config_.n_heads * config_.head_dim});
  }

  // Gemma-2's eager attention, op for op (sdpa has no soft-cap):
  // softmax_fp32(cap * tanh(q k^T * scale / cap) + mask) v, in the compute dtype.
  at::Tensor softcapped_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                  int64_t window) {
    const int64_t n_rows = q.size(0);
    const int64_t n_tokens = q.size(2);
    const int64_t n_rep = config_.n_heads / config_.n_kv_heads;
    auto repeat = [&](const at::Tensor& t) {
      return t.unsqueeze(2).expand({n_rows, config_.n_kv_heads, n_rep, n_tokens, config_.head_dim})
          .reshape({n_rows, config_.n_heads, n_tokens, config_.head_dim});
    };
    // Out-of-place scalar ops on purpose: in-place mul_(Scalar) rounds the
    // scalar to bf16 first, transformers' `t * scale` does not.
    const double cap = layer_.attention_softcap;
    at::Tensor scores = at::mul(at::matmul(q, repeat(k).transpose(2, 3)), scale);
    scores = at::mul(at::tanh(at::div(scores, cap)), cap);
    at::Tensor positions = at::arange(n_tokens, at::TensorOptions().device(q.device()).dtype(at::kLong));
    at::Tensor offset = positions.unsqueeze(1) - positions.unsqueeze(0);
    at::Tensor hidden_keys = offset.lt(0);
    if (window > 0) hidden_keys = hidden_keys.logical_or(offset.ge(window));
    scores.masked_fill_(hidden_keys, -std::numeric_limits<double>::infinity());
    at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    scores.reset();
    return at::matmul(probs, repeat(v));
  }

  const ModelConfig& config_;
  const LayerSpec& layer_;
  BlockWeights& weights_;
  const RotaryCache& rope_;
  int64_t rows_per_chunk_;
  std::filesystem::path offload_dir_;  // set per observed pass from BlockOptions
};

int64_t auto_batch_chunk(const ModelConfig& config, const LayerSpec& layer, int64_t n_tokens) {
  constexpr double kBudgetBytes = 256.0 * 1024 * 1024;
  // MLA: query, key and the kv_b_proj output per head.
  const double attention_width =
      layer.attention.kind == AttentionKind::kMla
          ? static_cast<double>(config.n_heads) * (2 * layer.mla.qk_head_dim() + layer.mla.qk_nope_head_dim +
                                                   layer.mla.v_head_dim) / 3.0
          : static_cast<double>(config.n_heads * config.head_dim);
  const double per_row = static_cast<double>(n_tokens) * 4.0 *
                         (3.0 * layer.intermediate_size + 4.0 * config.hidden_size + 3.0 * attention_width);
  return std::max<int64_t>(1, static_cast<int64_t>(kBudgetBytes / per_row));
}

// transformers' _compute_yarn_parameters, op for op: pos_freqs = theta^(2i/d);
// the dims between the correction bounds ramp from extrapolated (1/pos_freqs)
// to interpolated (1/(factor pos_freqs)) frequencies.
at::Tensor yarn_inv_freq(const RopeConfig& rope, const at::Tensor& pos_freqs, int64_t dim) {
  const double rotary_dim = static_cast<double>(dim);
  const double context = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (rotary_dim * std::log(context / (rotations * 2 * M_PI))) / (2 * std::log(rope.theta));
  };
  double low = correction_dim(rope.beta_fast);
  double high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, rotary_dim - 1);
  if (low == high) high += 0.001;  // no zero-width ramp
  const at::Tensor ramp = at::clamp(at::div(at::sub(at::arange(dim / 2, at::kLong).to(at::kFloat), low), high - low), 0, 1);
  const at::Tensor extrapolation_factor = at::rsub(ramp, 1);
  const at::Tensor extrapolation = pos_freqs.reciprocal();
  const at::Tensor interpolation = at::mul(pos_freqs, rope.factor).reciprocal();
  return interpolation * at::rsub(extrapolation_factor, 1) + extrapolation * extrapolation_factor;
}

// The stage-by-stage driver visits the sites in block order.
void check_group_order(const LayerSpec& layer) {
  InputSite previous = InputSite::kAttentionInput;
  for (const auto& group : layer.groups) {
    GPTQ_ASSERT(!group.linears.empty(), "empty sequential group in layer ", layer.index);
    GPTQ_ASSERT(group.site >= previous, "sequential groups out of block order in layer ", layer.index);
    previous = group.site;
  }
}

}  // namespace

at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  at::Tensor exponent = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(head_dim);
  if (rope.type == RopeType::kYarn) return yarn_inv_freq(rope, at::pow(rope.theta, exponent), head_dim);
  at::Tensor inv_freq = at::pow(rope.theta, exponent).reciprocal();
  if (rope.type == RopeType::kLinear) return inv_freq / rope.factor;
  if (rope.type == RopeType::kDefault) return inv_freq;
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  at::Tensor wavelen = (2.0 * M_PI) / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  at::Tensor smooth = (old_context / wavelen - rope.low_freq_factor) /
                      (rope.high_freq_factor - rope.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  at::Tensor is_medium = wavelen.lt(high_freq_wavelen).logical_not().logical_and(
      wavelen.gt(low_freq_wavelen).logical_not());
  return at::where(is_medium, smoothed, scaled);
}

RotaryCache::RotaryCache(const ModelConfig& config, int64_t max_positions, c10::ScalarType dtype,
                         c10::Device device)
    : max_positions_(max_positions) {
  std::vector<RopeConfig> ropes = {config.rope};
  if (config.sliding_rope) ropes.push_back(*config.sliding_rope);
  const int64_t rotary_dim = config.rotary_dim > 0 ? config.rotary_dim : config.head_dim;
  at::Tensor positions = at::arange(max_positions, at::TensorOptions().device(device).dtype(at::kLong)).to(at::kFloat);
  for (const RopeConfig& rope : ropes) {
    at::Tensor inv_freq = rope_inv_freq(rope, rotary_dim).to(device);
    at::Tensor freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    // YaRN's attention factor (1 elsewhere) scales both, in fp32, before the cast.
    cos_.push_back(at::mul(emb.cos(), rope.attention_factor).to(dtype));
    sin_.push_back(at::mul(emb.sin(), rope.attention_factor).to(dtype));
  }
}

const at::Tensor& RotaryCache::cos(int table) const {
  GPTQ_ASSERT(table >= 0 && table < static_cast<int>(cos_.size()), "no rotary table ", table);
  return cos_[table];
}

const at::Tensor& RotaryCache::sin(int table) const {
  GPTQ_ASSERT(table >= 0 && table < static_cast<int>(sin_.size()), "no rotary table ", table);
  return sin_[table];
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  x32 = x32 * at::rsqrt(variance + eps);
  return weight * x32.to(x.scalar_type());
}

at::Tensor rms_norm_plus_one(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  x32 = x32 * at::rsqrt(variance + eps);
  return (x32 * (1.0 + weight.to(at::kFloat))).to(x.scalar_type());
}

at::Tensor apply_norm(NormKind kind, const at::Tensor& x, const at::Tensor& weight, double eps) {
  switch (kind) {
    case NormKind::kRmsNorm: return rms_norm(x, weight, eps);
    case NormKind::kRmsNormPlusOne: return rms_norm_plus_one(x, weight, eps);
  }
  GPTQ_ASSERT(false, "unknown norm kind");
  return {};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rotary_dim = cos.size(-1);
  if (rotary_dim < x.size(-1)) {
    // Partial rotary: the first rotary_dim dims rotate, the rest pass through.
    const at::Tensor rotated = apply_rotary(x.narrow(-1, 0, rotary_dim), cos, sin);
    return at::cat({rotated, x.narrow(-1, rotary_dim, x.size(-1) - rotary_dim)}, -1);
  }
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor block_forward(const ModelConfig& config, BlockWeights& weights, const at::Tensor& hidden,
                         const RotaryCache& rope, GroupObserver* observer, const BlockOptions& options,
                         BlockStats* stats) {
  GPTQ_CHECK(hidden.dim() == 3 && hidden.size(2) == config.hidden_size, "block input must be [B, T, ",
             config.hidden_size, "], got ", hidden.sizes());
  GPTQ_CHECK(weights.layer >= 0 && weights.layer < config.n_layers, "block weights of layer ",
             weights.layer, " do not belong to a model of ", config.n_layers, " layers");
  const LayerSpec& layer = config.layer(weights.layer);
  check_group_order(layer);
  const int64_t n_rows = hidden.size(0);
  const int64_t chunk =
      options.batch_chunk > 0 ? options.batch_chunk : auto_batch_chunk(config, layer, hidden.size(1));
  BlockRun block(config, layer, weights, rope, chunk);
  if (observer != nullptr) {
    BlockStats local;
    return block.forward_observed(hidden, *observer, options, stats ? *stats : local);
  }
  if (n_rows <= chunk) return block.forward_rows(hidden);
  std::vector<at::Tensor> parts;
  for (int64_t row_start = 0; row_start < n_rows; row_start += chunk) {
    parts.push_back(block.forward_rows(hidden.narrow(0, row_start, std::min(chunk, n_rows - row_start))));
  }
  return at::cat(parts, 0);
}

at::Tensor embed(const ModelConfig& config, const at::Tensor& embedding, const at::Tensor& ids) {
  at::Tensor hidden = at::embedding(embedding, ids.to(embedding.device(), at::kLong));
  if (!config.arch.scale_embeddings) return hidden;
  // transformers rounds the scale to the weights' dtype before multiplying.
  const at::Tensor scale = at::scalar_tensor(std::pow(static_cast<double>(config.hidden_size), 0.5),
                                             embedding.options().device(at::kCPU)).to(embedding.scalar_type());
  return hidden.mul_(scale.item());
}

at::Tensor final_norm_and_logits(const ModelConfig& config, const HeadWeights& head,
                                 const at::Tensor& hidden) {
  at::Tensor logits =
      at::linear(apply_norm(config.arch.final_norm_kind, hidden, head.final_norm, config.rms_norm_eps), head.lm_head);
  if (config.final_logit_softcap <= 0) return logits;
  const double cap = config.final_logit_softcap;
  return at::mul(at::tanh(at::div(logits, cap)), cap);  // out of place: see softcapped_attention
}

}  // namespace gptq::model
