// The .pt2 reader. One Loader per archive walks models/model.json in the order the format
// defines it: value metas, then the signature (inputs and weights), the nodes, the outputs and
// the symbol ranges. Anything unexpected is a Pt2Error naming the file, the place and the value.
#include "frontend/pt2.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include "frontend/sympy.h"
#include "frontend/zip.h"
#include "ir/schema.h"

namespace kiln::frontend {
namespace {

using json = nlohmann::json;
using ir::Argument;
using ir::Node;
using ir::NodeKind;
using ir::SymInt;
using ir::TensorMeta;
using ir::ValueMeta;

constexpr int kSchemaMajor = 8;
constexpr int kSchemaMinor = 17;   // newest minor known; newer ones load, failing only on unknown tags
constexpr int kMaxJsonDepth = 128; // model.json nests ~10 deep; bounds the walk on hostile input
constexpr size_t kMaxRank = 64;

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// The .pt2 ScalarType enum (not c10's numbering).
std::optional<ir::ScalarType> pt2_dtype(int64_t v) {
  using S = ir::ScalarType;
  switch (v) {
    case 1: return S::Byte;
    case 2: return S::Char;
    case 3: return S::Short;
    case 4: return S::Int;
    case 5: return S::Long;
    case 6: return S::Half;
    case 7: return S::Float;
    case 8: return S::Double;
    case 9: return S::ComplexHalf;
    case 10: return S::ComplexFloat;
    case 11: return S::ComplexDouble;
    case 12: return S::Bool;
    case 13: return S::BFloat16;
    case 28: return S::UInt16;
    case 29: return S::Float8_e4m3fn;
    case 30: return S::Float8_e5m2;
    case 31: return S::Float8_e4m3fnuz;
    case 32: return S::Float8_e5m2fnuz;
    default: return std::nullopt;
  }
}

class Loader {
 public:
  Loader(std::shared_ptr<const FileBytes> bytes, const std::string& label) : label_(label) {
    try {
      zip_ = std::make_unique<ZipReader>(std::move(bytes), label);
    } catch (const ZipError& e) {
      throw Pt2Error(one_line(e.what()));
    }
  }

  ir::ExportedProgram load() {
    find_prefix();
    const json model = parse_json_entry("models/model.json");
    const std::string top = "models/model.json";
    if (!model.is_object()) fail(top, "expected a JSON object");

    read_version(model);
    read_verifier(model);
    if (auto it = model.find("torch_version"); it != model.end() && it->is_string())
      prog_.torch_version = it->get<std::string>();

    const json& gm = object_field(model, "graph_module", top);
    const json& graph = object_field(gm, "graph", top + " graph_module");
    read_value_metas(graph);
    read_inputs(graph, object_field(gm, "signature", top + " graph_module"));
    const json& nodes = array_field(graph, "nodes", "graph");
    for (size_t i = 0; i < nodes.size(); ++i) read_node(nodes[i], i);
    read_outputs(graph, object_field(gm, "signature", "graph_module"));
    read_ranges(model);
    drop_unused_getitems();

    try {
      prog_.graph.verify();
    } catch (const ir::VerifyError& e) {
      throw Pt2Error(label_ + ": models/model.json: " + one_line(e.what()));
    }
    return std::move(prog_);
  }

 private:
  // ---- errors and JSON access ------------------------------------------------------------

  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Pt2Error(one_line(label_ + ": " + where + ": " + what));
  }

  static std::string kind_of(const json& j) {
    if (j.is_null()) return "null";
    if (j.is_object()) return "an object";
    if (j.is_array()) return "a list";
    if (j.is_string()) return "a string";
    if (j.is_boolean()) return "a bool";
    return "a number";
  }

  const json& field(const json& obj, const char* key, const std::string& where) const {
    if (!obj.is_object()) fail(where, std::string("expected an object holding '") + key + "', got " + kind_of(obj));
    auto it = obj.find(key);
    if (it == obj.end()) fail(where, std::string("missing field '") + key + "'");
    return *it;
  }
  const json& object_field(const json& obj, const char* key, const std::string& where) const {
    const json& v = field(obj, key, where);
    if (!v.is_object()) fail(where, std::string("field '") + key + "' should be an object, got " + kind_of(v));
    return v;
  }
  const json& array_field(const json& obj, const char* key, const std::string& where) const {
    const json& v = field(obj, key, where);
    if (!v.is_array()) fail(where, std::string("field '") + key + "' should be a list, got " + kind_of(v));
    return v;
  }
  int64_t as_int(const json& j, const std::string& where) const {
    if (j.is_number_integer() && !j.is_number_unsigned()) return j.get<int64_t>();
    if (j.is_number_unsigned()) {
      uint64_t u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return static_cast<int64_t>(u);
      fail(where, "integer " + std::to_string(u) + " does not fit in 64 bits");
    }
    fail(where, "expected an integer, got " + kind_of(j));
  }
  std::string as_string(const json& j, const std::string& where) const {
    if (!j.is_string()) fail(where, "expected a string, got " + kind_of(j));
    return j.get<std::string>();
  }
  bool as_bool(const json& j, const std::string& where) const {
    if (!j.is_boolean()) fail(where, "expected a bool, got " + kind_of(j));
    return j.get<bool>();
  }
  double as_float(const json& j, const std::string& where) const {
    if (j.is_number()) return j.get<double>();
    if (j.is_string()) {  // special floats are strings in this format
      const std::string s = j.get<std::string>();
      if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
      if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
    }
    fail(where, "expected a float, got " + (j.is_string() ? "'" + j.get<std::string>() + "'" : kind_of(j)));
  }
  // A union: an object with exactly one key, the tag.
  std::pair<std::string, const json*> tagged(const json& j, const std::string& where) const {
    if (!j.is_object() || j.size() != 1) fail(where, "expected a tagged union (an object with one key), got " +
                                                         (j.is_object() ? std::to_string(j.size()) + " keys" : kind_of(j)));
    return {j.begin().key(), &j.begin().value()};
  }

  // ---- archive ------------------------------------------------------------------------------

