/* Data loading: IDX and CSV files written by the test itself into a temporary
 * directory (good ones and malformed ones, plain and gzip), seeded
 * shuffling, row gathering and mini-batches. */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_helpers.h"
#include "tapegrad/nn_data.h"

/* ---- temporary files ------------------------------------------------------ */

static char temp_dir[512];

static void temp_dir_create(void)
{
    const char *base = getenv("TMPDIR");

    snprintf(temp_dir, sizeof temp_dir, "%s/tapegrad-nn-data-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    if (mkdtemp(temp_dir) == NULL) {
        perror("mkdtemp");
        exit(EXIT_FAILURE);
    }
}

static void temp_dir_remove(void)
{
    DIR *dir = opendir(temp_dir);
    struct dirent *entry;
    char path[1024];

    if (dir == NULL)
        return;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", temp_dir, entry->d_name);
        unlink(path);
    }
    closedir(dir);
    rmdir(temp_dir);
}

/* Returns the path of `name` in the temporary directory (static buffer). */
static const char *temp_path(const char *name)
{
    static char path[1024];

    snprintf(path, sizeof path, "%s/%s", temp_dir, name);
    return path;
}

static const char *write_plain(const char *name, const void *bytes, size_t n)
{
    const char *path = temp_path(name);
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

/* CRC-32 as gzip uses it (reflected polynomial 0xEDB88320), bit by bit. */
static uint32_t crc32_of(const unsigned char *bytes, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;

    for (size_t i = 0; i < n; i++) {
        crc ^= bytes[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Writes a gzip file by hand (RFC 1952 header, stored deflate blocks of
 * RFC 1951, CRC-32 and length trailer), so the reader is checked against
 * the format rather than against zlib's own writer. */
static const char *write_gzip(const char *name, const void *bytes, size_t n)
{
    static unsigned char gz[16384];
    static const unsigned char header[10] = {0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF};
    const unsigned char *data = bytes;
    size_t len = 0;

    ck_assert_uint_lt(n + n / 65535 * 5 + 32, sizeof gz);
    memcpy(gz, header, sizeof header);
    len = sizeof header;
    for (size_t start = 0; start == 0 || start < n; start += 65535) {
        size_t block = n - start < 65535 ? n - start : 65535;
        bool last = start + block >= n;

        gz[len++] = last ? 1 : 0; /* BFINAL, BTYPE 00 (stored) */
        gz[len++] = (unsigned char)block;
        gz[len++] = (unsigned char)(block >> 8);
        gz[len++] = (unsigned char)~block;
        gz[len++] = (unsigned char)(~block >> 8);
        memcpy(gz + len, data + start, block);
        len += block;
    }
    put_le32(gz + len, crc32_of(data, n));
    put_le32(gz + len + 4, (uint32_t)n);
    len += 8;
    return write_plain(name, gz, len);
}

static const char *write_text(const char *name, const char *text)
{
    return write_plain(name, text, strlen(text));
}

/* Reads a whole file into buf (at most cap bytes) and returns its size. */
static size_t read_back(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");

    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* ---- IDX bytes ------------------------------------------------------------ */

typedef struct idx_buf {
    unsigned char bytes[8192];
    size_t n;
} idx_buf;

static void put_be32(idx_buf *b, uint32_t v)
{
    b->bytes[b->n++] = (unsigned char)(v >> 24);
    b->bytes[b->n++] = (unsigned char)(v >> 16);
    b->bytes[b->n++] = (unsigned char)(v >> 8);
    b->bytes[b->n++] = (unsigned char)v;
}

/* Writes the magic number and sizes of an IDX file. */
static void idx_header(idx_buf *b, int code, int ndim, const uint32_t *dims)
{
    b->n = 0;
    b->bytes[b->n++] = 0;
    b->bytes[b->n++] = 0;
    b->bytes[b->n++] = (unsigned char)code;
    b->bytes[b->n++] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++)
        put_be32(b, dims[i]);
}

static void idx_append(idx_buf *b, const void *payload, size_t n)
{
    memcpy(b->bytes + b->n, payload, n);
    b->n += n;
}

/* Pixels of 3 images of 2 x 2, with 0 and 255 at the ends of the range. */
static const unsigned char pixels[12] = {0, 1, 2, 3, 127, 128, 200, 254, 255, 17, 64, 99};
static const unsigned char labels[5] = {9, 0, 3, 7, 1};

static void images_file(idx_buf *b)
{
    const uint32_t dims[3] = {3, 2, 2};

    idx_header(b, 0x08, 3, dims);
    idx_append(b, pixels, sizeof pixels);
}

static void labels_file(idx_buf *b)
{
    const uint32_t dims[1] = {5};

    idx_header(b, 0x08, 1, dims);
    idx_append(b, labels, sizeof labels);
}

/* ---- IDX: good files ------------------------------------------------------ */

static void check_images(ag_tensor *t, ag_dtype dtype)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_dtype(t), dtype);
    ck_assert_int_eq(ag_tensor_ndim(t), 2);
    ck_assert_uint_eq(ag_tensor_dim(t, 0), 3);
    ck_assert_uint_eq(ag_tensor_dim(t, 1), 4);
    for (size_t i = 0; i < 12; i++) {
        double expected = pixels[i] / 255.0;
        if (dtype == AG_F32)
            expected = (float)expected;
        ck_assert_double_eq(ag_tensor_get(t, i), expected);
    }
}

START_TEST(idx_images_plain)
{
    idx_buf b;

    images_file(&b);
    const char *path = write_plain("images.idx", b.bytes, b.n);
    for (int d = 0; d < 2; d++) {
        ag_dtype dtype = d == 0 ? AG_F32 : AG_F64;
        ag_tensor *t = nn_idx_load_images(path, dtype);

        check_images(t, dtype);
        ag_tensor_free(t);
    }
}
END_TEST

START_TEST(idx_images_gzip)
{
    idx_buf b;

    images_file(&b);
    const char *path = write_gzip("images.idx.gz", b.bytes, b.n);
    for (int d = 0; d < 2; d++) {
        ag_dtype dtype = d == 0 ? AG_F32 : AG_F64;
        ag_tensor *t = nn_idx_load_images(path, dtype);

        check_images(t, dtype);
        ag_tensor_free(t);
    }
}
END_TEST

START_TEST(idx_images_two_dims)
{
    const uint32_t dims[2] = {2, 6};
    idx_buf b;

    idx_header(&b, 0x08, 2, dims);
    idx_append(&b, pixels, sizeof pixels);
    ag_tensor *t = nn_idx_load_images(write_plain("flat.idx", b.bytes, b.n), AG_F64);

    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(ag_tensor_dim(t, 0), 2);
    ck_assert_uint_eq(ag_tensor_dim(t, 1), 6);
    ck_assert_double_eq(ag_tensor_get(t, 11), 99 / 255.0);
    ag_tensor_free(t);
}
END_TEST

START_TEST(idx_labels_plain_and_gzip)
{
    idx_buf b;

    labels_file(&b);
    const char *paths[2] = {NULL, NULL};
    paths[0] = strdup(write_plain("labels.idx", b.bytes, b.n));
    paths[1] = strdup(write_gzip("labels.idx.gz", b.bytes, b.n));

    for (int p = 0; p < 2; p++) {
        for (int d = 0; d < 2; d++) {
            ag_tensor *t = nn_idx_load_labels(paths[p], d == 0 ? AG_F32 : AG_F64);

            ck_assert_ptr_nonnull(t);
            ck_assert_int_eq(ag_tensor_ndim(t), 1);
            ck_assert_uint_eq(ag_tensor_dim(t, 0), 5);
            for (size_t i = 0; i < 5; i++)
                ck_assert_double_eq(ag_tensor_get(t, i), labels[i]);
            ag_tensor_free(t);
        }
    }
    free((void *)paths[0]);
    free((void *)paths[1]);
}
END_TEST

START_TEST(idx_labels_int32)
{
    /* Big-endian 70000 = 0x00011170. */
    const uint32_t dims[1] = {2};
    const unsigned char data[8] = {0x00, 0x01, 0x11, 0x70, 0, 0, 0, 4};
    idx_buf b;

    idx_header(&b, 0x0C, 1, dims);
    idx_append(&b, data, sizeof data);
    ag_tensor *t = nn_idx_load_labels(write_plain("labels32.idx", b.bytes, b.n), AG_F32);

    ck_assert_ptr_nonnull(t);
    ck_assert_double_eq(ag_tensor_get(t, 0), 70000.0);
    ck_assert_double_eq(ag_tensor_get(t, 1), 4.0);
    ag_tensor_free(t);
}
END_TEST

/* One element of each type code, big-endian, through nn_idx_load. */
START_TEST(idx_load_every_type)
{
    const struct {
        int code;
        unsigned char bytes[8];
        size_t size;
        double expected;
    } cases[] = {
        {0x08, {0xFF}, 1, 255.0},
        {0x09, {0xFE}, 1, -2.0},
        {0x0B, {0xFF, 0x38}, 2, -200.0},
        {0x0C, {0xFF, 0xFF, 0xFF, 0xFD}, 4, -3.0},
        {0x0D, {0x3F, 0xC0, 0x00, 0x00}, 4, 1.5},                        /* 1.5f */
        {0x0E, {0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18}, 8, 3.141592653589793}, /* pi */
    };
    const uint32_t dims[2] = {1, 1};

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        idx_buf b;
        char name[32];

        idx_header(&b, cases[k].code, 2, dims);
        idx_append(&b, cases[k].bytes, cases[k].size);
        snprintf(name, sizeof name, "type%02x.idx", cases[k].code);
        ag_tensor *t = nn_idx_load(write_plain(name, b.bytes, b.n), AG_F64);

        ck_assert_msg(t != NULL, "type 0x%02x: %s", cases[k].code, ag_error());
        ck_assert_int_eq(ag_tensor_ndim(t), 2);
        ck_assert_msg(ag_tensor_get(t, 0) == cases[k].expected,
                      "type 0x%02x: got %.17g, expected %.17g", cases[k].code,
                      ag_tensor_get(t, 0), cases[k].expected);
        ag_tensor_free(t);
    }
}
END_TEST

START_TEST(idx_empty_count)
{
    const uint32_t dims[3] = {0, 28, 28};
    idx_buf b;

    idx_header(&b, 0x08, 3, dims);
    ag_tensor *t = nn_idx_load_images(write_plain("none.idx", b.bytes, b.n), AG_F32);

    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(ag_tensor_dim(t, 0), 0);
    ck_assert_uint_eq(ag_tensor_dim(t, 1), 784);
    ag_tensor_free(t);
}
END_TEST

/* ---- IDX: malformed files ------------------------------------------------- */

/* Loads `path` as images and asserts a failure whose message names the file
 * and contains `fragment`. */
static void expect_images_error(const char *path, const char *fragment)
{
    ag_error_clear();
    ag_tensor *t = nn_idx_load_images(path, AG_F32);

    ck_assert_error_contains(t, fragment);
    ck_assert_error_contains(t, path);
    ck_assert_error_contains(t, "nn_idx_load_images");
}

START_TEST(idx_missing_file)
{
    expect_images_error(temp_path("does-not-exist.gz"), "cannot open");
}
END_TEST

START_TEST(idx_empty_file)
{
    expect_images_error(write_plain("empty.idx", "", 0), "truncated");
}
END_TEST

START_TEST(idx_bad_magic)
{
    idx_buf b;

    images_file(&b);
    b.bytes[0] = 0x1F;
    expect_images_error(write_plain("magic.idx", b.bytes, b.n), "bad magic number 1f 00 08 03");
}
END_TEST

START_TEST(idx_unsupported_type)
{
    idx_buf b;

    images_file(&b);
    b.bytes[2] = 0x0A;
    expect_images_error(write_plain("type.idx", b.bytes, b.n), "unsupported type code 0x0a");
}
END_TEST

START_TEST(idx_zero_dims)
{
    idx_buf b;

    idx_header(&b, 0x08, 0, NULL);
    expect_images_error(write_plain("ndim0.idx", b.bytes, b.n),
                        "invalid number of dimensions 0");
}
END_TEST

START_TEST(idx_too_many_dims)
{
    const uint32_t dims[AG_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1};
    idx_buf b;

    idx_header(&b, 0x08, AG_MAX_DIMS + 1, dims);
    idx_append(&b, pixels, 1);
    expect_images_error(write_plain("ndim7.idx", b.bytes, b.n),
                        "invalid number of dimensions 7");
}
END_TEST

START_TEST(idx_images_one_dim)
{
    idx_buf b;

    labels_file(&b);
    expect_images_error(write_plain("images1d.idx", b.bytes, b.n), "images need 2 or more");
}
END_TEST

START_TEST(idx_images_not_bytes)
{
    const uint32_t dims[2] = {1, 1};
    const unsigned char data[4] = {0, 0, 0, 1};
    idx_buf b;

    idx_header(&b, 0x0C, 2, dims);
    idx_append(&b, data, sizeof data);
    expect_images_error(write_plain("images32.idx", b.bytes, b.n),
                        "images must be unsigned bytes");
}
END_TEST

START_TEST(idx_size_overflow)
{
    const uint32_t dims[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    idx_buf b;

    idx_header(&b, 0x08, 3, dims);
    expect_images_error(write_plain("overflow.idx", b.bytes, b.n), "overflows");
}
END_TEST

START_TEST(idx_truncated_header)
{
    idx_buf b;

    images_file(&b);
    expect_images_error(write_plain("shorthead.idx", b.bytes, 9), "truncated");
}
END_TEST

START_TEST(idx_truncated_data)
{
    idx_buf b;

    images_file(&b);
    expect_images_error(write_plain("shortdata.idx", b.bytes, b.n - 1),
                        "declares 12 data bytes but the file holds 11");
}
END_TEST

START_TEST(idx_truncated_data_gzip)
{
    idx_buf b;

    images_file(&b);
    expect_images_error(write_gzip("shortdata.idx.gz", b.bytes, b.n - 1),
                        "truncated: 12 bytes expected for the data, but the file ends after 11");
}
END_TEST

START_TEST(idx_trailing_bytes)
{
    idx_buf b;

    images_file(&b);
    b.bytes[b.n++] = 0;
    expect_images_error(write_plain("trailing.idx", b.bytes, b.n), "trailing bytes");
}
END_TEST

START_TEST(idx_trailing_bytes_gzip)
{
    idx_buf b;

    images_file(&b);
    b.bytes[b.n++] = 0;
    expect_images_error(write_gzip("trailing.idx.gz", b.bytes, b.n), "trailing bytes");
}
END_TEST

/* A gzip file cut in half: the stream ends early. */
START_TEST(idx_gzip_cut)
{
    const uint32_t dims[3] = {8, 16, 16};
    unsigned char gz[8192];
    idx_buf b;

    idx_header(&b, 0x08, 3, dims);
    for (size_t i = 0; i < 8 * 16 * 16; i++)
        b.bytes[b.n++] = (unsigned char)(i * 7);
    size_t n = read_back(write_gzip("cut.idx.gz", b.bytes, b.n), gz, sizeof gz);
    expect_images_error(write_plain("cut.idx.gz", gz, n / 2), "truncated");
}
END_TEST

/* A wrong CRC in the gzip trailer: the data decompresses but the check fails. */
START_TEST(idx_gzip_bad_crc)
{
    unsigned char gz[8192];
    idx_buf b;

    images_file(&b);
    size_t n = read_back(write_gzip("crc.idx.gz", b.bytes, b.n), gz, sizeof gz);
    gz[n - 8] ^= 0xFF;
    expect_images_error(write_plain("crc.idx.gz", gz, n), "corrupt gzip data");
}
END_TEST

/* An invalid deflate block type right after the 10-byte gzip header. */
START_TEST(idx_gzip_bad_block)
{
    unsigned char gz[8192];
    idx_buf b;

    images_file(&b);
    size_t n = read_back(write_gzip("block.idx.gz", b.bytes, b.n), gz, sizeof gz);
    gz[10] = 0xFF;
    expect_images_error(write_plain("block.idx.gz", gz, n), "corrupt gzip data");
}
END_TEST

/* Sizes a small gzip file cannot hold are rejected before allocating. */
START_TEST(idx_gzip_sizes_too_large)
{
    const uint32_t dims[3] = {60000, 1000, 1000};
    idx_buf b;

    idx_header(&b, 0x08, 3, dims);
    expect_images_error(write_gzip("huge.idx.gz", b.bytes, b.n),
                        "more than a");
}
END_TEST

static void expect_labels_error(const char *path, const char *fragment)
{
    ag_error_clear();
    ag_tensor *t = nn_idx_load_labels(path, AG_F32);

    ck_assert_error_contains(t, fragment);
    ck_assert_error_contains(t, path);
}

START_TEST(idx_labels_two_dims)
{
    idx_buf b;

    images_file(&b);
    expect_labels_error(write_plain("labels2d.idx", b.bytes, b.n), "labels need exactly 1");
}
END_TEST

START_TEST(idx_labels_float)
{
    const uint32_t dims[1] = {1};
    const unsigned char data[4] = {0x3F, 0xC0, 0, 0};
    idx_buf b;

    idx_header(&b, 0x0D, 1, dims);
    idx_append(&b, data, sizeof data);
    expect_labels_error(write_plain("labelsf.idx", b.bytes, b.n), "labels must be integers");
}
END_TEST

START_TEST(idx_labels_negative)
{
    const uint32_t dims[1] = {3};
    const unsigned char data[3] = {1, 0xFF, 2};
    idx_buf b;

    idx_header(&b, 0x09, 1, dims);
    idx_append(&b, data, sizeof data);
    expect_labels_error(write_plain("labelsneg.idx", b.bytes, b.n),
                        "label -1 at index 1 is negative");
}
END_TEST

START_TEST(idx_labels_above_f32)
{
    /* 2^24 + 1 = 0x01000001 */
    const uint32_t dims[1] = {1};
    const unsigned char data[4] = {0x01, 0x00, 0x00, 0x01};
    idx_buf b;

    idx_header(&b, 0x0C, 1, dims);
    idx_append(&b, data, sizeof data);
    const char *path = write_plain("labelsbig.idx", b.bytes, b.n);
    expect_labels_error(path, "above 2^24");

    ag_tensor *t = nn_idx_load_labels(path, AG_F64);
    ck_assert_ptr_nonnull(t);
    ck_assert_double_eq(ag_tensor_item(t), 16777217.0);
    ag_tensor_free(t);
}
END_TEST

/* ---- CSV ------------------------------------------------------------------ */

START_TEST(csv_basic)
{
    const char *path = write_text("basic.csv", "x,y,label\n1,2,0\n3.5,-4e2,1\n 0.25 ,\t7, 1 \n");
    nn_csv *csv = nn_csv_load(path, AG_F64);
    const double expected[9] = {1, 2, 0, 3.5, -400, 1, 0.25, 7, 1};

    ck_assert_msg(csv != NULL, "%s", ag_error());
    ck_assert_uint_eq(csv->n_rows, 3);
    ck_assert_uint_eq(csv->n_cols, 3);
    ck_assert_str_eq(csv->column_names[0], "x");
    ck_assert_str_eq(csv->column_names[1], "y");
    ck_assert_str_eq(csv->column_names[2], "label");
    ck_assert_uint_eq(ag_tensor_dim(csv->data, 0), 3);
    ck_assert_uint_eq(ag_tensor_dim(csv->data, 1), 3);
    for (size_t i = 0; i < 9; i++)
        ck_assert_double_eq(ag_tensor_get(csv->data, i), expected[i]);
    ck_assert_int_eq(nn_csv_column(csv, "label"), 2);
    ck_assert_int_eq(nn_csv_column(csv, "z"), -1);
    nn_csv_free(csv);
}
END_TEST

START_TEST(csv_crlf_no_final_newline)
{
    const char *path = write_text("crlf.csv", "a,b\r\n1,2\r\n3,4");
    nn_csv *csv = nn_csv_load(path, AG_F32);

    ck_assert_msg(csv != NULL, "%s", ag_error());
    ck_assert_str_eq(csv->column_names[1], "b");
    ck_assert_uint_eq(csv->n_rows, 2);
    ck_assert_int_eq(ag_tensor_dtype(csv->data), AG_F32);
    ck_assert_double_eq(ag_tensor_get(csv->data, 1), 2.0);
    ck_assert_double_eq(ag_tensor_get(csv->data, 3), 4.0);
    nn_csv_free(csv);
}
END_TEST

START_TEST(csv_quoted_names)
{
    const char *path = write_text("quoted.csv", "\"weight, kg\", \"say \"\"hi\"\"\"\n1,2\n");
    nn_csv *csv = nn_csv_load(path, AG_F64);

    ck_assert_msg(csv != NULL, "%s", ag_error());
    ck_assert_uint_eq(csv->n_cols, 2);
    ck_assert_str_eq(csv->column_names[0], "weight, kg");
    ck_assert_str_eq(csv->column_names[1], "say \"hi\"");
    nn_csv_free(csv);
}
END_TEST

START_TEST(csv_blank_lines_skipped)
{
    const char *path = write_text("blank.csv", "\na\n\n5\r\n\n6\n\n");
    nn_csv *csv = nn_csv_load(path, AG_F64);

    ck_assert_msg(csv != NULL, "%s", ag_error());
    ck_assert_uint_eq(csv->n_rows, 2);
    ck_assert_double_eq(ag_tensor_get(csv->data, 0), 5.0);
    ck_assert_double_eq(ag_tensor_get(csv->data, 1), 6.0);
    nn_csv_free(csv);
}
END_TEST

START_TEST(csv_header_only)
{
    nn_csv *csv = nn_csv_load(write_text("header.csv", "a,b,c\n"), AG_F64);

    ck_assert_msg(csv != NULL, "%s", ag_error());
    ck_assert_uint_eq(csv->n_rows, 0);
    ck_assert_uint_eq(ag_tensor_dim(csv->data, 0), 0);
    ck_assert_uint_eq(ag_tensor_dim(csv->data, 1), 3);
    nn_csv_free(csv);
}
END_TEST

START_TEST(csv_keep_data)
{
    nn_csv *csv = nn_csv_load(write_text("keep.csv", "v\n42\n"), AG_F64);

    ck_assert_ptr_nonnull(csv);
    ag_tensor *data = csv->data;
    csv->data = NULL;
    nn_csv_free(csv);
    ck_assert_double_eq(ag_tensor_item(data), 42.0);
    ag_tensor_free(data);
}
END_TEST

static void expect_csv_error(const char *path, const char *fragment)
{
    ag_error_clear();
    nn_csv *csv = nn_csv_load(path, AG_F64);

    ck_assert_error_contains(csv, fragment);
    ck_assert_error_contains(csv, path);
}

START_TEST(csv_missing_file)
{
    expect_csv_error(temp_path("absent.csv"), "cannot open");
}
END_TEST

START_TEST(csv_empty_file)
{
    expect_csv_error(write_text("empty.csv", ""), "empty file");
}
END_TEST

START_TEST(csv_missing_header)
{
    expect_csv_error(write_text("noheader.csv", "1,2\n3,4\n"), "noheader.csv:1: missing header");
}
END_TEST

START_TEST(csv_empty_name)
{
    expect_csv_error(write_text("emptyname.csv", "a,,c\n1,2,3\n"), "column 2 has an empty name");
}
END_TEST

START_TEST(csv_unclosed_quote)
{
    expect_csv_error(write_text("quote.csv", "a,\"b\n1,2\n"), "no closing quote");
}
END_TEST

START_TEST(csv_row_too_short)
{
    expect_csv_error(write_text("short.csv", "a,b,c\n1,2,3\n4,5\n"),
                     "short.csv:3: 2 fields, but the header has 3 columns");
}
END_TEST

START_TEST(csv_row_too_long)
{
    expect_csv_error(write_text("long.csv", "a,b\r\n1,2\r\n3,4,5\r\n"),
                     "long.csv:3: 3 fields, but the header has 2 columns");
}
END_TEST

START_TEST(csv_error_counts_in_singular)
{
    expect_csv_error(write_text("one.csv", "a\n1,2\n"),
                     "one.csv:2: 2 fields, but the header has 1 column;");
    expect_csv_error(write_text("pair.csv", "a,b\n1\n"),
                     "pair.csv:2: 1 field, but the header has 2 columns");
}
END_TEST

START_TEST(csv_not_a_number)
{
    expect_csv_error(write_text("word.csv", "x,y\n1,2\n3,abc\n"),
                     "word.csv:3: column 2 (\"y\"): \"abc\" is not a number");
}
END_TEST

START_TEST(csv_number_with_suffix)
{
    expect_csv_error(write_text("suffix.csv", "x\n1.5kg\n"),
                     "suffix.csv:2: column 1 (\"x\"): \"1.5kg\" is not a number");
}
END_TEST

START_TEST(csv_empty_field)
{
    expect_csv_error(write_text("emptyfield.csv", "x,y\n1,\n"),
                     "emptyfield.csv:2: column 2 (\"y\"): \"\" is not a number");
}
END_TEST

START_TEST(csv_out_of_range)
{
    expect_csv_error(write_text("range.csv", "x\n1e999\n"), "out of range for a double");

    ag_error_clear();
    nn_csv *csv = nn_csv_load(write_text("range32.csv", "x\n1e300\n"), AG_F32);
    ck_assert_error_contains(csv, "out of range for f32");
}
END_TEST

/* ---- shuffling ------------------------------------------------------------ */

START_TEST(shuffle_follows_fisher_yates)
{
    /* The documented algorithm written out: for i = n-1 down to 1, swap
     * element i with element ag_rng_below(i + 1). */
    enum { N = 50 };
    size_t got[N];
    size_t expected[N];
    ag_rng rng = ag_rng_new(7);
    ag_rng reference = ag_rng_new(7);

    for (size_t i = 0; i < N; i++) {
        got[i] = i;
        expected[i] = i;
    }
    ck_assert_int_eq(nn_shuffle(got, N, &rng), 0);
    for (size_t i = N - 1; i >= 1; i--) {
        size_t j = (size_t)ag_rng_below(&reference, i + 1);
        size_t tmp = expected[i];
        expected[i] = expected[j];
        expected[j] = tmp;
    }
    for (size_t i = 0; i < N; i++)
        ck_assert_uint_eq(got[i], expected[i]);
}
END_TEST

START_TEST(shuffle_rejects_null)
{
    size_t v[3] = {0, 1, 2};
    ag_rng rng = ag_rng_new(1);

    ck_assert_int_eq(nn_shuffle(v, 3, NULL), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "nn_shuffle: rng is NULL"));
    ck_assert_int_eq(nn_shuffle(NULL, 3, &rng), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "nn_shuffle: indices is NULL"));
}
END_TEST

