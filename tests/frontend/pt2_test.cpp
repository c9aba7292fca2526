// Every fixture under tests/data loads, verifies and prints; weights are the stored bytes;
// mlp_dyn's symbolic batch dim and its range come out right.
#include <gtest/gtest.h>

#include <filesystem>

#include "archive_util.h"
#include "frontend/pt2.h"
#include "frontend/sympy.h"
#include "frontend/zip.h"
#include "ir/schema.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> fixtures() {
  std::vector<std::string> out;
  for (const auto& d : fs::directory_iterator(KILN_TEST_DATA))
    for (const char* f : {"export.pt2", "core_aten.pt2"})
      if (fs::exists(d.path() / f)) out.push_back((d.path() / f).string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string data(const std::string& rel) { return std::string(KILN_TEST_DATA) + "/" + rel; }

}  // namespace

TEST(Pt2, EveryFixtureLoadsVerifiesAndPrints) {
  auto files = fixtures();
  ASSERT_GE(files.size(), 10u) << "fixtures missing under " << KILN_TEST_DATA;
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    ir::ExportedProgram p = frontend::load_pt2(f);
    EXPECT_NO_THROW(p.graph.verify());
    EXPECT_FALSE(p.inputs().empty());
    ASSERT_NE(p.graph.output(), nullptr);
    ASSERT_EQ(p.graph.output()->args.size(), 1u);
    EXPECT_TRUE(p.graph.output()->args[0].is_list());
    EXPECT_FALSE(p.graph.output_values().empty());
    EXPECT_EQ(p.schema_version.first, 8);
    EXPECT_EQ(p.verifier, f.find("core_aten") != std::string::npos ? "ATEN" : "TRAINING");
    const std::string text = p.graph.str();
    EXPECT_NE(text.find("graph():"), std::string::npos);
    for (ir::Node* n : p.graph.nodes()) {
      if (n->kind == ir::NodeKind::Output) continue;
      if (!n->users().empty()) EXPECT_NE(n->meta.kind, ir::ValueMeta::Kind::None) << n->str();
      if (n->kind == ir::NodeKind::GetAttr) EXPECT_TRUE(p.weights.count(n->target)) << n->str();
      if (n->kind != ir::NodeKind::CallFunction) continue;
      if (const ir::OpSchema* s = ir::find_schema(n->target)) EXPECT_NO_THROW(ir::BoundArgs(*n, *s)) << n->str();
      else EXPECT_TRUE(n->target == "getitem" || n->target.find("aten.") != 0) << "no schema for " << n->target;
    }
  }
}

TEST(Pt2, WeightsAreTheStoredBytes) {
  for (const auto& f : fixtures()) {
    SCOPED_TRACE(f);
    ir::ExportedProgram p = frontend::load_pt2(f);
    // The writer's CRC-32 of each data file, from the central directory, checks what we view.
    auto bytes = testutil::read_file(f);
    auto fb = frontend::FileBytes::copy_of(bytes.data(), bytes.size());
    frontend::ZipReader zr(fb, f);
    std::map<uint64_t, uint32_t> crc_by_size_and_start;
    size_t checked = 0;
    for (const auto& [name, w] : p.weights) {
      ASSERT_TRUE(w.storage);
      ASSERT_LE(w.storage_offset * ir::element_size(w.meta.dtype) + w.nbytes(), w.storage->size) << name;
      // Find the entry whose bytes this storage is: same size and same content position.
      const uint8_t* base = static_cast<const frontend::FileBytes*>(w.storage->owner.get())->data();
      const uint64_t offset = w.storage->data - base;
      const frontend::ZipEntry* entry = nullptr;
      for (const auto& e : zr.entries())
        if (e.data_offset == offset && e.size == w.storage->size) entry = &e;
      ASSERT_NE(entry, nullptr) << name;
      EXPECT_EQ(frontend::crc32(w.storage->data, w.storage->size), entry->crc32) << name;
      EXPECT_EQ(std::memcmp(w.storage->data, bytes.data() + offset, w.storage->size), 0) << name;
      ++checked;
    }
    EXPECT_EQ(checked, p.weights.size());
  }
  // One value known from PyTorch: mlp_dyn's a.weight is f32[256, 64], weight_0, 65536 bytes.
  ir::ExportedProgram p = frontend::load_pt2(data("mlp_dyn/export.pt2"));
  const ir::Weight& w = p.weights.at("a.weight");
  EXPECT_EQ(w.meta.str(), "f32[256, 64]");
  EXPECT_EQ(w.nbytes(), 65536u);
  EXPECT_TRUE(w.is_contiguous());
  EXPECT_EQ(p.weight_bytes(), 65536u + 1024 + 32768 + 3 * 128);
}

