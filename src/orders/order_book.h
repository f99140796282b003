// Orders: the payment flow's state machine (docs/API.md, "Orders"), applied by the
// group's ledger in the same command stream as its accounts and transfers, so that
// each transition changes the order and its money in one journaled, deterministic
// command (docs/ORDERS.md).
//
// An order is created for a merchant's account; checked out by a payer's wallet
// (the money moves at once: success) or through a provider (processing, until the
// provider's result); it times out when its expiry passes first; a provider's success
// after that is recorded as exception_checkout, for an operator to resolve. A success
// can be refunded, in parts, up to its amount. A balance checkout holds the merchant's
// own money toward the provider until its result. Every move of money is a transfer of
// the ledger (OrderMoney: immediate, or that hold), made in the same command as the
// transition; a checkout refused by the merchant's risk rules moves nothing.
//
// Thread: the group's only. Memory: allocated at construction; applying commands
// allocates nothing. Time: only from each command's stamp.
#pragma once

#include <algorithm>
#include <vector>

#include "base/fixed_array.h"
#include "base/hash.h"
#include "base/ids.h"
#include "base/open_address_map.h"
#include "base/status.h"
#include "ledger/command.h"
#include "ledger/expiry_queue.h"
#include "ledger/types.h"

namespace paygate {

enum class OrderStatus : u8 {
  created = 1,
  processing = 2,
  success = 3,
  failed = 4,
  timeout = 5,
  cancelled = 6,
  rejected_risk = 7,  // the merchant's risk rules refused the checkout: nothing moved
  exception_checkout = 8,
};
constexpr bool is_final(OrderStatus status) noexcept {
  return status != OrderStatus::created && status != OrderStatus::processing;
}
std::string_view name(OrderStatus status) noexcept;

enum class OrderMethod : u8 { none = 0, wallet = 1, balance = 2, external = 3 };
std::string_view name(OrderMethod method) noexcept;

// Which of its merchant's risk rules refused an order's checkout (docs/ORDERS.md). The
// gateway decides (the rules and a payer's recent checkouts are its own); the order
// machine records the decision, so that replay repeats it.
enum class RiskRule : u8 { none = 0, max_amount = 1, payer_velocity = 2, blocked_payer = 3 };
std::string_view name(RiskRule rule) noexcept;
// A checkout command's action: the method in the low bits, a refusing rule above
// (kCheckoutRiskShift, ledger/command.h).
constexpr u8 checkout_action(OrderMethod method, RiskRule rule = RiskRule::none) noexcept {
  return static_cast<u8>(static_cast<u8>(method) | (static_cast<u8>(rule) << kCheckoutRiskShift));
}

// How an exception_checkout was settled (OrderResolution::none until then).
enum class OrderResolution : u8 { none = 0, accepted = 1, rejected = 2 };

struct alignas(64) Order {
  u64 id = 0;
  u64 merchant = 0;   // the credited account's owner
  AccountId account;  // credited on success; balance: debited (the merchant's prefunded one)
  u64 amount = 0;
  u64 amount_refunded = 0;
  u64 created_at_ns = 0;
  u64 expires_at_ns = 0;
  u64 finished_at_ns = 0;      // when it became final (0 while open)
  u64 ref_hash = 0;            // the merchant_ref's hash, unique per merchant while held
  AccountId payer_account;     // wallet: the account paid from; balance: the order's account
  AccountId provider_account;  // external, balance: the provider's clearing account
  TransferId transfer_id;      // the transfer that paid it (a success; balance: the hold)
  Currency currency;
  u32 expires_in_s = 0;
  OrderStatus status = OrderStatus::created;
  OrderMethod method = OrderMethod::none;
  OrderResolution resolution = OrderResolution::none;
  u8 late_result = 0;  // exception_checkout: the provider's success came after timeout
  RiskRule risk_rule = RiskRule::none;  // rejected_risk: which rule refused its checkout
  u8 has_callback_url = 0;  // its request gave one (kOrderCallbackUrl): the store has it
  u16 reserved2 = 0;
  // Final: its place in the order finals leave memory, (finished_at, retain_serial).
  // An unresolved exception_checkout is never let go.
  u64 retain_serial = 0;
  // balance: the hold on the merchant's account toward the provider, open while the
  // order is processing, posted by its success (then transfer_id), else voided.
  TransferId hold_id;  // no padding: every byte of a saved order is defined
};
static_assert(sizeof(Order) == 128);
static_assert(std::has_unique_object_representations_v<Order>);
static_assert(std::is_trivially_copyable_v<Order>);

// Where an order's money comes from and goes to: wallet, the payer's wallet → the
// order's account; external, the provider's clearing account → the order's account;
// balance, the order's (the merchant's) account → the provider's clearing account.
// A refund moves it back.
constexpr AccountId paying_side(const Order& o) noexcept {
  return o.method == OrderMethod::external ? o.provider_account : o.payer_account;
}
constexpr AccountId paid_side(const Order& o) noexcept {
  return o.method == OrderMethod::balance ? o.provider_account : o.account;
}

// The ledger's money, as the order machine may use it: immediate transfers, and holds
// that only the order ends, at the order command's stamp, with every rule of the
// ledger (funds, currency, limits).
class OrderMoney {
 public:
  virtual CommandResult move(AccountId debit, AccountId credit, u64 amount,
                             Currency currency) noexcept = 0;
  // A hold that only close_hold() ends (no timeout, no transfer command may touch it).
  virtual CommandResult hold(AccountId debit, AccountId credit, u64 amount,
                             Currency currency) noexcept = 0;
  // Posts the whole hold, or voids it. REQUIRES: an open hold made by hold().
  virtual void close_hold(TransferId id, bool post) noexcept = 0;
  // To an account of another group (a refund to a wallet there): held here and numbered
  // on the channel for the gateway to carry (docs/LEDGER.md); the hold names `order_id`
  // until it settles, and a refused delivery comes back through refund_returned().
  virtual CommandResult send(AccountId debit, AccountId credit, u64 amount,
                             u64 order_id) noexcept = 0;
  virtual const Account* account(AccountId id) const noexcept = 0;
  virtual bool in_other_group(AccountId id) const noexcept = 0;
  // The merchant's share of the order table (the ledger's quotas count the orders held
  // by their merchant): whether one more fits, one more taken, one less (it left memory).
  virtual bool order_room(u64 merchant) const noexcept = 0;
  virtual void order_taken(u64 merchant) noexcept = 0;
  virtual void order_left(u64 merchant) noexcept = 0;