START_TEST(shuffle_is_uniform)
{
    /* 6000 shuffles of 3 elements: each of the 6 orders should come up about
     * 1000 times (standard deviation 29), so 850..1150 fails by chance with
     * probability below 1e-6. */
    int counts[6] = {0};
    ag_rng rng = ag_rng_new(12345);

    for (int trial = 0; trial < 6000; trial++) {
        size_t v[3] = {0, 1, 2};
        nn_shuffle(v, 3, &rng);
        /* Encode the permutation as first * 2 + (second > third). */
        counts[v[0] * 2 + (v[1] > v[2])]++;
    }
    for (int k = 0; k < 6; k++) {
        ck_assert_msg(counts[k] > 850 && counts[k] < 1150,
                      "permutation %d came up %d times in 6000", k, counts[k]);
    }
}
END_TEST

/* ---- gathering and loading ------------------------------------------------ */

/* Inputs (10 x 3) with row i = (i, 10 + i, 100 + i) and targets (10) = i. */
static void make_dataset(ag_tensor **inputs, ag_tensor **targets, ag_dtype dtype)
{
    double x[30];
    double y[10];

    for (int i = 0; i < 10; i++) {
        x[3 * i] = i;
        x[3 * i + 1] = 10 + i;
        x[3 * i + 2] = 100 + i;
        y[i] = i;
    }
    *inputs = ag_tensor_from_doubles(NULL, dtype, AG_SHAPE(10, 3), x);
    *targets = ag_tensor_from_doubles(NULL, dtype, AG_SHAPE(10), y);
    ck_assert_ptr_nonnull(*inputs);
    ck_assert_ptr_nonnull(*targets);
}

