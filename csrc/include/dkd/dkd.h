/* dkd.h — the darknet-kd C API (libdkd).
 *
 * Versioned, plain C, usable from cffi and any language with a C FFI.  Every function
 * returns a dkd_status (0 = DKD_OK); on failure dkd_last_error() gives a message for the
 * calling thread.  Invalid arguments (NULL pointers, negative or overflowing sizes, values
 * out of range) are rejected with an error code, never a crash.
 *
 * Arrays are dense, row-major, and live on `device` (host memory for DKD_DEVICE_CPU,
 * CUDA device memory for DKD_DEVICE_CUDA; `stream` is a cudaStream_t or NULL for the
 * legacy default stream).  Scalar outputs documented as "host" are always host memory.
 *
 * The inference engine (csrc/engine/) is the dkd_net_* section (API version 2).
 */
#ifndef DKD_DKD_H
#define DKD_DKD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define DKD_API __declspec(dllexport)
#else
#define DKD_API __attribute__((visibility("default")))
#endif

#define DKD_VERSION_MAJOR 0
#define DKD_VERSION_MINOR 1
#define DKD_VERSION_PATCH 0
/* Bumped whenever a function is added; a caller compiled against API n runs with >= n. */
#define DKD_API_VERSION 2

/* ---- status ---------------------------------------------------------------------- */
typedef enum dkd_status {
    DKD_OK = 0,
    DKD_ERR_NULL = 1,        /* a required pointer is NULL */
    DKD_ERR_SIZE = 2,        /* a size is negative, zero where it must not be, or overflows */
    DKD_ERR_VALUE = 3,       /* a value is out of range (threshold NaN, bad enum, bad index) */
    DKD_ERR_DEVICE = 4,      /* the device is unknown, or CUDA is not compiled in / present */
    DKD_ERR_CUDA = 5,        /* a CUDA runtime call failed */
    DKD_ERR_ALLOC = 6,       /* out of memory */
    DKD_ERR_INTERNAL = 7,    /* a bug: please report */
    DKD_ERR_CFG = 8,         /* a .cfg that cannot be built: "path:line: message" */
    DKD_ERR_WEIGHTS = 9,     /* a .weights that does not fit its .cfg: "path (byte N): message" */
    DKD_ERR_IO = 10          /* a file that cannot be read, decoded or written (images, outputs) */
} dkd_status;

typedef enum dkd_device { DKD_DEVICE_CPU = 0, DKD_DEVICE_CUDA = 1 } dkd_device;
typedef enum dkd_dtype { DKD_FLOAT32 = 0, DKD_FLOAT64 = 1 } dkd_dtype;

/* major*10000 + minor*100 + patch */
DKD_API int dkd_version(void);
DKD_API int dkd_api_version(void);
DKD_API const char* dkd_version_string(void);
/* Message of the last failed call on this thread ("" if none). Valid until the next call. */
DKD_API const char* dkd_last_error(void);
DKD_API const char* dkd_status_name(int status);
/* 1 when the library was built with CUDA kernels. */
DKD_API int dkd_cuda_compiled(void);
/* Number of usable CUDA devices (0 without CUDA or without a GPU). */
DKD_API int dkd_cuda_device_count(void);
/* CPU threads used by the ops (default: DKD_NUM_THREADS, else the hardware concurrency). */
DKD_API int dkd_set_num_threads(int n);
DKD_API int dkd_get_num_threads(void);
/* Name of the CPU kernel variant in use: "avx512", "avx2" or "base" (DKD_ISA overrides). */
DKD_API const char* dkd_cpu_isa(void);

/* ---- nms ------------------------------------------------------------------------- */
typedef enum dkd_nms_kind {
    DKD_NMS_IOU = 0,          /* Darknet nms_kind=default (do_nms_sort): IoU > thresh;
                                 cornersnms suppresses by the same criterion */
    DKD_NMS_GREEDY_DIOU = 1,  /* nms_kind=greedynms: IoU - (d^2/c^2)^0.6 > thresh */
    DKD_NMS_DIOU = 2          /* nms_kind=diounms: IoU - (d^2/c^2)^beta_nms > thresh */
} dkd_nms_kind;

