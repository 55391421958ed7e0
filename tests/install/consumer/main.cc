// consumer TARGET OUT: health, then one Attend of a fixed [1, 4, 256] input
// on the demo model; writes the output floats to OUT, one per line.
#include <cstdio>
#include <fstream>
#include <vector>

#include "client/attn_client.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: consumer TARGET OUT\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<attn::Client>> client =
      attn::Client::Create(argv[1]);
  if (!client.ok()) return 1;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<attn::HealthStatus> health = (*client)->Health("", deadline);
  if (!health.ok() || *health != attn::HealthStatus::kServing) return 1;
  std::vector<float> x(4 * 256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) / 17;
  attn::v1::AttendRequest request;
  request.set_model("demo");
  *request.mutable_query() = *attn::MakeTensor(x, {1, 4, 256});
  absl::StatusOr<attn::v1::AttendResponse> response =
      (*client)->Attend(request, deadline);
  if (!response.ok()) {
    std::fprintf(stderr, "%s\n", response.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::vector<float>> out =
      attn::TensorToFloats(response->output());
  if (!out.ok()) return 1;
  std::ofstream f(argv[2]);
  for (float v : *out) f << v << "\n";
  return 0;
}
