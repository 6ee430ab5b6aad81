#include "engine/cfg.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

namespace dkd {
namespace engine {
namespace {

// Section names Darknet knows (parser.c:string_to_layer_type), as cfg.py.
const std::map<std::string, std::string> kAliases = {
    {"network", "net"}, {"conv", "convolutional"}, {"max", "maxpool"}, {"avg", "avgpool"},
    {"conn", "connected"}, {"soft", "softmax"}, {"local_avg", "local_avgpool"}, {"empty", "silence"}};
const std::set<std::string> kSupported = {"net", "convolutional", "maxpool", "route", "shortcut",
                                          "upsample", "yolo", "dropout", "avgpool"};
const std::set<std::string> kDarknetOnly = {
    "scale_channels", "sam", "crop", "cost", "detection", "region", "gaussian_yolo", "local",
    "deconvolutional", "activation", "logistic", "l2norm", "crnn", "gru", "lstm", "conv_lstm",
    "history", "rnn", "connected", "local_avgpool", "reorg3d", "reorg", "lrn", "normalization",
    "batchnorm", "softmax", "contrastive", "silence", "implicit"};

// ---- UTF-8 as Python decodes it --------------------------------------------------------
// Returns -1 when `data` is valid UTF-8 (strict: no overlongs, surrogates or > U+10FFFF),
// else the offset of the first bad sequence (Python's UnicodeDecodeError.start).
int64_t utf8_error(const std::string& data, std::vector<char32_t>* cps, std::vector<size_t>* starts) {
    const auto* s = reinterpret_cast<const unsigned char*>(data.data());
    size_t n = data.size(), i = 0;
    while (i < n) {
        unsigned c = s[i];
        char32_t cp;
        size_t len;
        if (c < 0x80) {
            cp = c, len = 1;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return (int64_t)i;
            cp = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F), len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
            if (i + 1 >= n || s[i + 1] < lo || s[i + 1] > hi) return (int64_t)i;
            if (i + 2 >= n || (s[i + 2] & 0xC0) != 0x80) return (int64_t)i;
            cp = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F), len = 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
            if (i + 1 >= n || s[i + 1] < lo || s[i + 1] > hi) return (int64_t)i;
            if (i + 2 >= n || (s[i + 2] & 0xC0) != 0x80) return (int64_t)i;
            if (i + 3 >= n || (s[i + 3] & 0xC0) != 0x80) return (int64_t)i;
            cp = ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
            len = 4;
        } else {
            return (int64_t)i;
        }
        cps->push_back(cp);
        starts->push_back(i);
        i += len;
    }
    starts->push_back(n);
    return -1;
}

void put_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += (char)cp;
    } else if (cp < 0x800) {
        out += (char)(0xC0 | (cp >> 6));
        out += (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += (char)(0xE0 | (cp >> 12));
        out += (char)(0x80 | ((cp >> 6) & 0x3F));
        out += (char)(0x80 | (cp & 0x3F));
    } else {
        out += (char)(0xF0 | (cp >> 18));
        out += (char)(0x80 | ((cp >> 12) & 0x3F));
        out += (char)(0x80 | ((cp >> 6) & 0x3F));
        out += (char)(0x80 | (cp & 0x3F));
    }
}

// Python str.splitlines() boundaries and str.isspace() (what str.split() splits on).
bool is_line_break(char32_t c) {
    return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
           c == 0x85 || c == 0x2028 || c == 0x2029;
}
bool is_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

std::string encode(const std::u32string& s) {
    std::string out;
    for (char32_t c : s) put_utf8(out, c);
    return out;
}

// Python str.strip() (whitespace at both ends) -> UTF-8.
std::string py_strip(const std::u32string& s) {
    size_t b = 0, e = s.size();
    while (b < e && is_space(s[b])) ++b;
    while (e > b && is_space(s[e - 1])) --e;
    return encode(s.substr(b, e - b));
}

std::string lower_ascii(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    return s;
}

