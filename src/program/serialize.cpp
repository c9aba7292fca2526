// The .kiln file: everything a compiled program needs, without the .pt2.
//
//   "KILNPROG" | u32 version | u32 flags | u64 json bytes | u64 blob bytes | JSON | blob | u64 checksum
//
// The checksum covers every byte before it: engine::checksum64 in version 2 (written now), FNV-1a
// in version 1 (still read; engine/checksum.h). The JSON describes inputs, symbol ranges, the program
// graph (fallback nodes with their arguments and metas), segments and steps; the blob holds each
// plan's own serialized bytes and the weights fallback nodes read. Loading checks everything it
// reads (sizes, names, enum values) and refuses with FormatError, never trusting the file.
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/checksum.h"
#include "engine/plan_json.h"
#include "partition/partition.h"
#include "program/file_io.h"
#include "program/program.h"

namespace kiln::program {

using nlohmann::json;

namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'P', 'R', 'O', 'G'};
constexpr uint32_t kVersion = 2;   // written; version 1 (an FNV-1a checksum) is read too
constexpr uint64_t kFnvBasis = 1469598103934665603ull;  // version 1's checksum starts from it
constexpr size_t kHeader = 32;
constexpr int kMaxDepth = 64;        // arguments and symbolic expressions
constexpr size_t kMaxJsonDepth = 256;  // the description: ~6 levels plus those above (2 JSON levels each)
constexpr size_t kMaxRank = 64;

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}
template <class T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

FormatError bad(const std::string& what) { return FormatError("not a valid .kiln file: " + what); }

template <class E>
E enum_from(const json& j, int count, const char* what) {
  const int v = j.get<int>();
  if (v < 0 || v >= count) throw bad(std::string("bad ") + what + " " + std::to_string(v));
  return static_cast<E>(v);
}

// ---- symbolic ints ----
json sym_expr_to_json(const ir::SymExpr& e) {
  json j = {{"op", static_cast<int>(e.op())}};
  if (e.op() == ir::SymExpr::Op::Integer) j["v"] = e.value();
  if (e.op() == ir::SymExpr::Op::Symbol || e.op() == ir::SymExpr::Op::Function) j["name"] = e.name();
  if (!e.args().empty()) {
    j["args"] = json::array();
    for (const auto& a : e.args()) j["args"].push_back(sym_expr_to_json(*a));
  }
  return j;
}
ir::SymExprPtr sym_expr_from_json(const json& j, int depth) {
  if (depth > kMaxDepth) throw bad("symbolic expression nested too deeply");
  const auto op = enum_from<ir::SymExpr::Op>(j.at("op"), static_cast<int>(ir::SymExpr::Op::Function) + 1, "sym op");
  if (op == ir::SymExpr::Op::Integer) return ir::SymExpr::integer(j.at("v").get<int64_t>());
  if (op == ir::SymExpr::Op::Symbol) return ir::SymExpr::symbol(j.at("name").get<std::string>());
  std::vector<ir::SymExprPtr> args;
  if (j.contains("args"))
    for (const auto& a : j.at("args")) args.push_back(sym_expr_from_json(a, depth + 1));
  if (op == ir::SymExpr::Op::Function) return ir::SymExpr::function(j.at("name").get<std::string>(), std::move(args));
  return ir::SymExpr::make(op, std::move(args));
}
json symint_to_json(const ir::SymInt& s) { return s.is_constant() ? json(s.value) : sym_expr_to_json(*s.expr); }
ir::SymInt symint_from_json(const json& j) {
  if (j.is_number_integer()) return ir::SymInt(j.get<int64_t>());
  return ir::SymInt(sym_expr_from_json(j, 0));
}

// ---- metas ----
json device_to_json(const ir::Device& d) { return {{"type", d.type}, {"index", d.index ? json(*d.index) : json()}}; }
ir::Device device_from_json(const json& j) {
  ir::Device d;
  d.type = j.at("type").get<std::string>();
  if (!j.at("index").is_null()) d.index = j.at("index").get<int>();
  return d;
}
constexpr int kScalarTypes = static_cast<int>(ir::ScalarType::Float8_e5m2fnuz) + 1;

