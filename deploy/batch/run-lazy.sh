#!/bin/bash
# Second runnable of deploy/batch/job-lazy.json (its script.text is this file, verbatim): the
# task's container, started before its image is downloaded. ctr-remote pulls the image
# lazily (manifest and config through layercache; the layers stay remote, read on demand by
# layercache-stargz through layercache) into the containerd start-lazy-node.sh started, and
# ctr runs it on the stargz snapshotter with the host's network, as Batch runs containers.
# The task's environment (taskSpec.environment: start-lazy-node.sh preloads the start of the
# same IMAGE) sets IMAGE (an eStargz image, named through layercache:
# 127.0.0.1:5000/<AR host>/<path>:<tag>; any other image works too, pulled whole) and COMMAND
# (run with /bin/sh -c in the container, which gets BATCH_TASK_INDEX and BATCH_TASK_COUNT).
set -euo pipefail
: "${IMAGE:?IMAGE is not set (environment of the task)}"
: "${COMMAND:?COMMAND is not set (environment of the task)}"
# The lazy node's containerd (start-lazy-node.sh); ctest -L lazy points both elsewhere.
ADDRESS=${LAYERCACHE_CONTAINERD_ADDRESS:-/run/layercache-containerd/containerd.sock}
LOCK=${LAYERCACHE_RPULL_LOCK:-/var/lock/layercache-rpull.lock}
NAMESPACE="batch"

# Seconds since $1 (a `date +%s.%N`).
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

start=$(date +%s.%N)
# Tasks sharing a VM pull the image one at a time (the first does the work, quickly: the
# layers are only mounted); the containers then run side by side.
(
  flock 8
  ctr-remote --address "$ADDRESS" --namespace "$NAMESPACE" images rpull --plain-http "$IMAGE"
) 8>"$LOCK"
echo "rpull of $IMAGE: $(elapsed "$start") s" >&2

id="task-${BATCH_TASK_INDEX:-0}-$$"
status=0
ctr --address "$ADDRESS" --namespace "$NAMESPACE" run --rm --snapshotter stargz --net-host \
  --env "BATCH_TASK_INDEX=${BATCH_TASK_INDEX:-0}" --env "BATCH_TASK_COUNT=${BATCH_TASK_COUNT:-1}" \
  "$IMAGE" "$id" /bin/sh -c "$COMMAND" || status=$?
echo "container $id: exit $status, $(elapsed "$start") s from the pull's start" >&2
exit "$status"
