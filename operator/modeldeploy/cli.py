"""The `modeldeploy` command line."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from modeldeploy import __version__
from modeldeploy.crd import crd_yaml
from modeldeploy.parsers import PARSERS
from modeldeploy.planner import STAGES, Plan, Task, plan
from modeldeploy.spec import ModelDeployment
from modeldeploy.validation import SpecError, load_documents, load_resource

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130
DEFAULT_STORE = ".modeldeploy/store"
LEASE_NAME = "modeldeploy-operator"  # --leader-election-id, the Lease examples/cluster/rbac*.yaml grant
# Loggers that write HTTP traffic at DEBUG: the bodies of answers (kubernetes.client.rest, a Secret's values
# among them) and signed requests (botocore: the access key id, the session token). Whatever the operator's
# level, they stay at INFO.
WIRE_LOGGERS = ("kubernetes", "urllib3", "botocore", "boto3", "s3transfer")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except SpecError as error:
        _print_errors(error)
        return EXIT_INVALID
    except BrokenPipeError:  # output piped into head, less, ...
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeploy",
        description="Convert, calibrate, compile and measure models for Ascend, Cambricon MLU and CPU targets.",
    )
    parser.add_argument("--version", action="version", version=f"modeldeploy {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check ModelDeployment files and report every error",
        description="Check ModelDeployment files: the same schema and CEL rules the API server applies, plus the "
        "backends' own checks. Every error is printed as 'FILE: field.path: message'; exit status 2 if any.",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML file(s), one or more documents")
    validate.set_defaults(command=_validate)

    plan_command = commands.add_parser(
        "plan",
        help="show the stage tasks a ModelDeployment runs, with their keys",
        description="Show the DAG of stage tasks (convert, prepare, calibrate, compile, evaluate, report) with their "
        "content-addressed keys. Tasks shared by several cells appear once.",
    )
    plan_command.add_argument("file", type=Path, metavar="FILE", help="a ModelDeployment YAML file")
    plan_command.add_argument(
        "--output", "-o", choices=("table", "json"), default="table", help="table (default) or json"
    )
    plan_command.set_defaults(command=_plan)

    run = commands.add_parser(
        "run",
        help="run the whole pipeline locally, without a cluster",
        description="Run every stage of a ModelDeployment on this machine: each task is a subprocess of the same "
        "stage entrypoint a Kubernetes Job runs. Finished tasks are found in the store and skipped, so a re-run "
        "resumes; Ctrl-C stops cleanly. Speed measurements run alone, the other stages N at a time.",
    )
    run.add_argument("file", type=Path, metavar="FILE", help="a ModelDeployment YAML file")
    run.add_argument(
        "--store",
        metavar="URI",
        help="artifact store: file:///path, s3://bucket/prefix or a directory "
        f"(default: the spec's artifacts.uri, else {DEFAULT_STORE})",
    )
    run.add_argument("--jobs", "-j", type=_positive, default=2, metavar="N", help="stages in parallel (default 2)")
    run.set_defaults(command=_run)

    operator = commands.add_parser(
        "operator",
        help="run the Kubernetes operator",
        description="Run the ModelDeployment operator (kopf) against the current kubeconfig or the in-cluster "
        "service account. Configuration: MODELDEPLOY_CONFIG (a YAML file) and MODELDEPLOY_* variables; see the README.",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    operator.add_argument("--liveness", metavar="URL", default="http://0.0.0.0:8080/healthz",
                          help="liveness endpoint (default %(default)s)")
    operator.add_argument("--verbose", action="store_true", help="debug logging")
    election = operator.add_argument_group(
        "leader election",
        "Several replicas, one reconciling: the one holding a coordination.k8s.io Lease (docs/leader-election.md).")
    election.add_argument("--leader-elect", action="store_true",
                          help="reconcile only while holding the Lease; exit at once when it is lost")
    election.add_argument("--leader-election-namespace", metavar="NAMESPACE",
                          help="the Lease's namespace (default: POD_NAMESPACE, else the in-cluster ServiceAccount's)")
    election.add_argument("--leader-election-id", metavar="NAME", default=LEASE_NAME,
                          help="the Lease's name (default %(default)s)")
    election.add_argument("--leader-election-lease-duration", metavar="SECONDS", type=_seconds, default=15.0,
                          help="how long a Lease nobody renews blocks the others (default %(default)s)")
    election.add_argument("--leader-election-renew-deadline", metavar="SECONDS", type=_seconds, default=10.0,
                          help="the leader exits when it could not renew for this long (default %(default)s)")
    election.add_argument("--leader-election-retry-period", metavar="SECONDS", type=_seconds, default=2.0,
                          help="between tries to acquire or renew (default %(default)s)")
    operator.set_defaults(command=_operator)

    crd = commands.add_parser(
        "crd",
        help="print the CustomResourceDefinition",
        description="Print the ModelDeployment CustomResourceDefinition generated from the typed spec and the "
        "installed backends; apply it with: modeldeploy crd | kubectl apply -f -",
    )
    crd.set_defaults(command=_crd)

    tools = commands.add_parser("tools", help="helpers for people who run the vendor tools by hand")
    tool_commands = tools.add_subparsers(title="tools", metavar="TOOL", required=True)
    parse = tool_commands.add_parser(
        "parse",
        help="read a vendor tool's console output and print what it says as JSON",
        description="Read the console output of a vendor tool (saved with e.g. 'atc ... 2>&1 | tee atc.log') and "
        "print it as JSON: throughput and compute-time statistics (ais_bench, mm_run), success or error codes with "
        "their messages (atc), the chips or cards of a machine (npu-smi, cnmon). The pipeline's stages read their "
        "logs the same way. "
        "Exit status 1 when the log reports a failure.",
    )
    parse.add_argument("tool", choices=sorted(PARSERS), help="the tool that printed the log")
    parse.add_argument("log", metavar="LOG", help="the saved console output, or - for standard input")
    parse.set_defaults(command=_parse_log)
    return parser


def _print_errors(error: SpecError) -> None:
    for item in error.errors:
        print(f"{error.source}: {item}" if error.source else str(item), file=sys.stderr)


def _resources(path: Path) -> list[ModelDeployment]:
    """Every document of a file as a typed resource; errors of all documents are reported together."""
    resources, errors = [], []
    documents = load_documents(path)
    for index, document in enumerate(documents):
        try:
            resources.append(load_resource(document))
        except SpecError as error:
            prefix = f"document {index + 1}: " if len(documents) > 1 else ""
            errors.extend(type(item)(f"{prefix}{item.path}", item.message) for item in error.errors)
    if errors:
        raise SpecError(errors, source=str(path))
    return resources


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            resources = _resources(path)
        except SpecError as error:
            failed = True
            _print_errors(error)
            continue
        for resource in resources:
            result = plan(resource.spec)
            print(f"{path}: ModelDeployment {resource.metadata.name} is valid "
                  f"({len(resource.spec.targets)} target(s), {len(result.cells)} cell(s), {len(result.tasks)} task(s))")
    return EXIT_INVALID if failed else 0


def _plan(args: argparse.Namespace) -> int:
    resources = _resources(args.file)
    plans = [(resource, plan(resource.spec)) for resource in resources]
    if args.output == "json":
        documents = [{"name": resource.metadata.name, **result.to_json()} for resource, result in plans]
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
        return 0
    for number, (resource, result) in enumerate(plans):
        if number:
            print()
        print(render_plan(resource, result))
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from modeldeploy.runner import localize

    status = 0
    for resource in _resources(args.file):
        try:
            status = max(status, _run_one(localize(resource, args.file.resolve().parent), args))
        except ValueError as error:
            print(f"--store: {error}", file=sys.stderr)
            return EXIT_INVALID
        except (BotoCoreError, ClientError) as error:
            print(f"the artifact store is not usable: {error}", file=sys.stderr)
            return EXIT_FAILED
        if status == EXIT_INTERRUPTED:
            break
    return status


def _run_one(resource: ModelDeployment, args: argparse.Namespace) -> int:
    from modeldeploy.runner import Runner, render_results, report_uri, results
    from modeldeploy.store import open_store

    artifacts = resource.spec.artifacts
    endpoint, region = (artifacts.endpoint, artifacts.region) if artifacts else (None, None)
    store = open_store(
        args.store or (artifacts.uri if artifacts else Path(DEFAULT_STORE).resolve().as_uri()),
        endpoint=endpoint,
        region=region,
    )
    environment = dict(os.environ)
    if endpoint:
        environment["AWS_ENDPOINT_URL_S3"] = endpoint
    if region:
        environment["AWS_REGION"] = region
    result = plan(resource.spec)
    name = resource.metadata.name
    print(f"modeldeploy run: {name}")
    logs = Path(DEFAULT_STORE).resolve().parent / "logs" / name
    outcome = Runner(result, store, args.jobs, logs, sys.stdout, environment).run()
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    summary = results(store, result, logs)
    if summary is not None:
        print()
        print(render_results(summary))
        print(f"report: {report_uri(store, result)}")
    if not outcome.succeeded:
        print(f"{len(outcome.failed)} task(s) failed, {len(outcome.blocked)} not run because of them", file=sys.stderr)
        return EXIT_FAILED
    return 0


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def _limit_malloc_arenas() -> None:
    """As MALLOC_ARENA_MAX=2 would, unless the environment sets it: glibc's malloc gives threads that allocate at
    the same time arenas of their own, up to 8 per core, each keeping what is freed in it, and the operator's
    informer, store and API threads all decode answers at once. It only limits arenas not made yet: before any
    thread starts."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def _operator(args: argparse.Namespace) -> int:
    _limit_malloc_arenas()
    import kopf

    from modeldeploy.controller import config, handlers  # noqa: F401 - importing registers the handlers

    namespaces = args.namespace or ([] if args.all_namespaces else config.load().namespaces)
    kopf.configure(verbose=args.verbose)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)

    def run() -> None:
        kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
                 liveness_endpoint=args.liveness, memo=kopf.Memo(namespaces=namespaces))

    if not args.leader_elect:
        run()
        return 0
    return _lead(args, run)


