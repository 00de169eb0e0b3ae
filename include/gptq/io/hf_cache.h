#pragma once
// Model directories named by a Hugging Face repo id, found in the local
// Hugging Face cache exactly where `huggingface-cli download` leaves them.
// Nothing here touches the network: a repo that is not downloaded is an
// InputError (exit 2) whose one line names every path tried and the
// `huggingface-cli download` command that fetches it.
//
// Repo ids: "org/name" or "org/name@revision". Each part is what the Hub
// accepts (huggingface_hub's validate_repo_id): letters, digits, '_', '-',
// '.', starting and ending with a letter, digit or '_', no "--" or "..", not
// ending in ".git", at most 96 characters in all. A bare "name", "a/b/c",
// "./dir" or "/abs/dir" is not a repo id. A revision is a branch or tag
// ("main", "v1.0", "refs/pr/3") or a 40-hex commit hash.
//
// Cache directory (huggingface_hub's constants, in this order):
//   $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its older name),
//   else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
//   else ~/.cache/huggingface/hub.
// Empty variables count as unset; a leading "~/" is expanded from $HOME.
//
// Cache layout for repo "org/name":
//   <cache>/models--org--name/refs/<revision>        one line: a commit hash
//   <cache>/models--org--name/snapshots/<hash>/...   the files (symlinks into blobs/)
// A revision that is a commit hash names snapshots/<hash> directly.
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace gptq::io {

struct HfRepoId {
  std::string repo;      // "org/name"
  std::string revision;  // "main" when none was given
  bool revision_given = false;
};

// "org/name[@revision]" parsed, or nullopt when `text` is not of that form.
std::optional<HfRepoId> parse_hf_repo_id(std::string_view text);

// Looks an environment variable up; nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment (std::getenv).
EnvLookup process_env();

// The hub cache directory the variables above give; empty when none is set
// and there is no $HOME.
std::filesystem::path hf_hub_cache_dir(const EnvLookup& env);

// "<cache>/models--org--name".
std::filesystem::path hf_repo_cache_dir(const std::filesystem::path& cache_dir, const std::string& repo);

// The directory a model flag (`flag`, e.g. "--model") names:
//  - `spec` itself when it is an existing directory (a local path always wins);
//  - else, when `spec` is a repo id, its snapshot in the cache: the snapshot
//    of the commit refs/<revision> holds, or snapshots/<revision> for a
//    commit hash; InputError naming the paths tried and the download command
//    when the ref or the snapshot is missing;
//  - else `spec` unchanged, for the loader to report as a missing directory.
std::filesystem::path resolve_model_dir(const std::string& spec, const std::string& flag, const EnvLookup& env);
std::filesystem::path resolve_model_dir(const std::string& spec, const std::string& flag);

}  // namespace gptq::io