// Digits with single underscores between them (Python's int/float literal rule).
bool digits_ok(const std::string& s, size_t b, size_t e) {
    if (b >= e) return false;
    if (s[b] == '_' || s[e - 1] == '_') return false;
    for (size_t i = b; i < e; ++i) {
        if (s[i] == '_') {
            if (s[i + 1] == '_') return false;
        } else if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

std::string no_underscores(const std::string& s) {
    std::string r;
    for (char c : s)
        if (c != '_') r += c;
    return r;
}

}  // namespace

// ---- messages ----------------------------------------------------------------------------

std::string located(const std::string& path, int64_t line, const std::string& msg) {
    return str(path, ":", line, ": ", msg);
}
std::string located_byte(const std::string& path, int64_t offset, const std::string& msg) {
    return str(path, " (byte ", offset, "): ", msg);
}
void cfg_fail(const std::string& path, int64_t line, const std::string& msg) {
    throw Error(DKD_ERR_CFG, located(path, line, msg));
}

std::string py_repr(const std::string& s) {
    bool has_sq = s.find('\'') != std::string::npos, has_dq = s.find('"') != std::string::npos;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    std::string out(1, q);
    for (unsigned char c : s) {
        if (c == (unsigned char)q || c == '\\') {
            out += '\\';
            out += (char)c;
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += (char)c;  // printable ASCII and UTF-8 bytes (Python keeps printable non-ASCII)
        }
    }
    out += q;
    return out;
}

std::string py_float(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[64];
    for (int prec = 1; prec <= 17; ++prec) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    std::string s = buf;
    // Python's repr: exponent form only outside [1e-4, 1e16); otherwise plain with ".0".
    double a = std::fabs(v);
    if (a != 0 && (a < 1e-4 || a >= 1e16)) {
        size_t e = s.find('e');
        if (e != std::string::npos) {
            std::string mant = s.substr(0, e), ex = s.substr(e + 1);
            int exp = std::atoi(ex.c_str());
            char eb[16];
            std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
            return mant + eb;
        }
        return s;
    }
    if (s.find('e') != std::string::npos) {  // %g chose exponent form inside Python's plain range
        std::snprintf(buf, sizeof buf, "%.17f", v);
        s = buf;
        for (int prec = 0; prec <= 17; ++prec) {
            std::snprintf(buf, sizeof buf, "%.*f", prec, v);
            if (std::strtod(buf, nullptr) == v) {
                s = buf;
                break;
            }
        }
    }
    if (s.find('.') == std::string::npos) s += ".0";
    return s;
}

bool py_parse_int(const std::string& s, int64_t* out) {
    size_t b = 0;
    bool neg = false;
    if (b < s.size() && (s[b] == '+' || s[b] == '-')) neg = s[b++] == '-';
    if (!digits_ok(s, b, s.size())) return false;
    // Python ints are unbounded; saturate (every check downstream rejects such values).
    const int64_t lim = int64_t(1) << 62;
    int64_t v = 0;
    for (size_t i = b; i < s.size(); ++i) {
        if (s[i] == '_') continue;
        v = v * 10 + (s[i] - '0');
        if (v > lim) v = lim;
    }
    *out = neg ? -v : v;
    return true;
}

bool py_parse_float(const std::string& s, double* out) {
    size_t b = 0;
    if (b < s.size() && (s[b] == '+' || s[b] == '-')) ++b;
    std::string body = lower_ascii(s.substr(b));
    if (body == "inf" || body == "infinity" || body == "nan") {
        *out = std::strtod(s.c_str(), nullptr);
        return true;
    }
    // digits [. digits] | . digits, then optional e[+-]digits
    size_t i = b, n = s.size();
    auto run = [&](size_t start) {
        size_t j = start;
        while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) ++j;
        return j;
    };
    size_t int_end = run(i);
    bool has_int = int_end > i;
    if (has_int && !digits_ok(s, i, int_end)) return false;
    i = int_end;
    bool has_frac = false;
    if (i < n && s[i] == '.') {
        size_t fe = run(i + 1);
        if (fe > i + 1) {
            if (!digits_ok(s, i + 1, fe)) return false;
            has_frac = true;
        }
        i = fe;
    }
    if (!has_int && !has_frac) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
        size_t ee = run(i);
        if (!digits_ok(s, i, ee)) return false;
        i = ee;
    }
    if (i != n) return false;
    *out = std::strtod(no_underscores(s).c_str(), nullptr);
    return true;
}

