#pragma once
// The input deck: a TOML file (toml++) plus `--set block.key=value` overrides from the command
// line, bound to typed configuration structs through one schema per struct (its `visit`), which
// serves reading with validation, printing the resolved deck and documenting every key.
//
// Every error names where (file:line, or the --set argument), the key and what was expected, and is
// thrown as DeckError; the executable turns it into exit status 2 before any output is touched.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "config/checks.hpp"

namespace mantissa::config {

// A parsed deck with its origin, so every value can be traced to a file line or a --set.
class Deck {
 public:
  static Deck from_file(const std::string& path);
  static Deck from_string(std::string_view text, const std::string& name);
  // "block.key=value": value is parsed as a TOML value (256, 1e-6, true, "x", [..]); a bare word
  // that is not valid TOML (fp16, pg_seq_is) is taken as a string.
  void apply_override(const std::string& assignment);

  const toml::table& table() const { return table_; }
  const std::string& name() const { return name_; }
  // "file:line" (or "--set block.key=..." for overrides) of a block or a key, for messages.
  std::string where(std::string_view block, std::string_view key = {}) const;

 private:
  toml::table table_;
  std::string name_;
  std::map<std::string, std::string> overrides_;  // "block.key" -> "--set block.key=value"
};


// ---- value formatting shared by the printing and documenting visitors -------------------------
namespace detail {
std::string format_value(std::int64_t v);
inline std::string format_value(int v) { return format_value(static_cast<std::int64_t>(v)); }
std::string format_value(double v);
inline std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(const std::string& v);
std::string format_value(const std::vector<std::string>& v);
std::string format_value(const std::vector<std::int64_t>& v);
std::string format_number(double v);
template <class U>
std::string describe(const Range<U>& r) {
  std::string lo = r.min_exclusive ? "> " : ">= ";
  std::string hi = r.max_exclusive ? "< " : "<= ";
  if constexpr (std::is_integral_v<U>) {
    return lo + std::to_string(r.min) + " and " + hi + std::to_string(r.max);
  } else {
    return lo + format_number(static_cast<double>(r.min)) + " and " + hi + format_number(static_cast<double>(r.max));
  }
}
std::string describe(const OneOf& c);
inline std::string describe(const NoCheck&) { return {}; }
template <class T>
const char* type_name();
}  // namespace detail

// ---- the three visitors ----------------------------------------------------------------------
// Reads and validates one block from a Deck into a struct; records which keys were consumed.
class Reader {
 public:
  Reader(const Deck& deck, std::string block) : deck_(deck), block_(std::move(block)) {}

  template <class T, class Check = NoCheck>
  void key(const char* name, T& field, const char* /*doc*/, Check check = {}, bool required = false) {
    seen_.insert(name);
    const toml::node* node = find(name);
    if (!node) {
      if (required) missing(name, detail::type_name<T>());
      return;
    }
    read_value(name, *node, field);
    apply_check(name, field, check);
  }
  template <class T, class Check = NoCheck>
  void required(const char* name, T& field, const char* doc, Check check = {}) {
    key(name, field, doc, check, true);
  }
  // Errors for keys of this block that no visit consumed (typos), with a suggestion.
  void reject_unknown() const;
  [[noreturn]] void fail(std::string_view key, const std::string& what) const;
  const std::string& block() const { return block_; }

 private:
  const toml::node* find(const char* name) const;
  [[noreturn]] void missing(const char* name, const char* type) const;
  void read_value(const char* name, const toml::node& n, std::int64_t& out) const;
  void read_value(const char* name, const toml::node& n, int& out) const;
  void read_value(const char* name, const toml::node& n, double& out) const;
  void read_value(const char* name, const toml::node& n, bool& out) const;
  void read_value(const char* name, const toml::node& n, std::string& out) const;
  void read_value(const char* name, const toml::node& n, std::vector<std::string>& out) const;
  void read_value(const char* name, const toml::node& n, std::vector<std::int64_t>& out) const;

  template <class T, class U>
  void apply_check(const char* name, const T& v, const Range<U>& r) const {
    const bool lo_bad = r.min_exclusive ? !(v > r.min) : !(v >= r.min);
    const bool hi_bad = r.max_exclusive ? !(v < r.max) : !(v <= r.max);
    if (lo_bad || hi_bad) {
      fail(name, "value " + detail::format_value(v) + " is out of range: expected a " + detail::type_name<T>() + " " +
                     detail::describe(r));
    }
  }
  template <class T>
  void apply_check(const char* name, const T& v, const OneOf& c) const {
    if constexpr (std::is_same_v<T, std::string>) {
      check_choice(name, v, c);
    } else {
      for (const auto& s : v) check_choice(name, s, c);
    }
  }
  template <class T>
  void apply_check(const char*, const T&, const NoCheck&) const {}
  void check_choice(const char* name, const std::string& v, const OneOf& c) const;

  const Deck& deck_;
  std::string block_;
  std::set<std::string> seen_;
};

// Writes the resolved values of one block as TOML with each key's documentation as a comment.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void begin_block(const std::string& block, const char* doc);
  template <class T, class Check = NoCheck>
  void key(const char* name, const T& field, const char* doc, Check check = {}, bool = false) {
    emit(name, detail::format_value(field), doc, detail::describe(check));
  }
  template <class T, class Check = NoCheck>
  void required(const char* name, const T& field, const char* doc, Check check = {}) {
    key(name, field, doc, check);
  }

 private:
  void emit(const char* name, const std::string& value, const char* doc, const std::string& allowed);
  std::string& out_;
};

// Lists every key as "block.key" with its type, default, allowed values and documentation.
class Documenter {
 public:
  explicit Documenter(std::vector<KeyDoc>& out) : out_(out) {}
  void begin_block(const std::string& block) { block_ = block; }
  template <class T, class Check = NoCheck>
  void key(const char* name, const T& field, const char* doc, Check check = {}, bool required = false) {
    out_.push_back(KeyDoc{block_, name, detail::format_value(field), detail::describe(check), doc, required});
  }
  template <class T, class Check = NoCheck>
  void required(const char* name, const T& field, const char* doc, Check check = {}) {
    key(name, field, doc, check, true);
  }

 private:
  std::vector<KeyDoc>& out_;
  std::string block_;
};

}  // namespace mantissa::config
