/* IDX reader: the MNIST file format, plain or gzip-compressed. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "tapegrad/nn_data.h"

/* IDX type codes (third byte of the magic number). */
enum {
    IDX_U8 = 0x08,
    IDX_I8 = 0x09,
    IDX_I16 = 0x0B,
    IDX_I32 = 0x0C,
    IDX_F32 = 0x0D,
    IDX_F64 = 0x0E,
};

/* Up to 2^24, f32 represents every integer exactly. */
#define F32_EXACT_INT_MAX 16777216.0

/* Bytes decoded per read; a multiple of every element size. */
#define IDX_CHUNK 16384

/* Deflate cannot compress by more than 1032:1, which bounds the data a gzip
 * file of a given size can hold. */
#define DEFLATE_MAX_RATIO 1032

typedef struct idx_file {
    const char *who;  /* public function, for messages */
    const char *path;
    gzFile gz;
    int type_code;
    size_t elem_size;
    int ndim;
    size_t dims[AG_MAX_DIMS];
    size_t numel;
} idx_file;

/* What a loader accepts and how it converts. */
typedef struct idx_request {
    bool images;  /* unsigned bytes, 2+ dimensions, flattened, scaled by 1/255 */
    bool labels;  /* integers, one dimension, non-negative */
} idx_request;

static size_t idx_type_size(int code)
{
    switch (code) {
    case IDX_U8:
    case IDX_I8:
        return 1;
    case IDX_I16:
        return 2;
    case IDX_I32:
    case IDX_F32:
        return 4;
    case IDX_F64:
        return 8;
    default:
        return 0;
    }
}

static uint32_t read_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t read_be64(const unsigned char *p)
{
    return (uint64_t)read_be32(p) << 32 | read_be32(p + 4);
}

/* ---- reading bytes with every failure named ------------------------------ */

/* Returns zlib's message for the last error without the "path: " prefix
 * gzerror puts in front of it. */
static const char *idx_zlib_message(const idx_file *f, int *zerr)
{
    const char *message = gzerror(f->gz, zerr);
    size_t n = strlen(f->path);

    if (strncmp(message, f->path, n) == 0 && strncmp(message + n, ": ", 2) == 0)
        message += n + 2;
    return message;
}

/* Sets the message for a read that returned fewer bytes than requested:
 * zlib's error when there is one, otherwise a truncated file. */
static void idx_read_failed(const idx_file *f, const char *what, size_t expected,
                            size_t got)
{
    int zerr = Z_OK;
    const char *zmsg = idx_zlib_message(f, &zerr);

    if (zerr == Z_ERRNO) {
        ag_set_error("%s: %s: read failed: %s", f->who, f->path, strerror(errno));
    } else if (zerr == Z_BUF_ERROR) {
        ag_set_error("%s: %s: truncated: the gzip stream ends inside the %s, so "
                     "the file is incomplete; download it again",
                     f->who, f->path, what);
    } else if (zerr != Z_OK) {
        ag_set_error("%s: %s: corrupt gzip data (%s) in the %s; download the file again",
                     f->who, f->path, zmsg, what);
    } else {
        ag_set_error("%s: %s: truncated: %zu bytes expected for the %s, but "
                     "the file ends after %zu",
                     f->who, f->path, expected, what, got);
    }
}

/* Reads exactly n bytes; on a short read sets the message. `done` is the
 * number of bytes of this part already read, for the message. */
static int idx_read_exact(const idx_file *f, void *buf, size_t n, const char *what,
                          size_t expected, size_t done)
{
    int got = gzread(f->gz, buf, (unsigned)n);

    if (got < 0 || (size_t)got != n) {
        idx_read_failed(f, what, expected, done + (got < 0 ? 0 : (size_t)got));
        return -1;
    }
    return 0;
}

/* ---- header --------------------------------------------------------------- */

