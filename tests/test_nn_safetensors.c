/* safetensors checkpoints: bit-exact round trips, a file written by an
 * independent Python script, every kind of invalid file rejected by name
 * with the parameters left alone, and atomic replacement on save. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_helpers.h"
#include "tapegrad/nn.h"

/* Asserts that `status` is -1 and the error message contains `fragment`. */
#define ck_assert_failed_with(status, fragment)                              \
    do {                                                                     \
        ck_assert_int_eq((status), -1);                                      \
        ck_assert_ptr_nonnull(ag_error());                                   \
        ck_assert_msg(strstr(ag_error(), (fragment)) != NULL,                \
                      "error \"%s\" does not mention \"%s\"", ag_error(),    \
                      (fragment));                                           \
    } while (0)

/* ---- helpers -------------------------------------------------------------- */

/* A scratch directory per test, removed with its files at the end. */
static char scratch_dir[64];

static void scratch_setup(void)
{
    snprintf(scratch_dir, sizeof scratch_dir, "/tmp/tapegrad-st-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(scratch_dir));
}

static void scratch_teardown(void)
{
    char command[128];

    snprintf(command, sizeof command, "rm -rf '%s'", scratch_dir);
    ck_assert_int_eq(system(command), 0);
}

static const char *scratch_path(const char *name)
{
    static char path[4][128];
    static int next;
    char *p = path[next++ % 4];

    snprintf(p, sizeof path[0], "%s/%s", scratch_dir, name);
    return p;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Reads a whole file into a malloc'd buffer. */
static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);

    unsigned char *data = malloc(*size + 1);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(fread(data, 1, *size, f), *size);
    fclose(f);
    return data;
}

/* Writes a safetensors file from a header string and raw data. */
static void write_raw(const char *path, const char *header, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    unsigned char length[8];

    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 8; i++)
        length[i] = (unsigned char)(n >> (8 * i));
    ck_assert_uint_eq(fwrite(length, 1, 8, f), 8);
    ck_assert_uint_eq(fwrite(header, 1, n, f), n);
    if (size > 0)
        ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
}

/* Adds a heap tensor of the given dtype and shape, filled with `fill`. */
static void add_filled(nn_params *p, const char *name, ag_dtype dtype, int ndim,
                       const size_t *shape, double fill)
{
    ck_assert_int_eq(nn_params_add(p, name, ag_full(NULL, dtype, ndim, shape, fill)), 0);
}

/* The parameters the crafted files are checked against: "w" f32 (2x2) and
 * "b" f64 (2), filled with 7. */
static nn_params *small_params(void)
{
    nn_params *p = nn_params_new();

    add_filled(p, "w", AG_F32, AG_SHAPE(2, 2), 7.0);
    add_filled(p, "b", AG_F64, AG_SHAPE(2), 7.0);
    return p;
}

/* Zero bytes for the data sections of crafted files. A valid file for
 * small_params has 16 bytes of w, then 16 of b. */
static unsigned char small_data[64];

#define SMALL_HEADER_W "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}"
#define SMALL_HEADER_B "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[16,32]}"

/* Asserts that every element of every tensor of small_params is still 7. */
static void assert_untouched(nn_params *p)
{
    for (size_t i = 0; i < nn_params_count(p); i++) {
        ag_tensor *t = nn_params_at(p, i, NULL);
        for (size_t k = 0; k < ag_tensor_numel(t); k++)
            ck_assert_double_eq(ag_tensor_get(t, k), 7.0);
    }
}

/* Loads `header` + `size` bytes of data into small_params and asserts that
 * the load fails with a message containing `fragment` and the path, and
 * that no parameter changed. */
static void assert_rejected(const char *header, size_t size, const char *fragment)
{
    const char *path = scratch_path("crafted.safetensors");
    nn_params *p = small_params();

    write_raw(path, header, small_data, size);
    ag_error_clear();
    ck_assert_failed_with(nn_params_load(p, path), fragment);
    ck_assert_msg(strstr(ag_error(), path) != NULL, "error \"%s\" does not name the file",
                  ag_error());
    assert_untouched(p);
    nn_params_free(p);
}

/* ---- round trips ---------------------------------------------------------- */

