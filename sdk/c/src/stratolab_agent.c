/*
 * Stratolab agent SDK for C: the implementation. See stratolab_agent.h and Protos/README.md.
 *
 * One I/O thread owns the DEALER socket. It registers (again after a coordinator restart, a
 * NOT_REGISTERED or a NOT_BOUND), heartbeats every interval the coordinator gave with telemetry,
 * the running ids and every unsettled report, and answers each command once: a repeat of a
 * command id gets the acknowledgement given the first time, marked duplicate.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "stratolab_agent.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define LEDGER_SIZE 4096
#define PROTOCOL_VERSION 2

typedef struct {
    char *feature, *key;
    uint8_t *body;
    size_t len;
    uint64_t version, sent_version;
} report_t;

typedef struct {
    uint64_t command_id;
    int used, ok;
    char *detail, *result_feature;
    uint8_t *result_body;
    size_t result_len;
} ledger_entry;

struct strato_agent {
    strato_agent_config cfg;
    char *endpoint, *node_id, *site_name;
    char instance_id[33];
    char server_key[41], public_key[41], secret_key[41];
    int curve;
    void *ctx, *sock;
    pthread_t thread;
    int started;

    pthread_mutex_t lock;   /* guards everything below */
    pthread_cond_t changed;
    int stop;
    int registered;
    uint64_t incarnation, last_incarnation, epoch;
    uint32_t interval_ms;
    int last_error;
    char last_message[512];
    int refusal;            /* a registration refusal not yet seen by wait_registered */
    report_t *reports;
    size_t n_reports, cap_reports;
    uint64_t report_version;
    char **running;
    size_t n_running;

    /* I/O thread only */
    uint64_t next_message_id, sequence, messages_sent, messages_received;
    int64_t next_register_mono, next_heartbeat_mono;
    ledger_entry ledger[LEDGER_SIZE];
    size_t ledger_next;
};

/* ---------- small helpers ---------- */

int64_t strato_wall_nanos(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t mono_nanos(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

const char *strato_error_name(int code) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&stratolab__v1__error_code__descriptor, code);
    return v ? v->name : "UNKNOWN";
}