  // Every entry lies under one folder named after the file; older archives have none.
  void find_prefix() {
    const auto& entries = zip_->entries();
    if (entries.empty()) fail("zip", "the archive is empty");
    const std::string& first = entries.front().name;
    size_t slash = first.find('/');
    if (slash != std::string::npos) {
      std::string candidate = first.substr(0, slash + 1);
      bool all = true;
      for (const auto& e : entries) all = all && e.name.rfind(candidate, 0) == 0;
      if (all && !zip_->find(candidate + "models/model.json") && zip_->find("models/model.json")) all = false;
      if (all) prefix_ = candidate;
    }
    if (!entry("models/model.json")) {
      if (entry("serialized_exported_program.json") || entry("serialized_state_dict.pt"))
        fail("zip", "this is a torch.export archive from PyTorch before 2.8 (serialized_exported_program.json); "
                    "kiln reads the format of PyTorch 2.8 and later: re-export with torch.export.save");
      fail("zip", "no models/model.json entry: not a torch.export program (.pt2)");
    }
    if (const ZipEntry* f = entry("archive_format")) {
      std::string_view v = zip_->read(*f);
      if (v != "pt2") fail("archive_format", "expected 'pt2', found '" + std::string(v.substr(0, 40)) + "'");
    }
  }

  const ZipEntry* entry(const std::string& path) const { return zip_->find(prefix_ + path); }

  json parse_json_entry(const std::string& path) const {
    const ZipEntry* e = entry(path);
    if (!e) fail(path, "missing from the archive");
    std::string_view text;
    try {
      text = zip_->read(*e, /*check_crc=*/true);
    } catch (const ZipError& err) {
      throw Pt2Error(one_line(err.what()));
    }
    // nlohmann's parser is iterative; the callback bounds nesting so later walks stay shallow.
    auto limit = [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth) throw Pt2Error(label_ + ": " + path + ": JSON nested deeper than " +
                                                std::to_string(kMaxJsonDepth) + " levels");
      return true;
    };
    try {
      return json::parse(text.begin(), text.end(), limit);
    } catch (const json::exception& err) {
      fail(path, std::string("invalid JSON: ") + err.what());
    }
  }

  // ---- header -------------------------------------------------------------------------------

  void read_version(const json& model) {
    const std::string where = "models/model.json schema_version";
    const json& v = object_field(model, "schema_version", "models/model.json");
    const int64_t major = as_int(field(v, "major", where), where + ".major");
    const int64_t minor = as_int(field(v, "minor", where), where + ".minor");
    if (major != kSchemaMajor)
      fail(where, "schema version " + std::to_string(major) + "." + std::to_string(minor) +
                      " is not supported (kiln reads " + std::to_string(kSchemaMajor) + ".x, PyTorch 2.8-2.11)");
    if (minor < 0) fail(where, "negative minor version");
    prog_.schema_version = {static_cast<int>(major), static_cast<int>(minor)};
    newer_minor_ = minor > kSchemaMinor;
  }

  void read_verifier(const json& model) {
    prog_.verifier = "TRAINING";
    auto it = model.find("verifiers");
    if (it == model.end() || it->is_null()) return;
    if (!it->is_array()) fail("models/model.json verifiers", "expected a list");
    for (const auto& v : *it) {
      std::string name = as_string(v, "models/model.json verifiers");
      if (name != "TRAINING" && name != "ATEN")
        fail("models/model.json verifiers", "unknown verifier '" + name + "' (kiln reads TRAINING and ATEN programs)");
      prog_.verifier = name;
    }
  }

  // ---- metas --------------------------------------------------------------------------------

  ir::SymExprPtr parse_expr(const std::string& text, const std::string& where) {
    auto it = expr_cache_.find(text);
    if (it != expr_cache_.end()) return it->second;
    try {
      auto e = parse_sympy_srepr(text);
      expr_cache_[text] = e;
      return e;
    } catch (const SympyError& err) {
      fail(where, err.what());
    }
  }

  // SymInt = {as_expr: {expr_str, hint}} | {as_int}
  SymInt parse_symint(const json& j, const std::string& where) {
    auto [tag, v] = tagged(j, where);
    if (tag == "as_int") return SymInt(as_int(*v, where));
    if (tag == "as_expr") {
      const std::string text = as_string(field(*v, "expr_str", where), where + ".expr_str");
      return SymInt(parse_expr(text, where));
    }
    fail(where, "unknown SymInt tag '" + tag + "'");
  }

  TensorMeta parse_tensor_meta(const json& j, const std::string& where) {
    TensorMeta m;
    const int64_t dt = as_int(field(j, "dtype", where), where + ".dtype");
    auto dtype = pt2_dtype(dt);
    if (!dtype) fail(where + ".dtype", "unknown ScalarType " + std::to_string(dt));
    m.dtype = *dtype;
    const json& sizes = field(j, "sizes", where);
    if (!sizes.is_array()) fail(where + ".sizes", "expected a list");
    if (sizes.size() > kMaxRank) fail(where + ".sizes", "rank " + std::to_string(sizes.size()) + " is absurd");
    for (size_t i = 0; i < sizes.size(); ++i) {
      SymInt s = parse_symint(sizes[i], where + ".sizes[" + std::to_string(i) + "]");
      if (s.is_constant() && s.value < 0) fail(where + ".sizes", "negative size " + std::to_string(s.value));
      m.sizes.push_back(std::move(s));
    }
    if (auto it = j.find("strides"); it != j.end() && !it->is_null()) {
      if (!it->is_array() || it->size() > kMaxRank) fail(where + ".strides", "expected a list of at most 64");
      for (size_t i = 0; i < it->size(); ++i)
        m.strides.push_back(parse_symint((*it)[i], where + ".strides[" + std::to_string(i) + "]"));
    }
    if (auto it = j.find("storage_offset"); it != j.end() && !it->is_null())
      m.storage_offset = parse_symint(*it, where + ".storage_offset");
    if (auto it = j.find("requires_grad"); it != j.end() && it->is_boolean()) m.requires_grad = it->get<bool>();
    if (auto it = j.find("device"); it != j.end() && !it->is_null()) m.device = parse_device(*it, where + ".device");
    if (auto it = j.find("layout"); it != j.end() && !it->is_null()) {
      const int64_t layout = as_int(*it, where + ".layout");
      if (layout != 7) fail(where + ".layout", "layout " + std::to_string(layout) + " is not supported (only strided tensors)");
    }
    return m;
  }

