// JSON form of layer parameters and symbolic shapes, for the plan format (plan.cpp). Weights go to
// a separate blob; the JSON keeps their dtype, dims, offset and size.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/network.h"

namespace kiln::engine::plan_json {

using nlohmann::json;

// Appends weights to the blob, 64-byte aligned.
struct BlobWriter {
  std::vector<uint8_t> bytes;
  json add(const Weights& w);
};

// Reads weights back as aliasing views into one shared buffer; refuses out-of-range entries.
struct BlobReader {
  std::shared_ptr<const uint8_t> base;
  size_t size = 0;
  Weights get(const json& j) const;
};

// Ranks above this in a plan are refused (shapes, weight dims): no network has them, and a
// hostile description would otherwise size allocations by them.
constexpr size_t kMaxRank = 64;

// The deepest nesting of arrays and objects in JSON text (strings skipped), found without
// recursion: nlohmann's parser is iterative, but dump(), copies and comparisons of the parsed value
// recurse, so a hostile depth must be refused before parsing.
size_t nesting_depth(const uint8_t* p, size_t n);
// json::parse after checking nesting_depth <= max_depth (PlanError naming the depth otherwise).
json parse_bounded(const uint8_t* p, size_t n, size_t max_depth);

json dim_to_json(const DimExpr& d);
DimExpr dim_from_json(const json& j, int depth = 0);
json shape_to_json(const Shape& s);
Shape shape_from_json(const json& j);

json params_to_json(const LayerParams& p, BlobWriter& blob);
// `kind` is the layer_kind_name; throws PlanError for unknown kinds or bad fields.
LayerParams params_from_json(const std::string& kind, const json& j, const BlobReader& blob);

}  // namespace kiln::engine::plan_json
