/*
 * safetensors checkpoints: an 8-byte little-endian header length N, N bytes
 * of JSON describing each tensor (dtype, shape, byte range in the data
 * section), then the raw little-endian data.
 *
 * The loader reads the header with a small strict JSON reader that accepts
 * exactly the safetensors schema, checks the whole file against the
 * parameters, and only then copies values, so a bad file changes nothing.
 * The saver writes PATH.tmp, fsyncs it and renames it over PATH.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool hash_out_of_memory;
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(item) (hash_out_of_memory = true)
#include <uthash.h>

#include "tapegrad/nn.h"

/* strdup through the library allocator, so ag_free releases it. */
static char *copy_string(const char *text)
{
    size_t size = strlen(text) + 1;
    char *copy = ag_alloc(size);

    if (copy != NULL)
        memcpy(copy, text, size);
    return copy;
}

/* The reference implementation rejects headers above 100 MB; so do we, so a
 * corrupt length cannot make us allocate gigabytes. */
#define HEADER_MAX ((uint64_t)100000000)
#define FILE_DIMS_MAX 16

/* ---- byte order ----------------------------------------------------------- */

static bool host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;

    memcpy(&first, &one, 1);
    return first == 1;
}

/* Reverses the bytes of each `size`-byte element, converting between the
 * file's little-endian order and a big-endian host's. */
static void swap_elements(unsigned char *data, size_t n, size_t size)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char *e = data + i * size;
        for (size_t k = 0; k < size / 2; k++) {
            unsigned char tmp = e[k];
            e[k] = e[size - 1 - k];
            e[size - 1 - k] = tmp;
        }
    }
}

/* ---- dtypes --------------------------------------------------------------- */

/* safetensors dtype names with their element sizes. Only F32 and F64 load
 * into tapegrad tensors. The others are listed so that a file containing
 * them still gets its layout checked and a clear message. */
static const struct {
    const char *name;
    size_t size;
} file_dtypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E5M2", 1},
    {"F8_E4M3", 1}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
    {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1},
};

#define N_FILE_DTYPES (sizeof file_dtypes / sizeof file_dtypes[0])

static const char *dtype_file_name(ag_dtype dtype)
{
    return dtype == AG_F32 ? "F32" : "F64";
}

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Returns the length of the UTF-8 sequence at s (at most `available` bytes),
 * or 0 when it is invalid: overlong, a surrogate, above U+10FFFF, or cut
 * short. */
static size_t utf8_sequence_length(const unsigned char *s, size_t available)
{
    unsigned char c = s[0];
    size_t length;
    uint32_t min;
    uint32_t code;

    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        length = 2;
        min = 0x80;
        code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        length = 3;
        min = 0x800;
        code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        length = 4;
        min = 0x10000;
        code = c & 0x07;
    } else {
        return 0;
    }
    if (length > available)
        return 0;
    for (size_t i = 1; i < length; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        code = (code << 6) | (s[i] & 0x3F);
    }
    if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
        return 0;
    return length;
}

static bool utf8_is_valid(const char *s)
{
    size_t n = strlen(s);

    for (size_t i = 0; i < n;) {
        size_t length = utf8_sequence_length((const unsigned char *)s + i, n - i);
        if (length == 0)
            return false;
        i += length;
    }
    return true;
}

