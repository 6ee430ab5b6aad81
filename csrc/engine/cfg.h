// The C++ Darknet .cfg parser: the one cfg parser of the C++ side, a port of the Python
// one (darknet_kd/cfg.py) with the same syntax, defaults and error messages, so that a bad
// cfg is reported identically by `darknet-kd` and `dkd` (file:line: message).
//
// Syntax as Darknet reads it (src/parser.c:read_cfg, utils.c:strip): every line is stripped
// of all whitespace; lines starting with '#' or ';' and blank lines are comments; "[name]"
// opens a section; everything else is key=value (a trailing "# comment" is dropped).  Lines
// and whitespace follow Python's str.splitlines / str.split (Unicode line breaks and spaces).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"

namespace dkd {
namespace engine {

// "path:line: message" (or "path (byte N): message"), Python's DarknetKDError format.
std::string located(const std::string& path, int64_t line, const std::string& msg);
std::string located_byte(const std::string& path, int64_t offset, const std::string& msg);
[[noreturn]] void cfg_fail(const std::string& path, int64_t line, const std::string& msg);

// Python's repr() of a str (quotes and escapes as Python picks them), for messages.
std::string py_repr(const std::string& s);
// Python's repr() of a float (shortest round-trip digits, "inf", "nan", "1.0").
std::string py_float(double v);

struct Option {
    std::string key, value;
    int line = 0;
    mutable bool used = false;
};

class Section {
public:
    std::string name, path;
    int line = 0;
    int index = -1;                // Darknet layer index, -1 for [net]
    std::vector<Option> options;   // in file order, first occurrence of each key

    [[noreturn]] void error(const std::string& msg, const std::string& key = "") const;

    bool has(const std::string& key) const { return find(key) != nullptr; }
    // The typed getters of cfg.Section (same parsing rules as Python's int()/float()).
    const std::string* raw(const std::string& key) const;
    std::string get_str(const std::string& key, const std::string& def) const;
    int64_t get_int(const std::string& key, int64_t def) const;
    double get_float(const std::string& key, double def) const;
    bool get_bool(const std::string& key, bool def) const;
    // nullptr-free: `present` tells whether the key exists.
    std::vector<int64_t> get_ints(const std::string& key, bool* present = nullptr) const;
    std::vector<double> get_floats(const std::string& key, bool* present = nullptr) const;
    std::string get_choice(const std::string& key, const std::vector<std::string>& choices,
                           const std::string& def) const;
    void mark_used(std::initializer_list<const char*> keys) const;

private:
    const Option* find(const std::string& key) const;
};

struct Cfg {
    std::string path;
    Section net;
    std::vector<Section> layers;
    std::vector<std::string> warnings;  // duplicate fields; unused fields (after the build)

    // One "path:line: unused field 'k = v' in [name]" per option nobody read.
    void collect_unused();
};

Cfg parse_cfg_text(const std::string& text, const std::string& path);
Cfg parse_cfg_file(const std::string& path);
// Whole file into *data; false with errno in *err when it cannot be read.
bool read_file(const std::string& path, std::string* data, int* err);

// Python int()/float() on an already whitespace-free string (underscores between digits
// allowed, as Python).  Return false when Python would raise ValueError.
bool py_parse_int(const std::string& s, int64_t* out);
bool py_parse_float(const std::string& s, double* out);

}  // namespace engine
}  // namespace dkd
