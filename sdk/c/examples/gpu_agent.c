/*
 * An example GPU agent in C on the Stratolab SDK: it registers a GPU node, takes offline jobs from
 * the coordinator's scheduler (feature "jobs": StartJob / PreemptJob), runs them, and reports
 * their progress and end as JobReports until the coordinator settles them.
 *
 * The GPUs are EMULATED (said in every report: JobReport.emulated): a job advances at --rate work
 * units per trace second, × the StartJob's time scale. A real engine would run the work instead.
 *
 *   gpu_agent --endpoint E --id NODE [--keys DIR --client-key FILE] [--gpu-model A10 --gpus 1
 *             --memory-gib 24 --bandwidth-gbps 600 --tflops 125] [--rate 2000] [--exit-on-refusal]
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stratolab/v1/jobs.pb-c.h"
#include "stratolab_agent.h"

typedef struct {
    char id[256];
    double total, done, checkpointed, time_scale;
    uint64_t start_command;
    int64_t started_wall;
    int active;
} job_t;

#define MAX_JOBS 64
static job_t jobs[MAX_JOBS];
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned gpu_count = 1;
static const char *gpu_model = "A10";
static double rate = 2000;
static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void report(strato_agent *agent, const job_t *j, Stratolab__V1__JobState state, const char *detail) {
    Stratolab__V1__JobReport r = STRATOLAB__V1__JOB_REPORT__INIT;
    r.job_id = (char *)j->id;
    r.state = state;
    r.work_done = j->done;
    r.checkpointed_work = j->checkpointed;
    r.throughput = rate;
    r.gpu_utilization = state == STRATOLAB__V1__JOB_STATE__JOB_RUNNING ? 1.0 : 0;
    r.emulated = 1;
    r.start_command_id = j->start_command;
    r.detail = (char *)(detail ? detail : "");
    if (state == STRATOLAB__V1__JOB_STATE__JOB_FINISHED || state == STRATOLAB__V1__JOB_STATE__JOB_PREEMPTED) r.ended_at_unix_nanos = strato_wall_nanos();
    size_t len = stratolab__v1__job_report__get_packed_size(&r);
    uint8_t *buf = malloc(len ? len : 1);
    stratolab__v1__job_report__pack(&r, buf);
    strato_agent_report(agent, "jobs", j->id, buf, len);
    free(buf);
}

/* Runs on the SDK's I/O thread. */
static void on_command(void *user, const Stratolab__V1__Command *c, strato_ack *ack) {
    strato_agent *agent = *(strato_agent **)user;
    static char detail[512];
    static uint8_t result[512];
    if (c->action_case != STRATOLAB__V1__COMMAND__ACTION_FEATURE || strcmp(c->feature->feature, "jobs") != 0) {
        ack->ok = 0;
        ack->detail = "this agent runs offline jobs only (feature \"jobs\")";
        return;
    }
    Stratolab__V1__JobCommand *jc = stratolab__v1__job_command__unpack(NULL, c->feature->body.len, c->feature->body.data);
    if (!jc) { ack->ok = 0; ack->detail = "not a JobCommand"; return; }
    pthread_mutex_lock(&jobs_lock);
    if (jc->action_case == STRATOLAB__V1__JOB_COMMAND__ACTION_START) {
        Stratolab__V1__StartJob *s = jc->start;
        int fits = strcmp(s->gpu_model, gpu_model) == 0;
        for (size_t i = 0; i < s->n_gpus; i++) if (s->gpus[i] >= gpu_count) fits = 0;
        job_t *slot = NULL;
        for (int i = 0; i < MAX_JOBS && fits; i++) if (!jobs[i].active) { slot = &jobs[i]; break; }
        if (!fits || !slot) {
            snprintf(detail, sizeof detail, "start_job for %zux%s does not fit this node's %ux%s", s->n_gpus, s->gpu_model, gpu_count, gpu_model);
            ack->ok = 0; ack->detail = detail;
        } else {
            memset(slot, 0, sizeof *slot);
            snprintf(slot->id, sizeof slot->id, "%s", s->job_id);
            slot->total = s->total_work;
            slot->done = slot->checkpointed = s->resume_work;
            slot->time_scale = s->time_scale > 0 ? s->time_scale : 1;
            slot->start_command = c->command_id;
            slot->started_wall = strato_wall_nanos();
            slot->active = 1;
            report(agent, slot, STRATOLAB__V1__JOB_STATE__JOB_RUNNING, NULL);
            printf("job %s started: %.0f of %.0f work done, time scale %.0fx (emulated GPUs)\n", slot->id, slot->done, slot->total, slot->time_scale);
            fflush(stdout);
            ack->ok = 1; ack->detail = "started (emulated)";
        }
    } else if (jc->action_case == STRATOLAB__V1__JOB_COMMAND__ACTION_PREEMPT) {
        Stratolab__V1__PreemptJobResult res = STRATOLAB__V1__PREEMPT_JOB_RESULT__INIT;
        res.job_id = jc->preempt->job_id;
        res.checkpointed_work = -1;
        for (int i = 0; i < MAX_JOBS; i++) {
            if (jobs[i].active && strcmp(jobs[i].id, jc->preempt->job_id) == 0) {
                res.checkpointed_work = jobs[i].checkpointed;
                report(agent, &jobs[i], STRATOLAB__V1__JOB_STATE__JOB_PREEMPTED, "preempted at a checkpoint");
                jobs[i].active = 0;
            }
        }
        size_t len = stratolab__v1__preempt_job_result__get_packed_size(&res);
        if (len <= sizeof result) {
            stratolab__v1__preempt_job_result__pack(&res, result);
            ack->result_feature = "jobs"; ack->result_body = result; ack->result_len = len;
        }
        ack->ok = 1; ack->detail = res.checkpointed_work >= 0 ? "preempted" : "not running here";
    } else {
        ack->ok = 0; ack->detail = "a JobCommand with no action";
    }
    pthread_mutex_unlock(&jobs_lock);
    stratolab__v1__job_command__free_unpacked(jc, NULL);
}

