#include "tasks/tasks.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "tasks/tokenizer.hpp"

namespace mantissa::tasks {
namespace {

// ---- Knob ranges (the deck documents the same numbers) ----------------------------------------
constexpr int kDigitsLo = 1, kDigitsHi = 12;  // 12 digits: sums and products stay far below 2^63
constexpr int kTermsLo = 1, kTermsHi = 20;    // 20 position tags 'a'..'t' in the vocabulary
constexpr int kValueLo = 1, kValueHi = 999;
constexpr int kStepsLo = 1, kStepsHi = 1000;  // countdown: 1000 results (at most 9 * 1003 + 8) stay 4-digit
constexpr int kCountdownWidth = 4;            // countdown numbers are zero-padded to 4 digits
constexpr int kCountdownCycle = 4;            // countdown: the prompt's steps, repeated
constexpr std::uint64_t kEvalBit = std::uint64_t{1} << 63;
constexpr int kMaxAttempts = 100000;
constexpr int kStepWidth = 11;  // "a2+9+0=1a1;" and "a2*7+0=1a4;"

enum class Family { addition, multiply_small, running_sum, countdown, mixed };

Family parse_family(const std::string& name) {
  if (name == "addition") return Family::addition;
  if (name == "multiply_small") return Family::multiply_small;
  if (name == "running_sum") return Family::running_sum;
  if (name == "countdown") return Family::countdown;
  if (name == "mixed") return Family::mixed;
  throw std::invalid_argument("family = '" + name +
                              "' is unknown: expected one of addition, running_sum, multiply_small, countdown, mixed");
}

void check_range(const char* field, int value, int lo, int hi) {
  if (value < lo || value > hi)
    throw std::invalid_argument(std::string(field) + " = " + std::to_string(value) +
                                " is out of range: expected an integer in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "]");
}

void check_order(const char* lo_field, int lo, const char* hi_field, int hi) {
  if (lo > hi)
    throw std::invalid_argument(std::string(lo_field) + " = " + std::to_string(lo) + " must be <= " + hi_field +
                                " = " + std::to_string(hi));
}

// ---- Counter-based randomness ------------------------------------------------------------------
// splitmix64's finaliser: a bijection of 64-bit words with good avalanche.
std::uint64_t mix64(std::uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ULL;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z;
}

// The splitmix64 sequence of a key: word j is mix64(key + (j+1) * golden). Built fresh for every
// (seed, index, attempt), so a problem never depends on what was generated before it.
class CounterRng {
 public:
  explicit CounterRng(std::uint64_t key) : key_(key) {}
  std::uint64_t next() { return mix64(key_ + 0x9e3779b97f4a7c15ULL * ++counter_); }
  // Uniform in [lo, hi] without modulo bias (reject the low (2^64 mod range) words).
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) {
    const std::uint64_t range = hi - lo + 1;
    const std::uint64_t threshold = (0 - range) % range;
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return lo + r % range;
    }
  }
  int uniform_int(int lo, int hi) {
    return static_cast<int>(uniform(static_cast<std::uint64_t>(lo), static_cast<std::uint64_t>(hi)));
  }

 private:
  std::uint64_t key_;
  std::uint64_t counter_ = 0;
};

std::uint64_t stream_key(std::uint64_t seed, std::uint64_t index, std::uint64_t attempt) {
  std::uint64_t k = mix64(seed ^ 0x7461736b73656564ULL);  // "taskseed"
  k = mix64(k + 0x9e3779b97f4a7c15ULL + index);
  return mix64(k + 0x632be59bd9b4e019ULL + attempt);
}

// ---- Numbers -----------------------------------------------------------------------------------
std::uint64_t pow10(int e) {
  std::uint64_t p = 1;
  for (int i = 0; i < e; ++i) p *= 10;
  return p;
}

int num_digits(std::uint64_t v) {
  int d = 1;
  while (v >= 10) {
    v /= 10;
    ++d;
  }
  return d;
}

int digit_at(std::uint64_t v, int k) { return static_cast<int>((v / pow10(k)) % 10); }

char tag(int k) { return static_cast<char>('a' + k); }
char digit_char(int d) { return static_cast<char>('0' + d); }

