#pragma once
// The ArborX label test's recorder: while a KernelLabels lives, Kokkos Tools callbacks record the
// label of every parallel_for/reduce/scan launched (and of every pushed region, if asked). Tests
// skip when a Kokkos Tools library is loaded (its callbacks would be replaced): tools_loaded().
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include <Kokkos_Core.hpp>

namespace mantissa::test {

class KernelLabels {
 public:
  static bool tools_loaded() { return std::getenv("KOKKOS_TOOLS_LIBS") || std::getenv("KOKKOS_PROFILE_LIBRARY"); }

  explicit KernelLabels(bool regions = false) : regions_(regions) {
    seen().clear();
    namespace kt = Kokkos::Tools::Experimental;
    kt::set_begin_parallel_for_callback(record_kernel);
    kt::set_begin_parallel_reduce_callback(record_kernel);
    kt::set_begin_parallel_scan_callback(record_kernel);
    if (regions_) kt::set_push_region_callback(record_region);
  }
  ~KernelLabels() { stop(); }
  KernelLabels(const KernelLabels&) = delete;
  KernelLabels& operator=(const KernelLabels&) = delete;

  // Fences (so every launch has been seen) and removes the callbacks; idempotent.
  void stop() {
    if (stopped_) return;
    Kokkos::fence();
    namespace kt = Kokkos::Tools::Experimental;
    kt::set_begin_parallel_for_callback(nullptr);
    kt::set_begin_parallel_reduce_callback(nullptr);
    kt::set_begin_parallel_scan_callback(nullptr);
    if (regions_) kt::set_push_region_callback(nullptr);
    stopped_ = true;
  }
  const std::set<std::string>& labels() const { return seen(); }
  // Labels that are not Kokkos' own ("Kokkos::..." View fills and copies).
  std::set<std::string> ours() const {
    std::set<std::string> s;
    for (const auto& l : seen())
      if (l.rfind("Kokkos::", 0) != 0) s.insert(l);
    return s;
  }

 private:
  static std::set<std::string>& seen() {
    static std::set<std::string> s;
    return s;
  }
  static void record_kernel(const char* name, const std::uint32_t, std::uint64_t* id) {
    *id = 0;
    seen().insert(name);
  }
  static void record_region(const char* name) { seen().insert(name); }
  bool regions_, stopped_ = false;
};

}  // namespace mantissa::test
