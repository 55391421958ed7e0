#include "server/api/v2_json.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "nlohmann/json.hpp"

namespace attn::server {
namespace {

using nlohmann::json;

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// Appends the leaves of a flat or nested JSON array to `out`.
void Flatten(const json& v, std::vector<const json*>* out) {
  if (v.is_array()) {
    for (const json& e : v) Flatten(e, out);
  } else {
    out->push_back(&v);
  }
}

absl::Status ToParameter(const std::string& key, const json& v,
                         inference::InferParameter* p) {
  if (v.is_boolean()) {
    p->set_bool_param(v.get<bool>());
  } else if (v.is_number_integer()) {
    p->set_int64_param(v.get<int64_t>());
  } else if (v.is_number_float()) {
    p->set_double_param(v.get<double>());
  } else if (v.is_string()) {
    p->set_string_param(v.get<std::string>());
  } else {
    return Invalid(
        absl::StrCat("parameter '", key, "' must be a bool, number or string"));
  }
  return absl::OkStatus();
}

template <typename T>
void Append(std::string* bytes, T value) {
  char b[sizeof(T)];
  std::memcpy(b, &value, sizeof(T));
  bytes->append(b, sizeof(T));
}

// The raw bytes of JSON `data` for `datatype`.
absl::StatusOr<std::string> DataBytes(const std::string& name,
                                      const std::string& datatype,
                                      const json& data, int64_t expected) {
  std::vector<const json*> leaves;
  Flatten(data, &leaves);
  if (expected >= 0 && static_cast<int64_t>(leaves.size()) != expected) {
    return Invalid(absl::StrCat("input '", name, "' has ", leaves.size(),
                                " values in data but its shape needs ",
                                expected));
  }
  std::string bytes;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const json& v = *leaves[i];
    if (datatype == "BOOL") {
      if (!v.is_boolean()) {
        return Invalid(absl::StrCat("input '", name, "' data[", i,
                                    "] is not true/false (datatype BOOL)"));
      }
      bytes.push_back(v.get<bool>() ? 1 : 0);
    } else if (datatype == "INT32") {
      if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN ||
          v.get<int64_t>() > INT32_MAX) {
        return Invalid(absl::StrCat("input '", name, "' data[", i,
                                    "] is not an INT32 integer"));
      }
      Append<int32_t>(&bytes, static_cast<int32_t>(v.get<int64_t>()));
    } else {
      if (!v.is_number()) {
        return Invalid(absl::StrCat("input '", name, "' data[", i,
                                    "] is not a number (datatype ", datatype,
                                    ")"));
      }
      const float f = v.get<float>();
      if (datatype == "FP16") {
        Append<uint16_t>(&bytes, FloatToHalf(f));
      } else if (datatype == "BF16") {
        Append<uint16_t>(&bytes, FloatToBFloat16(f));
      } else {
        Append<float>(&bytes, f);
      }
    }
  }
  return bytes;
}

// prod(shape) when every dim is >= 0 and it does not overflow, else -1
// (the shape checks later name the problem).
int64_t Elements(const inference::ModelInferRequest::InferInputTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

bool Supported(const std::string& datatype) {
  return datatype == "FP32" || datatype == "FP16" || datatype == "BF16" ||
         datatype == "BOOL" || datatype == "INT32";
}

}  // namespace