static void logf_(strato_agent *a, const char *fmt, ...) {
    if (!a->cfg.verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[stratolab-c %s] ", a->node_id);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static char *dupstr(const char *s) { return strdup(s ? s : ""); }

static int read_file(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = 0;
    return 0;
}

/* A Stratolab key pair file: `public-key = "Z85"` and `secret-key = "Z85"` lines. */
static int read_key_pair(const char *path, char *pub, char *sec, char *err, size_t err_len) {
    char text[4096];
    if (read_file(path, text, sizeof text) != 0) { snprintf(err, err_len, "cannot read key file %s: %s", path, strerror(errno)); return -1; }
    pub[0] = sec[0] = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        while (*line == ' ') line++;
        if (*line == '#' || *line == 0) continue;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        char *q1 = strchr(eq, '"'), *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
        if (!q1 || !q2 || q2 - q1 - 1 != 40) continue;
        char *dst = strncmp(line, "public-key", 10) == 0 ? pub : strncmp(line, "secret-key", 10) == 0 ? sec : NULL;
        if (dst) { memcpy(dst, q1 + 1, 40); dst[40] = 0; }
    }
    if (!pub[0] || !sec[0]) { snprintf(err, err_len, "%s: needs public-key and secret-key (40-character Z85)", path); return -1; }
    return 0;
}

/* ---------- sending ---------- */

static int send_body(strato_agent *a, Stratolab__V1__Envelope *e) {
    e->protocol_version = PROTOCOL_VERSION;
    e->message_id = ++a->next_message_id;
    e->sender = a->node_id;
    e->sent_at_unix_nanos = strato_wall_nanos();
    size_t len = stratolab__v1__envelope__get_packed_size(e);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return -1;
    stratolab__v1__envelope__pack(e, buf);
    int rc = zmq_send(a->sock, buf, len, ZMQ_DONTWAIT);
    free(buf);
    if (rc >= 0) a->messages_sent++;
    return rc < 0 ? -1 : 0;
}

static void send_register(strato_agent *a) {
    Stratolab__V1__Register r = STRATOLAB__V1__REGISTER__INIT;
    Stratolab__V1__Site site = STRATOLAB__V1__SITE__INIT;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    site.name = a->site_name;
    site.kind = a->cfg.site_kind;
    r.node_id = a->node_id;
    r.kind = a->cfg.kind;
    r.site = &site;
    r.capabilities = a->cfg.capabilities;
    r.instance_id = a->instance_id;
    r.agent_version = "stratolab-c-sdk 1.0";
    r.host = host;
    r.pid = (int32_t)getpid();
    pthread_mutex_lock(&a->lock);
    r.last_incarnation = a->last_incarnation;
    r.n_running = a->n_running;
    r.running = a->running;
    Stratolab__V1__Envelope e = STRATOLAB__V1__ENVELOPE__INIT;
    e.body_case = STRATOLAB__V1__ENVELOPE__BODY_REGISTER;
    e.register_ = &r;
    send_body(a, &e);
    pthread_mutex_unlock(&a->lock);
    logf_(a, "register sent (last incarnation %llu)", (unsigned long long)r.last_incarnation);
}

static void send_heartbeat(strato_agent *a) {
    Stratolab__V1__Heartbeat hb = STRATOLAB__V1__HEARTBEAT__INIT;
    Stratolab__V1__Telemetry t = STRATOLAB__V1__TELEMETRY__INIT;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    t.process_cpu_seconds = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    t.process_rss_bytes = (uint64_t)ru.ru_maxrss * 1024;
    t.messages_sent = a->messages_sent;
    t.messages_received = a->messages_received;
    hb.node_id = a->node_id;
    hb.sequence = ++a->sequence;
    hb.telemetry = &t;
    pthread_mutex_lock(&a->lock);
    hb.incarnation = a->incarnation;
    hb.n_running = a->n_running;
    hb.running = a->running;
    Stratolab__V1__FeatureReport *items = calloc(a->n_reports ? a->n_reports : 1, sizeof *items);
    Stratolab__V1__FeatureReport **ptrs = calloc(a->n_reports ? a->n_reports : 1, sizeof *ptrs);
    for (size_t i = 0; i < a->n_reports; i++) {
        Stratolab__V1__FeatureReport fr = STRATOLAB__V1__FEATURE_REPORT__INIT;
        fr.feature = a->reports[i].feature;
        fr.key = a->reports[i].key;
        fr.body.data = a->reports[i].body;
        fr.body.len = a->reports[i].len;
        items[i] = fr;
        ptrs[i] = &items[i];
        a->reports[i].sent_version = a->reports[i].version;
    }
    hb.n_reports = a->n_reports;
    hb.reports = ptrs;
    Stratolab__V1__Envelope e = STRATOLAB__V1__ENVELOPE__INIT;
    e.body_case = STRATOLAB__V1__ENVELOPE__BODY_HEARTBEAT;
    e.heartbeat = &hb;
    send_body(a, &e);
    pthread_mutex_unlock(&a->lock);
    free(items);
    free(ptrs);
}

static void send_ack(strato_agent *a, uint64_t command_id, const ledger_entry *l, int duplicate) {
    Stratolab__V1__CommandAck ack = STRATOLAB__V1__COMMAND_ACK__INIT;
    Stratolab__V1__FeatureResult res = STRATOLAB__V1__FEATURE_RESULT__INIT;
    ack.command_id = command_id;
    ack.node_id = a->node_id;
    ack.ok = l->ok;
    ack.detail = l->detail ? l->detail : "";
    ack.duplicate = duplicate;
    if (l->result_feature && l->result_feature[0]) {
        res.feature = l->result_feature;
        res.body.data = l->result_body;
        res.body.len = l->result_len;
        ack.result = &res;
    }
    Stratolab__V1__Envelope e = STRATOLAB__V1__ENVELOPE__INIT;
    e.body_case = STRATOLAB__V1__ENVELOPE__BODY_COMMAND_ACK;
    e.command_ack = &ack;
    send_body(a, &e);
}

/* ---------- receiving ---------- */

static void settle(strato_agent *a, const Stratolab__V1__SettledReports *s) {
    pthread_mutex_lock(&a->lock);
    for (size_t k = 0; k < s->n_keys; k++) {
        for (size_t i = 0; i < a->n_reports; i++) {
            report_t *r = &a->reports[i];
            /* Only the version the coordinator saw: a newer report for the key stays queued. */
            if (strcmp(r->feature, s->feature) == 0 && strcmp(r->key, s->keys[k]) == 0 && r->sent_version == r->version) {
                free(r->feature); free(r->key); free(r->body);
                a->reports[i] = a->reports[--a->n_reports];
                break;
            }
        }
    }
    pthread_mutex_unlock(&a->lock);
}

static void handle_command(strato_agent *a, const Stratolab__V1__Command *c) {
    for (size_t i = 0; i < LEDGER_SIZE; i++) {
        if (a->ledger[i].used && a->ledger[i].command_id == c->command_id) {
            send_ack(a, c->command_id, &a->ledger[i], 1);
            return;
        }
    }
    strato_ack ack = {0};
    if (c->action_case == STRATOLAB__V1__COMMAND__ACTION_PING) {
        ack.ok = 1;
        ack.detail = "pong";
    } else if (a->cfg.on_command) {
        a->cfg.on_command(a->cfg.user, c, &ack);
    } else {
        ack.ok = 0;
        ack.detail = "this agent handles no commands";
    }
    ledger_entry *l = &a->ledger[a->ledger_next];
    a->ledger_next = (a->ledger_next + 1) % LEDGER_SIZE;
    free(l->detail); free(l->result_feature); free(l->result_body);
    memset(l, 0, sizeof *l);
    l->used = 1;
    l->command_id = c->command_id;
    l->ok = ack.ok;
    l->detail = dupstr(ack.detail);
    if (ack.result_feature) {
        l->result_feature = dupstr(ack.result_feature);
        l->result_body = malloc(ack.result_len ? ack.result_len : 1);
        if (ack.result_len) memcpy(l->result_body, ack.result_body, ack.result_len);
        l->result_len = ack.result_len;
    }
    send_ack(a, c->command_id, l, 0);
}

static void handle_error(strato_agent *a, const Stratolab__V1__ErrorReply *err, int64_t now) {
    pthread_mutex_lock(&a->lock);
    a->last_error = err->code;
    snprintf(a->last_message, sizeof a->last_message, "%s", err->message ? err->message : "");
    switch (err->code) {
    case STRATOLAB__V1__ERROR_CODE__NOT_REGISTERED:
    case STRATOLAB__V1__ERROR_CODE__NOT_BOUND:
        /* Register again from this connection (after a coordinator restart, a death, a reconnect). */
        a->registered = 0;
        a->next_register_mono = now;
        break;
    case STRATOLAB__V1__ERROR_CODE__NODE_ID_CONFLICT:
    case STRATOLAB__V1__ERROR_CODE__INVALID_REGISTRATION:
    case STRATOLAB__V1__ERROR_CODE__NOT_AUTHORIZED:
    case STRATOLAB__V1__ERROR_CODE__SENDER_MISMATCH:
        if (!a->registered) {
            a->refusal = err->code;
            a->next_register_mono = now + (err->code == STRATOLAB__V1__ERROR_CODE__NODE_ID_CONFLICT ? 1000 : 5000) * 1000000LL;
            pthread_cond_broadcast(&a->changed);
        }
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&a->lock);
    logf_(a, "coordinator error %s: %s", strato_error_name(err->code), err->message);
}

static void handle_frame(strato_agent *a, const uint8_t *data, size_t len) {
    Stratolab__V1__Envelope *e = stratolab__v1__envelope__unpack(NULL, len, data);
    if (!e) { logf_(a, "dropped a frame that is not an Envelope"); return; }
    a->messages_received++;
    int64_t now = mono_nanos();
    switch (e->body_case) {
    case STRATOLAB__V1__ENVELOPE__BODY_REGISTER_ACK: {
        Stratolab__V1__RegisterAck *ack = e->register_ack;
        pthread_mutex_lock(&a->lock);
        a->registered = 1;
        a->incarnation = a->last_incarnation = ack->incarnation;
        a->epoch = ack->coordinator_epoch;
        a->interval_ms = ack->heartbeat_interval_ms ? ack->heartbeat_interval_ms : 200;
        a->last_error = 0;
        a->refusal = 0;
        pthread_cond_broadcast(&a->changed);
        pthread_mutex_unlock(&a->lock);
        a->next_heartbeat_mono = now;
        logf_(a, "registered: incarnation %llu, epoch %llu", (unsigned long long)ack->incarnation, (unsigned long long)ack->coordinator_epoch);
        break;
    }
    case STRATOLAB__V1__ENVELOPE__BODY_HEARTBEAT_ACK: {
        Stratolab__V1__HeartbeatAck *ack = e->heartbeat_ack;
        for (size_t i = 0; i < ack->n_settled; i++) settle(a, ack->settled[i]);
        pthread_mutex_lock(&a->lock);
        int restarted = a->registered && ack->coordinator_epoch != a->epoch;
        if (restarted) { a->epoch = ack->coordinator_epoch; }
        pthread_mutex_unlock(&a->lock);
        /* A new coordinator epoch: tell the new one what we run (a reconciliation). */
        if (restarted) { logf_(a, "coordinator restarted; registering again"); send_register(a); }
        break;
    }
    case STRATOLAB__V1__ENVELOPE__BODY_COMMAND:
        handle_command(a, e->command);
        break;
    case STRATOLAB__V1__ENVELOPE__BODY_ERROR:
        handle_error(a, e->error, now);
        break;
    default:
        logf_(a, "unexpected body %d from the coordinator", (int)e->body_case);
        break;
    }
    stratolab__v1__envelope__free_unpacked(e, NULL);
}

/* ---------- the I/O thread ---------- */

static void *io_loop(void *arg) {
    strato_agent *a = arg;
    a->next_register_mono = mono_nanos();
    for (;;) {
        pthread_mutex_lock(&a->lock);
        int stop = a->stop, registered = a->registered;
        uint32_t interval = a->interval_ms;
        int64_t next_register = a->next_register_mono;
        pthread_mutex_unlock(&a->lock);
        if (stop) break;
        int64_t now = mono_nanos();
        if (!registered && now >= next_register) {
            send_register(a);
            pthread_mutex_lock(&a->lock);
            a->next_register_mono = now + 1000000000LL;   /* again in 1 s without an answer */
            pthread_mutex_unlock(&a->lock);
        } else if (registered && now >= a->next_heartbeat_mono) {
            send_heartbeat(a);
            a->next_heartbeat_mono = now + (int64_t)interval * 1000000LL;
        }
        zmq_pollitem_t item = {a->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 20) > 0) {
            for (int i = 0; i < 256; i++) {
                zmq_msg_t msg;
                zmq_msg_init(&msg);
                if (zmq_msg_recv(&msg, a->sock, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&msg); break; }
                /* One frame per message (Protos/README.md); anything else is dropped. */
                if (!zmq_msg_more(&msg)) handle_frame(a, zmq_msg_data(&msg), zmq_msg_size(&msg));
                else { while (zmq_msg_more(&msg)) { zmq_msg_close(&msg); zmq_msg_init(&msg); zmq_msg_recv(&msg, a->sock, 0); } }
                zmq_msg_close(&msg);
            }
        }
    }
    return NULL;
}

