"""The security probes of issue 14, measured in one run.

Run: python bench/security.py [--quick] [--fuzz 300] [--concurrent 2] [--kills 7] [--seed N]
Starts moto's S3 server, then probes as an attacker and as bad luck would:
- hostile inputs, each through the code that handles it: the stages (in this process, or in a child process whose
  peak resident set is measured when the input is built to take memory), `fetch_tree` against the S3 server,
  `read_manifest`, and the default policy's `violations`;
- fuzzed specs (the strategies of tests/test_fuzz_spec.py) through `modeldeploy validate`, in this process and a
  sample in a process of its own, each within a time bound;
- two `modeldeploy run` of the reduced quickstart at once on one S3 store, K times;
- `modeldeploy run` killed with SIGKILL at a seeded random moment, N times, then run again to completion;
- the operator at every log level, with a Secret of known values, on the local Kubernetes control plane
  (tests/cluster/test_secret_logging.py's harness).
Goals: every hostile input refused, none writing outside its folder, none running code; 0 crashes and 0 hangs;
0 corrupted tasks after concurrent runs and after kills, and 0 stages left running by a killed runner; 0
occurrences of a Secret's values in the operator's output. Exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import yaml
from hypothesis import given, settings
from hypothesis import seed as hypothesis_seed

TESTS = Path(__file__).resolve().parent.parent / "tests"
CRD = TESTS.parent / "crds" / "modeldeploy.io_modeldeployments.yaml"
sys.path.insert(0, str(TESTS))
from cluster.control_plane import ControlPlane
from cluster.test_secret_logging import BUCKET, CREDENTIALS, LEVELS, forms, operator_output
from conftest import s3_server
from hostile import (
    ALLOCATING_PAYLOADS,
    MIB,
    REFUSAL_MEMORY,
    checkpoint_with_payload,
    cifar_pickle,
    code_zip,
    command_payload,
    external_data_model,
    forged_manifest,
    one_bit_png,
    open_payload,
    stage_in_child,
    zip_bomb_checkpoint,
)
from modeldeploy.manifest import DocumentInvalid, manifest_name, read_manifest
from modeldeploy.policy import Policy, violations
from modeldeploy.store import open_store
from modeldeploy.validation import load_resource
from modeldeploy_jobs.limits import IMAGE_PIXELS, MODEL_BYTES
from modeldeploy_jobs.sources import fetch_tree
from modeldeploy_jobs.stage import StageError, StageReason
from specs import Doc, base
from stages import run_stage
from test_convert import config as source_config
from test_fuzz_spec import ALIAS_BOMB, FUZZ, KNOWN_DOCUMENTS, SECONDS_PER_INPUT, Hang, validate_file, yaml_texts
from test_limits import onnx_source, prepare_config, pytorch_source
from test_pipeline import MODELDEPLOY, quickstart, run, stage_processes, started, unverifiable_tasks
from test_policy import REFUSED_BY_DEFAULT, with_weights

LEFT_OUT = "left out of the tree"
# A subprocess gets the in-process bound plus the time to start an interpreter and import the validation.
SUBPROCESS_SECONDS = SECONDS_PER_INPUT + 20
KILLED_STAGES_SECONDS = 5  # how long a killed runner's stages may take to die with it


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    probe: str
    tried: str
    failed: int
    failures: str  # what `failed` counts
    goal: str


# ---------------------------------------------------------------- hostile inputs


@dataclass(frozen=True)
class Sandbox:
    """A folder of a probe's own: its inputs, the folder the code under test may write to, and a marker file that
    exists only if the input's code ran."""

    root: Path

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def marker(self) -> Path:
        return self.root / "marker"


@dataclass(frozen=True)
class Attempt:
    """What became of one hostile input: the reason it was refused with, or what happened instead."""

    outcome: str
    folder: Path  # where the code under test may write
    targets: tuple[Path, ...] = ()  # where the input aims to write, inside that folder or not
    peak_bytes: int | None = None  # for inputs built to take memory: the child's peak resident set in the call
    grew_bytes: int | None = None  # and how far it rose over the resident set before the call


