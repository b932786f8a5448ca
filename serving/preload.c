/* Preloaded into tritonserver (LD_PRELOAD) by stylepress; runs before main(). Two jobs:

   1. Keep Triton's API keys out of `ps`. tritonserver takes a key only as a command-line argument
      (--http-restricted-api=APIS:admin-key=VALUE), and /proc/PID/cmdline is readable by every local
      user. stylepress starts it with a placeholder there, `@STYLEPRESS_KEY_<NAME>@`, and the value in
      the environment variable STYLEPRESS_KEY_<NAME> (/proc/PID/environ is readable only by the same
      user and root). This points each such argv entry at a heap copy with the value put in (the
      kernel's cmdline view keeps showing the placeholder). A placeholder without its variable stops
      the server (exit 97): a key that `ps` shows is no key.
   2. Die with the process that started it. With STYLEPRESS_PARENT_PID set, the server gets SIGTERM
      (Triton's graceful shutdown, which stops its Python-backend stubs) when that parent exits, even
      by SIGKILL (PR_SET_PDEATHSIG); if the parent is already gone, at once.

   Then the variables and LD_PRELOAD are removed from the environment and their bytes zeroed, so the
   stubs the server starts inherit and show none of it. Hand-written because no library does this;
   glibc passes (argc, argv, envp) to init_array functions, and main() gets the same argv array. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PREFIX "STYLEPRESS_KEY_"

static void die_with_parent(void) {
    const char *parent = getenv("STYLEPRESS_PARENT_PID");
    if (parent == NULL) return;
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != (pid_t)atol(parent)) raise(SIGTERM); /* the parent died before prctl */
}

static void prepare(int argc, char **argv, char **envp) {
    die_with_parent();
    for (int i = 0; i < argc; i++) {
        char *at = strstr(argv[i], "@" PREFIX);
        if (at == NULL) continue;
        char *end = strchr(at + 1, '@');
        char name[128];
        size_t n = end ? (size_t)(end - at - 1) : 0;
        const char *value = NULL;
        if (n > 0 && n < sizeof name) {
            memcpy(name, at + 1, n);
            name[n] = '\0';
            value = getenv(name);
        }
        if (value == NULL || *value == '\0') {
            fputs("stylepress preload: a key placeholder has no value in the environment\n", stderr);
            _exit(97);
        }
        size_t head = (size_t)(at - argv[i]), tail = strlen(end + 1), len = strlen(value);
        char *arg = malloc(head + len + tail + 1);
        if (arg == NULL) _exit(97);
        memcpy(arg, argv[i], head);
        memcpy(arg + head, value, len);
        memcpy(arg + head + len, end + 1, tail + 1);
        argv[i] = arg;
    }
    /* Collect first: unsetenv() edits the array being walked. */
    char *scrub[64];
    int count = 0;
    for (char **e = envp; *e != NULL && count < 64; e++)
        if (strncmp(*e, PREFIX, strlen(PREFIX)) == 0 || strncmp(*e, "LD_PRELOAD=", 11) == 0 ||
            strncmp(*e, "STYLEPRESS_PARENT_PID=", 22) == 0)
            scrub[count++] = *e;
    for (int i = 0; i < count; i++) {
        char name[128];
        size_t n = strcspn(scrub[i], "=");
        if (n >= sizeof name) continue;
        memcpy(name, scrub[i], n);
        name[n] = '\0';
        unsetenv(name);
        memset(scrub[i], 0, strlen(scrub[i]));
    }
}

__attribute__((section(".init_array"), used)) static void (*const init)(int, char **, char **) = prepare;