/* Appends the UTF-8 encoding of `code` (a valid scalar value) to out. */
static size_t utf8_encode(uint32_t code, char *out)
{
    if (code < 0x80) {
        out[0] = (char)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (char)(0xC0 | (code >> 6));
        out[1] = (char)(0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (char)(0xE0 | (code >> 12));
        out[1] = (char)(0x80 | ((code >> 6) & 0x3F));
        out[2] = (char)(0x80 | (code & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (code >> 18));
    out[1] = (char)(0x80 | ((code >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((code >> 6) & 0x3F));
    out[3] = (char)(0x80 | (code & 0x3F));
    return 4;
}

/* ---- the header, parsed --------------------------------------------------- */

/* One tensor as the file describes it. */
typedef struct file_tensor {
    char *name;
    const char *dtype; /* a name from file_dtypes */
    size_t element_size;
    int ndim;
    uint64_t shape[FILE_DIMS_MAX];
    uint64_t begin; /* byte range in the data section */
    uint64_t end;
    UT_hash_handle hh; /* keyed by name */
} file_tensor;

typedef struct file_header {
    file_tensor **tensors; /* in header order */
    size_t count;
    size_t capacity;
    file_tensor *by_name;
} file_header;

static void header_free(file_header *header)
{
    HASH_CLEAR(hh, header->by_name);
    for (size_t i = 0; i < header->count; i++) {
        ag_free(header->tensors[i]->name);
        ag_free(header->tensors[i]);
    }
    ag_free(header->tensors);
    memset(header, 0, sizeof *header);
}

/* ---- strict JSON reader for the header ------------------------------------ */

typedef struct json_reader {
    const char *text;
    size_t length;
    size_t pos;
    const char *path;
} json_reader;

/* Sets an error naming the file and the byte where reading stopped. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int json_error(const json_reader *r, const char *format, ...)
{
    char detail[256];
    va_list args;

    va_start(args, format);
    vsnprintf(detail, sizeof detail, format, args);
    va_end(args);
    ag_set_error("nn_params_load: %s: invalid header at byte %zu: %s; the file "
                 "is not a valid safetensors file",
                 r->path, r->pos, detail);
    return -1;
}

/* JSON whitespace: space, tab, line feed, carriage return. */
static void skip_whitespace(json_reader *r)
{
    while (r->pos < r->length) {
        char c = r->text[r->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        r->pos++;
    }
}

static int expect_char(json_reader *r, char expected, const char *context)
{
    skip_whitespace(r);
    if (r->pos >= r->length)
        return json_error(r, "header ends where '%c' %s was expected", expected, context);
    unsigned char found = (unsigned char)r->text[r->pos];
    if (found != (unsigned char)expected && found >= 0x20 && found < 0x7f)
        return json_error(r, "found '%c' where '%c' %s was expected", found, expected,
                          context);
    if (found != (unsigned char)expected)
        return json_error(r, "found byte 0x%02X where '%c' %s was expected", found,
                          expected, context);
    r->pos++;
    return 0;
}

/* Reads `\uXXXX`'s four hex digits. */
static int read_hex4(json_reader *r, uint32_t *value)
{
    *value = 0;
    if (r->length - r->pos < 4)
        return json_error(r, "\\u escape has fewer than 4 hex digits");
    for (int i = 0; i < 4; i++) {
        char c = r->text[r->pos++];
        uint32_t digit;

        if (c >= '0' && c <= '9')
            digit = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            digit = (uint32_t)(c - 'A' + 10);
        else
            return json_error(r, "invalid hex digit '%c' in a \\u escape", c);
        *value = (*value << 4) | digit;
    }
    return 0;
}

/* Decodes a \u escape (the backslash and 'u' already read), joining a
 * surrogate pair, into UTF-8 at out. */
static int read_unicode_escape(json_reader *r, char *out, size_t *written)
{
    uint32_t code;

    if (read_hex4(r, &code) != 0)
        return -1;
    if (code >= 0xD800 && code <= 0xDBFF) {
        uint32_t low;
        if (r->length - r->pos < 2 || r->text[r->pos] != '\\' || r->text[r->pos + 1] != 'u')
            return json_error(r, "high surrogate \\u%04X is not followed by a low one",
                              (unsigned)code);
        r->pos += 2;
        if (read_hex4(r, &low) != 0)
            return -1;
        if (low < 0xDC00 || low > 0xDFFF)
            return json_error(r, "\\u%04X after a high surrogate is not a low surrogate",
                              (unsigned)low);
        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    } else if (code >= 0xDC00 && code <= 0xDFFF) {
        return json_error(r, "lone low surrogate \\u%04X", (unsigned)code);
    }
    if (code == 0)
        return json_error(r, "\\u0000 (NUL) is not allowed in a name");
    *written = utf8_encode(code, out);
    return 0;
}

/* Reads a JSON string into a new NUL-terminated heap string. */
static int read_string(json_reader *r, char **out)
{
    *out = NULL;
    if (expect_char(r, '"', "opening a string") != 0)
        return -1;

    /* Decoding never makes a string longer than its JSON text, which ends
     * at the first quote not preceded by a backslash. */
    size_t end = r->pos;
    while (end < r->length && r->text[end] != '"')
        end += r->text[end] == '\\' ? 2 : 1;
    char *s = ag_alloc(end - r->pos + 1);
    size_t n = 0;
    if (s == NULL) {
        ag_set_error("nn_params_load: %s: out of memory reading the header", r->path);
        return -1;
    }

    while (true) {
        if (r->pos >= r->length) {
            ag_free(s);
            return json_error(r, "string is not closed");
        }
        unsigned char c = (unsigned char)r->text[r->pos];
        if (c == '"') {
            r->pos++;
            break;
        }
        if (c < 0x20) {
            ag_free(s);
            return json_error(r, "control character 0x%02X in a string; escape it", c);
        }
        if (c == '\\') {
            if (r->pos + 1 >= r->length) {
                ag_free(s);
                return json_error(r, "string ends inside an escape");
            }
            static const char escapes[] = "\"\\/bfnrt";
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            char e = r->text[r->pos + 1];
            const char *simple = e == '\0' ? NULL : strchr(escapes, e);
            r->pos += 2;
            if (e == 'u') {
                size_t written = 0;
                if (read_unicode_escape(r, s + n, &written) != 0) {
                    ag_free(s);
                    return -1;
                }
                n += written;
            } else if (simple != NULL) {
                s[n++] = decoded[simple - escapes];
            } else {
                r->pos -= 2;
                ag_free(s);
                return json_error(r, "invalid escape \\%c in a string", e);
            }
            continue;
        }

        size_t length = utf8_sequence_length((const unsigned char *)r->text + r->pos,
                                             r->length - r->pos);
        if (length == 0) {
            ag_free(s);
            return json_error(r, "invalid UTF-8 in a string");
        }
        memcpy(s + n, r->text + r->pos, length);
        n += length;
        r->pos += length;
    }
    s[n] = '\0';
    *out = s;
    return 0;
}

/* Reads a non-negative integer without sign, fraction or exponent, which is
 * all the schema allows for shapes and offsets. */
static int read_uint(json_reader *r, uint64_t *value, const char *field)
{
    skip_whitespace(r);
    size_t start = r->pos;
    *value = 0;

    while (r->pos < r->length && r->text[r->pos] >= '0' && r->text[r->pos] <= '9') {
        uint64_t digit = (uint64_t)(r->text[r->pos] - '0');
        if (*value > (UINT64_MAX - digit) / 10)
            return json_error(r, "an entry of %s does not fit in 64 bits", field);
        *value = *value * 10 + digit;
        r->pos++;
    }
    if (r->pos == start)
        return json_error(r, "an entry of %s is not a non-negative integer", field);
    if (r->text[start] == '0' && r->pos - start > 1)
        return json_error(r, "an entry of %s has a leading zero, which JSON does not allow", field);
    if (r->pos < r->length && strchr(".eE", r->text[r->pos]) != NULL && r->text[r->pos] != '\0')
        return json_error(r, "an entry of %s is not an integer", field);
    return 0;
}

/* Reads `[n, n, ...]` with at most `max` entries. */
static int read_uint_array(json_reader *r, uint64_t *values, int max, int *count,
                           const char *field)
{
    *count = 0;
    if (expect_char(r, '[', "opening an array") != 0)
        return -1;
    skip_whitespace(r);
    if (r->pos < r->length && r->text[r->pos] == ']') {
        r->pos++;
        return 0;
    }

    while (true) {
        if (*count == max)
            return json_error(r, "%s has more than %d entries", field, max);
        if (read_uint(r, &values[*count], field) != 0)
            return -1;
        (*count)++;
        skip_whitespace(r);
        if (r->pos < r->length && r->text[r->pos] == ',') {
            r->pos++;
            continue;
        }
        return expect_char(r, ']', "closing the array");
    }
}

/* Calls `member` for each "key": value of an object; `member` reads the
 * value. An empty object is allowed. */
static int read_object(json_reader *r, const char *context_name,
                       int (*member)(json_reader *r, char *key, void *context),
                       void *context)
{
    if (expect_char(r, '{', context_name) != 0)
        return -1;
    skip_whitespace(r);
    if (r->pos < r->length && r->text[r->pos] == '}') {
        r->pos++;
        return 0;
    }

    while (true) {
        char *key;
        if (read_string(r, &key) != 0)
            return -1;
        if (expect_char(r, ':', "after a key") != 0 || member(r, key, context) != 0) {
            ag_free(key);
            return -1;
        }
        ag_free(key);

        skip_whitespace(r);
        if (r->pos < r->length && r->text[r->pos] == ',') {
            r->pos++;
            continue;
        }
        return expect_char(r, '}', "closing the object");
    }
}

/* The fields of one tensor's entry, each required exactly once. */
typedef struct tensor_fields {
    file_tensor *tensor;
    bool has_dtype;
    bool has_shape;
    bool has_offsets;
} tensor_fields;

static int read_dtype(json_reader *r, file_tensor *t)
{
    char *name;

    if (read_string(r, &name) != 0)
        return -1;
    for (size_t i = 0; i < N_FILE_DTYPES; i++) {
        if (strcmp(name, file_dtypes[i].name) == 0) {
            t->dtype = file_dtypes[i].name;
            t->element_size = file_dtypes[i].size;
            ag_free(name);
            return 0;
        }
    }
    json_error(r, "tensor \"%s\" has unknown dtype \"%s\"", t->name, name);
    ag_free(name);
    return -1;
}

static int read_tensor_field(json_reader *r, char *key, void *context)
{
    tensor_fields *fields = context;
    file_tensor *t = fields->tensor;
    bool *seen;

    if (strcmp(key, "dtype") == 0)
        seen = &fields->has_dtype;
    else if (strcmp(key, "shape") == 0)
        seen = &fields->has_shape;
    else if (strcmp(key, "data_offsets") == 0)
        seen = &fields->has_offsets;
    else
        return json_error(r, "tensor \"%s\" has unknown field \"%s\"; expected "
                          "dtype, shape and data_offsets",
                          t->name, key);
    if (*seen)
        return json_error(r, "tensor \"%s\" has field \"%s\" twice", t->name, key);
    *seen = true;

    if (seen == &fields->has_dtype)
        return read_dtype(r, t);
    if (seen == &fields->has_shape)
        return read_uint_array(r, t->shape, FILE_DIMS_MAX, &t->ndim, "shape");

    uint64_t offsets[2];
    int n;
    if (read_uint_array(r, offsets, 2, &n, "data_offsets") != 0)
        return -1;
    if (n != 2)
        return json_error(r, "data_offsets of tensor \"%s\" has %d entries, not "
                          "[begin, end]",
                          t->name, n);
    t->begin = offsets[0];
    t->end = offsets[1];
    return 0;
}

static int read_metadata_field(json_reader *r, char *key, void *context)
{
    (void)key;
    (void)context;
    char *value;

    /* The schema maps metadata keys to strings only. */
    skip_whitespace(r);
    if (r->pos < r->length && r->text[r->pos] != '"')
        return json_error(r, "metadata value of \"%s\" is not a string", key);
    if (read_string(r, &value) != 0)
        return -1;
    ag_free(value);
    return 0;
}

static int add_file_tensor(json_reader *r, file_header *header, file_tensor *t)
{
    file_tensor *existing;

    HASH_FIND_STR(header->by_name, t->name, existing);
    if (existing != NULL)
        return json_error(r, "tensor \"%s\" appears twice", t->name);

    if (header->count == header->capacity) {
        size_t capacity = header->capacity == 0 ? 16 : 2 * header->capacity;
        file_tensor **grown = ag_realloc(header->tensors, capacity * sizeof *grown);
        if (grown == NULL)
            goto out_of_memory;
        header->tensors = grown;
        header->capacity = capacity;
    }
    hash_out_of_memory = false;
    HASH_ADD_KEYPTR(hh, header->by_name, t->name, strlen(t->name), t);
    if (hash_out_of_memory)
        goto out_of_memory;
    header->tensors[header->count++] = t;
    return 0;

out_of_memory:
    ag_set_error("nn_params_load: %s: out of memory reading the header", r->path);
    return -1;
}

/* Context of the top-level object's members. */
typedef struct header_context {
    file_header *header;
    bool has_metadata;
} header_context;

static int read_header_member(json_reader *r, char *key, void *context)
{
    header_context *hc = context;

    if (strcmp(key, "__metadata__") == 0) {
        if (hc->has_metadata)
            return json_error(r, "__metadata__ appears twice");
        hc->has_metadata = true;
        return read_object(r, "opening __metadata__", read_metadata_field, NULL);
    }

    file_tensor *t = ag_calloc(1, sizeof *t);
    if (t == NULL) {
        ag_set_error("nn_params_load: %s: out of memory reading the header", r->path);
        return -1;
    }
    t->name = key;
    tensor_fields fields = {.tensor = t};
    int status = read_object(r, "opening a tensor entry", read_tensor_field, &fields);
    if (status == 0 && !(fields.has_dtype && fields.has_shape && fields.has_offsets))
        status = json_error(r, "tensor \"%s\" lacks %s", key,
                            !fields.has_dtype   ? "its dtype"
                            : !fields.has_shape ? "its shape"
                                                : "its data_offsets");
    if (status == 0) {
        t->name = copy_string(key);
        if (t->name == NULL) {
            ag_set_error("nn_params_load: %s: out of memory reading the header", r->path);
            status = -1;
        }
    }
    if (status == 0)
        status = add_file_tensor(r, hc->header, t);
    if (status != 0) {
        if (t->name != key)
            ag_free(t->name);
        ag_free(t);
    }
    return status;
}

/* Parses the whole header into `header`; trailing spaces are the padding
 * the format allows, anything else after the object is an error. */
static int parse_header(const char *text, size_t length, const char *path,
                        file_header *header)
{
    json_reader r = {.text = text, .length = length, .pos = 0, .path = path};
    header_context context = {.header = header};

    memset(header, 0, sizeof *header);
    if (read_object(&r, "opening the header", read_header_member, &context) != 0) {
        header_free(header);
        return -1;
    }
    skip_whitespace(&r);
    if (r.pos != r.length) {
        json_error(&r, "unexpected data after the header object");
        header_free(header);
        return -1;
    }
    return 0;
}

/* ---- checking a file against the parameters ------------------------------- */

/* Problems found while checking, listed in one error message. */
typedef struct problem_list {
    char text[400];
    size_t used;
    int count;
    int omitted;
} problem_list;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void add_problem(problem_list *list, const char *format, ...)
{
    char line[200];
    va_list args;

    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);

    list->count++;
    size_t needed = strlen(line) + (list->used > 0 ? 2 : 0);
    if (list->used + needed >= sizeof list->text) {
        list->omitted++;
        return;
    }
    list->used += (size_t)snprintf(list->text + list->used, sizeof list->text - list->used,
                                   "%s%s", list->used > 0 ? "; " : "", line);
}

static void format_file_shape(const file_tensor *t, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");

    for (int i = 0; i < t->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i == 0 ? "%llu" : ", %llu",
                                 (unsigned long long)t->shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* Checks that each tensor's byte range matches its shape and dtype. */
static void check_sizes(const file_header *header, problem_list *problems)
{
    for (size_t i = 0; i < header->count; i++) {
        const file_tensor *t = header->tensors[i];
        uint64_t bytes = t->element_size;
        bool overflow = false;
        char shape[96];

        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] != 0 && bytes > UINT64_MAX / t->shape[d])
                overflow = true;
            else
                bytes *= t->shape[d];
        }
        format_file_shape(t, shape, sizeof shape);
        if (t->begin > t->end) {
            add_problem(problems, "tensor \"%s\" has data_offsets [%llu, %llu] "
                        "that end before they begin",
                        t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
        } else if (overflow || t->end - t->begin != bytes) {
            add_problem(problems, "tensor \"%s\" has data_offsets [%llu, %llu] "
                        "(%llu bytes) but its shape %s of %s needs %s%llu bytes",
                        t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)(t->end - t->begin), shape, t->dtype,
                        overflow ? "more than " : "",
                        (unsigned long long)(overflow ? UINT64_MAX : bytes));
        }
    }
}

static int compare_by_offsets(const void *a, const void *b)
{
    const file_tensor *ta = *(const file_tensor *const *)a;
    const file_tensor *tb = *(const file_tensor *const *)b;

    if (ta->begin != tb->begin)
        return ta->begin < tb->begin ? -1 : 1;
    if (ta->end != tb->end)
        return ta->end < tb->end ? -1 : 1;
    return 0;
}

/* Checks that the byte ranges tile the data section: sorted by offset, each
 * begins where the previous ends, and the last ends at the end of the file. */
static void check_layout(const file_header *header, uint64_t data_size,
                         problem_list *problems)
{
    file_tensor **sorted = ag_alloc((header->count + 1) * sizeof *sorted);
    if (sorted == NULL) {
        add_problem(problems, "out of memory checking the data offsets");
        return;
    }
    if (header->count > 0)
        memcpy(sorted, header->tensors, header->count * sizeof *sorted);
    qsort(sorted, header->count, sizeof *sorted, compare_by_offsets);

    uint64_t expected = 0;
    for (size_t i = 0; i < header->count; i++) {
        const file_tensor *t = sorted[i];

        if (t->begin < expected)
            add_problem(problems, "tensors \"%s\" and \"%s\" overlap in the data "
                        "section (byte %llu)",
                        sorted[i - 1]->name, t->name, (unsigned long long)t->begin);
        else if (t->begin > expected)
            add_problem(problems, "%llu bytes before tensor \"%s\" belong to no "
                        "tensor; data must be contiguous",
                        (unsigned long long)(t->begin - expected), t->name);
        if (t->end > data_size)
            add_problem(problems, "truncated file: tensor \"%s\" ends at byte %llu "
                        "of the data section, which has %llu bytes",
                        t->name, (unsigned long long)t->end, (unsigned long long)data_size);
        if (t->end > expected)
            expected = t->end;
    }
    if (expected < data_size)
        add_problem(problems, "%llu bytes after the last tensor belong to no tensor",
                    (unsigned long long)(data_size - expected));
    ag_free(sorted);
}

/* Whether the file's shape equals the parameter's; a file scalar of shape []
 * matches a parameter of shape (1). */
static bool shape_matches(const file_tensor *t, const ag_tensor *param)
{
    int ndim = ag_tensor_ndim(param);
    const size_t *shape = ag_tensor_shape(param);

    if (t->ndim == 0)
        return ndim == 1 && shape[0] == 1;
    if (t->ndim != ndim)
        return false;
    for (int i = 0; i < ndim; i++) {
        if (t->shape[i] != shape[i])
            return false;
    }
    return true;
}

/* Matches the file's tensors against the parameters by name. */
static void check_names(const file_header *header, const nn_params *params,
                        problem_list *problems)
{
    for (size_t i = 0; i < nn_params_count(params); i++) {
        const char *name;
        ag_tensor *param = nn_params_at(params, i, &name);
        file_tensor *t;
        char file_shape[96];
        char param_shape[96];

        HASH_FIND_STR(header->by_name, name, t);
        if (t == NULL) {
            add_problem(problems, "missing tensor \"%s\"", name);
            continue;
        }
        if (strcmp(t->dtype, dtype_file_name(ag_tensor_dtype(param))) != 0)
            add_problem(problems, "tensor \"%s\" has dtype %s in the file and %s "
                        "in the parameters",
                        name, t->dtype, dtype_file_name(ag_tensor_dtype(param)));
        if (!shape_matches(t, param)) {
            format_file_shape(t, file_shape, sizeof file_shape);
            add_problem(problems, "tensor \"%s\" has shape %s in the file and %s "
                        "in the parameters",
                        name, file_shape, ag_shape_str(param, param_shape, sizeof param_shape));
        }
    }
    for (size_t i = 0; i < header->count; i++) {
        if (nn_params_get(params, header->tensors[i]->name) == NULL)
            add_problem(problems, "unexpected tensor \"%s\" (no parameter has that name)",
                        header->tensors[i]->name);
    }
}

/* ---- loading -------------------------------------------------------------- */

/* An open checkpoint with its header read and parsed. */
typedef struct checkpoint {
    FILE *file;
    const char *path;
    uint64_t file_size;
    uint64_t header_size;
    file_header header;
} checkpoint;

static int load_error_errno(const char *path, const char *failure)
{
    ag_set_error("nn_params_load: %s: %s: %s", path, failure, strerror(errno));
    return -1;
}

/* Opens the file, reads and parses its header. */
static int open_checkpoint(checkpoint *cp, const char *path)
{
    memset(cp, 0, sizeof *cp);
    cp->path = path;
    cp->file = fopen(path, "rb");
    if (cp->file == NULL)
        return load_error_errno(path, "cannot open");

    struct stat st;
    if (fstat(fileno(cp->file), &st) != 0)
        return load_error_errno(path, "cannot read the file size");
    cp->file_size = (uint64_t)st.st_size;

    unsigned char length_bytes[8];
    if (cp->file_size < 8) {
        ag_set_error("nn_params_load: %s: truncated file: %llu bytes, fewer than "
                     "the 8-byte header length",
                     path, (unsigned long long)cp->file_size);
        return -1;
    }
    if (fread(length_bytes, 1, 8, cp->file) != 8)
        return load_error_errno(path, "cannot read the header length");
    for (int i = 7; i >= 0; i--)
        cp->header_size = (cp->header_size << 8) | length_bytes[i];

    if (cp->header_size > cp->file_size - 8) {
        ag_set_error("nn_params_load: %s: header length %llu is larger than the "
                     "%llu bytes that follow it; the file is truncated or not a "
                     "safetensors file",
                     path, (unsigned long long)cp->header_size,
                     (unsigned long long)(cp->file_size - 8));
        return -1;
    }
    if (cp->header_size > HEADER_MAX) {
        ag_set_error("nn_params_load: %s: header length %llu exceeds the limit "
                     "of %llu bytes",
                     path, (unsigned long long)cp->header_size,
                     (unsigned long long)HEADER_MAX);
        return -1;
    }

    char *text = ag_alloc((size_t)cp->header_size + 1);
    if (text == NULL) {
        ag_set_error("nn_params_load: %s: out of memory for a %llu-byte header", path,
                     (unsigned long long)cp->header_size);
        return -1;
    }
    if (fread(text, 1, (size_t)cp->header_size, cp->file) != cp->header_size) {
        ag_free(text);
        return load_error_errno(path, "cannot read the header");
    }
    int status = parse_header(text, (size_t)cp->header_size, path, &cp->header);
    ag_free(text);
    return status;
}

static void close_checkpoint(checkpoint *cp)
{
    if (cp->file != NULL)
        fclose(cp->file);
    header_free(&cp->header);
}

/* Reads the whole data section, then copies each tensor into its
 * parameter; nothing is written until every byte has been read. */
static int copy_data(checkpoint *cp, nn_params *params)
{
    uint64_t data_size = cp->file_size - 8 - cp->header_size;
    unsigned char *data = ag_alloc((size_t)data_size + 1);

    if (data == NULL) {
        ag_set_error("nn_params_load: %s: out of memory for %llu bytes of data",
                     cp->path, (unsigned long long)data_size);
        return -1;
    }
    if (fread(data, 1, (size_t)data_size, cp->file) != data_size) {
        ag_free(data);
        return load_error_errno(cp->path, "cannot read the data section");
    }

    for (size_t i = 0; i < nn_params_count(params); i++) {
        const char *name;
        ag_tensor *param = nn_params_at(params, i, &name);
        file_tensor *t;

        HASH_FIND_STR(cp->header.by_name, name, t);
        if (!host_is_little_endian())
            swap_elements(data + t->begin, ag_tensor_numel(param), t->element_size);
        memcpy(ag_tensor_data(param), data + t->begin, (size_t)(t->end - t->begin));
    }
    ag_free(data);
    return 0;
}

int nn_params_load(nn_params *params, const char *path)
{
    if (params == NULL || path == NULL) {
        ag_set_error("nn_params_load: %s is NULL", params == NULL ? "params" : "path");
        return -1;
    }

    checkpoint cp;
    if (open_checkpoint(&cp, path) != 0) {
        close_checkpoint(&cp);
        return -1;
    }

    problem_list problems = {.used = 0};
    check_sizes(&cp.header, &problems);
    check_layout(&cp.header, cp.file_size - 8 - cp.header_size, &problems);
    check_names(&cp.header, params, &problems);
    if (problems.count > 0) {
        char more[48] = "";
        if (problems.omitted > 0)
            snprintf(more, sizeof more, "; and %d more", problems.omitted);
        ag_set_error("nn_params_load: %s: %d problem%s, nothing loaded: %s%s", path,
                     problems.count, problems.count == 1 ? "" : "s", problems.text, more);
        close_checkpoint(&cp);
        return -1;
    }

    int status = copy_data(&cp, params);
    close_checkpoint(&cp);
    return status;
}

/* ---- saving --------------------------------------------------------------- */

/* A growable text buffer for the header. */
typedef struct text_buffer {
    char *data;
    size_t length;
    size_t capacity;
    bool failed; /* out of memory */
} text_buffer;

static void append(text_buffer *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->length + n + 1 > b->capacity) {
        size_t capacity = b->capacity == 0 ? 256 : b->capacity;
        while (capacity < b->length + n + 1)
            capacity *= 2;
        char *grown = ag_realloc(b->data, capacity);
        if (grown == NULL) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, s, n);
    b->length += n;
    b->data[b->length] = '\0';
}

static void append_str(text_buffer *b, const char *s)
{
    append(b, s, strlen(s));
}

static void append_u64(text_buffer *b, uint64_t value)
{
    char digits[24];

    snprintf(digits, sizeof digits, "%llu", (unsigned long long)value);
    append_str(b, digits);
}

/* Appends `s` as a JSON string: quotes, backslashes and control characters
 * escaped, other bytes (UTF-8) as they are. */
static void append_json_string(text_buffer *b, const char *s)
{
    append_str(b, "\"");
    for (const char *c = s; *c != '\0'; c++) {
        unsigned char u = (unsigned char)*c;
        char escaped[8];

        if (u == '"' || u == '\\') {
            escaped[0] = '\\';
            escaped[1] = (char)u;
            append(b, escaped, 2);
        } else if (u < 0x20) {
            snprintf(escaped, sizeof escaped, "\\u%04x", u);
            append_str(b, escaped);
        } else {
            append(b, c, 1);
        }
    }
    append_str(b, "\"");
}

/* Builds the JSON header, padded with spaces so the data starts at a
 * multiple of 8 bytes from the start of the file. */
static int build_header(const nn_params *params, text_buffer *b)
{
    uint64_t offset = 0;

    append_str(b, "{");
    for (size_t i = 0; i < nn_params_count(params); i++) {
        const char *name;
        ag_tensor *t = nn_params_at(params, i, &name);
        uint64_t bytes = (uint64_t)ag_tensor_numel(t) *
                         (ag_tensor_dtype(t) == AG_F32 ? 4u : 8u);

        if (!utf8_is_valid(name)) {
            ag_set_error("nn_params_save: parameter name \"%s\" is not valid "
                         "UTF-8, which the safetensors header requires",
                         name);
            return -1;
        }
        append_str(b, i == 0 ? "" : ",");
        append_json_string(b, name);
        append_str(b, ":{\"dtype\":\"");
        append_str(b, dtype_file_name(ag_tensor_dtype(t)));
        append_str(b, "\",\"shape\":[");
        for (int d = 0; d < ag_tensor_ndim(t); d++) {
            append_str(b, d == 0 ? "" : ",");
            append_u64(b, ag_tensor_dim(t, d));
        }
        append_str(b, "],\"data_offsets\":[");
        append_u64(b, offset);
        append_str(b, ",");
        append_u64(b, offset + bytes);
        append_str(b, "]}");
        offset += bytes;
    }
    append_str(b, "}");
    while (!b->failed && b->length % 8 != 0)
        append_str(b, " ");
    if (b->failed) {
        ag_set_error("nn_params_save: out of memory building the header");
        return -1;
    }
    return 0;
}

/* Writes a tensor's data in little-endian order, converting in blocks on a
 * big-endian host. */
static bool write_tensor_data(FILE *file, ag_tensor *t)
{
    size_t size = ag_tensor_dtype(t) == AG_F32 ? 4 : 8;
    size_t n = ag_tensor_numel(t);
    const unsigned char *data = ag_tensor_data(t);

    if (host_is_little_endian())
        return fwrite(data, size, n, file) == n;

    unsigned char block[4096];
    size_t per_block = sizeof block / size;
    for (size_t i = 0; i < n; i += per_block) {
        size_t count = n - i < per_block ? n - i : per_block;
        memcpy(block, data + i * size, count * size);
        swap_elements(block, count, size);
        if (fwrite(block, size, count, file) != count)
            return false;
    }
    return true;
}

/* Writes the complete file to `file`; returns false on a write error. */
static bool write_checkpoint(FILE *file, const nn_params *params, const text_buffer *header)
{
    unsigned char length_bytes[8];
    uint64_t length = header->length;

    for (int i = 0; i < 8; i++)
        length_bytes[i] = (unsigned char)(length >> (8 * i));
    if (fwrite(length_bytes, 1, 8, file) != 8 ||
        fwrite(header->data, 1, header->length, file) != header->length)
        return false;
    for (size_t i = 0; i < nn_params_count(params); i++) {
        if (!write_tensor_data(file, nn_params_at(params, i, NULL)))
            return false;
    }
    return fflush(file) == 0;
}

/* Flushes the directory holding `path` so the rename itself is durable.
 * Failure only weakens durability after a power loss, so it is ignored:
 * some file systems refuse to open or sync a directory. */
static void sync_parent_directory(const char *path)
{
    char *dir = copy_string(path);
    if (dir == NULL)
        return;

    char *slash = strrchr(dir, '/');
    const char *name = ".";
    if (slash == dir)
        name = "/";
    else if (slash != NULL) {
        *slash = '\0';
        name = dir;
    }

    int fd = open(name, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    ag_free(dir);
}

int nn_params_save(const nn_params *params, const char *path)
{
    if (params == NULL || path == NULL) {
        ag_set_error("nn_params_save: %s is NULL", params == NULL ? "params" : "path");
        return -1;
    }

    text_buffer header = {0};
    if (build_header(params, &header) != 0) {
        ag_free(header.data);
        return -1;
    }

    size_t path_length = strlen(path);
    char *tmp_path = ag_alloc(path_length + 5);
    if (tmp_path == NULL) {
        ag_free(header.data);
        ag_set_error("nn_params_save: out of memory");
        return -1;
    }
    memcpy(tmp_path, path, path_length);
    memcpy(tmp_path + path_length, ".tmp", 5);

    /* Each failure names the file it happened on and what failed. */
    const char *failure = NULL;
    const char *failed_path = tmp_path;
    FILE *file = fopen(tmp_path, "wb");
    if (file == NULL)
        failure = "cannot create";
    else if (!write_checkpoint(file, params, &header))
        failure = "cannot write";
    else if (fsync(fileno(file)) != 0)
        failure = "cannot flush to disk";

    int saved_errno = errno;
    if (file != NULL && fclose(file) != 0 && failure == NULL) {
        failure = "cannot close";
        saved_errno = errno;
    }
    if (failure == NULL && rename(tmp_path, path) != 0) {
        failure = "cannot rename the temporary file to";
        failed_path = path;
        saved_errno = errno;
    }

    if (failure != NULL) {
        if (file != NULL)
            remove(tmp_path);
        ag_set_error("nn_params_save: %s %s: %s; the previous file, if any, is "
                     "unchanged",
                     failure, failed_path, strerror(saved_errno));
        ag_free(tmp_path);
        ag_free(header.data);
        return -1;
    }
    sync_parent_directory(path);
    ag_free(tmp_path);
    ag_free(header.data);
    return 0;
}
