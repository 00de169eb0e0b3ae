// gptq_tool_tokenize: drives gptq::calib::Tokenizer from the Python conformance
// tests. Reads one JSON string per line from <texts.jsonl> and writes, per line,
// {"ids": [...], "decoded": "..."} to stdout (decoded only with --decode).
//   gptq_tool_tokenize <tokenizer.json> <texts.jsonl> [--add-special-tokens] [--decode]
// Also prints {"seconds": encode time, "bytes": input bytes} as the last line
// when --time is given. Exit 2 on bad input, as the CLI.
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <iostream>
#include <string>

#include "gptq/tokenizer/tokenizer.h"
#include "gptq/core/error.h"

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: gptq_tool_tokenize <tokenizer.json> <texts.jsonl> [--add-special-tokens] [--decode] [--time]\n";
    return 2;
  }
  bool add_special = false, decode = false, time = false;
  for (int k = 3; k < argc; ++k) {
    const std::string flag = argv[k];
    add_special = add_special || flag == "--add-special-tokens";
    decode = decode || flag == "--decode";
    time = time || flag == "--time";
  }
  const auto tokenizer = gptq::tokenizer::Tokenizer::from_file(argv[1]);
  std::ifstream in(argv[2], std::ios::binary);
  GPTQ_CHECK(in, "cannot open '", argv[2], "'");
  std::vector<std::string> texts;
  for (std::string line; std::getline(in, line);) texts.push_back(nlohmann::json::parse(line).get<std::string>());

  size_t n_bytes = 0;
  std::vector<std::vector<int32_t>> all_ids;
  all_ids.reserve(texts.size());
  const auto start = std::chrono::steady_clock::now();
  for (const auto& text : texts) {
    all_ids.push_back(tokenizer.encode(text, add_special));
    n_bytes += text.size();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  for (size_t index = 0; index < texts.size(); ++index) {
    nlohmann::json row = {{"ids", all_ids[index]}};
    if (decode) row["decoded"] = tokenizer.decode(all_ids[index]);
    std::cout << row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  }
  if (time) std::cout << nlohmann::json({{"seconds", seconds}, {"bytes", n_bytes}}).dump() << '\n';
  return 0;
} catch (const gptq::Error& e) {
  std::cerr << "error: " << e.what() << '\n';
  return e.exit_code();
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << '\n';
  return 1;
}