static const char *arg(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i < argc - 1; i++) if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

static int flag(int argc, char **argv, const char *name) {
    for (int i = 1; i < argc; i++) if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    const char *endpoint = arg(argc, argv, "--endpoint", "tcp://127.0.0.1:7700");
    const char *id = arg(argc, argv, "--id", NULL);
    if (!id) { fprintf(stderr, "usage: gpu_agent --endpoint E --id NODE [--keys DIR --client-key FILE] [--gpu-model M --gpus N] [--rate R]\n"); return 2; }
    gpu_model = arg(argc, argv, "--gpu-model", "A10");
    gpu_count = (unsigned)atoi(arg(argc, argv, "--gpus", "1"));
    rate = atof(arg(argc, argv, "--rate", "2000"));
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    Stratolab__V1__GpuCapabilities gpu = STRATOLAB__V1__GPU_CAPABILITIES__INIT;
    gpu.model = (char *)gpu_model;
    gpu.count = gpu_count;
    gpu.memory_bytes_per_gpu = (uint64_t)(atof(arg(argc, argv, "--memory-gib", "24")) * 1073741824.0);
    gpu.memory_bandwidth_gbps = atof(arg(argc, argv, "--bandwidth-gbps", "600"));
    gpu.fp16_tflops = atof(arg(argc, argv, "--tflops", "125"));
    Stratolab__V1__Capabilities caps = STRATOLAB__V1__CAPABILITIES__INIT;
    caps.kind_case = STRATOLAB__V1__CAPABILITIES__KIND_GPU;
    caps.gpu = &gpu;

    static strato_agent *agent = NULL;
    strato_agent_config cfg = {0};
    cfg.endpoint = endpoint;
    cfg.keys_dir = arg(argc, argv, "--keys", NULL);
    cfg.key_file = arg(argc, argv, "--client-key", NULL);
    cfg.node_id = id;
    cfg.kind = STRATOLAB__V1__NODE_KIND__GPU;
    cfg.site_name = arg(argc, argv, "--site", "cloud");
    cfg.site_kind = STRATOLAB__V1__SITE_KIND__CLOUD;
    cfg.capabilities = &caps;
    cfg.on_command = on_command;
    cfg.user = &agent;
    cfg.verbose = flag(argc, argv, "--verbose");
    char err[512];
    agent = strato_agent_new(&cfg, err, sizeof err);
    if (!agent) { fprintf(stderr, "gpu_agent: %s\n", err); return 2; }
    if (strato_agent_start(agent) != 0) return 2;

    int rc = strato_agent_wait_registered(agent, 10000);
    if (rc != 0) {
        char msg[512] = "";
        int code = strato_agent_last_error(agent, msg, sizeof msg);
        fprintf(stderr, "gpu_agent: registration of %s %s: %s %s\n", id, rc < 0 ? "timed out" : "refused",
                code ? strato_error_name(code) : "", msg);
        if (flag(argc, argv, "--exit-on-refusal")) { strato_agent_stop(agent, NULL); return 3; }
    } else {
        uint64_t inc = 0;
        strato_agent_registered(agent, &inc);
        printf("registered %s (incarnation %llu) with %ux%s (emulated GPUs)\n", id, (unsigned long long)inc, gpu_count, gpu_model);
        fflush(stdout);
    }

    /* Advance running jobs every 200 ms; report progress and ends. */
    int64_t last = strato_wall_nanos();
    while (!stopping) {
        usleep(200000);
        int64_t now = strato_wall_nanos();
        double dt = (now - last) / 1e9;
        last = now;
        const char *running[MAX_JOBS];
        size_t n = 0;
        pthread_mutex_lock(&jobs_lock);
        for (int i = 0; i < MAX_JOBS; i++) {
            job_t *j = &jobs[i];
            if (!j->active) continue;
            j->done += rate * dt * j->time_scale;
            if (j->done >= j->total) {
                j->done = j->checkpointed = j->total;
                report(agent, j, STRATOLAB__V1__JOB_STATE__JOB_FINISHED, NULL);
                printf("job %s finished\n", j->id);
                fflush(stdout);
                j->active = 0;
                continue;
            }
            /* A checkpoint every 10 % of the work. */
            double step = j->total / 10;
            if (step > 0) {
                double cp = step * (double)(long)(j->done / step);
                if (cp > j->checkpointed) j->checkpointed = cp;
            }
            report(agent, j, STRATOLAB__V1__JOB_STATE__JOB_RUNNING, NULL);
            running[n++] = j->id;
        }
        strato_agent_set_running(agent, running, n);
        pthread_mutex_unlock(&jobs_lock);
    }
    strato_agent_stop(agent, "stopped");
    return 0;
}