  ir::Device parse_device(const json& j, const std::string& where) {
    ir::Device d;
    d.type = as_string(field(j, "type", where), where + ".type");
    if (auto it = j.find("index"); it != j.end() && !it->is_null()) {
      int64_t idx = as_int(*it, where + ".index");
      if (idx < -1 || idx > 1 << 16) fail(where + ".index", "bad device index " + std::to_string(idx));
      d.index = static_cast<int>(idx);
    }
    return d;
  }

  void read_value_metas(const json& graph) {
    const json& tv = object_field(graph, "tensor_values", "graph");
    for (auto it = tv.begin(); it != tv.end(); ++it)
      tensor_values_[it.key()] = parse_tensor_meta(it.value(), "tensor_values['" + it.key() + "']");
    if (auto it = graph.find("sym_int_values"); it != graph.end() && it->is_object()) {
      for (auto s = it->begin(); s != it->end(); ++s)
        sym_ints_[s.key()] = parse_symint(s.value(), "sym_int_values['" + s.key() + "']");
    }
    for (const char* key : {"sym_float_values", "sym_bool_values"}) {
      if (auto it = graph.find(key); it != graph.end() && it->is_object())
        for (auto s = it->begin(); s != it->end(); ++s) other_syms_[s.key()] = key;
    }
    if (auto it = graph.find("custom_obj_values"); it != graph.end() && it->is_object() && !it->empty())
      fail("graph custom_obj_values", "TorchBind objects are pickled; kiln never unpickles");
  }

  const TensorMeta& tensor_meta_of(const std::string& name, const std::string& where) const {
    auto it = tensor_values_.find(name);
    if (it == tensor_values_.end()) fail(where, "tensor '" + name + "' has no entry in tensor_values");
    return it->second;
  }

  // ---- values -------------------------------------------------------------------------------

  void define(const std::string& name, Node* n, const std::string& where) {
    if (name.empty()) fail(where, "a value has an empty name");
    if (!values_.emplace(name, n).second) fail(where, "value '" + name + "' is defined twice");
  }

  Node* use(const std::string& name, const std::string& where) const {
    auto it = values_.find(name);
    if (it == values_.end())
      fail(where, "refers to '" + name + "', which is undefined or not yet defined (nodes must be in topological order)");
    return it->second;
  }

  std::string tensor_name(const json& j, const std::string& where) const {
    return as_string(field(j, "name", where), where + ".name");
  }

  // ---- signature: placeholders and weights ----------------------------------------------------

  json load_config(const std::string& path) {
    if (!entry(path)) return json::object();
    json cfg = parse_json_entry(path);
    if (!cfg.is_object()) fail(path, "expected a JSON object");
    auto it = cfg.find("config");
    if (it == cfg.end() || it->is_null()) return json::object();
    if (!it->is_object()) fail(path, "field 'config' should be an object");
    return *it;
  }

  void read_inputs(const json& graph, const json& signature) {
    weights_config_ = load_config("data/weights/model_weights_config.json");
    constants_config_ = load_config("data/constants/model_constants_config.json");
    const json& specs = array_field(signature, "input_specs", "graph_module.signature");
    const json& inputs = array_field(graph, "inputs", "graph");
    if (specs.size() != inputs.size())
      fail("graph_module.signature", std::to_string(specs.size()) + " input specs for " +
                                         std::to_string(inputs.size()) + " graph inputs");
    for (size_t i = 0; i < specs.size(); ++i) {
      const std::string where = "signature input_specs[" + std::to_string(i) + "]";
      auto [tag, spec] = tagged(specs[i], where);
      if (tag == "user_input") {
        add_user_input(field(*spec, "arg", where), where);
      } else if (tag == "parameter") {
        add_weight(*spec, ir::Weight::Kind::Parameter, as_string(field(*spec, "parameter_name", where), where),
                   true, where);
      } else if (tag == "buffer") {
        bool persistent = true;
        if (auto p = spec->find("persistent"); p != spec->end() && p->is_boolean()) persistent = p->get<bool>();
        add_weight(*spec, ir::Weight::Kind::Buffer, as_string(field(*spec, "buffer_name", where), where),
                   persistent, where);
      } else if (tag == "tensor_constant") {
        add_weight(*spec, ir::Weight::Kind::Constant,
                   as_string(field(*spec, "tensor_constant_name", where), where), false, where);
      } else if (tag == "custom_obj") {
        fail(where, "TorchBind object inputs are pickled; kiln never unpickles");
      } else if (tag == "token") {
        fail(where, "effect tokens (side-effecting ops) are not supported");
      } else if (tag == "constant_input") {
        fail(where, "constant inputs (specialized non-tensor inputs) are not supported");
      } else {
        fail(where, "unknown input spec '" + tag + "'");
      }
    }
  }

  void add_user_input(const json& arg, const std::string& where) {
    auto [tag, v] = tagged(arg, where + ".arg");
    if (tag == "as_tensor") {
      const std::string name = tensor_name(*v, where);
      Node* n = prog_.graph.create(NodeKind::Placeholder, name, name);
      n->meta = ValueMeta::of_tensor(tensor_meta_of(name, where));
      check_input_size(n->meta.tensor, where + " (input '" + name + "')");
      define(name, n, where);
    } else if (tag == "as_sym_int") {
      auto [stag, sv] = tagged(*v, where + ".arg.as_sym_int");
      if (stag != "as_name") fail(where, "a constant symbolic-int input is not supported");
      const std::string name = as_string(*sv, where);
      Node* n = prog_.graph.create(NodeKind::Placeholder, name, name);
      n->meta.kind = ValueMeta::Kind::SymInt;
      n->meta.sym = sym_int_of(name, where);
      define(name, n, where);
    } else {
      fail(where, "user input of kind '" + tag + "' is not supported (tensors and symbolic ints only)");
    }
  }

