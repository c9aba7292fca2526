// Plans and their binary format:
//
//   0  "KILNPLAN"               magic
//   8  u32 version              kPlanVersion
//  12  u32 header bytes         48
//  16  u64 json bytes           description of tensors, layers, params, profile
//  24  u64 blob offset          64-byte aligned, after the JSON
//  32  u64 blob bytes           weights, each 64-byte aligned inside the blob
//  40  u64 total bytes          whole file, checksum included
//  48  JSON, zero padding, blob
//  total-8  u64 checksum of every byte before it: checksum64 in version 2 (written now), FNV-1a 64
//           in version 1 (still read; engine/checksum.h)
//
// Loading checks magic, version, sizes and checksum before parsing anything, then rebuilds the
// network through Network::add_layer, which re-checks every layer. Little-endian hosts only.
#include "engine/plan.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "engine/checksum.h"
#include "engine/network_internal.h"
#include "engine/plan_impl.h"
#include "engine/plan_json.h"

namespace kiln::engine {

namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'P', 'L', 'A', 'N'};
constexpr uint32_t kPlanVersion = 2;  // written; version 1 (an FNV-1a checksum) is read too
constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull;  // version 1's checksum starts from it
constexpr size_t kHeaderBytes = 48;

template <class T>
void put(std::vector<uint8_t>& out, size_t at, T v) {
  std::memcpy(out.data() + at, &v, sizeof(T));
}
template <class T>
T get(const uint8_t* data, size_t at) {
  T v;
  std::memcpy(&v, data + at, sizeof(T));
  return v;
}

}  // namespace

Plan::Plan() : impl_(std::make_unique<Impl>()) {}
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;
Plan::~Plan() = default;

const Network& Plan::network() const { return *impl_->network; }
DeviceKind Plan::device() const { return impl_->device; }
const MemoryReport& Plan::memory() const { return impl_->memory; }

bool Plan::requires_output_allocator() const {
  const Network& net = *impl_->network;
  for (Tensor* t : net.tensors())
    if (!net.input_bound(t->shape())) return true;
  return false;
}

std::vector<std::string> Plan::unbound_symbols() const {
  const Network& net = *impl_->network;
  std::set<std::string> bound;
  for (const std::string& s : net.input_symbols()) bound.insert(s);
  for (Layer* l : net.layers())
    if (const auto* nz = std::get_if<NonZeroParams>(&l->params())) bound.insert(nz->count_symbol);
  std::set<std::string> unbound;
  for (Tensor* t : net.tensors()) {
    std::vector<std::string> syms;
    for (const DimExpr& d : t->shape()) d.collect_symbols(syms);
    for (const std::string& s : syms)
      if (!bound.count(s)) unbound.insert(s);
  }
  return {unbound.begin(), unbound.end()};
}

std::vector<std::string> Plan::input_names() const {
  std::vector<std::string> r;
  for (Tensor* t : impl_->network->inputs()) r.push_back(t->name());
  return r;
}

std::vector<std::string> Plan::output_names() const {
  std::vector<std::string> r;
  for (auto& [n, t] : impl_->network->outputs()) r.push_back(n);
  return r;
}

std::string Plan::summary() const {
  const Network& net = *impl_->network;
  std::map<std::string, int> kinds;
  for (Layer* l : net.layers()) kinds[l->kind()]++;
  std::string r = "plan: " + std::to_string(net.layers().size()) + " layers on " + to_string(impl_->device) + ", " +
                  to_string(impl_->precision) + "\n  layers:";
  for (auto& [k, n] : kinds) r += " " + k + "=" + std::to_string(n);
  r += "\n  peak activation bytes: " + std::to_string(impl_->memory.peak_activation_bytes) +
       ", weight bytes: " + std::to_string(impl_->memory.weight_bytes) + "\n";
  if (!impl_->build_log.empty()) {
    r += "  passes:";
    for (const std::string& s : impl_->build_log) r += " [" + s + "]";
    r += "\n";
  }
  if (!impl_->device_code.empty()) r += "  device code: " + device_code_summary() + "\n";
  return r;
}

