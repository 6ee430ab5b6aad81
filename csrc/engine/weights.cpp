#include "engine/weights.h"

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace dkd {
namespace engine {
namespace {

[[noreturn]] void wfail(const std::string& path, int64_t offset, const std::string& msg) {
    throw Error(DKD_ERR_WEIGHTS, located_byte(path, offset, msg));
}

template <typename T>
T read_le(const std::string& d, size_t off) {
    T v;
    std::memcpy(&v, d.data() + off, sizeof v);  // little-endian hosts only (x86-64, aarch64)
    return v;
}

}  // namespace

WeightsFile parse_weights(const std::string& data, const std::string& path,
                          const std::vector<std::unique_ptr<Layer>>& layers) {
    WeightsFile wf;
    const int64_t total = (int64_t)data.size();
    if (total < 12) wfail(path, 0, str("file has ", total, " bytes, a header needs at least 12"));
    int32_t major = read_le<int32_t>(data, 0), minor = read_le<int32_t>(data, 4), revision = read_le<int32_t>(data, 8);
    if (major < 0 || minor < 0 || major > 1000 || minor > 1000)
        wfail(path, 0, str("bad header: version ", major, ".", minor, ".", revision, " is not a Darknet weights version"));
    const int64_t hsize = 12 + (major * 10 + minor >= 2 ? 8 : 4);
    if (total < hsize)
        wfail(path, total, str("file has ", total, " bytes, the version ", major, ".", minor, " header needs ", hsize));
    wf.seen = hsize == 20 ? read_le<uint64_t>(data, 12) : read_le<uint32_t>(data, 12);
    // weights.py:expected_size counts the header the model would write (version 0.2.5: 20 bytes).
    int64_t expected = 20;
    for (const auto& l : layers) expected += 4 * l->num_weights();
    int64_t offset = hsize;
    std::vector<std::pair<const Layer*, int64_t>> blobs;  // (layer, offset)
    for (const auto& l : layers) {
        int64_t need = 4 * l->num_weights();
        if (need == 0) continue;
        if (offset == total) break;  // clean end at a layer boundary: partial file
        if (offset + need > total)
            wfail(path, offset,
                  str("file too short: layer ", l->index, " (", l->kind, ", ", l->out.c, " filters) needs ", need,
                      " bytes at offset ", offset, ", only ", total - offset, " left (file ", total, " bytes, expected ",
                      expected, ")"));
        blobs.emplace_back(l.get(), offset);
        offset += need;
        wf.layers_loaded = l->index + 1;
    }
    if (offset != total)
        wfail(path, offset,
              str("file too long: ", total - offset, " bytes left after the last layer (file ", total,
                  " bytes, expected ", expected, ")"));
    // All layers covered (the file ended after the last layer that stores weights).
    bool complete = true;
    for (const auto& l : layers)
        if (l->num_weights() > 0 && l->index >= wf.layers_loaded) complete = false;
    if (complete) wf.layers_loaded = (int64_t)layers.size();
    std::vector<float> buf;
    for (auto& b : blobs) {
        Layer* l = const_cast<Layer*>(b.first);
        buf.resize(l->num_weights());
        std::memcpy(buf.data(), data.data() + b.second, buf.size() * 4);
        l->set_weights(buf.data());
    }
    wf.version[0] = major, wf.version[1] = minor, wf.version[2] = revision;
    return wf;
}

WeightsFile read_weights(const std::string& path, const std::vector<std::unique_ptr<Layer>>& layers) {
    std::string data;
    int err = 0;
    if (!read_file(path, &data, &err))
        throw Error(DKD_ERR_WEIGHTS, str(path, ": cannot read weights: ", std::strerror(err)));
    return parse_weights(data, path, layers);
}

}  // namespace engine
}  // namespace dkd
