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
 * The arena hands out memory by bumping a cursor through its newest chunk
 * (the inline fast path is ag_arena_alloc_aligned in internal.h) and grows
 * by adding a chunk at least twice as large as the last. Reset keeps the
 * memory: when a step needed several chunks, reset replaces them by one
 * chunk of their total size, so from the second step on a step of the same
 * size fits in one chunk and allocates nothing.
 */

#define ARENA_MIN_CHUNK ((size_t)1 << 16)

struct ag_chunk {
    ag_chunk *next;
    size_t size;         /* usable bytes from base */
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
    chunk->base = (unsigned char *)(((uintptr_t)chunk->data + (AG_ALIGN - 1)) &
                                    ~(uintptr_t)(AG_ALIGN - 1));
    return chunk;
}

/* Makes `chunk` the one the cursor bumps through, from its start. */
static void use_chunk(ag_arena *arena, ag_chunk *chunk)
{
    arena->cursor = chunk->base;
    arena->limit = chunk->base + chunk->size;
}

void *ag_arena_alloc_slow(ag_arena *arena, size_t size, size_t align)
{
    if (size == 0)
        size = 1;
    if (size > SIZE_MAX - AG_ALIGN)
        return NULL;

    /* The newest chunk may still have room once the request is aligned. */
    if (arena->head != NULL) {
        uintptr_t start = ((uintptr_t)arena->cursor + (align - 1)) & ~(uintptr_t)(align - 1);

        if (start <= (uintptr_t)arena->limit && size <= (uintptr_t)arena->limit - start) {
            arena->cursor = (unsigned char *)start + size;
            return (void *)start;
        }
    }

    /* A fresh chunk starts AG_ALIGN-aligned, so `size` bytes always fit. */
    size_t grow = arena->head == NULL ? ARENA_MIN_CHUNK : 2 * arena->head->size;
    if (arena->head != NULL && grow < arena->head->size)
        grow = size; /* doubling overflowed */
    if (grow < size)
        grow = size;

    ag_chunk *fresh = chunk_new(grow);
    if (fresh == NULL)
        return NULL;
    fresh->next = arena->head;
    arena->head = fresh;
    arena->capacity += grow;
    use_chunk(arena, fresh);
    arena->cursor += size;
    return fresh->base;
}

void *ag_arena_alloc(ag_arena *arena, size_t size)
{
    return ag_arena_alloc_slow(arena, size, AG_ALIGN);
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
        use_chunk(arena, chunk);
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
    arena->cursor = NULL;
    arena->limit = NULL;
    arena->capacity = 0;
}
