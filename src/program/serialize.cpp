// The .kiln file: everything a compiled program needs, without the .pt2.
//
//   "KILNPROG" | u32 version | u32 flags | u64 json bytes | u64 blob bytes | JSON | blob | u64 FNV-1a
//
// The checksum covers every byte before it. The JSON describes inputs, symbol ranges, the program
// graph (fallback nodes with their arguments and metas), segments and steps; the blob holds each
// plan's own serialized bytes and the weights fallback nodes read. Loading checks everything it
// reads (sizes, names, enum values) and refuses with FormatError, never trusting the file.
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "program/program.h"

namespace kiln::program {

using nlohmann::json;

namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'P', 'R', 'O', 'G'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeader = 32;
constexpr int kMaxDepth = 64;

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

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
    put<uint64_t>(out, fnv1a(out.data(), out.size()));
    return out;
  }

  static CompiledProgram load(const uint8_t* data, size_t size) {
    if (size < kHeader + 8 || std::memcmp(data, kMagic, 8) != 0) throw bad("bad magic (not written by kiln compile)");
    const uint32_t version = get<uint32_t>(data + 8);
    if (version != kVersion)
      throw FormatError(".kiln version " + std::to_string(version) + " is not supported (this kiln reads version " +
                        std::to_string(kVersion) + "); recompile the model");
    const uint64_t json_size = get<uint64_t>(data + 16), blob_size = get<uint64_t>(data + 24);
    const uint64_t body = size - kHeader - 8;
    if (json_size > body || blob_size != body - json_size) throw bad("truncated or sizes inconsistent");
    if (get<uint64_t>(data + size - 8) != fnv1a(data, size - 8)) throw bad("checksum mismatch (file corrupted)");

    // One shared copy of the blob: weights view it; plans copy what they need.
    auto blob = std::shared_ptr<uint8_t[]>(new uint8_t[std::max<uint64_t>(blob_size, 1)]);
    std::memcpy(blob.get(), data + kHeader + json_size, blob_size);
    CompiledProgram p;
    try {
      const json j = json::parse(data + kHeader, data + kHeader + json_size);
      p.precision_ = precision_from(j.at("precision").get<std::string>());
      p.device_ = j.at("device").get<std::string>() == engine::to_string(engine::DeviceKind::kCUDA)
                      ? engine::DeviceKind::kCUDA : engine::DeviceKind::kCPU;
      for (const auto& in : j.at("inputs"))
        p.inputs_.push_back(InputSpec{in.at("name").get<std::string>(), tensor_meta_from_json(in.at("meta"))});
      for (const auto& [sym, r] : j.at("ranges").items())
        p.ranges_[sym] = engine::SymbolRange{r.at(0).get<int64_t>(), r.at(1).get<int64_t>(), r.at(2).get<int64_t>()};
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
          s.plan = engine::Plan::deserialize(blob.get() + off, len);
        } catch (const engine::PlanError& e) {
          throw bad("plan of " + s.name + ": " + e.what());
        }
        s.input_values = js.at("inputs").get<std::vector<std::string>>();
        s.output_values = js.at("outputs").get<std::vector<std::string>>();
        s.ops = js.at("ops").get<std::vector<std::string>>();
        s.compute_ops = js.at("compute_ops").get<size_t>();
        p.segments_.push_back(std::move(s));
      }
      std::vector<bool> scheduled(p.segments_.size(), false);
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
        }
        p.steps_.push_back(s);
      }
      for (const auto& jw : j.at("weights")) {
        const auto dtype = enum_from<ir::ScalarType>(jw.at("dtype"), kScalarTypes, "dtype");
        const auto dims = jw.at("dims").get<std::vector<int64_t>>();
        const uint64_t off = jw.at("offset").get<uint64_t>(), len = jw.at("size").get<uint64_t>();
        HostTensor t = HostTensor::view(dtype, dims, blob.get() + off, std::shared_ptr<const void>(blob, blob.get()));
        if (off > blob_size || len > blob_size - off || t.nbytes() != len)
          throw bad("weight " + jw.at("name").get<std::string>() + " lies outside the file or has the wrong size");
        p.weights_[jw.at("name").get<std::string>()] = t;
      }
      for (const ir::Node* n : p.graph_.nodes())
        if (n->kind == ir::NodeKind::GetAttr && !p.weights_.count(n->target))
          throw bad("weight '" + n->target + "' is missing");
    } catch (const FormatError&) {
      throw;
    } catch (const std::exception& e) {  // json type errors, bad sizes in dims, ...
      throw bad(e.what());
    }
    return p;
  }
};

std::vector<uint8_t> CompiledProgram::serialize() const { return ProgramSerializer::save(*this); }

void CompiledProgram::save(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  std::ofstream out(path, std::ios::binary);
  if (!out) throw InputError(path + ": cannot create file");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error(path + ": write failed");
}

CompiledProgram CompiledProgram::deserialize(const uint8_t* data, size_t size) { return ProgramSerializer::load(data, size); }

CompiledProgram CompiledProgram::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  std::vector<uint8_t> bytes(size);
  if (size && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    throw InputError(path + ": read failed");
  try {
    return deserialize(bytes.data(), bytes.size());
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  }
}

}  // namespace kiln::program