json tensor_meta_to_json(const ir::TensorMeta& m) {
  json j = {{"dtype", static_cast<int>(m.dtype)}, {"sizes", json::array()}, {"strides", json::array()},
            {"offset", symint_to_json(m.storage_offset)}, {"device", device_to_json(m.device)}};
  for (const auto& s : m.sizes) j["sizes"].push_back(symint_to_json(s));
  for (const auto& s : m.strides) j["strides"].push_back(symint_to_json(s));
  return j;
}
ir::TensorMeta tensor_meta_from_json(const json& j) {
  ir::TensorMeta m;
  m.dtype = enum_from<ir::ScalarType>(j.at("dtype"), kScalarTypes, "dtype");
  if (j.at("sizes").size() > kMaxRank || j.at("strides").size() > kMaxRank)
    throw bad("tensor of rank " + std::to_string(j.at("sizes").size()) + " (at most " + std::to_string(kMaxRank) + ")");
  for (const auto& s : j.at("sizes")) m.sizes.push_back(symint_from_json(s));
  for (const auto& s : j.at("strides")) m.strides.push_back(symint_from_json(s));
  m.storage_offset = symint_from_json(j.at("offset"));
  m.device = device_from_json(j.at("device"));
  return m;
}
json value_meta_to_json(const ir::ValueMeta& m) {
  json j = {{"kind", static_cast<int>(m.kind)}};
  if (m.kind == ir::ValueMeta::Kind::Tensor) j["tensor"] = tensor_meta_to_json(m.tensor);
  if (!m.tuple.empty()) {
    j["tuple"] = json::array();
    for (const auto& t : m.tuple) j["tuple"].push_back(t ? tensor_meta_to_json(*t) : json());
  }
  if (m.kind == ir::ValueMeta::Kind::SymInt) j["sym"] = symint_to_json(m.sym);
  return j;
}
ir::ValueMeta value_meta_from_json(const json& j) {
  ir::ValueMeta m;
  m.kind = enum_from<ir::ValueMeta::Kind>(j.at("kind"), static_cast<int>(ir::ValueMeta::Kind::TensorList) + 1, "value kind");
  if (j.contains("tensor")) m.tensor = tensor_meta_from_json(j.at("tensor"));
  if (j.contains("tuple"))
    for (const auto& t : j.at("tuple"))
      m.tuple.push_back(t.is_null() ? std::nullopt : std::optional<ir::TensorMeta>(tensor_meta_from_json(t)));
  if (j.contains("sym")) m.sym = symint_from_json(j.at("sym"));
  return m;
}

