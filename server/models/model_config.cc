#include "server/models/model_config.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace attn::server {
namespace {

using Json = nlohmann::json;

// Reads the fields of one JSON object, reporting errors as INVALID_ARGUMENT
// "<path>: <key path>: <problem>". Every key read is remembered so that
// unknown keys can be reported afterwards.
class ObjectReader {
 public:
  ObjectReader(const Json& object, const std::string& path,
               std::string key_prefix)
      : object_(object), path_(path), prefix_(std::move(key_prefix)) {}

  absl::Status Error(const std::string& key, const std::string& problem) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": '", prefix_, key, "' ", problem));
  }

  // Integer field >= `min`; left unchanged when absent.
  absl::Status Int(const char* key, int64_t min, int64_t* out) {
    const Json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number_integer()) {
      return Error(key, absl::StrCat("must be an integer, got ", Show(*v)));
    }
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() >
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Error(key, absl::StrCat("is too large: ", Show(*v)));
    }
    const int64_t value = v->get<int64_t>();
    if (value < min) {
      return Error(key, absl::StrCat("must be >= ", min, ", got ", value));
    }
    *out = value;
    return absl::OkStatus();
  }

  absl::Status Bool(const char* key, bool* out) {
    const Json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) {
      return Error(key, absl::StrCat("must be true or false, got ", Show(*v)));
    }
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  // Finite number >= 0 (allow_zero) or > 0, at most `most`; left
  // unchanged when absent.
  absl::Status Number(const char* key, bool allow_zero, double most,
                      double* out) {
    const Json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) {
      return Error(key, absl::StrCat("must be a number, got ", Show(*v)));
    }
    const double value = v->get<double>();
    if (!std::isfinite(value) || value < 0 || (value == 0 && !allow_zero) ||
        value > most) {
      return Error(
          key, absl::StrCat("must be a finite number ",
                            allow_zero ? ">= 0" : "> 0", ", got ", Show(*v)));
    }
    *out = value;
    return absl::OkStatus();
  }

  absl::Status NonNegativeNumber(const char* key, double* out) {
    return Number(key, true, std::numeric_limits<double>::max(), out);
  }

  // Finite number > 0.
  absl::Status PositiveFloat(const char* key, float* out) {
    double value = *out;
    ATTN_RETURN_IF_ERROR(
        Number(key, false, std::numeric_limits<float>::max(), &value));
    *out = static_cast<float>(value);
    return absl::OkStatus();
  }

  absl::Status String(const char* key, std::string* out) {
    const Json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) {
      return Error(key, absl::StrCat("must be a string, got ", Show(*v)));
    }
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  // The object under `key`, or nullptr (absent). Errors if not an object.
  absl::StatusOr<const Json*> Object(const char* key) {
    const Json* v = Get(key);
    if (v != nullptr && !v->is_object()) {
      return Error(key, absl::StrCat("must be an object, got ", Show(*v)));
    }
    return v;
  }

  // The array under `key`, or nullptr (absent). Errors if not an array.
  absl::StatusOr<const Json*> Array(const char* key) {
    const Json* v = Get(key);
    if (v != nullptr && !v->is_array()) {
      return Error(key, absl::StrCat("must be an array, got ", Show(*v)));
    }
    return v;
  }

  // INVALID_ARGUMENT naming the first key that was never read.
  absl::Status CheckNoUnknownKeys(const char* known) const {
    for (const auto& [key, value] : object_.items()) {
      if (seen_.count(key) == 0) {
        return Error(
            key, absl::StrCat("is not a known key (known keys: ", known, ")"));
      }
    }
    return absl::OkStatus();
  }

 private:
  // Never dumps nested values (Json::dump() recurses).
  static std::string Show(const Json& v) {
    if (v.is_object()) return "an object";
    if (v.is_array()) return "an array";
    std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
  }

  const Json* Get(const char* key) {
    seen_.insert(key);
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }

  const Json& object_;
  const std::string& path_;
  std::string prefix_;
  std::set<std::string> seen_;
};

