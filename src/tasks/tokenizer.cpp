#include "tasks/tokenizer.hpp"

#include <array>
#include <stdexcept>
#include <string>

namespace mantissa::tasks {
namespace {

constexpr int kPad = 0;
constexpr int kBos = 1;
constexpr int kEos = 2;
constexpr int kFirstChar = 3;
constexpr std::string_view kChars = "0123456789+*=,;:Sabcdefghijklmnopqrst";
constexpr int kVocab = kFirstChar + static_cast<int>(kChars.size());
static_assert(kVocab <= 40, "the task vocabulary is meant to stay small");

// char (as unsigned byte) -> id, -1 when outside the vocabulary.
std::array<int, 256> make_table() {
  std::array<int, 256> t{};
  t.fill(-1);
  for (int i = 0; i < static_cast<int>(kChars.size()); ++i)
    t[static_cast<unsigned char>(kChars[static_cast<std::size_t>(i)])] = kFirstChar + i;
  return t;
}

const std::array<int, 256>& table() {
  static const std::array<int, 256> t = make_table();
  return t;
}

std::string describe_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  constexpr char hex[] = "0123456789abcdef";
  return std::string("byte 0x") + hex[u >> 4] + hex[u & 15];
}

}  // namespace

int vocab_size() { return kVocab; }
int pad_id() { return kPad; }
int bos_id() { return kBos; }
int eos_id() { return kEos; }
std::string_view vocabulary_chars() { return kChars; }

std::vector<int> encode(std::string_view text) {
  std::vector<int> ids;
  ids.reserve(text.size());
  const auto& t = table();
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int id = t[static_cast<unsigned char>(text[i])];
    if (id < 0)
      throw std::invalid_argument("tokenizer: character " + describe_char(text[i]) + " at position " +
                                  std::to_string(i) + " is not in the task vocabulary \"" +
                                  std::string(kChars) + "\"");
    ids.push_back(id);
  }
  return ids;
}

std::string decode(const int* ids, int n) {
  if (n < 0) throw std::invalid_argument("tokenizer: decode called with n = " + std::to_string(n) + " < 0");
  if (n > 0 && ids == nullptr) throw std::invalid_argument("tokenizer: decode called with null ids and n > 0");
  std::string out;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const int id = ids[i];
    if (id == kPad) {
      out += "<pad>";
    } else if (id == kBos) {
      out += "<bos>";
    } else if (id == kEos) {
      out += "<eos>";
    } else if (id >= kFirstChar && id < kVocab) {
      out += kChars[static_cast<std::size_t>(id - kFirstChar)];
    } else {
      throw std::invalid_argument("tokenizer: id " + std::to_string(id) + " at position " + std::to_string(i) +
                                  " is outside the vocabulary [0, " + std::to_string(kVocab) + ")");
    }
  }
  return out;
}

}  // namespace mantissa::tasks
