// A fake Hugging Face cache laid out as `huggingface-cli download` leaves it
// (refs/<revision> holding a commit, snapshots/<commit>/ holding symlinks into
// blobs/), and what resolve_model_dir finds in it.
#include "gptq/io/hf_cache.h"

#include <gtest/gtest.h>

#include <map>

#include "io_test_util.h"

namespace gptq::io {
namespace {
namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::write_bytes;

constexpr const char* kMainCommit = "0123456789abcdef0123456789abcdef01234567";
constexpr const char* kV1Commit = "89abcdef0123456789abcdef0123456789abcdef";

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto found = vars.find(name);
    if (found == vars.end()) return std::nullopt;
    return found->second;
  };
}

// One snapshot of "org/name" at `commit` with a config.json symlinked into blobs/.
fs::path add_snapshot(const fs::path& cache, const std::string& commit) {
  const fs::path repo = hf_repo_cache_dir(cache, "org/name");
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "snapshots" / commit);
  write_bytes(repo / "blobs" / ("blob-" + commit), "{}");
  fs::create_symlink(fs::path("../../blobs") / ("blob-" + commit), repo / "snapshots" / commit / "config.json");
  return repo / "snapshots" / commit;
}

void add_ref(const fs::path& cache, const std::string& revision, const std::string& commit) {
  const fs::path ref = hf_repo_cache_dir(cache, "org/name") / "refs" / revision;
  fs::create_directories(ref.parent_path());
  write_bytes(ref, commit);  // huggingface_hub writes the hash with no newline
}

// The InputError's message for `spec`, or "" when it resolves.
std::string error_of(const std::string& spec, const EnvLookup& env) {
  try {
    resolve_model_dir(spec, "--model", env);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(HfRepoId, ParsesOrgNameAndRevision) {
  auto id = parse_hf_repo_id("meta-llama/Llama-3.2-1B");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->repo, "meta-llama/Llama-3.2-1B");
  EXPECT_EQ(id->revision, "main");
  EXPECT_FALSE(id->revision_given);
  id = parse_hf_repo_id("Qwen/Qwen3-0.6B@refs/pr/3");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->repo, "Qwen/Qwen3-0.6B");
  EXPECT_EQ(id->revision, "refs/pr/3");
  EXPECT_TRUE(id->revision_given);
  EXPECT_TRUE(parse_hf_repo_id(std::string("org/name@") + kMainCommit));
}

TEST(HfRepoId, RefusesWhatIsNotAnOrgAndAName) {
  for (const char* text : {"a/b/c", "name", "./dir", "../org/name", "/abs/dir", "org/", "/name", "org//name",
                           "~/models", "org/na me", "org/-name", "org/name-", "org--x/name", "org/na..me",
                           "org/name.git", "org/name@", "org/name@../x", "org/name@/main", "org/name@a b", ""}) {
    EXPECT_FALSE(parse_hf_repo_id(text)) << text;
  }
  EXPECT_FALSE(parse_hf_repo_id("org/" + std::string(95, 'x')));
}

TEST(HfCacheDir, FollowsHuggingfaceHubPrecedence) {
  EXPECT_EQ(hf_hub_cache_dir(env_of({{"HOME", "/h"}})), fs::path("/h/.cache/huggingface/hub"));
  EXPECT_EQ(hf_hub_cache_dir(env_of({{"HOME", "/h"}, {"XDG_CACHE_HOME", "/x"}})), fs::path("/x/huggingface/hub"));
  EXPECT_EQ(hf_hub_cache_dir(env_of({{"HOME", "/h"}, {"XDG_CACHE_HOME", "/x"}, {"HF_HOME", "/hf"}})),
            fs::path("/hf/hub"));
  EXPECT_EQ(hf_hub_cache_dir(env_of({{"HF_HOME", "/hf"}, {"HF_HUB_CACHE", "/cache"}})), fs::path("/cache"));
  EXPECT_EQ(hf_hub_cache_dir(env_of({{"HF_HOME", "/hf"}, {"HUGGINGFACE_HUB_CACHE", "/old"}})), fs::path("/old"));
  EXPECT_EQ(hf_hub_cache_dir(env_of({{"HF_HUB_CACHE", ""}, {"HF_HOME", "/hf"}})), fs::path("/hf/hub"));
  EXPECT_EQ(hf_hub_cache_dir(env_of({{"HOME", "/h"}, {"HF_HOME", "~/hf"}})), fs::path("/h/hf/hub"));
  EXPECT_EQ(hf_hub_cache_dir(env_of({})), fs::path());
}

TEST(ResolveModelDir, MainRefNamesTheSnapshot) {
  ScratchDir cache;
  const fs::path snapshot = add_snapshot(cache.path(), kMainCommit);
  add_ref(cache.path(), "main", kMainCommit);
  const fs::path found = resolve_model_dir("org/name", "--model", env_of({{"HF_HUB_CACHE", cache.path()}}));
  EXPECT_EQ(found, snapshot);
  EXPECT_TRUE(fs::is_regular_file(found / "config.json"));  // through the blob symlink
}