std::string Plan::device_code_summary() const {
  if (impl_->device_code.empty()) return "";
  std::map<std::string, size_t> kernels;  // by architecture
  size_t bytes = 0;
  for (const auto& [key, code] : impl_->device_code) {
    ++kernels[key.substr(0, key.find(':'))];
    bytes += code.size();
  }
  std::string r;
  for (const auto& [arch, n] : kernels) r += (r.empty() ? "" : ", ") + std::to_string(n) + " kernels for " + arch;
  return r + ", " + std::to_string((bytes + 1023) / 1024) + " KiB";
}

int Plan::cuda_arch() const { return impl_->cuda_arch; }
size_t Plan::workspace_limit() const { return impl_->workspace_limit; }

std::string Plan::gpu_mismatch() const {
  if (impl_->device != DeviceKind::kCUDA || impl_->cuda_arch == 0) return "";
  const int here = current_cuda_arch();
  if (here == 0 || here == impl_->cuda_arch) return "";
  if (const char* allow = std::getenv("KILN_ALLOW_OTHER_GPU_ARCH"); allow && std::string(allow) == "1") return "";
  return "this plan was built for a GPU of architecture sm_" + std::to_string(impl_->cuda_arch) +
         " and this GPU is sm_" + std::to_string(here) +
         ": its kernels and kernel choices were made for the other GPU. Rebuild it on this machine "
         "(kiln compile MODEL.pt2 --device cuda, or kiln.compile in Python), or for this GPU from "
         "another machine with --cuda-arch " + std::to_string(here) +
         "; KILN_ALLOW_OTHER_GPU_ARCH=1 runs it anyway, compiling its kernels here";
}

namespace {

// What Plan::refit compares of a layer: kind, wiring, output types and every parameter, with a
// constant reduced to its dtype and dims. Other weights a layer's parameters hold (index tables,
// inlined values) are compared byte for byte, through `blob`.
// Tensors are named by `index` (inputs, then layer outputs, in order): a loaded plan numbers its
// tensors afresh, so ids of two equal networks need not agree.
nlohmann::json refit_structure(const Layer& l, const std::map<int, size_t>& index, plan_json::BlobWriter& blob) {
  using nlohmann::json;
  json ins = json::array(), outs = json::array();
  for (const Tensor* t : l.inputs()) ins.push_back(index.at(t->id()));
  for (const Tensor* t : l.outputs())
    outs.push_back({index.at(t->id()), static_cast<int>(t->dtype()), plan_json::shape_to_json(t->shape())});
  json params;
  if (const auto* c = l.as<ConstantParams>())
    params = {{"dtype", static_cast<int>(c->weights.dtype)}, {"dims", c->weights.dims}};
  else
    params = plan_json::params_to_json(l.params(), blob);
  return {{"kind", l.kind()}, {"inputs", ins}, {"outputs", outs}, {"params", params}};
}

}  // namespace

void Plan::check_refit(const Plan& fresh) const {
  const Network& net = *impl_->network;
  const Network& other = *fresh.impl_->network;
  const std::vector<Layer*> mine = net.layers(), theirs = other.layers();
  auto refuse = [](const std::string& what) {
    throw PlanError("refit: " + what + " when built with the new weights: their values decided the program "
                    "there (a constant folded into a kernel, say), so only a new build applies them");
  };
  if (mine.size() != theirs.size())
    refuse("the plan has " + std::to_string(theirs.size()) + " layers instead of " + std::to_string(mine.size()));
  if (net.inputs().size() != other.inputs().size() || net.outputs().size() != other.outputs().size())
    refuse("the plan's inputs or outputs differ");
  auto positions = [](const Network& n) {
    std::map<int, size_t> index;
    for (const Tensor* t : n.inputs()) index.emplace(t->id(), index.size());
    for (const Layer* l : n.layers())
      for (const Tensor* t : l->outputs()) index.emplace(t->id(), index.size());
    return index;
  };
  const std::map<int, size_t> my_index = positions(net), their_index = positions(other);
  for (size_t i = 0; i < mine.size(); ++i) {
    plan_json::BlobWriter a, b;
    if (refit_structure(*mine[i], my_index, a) != refit_structure(*theirs[i], their_index, b) || a.bytes != b.bytes)
      refuse(mine[i]->label() + " differs");
  }
}

void Plan::refit(const Plan& fresh) {
  check_refit(fresh);
  take_constants(fresh);
}