START_TEST(roundtrip_bit_exact)
{
    /* Values whose bits a conversion would change: NaN payloads, -0,
     * infinities and subnormals. */
    const uint32_t f32_bits[6] = {0x7fc12345u, 0x80000000u, 0x7f800000u,
                                  0x00000001u, 0x3eaaaaabu, 0xff7fffffu};
    const uint64_t f64_bits[4] = {0x7ff8000000abcdefull, 0x8000000000000000ull,
                                  0x0000000000000001ull, 0x3fd5555555555555ull};
    nn_params *saved = nn_params_new();
    nn_params *loaded = nn_params_new();
    const char *path = scratch_path("model.safetensors");

    ck_assert_int_eq(nn_params_add(saved, "f32", ag_tensor_from_data(NULL, AG_F32,
                                                                     AG_SHAPE(2, 3), f32_bits)), 0);
    ck_assert_int_eq(nn_params_add(saved, "f64", ag_tensor_from_data(NULL, AG_F64,
                                                                     AG_SHAPE(4), f64_bits)), 0);
    ck_assert_int_eq(nn_params_save(saved, path), 0);

    add_filled(loaded, "f32", AG_F32, AG_SHAPE(2, 3), 0.0);
    add_filled(loaded, "f64", AG_F64, AG_SHAPE(4), 0.0);
    ck_assert_int_eq(nn_params_load(loaded, path), 0);
    ck_assert_mem_eq(ag_tensor_data(nn_params_get(loaded, "f32")), f32_bits, sizeof f32_bits);
    ck_assert_mem_eq(ag_tensor_data(nn_params_get(loaded, "f64")), f64_bits, sizeof f64_bits);

    nn_params_free(saved);
    nn_params_free(loaded);
}
END_TEST

START_TEST(roundtrip_layout)
{
    /* The file's bytes, checked against the format by hand: header length,
     * JSON, padding to 8, then the data of each tensor in order. */
    nn_params *p = nn_params_new();
    const char *path = scratch_path("layout.safetensors");
    const double values[2] = {1.5, -2.0};
    const char *expected_header =
        "{\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}";

    ck_assert_int_eq(nn_params_add(p, "b", ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(2),
                                                                  values)), 0);
    ck_assert_int_eq(nn_params_save(p, path), 0);

    size_t size;
    unsigned char *bytes = read_all(path, &size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | bytes[i];
    ck_assert_uint_eq(n % 8, 0);
    ck_assert_uint_eq(size, 8 + n + 16);
    ck_assert_mem_eq(bytes + 8, expected_header, strlen(expected_header));
    for (size_t i = 8 + strlen(expected_header); i < 8 + n; i++)
        ck_assert_int_eq(bytes[i], ' ');
    double first;
    memcpy(&first, bytes + 8 + n, 8);
    ck_assert_double_eq(first, 1.5);

    free(bytes);
    nn_params_free(p);
}
END_TEST