// A number with exactly `len` digits (leading digit non-zero unless len == 1).
std::uint64_t random_number(CounterRng& rng, int len) {
  if (len == 1) return rng.uniform(0, 9);
  return rng.uniform(pow10(len - 1), pow10(len) - 1);
}

// Place-tagged notation, most significant digit first: (472, 3) -> "c4b7a2".
std::string tagged(std::uint64_t v, int len) {
  std::string s;
  for (int k = len - 1; k >= 0; --k) {
    s += tag(k);
    s += digit_char(digit_at(v, k));
  }
  return s;
}

// ---- Families ----------------------------------------------------------------------------------
// Column steps shared by addition and multiply_small: column(a_k, b_k or m, carry_in) returns the
// column's value (digit sum or digit product, plus the carry), always < 100.
template <class Column>
Problem column_problem(std::string prompt, int columns, char op, Column column,
                       std::uint64_t a, std::uint64_t b_or_m, bool b_is_number) {
  Problem p;
  p.prompt = std::move(prompt);
  std::string steps;
  steps.reserve(static_cast<std::size_t>(kStepWidth * columns));
  int carry = 0;
  std::string answer_digits;  // units first
  for (int k = 0; k < columns; ++k) {
    const int ak = digit_at(a, k);
    const int bk = b_is_number ? digit_at(b_or_m, k) : static_cast<int>(b_or_m);
    const int value = column(ak, bk, carry);
    steps += tag(k);
    steps += digit_char(ak);
    steps += op;
    steps += digit_char(bk);
    steps += '+';
    steps += digit_char(carry);
    steps += '=';
    steps += digit_char(value / 10);
    steps += tag(k);
    steps += digit_char(value % 10);
    steps += ';';
    carry = value / 10;
    answer_digits += digit_char(value % 10);
  }
  if (carry > 0) {
    p.answer += tag(columns);
    p.answer += digit_char(carry);
  }
  for (int k = columns - 1; k >= 0; --k) {
    p.answer += tag(k);
    p.answer += answer_digits[static_cast<std::size_t>(k)];
  }
  p.solution = steps + "=" + p.answer;
  return p;
}

Problem make_addition(const TaskConfig& c, CounterRng& rng) {
  const int la = rng.uniform_int(c.min_digits, c.max_digits);
  const std::uint64_t a = random_number(rng, la);
  const int lb = rng.uniform_int(c.min_digits, c.max_digits);
  const std::uint64_t b = random_number(rng, lb);
  return column_problem(tagged(a, la) + "+" + tagged(b, lb) + "=", std::max(la, lb), '+',
                        [](int x, int y, int carry) { return x + y + carry; }, a, b, true);
}

Problem make_multiply_small(const TaskConfig& c, CounterRng& rng) {
  const int la = rng.uniform_int(c.min_digits, c.max_digits);
  const std::uint64_t a = random_number(rng, la);
  const int m = rng.uniform_int(2, 9);
  return column_problem(tagged(a, la) + "*" + digit_char(m) + "=", la, '*',
                        [](int x, int y, int carry) { return x * y + carry; }, a,
                        static_cast<std::uint64_t>(m), false);
}

Problem make_running_sum(const TaskConfig& c, CounterRng& rng) {
  const int n = rng.uniform_int(c.min_terms, c.max_terms);
  Problem p;
  p.prompt = "S:";
  std::uint64_t partial = 0;
  for (int k = 0; k < n; ++k) {
    const std::uint64_t v = rng.uniform(0, static_cast<std::uint64_t>(c.max_value));
    if (k > 0) p.prompt += ',';
    p.prompt += tag(k);
    p.prompt += std::to_string(v);
    p.solution += tag(k);
    p.solution += std::to_string(v);
    p.solution += '+';
    p.solution += std::to_string(partial);
    partial += v;
    p.solution += '=';
    p.solution += std::to_string(partial);
    p.solution += ';';
  }
  p.prompt += '=';
  p.answer = std::to_string(partial);
  p.solution += '=';
  p.solution += p.answer;
  return p;
}

