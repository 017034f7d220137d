"""deploy/kubernetes/: every manifest validates, and the manifests agree with each other and the repository.

No cluster, Docker or network: `kubernetes-validate` (pinned in the `test` extra) ships the
Kubernetes JSON schemas, checked strictly (an unknown field fails, as `kubectl apply`'s strict
field validation refuses it). It has no schema for the Locust operator's LocustTest, which is
checked against the operator's own CRD schema instead (vendored in deploy/kubernetes/operator/crd/),
made strict the same way. The rest is plain Python over the parsed manifests: one image, the
master's and the workers' commands, ports, no literal password, every referenced file exists.
"""
from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
CRD_FILE = DEPLOY / "operator" / "crd" / "locust.io_locusttests.yaml"
CONFIGMAPS_SCRIPT = DEPLOY / "configmaps.sh"
KUBERNETES_VERSION = "1.31"  # the schemas checked against; the operator 2.3.0 needs >= 1.29

# what the operator appends to the command seeds (internal/resources/command.go, constants.go at 2.3.0)
OPERATOR_MASTER_PORT = 5557
OPERATOR_MANAGED_FLAGS = ("--master", "--worker", "--master-port", "--master-host", "--expect-workers",
                          "--autostart", "--autoquit", "--otel", "--enable-rebalancing", "--only-summary")
# the ConfigMaps of locustfiles and scenario confs (made by configmaps.sh), by the repository folder they hold
FILE_CONFIGMAPS = {"bridgestorm-locustfiles", "bridgestorm-scenarios"}
CREDENTIALS_IN_URL = re.compile(r"\w+://[^\s/:@\"']+:[^\s/@\"']+@")


# ------------------------------------------------------------------ loading and validating


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def all_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in manifest_files() for doc in load_documents(path)]


def _strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which an object with `properties` allows no other field
    (the API server prunes or, with strict field validation, refuses them), unless it says otherwise."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_strict(v) if k in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not") else v)
           for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: _strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@functools.cache
def _crd() -> dict[str, Any]:
    (crd,) = load_documents(CRD_FILE)
    return crd


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of a served version of the vendored CRD."""
    crd = _crd()
    group, _, version = api_version.partition("/")
    assert (group, kind) == (crd["spec"]["group"], crd["spec"]["names"]["kind"]), \
        f"{api_version} {kind}: not the vendored CRD's resource"
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], f"{api_version}: not served by the vendored CRD"
    return _strict(entry["schema"]["openAPIV3Schema"])


def validate(doc: dict[str, Any]) -> str:
    """Raises jsonschema.ValidationError when the document does not validate; returns what it was checked
    against. An unknown kind raises too (SchemaNotFoundError): nothing goes unchecked."""
    if doc.get("apiVersion", "").startswith(_crd()["spec"]["group"] + "/"):
        jsonschema.Draft7Validator(crd_schema(doc["apiVersion"], doc["kind"])).validate(doc)
        return f"CRD {CRD_FILE.name}"
    return kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# ------------------------------------------------------------------ walking the manifests


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in all_documents() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    return doc


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every Pod, Deployment and Job."""
    for _, doc in all_documents():
        if doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]
        elif doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def locust_test() -> dict[str, Any]:
    (lt,) = by_kind("LocustTest")
    return lt