/* Per-image, per-class greedy NMS, as Darknet's do_nms_sort / diounms_sort.
 *   boxes  [n][4] float  cx, cy, w, h (any unit, same for all boxes)
 *   scores [n][num_classes] float  per-class score (Darknet: objectness * class prob)
 *   batch  [n] int64 image index in [0, num_images), or NULL (all boxes in image 0)
 *   keep   [n][num_classes] uint8 out: 1 where detection i survives for class c
 * A (box, class) pair is a candidate when its score > score_thresh.  Per image and class
 * the candidates are visited by score descending (ties: lower box index first) and each
 * surviving one removes the later ones whose criterion (dkd_nms_kind) exceeds iou_thresh.
 * max_det > 0 then keeps only the max_det best survivors per image (score descending,
 * ties: lower class, then lower index); max_det = 0 keeps all. */
DKD_API int dkd_nms(const float* boxes, const float* scores, const int64_t* batch, int64_t n,
                    int64_t num_classes, int64_t num_images, float iou_thresh, float score_thresh,
                    int kind, float beta_nms, int64_t max_det, uint8_t* keep, int device,
                    void* stream);

/* ---- yolo_decode ----------------------------------------------------------------- */
/* Decodes a raw [yolo] head as Darknet's yolo layer (get_yolo_box, get_yolo_detections)
 * and keeps only the candidates with objectness > thresh.
 *   head      float, shape[4] = {B, A*(5+C), H, W}, element strides[4] (any layout)
 *   anchors   [A][2] float anchor w, h in network-input pixels (the layer's masked anchors)
 *   letterbox_wh [B][2] int32 original image w, h: apply Darknet's correct_yolo_boxes
 *             letterbox correction; NULL: boxes stay relative to the network input
 *   out       [capacity][5+C] float: cx, cy, w, h (relative), objectness, class probs
 *             (class probs not multiplied by objectness), rows in (b, anchor, row, col) order
 *   out_index [capacity] int64: b*A*H*W + anchor*H*W + row*W + col of each row
 *   num_candidates (host) out: the number of candidates; at most `capacity` rows are
 *             written.  out = out_index = NULL with capacity 0 only counts.
 * new_coords=0 applies the logistic to x, y, objectness and classes; new_coords=1 takes them
 * as they are and uses w = tw^2*4*anchor.  x' = s*x - (s-1)/2 with s = scale_x_y. */
DKD_API int dkd_yolo_decode(const float* head, const int64_t* shape, const int64_t* strides,
                            int64_t num_anchors, const float* anchors, int32_t net_w, int32_t net_h,
                            double scale_x_y, int new_coords, float thresh,
                            const int32_t* letterbox_wh, float* out, int64_t* out_index,
                            int64_t capacity, int64_t* num_candidates, int device, void* stream);

/* ---- kd_loss --------------------------------------------------------------------- */
typedef enum dkd_kd_kind {
    DKD_KD_KL = 0,   /* T^2 * KL(softmax(t/T) || softmax(s/T)) over the K axis, per location */
    DKD_KD_QFL = 1   /* quality focal: sum over K of BCE(s, sigmoid(t)) * |sigmoid(s)-sigmoid(t)|^beta */
} dkd_kd_kind;

/* Fused distillation loss and its gradient w.r.t. the student logits, in one pass.
 * student, teacher: dense [outer][k][inner] arrays of `dtype` (the distribution axis is
 * the middle one: rows are [outer*inner] locations, e.g. [B*A][C][H*W] for a head, or
 * [N][C][1] for a list of rows).  weight, mask: [outer][inner] per location, or NULL
 * (weight 1, no mask); a masked-out location (mask 0) contributes nothing.
 *   loss (on device, one element of dtype) out: sum over locations of weight * loss
 *   grad ([outer][k][inner] of dtype, or NULL) out: d loss / d student.
 * The teacher is a constant (no gradient), as in LD's and CrossKD's losses. */
DKD_API int dkd_kd_loss(const void* student, const void* teacher, const void* weight,
                        const uint8_t* mask, int64_t outer, int64_t k, int64_t inner, int kind,
                        double temperature, double beta, int dtype, void* loss, void* grad,
                        int device, void* stream);

/* ---- inference engine (csrc/engine/, API version 2) ------------------------------- */
/* A Darknet network (.cfg + .weights) compiled for inference: the same layers, defaults and
 * error messages as the Python model (darknet_kd.model).  A dkd_net is not thread-safe:
 * use one per thread (they may share nothing but the read-only files). */
typedef struct dkd_net dkd_net;

