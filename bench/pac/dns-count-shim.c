/*
 * LD_PRELOAD shim for bench/pac/dns-count.sh: counts name lookups made by a
 * PAC engine (pactester) and answers them from a fixed table, so the count is
 * exact and no query ever leaves the machine.
 *
 * Every call to getaddrinfo, gethostbyname, gethostbyname2 and their _r
 * variants appends one line "FUNCTION NAME" to $MSC_DNS_LOG. getaddrinfo
 * (the only resolver pacparser imports) is answered from $MSC_DNS_HOSTS
 * ("name address" lines) through the real getaddrinfo with AI_NUMERICHOST,
 * so the result has the genuine glibc layout; names not in the table, and
 * numeric hosts that the real resolver would parse, are answered the same way
 * (numeric) or with EAI_NONAME. The gethostbyname family is only counted and
 * fails with HOST_NOT_FOUND: nothing in pactester should call it, and a
 * non-zero count would show up in the report.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HOSTS 65536

struct entry { char *name; char *addr; };
static struct entry table[MAX_HOSTS];
static size_t table_len;
static int log_fd = -2;
static int loaded;

static void load(void)
{
    if (loaded)
        return;
    loaded = 1;
    const char *log = getenv("MSC_DNS_LOG");
    log_fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    const char *hosts = getenv("MSC_DNS_HOSTS");
    FILE *f = hosts ? fopen(hosts, "re") : NULL;
    if (!f)
        return;
    char name[512], addr[128];
    while (table_len < MAX_HOSTS && fscanf(f, "%511s %127s", name, addr) == 2) {
        table[table_len].name = strdup(name);
        table[table_len].addr = strdup(addr);
        table_len++;
    }
    fclose(f);
}

static void record(const char *fn, const char *name)
{
    load();
    if (log_fd < 0)
        return;
    char line[700];
    int n = snprintf(line, sizeof line, "%s %s\n", fn, name ? name : "(null)");
    if (n > 0)
        /* One write per line: O_APPEND keeps lines whole. */
        (void) !write(log_fd, line, (size_t) n < sizeof line ? (size_t) n : sizeof line - 1);
}

static const char *lookup(const char *name)
{
    for (size_t i = 0; name && i < table_len; i++)
        if (strcasecmp(table[i].name, name) == 0)
            return table[i].addr;
    return NULL;
}

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static gai_fn real;
    if (!real)
        real = (gai_fn) dlsym(RTLD_NEXT, "getaddrinfo");
    record("getaddrinfo", node);
    struct addrinfo h;
    memset(&h, 0, sizeof h);
    if (hints)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    const char *addr = lookup(node);
    int rc = real(addr ? addr : node, service, &h, res);
    /* Not numeric and not in the table: an unknown name. */
    return rc == EAI_NONAME || rc == 0 ? rc : EAI_NONAME;
}

struct hostent *gethostbyname(const char *name)
{
    record("gethostbyname", name);
    h_errno = HOST_NOT_FOUND;
    return NULL;
}

struct hostent *gethostbyname2(const char *name, int af)
{
    (void) af;
    record("gethostbyname2", name);
    h_errno = HOST_NOT_FOUND;
    return NULL;
}

int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t len,
                    struct hostent **result, int *err)
{
    (void) ret; (void) buf; (void) len;
    record("gethostbyname_r", name);
    *result = NULL;
    *err = HOST_NOT_FOUND;
    return 0;
}

int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t len,
                     struct hostent **result, int *err)
{
    (void) af; (void) ret; (void) buf; (void) len;
    record("gethostbyname2_r", name);
    *result = NULL;
    *err = HOST_NOT_FOUND;
    return 0;
}