/* ---------- public API ---------- */

strato_agent *strato_agent_new(const strato_agent_config *config, char *err, size_t err_len) {
    if (!config || !config->endpoint || !config->node_id || !config->node_id[0] || !config->capabilities) {
        snprintf(err, err_len, "endpoint, node_id and capabilities are required");
        return NULL;
    }
    strato_agent *a = calloc(1, sizeof *a);
    a->cfg = *config;
    a->endpoint = dupstr(config->endpoint);
    a->node_id = dupstr(config->node_id);
    a->site_name = dupstr(config->site_name ? config->site_name : "cloud");
    a->interval_ms = 200;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->changed, NULL);
    uint8_t rnd[16] = {0};
    FILE *u = fopen("/dev/urandom", "r");
    if (u) { if (fread(rnd, 1, sizeof rnd, u) != sizeof rnd) memset(rnd, 0, sizeof rnd); fclose(u); }
    for (int i = 0; i < 16; i++) sprintf(a->instance_id + 2 * i, "%02x", rnd[i] ^ (uint8_t)(getpid() >> (i % 4 * 8)));
    if (config->keys_dir) {
        char path[1024], text[256];
        snprintf(path, sizeof path, "%s/coordinator.pub", config->keys_dir);
        if (read_file(path, text, sizeof text) != 0 || strlen(text) < 40) {
            snprintf(err, err_len, "cannot read the coordinator's public key %s", path);
            strato_agent_stop(a, NULL);
            return NULL;
        }
        memcpy(a->server_key, text, 40);
        char own[1024];
        snprintf(own, sizeof own, "%s/agent.key", config->keys_dir);
        if (read_key_pair(config->key_file ? config->key_file : own, a->public_key, a->secret_key, err, err_len) != 0) {
            strato_agent_stop(a, NULL);
            return NULL;
        }
        a->curve = 1;
    }
    return a;
}

