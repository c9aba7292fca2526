// A FileCheck-style matcher (LLVM's FileCheck, as MLIR's pass tests use it) for checking printouts
// in GoogleTest: a pass test states the text of the network or graph after the pass, so it reads
// like the transformation it checks.
//
//   EXPECT_TRUE(filecheck(net.str(), R"(
//     CHECK:      = MatMul[a b +bias relu](%x, %w, %b)
//     CHECK-NOT:  Activation
//     CHECK:      output y =
//   )"));
//
// Directives, one per pattern line (leading whitespace ignored; a line with no directive, or a
// blank one, is ignored too):
//   CHECK: text          `text` at or after the end of the previous match (the same line or a later one)
//   CHECK-NEXT: text     `text` on the line right after the previous match's line
//   CHECK-SAME: text     `text` on the previous match's line, after the match
//   CHECK-NOT: text      `text` nowhere between the previous match and the next positive match (or
//                        the end of the input when none follows)
//   CHECK-COUNT-n: text  `text` n times in order, as n CHECK lines would; n at least (follow with a
//                        CHECK-NOT to say "and no more")
// Texts are plain substrings (no regular expressions), matched within one line. As in FileCheck, a
// run of spaces or tabs matches any run of spaces or tabs, and a text's surrounding whitespace is
// dropped, so a pattern need not copy the printout's column alignment.
//
// A pattern that cannot check anything (no directive, an empty text, a misspelt CHECK-…
// directive, CHECK-NEXT or CHECK-SAME with no previous match) fails rather than passing vacuously.
// A failure names the pattern line that failed and prints the whole input with line numbers.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace kiln {
namespace filecheck_detail {

// Runs of spaces and tabs become one space; leading and trailing ones go.
inline std::string collapse_whitespace(const std::string& s) {
  std::string r;
  for (char c : s) {
    const bool blank = c == ' ' || c == '\t' || c == '\r';
    if (blank) {
      if (!r.empty() && r.back() != ' ') r += ' ';
    } else {
      r += c;
    }
  }
  if (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

enum class Kind { kCheck, kNext, kSame, kNot };

struct Directive {
  Kind kind;
  std::string text;     // whitespace collapsed
  size_t pattern_line;  // 1-based, for messages
  std::string source;   // the pattern line (whitespace collapsed), for messages
};

// A place in the input: a line and a column of its collapsed text.
struct Position {
  size_t line = 0;
  size_t column = 0;
};

// Where a positive directive matched: its line, and the columns it spans there.
struct Match {
  size_t line;
  size_t begin;
  size_t end;
};

class Checker {
 public:
  Checker(const std::string& input, const std::string& pattern) : raw_lines_(split_lines(input)) {
    for (const std::string& line : raw_lines_) lines_.push_back(collapse_whitespace(line));
    parse(pattern);
  }

  ::testing::AssertionResult run() {
    if (!error_.empty()) return failure(error_);
    if (directives_.empty()) return failure("the pattern has no CHECK directive: it would check nothing");
    std::vector<const Directive*> pending_nots;  // checked once the next positive match bounds them
    for (const Directive& d : directives_) {
      if (d.kind == Kind::kNot) {
        pending_nots.push_back(&d);
        continue;
      }
      std::string why;
      const std::optional<Match> m = find(d, why);
      if (!m) return failure(quote(d) + " " + why);
      for (const Directive* no : pending_nots)
        if (auto found = search(no->text, from_, Position{m->line, m->begin}))
          return failure(quote(*no) + " found on input line " + std::to_string(found->line + 1) +
                             ", before the match of " + quote(d),
                         found->line);
      pending_nots.clear();
      matched_ = true;
      from_ = Position{m->line, m->end};
    }
    for (const Directive* no : pending_nots)
      if (auto found = search(no->text, from_, Position{lines_.size(), 0}))
        return failure(quote(*no) + " found on input line " + std::to_string(found->line + 1) +
                           (matched_ ? ", after the last match" : ""),
                       found->line);
    return ::testing::AssertionSuccess();
  }

 private:
  void parse(const std::string& pattern) {
    const std::vector<std::string> lines = split_lines(pattern);
    for (size_t i = 0; i < lines.size() && error_.empty(); ++i) {
      const std::string line = collapse_whitespace(lines[i]);
      if (line.compare(0, 5, "CHECK") != 0) continue;
      const size_t colon = line.find(':');
      const std::string name = line.substr(0, colon);
      const std::string text = colon == std::string::npos ? "" : collapse_whitespace(line.substr(colon + 1));
      const std::string where = "pattern line " + std::to_string(i + 1) + " `" + line + "`";
      size_t repeat = 1;
      Kind kind = Kind::kCheck;
      if (name == "CHECK") kind = Kind::kCheck;
      else if (name == "CHECK-NEXT") kind = Kind::kNext;
      else if (name == "CHECK-SAME") kind = Kind::kSame;
      else if (name == "CHECK-NOT") kind = Kind::kNot;
      else if (name.compare(0, 12, "CHECK-COUNT-") == 0 && name.size() > 12 && name.size() < 20 &&
               name.find_first_not_of("0123456789", 12) == std::string::npos)
        repeat = std::stoul(name.substr(12));
      else  // a misspelt directive silently ignored would leave its line unchecked
        error_ = where + ": unknown directive `" + name + "`";
      if (error_.empty() && repeat == 0) error_ = where + ": CHECK-COUNT needs a count of at least 1";
      if (error_.empty() && text.empty()) error_ = where + ": the directive has no text to match";
      for (size_t r = 0; r < repeat && error_.empty(); ++r) directives_.push_back({kind, text, i + 1, line});
    }
  }

  // The first occurrence of `text` that lies wholly between `from` and `to`.
  std::optional<Match> search(const std::string& text, Position from, Position to) const {
    for (size_t line = from.line; line < lines_.size() && line <= to.line; ++line) {
      const size_t at = lines_[line].find(text, line == from.line ? from.column : 0);
      if (at == std::string::npos) continue;
      if (line == to.line && at + text.size() > to.column) break;
      return Match{line, at, at + text.size()};
    }
    return std::nullopt;
  }

  // Where the positive directive `d` matches after the previous match; else nothing, and `why`.
  std::optional<Match> find(const Directive& d, std::string& why) const {
    const size_t previous = from_.line + 1;  // 1-based, for messages
    if (d.kind == Kind::kCheck) {
      why = "matched nothing from input line " + std::to_string(matched_ ? previous : 1) +
            (matched_ ? " (after the previous match)" : "") + " to the end";
      return search(d.text, from_, Position{lines_.size(), 0});
    }
    if (!matched_) {
      why = "has no previous match to follow";
      return std::nullopt;
    }
    if (d.kind == Kind::kNext) {
      why = "did not match the line after the previous match (input line " + std::to_string(previous + 1) + ")";
      return search(d.text, Position{from_.line + 1, 0}, Position{from_.line + 1, std::string::npos});
    }
    why = "did not match the rest of the previous match's line (input line " + std::to_string(previous) + ")";
    return search(d.text, from_, Position{from_.line, std::string::npos});
  }

  static std::string quote(const Directive& d) {
    return "pattern line " + std::to_string(d.pattern_line) + " `" + d.source + "`";
  }

  // The reason, then the input with line numbers: `>` marks the previous match's line (where the
  // failed search began), `!` a line holding a CHECK-NOT text.
  ::testing::AssertionResult failure(const std::string& why, std::optional<size_t> culprit = std::nullopt) const {
    std::string listing;
    for (size_t i = 0; i < raw_lines_.size(); ++i) {
      const std::string number = std::to_string(i + 1);
      const char* mark = culprit == i ? " ! " : matched_ && i == from_.line ? " > " : "   ";
      listing += std::string(number.size() < 4 ? 4 - number.size() : 0, ' ') + number + mark + raw_lines_[i] + "\n";
    }
    if (raw_lines_.empty()) listing = "     (empty)\n";
    return ::testing::AssertionFailure() << "filecheck: " << why << "\ninput:\n" << listing;
  }

  std::vector<std::string> raw_lines_;  // as printed, for the failure listing
  std::vector<std::string> lines_;      // whitespace collapsed, for matching
  std::vector<Directive> directives_;
  std::string error_;     // a malformed pattern
  Position from_;         // the end of the previous match (the start of the input before any)
  bool matched_ = false;  // whether a positive directive has matched yet
};

}  // namespace filecheck_detail

// Checks `input` (a printout) against `pattern` (CHECK directives, see above).
inline ::testing::AssertionResult filecheck(const std::string& input, const std::string& pattern) {
  return filecheck_detail::Checker(input, pattern).run();
}

}  // namespace kiln