  SymInt sym_int_of(const std::string& name, const std::string& where) const {
    auto it = sym_ints_.find(name);
    if (it == sym_ints_.end()) fail(where, "symbolic int '" + name + "' has no entry in sym_int_values");
    return it->second;
  }

  std::shared_ptr<const ir::Storage> storage_of(const std::string& path, const std::string& where) {
    auto it = storages_.find(path);
    if (it != storages_.end()) return it->second;
    const ZipEntry* e = entry(path);
    if (!e) fail(where, "its data file '" + path + "' is missing from the archive");
    auto s = std::make_shared<ir::Storage>();
    s->data = zip_->bytes()->data() + e->data_offset;
    s->size = e->size;
    s->owner = zip_->bytes();  // the mapping lives as long as any weight viewing it
    storages_[path] = s;
    return s;
  }

  void add_weight(const json& spec, ir::Weight::Kind kind, const std::string& state_name, bool in_weights,
                  const std::string& where_spec) {
    const std::string arg = tensor_name(field(spec, "arg", where_spec), where_spec + ".arg");
    const std::string where = "weight '" + state_name + "'";
    const TensorMeta& graph_meta = tensor_meta_of(arg, where);

    // Persistent parameters/buffers live under data/weights, the rest under data/constants;
    // look in the other config too, since writers have moved entries between them.
    const json* cfg = nullptr;
    std::string dir;
    for (int pass = 0; pass < 2 && !cfg; ++pass) {
      const bool w = (pass == 0) == in_weights;
      const json& c = w ? weights_config_ : constants_config_;
      if (auto it = c.find(state_name); it != c.end()) {
        cfg = &*it;
        dir = w ? "data/weights/" : "data/constants/";
      }
    }
    if (!cfg) fail(where, "no entry in model_weights_config.json or model_constants_config.json");
    const std::string cwhere = where + " (" + dir + "config)";
    if (auto p = cfg->find("use_pickle"); p != cfg->end() && p->is_boolean() && p->get<bool>())
      fail(where, "is a pickled tensor (use_pickle, e.g. a tensor subclass); kiln never unpickles");
    const std::string file = dir + as_string(field(*cfg, "path_name", cwhere), cwhere + ".path_name");

    TensorMeta meta = graph_meta;
    if (auto tm = cfg->find("tensor_meta"); tm != cfg->end() && !tm->is_null())
      meta = parse_tensor_meta(*tm, cwhere + ".tensor_meta");
    if (meta.dtype != graph_meta.dtype || !(meta.sizes == graph_meta.sizes))
      fail(where, "the config says " + meta.str() + " but the graph says " + graph_meta.str());

    ir::Weight w;
    w.name = state_name;
    w.kind = kind;
    w.storage = storage_of(file, where);
    check_extent(meta, w.storage->size, where + " in " + file);
    w.storage_offset = meta.storage_offset.value;
    // The offset lives in Weight::storage_offset (Weight::data() applies it), so meta's is 0.
    w.meta = meta;
    w.meta.storage_offset = 0;
    w.meta.device = graph_meta.device;

    Node* n = prog_.graph.create(NodeKind::GetAttr, arg, state_name);
    n->meta = ValueMeta::of_tensor(graph_meta);
    define(arg, n, where_spec);
    prog_.weights.emplace(state_name, std::move(w));  // tied weights: one entry, several get_attr nodes
  }

