/* circuits.h as C99 and C11 (-Wall -Wextra -Werror -pedantic): it must compile first and
 * alone, and its declarations link against the library. */
#include <circuits.h>

#include "../testutil.h"

static int never_called(const circuits_tensor *act, void *user_data)
{
    (void)act;
    (void)user_data;
    return CIRCUITS_HOOK_STOP;
}

int main(void)
{
    CHECK(circuits_version_number() == CIRCUITS_VERSION_NUMBER, "library %u, header %d", circuits_version_number(),
          CIRCUITS_VERSION_NUMBER);
    CHECK(circuits_abi_version() == CIRCUITS_ABI_VERSION, "ABI %d", circuits_abi_version());
    circuits_context_options opts;
    circuits_context_options_init(&opts);
    CHECK(opts.size == sizeof opts, "context options size %u", opts.size);
    circuits_hook_fn fn = never_called;
    CHECK_FAILS(circuits_context_add_hook(NULL, "hook_embed", fn, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    circuits_status status = CIRCUITS_E_NOT_FOUND;
    CHECK(strstr(circuits_status_string(status), "CIRCUITS_E_NOT_FOUND") != NULL, "%s", circuits_status_string(status));
    return tu_finish("c_header");
}