@dataclass(frozen=True)
class Hostile:
    """A hostile input: `attempt` builds it in a sandbox and hands it to the code that handles it."""

    label: str
    expected: str
    attempt: Callable[[Sandbox], Attempt]
    carries_code: bool = False  # whether the input holds code that would create the sandbox's marker
    handles_files: bool = True  # whether the code under test reads or writes files at all


def stage_outcome(kind: str, config: dict[str, object], sandbox: Sandbox) -> Attempt:
    try:
        run_stage(kind, config, sandbox.work)
    except StageError as error:
        return Attempt(error.reason.value, sandbox.work)
    except Exception as error:  # noqa: BLE001 - a crash is what the probe reports
        return Attempt(f"crashed ({type(error).__name__})", sandbox.work)
    return Attempt("accepted", sandbox.work)


def child_outcome(kind: str, config: dict[str, object], sandbox: Sandbox) -> Attempt:
    try:
        outcome = stage_in_child(kind, config, sandbox.work)
    except RuntimeError:
        return Attempt("crashed (its process failed)", sandbox.work)
    return Attempt(outcome["reason"] or "accepted", sandbox.work, peak_bytes=outcome["peakBytes"],
                   grew_bytes=outcome["grewBytes"])


def cifar_config(path: Path) -> dict[str, object]:
    return {"dataset": {"kind": "cifar100", "uri": str(path), "seed": 0, "labelOffset": 0}, "variant": "tensors",
            "inputs": [{"name": "x", "shape": [-1, 3, 32, 32]}]}


def code_config(code: str, architecture: str = "python:net:X") -> dict[str, object]:
    return source_config(format="pytorch", architecture=architecture, code=code, randomWeights=True,
                         inputs=[{"name": "x", "shape": [-1, 4]}])


