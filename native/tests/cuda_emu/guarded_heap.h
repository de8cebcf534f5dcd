// guarded_heap.h: host memory standing in for device memory in the kernel emulator's backend
// (emu_backend.cc) and the simulated runtime (../cuda_sim): each allocation sits between two
// PROT_NONE pages and ends exactly at the upper one, so reading one float past its end faults;
// it starts filled with 0xFF bytes (NaN floats), as cudaMalloc gives garbage, so what nothing
// wrote reads as NaN; a freed allocation is unmapped, so a use after free faults too.
// Contract: thread-safe; `release` throws byol::Error for a pointer it did not hand out;
// `try_release` returns false instead.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <iterator>
#include <map>
#include <mutex>

#include "byol/error.h"

namespace byol_emu {

class GuardedHeap {
 public:
  explicit GuardedHeap(const char* owner) : owner_(owner) {}
  GuardedHeap(const GuardedHeap&) = delete;
  GuardedHeap& operator=(const GuardedHeap&) = delete;
  ~GuardedHeap() {
    for (auto& [ptr, block] : blocks_) munmap(block.map, block.map_bytes);
  }

  // Null when the system has no memory left for it (mmap failed).
  void* alloc(size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (bytes + 3) / 4 * 4;  // floats and int32 stay aligned
    const size_t pages = (body + page - 1) / page;
    const size_t total = (pages + 2) * page;
    void* map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return nullptr;
    char* base = static_cast<char*>(map);
    mprotect(base, page, PROT_NONE);
    mprotect(base + (pages + 1) * page, page, PROT_NONE);
    char* ptr = base + (pages + 1) * page - body;
    std::memset(ptr, 0xff, body);
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_[ptr] = Block{base, total, bytes};
    live_ += bytes;
    return ptr;
  }

  bool try_release(void* ptr) {
    Block block;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = blocks_.find(static_cast<char*>(ptr));
      if (it == blocks_.end()) return false;
      block = it->second;
      live_ -= block.bytes;
      blocks_.erase(it);
    }
    munmap(block.map, block.map_bytes);
    return true;
  }

  void release(void* ptr) {
    if (!ptr) return;
    BYOL_CHECK(try_release(ptr), owner_, ": release: ", ptr, " is not an allocation of this heap");
  }

  // Whether [ptr, ptr + bytes) lies inside one live allocation.
  bool owns(const void* ptr, size_t bytes) const {
    const char* p = static_cast<const char*>(ptr);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.upper_bound(const_cast<char*>(p));
    if (it == blocks_.begin()) return false;
    --it;
    return p >= it->first && size_t(p - it->first) + bytes <= it->second.bytes;
  }

  // Bytes in live allocations (as asked for, not rounded up to pages).
  size_t live_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_;
  }

 private:
  struct Block {
    char* map = nullptr;
    size_t map_bytes = 0, bytes = 0;
  };
  const char* owner_;
  mutable std::mutex mutex_;
  std::map<char*, Block> blocks_;
  size_t live_ = 0;
};

}  // namespace byol_emu
