#include "server/api/v2_mapping.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attn::server {
namespace {

using InputTensor = inference::ModelInferRequest::InferInputTensor;

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// The inputs attnserve accepts, with the datatypes each may have.
struct InputSpec {
  const char* name;
  const char* datatypes;  // for messages
};
constexpr InputSpec kInputs[] = {
    {"query", "FP32, BF16 or FP16"}, {"key", "FP32, BF16 or FP16"},
    {"value", "FP32, BF16 or FP16"}, {"attn_mask", "FP32, BF16, FP16 or BOOL"},
    {"key_lengths", "INT32"},
};

const InputSpec* FindInput(absl::string_view name) {
  for (const InputSpec& s : kInputs) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

std::string InputNames() {
  std::vector<std::string> names;
  for (const InputSpec& s : kInputs) names.push_back(s.name);
  return absl::StrJoin(names, ", ");
}

std::string ShapeText(const InputTensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.shape(), ", "), "]");
}

// Maps a v2 datatype string to attn.v1 (INT32 is only for key_lengths and
// has no attn.v1 dtype: DATA_TYPE_UNSPECIFIED with *is_int32 set).
absl::StatusOr<v1::DataType> InputDataType(const InputTensor& t,
                                           const InputSpec& spec,
                                           bool* is_int32) {
  *is_int32 = false;
  const std::string& d = t.datatype();
  const bool is_key_lengths = spec.name == absl::string_view("key_lengths");
  const bool is_mask = spec.name == absl::string_view("attn_mask");
  if (!is_key_lengths) {
    if (d == "FP32") return v1::FLOAT32;
    if (d == "BF16") return v1::BFLOAT16;
    if (d == "FP16") return v1::FLOAT16;
    if (d == "BOOL" && is_mask) return v1::BOOL;
  } else if (d == "INT32") {
    *is_int32 = true;
    return v1::DATA_TYPE_UNSPECIFIED;
  }
  return Invalid(absl::StrCat("input '", t.name(), "' has datatype '", d,
                              "'; expected ", spec.datatypes));
}

// prod(shape), or an error for a negative dimension or an overflow.
absl::StatusOr<int64_t> Elements(const InputTensor& t) {
  int64_t n = 1;
  for (int64_t dim : t.shape()) {
    if (dim < 0) {
      return Invalid(absl::StrCat("input '", t.name(), "' has shape ",
                                  ShapeText(t), "; dimensions must be >= 0"));
    }
    if (__builtin_mul_overflow(n, dim, &n)) {
      return Invalid(absl::StrCat("input '", t.name(), "' has shape ",
                                  ShapeText(t), ", too many elements"));
    }
  }
  return n;
}

// Which typed contents field holds values (name), and how many.
struct Filled {
  const char* field;
  int count;
};
std::vector<Filled> FilledContents(const inference::InferTensorContents& c) {
  std::vector<Filled> f;
  if (c.bool_contents_size())
    f.push_back({"bool_contents", c.bool_contents_size()});
  if (c.int_contents_size())
    f.push_back({"int_contents", c.int_contents_size()});
  if (c.int64_contents_size())
    f.push_back({"int64_contents", c.int64_contents_size()});
  if (c.uint_contents_size())
    f.push_back({"uint_contents", c.uint_contents_size()});
  if (c.uint64_contents_size())
    f.push_back({"uint64_contents", c.uint64_contents_size()});
  if (c.fp32_contents_size())
    f.push_back({"fp32_contents", c.fp32_contents_size()});
  if (c.fp64_contents_size())
    f.push_back({"fp64_contents", c.fp64_contents_size()});
  if (c.bytes_contents_size())
    f.push_back({"bytes_contents", c.bytes_contents_size()});
  return f;
}

