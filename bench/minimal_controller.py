"""The smallest controller of ModelDeployments: one Job for each new one, nothing else.

Run: KUBECONFIG=... python bench/minimal_controller.py NAMESPACE
It lists the namespace's ModelDeployments, then watches them from that list's resourceVersion, and creates a
Job named after each deployment it has not seen (owned by it, as the operator's are), from a pool of workers so a
slow create does not hold up the next; a Job that already exists is left alone. operator_scale.py runs it beside
the operator, with the same client library, to tell the operator's own overhead from the API server's.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import urllib3

GROUP, VERSION, PLURAL, KIND = "modeldeploy.io", "v1alpha1", "modeldeployments", "ModelDeployment"


def job(deployment: dict[str, Any]) -> dict[str, Any]:
    meta = deployment["metadata"]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{meta['name']}-first", "ownerReferences": [{
            "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "stage", "image": "modeldeploy-jobs", "command": ["true"]}]}}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("namespace")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    namespace = args.namespace
    api = kubernetes.config.new_client_from_config()
    custom, batch = kubernetes.client.CustomObjectsApi(api), kubernetes.client.BatchV1Api(api)
    pool = ThreadPoolExecutor(max_workers=args.workers)
    seen: set[str] = set()

    def create(deployment: dict[str, Any]) -> None:
        try:
            batch.create_namespaced_job(namespace, job(deployment), _preload_content=False)
        except kubernetes.client.ApiException as error:
            if error.status != 409:
                print(f"creating the Job of {deployment['metadata']['name']}: {error}", file=sys.stderr, flush=True)

    def consider(deployment: dict[str, Any]) -> None:
        if deployment["metadata"]["uid"] not in seen:
            seen.add(deployment["metadata"]["uid"])
            pool.submit(create, deployment)

    since = None
    while True:
        if since is None:
            listing = json.loads(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                      _preload_content=False).data)
            for deployment in listing["items"]:
                consider(deployment)
            since = listing["metadata"]["resourceVersion"]
        try:
            for event in kubernetes.watch.Watch().stream(
                    custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, deserialize=False,
                    resource_version=since, allow_watch_bookmarks=True, timeout_seconds=300):
                since = event["object"]["metadata"]["resourceVersion"]
                if event["type"] == "ADDED":
                    consider(event["object"])
        except kubernetes.client.ApiException as error:
            if error.status == 410:
                since = None  # expired: list again
        except urllib3.exceptions.HTTPError:
            continue


if __name__ == "__main__":
    main()