START_TEST(roundtrip_escaped_names)
{
    nn_params *saved = nn_params_new();
    nn_params *loaded = nn_params_new();
    const char *path = scratch_path("names.safetensors");
    const char *names[3] = {"quote\"back\\slash", "caf\xc3\xa9", "tab\there"};

    for (int i = 0; i < 3; i++) {
        add_filled(saved, names[i], AG_F64, AG_SHAPE(1), (double)i);
        add_filled(loaded, names[i], AG_F64, AG_SHAPE(1), -1.0);
    }
    ck_assert_int_eq(nn_params_save(saved, path), 0);
    ck_assert_int_eq(nn_params_load(loaded, path), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_double_eq(ag_tensor_item(nn_params_get(loaded, names[i])), (double)i);

    nn_params_free(saved);
    nn_params_free(loaded);
}
END_TEST

START_TEST(roundtrip_empty_set)
{
    nn_params *p = nn_params_new();
    const char *path = scratch_path("empty.safetensors");

    ck_assert_int_eq(nn_params_save(p, path), 0);
    ck_assert_int_eq(nn_params_load(p, path), 0);
    nn_params_free(p);
}
END_TEST

/* ---- a file written by Python --------------------------------------------- */

START_TEST(python_file_loads)
{
    nn_params *p = nn_params_new();
    const double pi = 3.14159265358979323846;

    add_filled(p, "layer1.W", AG_F32, AG_SHAPE(2, 3), 0.0);
    add_filled(p, "layer1.b", AG_F64, AG_SHAPE(1, 3), 0.0);
    add_filled(p, "scale", AG_F64, AG_SHAPE(1), 0.0);
    ck_assert_int_eq(nn_params_load(p, TEST_DATA_DIR "/reference.safetensors"), 0);

    /* The formulas of make_safetensors.py. */
    ag_tensor *w = nn_params_get(p, "layer1.W");
    for (size_t i = 0; i < 6; i++)
        ck_assert_float_eq(ag_tensor_f32(w)[i], (float)(0.25 * (double)i - 0.5));
    ag_tensor *b = nn_params_get(p, "layer1.b");
    ck_assert_double_eq(ag_tensor_f64(b)[0], 1.0 / 3.0);
    ck_assert_double_eq(ag_tensor_f64(b)[1], -pi);
    ck_assert_double_eq(ag_tensor_f64(b)[2], 1e-310);
    ck_assert_double_eq(ag_tensor_item(nn_params_get(p, "scale")), 2.5);

    nn_params_free(p);
}
END_TEST

/* ---- invalid files -------------------------------------------------------- */

START_TEST(valid_crafted_file_loads)
{
    /* The baseline the rejections below change one thing of. */
    const char *path = scratch_path("crafted.safetensors");
    nn_params *p = small_params();

    write_raw(path, "{" SMALL_HEADER_W "," SMALL_HEADER_B "}", small_data, 32);
    ck_assert_int_eq(nn_params_load(p, path), 0);
    ck_assert_double_eq(ag_tensor_get(nn_params_get(p, "w"), 0), 0.0);
    nn_params_free(p);
}
END_TEST

START_TEST(truncated_data_rejected)
{
    nn_params *p = small_params();
    const char *path = scratch_path("model.safetensors");

    ck_assert_int_eq(nn_params_save(p, path), 0);
    size_t size;
    free(read_all(path, &size));
    ck_assert_int_eq(truncate(path, (off_t)(size - 3)), 0);

    ck_assert_failed_with(nn_params_load(p, path), "truncated file: tensor \"b\"");
    assert_untouched(p);
    nn_params_free(p);
}
END_TEST

START_TEST(truncated_length_rejected)
{
    const char *path = scratch_path("short.safetensors");
    nn_params *p = small_params();
    FILE *f = fopen(path, "wb");

    ck_assert_int_eq(fputs("abc", f) >= 0, 1);
    fclose(f);
    ck_assert_failed_with(nn_params_load(p, path), "truncated file: 3 bytes");
    nn_params_free(p);
}
END_TEST

START_TEST(header_length_beyond_file_rejected)
{
    const char *path = scratch_path("long.safetensors");
    nn_params *p = small_params();
    unsigned char bytes[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    FILE *f = fopen(path, "wb");

    ck_assert_uint_eq(fwrite(bytes, 1, 10, f), 10);
    fclose(f);
    ck_assert_failed_with(nn_params_load(p, path), "header length 65535 is larger than");
    nn_params_free(p);
}
END_TEST

START_TEST(lying_sizes_rejected)
{
    /* w claims 2x2 F32 (16 bytes) but spans 12. */
    assert_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]},"
                    "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[12,28]}}",
                    28, "tensor \"w\" has data_offsets [0, 12] (12 bytes)");
}
END_TEST

START_TEST(offsets_past_end_rejected)
{
    assert_rejected("{" SMALL_HEADER_W ",\"b\":{\"dtype\":\"F64\",\"shape\":[2],"
                    "\"data_offsets\":[16,32]}}",
                    24, "truncated file: tensor \"b\" ends at byte 32");
}
END_TEST

START_TEST(overlapping_offsets_rejected)
{
    assert_rejected("{" SMALL_HEADER_W ",\"b\":{\"dtype\":\"F64\",\"shape\":[2],"
                    "\"data_offsets\":[8,24]}}",
                    24, "tensors \"w\" and \"b\" overlap");
}
END_TEST

START_TEST(gap_in_offsets_rejected)
{
    assert_rejected("{" SMALL_HEADER_W ",\"b\":{\"dtype\":\"F64\",\"shape\":[2],"
                    "\"data_offsets\":[20,36]}}",
                    36, "4 bytes before tensor \"b\" belong to no tensor");
}
END_TEST

START_TEST(trailing_data_rejected)
{
    assert_rejected("{" SMALL_HEADER_W "," SMALL_HEADER_B "}", 40,
                    "8 bytes after the last tensor belong to no tensor");
}
END_TEST

