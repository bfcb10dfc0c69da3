#include "config/deck.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mantissa::config {

namespace {

std::string location(const toml::source_region& src, const std::string& fallback) {
  const std::string path = src.path ? *src.path : fallback;
  if (path.rfind("--set", 0) == 0) return path;  // an override: its own text says where
  if (src.begin.line == 0) return path;
  return fmt::format("{}:{}", path, src.begin.line);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const char* node_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date/time";
  }
}

}  // namespace

// ---- Deck ------------------------------------------------------------------------------------
Deck Deck::from_file(const std::string& path) {
  // A deck is a small regular text file: not a directory, a device (/dev/zero never ends) or a binary.
  constexpr std::uintmax_t kMaxDeckBytes = 1u << 20;
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st))
    throw DeckError(fmt::format("{}: cannot open the input deck: no such file", path));
  if (std::filesystem::is_directory(st)) throw DeckError(fmt::format("{}: the input deck is a directory, not a file", path));
  if (!std::filesystem::is_regular_file(st))
    throw DeckError(fmt::format("{}: the input deck is not a regular file (a device, pipe or socket)", path));
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxDeckBytes)
    throw DeckError(fmt::format("{}: the input deck is {} bytes; a deck is a TOML text of at most {} bytes", path, size,
                                kMaxDeckBytes));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DeckError(fmt::format("{}: cannot open the input deck (is it readable?)", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (text.find('\0') != std::string::npos)
    throw DeckError(fmt::format("{}: the input deck contains NUL bytes: it is not a TOML text file", path));
  return from_string(text, path);
}

Deck Deck::from_string(std::string_view text, const std::string& name) {
  Deck d;
  d.name_ = name;
  try {
    d.table_ = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw DeckError(fmt::format("{}:{}:{}: TOML syntax error: {}", name, e.source().begin.line,
                                e.source().begin.column, e.description()));
  }
  return d;
}

void Deck::apply_override(const std::string& assignment) {
  const std::string origin = "--set " + assignment;
  const auto eq = assignment.find('=');
  const auto dot = assignment.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq) {
    throw DeckError(fmt::format("{}: expected block.key=value (e.g. --set model.n_layer=4)", origin));
  }
  const std::string block = assignment.substr(0, dot);
  const std::string key = assignment.substr(dot + 1, eq - dot - 1);
  const std::string value = assignment.substr(eq + 1);
  if (key.find('.') != std::string::npos) {
    throw DeckError(fmt::format("{}: nested keys are not supported; expected block.key=value", origin));
  }
  toml::table parsed;
  try {
    parsed = toml::parse(fmt::format("v = {}", value), origin);
  } catch (const toml::parse_error&) {
    parsed = toml::table{};  // not a TOML value: a bare word is a string
    parsed.insert("v", value);
  }
  toml::table* blk = table_[block].as_table();
  if (!blk) {
    if (table_.contains(block)) throw DeckError(fmt::format("{}: '{}' is not a block in {}", origin, block, name_));
    table_.insert(block, toml::table{});
    blk = table_[block].as_table();
  }
  blk->insert_or_assign(key, std::move(*parsed.get("v")));
  overrides_[block + "." + key] = origin;  // messages name the override, not a file line
}

std::string Deck::where(std::string_view block, std::string_view key) const {
  if (!key.empty()) {
    auto it = overrides_.find(std::string(block) + "." + std::string(key));
    if (it != overrides_.end()) return it->second;
    if (const toml::table* t = table_[block].as_table()) {
      if (const toml::node* n = t->get(key)) return location(n->source(), name_);
    }
  }
  if (const toml::node* b = table_.get(block)) return location(b->source(), name_);
  return name_;
}

// ---- formatting --------------------------------------------------------------------------------
namespace detail {
std::string format_value(std::int64_t v) { return fmt::format("{}", v); }
std::string format_number(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}
std::string format_value(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::isnan(v)) return "nan";
  std::string s = fmt::format("{}", v);  // shortest round-trip representation
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}
std::string format_value(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}
std::string format_value(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + format_value(v[i]);
  return out + "]";
}
std::string format_value(const std::vector<std::int64_t>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + format_value(v[i]);
  return out + "]";
}
std::string describe(const OneOf& c) {
  std::string out = "one of ";
  for (std::size_t i = 0; i < c.choices.size(); ++i) out += (i ? ", " : "") + c.choices[i];
  return out;
}
template <>
const char* type_name<std::int64_t>() {
  return "integer";
}
template <>
const char* type_name<int>() {
  return "integer";
}
template <>
const char* type_name<double>() {
  return "number";
}
template <>
const char* type_name<bool>() {
  return "boolean (true/false)";
}
template <>
const char* type_name<std::string>() {
  return "string";
}
template <>
const char* type_name<std::vector<std::string>>() {
  return "array of strings";
}
template <>
const char* type_name<std::vector<std::int64_t>>() {
  return "array of integers";
}
}  // namespace detail

