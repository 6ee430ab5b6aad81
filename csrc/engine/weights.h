// Darknet .weights reading (parser.c:load_weights_upto), the same rules and messages as
// darknet_kd/model/weights.py: header int32 major, minor, revision, then `seen` as uint64
// when major*10+minor >= 2 else uint32; then each layer's floats in cfg order.  A file that
// ends exactly at a layer boundary is a partial file (Darknet's .conv.N); one that ends
// inside a layer or has bytes left over is an error naming the byte offset.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/net.h"

namespace dkd {
namespace engine {

struct WeightsFile {
    int32_t version[3] = {0, 0, 0};
    uint64_t seen = 0;
    int64_t layers_loaded = 0;  // the layers [0, layers_loaded) got their weights
};

// Reads `path` into the layers (set_weights); throws DKD_ERR_WEIGHTS "path (byte N): msg".
WeightsFile read_weights(const std::string& path, const std::vector<std::unique_ptr<Layer>>& layers);
// The same on bytes already in memory (the fuzz tests use it).
WeightsFile parse_weights(const std::string& data, const std::string& path,
                          const std::vector<std::unique_ptr<Layer>>& layers);

}  // namespace engine
}  // namespace dkd
