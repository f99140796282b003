#include "pipeline/engine.h"

#include <thread>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/ids.h"

namespace paygate {

GroupConfig Engine::group_config(const EngineConfig& config, u32 g) {
  GroupConfig group = config.group;
  group.dir = group_dir(config.data_dir, g);
  group.ledger.prefix = IdPrefix{config.region, g};
  group.ledger.groups = config.groups;
  return group;
}

std::filesystem::path Engine::group_dir(const std::filesystem::path& data_dir, u32 group) {
  return data_dir / fmt::format("group-{:04}", group);
}

Result<std::unique_ptr<Engine>> Engine::open(const EngineConfig& config) {
  if (config.groups == 0 || config.groups > kGroupMax + 1 || config.region > kRegionMax) {
    return Status::invalid_config(
        fmt::format("bad engine shape: region {} groups {}", config.region, config.groups));
  }
  std::unique_ptr<Engine> engine(new Engine());
  engine->config_ = config;
  engine->groups_.resize(config.groups);
  std::vector<Status> failures(config.groups);
  const auto open_group = [&](u32 g) {
    Result<std::unique_ptr<Group>> opened = Group::open(group_config(config, g));
    if (opened.ok()) {
      engine->groups_[g] = std::move(opened).value();
    } else {
      failures[g] = opened.status();
    }
  };
  if (config.group.drive_inline) {
    for (u32 g = 0; g < config.groups; ++g)  // one thread, in order: the same run each time
      open_group(g);
  } else {
    std::vector<std::thread> openers;
    for (u32 g = 0; g < config.groups; ++g)
      openers.emplace_back(open_group, g);
    for (auto& opener : openers)
      opener.join();
  }
  for (u32 g = 0; g < config.groups; ++g) {
    if (!failures[g].ok()) return failures[g].with_context(fmt::format("group {}", g));
  }
  return engine;
}

Engine::~Engine() {
  stop();
}

void Engine::start() {
  PG_ASSERT(!groups_.empty() && finisher_ == nullptr);
  const std::vector<UnsettledTransfer> unsettled = unsettled_transfers(*this);
  for (auto& group : groups_)
    group->start();
  between_groups_ = finish_unsettled(*this, unsettled);
  if (groups_.size() > 1) {
    finisher_ = std::make_unique<BetweenGroupsFinisher>(
        *this, config_.group.drive_inline ? 0 : config_.between_groups_retry_ns);
  }
}

void Engine::stop() {
  finisher_.reset();  // it submits to the groups: first
  for (auto& group : groups_) {
    if (group) group->stop();
  }
}

Group* Engine::route(u64 id) noexcept {
  const IdPrefix prefix = id_prefix(id);
  if (prefix.region != config_.region || prefix.group >= groups_.size()) return nullptr;
  Group* group = groups_[prefix.group].get();
  PG_ASSERT(group != nullptr && group->config().ledger.prefix == prefix);
  return group;
}

}  // namespace paygate
