#include <stdlib.h>

#include "check_helpers.h"

static size_t allocation_calls;

static void *counting_alloc(size_t size, void *user)
{
    (void)user;
    allocation_calls++;
    return malloc(size);
}

static void *counting_realloc(void *ptr, size_t size, void *user)
{
    (void)user;
    allocation_calls++;
    return realloc(ptr, size);
}

static void counting_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

void counting_allocator_install(void)
{
    static const ag_allocator counting = {counting_alloc, counting_realloc,
                                          counting_free, NULL};
    allocation_calls = 0;
    ag_set_allocator(&counting);
}

void counting_allocator_remove(void)
{
    ag_set_allocator(NULL);
}

size_t counting_allocator_calls(void)
{
    return allocation_calls;
}

int run_suite(Suite *suite)
{
    SRunner *runner = srunner_create(suite);

    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
