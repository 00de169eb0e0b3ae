#pragma once
// Strict JSON parsing for the files we read (safetensors headers, index files,
// configs): nlohmann_json with exceptions turned into one-line InputErrors, a
// nesting-depth bound and duplicate object keys rejected (nlohmann would keep
// the last one silently, which would let two header entries alias).
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace gptq::io {

// Parses `text` as one JSON document. Throws InputError "<what>: ..." on
// invalid JSON (with the position, cut short whatever the input holds), a
// nesting deeper than `max_depth` or a key repeated inside one object.
nlohmann::json parse_json_strict(std::string_view text, const std::string& what,
                                 int max_depth = 64);

// `text` in single quotes for an error message: control bytes escaped (\n,
// \xNN) so the message stays one line, cut after `max_chars` with "...".
std::string quote_for_error(std::string_view text, size_t max_chars = 160);

}  // namespace gptq::io