START_TEST(gather_rows_values)
{
    ag_tensor *x;
    ag_tensor *y;
    ag_tape *tape = ag_tape_new();
    const size_t rows[4] = {7, 0, 7, 9};

    make_dataset(&x, &y, AG_F32);
    ag_tensor *bx = nn_gather_rows(tape, x, rows, 4);
    ag_tensor *by = nn_gather_rows(tape, y, rows, 4);

    ck_assert_ptr_nonnull(bx);
    ck_assert_ptr_nonnull(by);
    ck_assert_uint_eq(ag_tensor_dim(bx, 0), 4);
    ck_assert_uint_eq(ag_tensor_dim(bx, 1), 3);
    ck_assert_int_eq(ag_tensor_ndim(by), 1);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_double_eq(ag_tensor_get(bx, 3 * i), (double)rows[i]);
        ck_assert_double_eq(ag_tensor_get(bx, 3 * i + 1), 10.0 + rows[i]);
        ck_assert_double_eq(ag_tensor_get(bx, 3 * i + 2), 100.0 + rows[i]);
        ck_assert_double_eq(ag_tensor_get(by, i), (double)rows[i]);
    }
    ck_assert(!ag_tensor_requires_grad(bx));
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

START_TEST(gather_rows_heap)
{
    ag_tensor *x;
    ag_tensor *y;
    const size_t rows[2] = {2, 5};

    make_dataset(&x, &y, AG_F64);
    ag_tensor *subset = nn_gather_rows(NULL, x, rows, 2);

    ck_assert_ptr_nonnull(subset);
    ck_assert_double_eq(ag_tensor_get(subset, 3), 5.0);
    ag_tensor_free(subset);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

START_TEST(gather_rows_out_of_range)
{
    ag_tensor *x;
    ag_tensor *y;
    ag_tape *tape = ag_tape_new();
    const size_t rows[2] = {1, 10};

    make_dataset(&x, &y, AG_F64);
    ck_assert_error_contains(nn_gather_rows(tape, x, rows, 2),
                             "row index 10 at position 1 is out of range for a "
                             "source of shape (10x3)");
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

/* Runs one epoch and checks that every sample comes exactly once, with its
 * target beside it; returns the sizes of the batches. */
static size_t run_epoch(nn_loader *loader, ag_tape *tape, size_t *sizes, size_t *order)
{
    size_t n_batches = 0;
    size_t seen = 0;
    ag_tensor *bx;
    ag_tensor *by;
    int status;

    while ((status = nn_loader_next(loader, tape, &bx, &by)) == 1) {
        size_t count = ag_tensor_dim(bx, 0);

        ck_assert_uint_eq(ag_tensor_dim(by, 0), count);
        for (size_t i = 0; i < count; i++) {
            double index = ag_tensor_get(by, i);
            ck_assert_double_eq(ag_tensor_get(bx, 3 * i), index);
            ck_assert_double_eq(ag_tensor_get(bx, 3 * i + 2), 100.0 + index);
            order[seen++] = (size_t)index;
        }
        sizes[n_batches++] = count;
        ag_tape_reset(tape);
    }
    ck_assert_int_eq(status, 0);
    return n_batches;
}

START_TEST(loader_partial_last_batch)
{
    ag_tensor *x;
    ag_tensor *y;
    ag_tape *tape = ag_tape_new();
    nn_loader_options options = nn_loader_defaults();
    size_t sizes[8];
    size_t order[10];
    bool seen[10] = {false};

    make_dataset(&x, &y, AG_F32);
    options.batch_size = 4;
    nn_loader *loader = nn_loader_new(x, y, &options);
    ck_assert_ptr_nonnull(loader);
    ck_assert_uint_eq(nn_loader_batch_count(loader), 3);
    ck_assert_uint_eq(nn_loader_sample_count(loader), 10);

    ck_assert_uint_eq(run_epoch(loader, tape, sizes, order), 3);
    ck_assert_uint_eq(sizes[0], 4);
    ck_assert_uint_eq(sizes[1], 4);
    ck_assert_uint_eq(sizes[2], 2);
    for (size_t i = 0; i < 10; i++) {
        ck_assert(!seen[order[i]]);
        seen[order[i]] = true;
    }

    nn_loader_free(loader);
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

START_TEST(loader_drop_last)
{
    ag_tensor *x;
    ag_tensor *y;
    ag_tape *tape = ag_tape_new();
    nn_loader_options options = {.batch_size = 4, .shuffle = true, .drop_last = true, .seed = 3};
    size_t sizes[8];
    size_t order[10];

    make_dataset(&x, &y, AG_F64);
    nn_loader *loader = nn_loader_new(x, y, &options);
    ck_assert_uint_eq(nn_loader_batch_count(loader), 2);
    ck_assert_uint_eq(nn_loader_sample_count(loader), 8);
    ck_assert_uint_eq(run_epoch(loader, tape, sizes, order), 2);
    ck_assert_uint_eq(sizes[0], 4);
    ck_assert_uint_eq(sizes[1], 4);

    nn_loader_free(loader);
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

START_TEST(loader_without_shuffle)
{
    ag_tensor *x;
    ag_tensor *y;
    ag_tape *tape = ag_tape_new();
    nn_loader_options options = {.batch_size = 3, .shuffle = false};
    size_t sizes[8];
    size_t order[10];

    make_dataset(&x, &y, AG_F64);
    nn_loader *loader = nn_loader_new(x, y, &options);
    ck_assert_uint_eq(run_epoch(loader, tape, sizes, order), 4);
    for (size_t i = 0; i < 10; i++)
        ck_assert_uint_eq(order[i], i);

    nn_loader_free(loader);
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

/* Two loaders with one seed give the same orders, and each epoch draws a new
 * order. */
START_TEST(loader_seeded_epochs)
{
    ag_tensor *x;
    ag_tensor *y;
    ag_tape *tape = ag_tape_new();
    nn_loader_options options = {.batch_size = 10, .shuffle = true, .seed = 99};
    size_t sizes[2];
    size_t first[2][10];
    size_t second[2][10];

    make_dataset(&x, &y, AG_F64);
    nn_loader *a = nn_loader_new(x, y, &options);
    nn_loader *b = nn_loader_new(x, y, &options);
    for (int epoch = 0; epoch < 2; epoch++) {
        run_epoch(a, tape, sizes, first[epoch]);
        run_epoch(b, tape, sizes, second[epoch]);
        nn_loader_reset(a);
        nn_loader_reset(b);
    }
    ck_assert_mem_eq(first, second, sizeof first);
    ck_assert_msg(memcmp(first[0], first[1], sizeof first[0]) != 0,
                  "epochs 1 and 2 have the same order");

    nn_loader_free(a);
    nn_loader_free(b);
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

START_TEST(loader_warm_epoch_allocates_nothing)
{
    ag_tensor *x;
    ag_tensor *y;
    size_t sizes[8];
    size_t order[10];
    nn_loader_options options = {.batch_size = 4, .shuffle = true, .seed = 1};

    counting_allocator_install();
    ag_tape *tape = ag_tape_new();
    make_dataset(&x, &y, AG_F32);
    nn_loader *loader = nn_loader_new(x, y, &options);

    run_epoch(loader, tape, sizes, order);
    nn_loader_reset(loader);
    size_t before = counting_allocator_calls();
    run_epoch(loader, tape, sizes, order);
    ck_assert_uint_eq(counting_allocator_calls(), before);

    nn_loader_free(loader);
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
    counting_allocator_remove();
}
END_TEST

START_TEST(loader_without_targets)
{
    ag_tensor *x;
    ag_tensor *y;
    ag_tensor *bx;
    ag_tensor *by;
    ag_tape *tape = ag_tape_new();
    nn_loader_options options = {.batch_size = 8, .shuffle = false};

    make_dataset(&x, &y, AG_F64);
    by = y; /* must be overwritten with NULL */
    nn_loader *loader = nn_loader_new(x, NULL, &options);
    ck_assert_int_eq(nn_loader_next(loader, tape, &bx, &by), 1);
    ck_assert_ptr_null(by);
    ck_assert_uint_eq(ag_tensor_dim(bx, 0), 8);
    ck_assert_int_eq(nn_loader_next(loader, tape, &bx, NULL), 1);
    ck_assert_uint_eq(ag_tensor_dim(bx, 0), 2);
    ck_assert_int_eq(nn_loader_next(loader, tape, &bx, NULL), 0);

    nn_loader_free(loader);
    ag_tape_free(tape);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

START_TEST(loader_rejects_bad_arguments)
{
    ag_tensor *x;
    ag_tensor *y;
    const size_t rows[3] = {0, 1, 2};
    nn_loader_options zero = {.batch_size = 0};

    make_dataset(&x, &y, AG_F64);
    ag_tensor *short_targets = nn_gather_rows(NULL, y, rows, 3);

    ck_assert_error_contains(nn_loader_new(x, short_targets, NULL),
                             "inputs (10x3) and targets (3) have different sample counts");
    ck_assert_error_contains(nn_loader_new(x, y, &zero), "batch_size is 0");
    ck_assert_error_contains(nn_loader_new(NULL, y, NULL), "inputs is NULL");
    ag_tensor_free(short_targets);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nn_data");
    TCase *idx = tcase_create("idx");
    TCase *idx_errors = tcase_create("idx_errors");
    TCase *csv = tcase_create("csv");
    TCase *batch = tcase_create("batch");

    tcase_add_unchecked_fixture(idx, temp_dir_create, temp_dir_remove);
    tcase_add_test(idx, idx_images_plain);
    tcase_add_test(idx, idx_images_gzip);
    tcase_add_test(idx, idx_images_two_dims);
    tcase_add_test(idx, idx_labels_plain_and_gzip);
    tcase_add_test(idx, idx_labels_int32);
    tcase_add_test(idx, idx_load_every_type);
    tcase_add_test(idx, idx_empty_count);
    suite_add_tcase(suite, idx);

    tcase_add_unchecked_fixture(idx_errors, temp_dir_create, temp_dir_remove);
    tcase_add_test(idx_errors, idx_missing_file);
    tcase_add_test(idx_errors, idx_empty_file);
    tcase_add_test(idx_errors, idx_bad_magic);
    tcase_add_test(idx_errors, idx_unsupported_type);
    tcase_add_test(idx_errors, idx_zero_dims);
    tcase_add_test(idx_errors, idx_too_many_dims);
    tcase_add_test(idx_errors, idx_images_one_dim);
    tcase_add_test(idx_errors, idx_images_not_bytes);
    tcase_add_test(idx_errors, idx_size_overflow);
    tcase_add_test(idx_errors, idx_truncated_header);
    tcase_add_test(idx_errors, idx_truncated_data);
    tcase_add_test(idx_errors, idx_truncated_data_gzip);
    tcase_add_test(idx_errors, idx_trailing_bytes);
    tcase_add_test(idx_errors, idx_trailing_bytes_gzip);
    tcase_add_test(idx_errors, idx_gzip_cut);
    tcase_add_test(idx_errors, idx_gzip_bad_crc);
    tcase_add_test(idx_errors, idx_gzip_bad_block);
    tcase_add_test(idx_errors, idx_gzip_sizes_too_large);
    tcase_add_test(idx_errors, idx_labels_two_dims);
    tcase_add_test(idx_errors, idx_labels_float);
    tcase_add_test(idx_errors, idx_labels_negative);
    tcase_add_test(idx_errors, idx_labels_above_f32);
    suite_add_tcase(suite, idx_errors);

    tcase_add_unchecked_fixture(csv, temp_dir_create, temp_dir_remove);
    tcase_add_test(csv, csv_basic);
    tcase_add_test(csv, csv_crlf_no_final_newline);
    tcase_add_test(csv, csv_quoted_names);
    tcase_add_test(csv, csv_blank_lines_skipped);
    tcase_add_test(csv, csv_header_only);
    tcase_add_test(csv, csv_keep_data);
    tcase_add_test(csv, csv_missing_file);
    tcase_add_test(csv, csv_empty_file);
    tcase_add_test(csv, csv_missing_header);
    tcase_add_test(csv, csv_empty_name);
    tcase_add_test(csv, csv_unclosed_quote);
    tcase_add_test(csv, csv_row_too_short);
    tcase_add_test(csv, csv_row_too_long);
    tcase_add_test(csv, csv_error_counts_in_singular);
    tcase_add_test(csv, csv_not_a_number);
    tcase_add_test(csv, csv_number_with_suffix);
    tcase_add_test(csv, csv_empty_field);
    tcase_add_test(csv, csv_out_of_range);
    suite_add_tcase(suite, csv);

    tcase_add_test(batch, shuffle_follows_fisher_yates);
    tcase_add_test(batch, shuffle_is_uniform);
    tcase_add_test(batch, shuffle_rejects_null);
    tcase_add_test(batch, gather_rows_values);
    tcase_add_test(batch, gather_rows_heap);
    tcase_add_test(batch, gather_rows_out_of_range);
    tcase_add_test(batch, loader_partial_last_batch);
    tcase_add_test(batch, loader_drop_last);
    tcase_add_test(batch, loader_without_shuffle);
    tcase_add_test(batch, loader_seeded_epochs);
    tcase_add_test(batch, loader_warm_epoch_allocates_nothing);
    tcase_add_test(batch, loader_without_targets);
    tcase_add_test(batch, loader_rejects_bad_arguments);
    suite_add_tcase(suite, batch);

    return run_suite(suite);
}