// The raw little-endian bytes of input `t` from its typed contents.
absl::StatusOr<std::string> TypedBytes(const InputTensor& t, v1::DataType dtype,
                                       bool is_int32) {
  const char* expected = is_int32               ? "int_contents"
                         : dtype == v1::BOOL    ? "bool_contents"
                         : dtype == v1::FLOAT32 ? "fp32_contents"
                                                : nullptr;
  const std::vector<Filled> filled = FilledContents(t.contents());
  if (expected == nullptr) {
    if (filled.empty()) {
      return Invalid(absl::StrCat(
          "input '", t.name(), "' (", t.datatype(), ") has no data; send ",
          t.datatype(),
          " tensors in raw_input_contents (typed contents have no ",
          t.datatype(), " field)"));
    }
    return Invalid(absl::StrCat("input '", t.name(), "' is ", t.datatype(),
                                " but holds contents.", filled[0].field,
                                "; send ", t.datatype(),
                                " tensors in raw_input_contents"));
  }
  for (const Filled& f : filled) {
    if (std::strcmp(f.field, expected) != 0) {
      return Invalid(absl::StrCat("input '", t.name(), "' is ", t.datatype(),
                                  " but holds contents.", f.field,
                                  "; put its values in contents.", expected));
    }
  }
  absl::StatusOr<int64_t> n = Elements(t);
  if (!n.ok()) return n.status();
  const int64_t have = filled.empty() ? 0 : filled[0].count;
  if (have != *n) {
    return Invalid(absl::StrCat("input '", t.name(), "' has ", have,
                                " values in contents.", expected, " but shape ",
                                ShapeText(t), " needs ", *n));
  }
  std::string bytes;
  const inference::InferTensorContents& c = t.contents();
  if (is_int32) {
    bytes.resize(static_cast<size_t>(have) * 4);
    std::memcpy(bytes.data(), c.int_contents().data(), bytes.size());
  } else if (dtype == v1::BOOL) {
    bytes.resize(static_cast<size_t>(have));
    for (int i = 0; i < have; ++i) bytes[i] = c.bool_contents(i) ? 1 : 0;
  } else {
    bytes.resize(static_cast<size_t>(have) * 4);
    std::memcpy(bytes.data(), c.fp32_contents().data(), bytes.size());
  }
  return bytes;
}

// key_lengths: INT32 [B] or [B, 1], little-endian bytes -> repeated int32.
absl::Status SetKeyLengths(const InputTensor& t, const std::string& bytes,
                           v1::AttendRequest* attend) {
  const bool ok_shape =
      t.shape_size() == 1 || (t.shape_size() == 2 && t.shape(1) == 1);
  if (!ok_shape) {
    return Invalid(absl::StrCat("input 'key_lengths' has shape ", ShapeText(t),
                                "; expected [B] or [B, 1] (one length per "
                                "batch item)"));
  }
  absl::StatusOr<int64_t> n = Elements(t);
  if (!n.ok()) return n.status();
  if (static_cast<int64_t>(bytes.size()) != *n * 4) {
    return Invalid(absl::StrCat("input 'key_lengths' has ", bytes.size(),
                                " bytes of data, but shape ", ShapeText(t),
                                " INT32 needs ", *n, " x 4 = ", *n * 4));
  }
  for (int64_t i = 0; i < *n; ++i) {
    int32_t v;
    std::memcpy(&v, bytes.data() + 4 * i, 4);
    attend->add_key_lengths(v);
  }
  return absl::OkStatus();
}

v1::Tensor* TensorOf(absl::string_view name, v1::AttendRequest* attend) {
  if (name == "query") return attend->mutable_query();
  if (name == "key") return attend->mutable_key();
  if (name == "value") return attend->mutable_value();
  return attend->mutable_attn_mask();
}

