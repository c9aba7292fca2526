// Malformed, truncated and hostile archives, made from a good fixture: each must end in one
// Pt2Error whose single line names the problem — never a crash, hang or huge allocation.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <functional>

#include "archive_util.h"
#include "frontend/pt2.h"

using namespace kiln;
using json = nlohmann::json;
using testutil::Archive;
using testutil::Bytes;

namespace {

const std::string kFixture = std::string(KILN_TEST_DATA) + "/mlp_dyn/export.pt2";

// Loads `bytes`; expects a Pt2Error of one line containing `needle`.
void expect_error(const Bytes& bytes, const std::string& needle) {
  try {
    frontend::load_pt2_from_memory(bytes.data(), bytes.size(), "bad.pt2");
    ADD_FAILURE() << "loaded without error; expected: " << needle;
  } catch (const frontend::Pt2Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message: " << msg;
    EXPECT_EQ(msg.rfind("bad.pt2", 0), 0u) << "message: " << msg;
  }
}

Bytes good() { return testutil::read_file(kFixture); }

// The fixture with models/model.json changed by `edit`.
Bytes with_model(const std::function<void(json&)>& edit) {
  Archive a = Archive::read(good());
  std::string* text = a.find("models/model.json");
  json model = json::parse(*text);
  edit(model);
  *text = model.dump();
  return a.write();
}

Bytes with_weights_config(const std::function<void(json&)>& edit) {
  Archive a = Archive::read(good());
  std::string* text = a.find("data/weights/model_weights_config.json");
  json cfg = json::parse(*text);
  edit(cfg);
  *text = cfg.dump();
  return a.write();
}

json& node(json& model, const std::string& name) {
  for (auto& n : model["graph_module"]["graph"]["nodes"])
    if (n["name"] == name) return n;
  throw std::runtime_error("no node " + name);
}

}  // namespace

TEST(BadInput, RewrittenArchiveStillLoads) {
  // The writer used below reproduces a loadable archive: failures are due to each edit only.
  Bytes b = Archive::read(good()).write();
  EXPECT_NO_THROW(frontend::load_pt2_from_memory(b.data(), b.size(), "rewritten.pt2"));
}

TEST(BadInput, NotAZip) {
  std::string text = "this is not a zip archive, just some text that is long enough";
  expect_error(Bytes(text.begin(), text.end()), "not a zip");
  expect_error(Bytes{}, "not a zip");
  expect_error(Bytes(100000, 0), "not a zip");
}

TEST(BadInput, MissingFile) {
  try {
    frontend::load_pt2("/nonexistent/model.pt2");
    FAIL();
  } catch (const frontend::Pt2Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.pt2"), std::string::npos);
  }
}

TEST(BadInput, TruncatedAnywhere) {
  const Bytes b = good();
  for (size_t len = 0; len < b.size(); len += std::max<size_t>(1, b.size() / 97)) {
    Bytes t(b.begin(), b.begin() + len);
    EXPECT_THROW(frontend::load_pt2_from_memory(t.data(), t.size(), "bad.pt2"), frontend::Pt2Error) << len;
  }
}

TEST(BadInput, BrokenCentralDirectory) {
  Bytes b = good();
  // The first central-directory header: corrupt its signature.
  for (size_t i = b.size() - 22; i-- > 0;)
    if (b[i] == 0x50 && b[i + 1] == 0x4b && b[i + 2] == 0x01 && b[i + 3] == 0x02) {
      size_t first = i;
      while (first >= 46) {  // walk back to the first header of the directory
        bool found = false;
        for (size_t j = first; j-- > 0 && first - j < 400;)
          if (b[j] == 0x50 && b[j + 1] == 0x4b && b[j + 2] == 0x01 && b[j + 3] == 0x02) {
            first = j;
            found = true;
            break;
          }
        if (!found) break;
      }
      b[first] = 'X';
      break;
    }
  expect_error(b, "central directory entry 0");
}

