/*
 * Hands a fuzz input to a loader that takes a path: the bytes go into an
 * in-memory file (memfd), and the loader opens it as /proc/self/fd/N, so no
 * disk file is written and parallel fuzzers do not share a path.
 * memfd_create is a GNU extension: compile with -D_GNU_SOURCE.
 */
#ifndef TAPEGRAD_FUZZ_FILE_H
#define TAPEGRAD_FUZZ_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* Replaces the memory file's contents with `data` and writes its path into
 * `path`. Returns 0, or -1 when the file cannot be made or written. */
static int fuzz_file_write(const uint8_t *data, size_t size, char *path, size_t path_size)
{
    static int fd = -1;

    if (fd < 0)
        fd = memfd_create("tapegrad-fuzz", 0);
    if (fd < 0 || ftruncate(fd, 0) != 0)
        return -1;

    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    snprintf(path, path_size, "/proc/self/fd/%d", fd);
    return 0;
}

#endif /* TAPEGRAD_FUZZ_FILE_H */
