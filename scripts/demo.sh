#!/usr/bin/env bash
# The main job, end to end through Airflow on this machine: ingest -> training -> scoring, each DAG run with
# `airflow dags test` on SQLite, workspace and registry in local folders.  Ends by printing where the champion
# is, its metrics, and the top of the worklist.
#
#   scripts/demo.sh                       synthetic NIH-shaped input (the demo profile: minutes on 2 CPU cores),
#                                         calibrated (synth --realistic) to a test AUROC of about 0.85-0.93
#   NIH_DIR=../shared/nih scripts/demo.sh  real NIH PNGs packed into NIH-style archives instead
#
# Environment (optional): DEMO_DIR (demo), XRAY_PROFILE (demo | full), DEMO_PATIENTS (360), DEMO_ARCHIVES (3),
# NIH_LIMIT (all PNGs in NIH_DIR/images), DEMO_INCOMING (60: new patients in each scored batch; the synthetic
# demo scores two batches, one like the training data and one from a "new scanner", brighter and flatter),
# DEMO_FORCE=REASON (publish the candidate even if the gate rejects it; the reason is recorded).
# Run again: ingest finds no news at the source (nothing validated, no event) and training finds its fingerprint
# (data, config, code, base weights) in the registry, so the demo ends saying which version stands.  Change
# something (XRAY_OVERRIDES='{"head.epochs": 61}', new archives in demo/source) and it trains and gates again.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="$repo/.venv/bin"
demo="$(mkdir -p "${DEMO_DIR:-$repo/demo}" && cd "${DEMO_DIR:-$repo/demo}" && pwd)"
started=$(date +%s)
step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

export AIRFLOW_HOME="$demo/airflow"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$repo/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$repo/plugins"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
# What the DAGs read when a param is empty (see dags/xray_common.py).
export XRAY_PROFILE="${XRAY_PROFILE:-demo}"
# Nobody is there to sign a candidate off: the demo deployment approves by policy (profile demo does already;
# this keeps XRAY_PROFILE=full from waiting forever in the approval task).  A set XRAY_OVERRIDES is left alone.
[[ -n "${XRAY_OVERRIDES:-}" ]] || export XRAY_OVERRIDES='{"approval.policy": "auto"}'
export XRAY_WORKSPACE="$demo/workspace" XRAY_REGISTRY="$demo/registry"
export XRAY_IMAGES="$demo/incoming/current" XRAY_WORKLISTS="$demo/worklists"
export XRAY_TASK_RETRIES=0   # a failing stage fails the same way twice: show it at once
export TF_CPP_MIN_LOG_LEVEL=1
mkdir -p "$AIRFLOW_HOME"
log="$demo/logs"; mkdir -p "$log"

step "Airflow: metadata DB and the gpu pool ($AIRFLOW_HOME)"
AIRFLOW="$bin/airflow" "$repo/scripts/airflow-setup.sh"

source="$demo/source"
if [[ -n "${NIH_DIR:-}" ]]; then
  step "input: real NIH PNGs from $NIH_DIR packed into NIH-style archives"
  [[ -f "$source/.done" ]] || {
    "$bin/xray-tasks" pack "$NIH_DIR/images" "$NIH_DIR/meta" "$source" --archives "${DEMO_ARCHIVES:-2}" \
      ${NIH_LIMIT:+--limit "$NIH_LIMIT"} >/dev/null && touch "$source/.done"; }
  mkdir -p "$XRAY_IMAGES"
  find "$NIH_DIR/images" -name '*.png' | sort | tail -n "${DEMO_INCOMING:-60}" | xargs -I{} cp {} "$XRAY_IMAGES/"
else
  step "input: synthetic NIH-shaped archives (${DEMO_PATIENTS:-360} patients, --realistic) and two batches of" \
    "new studies (${DEMO_INCOMING:-60} patients each: one as before, one from a new scanner)"
  [[ -f "$source/.done" ]] || {
    "$bin/xray-tasks" synth "$source" --patients "${DEMO_PATIENTS:-360}" --archives "${DEMO_ARCHIVES:-3}" \
      --image-size 256 --realistic >/dev/null && touch "$source/.done"; }
  # New studies from other (synthetic) patients: a second tree's one archive, unpacked; the new scanner's batch
  # is brighter with less contrast (synth --scanner new), which the scoring DAG's drift check must notice.
  for batch in current new-scanner; do
    if [[ ! -d "$demo/incoming/$batch" ]]; then
      "$bin/xray-tasks" synth "$demo/new-patients/$batch" --patients "${DEMO_INCOMING:-60}" --archives 1 \
        --image-size 256 --realistic --seed "$([[ $batch == current ]] && echo 7 || echo 8)" \
        --scanner "$([[ $batch == current ]] && echo default || echo new)" >/dev/null
      mkdir -p "$demo/incoming/$batch" && tar -xzf "$demo/new-patients/$batch/images_001.tar.gz" -C "$demo/incoming/$batch"
    fi
  done
fi