def stage_inputs(bomb_bytes: int) -> list[Hostile]:
    def weights_payload(box: Sandbox) -> Attempt:
        weights = checkpoint_with_payload(box.inputs / "evil.pth", box.marker)
        return stage_outcome("convert", pytorch_source(weights=str(weights)), box)

    def cifar(data: Callable[[Sandbox], object], in_child: bool = False) -> Callable[[Sandbox], Attempt]:
        def attempt(box: Sandbox) -> Attempt:
            config = cifar_config(cifar_pickle(box.inputs / "test", data(box)))
            return child_outcome("prepare", config, box) if in_child else stage_outcome("prepare", config, box)
        return attempt

    def external_outside(box: Sandbox) -> Attempt:
        model = external_data_model(box.inputs / "model", 16, [4], location="../elsewhere.bin")
        return stage_outcome("convert", onnx_source(model, 4), box)

    def external_terabyte(box: Sandbox) -> Attempt:
        model = external_data_model(box.inputs / "model", declared_length=2**40, dims=[2**18, 2**20])
        return child_outcome("convert", onnx_source(model, 2**20), box)

    def external_overstated(box: Sandbox) -> Attempt:
        model = external_data_model(box.inputs / "model", declared_length=64 * MIB, dims=[16 * MIB])
        return child_outcome("convert", onnx_source(model, 16 * MIB), box)

    def external_malformed(box: Sandbox) -> Attempt:
        model = external_data_model(box.inputs / "model", 16, [4], offset="sixteen")
        return stage_outcome("convert", onnx_source(model, 4), box)

    def zip_bomb(box: Sandbox) -> Attempt:
        bomb = zip_bomb_checkpoint(box.inputs / "bomb.pth", bomb_bytes)
        return child_outcome("convert", pytorch_source(weights=str(bomb)), box)

    def huge_png(box: Sandbox) -> Attempt:
        one_bit_png(box.inputs / "huge.png", 12000, 12000)
        return child_outcome("prepare", prepare_config(box.inputs), box)

    def code_escape(box: Sandbox) -> Attempt:
        archive = code_zip(box.inputs / "code.zip", {"../x.py": f"open({str(box.marker)!r}, 'w')\nX = 1\n"})
        attempt = stage_outcome("convert", code_config(str(archive), "python:x:X"), box)
        return Attempt(attempt.outcome, box.work, targets=(box.work / "x.py",))

    def code_uri(uri: str) -> Callable[[Sandbox], Attempt]:
        return lambda box: stage_outcome("convert", code_config(uri), box)

    unsafe_pickle, dataset_invalid = StageReason.UNSAFE_PICKLE.value, StageReason.DATASET_INVALID.value
    model_invalid, limit, code_invalid = (StageReason.MODEL_INVALID.value, StageReason.LIMIT_EXCEEDED.value,
                                          StageReason.CODE_INVALID.value)
    return [
        Hostile("weights: a pickle calling os.system('touch marker') beside a tensor",
                StageReason.UNSAFE_WEIGHTS.value, weights_payload, carries_code=True),
        Hostile("CIFAR file: a pickle calling os.system('touch marker')", unsafe_pickle,
                cifar(lambda box: command_payload(box.marker)), carries_code=True),
        Hostile("CIFAR file: a pickle calling open(marker, 'w')", unsafe_pickle,
                cifar(lambda box: open_payload(box.marker)), carries_code=True),
        Hostile("CIFAR file: that open() inside an object array", unsafe_pickle,
                cifar(lambda box: np.array([open_payload(box.marker)], dtype=object)), carries_code=True),
        *(Hostile(f"CIFAR file: a pickle allocating a terabyte ({name})", dataset_invalid,
                  cifar(lambda box, payload=payload: payload, in_child=True))
          for name, payload in ALLOCATING_PAYLOADS.items()),
        Hostile("ONNX: external data at ../elsewhere.bin, outside the model's folder", model_invalid, external_outside),
        Hostile("ONNX: external data declaring a terabyte", limit, external_terabyte),
        Hostile("ONNX: external data declaring 64 MiB where its file holds 16 bytes", model_invalid,
                external_overstated),
        Hostile("ONNX: an external-data entry whose offset is no integer", model_invalid, external_malformed),
        Hostile(f"weights: a zip bomb inflating to {bomb_bytes:,} bytes (cap {MODEL_BYTES.default:,})", limit,
                zip_bomb),
        Hostile(f"dataset: a 1-bit PNG declaring 12000x12000 pixels (cap {IMAGE_PIXELS.default:,})", limit, huge_png),
        Hostile("code: a zip member ../x.py that creates the marker when imported", code_invalid, code_escape,
                carries_code=True),
        Hostile("code: the URI s3://bucket/code/..", code_invalid, code_uri("s3://bucket/code/..")),
        Hostile("code: the URI https://example.org/..", code_invalid, code_uri("https://example.org/..")),
    ]


def s3_inputs(endpoint: str) -> list[Hostile]:
    s3 = boto3.client("s3", endpoint_url=endpoint)

    def tree(keys: Callable[[Sandbox], dict[str, bytes]], escape: Callable[[Sandbox], Path]
             ) -> Callable[[Sandbox], Attempt]:
        """The dataset s3://<bucket>/imgs holding a.png, sub/b.png and the keys given, fetched into work/dataset."""
        def attempt(box: Sandbox) -> Attempt:
            bucket = f"security-{box.root.name}"
            s3.create_bucket(Bucket=bucket)
            for key, body in {"imgs/a.png": b"a", "imgs/sub/b.png": b"b", **keys(box)}.items():
                s3.put_object(Bucket=bucket, Key=key, Body=body)
            destination = box.work / "dataset"
            try:
                root = fetch_tree(f"s3://{bucket}/imgs", destination)
            except StageError as error:
                return Attempt(error.reason.value, destination, targets=(escape(box),))
            except Exception as error:  # noqa: BLE001 - a crash is what the probe reports
                return Attempt(f"crashed ({type(error).__name__})", destination, targets=(escape(box),))
            found = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
            outcome = LEFT_OUT if found == ["a.png", "sub/b.png"] else f"fetched {found}"
            return Attempt(outcome, destination, targets=(escape(box),))
        return attempt

    source_invalid = StageReason.SOURCE_INVALID.value
    return [
        Hostile("S3 dataset imgs: a key imgsX/<sandbox>/planted beside imgs/ (once written to /<sandbox>/planted)",
                LEFT_OUT, tree(lambda box: {f"imgsX{box.root}/planted": b"planted"}, lambda box: box.root / "planted")),
        Hostile("S3 dataset imgs: a sibling prefix imgs_other/", LEFT_OUT,
                tree(lambda box: {"imgs_other/c.png": b"c"}, lambda box: box.work / "dataset" / "c.png")),
        *(Hostile(f"S3 dataset imgs: a key {key}", source_invalid,
                  tree(lambda box, key=key: {key: b"x"}, lambda box, escape=escape: box.work / escape))
          for key, escape in (("imgs/../escaped.png", "escaped.png"), ("imgs/./dot.png", "dataset/dot.png"),
                              ("imgs//double.png", "dataset/double.png"))),
    ]