absl::StatusOr<JsonInferRequest> ParseJsonInferRequest(
    absl::string_view body, std::optional<int64_t> header_length) {
  absl::string_view text = body;
  absl::string_view binary;
  if (header_length.has_value()) {
    if (*header_length < 0 ||
        *header_length > static_cast<int64_t>(body.size())) {
      return Invalid(absl::StrCat("Inference-Header-Content-Length is ",
                                  *header_length, " but the body has ",
                                  body.size(), " bytes"));
    }
    text = body.substr(0, static_cast<size_t>(*header_length));
    binary = body.substr(static_cast<size_t>(*header_length));
  }
  const json doc = json::parse(text.begin(), text.end(), nullptr,
                               /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Invalid(
        "the request body is not a JSON object (with binary tensors, set "
        "Inference-Header-Content-Length to the JSON's length)");
  }
  JsonInferRequest out;
  inference::ModelInferRequest& r = out.request;
  try {
    if (doc.contains("id")) r.set_id(doc.at("id").get<std::string>());
    if (doc.contains("parameters")) {
      for (const auto& [key, v] : doc.at("parameters").items()) {
        if (key == "binary_data_output") {
          out.all_outputs_binary = v.is_boolean() && v.get<bool>();
          continue;
        }
        absl::Status s = ToParameter(key, v, &(*r.mutable_parameters())[key]);
        if (!s.ok()) return s;
      }
    }
    size_t offset = 0;
    if (doc.contains("inputs")) {
      for (const json& in : doc.at("inputs")) {
        auto* t = r.add_inputs();
        t->set_name(in.at("name").get<std::string>());
        t->set_datatype(in.at("datatype").get<std::string>());
        for (const json& d : in.at("shape")) t->add_shape(d.get<int64_t>());
        std::string* bytes = r.add_raw_input_contents();
        const json* params =
            in.contains("parameters") ? &in.at("parameters") : nullptr;
        if (params != nullptr && params->contains("binary_data_size")) {
          const int64_t n = params->at("binary_data_size").get<int64_t>();
          if (n < 0 || offset + static_cast<size_t>(n) > binary.size()) {
            return Invalid(absl::StrCat(
                "input '", t->name(), "' has binary_data_size ", n, " but ",
                binary.size() - offset,
                " bytes of binary data are left after the JSON header"));
          }
          bytes->assign(binary.data() + offset, static_cast<size_t>(n));
          offset += static_cast<size_t>(n);
        } else if (in.contains("data")) {
          if (!Supported(t->datatype())) continue;  // FromInferRequest says
          absl::StatusOr<std::string> b =
              DataBytes(t->name(), t->datatype(), in.at("data"), Elements(*t));
          if (!b.ok()) return b.status();
          *bytes = *std::move(b);
        } else {
          return Invalid(absl::StrCat("input '", t->name(),
                                      "' has neither data nor "
                                      "parameters.binary_data_size"));
        }
      }
    }
    if (offset != binary.size()) {
      return Invalid(absl::StrCat(
          binary.size() - offset,
          " bytes of binary data after the JSON header belong to no input; "
          "set binary_data_size on each binary input"));
    }
    if (doc.contains("outputs")) {
      for (const json& o : doc.at("outputs")) {
        const std::string name = o.at("name").get<std::string>();
        r.add_outputs()->set_name(name);
        if (o.contains("parameters") &&
            o.at("parameters").contains("binary_data") &&
            o.at("parameters").at("binary_data").get<bool>()) {
          out.binary_outputs.push_back(name);
        }
      }
    }
  } catch (const json::exception& e) {
    return Invalid(absl::StrCat(
        "malformed inference request: ", e.what(),
        " (inputs need name (string), datatype (string), shape (integers) "
        "and data)"));
  }
  return out;
}

std::string EncodeJsonInferResponse(const JsonInferRequest& request,
                                    const inference::ModelInferResponse& r,
                                    std::optional<int64_t>* header_length) {
  std::string body =
      absl::StrCat("{\"model_name\":", json(r.model_name()).dump(),
                   ",\"model_version\":", json(r.model_version()).dump());
  if (!r.id().empty()) absl::StrAppend(&body, ",\"id\":", json(r.id()).dump());
  body += ",\"outputs\":[";
  std::string binary;
  for (int i = 0; i < r.outputs_size(); ++i) {
    const auto& o = r.outputs(i);
    const std::string& raw = r.raw_output_contents(i);
    absl::StrAppend(&body, i ? "," : "", "{\"name\":\"", o.name(),
                    "\",\"datatype\":\"", o.datatype(), "\",\"shape\":[");
    for (int d = 0; d < o.shape_size(); ++d) {
      absl::StrAppend(&body, d ? "," : "", o.shape(d));
    }
    body += "]";
    bool as_binary = request.all_outputs_binary;
    for (const std::string& n : request.binary_outputs) {
      as_binary = as_binary || n == o.name();
    }
    if (as_binary) {
      absl::StrAppend(
          &body, ",\"parameters\":{\"binary_data_size\":", raw.size(), "}}");
      binary += raw;
      continue;
    }
    body += ",\"data\":[";
    const size_t n = raw.size() / sizeof(float);  // outputs are FP32
    char buf[32];
    for (size_t k = 0; k < n; ++k) {
      float f;
      std::memcpy(&f, raw.data() + k * sizeof(float), sizeof(float));
      if (k) body.push_back(',');
      if (!std::isfinite(f)) f = 0.0f;  // never produced; JSON has no NaN
      const auto res = std::to_chars(buf, buf + sizeof(buf), f);
      body.append(buf, res.ptr);
    }
    body += "]}";
  }
  body += "]}";
  if (binary.empty()) {
    header_length->reset();
    return body;
  }
  *header_length = static_cast<int64_t>(body.size());
  return body + binary;
}

std::string ModelMetadataJson(const inference::ModelMetadataResponse& m) {
  json j;
  j["name"] = m.name();
  j["versions"] = json::array();
  for (const std::string& v : m.versions()) j["versions"].push_back(v);
  j["platform"] = m.platform();
  auto tensors = [](const auto& list) {
    json a = json::array();
    for (const auto& t : list) {
      json shape = json::array();
      for (int64_t d : t.shape()) shape.push_back(d);
      a.push_back(
          {{"name", t.name()}, {"datatype", t.datatype()}, {"shape", shape}});
    }
    return a;
  };
  j["inputs"] = tensors(m.inputs());
  j["outputs"] = tensors(m.outputs());
  json props = json::object();
  for (const auto& [k, v] : m.properties()) props[k] = v;
  j["properties"] = props;
  return j.dump();
}

}  // namespace attn::server
