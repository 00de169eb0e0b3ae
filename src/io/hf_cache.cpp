#include "gptq/io/hf_cache.h"

#include <cstdlib>
#include <fstream>
#include <vector>

#include "gptq/core/error.h"

namespace gptq::io {
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxRepoIdLength = 96;  // huggingface_hub's validate_repo_id

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool is_repo_part(std::string_view part) {
  if (part.empty() || !is_word_char(part.front()) || !is_word_char(part.back())) return false;
  for (char c : part) {
    if (!is_word_char(c) && c != '-' && c != '.') return false;
  }
  return true;
}

bool is_commit_hash(std::string_view text) {
  if (text.size() != 40) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// A branch, tag or "refs/pr/N": a relative path below refs/ that cannot climb out of it.
bool is_revision(std::string_view revision) {
  if (revision.empty() || revision.front() == '/' || revision.back() == '/') return false;
  if (revision.find("..") != std::string_view::npos || revision.find("//") != std::string_view::npos) return false;
  for (char c : revision) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '\\' || c == '~' || c == ':') return false;
  }
  return true;
}

fs::path expand_home(const std::string& value, const EnvLookup& env) {
  if (value == "~" || value.starts_with("~/")) {
    const std::optional<std::string> home = env("HOME");
    if (home && !home->empty()) return fs::path(*home) / value.substr(value.size() > 1 ? 2 : 1);
  }
  return value;
}

std::optional<std::string> non_empty(const EnvLookup& env, const std::string& name) {
  std::optional<std::string> value = env(name);
  if (value && value->empty()) return std::nullopt;
  return value;
}

// First line of a refs/ file, surrounding whitespace trimmed.
std::string read_ref(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  const size_t begin = line.find_first_not_of(" \t\r\n");
  const size_t end = line.find_last_not_of(" \t\r\n");
  return begin == std::string::npos ? "" : line.substr(begin, end - begin + 1);
}

std::string download_command(const HfRepoId& id) {
  std::string command = "huggingface-cli download " + id.repo;
  if (id.revision_given) command += " --revision " + id.revision;
  return command;
}

// The snapshot directory of `id` in `cache_dir`, or nullopt with what was tried.
std::optional<fs::path> find_snapshot(const fs::path& cache_dir, const HfRepoId& id, std::string& tried) {
  const fs::path repo_dir = hf_repo_cache_dir(cache_dir, id.repo);
  std::error_code ec;
  if (is_commit_hash(id.revision)) {
    const fs::path snapshot = repo_dir / "snapshots" / id.revision;
    if (fs::is_directory(snapshot, ec)) return snapshot;
    tried = snapshot.string() + " (no such snapshot)";
    return std::nullopt;
  }
  const fs::path ref = repo_dir / "refs" / id.revision;
  if (!fs::is_regular_file(ref, ec)) {
    tried = ref.string() + (fs::is_directory(repo_dir, ec) ? " (no such ref)" : " (repo not in the cache)");
    return std::nullopt;
  }
  const std::string commit = read_ref(ref);
  if (commit.empty() || commit.find('/') != std::string::npos || commit.find("..") != std::string::npos) {
    tried = ref.string() + " (holds no commit hash)";
    return std::nullopt;
  }
  const fs::path snapshot = repo_dir / "snapshots" / commit;
  if (fs::is_directory(snapshot, ec)) return snapshot;
  tried = ref.string() + " -> " + snapshot.string() + " (no such snapshot)";
  return std::nullopt;
}

}  // namespace

std::optional<HfRepoId> parse_hf_repo_id(std::string_view text) {
  HfRepoId id;
  std::string_view repo = text;
  if (const size_t at = text.find('@'); at != std::string_view::npos) {
    repo = text.substr(0, at);
    const std::string_view revision = text.substr(at + 1);
    if (!is_revision(revision)) return std::nullopt;
    id.revision = std::string(revision);
    id.revision_given = true;
  } else {
    id.revision = "main";
  }
  const size_t slash = repo.find('/');
  if (slash == std::string_view::npos || repo.size() > kMaxRepoIdLength) return std::nullopt;
  const std::string_view org = repo.substr(0, slash);
  const std::string_view name = repo.substr(slash + 1);
  if (!is_repo_part(org) || !is_repo_part(name)) return std::nullopt;  // "a/b/c": '/' is not a name character
  if (repo.find("--") != std::string_view::npos || repo.find("..") != std::string_view::npos) return std::nullopt;
  if (name.ends_with(".git")) return std::nullopt;
  id.repo = std::string(repo);
  return id;
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

fs::path hf_hub_cache_dir(const EnvLookup& env) {
  for (const char* name : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"}) {
    if (auto value = non_empty(env, name)) return expand_home(*value, env);
  }
  if (auto home = non_empty(env, "HF_HOME")) return expand_home(*home, env) / "hub";
  if (auto xdg = non_empty(env, "XDG_CACHE_HOME")) return expand_home(*xdg, env) / "huggingface" / "hub";
  if (auto home = non_empty(env, "HOME")) return fs::path(*home) / ".cache" / "huggingface" / "hub";
  return {};
}

fs::path hf_repo_cache_dir(const fs::path& cache_dir, const std::string& repo) {
  std::string folder = "models--" + repo;
  for (size_t slash = folder.find('/'); slash != std::string::npos; slash = folder.find('/', slash)) {
    folder.replace(slash, 1, "--");
  }
  return cache_dir / folder;
}

fs::path resolve_model_dir(const std::string& spec, const std::string& flag, const EnvLookup& env) {
  std::error_code ec;
  if (fs::is_directory(spec, ec)) return spec;
  const std::optional<HfRepoId> id = parse_hf_repo_id(spec);
  if (!id) return spec;
  const fs::path cache_dir = hf_hub_cache_dir(env);
  GPTQ_CHECK(!cache_dir.empty(), flag, " '", spec, "': no such directory, and no Hugging Face cache to look in ",
             "(set HF_HUB_CACHE or HF_HOME); download it with: ", download_command(*id));
  std::string tried;
  std::optional<fs::path> snapshot = find_snapshot(cache_dir, *id, tried);
  GPTQ_CHECK(snapshot.has_value(), flag, " '", spec, "': no such directory, and not in the Hugging Face cache ",
             "(tried ", tried, "); download it with: ", download_command(*id));
  return *snapshot;
}

fs::path resolve_model_dir(const std::string& spec, const std::string& flag) {
  return resolve_model_dir(spec, flag, process_env());
}

}  // namespace gptq::io
