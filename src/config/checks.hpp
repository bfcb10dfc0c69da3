#pragma once
// The checks a configuration key carries (bounds, choices). Plain structs without toml++, so that
// config.hpp, and the model and engine headers that include it, stay free of host-only libraries
// (translation units that include Kokkos are compiled by nvcc in CUDA builds); the deck parsing that
// applies them is in deck.hpp.
#include <string>
#include <vector>

namespace mantissa::config {

template <class T>
struct Range {  // inclusive bounds; open bounds via min_exclusive / max_exclusive
  T min, max;
  bool min_exclusive = false, max_exclusive = false;
};
struct OneOf {
  std::vector<std::string> choices;
};
struct NoCheck {};

// One documented key (document_keys(), `mantissa --help-deck`).
struct KeyDoc {
  std::string block, key, default_value, allowed, doc;
  bool required = false;
};

}  // namespace mantissa::config