// ---- Reader ------------------------------------------------------------------------------------
const toml::node* Reader::find(const char* name) const {
  const toml::table* t = deck_.table()[block_].as_table();
  return t ? t->get(name) : nullptr;
}

void Reader::fail(std::string_view key, const std::string& what) const {
  throw DeckError(fmt::format("{}: [{}] {}: {}", deck_.where(block_, key), block_, key, what));
}

void Reader::missing(const char* name, const char* type) const {
  throw DeckError(fmt::format("{}: [{}] {}: required key is missing (expected a {})", deck_.where(block_), block_,
                              name, type));
}

void Reader::read_value(const char* name, const toml::node& n, std::int64_t& out) const {
  if (auto v = n.value_exact<std::int64_t>()) {
    out = *v;
    return;
  }
  fail(name, fmt::format("expected an integer, found {}", node_type_name(n)));
}
void Reader::read_value(const char* name, const toml::node& n, int& out) const {
  std::int64_t v = 0;
  read_value(name, n, v);
  if (v < INT32_MIN || v > INT32_MAX) fail(name, fmt::format("integer {} does not fit in 32 bits", v));
  out = static_cast<int>(v);
}
void Reader::read_value(const char* name, const toml::node& n, double& out) const {
  if (auto v = n.value_exact<double>()) {
    out = *v;
    return;
  }
  if (auto v = n.value_exact<std::int64_t>()) {  // 1 means 1.0
    out = static_cast<double>(*v);
    return;
  }
  fail(name, fmt::format("expected a number, found {}", node_type_name(n)));
}
void Reader::read_value(const char* name, const toml::node& n, bool& out) const {
  if (auto v = n.value_exact<bool>()) {
    out = *v;
    return;
  }
  fail(name, fmt::format("expected a boolean (true or false), found {}", node_type_name(n)));
}
void Reader::read_value(const char* name, const toml::node& n, std::string& out) const {
  if (auto v = n.value_exact<std::string>()) {
    out = *v;
    return;
  }
  fail(name, fmt::format("expected a string, found {}", node_type_name(n)));
}
void Reader::read_value(const char* name, const toml::node& n, std::vector<std::string>& out) const {
  const toml::array* a = n.as_array();
  if (!a) fail(name, fmt::format("expected an array of strings, found {}", node_type_name(n)));
  out.clear();
  for (const auto& e : *a) {
    auto v = e.value_exact<std::string>();
    if (!v) fail(name, fmt::format("expected an array of strings, found an element that is {}", node_type_name(e)));
    out.push_back(*v);
  }
}

void Reader::read_value(const char* name, const toml::node& n, std::vector<std::int64_t>& out) const {
  const toml::array* a = n.as_array();
  if (!a) fail(name, fmt::format("expected an array of integers, found {}", node_type_name(n)));
  out.clear();
  for (const auto& e : *a) {
    auto v = e.value_exact<std::int64_t>();
    if (!v) fail(name, fmt::format("expected an array of integers, found an element that is {}", node_type_name(e)));
    out.push_back(*v);
  }
}

void Reader::check_choice(const char* name, const std::string& v, const OneOf& c) const {
  if (std::find(c.choices.begin(), c.choices.end(), v) != c.choices.end()) return;
  fail(name, fmt::format("'{}' is not allowed: expected {}", v, detail::describe(c)));
}

void Reader::reject_unknown() const {
  const toml::table* t = deck_.table()[block_].as_table();
  if (!t) return;
  for (const auto& [k, v] : *t) {
    const std::string key(k.str());
    if (seen_.count(key)) continue;
    std::string hint;
    std::size_t best = 3;
    for (const auto& s : seen_) {
      const std::size_t d = edit_distance(key, s);
      if (d < best) best = d, hint = fmt::format(" (did you mean '{}'?)", s);
    }
    std::string known;
    for (const auto& s : seen_) known += (known.empty() ? "" : ", ") + s;
    fail(key, fmt::format("unknown key{}; keys of [{}] are: {}", hint, block_, known));
  }
}

// ---- Writer ------------------------------------------------------------------------------------
void Writer::begin_block(const std::string& block, const char* doc) {
  if (!out_.empty()) out_ += "\n";
  out_ += fmt::format("# {}\n[{}]\n", doc, block);
}

void Writer::emit(const char* name, const std::string& value, const char* doc, const std::string& allowed) {
  std::string comment = doc;
  if (!allowed.empty()) comment += " (" + allowed + ")";
  out_ += fmt::format("{:<22} = {:<20} # {}\n", name, value, comment);
}

}  // namespace mantissa::config