def manifest_inputs(endpoint: str) -> list[Hostile]:
    key = "ab" * 32

    def forged(store_uri: Callable[[Sandbox], str], output: str) -> Callable[[Sandbox], Attempt]:
        def attempt(box: Sandbox) -> Attempt:
            store = open_store(store_uri(box), endpoint=endpoint)
            store.put_bytes(manifest_name(key), forged_manifest(key, output))
            try:
                read_manifest(store, key)
            except DocumentInvalid:
                return Attempt(DocumentInvalid.__name__, box.work)
            return Attempt("read as a result", box.work)
        return attempt

    def s3_store(box: Sandbox) -> str:
        bucket = f"security-{box.root.name}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        return f"s3://{bucket}/store"

    return [
        Hostile(f"store ({kind}): a manifest naming the output {output}", DocumentInvalid.__name__,
                forged(uri, output))
        for kind, uri in (("file", lambda box: (box.work / "store").as_uri()), ("S3", s3_store))
        for output in ("../../x", "/etc/x")
    ]


def policy_inputs() -> list[Hostile]:
    """Specs a tenant could write, judged by the default policy; each expects its field to be refused."""
    def judged(path: str, document: Doc) -> Callable[[Sandbox], Attempt]:
        def attempt(box: Sandbox) -> Attempt:
            refused = [error for error in violations(load_resource(document).spec, Policy()) if error.path == path]
            return Attempt(f"PolicyDenied {path}" if refused else "allowed", box.work)
        return attempt

    def changed(change: Callable[[Doc], None]) -> Doc:
        document = base()
        change(document)
        return document

    def placement(target: int, value: dict[str, object]) -> Callable[[Doc], None]:
        return lambda document: document["spec"]["targets"][target].update(placement=value)

    def source(**fields: object) -> Callable[[Doc], None]:
        return lambda document: document["spec"]["source"].update(fields)

    def artifacts_without_secret(document: Doc) -> None:
        del document["spec"]["artifacts"]["secretRef"]

    specs = {
        "python:os:system as the architecture": ("spec.source.architecture", changed(source(
            architecture="python:os:system", architectureArgs={"command": "touch /tmp/marker"}))),
        "a code file": ("spec.source.code", changed(source(architecture="python:net:Net", code="s3://models/net.py"))),
        "tolerations [{operator: Exists}]": ("spec.targets[1].placement.tolerations",
                                             changed(placement(1, {"tolerations": [{"operator": "Exists"}]}))),
        "a nodeSelector for control-plane nodes": (
            "spec.targets[1].placement.nodeSelector",
            changed(placement(1, {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}))),
        "env LD_PRELOAD": ("spec.targets[2].placement.env.LD_PRELOAD",
                           changed(placement(2, {"env": {"LD_PRELOAD": "/tmp/x.so"}}))),
        "env MODELDEPLOY_MAX_MODEL_BYTES (lifting a cap)": (
            "spec.targets[2].placement.env.MODELDEPLOY_MAX_MODEL_BYTES",
            changed(placement(2, {"env": {"MODELDEPLOY_MAX_MODEL_BYTES": "999999999999"}}))),
        "an image of its own": ("spec.targets[0].image", changed(
            lambda document: document["spec"]["targets"][0].update(image="docker.io/someone/tools:latest"))),
        "a store without secretRef (the operator's credentials)": ("spec.artifacts.secretRef",
                                                                   changed(artifacts_without_secret)),
    }
    return [
        *(Hostile(f"policy: weights at {uri}", "PolicyDenied spec.source.weights",
                  judged("spec.source.weights", with_weights(uri)), handles_files=False) for uri in REFUSED_BY_DEFAULT),
        *(Hostile(f"policy: {label}", f"PolicyDenied {path}", judged(path, document), handles_files=False)
          for label, (path, document) in specs.items()),
    ]


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file() or path.is_symlink()}


