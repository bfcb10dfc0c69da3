#pragma once
// Character-level tokenizer with a fixed vocabulary for Mantissa's verifiable-reward tasks.
//
// ids 0..2 are the specials <pad>, <bos>, <eos>; ids 3.. are single characters, in this order:
//   0123456789 + * = , ; : S abcdefghijklmnopqrst
// (40 entries in all). The lower-case letters are place/position tags (see tasks.hpp).
// The vocabulary is fixed: a checkpoint trained with it stays valid as long as this table does.

#include <string>
#include <string_view>
#include <vector>

namespace mantissa::tasks {

int vocab_size();  // 40
int pad_id();      // 0
int bos_id();      // 1
int eos_id();      // 2

// The characters of ids 3..vocab_size()-1, in id order.
std::string_view vocabulary_chars();

// One id per character. Throws std::invalid_argument naming the character and its position for a
// character outside the vocabulary.
std::vector<int> encode(std::string_view text);

// Text of ids[0..n): specials are rendered as "<pad>", "<bos>", "<eos>". Throws
// std::invalid_argument naming the id and its position for an id outside [0, vocab_size()).
std::string decode(const int* ids, int n);

}  // namespace mantissa::tasks
