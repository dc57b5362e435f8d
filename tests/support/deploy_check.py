"""Parse and schema-check the deployment files; prints one JSON object (run by
tests/triton/test_triton_deploy.py with the checking packages first on PYTHONPATH).

    python deploy_check.py COMPOSE COMPOSE_SCHEMA K8S_FILE ADAPTER_FILE

- compose: validated with jsonschema against the Compose Specification's JSON schema;
- Kubernetes: every document deserialized into the official Python client's models
  (kubernetes.client, generated from the Kubernetes OpenAPI spec) and serialized back: a
  misspelt or misplaced field is dropped on the way and shows up as a difference; a missing
  required field raises.
"""

import json
import sys

import jsonschema
import yaml
from kubernetes.client import ApiClient

MODELS = {("apps/v1", "Deployment"): "V1Deployment", ("v1", "Service"): "V1Service",
          ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler"}


def diff(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{where}.{k}: not a field of the model (dropped)")
            elif k not in a:
                out.append(f"{where}.{k}: added by the model")
            else:
                out += diff(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} became {b!r}"]


def main(compose_path, schema_path, k8s_path, adapter_path):
    compose = yaml.safe_load(open(compose_path))
    schema = json.load(open(schema_path))
    validator = jsonschema.Draft201909Validator(schema)  # its $schema: draft 2019-09
    compose_errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    docs = list(yaml.safe_load_all(open(k8s_path)))
    api = ApiClient()
    roundtrip = []
    for doc in docs:
        model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
        if model is None:
            roundtrip.append(f"{doc.get('kind')}: no model for {doc.get('apiVersion')}")
            continue
        try:
            obj = api._ApiClient__deserialize(doc, model)
        except (ValueError, TypeError) as e:
            roundtrip.append(f"{doc['kind']}: {e}")
            continue
        roundtrip += [f"{doc['kind']}{d}" for d in diff(doc, api.sanitize_for_serialization(obj))]
    print(json.dumps({"compose": compose, "compose_errors": compose_errors, "k8s": docs, "k8s_errors": roundtrip,
                      "adapter": yaml.safe_load(open(adapter_path))}))


if __name__ == "__main__":
    main(*sys.argv[1:])