// ---- Section -----------------------------------------------------------------------------

const Option* Section::find(const std::string& key) const {
    for (const auto& o : options)
        if (o.key == key) return &o;
    return nullptr;
}

void Section::error(const std::string& msg, const std::string& key) const {
    const Option* o = key.empty() ? nullptr : find(key);
    std::string where = index < 0 ? str("[", name, "]") : str("layer ", index, " [", name, "]");
    cfg_fail(path, o ? o->line : line, where + ": " + msg);
}

const std::string* Section::raw(const std::string& key) const {
    const Option* o = find(key);
    if (!o) return nullptr;
    o->used = true;
    return &o->value;
}

std::string Section::get_str(const std::string& key, const std::string& def) const {
    const std::string* v = raw(key);
    return v ? *v : def;
}

int64_t Section::get_int(const std::string& key, int64_t def) const {
    const std::string* v = raw(key);
    if (!v) return def;
    int64_t r;
    if (!py_parse_int(*v, &r)) error(str(key, "=", py_repr(*v), " is not an integer"), key);
    return r;
}

double Section::get_float(const std::string& key, double def) const {
    const std::string* v = raw(key);
    if (!v) return def;
    double r;
    if (!py_parse_float(*v, &r)) error(str(key, "=", py_repr(*v), " is not a number"), key);
    return r;
}

bool Section::get_bool(const std::string& key, bool def) const {
    if (!has(key)) return def;
    return get_int(key, 0) != 0;
}

// Comma-separated values of `key` parsed with `parse` (empty items skipped, as Python's
// get_ints/get_floats); `what` names the list kind in the error.
template <typename T, typename Parse>
static std::vector<T> parse_list(const Section& sec, const std::string& key, const std::string* v,
                                 Parse parse, const char* what) {
    std::vector<T> out;
    if (!v) return out;
    size_t start = 0;
    while (start <= v->size()) {
        size_t comma = v->find(',', start);
        if (comma == std::string::npos) comma = v->size();
        std::string item = v->substr(start, comma - start);
        if (!item.empty()) {
            T r;
            if (!parse(item, &r)) sec.error(str(key, "=", py_repr(*v), " is not a list of ", what), key);
            out.push_back(r);
        }
        start = comma + 1;
    }
    return out;
}

std::vector<int64_t> Section::get_ints(const std::string& key, bool* present) const {
    const std::string* v = raw(key);
    if (present) *present = v != nullptr;
    return parse_list<int64_t>(*this, key, v, py_parse_int, "integers");
}

std::vector<double> Section::get_floats(const std::string& key, bool* present) const {
    const std::string* v = raw(key);
    if (present) *present = v != nullptr;
    return parse_list<double>(*this, key, v, py_parse_float, "numbers");
}

std::string Section::get_choice(const std::string& key, const std::vector<std::string>& choices,
                                const std::string& def) const {
    std::string v = get_str(key, def);
    for (const auto& c : choices)
        if (c == v) return v;
    std::vector<std::string> sorted(choices);
    std::sort(sorted.begin(), sorted.end());
    std::string list;
    for (size_t i = 0; i < sorted.size(); ++i) list += (i ? ", " : "") + sorted[i];
    error(str(key, "=", py_repr(v), ": expected one of ", list), key);
}

void Section::mark_used(std::initializer_list<const char*> keys) const {
    for (const char* k : keys)
        if (const Option* o = find(k)) o->used = true;
}

void Cfg::collect_unused() {
    auto one = [&](const Section& s) {
        for (const auto& o : s.options)
            if (!o.used)
                warnings.push_back(str(path, ":", o.line, ": unused field '", o.key, " = ", o.value, "' in [", s.name, "]"));
    };
    one(net);
    for (const auto& s : layers) one(s);
}

// ---- parsing -----------------------------------------------------------------------------