TEST(Pt2, MlpDynSymbolsAndRanges) {
  for (const char* f : {"mlp_dyn/export.pt2", "mlp_dyn/core_aten.pt2"}) {
    SCOPED_TRACE(f);
    ir::ExportedProgram p = frontend::load_pt2(data(f));
    auto inputs = p.inputs();
    ASSERT_EQ(inputs.size(), 1u);
    const ir::TensorMeta& m = inputs[0]->meta.tensor;
    ASSERT_EQ(m.rank(), 2u);
    ASSERT_FALSE(m.sizes[0].is_constant());
    ASSERT_TRUE(m.sizes[0].expr->is_symbol());
    const std::string sym = m.sizes[0].expr->name();
    EXPECT_EQ(m.sizes[1], ir::SymInt(64));
    ASSERT_EQ(p.ranges.count(sym), 1u);
    EXPECT_EQ(p.ranges.at(sym).min, 1);
    EXPECT_EQ(p.ranges.at(sym).max, 256);
    // The output carries the same symbol.
    const ir::Node* out = p.graph.output_values().at(0).node();
    EXPECT_EQ(out->meta.tensor.sizes[0], m.sizes[0]);
    EXPECT_EQ(out->meta.tensor.str(), "f32[" + sym + ", 32]");
  }
}

TEST(Pt2, TupleOpsGetGetitems) {
  ir::ExportedProgram p = frontend::load_pt2(data("mlp_dyn/core_aten.pt2"));
  ir::Node* ln = nullptr;
  for (ir::Node* n : p.graph.nodes())
    if (n->is_op("aten.native_layer_norm.default")) ln = n;
  ASSERT_NE(ln, nullptr);
  EXPECT_EQ(ln->meta.kind, ir::ValueMeta::Kind::Tuple);
  EXPECT_EQ(ln->meta.tuple.size(), 3u);
  ASSERT_EQ(ln->users().size(), 1u);  // unused slots have no getitem
  EXPECT_EQ(ln->users()[0]->target, "getitem");
  EXPECT_EQ(ln->users()[0]->args.at(1).as<int64_t>(), 0);
}

TEST(Pt2, FromMemoryEqualsFromFile) {
  auto bytes = testutil::read_file(data("gelu_tanh/export.pt2"));
  ir::ExportedProgram a = frontend::load_pt2(data("gelu_tanh/export.pt2"));
  ir::ExportedProgram b = frontend::load_pt2_from_memory(bytes.data(), bytes.size());
  EXPECT_EQ(a.graph.str(), b.graph.str());
  EXPECT_NE(a.graph.str().find("kwargs = {approximate: tanh}"), std::string::npos) << a.graph.str();
}

TEST(Sympy, ParsesSrepr) {
  EXPECT_EQ(frontend::parse_sympy_srepr("Symbol('s77', positive=True, integer=True)")->str(), "s77");
  EXPECT_EQ(frontend::parse_sympy_srepr("Mul(Integer(3), Symbol('s77', positive=True, integer=True))")->str(),
            "3*s77");
  auto e = frontend::parse_sympy_srepr(
      "Add(Integer(-1), FloorDiv(Symbol('s0', integer=True, positive=True), Integer(2)))");
  EXPECT_EQ(e->str(), "(s0//2) - 1");
  EXPECT_EQ(e->evaluate({{"s0", 9}}), 3);
  auto mi = frontend::parse_sympy_srepr(
      "ModularIndexing(Symbol('s1', integer=True, positive=True), Integer(4), Integer(8))");
  EXPECT_EQ(mi->evaluate({{"s1", 100}}), 1);
  EXPECT_EQ(frontend::parse_sympy_srepr("PythonMod(Integer(-7), Integer(3))")->value(), 2);
  EXPECT_EQ(frontend::parse_sympy_srepr("Max(Integer(1), Symbol('u0', integer=True))")->str(), "Max(1, u0)");
  EXPECT_EQ(frontend::parse_sympy_srepr("Foo(Symbol('s0'))")->str(), "Foo(s0)");
  EXPECT_THROW(frontend::parse_sympy_srepr("Mul(Integer(3)"), frontend::SympyError);
  EXPECT_THROW(frontend::parse_sympy_srepr("Integer(99999999999999999999999)"), frontend::SympyError);
  std::string deep;
  for (int i = 0; i < 10000; ++i) deep += "Add(";
  EXPECT_THROW(frontend::parse_sympy_srepr(deep), frontend::SympyError);
}
