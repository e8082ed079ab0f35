"""The deployment files agree with each other, with the guide, and with how the service really
starts.

What cannot run here is replaced, and only that: there is no Docker daemon, so
the image's CMD runs with the image's ENV outside a container; Cloud Run
cannot be reached, so the deploy script meets a stand-in ``gcloud`` that
records its arguments. The memory-limit tests use a real cgroup where this
process may make one, else the fallback the script announces.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.helpers.dockerfile import dockerfile_stages, image_cmd, image_env
from tests.servers import ROOT, GunicornServer, wait_for

IMAGE = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}/liroo-backend:$COMMIT_SHA"


def script_figure(name: str) -> int:
    """A figure the deploy script derives --concurrency from (baseline_mb, request_peak_mb)."""
    text = (ROOT / "deploy-cloud-run.sh").read_text()
    return int(re.search(rf"^{name}=(\d+)$", text, re.M).group(1))


def concurrency_for(memory_mib: int) -> int:
    """docs/operations.md's formula: the hard limit (75%) less an idle instance, over one heavy
    request's peak."""
    fit = (memory_mib * 75 // 100 - script_figure("baseline_mb")) // script_figure(
        "request_peak_mb"
    )
    return min(max(fit, 1), 1000)


GUIDE_FLAGS = {
    "--memory": "4Gi",
    "--cpu": "2",
    "--concurrency": str(concurrency_for(4096)),
    "--max-instances": "5",
    "--min-instances": "0",
    "--timeout": "3600",
    "--execution-environment": "gen2",
    "--cpu-boost": None,
}


# --- Dockerfile ---------------------------------------------------------------------


def test_image_base_user_env_and_command():
    stages = dockerfile_stages()
    final = stages[-1]
    assert re.fullmatch(r"python:3\.(1[1-9]|[2-9]\d)-slim", final[0][1]), final[0]
    users = [args for name, args in final if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (name, _) in enumerate(final) if name == "USER")
    assert all(name not in ("RUN", "COPY") for name, _ in final[last_user:]), (
        "nothing runs as root after USER"
    )
    env = image_env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["PORT"] == "8080"
    assert image_cmd() == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]


def test_dependencies_install_before_the_source_and_build_tools_stay_behind():
    stages = dockerfile_stages()
    deps, final = stages[0], stages[-1]
    copies = [args for name, args in deps if name == "COPY"]
    installs = [
        i for i, (name, args) in enumerate(deps) if name == "RUN" and "pip install -r" in args
    ]
    assert copies and all("requirements.txt" in args for args in copies), (
        "only requirements.txt in the deps stage"
    )
    assert installs
    final_copies = [args for name, args in final if name == "COPY"]
    assert final_copies[0].startswith("--from="), "the installed virtualenv comes first"
    assert any(args.split()[0] == "liroo" for args in final_copies[1:])
    for name, args in final:
        assert not (name == "RUN" and re.search(r"pip install|apt-get install|apk add", args)), args


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = (
            re.escape(pattern)
            .replace(r"\*\*/", "(?:.*/)?")
            .replace(r"\*\*", ".*")
            .replace(r"\*", "[^/]*")
        )
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_deploy.py",
        "bench/governor_overhead.py",
        "media/a.jpg",
        ".venv/bin/python",
        "venv/bin/python",
        ".git/HEAD",
        "docs/operations.md",
        "liroo/__pycache__/logs.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_tests_benches_media_and_virtualenvs_out(path):
    assert dockerignore_excludes(path), path


def test_dockerignore_keeps_every_copied_source_in():
    sources = [
        args.split()[0]
        for name, args in dockerfile_stages()[0] + dockerfile_stages()[-1]
        if name == "COPY" and not args.startswith("--from")
    ]
    assert sources
    for source in sources:
        for path in [source] + [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]:
            assert not dockerignore_excludes(path), path


