#!/usr/bin/env bash
# make image-test: build the lossd image with podman and exercise it from the host.
#
# What it does (docs/deployment.md shows the same commands for a normal machine):
#   1. podman, buildah, debootstrap, runc (and postgresql, for step 6): installed
#      with apt-get when missing (root).
#   2. Base image: no registry here, so `debootstrap --variant=minbase bookworm`
#      (+ python3, python3-venv) and `podman import` make one (cached).
#   3. Wheels: HTTPS to the package index fails inside a container here, so pip
#      downloads every wheel on the host into .cache/image-test/wheels, and the
#      Dockerfile installs from it offline (build arg WHEELS).
#   4. podman build --isolation chroot --format docker (HEALTHCHECK needs the
#      docker format; plain `podman build` fails on this machine's cgroups).
#   5. podman run without a token: refused (exit 2, the message). Then podman run
#      --runtime runc --ulimit ... --read-only, the data volume mounted,
#      JSON logs and metrics on; then, from the host: the HEALTHCHECK command,
#      `lossd health`, grpcurl list, an EvaluateLoss, a short TrainJob, a metrics
#      scrape, the JSON access log; `podman stop` -> SIGTERM -> exit 0 within the
#      grace period; a new container on the same volume finds the job.
#   6. Two containers, one PostgreSQL job store (docs/scaling.md): a PostgreSQL
#      server on the host (tests/support/postgres.py: initdb + pg_ctl on a free
#      loopback port, as the postgres user), two containers on the host network
#      with their own ports and volumes, LOSSD_JOB_STORE in their environment. A
#      job submitted to one is seen by the other (GetJob); the owner is killed
#      (podman kill, SIGKILL) mid-job; the other claims it once the 2 s lease
#      lapses and ends it with the parameters, byte for byte, of an uninterrupted
#      run; the database password is in no container's log.
#
# All podman state lives under .cache/image-test (--root/--runroot), git-ignored;
# images stay cached between runs (IMAGE_TEST_FRESH=1 starts from nothing).
#
# Environment: PYTHON (a venv with lossd[dev]: pip, grpcurl; default .venv/bin/python),
# IMAGE_TEST_FRESH=1, IMAGE_TEST_KEEP=1 (leave the containers for inspection),
# DEBOOTSTRAP_MIRROR (default: debootstrap's own).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CACHE=.cache/image-test              # relative: WHEELS must lie inside the build context
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PYTHON")
GRPCURL=${GRPCURL:-$BIN/grpcurl}
LOSSD=${LOSSD:-$BIN/lossd}
BASE_IMAGE=localhost/lossd-base:bookworm
IMAGE=localhost/lossd:image-test
NAME=lossd-image-test
VOLUME=lossd-image-test-data
STOP_TIMEOUT=10                      # podman stop's default: SIGKILL after this
REQUEST_ID=image-test-1
# A bearer token for the server: bound to 0.0.0.0 it refuses to start without one (or
# mTLS; checked below); sent with every call, and looked for in the logs, where it must not be.
TOKEN=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
AUTH="authorization: Bearer $TOKEN"

T0=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - T0))"; }
fail() { printf 'image-test FAILED: %s\n' "$*" >&2; exit 1; }
# Network steps (Debian mirror, PyPI) get a second try.
retry() { "$@" || { echo "retrying once: $1"; sleep 5; "$@"; }; }
podman() { command podman --root "$ROOT/$CACHE/storage" --runroot "$ROOT/$CACHE/run" "$@"; }
# podman's healthcheck timers need systemd, which is absent here: drop its complaints.
quiet_systemd() { "$@" 2> >(grep -v "unable to get systemd connection" >&2); }

# --- 1. tools ---------------------------------------------------------------
step "tools: podman buildah debootstrap runc"
missing=()
for tool in podman buildah debootstrap runc; do
    type -P "$tool" >/dev/null || missing+=("$tool")  # -P: a file on PATH (podman is also a function here)
done
# PostgreSQL's binaries for step 6 (found as tests/support/postgres.py finds them)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        fail "missing ${missing[*]}: install them (Debian: apt-get install -y ${missing[*]})"
    fi
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in "$PYTHON" "$GRPCURL" "$LOSSD"; do
    [[ -x $tool ]] || fail "$tool not found: run make venv (or set PYTHON to a venv with lossd[dev])"
done
podman --version

if [[ ${IMAGE_TEST_FRESH:-0} == 1 ]]; then
    echo "IMAGE_TEST_FRESH=1: removing $CACHE"
    podman rm -a -f >/dev/null 2>&1 || true
    rm -rf "$CACHE"