TEST(BadInput, EntryOffsetsOutOfRange) {
  Bytes b = good();
  // The plain EOCD's directory offset past the end (and no ZIP64 locator to override it).
  Archive a = Archive::read(b);
  Bytes w = a.write();
  // Drop the ZIP64 records: the plain EOCD alone, with an absurd directory offset.
  const size_t eocd = w.size() - 22;
  Bytes plain(w.begin(), w.begin() + (eocd - 20 - 56));
  plain.insert(plain.end(), w.begin() + eocd, w.end());
  plain[plain.size() - 22 + 16] = 0xF0;
  plain[plain.size() - 22 + 17] = 0xFF;
  plain[plain.size() - 22 + 18] = 0xFF;
  plain[plain.size() - 22 + 19] = 0x7F;
  expect_error(plain, "central directory lies outside the file");
}

TEST(BadInput, CorruptedJsonCrc) {
  Bytes b = good();
  Archive a = Archive::read(b);
  Bytes w = a.write();
  // Flip a byte inside model.json's data without fixing its CRC.
  const std::string needle = "\"graph_module\"";
  auto it = std::search(w.begin(), w.end(), needle.begin(), needle.end());
  ASSERT_NE(it, w.end());
  *(it + 1) = 'G';
  expect_error(w, "CRC-32");
}

TEST(BadInput, BadJson) {
  Archive a = Archive::read(good());
  *a.find("models/model.json") = "{\"graph_module\": [1, 2,";
  expect_error(a.write(), "invalid JSON");
  *a.find("models/model.json") = std::string(5000, '[') + std::string(5000, ']');
  expect_error(a.write(), "nested deeper");
  *a.find("models/model.json") = "[]";
  expect_error(a.write(), "expected a JSON object");
}

TEST(BadInput, MissingModelJson) {
  Archive a = Archive::read(good());
  a.remove("models/model.json");
  expect_error(a.write(), "no models/model.json");
}

TEST(BadInput, Pre28Archive) {
  Archive old;
  old.entries = {{"model/serialized_exported_program.json", "{}"}, {"model/serialized_state_dict.pt", "x"}};
  expect_error(old.write(), "before 2.8");
}

TEST(BadInput, CompressedEntry) {
  Bytes b = Archive::read(good()).write();
  b[8] = 8;  // first local header's method: deflate (central directory is what is checked)
  const std::string name = "export/data/weights/weight_0";
  // The central header of the first entry starts at the directory offset from the EOCD.
  const size_t eocd = b.size() - 22;
  const uint32_t cd = b[eocd + 16] | (b[eocd + 17] << 8) | (b[eocd + 18] << 16) | (uint32_t(b[eocd + 19]) << 24);
  b[cd + 10] = 8;
  expect_error(b, "compressed");
}

TEST(BadInput, UnknownSchemaMajor) {
  expect_error(with_model([](json& m) { m["schema_version"]["major"] = 9; }), "schema version 9.17");
  expect_error(with_model([](json& m) { m.erase("schema_version"); }), "missing field 'schema_version'");
}

TEST(BadInput, UnknownArgumentTag) {
  expect_error(with_model([](json& m) {
                 node(m, "gelu")["inputs"][1]["arg"] = json{{"as_bogus", 1}};
               }),
               "unknown argument tag 'as_bogus'");
  expect_error(with_model([](json& m) {
                 node(m, "gelu")["inputs"][1]["arg"] = json{{"as_string", "x"}, {"as_int", 2}};
               }),
               "tagged union");
  expect_error(with_model([](json& m) { node(m, "gelu")["inputs"][1]["kind"] = 7; }), "unknown argument kind 7");
}

TEST(BadInput, UnknownDtype) {
  expect_error(with_model([](json& m) { m["graph_module"]["graph"]["tensor_values"]["gelu"]["dtype"] = 99; }),
               "unknown ScalarType 99");
  expect_error(with_model([](json& m) { m["graph_module"]["graph"]["tensor_values"]["gelu"]["layout"] = 1; }),
               "layout 1 is not supported");
  expect_error(with_model([](json& m) {
                 node(m, "gelu")["inputs"].push_back(
                     json{{"name", "dtype"}, {"arg", {{"as_scalar_type", 77}}}, {"kind", 2}});
               }),
               "unknown ScalarType 77");
}

