"""The project's container images: where each is published and its tag, the one place the backends, the chart,
the build (images/) and the docs take an image reference from.

Every tag is the project's version; a vendor job image adds the toolkit release it is built on.
`python -m modeldeploy.images` prints `name=reference` lines for the build and the chart.
"""

from __future__ import annotations

from modeldeploy import __version__

REGISTRY = "ghcr.io/modeldeploy"

OPERATOR = "modeldeploy-operator"
JOBS_CPU = "modeldeploy-jobs-cpu"
JOBS_ASCEND = "modeldeploy-jobs-ascend"
JOBS_MAGICMIND = "modeldeploy-jobs-magicmind"


def reference(name: str, tag: str = __version__) -> str:
    return f"{REGISTRY}/{name}:{tag}"


def operator_image() -> str:
    return reference(OPERATOR)


def cpu_jobs_image() -> str:
    return reference(JOBS_CPU)


def ascend_jobs_image(cann_release: str) -> str:
    return reference(JOBS_ASCEND, f"{__version__}-cann{cann_release}")


def magicmind_jobs_image(magicmind_release: str) -> str:
    return reference(JOBS_MAGICMIND, f"{__version__}-mm{magicmind_release}")


def default_images() -> dict[str, str]:
    """Each image the project builds, the vendor ones at the release a target gets when it names none."""
    # imported here: the backends take their references from this module
    from modeldeploy.backends.ascend import CANN_VERSION
    from modeldeploy.backends.magicmind import MAGICMIND_VERSION

    return {
        "operator": operator_image(),
        "jobs-cpu": cpu_jobs_image(),
        "jobs-ascend": ascend_jobs_image(CANN_VERSION),
        "jobs-magicmind": magicmind_jobs_image(MAGICMIND_VERSION),
    }


def main() -> None:
    for name, ref in default_images().items():
        print(f"{name}={ref}")


if __name__ == "__main__":
    main()