fi
mkdir -p "$CACHE"

PG_FOLDER=""                         # step 6's PostgreSQL server (removed on exit)
cleanup() {
    if [[ ${IMAGE_TEST_KEEP:-0} != 1 ]]; then
        podman rm -f -v "$NAME" "$NAME-pg-1" "$NAME-pg-2" >/dev/null 2>&1 || true
        podman volume rm -f "$VOLUME" "$VOLUME-pg-1" "$VOLUME-pg-2" >/dev/null 2>&1 || true
    fi
    if [[ -n $PG_FOLDER ]]; then
        "$PYTHON" tests/support/postgres.py destroy "$PG_FOLDER" || true
        rm -rf "$(dirname "$PG_FOLDER")"
    fi
}
trap cleanup EXIT

# --- 2. base image ----------------------------------------------------------
step "base image $BASE_IMAGE"
if podman image exists "$BASE_IMAGE"; then
    echo "cached"
else
    if [[ ! -s $CACHE/base-bookworm.tar ]]; then
        echo "debootstrap --variant=minbase --include=python3,python3-venv bookworm (about a minute)"
        make_rootfs() {
            rm -rf "$CACHE/rootfs"
            # shellcheck disable=SC2086  # DEBOOTSTRAP_MIRROR: empty means debootstrap's default
            debootstrap --variant=minbase --include=python3,python3-venv bookworm "$CACHE/rootfs" \
                ${DEBOOTSTRAP_MIRROR:-} >"$CACHE/debootstrap.log" 2>&1 \
                || { tail -20 "$CACHE/debootstrap.log"; return 1; }
        }
        retry make_rootfs || fail "debootstrap (log: $CACHE/debootstrap.log)"
        rm -rf "$CACHE"/rootfs/var/cache/apt/archives/*.deb "$CACHE"/rootfs/var/lib/apt/lists/*
        tar --numeric-owner -C "$CACHE/rootfs" -cf "$CACHE/base-bookworm.tar.tmp" .
        mv "$CACHE/base-bookworm.tar.tmp" "$CACHE/base-bookworm.tar"
        rm -rf "$CACHE/rootfs"
    fi
    podman import \
        --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV=LANG=C.UTF-8' \
        "$CACHE/base-bookworm.tar" "$BASE_IMAGE" >/dev/null
fi

# --- 3. wheels --------------------------------------------------------------
# The postgres extra too: step 6 runs the image on a PostgreSQL job store.
EXTRAS=server,metrics,postgres
step "wheels for lossd[$EXTRAS] into $CACHE/wheels"
download_wheels() {
    "$PYTHON" -m pip download --quiet --disable-pip-version-check -d "$CACHE/wheels" \
        -c constraints.txt ".[$EXTRAS]" setuptools wheel 2>&1 | { grep -v "is ignored" || true; }
}
retry download_wheels || fail "pip download"
ls "$CACHE"/wheels/torch-*.whl >/dev/null || fail "no torch wheel was downloaded"

# --- 4. build ---------------------------------------------------------------
step "podman build -> $IMAGE"
podman build --isolation chroot --format docker --pull=never \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" \
    --build-arg WHEELS="$CACHE/wheels" \
    --build-arg EXTRAS="$EXTRAS" \
    -t "$IMAGE" . >"$CACHE/build.log" 2>&1 \
    || { tail -40 "$CACHE/build.log"; fail "podman build (log: $CACHE/build.log)"; }
grep -E "lossd.server ok" "$CACHE/build.log" || true
podman image inspect "$IMAGE" --format 'image size {{.Size}} bytes, user {{.Config.User}}'

# --- 5. run and check -------------------------------------------------------
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
METRICS_PORT=$(free_port)
TARGET=127.0.0.1:$PORT

start_container() {
    podman rm -f -v "$NAME" >/dev/null 2>&1 || true
    # No systemd here runs podman's healthcheck timer: `podman healthcheck run`
    # below runs the image's HEALTHCHECK command instead.
    quiet_systemd podman run -d --name "$NAME" \
        --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
        --read-only \
        -p "127.0.0.1:$PORT:50051" -p "127.0.0.1:$METRICS_PORT:9464" \
        -v "$VOLUME:/data" \
        -e LOSSD_LOG_FORMAT=json -e LOSSD_METRICS_PORT=9464 -e LOSSD_TOKEN="$TOKEN" \
        "$IMAGE" >/dev/null
    local deadline=$((SECONDS + 120))
    until podman healthcheck run "$NAME" >/dev/null 2>&1; do
        if [[ $(podman inspect "$NAME" --format '{{.State.Running}}') != true ]]; then
            podman logs "$NAME" | tail -20
            fail "the container exited before it was healthy"
        fi
        ((SECONDS < deadline)) || { podman logs "$NAME" | tail -20; fail "not healthy within 120 s"; }
        sleep 1
    done
    echo "healthy after $((SECONDS - deadline + 120)) s"
}

step "without a token the image refuses to start (it binds 0.0.0.0; docs/security.md)"
if refusal=$(podman run --rm --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
        --read-only "$IMAGE" 2>&1); then
    code=0
else
    code=$?
fi
tail -1 <<<"$refusal"
[[ $code == 2 ]] || fail "exit code $code without a token (want 2: refused to start)"
grep -q "refusing to serve on 0.0.0.0 without authentication" <<<"$refusal" || fail "no refusal message"
grep -q "LOSSD_TOKEN" <<<"$refusal" || fail "the refusal does not say how to set a token"

step "podman run (read-only root, volume $VOLUME at /data, JSON logs, metrics)"
podman volume create "$VOLUME" >/dev/null 2>&1 || true
start_container

step "PID 1 is the server, as uid 10001"
pid1=$(podman exec "$NAME" cat /proc/1/cmdline | tr '\0' ' ')
echo "PID 1: $pid1"
[[ $pid1 == *"lossd serve"* ]] || fail "PID 1 is not lossd serve: $pid1"
[[ $(podman exec "$NAME" id -u) == 10001 ]] || fail "the server does not run as uid 10001"

step "HEALTHCHECK command (podman healthcheck run) and lossd health from the host"
podman healthcheck run "$NAME" && echo "podman healthcheck run: healthy"
"$LOSSD" --target "$TARGET" health

step "grpcurl list through the published port"
services=$("$GRPCURL" -plaintext -H "$AUTH" "$TARGET" list)
echo "$services"
grep -qx "lossd.v1.LossService" <<<"$services" || fail "lossd.v1.LossService not listed"
grep -qx "grpc.health.v1.Health" <<<"$services" || fail "grpc.health.v1.Health not listed"

step "EvaluateLoss through the published port"
reply=$("$GRPCURL" -plaintext -H "$AUTH" -H "x-request-id: $REQUEST_ID" -d '{"loss": "mse_loss", "inputs": {
    "input": {"dtype": "float32", "shape": [2], "values": [1.0, 2.0]},
    "target": {"dtype": "float32", "shape": [2], "values": [0.0, 0.0]}}}' \
    "$TARGET" lossd.v1.LossService/EvaluateLoss)
"$PYTHON" -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["value"] == 2.5, r; print("mse_loss value", r["value"], "grads", sorted(r["grads"]))' "$reply"

job_id=""
if grep -qx "lossd.v1.TrainingService" <<<"$services"; then
    step "TrainJob with the data volume mounted"
    "$GRPCURL" -plaintext -H "$AUTH" -max-time 120 -d '{"name": "image-test", "model": {"linear": {}},
        "data": {"builtin": {"name": "rings", "params": {"n_positive": 64, "n_negative": 64}}},
        "loss": {"name": "binary_cross_entropy_with_logits"}, "optimizer": {"name": "sgd", "lr": 0.1},
        "epochs": 2, "batch_size": 32}' "$TARGET" lossd.v1.TrainingService/TrainJob >"$CACHE/trainjob.json"
    job_id=$("$PYTHON" - "$CACHE/trainjob.json" <<'EOF'
import json, sys
events = [e["event"] for e in json.loads("[" + open(sys.argv[1]).read().replace("}\n{", "},\n{") + "]")]
states = [e["state"] for e in events]
assert states[0] == "JOB_STATE_QUEUED" and states[-1] == "JOB_STATE_SUCCEEDED", states
assert events[-1].get("parameters"), "the terminal event has no trained parameters"
print(events[-1]["job_id"])
EOF
)
    echo "job $job_id SUCCEEDED"
    podman exec "$NAME" ls -la /data
else
    step "TrainJob: lossd.v1.TrainingService is not listed: check skipped"
fi

step "metrics scrape (http://127.0.0.1:$METRICS_PORT/metrics)"
"$PYTHON" - "$METRICS_PORT" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
want = [
    'grpc_server_handled_total{grpc_code="OK",grpc_method="EvaluateLoss",grpc_service="lossd.v1.LossService",grpc_type="unary"} 1.0',
    'lossd_evaluations_total{code="OK",loss="mse_loss"} 1.0',
    'grpc_server_handling_seconds_count{grpc_code="OK",grpc_method="EvaluateLoss"',
]
missing = [w for w in want if not any(line.startswith(w) for line in text.splitlines())]
assert not missing, f"missing from /metrics: {missing}"
print(f"{len(text.splitlines())} lines, among them:", *want[:2], sep="\n  ")
EOF

step "JSON logs (podman logs): one object per line, an access line with the request id"
podman logs "$NAME" >"$CACHE/container.log" 2>&1
"$PYTHON" - "$CACHE/container.log" "$REQUEST_ID" "$TOKEN" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
assert sys.argv[3] not in text, "the token appears in the log"
lines = [json.loads(line) for line in text.splitlines() if line.strip()]
access = [l for l in lines if l.get("request_id") == sys.argv[2]]
assert access, "no access line with the request id"
a = access[0]
assert (a["method"], a["loss"], a["status"]) == ("EvaluateLoss", "mse_loss", "OK"), a
assert isinstance(a["duration_ms"], float), a
print(len(lines), "JSON lines; access line:", json.dumps(a))
EOF

step "podman stop: SIGTERM, drain, exit 0 within the grace period ($STOP_TIMEOUT s)"
t=$SECONDS
quiet_systemd podman stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null
took=$((SECONDS - t))
code=$(podman inspect "$NAME" --format '{{.State.ExitCode}}')
echo "stopped in ${took} s, exit code $code"
podman logs "$NAME" 2>&1 | tail -3
[[ $code == 0 ]] || fail "exit code $code after podman stop (137: killed, SIGTERM not handled in time)"
((took < STOP_TIMEOUT)) || fail "stop took ${took} s: not within the grace period"
podman logs "$NAME" 2>&1 | grep -q '"lossd stopped"' || fail "no 'lossd stopped' line: the server did not drain"

step "a new container on the same volume finds the job store intact"
start_container
if [[ -n $job_id ]]; then
    "$GRPCURL" -plaintext -H "$AUTH" -d "{\"job_id\": \"$job_id\"}" "$TARGET" lossd.v1.TrainingService/GetJob \
        >"$CACHE/getjob.json"
    "$PYTHON" -c 'import json, sys; j = json.load(open(sys.argv[1]))["job"]; assert j["state"] == "JOB_STATE_SUCCEEDED", j; print("job", j["job_id"], j["state"], j["message"])' "$CACHE/getjob.json"
else
    echo "no job to look for (TrainingService not served)"
fi
quiet_systemd podman stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null
[[ $(podman inspect "$NAME" --format '{{.State.ExitCode}}') == 0 ]] || fail "second container: exit code not 0"

# --- 6. two containers, one PostgreSQL job store ------------------------------
step "two containers on one PostgreSQL job store: any replica answers, kill -9 of the owner, failover"
pg_parent=$(mktemp -d /tmp/lossd-image-test-pg.XXXXXX)
chmod 755 "$pg_parent"                # PostgreSQL runs as the postgres user
pg_out=$("$PYTHON" tests/support/postgres.py start "$pg_parent") || fail "could not start PostgreSQL"
PG_URL=$(sed -n 1p <<<"$pg_out")
PG_FOLDER=$(sed -n 2p <<<"$pg_out")
PG_PASSWORD=$("$PYTHON" -c 'import sys; from urllib.parse import urlsplit; print(urlsplit(sys.argv[1]).password)' "$PG_URL")
echo "PostgreSQL at ${PG_URL/$PG_PASSWORD/***}"
PG_PORTS=("$(free_port)" "$(free_port)")
start_replica() {  # $1: 1 or 2; the host network: the database on the host's loopback, a port of its own
    local name="$NAME-pg-$1" port=${PG_PORTS[$1 - 1]}
    podman volume create "$VOLUME-pg-$1" >/dev/null 2>&1 || true
    quiet_systemd podman run -d --name "$name" --network host \
        --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --read-only \
        -v "$VOLUME-pg-$1:/data" \
        -e LOSSD_PORT="$port" -e LOSSD_TOKEN="$TOKEN" -e LOSSD_JOB_STORE="$PG_URL" -e LOSSD_JOB_LEASE_S=2 \
        "$IMAGE" >/dev/null
    local deadline=$((SECONDS + 120))
    until podman healthcheck run "$name" >/dev/null 2>&1; do
        [[ $(podman inspect "$name" --format '{{.State.Running}}') == true ]] \
            || { podman logs "$name" 2>&1 | tail -20; fail "$name exited before it was healthy"; }
        ((SECONDS < deadline)) || { podman logs "$name" 2>&1 | tail -20; fail "$name not healthy within 120 s"; }
        sleep 1
    done
    echo "$name healthy on 127.0.0.1:$port"
}
start_replica 1
start_replica 2
rpc() {  # $1: replica 1 or 2, $2: method, $3: request JSON; GRPCURL_ARGS: more grpcurl flags
    # shellcheck disable=SC2086  # GRPCURL_ARGS: several words
    "$GRPCURL" -plaintext -H "$AUTH" ${GRPCURL_ARGS:-} -d "$3" "127.0.0.1:${PG_PORTS[$1 - 1]}" \
        "lossd.v1.TrainingService/$2"
}
# Some seconds of training, raw parameters (compared byte for byte).
PG_SPEC='"model": {"mlp": {"hidden": [16, 8], "dropout": 0.1}},
    "data": {"builtin": {"name": "moons", "params": {"n_samples": 2000, "noise": 0.2}}, "validation_fraction": 0.2},
    "loss": {"name": "cross_entropy"}, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "schedule": {"cosine": {}}, "epochs": 40, "batch_size": 16, "seed": 7, "output_encoding": "TENSOR_ENCODING_RAW"'
pg_job=$(rpc 1 TrainJob "{\"name\": \"image-test-failover\", \"detach\": true, $PG_SPEC}" \
    | "$PYTHON" -c 'import json, sys; print(json.loads(sys.stdin.read())["event"]["job_id"])')
echo "job $pg_job submitted to replica 1"
owner=""
epoch=0
deadline=$((SECONDS + 120))
until [[ -n $owner ]]; do   # the replica whose log says it started the job's worker, once an epoch ended
    for i in 1 2; do
        if podman logs "$NAME-pg-$i" 2>&1 | grep -q "job $pg_job started in worker pid"; then owner=$i; fi
    done
    if [[ -n $owner ]]; then
        epoch=$(rpc $((3 - owner)) GetJob "{\"job_id\": \"$pg_job\"}" \
            | "$PYTHON" -c 'import json, sys; print(json.loads(sys.stdin.read())["job"].get("epoch", 0))')
        ((epoch >= 1)) || owner=""
    fi
    ((SECONDS < deadline)) || fail "job $pg_job did not reach its first epoch on either replica in 120 s"
    [[ -n $owner ]] || sleep 0.5
done
other=$((3 - owner))
echo "replica $owner runs it; replica $other sees epoch $epoch (GetJob): podman kill (SIGKILL) replica $owner"
podman kill -s KILL "$NAME-pg-$owner" >/dev/null
GRPCURL_ARGS="-max-time 300" rpc "$other" WatchJob "{\"job_id\": \"$pg_job\"}" >"$CACHE/pg-watch.json" \
    || fail "WatchJob on replica $other"
GRPCURL_ARGS="-max-time 300" rpc "$other" TrainJob "{\"name\": \"image-test-reference\", $PG_SPEC}" \
    >"$CACHE/pg-reference.json" || fail "the reference TrainJob on replica $other"
"$PYTHON" - "$CACHE/pg-watch.json" "$CACHE/pg-reference.json" <<'EOF'
import json, sys
def events(path):
    return [e["event"] for e in json.loads("[" + open(path).read().replace("}\n{", "},\n{") + "]")]
watched, reference = events(sys.argv[1]), events(sys.argv[2])
assert [int(e["seq"]) for e in watched] == list(range(1, len(watched) + 1)), "events missing or out of order"
states = [e["state"] for e in watched if e.get("kind") == "JOB_EVENT_KIND_STATE"]
assert states[-1] == "JOB_STATE_SUCCEEDED" and "JOB_STATE_INTERRUPTED" in states, states
assert states.count("JOB_STATE_SUCCEEDED") == 1, states
final, ref = watched[-1], reference[-1]
assert ref["state"] == "JOB_STATE_SUCCEEDED", ref["state"]
assert final["parameters"] and final["parameters"] == ref["parameters"], "parameters differ from an uninterrupted run"
print(f"job {final['job_id']}: {len(watched)} events, states {' -> '.join(s[10:] for s in states)}; "
      f"parameters identical to an uninterrupted run ({len(final['parameters'])} tensors)")
EOF
for i in 1 2; do
    if podman logs "$NAME-pg-$i" 2>&1 | grep -qF "$PG_PASSWORD"; then fail "the database password is in replica $i's log"; fi
done
quiet_systemd podman stop -t "$STOP_TIMEOUT" "$NAME-pg-$other" >/dev/null
[[ $(podman inspect "$NAME-pg-$other" --format '{{.State.ExitCode}}') == 0 ]] || fail "replica $other: exit code not 0"

printf '\nimage-test passed in %s s\n' "$((SECONDS - T0))"