 protected:
  ~OrderMoney() = default;
};

// Told of every change of an order as the book makes it (created, a new status, a
// refund counted or given back), with the order as it is after: the history store's
// projector keeps order rows so (history/projector.h). The group's own ledger has
// none; an observer must not allocate where that matters, nor call back.
class OrderObserver {
 public:
  // At the command `at`; `made`: the order was just created by it.
  virtual void order_changed(const Order& order, Stamp at, bool made) noexcept = 0;
  // A final order leaves memory (its retention passed) before the command `at`: it
  // changes no more (the history store archives it).
  virtual void order_left(const Order& order, Stamp at) noexcept = 0;

 protected:
  ~OrderObserver() = default;
};

struct OrderConfig {
  IdPrefix prefix{};
  u32 orders_max = 1u << 16;  // open orders and final ones still held
  u64 final_retained_ns = 3600 * kNanosPerSecond;
};

inline constexpr u32 kOrderExpiresInMaxS = 366 * 24 * 3600;

class OrderBook {
 public:
  explicit OrderBook(const OrderConfig& config);

  static bool is_order_command(CommandKind kind) noexcept {
    return kind >= CommandKind::order_create && kind <= CommandKind::order_resolve;
  }
  // Applies one order command at `stamp`. REQUIRES: advance(stamp) ran.
  CommandResult apply(Stamp stamp, const Command& command, OrderMoney& money) noexcept;
  void set_observer(OrderObserver* observer) noexcept { observer_ = observer; }
  // Orders past their expiry time out (a balance order's hold is voided); final ones
  // past their retention leave memory.
  void advance(Stamp stamp, OrderMoney& money) noexcept;

  const Order* find(u64 id) const noexcept {
    const u32* slot = slot_of(id);
    return slot == nullptr ? nullptr : &orders_[*slot];
  }
  // Made here once and no longer held (its retention passed): answered as archived,
  // never as unknown.
  bool archived(u64 id) const noexcept {
    return id_prefix_bits(id) == config_.prefix.bits() && id_serial(id) != 0 &&
           id_serial(id) < next_serial_ && find(id) == nullptr;
  }
  // The principal an order command's key counts against (ledger quotas), or 0:
  // owner_of(AccountId) → the account's owner. A checkout is the paying side's (the
  // wallet's owner, or the provider whose clearing account it names), a result the
  // provider's it was routed to, every other step the merchant's: a payer or provider
  // never spends the merchant's quota.
  template <typename OwnerOf>
  u64 key_owner(const Command& command, OwnerOf&& owner_of) const noexcept {
    if (command.kind == CommandKind::order_create) return owner_of(command.order_create.account);
    const Order* order = find(command.order.order_id);
    if (command.kind == CommandKind::order_checkout) {
      // balance: the merchant pays from its own account (account names the provider's).
      const bool balance =
          (command.order.action & kCheckoutMethodMask) == static_cast<u8>(OrderMethod::balance);
      if (!balance) return owner_of(command.order.account);
      return order == nullptr ? 0 : order->merchant;
    }
    if (order == nullptr) return 0;
    if (command.kind == CommandKind::order_result) {
      return order->provider_account.value == 0 ? 0 : owner_of(order->provider_account);
    }
    return order->merchant;
  }
  // A wallet payment from another group (docs/ORDERS.md, "Between groups"), as the
  // credit arrives in this one: whether order `id` takes it now (open, this amount, this
  // currency): ok, or the refusal the paying group is answered.
  CommandResult payable(u64 id, u64 amount, Currency currency) const noexcept;
  // It was credited (`credit`, the transfer here): the order is paid by `payer`.
  // REQUIRES: payable() just answered ok.
  void paid_between_groups(Stamp stamp, u64 id, AccountId payer, TransferId credit,
                           OrderMoney& money) noexcept;
  // A refund sent to another group came back (its delivery was refused).
  void refund_returned(Stamp stamp, u64 id, u64 amount) noexcept;

