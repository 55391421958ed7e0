#include "server/models/checkpoint_loader.h"

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace attn::server {
namespace {

// Tensor names of one naming, relative to the prefix. Empty: not used.
struct NamingSpec {
  CheckpointNaming naming;
  const char* wq;  // the anchor: its presence selects the naming
  const char* wk;
  const char* wv;
  const char* wo;
  const char* bq;
  const char* bk;
  const char* bv;
  const char* bo;
  const char* packed_w;  // [wq; wk; wv] in one tensor
  const char* packed_b;  // [bq; bk; bv] in one tensor
};

constexpr NamingSpec kNamings[] = {
    {CheckpointNaming::kTorchPacked, "in_proj_weight", "", "",
     "out_proj.weight", "", "", "", "out_proj.bias", "in_proj_weight",
     "in_proj_bias"},
    {CheckpointNaming::kTorchSeparate, "q_proj_weight", "k_proj_weight",
     "v_proj_weight", "out_proj.weight", "", "", "", "out_proj.bias", "",
     "in_proj_bias"},
    {CheckpointNaming::kLlama, "q_proj.weight", "k_proj.weight",
     "v_proj.weight", "o_proj.weight", "q_proj.bias", "k_proj.bias",
     "v_proj.bias", "o_proj.bias", "", ""},
    {CheckpointNaming::kBert, "self.query.weight", "self.key.weight",
     "self.value.weight", "output.dense.weight", "self.query.bias",
     "self.key.bias", "self.value.bias", "output.dense.bias", "", ""},
};

struct Candidate {
  const NamingSpec* spec;
  std::string prefix;
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Reads and checks tensors of one (naming, prefix).
class LayerReader {
 public:
  LayerReader(const SafetensorsFile& file, const Candidate& c,
              const kernels::AttentionConfig& config)
      : file_(file), c_(c), config_(config) {}

  std::string Name(const char* suffix) const {
    return absl::StrCat(c_.prefix, suffix);
  }

  // Reads prefix+suffix, which must have `shape`. When !required and the
  // tensor is absent, returns an empty vector.
  absl::StatusOr<std::vector<float>> Read(const char* suffix,
                                          const std::vector<int64_t>& shape,
                                          bool required) const {
    const std::string name = Name(suffix);
    const SafetensorsTensorInfo* info = file_.Find(name);
    if (info == nullptr) {
      if (!required) return std::vector<float>();
      return absl::InvalidArgumentError(
          absl::StrCat(file_.source(), ": missing tensor '", name, "' (",
                       CheckpointNamingName(c_.spec->naming),
                       " naming, prefix '", c_.prefix, "')"));
    }
    if (info->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_.source(), ": tensor '", name, "': expected shape ",
          ShapeString(shape), ", got ", ShapeString(info->shape), " (d_model ",
          config_.d_model, ", num_heads ", config_.num_heads, ", num_kv_heads ",
          config_.num_kv_heads, ", head_dim ", config_.head_dim, ")"));
    }
    absl::StatusOr<std::vector<float>> values = file_.ReadAsFloat32(name);
    if (!values.ok()) return values.status();
    for (size_t i = 0; i < values->size(); ++i) {
      if (!std::isfinite((*values)[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(file_.source(), ": tensor '", name, "': element ", i,
                         " is not finite (", (*values)[i], ")"));
      }
    }
    return values;
  }

 private:
  const SafetensorsFile& file_;
  const Candidate& c_;
  const kernels::AttentionConfig& config_;
};

absl::StatusOr<std::vector<Candidate>> FindCandidates(
    const SafetensorsFile& file) {
  std::vector<Candidate> found;
  for (const SafetensorsTensorInfo& t : file.tensors()) {
    for (const NamingSpec& spec : kNamings) {
      if (!absl::EndsWith(t.name, spec.wq)) continue;
      std::string prefix = t.name.substr(0, t.name.size() - strlen(spec.wq));
      if (!prefix.empty() && prefix.back() != '.') continue;
      found.push_back({&spec, std::move(prefix)});
    }
  }
  return found;
}

std::string Describe(const Candidate& c) {
  return absl::StrCat(CheckpointNamingName(c.spec->naming), " naming ('",
                      c.prefix, c.spec->wq, "')");
}

}  // namespace

const char* CheckpointNamingName(CheckpointNaming naming) {
  switch (naming) {
    case CheckpointNaming::kTorchPacked:
      return "torch-packed";
    case CheckpointNaming::kTorchSeparate:
      return "torch-separate";
    case CheckpointNaming::kLlama:
      return "llama";
    case CheckpointNaming::kBert:
      return "bert";
  }
  return "unknown";
}

absl::StatusOr<AttentionCheckpoint> ExtractAttentionCheckpoint(
    const SafetensorsFile& file, const ModelConfig& model_config) {
  ATTN_ASSIGN_OR_RETURN(std::vector<Candidate> candidates,
                        FindCandidates(file));
  if (candidates.empty()) {
    std::vector<std::string> names;
    for (const auto& t : file.tensors()) {
      if (names.size() == 8) {
        names.push_back("...");
        break;
      }
      names.push_back(t.name);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        file.source(),
        ": no attention layer found: expected a tensor named [<prefix>.]"
        "in_proj_weight, q_proj_weight, q_proj.weight or self.query.weight; "
        "the file has ",
        file.tensors().size(), " tensors: ", absl::StrJoin(names, ", ")));
  }
  if (candidates.size() > 1) {
    std::vector<std::string> desc;
    for (const Candidate& c : candidates) desc.push_back(Describe(c));
    return absl::InvalidArgumentError(absl::StrCat(
        file.source(), ": ambiguous checkpoint: ", candidates.size(),
        " attention layers match: ", absl::StrJoin(desc, "; "),
        ". Export a single attention layer per file."));
  }
  const Candidate& c = candidates.front();
  const NamingSpec& spec = *c.spec;

  // d_model is the in_features of the query projection.
  const std::string anchor = absl::StrCat(c.prefix, spec.wq);
  const SafetensorsTensorInfo* q = file.Find(anchor);
  if (q->shape.size() != 2 || q->shape[1] <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.source(), ": tensor '", anchor,
        "': expected a 2-D [out_features, in_features] weight with "
        "in_features > 0, got shape ",
        ShapeString(q->shape)));
  }
  const int64_t d_model = q->shape[1];
  absl::StatusOr<kernels::AttentionConfig> resolved =
      ResolveAttentionConfig(model_config, d_model);
  if (!resolved.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.source(), ": config does not fit the checkpoint (d_model ",
        d_model, " from tensor '", anchor, "' shape ", ShapeString(q->shape),
        "): ", resolved.status().message()));
  }
  AttentionCheckpoint out;
  out.naming = spec.naming;
  out.prefix = c.prefix;
  out.config = *resolved;
  const int64_t e = d_model;
  const int64_t hq = out.config.num_heads * out.config.head_dim;
  const int64_t hkv = out.config.num_kv_heads * out.config.head_dim;
  kernels::AttentionWeights& w = out.weights;
  LayerReader r(file, c, out.config);

  if (*spec.packed_w != '\0') {
    ATTN_ASSIGN_OR_RETURN(std::vector<float> packed,
                          r.Read(spec.packed_w, {hq + 2 * hkv, e}, true));
    w.wq.assign(packed.begin(), packed.begin() + hq * e);
    w.wk.assign(packed.begin() + hq * e, packed.begin() + (hq + hkv) * e);
    w.wv.assign(packed.begin() + (hq + hkv) * e, packed.end());
  } else {
    ATTN_ASSIGN_OR_RETURN(w.wq, r.Read(spec.wq, {hq, e}, true));
    ATTN_ASSIGN_OR_RETURN(w.wk, r.Read(spec.wk, {hkv, e}, true));
    ATTN_ASSIGN_OR_RETURN(w.wv, r.Read(spec.wv, {hkv, e}, true));
  }
  ATTN_ASSIGN_OR_RETURN(w.wo, r.Read(spec.wo, {e, hq}, true));

  if (*spec.packed_b != '\0') {
    ATTN_ASSIGN_OR_RETURN(std::vector<float> packed,
                          r.Read(spec.packed_b, {hq + 2 * hkv}, false));
    if (!packed.empty()) {
      w.bq.assign(packed.begin(), packed.begin() + hq);
      w.bk.assign(packed.begin() + hq, packed.begin() + hq + hkv);
      w.bv.assign(packed.begin() + hq + hkv, packed.end());
    }
  } else {
    ATTN_ASSIGN_OR_RETURN(w.bq, r.Read(spec.bq, {hq}, false));
    ATTN_ASSIGN_OR_RETURN(w.bk, r.Read(spec.bk, {hkv}, false));
    ATTN_ASSIGN_OR_RETURN(w.bv, r.Read(spec.bv, {hkv}, false));
  }
  ATTN_ASSIGN_OR_RETURN(w.bo, r.Read(spec.bo, {e}, false));
  return out;
}

