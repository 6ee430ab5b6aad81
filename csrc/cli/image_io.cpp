#include "cli/image_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_GIF
#define STBI_NO_PSD
#define STBI_NO_PIC
#define STBI_NO_HDR
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

#ifdef DKD_WITH_TURBOJPEG
#include <turbojpeg.h>
#endif

#include <fstream>
#include <sstream>

namespace dkd {
namespace cli {
namespace {

bool is_jpeg(const std::string& data) {
    return data.size() > 3 && (uint8_t)data[0] == 0xFF && (uint8_t)data[1] == 0xD8 && (uint8_t)data[2] == 0xFF;
}

#ifdef DKD_WITH_TURBOJPEG
// TurboJPEG with its defaults (accurate integer IDCT, fancy upsampling): libjpeg's
// jpeg_read_scanlines output, as cv2.imread gets it from the same library.
bool decode_turbo(const std::string& data, Image* img, std::string* err) {
    tjhandle tj = tjInitDecompress();
    if (!tj) {
        *err = "cannot start the JPEG decoder";
        return false;
    }
    int w = 0, h = 0, sub = 0, cs = 0;
    const auto* buf = reinterpret_cast<const unsigned char*>(data.data());
    bool ok = tjDecompressHeader3(tj, buf, (unsigned long)data.size(), &w, &h, &sub, &cs) == 0 && w > 0 && h > 0;
    if (ok) {
        img->w = w, img->h = h;
        img->rgb.resize((size_t)w * h * 3);
        ok = tjDecompress2(tj, buf, (unsigned long)data.size(), img->rgb.data(), w, 0, h, TJPF_RGB, 0) == 0;
    }
    if (!ok) *err = tjGetErrorStr2(tj);
    tjDestroy(tj);
    return ok;
}
#endif

}  // namespace

bool read_file(const std::string& path, std::string* data) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) return false;
    *data = ss.str();
    return true;
}

Image load_image(const std::string& path) {
    std::string data;
    if (!read_file(path, &data)) throw std::runtime_error(path + ": cannot read the image: " + std::strerror(errno));
    Image img;
    std::string err;
#ifdef DKD_WITH_TURBOJPEG
    if (is_jpeg(data)) {
        if (!decode_turbo(data, &img, &err)) throw std::runtime_error(path + ": cannot decode the JPEG image: " + err);
        return img;
    }
#else
    (void)is_jpeg;
#endif
    int w = 0, h = 0, n = 0;
    unsigned char* px = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(data.data()), (int)data.size(), &w, &h,
                                              &n, 3);
    if (!px) throw std::runtime_error(path + ": cannot decode the image (" + stbi_failure_reason() + ")");
    img.w = w, img.h = h;
    img.rgb.assign(px, px + (size_t)w * h * 3);
    stbi_image_free(px);
    return img;
}

void write_atomic(const std::string& path, const std::string& data) {
    size_t slash = path.find_last_of('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    std::string tmpl = dir + "/." + name + ".XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    int fd = mkstemp(buf.data());
    if (fd < 0) throw std::runtime_error(path + ": cannot write: " + std::strerror(errno));
    std::string tmp(buf.data());
    size_t off = 0;
    while (off < data.size()) {
        ssize_t w = ::write(fd, data.data() + off, data.size() - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw std::runtime_error(path + ": cannot write: " + std::strerror(e));
        }
        off += (size_t)w;
    }
    fchmod(fd, 0644);
    if (::close(fd) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw std::runtime_error(path + ": cannot write: " + std::strerror(e));
    }
}

namespace {
void append_bytes(void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), (size_t)size);
}
}  // namespace

void save_image(const std::string& path, const Image& img) {
    std::string out;
    std::string lower = path;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    bool png = lower.size() > 4 && lower.compare(lower.size() - 4, 4, ".png") == 0;
    int ok = png ? stbi_write_png_to_func(append_bytes, &out, img.w, img.h, 3, img.rgb.data(), img.w * 3)
                 : stbi_write_jpg_to_func(append_bytes, &out, img.w, img.h, 3, img.rgb.data(), 90);
    if (!ok) throw std::runtime_error(path + ": cannot encode the image");
    write_atomic(path, out);
}

namespace {
void fill(Image& img, int x1, int y1, int x2, int y2, const uint8_t c[3]) {
    x1 = std::max(x1, 0), y1 = std::max(y1, 0), x2 = std::min(x2, img.w - 1), y2 = std::min(y2, img.h - 1);
    for (int y = y1; y <= y2; ++y)
        for (int x = x1; x <= x2; ++x) std::memcpy(&img.rgb[((size_t)y * img.w + x) * 3], c, 3);
}
}  // namespace

void draw_box(Image& img, int x1, int y1, int x2, int y2, const uint8_t color[3], int t) {
    fill(img, x1, y1, x2, y1 + t - 1, color);
    fill(img, x1, y2 - t + 1, x2, y2, color);
    fill(img, x1, y1, x1 + t - 1, y2, color);
    fill(img, x2 - t + 1, y1, x2, y2, color);
}

int draw_label(Image& img, int x, int y, const std::string& text, const uint8_t color[3], int scale) {
    // stb_easy_font: quads of a 1-pixel-per-unit font, ~7 units tall.
    std::vector<char> buf(text.size() * 300 + 64);
    int quads = stb_easy_font_print(0, 0, const_cast<char*>(text.c_str()), nullptr, buf.data(), (int)buf.size());
    int tw = stb_easy_font_width(const_cast<char*>(text.c_str())) * scale, th = 8 * scale;
    fill(img, x, y, x + tw + 2 * scale, y + th + scale, color);
    const uint8_t black[3] = {0, 0, 0};
    struct V {
        float x, y, z;
        unsigned char c[4];
    };
    const V* v = reinterpret_cast<const V*>(buf.data());
    for (int q = 0; q < quads; ++q) {
        const V* p = v + 4 * q;
        int qx1 = x + scale + (int)p[0].x * scale, qy1 = y + scale + (int)p[0].y * scale;
        int qx2 = x + scale + (int)p[2].x * scale - 1, qy2 = y + scale + (int)p[2].y * scale - 1;
        fill(img, qx1, qy1, qx2, qy2, black);
    }
    return th + scale;
}

}  // namespace cli
}  // namespace dkd
