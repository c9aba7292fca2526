// PyTorch schema strings -> OpSchema, the schema table, and BoundArgs.
#include "ir/schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <unordered_map>

namespace kiln::ir {

// schema_table.cpp: the built-in table, {overload, schema string} pairs.
struct SchemaEntry {
  const char* overload;
  const char* schema;
};
extern const SchemaEntry kSchemaTable[];
extern const size_t kSchemaTableSize;

namespace {

// "Tensor(a!)[]?" -> "Tensor": the element type without alias annotation, list or optional marks.
std::string base_type(const std::string& type) {
  size_t end = type.find_first_of("([?");
  return type.substr(0, end);
}

// The fixed length of "int[2]" (0 for "int[]" or a non-list).
size_t fixed_list_length(const std::string& type) {
  size_t open = type.find('[');
  if (open == std::string::npos) return 0;
  size_t close = type.find(']', open);
  if (close == std::string::npos || close == open + 1) return 0;
  return std::stoul(type.substr(open + 1, close - open - 1));
}

class Parser {
 public:
  Parser(const std::string& overload, const std::string& text) : overload_(overload), s_(text) {}

  OpSchema parse() {
    OpSchema out;
    out.overload = overload_;
    skip_ws();
    // The name (and namespace / overload) as written is informational: the table key names the op.
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_' ||
                                s_[pos_] == '.' || s_[pos_] == ':'))
      ++pos_;
    expect('(');
    bool kwarg_only = false;
    skip_ws();
    if (peek() != ')') {
      while (true) {
        skip_ws();
        if (peek() == '*') {
          ++pos_;
          kwarg_only = true;
        } else {
          ArgSchema a;
          a.type = parse_type();
          skip_ws();
          a.name = parse_ident("argument name");
          a.kwarg_only = kwarg_only;
          skip_ws();
          if (peek() == '=') {
            ++pos_;
            a.default_value = parse_default(a.type);
          }
          for (const auto& prev : out.args)
            if (prev.name == a.name) fail("argument '" + a.name + "' declared twice");
          out.args.push_back(std::move(a));
        }
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        break;
      }
    }
    expect(')');
    skip_ws();
    if (s_.compare(pos_, 2, "->") != 0) fail("expected '->'");
    pos_ += 2;
    skip_ws();
    if (peek() == '(') {
      ++pos_;
      skip_ws();
      while (peek() != ')') {
        out.returns.push_back(parse_return());
        skip_ws();
        if (peek() == ',') ++pos_;
        else if (peek() != ')') fail("expected ',' or ')' in returns");
        skip_ws();
      }
      ++pos_;
    } else {
      out.returns.push_back(parse_return());
    }
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the returns");
    out.view = returns_view_;
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::invalid_argument("schema of " + overload_ + ": " + what + " at position " + std::to_string(pos_) +
                                " in '" + s_ + "'");
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_ident(const char* what) {
    size_t start = pos_;
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
    if (start == pos_) fail(std::string("expected ") + what);
    return s_.substr(start, pos_ - start);
  }

  // `Tensor(a!)`, `int[2]`, `Tensor?[]`, `SymInt[]?`: an identifier then any of (...), [...], ?.
  std::string parse_type() {
    std::string t = parse_ident("a type");
    while (true) {
      char c = peek();
      if (c == '(') {
        size_t close = s_.find(')', pos_);
        if (close == std::string::npos) fail("unclosed alias annotation");
        for (size_t i = pos_; i <= close; ++i)
          if (!std::isspace(static_cast<unsigned char>(s_[i]))) t += s_[i];
        pos_ = close + 1;
      } else if (c == '[') {
        size_t close = s_.find(']', pos_);
        if (close == std::string::npos) fail("unclosed '['");
        for (size_t i = pos_ + 1; i < close; ++i)
          if (!std::isdigit(static_cast<unsigned char>(s_[i]))) fail("list length must be a number");
        t += s_.substr(pos_, close - pos_ + 1);
        pos_ = close + 1;
      } else if (c == '?') {
        t += '?';
        ++pos_;
      } else {
        return t;
      }
    }
  }