static int idx_read_header(idx_file *f)
{
    unsigned char magic[4];

    if (idx_read_exact(f, magic, 4, "magic number", 4, 0) != 0)
        return -1;
    if (magic[0] != 0 || magic[1] != 0) {
        ag_set_error("%s: %s: bad magic number %02x %02x %02x %02x; an IDX file "
                     "starts with two zero bytes, a type code and the number "
                     "of dimensions (is it an IDX file?)",
                     f->who, f->path, magic[0], magic[1], magic[2], magic[3]);
        return -1;
    }

    f->type_code = magic[2];
    f->elem_size = idx_type_size(f->type_code);
    if (f->elem_size == 0) {
        ag_set_error("%s: %s: unsupported type code 0x%02x; IDX defines 0x08 (u8), "
                     "0x09 (i8), 0x0B (i16), 0x0C (i32), 0x0D (f32) and 0x0E (f64)",
                     f->who, f->path, f->type_code);
        return -1;
    }

    f->ndim = magic[3];
    if (f->ndim < 1 || f->ndim > AG_MAX_DIMS) {
        ag_set_error("%s: %s: invalid number of dimensions %d; tensors have 1 to %d",
                     f->who, f->path, f->ndim, AG_MAX_DIMS);
        return -1;
    }

    unsigned char sizes[4 * AG_MAX_DIMS];
    size_t n_bytes = 4 * (size_t)f->ndim;

    if (idx_read_exact(f, sizes, n_bytes, "dimension sizes", n_bytes, 0) != 0)
        return -1;

    /* The element count and the byte count must both fit in size_t. */
    size_t numel = 1;
    for (int i = 0; i < f->ndim; i++) {
        f->dims[i] = read_be32(sizes + 4 * i);
        if (f->dims[i] != 0 && numel > SIZE_MAX / 8 / f->dims[i]) {
            ag_set_error("%s: %s: sizes too large: dimension %d of size %zu "
                         "overflows the element count",
                         f->who, f->path, i, f->dims[i]);
            return -1;
        }
        numel *= f->dims[i];
    }
    f->numel = numel;
    return 0;
}

/* Checks the file against what the loader accepts. */
static int idx_check_request(const idx_file *f, const idx_request *req, ag_dtype dtype)
{
    if (req->images) {
        if (f->type_code != IDX_U8) {
            ag_set_error("%s: %s: type code 0x%02x; images must be unsigned bytes "
                         "(0x08); use nn_idx_load for other types",
                         f->who, f->path, f->type_code);
            return -1;
        }
        if (f->ndim < 2) {
            ag_set_error("%s: %s: %d dimension; images need 2 or more "
                         "(count x rows x cols); use nn_idx_load_labels for labels",
                         f->who, f->path, f->ndim);
            return -1;
        }
    }
    if (req->labels) {
        if (f->type_code == IDX_F32 || f->type_code == IDX_F64) {
            ag_set_error("%s: %s: type code 0x%02x is floating point; labels must "
                         "be integers (0x08, 0x09, 0x0B or 0x0C)",
                         f->who, f->path, f->type_code);
            return -1;
        }
        if (f->ndim != 1) {
            ag_set_error("%s: %s: %d dimensions; labels need exactly 1 (count)",
                         f->who, f->path, f->ndim);
            return -1;
        }
    }
    if (dtype != AG_F32 && dtype != AG_F64) {
        ag_set_error("%s: invalid dtype %d; use AG_F32 or AG_F64", f->who, (int)dtype);
        return -1;
    }
    return 0;
}

/* Compares the declared data size with the file size before anything is
 * allocated, so a truncated file or absurd sizes fail fast instead of
 * reserving gigabytes. Reading still checks every byte. */