  // An input no run could be given: its static dims alone (symbolic ones counted as 1) need more
  // than kiln allocates for one tensor (1 TiB, HostTensor::empty's limit), or overflow. Refused
  // here, as bad input, rather than when a converter or the memory planner meets the size.
  void check_input_size(const TensorMeta& meta, const std::string& where) const {
    constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 40;
    uint64_t bytes = std::max<size_t>(ir::element_size(meta.dtype), 1);
    for (const SymInt& d : meta.sizes) {
      if (!d.is_constant()) continue;
      if (d.value < 0) fail(where, "negative dim in " + meta.str());
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d.value), &bytes) || bytes > kMaxTensorBytes)
        fail(where, meta.str() + " is larger than 1 TiB (the most kiln allocates for one tensor)");
    }
  }

  // The elements a strided view touches must lie inside its file.
  void check_extent(TensorMeta& meta, size_t file_bytes, const std::string& where) const {
    if (!meta.is_static() || !meta.storage_offset.is_constant())
      fail(where, "has symbolic sizes; stored weights must be static");
    if (meta.strides.empty()) {  // contiguous
      int64_t s = 1;
      for (size_t d = meta.sizes.size(); d-- > 0;) {
        meta.strides.insert(meta.strides.begin(), SymInt(s));
        if (__builtin_mul_overflow(s, std::max<int64_t>(meta.sizes[d].value, 1), &s))
          fail(where, "size " + meta.str() + " overflows");
      }
    }
    if (meta.strides.size() != meta.sizes.size())
      fail(where, std::to_string(meta.strides.size()) + " strides for " + std::to_string(meta.sizes.size()) + " sizes");
    const int64_t offset = meta.storage_offset.value;
    if (offset < 0) fail(where, "negative storage offset " + std::to_string(offset));
    const size_t esize = ir::element_size(meta.dtype);
    if (esize == 0) fail(where, "dtype has no element size");
    int64_t last = offset;  // index of the last element touched
    for (size_t d = 0; d < meta.sizes.size(); ++d) {
      const int64_t size = meta.sizes[d].value;
      if (!meta.strides[d].is_constant() || meta.strides[d].value < 0)
        fail(where, "stride " + meta.strides[d].str() + " is not a non-negative constant");
      if (size == 0) return;  // empty: touches nothing
      int64_t span;
      if (__builtin_mul_overflow(size - 1, meta.strides[d].value, &span) || __builtin_add_overflow(last, span, &last))
        fail(where, meta.str() + " with its strides overflows 64 bits");
    }
    int64_t bytes;
    if (__builtin_add_overflow(last, 1, &bytes) || __builtin_mul_overflow(bytes, static_cast<int64_t>(esize), &bytes))
      fail(where, meta.str() + " overflows 64 bits in bytes");
    if (static_cast<uint64_t>(bytes) > file_bytes)
      fail(where, meta.str() + " at element offset " + std::to_string(offset) + " needs " + std::to_string(bytes) +
                      " bytes but the file holds " + std::to_string(file_bytes));
  }

  // ---- nodes --------------------------------------------------------------------------------

  Argument parse_argument(const json& j, const std::string& where) {
    const auto tagged_arg = tagged(j, where);
    const std::string& tag = tagged_arg.first;  // (not a structured binding: lambdas capture it)
    const json& v = *tagged_arg.second;
    auto list_of = [&](auto&& each) {
      if (!v.is_array()) fail(where, tag + " should be a list");
      Argument::List out;
      for (size_t i = 0; i < v.size(); ++i) out.push_back(each(v[i], where + "[" + std::to_string(i) + "]"));
      return Argument(std::move(out));
    };
    if (tag == "as_none") return ir::None{};
    if (tag == "as_tensor") return use(tensor_name(v, where), where);
    if (tag == "as_tensors")
      return list_of([&](const json& e, const std::string& w) { return Argument(use(tensor_name(e, w), w)); });
    if (tag == "as_int") return as_int(v, where);
    if (tag == "as_ints") return list_of([&](const json& e, const std::string& w) { return Argument(as_int(e, w)); });
    if (tag == "as_float") return as_float(v, where);
    if (tag == "as_floats")
      return list_of([&](const json& e, const std::string& w) { return Argument(as_float(e, w)); });
    if (tag == "as_string") return as_string(v, where);
    if (tag == "as_strings")
      return list_of([&](const json& e, const std::string& w) { return Argument(as_string(e, w)); });
    if (tag == "as_bool") return as_bool(v, where);
    if (tag == "as_bools") return list_of([&](const json& e, const std::string& w) { return Argument(as_bool(e, w)); });
    if (tag == "as_sym_int" || tag == "as_sym_float" || tag == "as_sym_bool") return sym_arg(v, where);
    if (tag == "as_sym_ints" || tag == "as_sym_floats" || tag == "as_sym_bools")
      return list_of([&](const json& e, const std::string& w) { return sym_arg(e, w); });
    if (tag == "as_scalar_type") {
      const int64_t t = as_int(v, where);
      auto dt = pt2_dtype(t);
      if (!dt) fail(where, "unknown ScalarType " + std::to_string(t));
      return *dt;
    }
    if (tag == "as_memory_format") {
      switch (as_int(v, where)) {
        case 1: return ir::MemoryFormat::Contiguous;
        case 2: return ir::MemoryFormat::ChannelsLast;
        case 3: return ir::MemoryFormat::ChannelsLast3d;
        case 4: return ir::MemoryFormat::Preserve;
        default: fail(where, "unknown MemoryFormat " + std::to_string(as_int(v, where)));
      }
    }
    if (tag == "as_layout") {
      switch (as_int(v, where)) {
        case 1: return ir::Layout::Sparse;
        case 2: return ir::Layout::SparseCsr;
        case 3: return ir::Layout::SparseCsc;
        case 4: return ir::Layout::SparseBsr;
        case 5: return ir::Layout::SparseBsc;
        case 6: return ir::Layout::Mkldnn;
        case 7: return ir::Layout::Strided;
        default: fail(where, "unknown Layout " + std::to_string(as_int(v, where)));
      }
    }
    if (tag == "as_device") return parse_device(v, where);
    if (tag == "as_optional_tensors")
      return list_of([&](const json& e, const std::string& w) { return optional_tensor(e, w); });
    if (tag == "as_optional_tensor") return optional_tensor(v, where);
    if (tag == "as_operator") return as_string(v, where);
    if (tag == "as_graph") fail(where, "subgraph arguments (higher-order ops) are not supported");
    if (tag == "as_custom_obj") fail(where, "TorchBind objects are pickled; kiln never unpickles");
    if (tag == "as_complex") fail(where, "complex scalars are not supported");
    if (tag == "as_nested_tensors" || tag == "as_int_lists" || tag == "as_string_to_argument")
      fail(where, "argument kind '" + tag + "' is not supported");
    fail(where, "unknown argument tag '" + tag + "'" +
                    (newer_minor_ ? " (the archive's schema minor version is newer than kiln knows)" : ""));
  }

  // {as_name} -> the node producing it; {as_int} / {as_float} / {as_bool} -> a constant.
  Argument sym_arg(const json& j, const std::string& where) {
    auto [tag, v] = tagged(j, where);
    if (tag == "as_name") return use(as_string(*v, where), where);
    if (tag == "as_int") return as_int(*v, where);
    if (tag == "as_float") return as_float(*v, where);
    if (tag == "as_bool") return as_bool(*v, where);
    fail(where, "unknown symbolic value tag '" + tag + "'");
  }

  Argument optional_tensor(const json& j, const std::string& where) {
    auto [tag, v] = tagged(j, where);
    if (tag == "as_none") return ir::None{};
    if (tag == "as_tensor") return use(tensor_name(*v, where), where);
    fail(where, "unknown optional-tensor tag '" + tag + "'");
  }

  // The meta of one output Argument; `name` receives the value's name ("" for none).
  std::optional<ValueMeta> output_meta(const json& out, std::string& name, const std::string& where) {
    auto [tag, v] = tagged(out, where);
    ValueMeta m;
    if (tag == "as_tensor") {
      name = tensor_name(*v, where);
      return ValueMeta::of_tensor(tensor_meta_of(name, where));
    }
    if (tag == "as_none") {
      name.clear();
      return std::nullopt;
    }
    if (tag == "as_sym_int") {
      auto [stag, sv] = tagged(*v, where);
      if (stag != "as_name") fail(where, "a symbolic-int output must be named");
      name = as_string(*sv, where);
      m.kind = ValueMeta::Kind::SymInt;
      m.sym = sym_int_of(name, where);
      return m;
    }
    if (tag == "as_sym_float" || tag == "as_sym_bool") {
      auto [stag, sv] = tagged(*v, where);
      if (stag != "as_name") fail(where, "a symbolic output must be named");
      name = as_string(*sv, where);
      m.kind = tag == "as_sym_float" ? ValueMeta::Kind::SymFloat : ValueMeta::Kind::SymBool;
      return m;
    }
    fail(where, "unsupported node output '" + tag + "'");
  }

  void read_node(const json& j, size_t index) {
    std::string where = "node #" + std::to_string(index);
    if (!j.is_object()) fail(where, "expected an object");
    std::string target = as_string(field(j, "target", where), where + ".target");
    if (target.rfind("torch.ops.", 0) == 0) target = target.substr(10);
    std::string json_name;
    if (auto it = j.find("name"); it != j.end() && it->is_string()) json_name = it->get<std::string>();
    where = "node '" + (json_name.empty() ? std::to_string(index) : json_name) + "' (" + target + ")";
    if (target.empty()) fail(where, "empty target");
    if (target.rfind("higher_order.", 0) == 0) return inline_hop(j, target.substr(13), where);

    // Arguments: positional ones in schema order, the rest by keyword.
    const ir::OpSchema* schema = ir::find_schema(target);
    std::vector<Argument> args;
    std::vector<std::pair<std::string, Argument>> kwargs;
    const json& inputs = array_field(j, "inputs", where);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string iwhere = where + " input #" + std::to_string(i);
      const std::string name = as_string(field(inputs[i], "name", iwhere), iwhere + ".name");
      const std::string awhere = where + " argument '" + name + "'";
      Argument a = parse_argument(field(inputs[i], "arg", awhere), awhere);
      int64_t kind = 1;
      if (auto k = inputs[i].find("kind"); k != inputs[i].end() && !k->is_null()) kind = as_int(*k, awhere + ".kind");
      if (kind != 1 && kind != 2) fail(awhere, "unknown argument kind " + std::to_string(kind));
      bool positional = kind == 1 && kwargs.empty();
      if (positional && schema) {
        const size_t slot = args.size();
        positional = slot < schema->args.size() && !schema->args[slot].kwarg_only && schema->args[slot].name == name;
      }
      if (positional || (name.empty() && kind == 1)) {
        if (!kwargs.empty()) fail(awhere, "a positional argument follows keyword arguments");
        args.push_back(std::move(a));
      } else {
        for (const auto& [k, _] : kwargs)
          if (k == name) fail(awhere, "given twice");
        kwargs.emplace_back(name, std::move(a));
      }
    }

    // Outputs: one value, or a tuple / list taken apart with getitem nodes.
    const json& outputs = array_field(j, "outputs", where);
    std::vector<std::string> names(outputs.size());
    std::vector<std::optional<ValueMeta>> metas;
    bool list_return = false;
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string owhere = where + " output #" + std::to_string(i);
      auto [tag, v] = tagged(outputs[i], owhere);
      if (tag == "as_tensors") {  // `-> Tensor[]`
        if (outputs.size() != 1) fail(owhere, "a tensor list must be the only output");
        if (!v->is_array()) fail(owhere, "as_tensors should be a list");
        names.assign(v->size(), "");
        for (size_t k = 0; k < v->size(); ++k) {
          names[k] = tensor_name((*v)[k], owhere);
          metas.push_back(ValueMeta::of_tensor(tensor_meta_of(names[k], owhere)));
        }
        list_return = true;
        break;
      }
      metas.push_back(output_meta(outputs[i], names[i], owhere));
    }
    const bool tuple = list_return || metas.size() > 1 || (schema && schema->returns.size() > 1);

    std::string node_name = !tuple && !names.empty() && !names[0].empty() ? names[0] : json_name;
    if (node_name.empty()) node_name = "node_" + std::to_string(index);
    Node* n = prog_.graph.create(NodeKind::CallFunction, node_name, target, std::move(args), std::move(kwargs));
    copy_metadata(j, n);
    if (schema) {
      try {
        ir::BoundArgs check(*n, *schema);  // every argument known, none missing
      } catch (const std::invalid_argument& e) {
        fail(where, e.what());
      }
    }

    if (autocast_) {  // inside an enabled autocast region: make its casts explicit
      for (const auto& m : metas)
        if (m && m->is_tensor()) {
          autocast_inputs(n, m->tensor.dtype);
          break;
        }
    }
    if (!tuple) {
      if (!metas.empty() && metas[0]) {
        n->meta = *metas[0];
        define(names[0], n, where);
      }
      return;
    }
    n->meta.kind = list_return ? ValueMeta::Kind::TensorList : ValueMeta::Kind::Tuple;
    for (size_t i = 0; i < metas.size(); ++i) {
      n->meta.tuple.push_back(metas[i] && metas[i]->is_tensor() ? std::optional<TensorMeta>(metas[i]->tensor)
                                                                : std::nullopt);
      if (names[i].empty()) continue;
      Node* g = prog_.graph.create(NodeKind::CallFunction, names[i], "getitem", {Argument(n), Argument(int64_t(i))});
      g->meta = metas[i] ? *metas[i] : ValueMeta{};
      define(names[i], g, where);
      getitems_.push_back(g);
    }
  }

  // ---- higher-order ops ------------------------------------------------------------------------
  //
  // torch.export keeps `torch.no_grad()` / `torch.autocast(...)` regions of a TRAINING-form program
  // as higher-order ops over a subgraph (transformers' Llama rotary embedding holds both). For an
  // inference program both are transparent, so their subgraphs are inlined: the subgraph's nodes
  // join the graph with its placeholders bound to the op's operands, and the op's outputs name the
  // subgraph's results. An enabled autocast region keeps its meaning through explicit casts (see
  // autocast_inputs). Control flow (cond, while_loop, map, ...) has no such reading: an error names it.

  static bool is_float(ir::ScalarType t) {
    using S = ir::ScalarType;
    return t == S::Float || t == S::Half || t == S::BFloat16 || t == S::Double;
  }

  // Autocast runs an op on its floating inputs cast to one dtype (lower precision for matmuls and
  // convolutions, fp32 for reductions and norms, the widest for promoting ops); the exported
  // subgraph records each op's result dtype but not those casts. Casting every floating input
  // whose dtype differs from the op's floating result dtype to that dtype reproduces each case.
  void autocast_inputs(Node* n, ir::ScalarType out) {
    if (!is_float(out)) return;
    bool changed = false;
    std::function<Argument(const Argument&)> cast = [&](const Argument& a) -> Argument {
      if (a.is_list()) {
        Argument::List l;
        for (const auto& e : a.list()) l.push_back(cast(e));
        return Argument(std::move(l));
      }
      if (!a.is_node() || !a.node()->meta.is_tensor()) return a;
      Node* in = a.node();
      const ir::ScalarType t = in->meta.tensor.dtype;
      if (!is_float(t) || t == out) return a;
      TensorMeta m = in->meta.tensor;
      m.dtype = out;
      m.strides.clear();
      Node* c = prog_.graph.create(NodeKind::CallFunction, in->name + "_autocast", "aten._to_copy.default", {a},
                                   {{"dtype", Argument(out)}}, n);
      c->meta = ValueMeta::of_tensor(m);
      changed = true;
      return Argument(c);
    };
    std::vector<Argument> args;
    for (const auto& a : n->args) args.push_back(cast(a));
    std::vector<std::pair<std::string, Argument>> kwargs;
    for (const auto& [k, a] : n->kwargs) kwargs.emplace_back(k, cast(a));
    if (!changed) return;
    prog_.graph.set_args(n, std::move(args));
    prog_.graph.set_kwargs(n, std::move(kwargs));
  }

  void inline_hop(const json& j, const std::string& op, const std::string& where) {
    const bool grad = op == "wrap_with_set_grad_enabled";
    const bool autocast = op == "wrap_with_autocast";
    if (!grad && !autocast) {
      const bool control = op == "cond" || op == "while_loop" || op == "map_impl" || op == "map" || op == "scan" ||
                           op == "associative_scan";
      fail(where, "higher-order op '" + op + "' is not supported" +
                      (control ? std::string(" (data-dependent control flow cannot be compiled ahead of time: export "
                                             "with the branch or loop count fixed, e.g. a Python condition on a "
                                             "static value)")
                               : std::string()) +
                      "; kiln inlines wrap_with_set_grad_enabled and wrap_with_autocast");
    }
    if (++hop_depth_ > kMaxHopDepth) fail(where, "higher-order ops nested deeper than " + std::to_string(kMaxHopDepth));

    // Positional arguments: (enabled, graph, *operands) or (device, dtype, enabled, cache, graph, *operands).
    const json& inputs = array_field(j, "inputs", where);
    size_t graph_at = inputs.size();
    for (size_t i = 0; i < inputs.size() && graph_at == inputs.size(); ++i) {
      auto [tag, v] = tagged(field(inputs[i], "arg", where + " input #" + std::to_string(i)),
                             where + " input #" + std::to_string(i));
      if (tag == "as_graph") graph_at = i;
    }
    if (graph_at == inputs.size()) fail(where, "no subgraph argument");
    const size_t enabled_at = grad ? 0 : 2;
    if (graph_at <= enabled_at) fail(where, "expected the enabled flag before the subgraph");
    bool enabled = true;
    {
      const std::string ew = where + " argument #" + std::to_string(enabled_at);
      auto [tag, v] = tagged(field(inputs[enabled_at], "arg", ew), ew);
      if (tag != "as_bool") fail(ew, "expected the 'enabled' bool, got '" + tag + "'");
      enabled = as_bool(*v, ew);
    }
    std::vector<Argument> operands;
    for (size_t i = graph_at + 1; i < inputs.size(); ++i) {
      const std::string aw = where + " operand #" + std::to_string(i - graph_at - 1);
      operands.push_back(parse_argument(field(inputs[i], "arg", aw), aw));
    }
    const std::string gw = where + " subgraph";
    const json& graph = object_field(field(inputs[graph_at], "arg", gw), "as_graph", gw);
    const json& sub = object_field(graph, "graph", gw);

    // The subgraph has its own names and metas; only its placeholders see the outer values.
    auto saved_values = std::move(values_);
    auto saved_metas = std::move(tensor_values_);
    auto saved_syms = std::move(sym_ints_);
    const bool saved_autocast = autocast_;
    values_.clear();
    tensor_values_.clear();
    sym_ints_.clear();
    if (autocast) autocast_ = enabled;
    read_value_metas(sub);
    const json& sub_inputs = array_field(sub, "inputs", gw);
    if (sub_inputs.size() != operands.size())
      fail(gw, std::to_string(sub_inputs.size()) + " placeholders for " + std::to_string(operands.size()) + " operands");
    for (size_t i = 0; i < sub_inputs.size(); ++i) {
      const std::string iw = gw + " input #" + std::to_string(i);
      auto [tag, v] = tagged(sub_inputs[i], iw);
      std::string name;
      if (tag == "as_tensor") name = tensor_name(*v, iw);
      else if (tag == "as_sym_int") name = as_string(field(*v, "as_name", iw), iw);
      else fail(iw, "placeholder of kind '" + tag + "' is not supported");
      if (!operands[i].is_node()) fail(iw, "operand is not a value of the program");
      define(name, operands[i].node(), iw);
    }
    const json& nodes = array_field(sub, "nodes", gw);
    for (size_t i = 0; i < nodes.size(); ++i) read_node(nodes[i], i);
    std::vector<Node*> results;
    const json& outs = array_field(sub, "outputs", gw);
    for (size_t i = 0; i < outs.size(); ++i) {
      const std::string ow = gw + " output #" + std::to_string(i);
      Argument a = parse_argument(outs[i], ow);
      if (!a.is_node()) fail(ow, "a subgraph result that is not a value is not supported");
      results.push_back(a.node());
    }
    values_ = std::move(saved_values);
    tensor_values_ = std::move(saved_metas);
    sym_ints_ = std::move(saved_syms);
    autocast_ = saved_autocast;
    --hop_depth_;

    // The op's outputs: one Argument per result (a singleton tuple may come as `as_tensors`).
    std::vector<std::string> names;
    const json& outputs = array_field(j, "outputs", where);
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string ow = where + " output #" + std::to_string(i);
      auto [tag, v] = tagged(outputs[i], ow);
      if (tag == "as_tensors") {
        if (!v->is_array()) fail(ow, "as_tensors should be a list");
        for (size_t k = 0; k < v->size(); ++k) names.push_back(tensor_name((*v)[k], ow));
      } else if (tag == "as_tensor") {
        names.push_back(tensor_name(*v, ow));
      } else if (tag == "as_sym_int") {
        names.push_back(as_string(field(*v, "as_name", ow), ow));
      } else if (tag == "as_none") {
        names.emplace_back();
      } else {
        fail(ow, "unsupported output '" + tag + "'");
      }
    }
    if (names.size() != results.size())
      fail(where, std::to_string(names.size()) + " outputs for a subgraph returning " + std::to_string(results.size()));
    for (size_t i = 0; i < names.size(); ++i)
      if (!names[i].empty()) define(names[i], results[i], where);
  }

  void copy_metadata(const json& j, Node* n) const {
    auto it = j.find("metadata");
    if (it == j.end() || !it->is_object()) return;
    for (auto m = it->begin(); m != it->end(); ++m)
      if (m.value().is_string()) n->metadata[m.key()] = m.value().get<std::string>();
  }

  // fx has getitem nodes only for the elements a program uses; unused slots go.
  void drop_unused_getitems() {
    for (auto it = getitems_.rbegin(); it != getitems_.rend(); ++it)
      if ((*it)->users().empty()) prog_.graph.erase(*it);
    getitems_.clear();
  }

  // ---- outputs and ranges -------------------------------------------------------------------

  void read_outputs(const json& graph, const json& signature) {
    const json& specs = array_field(signature, "output_specs", "graph_module.signature");
    const json& outs = array_field(graph, "outputs", "graph");
    if (specs.size() != outs.size())
      fail("graph_module.signature", std::to_string(specs.size()) + " output specs for " +
                                         std::to_string(outs.size()) + " graph outputs");
    std::vector<Argument> results;
    for (size_t i = 0; i < specs.size(); ++i) {
      const std::string where = "signature output_specs[" + std::to_string(i) + "]";
      auto [tag, spec] = tagged(specs[i], where);
      if (tag == "buffer_mutation") {
        std::string buf;
        if (auto b = spec->find("buffer_name"); b != spec->end() && b->is_string()) buf = b->get<std::string>();
        fail(where, "the program mutates buffer '" + buf + "' (e.g. BatchNorm in training mode); "
                    "buffer mutations are not supported: export the model in eval() mode");
      }
      if (tag == "user_input_mutation") fail(where, "the program mutates a user input; input mutations are not supported");
      if (tag == "parameter_mutation") fail(where, "the program mutates a parameter; not supported");
      if (tag == "loss_output" || tag.rfind("gradient_to_", 0) == 0)
        fail(where, "training outputs ('" + tag + "') are not supported; kiln compiles inference programs");
      if (tag == "token") fail(where, "effect tokens (side-effecting ops) are not supported");
      if (tag != "user_output") fail(where, "unknown output spec '" + tag + "'");
      results.push_back(parse_argument(outs[i], "graph outputs[" + std::to_string(i) + "]"));
    }
    // As torch.fx: one argument, the tuple (here a list) of outputs.
    prog_.graph.create(NodeKind::Output, "output", "output", {Argument(Argument::List(std::move(results)))});
  }

  void read_ranges(const json& model) {
    auto it = model.find("range_constraints");
    if (it == model.end() || it->is_null()) return;
    if (!it->is_object()) fail("range_constraints", "expected an object");
    for (auto r = it->begin(); r != it->end(); ++r) {
      const std::string where = "range_constraints['" + r.key() + "']";
      ir::SymRange range;
      range.min = std::numeric_limits<int64_t>::min();
      const json& v = r.value();
      if (!v.is_object()) fail(where, "expected an object");
      // Bounds beyond int64 (sympy's oo written as a huge number) mean unbounded.
      if (auto lo = v.find("min_val"); lo != v.end() && lo->is_number_integer()) {
        if (!lo->is_number_unsigned() || lo->get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()))
          range.min = lo->get<int64_t>();
        else
          fail(where, "min_val is beyond 64 bits");
      } else if (lo != v.end() && !lo->is_null() && !lo->is_number_float()) {
        fail(where, "min_val should be an integer or null");
      }
      if (auto hi = v.find("max_val"); hi != v.end() && hi->is_number_integer()) {
        if (!hi->is_number_unsigned() || hi->get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()))
          range.max = hi->get<int64_t>();
      } else if (hi != v.end() && !hi->is_null() && !hi->is_number_float()) {
        fail(where, "max_val should be an integer or null");
      }
      if (range.max && *range.max < range.min)
        fail(where, "empty range " + std::to_string(range.min) + ".." + std::to_string(*range.max));
      prog_.ranges[r.key()] = range;
    }
  }

  std::string label_;
  std::unique_ptr<ZipReader> zip_;
  std::string prefix_;
  bool newer_minor_ = false;
  ir::ExportedProgram prog_;
  std::map<std::string, TensorMeta> tensor_values_;
  std::map<std::string, SymInt> sym_ints_;
  std::map<std::string, std::string> other_syms_;
  std::unordered_map<std::string, Node*> values_;
  std::unordered_map<std::string, ir::SymExprPtr> expr_cache_;
  std::map<std::string, std::shared_ptr<const ir::Storage>> storages_;
  std::vector<Node*> getitems_;
  json weights_config_, constants_config_;
  static constexpr int kMaxHopDepth = 16;  // nested no_grad / autocast regions
  int hop_depth_ = 0;
  bool autocast_ = false;  // reading the subgraph of an enabled autocast region
};

}  // namespace

ir::ExportedProgram load_pt2(const std::string& path) {
  std::shared_ptr<const FileBytes> bytes;
  try {
    bytes = FileBytes::map_file(path);
  } catch (const ZipError& e) {
    throw Pt2Error(e.what());
  }
  return Loader(std::move(bytes), path).load();
}

ir::ExportedProgram load_pt2_from_memory(const void* data, size_t size, const std::string& label) {
  return Loader(FileBytes::copy_of(data, size), label).load();
}

}  // namespace kiln::frontend
