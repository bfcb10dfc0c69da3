#pragma once
// Procedurally generated problems with exact, verifiable answers and worked solutions
// (mission.md section 6). Host-only, no Kokkos.
//
// A model is trained on  <bos> prompt solution <eos>  (loss on solution + <eos>); at RL time it
// sees <bos> prompt and generates; reward() checks the final answer after the last '=' (countdown,
// the long-answer family: the whole worked answer).
//
// The formats are designed for a tiny character-level transformer trained for minutes on a CPU:
// every fact a step needs is either a few characters back or found by CONTENT, never by counting.
// Lower-case letters are place tags: 'a' = units (or first term), 'b' = tens (second term), ...
// A step names its tag, so the operand digit it needs is "the character after this tag in the
// prompt" (an induction-head lookup), and the final answer repeats the tags so that each answer
// digit is "the character after the latest earlier occurrence of this tag". Steps have a fixed
// width so the carry from the previous step is always at the same distance.
//
// Families (solution = steps, then '=', then the answer; the answer is the segment after the
// last '='):
//
// "addition": two numbers in place-tagged notation, digits most significant first
//   (472 -> "c4b7a2"; each operand has uniform[min_digits, max_digits] digits, leading digit
//   non-zero unless it has one digit). One 11-character step per column from the units up:
//     <tag><a>+<b>+<carry in>=<carry out><tag><sum digit>;
//   a missing digit of the shorter operand is written 0. The answer is the sum in the same
//   notation, its carry digit (if any) under the next tag.
//     prompt   "c4b7a2+c3b8a9="
//     solution "a2+9+0=1a1;b7+8+1=1b6;c4+3+1=0c8;=c8b6a1"          (472+389=861)
//     "b9a5+b4a7=" -> "a5+7+0=1a2;b9+4+1=1b4;=c1b4a2"                 (95+47=142)
//
// "multiply_small": a number times one digit in [2, 9], long multiplication from the units up:
//     <tag><a>*<m>+<carry in>=<carry out><tag><product digit>;
//     prompt   "c4b7a2*7="
//     solution "a2*7+0=1a4;b7*7+1=5b0;c4*7+5=3c3;=d3c3b0a4"        (472*7=3304)
//
// "running_sum": terms in [0, max_value], uniform[min_terms, max_terms] of them, each tagged by
//   its position; one step per term adds it to the previous partial sum (plain decimal):
//     <tag><term>+<previous partial>=<partial>;
//     prompt   "S:a3,b7,c2,d9="
//     solution "a3+0=3;b7+3=10;c2+10=12;d9+12=21;=21"
//
// "countdown" (the long-answer family): count down from a start s (4 digits, zero-padded) by four
//   random steps D0 D1 D2 D3 in [1, 9], repeated (D0 D1 D2 D3 D0 D1 ...). A step is written "A:d="
//   and followed by its result B = A - d. The prompt is the first four steps, "s:D0=s1:D1=s2:D2=s3:D3="
//   (each A the previous minus its step). The solution writes the results from there on: B = A - d,
//   then, while B is at least the next step d' (the step four back), ":d'=" and the next result;
//   after the last result (r, below the step that would come next): '=' and r again. n results
//   with n uniform in [min_steps, max_steps], r uniform below the next step: 7n + 2 tokens, 100 to
//   996 for the default n in [14, 142]. Every fact a digit needs sits at a fixed distance: A's digits
//   7 back, d 2-5 back, d' 28 back; the prompt has four steps so that the first result the model
//   writes has the context of every later one. The steps are random per problem so that no result
//   can be extrapolated from earlier ones: with one fixed step, or the fixed cycle 1..9, the warm
//   start learned to continue the sequence's pattern (B = the result 9 steps back minus 45) and
//   failed at every first step, where the pattern has no history. The answer alone is a shortcut
//   (r), so the reward of this family checks the WHOLE response: 1 iff it equals the solution
//   exactly, every step included (the worked answer is unique).
//     prompt   "0031:7=0024:2=0022:9=0013:4="
//     solution "0009:7=0002:2=0000=0000"                 (13-4, 9-7, 2-2; 0 < 9: stop)
// "mixed": each problem picks one of addition, multiply_small and running_sum uniformly; the knobs
//   of each apply.
//
// Solution lengths (characters, = tokens, without <eos>) for the default knobs over 10^4 train
// problems (tests/test_tasks.cpp prints them), min / mean / max: addition 27 / 46.2 / 55,
// multiply_small 27 / 41.7 / 55, running_sum 23 / 48.0 / 72, mixed 23 / 45.3 / 72; the longest
// <bos>prompt solution<eos> is 100 tokens. At the largest knobs (12 digits; 20 terms of up to 999)
// solutions reach 159 (column families) and 320 (running_sum) characters. max_solution_length()
// gives the exact maximum for any config.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mantissa::tasks {

struct Problem {
  std::string prompt;    // e.g. "c4b7a2+c3b8a9="
  std::string answer;    // e.g. "c8b6a1" (the exact text expected after the last '=')
  std::string solution;  // the full target response: worked steps, '=', answer; no <eos>
};

