/* Heap allocation through a replaceable allocator, and the tape's arena. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- heap ---------------------------------------------------------------- */

static void *libc_alloc(size_t size, void *user)
{
    (void)user;
    return malloc(size);
}

static void *libc_realloc(void *ptr, size_t size, void *user)
{
    (void)user;
    return realloc(ptr, size);
}

static void libc_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

static ag_allocator current_allocator = {libc_alloc, libc_realloc, libc_free, NULL};

void ag_set_allocator(const ag_allocator *allocator)
{
    if (allocator == NULL || allocator->alloc == NULL || allocator->realloc == NULL ||
        allocator->free == NULL) {
        current_allocator = (ag_allocator){libc_alloc, libc_realloc, libc_free, NULL};
        return;
    }
    current_allocator = *allocator;
}

void *ag_heap_alloc(size_t size)
{
    return current_allocator.alloc(size, current_allocator.user);
}

void *ag_heap_realloc(void *ptr, size_t size)
{
    return current_allocator.realloc(ptr, size, current_allocator.user);
}

void ag_heap_free(void *ptr)
{
    if (ptr != NULL)
        current_allocator.free(ptr, current_allocator.user);
}

void *ag_alloc(size_t size)
{
    return ag_heap_alloc(size);
}

void *ag_realloc(void *ptr, size_t size)
{
    return ag_heap_realloc(ptr, size);
}

void ag_free(void *ptr)
{
    ag_heap_free(ptr);
}

void *ag_calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;

    void *ptr = ag_heap_alloc(n * size);
    if (ptr != NULL)
        memset(ptr, 0, n * size);
    return ptr;
}

/* ---- arena --------------------------------------------------------------- */

/*
 * The arena hands out memory by bumping an offset in its newest chunk and
 * grows by adding a chunk at least twice as large as the last. Reset keeps
 * the memory: when a step needed several chunks, reset replaces them by one
 * chunk of their total size, so from the second step on a step of the same
 * size fits in one chunk and allocates nothing.
 */

#define ARENA_MIN_CHUNK ((size_t)1 << 16)

struct ag_chunk {
    ag_chunk *next;
    size_t size;   /* usable bytes after the header */
    size_t offset; /* bytes handed out */
    unsigned char *base; /* first AG_ALIGN-aligned byte after the header */
    unsigned char data[];
};

static ag_chunk *chunk_new(size_t size)
{
    if (size > SIZE_MAX - sizeof(ag_chunk) - AG_ALIGN)
        return NULL;

    ag_chunk *chunk = ag_heap_alloc(sizeof(ag_chunk) + size + AG_ALIGN);

    if (chunk == NULL)
        return NULL;
    chunk->next = NULL;
    chunk->size = size;
    chunk->offset = 0;
    chunk->base = (unsigned char *)(((uintptr_t)chunk->data + (AG_ALIGN - 1)) &
                                    ~(uintptr_t)(AG_ALIGN - 1));
    return chunk;
}

static size_t align_up(size_t n)
{
    return (n + (AG_ALIGN - 1)) & ~(size_t)(AG_ALIGN - 1);
}

void *ag_arena_alloc(ag_arena *arena, size_t size)
{
    ag_chunk *chunk = arena->head;
    size_t need = align_up(size == 0 ? 1 : size);

    if (need < size)
        return NULL;

    if (chunk == NULL || chunk->size - chunk->offset < need) {
        size_t grow = chunk == NULL ? ARENA_MIN_CHUNK : 2 * chunk->size;

        if (chunk != NULL && grow < chunk->size)
            grow = need; /* doubling overflowed */

        if (grow < need)
            grow = need;
        ag_chunk *fresh = chunk_new(grow);
        if (fresh == NULL)
            return NULL;
        fresh->next = chunk;
        arena->head = fresh;
        arena->capacity += grow;
        chunk = fresh;
    }

    void *ptr = chunk->base + chunk->offset;
    chunk->offset += need;
    arena->used_total += need;
    return ptr;
}

void ag_arena_reset(ag_arena *arena)
{
    ag_chunk *chunk = arena->head;

    if (chunk != NULL && chunk->next != NULL) {
        /* Several chunks: merge into one big enough for the whole step. */
        size_t total = arena->capacity;

        ag_arena_free(arena);
        chunk = chunk_new(total);
        if (chunk != NULL) {
            arena->head = chunk;
            arena->capacity = total;
        }
    }
    if (chunk != NULL)
        chunk->offset = 0;
    arena->used_total = 0;
}

void ag_arena_free(ag_arena *arena)
{
    ag_chunk *chunk = arena->head;

    while (chunk != NULL) {
        ag_chunk *next = chunk->next;
        ag_heap_free(chunk);
        chunk = next;
    }
    arena->head = NULL;
    arena->capacity = 0;
    arena->used_total = 0;
}
