"""`batchlabel schedule`: a crontab entry (or a KubeRay RayCronJob) that runs `batchlabel nightly`.

The night itself is idempotent (see nightly/night.py), so a schedule may retry a failed night freely;
the crontab entry holds a `flock` so two runs of the same pipeline never overlap.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from batchlabel.config.nightly import PipelineSpec
from batchlabel.errors import BatchlabelError

PIPELINE_MOUNT = "/etc/batchlabel"
RAY_VERSION = "2.60.0"


def block_markers(name: str) -> tuple[str, str]:
    return f"# >>> batchlabel nightly {name} >>>", f"# <<< batchlabel nightly {name} <<<"


def batchlabel_command() -> str:
    """The absolute command that runs this batchlabel (the venv's script, else python -m)."""
    script = Path(sys.executable).with_name("batchlabel")
    if script.is_file():
        return shlex.quote(str(script))
    found = shutil.which("batchlabel")
    if found:
        return shlex.quote(str(Path(found).absolute()))
    return f"{shlex.quote(sys.executable)} -m batchlabel.cli"


def crontab_entry(pipeline: PipelineSpec, pipeline_path: str | Path, workdir: str | Path, overrides: list[str] | None = None) -> str:
    """The crontab block (markers, optional CRON_TZ, the line) for one pipeline."""
    workdir = Path(workdir).absolute()
    path = Path(pipeline_path)
    path = path if path.is_absolute() else workdir / path
    log = Path(pipeline.schedule.log.format(name=pipeline.name))
    log = log if log.is_absolute() else workdir / log
    lock = f"/tmp/batchlabel-nightly-{pipeline.name}.lock"
    sets = "".join(f" --set {shlex.quote(item)}" for item in overrides or [])
    command = (
        f"cd {shlex.quote(str(workdir))} && mkdir -p {shlex.quote(str(log.parent))} && "
        f"flock -n {shlex.quote(lock)} {batchlabel_command()} nightly {shlex.quote(str(path))}{sets} --quiet "
        f">> {shlex.quote(str(log))} 2>&1"
    )
    if "%" in command:  # cron turns % into newlines
        command = command.replace("%", "\\%")
    begin, end = block_markers(pipeline.name)
    lines = [begin]
    if pipeline.schedule.timezone:
        lines.append(f"CRON_TZ={pipeline.schedule.timezone}")
    lines += [f"{pipeline.schedule.cron} {command}", end]
    return "\n".join(lines) + "\n"


def merge_crontab(current: str, name: str, entry: str) -> str:
    """``current`` with this pipeline's block replaced by ``entry`` (or appended); other lines untouched."""
    begin, end = block_markers(name)
    kept: list[str] = []
    inside = False
    for line in current.splitlines():
        if line.strip() == begin:
            inside = True
            continue
        if line.strip() == end:
            inside = False
            continue
        if not inside:
            kept.append(line)
    text = "\n".join(kept).rstrip("\n")
    return (text + "\n" if text else "") + entry


def install_crontab(pipeline: PipelineSpec, entry: str) -> str:
    """Install the entry in the user's crontab with `crontab -`; return the new crontab."""
    exe = shutil.which("crontab")
    if exe is None:
        raise BatchlabelError("`crontab` is not installed on this machine: install cron, or copy the printed line.")
    listed = subprocess.run([exe, "-l"], capture_output=True, text=True)
    current = listed.stdout if listed.returncode == 0 else ""  # exit 1 = "no crontab for user"
    new = merge_crontab(current, pipeline.name, entry)
    done = subprocess.run([exe, "-"], input=new, capture_output=True, text=True)
    if done.returncode != 0:
        raise BatchlabelError(f"`crontab -` refused the entry: {done.stderr.strip()[:300]}")
    return new


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (a readable ConfigMap)."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def _k8s_name(name: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return f"batchlabel-{slug}"[:52].rstrip("-")


def raycronjob_manifest(pipeline: PipelineSpec, job_raw: dict[str, Any], service_account: str = "batchlabel") -> str:
    """A ConfigMap holding the resolved pipeline (job inlined) + a KubeRay RayCronJob (KubeRay >= 1.6, alpha).

    S3 access comes from the pods' service account (IRSA / EKS Pod Identity), never from the manifest.
    """
    name = _k8s_name(pipeline.name)
    resolved = pipeline.model_dump(mode="json", exclude_unset=True)
    resolved["job"] = job_raw
    pipeline_yaml = yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)
    image = pipeline.schedule.image
    volume = {"name": "pipeline", "configMap": {"name": name}}
    mount = {"name": "pipeline", "mountPath": PIPELINE_MOUNT, "readOnly": True}
    worker_limits: dict[str, Any] = {"cpu": "8", "memory": "48Gi"}
    if pipeline.schedule.gpus:
        worker_limits["nvidia.com/gpu"] = pipeline.schedule.gpus
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "batchlabel"}},
        "data": {"pipeline.yaml": pipeline_yaml},
    }
    spec: dict[str, Any] = {"schedule": pipeline.schedule.cron}
    if pipeline.schedule.timezone:
        spec["timeZone"] = pipeline.schedule.timezone
    spec["jobTemplate"] = {
        "entrypoint": f"batchlabel nightly {PIPELINE_MOUNT}/pipeline.yaml --quiet",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 3600,
        "backoffLimit": 2,  # a retried night is idempotent
        "rayClusterSpec": {
            "rayVersion": RAY_VERSION,
            "headGroupSpec": {
                "rayStartParams": {"num-gpus": "0"},
                "template": {
                    "spec": {
                        "serviceAccountName": service_account,
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": image,
                                "resources": {"limits": {"cpu": "4", "memory": "16Gi"}, "requests": {"cpu": "4", "memory": "16Gi"}},
                                "volumeMounts": [mount],
                            }
                        ],
                        "volumes": [volume],
                    }
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu" if pipeline.schedule.gpus else "cpu",
                    "replicas": 1,
                    "minReplicas": 0,
                    "maxReplicas": 4,
                    "rayStartParams": {},
                    "template": {
                        "spec": {
                            "serviceAccountName": service_account,
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": image,
                                    "resources": {"limits": worker_limits, "requests": {k: v for k, v in worker_limits.items()}},
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }
    cron_job = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCronJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "batchlabel"}},
        "spec": spec,
    }
    header = (
        f"# batchlabel nightly {pipeline.name}: KubeRay RayCronJob (KubeRay >= 1.6, alpha feature).\n"
        f"# The image must have batchlabel installed; S3 access via the {service_account!r} service account\n"
        "# (IRSA / EKS Pod Identity). Generated by `batchlabel schedule PIPELINE.yaml --rayjob`.\n"
    )
    return header + yaml.dump_all([config_map, cron_job], Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)
