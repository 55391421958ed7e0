#include "client/loadgen/payloads.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/tensor_convert.h"

namespace attn::loadgen {

absl::StatusOr<PayloadSet> PayloadSet::Build(const Options& options,
                                             int64_t d_model) {
  if (d_model < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("d_model must be >= 1, got ", d_model));
  }
  PayloadSet set;
  set.spec_owner_ = std::make_shared<SeqSpec>(options.seq);
  set.spec_ = set.spec_owner_.get();
  const std::vector<int64_t> lengths = options.seq.Support();
  const int64_t item = DataTypeSize(options.dtype);
  int64_t bytes = 0;
  for (int64_t sq : lengths) {
    bytes += options.batch * (sq + options.key_len) * d_model * item;
  }
  if (bytes > kMaxTotalBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--seq=", options.seq.text(), " with --batch=", options.batch,
        " and d_model ", d_model, " needs ", bytes >> 20,
        " MiB of pre-built payloads (limit ", kMaxTotalBytes >> 20,
        " MiB): use a weighted list such as 64:0.5,512:0.5"));
  }
  // One pool of uniform [-1, 1) values; each length uses a prefix of it.
  const int64_t longest = std::max(options.seq.Max(), options.key_len);
  std::mt19937_64 rng(options.seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> pool(options.batch * longest * d_model);
  for (float& v : pool) v = uniform(rng);

  std::optional<v1::Tensor> key;
  if (options.key_len > 0) {
    const int64_t n = options.batch * options.key_len * d_model;
    auto t =
        MakeTensor(absl::MakeConstSpan(pool.data(), n),
                   {options.batch, options.key_len, d_model}, options.dtype);
    if (!t.ok()) return t.status();
    key = std::move(*t);
  }
  for (int64_t sq : lengths) {
    auto payload = std::make_shared<Payload>();
    v1::AttendRequest& r = payload->request;
    r.set_model(options.model);
    r.set_version(options.version);
    const int64_t n = options.batch * sq * d_model;
    auto q = MakeTensor(absl::MakeConstSpan(pool.data(), n),
                        {options.batch, sq, d_model}, options.dtype);
    if (!q.ok()) return q.status();
    *r.mutable_query() = std::move(*q);
    if (key.has_value()) *r.mutable_key() = *key;
    if (options.causal.has_value()) r.set_causal(*options.causal);
    payload->tokens = options.batch * sq;
    set.by_length_[sq] = std::move(payload);
  }
  set.total_bytes_ = bytes;
  return set;
}

const Payload& PayloadSet::Pick(std::mt19937_64& rng) const {
  if (by_length_.size() == 1) return *by_length_.begin()->second;
  return *by_length_.at(spec_->Sample(rng));
}

}  // namespace attn::loadgen