// ---- arguments ----
json double_to_json(double v) {
  if (std::isnan(v)) return {{"f", "NaN"}};
  if (std::isinf(v)) return {{"f", v > 0 ? "Infinity" : "-Infinity"}};
  return {{"f", v}};
}
json arg_to_json(const ir::Argument& a) {
  return std::visit(
      [](const auto& x) -> json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, ir::None>) return json();
        else if constexpr (std::is_same_v<T, bool>) return json(x);
        else if constexpr (std::is_same_v<T, int64_t>) return json(x);
        else if constexpr (std::is_same_v<T, double>) return double_to_json(x);
        else if constexpr (std::is_same_v<T, std::string>) return {{"s", x}};
        else if constexpr (std::is_same_v<T, ir::ScalarType>) return {{"dtype", static_cast<int>(x)}};
        else if constexpr (std::is_same_v<T, ir::Device>) return {{"device", device_to_json(x)}};
        else if constexpr (std::is_same_v<T, ir::MemoryFormat>) return {{"memory_format", static_cast<int>(x)}};
        else if constexpr (std::is_same_v<T, ir::Layout>) return {{"layout", static_cast<int>(x)}};
        else if constexpr (std::is_same_v<T, ir::Node*>) return {{"node", x->name}};
        else {
          json l = json::array();
          for (const auto& e : x) l.push_back(arg_to_json(e));
          return l;
        }
      },
      a.value);
}
ir::Argument arg_from_json(const json& j, const ir::Graph& g, int depth) {
  if (depth > kMaxDepth) throw bad("argument nested too deeply");
  if (j.is_null()) return ir::None{};
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_array()) {
    ir::Argument::List l;
    for (const auto& e : j) l.push_back(arg_from_json(e, g, depth + 1));
    return l;
  }
  if (j.contains("f")) {
    const json& f = j.at("f");
    if (f.is_string()) {
      const std::string s = f.get<std::string>();
      if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
      if (s == "Infinity") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
      throw bad("bad float '" + s + "'");
    }
    return f.get<double>();
  }
  if (j.contains("s")) return j.at("s").get<std::string>();
  if (j.contains("dtype")) return enum_from<ir::ScalarType>(j.at("dtype"), kScalarTypes, "dtype");
  if (j.contains("device")) return device_from_json(j.at("device"));
  if (j.contains("memory_format"))
    return enum_from<ir::MemoryFormat>(j.at("memory_format"), static_cast<int>(ir::MemoryFormat::Preserve) + 1, "memory format");
  if (j.contains("layout")) return enum_from<ir::Layout>(j.at("layout"), static_cast<int>(ir::Layout::Mkldnn) + 1, "layout");
  if (j.contains("node")) {
    const std::string name = j.at("node").get<std::string>();
    ir::Node* n = g.find(name);
    if (!n) throw bad("argument refers to unknown value %" + name);
    return n;
  }
  throw bad("unknown argument " + j.dump().substr(0, 80));
}

const char* kind_name(ir::NodeKind k) {
  switch (k) {
    case ir::NodeKind::Placeholder: return "placeholder";
    case ir::NodeKind::GetAttr: return "get_attr";
    case ir::NodeKind::CallFunction: return "call_function";
    case ir::NodeKind::Output: return "output";
  }
  return "?";
}
ir::NodeKind kind_from(const std::string& s) {
  if (s == "placeholder") return ir::NodeKind::Placeholder;
  if (s == "get_attr") return ir::NodeKind::GetAttr;
  if (s == "call_function") return ir::NodeKind::CallFunction;
  if (s == "output") return ir::NodeKind::Output;
  throw bad("unknown node kind '" + s + "'");
}

engine::Precision precision_from(const std::string& s) {
  if (s == engine::to_string(engine::Precision::kFP16)) return engine::Precision::kFP16;
  if (s == engine::to_string(engine::Precision::kBF16)) return engine::Precision::kBF16;
  return engine::Precision::kFP32;
}

}  // namespace