absl::Status ParseBatching(const Json& object, const std::string& path,
                           BatchingOptions* out) {
  ObjectReader r(object, path, "batching.");
  ATTN_RETURN_IF_ERROR(r.Int("max_batch_tokens", 1, &out->max_batch_tokens));
  ATTN_RETURN_IF_ERROR(
      r.Int("max_batch_requests", 1, &out->max_batch_requests));
  ATTN_RETURN_IF_ERROR(
      r.Int("max_queue_delay_us", 0, &out->max_queue_delay_us));
  ATTN_RETURN_IF_ERROR(r.Int("max_queue_size", 1, &out->max_queue_size));
  ATTN_RETURN_IF_ERROR(
      r.Int("default_timeout_us", 0, &out->default_timeout_us));
  return r.CheckNoUnknownKeys(
      "max_batch_tokens, max_batch_requests, max_queue_delay_us, "
      "max_queue_size, default_timeout_us");
}

absl::Status ParseSessions(const Json& object, const std::string& path,
                           SessionOptions* out) {
  ObjectReader r(object, path, "sessions.");
  ATTN_RETURN_IF_ERROR(r.Int("max_sessions", 1, &out->max_sessions));
  float timeout = static_cast<float>(out->idle_timeout_s);
  ATTN_RETURN_IF_ERROR(r.PositiveFloat("idle_timeout_s", &timeout));
  out->idle_timeout_s = timeout;
  return r.CheckNoUnknownKeys("max_sessions, idle_timeout_s");
}

// "warmup": an array of {batch, seq, return_attention_weights} objects.
absl::Status ParseWarmup(const Json& array, const std::string& path,
                         int64_t max_sequence_length,
                         std::vector<WarmupShape>* out) {
  constexpr size_t kMaxWarmupShapes = 64;
  if (array.size() > kMaxWarmupShapes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": 'warmup' has ", array.size(),
                     " entries; at most ", kMaxWarmupShapes, " are allowed"));
  }
  out->clear();
  for (size_t i = 0; i < array.size(); ++i) {
    const std::string prefix = absl::StrCat("warmup[", i, "].");
    if (!array[i].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": 'warmup[", i,
                       "]' must be an object like {\"batch\": 1, "
                       "\"seq\": 16}"));
    }
    ObjectReader r(array[i], path, prefix);
    WarmupShape shape;
    ATTN_RETURN_IF_ERROR(r.Int("batch", 1, &shape.batch));
    ATTN_RETURN_IF_ERROR(r.Int("seq", 1, &shape.seq));
    ATTN_RETURN_IF_ERROR(
        r.Bool("return_attention_weights", &shape.return_attention_weights));
    ATTN_RETURN_IF_ERROR(
        r.CheckNoUnknownKeys("batch, seq, return_attention_weights"));
    if (shape.seq > max_sequence_length) {
      return r.Error(
          "seq", absl::StrCat("(", shape.seq, ") exceeds max_sequence_length (",
                              max_sequence_length, ")"));
    }
    // Bounded so that a typo cannot make start-up allocate gigabytes.
    constexpr int64_t kMaxWarmupTokens = int64_t{1} << 20;
    if (shape.batch > kMaxWarmupTokens / shape.seq) {
      return r.Error(
          "batch", absl::StrCat("x seq is over ", kMaxWarmupTokens, " tokens"));
    }
    out->push_back(shape);
  }
  return absl::OkStatus();
}

// "version_policy": exactly one of {"latest": N}, {"all": true},
// {"specific": [v, ...]}.
absl::Status ParseVersionPolicy(const Json& object, const std::string& path,
                                VersionPolicy* out) {
  constexpr char kForms[] =
      "expected one of {\"latest\": N}, {\"all\": true}, "
      "{\"specific\": [1, 3]}";
  if (object.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": 'version_policy' has ", object.size(), " keys; ", kForms));
  }
  ObjectReader r(object, path, "version_policy.");
  VersionPolicy policy;
  if (object.contains("latest")) {
    policy.kind = VersionPolicy::Kind::kLatest;
    ATTN_RETURN_IF_ERROR(r.Int("latest", 1, &policy.latest));
  } else if (object.contains("all")) {
    bool all = false;
    ATTN_RETURN_IF_ERROR(r.Bool("all", &all));
    if (!all) {
      return r.Error("all", absl::StrCat("must be true; ", kForms));
    }
    policy.kind = VersionPolicy::Kind::kAll;
  } else if (object.contains("specific")) {
    absl::StatusOr<const Json*> list = r.Array("specific");
    if (!list.ok()) return list.status();
    if ((*list)->empty()) {
      return r.Error("specific", "must list at least one version");
    }
    policy.kind = VersionPolicy::Kind::kSpecific;
    for (const Json& v : **list) {
      if (!v.is_number_integer() || v.get<int64_t>() < 1) {
        return r.Error("specific",
                       "must hold integers >= 1 (version directory names)");
      }
      policy.specific.push_back(v.get<int64_t>());
    }
    std::sort(policy.specific.begin(), policy.specific.end());
    policy.specific.erase(
        std::unique(policy.specific.begin(), policy.specific.end()),
        policy.specific.end());
  }
  ATTN_RETURN_IF_ERROR(r.CheckNoUnknownKeys("latest, all, specific"));
  *out = std::move(policy);
  return absl::OkStatus();
}

}  // namespace

