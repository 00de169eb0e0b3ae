// Drives gptq::io from the Python conformance tests
// (tests/conformance/test_safetensors_peer.py):
//   safetensors_tool dump IN [--as DTYPE]
//       prints JSON {"metadata": {..}, "tensors": {name: {"dtype", "shape",
//       "sha256"}}} for a file or checkpoint directory; with --as every tensor
//       is loaded converted to DTYPE ("F32", ...) and hashed after conversion.
//   safetensors_tool copy IN OUT [--max-shard-bytes N]
//       reads IN (file or directory) tensor by tensor and writes OUT: a single
//       file when OUT ends in .safetensors, else a sharded directory.
// Errors: one line on stderr, exit 2 for bad input (InputError/UnsupportedError).
#include <ATen/ATen.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"

namespace {

// FIPS 180-4 SHA-256, enough to fingerprint tensor bytes for the comparison.
class Sha256 {
 public:
  void update(const uint8_t* bytes, size_t n_bytes) {
    for (size_t byte_idx = 0; byte_idx < n_bytes; ++byte_idx) {
      block_[block_len_++] = bytes[byte_idx];
      if (block_len_ == 64) {
        compress();
        block_len_ = 0;
      }
    }
    total_bits_ += uint64_t{n_bytes} * 8;
  }
  std::string hex_digest() {
    const uint64_t bits = total_bits_;
    const uint8_t pad = 0x80;
    update(&pad, 1);
    const uint8_t zero = 0;
    while (block_len_ != 56) update(&zero, 1);
    for (int shift = 56; shift >= 0; shift -= 8) {
      const uint8_t byte = static_cast<uint8_t>(bits >> shift);
      update(&byte, 1);
    }
    std::string hex;
    char buffer[9];
    for (uint32_t word : state_) {
      std::snprintf(buffer, sizeof(buffer), "%08x", word);
      hex += buffer;
    }
    return hex;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static constexpr std::array<uint32_t, 64> k = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    std::array<uint32_t, 64> w{};
    for (int word_idx = 0; word_idx < 16; ++word_idx) {
      w[word_idx] = uint32_t{block_[4 * word_idx]} << 24 | uint32_t{block_[4 * word_idx + 1]} << 16 |
                    uint32_t{block_[4 * word_idx + 2]} << 8 | uint32_t{block_[4 * word_idx + 3]};
    }
    for (int word_idx = 16; word_idx < 64; ++word_idx) {
      const uint32_t s0 = rotr(w[word_idx - 15], 7) ^ rotr(w[word_idx - 15], 18) ^ (w[word_idx - 15] >> 3);
      const uint32_t s1 = rotr(w[word_idx - 2], 17) ^ rotr(w[word_idx - 2], 19) ^ (w[word_idx - 2] >> 10);
      w[word_idx] = w[word_idx - 16] + s0 + w[word_idx - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, h] = state_;
    for (int round = 0; round < 64; ++round) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                          k[round] + w[round];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    const std::array<uint32_t, 8> add = {a, b, c, d, e, f, g, h};
    for (int word_idx = 0; word_idx < 8; ++word_idx) state_[word_idx] += add[word_idx];
  }

  std::array<uint32_t, 8> state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<uint8_t, 64> block_{};
  size_t block_len_ = 0;
  uint64_t total_bits_ = 0;
};

std::string sha256_of(const at::Tensor& tensor) {
  at::Tensor contiguous = tensor.contiguous();
  Sha256 hash;
  hash.update(static_cast<const uint8_t*>(contiguous.data_ptr()), contiguous.nbytes());
  return hash.hex_digest();
}

int run_dump(const std::string& in, std::optional<c10::ScalarType> as) {
  auto checkpoint = gptq::io::Checkpoint::open(in);
  nlohmann::json out;
  out["metadata"] = nlohmann::json::object();
  for (const auto& file : checkpoint.files()) {
    for (const auto& [key, value] : file->metadata()) out["metadata"][key] = value;
  }
  out["tensors"] = nlohmann::json::object();
  for (const auto& name : checkpoint.names()) {
    at::Tensor tensor = checkpoint.load(name, as);
    out["tensors"][name] = {{"dtype", gptq::io::dtype_to_string(tensor.scalar_type())},
                            {"shape", tensor.sizes().vec()},
                            {"sha256", sha256_of(tensor)}};
  }
  std::cout << out.dump(1) << "\n";
  return 0;
}

int run_copy(const std::string& in, const std::string& out, uint64_t max_shard_bytes) {
  auto checkpoint = gptq::io::Checkpoint::open(in);
  std::map<std::string, std::string> metadata;
  for (const auto& file : checkpoint.files()) {
    for (const auto& [key, value] : file->metadata()) {
      if (key != "format") metadata[key] = value;
    }
  }
  if (out.size() > 12 && out.compare(out.size() - 12, 12, ".safetensors") == 0) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& name : checkpoint.names()) tensors.emplace_back(name, checkpoint.load(name));
    gptq::io::save_file(out, tensors, metadata);
    return 0;
  }
  gptq::io::ShardedWriter writer(out, max_shard_bytes, metadata);
  for (const auto& name : checkpoint.names()) writer.add(name, checkpoint.load(name));
  for (const auto& path : writer.commit()) std::cout << path.string() << "\n";
  return 0;
}

int usage() {
  std::cerr << "usage: safetensors_tool dump IN [--as DTYPE] | copy IN OUT [--max-shard-bytes N]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 2 && args[0] == "dump") return run_dump(args[1], std::nullopt);
    if (args.size() == 4 && args[0] == "dump" && args[2] == "--as") {
      return run_dump(args[1], gptq::io::dtype_from_string(args[3]));
    }
    if (args.size() == 3 && args[0] == "copy") return run_copy(args[1], args[2], 0);
    if (args.size() == 5 && args[0] == "copy" && args[3] == "--max-shard-bytes") {
      return run_copy(args[1], args[2], std::stoull(args[4]));
    }
    return usage();
  } catch (const gptq::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (auto eol = message.find('\n'); eol != std::string::npos) message.resize(eol);
    std::cerr << "error: " << message << "\n";
    return 1;
  }
}
