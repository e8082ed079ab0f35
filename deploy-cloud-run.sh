#!/usr/bin/env bash
# Build the image with Cloud Build and deploy it to Cloud Run: the same
# deployment as cloudbuild.yaml (a test keeps the flags equal), for a person at
# a terminal. --dry-run prints every command instead of running it.
#
#   ./deploy-cloud-run.sh --project my-project
#   ./deploy-cloud-run.sh --project my-project --base-url https://liroo.example.com --dry-run
#   ./deploy-cloud-run.sh --project my-project --no-redis --max-instances 1
#
# Several instances share jobs, progress, rate limits and the Gemini budget
# through Redis (Memorystore, reached by Direct VPC egress; REDIS_URL from
# Secret Manager). Without Redis, more than one instance is refused unless
# --single-instance-state says that per-instance state is accepted.
#
# docs/operations.md explains each setting; run with --help for the options.
set -euo pipefail

project=""
region="us-central1"
service="liroo-backend"
repository="liroo"
tag=""
image=""
bucket=""
base_url=""
genai_secret="genai-api-key"
redis_secret="liroo-redis-url"
network="default"
subnet="default"
redis=true
single_instance_state=false
async_mode=false
memory="4Gi"
cpu="2"
concurrency=""  # derived from --memory below unless given
# Cloud Run scales on concurrency, never on memory, so memory decides the concurrency:
#   concurrency = floor((memory x 0.75 - baseline) / request peak), at least 1
# 0.75: the governor's hard limit is 75% of the container's limit (liroo/governor/policy.py).
# baseline: an idle instance (master + 2 workers, PSS), measured by bench/request_peaks.py (115 MB
# on 2026-12-03). request peak: what the governor's door holds for one heavy request, the most
# that any route costs there (a lecture: LIROO_IMAGE_RESERVE_MB 48 + LIROO_SPEECH_RESERVE_MB 24),
# which is more than one request was measured to add alone (31 MB, a comic): a concurrency the
# door could not admit at once would only turn Cloud Run's routing into 503s.
# Workers x threads covers the result: LIROO_THREADS = ceil(concurrency / 2 workers).
baseline_mb=115
request_peak_mb=72
workers=2
max_instances="5"
min_instances="0"
timeout="3600"
dry_run=false

usage() {
  cat <<EOF
Usage: $0 [options]

  --project ID          Google Cloud project (default: gcloud's configured project)
  --region REGION       Cloud Run and Artifact Registry region (default: $region)
  --service NAME        Cloud Run service (default: $service)
  --repository NAME     Artifact Registry Docker repository (default: $repository)
  --tag TAG             image tag (default: the git commit, else a timestamp)
  --image IMAGE         deploy this image as is; skips the build
  --bucket NAME         GCS_BUCKET_NAME for generated media (default: <project>-liroo-media)
  --base-url URL        BASE_URL, the public URL (default: empty, the request's own host)
  --genai-secret NAME   Secret Manager secret holding GENAI_API_KEY (default: $genai_secret)
  --redis-secret NAME   Secret Manager secret holding REDIS_URL, e.g. redis://10.0.0.3:6379/0 of a
                        Memorystore instance (default: $redis_secret)
  --network NAME        VPC network of the Memorystore instance, for Direct VPC egress (default: $network)
  --subnet NAME         subnet in --region the instances take their addresses from (default: $subnet)
  --no-redis            no Redis: jobs, progress, rate limits and Gemini pacing stay per instance
  --single-instance-state
                        with --no-redis, accept --max-instances above 1 anyway (polls and retries
                        that land on another instance get 404s or pay again)
  --async               serve 'Prefer: respond-async' (LIROO_ASYNC=on) with CPU always allocated
                        (--no-cpu-throttling: instance-based billing); default: answered synchronously
  --memory SIZE         memory per instance (default: $memory)
  --cpu N               vCPUs per instance (default: $cpu)
  --concurrency N       requests per instance (default: derived from --memory, see below)
  --baseline-mb MB      an idle instance's memory, for the derived concurrency (default: $baseline_mb)
  --request-peak-mb MB  one heavy request's peak, for the derived concurrency (default: $request_peak_mb)
  --max-instances N     (default: $max_instances)
  --min-instances N     (default: $min_instances)
  --timeout SECONDS     request timeout, long enough for a comic (default: $timeout)
  --dry-run             print the commands, run none of them
  -h, --help            this text

The derived concurrency: floor((--memory x 0.75 - baseline) / request peak), at least 1
(4Gi: $(derived_concurrency 4Gi)); LIROO_THREADS is set so that $workers workers x threads cover it.
EOF
}

die() { echo "deploy-cloud-run: $*" >&2; exit 1; }

# Cloud Run's memory size (512Mi, 4Gi, 2G...) in MiB.
memory_mib() {
  local size=$1
  [[ "$size" =~ ^([0-9]+)(Mi|Gi|M|G)$ ]] || die "--memory needs a size like 512Mi or 4Gi, got: $size"
  local n=${BASH_REMATCH[1]}
  case "${BASH_REMATCH[2]}" in
    Gi) echo $(( n * 1024 )) ;;
    Mi) echo "$n" ;;
    G) echo $(( n * 1000000000 / 1048576 )) ;;
    M) echo $(( n * 1000000 / 1048576 )) ;;
  esac
}

