#pragma once
// The checks a configuration key carries (bounds, choices). Plain structs without toml++, so that
// config.hpp, and the model and engine headers that include it, stay free of host-only libraries
// (translation units that include Kokkos are compiled by nvcc in CUDA builds); the deck parsing that
// applies them is in deck.hpp.
#include <stdexcept>
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

// A bad deck (a file, a key, a --set): the executable turns it into exit status 2. Here rather than in
// deck.hpp so that translation units nvcc compiles can catch it.
struct DeckError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One documented key (document_keys(), `mantissa --help-deck`).
struct KeyDoc {
  std::string block, key, default_value, allowed, doc;
  bool required = false;
};

}  // namespace mantissa::config
