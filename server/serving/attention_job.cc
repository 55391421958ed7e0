#include "server/serving/attention_job.h"

namespace attn::server {

kernels::AttentionInput AttentionJob::MakeKernelInput() const {
  kernels::AttentionInput in;
  in.batch = batch;
  in.q_len = q_len;
  in.kv_len = kv_len;
  in.query = query.data();
  in.key = key.empty() ? query.data() : key.data();
  in.value = !value.empty() ? value.data() : in.key;
  in.causal = causal;
  in.key_lengths = key_lengths.empty() ? nullptr : key_lengths.data();
  in.mask_kind = mask_kind;
  switch (mask_kind) {
    case kernels::MaskKind::kNone:
      in.mask = nullptr;
      break;
    case kernels::MaskKind::kAdditive:
      in.mask = additive_mask.data();
      break;
    case kernels::MaskKind::kBoolean:
      in.mask = bool_mask.data();
      break;
  }
  in.mask_per_batch = mask_per_batch;
  return in;
}

}  // namespace attn::server
