// The FileCheck-style matcher the pass tests state their printouts with (tests/common/filecheck.h):
// each directive matching where it should, and failing where it should not match, so a pass test
// written with it can fail.
#include <gtest/gtest.h>

#include <string>

#include "filecheck.h"

namespace kiln {
namespace {

// A printout in Network::str()'s shape.
const char* const kNetwork =
    "input %x: f32[4]\n"
    "%exp: f32[4] = Unary[kExp](%x)  # exp\n"
    "%relu: f32[4] = Activation[kRelu](%exp)  # relu\n"
    "%neg: f32[4] = Unary[kNeg](%relu)  # neg\n"
    "output y = %neg\n";

// The failure message, or "" when the pattern matched.
std::string failure_of(const std::string& input, const std::string& pattern) {
  const ::testing::AssertionResult r = filecheck(input, pattern);
  return r ? "" : r.message();
}

TEST(FileCheck, CheckFindsTextsInOrder) {
  EXPECT_TRUE(filecheck(kNetwork, R"(
    CHECK: input %x
    CHECK: Unary[kExp]
    CHECK: Unary[kNeg](%relu)
    CHECK: output y = %neg
  )"));
  // Lines further down may be skipped, and a later text may be on the previous match's line.
  EXPECT_TRUE(filecheck(kNetwork, "CHECK: %relu: f32[4]\nCHECK: (%exp)"));
}

TEST(FileCheck, CheckFailsOnAbsentOrOutOfOrderText) {
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Softmax"));
  // kExp is in the input, but before the previous match: searching never goes back.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Unary[kNeg]\nCHECK: Unary[kExp]"));
  // The same text twice needs two occurrences.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Activation\nCHECK: Activation"));
}

TEST(FileCheck, CheckNextWantsTheVeryNextLine) {
  EXPECT_TRUE(filecheck(kNetwork, R"(
    CHECK:      Unary[kExp]
    CHECK-NEXT: Activation[kRelu]
    CHECK-NEXT: Unary[kNeg]
    CHECK-NEXT: output y
  )"));
  // Two lines down is not the next line.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Unary[kExp]\nCHECK-NEXT: Unary[kNeg]"));
  // Nor is the rest of the previous match's line.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: %relu: f32[4]\nCHECK-NEXT: Activation"));
  // With nothing matched yet there is no line to follow.
  EXPECT_NE(failure_of(kNetwork, "CHECK-NEXT: input %x"), "");
}

TEST(FileCheck, CheckSameStaysOnTheLineAfterTheMatch) {
  EXPECT_TRUE(filecheck(kNetwork, "CHECK: %relu: f32[4] =\nCHECK-SAME: Activation[kRelu]\nCHECK-SAME: # relu"));
  // On the next line, not this one.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Unary[kExp]\nCHECK-SAME: Activation"));
  // On this line, but before the match.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Activation[kRelu]\nCHECK-SAME: %relu: f32[4]"));
  EXPECT_NE(failure_of(kNetwork, "CHECK-SAME: input"), "");
}

TEST(FileCheck, CheckNotForbidsTextBetweenMatches) {
  // Between the two matches: only the relu line.
  EXPECT_TRUE(filecheck(kNetwork, "CHECK: Unary[kExp]\nCHECK-NOT: Unary\nCHECK: Unary[kNeg]"));
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Unary[kExp]\nCHECK-NOT: Activation\nCHECK: Unary[kNeg]"));
  // Before the first match: from the start of the input.
  EXPECT_TRUE(filecheck(kNetwork, "CHECK-NOT: Activation\nCHECK: Unary[kExp]"));
  EXPECT_FALSE(filecheck(kNetwork, "CHECK-NOT: input\nCHECK: Unary[kExp]"));
  // After the last match: to the end of the input.
  EXPECT_TRUE(filecheck(kNetwork, "CHECK: Activation\nCHECK-NOT: Unary[kExp]"));
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: Activation\nCHECK-NOT: Unary[kNeg]"));
  // A pattern of CHECK-NOTs alone checks the whole input.
  EXPECT_TRUE(filecheck(kNetwork, "CHECK-NOT: Softmax\nCHECK-NOT: MatMul"));
  EXPECT_FALSE(filecheck(kNetwork, "CHECK-NOT: Softmax\nCHECK-NOT: kRelu"));
  // Bounded by a CHECK-NEXT's match too, including the rest of the previous match's line.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: %relu:\nCHECK-NOT: kRelu\nCHECK-NEXT: Unary[kNeg]"));
}

TEST(FileCheck, CheckCountWantsThatManyInOrder) {
  EXPECT_TRUE(filecheck(kNetwork, "CHECK-COUNT-2: = Unary["));
  EXPECT_FALSE(filecheck(kNetwork, "CHECK-COUNT-3: = Unary["));
  // "At least": a CHECK-NOT after it says "and no more".
  EXPECT_TRUE(filecheck(kNetwork, "CHECK-COUNT-2: = Unary[\nCHECK-NOT: = Unary["));
  EXPECT_FALSE(filecheck(kNetwork, "CHECK-COUNT-1: = Unary[\nCHECK-NOT: = Unary["));
}

TEST(FileCheck, RunsOfWhitespaceMatchEachOther) {
  // The printout's two spaces before `#` against one; a tab and indentation in the pattern.
  EXPECT_TRUE(filecheck(kNetwork, "\t  CHECK:   (%exp) # relu  "));
  // Whitespace still separates: no space is not a space.
  EXPECT_FALSE(filecheck(kNetwork, "CHECK: (%exp)# relu"));
}

TEST(FileCheck, MalformedPatternsFailInsteadOfCheckingNothing) {
  EXPECT_NE(failure_of(kNetwork, "").find("no CHECK directive"), std::string::npos);
  EXPECT_NE(failure_of(kNetwork, "the relu is gone\nUnary[kExp]").find("no CHECK directive"), std::string::npos);
  EXPECT_NE(failure_of(kNetwork, "CHECK: input\nCHECK-NXT: Unary").find("unknown directive `CHECK-NXT`"),
            std::string::npos);
  EXPECT_NE(failure_of(kNetwork, "CHECK-NOT Unary").find("unknown directive"), std::string::npos);
  EXPECT_NE(failure_of(kNetwork, "CHECK:   ").find("no text to match"), std::string::npos);
  EXPECT_NE(failure_of(kNetwork, "CHECK-COUNT-0: Unary").find("at least 1"), std::string::npos);
}

TEST(FileCheck, FailuresNameTheDirectiveAndListTheInput) {
  const std::string missing = failure_of(kNetwork, "CHECK: Unary[kExp]\n\nCHECK-NEXT: Softmax");
  EXPECT_NE(missing.find("pattern line 3 `CHECK-NEXT: Softmax`"), std::string::npos) << missing;
  EXPECT_NE(missing.find("input line 3"), std::string::npos) << missing;
  // The whole input, numbered, the previous match's line marked.
  EXPECT_NE(missing.find("   1   input %x: f32[4]\n"), std::string::npos) << missing;
  EXPECT_NE(missing.find("   2 > %exp: f32[4] = Unary[kExp](%x)  # exp\n"), std::string::npos) << missing;
  EXPECT_NE(missing.find("   5   output y = %neg\n"), std::string::npos) << missing;

  const std::string forbidden = failure_of(kNetwork, "CHECK: input\nCHECK-NOT: Activation\nCHECK: output");
  EXPECT_NE(forbidden.find("pattern line 2 `CHECK-NOT: Activation` found on input line 3"), std::string::npos)
      << forbidden;
  EXPECT_NE(forbidden.find("   3 ! %relu"), std::string::npos) << forbidden;
}

}  // namespace
}  // namespace kiln
