/*
 * Stratolab agent SDK for C (libzmq + libprotobuf-c).
 *
 * A node written in C or C++ (an inference server, a game engine) joins a Stratolab testbed with
 * this library: it registers a node of any kind, heartbeats with telemetry on its own thread,
 * receives commands and acknowledges each one once (at-least-once delivery, executed once),
 * reports feature facts (job progress, request results) until the coordinator settles them, and
 * speaks CURVE. The wire contract is Protos/README.md; the messages are the same .proto files,
 * compiled with protoc-c by sdk/c/build.sh.
 *
 * Threads: strato_agent_start() starts one I/O thread that owns the ZeroMQ socket. The command
 * callback runs on that thread. strato_agent_report(), strato_agent_set_running() and the state
 * queries may be called from any thread.
 */
#ifndef STRATOLAB_AGENT_H
#define STRATOLAB_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "stratolab/v1/envelope.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct strato_agent strato_agent;

/* What a command handler answers: ok, a detail for people, and optionally a feature's typed
 * result (feature name + serialized message), as CommandAck.result. The SDK copies the strings
 * and bytes after the callback returns. */
typedef struct {
    int ok;
    const char *detail;
    const char *result_feature;
    const uint8_t *result_body;
    size_t result_len;
} strato_ack;

/* Runs on the I/O thread for each new command (a re-delivery is answered from the SDK's ledger
 * without calling it again). Fill `ack`. */
typedef void (*strato_command_fn)(void *user, const Stratolab__V1__Command *command, strato_ack *ack);

typedef struct {
    const char *endpoint;        /* e.g. "tcp://127.0.0.1:7700" or "ipc:///tmp/c.sock" */
    const char *keys_dir;        /* key directory (coordinator.pub); NULL: no CURVE */
    const char *key_file;        /* this agent's key pair file; NULL: KEYS_DIR/agent.key */
    const char *node_id;
    Stratolab__V1__NodeKind kind;
    const char *site_name;       /* e.g. "cloud" */
    Stratolab__V1__SiteKind site_kind;
    Stratolab__V1__Capabilities *capabilities;   /* the caller's; must outlive the agent */
    strato_command_fn on_command;
    void *user;
    int verbose;                 /* log protocol events on stderr */
} strato_agent_config;

/* Creates an agent (connects nothing yet). NULL on error, with the reason in err. */
strato_agent *strato_agent_new(const strato_agent_config *config, char *err, size_t err_len);

/* Starts the I/O thread: connect, register, heartbeat, serve commands. 0 on success. */
int strato_agent_start(strato_agent *agent);

/* Waits until registered, or until a registration is refused (returns that ErrorCode, e.g.
 * STRATOLAB__V1__ERROR_CODE__NOT_AUTHORIZED), or timeout (returns -1). 0 when registered. */
int strato_agent_wait_registered(strato_agent *agent, int timeout_ms);

/* The last error the coordinator sent (code and message); 0 when none. */
int strato_agent_last_error(strato_agent *agent, char *message, size_t message_len);

/* Whether registered now, and with which incarnation. */
int strato_agent_registered(strato_agent *agent, uint64_t *incarnation);

/* Queues a feature report (feature, key, serialized body): sent with every heartbeat until the
 * coordinator settles (feature, key); a newer report for the same key replaces the older. */
int strato_agent_report(strato_agent *agent, const char *feature, const char *key, const uint8_t *body, size_t len);

/* What the node runs now (ids), sent in heartbeats and at registration for reconciliation. */
int strato_agent_set_running(strato_agent *agent, const char *const *ids, size_t count);

/* Reports still waiting to be settled. */
size_t strato_agent_unsettled(strato_agent *agent);

/* Deregisters (when registered), stops the thread, frees everything. */
void strato_agent_stop(strato_agent *agent, const char *reason);

/* Wall clock in nanoseconds since the Unix epoch (what every timestamp in the protocol uses). */
int64_t strato_wall_nanos(void);

/* Name of an ErrorCode ("NOT_AUTHORIZED", ...). */
const char *strato_error_name(int code);

#ifdef __cplusplus
}
#endif
#endif