  // A return: its type (alias annotation dropped: "Tensor(a)" -> "Tensor") and an optional name.
  // A read-only alias annotation ("Tensor(a)", "Tensor(a)[]", not "Tensor(a!)") marks a view.
  std::string parse_return() {
    std::string t = parse_type();
    if (t.find('(') != std::string::npos && t.find('!') == std::string::npos) returns_view_ = true;
    std::string out;
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i] == '(') {
        i = t.find(')', i);
        continue;
      }
      out += t[i];
    }
    skip_ws();
    if (std::isalpha(static_cast<unsigned char>(peek())) || peek() == '_') parse_ident("return name");
    return out;
  }

  // The default's raw text up to the next top-level ',' or ')'.
  std::string raw_default() {
    size_t start = pos_;
    int depth = 0;
    char quote = 0;
    for (; pos_ < s_.size(); ++pos_) {
      char c = s_[pos_];
      if (quote) {
        if (c == quote) quote = 0;
        continue;
      }
      if (c == '\'' || c == '"') quote = c;
      else if (c == '[') ++depth;
      else if (c == ']') --depth;
      else if ((c == ',' || c == ')') && depth == 0) break;
    }
    if (quote || depth) fail("unterminated default value");
    std::string r = s_.substr(start, pos_ - start);
    while (!r.empty() && std::isspace(static_cast<unsigned char>(r.back()))) r.pop_back();
    size_t b = r.find_first_not_of(" \t");
    return b == std::string::npos ? "" : r.substr(b);
  }

  Argument scalar_default(const std::string& text, const std::string& base) {
    if (text.empty()) fail("empty default value");
    // OpSchema::str() prints enum defaults as Argument::str() does ("torch.contiguous_format").
    const std::string v = text.rfind("torch.", 0) == 0 ? text.substr(6) : text;
    if (v == "None") return None{};
    if (v == "True") return true;
    if (v == "False") return false;
    if (v.front() == '\'' || v.front() == '"') return v.substr(1, v.size() - 2);
    if (v == "inf") return std::numeric_limits<double>::infinity();
    if (v == "-inf") return -std::numeric_limits<double>::infinity();
    if (v == "nan") return std::nan("");
    if (std::isdigit(static_cast<unsigned char>(v[0])) || v[0] == '-' || v[0] == '+') {
      const bool floaty = v.find_first_of(".eE") != std::string::npos;
      try {
        size_t used = 0;
        if (floaty || base == "float") {
          double d = std::stod(v, &used);
          if (used != v.size()) fail("bad number '" + v + "'");
          return d;
        }
        int64_t i = std::stoll(v, &used);
        if (used != v.size()) fail("bad number '" + v + "'");
        return i;
      } catch (const std::logic_error&) {
        fail("bad number '" + v + "'");
      }
    }
    // Named constants of native_functions.yaml.
    if (v == "contiguous_format") return MemoryFormat::Contiguous;
    if (v == "channels_last") return MemoryFormat::ChannelsLast;
    if (v == "preserve_format") return MemoryFormat::Preserve;
    if (v == "channels_last_3d") return MemoryFormat::ChannelsLast3d;
    if (v == "strided") return Layout::Strided;
    if (v == "Mean") return int64_t{1};  // at::Reduction
    if (v == "Sum") return int64_t{2};
    if (v == "None_") return int64_t{0};
    if (auto t = scalar_type_from_name(v)) return *t;
    fail("unknown default value '" + v + "'");
  }

  Argument parse_default(const std::string& type) {
    skip_ws();
    const std::string v = raw_default();
    const std::string base = base_type(type);
    if (!v.empty() && v.front() == '[') {
      if (v.back() != ']') fail("bad list default '" + v + "'");
      Argument::List items;
      std::string inner = v.substr(1, v.size() - 2);
      size_t start = 0;
      while (start < inner.size()) {
        size_t comma = inner.find(',', start);
        if (comma == std::string::npos) comma = inner.size();
        std::string item = inner.substr(start, comma - start);
        size_t b = item.find_first_not_of(" "), e = item.find_last_not_of(" ");
        if (b != std::string::npos) items.push_back(scalar_default(item.substr(b, e - b + 1), base));
        start = comma + 1;
      }
      return items;
    }
    Argument a = scalar_default(v, base);
    // `int[2] stride=1` means [1, 1]: a scalar default of a fixed-length list is broadcast.
    if (const size_t n = fixed_list_length(type); n > 0 && !a.is_none()) return Argument::List(n, a);
    return a;
  }

  const std::string& overload_;
  const std::string& s_;
  size_t pos_ = 0;
  bool returns_view_ = false;
};

// The table: parsed once on first use; run-time registrations go into the same map.
struct Table {
  std::shared_mutex mu;
  std::unordered_map<std::string, std::unique_ptr<OpSchema>> by_name;

  Table() {
    for (size_t i = 0; i < kSchemaTableSize; ++i)
      by_name[kSchemaTable[i].overload] =
          std::make_unique<OpSchema>(parse_schema(kSchemaTable[i].overload, kSchemaTable[i].schema));
  }
  static Table& get() {
    static Table t;
    return t;
  }
};

// "torch.ops.aten.gelu.default" and "aten.gelu.default" name the same op.
std::string normalize(const std::string& overload) {
  if (overload.rfind("torch.ops.", 0) == 0) return overload.substr(10);
  return overload;
}

}  // namespace

bool ArgSchema::is_tensor() const { return base_type(type) == "Tensor" && !is_list(); }
bool ArgSchema::is_optional() const { return !type.empty() && type.back() == '?'; }
bool ArgSchema::is_list() const { return type.find('[') != std::string::npos; }

bool OpSchema::is_inplace() const {
  for (const auto& a : args)
    if (a.type.find('!') != std::string::npos) return true;
  return false;
}

