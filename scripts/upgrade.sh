#!/usr/bin/env bash
# Savepoint-based upgrade of a job deployed with the Helm chart (helm/weir):
#
#   scripts/upgrade.sh RELEASE JOB_ID NEW_JOB_FILE [SAVEPOINT_DIR] [-- HELM_ARGS...]
#
#  1. weir stop JOB_ID --savepoint [SAVEPOINT_DIR]: the job ends FINISHED with
#     a savepoint (without SAVEPOINT_DIR: the chart's storage.savepoints);
#  2. helm upgrade RELEASE with the new job file and job.fromSavepoint set to
#     that savepoint, keeping every other value; the chart's hook Job submits
#     the new job;
#  3. waits until the new job is RUNNING and prints its id (last line).
#
# Environment:
#   WEIR_JOBMANAGER   job manager URL (default http://127.0.0.1:6123, e.g.
#                     through `kubectl port-forward svc/RELEASE-jobmanager 6123`)
#   WEIR              weir command (default: weir on PATH)
#   HELM              helm command (default: helm on PATH, else the one
#                     scripts/helm.sh install builds)
#   WEIR_CHART        chart directory (default: helm/weir of this repository)
#   UPGRADE_TIMEOUT   seconds to wait for the new job to run (default 300)
#
# HELM_ARGS go to `helm upgrade` as they are, e.g.
#   -- --namespace streaming --set job.allowNonRestoredState=true
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -h | --help) usage ;;
    *) positional+=("$1"); shift ;;
  esac
done
helm_args=("$@")
[ "${#positional[@]}" -ge 3 ] && [ "${#positional[@]}" -le 4 ] || usage
RELEASE="${positional[0]}"
JOB_ID="${positional[1]}"
JOB_FILE="${positional[2]}"
SAVEPOINT_DIR="${positional[3]:-}"

export WEIR_JOBMANAGER="${WEIR_JOBMANAGER:-http://127.0.0.1:6123}"
WEIR="${WEIR:-weir}"
if [ -z "${HELM:-}" ]; then
  if command -v helm >/dev/null; then HELM=helm; else HELM="$HOME/.cache/weir/tools/bin/helm"; fi
fi
CHART="${WEIR_CHART:-$ROOT/helm/weir}"
TIMEOUT="${UPGRADE_TIMEOUT:-300}"

say() { echo "upgrade: $*" >&2; }
die() { say "$*"; exit 1; }

command -v python3 >/dev/null || die "python3 is required (to read the CLI's JSON)"
command -v "$WEIR" >/dev/null || die "weir not found (set WEIR)"
command -v "$HELM" >/dev/null || [ -x "$HELM" ] || die "helm not found (set HELM, or run scripts/helm.sh install)"
[ -f "$JOB_FILE" ] || die "no such job file: $JOB_FILE"
[ -d "$CHART" ] || die "no chart at $CHART (set WEIR_CHART)"

# The new job file must be valid before the running job is stopped.
"$WEIR" validate "$JOB_FILE" >/dev/null || die "$JOB_FILE is not a valid job file; nothing was stopped"

# Jobs already known, so that the new one can be told apart.
before="$("$WEIR" --output json list --jobmanager "$WEIR_JOBMANAGER")"

say "stopping job $JOB_ID with a savepoint${SAVEPOINT_DIR:+ under $SAVEPOINT_DIR} (job manager $WEIR_JOBMANAGER)"
stop_args=(--output json stop "$JOB_ID" --jobmanager "$WEIR_JOBMANAGER" --savepoint)
[ -n "$SAVEPOINT_DIR" ] && stop_args+=("$SAVEPOINT_DIR")
stopped="$("$WEIR" "${stop_args[@]}")" || die "weir stop failed; job $JOB_ID keeps running unchanged"
LOCATION="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["location"])' <<< "$stopped")"
JOB_STATE="$(python3 -c 'import json, sys; print(json.load(sys.stdin).get("job_state", ""))' <<< "$stopped")"
[ -n "$LOCATION" ] || die "weir stop printed no savepoint location: $stopped"
say "savepoint: $LOCATION (job $JOB_ID: ${JOB_STATE:-?})"

say "helm upgrade $RELEASE with $JOB_FILE from the savepoint"
if ! "$HELM" upgrade "$RELEASE" "$CHART" --reuse-values \
  --set job.enabled=true \
  --set-file "job.file=$JOB_FILE" \
  --set-string "job.fromSavepoint=$LOCATION" \
  "${helm_args[@]}" >&2; then
  say "helm upgrade failed. The old job is stopped; its state is in the savepoint:"
  say "  $LOCATION"
  say "fix the cause and re-run the upgrade by hand, or submit directly:"
  say "  weir run $JOB_FILE --from-savepoint $LOCATION"
  exit 1
fi

say "waiting up to ${TIMEOUT}s for the new job to run"
deadline=$(($(date +%s) + TIMEOUT))
while :; do
  now="$("$WEIR" --output json list --jobmanager "$WEIR_JOBMANAGER" 2>/dev/null || echo '[]')"
  # The newest job not listed before the stop: RUNNING -> its id; FAILED or
  # CANCELED -> "!" and its state.
  found="$(BEFORE="$before" python3 -c '
import json, os, sys
old = {j["job_id"] for j in json.loads(os.environ["BEFORE"])}
new = [j for j in json.load(sys.stdin) if j["job_id"] not in old]
new.sort(key=lambda j: j.get("start_time_ms") or 0)
if new:
    j = new[-1]
    if j["state"] == "RUNNING":
        print(j["job_id"])
    elif j["state"] in ("FAILED", "CANCELED", "FINISHED"):
        print("!" + j["job_id"] + " " + j["state"])
' <<< "$now")"
  case "$found" in
    "") ;;
    "!"*)
      bad="${found#!}"
      die "the new job ${bad%% *} is ${bad#* }; see: weir status ${bad%% *} (the savepoint $LOCATION is intact)"
      ;;
    *)
      say "job $found is RUNNING (from $LOCATION)"
      echo "$found"
      exit 0
      ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || die "no new job RUNNING after ${TIMEOUT}s; check: kubectl logs job/<release fullname>-submit"
  sleep 2
done
