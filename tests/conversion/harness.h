// Builds small IR programs by hand, converts them with convert_segment, builds a CPU plan and runs
// it: what every conversion test needs. Values cross as doubles; the harness packs and unpacks
// each dtype.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "conversion/convert.h"
#include "conversion/registry.h"
#include "engine/builder.h"
#include "engine/runtime.h"
#include "ir/graph.h"

namespace kiln::testing {

using ir::ScalarType;

struct HostArray {
  ScalarType dtype = ScalarType::Float;
  std::vector<int64_t> dims;
  std::vector<double> values;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
};

inline std::vector<uint8_t> pack(const HostArray& a) {
  const size_t es = ir::element_size(a.dtype);
  std::vector<uint8_t> out(a.values.size() * es);
  for (size_t i = 0; i < a.values.size(); ++i) {
    uint8_t* p = out.data() + i * es;
    const double v = a.values[i];
    switch (a.dtype) {
      case ScalarType::Float: { float f = static_cast<float>(v); std::memcpy(p, &f, 4); break; }
      case ScalarType::Long: { int64_t x = static_cast<int64_t>(v); std::memcpy(p, &x, 8); break; }
      case ScalarType::Int: { int32_t x = static_cast<int32_t>(v); std::memcpy(p, &x, 4); break; }
      case ScalarType::Bool: *p = v != 0; break;
      case ScalarType::Byte: *p = static_cast<uint8_t>(v); break;
      case ScalarType::Char: { int8_t x = static_cast<int8_t>(v); std::memcpy(p, &x, 1); break; }
      default: throw std::runtime_error("harness: unsupported dtype");
    }
  }
  return out;
}

inline std::vector<double> unpack(const engine::TensorView& v) {
  std::vector<double> out(static_cast<size_t>(v.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    const uint8_t* p = static_cast<const uint8_t*>(v.data) + i * engine::element_size(v.dtype);
    switch (v.dtype) {
      case engine::DataType::kFloat32: { float f; std::memcpy(&f, p, 4); out[i] = f; break; }
      case engine::DataType::kInt64: { int64_t x; std::memcpy(&x, p, 8); out[i] = static_cast<double>(x); break; }
      case engine::DataType::kInt32: { int32_t x; std::memcpy(&x, p, 4); out[i] = x; break; }
      case engine::DataType::kBool: case engine::DataType::kUInt8: out[i] = *p; break;
      case engine::DataType::kInt8: { int8_t x; std::memcpy(&x, p, 1); out[i] = x; break; }
      default: throw std::runtime_error("harness: unsupported output dtype");
    }
  }
  return out;
}

inline HostArray random_array(ScalarType dt, std::vector<int64_t> dims, uint32_t seed, double lo = -2, double hi = 2) {
  HostArray a{dt, std::move(dims), {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  a.values.resize(static_cast<size_t>(a.numel()));
  for (double& v : a.values) {
    v = u(rng);
    if (dt == ScalarType::Float) v = static_cast<float>(v);
    else if (dt == ScalarType::Bool) v = v > (lo + hi) / 2;
    else v = std::floor(v);
  }
  return a;
}

inline ir::TensorMeta meta(ScalarType dt, std::vector<ir::SymInt> sizes) {
  ir::TensorMeta m;
  m.dtype = dt;
  m.sizes = std::move(sizes);
  return m;
}

// A program under construction plus the conversion result.
struct Case {
  ir::ExportedProgram program;
  std::vector<const ir::Node*> inputs;
  std::vector<const ir::Node*> nodes;
  std::vector<HostArray> input_values;
  conversion::CompilationSettings settings;

  ir::Node* input(const std::string& name, const HostArray& value, std::vector<ir::SymInt> sizes = {}) {
    if (sizes.empty()) sizes.assign(value.dims.begin(), value.dims.end());
    ir::Node* n = program.graph.create(ir::NodeKind::Placeholder, name, name);
    n->meta = ir::ValueMeta::of_tensor(meta(value.dtype, sizes));
    inputs.push_back(n);
    input_values.push_back(value);
    return n;
  }
  ir::Node* weight(const std::string& name, const HostArray& value) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(pack(value));
    auto storage = std::make_shared<ir::Storage>();
    storage->data = bytes->data();
    storage->size = bytes->size();
    storage->owner = bytes;
    ir::Weight w;
    w.name = name;
    w.meta = meta(value.dtype, std::vector<ir::SymInt>(value.dims.begin(), value.dims.end()));
    w.storage = storage;
    program.weights[name] = w;
    ir::Node* n = program.graph.create(ir::NodeKind::GetAttr, name, name);
    n->meta = ir::ValueMeta::of_tensor(w.meta);
    nodes.push_back(n);
    return n;
  }
  ir::Node* call(const std::string& target, std::vector<ir::Argument> args,
                 std::vector<std::pair<std::string, ir::Argument>> kwargs, ir::ValueMeta m) {
    std::string name = target;  // "aten.gelu.default" -> "gelu" (the graph makes names unique)
    if (name.rfind("aten.", 0) == 0) name = name.substr(5, name.find('.', 5) - 5);
    for (char& c : name)
      if (c == '.') c = '_';
    ir::Node* n = program.graph.create(ir::NodeKind::CallFunction, name, target, std::move(args), std::move(kwargs));
    n->meta = std::move(m);
    nodes.push_back(n);
    return n;
  }
  ir::Node* call(const std::string& target, std::vector<ir::Argument> args,
                 std::vector<std::pair<std::string, ir::Argument>> kwargs, ScalarType dt, std::vector<ir::SymInt> sizes) {
    return call(target, std::move(args), std::move(kwargs), ir::ValueMeta::of_tensor(meta(dt, std::move(sizes))));
  }

  conversion::ConvertedSegment convert(const std::vector<const ir::Node*>& outputs) {
    std::vector<ir::Argument> outs;
    for (const ir::Node* o : outputs) outs.push_back(const_cast<ir::Node*>(o));
    if (!program.graph.output())
      program.graph.create(ir::NodeKind::Output, "output", "output", {ir::Argument(outs)});
    return conversion::convert_segment(program, nodes, inputs, outputs, settings);
  }

  // Converts, builds on the CPU and runs once; returns each output and the converted segment's
  // layer count through `layers`.
  std::vector<std::pair<std::vector<int64_t>, std::vector<double>>> run(const std::vector<const ir::Node*>& outputs,
                                                                         size_t* layers = nullptr,
                                                                         engine::BuilderConfig cfg = {}) {
    conversion::ConvertedSegment seg = convert(outputs);
    if (layers) *layers = seg.network->layers().size();
    for (const std::string& sym : seg.network->input_symbols())
      if (!cfg.profile.count(sym)) cfg.profile[sym] = {1, 4, 64};
    engine::Plan plan = engine::build(std::move(*seg.network), cfg);
    engine::ExecutionContext exec(plan);
    std::vector<std::vector<uint8_t>> buffers;
    for (size_t i = 0; i < inputs.size(); ++i) {
      buffers.push_back(pack(input_values[i]));
      engine::TensorView v;
      v.data = buffers.back().data();
      v.dtype = conversion::to_engine_dtype(input_values[i].dtype);
      v.dims = input_values[i].dims;
      exec.set_input(inputs[i]->name, v);
    }
    exec.execute();
    std::vector<std::pair<std::vector<int64_t>, std::vector<double>>> out;
    for (size_t i = 0; i < seg.output_names.size(); ++i) {
      const engine::TensorView& v = exec.output(seg.output_names[i]);
      out.emplace_back(v.dims, unpack(v));
    }
    return out;
  }
};

inline void expect_close(const std::vector<double>& got, const std::vector<double>& want, double atol = 1e-5,
                         double rtol = 1e-5, const std::string& what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " at " << i;
      continue;
    }
    EXPECT_NEAR(got[i], want[i], atol + rtol * std::fabs(want[i])) << what << " at " << i;
  }
}

}  // namespace kiln::testing