void Plan::take_constants(const Plan& fresh) {
  Network& net = *impl_->network;
  const std::vector<Layer*> mine = net.layers(), theirs = fresh.impl_->network->layers();
  for (size_t i = 0; i < mine.size(); ++i)
    if (const auto* c = theirs[i]->as<ConstantParams>()) net.set_layer_params(mine[i], ConstantParams{c->weights});
  ++impl_->weights_generation;
}

uint64_t Plan::weights_generation() const { return impl_->weights_generation; }

std::vector<uint8_t> Plan::serialize() const {
  using nlohmann::json;
  const Network& net = *impl_->network;
  plan_json::BlobWriter blob;
  json j;
  j["device"] = static_cast<int>(impl_->device);
  j["precision"] = static_cast<int>(impl_->precision);
  json profile = json::object();
  for (auto& [s, r] : impl_->profile) profile[s] = {r.min, r.opt, r.max};
  j["profile"] = profile;
  j["memory"] = {{"peak_activation_bytes", impl_->memory.peak_activation_bytes},
                 {"weight_bytes", impl_->memory.weight_bytes}};
  json inputs = json::array();
  for (Tensor* t : net.inputs())
    inputs.push_back({{"id", t->id()}, {"name", t->name()}, {"dtype", static_cast<int>(t->dtype())},
                      {"shape", plan_json::shape_to_json(t->shape())}});
  j["inputs"] = inputs;
  json layers = json::array();
  for (Layer* l : net.layers()) {
    json ins = json::array(), outs = json::array();
    for (Tensor* t : l->inputs()) ins.push_back(t->id());
    for (Tensor* t : l->outputs()) outs.push_back(t->id());
    json layer = {{"name", l->name()}, {"kind", l->kind()}, {"inputs", ins}, {"outputs", outs},
                  {"params", plan_json::params_to_json(l->params(), blob)}};
    if (!l->origin().empty()) layer["origin"] = l->origin();
    layers.push_back(std::move(layer));
  }
  j["layers"] = layers;
  json outputs = json::array();
  for (auto& [n, t] : net.outputs()) outputs.push_back({{"name", n}, {"tensor", t->id()}});
  j["outputs"] = outputs;
  j["build_log"] = impl_->build_log;
  json code = json::array();
  for (const auto& [key, bytes] : impl_->device_code)
    code.push_back({{"key", key}, {"bytes", blob.add(Weights::copy_of(DataType::kUInt8, {int64_t(bytes.size())}, bytes.data()))}});
  j["device_code"] = code;
  j["cuda_arch"] = impl_->cuda_arch;
  j["workspace_limit"] = impl_->workspace_limit;

  std::string text = j.dump();
  size_t blob_offset = (kHeaderBytes + text.size() + 63) / 64 * 64;
  size_t total = blob_offset + blob.bytes.size() + 8;
  std::vector<uint8_t> out(total, 0);
  std::memcpy(out.data(), kMagic, 8);
  put<uint32_t>(out, 8, kPlanVersion);
  put<uint32_t>(out, 12, static_cast<uint32_t>(kHeaderBytes));
  put<uint64_t>(out, 16, text.size());
  put<uint64_t>(out, 24, blob_offset);
  put<uint64_t>(out, 32, blob.bytes.size());
  put<uint64_t>(out, 40, total);
  std::memcpy(out.data() + kHeaderBytes, text.data(), text.size());
  if (!blob.bytes.empty()) std::memcpy(out.data() + blob_offset, blob.bytes.data(), blob.bytes.size());
  put<uint64_t>(out, total - 8, versioned_checksum(kPlanVersion, out.data(), total - 8, kFnvBasis));
  return out;
}