std::vector<int64_t> VersionPolicy::Select(
    const std::vector<int64_t>& available) const {
  switch (kind) {
    case Kind::kAll:
      return available;
    case Kind::kSpecific: {
      std::vector<int64_t> out;
      std::set_intersection(available.begin(), available.end(),
                            specific.begin(), specific.end(),
                            std::back_inserter(out));
      return out;
    }
    case Kind::kLatest:
    default: {
      const size_t n = std::min(available.size(), static_cast<size_t>(latest));
      return std::vector<int64_t>(available.end() - n, available.end());
    }
  }
}

std::string VersionPolicy::ToString() const {
  switch (kind) {
    case Kind::kAll:
      return "all";
    case Kind::kSpecific:
      return absl::StrCat("specific [", absl::StrJoin(specific, ", "), "]");
    case Kind::kLatest:
    default:
      return absl::StrCat("latest ", latest);
  }
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& path) {
  const Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": must be a JSON object"));
  }
  ModelConfig config;
  ObjectReader r(root, path, "");
  if (!root.contains("num_heads")) {
    return r.Error("num_heads", "is required (number of attention heads)");
  }
  ATTN_RETURN_IF_ERROR(r.Int("num_heads", 1, &config.num_heads));
  ATTN_RETURN_IF_ERROR(r.Int("num_kv_heads", 1, &config.num_kv_heads));
  ATTN_RETURN_IF_ERROR(r.Int("head_dim", 1, &config.head_dim));
  ATTN_RETURN_IF_ERROR(r.Bool("causal", &config.causal));
  ATTN_RETURN_IF_ERROR(r.String("compute_dtype", &config.compute_dtype));
  ATTN_RETURN_IF_ERROR(r.PositiveFloat("scale", &config.scale));
  ATTN_RETURN_IF_ERROR(
      r.Int("max_sequence_length", 1, &config.max_sequence_length));
  ATTN_RETURN_IF_ERROR(r.NonNegativeNumber("rope_theta", &config.rope_theta));
  ATTN_RETURN_IF_ERROR(r.String("rope_style", &config.rope_style));
  ATTN_RETURN_IF_ERROR(r.Int("rope_dims", 0, &config.rope_dims));
  ATTN_RETURN_IF_ERROR(r.Int("sliding_window", 0, &config.sliding_window));
  absl::StatusOr<const Json*> batching = r.Object("batching");
  if (!batching.ok()) return batching.status();
  if (*batching != nullptr) {
    ATTN_RETURN_IF_ERROR(ParseBatching(**batching, path, &config.batching));
  }
  ATTN_RETURN_IF_ERROR(r.String("kv_cache_dtype", &config.kv_cache_dtype));
  absl::StatusOr<const Json*> sessions = r.Object("sessions");
  if (!sessions.ok()) return sessions.status();
  if (*sessions != nullptr) {
    ATTN_RETURN_IF_ERROR(ParseSessions(**sessions, path, &config.sessions));
  }
  absl::StatusOr<const Json*> warmup = r.Array("warmup");
  if (!warmup.ok()) return warmup.status();
  if (*warmup != nullptr) {
    ATTN_RETURN_IF_ERROR(ParseWarmup(**warmup, path, config.max_sequence_length,
                                     &config.warmup));
  } else {
    // The default shapes never ask for more than the model accepts.
    for (WarmupShape& shape : config.warmup) {
      shape.seq = std::min(shape.seq, config.max_sequence_length);
    }
  }
  absl::StatusOr<const Json*> policy = r.Object("version_policy");
  if (!policy.ok()) return policy.status();
  if (*policy != nullptr) {
    ATTN_RETURN_IF_ERROR(
        ParseVersionPolicy(**policy, path, &config.version_policy));
  }
  ATTN_RETURN_IF_ERROR(r.CheckNoUnknownKeys(
      "num_heads, num_kv_heads, head_dim, causal, compute_dtype, scale, "
      "max_sequence_length, batching, warmup, version_policy, kv_cache_dtype, "
      "sessions, rope_theta, rope_style, rope_dims, sliding_window"));
  if (config.rope_style != "half" && config.rope_style != "interleaved") {
    return r.Error("rope_style",
                   absl::StrCat("must be \"half\" (Hugging Face rotate_half) "
                                "or \"interleaved\" (GPT-J), got \"",
                                config.rope_style, "\""));
  }
  if (config.rope_dims % 2 != 0) {
    return r.Error("rope_dims",
                   absl::StrCat("must be even (dimensions rotate in pairs; 0 "
                                "= head_dim), got ",
                                config.rope_dims));
  }
  if (config.rope_dims != 0 && config.rope_theta == 0.0) {
    return r.Error("rope_dims",
                   "is set but 'rope_theta' is 0 (no rotary "
                   "embedding); set rope_theta (Llama: 10000)");
  }
  if (config.head_dim != 0 && config.rope_dims > config.head_dim) {
    return r.Error("rope_dims", absl::StrCat("(", config.rope_dims,
                                             ") must be <= head_dim (",
                                             config.head_dim, ")"));
  }
  if (config.sliding_window > 0 && !config.causal) {
    return r.Error("sliding_window",
                   "needs a causal model: set \"causal\": true (a sliding "
                   "window is defined for causal attention only)");
  }
  if (config.kv_cache_dtype != "float32" &&
      config.kv_cache_dtype != "bfloat16") {
    return r.Error("kv_cache_dtype",
                   absl::StrCat("must be \"float32\" or \"bfloat16\", got \"",
                                config.kv_cache_dtype, "\""));
  }

  if (config.compute_dtype != "float32" && config.compute_dtype != "bfloat16") {
    return r.Error("compute_dtype",
                   absl::StrCat("must be \"float32\" or \"bfloat16\", got \"",
                                config.compute_dtype, "\""));
  }
  if (config.num_kv_heads != 0 && config.num_heads % config.num_kv_heads != 0) {
    return r.Error("num_kv_heads", absl::StrCat("(", config.num_kv_heads,
                                                ") must divide num_heads (",
                                                config.num_heads, ")"));
  }
  return config;
}

