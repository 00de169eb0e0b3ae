#include "gptq/calib/work_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "gptq/core/error.h"
#include "gptq/core/fault_point.h"
#include "gptq/core/log.h"
#include "gptq/io/durable.h"

namespace gptq::calib {
namespace fs = std::filesystem;

namespace {

constexpr int kFormatVersion = 1;
constexpr const char* kStateName = "state.json";
constexpr const char* kLockName = "lock";
constexpr const char* kRecordKey = "gptq_quant.step";

std::string numbered(const char* stem, int step) {
  char name[64];
  std::snprintf(name, sizeof name, "%s-%05d.safetensors", stem, step);
  return name;
}

// Files this class creates: only these are ever deleted, so a --work-dir
// pointing at a directory with other files in it never loses them.
bool is_ours(const std::string& name) {
  static const std::regex ours(R"((lock|state\.json|(step|input)-\d{5}\.safetensors)|\..*\.tmp-\d+(-\d+)?)");
  return std::regex_match(name, ours);
}

nlohmann::json read_state(const fs::path& path) {
  std::ifstream in(path);
  GPTQ_CHECK(in.good(), path.string(), ": cannot read");
  nlohmann::json state = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  GPTQ_CHECK(!state.is_discarded() && state.is_object() && state.contains("fingerprint") &&
                 state["fingerprint"].is_object() && state.value("steps_done", -1) >= 0,
             path.string(), ": not a gptq-quant run state (remove the work directory to start over)");
  GPTQ_CHECK(state.value("format_version", 0) == kFormatVersion, path.string(), ": state format version ",
             state.value("format_version", 0), ", this gptq-quant writes ", kFormatVersion,
             "; remove the work directory to start over");
  return state;
}

}  // namespace

uint64_t fnv1a64(const void* bytes, size_t n_bytes, uint64_t hash) {
  const auto* cursor = static_cast<const unsigned char*>(bytes);
  for (size_t idx = 0; idx < n_bytes; ++idx) {
    hash ^= cursor[idx];
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

fs::path WorkDir::default_path(const fs::path& output_dir) {
  fs::path absolute = fs::absolute(output_dir).lexically_normal();
  if (absolute.filename().empty()) absolute = absolute.parent_path();
  return absolute.parent_path() / (absolute.filename().string() + ".partial");
}

bool WorkDir::holds_state(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kStateName, ec);
}

WorkDir::WorkDir(fs::path dir) : dir_(std::move(dir)) {}

WorkDir::~WorkDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::unique_ptr<WorkDir> WorkDir::open(const fs::path& dir, bool resume) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  GPTQ_CHECK(fs::is_directory(dir), "work directory '", dir.string(), "' cannot be created",
             ec ? ": " + ec.message() : std::string());
  std::unique_ptr<WorkDir> work(new WorkDir(dir));
  const fs::path lock = dir / kLockName;
  work->lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  GPTQ_CHECK(work->lock_fd_ >= 0, lock.string(), ": cannot open: ", std::strerror(errno));
  GPTQ_CHECK(::flock(work->lock_fd_, LOCK_EX | LOCK_NB) == 0, "work directory '", dir.string(),
             "' is in use by another gptq-quant run (its lock is held); wait for it or give another --output");

  if (!holds_state(dir)) {
    // A run killed before its first step finished left nothing worth keeping.
    work->remove_leftovers();
    if (resume) spdlog::info("--resume: '{}' holds no finished step; starting from the first block", dir.string());
    return work;
  }
  const nlohmann::json state = read_state(dir / kStateName);
  const int done = state["steps_done"].get<int>();
  GPTQ_CHECK(resume, "work directory '", dir.string(), "' holds an unfinished run (", done,
             " step(s) done); add --resume to continue it, or remove the directory to start over");
  work->stored_fingerprint_ = state["fingerprint"];
  work->steps_done_ = done;
  work->finalizing_ = state.value("finalizing", false);
  work->remove_leftovers();
  return work;
}

void WorkDir::bind(const Fingerprint& fingerprint) {
  GPTQ_ASSERT(!bound_, "bind() called twice");
  bound_ = true;
  fingerprint_ = fingerprint;
  if (stored_fingerprint_.is_null()) return;  // a fresh start
  const nlohmann::json& stored = stored_fingerprint_;
  for (const auto& [part, value] : fingerprint) {
    const std::string before =
        stored.contains(part) && stored[part].is_string() ? stored[part].get<std::string>() : "absent";
    GPTQ_CHECK(before == value, "cannot resume '", dir_.string(), "': ", part, " changed (was ", before, ", now ",
               value, "); rerun with the original model and options, or remove the directory to start over");
  }
  for (const auto& [part, value] : stored.items()) {
    const bool known = std::any_of(fingerprint.begin(), fingerprint.end(),
                                   [&](const auto& current) { return current.first == part; });
    GPTQ_CHECK(known, "cannot resume '", dir_.string(), "': it was made with '", part,
               "', which this run does not have; remove the directory to start over");
  }
}

fs::path WorkDir::step_file(int step) const { return dir_ / numbered("step", step); }
fs::path WorkDir::input_file(int step) const { return dir_ / numbered("input", step); }

void WorkDir::write_state() const {
  GPTQ_ASSERT(bound_, "state written before bind()");
  nlohmann::ordered_json fingerprint = nlohmann::ordered_json::object();
  for (const auto& [part, value] : fingerprint_) fingerprint[part] = value;
  nlohmann::ordered_json state = {{"format_version", kFormatVersion},
                                  {"fingerprint", fingerprint},
                                  {"steps_done", steps_done_},
                                  {"finalizing", finalizing_}};
  io::write_text_durably(dir_ / kStateName, state.dump(2) + "\n");
}

// Temporary files of a killed write, and step/input files the state does not
// reach (a killed attempt's): they would be rewritten anyway.
void WorkDir::remove_leftovers() const {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!is_ours(name) || name == kLockName || name == kStateName) continue;
    bool stale = name.front() == '.';
    int number = -1;
    if (std::sscanf(name.c_str(), "step-%d", &number) == 1) stale = number >= steps_done_;
    if (std::sscanf(name.c_str(), "input-%d", &number) == 1) stale = number != steps_done_;
    if (stale) fs::remove(entry.path(), ec);
  }
}

