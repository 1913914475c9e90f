/* main() for the libFuzzer drivers outside libFuzzer. `make test` builds every driver with it (gcc,
 * and clang with ASan and UBSan), so a driver cannot rot unnoticed while the fuzz build is not part of CI,
 * and replays its seed corpus: each file given, or each file of each directory given (in name order),
 * goes through LLVMFuzzerTestOneInput once; a broken invariant aborts there. Exits 1 when it found
 * nothing to replay (a wrong path) or could not read a file. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/core.h"

#define REPLAY_MAX_BYTES (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay(const char *path, size_t *n)
{
    char *buf, err[256];
    size_t len;
    if (wd_read_file(path, REPLAY_MAX_BYTES, &buf, &len, err, sizeof err) != WD_OK) {
        fprintf(stderr, "replay: %s\n", err);
        return 1;
    }
    /* exactly len bytes, no terminator, as libFuzzer passes them: ASan then catches a one-byte overread */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        fprintf(stderr, "replay: out of memory\n");
        return 1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    (*n)++;
    return 0;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    size_t n = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0 || !S_ISDIR(st.st_mode)) {
            rc |= replay(argv[i], &n);
            continue;
        }
        struct dirent **ents;
        int k = scandir(argv[i], &ents, NULL, alphasort);
        if (k < 0) {
            fprintf(stderr, "replay: cannot read the directory %s\n", argv[i]);
            return 1;
        }
        for (int j = 0; j < k; j++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], ents[j]->d_name);
            if (ents[j]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
                rc |= replay(path, &n);
            free(ents[j]);
        }
        free(ents);
    }
    printf("%zu inputs replayed\n", n);
    return rc || n == 0;
}