TEST(BadInput, UndefinedValue) {
  expect_error(with_model([](json& m) { node(m, "gelu")["inputs"][0]["arg"]["as_tensor"]["name"] = "nope"; }),
               "refers to 'nope'");
  expect_error(with_model([](json& m) { m["graph_module"]["graph"]["outputs"][0]["as_tensor"]["name"] = "zzz"; }),
               "refers to 'zzz'");
  expect_error(with_model([](json& m) { m["graph_module"]["graph"]["tensor_values"].erase("gelu"); }),
               "tensor 'gelu' has no entry in tensor_values");
}

TEST(BadInput, CycleOrUseBeforeDefinition) {
  // Swap linear and gelu: gelu now reads linear before it is defined (a cycle is the same thing
  // in a serialized node list: some node must come first and read a later one).
  expect_error(with_model([](json& m) {
                 auto& nodes = m["graph_module"]["graph"]["nodes"];
                 std::swap(nodes[0], nodes[1]);
               }),
               "not yet defined");
  expect_error(with_model([](json& m) {
                 auto& nodes = m["graph_module"]["graph"]["nodes"];
                 nodes.push_back(nodes[1]);  // gelu defined twice
               }),
               "defined twice");
}

TEST(BadInput, WeightFileShorterThanMeta) {
  Archive a = Archive::read(good());
  a.find("data/weights/weight_0")->resize(100);
  expect_error(a.write(), "needs 65536 bytes but the file holds 100");
  a.remove("data/weights/weight_0");
  expect_error(a.write(), "missing from the archive");
}

TEST(BadInput, SizesThatOverflow) {
  auto huge = [](json& meta) {
    meta["sizes"] = json::array({json{{"as_int", int64_t{1} << 40}}, json{{"as_int", int64_t{1} << 40}}});
    meta["strides"] = json::array({json{{"as_int", int64_t{1} << 40}}, json{{"as_int", 1}}});
  };
  Archive a = Archive::read(good());
  json model = json::parse(*a.find("models/model.json"));
  huge(model["graph_module"]["graph"]["tensor_values"]["p_a_weight"]);
  *a.find("models/model.json") = model.dump();
  json cfg = json::parse(*a.find("data/weights/model_weights_config.json"));
  huge(cfg["config"]["a.weight"]["tensor_meta"]);
  *a.find("data/weights/model_weights_config.json") = cfg.dump();
  expect_error(a.write(), "overflows");

  expect_error(with_model([](json& m) {
                 m["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][1] = json{{"as_int", -5}};
               }),
               "negative size -5");
  expect_error(with_model([](json& m) {
                 m["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][1] =
                     json{{"as_int", 18446744073709551615ull}};
               }),
               "does not fit in 64 bits");
  expect_error(with_weights_config([](json& c) {
                 c["config"]["a.weight"]["tensor_meta"]["sizes"][0] = json{{"as_int", 1000}};
               }),
               "the config says f32[1000, 64] but the graph says f32[256, 64]");
}

TEST(BadInput, PickleAndMutationsAreRefused) {
  expect_error(with_weights_config([](json& c) { c["config"]["a.weight"]["use_pickle"] = true; }),
               "never unpickles");
  expect_error(with_model([](json& m) {
                 auto& out = m["graph_module"]["signature"]["output_specs"][0];
                 out = json{{"buffer_mutation", {{"arg", {{"name", "softmax"}}}, {"buffer_name", "bn.running_mean"}}}};
               }),
               "mutates buffer 'bn.running_mean'");
  expect_error(with_model([](json& m) {
                 auto& out = m["graph_module"]["signature"]["output_specs"][0];
                 out = json{{"user_input_mutation", {{"arg", {{"name", "softmax"}}}, {"user_input_name", "x"}}}};
               }),
               "mutates a user input");
  expect_error(with_model([](json& m) { m["verifiers"] = json::array({"EXIR"}); }), "unknown verifier 'EXIR'");
}

TEST(BadInput, BadSympy) {
  expect_error(with_model([](json& m) {
                 m["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]["expr_str"] = "Mul(Integer(3)";
               }),
               "bad sympy expression");
  expect_error(with_model([](json& m) {
                 m["range_constraints"]["s77"] = json{{"min_val", 10}, {"max_val", 2}};
               }),
               "empty range 10..2");
}