typedef enum dkd_precision {
    DKD_PRECISION_FP32 = 0,
    DKD_PRECISION_BF16 = 1   /* convolutions in bfloat16 (AVX512-BF16/AMX); falls back to
                                fp32 where the CPU has neither, see dkd_net_desc.precision */
} dkd_precision;

typedef struct dkd_net_desc {
    int32_t width, height, channels;  /* network input */
    int32_t classes;
    int64_t rows;        /* decoded rows per image: sum over [yolo] layers of anchors*H*W */
    int32_t precision;   /* the dkd_precision in use */
    int32_t device;
    int32_t num_layers;
    int32_t num_yolo;
    int32_t letter_box;  /* the cfg's [net] letter_box */
    int32_t threads;     /* CPU threads a forward uses */
    double bflops;       /* Darknet's "Total BFLOPS" */
    int64_t parameters;  /* learnable parameters (as the PyTorch model counts them) */
} dkd_net_desc;

typedef struct dkd_detection {
    float x, y, w, h;    /* box centre and size relative to the original image */
    float prob;          /* objectness * class probability (> thresh) */
    int32_t class_id;
    int32_t box;         /* index of the NMS survivor (a box may be reported for several classes) */
} dkd_detection;

/* Parses cfg_path and, if weights_path is not NULL, loads it (a cfg error is DKD_ERR_CFG with
 * "path:line: message", a weights error DKD_ERR_WEIGHTS with "path (byte N): message").
 * width/height 0 keep the cfg's [net] size.  *net is NULL on failure. */
DKD_API int dkd_net_load(const char* cfg_path, const char* weights_path, int32_t width, int32_t height,
                         int precision, int device, dkd_net** net);
DKD_API int dkd_net_free(dkd_net* net);  /* NULL is fine */
DKD_API int dkd_net_describe(const dkd_net* net, dkd_net_desc* desc);
/* CPU threads for this net's forward passes (0: DKD_NUM_THREADS, else all cores). */
DKD_API int dkd_net_set_threads(dkd_net* net, int threads);
/* input [batch][channels][height][width] float (host), RGB in [0, 1];
 * output [batch][rows][5+classes] float (host): cx, cy, w, h relative to the network input,
 * objectness, class probabilities (not multiplied by objectness); rows in (yolo layer,
 * anchor, row, col) order — the PyTorch model's eval-mode output.  output may be NULL (the
 * raw heads stay readable through dkd_net_head). */
DKD_API int dkd_net_forward(dkd_net* net, const float* input, int64_t batch, float* output);
/* After a forward: [yolo] layer i's input as float [batch][A*(5+C)][H][W] (host memory owned
 * by the net, valid until the next forward); shape[4] out. */
DKD_API int dkd_net_head(dkd_net* net, int32_t i, const float** data, int64_t* shape);
/* Darknet's detector test on one RGB 8-bit image (height x width x 3, rows `stride` bytes
 * apart): stretch (letterbox 0) or letterbox (1; -1: the cfg's [net] letter_box) resize as
 * OpenCV's INTER_LINEAR, forward, decode with objectness > thresh, per-class NMS (the last
 * [yolo] layer's nms_kind), detections with prob > thresh sorted by prob descending.
 * At most `capacity` are written; *count is the total. */
DKD_API int dkd_net_detect(dkd_net* net, const uint8_t* rgb, int32_t width, int32_t height, int64_t stride,
                           float thresh, float nms_thresh, int letterbox, dkd_detection* dets, int64_t capacity,
                           int64_t* count);
/* Text about the net: what = DKD_NET_TEXT_LAYERS (Darknet's layer table and "Total BFLOPS"),
 * DKD_NET_TEXT_WARNINGS (unused/duplicate cfg fields, partial weights; one per line).
 * Writes at most cap bytes including the NUL; *len (if not NULL) is the full length. */
typedef enum dkd_net_text_kind {
    DKD_NET_TEXT_LAYERS = 0,
    DKD_NET_TEXT_WARNINGS = 1,
    DKD_NET_TEXT_PROFILE = 2 /* per-layer ms per forward of the CPU forwards since the last such call */
} dkd_net_text_kind;
DKD_API int dkd_net_text(const dkd_net* net, int what, char* buf, size_t cap, size_t* len);
/* 1 when this CPU runs the bf16 kernels (AVX512-BF16 or AMX), else 0. */
DKD_API int dkd_cpu_has_bf16(void);

#ifdef __cplusplus
}
#endif
#endif /* DKD_DKD_H */