def hostile_inputs(scratch: Path, endpoint: str) -> Row:
    # The bomb inflates just past the default cap, as the caps a stage runs with here are the defaults.
    probes = [*stage_inputs(MODEL_BYTES.default + MIB), *s3_inputs(endpoint), *manifest_inputs(endpoint),
              *policy_inputs()]
    say(f"1. hostile inputs: {len(probes)}, each through the code that handles it "
        f"(peak memory: a child's peak resident set while the stage ran, and its rise over the start, bound "
        f"{REFUSAL_MEMORY // MIB} MiB)")
    failed = 0
    for index, probe in enumerate(probes):
        box = Sandbox(scratch / f"{index:03d}")
        box.inputs.mkdir(parents=True)
        box.work.mkdir()
        attempt = probe.attempt(box)
        outside = sorted(path for path in files_under(box.root)
                         if not path.is_relative_to(box.inputs) and not path.is_relative_to(attempt.folder))
        outside += [path for path in attempt.targets if path.exists() and path not in outside]
        ran_code = box.marker.exists()
        within_memory = attempt.grew_bytes is None or attempt.grew_bytes < REFUSAL_MEMORY
        held = attempt.outcome == probe.expected and not outside and not ran_code and within_memory
        failed += not held
        notes = []
        if probe.carries_code or ran_code:
            notes.append("its code RAN" if ran_code else "its code never ran")
        if probe.handles_files or outside:
            notes.append(f"written outside: {', '.join(str(path) for path in outside)}" if outside
                         else "nothing written outside")
        if attempt.peak_bytes is not None and attempt.grew_bytes is not None:
            size = sum(path.stat().st_size for path in files_under(box.inputs))
            notes.append(f"input {size / 1000:,.1f} KB; peak resident set {attempt.peak_bytes / MIB:.0f} MiB, "
                         f"+{attempt.grew_bytes / MIB:.1f} MiB over the stage's start")
        expected = "" if attempt.outcome == probe.expected else f" (expected {probe.expected})"
        say(f"  {'held' if held else 'FAIL'}  {probe.label}: {'; '.join([attempt.outcome + expected, *notes])}")
    return Row("hostile inputs", f"{len(probes)} inputs", failed, "not refused, wrote outside or ran code",
               "all refused, none wrote outside its folder, none ran code")


# ---------------------------------------------------------------- fuzzed specs


def fuzzed(count: int, seed: int) -> list[bytes]:
    """`count` YAML files from the fuzzer of tests/test_fuzz_spec.py, seeded."""
    drawn: list[bytes] = []

    @hypothesis_seed(seed)
    @settings(FUZZ, max_examples=count, derandomize=False)
    @given(yaml_texts())
    def draw(data: bytes) -> None:
        drawn.append(data)

    draw()
    return drawn


def crash(status: int, stderr: str) -> str | None:
    """What is wrong with an answer of `modeldeploy validate`: an exit status other than 0 (valid) and 2 (refused),
    or a traceback."""
    if status in (0, 2) and "Traceback" not in stderr:
        return None
    return f"crash (exit {status}{', traceback' if 'Traceback' in stderr else ''})"


def in_process(data: bytes, path: Path) -> int | str:
    """`modeldeploy validate`'s exit status on the file, run in this process, or how it failed: a crash or a hang."""
    try:
        status, _, err = validate_file(data, path)
    except Hang:
        return "hang"
    except Exception as error:  # noqa: BLE001 - a crash is what the probe counts
        return f"crash ({type(error).__name__})"
    return crash(status, err) or status