struct ProgramSerializer {
  static std::vector<uint8_t> save(const CompiledProgram& p) {
    std::vector<uint8_t> blob;
    auto align = [&] { blob.resize((blob.size() + 63) / 64 * 64, 0); };
    json j;
    j["precision"] = engine::to_string(p.precision_);
    j["device"] = engine::to_string(p.device_);
    j["inputs"] = json::array();
    for (const auto& in : p.inputs_) j["inputs"].push_back({{"name", in.name}, {"meta", tensor_meta_to_json(in.meta)}});
    j["ranges"] = json::object();
    for (const auto& [sym, r] : p.ranges_) j["ranges"][sym] = {r.min, r.opt, r.max};
    j["graph"] = json::array();
    for (const ir::Node* n : p.graph_.nodes()) {
      json jn = {{"kind", kind_name(n->kind)}, {"name", n->name}, {"target", n->target},
                 {"args", json::array()}, {"kwargs", json::array()}, {"meta", value_meta_to_json(n->meta)},
                 {"metadata", n->metadata}};
      for (const auto& a : n->args) jn["args"].push_back(arg_to_json(a));
      for (const auto& [k, a] : n->kwargs) jn["kwargs"].push_back({k, arg_to_json(a)});
      j["graph"].push_back(std::move(jn));
    }
    j["segments"] = json::array();
    for (const AccSegment& s : p.segments_) {
      const std::vector<uint8_t> bytes = s.plan.serialize();
      align();
      const size_t off = blob.size();
      blob.insert(blob.end(), bytes.begin(), bytes.end());
      j["segments"].push_back({{"name", s.name}, {"plan", {off, bytes.size()}}, {"inputs", s.input_values},
                               {"outputs", s.output_values}, {"ops", s.ops}, {"compute_ops", s.compute_ops}});
    }
    j["steps"] = json::array();
    for (const Step& s : p.steps_)
      j["steps"].push_back(s.kind == Step::Kind::kAccelerated ? json{{"segment", s.segment}} : json{{"node", s.node->name}});
    j["weights"] = json::array();
    for (const auto& [name, t] : p.weights_) {
      align();
      const size_t off = blob.size();
      blob.insert(blob.end(), t.data, t.data + t.nbytes());
      json dims = t.dims;
      j["weights"].push_back({{"name", name}, {"dtype", static_cast<int>(t.dtype)}, {"dims", dims}, {"offset", off},
                              {"size", t.nbytes()}});
    }
    const std::string text = j.dump();
    std::vector<uint8_t> out;
    out.reserve(kHeader + text.size() + blob.size() + 8);
    out.insert(out.end(), kMagic, kMagic + 8);
    put<uint32_t>(out, kVersion);
    put<uint32_t>(out, 0);
    put<uint64_t>(out, text.size());
    put<uint64_t>(out, blob.size());
    out.insert(out.end(), text.begin(), text.end());
    out.insert(out.end(), blob.begin(), blob.end());
    put<uint64_t>(out, engine::versioned_checksum(kVersion, out.data(), out.size(), kFnvBasis));
    return out;
  }

