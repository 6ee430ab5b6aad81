// Helpers shared by the layer sources: Python's floor division and the layer-reference rule.
#pragma once

#include <cstdint>
#include <string>

#include "engine/cfg.h"
#include "engine/plan.h"

namespace dkd {
namespace engine {

inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Darknet: negative = relative to this layer, otherwise absolute; must be earlier (layers.py:_resolve).
inline int resolve_layer(const Section& sec, const std::string& key, int64_t ref, int index) {
    int64_t src = ref < 0 ? index + ref : ref;
    if (!(0 <= src && src < index))
        sec.error(str(key, "=", ref, " points to layer ", src, ", outside layers 0..", index - 1), key);
    return (int)src;
}

// "%*d" / "%-*s" formatting for the layer table.
std::string pad_left(const std::string& s, size_t width);
std::string pad_right(const std::string& s, size_t width);
std::string fmt_int(int64_t v, int width);

}  // namespace engine
}  // namespace dkd
