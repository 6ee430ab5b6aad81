// Image files for the `dkd` CLI: decoding (JPEG through libjpeg-turbo's TurboJPEG when built
// with it -- the decoder OpenCV uses, so pixels equal cv2.imread's -- else stb_image; PNG, BMP,
// PPM through stb_image), writing JPEG/PNG through stb_image_write, drawing boxes and labels
// (stb_easy_font), and writing any file atomically (temporary name + rename).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dkd {
namespace cli {

struct Image {
    int w = 0, h = 0;
    std::vector<uint8_t> rgb;  // h x w x 3
};

// Throws std::runtime_error("path: cannot read the image (...)") on failure.
Image load_image(const std::string& path);
// Encodes by the extension (.png, else JPEG quality 90) and writes atomically.
void save_image(const std::string& path, const Image& img);
// The whole file; false (errno set) when it cannot be read.
bool read_file(const std::string& path, std::string* data);
// Writes `data` to `path` through a temporary file in the same folder and a rename.
void write_atomic(const std::string& path, const std::string& data);

void draw_box(Image& img, int x1, int y1, int x2, int y2, const uint8_t color[3], int thickness);
// Text with a filled background box whose top-left corner is (x, y); returns its height.
int draw_label(Image& img, int x, int y, const std::string& text, const uint8_t color[3], int scale);

}  // namespace cli
}  // namespace dkd