  static CompiledProgram load(const uint8_t* data, size_t size) {
    if (size < kHeader + 8 || std::memcmp(data, kMagic, 8) != 0) throw bad("bad magic (not written by kiln compile)");
    const uint32_t version = get<uint32_t>(data + 8);
    if (version != kVersion && version != 1)
      throw FormatError(".kiln version " + std::to_string(version) + " is not supported (this kiln reads versions 1 " +
                        "to " + std::to_string(kVersion) + "); recompile the model with this kiln (kiln compile " +
                        "MODEL.pt2 -o OUT.kiln)");
    const uint64_t json_size = get<uint64_t>(data + 16), blob_size = get<uint64_t>(data + 24);
    const uint64_t body = size - kHeader - 8;
    if (json_size > body || blob_size != body - json_size) throw bad("truncated or sizes inconsistent");
    if (get<uint64_t>(data + size - 8) != engine::versioned_checksum(version, data, size - 8, kFnvBasis))
      throw bad("checksum mismatch (file corrupted)");

    // One shared copy of the blob, 64-byte aligned as the offsets in it are: weights and the plans'
    // constants view it.
    auto* raw = static_cast<uint8_t*>(::operator new[](std::max<uint64_t>(blob_size, 1), std::align_val_t{64}));
    auto blob = std::shared_ptr<uint8_t[]>(raw, [](uint8_t* q) { ::operator delete[](q, std::align_val_t{64}); });
    if (blob_size) std::memcpy(blob.get(), data + kHeader + json_size, blob_size);
    CompiledProgram p;
    try {
      const json j = engine::plan_json::parse_bounded(data + kHeader, json_size, kMaxJsonDepth);
      p.precision_ = precision_from(j.at("precision").get<std::string>());
      p.device_ = j.at("device").get<std::string>() == engine::to_string(engine::DeviceKind::kCUDA)
                      ? engine::DeviceKind::kCUDA : engine::DeviceKind::kCPU;
      for (const auto& in : j.at("inputs")) {
        InputSpec spec{in.at("name").get<std::string>(), tensor_meta_from_json(in.at("meta"))};
        for (const InputSpec& other : p.inputs_)
          if (other.name == spec.name) throw bad("input '" + spec.name + "' is declared twice");
        for (const ir::SymInt& d : spec.meta.sizes)
          if (d.is_constant() && d.value < 0) throw bad("input '" + spec.name + "' has a negative dim");
        p.inputs_.push_back(std::move(spec));
      }
      for (const auto& [sym, r] : j.at("ranges").items()) {
        const engine::SymbolRange range{r.at(0).get<int64_t>(), r.at(1).get<int64_t>(), r.at(2).get<int64_t>()};
        if (range.min < 0 || range.min > range.opt || range.opt > range.max)
          throw bad("bad range [" + std::to_string(range.min) + ", " + std::to_string(range.max) + "] of " + sym);
        p.ranges_[sym] = range;
      }
      for (const auto& jn : j.at("graph")) {
        std::vector<ir::Argument> args;
        std::vector<std::pair<std::string, ir::Argument>> kwargs;
        for (const auto& a : jn.at("args")) args.push_back(arg_from_json(a, p.graph_, 0));
        for (const auto& kv : jn.at("kwargs"))
          kwargs.emplace_back(kv.at(0).get<std::string>(), arg_from_json(kv.at(1), p.graph_, 0));
        const std::string name = jn.at("name").get<std::string>();
        if (p.graph_.find(name)) throw bad("duplicate value %" + name);
        ir::Node* n = p.graph_.create(kind_from(jn.at("kind").get<std::string>()), name,
                                      jn.at("target").get<std::string>(), std::move(args), std::move(kwargs));
        n->meta = value_meta_from_json(jn.at("meta"));
        n->metadata = jn.at("metadata").get<std::map<std::string, std::string>>();
      }
      for (const auto& js : j.at("segments")) {
        AccSegment s;
        s.name = js.at("name").get<std::string>();
        const uint64_t off = js.at("plan").at(0).get<uint64_t>(), len = js.at("plan").at(1).get<uint64_t>();
        if (off > blob_size || len > blob_size - off) throw bad("plan of " + s.name + " lies outside the file");
        try {
          // The file's checksum covered these bytes; the plan's weights alias the shared blob.
          s.plan = engine::Plan::deserialize_verified(std::shared_ptr<const uint8_t>(blob, blob.get()), blob.get() + off, len);
        } catch (const engine::PlanError& e) {
          throw bad("plan of " + s.name + ": " + e.what());
        }
        s.input_values = js.at("inputs").get<std::vector<std::string>>();
        s.output_values = js.at("outputs").get<std::vector<std::string>>();
        s.ops = js.at("ops").get<std::vector<std::string>>();
        s.compute_ops = js.at("compute_ops").get<size_t>();
        check_segment(s, p.device_);
        if (const std::string why = s.plan.gpu_mismatch(); !why.empty()) throw FormatError("segment " + s.name + ": " + why);
        p.segments_.push_back(std::move(s));
      }
      std::vector<bool> scheduled(p.segments_.size(), false);
      std::set<const ir::Node*> scheduled_nodes;
      for (const auto& js : j.at("steps")) {
        Step s;
        if (js.contains("segment")) {
          s.kind = Step::Kind::kAccelerated;
          s.segment = js.at("segment").get<int>();
          if (s.segment < 0 || s.segment >= static_cast<int>(p.segments_.size())) throw bad("step names no segment");
          // A run reads segment outputs in place until the segment runs again: once per run.
          if (scheduled[size_t(s.segment)]) throw bad("segment " + std::to_string(s.segment) + " is scheduled twice");
          scheduled[size_t(s.segment)] = true;
        } else {
          s.node = p.graph_.find(js.at("node").get<std::string>());
          if (!s.node || s.node->kind != ir::NodeKind::CallFunction) throw bad("step names no fallback node");
          if (!scheduled_nodes.insert(s.node).second) throw bad("%" + s.node->name + " is scheduled twice");
        }
        p.steps_.push_back(s);
      }
      for (const auto& jw : j.at("weights")) {
        const std::string name = jw.at("name").get<std::string>();
        const auto dtype = enum_from<ir::ScalarType>(jw.at("dtype"), kScalarTypes, "dtype");
        const auto dims = jw.at("dims").get<std::vector<int64_t>>();
        const uint64_t off = jw.at("offset").get<uint64_t>(), len = jw.at("size").get<uint64_t>();
        if (dims.size() > kMaxRank) throw bad("weight " + name + " has rank " + std::to_string(dims.size()));
        if (p.weights_.count(name)) throw bad("weight " + name + " is stored twice");
        // Every size and bound is checked before a pointer into the blob is formed: dims whose byte
        // size wraps (2^62 float32s are 0 bytes modulo 2^64) would otherwise pass as an empty weight
        // and let the ops that read it run past the blob.
        HostTensor shape;
        shape.dtype = dtype;
        shape.dims = dims;
        uint64_t nbytes = 0;
        try {
          nbytes = shape.nbytes();
        } catch (const std::length_error& e) {
          throw bad("weight " + name + " has dims whose size overflows (" + e.what() + ")");
        }
        if (nbytes != len)
          throw bad("weight " + name + " has the wrong size (" + std::to_string(len) + " bytes stored, its dims need " +
                    std::to_string(nbytes) + ")");
        if (off > blob_size || len > blob_size - off)
          throw bad("weight " + name + " lies outside the file (offset " + std::to_string(off) + ", " +
                    std::to_string(len) + " bytes)");
        if (off % 64 != 0) throw bad("weight " + name + " is not 64-byte aligned (offset " + std::to_string(off) + ")");
        p.weights_[name] = HostTensor::view(dtype, dims, blob.get() + off, std::shared_ptr<const void>(blob, blob.get()));
      }
      for (const ir::Node* n : p.graph_.nodes())
        if (n->kind == ir::NodeKind::GetAttr && !p.weights_.count(n->target))
          throw bad("weight '" + n->target + "' is missing");
      check_schedule(p);
    } catch (const FormatError&) {
      throw;
    } catch (const std::exception& e) {  // json type errors, bad sizes in dims, ...
      throw bad(e.what());
    }
    return p;
  }