def _lead(args: argparse.Namespace, run: Callable[[], None]) -> int:
    """`run` (kopf) only while this replica holds the Lease: wait for it serving the liveness endpoint, renew it
    on a thread while kopf runs, exit at once when it is lost, release it when kopf stops."""
    import kopf

    from modeldeploy.controller import leader
    from modeldeploy.controller.kube import connect

    namespace = args.leader_election_namespace or leader.default_namespace()
    if not namespace:
        print("--leader-election-namespace: not given, POD_NAMESPACE is not set and there is no in-cluster "
              f"ServiceAccount namespace ({leader.SERVICE_ACCOUNT_NAMESPACE}); name the namespace of the Lease",
              file=sys.stderr)
        return EXIT_INVALID
    if not (args.leader_election_retry_period < args.leader_election_renew_deadline
            < args.leader_election_lease_duration):
        print("--leader-election-retry-period must be shorter than --leader-election-renew-deadline, and that "
              "shorter than --leader-election-lease-duration", file=sys.stderr)
        return EXIT_INVALID
    try:
        settings = leader.Settings(namespace, args.leader_election_id, leader.identity(),
                                   args.leader_election_lease_duration, args.leader_election_renew_deadline,
                                   args.leader_election_retry_period)
        elector = leader.Elector(settings, leader.Leases(connect()))
        health = leader.FollowerHealth(args.liveness, elector)
    except ValueError as error:
        print(f"leader election: {error}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as error:
        print(f"--liveness: cannot listen on {args.liveness}: {error.strerror}", file=sys.stderr)
        return EXIT_FAILED
    logging.getLogger(leader.__name__).info("Leader election: %s campaigns for the Lease %s", settings.identity,
                                            elector.lease)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with health:
            acquired = elector.acquire(stop)
    except KeyboardInterrupt:
        acquired = False
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not acquired:
        return 0

    @kopf.on.probe(id="leaderElection")
    def _leading(**_: object) -> dict[str, object]:
        return {"leader": True, "lease": elector.lease, "holder": settings.identity}

    renewal = leader.Renewal(elector, _lost)
    renewal.start()
    try:
        run()
    finally:
        renewal.stop()
        try:
            elector.release()
        except leader.API_ERRORS as error:  # the Lease then expires on its own
            logging.getLogger(leader.__name__).warning("Leader election: could not release the Lease %s: %s",
                                                       elector.lease, error)
    return 0


def _lost() -> None:
    """Leadership lost: stop now, from the renewal thread. Nothing of kopf's shutdown runs (it could still write
    as a non-leader); the process's manager starts a new replica, which campaigns again."""
    logging.getLogger("modeldeploy.controller.leader").critical("Leader election: leadership lost; exiting")
    logging.shutdown()
    os._exit(EXIT_FAILED)


def _crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def _parse_log(args: argparse.Namespace) -> int:
    if args.log == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.log).read_text(errors="replace")
        except OSError as error:
            print(f"{args.log}: {error.strerror}", file=sys.stderr)
            return EXIT_INVALID
    parsed = PARSERS[args.tool](text)
    print(json.dumps(parsed, indent=2))
    return EXIT_FAILED if parsed.get("ok") is False else 0