absl::StatusOr<AttentionCheckpoint> LoadAttentionCheckpoint(
    const std::string& path, const ModelConfig& config) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::ReadFile(path);
  if (!file.ok()) return file.status();
  return ExtractAttentionCheckpoint(*file, config);
}

std::string SerializeAttentionCheckpoint(const kernels::AttentionWeights& w,
                                         int64_t d_model,
                                         CheckpointNaming naming,
                                         const std::string& prefix,
                                         SafetensorsDType dtype) {
  const NamingSpec* spec = &kNamings[0];
  for (const NamingSpec& s : kNamings) {
    if (s.naming == naming) spec = &s;
  }
  const int64_t e = d_model;
  const auto hq = static_cast<int64_t>(w.wq.size()) / e;
  const auto hkv = static_cast<int64_t>(w.wk.size()) / e;
  std::vector<SafetensorsTensorData> out;
  auto add = [&](const char* suffix, std::vector<int64_t> shape,
                 const std::vector<float>& values) {
    if (values.empty()) return;
    out.push_back({absl::StrCat(prefix, suffix), SafetensorsDTypeName(dtype),
                   std::move(shape), EncodeFloats(values, dtype)});
  };
  auto concat = [](const std::vector<float>& a, const std::vector<float>& b,
                   const std::vector<float>& c) {
    std::vector<float> v(a);
    v.insert(v.end(), b.begin(), b.end());
    v.insert(v.end(), c.begin(), c.end());
    return v;
  };
  if (*spec->packed_w != '\0') {
    add(spec->packed_w, {hq + 2 * hkv, e}, concat(w.wq, w.wk, w.wv));
  } else {
    add(spec->wq, {hq, e}, w.wq);
    add(spec->wk, {hkv, e}, w.wk);
    add(spec->wv, {hkv, e}, w.wv);
  }
  if (*spec->packed_b != '\0') {
    add(spec->packed_b, {hq + 2 * hkv}, concat(w.bq, w.bk, w.bv));
  } else {
    add(spec->bq, {hq}, w.bq);
    add(spec->bk, {hkv}, w.bk);
    add(spec->bv, {hkv}, w.bv);
  }
  add(spec->wo, {e, hq}, w.wo);
  add(spec->bo, {e}, w.bo);
  return SerializeSafetensors(out, {{"format", "pt"}});
}

}  // namespace attn::server