# How many requests an instance of this memory takes (the formula above); Cloud Run's most is 1000.
derived_concurrency() {
  local mib
  mib=$(memory_mib "$1") || exit 1
  local fit=$(( (mib * 75 / 100 - baseline_mb) / request_peak_mb ))
  (( fit < 1 )) && fit=1
  (( fit > 1000 )) && fit=1000
  echo "$fit"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project|--region|--service|--repository|--tag|--image|--bucket|--base-url|--genai-secret|\
    --memory|--cpu|--concurrency|--max-instances|--min-instances|--timeout|--redis-secret|--network|--subnet|\
    --baseline-mb|--request-peak-mb)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      name="${1#--}"; name="${name//-/_}"
      printf -v "$name" '%s' "$2"
      shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    --no-redis) redis=false; shift ;;
    --single-instance-state) single_instance_state=true; shift ;;
    --async) async_mode=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

# One word as the shell would need it: bare when safe, else in single quotes.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a command exactly (quoted, so it can be pasted); runs it unless --dry-run.
run() {
  local line="+" word
  for word in "$@"; do line+=" $(quote "$word")"; done
  echo "$line"
  if ! $dry_run; then "$@"; fi
}

# --- checks ------------------------------------------------------------------
[[ "$baseline_mb" =~ ^[0-9]+$ && "$request_peak_mb" =~ ^[1-9][0-9]*$ ]] \
  || die "--baseline-mb and --request-peak-mb need whole numbers of MB (the peak above 0)"
memory_mib "$memory" >/dev/null
concurrency="${concurrency:-$(derived_concurrency "$memory")}"
[[ "$concurrency" =~ ^[1-9][0-9]*$ ]] || die "--concurrency needs a number, got: $concurrency"
threads=$(( (concurrency + workers - 1) / workers ))
echo "# concurrency: $concurrency for --memory $memory ($workers workers x $threads threads)"
[[ "$max_instances" =~ ^[0-9]+$ ]] || die "--max-instances needs a number, got: $max_instances"
if ! $redis && (( max_instances > 1 )) && ! $single_instance_state; then
  die "refusing --no-redis with --max-instances $max_instances: without Redis each instance keeps its own jobs, progress, rate limits and Gemini budget, so the app's polls and retries that land on another instance get 404s or pay for the work again (use Redis, --max-instances 1, or --single-instance-state to accept this)."
fi

if $dry_run; then
  echo "# dry run: would check that gcloud is installed (command -v gcloud)"
else
  command -v gcloud >/dev/null 2>&1 \
    || die "gcloud is not installed: https://cloud.google.com/sdk/docs/install"
fi

if [[ -z "$project" ]]; then
  if $dry_run; then
    echo "# dry run: would read the project from: gcloud config get-value project"
    project="<project>"
  else
    project="$(gcloud config get-value project 2>/dev/null || true)"
    [[ -n "$project" && "$project" != "(unset)" ]] \
      || die "no project: pass --project or run: gcloud config set project <id>"
  fi
else
  echo "# project: $project"
fi

if [[ -z "$tag" ]]; then
  tag="$(git rev-parse HEAD 2>/dev/null || true)"
  [[ -n "$tag" ]] || printf -v tag '%(%Y%m%d-%H%M%S)T' -1
fi
bucket="${bucket:-$project-liroo-media}"

# --- build -------------------------------------------------------------------
if [[ -z "$image" ]]; then
  image="$region-docker.pkg.dev/$project/$repository/liroo-backend:$tag"
  run gcloud builds submit --project="$project" --region="$region" --tag="$image" .
fi

# --- deploy ------------------------------------------------------------------
# Redis (Memorystore) through Direct VPC egress: private addresses leave through the VPC, the rest
# (Gemini, Cloud Storage) as before. The startup probe's /ready fails while a configured Redis
# cannot be reached, so an instance that would keep its state to itself never takes traffic.
secrets="GENAI_API_KEY=$genai_secret:latest"
network_flags=()
if $redis; then
  secrets+=",REDIS_URL=$redis_secret:latest"
  network_flags=(--network="$network" --subnet="$subnet" --vpc-egress=private-ranges-only)
fi
# Async work runs after its 202 is sent: only with CPU always allocated (docs/operations.md).
if $async_mode; then
  async_env="on"; cpu_flag="--no-cpu-throttling"
else
  async_env="off"; cpu_flag="--cpu-throttling"
fi

run gcloud run deploy "$service" \
  --image="$image" \
  --region="$region" \
  --project="$project" \
  --memory="$memory" \
  --cpu="$cpu" \
  --concurrency="$concurrency" \
  --max-instances="$max_instances" \
  --min-instances="$min_instances" \
  --timeout="$timeout" \
  --execution-environment=gen2 \
  --cpu-boost \
  "$cpu_flag" \
  --allow-unauthenticated \
  "${network_flags[@]}" \
  --startup-probe=httpGet.path=/ready,periodSeconds=5,timeoutSeconds=3,failureThreshold=24 \
  --set-env-vars="GCS_BUCKET_NAME=$bucket,BASE_URL=$base_url,LIROO_TRUSTED_PROXIES=1,GOOGLE_CLOUD_PROJECT=$project,LIROO_ASYNC=$async_env,LIROO_THREADS=$threads" \
  --set-secrets="$secrets" \
  --quiet

run gcloud run services describe "$service" --region="$region" --project="$project" \
  --format="value(status.url)"
echo "# next: curl <url>/health, and docs/operations.md for logs and rollback"
