// Helpers for the journal's tests: write records through a Writer and wait for them.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "journal/reader.h"
#include "journal/writer.h"

namespace paygate::journal {

inline LedgerConfig test_ledger_config() {
  return LedgerConfig{.prefix = {1, 3},
                      .accounts_max = 64,
                      .pending_max = 64,
                      .recent_transfers_max = 64,
                      .idempotency_keys_max = 64};
}

inline constexpr u64 kTestSegmentBytes = 2u << 20;

inline WriterOptions test_writer_options(const std::filesystem::path& dir, Event* event = nullptr) {
  return WriterOptions{.dir = dir,
                       .identity = SegmentHeader::describe(test_ledger_config(), kTestSegmentBytes),
                       .segment_bytes = kTestSegmentBytes,
                       .staging_bytes = 1u << 20,
                       .durable_event = event};
}

// Ticks with distinct extra_hash values, so every record's bytes differ.
inline std::vector<Command> numbered_commands(u64 first, u32 count) {
  std::vector<Command> commands(count);
  for (u32 i = 0; i < count; ++i)
    commands[i] = Command::make_tick().with_extra_hash(first + i);
  return commands;
}

// Stages one commands record at `sequence`, written in format `version`; returns
// false if the stage is full.
inline bool stage_commands(Writer& writer, u64 sequence, const std::vector<Command>& commands,
                           u64 timestamp_ns = 1000, u8 version = kFormatVersion) {
  const u32 count = static_cast<u32>(commands.size());
  unsigned char* out = writer.reserve(record_bytes_max(RecordType::commands, count, version));
  if (out == nullptr) return false;
  const u32 length =
      encode_record(out, RecordType::commands, sequence, timestamp_ns, commands, nullptr, version);
  writer.commit(length, sequence + count - 1);
  return true;
}
inline bool stage(Writer& writer, u64 sequence, u32 count, u64 timestamp_ns = 1000,
                  u8 version = kFormatVersion) {
  return stage_commands(writer, sequence, numbered_commands(sequence, count), timestamp_ns,
                        version);
}

inline bool wait_durable(const Writer& writer, u64 sequence) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (writer.durable_sequence() < sequence && !writer.failed()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return writer.durable_sequence() >= sequence;
}

// Writes `records` records of `per_record` commands from sequence 1 and stops.
inline void write_journal(const std::filesystem::path& dir, u64 records, u32 per_record,
                          u8 version = kFormatVersion) {
  auto opened = Writer::open(test_writer_options(dir), AppendPosition{{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
  writer->start();
  u64 sequence = 1;
  for (u64 r = 0; r < records; ++r) {
    while (!stage(*writer, sequence, per_record, 1000, version))
      std::this_thread::yield();
    sequence += per_record;
  }
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  writer->stop();
}

// Every record's (sequence, count), in order.
inline std::vector<std::pair<u64, u32>> read_all(const std::filesystem::path& dir,
                                                 ScanReport* report) {
  std::vector<std::pair<u64, u32>> seen;
  *report = scan(dir, 0, [&](const Record& r) {
    seen.emplace_back(r.header->sequence, r.header->count);
    return true;
  });
  return seen;
}

}  // namespace paygate::journal