int strato_agent_start(strato_agent *a) {
    a->ctx = zmq_ctx_new();
    a->sock = zmq_socket(a->ctx, ZMQ_DEALER);
    int one = 1, linger = 200, reconnect_max = 1000;
    zmq_setsockopt(a->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(a->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(a->sock, ZMQ_RECONNECT_IVL_MAX, &reconnect_max, sizeof reconnect_max);
    if (a->curve) {
        if (zmq_setsockopt(a->sock, ZMQ_CURVE_SERVERKEY, a->server_key, 40) != 0
            || zmq_setsockopt(a->sock, ZMQ_CURVE_PUBLICKEY, a->public_key, 40) != 0
            || zmq_setsockopt(a->sock, ZMQ_CURVE_SECRETKEY, a->secret_key, 40) != 0) {
            fprintf(stderr, "stratolab-c: CURVE setup failed: %s\n", zmq_strerror(zmq_errno()));
            return -1;
        }
    }
    if (zmq_connect(a->sock, a->endpoint) != 0) {
        fprintf(stderr, "stratolab-c: connect %s: %s\n", a->endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    if (pthread_create(&a->thread, NULL, io_loop, a) != 0) return -1;
    a->started = 1;
    return 0;
}

int strato_agent_wait_registered(strato_agent *a, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&a->lock);
    int rc = -1;
    while (!a->registered && !a->refusal) {
        if (pthread_cond_timedwait(&a->changed, &a->lock, &deadline) == ETIMEDOUT) break;
    }
    if (a->registered) rc = 0;
    else if (a->refusal) { rc = a->refusal; a->refusal = 0; }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

int strato_agent_last_error(strato_agent *a, char *message, size_t len) {
    pthread_mutex_lock(&a->lock);
    int code = a->last_error;
    if (message && len) snprintf(message, len, "%s", a->last_message);
    pthread_mutex_unlock(&a->lock);
    return code;
}

int strato_agent_registered(strato_agent *a, uint64_t *incarnation) {
    pthread_mutex_lock(&a->lock);
    int r = a->registered;
    if (incarnation) *incarnation = a->incarnation;
    pthread_mutex_unlock(&a->lock);
    return r;
}

int strato_agent_report(strato_agent *a, const char *feature, const char *key, const uint8_t *body, size_t len) {
    pthread_mutex_lock(&a->lock);
    report_t *r = NULL;
    for (size_t i = 0; i < a->n_reports; i++)
        if (strcmp(a->reports[i].feature, feature) == 0 && strcmp(a->reports[i].key, key) == 0) { r = &a->reports[i]; break; }
    if (!r) {
        if (a->n_reports == a->cap_reports) {
            size_t cap = a->cap_reports ? a->cap_reports * 2 : 16;
            report_t *n = realloc(a->reports, cap * sizeof *n);
            if (!n) { pthread_mutex_unlock(&a->lock); return -1; }
            a->reports = n;
            a->cap_reports = cap;
        }
        r = &a->reports[a->n_reports++];
        memset(r, 0, sizeof *r);
        r->feature = dupstr(feature);
        r->key = dupstr(key);
    }
    free(r->body);
    r->body = malloc(len ? len : 1);
    if (len) memcpy(r->body, body, len);
    r->len = len;
    r->version = ++a->report_version;
    pthread_mutex_unlock(&a->lock);
    return 0;
}

int strato_agent_set_running(strato_agent *a, const char *const *ids, size_t count) {
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_running; i++) free(a->running[i]);
    free(a->running);
    a->running = count ? calloc(count, sizeof(char *)) : NULL;
    for (size_t i = 0; i < count; i++) a->running[i] = dupstr(ids[i]);
    a->n_running = count;
    pthread_mutex_unlock(&a->lock);
    return 0;
}

size_t strato_agent_unsettled(strato_agent *a) {
    pthread_mutex_lock(&a->lock);
    size_t n = a->n_reports;
    pthread_mutex_unlock(&a->lock);
    return n;
}

void strato_agent_stop(strato_agent *a, const char *reason) {
    if (!a) return;
    if (a->started) {
        pthread_mutex_lock(&a->lock);
        a->stop = 1;
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->thread, NULL);
        if (a->registered && reason) {
            Stratolab__V1__Deregister d = STRATOLAB__V1__DEREGISTER__INIT;
            d.node_id = a->node_id;
            d.incarnation = a->incarnation;
            d.reason = (char *)reason;
            Stratolab__V1__Envelope e = STRATOLAB__V1__ENVELOPE__INIT;
            e.body_case = STRATOLAB__V1__ENVELOPE__BODY_DEREGISTER;
            e.deregister = &d;
            send_body(a, &e);
        }
    }
    if (a->sock) zmq_close(a->sock);
    if (a->ctx) zmq_ctx_term(a->ctx);
    for (size_t i = 0; i < a->n_reports; i++) { free(a->reports[i].feature); free(a->reports[i].key); free(a->reports[i].body); }
    free(a->reports);
    for (size_t i = 0; i < a->n_running; i++) free(a->running[i]);
    free(a->running);
    for (size_t i = 0; i < LEDGER_SIZE; i++) { free(a->ledger[i].detail); free(a->ledger[i].result_feature); free(a->ledger[i].result_body); }
    free(a->endpoint); free(a->node_id); free(a->site_name);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->changed);
    free(a);
}