std::string padded(std::uint64_t v) {
  std::string s = std::to_string(v);
  return std::string(static_cast<std::size_t>(kCountdownWidth) - s.size(), '0') + s;
}

// A countdown from s whose steps repeat the prompt's kCountdownCycle random steps D0 D1 D2 D3 D0 ...:
// the prompt is the first kCountdownCycle steps "A:d=" (each A the previous A minus its d), the
// solution the results from there on: B = A - d, then ":d'=" (d' the step kCountdownCycle back) while
// B >= d', else '=' and B again. n results: s = D(0) + ... + D(n + 2) + r with r below D(n + 3).
Problem make_countdown(const TaskConfig& c, CounterRng& rng) {
  const int n = rng.uniform_int(c.min_steps, c.max_steps);
  int D[kCountdownCycle];
  for (int& d : D) d = rng.uniform_int(1, 9);
  const auto step = [&](int k) { return static_cast<std::uint64_t>(D[k % kCountdownCycle]); };
  std::uint64_t s = 0;
  for (int k = 0; k < n + kCountdownCycle - 1; ++k) s += step(k);
  const std::uint64_t r = rng.uniform(0, step(n + kCountdownCycle - 1) - 1);
  s += r;
  Problem p;
  std::uint64_t a = s;
  for (int k = 0; k < kCountdownCycle; ++k) {
    p.prompt += padded(a) + ":" + digit_char(D[k]) + "=";
    a -= step(k);
  }
  p.solution.reserve(static_cast<std::size_t>(7 * n + 2));
  for (int k = kCountdownCycle; k < n + kCountdownCycle; ++k) {
    p.solution += padded(a);
    if (k + 1 < n + kCountdownCycle) {
      p.solution += ':';
      p.solution += digit_char(D[k % kCountdownCycle]);
      p.solution += '=';
      a -= step(k);
    }
  }
  p.answer = padded(r);
  p.solution += '=';
  p.solution += p.answer;
  return p;
}

Problem generate(const TaskConfig& c, Family family, CounterRng& rng) {
  if (family == Family::mixed) {
    constexpr Family kAll[] = {Family::addition, Family::multiply_small, Family::running_sum};
    family = kAll[rng.uniform(0, 2)];
  }
  switch (family) {
    case Family::addition: return make_addition(c, rng);
    case Family::multiply_small: return make_multiply_small(c, rng);
    case Family::running_sum: return make_running_sum(c, rng);
    case Family::countdown: return make_countdown(c, rng);
    case Family::mixed: break;
  }
  throw std::logic_error("tasks: unreachable family");
}

// ---- Lengths -----------------------------------------------------------------------------------
// Longest solution: every column plus a final carry under one more tag.
int column_solution_max(int columns) { return kStepWidth * columns + 1 + 2 * (columns + 1); }

int running_sum_prompt_max(const TaskConfig& c) {
  const int n = c.max_terms;
  return 2 + n * (1 + num_digits(static_cast<std::uint64_t>(c.max_value))) + (n - 1) + 1;
}

// All terms equal to max_value make every term and every partial sum as wide as possible.
int running_sum_solution_max(const TaskConfig& c) {
  const auto v = static_cast<std::uint64_t>(c.max_value);
  int len = 0;
  for (int k = 0; k < c.max_terms; ++k)
    len += 1 + num_digits(v) + 1 + num_digits(v * static_cast<std::uint64_t>(k)) + 1 +
           num_digits(v * static_cast<std::uint64_t>(k + 1)) + 1;
  return len + 1 + num_digits(v * static_cast<std::uint64_t>(c.max_terms));
}

// n results of kCountdownWidth digits, n - 1 step marks ":d=", '=', the last result again.
int countdown_solution_max(const TaskConfig& c) { return kCountdownWidth * c.max_steps + 3 * (c.max_steps - 1) + 1 + kCountdownWidth; }
constexpr int kCountdownPrompt = kCountdownCycle * (kCountdownWidth + 3);  // "0031:7=0024:2=0022:9=0013:4="

