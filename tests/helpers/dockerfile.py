"""The Dockerfile read as instructions: what the image sets and runs."""

import json
import shlex

from tests.servers import ROOT


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """[(INSTRUCTION, arguments)] per build stage, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instructions.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in instructions:
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stages.append([])
        stages[-1].append((name.upper(), args.strip()))
    return stages


def image_env() -> dict[str, str]:
    env = {}
    for name, args in dockerfile_stages()[-1]:
        if name == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(args))
    return env


def image_cmd() -> list[str]:
    cmds = [args for name, args in dockerfile_stages()[-1] if name == "CMD"]
    assert len(cmds) == 1
    return json.loads(cmds[0])  # exec form: gunicorn itself is PID 1 and gets SIGTERM