def in_a_process_of_its_own(data: bytes, path: Path) -> str | None:
    """How `modeldeploy validate` failed on the file, run as a command: a crash or a hang; None when it answered."""
    path.write_bytes(data)
    try:
        result = subprocess.run([str(MODELDEPLOY), "validate", str(path)], capture_output=True, text=True,
                                timeout=SUBPROCESS_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return "hang"
    return crash(result.returncode, result.stderr)


def fuzzed_specs(scratch: Path, count: int, samples: int, seed: int) -> Row:
    known = [ALIAS_BOMB, *(yaml.safe_dump(document).encode() for document in KNOWN_DOCUMENTS)]
    start = time.perf_counter()
    inputs = fuzzed(count, seed) + known
    say(f"2. fuzzed specs: {len(inputs) - len(known)} from tests/test_fuzz_spec.py's strategies (seed {seed}, drawn "
        f"in {time.perf_counter() - start:.0f} s) and the {len(known)} known crashes of issue 14, through "
        f"`modeldeploy validate` in this process (bound {SECONDS_PER_INPUT} s each)")
    spec = scratch / "spec.yaml"
    answers = {0: 0, 2: 0}
    failures: list[tuple[int, str]] = []
    start = time.perf_counter()
    for index, data in enumerate(inputs):
        answer = in_process(data, spec)
        if isinstance(answer, int):
            answers[answer] += 1
        else:
            failures.append((index, answer))
    say(f"  in process: {len(inputs)} files in {time.perf_counter() - start:.0f} s; valid {answers[0]}, "
        f"refused {answers[2]}, crashes {sum(f != 'hang' for _, f in failures)}, "
        f"hangs {sum(f == 'hang' for _, f in failures)}")
    sample = random.Random(seed).sample(range(len(inputs) - len(known)), min(samples, len(inputs) - len(known)))
    chosen = [*sample, *range(len(inputs) - len(known), len(inputs))]
    start = time.perf_counter()
    for index in chosen:
        failure = in_a_process_of_its_own(inputs[index], scratch / f"spec-{index}.yaml")
        if failure is not None:
            failures.append((index, f"{failure} in a process of its own"))
    say(f"  in a process of its own: {len(chosen)} of them ({len(sample)} drawn at random and the known "
        f"{len(known)}) in {time.perf_counter() - start:.0f} s, bound {SUBPROCESS_SECONDS} s each")
    for index, failure in failures:
        say(f"  FAIL  input {index}: {failure}: {inputs[index][:120]!r}")
    crashes = sum("hang" not in failure for _, failure in failures)
    hangs = len(failures) - crashes
    return Row("fuzzed specs", f"{len(inputs)} + {len(chosen)} in subprocesses", crashes + hangs,
               f"{crashes} crashes, {hangs} hangs", "0 crashes, 0 hangs")


# ---------------------------------------------------------------- concurrent runs, runner kills


def planned(output: str) -> tuple[int, int] | None:
    """(tasks done before, tasks to run) from a runner's plan line; None when it printed none."""
    found = re.search(r"(\d+) done before, (\d+) to run", output)
    return (int(found.group(1)), int(found.group(2))) if found else None


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1] if output.strip() else "(nothing)"


def concurrent_runs(scratch: Path, endpoint: str, rounds: int) -> Row:
    say(f"3. concurrent runs: {rounds} x two `modeldeploy run` of the reduced quickstart at once on one S3 store, "
        "then a third run on the store they leave")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    corrupted = failed_runs = 0
    for number in range(1, rounds + 1):
        directory = scratch / f"round-{number}"
        spec = quickstart(directory)
        bucket = f"security-concurrent-{number}"
        s3.create_bucket(Bucket=bucket)
        store = f"s3://{bucket}/shared"
        command = [str(MODELDEPLOY), "run", str(spec), "--store", store, "--jobs", "2"]
        start = time.perf_counter()
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=directory)
                for _ in range(2)]
        outputs = [process.communicate(timeout=900)[0] for process in runs]
        seconds = time.perf_counter() - start
        broken = unverifiable_tasks(store, directory / "verify")
        corrupted += len(broken)
        again = run(spec, store, cwd=directory)
        failures = [output for process, output in zip(runs, outputs, strict=True) if process.returncode]
        failures += [again.stdout + again.stderr] if again.returncode else []
        failed_runs += len(failures)
        done, pending = planned(again.stdout) or (0, 0)
        say(f"  round {number}: exits {[process.returncode for process in runs]} in {seconds:.0f} s, stages run "
            f"{' + '.join(str(len(started(output))) for output in outputs)}; corrupted tasks {len(broken)}; a third run "
            f"exits {again.returncode}: {done} done before, {pending} to run, {len(started(again.stdout))} started")
        for output in failures:
            say(f"  FAIL  a run of round {number} ended: {last_line(output)}")
    return Row("concurrent runs on one S3 store", f"{rounds} x 2 runs", corrupted + failed_runs,
               f"{corrupted} corrupted tasks, {failed_runs} failed runs", "0 corrupted tasks")


