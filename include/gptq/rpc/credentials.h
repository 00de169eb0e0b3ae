#pragma once
// The secrets a worker and its clients read from files: the bearer token
// (--token-file / --worker-token-file) and PEM certificates and keys
// (--tls-cert, --tls-key, --tls-ca). Each throws InputError naming the flag
// and the file when it cannot be read or holds nothing usable.
#include <string>

namespace gptq::rpc {

// The token on the file's first line, trailing whitespace removed; warns
// when the file is readable by group or others.
std::string read_token_file(const std::string& path, const std::string& flag);

// The file's text; InputError unless it holds a PEM block.
std::string read_pem_file(const std::string& path, const std::string& flag);

}  // namespace gptq::rpc