absl::StatusOr<kernels::AttentionConfig> ResolveAttentionConfig(
    const ModelConfig& config, int64_t d_model) {
  if (d_model <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("d_model must be > 0, got ", d_model));
  }
  if (config.num_heads <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads must be > 0, got ", config.num_heads));
  }
  kernels::AttentionConfig out;
  out.d_model = d_model;
  out.num_heads = config.num_heads;
  out.num_kv_heads =
      config.num_kv_heads == 0 ? config.num_heads : config.num_kv_heads;
  if (out.num_kv_heads <= 0 || out.num_heads % out.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_kv_heads (", out.num_kv_heads,
                     ") must divide num_heads (", out.num_heads, ")"));
  }
  if (config.head_dim > 0) {
    out.head_dim = config.head_dim;
  } else {
    if (d_model % config.num_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "num_heads (", config.num_heads, ") must divide d_model (", d_model,
          ") unless head_dim is given"));
    }
    out.head_dim = d_model / config.num_heads;
  }
  out.scale = config.scale > 0
                  ? config.scale
                  : static_cast<float>(
                        1.0 / std::sqrt(static_cast<double>(out.head_dim)));
  out.rope_theta = config.rope_theta;
  out.rope_style = config.rope_style == "interleaved"
                       ? kernels::AttentionConfig::RopeStyle::kInterleaved
                       : kernels::AttentionConfig::RopeStyle::kHalf;
  out.rope_dims = config.rope_dims;
  if (out.rope_dims > out.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("rope_dims (", out.rope_dims,
                                                   ") must be <= head_dim (",
                                                   out.head_dim, ")"));
  }
  out.sliding_window = config.sliding_window;
  if (config.compute_dtype == "float32") {
    out.compute_dtype = kernels::ComputeDType::kFloat32;
  } else if (config.compute_dtype == "bfloat16") {
    out.compute_dtype = kernels::ComputeDType::kBFloat16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "compute_dtype must be \"float32\" or \"bfloat16\", got \"",
        config.compute_dtype, "\""));
  }
  return out;
}

}  // namespace attn::server