def stage_pids(store: str) -> list[int]:
    return [int(pid) for pid in stage_processes(store).split()]


def runner_kills(scratch: Path, kills: int, seed: int) -> Row:
    rng = random.Random(seed)
    say(f"4. runner kills: {kills} x `modeldeploy run` of the reduced quickstart on a file store, SIGKILL after a "
        f"random stage start plus a random 0-2 s (seed {seed}), then run again to completion")
    corrupted = survived = failed_runs = 0
    for number in range(1, kills + 1):
        directory = scratch / f"kill-{number}"
        spec = quickstart(directory)
        store = (directory / "store").as_uri()
        runner = subprocess.Popen([str(MODELDEPLOY), "run", str(spec), "--store", store, "--jobs", "2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=directory)
        assert runner.stdout is not None
        seen = ""
        while planned(seen) is None and (line := runner.stdout.readline()):
            seen += line
        counts = planned(seen)
        if counts is None:
            runner.wait(timeout=30)
            failed_runs += 1
            say(f"  FAIL  kill {number}: the run ended before its plan: {last_line(seen)}")
            continue
        tasks = counts[1]
        after, delay = rng.randint(1, tasks), rng.uniform(0, 2)
        starts = 0
        while starts < after and (line := runner.stdout.readline()):
            starts += "] start " in line
        time.sleep(delay)
        running = len(stage_pids(store))
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        runner.stdout.close()
        deadline = time.monotonic() + KILLED_STAGES_SECONDS
        while stage_pids(store) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = stage_pids(store)
        for pid in survivors:  # they would race the re-run; the probe has counted them
            os.kill(pid, signal.SIGKILL)
        survived += len(survivors)
        resumed = run(spec, store, cwd=directory)
        failed_runs += resumed.returncode != 0
        done, pending = planned(resumed.stdout) or (0, 0)
        broken = unverifiable_tasks(store, directory / "verify")
        corrupted += len(broken)
        say(f"  kill {number}: after start {after} of {tasks} + {delay:.2f} s, {running} stage(s) running; "
            f"{len(survivors)} left running after {KILLED_STAGES_SECONDS} s; the re-run exits {resumed.returncode} "
            f"({done} done before, {pending} to run); corrupted tasks {len(broken)}")
        if resumed.returncode:
            say(f"  FAIL  the re-run after kill {number} ended: {last_line(resumed.stdout + resumed.stderr)}")
    return Row("runner kills (SIGKILL)", f"{kills} kills", corrupted + survived + failed_runs,
               f"{corrupted} corrupted tasks, {survived} stages left running, {failed_runs} failed runs",
               "0 corrupted tasks, 0 stages left running")


# ---------------------------------------------------------------- secrets in the operator's output


def occurrences(value: str, printed: str) -> int:
    """How often the value, or its base64, stands in the text (overlapping forms counted once)."""
    pattern = "|".join(re.escape(form) for form in sorted(forms(value), key=len, reverse=True))
    return len(re.findall(pattern, printed))


def secrets_in_logs(scratch: Path) -> Row:
    say(f"5. secrets: `modeldeploy operator` at each log level ({', '.join(LEVELS)}) reads a Secret of "
        f"{len(CREDENTIALS)} values and opens its store with them; its output is searched for each, plain and base64")
    found = 0
    recording = scratch / "requests.jsonl"
    with contextlib.ExitStack() as stack:
        control_plane = stack.enter_context(ControlPlane(workdir=scratch / "cluster"))
        control_plane.apply_crd(CRD)
        endpoint = stack.enter_context(contextlib.contextmanager(s3_server)(
            MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording)))
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        for name, level in LEVELS.items():
            directory = scratch / name
            directory.mkdir()
            namespace = f"leak-{name}"
            control_plane.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": namespace}})
            try:
                printed = operator_output(control_plane, namespace, level, (endpoint, recording), directory)
            except AssertionError as error:
                found += 1
                say(f"  FAIL  {name}: the probe did not complete: {error}")
                continue
            counts = {key: occurrences(value, printed) for key, value in CREDENTIALS.items()}
            found += sum(counts.values())
            lines = printed.splitlines()
            debug = sum(" DEBUG " in line or "[DEBUG" in line for line in lines)
            say(f"  {name}: {len(lines)} lines printed ({debug} at DEBUG); "
                + ", ".join(f"{key} {count}" for key, count in counts.items()))
    return Row("secrets in the operator's output", f"{len(LEVELS)} log levels", found, "occurrences", "0")


# ---------------------------------------------------------------- the run


def table(rows: list[Row]) -> str:
    header = ("probe", "tried", "failed", "goal")
    cells = [header, *((row.probe, row.tried, f"{row.failed} ({row.failures})", row.goal) for row in rows)]
    widths = [max(len(cell[column]) for cell in cells) for column in range(3)]
    return "\n".join("  ".join(cell[column].ljust(widths[column]) for column in range(3)) + "  " + cell[3]
                     for cell in cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer: --fuzz 50, 10 of them in subprocesses, --concurrent 1, --kills 2")
    parser.add_argument("--fuzz", type=int, default=300, metavar="N", help="fuzzed specs (default 300)")
    parser.add_argument("--fuzz-subprocesses", type=int, default=30, metavar="N",
                        help="of them, run in a process of their own besides the known crashes (default 30)")
    parser.add_argument("--concurrent", type=int, default=2, metavar="K", help="rounds of two runs at once (default 2)")
    parser.add_argument("--kills", type=int, default=7, metavar="N", help="runner kills (default 7)")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(2**32),
                        help="seeds the fuzzer, the subprocess sample and the kill moments (default: a new one)")
    args = parser.parse_args()
    if args.quick:
        args.fuzz, args.fuzz_subprocesses = min(args.fuzz, 50), min(args.fuzz_subprocesses, 10)
        args.concurrent, args.kills = min(args.concurrent, 1), min(args.kills, 2)
    start = time.perf_counter()
    say(f"security probes (seed {args.seed}{', quick' if args.quick else ''})")
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(AWS_ACCESS_KEY_ID="security-bench", AWS_SECRET_ACCESS_KEY="security-bench",
                      AWS_REGION="us-east-1")  # moto takes any
    with contextlib.contextmanager(s3_server)() as endpoint, tempfile.TemporaryDirectory(prefix="security-") as scratch:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint  # for fetch_tree, the runs and the checks of their stores
        directory = Path(scratch)
        probes: list[Callable[[Path], Row]] = [
            lambda folder: hostile_inputs(folder, endpoint),
            lambda folder: fuzzed_specs(folder, args.fuzz, args.fuzz_subprocesses, args.seed),
            lambda folder: concurrent_runs(folder, endpoint, args.concurrent),
            lambda folder: runner_kills(folder, args.kills, args.seed),
            secrets_in_logs,
        ]
        rows = []
        for number, probe in enumerate(probes, start=1):
            folder = directory / str(number)
            folder.mkdir()
            began = time.perf_counter()
            rows.append(probe(folder))
            say(f"  ({time.perf_counter() - began:.0f} s)\n")
    say(table(rows))
    missed = [row.probe for row in rows if row.failed]
    say(f"\nwall time {time.perf_counter() - start:.0f} s; "
        + (f"goals missed: {', '.join(missed)}" if missed else "every goal met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