  // A segment's values are its plan's inputs and outputs, each named once, on the program's device.
  static void check_segment(const AccSegment& s, engine::DeviceKind device) {
    if (s.plan.device() != device)
      throw bad(s.name + ": its plan is for " + std::string(engine::to_string(s.plan.device())) + ", the program for " +
                engine::to_string(device));
    auto same_set = [&](const std::vector<std::string>& declared, std::vector<std::string> plan, const char* what) {
      std::vector<std::string> d = declared;
      std::sort(d.begin(), d.end());
      std::sort(plan.begin(), plan.end());
      if (std::adjacent_find(d.begin(), d.end()) != d.end())
        throw bad(s.name + ": " + what + " name a value twice");
      if (d != plan) {
        auto list = [](const std::vector<std::string>& v) {
          std::string r;
          for (const std::string& x : v) r += (r.empty() ? "" : ", ") + x;
          return "[" + r + "]";
        };
        throw bad(s.name + ": " + what + " " + list(declared) + " do not match its plan's " + list(plan));
      }
    };
    same_set(s.input_values, s.plan.input_names(), "inputs");
    same_set(s.output_values, s.plan.output_names(), "outputs");
  }

  // Every value a step, segment or the output reads is computed before it (by an earlier step), an
  // input or a weight, or a symbolic int the host evaluates from such values; the graph ends with
  // its one output node. What run() would otherwise find out midway, as an internal error.
  static void check_schedule(const CompiledProgram& p) {
    constexpr int kNever = INT_MAX, kAlways = -1;
    const std::vector<ir::Node*>& nodes = p.graph_.nodes();
    if (nodes.empty() || nodes.back()->kind != ir::NodeKind::Output)
      throw bad("the program graph has no output node (or it is not the last node)");
    for (size_t i = 0; i + 1 < nodes.size(); ++i)
      if (nodes[i]->kind == ir::NodeKind::Output) throw bad("the program graph has two output nodes");
    const ir::Node* out = nodes.back();
    if (out->args.size() != 1) throw bad("the output node has " + std::to_string(out->args.size()) + " arguments");
    const ir::Argument& result = out->args[0];
    for (const ir::Argument& a : result.is_list() ? result.list() : std::vector<ir::Argument>{result})
      if (!a.is_node()) throw bad("program output " + a.str() + " is not a value");

    std::set<std::string> input_names;
    for (const InputSpec& in : p.inputs_) input_names.insert(in.name);
    // By value name: the step after which it exists (kAlways: before the first step).
    std::map<std::string, int> ready;
    for (const ir::Node* n : nodes)
      if (n->kind == ir::NodeKind::Placeholder && !n->metadata.count("kiln.segment")) {
        if (!input_names.count(n->name)) throw bad("placeholder %" + n->name + " is no program input");
        ready[n->name] = kAlways;
      } else if (n->kind == ir::NodeKind::GetAttr) {
        ready[n->name] = kAlways;
      }
    for (const std::string& name : input_names)
      if (!ready.count(name)) throw bad("input '" + name + "' has no placeholder");
    for (size_t i = 0; i < p.steps_.size(); ++i) {
      const Step& s = p.steps_[i];
      if (s.kind == Step::Kind::kFallback) {
        ready[s.node->name] = int(i);
        continue;
      }
      for (const std::string& v : p.segments_[size_t(s.segment)].output_values) {
        if (ready.count(v)) throw bad("value %" + v + " is produced twice");
        ready[v] = int(i);
        const auto dot = v.rfind('.');  // "<tuple>.<i>": the tuple exists once an element does
        if (dot != std::string::npos) {
          auto [it, fresh] = ready.emplace(v.substr(0, dot), int(i));
          if (!fresh) it->second = std::min(it->second, int(i));
        }
      }
    }
    auto ready_of = [&](const std::string& name) {
      auto it = ready.find(name);
      return it == ready.end() ? kNever : it->second;
    };
    // Symbolic ints are evaluated on demand from their arguments (nodes before them in the graph,
    // so one pass in graph order settles them); the depth of such chains is bounded, as run()
    // evaluates them recursively.
    std::map<const ir::Node*, int> chain;
    for (const ir::Node* n : nodes) {
      if (n->kind != ir::NodeKind::CallFunction || !partition::is_symbolic(*n)) continue;
      int at = kAlways, depth = 0;
      for (const ir::Node* a : n->inputs()) {
        at = std::max(at, ready_of(a->name));
        if (auto c = chain.find(a); c != chain.end()) depth = std::max(depth, c->second + 1);
      }
      if (depth > 1000) throw bad("symbolic value %" + n->name + " is nested too deeply");
      chain[n] = depth;
      ready[n->name] = std::min(ready_of(n->name), at);
    }
    auto require = [&](const std::string& name, int step, const std::string& reader) {
      const int at = ready_of(name);
      if (at == kNever) throw bad(reader + " reads %" + name + ", which nothing computes");
      if (at >= step) throw bad(reader + " reads %" + name + " before it is computed (steps out of order)");
    };
    for (size_t i = 0; i < p.steps_.size(); ++i) {
      const Step& s = p.steps_[i];
      if (s.kind == Step::Kind::kFallback) {
        for (const ir::Node* a : s.node->inputs()) require(a->name, int(i), "step " + std::to_string(i) + " (%" + s.node->name + ")");
        continue;
      }
      const AccSegment& seg = p.segments_[size_t(s.segment)];
      for (const std::string& v : seg.input_values) {
        const auto dot = v.rfind('.');
        const bool element = !ready.count(v) && dot != std::string::npos && ready.count(v.substr(0, dot));
        require(element ? v.substr(0, dot) : v, int(i), "step " + std::to_string(i) + " (" + seg.name + ")");
      }
    }
    for (const ir::Node* a : out->inputs()) require(a->name, int(p.steps_.size()), "the output");
  }
};

std::vector<uint8_t> CompiledProgram::serialize() const { return ProgramSerializer::save(*this); }

void CompiledProgram::save(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  write_file_atomic(path, bytes.data(), bytes.size());  // the old file survives a failed write
}

CompiledProgram CompiledProgram::deserialize(const uint8_t* data, size_t size) { return ProgramSerializer::load(data, size); }

CompiledProgram CompiledProgram::load(const std::string& path) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  try {
    return deserialize(bytes.data(), bytes.size());
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  }
}

}  // namespace kiln::program
