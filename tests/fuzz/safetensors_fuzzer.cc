// libFuzzer target: the safetensors header parser and the checkpoint
// extraction behind it. Any input must yield a status, never a crash, a
// sanitizer report or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/models/checkpoint_loader.h"
#include "server/models/model_config.h"
#include "server/models/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<attn::server::SafetensorsFile> file =
      attn::server::SafetensorsFile::Parse(
          std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) return 0;
  // Touch every tensor's data through the bounds-checked readers.
  for (const attn::server::SafetensorsTensorInfo& t : file->tensors()) {
    (void)file->RawData(t.name);
    (void)file->ReadAsFloat32(t.name);
  }
  attn::server::ModelConfig config;
  config.num_heads = 2;
  (void)attn::server::ExtractAttentionCheckpoint(*file, config);
  return 0;
}
