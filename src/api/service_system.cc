// What is not a resource: the owner index filled at start, and the metrics page.
#include "api/service.h"

#include "api/metrics.h"

namespace paygate::api {

void Service::index_owners(Engine& engine, OwnerIndex& owners) {
  for (u32 g = 0; g < engine.groups(); ++g) {
    const Ledger& ledger = engine.group(g).ledger();
    for (u64 serial = 1; serial <= ledger.account_count(); ++serial) {
      const Account* account =
          ledger.find_account(AccountId{make_id(ledger.config().prefix, serial)});
      PG_ASSERT(account != nullptr);
      owners.set(account->id.value, account->owner.value, account->currency.code);
    }
  }
}

void Service::render_metrics_page(std::string& out) const {
  render_metrics(MetricsSources{.engine = engine_.load(std::memory_order_acquire),
                                .history = history_.load(std::memory_order_acquire),
                                .webhooks = webhooks_.load(std::memory_order_acquire),
                                .kafka = kafka_.load(std::memory_order_acquire),
                                .order_cache = order_cache_.load(std::memory_order_acquire),
                                .order_feed = order_feed_.load(std::memory_order_acquire),
                                .http = metrics_.get(),
                                .replay_refusals = auth_.replay_cache_refusals(),
                                .replay_entries = auth_.replay_cache_size(),
                                .auth_limited = auth_failures_.refused(),
                                .auth_addresses = auth_failures_.addresses(),
                                .merchants = merchants_.size(),
                                .binary_frames = binary_frames_.load(std::memory_order_relaxed),
                                .ready = ready()},
                 out);
}

}  // namespace paygate::api