  // The refusal of a step the order's status does not allow: invalid_order_state, with
  // the status in channel_number for the answer to name (the gateway answers the same
  // when it refuses from an order it read).
  static CommandResult refuse_state(const Order& order) noexcept {
    return CommandResult{.code = ResultCode::invalid_order_state,
                         .channel_number = static_cast<u32>(order.status),
                         .id = order.id};
  }

  u32 size() const noexcept { return count_; }
  u64 made() const noexcept { return next_serial_ - 1; }  // orders ever created here
  // visit(order) for every order held, in slot order.
  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (u32 slot = 0; slot < config_.orders_max; ++slot) {
      if (orders_[slot].id != 0) visit(orders_[slot]);
    }
  }
  // When advance() next has something to do (an order to time out, one to let go), or 0.
  u64 next_due_ns() const noexcept {
    const u64 expiry = expiry_.empty() ? 0 : expiry_.top().expires_at_ns;
    const u64 retention = retention_.empty() ? 0 : retention_.top().expires_at_ns;
    return expiry == 0 ? retention : retention == 0 ? expiry : std::min(expiry, retention);
  }
  const OrderConfig& config() const noexcept { return config_; }

  // State (docs/SNAPSHOT.md): save writes in slot order and allocates nothing; load
  // rebuilds the indexes; the digest and invariants see orders in id order.
  // Its configuration leads, for a load to refuse another (as the ledger's own).
  struct SavedConfig {
    u32 orders_max;
    u32 reserved;
    u64 final_retained_ns;
    bool operator==(const SavedConfig&) const = default;
  };
  SavedConfig saved_config() const noexcept {
    return {config_.orders_max, 0, config_.final_retained_ns};
  }
  template <typename Put>
  void save(Put&& put) const noexcept {
    put(saved_config());
    put(next_serial_);
    put(next_retain_serial_);
    put(u64{count_});
    for (u32 slot = 0; slot < config_.orders_max; ++slot) {
      if (orders_[slot].id != 0) put(orders_[slot]);
    }
  }
  // `orders` as saved; `now_ns` the state's last stamp.
  Status load(u64 next_serial, u64 next_retain_serial, const std::vector<Order>& orders,
              u64 now_ns);
  void hash_into(Hasher& hasher) const;
  Status check_invariants(u64 now_ns) const;

 private:
  // The slot of order `id`; nullptr when not held (0, the map's empty key, never is:
  // a command may name any id, fuzzed ones too).
  const u32* slot_of(u64 id) const noexcept { return id == 0 ? nullptr : index_.find(id); }
  u32 take_slot(Stamp stamp) noexcept;  // kNoSlot when full
  // Final from now; a balance order's hold is posted (success) or voided (else).
  void finish(u32 slot, OrderStatus status, Stamp stamp, OrderMoney& money) noexcept;
  void retain(u32 slot, Stamp stamp) noexcept;  // final from now: held for the retention
  void release(u32 slot, Stamp stamp, OrderMoney& money) noexcept;  // leaves memory (archived)
  static u64 ref_key(u64 merchant, u64 ref_hash) noexcept {
    return Hasher{}.add(merchant).add(ref_hash).value() | 1;  // never 0 (the empty key)
  }
  CommandResult dispatch(Stamp stamp, const Command& command, OrderMoney& money) noexcept;
  void changed(const Order& order, Stamp at, bool made = false) noexcept {
    if (observer_ != nullptr) observer_->order_changed(order, at, made);
  }
  CommandResult create(Stamp stamp, const Command& command, OrderMoney& money) noexcept;
  CommandResult checkout(Stamp stamp, const Command& command, OrderMoney& money) noexcept;
  CommandResult result(Stamp stamp, const Command& command, OrderMoney& money) noexcept;
  CommandResult cancel(Stamp stamp, const Command& command, OrderMoney& money) noexcept;
  CommandResult refund(const Command& command, OrderMoney& money) noexcept;
  CommandResult resolve(Stamp stamp, const Command& command, OrderMoney& money) noexcept;

  static constexpr u32 kNoSlot = ~u32{0};

  OrderConfig config_;
  FixedArray<Order> orders_;  // by slot; id 0: free
  FixedArray<u32> free_slots_;
  u32 free_top_ = 0;
  u32 count_ = 0;
  OpenAddressMap<u64, u32, Mix64Hash> index_;  // order id → slot
  OpenAddressMap<u64, u64, Mix64Hash> refs_;   // ref_key → order id
  ExpiryQueue expiry_;                         // open orders by (expires_at, id)
  // Final orders by (finished_at, retain_serial), to leave memory when their retention
  // passes; every final order but an unresolved exception_checkout is here.
  ExpiryQueue retention_;
  u64 next_retain_serial_ = 1;
  u64 next_serial_ = 1;
  OrderObserver* observer_ = nullptr;
};

}  // namespace paygate