StepRecord WorkDir::record(int step) const {
  const std::unique_ptr<io::SafetensorsFile> file = step_tensors(step);
  auto found = file->metadata().find(kRecordKey);
  GPTQ_CHECK(found != file->metadata().end(), file->path().string(), ": has no '", kRecordKey,
             "' metadata (not written by this tool?); remove the work directory to start over");
  const nlohmann::json parsed = nlohmann::json::parse(found->second, nullptr, /*allow_exceptions=*/false);
  GPTQ_CHECK(!parsed.is_discarded() && parsed.is_object(), file->path().string(), ": step record is not JSON");
  StepRecord record;
  try {
    record.layers = parsed.at("layers");
    record.replaced = parsed.at("replaced").get<std::vector<std::string>>();
    record.zero_points_raised = parsed.at("zero_points_raised").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(file->path().string() + ": step record: " + e.what());
  }
  return record;
}

std::unique_ptr<io::SafetensorsFile> WorkDir::step_tensors(int step) const {
  GPTQ_ASSERT(step < steps_done_, "step ", step, " is not done");
  return io::SafetensorsFile::open(step_file(step));
}

at::Tensor WorkDir::load_input(c10::ScalarType dtype, c10::Device device) const {
  const fs::path path = input_file(steps_done_);
  GPTQ_CHECK(fs::is_regular_file(path), "cannot resume '", dir_.string(), "': '", path.filename().string(),
             "' (the input of step ", steps_done_, ") is missing; remove the directory to start over");
  return io::SafetensorsFile::open(path)->load("hidden", dtype, device);
}

void WorkDir::commit_step(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                          const at::Tensor& next_input, const StepRecord& record) {
  const nlohmann::json summary = {
      {"layers", record.layers}, {"replaced", record.replaced}, {"zero_points_raised", record.zero_points_raised}};
  io::save_file_durably(step_file(steps_done_), tensors, {{kRecordKey, summary.dump()}});
  fault_point("step-written");
  if (next_input.defined()) io::save_file_durably(input_file(steps_done_ + 1), {{"hidden", next_input}});
  fault_point("input-written");
  ++steps_done_;
  write_state();
  fault_point("state-written");
  std::error_code ec;
  fs::remove(input_file(steps_done_ - 1), ec);
}

void WorkDir::mark_finalizing() {
  finalizing_ = true;
  write_state();
}

void WorkDir::remove() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (is_ours(name) && name != kLockName) fs::remove(entry.path(), ec);
  }
  fs::remove(dir_ / kLockName, ec);
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
  fs::remove(dir_, ec);  // only when empty: a --work-dir with other files in it stays
}

}  // namespace gptq::calib