// ---- Parsing responses (well_formed) -----------------------------------------------------------
class Cursor {
 public:
  explicit Cursor(std::string_view s) : s_(s) {}
  bool done() const { return i_ == s_.size(); }
  bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
  bool eat(char c) {
    if (!peek(c)) return false;
    ++i_;
    return true;
  }
  bool digit() {
    if (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      ++i_;
      return true;
    }
    return false;
  }
  // 1 to max_len digits; returns the count (0 when none).
  int number(int max_len) {
    int n = 0;
    while (n < max_len && digit()) ++n;
    return n;
  }
  // A tag letter; returns its place (0 for 'a') or -1.
  int any_tag() {
    if (i_ < s_.size() && s_[i_] >= 'a' && s_[i_] <= 'z') return s_[i_++] - 'a';
    return -1;
  }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
};

// Tagged operand in a prompt: "c4b7a2" -> 3 digits; -1 if malformed.
int parse_tagged_operand(Cursor& cur) {
  const int top = cur.any_tag();
  if (top < 0 || !cur.digit()) return -1;
  for (int k = top - 1; k >= 0; --k)
    if (!cur.eat(tag(k)) || !cur.digit()) return -1;
  return top + 1;
}

// Steps, '=', answer of addition/multiply_small with `columns` columns.
bool column_response_ok(std::string_view text, int columns, char op) {
  Cursor cur(text);
  for (int k = 0; k < columns; ++k) {
    if (!(cur.eat(tag(k)) && cur.digit() && cur.eat(op) && cur.digit() && cur.eat('+') && cur.digit() &&
          cur.eat('=') && cur.digit() && cur.eat(tag(k)) && cur.digit() && cur.eat(';')))
      return false;
  }
  if (!cur.eat('=')) return false;
  if (cur.eat(tag(columns)) && !cur.digit()) return false;
  for (int k = columns - 1; k >= 0; --k)
    if (!cur.eat(tag(k)) || !cur.digit()) return false;
  return cur.done();
}

bool running_sum_response_ok(std::string_view text, int terms) {
  Cursor cur(text);
  constexpr int kWidest = 9;
  for (int k = 0; k < terms; ++k) {
    if (!(cur.eat(tag(k)) && cur.number(kWidest) > 0 && cur.eat('+') && cur.number(kWidest) > 0 && cur.eat('=') &&
          cur.number(kWidest) > 0 && cur.eat(';')))
      return false;
  }
  return cur.eat('=') && cur.number(kWidest) > 0 && cur.done();
}

// `steps` results of 4 digits, each but the last followed by ":d=", then '=' and 4 digits.
bool countdown_response_ok(std::string_view text, int steps) {
  Cursor cur(text);
  for (int k = 0; k < steps; ++k) {
    if (cur.number(kCountdownWidth) != kCountdownWidth) return false;
    if (k + 1 < steps && !(cur.eat(':') && cur.digit() && cur.eat('='))) return false;
  }
  return cur.eat('=') && cur.number(kCountdownWidth) == kCountdownWidth && cur.done();
}

[[noreturn]] void bad_prompt(std::string_view prompt) {
  throw std::invalid_argument("tasks: prompt \"" + std::string(prompt) + "\" is not a task prompt");
}

// The number of results a countdown prompt's solution writes; bad_prompt unless the prompt is
// kCountdownCycle steps "A:d=", each A the previous A minus its d.
int countdown_results_of(std::string_view pr) {
  Cursor prompt(pr);
  if (pr.size() != static_cast<std::size_t>(kCountdownPrompt)) bad_prompt(pr);
  int D[kCountdownCycle];
  int left = 0;
  for (int k = 0; k < kCountdownCycle; ++k) {
    if (prompt.number(kCountdownWidth) != kCountdownWidth || !prompt.eat(':') || !prompt.digit() || !prompt.eat('='))
      bad_prompt(pr);
    const std::size_t at = static_cast<std::size_t>(k * (kCountdownWidth + 3));
    const int a = std::stoi(std::string(pr.substr(at, kCountdownWidth)));
    D[k] = pr[at + kCountdownWidth + 1] - '0';
    if (D[k] < 1 || (k > 0 && a != left) || a < D[k]) bad_prompt(pr);
    left = a - D[k];
  }
  // The first result is what the prompt's last step leaves; then subtract D(k) while possible.
  int results = 1;
  for (int k = 0; left >= D[k % kCountdownCycle]; ++k, ++results) left -= D[k % kCountdownCycle];
  return results;
}