def test_the_image_command_and_environment_start_the_service():
    env = image_env()
    env["PATH"] = (
        env["PATH"]
        .replace("/opt/venv/bin", str(ROOT / ".venv" / "bin"))
        .replace("$PATH", os.environ["PATH"])
    )
    command = image_cmd()
    command[0] = shutil.which(command[0], path=env["PATH"])
    server = GunicornServer(env=env, command=command)
    # As in the image: its own defaults for workers and threads, and PORT as Cloud Run sets it.
    for name in ("WEB_CONCURRENCY", "LIROO_THREADS"):
        server.env.pop(name, None)
    server.env["PORT"] = str(server.port)
    with server:
        body = requests.get(server.url("/health"), timeout=5).json()
        assert body["status"] == "healthy"
        assert (
            len(
                wait_for(
                    lambda: len(server.worker_pids()) == 2 and server.worker_pids(),
                    20,
                    what="two workers",
                )
            )
            == 2
        )
        # gthread, with JSON errors
        assert "Using worker: liroo.server.JsonErrorWorker" in server.log()


# --- cloudbuild.yaml ---------------------------------------------------------------


def cloudbuild() -> dict:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def flags(args: list[str]) -> dict[str, str | None]:
    out = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            out[name] = value if _ else None
    return out


def deploy_args(config: dict) -> list[str]:
    step = next(s for s in config["steps"] if s["id"] == "deploy")
    assert step["entrypoint"] == "gcloud"
    return [str(a) for a in step["args"]]