// The deck's [task] table; field names are the deck keys.
struct TaskConfig {
  std::string family = "addition";  // addition | running_sum | multiply_small | countdown | mixed
  int min_digits = 2;               // addition, multiply_small: operand digits, [1, 12]
  int max_digits = 4;               // [1, 12], >= min_digits
  int min_terms = 3;                // running_sum: number of terms, [1, 20]
  int max_terms = 8;                // [1, 20], >= min_terms
  int max_value = 9;                // running_sum: terms are uniform in [0, max_value], [1, 999]
  int min_steps = 14;               // countdown: number of subtractions, [1, 1000]
  int max_steps = 142;              // [1, 1000], >= min_steps (14..142: solutions of 100..996 tokens)
  double eval_fraction = 0.1;       // share of the prompt space held out for eval, (0, 0.5]

  // Throws std::invalid_argument naming the field and its allowed range (or the allowed families).
  void validate() const;
};

// ---- Splits ---------------------------------------------------------------------------------
// Every prompt belongs to exactly one split, decided by a fixed hash of the prompt text alone
// (not of the seed, the index or the other knobs): split_of_prompt(p, f) == eval for a share f of
// all prompts. make_problem() only returns prompts of the split its index asks for, so train and
// eval sets are disjoint for any seeds and any number of problems, even where the prompt space is
// small. The eval prompts for eval_fraction f are a subset of those for any larger f.
// Problems repeat where the prompt space is small (default multiply_small has ~80k prompts: 10^4
// train draws hold ~6.5k distinct prompts, 10^4 eval draws ~3.4k); dedupe an eval set by prompt
// before reporting accuracy on it if repeats matter.
enum class Split { train, eval };

// Index of the i-th problem of a split: train indices are i, eval indices are i | 2^63.
// Throws std::out_of_range for i >= 2^63.
std::uint64_t split_index(Split split, std::uint64_t i);
Split split_of_index(std::uint64_t index);
Split split_of_prompt(std::string_view prompt, double eval_fraction);

// ---- Generation -----------------------------------------------------------------------------
// Problem `index` of `seed`: a pure function of (config, seed, index), counter-based (splitmix64
// hashes of (seed, index, attempt); no generator state, no std:: distributions, so identical on
// every platform and in every call order). Validates the config. Throws std::runtime_error if no
// prompt of the requested split is found in 100000 draws (a prompt space too small to split).
Problem make_problem(const TaskConfig& config, std::uint64_t seed, std::uint64_t index);

// Problems split_index(split, first + j) for j in [0, count).
std::vector<Problem> make_problems(const TaskConfig& config, std::uint64_t seed, Split split,
                                   std::uint64_t first, std::size_t count);

// "addition", "multiply_small" or "running_sum", read from the prompt's shape. Throws
// std::invalid_argument for a prompt of none of them. "countdown" for a prompt with ':' not
// starting "S:".
std::string family_of(std::string_view prompt);

// The tagged notation's plain decimal value as text: "d1c2b6a1" -> "1261"; plain numbers are
// returned unchanged. For logs.
std::string plain_number(std::string_view number);

// Exact maxima over every problem the (validated) config can produce, in characters (= tokens),
// without <bos>/<eos>: the context a model needs is 1 + max_prompt_length + max_solution_length + 1.
int max_prompt_length(const TaskConfig& config);
int max_solution_length(const TaskConfig& config);

// ---- Encoding for training and rollout ------------------------------------------------------
struct EncodedExample {
  std::vector<int> ids;   // <bos> prompt solution <eos>
  int prompt_tokens = 0;  // 1 + prompt length: the loss covers ids[prompt_tokens, ids.size())
};
EncodedExample encode_example(const Problem& problem);
std::vector<int> encode_prompt(const Problem& problem);  // <bos> prompt

// ---- Verification ---------------------------------------------------------------------------
// response_ids: the tokens generated after the prompt (n of them; may or may not contain <eos>;
// tokens after the first <eos> are ignored). Reward 1 iff an <eos> is present and the text before
// the first <eos> contains a '=' and its segment after the last '=' equals problem.answer
// exactly; 0 otherwise (no <eos>, wrong answer, anything between the answer and the <eos>).
// Worked steps are not checked (whatever precedes the last '=' is free, specials included), except
// in countdown, whose reward is 1 iff the text before the first <eos> equals the solution. Throws std::invalid_argument for n < 0, null ids with n > 0, or
// an id outside [0, vocab_size()) before the first <eos>.
float reward(const Problem& problem, const int* response_ids, int n);

// Diagnostics only: true iff an <eos> is present and the text before it follows the family's
// format for this problem: the right number of steps with the right tags, a digit (or, for
// running_sum, a 1-9 digit number) in every slot, '=' and an answer of the right shape. The
// arithmetic is NOT checked (a well-formed response may have wrong digits). Same errors as reward,
// and std::invalid_argument for a problem whose prompt is not a task prompt.
bool well_formed(const Problem& problem, const int* response_ids, int n);

}  // namespace mantissa::tasks