Cfg parse_cfg_text(const std::string& text, const std::string& path) {
    std::vector<char32_t> cps;
    std::vector<size_t> starts;
    if (utf8_error(text, &cps, &starts) >= 0) cfg_fail(path, 1, "not a text file (invalid UTF-8)");
    std::vector<Section> sections;
    std::vector<std::string> warnings;
    size_t i = 0, n = cps.size();
    int lineno = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && !is_line_break(cps[e])) ++e;
        std::u32string raw(cps.begin() + i, cps.begin() + e);
        i = e;
        if (i < n) i += (cps[i] == '\r' && i + 1 < n && cps[i + 1] == '\n') ? 2 : 1;
        ++lineno;
        std::u32string stripped;
        for (char32_t c : raw)
            if (!is_space(c)) stripped += c;
        std::string line = encode(stripped);
        if (line.empty() || line[0] == '#' || line[0] == ';') continue;
        if (line[0] == '[') {
            if (line.back() != ']' || stripped.size() < 3)
                cfg_fail(path, lineno, "malformed section header " + py_repr(py_strip(raw)));
            std::string name = lower_ascii(line.substr(1, line.size() - 2));
            auto al = kAliases.find(name);
            if (al != kAliases.end()) name = al->second;
            if (!kSupported.count(name)) {
                if (kDarknetOnly.count(name))
                    cfg_fail(path, lineno, "section [" + name + "] is a Darknet layer that darknet-kd does not support");
                cfg_fail(path, lineno, "unknown section [" + name + "]");
            }
            if (name == "net" && !sections.empty())
                cfg_fail(path, lineno, "[net] must be the first section and appear once");
            if (name != "net" && sections.empty())
                cfg_fail(path, lineno, "the first section must be [net], not [" + name + "]");
            Section s;
            s.name = name;
            s.line = lineno;
            s.path = path;
            s.index = (int)sections.size() - 1;
            sections.push_back(std::move(s));
            continue;
        }
        if (sections.empty()) cfg_fail(path, lineno, "option " + py_repr(py_strip(raw)) + " before the first section");
        size_t hash = line.find('#');
        if (hash != std::string::npos) line = line.substr(0, hash);
        size_t eq = line.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == line.size())
            cfg_fail(path, lineno, "malformed line " + py_repr(py_strip(raw)) + ": expected key=value");
        Option o;
        o.key = line.substr(0, eq);
        o.value = line.substr(eq + 1);
        o.line = lineno;
        Section& cur = sections.back();
        bool dup = false;
        for (const auto& prev : cur.options)
            if (prev.key == o.key) {
                // Darknet's option_find returns the first occurrence; the repeat is unused.
                warnings.push_back(str(path, ":", lineno, ": duplicate field '", o.key, "' in [", cur.name,
                                       "]; Darknet uses the first (line ", prev.line, ")"));
                dup = true;
                break;
            }
        if (!dup) cur.options.push_back(std::move(o));
    }
    if (sections.empty()) cfg_fail(path, 1, "no sections: not a Darknet cfg");
    if (sections.size() < 2) cfg_fail(path, sections[0].line, "no layers after [net]");
    Cfg cfg;
    cfg.path = path;
    cfg.net = std::move(sections[0]);
    cfg.layers.assign(std::make_move_iterator(sections.begin() + 1), std::make_move_iterator(sections.end()));
    cfg.warnings = std::move(warnings);
    return cfg;
}

bool read_file(const std::string& path, std::string* data, int* err) {
    data->clear();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return false;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t r = ::read(fd, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            *err = errno;
            ::close(fd);
            return false;
        }
        if (r == 0) break;
        data->append(buf, (size_t)r);
    }
    ::close(fd);
    return true;
}

Cfg parse_cfg_file(const std::string& path) {
    std::string data;
    int err = 0;
    if (!read_file(path, &data, &err)) throw Error(DKD_ERR_CFG, str(path, ": cannot read cfg: ", std::strerror(err)));
    std::vector<char32_t> cps;
    std::vector<size_t> starts;
    int64_t bad = utf8_error(data, &cps, &starts);
    if (bad >= 0) throw Error(DKD_ERR_CFG, located_byte(path, bad, str("not a text file (invalid UTF-8 at byte ", bad, ")")));
    return parse_cfg_text(data, path);
}

}  // namespace engine
}  // namespace dkd
