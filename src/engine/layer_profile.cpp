#include "engine/layer_profile.h"

#include <algorithm>
#include <iomanip>

#include "engine/network_internal.h"

namespace kiln::engine::detail {

bool LayerProfile::enabled() {
  static const bool on = env_flag("KILN_PROFILE", false);
  return on;
}

void LayerProfile::add(const std::string& layer, const std::string& kind, const std::string& origin, double ms) {
  if (executes_ <= 1) {
    first_execute_[layer] += ms;
    return;
  }
  Entry& e = by_layer_[layer];
  e.kind = kind;
  e.origin = origin;
  e.total_ms += ms;
  ++e.calls;
}

void LayerProfile::print(std::ostream& os, const std::string& title, size_t rows) const {
  std::vector<std::pair<std::string, const Entry*>> layers;
  std::map<std::string, std::pair<double, int64_t>> kinds;  // kind -> (ms, layer calls)
  double total = 0;
  for (const auto& [name, e] : by_layer_) {
    layers.emplace_back(name, &e);
    kinds[e.kind].first += e.total_ms;
    kinds[e.kind].second += e.calls;
    total += e.total_ms;
  }
  std::sort(layers.begin(), layers.end(), [](auto& a, auto& b) { return a.second->total_ms > b.second->total_ms; });
  const int64_t steady = std::max<int64_t>(executes_ - 1, 0);
  const double runs = std::max<int64_t>(steady, 1);
  std::vector<std::pair<double, std::string>> first;
  double first_total = 0;
  for (const auto& [name, ms] : first_execute_) {
    first.emplace_back(ms, name);
    first_total += ms;
  }
  std::sort(first.rbegin(), first.rend());
  os << "kiln profile: " << title << ": first execute " << std::fixed << std::setprecision(3) << first_total
     << " ms (one-time setup included; slowest:";
  for (size_t i = 0; i < std::min<size_t>(3, first.size()); ++i) os << " " << first[i].second << " " << first[i].first;
  os << ")\n";
  os << "kiln profile: " << title << ": " << steady << " executes after it, " << total / runs << " ms per execute in "
     << by_layer_.size() << " layers\n";
  os << "  ms/execute   share  kind              layer\n";
  for (size_t i = 0; i < std::min(rows, layers.size()); ++i) {
    const Entry& e = *layers[i].second;
    os << "  " << std::setw(10) << e.total_ms / runs << "  " << std::setw(5) << std::setprecision(1)
       << 100 * e.total_ms / std::max(total, 1e-12) << "%  " << std::left << std::setw(16) << e.kind << "  "
       << layers[i].first << (e.origin.empty() ? "" : "  (" + e.origin + ")") << std::right << std::setprecision(3)
       << "\n";
  }
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> by_kind(kinds.begin(), kinds.end());
  std::sort(by_kind.begin(), by_kind.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
  os << "  by kind:\n";
  for (const auto& [kind, v] : by_kind)
    os << "  " << std::setw(10) << v.first / runs << "  " << std::setw(5) << std::setprecision(1)
       << 100 * v.first / std::max(total, 1e-12) << "%  " << kind << " (" << v.second / static_cast<int64_t>(runs)
       << " per execute)" << std::setprecision(3) << "\n";
}

}  // namespace kiln::engine::detail