static int idx_check_file_size(const idx_file *f)
{
    struct stat st;

    if (stat(f->path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;

    size_t header = 4 + 4 * (size_t)f->ndim;
    size_t data = f->numel * f->elem_size;
    size_t file = (size_t)st.st_size;

    if (gzdirect(f->gz) && data > file - header) {
        ag_set_error("%s: %s: truncated: the header declares %zu data bytes but "
                     "the file holds %zu after its %zu-byte header",
                     f->who, f->path, data, file - header, header);
        return -1;
    }
    if (!gzdirect(f->gz) && file <= SIZE_MAX / DEFLATE_MAX_RATIO &&
        data > file * DEFLATE_MAX_RATIO) {
        ag_set_error("%s: %s: truncated or invalid sizes: the header declares "
                     "%zu data bytes, more than a %zu-byte gzip file can hold",
                     f->who, f->path, data, file);
        return -1;
    }
    return 0;
}

/* ---- elements ------------------------------------------------------------- */

static double idx_decode(const unsigned char *p, int code)
{
    switch (code) {
    case IDX_U8:
        return p[0];
    case IDX_I8:
        return (int8_t)p[0];
    case IDX_I16:
        return (int16_t)(uint16_t)((unsigned)p[0] << 8 | p[1]);
    case IDX_I32:
        return (int32_t)read_be32(p);
    case IDX_F32: {
        uint32_t bits = read_be32(p);
        float value;
        memcpy(&value, &bits, sizeof value);
        return value;
    }
    default: {
        uint64_t bits = read_be64(p);
        double value;
        memcpy(&value, &bits, sizeof value);
        return value;
    }
    }
}

/* Checks one label; `index` is its position in the file. */
static int idx_check_label(const idx_file *f, double label, size_t index, ag_dtype dtype)
{
    if (label < 0) {
        ag_set_error("%s: %s: label %.0f at index %zu is negative; class indices "
                     "start at 0",
                     f->who, f->path, label, index);
        return -1;
    }
    if (dtype == AG_F32 && label > F32_EXACT_INT_MAX) {
        ag_set_error("%s: %s: label %.0f at index %zu is above 2^24, which f32 "
                     "cannot hold exactly; load the labels as AG_F64",
                     f->who, f->path, label, index);
        return -1;
    }
    return 0;
}

/* Reads all elements into t in chunks, so no copy of the whole file is
 * made, converting each to t's dtype. */
static int idx_read_elements(const idx_file *f, const idx_request *req, ag_tensor *t)
{
    static const char what[] = "data";
    unsigned char chunk[IDX_CHUNK];
    size_t per_chunk = IDX_CHUNK / f->elem_size;
    size_t total_bytes = f->numel * f->elem_size;
    ag_dtype dtype = ag_tensor_dtype(t);
    void *data = ag_tensor_data(t);

    for (size_t start = 0; start < f->numel; start += per_chunk) {
        size_t count = f->numel - start < per_chunk ? f->numel - start : per_chunk;

        if (idx_read_exact(f, chunk, count * f->elem_size, what, total_bytes,
                           start * f->elem_size) != 0)
            return -1;

        for (size_t i = 0; i < count; i++) {
            double value = idx_decode(chunk + i * f->elem_size, f->type_code);

            if (req->images)
                value = value / 255.0;
            if (req->labels && idx_check_label(f, value, start + i, dtype) != 0)
                return -1;
            if (dtype == AG_F32)
                ((float *)data)[start + i] = (float)value;
            else
                ((double *)data)[start + i] = value;
        }
    }
    return 0;
}

/* Reads one byte past the data: there must be none. The read also makes
 * zlib check the gzip trailer (CRC and length), which catches corruption
 * that decompressed without error. */
static int idx_check_end(const idx_file *f)
{
    unsigned char extra;
    int got = gzread(f->gz, &extra, 1);

    if (got == 1) {
        ag_set_error("%s: %s: trailing bytes after the %zu data bytes the header "
                     "declares; the sizes in the header do not match the data",
                     f->who, f->path, f->numel * f->elem_size);
        return -1;
    }

    int zerr = Z_OK;
    const char *zmsg = idx_zlib_message(f, &zerr);

    if (zerr == Z_BUF_ERROR) {
        ag_set_error("%s: %s: truncated: the gzip stream ends before its trailer, so "
                     "the file is incomplete; download it again",
                     f->who, f->path);
        return -1;
    }
    if (got < 0 || zerr != Z_OK) {
        ag_set_error("%s: %s: corrupt gzip data (%s); download the file again",
                     f->who, f->path, zmsg);
        return -1;
    }
    return 0;
}

/* ---- loaders -------------------------------------------------------------- */

/* Shape of the result: the file's, or (count x rest) for images. */
static int idx_result_shape(const idx_file *f, const idx_request *req, size_t *shape)
{
    if (!req->images) {
        memcpy(shape, f->dims, (size_t)f->ndim * sizeof(size_t));
        return f->ndim;
    }

    size_t features = 1;
    for (int i = 1; i < f->ndim; i++)
        features *= f->dims[i];
    shape[0] = f->dims[0];
    shape[1] = features;
    return 2;
}

static ag_tensor *idx_load(const char *who, const char *path, ag_dtype dtype,
                           const idx_request *req)
{
    if (path == NULL) {
        ag_set_error("%s: path is NULL; pass the name of an IDX file", who);
        return NULL;
    }

    idx_file f = {.who = who, .path = path};

    errno = 0;
    f.gz = gzopen(path, "rb");
    if (f.gz == NULL) {
        ag_set_error("%s: %s: cannot open: %s", who, path,
                     errno != 0 ? strerror(errno) : "out of memory");
        return NULL;
    }
    gzbuffer(f.gz, 1u << 17);

    ag_tensor *t = NULL;
    size_t shape[AG_MAX_DIMS];

    if (idx_read_header(&f) != 0 || idx_check_request(&f, req, dtype) != 0 ||
        idx_check_file_size(&f) != 0)
        goto fail;

    int ndim = idx_result_shape(&f, req, shape);
    t = ag_zeros(NULL, dtype, ndim, shape);
    if (t == NULL)
        goto fail;
    if (idx_read_elements(&f, req, t) != 0 || idx_check_end(&f) != 0)
        goto fail;

    gzclose(f.gz);
    return t;

fail:
    ag_tensor_free(t);
    gzclose(f.gz);
    return NULL;
}

ag_tensor *nn_idx_load(const char *path, ag_dtype dtype)
{
    const idx_request req = {.images = false, .labels = false};

    return idx_load("nn_idx_load", path, dtype, &req);
}

ag_tensor *nn_idx_load_images(const char *path, ag_dtype dtype)
{
    const idx_request req = {.images = true, .labels = false};

    return idx_load("nn_idx_load_images", path, dtype, &req);
}

ag_tensor *nn_idx_load_labels(const char *path, ag_dtype dtype)
{
    const idx_request req = {.images = false, .labels = true};

    return idx_load("nn_idx_load_labels", path, dtype, &req);
}