START_TEST(missing_tensor_rejected)
{
    assert_rejected("{" SMALL_HEADER_W "}", 16, "missing tensor \"b\"");
}
END_TEST

START_TEST(unexpected_tensor_rejected)
{
    assert_rejected("{" SMALL_HEADER_W "," SMALL_HEADER_B ",\"extra\":{\"dtype\":\"F32\","
                    "\"shape\":[0],\"data_offsets\":[32,32]}}",
                    32, "unexpected tensor \"extra\"");
}
END_TEST

START_TEST(dtype_mismatch_rejected)
{
    assert_rejected("{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                    SMALL_HEADER_B "}",
                    32, "tensor \"w\" has dtype F64 in the file and F32 in the parameters");
}
END_TEST

START_TEST(shape_mismatch_rejected)
{
    assert_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[4,1],\"data_offsets\":[0,16]},"
                    SMALL_HEADER_B "}",
                    32, "tensor \"w\" has shape [4, 1] in the file and (2x2) in the parameters");
}
END_TEST

START_TEST(every_problem_listed)
{
    /* One load reports every mismatch, each by name. */
    assert_rejected("{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16,
                    "3 problems");
    ck_assert_ptr_nonnull(strstr(ag_error(), "tensor \"w\" has dtype F64"));
    ck_assert_ptr_nonnull(strstr(ag_error(), "tensor \"w\" has shape [2]"));
    ck_assert_ptr_nonnull(strstr(ag_error(), "missing tensor \"b\""));
}
END_TEST

/* Headers that break JSON or the schema, each with a word of its message. */
static const struct {
    const char *header;
    const char *fragment;
} bad_headers[] = {
    {"", "header ends"},
    {"[]", "found '['"},
    {"{" SMALL_HEADER_W "," SMALL_HEADER_B ",}", "found '}'"},
    {"{" SMALL_HEADER_W "," SMALL_HEADER_B "} x", "unexpected data after"},
    {"{" SMALL_HEADER_W "," SMALL_HEADER_W "}", "tensor \"w\" appears twice"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2]}}", "tensor \"w\" lacks its data_offsets"},
    {"{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}", "field \"dtype\" twice"},
    {"{\"w\":{\"dtype\":\"F32\",\"size\":1}}", "unknown field \"size\""},
    {"{\"w\":{\"dtype\":\"F17\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
     "unknown dtype \"F17\""},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[02,2],\"data_offsets\":[0,16]}}", "leading zero"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0,2],\"data_offsets\":[0,16]}}", "not an integer"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-2,2],\"data_offsets\":[0,16]}}",
     "not a non-negative integer"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16,4]}}", "more than 2"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[99999999999999999999,1]}}",
     "does not fit in 64 bits"},
    {"{\"w\\q\":{}}", "invalid escape \\q"},
    {"{\"w\\ud800\":{}}", "high surrogate"},
    {"{\"w\\u0000\":{}}", "NUL"},
    {"{\"w\x01\":{}}", "control character 0x01"},
    {"{\"w\xc3\x28\":{}}", "invalid UTF-8"},
    {"{\"w", "string is not closed"},
    {"{\"__metadata__\":{\"k\":1}}", "metadata value of \"k\" is not a string"},
};

START_TEST(bad_header_rejected)
{
    char fragment[128];

    snprintf(fragment, sizeof fragment, "%s", bad_headers[_i].fragment);
    assert_rejected(bad_headers[_i].header, 32, fragment);
    ck_assert_ptr_nonnull(strstr(ag_error(), "invalid header"));
}
END_TEST

START_TEST(escaped_name_in_file_loads)
{
    /* "caf\u00e9" in the file is the parameter named "café" in UTF-8. */
    const char *path = scratch_path("escaped.safetensors");
    nn_params *p = nn_params_new();
    const double value = 4.25;

    add_filled(p, "caf\xc3\xa9", AG_F64, AG_SHAPE(1), 0.0);
    write_raw(path, "{\"caf\\u00e9\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                    "\"__metadata__\":{\"note\":\"\\ud83d\\ude00\"}}",
              &value, 8);
    ck_assert_int_eq(nn_params_load(p, path), 0);
    ck_assert_double_eq(ag_tensor_item(nn_params_get(p, "caf\xc3\xa9")), 4.25);
    nn_params_free(p);
}
END_TEST