struct ResponseText {
  bool has_eos = false;
  std::string text;  // before the first <eos>
};

ResponseText read_response(const int* ids, int n) {
  if (n < 0) throw std::invalid_argument("tasks: response length n = " + std::to_string(n) + " < 0");
  if (n > 0 && ids == nullptr) throw std::invalid_argument("tasks: null response ids with n > 0");
  int end = n;
  for (int i = 0; i < n; ++i)
    if (ids[i] == eos_id()) {
      end = i;
      break;
    }
  return {end < n, decode(ids, end)};
}

}  // namespace

// ---- Config ------------------------------------------------------------------------------------
void TaskConfig::validate() const {
  parse_family(family);
  check_range("min_digits", min_digits, kDigitsLo, kDigitsHi);
  check_range("max_digits", max_digits, kDigitsLo, kDigitsHi);
  check_order("min_digits", min_digits, "max_digits", max_digits);
  check_range("min_terms", min_terms, kTermsLo, kTermsHi);
  check_range("max_terms", max_terms, kTermsLo, kTermsHi);
  check_order("min_terms", min_terms, "max_terms", max_terms);
  check_range("max_value", max_value, kValueLo, kValueHi);
  check_range("min_steps", min_steps, kStepsLo, kStepsHi);
  check_range("max_steps", max_steps, kStepsLo, kStepsHi);
  check_order("min_steps", min_steps, "max_steps", max_steps);
  if (!(eval_fraction > 0.0 && eval_fraction <= 0.5))
    throw std::invalid_argument("eval_fraction = " + std::to_string(eval_fraction) +
                                " is out of range: expected a number in (0, 0.5]");
}

// ---- Splits ------------------------------------------------------------------------------------
std::uint64_t split_index(Split split, std::uint64_t i) {
  if (i >= kEvalBit)
    throw std::out_of_range("tasks: problem number " + std::to_string(i) + " is >= 2^63, the size of a split");
  return split == Split::eval ? (i | kEvalBit) : i;
}

Split split_of_index(std::uint64_t index) { return (index & kEvalBit) ? Split::eval : Split::train; }

Split split_of_prompt(std::string_view prompt, double eval_fraction) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64, then the splitmix finaliser
  for (char ch : prompt) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001b3ULL;
  }
  h = mix64(h ^ 0x6d616e7469737361ULL);  // "mantissa"
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  return u < eval_fraction ? Split::eval : Split::train;
}

// ---- Generation --------------------------------------------------------------------------------
Problem make_problem(const TaskConfig& config, std::uint64_t seed, std::uint64_t index) {
  config.validate();
  const Family family = parse_family(config.family);
  const Split want = split_of_index(index);
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    CounterRng rng(stream_key(seed, index, static_cast<std::uint64_t>(attempt)));
    Problem p = generate(config, family, rng);
    if (split_of_prompt(p.prompt, config.eval_fraction) == want) return p;
  }
  throw std::runtime_error("tasks: no " + std::string(want == Split::eval ? "eval" : "train") + " prompt in " +
                           std::to_string(kMaxAttempts) + " draws for family '" + config.family +
                           "': the prompt space of these knobs is too small to hold out eval_fraction = " +
                           std::to_string(config.eval_fraction) + " (widen the knobs)");
}

std::vector<Problem> make_problems(const TaskConfig& config, std::uint64_t seed, Split split,
                                   std::uint64_t first, std::size_t count) {
  std::vector<Problem> out;
  out.reserve(count);
  for (std::size_t j = 0; j < count; ++j) out.push_back(make_problem(config, seed, split_index(split, first + j)));
  return out;
}

std::string family_of(std::string_view prompt) {
  if (prompt.substr(0, 2) == "S:") return "running_sum";
  if (prompt.find(':') != std::string_view::npos) return "countdown";
  if (prompt.find('*') != std::string_view::npos) return "multiply_small";
  if (prompt.find('+') != std::string_view::npos) return "addition";
  bad_prompt(prompt);
}