// A bool request parameter; absent leaves *out unchanged.
absl::Status BoolParameter(const inference::ModelInferRequest& request,
                           const char* name, bool* present, bool* out) {
  *present = false;
  auto it = request.parameters().find(name);
  if (it == request.parameters().end()) return absl::OkStatus();
  if (it->second.parameter_choice_case() !=
      inference::InferParameter::kBoolParam) {
    return Invalid(absl::StrCat("parameter '", name,
                                "' must be a bool (bool_param; in JSON true "
                                "or false)"));
  }
  *present = true;
  *out = it->second.bool_param();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> ParseModelVersion(absl::string_view version) {
  if (version.empty()) return 0;
  int64_t v = 0;
  if (!absl::SimpleAtoi(version, &v) || v < 1) {
    return Invalid(absl::StrCat("model version '", version,
                                "' is not a positive integer; leave it empty "
                                "for the newest version"));
  }
  return v;
}

absl::StatusOr<V2Request> FromInferRequest(
    const inference::ModelInferRequest& request) {
  V2Request out;
  v1::AttendRequest& attend = out.attend;
  attend.set_model(request.model_name());
  absl::StatusOr<int64_t> version = ParseModelVersion(request.model_version());
  if (!version.ok()) return version.status();
  attend.set_version(*version);
  attend.set_request_id(request.id());

  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return Invalid(absl::StrCat(
        "raw_input_contents has ", request.raw_input_contents_size(),
        " entries but the request has ", request.inputs_size(),
        " inputs; send one raw entry per input, in order"));
  }
  bool seen[std::size(kInputs)] = {};
  for (int i = 0; i < request.inputs_size(); ++i) {
    const InputTensor& t = request.inputs(i);
    const InputSpec* spec = FindInput(t.name());
    if (spec == nullptr) {
      return Invalid(absl::StrCat("unknown input '", t.name(),
                                  "'; the inputs are ", InputNames()));
    }
    bool& was_seen = seen[spec - kInputs];
    if (was_seen) {
      return Invalid(absl::StrCat("input '", t.name(), "' is given twice"));
    }
    was_seen = true;
    bool is_int32 = false;
    absl::StatusOr<v1::DataType> dtype = InputDataType(t, *spec, &is_int32);
    if (!dtype.ok()) return dtype.status();
    std::string bytes;
    if (raw) {
      if (!FilledContents(t.contents()).empty()) {
        return Invalid(absl::StrCat(
            "input '", t.name(),
            "' has typed contents while the request uses raw_input_contents; "
            "use one or the other for all inputs"));
      }
      bytes = request.raw_input_contents(i);
    } else {
      absl::StatusOr<std::string> typed = TypedBytes(t, *dtype, is_int32);
      if (!typed.ok()) return typed.status();
      bytes = *std::move(typed);
    }
    if (is_int32) {
      absl::Status s = SetKeyLengths(t, bytes, &attend);
      if (!s.ok()) return s;
      continue;
    }
    v1::Tensor* tensor = TensorOf(t.name(), &attend);
    tensor->mutable_shape()->Assign(t.shape().begin(), t.shape().end());
    tensor->set_dtype(*dtype);
    *tensor->mutable_data() = std::move(bytes);
  }
  if (!seen[0]) {
    return Invalid(
        "input 'query' is missing; send query as FP32, BF16 or FP16 "
        "[B, Sq, d_model] or [Sq, d_model]");
  }

  bool present = false;
  bool causal = false;
  if (absl::Status s = BoolParameter(request, "causal", &present, &causal);
      !s.ok()) {
    return s;
  }
  if (present) attend.set_causal(causal);
  bool weights = false;
  if (absl::Status s = BoolParameter(request, "return_attention_weights",
                                     &present, &weights);
      !s.ok()) {
    return s;
  }
  out.want_weights = weights;
  if (request.outputs_size() > 0) {
    out.want_output = false;
    for (const auto& o : request.outputs()) {
      if (o.name() == "output") {
        out.want_output = true;
      } else if (o.name() == "attention_weights") {
        out.want_weights = true;
      } else {
        return Invalid(absl::StrCat("unknown output '", o.name(),
                                    "'; the outputs are output, "
                                    "attention_weights"));
      }
    }
  }
  attend.set_return_attention_weights(out.want_weights);
  return out;
}

const char* V2DataTypeName(v1::DataType dtype) {
  switch (dtype) {
    case v1::FLOAT32:
      return "FP32";
    case v1::BFLOAT16:
      return "BF16";
    case v1::FLOAT16:
      return "FP16";
    case v1::BOOL:
      return "BOOL";
    default:
      return "INVALID";
  }
}