const ArgSchema* OpSchema::find(const std::string& name) const {
  for (const auto& a : args)
    if (a.name == name) return &a;
  return nullptr;
}

int OpSchema::index_of(const std::string& name) const {
  for (size_t i = 0; i < args.size(); ++i)
    if (args[i].name == name) return static_cast<int>(i);
  return -1;
}

std::string OpSchema::str() const {
  // "aten.gelu.default" -> "gelu"; "aten.add.Tensor" -> "add.Tensor", as native_functions.yaml writes them.
  std::string name = overload;
  if (size_t dot = name.find('.'); dot != std::string::npos) name = name.substr(dot + 1);
  if (name.size() > 8 && name.compare(name.size() - 8, 8, ".default") == 0) name.resize(name.size() - 8);
  std::string s = name + "(";
  bool star = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (i) s += ", ";
    if (args[i].kwarg_only && !star) {
      s += "*, ";
      star = true;
    }
    s += args[i].type + " " + args[i].name;
    if (args[i].default_value) {
      const Argument& d = *args[i].default_value;
      s += "=" + (d.is<std::string>() ? "'" + d.str() + "'" : d.str());
    }
  }
  s += ") -> ";
  if (returns.size() == 1) return s + returns[0];
  s += "(";
  for (size_t i = 0; i < returns.size(); ++i) s += (i ? ", " : "") + returns[i];
  return s + ")";
}

OpSchema parse_schema(const std::string& overload, const std::string& text) { return Parser(overload, text).parse(); }

const OpSchema* find_schema(const std::string& overload) {
  Table& t = Table::get();
  std::shared_lock lock(t.mu);
  auto it = t.by_name.find(normalize(overload));
  return it == t.by_name.end() ? nullptr : it->second.get();
}

std::vector<std::string> known_ops() {
  Table& t = Table::get();
  std::shared_lock lock(t.mu);
  std::vector<std::string> out;
  for (const auto& [k, v] : t.by_name) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

void register_schema(const std::string& overload, const std::string& text) {
  OpSchema parsed = parse_schema(normalize(overload), text);
  Table& t = Table::get();
  std::unique_lock lock(t.mu);
  auto& slot = t.by_name[parsed.overload];
  if (slot) *slot = std::move(parsed);  // keep the address: callers may hold the pointer
  else slot = std::make_unique<OpSchema>(std::move(parsed));
}

// ---------------------------------------------------------------------------------------------
// BoundArgs

BoundArgs::BoundArgs(const Node& node, const OpSchema& schema)
    : schema_(&schema), values_(schema.args.size()), given_(schema.args.size(), false) {
  const std::string where = "node %" + node.name + " (" + schema.overload + ")";
  size_t positional_slots = 0;
  for (const auto& a : schema.args)
    if (!a.kwarg_only) ++positional_slots;
  if (node.args.size() > positional_slots)
    throw std::invalid_argument(where + ": " + std::to_string(node.args.size()) +
                                " positional arguments given, the schema takes at most " +
                                std::to_string(positional_slots));
  size_t slot = 0;
  for (const auto& a : node.args) {
    while (schema.args[slot].kwarg_only) ++slot;  // kwarg-only args come last; defensive
    values_[slot] = a;
    given_[slot] = true;
    ++slot;
  }
  for (const auto& [key, value] : node.kwargs) {
    int i = schema.index_of(key);
    if (i < 0) throw std::invalid_argument(where + ": unknown argument '" + key + "'");
    if (given_[i]) throw std::invalid_argument(where + ": argument '" + key + "' given twice");
    values_[i] = value;
    given_[i] = true;
  }
  for (size_t i = 0; i < values_.size(); ++i) {
    if (given_[i]) continue;
    const ArgSchema& a = schema.args[i];
    if (a.default_value) values_[i] = *a.default_value;
    else if (a.is_optional()) values_[i] = None{};  // `Tensor? weight` without a default: absent means None
    else throw std::invalid_argument(where + ": missing argument '" + a.name + "'");
  }
}

const Argument& BoundArgs::operator[](const std::string& name) const {
  int i = schema_->index_of(name);
  if (i < 0) throw std::out_of_range(schema_->overload + " has no argument '" + name + "'");
  return values_[i];
}

bool BoundArgs::given(const std::string& name) const {
  int i = schema_->index_of(name);
  return i >= 0 && given_[i];
}

std::vector<Argument> BoundArgs::positional() const {
  std::vector<Argument> out;
  for (size_t i = 0; i < values_.size(); ++i)
    if (!schema_->args[i].kwarg_only) out.push_back(values_[i]);
  return out;
}

std::vector<std::pair<std::string, Argument>> BoundArgs::keyword() const {
  std::vector<std::pair<std::string, Argument>> out;
  for (size_t i = 0; i < values_.size(); ++i)
    if (schema_->args[i].kwarg_only) out.emplace_back(schema_->args[i].name, values_[i]);
  return out;
}

}  // namespace kiln::ir