def test_cloudbuild_builds_pushes_and_deploys_with_the_guide_settings():
    config = cloudbuild()
    steps = {s["id"]: s for s in config["steps"]}
    assert list(steps) == ["build", "push", "deploy"]
    assert steps["build"]["args"] == ["build", f"--tag={IMAGE}", "."]
    assert steps["push"]["args"] == ["push", IMAGE]
    assert config["images"] == [IMAGE]
    args = deploy_args(config)
    assert args[:3] == ["run", "deploy", "${_SERVICE}"]
    deploy = flags(args)
    assert deploy["--image"] == IMAGE
    for name, value in GUIDE_FLAGS.items():
        assert deploy[name] == value, name
    env = dict(pair.split("=", 1) for pair in deploy["--set-env-vars"].split(","))
    assert env == {
        "GCS_BUCKET_NAME": "${_GCS_BUCKET_NAME}",
        "BASE_URL": "${_BASE_URL}",
        "LIROO_TRUSTED_PROXIES": "1",
        "GOOGLE_CLOUD_PROJECT": "$PROJECT_ID",
        "LIROO_ASYNC": "off",
        "LIROO_THREADS": str(-(-concurrency_for(4096) // 2)),  # 2 workers x threads cover it
    }
    secrets = deploy["--set-secrets"].split(",")
    assert "GENAI_API_KEY=${_GENAI_SECRET}:latest" in secrets
    assert "REDIS_URL=${_REDIS_SECRET}:latest" in secrets
    assert all(re.fullmatch(r"[A-Z_]+=[\w${}-]+:(latest|\d+)", s) for s in secrets), (
        "references, never values"
    )


def test_cloudbuild_substitutions_are_all_defined_and_used_and_no_key_is_inline():
    text = (ROOT / "cloudbuild.yaml").read_text()
    config = cloudbuild()
    defined = set(config["substitutions"])
    used = set(
        re.findall(r"\$\{(_[A-Z0-9_]+)\}", yaml.safe_dump(config["steps"]) + str(config["images"]))
    )
    assert used == defined
    assert config["options"]["dynamicSubstitutions"] is True  # the bucket default uses $PROJECT_ID
    assert not re.search(r"AIza[0-9A-Za-z_-]{20,}", text)
    assert "GENAI_API_KEY" not in flags(deploy_args(config))["--set-env-vars"]


# --- deploy-cloud-run.sh -----------------------------------------------------------------


def fake_gcloud(folder: Path, project: str = "demo-proj") -> Path:
    """A stand-in gcloud (the real one cannot deploy from here): records its arguments, answers two
    questions."""
    log = folder / "gcloud-calls.jsonl"
    script = folder / "gcloud"
    script.write_text(f"""#!{sys.executable}
import json, sys
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:4] == ["config", "get-value", "project"]:
    print({project!r})
if sys.argv[1:4] == ["run", "services", "describe"]:
    print("https://liroo-backend-abc123-uc.a.run.app")
""")
    script.chmod(0o755)
    return log


def run_script(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        ["/bin/bash", str(ROOT / "deploy-cloud-run.sh"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def printed_commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def resolve(args: list[str], values: dict[str, str]) -> list[str]:
    """cloudbuild.yaml's args with its substitutions filled in."""

    def sub(text: str) -> str:
        return re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: values[m.group(1)], text)

    return [sub(a) for a in args]


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path):
    calls = fake_gcloud(tmp_path)
    result = run_script("--dry-run", path=f"{tmp_path}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert "would check that gcloud is installed" in result.stdout
    assert "gcloud config get-value project" in result.stdout
    commands = printed_commands(result.stdout)
    assert [c[:3] for c in commands] == [
        ["gcloud", "builds", "submit"],
        ["gcloud", "run", "deploy"],
        ["gcloud", "run", "services"],
    ]
    deploy = flags(commands[1])
    for name, value in GUIDE_FLAGS.items():
        assert deploy[name] == value, name
    assert "GENAI_API_KEY=genai-api-key:latest" in deploy["--set-secrets"].split(",")
    assert not calls.exists(), "a dry run must not call gcloud"


def test_script_defaults_match_cloudbuild():
    result = run_script("--dry-run", "--project", "demo-proj", "--tag", "abc123")
    assert result.returncode == 0, result.stderr
    config = cloudbuild()
    values = {"PROJECT_ID": "demo-proj", "COMMIT_SHA": "abc123", **config["substitutions"]}
    values = {k: str(v).replace("${PROJECT_ID}", "demo-proj") for k, v in values.items()}
    script_deploy = printed_commands(result.stdout)[1][1:]
    assert sorted(script_deploy) == sorted(resolve(deploy_args(config), values))
    build = printed_commands(result.stdout)[0]
    assert f"--tag={resolve([IMAGE], values)[0]}" in build


def test_script_options_reach_the_deploy_command_as_cloudbuild_substitutions_do():
    options = {
        "--project": "p2",
        "--region": "europe-west1",
        "--service": "liroo-staging",
        "--repository": "r2",
        "--tag": "t2",
        "--bucket": "b2",
        "--base-url": "https://liroo.example.com",
        "--genai-secret": "s2",
        "--redis-secret": "r-url",
        "--network": "vpc2",
        "--subnet": "sub2",
    }
    result = run_script("--dry-run", *[x for pair in options.items() for x in pair])
    assert result.returncode == 0, result.stderr
    values = {
        "PROJECT_ID": "p2",
        "COMMIT_SHA": "t2",
        "_REGION": "europe-west1",
        "_SERVICE": "liroo-staging",
        "_REPOSITORY": "r2",
        "_GCS_BUCKET_NAME": "b2",
        "_BASE_URL": "https://liroo.example.com",
        "_GENAI_SECRET": "s2",
        "_REDIS_SECRET": "r-url",
        "_NETWORK": "vpc2",
        "_SUBNET": "sub2",
    }
    assert sorted(printed_commands(result.stdout)[1][1:]) == sorted(
        resolve(deploy_args(cloudbuild()), values)
    )


# --- memory decides the concurrency -----------------------------------------------------


@pytest.mark.parametrize(
    "memory, mib", [("2Gi", 2048), ("4Gi", 4096), ("8Gi", 8192), ("512Mi", 512)]
)
def test_concurrency_is_derived_from_the_instances_memory_and_threads_cover_it(memory, mib):
    deploy = deploy_flags("--memory", memory)
    concurrency = int(deploy["--concurrency"])
    assert concurrency == concurrency_for(mib)
    env = dict(pair.split("=", 1) for pair in deploy["--set-env-vars"].split(","))
    assert 2 * int(env["LIROO_THREADS"]) >= concurrency  # every request has a thread


def test_more_memory_takes_more_requests_and_the_figures_can_be_given():
    by_memory = [int(deploy_flags("--memory", m)["--concurrency"]) for m in ("2Gi", "4Gi", "8Gi")]
    assert by_memory == sorted(set(by_memory)), by_memory  # strictly more with more memory
    # A re-measured instance (bench/request_peaks.py): 4 GiB of 3072 MB, 72 idle, 100 a request.
    given = deploy_flags("--memory", "4Gi", "--baseline-mb", "72", "--request-peak-mb", "100")
    assert given["--concurrency"] == "30"
    assert deploy_flags("--concurrency", "12")["--concurrency"] == "12"  # an explicit figure wins


@pytest.mark.parametrize(
    "args", [("--memory", "4GB"), ("--request-peak-mb", "0"), ("--concurrency", "many")]
)
def test_sizes_and_figures_that_are_not_numbers_are_refused(args):
    result = run_script("--dry-run", "--project", "demo-proj", *args)
    assert result.returncode != 0 and "deploy-cloud-run:" in result.stderr
    assert "gcloud run deploy" not in result.stdout


# --- many instances: Redis, the startup probe, async work ------------------------------------


def deploy_flags(*args: str) -> dict[str, str | None]:
    result = run_script("--dry-run", "--project", "demo-proj", "--tag", "abc123", *args)
    assert result.returncode == 0, result.stderr
    return flags(printed_commands(result.stdout)[1])


def test_the_deployment_reaches_memorystore_by_direct_vpc_egress_and_its_redis_url_by_secret():
    deploy = deploy_flags()
    assert deploy["--network"] == "default" and deploy["--subnet"] == "default"
    # Gemini and Cloud Storage still leave directly
    assert deploy["--vpc-egress"] == "private-ranges-only"
    assert "REDIS_URL=liroo-redis-url:latest" in deploy["--set-secrets"].split(",")
    assert "REDIS_URL" not in deploy["--set-env-vars"], (
        "a reference to a secret, never the URL itself"
    )
    probe = dict(part.split("=", 1) for part in deploy["--startup-probe"].split(","))
    assert probe["httpGet.path"] == "/ready"  # fails while the configured Redis cannot be reached
    assert int(probe["periodSeconds"]) * int(probe["failureThreshold"]) <= 240


def test_without_redis_several_instances_are_refused_and_the_reason_is_said():
    refused = run_script("--dry-run", "--project", "demo-proj", "--no-redis")
    assert refused.returncode != 0
    assert (
        "without Redis each instance keeps its own jobs, progress, rate limits and Gemini budget"
        in refused.stderr
    )
    assert "--single-instance-state" in refused.stderr
    assert not printed_commands(refused.stdout), "nothing is built or deployed"


@pytest.mark.parametrize(
    "accepted",
    [("--no-redis", "--max-instances", "1"), ("--no-redis", "--single-instance-state")],
    ids=["max-instances-1", "single-instance-state"],
)
def test_without_redis_one_instance_deploys_without_a_network(accepted):
    deploy = deploy_flags(*accepted)
    assert "REDIS_URL" not in deploy["--set-secrets"]
    assert "--network" not in deploy and "--vpc-egress" not in deploy
    assert deploy["--startup-probe"].startswith("httpGet.path=/ready")


def test_async_work_is_deployed_only_with_cpu_always_allocated():
    default = deploy_flags()
    assert "--cpu-throttling" in default and "--no-cpu-throttling" not in default
    assert "LIROO_ASYNC=off" in default["--set-env-vars"].split(",")
    with_async = deploy_flags("--async")
    assert "--no-cpu-throttling" in with_async and "--cpu-throttling" not in with_async
    assert "LIROO_ASYNC=on" in with_async["--set-env-vars"].split(",")


def test_a_real_run_calls_exactly_what_the_dry_run_prints(tmp_path):
    calls = fake_gcloud(tmp_path, project="demo-proj")
    path = f"{tmp_path}:{os.environ['PATH']}"
    result = run_script("--tag", "abc123", path=path)
    assert result.returncode == 0, result.stderr
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert recorded[0] == ["config", "get-value", "project"]
    dry = run_script("--dry-run", "--project", "demo-proj", "--tag", "abc123", path=path)
    assert recorded[1:] == [c[1:] for c in printed_commands(dry.stdout)]
    assert "https://liroo-backend-abc123-uc.a.run.app" in result.stdout


def test_without_gcloud_or_a_project_it_stops_before_doing_anything(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_gcloud = run_script("--project", "p", path=str(empty))
    assert no_gcloud.returncode != 0
    assert "gcloud is not installed" in no_gcloud.stderr

    calls = fake_gcloud(tmp_path, project="")
    no_project = run_script(path=f"{tmp_path}:{os.environ['PATH']}")
    assert no_project.returncode != 0
    assert "no project" in no_project.stderr
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        ["config", "get-value", "project"]
    ]


def test_unknown_options_are_refused():
    result = run_script("--dry-run", "--memroy", "8Gi")
    assert result.returncode != 0
    assert "unknown option: --memroy" in result.stderr


# --- make run-limited --------------------------------------------------------------------

RUN_LIMITED = [sys.executable, str(ROOT / "scripts" / "run-limited")]


def test_make_run_limited_calls_the_script_with_the_limit():
    out = subprocess.run(
        ["make", "-n", "run-limited", "MEM=768m"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "scripts/run-limited --mem 768m" in out


def limited_plan(mem: str) -> str:
    result = subprocess.run(
        [*RUN_LIMITED, "--mem", mem, "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "MEMORY_LIMIT_MB"},
    )
    return result.stderr


def cgroup_group(plan: str) -> str | None:
    match = re.search(r"cgroup v\d group (\S+):", plan)
    return match.group(1) if match else None


def test_run_limited_dry_run_prints_the_plan_and_changes_nothing():
    plan = limited_plan("768m")
    group = cgroup_group(plan)
    if group:
        assert str(768 * 1024 * 1024) in plan
        assert not os.path.exists(group)
    else:
        assert "falling back to MEMORY_LIMIT_MB=576" in plan
    assert "dry run: nothing created, nothing started" in plan
    assert "gunicorn -c gunicorn.conf.py wsgi:app" in plan


def test_run_limited_serves_under_the_limit_and_cleans_up():
    server = GunicornServer(command=[*RUN_LIMITED, "--mem", "512m"])
    with server:
        memory = requests.get(server.url("/memory"), timeout=5).json()
        assert memory["memory_limit_mb"] == 384.0  # 75% of 512 MB, from the cgroup or the fallback
        group = cgroup_group(server.log())
        if group:
            assert memory["cgroup"]["limit_mb"] == 512.0
            assert memory["source"].startswith("cgroup_v")
            assert os.path.isdir(group)
        else:
            assert "falling back to MEMORY_LIMIT_MB=384" in server.log()
        assert server.stop() == 0
    if group:
        assert not os.path.exists(group), "the group is removed when the server stops"


def test_run_limited_limit_is_enforced_by_the_kernel():
    if not cgroup_group(limited_plan("48m")):
        pytest.skip("this machine does not let us create a memory cgroup")
    result = subprocess.run(
        [
            *RUN_LIMITED,
            "--mem",
            "48m",
            "--",
            sys.executable,
            "-c",
            "data = b'x' * (256 << 20); print('survived')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 137
    assert "survived" not in result.stdout
    assert "OOM killer ended" in result.stderr


def test_the_served_configuration_keeps_no_freed_pillow_blocks(tmp_path):
    """gunicorn.conf.py, which production and `make run` both load, leaves Pillow's block cache
    off: blocks it kept would be memory the governor reads as used and no reservation owns (a
    request then waits for room only that cache holds); an operator's own value still wins."""
    code = (
        "import runpy; runpy.run_path('gunicorn.conf.py'); "
        "from PIL import Image; print(Image.core.get_blocks_max())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PILLOW_", "LIROO_"))}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)

    def blocks_max(**extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()[-1]

    assert blocks_max() == "0"
    assert blocks_max(PILLOW_BLOCKS_MAX="4") == "4"