TEST(ResolveModelDir, RevisionRefAndCommitHash) {
  ScratchDir cache;
  add_snapshot(cache.path(), kMainCommit);
  const fs::path v1 = add_snapshot(cache.path(), kV1Commit);
  add_ref(cache.path(), "main", kMainCommit);
  add_ref(cache.path(), "v1.0", std::string(kV1Commit) + "\n");
  add_ref(cache.path(), "refs/pr/3", kV1Commit);
  const EnvLookup env = env_of({{"HF_HUB_CACHE", cache.path()}});
  EXPECT_EQ(resolve_model_dir("org/name@v1.0", "--model", env), v1);
  EXPECT_EQ(resolve_model_dir("org/name@refs/pr/3", "--model", env), v1);
  EXPECT_EQ(resolve_model_dir(std::string("org/name@") + kV1Commit, "--model", env), v1);
}

TEST(ResolveModelDir, MissingRefOrSnapshotNamesWhatWasTriedAndTheDownload) {
  ScratchDir cache;
  add_ref(cache.path(), "main", kMainCommit);  // the ref is there, its snapshot is not
  const EnvLookup env = env_of({{"HF_HUB_CACHE", cache.path()}});
  const fs::path repo = hf_repo_cache_dir(cache.path(), "org/name");

  std::string message = error_of("org/name", env);
  EXPECT_NE(message.find((repo / "refs" / "main").string()), std::string::npos) << message;
  EXPECT_NE(message.find((repo / "snapshots" / kMainCommit).string()), std::string::npos) << message;
  EXPECT_NE(message.find("huggingface-cli download org/name"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;

  message = error_of("org/name@v2", env);
  EXPECT_NE(message.find((repo / "refs" / "v2").string()), std::string::npos) << message;
  EXPECT_NE(message.find("huggingface-cli download org/name --revision v2"), std::string::npos) << message;

  message = error_of(std::string("org/name@") + kV1Commit, env);
  EXPECT_NE(message.find((repo / "snapshots" / kV1Commit).string()), std::string::npos) << message;

  message = error_of("other/model", env);
  EXPECT_NE(message.find(hf_repo_cache_dir(cache.path(), "other/model").string()), std::string::npos) << message;
  EXPECT_NE(message.find("huggingface-cli download other/model"), std::string::npos) << message;
  EXPECT_EQ(message.find("--revision"), std::string::npos) << message;
}

TEST(ResolveModelDir, HfHubCacheWinsOverHfHome) {
  ScratchDir root;
  const fs::path hf_home = root / "hf_home";
  const fs::path in_home = add_snapshot(hf_home / "hub", kMainCommit);
  add_ref(hf_home / "hub", "main", kMainCommit);
  EXPECT_EQ(resolve_model_dir("org/name", "--model", env_of({{"HF_HOME", hf_home}})), in_home);
  // HF_HUB_CACHE set: only it is searched, as huggingface-cli would.
  const std::string message = error_of("org/name", env_of({{"HF_HOME", hf_home}, {"HF_HUB_CACHE", root / "hub"}}));
  EXPECT_NE(message.find((root / "hub").string()), std::string::npos) << message;
}

TEST(ResolveModelDir, ExistingLocalDirectoryWins) {
  ScratchDir cache;
  add_snapshot(cache.path(), kMainCommit);
  add_ref(cache.path(), "main", kMainCommit);
  ScratchDir cwd;
  fs::create_directories(cwd / "org" / "name");
  const fs::path before = fs::current_path();
  fs::current_path(cwd.path());
  const fs::path found = resolve_model_dir("org/name", "--model", env_of({{"HF_HUB_CACHE", cache.path()}}));
  fs::current_path(before);
  EXPECT_EQ(found, fs::path("org/name"));
}

TEST(ResolveModelDir, WhatIsNotARepoIdPassesThrough) {
  const EnvLookup env = env_of({{"HF_HUB_CACHE", "/nonexistent"}});
  EXPECT_EQ(resolve_model_dir("a/b/c", "--model", env), fs::path("a/b/c"));
  EXPECT_EQ(resolve_model_dir("/no/such/dir", "--model", env), fs::path("/no/such/dir"));
  EXPECT_EQ(resolve_model_dir("model", "--model", env), fs::path("model"));
}

TEST(ResolveModelDir, NoCacheAtAllSaysHowToSetOne) {
  const std::string message = error_of("org/name", env_of({}));
  EXPECT_NE(message.find("HF_HUB_CACHE"), std::string::npos) << message;
  EXPECT_NE(message.find("huggingface-cli download org/name"), std::string::npos) << message;
}

}  // namespace
}  // namespace gptq::io
