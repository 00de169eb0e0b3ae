#include "gptq/rpc/credentials.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "gptq/core/error.h"
#include "gptq/core/log.h"

namespace gptq::rpc {
namespace {

std::string read_text(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), flag, ": cannot read '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string read_token_file(const std::string& path, const std::string& flag) {
  std::string token = read_text(path, flag);
  token = token.substr(0, token.find('\n'));
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
  GPTQ_CHECK(!token.empty(), flag, ": '", path, "' holds no token on its first line");
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0 && (info.st_mode & 077) != 0) {
    spdlog::warn("token file '{}' is readable by other users (chmod 600 it)", path);
  }
  return token;
}

std::string read_pem_file(const std::string& path, const std::string& flag) {
  std::string text = read_text(path, flag);
  GPTQ_CHECK(text.find("-----BEGIN") != std::string::npos, flag, ": '", path, "' is not a PEM file");
  return text;
}

}  // namespace gptq::rpc