void ToInferResponse(const V2Request& request, v1::AttendResponse response,
                     inference::ModelInferResponse* out) {
  out->set_model_name(response.model());
  out->set_model_version(absl::StrCat(response.version()));
  out->set_id(response.request_id());
  auto add = [out](const char* name, v1::Tensor* t) {
    auto* o = out->add_outputs();
    o->set_name(name);
    o->set_datatype(V2DataTypeName(t->dtype()));
    o->mutable_shape()->Assign(t->shape().begin(), t->shape().end());
    out->add_raw_output_contents(std::move(*t->mutable_data()));
  };
  if (request.want_output) add("output", response.mutable_output());
  if (request.want_weights && response.has_attention_weights()) {
    add("attention_weights", response.mutable_attention_weights());
  }
}

namespace {

template <typename T>
void AddMeta(T* list, const char* name, const char* datatype,
             std::vector<int64_t> shape) {
  auto* t = list->Add();
  t->set_name(name);
  t->set_datatype(datatype);
  for (int64_t d : shape) t->add_shape(d);
}

template <typename T>
void AddConfigTensor(T* list, const char* name, inference::DataType type,
                     std::vector<int64_t> dims) {
  auto* t = list->Add();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
}

}  // namespace

void FillModelMetadata(const Model& model, const ModelRepository& repository,
                       inference::ModelMetadataResponse* out) {
  out->set_name(model.name);
  std::vector<int64_t> versions;
  for (const auto& m : repository.List()) {
    if (m->name == model.name) versions.push_back(m->version);
  }
  std::sort(versions.begin(), versions.end());
  for (int64_t v : versions) out->add_versions(absl::StrCat(v));
  out->set_platform(kV2Platform);
  const int64_t d = model.attention.d_model;
  const int64_t h = model.attention.num_heads;
  auto* in = out->mutable_inputs();
  AddMeta(in, "query", "FP32", {-1, -1, d});
  AddMeta(in, "key", "FP32", {-1, -1, d});
  AddMeta(in, "value", "FP32", {-1, -1, d});
  AddMeta(in, "attn_mask", "FP32", {-1, -1, -1});
  AddMeta(in, "key_lengths", "INT32", {-1});
  AddMeta(out->mutable_outputs(), "output", "FP32", {-1, -1, d});
  AddMeta(out->mutable_outputs(), "attention_weights", "FP32", {-1, h, -1, -1});
  auto& p = *out->mutable_properties();
  p["d_model"] = absl::StrCat(d);
  p["num_heads"] = absl::StrCat(h);
  p["num_kv_heads"] = absl::StrCat(model.attention.num_kv_heads);
  p["causal"] = model.config.causal ? "true" : "false";
  p["max_sequence_length"] = absl::StrCat(model.config.max_sequence_length);
  p["query_datatypes"] = "FP32,BF16,FP16";
  p["attn_mask_datatypes"] = "FP32,BF16,FP16,BOOL";
  p["optional_inputs"] = "key,value,attn_mask,key_lengths";
}

void FillModelConfig(const Model& model, inference::ModelConfig* out) {
  out->set_name(model.name);
  out->set_platform(kV2Platform);
  out->set_backend("attnserve");
  // The batch dimension is B of [B, Sq, d_model]; dims below leave it out.
  out->set_max_batch_size(static_cast<int32_t>(
      std::min<int64_t>(model.config.batching.max_batch_tokens, INT32_MAX)));
  const int64_t d = model.attention.d_model;
  const int64_t h = model.attention.num_heads;
  auto* in = out->mutable_input();
  AddConfigTensor(in, "query", inference::TYPE_FP32, {-1, d});
  AddConfigTensor(in, "key", inference::TYPE_FP32, {-1, d});
  AddConfigTensor(in, "value", inference::TYPE_FP32, {-1, d});
  AddConfigTensor(in, "attn_mask", inference::TYPE_FP32, {-1, -1});
  AddConfigTensor(in, "key_lengths", inference::TYPE_INT32, {});
  for (int i = 1; i < in->size(); ++i) in->Mutable(i)->set_optional(true);
  AddConfigTensor(out->mutable_output(), "output", inference::TYPE_FP32,
                  {-1, d});
  AddConfigTensor(out->mutable_output(), "attention_weights",
                  inference::TYPE_FP32, {h, -1, -1});
  out->mutable_dynamic_batching()->set_max_queue_delay_microseconds(
      static_cast<uint64_t>(
          std::max<int64_t>(0, model.config.batching.max_queue_delay_us)));
}

}  // namespace attn::server
