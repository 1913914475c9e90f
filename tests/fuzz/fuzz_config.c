/* libFuzzer driver for the configuration loader (yamltree + config validation): any input either
 * loads or is refused with a message that names the file, and loading changes nothing it should not.
 * A loaded configuration must pass a reload check against itself and free cleanly (ASan: no leak, no
 * use after free, including the secrets zeroed on free). The input is parsed twice: the second load
 * must give the same verdict and the same message (no hidden state between loads). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "fuzz_check.h"

#define NAME "fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err1[512], err2[512];
    wd_config_t *a = wd_config_load_buf(NAME, (const char *)data, size, err1, sizeof err1);
    wd_config_t *b = wd_config_load_buf(NAME, (const char *)data, size, err2, sizeof err2);
    CHECK((a == NULL) == (b == NULL));
    if (!a) {
        /* refused: a message, which starts with the file's name (and usually line:column) */
        CHECK(err1[0] != '\0' && strncmp(err1, NAME ":", sizeof NAME) == 0);
        CHECK(strcmp(err1, err2) == 0);
        return 0;
    }
    char err[512];
    CHECK(wd_config_check_reload(a, b, err, sizeof err) == WD_OK);
    wd_config_unref(a);
    wd_config_unref(b);
    return 0;
}
