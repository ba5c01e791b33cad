/* A thin C shim over Berkeley DB's lock subsystem for `cfctl bench`'s
 * `bdb_lock` row. Berkeley DB's API is function pointers inside DB_ENV, whose
 * layout only its header knows; this file turns the calls the row needs into
 * plain functions. Every function returns 0 or a Berkeley DB error code
 * (db_strerror gives its text). */
#include <db.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct bdb_bench {
    DB_ENV *env;
    u_int32_t locker;
    DBT obj;
    char name[64];
};

int bdb_bench_open(const char *home, struct bdb_bench **out) {
    struct bdb_bench *b = calloc(1, sizeof *b);
    if (b == NULL)
        return ENOMEM;
    int r = db_env_create(&b->env, 0);
    if (r != 0) {
        free(b);
        return r;
    }
    /* A shared environment (region files in `home`, a tmpfs): not DB_PRIVATE. */
    r = b->env->open(b->env, home, DB_CREATE | DB_INIT_LOCK, 0600);
    if (r == 0)
        r = b->env->lock_id(b->env, &b->locker);
    if (r != 0) {
        b->env->close(b->env, 0);
        free(b);
        return r;
    }
    strcpy(b->name, "bench-uncontended");
    b->obj.data = b->name;
    b->obj.size = (u_int32_t)strlen(b->name);
    *out = b;
    return 0;
}

/* `n` times: lock_get of a write lock on the named object, then lock_put. */
int bdb_bench_get_put(struct bdb_bench *b, unsigned long n) {
    for (unsigned long i = 0; i < n; i++) {
        DB_LOCK lock;
        int r = b->env->lock_get(b->env, b->locker, 0, &b->obj, DB_LOCK_WRITE, &lock);
        if (r != 0)
            return r;
        r = b->env->lock_put(b->env, &lock);
        if (r != 0)
            return r;
    }
    return 0;
}

void bdb_bench_close(struct bdb_bench *b) {
    if (b == NULL)
        return;
    b->env->lock_id_free(b->env, b->locker);
    b->env->close(b->env, 0);
    free(b);
}

const char *bdb_bench_strerror(int r) { return db_strerror(r); }

const char *bdb_bench_version(void) { return db_version(NULL, NULL, NULL); }
