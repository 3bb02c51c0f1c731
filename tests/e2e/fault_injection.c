/* Storage faults on demand, for the real server: LD_PRELOAD this library and
 * create a file in $DEPLOYAPI_FAULT_DIR to make the file system misbehave.
 *
 *   erofs  every pwrite fails with EROFS (a file system remounted read-only)
 *   eio    every pwrite, fsync and fdatasync fails with EIO (a failing disk)
 *
 * Only pwrite/pwrite64 (how SQLite writes its database and WAL) and the syncs
 * are touched; the server's own logging (write) is left alone.  Built by the
 * tests with the machine's C compiler.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static int injected(const char *name) {
    const char *dir = getenv("DEPLOYAPI_FAULT_DIR");
    char path[4096];
    if (dir == NULL || snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return 0;
    return access(path, F_OK) == 0;
}

static int write_fault(void) {
    if (injected("erofs")) return EROFS;
    if (injected("eio")) return EIO;
    return 0;
}

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off64_t);
typedef int (*sync_fn)(int);

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    static pwrite_fn real;
    int error = write_fault();
    if (error) { errno = error; return -1; }
    if (!real) real = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
    return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    static pwrite64_fn real;
    int error = write_fault();
    if (error) { errno = error; return -1; }
    if (!real) real = (pwrite64_fn)dlsym(RTLD_NEXT, "pwrite64");
    return real(fd, buf, count, offset);
}

int fsync(int fd) {
    static sync_fn real;
    if (injected("eio")) { errno = EIO; return -1; }
    if (!real) real = (sync_fn)dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    static sync_fn real;
    if (injected("eio")) { errno = EIO; return -1; }
    if (!real) real = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
