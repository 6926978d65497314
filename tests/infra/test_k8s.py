"""infra/k8s: the Prefect work-pool template and the plain manifests, against Kubernetes' schemas.

The manifests are checked with `kubernetes-validate` (strict: unknown fields are errors) against
the OpenAPI schemas of Kubernetes `K8S_VERSION` that the package ships. The Prefect template is
checked with Prefect's own server-side validation, rendered with Prefect's own templating, and the
Job it renders is checked like the manifests.
"""

from __future__ import annotations

import copy
import json
import shlex

import jsonschema
import pytest
import yaml

from tests.infra.tools import (
    INFRA,
    K8S_VERSION,
    REPO,
    dockerfile_instructions,
    stages,
    torchrun_flags,
)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="PyPI 'kubernetes-validate' (dev extra) checks the manifests"
)

K8S = INFRA / "k8s"
POOL = K8S / "gpu-work-pool.json"
MULTINODE = K8S / "train-multinode.yaml"


def _validate(resource: dict) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def _image_uid() -> int:
    final = stages(dockerfile_instructions(REPO / "Dockerfile"))[-1]
    return int([rest for keyword, rest in final if keyword == "USER"][-1].split(":")[0])


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads(POOL.read_text())


def _defaults(template: dict) -> dict:
    return {
        name: spec["default"]
        for name, spec in template["variables"]["properties"].items()
        if "default" in spec
    }


def _render(template: dict, **values) -> dict:
    """The job configuration as a Kubernetes worker prepares it for a flow run.

    Prefect's templating fills the placeholders; then, as the worker does, a missing container
    `args` becomes Prefect's flow-run command and the flow run's environment is prepended.
    """
    from prefect.utilities.templating import apply_values

    config = apply_values(
        copy.deepcopy(template["job_configuration"]), _defaults(template) | values
    )
    container = config["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    args = container.get("args") or "prefect flow-run execute"
    if isinstance(args, str):
        container["args"] = shlex.split(args)
    run_env = [{"name": "PREFECT__FLOW_RUN_ID", "value": "0b1e7c3a-0000-4000-8000-000000000000"}]
    container["env"] = run_env + container.get("env", [])
    return config


def test_prefect_accepts_the_base_job_template(template):
    from prefect.server.schemas.actions import WorkPoolCreate

    pool = WorkPoolCreate(name="phenexplain-gpu", type="kubernetes", base_job_template=template)
    assert pool.base_job_template == template
    broken = copy.deepcopy(template)
    del broken["variables"]["properties"]["gpus"]
    with pytest.raises(ValueError, match="gpus"):
        WorkPoolCreate(name="phenexplain-gpu", type="kubernetes", base_job_template=broken)


def test_variables_are_a_json_schema_whose_defaults_it_accepts(template):
    from prefect.utilities.templating import find_placeholders

    schema = template["variables"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_defaults(template), schema)
    used = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    declared = set(schema["properties"])
    assert used == declared, f"unused: {declared - used}, undeclared: {used - declared}"
    for bad in ("0", "-1", "two", 2):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"gpus": bad}, schema)


@pytest.mark.parametrize("gpus", ["1", "4", "8"])
def test_rendered_job_is_a_valid_kubernetes_job_requesting_the_gpus(template, gpus):
    config = _render(template, name="phenexplain-train-brave-otter", gpus=gpus)
    job = config["job_manifest"]
    _validate(job)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["nvidia.com/gpu"] == gpus
    assert job["metadata"]["namespace"] == config["namespace"] == "phenexplain"
    # the image's ENTRYPOINT is the phenexplain CLI: the job must replace it to run Prefect
    assert container["command"] == ["/usr/bin/env"]
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _image_uid()
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "persistentVolumeClaim" in volumes[mounts["/work"]]


def test_a_deployment_can_run_torchrun_directly(template):
    """`command` (a job variable) replaces Prefect's command, e.g. with a torchrun launch."""
    line = (
        "torchrun --standalone --nproc_per_node=4 -m phenexplain.cli train /work/cropsets/x "
        "--run-dir /work/runs/x --profile auto --device cuda"
    )
    config = _render(template, name="x", gpus="4", command=line)
    job = config["job_manifest"]
    _validate(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["torchrun"]
    assert (
        torchrun_flags(container["args"])["nproc_per_node"]
        == container["resources"]["limits"]["nvidia.com/gpu"]
    )


def test_the_validator_rejects_what_kubernetes_would(template):
    """The schema check is live: fields in the wrong place and wrong types are refused."""
    job = _render(template, name="x")["job_manifest"]
    misplaced = copy.deepcopy(job)
    misplaced["spec"]["template"]["spec"]["parallelism"] = 1  # a Job field, not a pod field
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(misplaced)
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong_type)


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        _validate(document)


def test_multinode_job_is_consistent():
    """Nodes, GPUs and the rendezvous address agree between the Job, torchrun and the Service."""
    documents = {d["kind"]: d for d in yaml.safe_load_all(MULTINODE.read_text())}
    job, service = documents["Job"], documents["Service"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    flags = torchrun_flags(container["args"])
    assert container["command"] == ["torchrun"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert int(flags["nnodes"]) == job["spec"]["completions"] == job["spec"]["parallelism"]
    assert int(flags["nproc_per_node"]) == int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert flags["rdzv_backend"] == "c10d"
    host, port = flags["rdzv_endpoint"].rsplit(":", 1)
    job_name, service_name = job["metadata"]["name"], service["metadata"]["name"]
    assert pod["subdomain"] == service_name and service["spec"]["clusterIP"] == "None"
    assert host == f"{job_name}-0.{service_name}", "rank 0 must host the c10d store"
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    module = container["args"][container["args"].index("-m") + 1 :]
    assert module[:2] == ["phenexplain.cli", "train"]
    assert pod["securityContext"]["runAsUser"] == _image_uid()