namespace {

struct Header {
  uint64_t json_bytes, blob_offset, blob_bytes, total;
};

Header check_container(const uint8_t* data, size_t size, bool verify_checksum = true) {
  if (!data && size) throw PlanError("plan: null data");
  if (size < 8 || std::memcmp(data, kMagic, 8) != 0) {
    if (size < 8) throw PlanError("plan: truncated (" + std::to_string(size) + " bytes, not even a header)");
    throw PlanError("plan: bad magic (not a kiln plan)");
  }
  if (size < kHeaderBytes + 8)
    throw PlanError("plan: truncated (" + std::to_string(size) + " bytes; the header alone needs " +
                    std::to_string(kHeaderBytes + 8) + ")");
  uint32_t version = get<uint32_t>(data, 8);
  if (version != kPlanVersion && version != 1)
    throw PlanError("plan: unsupported format version " + std::to_string(version) + " (this build reads versions 1 to " +
                    std::to_string(kPlanVersion) + "); recompile the model with this kiln to rebuild the plan");
  if (get<uint32_t>(data, 12) != kHeaderBytes) throw PlanError("plan: corrupt header (header size)");
  Header h{get<uint64_t>(data, 16), get<uint64_t>(data, 24), get<uint64_t>(data, 32), get<uint64_t>(data, 40)};
  if (h.total > size)
    throw PlanError("plan: truncated (the header says " + std::to_string(h.total) + " bytes, got " +
                    std::to_string(size) + ")");
  if (h.total < size)
    throw PlanError("plan: " + std::to_string(size - h.total) + " unexpected bytes after the end of the plan");
  // sections must lie in order inside the file; written so that no sum can overflow
  bool ok = h.json_bytes <= h.total - kHeaderBytes - 8 && h.blob_offset >= kHeaderBytes + h.json_bytes &&
            h.blob_offset % 64 == 0 && h.blob_offset <= h.total - 8 && h.blob_bytes == h.total - 8 - h.blob_offset;
  if (!ok) throw PlanError("plan: corrupt header (section sizes out of range)");
  if (verify_checksum && versioned_checksum(version, data, h.total - 8, kFnvBasis) != get<uint64_t>(data, h.total - 8))
    throw PlanError("plan: checksum mismatch (the plan is corrupted)");
  return h;
}

}  // namespace

Plan Plan::deserialize(const uint8_t* data, size_t size) { return load(nullptr, data, size); }

Plan Plan::deserialize_verified(std::shared_ptr<const uint8_t> owner, const uint8_t* data, size_t size) {
  if (!owner) throw PlanError("plan: deserialize_verified needs the buffer's owner");
  return load(std::move(owner), data, size);
}

