#include <gtest/gtest.h>

#include "ir/symexpr.h"
#include "ir/types.h"

using namespace kiln::ir;
using Op = SymExpr::Op;

TEST(SymExpr, FoldsConstants) {
  auto e = SymExpr::make(Op::Add, {SymExpr::integer(2), SymExpr::integer(3)});
  ASSERT_TRUE(e->is_integer());
  EXPECT_EQ(e->value(), 5);
  auto fd = SymExpr::make(Op::FloorDiv, {SymExpr::integer(-7), SymExpr::integer(2)});
  EXPECT_EQ(fd->value(), -4);  // Python floor division
  auto m = SymExpr::make(Op::Mod, {SymExpr::integer(-7), SymExpr::integer(3)});
  EXPECT_EQ(m->value(), 2);    // Python modulo
  // Division by zero stays unevaluated instead of throwing at construction.
  auto z = SymExpr::make(Op::FloorDiv, {SymExpr::integer(1), SymExpr::integer(0)});
  EXPECT_FALSE(z->is_integer());
  EXPECT_THROW(z->evaluate({}), std::exception);
}

TEST(SymExpr, MergesConstantTermsAndPrintsLikeSympy) {
  auto s = SymExpr::symbol("s77");
  auto mul = SymExpr::make(Op::Mul, {SymExpr::integer(3), s});
  EXPECT_EQ(mul->str(), "3*s77");
  auto add = SymExpr::make(Op::Add, {SymExpr::integer(1), s});
  EXPECT_EQ(add->str(), "s77 + 1");
  auto sub = SymExpr::make(Op::Add, {s, SymExpr::integer(-1)});
  EXPECT_EQ(sub->str(), "s77 - 1");
  auto neg = SymExpr::make(Op::Add, {SymExpr::symbol("s0"), SymExpr::make(Op::Mul, {SymExpr::integer(-2), s})});
  EXPECT_EQ(neg->str(), "s0 - 2*s77");
  auto fd = SymExpr::make(Op::FloorDiv, {SymExpr::make(Op::Add, {s, SymExpr::integer(1)}), SymExpr::integer(2)});
  EXPECT_EQ(fd->str(), "((s77 + 1)//2)");
  auto nested = SymExpr::make(Op::Mul, {SymExpr::integer(2), SymExpr::make(Op::Mul, {SymExpr::integer(3), s})});
  EXPECT_EQ(nested->str(), "6*s77");
  EXPECT_EQ(SymExpr::make(Op::Mul, {SymExpr::integer(1), s}).get()->str(), "s77");
  EXPECT_EQ(SymExpr::make(Op::Max, {SymExpr::integer(1), s})->str(), "Max(1, s77)");
  EXPECT_EQ(SymExpr::make(Op::Pow, {s, SymExpr::integer(2)})->str(), "s77**2");
}

TEST(SymExpr, Evaluates) {
  auto s = SymExpr::symbol("s0");
  auto e = SymExpr::make(Op::Add, {SymExpr::make(Op::Mul, {SymExpr::integer(3), s}),
                                   SymExpr::make(Op::CeilDiv, {s, SymExpr::integer(4)})});
  EXPECT_EQ(e->evaluate({{"s0", 10}}), 33);
  EXPECT_EQ(e->evaluate({}), std::nullopt);
  auto f = SymExpr::function("Mystery", {s});
  EXPECT_EQ(f->str(), "Mystery(s0)");
  try {
    f->evaluate({{"s0", 1}});
    FAIL();
  } catch (const std::runtime_error& err) {
    EXPECT_NE(std::string(err.what()).find("Mystery"), std::string::npos);
  }
  auto big = SymExpr::make(Op::Mul, {s, s});
  EXPECT_THROW(big->evaluate({{"s0", int64_t{1} << 40}}), std::overflow_error);
  std::vector<std::string> syms;
  e->collect_symbols(syms);
  EXPECT_EQ(syms, std::vector<std::string>{"s0"});
}

TEST(SymInt, ConstantsAndExpressions) {
  SymInt a = 4;
  SymInt b(SymExpr::integer(4));
  EXPECT_TRUE(b.is_constant());
  EXPECT_EQ(a, b);
  SymInt c(SymExpr::symbol("s1"));
  EXPECT_FALSE(c.is_constant());
  EXPECT_EQ(c.str(), "s1");
  EXPECT_EQ(c, SymInt(SymExpr::symbol("s1")));
  EXPECT_FALSE(c == a);
  EXPECT_EQ(c.evaluate({{"s1", 7}}), 7);
}

TEST(Types, Names) {
  EXPECT_STREQ(to_string(ScalarType::Float), "float32");
  EXPECT_EQ(element_size(ScalarType::BFloat16), 2u);
  EXPECT_EQ(scalar_type_from_name("torch.float16"), ScalarType::Half);
  EXPECT_EQ(scalar_type_from_name("Long"), ScalarType::Long);
  EXPECT_EQ(scalar_type_from_name("nope"), std::nullopt);
  TensorMeta m;
  m.sizes = {SymInt(SymExpr::symbol("s0")), 16};
  EXPECT_EQ(m.str(), "f32[s0, 16]");
  EXPECT_FALSE(m.is_static());
  EXPECT_EQ(m.static_numel(), std::nullopt);
  m.sizes = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_THROW(m.static_numel(), std::overflow_error);
  EXPECT_EQ((Device{"cuda", 0}).str(), "cuda:0");
}