std::string plain_number(std::string_view number) {
  std::string out;
  for (char ch : number)
    if (ch >= '0' && ch <= '9') out += ch;
  return out;
}

int max_prompt_length(const TaskConfig& config) {
  config.validate();
  const int d = config.max_digits;
  switch (parse_family(config.family)) {
    case Family::addition: return 4 * d + 2;
    case Family::multiply_small: return 2 * d + 3;
    case Family::running_sum: return running_sum_prompt_max(config);
    case Family::countdown: return kCountdownPrompt;
    case Family::mixed: return std::max({4 * d + 2, 2 * d + 3, running_sum_prompt_max(config)});
  }
  throw std::logic_error("tasks: unreachable family");
}

int max_solution_length(const TaskConfig& config) {
  config.validate();
  const int d = config.max_digits;
  switch (parse_family(config.family)) {
    case Family::addition:
    case Family::multiply_small: return column_solution_max(d);
    case Family::running_sum: return running_sum_solution_max(config);
    case Family::countdown: return countdown_solution_max(config);
    case Family::mixed: return std::max(column_solution_max(d), running_sum_solution_max(config));
  }
  throw std::logic_error("tasks: unreachable family");
}

// ---- Encoding ----------------------------------------------------------------------------------
EncodedExample encode_example(const Problem& problem) {
  EncodedExample e;
  const std::vector<int> prompt = encode(problem.prompt);
  const std::vector<int> solution = encode(problem.solution);
  e.ids.reserve(prompt.size() + solution.size() + 2);
  e.ids.push_back(bos_id());
  e.ids.insert(e.ids.end(), prompt.begin(), prompt.end());
  e.ids.insert(e.ids.end(), solution.begin(), solution.end());
  e.ids.push_back(eos_id());
  e.prompt_tokens = 1 + static_cast<int>(prompt.size());
  return e;
}

std::vector<int> encode_prompt(const Problem& problem) {
  std::vector<int> ids{bos_id()};
  const std::vector<int> prompt = encode(problem.prompt);
  ids.insert(ids.end(), prompt.begin(), prompt.end());
  return ids;
}

// ---- Verification ------------------------------------------------------------------------------
float reward(const Problem& problem, const int* response_ids, int n) {
  const ResponseText r = read_response(response_ids, n);
  if (!r.has_eos) return 0.0f;
  if (family_of(problem.prompt) == "countdown") return r.text == problem.solution ? 1.0f : 0.0f;
  const std::size_t eq = r.text.rfind('=');
  if (eq == std::string::npos) return 0.0f;
  return std::string_view(r.text).substr(eq + 1) == problem.answer ? 1.0f : 0.0f;
}

bool well_formed(const Problem& problem, const int* response_ids, int n) {
  const ResponseText r = read_response(response_ids, n);
  const std::string family = family_of(problem.prompt);
  Cursor prompt(problem.prompt);
  if (family == "countdown") {
    return r.has_eos && countdown_response_ok(r.text, countdown_results_of(problem.prompt));
  }
  if (family == "running_sum") {
    prompt.eat('S');
    prompt.eat(':');
    int terms = 0;
    do {
      if (!prompt.eat(tag(terms)) || prompt.number(3) == 0) bad_prompt(problem.prompt);
      ++terms;
    } while (prompt.eat(','));
    if (!prompt.eat('=') || !prompt.done()) bad_prompt(problem.prompt);
    return r.has_eos && running_sum_response_ok(r.text, terms);
  }
  const bool add = family == "addition";
  const int la = parse_tagged_operand(prompt);
  if (la < 0 || !prompt.eat(add ? '+' : '*')) bad_prompt(problem.prompt);
  int columns = la;
  if (add) {
    const int lb = parse_tagged_operand(prompt);
    if (lb < 0) bad_prompt(problem.prompt);
    columns = std::max(la, lb);
  } else if (!prompt.digit()) {
    bad_prompt(problem.prompt);
  }
  if (!prompt.eat('=') || !prompt.done()) bad_prompt(problem.prompt);
  return r.has_eos && column_response_ok(r.text, columns, add ? '+' : '*');
}

}  // namespace mantissa::tasks
