/* libFuzzer driver for the injection screen's decoders (src/guard/injection.c, wd_inj_decode). Input: one
 * byte that picks the output room, then the text. Every layer must return an error, 0, or a length it
 * appended to the buffer, never more than the room it was given; the folded, look-alike and upside-down
 * layers never more than the text. AddressSanitizer checks that no decoder reads outside the text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guard/injection.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t room = data[0] == 0xFF ? 64 * 1024 : data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char *copy = malloc(len ? len : 1); /* exactly len bytes, so an overread is caught */
    if (!copy) return 0;
    memcpy(copy, text, len);
    wd_buf_t out;
    wd_buf_init(&out, 0);
    for (int l = WD_INJ_PLAIN + 1; l < WD_INJ__LAYERS; l++) {
        wd_buf_reset(&out);
        static const char pre[] = "kept";
        if (wd_buf_append(&out, pre, sizeof pre - 1)) abort();
        long n = wd_inj_decode((wd_inj_layer_t)l, copy, len, room, &out);
        if (n < 0) continue; /* out of memory */
        if ((size_t)n != out.len - (sizeof pre - 1) || (size_t)n > room) abort();
        if ((l == WD_INJ_FOLDED || l == WD_INJ_LOOKALIKE || l == WD_INJ_FLIPPED) && (size_t)n > len) abort();
        if (memcmp(out.data, pre, sizeof pre - 1) != 0) abort(); /* what was there before stays */
    }
    wd_buf_free(&out);
    free(copy);
    return 0;
}