def master_workloads() -> list[dict[str, Any]]:
    """The plain masters: the web UI's Deployment and the headless Job (one of them runs)."""
    return [d for d in by_kind("Deployment") + by_kind("Job") if d["metadata"]["name"] == "bridgestorm-master"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def flag(argv: list[str], name: str) -> str:
    """The value after `name`, or of `name=value`."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing in {argv}")


def operator_argv(lt: dict[str, Any], mode: str) -> list[str]:
    """The container args the operator builds (BuildMasterCommand / BuildWorkerCommand at 2.3.0)."""
    spec = lt["spec"]
    if mode == "master":
        m = spec["master"]
        argv = m["command"].split() + ["--master", f"--master-port={OPERATOR_MASTER_PORT}",
                                       f"--expect-workers={spec['worker']['replicas']}"]
        if m.get("autostart", True):
            argv.append("--autostart")
        autoquit = m.get("autoquit", {"enabled": True, "timeout": 60})
        if autoquit.get("enabled", True):
            argv += ["--autoquit", str(autoquit.get("timeout", 60))]
        return argv + ["--enable-rebalancing", "--only-summary", *m.get("extraArgs", [])]
    w = spec["worker"]
    return w["command"].split() + ["--worker", f"--master-port={OPERATOR_MASTER_PORT}",
                                   f"--master-host={operator_master_service(lt)}", *w.get("extraArgs", [])]


def operator_master_service(lt: dict[str, Any]) -> str:
    return f"{lt['metadata']['name']}-master".replace(".", "-")  # api/v2/naming.go GeneratedNodeName


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


# ------------------------------------------------------------------ the tests


def test_the_manifests_are_there():
    names = {p.relative_to(DEPLOY).as_posix() for p in manifest_files()}
    expected = {"base/stack-env.yaml", "base/reports-pvc.yaml", "collect/reports-reader.yaml",
                "operator/locusttest.yaml", "operator/crd/locust.io_locusttests.yaml",
                "plain/master-service.yaml", "plain/worker-deployment.yaml",
                "plain/web-ui/master-deployment.yaml", "plain/headless/master-job.yaml"}
    assert expected <= names
    for path in manifest_files():
        assert load_documents(path), f"{path}: no YAML document"


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_manifest_validates(path: Path):
    for doc in load_documents(path):
        checked = validate(doc)
        assert checked in (KUBERNETES_VERSION, f"CRD {CRD_FILE.name}"), checked


def _broken_deployment(docs: list[dict[str, Any]]) -> None:
    (d,) = [d for d in docs if d["kind"] == "Deployment"]
    d["spec"]["template"]["spec"]["containers"][0]["comand"] = ["locust"]  # a typo: an unknown field


def _broken_service(docs: list[dict[str, Any]]) -> None:
    docs[0]["spec"]["ports"][0]["port"] = "fifty-five-fifty-seven"  # a wrong type


def _broken_locusttest_field(docs: list[dict[str, Any]]) -> None:
    docs[0]["spec"]["master"]["replicas"] = 2  # not a field of the master


def _broken_locusttest_required(docs: list[dict[str, Any]]) -> None:
    del docs[0]["spec"]["worker"]["replicas"]  # required


@pytest.mark.parametrize("source, breaks, message", [
    ("plain/worker-deployment.yaml", _broken_deployment, "'comand' was unexpected"),
    ("plain/master-service.yaml", _broken_service, "is not of type 'integer'"),
    ("operator/locusttest.yaml", _broken_locusttest_field, "'replicas' was unexpected"),
    ("operator/locusttest.yaml", _broken_locusttest_required, "'replicas' is a required property"),
], ids=["deployment-unknown-field", "service-wrong-type", "locusttest-unknown-field", "locusttest-missing-field"])
def test_a_broken_manifest_is_refused(tmp_path: Path, source: str, breaks, message: str):
    docs = copy.deepcopy(load_documents(DEPLOY / source))
    for doc in docs:
        validate(doc)  # the original passes: the refusal below is the breakage's
    breaks(docs)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(jsonschema.ValidationError) as refused:
        for doc in load_documents(broken):
            validate(doc)
    assert message in refused.value.message


def test_one_image_everywhere():
    images = {c["image"] for _, spec in pod_specs() for c in spec.get("initContainers", []) + spec["containers"]}
    images.add(locust_test()["spec"]["image"])
    assert len(images) == 1, images
    (image,) = images
    repository, _, tag = image.rpartition(":")
    assert repository.rsplit("/", 1)[-1] == "bridgestorm" and tag, image


def test_the_master_runs_the_locustfile_as_master_on_an_external_stack():
    # the image has no ENTRYPOINT, so a container's command (or, from the operator, its args) starts with `locust`
    assert not re.search(r"^\s*ENTRYPOINT\b", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    masters = {w["kind"]: container(w)["command"] for w in master_workloads()}
    assert set(masters) == {"Deployment", "Job"}
    masters["LocustTest"] = operator_argv(locust_test(), "master")
    for kind, argv in masters.items():
        assert argv[:2] == ["locust", "-f"], (kind, argv)
        assert "--master" in argv and "--worker" not in argv, (kind, argv)
        assert flag(argv, "-f").startswith("/lotest/src/"), (kind, argv)
        assert flag(argv, "--stack") == "external", (kind, argv)
    assert "--headless" in masters["Job"] and "--headless" not in masters["Deployment"]
    workers = one("Deployment", "bridgestorm-worker")
    assert int(flag(masters["Job"], "--expect-workers")) == workers["spec"]["replicas"]


def test_the_workers_connect_to_the_masters_service():
    service = one("Service", "bridgestorm-master")
    worker_argv = container(one("Deployment", "bridgestorm-worker"))["command"]
    assert worker_argv[:4] == ["locust", "-f", worker_argv[2], "--worker"], worker_argv
    assert flag(worker_argv, "--master-host") == service["metadata"]["name"]
    assert "--master" not in worker_argv and "--headless" not in worker_argv
    for master in master_workloads():  # the same locustfile on both sides
        assert flag(container(master)["command"], "-f") == flag(worker_argv, "-f")

    lt = locust_test()
    op_worker = operator_argv(lt, "worker")
    assert op_worker[:2] == ["locust", "-f"] and "--worker" in op_worker
    assert flag(op_worker, "-f") == flag(operator_argv(lt, "master"), "-f")
    assert flag(op_worker, "--master-host") == operator_master_service(lt)
    for seed in (lt["spec"]["master"]["command"], lt["spec"]["worker"]["command"]):
        managed = [a for a in seed.split() if a.split("=")[0] in OPERATOR_MANAGED_FLAGS]
        assert not managed, f"the operator sets {managed} itself"


def test_the_worker_port_matches_between_service_master_and_workers():
    service = one("Service", "bridgestorm-master")
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert {5557, 5558, 8089} <= set(ports)
    assert ports[5557] == 5557
    worker_port = int(flag(container(one("Deployment", "bridgestorm-worker"))["command"], "--master-port"))
    assert worker_port == 5557 == OPERATOR_MASTER_PORT
    for master in master_workloads():
        c = container(master)
        assert int(flag(c["command"], "--master-bind-port")) == worker_port
        assert worker_port in {p["containerPort"] for p in c["ports"]}
        labels = master["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), master["kind"]
    assert 8089 in {p["containerPort"] for p in container(one("Deployment", "bridgestorm-master"))["ports"]}
    worker_labels = one("Deployment", "bridgestorm-worker")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items()


def _env_entries() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs():
        for c in spec["containers"]:
            for e in c.get("env", []):
                yield name, e
    for e in locust_test()["spec"]["env"].get("variables", []):
        yield "LocustTest", e


def test_no_literal_password():
    for path in manifest_files():
        assert not CREDENTIALS_IN_URL.search(path.read_text()), f"{path}: credentials in a URL"
    assert not by_kind("Secret"), "a Secret in the repository: create it in the cluster instead"
    for cm in by_kind("ConfigMap"):
        for key in cm.get("data", {}):
            assert "PASSWORD" not in key.upper() and key != "DATABASE_URL", f"{cm['metadata']['name']}: {key}"
    database_urls = [(where, e) for where, e in _env_entries() if e["name"] == "DATABASE_URL"]
    for where, e in _env_entries():
        if e["name"] == "DATABASE_URL" or "PASSWORD" in e["name"].upper():
            assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), (where, e)
    # every Locust container (and the operator's) gets it: the master reads the truth through it
    assert {where for where, _ in database_urls} == {"Deployment/bridgestorm-master", "Job/bridgestorm-master",
                                                     "Deployment/bridgestorm-worker", "LocustTest"}


def test_the_stack_configmap_names_every_address_the_run_reads():
    from adapters.bridge.adapter import BridgeAdapter
    from harness.stackenv import KEYS

    data = one("ConfigMap", "bridgestorm-stack")["data"]
    wanted = {k for k in (*KEYS, *BridgeAdapter.env_keys) if k not in ("DATABASE_URL", "TOXIPROXY_URL")}
    assert wanted <= set(data), wanted - set(data)
    for _, spec in pod_specs():
        for c in spec["containers"]:
            if c["command"][0] == "locust":
                assert {"configMapRef": {"name": "bridgestorm-stack"}} in c["envFrom"]
    env = locust_test()["spec"]["env"]
    assert {"name": "bridgestorm-stack"} in env["configMapRefs"]
    # the operator puts its own KAFKA_BOOTSTRAP_SERVERS into env, which beats envFrom: it must be set again
    kafka = [v for v in env["variables"] if v["name"] == "KAFKA_BOOTSTRAP_SERVERS"]
    assert len(kafka) == 1, "the LocustTest must set KAFKA_BOOTSTRAP_SERVERS in env.variables"
    assert kafka[0]["valueFrom"]["configMapKeyRef"] == {"name": "bridgestorm-stack", "key": "KAFKA_BOOTSTRAP_SERVERS"}


def _configmap_sources() -> dict[str, list[Path]]:
    """ConfigMap name -> the repository folders configmaps.sh makes it from."""
    script = CONFIGMAPS_SCRIPT.read_text()
    sources = {}
    for block in script.split("kubectl create configmap ")[1:]:
        name = block.split()[0]
        sources[name] = [ROOT / d for d in re.findall(r"--from-file=(\S+)", block.split("| kubectl apply")[0])]
    return sources


def _configmap_keys(name: str) -> set[str]:
    keys: list[str] = []
    for folder in _configmap_sources()[name]:
        assert folder.is_dir(), folder
        keys += [p.name for p in folder.iterdir() if p.is_file()]
    assert len(keys) == len(set(keys)), f"{name}: two files of the same name (kubectl would refuse)"
    return set(keys)


def _mounts() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(where, mount path, volume name, volume) for every pod spec and the LocustTest."""
    for where, spec in pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                yield where, m["mountPath"], m["name"], volumes[m["name"]]
    spec = locust_test()["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in spec.get("volumeMounts", []):
        yield "LocustTest", m["mountPath"], m["name"], volumes[m["name"]]
    files = spec.get("testFiles", {})
    if files.get("configMapRef"):
        yield ("LocustTest", files.get("srcMountPath", "/lotest/src"), "testFiles",
               {"configMap": {"name": files["configMapRef"]}})


def test_every_referenced_locustfile_and_conf_exists():
    assert set(_configmap_sources()) == FILE_CONFIGMAPS
    mount_paths: dict[str, str] = {}  # mount path -> ConfigMap, the same in every manifest
    for where, path, _, volume in _mounts():
        name = volume.get("configMap", {}).get("name")
        if name in FILE_CONFIGMAPS:
            assert mount_paths.setdefault(path, name) == name, (where, path, name)
    assert set(mount_paths.values()) == FILE_CONFIGMAPS
    # every /lotest/... path anywhere in the manifests, comments included, and in the docs
    texts = [p.read_text() for p in manifest_files()] + [(ROOT / "docs" / "distributed.md").read_text()]
    pattern = re.compile("(" + "|".join(re.escape(p) for p in mount_paths) + r")/(\w[\w.-]*\.(?:py|conf))\b")
    found = {(m.group(1), m.group(2)) for text in texts for m in pattern.finditer(text)}
    assert len(found) >= 3, found
    for directory, file in found:
        assert file in _configmap_keys(mount_paths[directory]), f"{directory}/{file}: not in the repository"
    # other ConfigMaps and claims that pods mount are manifests here
    for where, path, _, volume in _mounts():
        if "configMap" in volume and volume["configMap"]["name"] not in FILE_CONFIGMAPS:
            one("ConfigMap", volume["configMap"]["name"])
        if "persistentVolumeClaim" in volume:
            one("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_master_and_workers_share_the_run_directory():
    (pvc,) = by_kind("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = pvc["metadata"]["name"]
    mounted = {where: path for where, path, _, v in _mounts()
               if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    assert {"Deployment/bridgestorm-master", "Job/bridgestorm-master", "Deployment/bridgestorm-worker",
            "LocustTest", "bridgestorm-reports-reader"} <= set(mounted)
    assert set(mounted.values()) == {"/app/reports"}  # the same path: workers write where the master says
    (reports,) = [m for m in locust_test()["spec"]["volumeMounts"] if m["name"] == "reports"]
    assert reports.get("target", "both") == "both"


def test_the_locusttest_passes_the_operators_webhook_rules():
    """What the operator's admission webhook checks beyond the schema (api/v2/locusttest_webhook.go at 2.3.0)."""
    lt = locust_test()
    name, spec = lt["metadata"]["name"], lt["spec"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) + len("-worker") <= 63
    reserved = [spec.get("testFiles", {}).get("srcMountPath", "/lotest/src")]
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for volume in volumes:
        assert not volume.startswith("secret-") and volume != "locust-lib"
        assert volume not in (operator_master_service(lt), f"{name}-worker".replace(".", "-"))
    for mount in spec.get("volumeMounts", []):
        assert mount["name"] in volumes
        for path in reserved:
            a, b = mount["mountPath"].rstrip("/"), path.rstrip("/")
            assert not (a == b or a.startswith(b + "/") or b.startswith(a + "/")), (mount, path)