run_dag() {  # DAG_ID CONF [LOG_NAME]: one `airflow dags test` run, its log kept; fails the demo when the run fails
  local dag="$1" conf="$2" out="$log/${3:-$1}.log"
  touch "$out.started"
  step "airflow dags test $dag $conf   (log: $out)"
  "$bin/airflow" dags test "$dag" -c "$conf" >"$out" 2>&1 || true
  grep -E "\[xray.dags\]" "$out" | grep -vE "^\S+ \[info +\] +[0-9-]+ [0-9:.,]+: [IW] tensorflow" \
    | sed -E 's/^\S+ \[[a-z]+ *\] //; s/ +\[xray\.dags\].*$//' | cut -c1-160 | grep -E "running:|finished|failed|gate:|shard set:|champion|images/s|  (needs_review|cleared)|drift|no news|news:|unchanged since" || true
  if [[ "${EXPECT_DRIFT:-}" == 1 ]] && grep -q "DagRun Finished: dag_id=$dag.*state=failed" "$out" \
      && newest="$(ls -t "$XRAY_WORKLISTS"/*.drift.json 2>/dev/null | head -n 1)" && [[ -n "$newest" ]] \
      && [[ "$newest" -nt "$out.started" ]] && grep -q '"status": "drift"' "$newest"; then
    echo "-- check_drift failed, as it must for this batch (the alert callback logged it): the run stops there"
    return 0
  fi
  if ! grep -q "DagRun Finished: dag_id=$dag.*state=success" "$out"; then
    echo "!! $dag did not succeed; the end of its log:" >&2
    tail -n 40 "$out" >&2
    exit 1
  fi
}

run_dag xray_ingest "{\"source\": \"$source\"}"
if [[ -n "${DEMO_FORCE:-}" ]]; then
  run_dag xray_train "$("$bin/python" -c 'import json, sys; print(json.dumps({"force_publish": True, "force_reason": sys.argv[1]}))' "$DEMO_FORCE")"
else
  run_dag xray_train '{}'
fi
if unchanged="$(grep -oE "unchanged since version [0-9]+ \([^)]*\)" "$log/xray_train.log" | head -n 1)" && [[ -n "$unchanged" ]]; then
  # Run again on the same data, config and code: ingest found no news and training found the fingerprint.
  step "nothing changed: $unchanged"
  "$bin/xray-tasks" models list --registry "$XRAY_REGISTRY" --model-name xray-triage 2>/dev/null | sed '$d'
  stands="$(echo "$unchanged" | grep -oE "[0-9]{6}")"
  echo "Same data, config, code and base weights as version $stands: nothing was trained, published or scored."
  echo "The champion stays as it is.  To train anyway: airflow dags test xray_train -c '{\"force_retrain\": true, \"retrain_reason\": \"...\"}'"
  echo "demo finished in $(( $(date +%s) - started )) s; Airflow home $AIRFLOW_HOME, logs in $log"
  exit 0
fi
if grep -q "gate: rejected" "$log/xray_train.log"; then
  echo "!! the gate rejected this run (reasons above): the champion, if any, stays"
  if ! "$bin/xray-tasks" models show --registry "$XRAY_REGISTRY" --model-name xray-triage >/dev/null 2>&1; then
    step "no champion: nothing to score with"
    "$bin/xray-tasks" models list --registry "$XRAY_REGISTRY" --model-name xray-triage 2>/dev/null | sed '$d'
    echo "The gate refused every candidate, as it should for a model no better than chance (with no pretrained"
    echo "weights on this machine, a few hundred real images are not enough).  To see the rest of the chain anyway,"
    echo "publish it by force, with a reason that is recorded:  DEMO_FORCE='demo of the chain' $0"
    exit 3
  fi
fi
run_dag xray_score "{\"images\": \"$demo/incoming/current\"}" xray_score-current
if [[ -d "$demo/incoming/new-scanner" ]]; then
  EXPECT_DRIFT=1 run_dag xray_score "{\"images\": \"$demo/incoming/new-scanner\"}" xray_score-new-scanner
fi

step "drift: each scored batch against the champion's test profile (reports and plots beside the worklists)"
for report in $(ls -tr "$XRAY_WORKLISTS"/*.drift.json | tail -n 2); do
  "$bin/python" - "$report" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {doc['status'].upper()}  ({doc['n']} images)")
print(f"  {doc['message']}")
for c in doc["checks"]:
    mark = "PAST LIMIT" if c["drifted"] else "ok"
    print(f"    {c['statistic']:<26} {c['value']:8.3f}  limit {c['limit']:<5g} {mark:<10} {c['detail'][:90]}")
print(f"  plot: {sys.argv[1][:-len('.json')]}.png")
PY
done
echo "PSI compares shares per bin of the reference's deciles (0.1-0.25 moderate, > 0.25 a major shift); KS is the"
echo "largest gap between the two score distributions; a new scanner moves the pixel statistics long before the"
echo "scores show it, which is why both are watched."

if [[ -z "${NIH_DIR:-}" ]]; then
  step "outcomes: the radiologists' findings for the first batch come back (the synthetic metadata holds them)"
  current="$(grep -l "incoming/current" "$XRAY_WORKLISTS"/*.csv | tail -n 1)"
  "$bin/xray-tasks" outcomes --registry "$XRAY_REGISTRY" --worklist "$current" --profile "$XRAY_PROFILE" \
    --labels "$demo/new-patients/current/Data_Entry_2017.csv" 2>"$log/outcomes.log" \
    | tail -n 1 | "$bin/python" -c 'import json, sys; print(json.loads(sys.stdin.read())["message"])' \
    || { echo "!! outcomes below target (a loud failure, as it should be):"; grep -E "BELOW|Error|error" "$log/outcomes.log" | tail -n 2; }
fi

step "result"
"$bin/xray-tasks" models show --registry "$XRAY_REGISTRY" --model-name xray-triage 2>/dev/null | sed '$d'
worklist="$(grep -l "incoming/current" "$XRAY_WORKLISTS"/*.csv | tail -n 1)"
echo
echo "champion:  $XRAY_REGISTRY/xray-triage (models show above; plots under versions/<version>/plots/)"
echo "worklist:  $worklist  (highest risk first; top 10 below)"
head -n 11 "$worklist" | cut -d, -f1-4 | column -s, -t
echo
echo "demo finished in $(( $(date +%s) - started )) s; Airflow home $AIRFLOW_HOME, logs in $log"