START_TEST(failed_load_leaves_file)
{
    nn_params *p = small_params();
    const char *path = scratch_path("model.safetensors");
    size_t size_before;
    size_t size_after;

    write_raw(path, "{" SMALL_HEADER_W "}", small_data, 16);
    unsigned char *before = read_all(path, &size_before);
    ck_assert_int_eq(nn_params_load(p, path), -1);
    unsigned char *after = read_all(path, &size_after);
    ck_assert_uint_eq(size_after, size_before);
    ck_assert_mem_eq(after, before, size_before);

    free(before);
    free(after);
    nn_params_free(p);
}
END_TEST

START_TEST(missing_file_rejected)
{
    nn_params *p = small_params();

    ck_assert_failed_with(nn_params_load(p, scratch_path("absent.safetensors")), "cannot open");
    nn_params_free(p);
}
END_TEST

/* ---- saving --------------------------------------------------------------- */

START_TEST(save_replaces_file)
{
    nn_params *p = small_params();
    nn_params *check = small_params();
    const char *path = scratch_path("model.safetensors");
    char tmp[160];

    ck_assert_int_eq(nn_params_save(p, path), 0);
    ag_tensor_set(nn_params_get(p, "b"), 1, -3.5);
    ck_assert_int_eq(nn_params_save(p, path), 0);

    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert(!file_exists(tmp));
    ck_assert_int_eq(nn_params_load(check, path), 0);
    ck_assert_double_eq(ag_tensor_get(nn_params_get(check, "b"), 1), -3.5);

    nn_params_free(p);
    nn_params_free(check);
}
END_TEST

START_TEST(failed_save_keeps_old_file)
{
    /* A directory where the temporary file should go makes the save fail
     * before the old file is touched. */
    nn_params *p = small_params();
    const char *path = scratch_path("model.safetensors");
    char tmp[160];
    size_t size_before;
    size_t size_after;

    ck_assert_int_eq(nn_params_save(p, path), 0);
    unsigned char *before = read_all(path, &size_before);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert_int_eq(mkdir(tmp, 0700), 0);

    ag_tensor_set(nn_params_get(p, "b"), 0, 99.0);
    ck_assert_failed_with(nn_params_save(p, path), tmp);
    unsigned char *after = read_all(path, &size_after);
    ck_assert_uint_eq(size_after, size_before);
    ck_assert_mem_eq(after, before, size_before);

    free(before);
    free(after);
    nn_params_free(p);
}
END_TEST

START_TEST(save_to_missing_directory_fails)
{
    nn_params *p = small_params();

    ck_assert_failed_with(nn_params_save(p, scratch_path("no/such/dir.safetensors")),
                          "cannot create");
    nn_params_free(p);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("nn_safetensors");
    TCase *tc = tcase_create("safetensors");

    tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
    tcase_add_test(tc, roundtrip_bit_exact);
    tcase_add_test(tc, roundtrip_layout);
    tcase_add_test(tc, roundtrip_escaped_names);
    tcase_add_test(tc, roundtrip_empty_set);
    tcase_add_test(tc, python_file_loads);
    tcase_add_test(tc, valid_crafted_file_loads);
    tcase_add_test(tc, truncated_data_rejected);
    tcase_add_test(tc, truncated_length_rejected);
    tcase_add_test(tc, header_length_beyond_file_rejected);
    tcase_add_test(tc, lying_sizes_rejected);
    tcase_add_test(tc, offsets_past_end_rejected);
    tcase_add_test(tc, overlapping_offsets_rejected);
    tcase_add_test(tc, gap_in_offsets_rejected);
    tcase_add_test(tc, trailing_data_rejected);
    tcase_add_test(tc, missing_tensor_rejected);
    tcase_add_test(tc, unexpected_tensor_rejected);
    tcase_add_test(tc, dtype_mismatch_rejected);
    tcase_add_test(tc, shape_mismatch_rejected);
    tcase_add_test(tc, every_problem_listed);
    tcase_add_loop_test(tc, bad_header_rejected, 0,
                        (int)(sizeof bad_headers / sizeof bad_headers[0]));
    tcase_add_test(tc, escaped_name_in_file_loads);
    tcase_add_test(tc, failed_load_leaves_file);
    tcase_add_test(tc, missing_file_rejected);
    tcase_add_test(tc, save_replaces_file);
    tcase_add_test(tc, failed_save_keeps_old_file);
    tcase_add_test(tc, save_to_missing_directory_fails);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(safetensors_suite());
}