def render_plan(resource: ModelDeployment, result: Plan) -> str:
    spec = resource.spec
    devices = {target.name: target.device for target in spec.targets}
    lines = [
        (
            f"ModelDeployment {resource.metadata.name}: {len(spec.targets)} target(s), "
            f"{len(result.cells)} cell(s), {len(result.tasks)} task(s)"
        ),
        "",
    ]
    order = {kind: index for index, kind in enumerate(STAGES)}
    tasks = sorted(result.tasks, key=lambda task: order[task.kind])
    rows = [("STAGE", "TASK", "KEY", "DEVICE", "INPUTS")]
    for task in tasks:
        device = (devices.get(task.target or "") or "-") if task.needs_device else "-"
        rows.append((task.kind, task.name, task.short_key, device, _describe_inputs(task, result)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [value.ljust(width) for value, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    for task in tasks:
        if task.commands or task.files:
            lines += ["", f"{task.kind} {task.name.removeprefix(task.kind + ' ')} ({task.short_key}):"]
            lines += [f"  $ {shlex.join(command)}" for command in task.commands]
            for name, content in task.files.items():
                lines.append(f"  {name}:")
                lines += [f"    {line}" for line in content.splitlines()]
    return "\n".join(lines)


def _describe_inputs(task: Task, result: Plan) -> str:
    if not task.inputs:
        return "-"
    cells = [role for role in task.inputs if role.startswith("cell:")]
    named = [f"{role}={result.task(key).name}" for role, key in task.inputs.items() if not role.startswith("cell:")]
    if cells:
        named.insert(0, f"{len(cells)} cell evaluation(s)")
    return ", ".join(named)


if __name__ == "__main__":
    sys.exit(main())
