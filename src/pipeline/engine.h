// One process, N groups: each its own thread, ring, journal and snapshots under
// data_dir/group-NNNN (or, with GroupConfig::drive_inline, no threads at all: the
// simulator turns every group and the finisher from its one thread). Ids carry their group
// (base/ids.h), so any thread finds the group of an account or transfer without a lookup.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/between_groups.h"
#include "pipeline/group.h"

namespace paygate {

struct EngineConfig {
  std::filesystem::path data_dir;
  u32 region = 0;
  u32 groups = 1;
  GroupConfig group{};  // a template: dir and ledger.prefix are set per group
  // How often transfers between groups left unsettled while running are looked for
  // (BetweenGroupsFinisher); one is finished at the second look that finds it.
  u64 between_groups_retry_ns = kNanosPerSecond;
};

class Engine {
 public:
  // Recovers every group (in parallel); fails as the first group that fails does,
  // naming it.
  static Result<std::unique_ptr<Engine>> open(const EngineConfig& config);
  ~Engine();

  // Starts every group, then finishes the transfers between groups that the last run
  // left unsettled (pipeline/between_groups.h) before returning; from then on a
  // BetweenGroupsFinisher finishes those that the gateway leaves (with 2+ groups).
  void start();
  void stop();
  const BetweenGroupsReport& between_groups_at_start() const noexcept { return between_groups_; }
  // Transfers between groups finished by the finisher since start().
  u64 between_groups_finished() const noexcept { return finisher_ ? finisher_->finished() : 0; }
  const BetweenGroupsFinisher* finisher() const noexcept { return finisher_.get(); }
  // Groups driven inline (the simulator): the finisher has no thread, and the owner
  // has it look when it chooses. REQUIRES: started, 2+ groups.
  void look_for_unsettled() { finisher_->look(); }

  u32 groups() const noexcept { return static_cast<u32>(groups_.size()); }
  Group& group(u32 index) noexcept { return *groups_[index]; }
  // The group an id belongs to, or null if it is from another region or group count.
  Group* route(u64 id) noexcept;

  static std::filesystem::path group_dir(const std::filesystem::path& data_dir, u32 group);
  // Group g's configuration: the template's, with its directory and ledger identity.
  static GroupConfig group_config(const EngineConfig& config, u32 g);

 private:
  EngineConfig config_;
  std::vector<std::unique_ptr<Group>> groups_;
  BetweenGroupsReport between_groups_;
  std::unique_ptr<BetweenGroupsFinisher> finisher_;
};

}  // namespace paygate