Plan Plan::load(std::shared_ptr<const uint8_t> owner, const uint8_t* data, size_t size) {
  using nlohmann::json;
  Header h = check_container(data, size, /*verify_checksum=*/owner == nullptr);
  json j;
  try {
    // A plan description nests ~10 levels (dimension expressions up to 64 more).
    j = plan_json::parse_bounded(data + kHeaderBytes, h.json_bytes, 256);
  } catch (const PlanError& e) {
    throw PlanError(std::string("plan: bad description: ") + e.what());
  } catch (const std::exception& e) {
    throw PlanError(std::string("plan: bad description: ") + e.what());
  }

  // Constants alias the weight blob: in the owner's buffer where it is 64-byte aligned, else in
  // one aligned copy.
  plan_json::BlobReader blob;
  if (owner && reinterpret_cast<uintptr_t>(data + h.blob_offset) % 64 == 0) {
    blob.base = std::shared_ptr<const uint8_t>(std::move(owner), data + h.blob_offset);
    blob.size = h.blob_bytes;
  } else {
    auto* p = static_cast<uint8_t*>(::operator new(std::max<size_t>(h.blob_bytes, 1), std::align_val_t(64)));
    if (h.blob_bytes) std::memcpy(p, data + h.blob_offset, h.blob_bytes);
    blob.base = std::shared_ptr<const uint8_t>(p, [](const uint8_t* q) {
      ::operator delete(const_cast<uint8_t*>(q), std::align_val_t(64));
    });
    blob.size = h.blob_bytes;
  }

  Plan plan;
  Impl& impl = *plan.impl_;
  Network& net = *impl.network;
  std::string where = "description";
  try {
    int device = j.at("device").get<int>();
    if (device != 0 && device != 1) throw PlanError("bad device " + std::to_string(device));
    impl.device = static_cast<DeviceKind>(device);
    int precision = j.at("precision").get<int>();
    if (precision < 0 || precision > 2) throw PlanError("bad precision " + std::to_string(precision));
    impl.precision = static_cast<Precision>(precision);
    for (auto& [s, r] : j.at("profile").items()) {
      SymbolRange range{r.at(0).get<int64_t>(), r.at(1).get<int64_t>(), r.at(2).get<int64_t>()};
      if (range.min < 0 || range.min > range.opt || range.opt > range.max)
        throw PlanError("bad profile range for symbol '" + s + "'");
      impl.profile[s] = range;
    }
    impl.memory.peak_activation_bytes = j.at("memory").at("peak_activation_bytes").get<size_t>();
    impl.memory.weight_bytes = j.at("memory").at("weight_bytes").get<size_t>();
    std::map<int64_t, Tensor*> by_id;
    auto tensor = [&](const json& id, const std::string& what) {
      auto it = by_id.find(id.get<int64_t>());
      if (it == by_id.end()) throw PlanError(what + " refers to unknown tensor id " + id.dump());
      return it->second;
    };
    for (const json& in : j.at("inputs")) {
      std::string name = in.at("name").get<std::string>();
      where = "input '" + name + "'";
      DataType dt = static_cast<DataType>(in.at("dtype").get<int>());
      if (in.at("dtype").get<int>() < 0 || in.at("dtype").get<int>() > 7) throw PlanError("bad dtype");
      Tensor* t = net.add_input(name, dt, plan_json::shape_from_json(in.at("shape")));
      if (!by_id.emplace(in.at("id").get<int64_t>(), t).second) throw PlanError("duplicate tensor id");
    }
    for (const json& l : j.at("layers")) {
      std::string name = l.at("name").get<std::string>();
      where = "layer '" + name + "'";
      std::vector<Tensor*> ins;
      for (const json& id : l.at("inputs")) ins.push_back(tensor(id, "an input"));
      LayerParams params = plan_json::params_from_json(l.at("kind").get<std::string>(), l.at("params"), blob);
      Layer* layer = net.add_layer(name, ins, std::move(params));
      if (auto o = l.find("origin"); o != l.end()) net.set_origin(layer, o->get<std::string>());
      const json& outs = l.at("outputs");
      if (outs.size() != layer->outputs().size())
        throw PlanError("declares " + std::to_string(outs.size()) + " outputs, its parameters give " +
                        std::to_string(layer->outputs().size()));
      for (size_t i = 0; i < outs.size(); ++i)
        if (!by_id.emplace(outs[i].get<int64_t>(), layer->outputs()[i]).second) throw PlanError("duplicate tensor id");
    }
    where = "outputs";
    for (const json& o : j.at("outputs")) net.mark_output(tensor(o.at("tensor"), "an output"), o.at("name").get<std::string>());
    if (j.contains("build_log")) impl.build_log = j.at("build_log").get<std::vector<std::string>>();
    if (j.contains("workspace_limit")) impl.workspace_limit = j.at("workspace_limit").get<size_t>();
    where = "device code";
    if (j.contains("cuda_arch")) {
      impl.cuda_arch = j.at("cuda_arch").get<int>();
      if (impl.cuda_arch < 0 || impl.cuda_arch > 10000) throw PlanError("bad GPU architecture " + std::to_string(impl.cuda_arch));
      if (impl.device != DeviceKind::kCUDA && impl.cuda_arch != 0) throw PlanError("a CPU plan names a GPU architecture");
    }
    if (j.contains("device_code"))
      for (const json& k : j.at("device_code")) {
        const std::string key = k.at("key").get<std::string>();
        // "sm_90:nvrtc...": plans from before cuda_arch was recorded name it only here
        const size_t colon = key.find(':');
        if (impl.device != DeviceKind::kCUDA || key.rfind("sm_", 0) != 0 || colon == std::string::npos)
          throw PlanError("bad kernel key '" + key + "'");
        const int arch = std::atoi(key.substr(3, colon - 3).c_str());
        if (impl.cuda_arch == 0) impl.cuda_arch = arch;
        if (arch != impl.cuda_arch)
          throw PlanError("kernel '" + key + "' is not for the plan's architecture sm_" + std::to_string(impl.cuda_arch));
        const Weights w = blob.get(k.at("bytes"));
        impl.device_code[key] = std::string(reinterpret_cast<const char*>(w.data.get()), w.nbytes());
      }
    net.verify();
    where = "shapes";
    if (const std::vector<std::string> unbound = plan.unbound_symbols(); !unbound.empty())
      throw PlanError("size " + unbound[0] + " is used but neither an input nor a layer defines it");
  } catch (const PlanError& e) {
    throw PlanError("plan: " + where + ": " + e.what());
  } catch (const std::exception& e) {
    throw PlanError("plan: " + where + ": " + e.what());
  }
  compute_buffer_plan(net, impl.device, &impl.lifetimes, &impl.aliases);
  return plan;
}

}  // namespace kiln::engine
